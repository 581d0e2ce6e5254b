/*
 * leibniz.c - the Leibniz series kernels (see leibniz.h).
 *
 * Provides: lmp_leibniz, lmp_leibniz_impl, lmp_leibniz_use.
 * Uses: libc; <immintrin.h> on x86-64 only.  Each vector kernel is compiled
 * for its instruction set with __attribute__((target)) and only called
 * after __builtin_cpu_supports has said yes, so the file needs no -m flags
 * and a non-x86 build has the scalar path alone.
 * Must never: be built with -ffast-math (it would undo the compensated
 * sums), include lua.h, or allocate.
 *
 * How a range is summed on a vector path.  By index k:
 *
 *   k < KH      "direct": 8 (AVX-512) or 4 terms per vdivpd, each correctly
 *               rounded, into per-lane TwoSum accumulators.
 *   KH..2^52    "bulk": terms are taken in pairs, k odd, x = 2k:
 *                 1/(x-1) - 1/(x+1) = 2 / (x^2 - 1)
 *               (an identity: every term of the range is in exactly one
 *               pair), and each pair value P = 1/(x^2 - 1) is a Newton
 *               step from its neighbour's, so there is no division.  Every
 *               lane walks its own contiguous stretch of k, G = 4 pairs per
 *               step (x = c - 6, c - 2, c + 2, c + 6 around a centre c),
 *               all from one seed r ~ P(c - 10), the last pair computed:
 *                 b = c r,  e' = 1 - c b               (one FMA rounding)
 *                 e_j = 1 - ((c + 4j)^2 - 1) r = e' + (1 - 16j^2) r - 8j b
 *                 P_j = r (1 + e_j [+ e_j^2])     (j = +-1/2, +-3/2)
 *               and P_{3/2} seeds the next step.  A seed's error enters the
 *               next step only through e, so it does not build up.
 *               Errors: b's rounding and e's add at most ~2^-53 to e, so
 *               each P is within ~2 ulp of 1/(x^2-1) plus the truncation
 *               |e|^(p+1), |e| <= 32/x, of one sign.  As the pairs are ~2/x^2,
 *               over any range from x0 that is at most sum 2/x^2 * 2^-51
 *               <= 2^-51 / (2 x0) for rounding, and 80 / x0^3 at order 1
 *               (regions[]: order 2 below x = 2^24, so <= 2e-20, 1e-4 ulp
 *               of pi in 4 S; a Newton step per term had 1e-17 bound).
 *               Cost at order 1: 17 instructions per step of 4 vectors of
 *               pairs (1 advance, b, e', 2 h, 4 e, 4 P, 4 adds): 4.25 per
 *               16 terms, against 6.5 for a Newton step per term; the two
 *               512-bit FMA ports run 2 a cycle.
 *   k > 2^52    scalar, as 2k - 1 is no longer exact (see leibniz.h).
 *
 * In the bulk loop, pair values are summed plainly for BLK steps, then
 * added to the lane's running sum with TwoSum; the lane sums and error
 * terms are doubled (exact) into one double-double, rounded once: the
 * result is the sum of the computed pairs to within ~1e-20, so its error
 * is theirs.  Unpaired terms at the ends of a range go to the direct or
 * scalar code.
 */
#include "leibniz.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define LMP_X86 1
#include <immintrin.h>
#else
#define LMP_X86 0
#endif

#if defined(__FAST_MATH__)
#error "leibniz.c needs IEEE double arithmetic: do not build it with -ffast-math"
#endif
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD > 0
#error "leibniz.c needs doubles evaluated in double precision (SSE2, not x87)"
#endif

#define KH (((uint64_t)1 << 19) + 64) /* below: direct division      */
#define KD ((uint64_t)1 << 52)         /* up to here 2k - 1 is exact  */

/* A sum kept as the unevaluated pair hi + lo. */
typedef struct dd {
    double hi, lo;
} dd;

/* acc += x by TwoSum (Knuth): the rounding error of hi + x is recovered
 * exactly, whatever the magnitudes, and kept in lo. */
