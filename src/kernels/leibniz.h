/*
 * leibniz.h - partial sums of the Leibniz series for pi, vectorised.
 *
 * Provides: lmp_leibniz, the sum of the terms (-1)^(k+1) / (2k - 1) for k
 * in m..n (so 4 * lmp_leibniz(1, N) approximates pi), computed term by term
 * with compensated summation; the code path (AVX-512, AVX2+FMA or portable
 * scalar C) is chosen at run time for the CPU the process runs on.
 * Uses: libc only.  Must never: include lua.h, raise, or allocate; every
 * function here is safe to call from any thread.
 */
#ifndef LMP_LEIBNIZ_H
#define LMP_LEIBNIZ_H

#include <stdint.h>

/* The largest index a sum may reach: 2^53. */
#define LMP_LEIBNIZ_MAX ((uint64_t)1 << 53)

/*
 * Sum of the terms (-1)^(k+1) / (2k - 1) for m <= k <= n.
 *
 * m, n: 1 <= m <= n <= LMP_LEIBNIZ_MAX.  Anything else returns NaN.
 *
 * Returns the sum, every term computed and added (no closed forms).  Each
 * term is within about 2 ulp of its exact value; on the vector paths, for
 * k >= 2^19, each pair of terms 1/(2k-1) - 1/(2k+1) (k odd) is computed as
 * 2/(4k^2 - 1) by a Newton step whose one-sided truncation is bounded by
 * 80/x0^3 over a run starting at x0 = 2k (leibniz.c); all are added with
 * compensated (double-double) summation, so for 1..N the result is
 * within a few ulp of the exact partial sum S_N (spec/c/test_leibniz.c
 * checks 4 * lmp_leibniz(1, N) against 4 S_N to 4 ulp of pi, up to N = 1e10;
 * observed: under 1 ulp).  Different paths may differ in the last bit.
 *
 * Denominators: 2k - 1 is formed exactly in 64-bit integers and converted to
 * the nearest double (ties to even).  For k <= 2^52 that is exact; beyond,
 * 2k - 1 > 2^53 is odd and so never a double: the term is then 1 / (double)
 * (2k - 1), whose denominator is off by one (relative error 2^-54), and
 * neighbouring terms may cancel exactly or not at all.  Sums over such
 * ranges are accurate for that definition, not for the exact rationals.
 *
 * Cost, one core of a 4 GHz Sapphire Rapids at N = 1e9: scalar 1.0e9
 * terms/s, avx2 1.9e10, avx512 2.8e10.  The call cannot be interrupted.
 */
double lmp_leibniz(uint64_t m, uint64_t n);

/*
 * Name of the code path lmp_leibniz uses: "avx512", "avx2" or "scalar"
 * (a static string).  The first call picks the fastest path the CPU
 * supports, unless the environment variable LUAMP_PI_IMPL names another
 * one (scalar|avx2|avx512) that the CPU supports; a name the CPU cannot
 * run, or an unknown name, is ignored.
 */
const char *lmp_leibniz_impl(void);

/*
 * Force the code path by name ("scalar", "avx2", "avx512"), or with NULL go
 * back to the default choice described above.  For tests and benchmarks
 * that compare paths in one process; affects every thread.
 *
 * Returns 0, -EINVAL for an unknown name, or -ENOTSUP when this CPU (or
 * this build: non-x86 has only "scalar") cannot run it; on error the path
 * in use does not change.
 */
int lmp_leibniz_use(const char *impl);

#endif