static inline void dd_add(dd *acc, double x) {
    double s = acc->hi + x;
    double bb = s - acc->hi;
    acc->lo += (acc->hi - (s - bb)) + (x - bb);
    acc->hi = s;
}

/* 2k - 1 as the nearest double (exact for k <= 2^52). */
static inline double denom(uint64_t k) {
    return (double)(int64_t)(2 * k - 1);
}

/* ---- scalar: the portable path and the reference ------------------- */

/* acc += terms a..b, one IEEE division per term (so each is correctly
 * rounded).  Pairs from an odd k >= 3 are exact differences, so only the
 * running sum needs compensating.  The vector paths also use this for the
 * odd terms at the ends of their ranges. */
static void scalar_sum(uint64_t a, uint64_t b, dd *acc) {
    dd s = {0.0, 0.0};
    uint64_t k = a;
    if (k == 1) { /* 1 - 1/3 is not an exact difference */
        dd_add(&s, 1.0);
        k++;
    }
    if (k <= b && (k & 1) == 0) {
        dd_add(&s, -1.0 / denom(k));
        k++;
    }
    for (; k < b; k += 2) dd_add(&s, 1.0 / denom(k) - 1.0 / denom(k + 1));
    if (k == b) dd_add(&s, 1.0 / denom(k));
    dd_add(acc, s.hi);
    acc->lo += s.lo;
}

/* ---- x86-64 vector paths ------------------------------------------- */
#if LMP_X86

#define T512 __attribute__((target("avx512f")))
#define T256 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))
/* Unroll the lane-group loops so each group's state stays in registers. */
#define UNROLL _Pragma("GCC unroll 8")

#ifndef U512
#define U512 8 /* independent lane groups: enough to hide the FMA chains */
#endif
#ifndef U256
#define U256 6 /* (only 16 ymm registers: some constants spill, harmlessly) */
#endif
#define BLK 64 /* steps summed locally before a TwoSum flush */
#define G 4    /* pairs per step (per Newton seed); the loops assume 4 */

/* acc += n lane sums s[i] with their error terms c[i]. */
static void lanes_add(dd *acc, const double *s, const double *c, int n) {
    for (int i = 0; i < n; i++) {
        dd_add(acc, s[i]);
        acc->lo += c[i];
    }
}

/* Starting values for w lanes beginning at k = a + stride * i (odd), for
 * steps of G pairs: the first pair's x = 2k, c0 = the centre of the step
 * before the first, x + 2G - 2 - 4G (the first step adds 4G), and the
 * seed, the value of the pair before the lane, 1 / ((x - 4)^2 - 1). */
static void lane_start(uint64_t a, uint64_t stride, int w, double *c0, double *seed) {
    for (int i = 0; i < w; i++) {
        double x = (double)(2 * (a + stride * (uint64_t)i));
        c0[i] = x - (2.0 * G + 2.0);
        seed[i] = 1.0 / ((x - 4.0) * (x - 4.0) - 1.0);
    }
}

/* Signed denominators and steps for w consecutive terms from k = a. */
static void direct_start(uint64_t a, int w, double *d, double *step) {
    for (int i = 0; i < w; i++) {
        uint64_t k = a + (uint64_t)i;
        d[i] = (k & 1) ? denom(k) : -denom(k);
        step[i] = (k & 1) ? 2.0 * w : -2.0 * w;
    }
}

/* Bulk regions, by first index, and the Newton order of their pairs: the
 * neglected relative error of a pair is |e|^(order+1), |e| <= 8G / x (bounds
 * at the top of the file).  Order 1 costs 17 instructions per step of G = 4
 * vectors of pairs, order 2 four more. */
static const struct region {
    uint64_t start;
    int order;
} regions[] = {
    {KH, 2},                      /* x > 2^20: |e| < 2^-15, e^3 < 2^-45 */
    {((uint64_t)1 << 23) + 64, 1}, /* x > 2^24: |e| < 2^-19, e^2 < 2^-38 */
    {KD + 1, 0},
};
#define NREGIONS 2

/* The two kernels, once per instruction set (leibniz_vec.h): AVX-512F,
 * 8 lanes per vector; AVX2 + FMA, 4 lanes. */
#define VEC __m512d
#define VOP(op) _mm512_##op
#define W 8
#define UNR U512
#define TARGET T512
#define LMP_VNAME(name) name##512
#include "leibniz_vec.h"

#define VEC __m256d
#define VOP(op) _mm256_##op
#define W 4
#define UNR U256
#define TARGET T256
#define LMP_VNAME(name) name##256
#include "leibniz_vec.h"

#endif /* LMP_X86 */

/* ---- paths and dispatch -------------------------------------------- */

/* A code path: no kernels means scalar_sum does everything. */
typedef struct path {
    const char *name;
    void (*direct)(uint64_t a, uint64_t b, dd *acc);
    void (*bulk)(uint64_t a, uint64_t b, int region, dd *acc);
} path;

enum { P_SCALAR, P_AVX2, P_AVX512, P_COUNT };

static const path paths[P_COUNT] = {
    {"scalar", NULL, NULL},
#if LMP_X86
    {"avx2", direct256, bulk256},
    {"avx512", direct512, bulk512},
#else
    {"avx2", NULL, NULL},
    {"avx512", NULL, NULL},
#endif
};

/* acc += terms m..n on a vector path, region by region in order of k. */
static void vector_sum(const path *p, uint64_t m, uint64_t n, dd *acc) {
    uint64_t k = m;
    if (k < KH) {
        uint64_t e = n < KH - 1 ? n : KH - 1;
        p->direct(k, e, acc);
        k = e + 1;
    }
#if LMP_X86
    for (int r = 0; r < NREGIONS && k <= n; r++) {
        uint64_t end = regions[r + 1].start;
        if (k >= end) continue;
        uint64_t e = n < end - 1 ? n : end - 1;
        if ((k & 1) == 0) { /* bulk lanes start on an odd (positive) term */
            scalar_sum(k, k, acc);
            k++;
        }
        if (k <= e) p->bulk(k, e, r, acc);
        k = e + 1;
    }
#endif
    if (k <= n) scalar_sum(k, n, acc);
}

static int supported(int i) {
#if LMP_X86
    __builtin_cpu_init();
    if (i == P_AVX512) return __builtin_cpu_supports("avx512f");
    if (i == P_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return i == P_SCALAR;
}

static int by_name(const char *name) {
    for (int i = 0; i < P_COUNT; i++)
        if (strcmp(paths[i].name, name) == 0) return i;
    return -1;
}

/* LUAMP_PI_IMPL if the CPU can run it, else the best path it can. */
static int default_path(void) {
    const char *env = getenv("LUAMP_PI_IMPL");
    int i = env ? by_name(env) : -1;
    if (i >= 0 && supported(i)) return i;
    for (i = P_COUNT - 1; !supported(i); i--) {
    }
    return i;
}

/* Index of the path in use, -1 until the first call decides.  Two threads
 * racing on the first call compute the same value, so relaxed is enough. */
static atomic_int chosen = -1;

static int current(void) {
    int i = atomic_load_explicit(&chosen, memory_order_relaxed);
    if (i < 0) {
        i = default_path();
        atomic_store_explicit(&chosen, i, memory_order_relaxed);
    }
    return i;
}

double lmp_leibniz(uint64_t m, uint64_t n) {
    if (m < 1 || n < m || n > LMP_LEIBNIZ_MAX) return NAN;
    const path *p = &paths[current()];
    dd acc = {0.0, 0.0};
    if (p->bulk) vector_sum(p, m, n, &acc);
    else scalar_sum(m, n, &acc);
    return acc.hi + acc.lo;
}

const char *lmp_leibniz_impl(void) {
    return paths[current()].name;
}

int lmp_leibniz_use(const char *impl) {
    int i = impl ? by_name(impl) : default_path();
    if (i < 0) return -EINVAL;
    if (!supported(i)) return -ENOTSUP;
    atomic_store_explicit(&chosen, i, memory_order_relaxed);
    return 0;
}
