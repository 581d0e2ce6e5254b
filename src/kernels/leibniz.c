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

/* acc += terms a..b (b <= KD): 8 consecutive signed terms per vdivpd, each
 * into its lane's TwoSum accumulator; the rest on the scalar path. */
T512 static void direct512(uint64_t a, uint64_t b, dd *acc) {
    uint64_t nv = (b - a + 1) / 8;
    if (nv) {
        double d0[8], st[8], s0[8], c0[8];
        direct_start(a, 8, d0, st);
        __m512d d = _mm512_loadu_pd(d0), step = _mm512_loadu_pd(st);
        __m512d one = _mm512_set1_pd(1.0);
        __m512d s = _mm512_setzero_pd(), c = _mm512_setzero_pd();
        for (uint64_t v = 0; v < nv; v++) {
            __m512d t = _mm512_div_pd(one, d);
            __m512d hi = _mm512_add_pd(s, t);
            __m512d bb = _mm512_sub_pd(hi, s);
            __m512d err = _mm512_add_pd(_mm512_sub_pd(s, _mm512_sub_pd(hi, bb)),
                                        _mm512_sub_pd(t, bb));
            c = _mm512_add_pd(c, err);
            s = hi;
            d = _mm512_add_pd(d, step);
        }
        _mm512_storeu_pd(s0, s);
        _mm512_storeu_pd(c0, c);
        lanes_add(acc, s0, c0, 8);
        a += nv * 8;
    }
    if (a <= b) scalar_sum(a, b, acc);
}

/* The bulk loop: U512 * 8 lanes, lane i summing the G * C pairs from
 * k = a + 2 G C i (a odd), G pairs per step around the centre c, all from
 * one seed r ~ 1/(x^2 - 1), the last pair computed (see the top of the
 * file).  Each pair's value is half its true value; the lane sums are
 * doubled at the end.  Always inlined with a constant order, so each region
 * gets its own loop. */
INLINE T512 void bulk512_run(uint64_t a, uint64_t C, int order, dd *acc) {
    const __m512d one = _mm512_set1_pd(1.0), step = _mm512_set1_pd(4.0 * G);
    const __m512d k1 = _mm512_set1_pd(-3.0), k3 = _mm512_set1_pd(-35.0);
    const __m512d four = _mm512_set1_pd(4.0), twelve = _mm512_set1_pd(12.0);
    __m512d c[U512], r[U512], s[U512], cs[U512];
    UNROLL for (int u = 0; u < U512; u++) {
        double c0[8], seed[8];
        lane_start(a + 2 * G * C * 8 * (uint64_t)u, 2 * G * C, 8, c0, seed);
        c[u] = _mm512_loadu_pd(c0);
        r[u] = _mm512_loadu_pd(seed);
        s[u] = cs[u] = _mm512_setzero_pd();
    }
    for (uint64_t blk = 0; blk < C / BLK; blk++) {
        __m512d loc[U512];
        UNROLL for (int u = 0; u < U512; u++) loc[u] = _mm512_setzero_pd();
        for (int st = 0; st < BLK; st++) {
            UNROLL for (int u = 0; u < U512; u++) {
                c[u] = _mm512_add_pd(c[u], step);
                __m512d b = _mm512_mul_pd(c[u], r[u]);
                __m512d e = _mm512_fnmadd_pd(c[u], b, one); /* 1 - c^2 r */
                __m512d h1 = _mm512_fmadd_pd(k1, r[u], e);
                __m512d h3 = _mm512_fmadd_pd(k3, r[u], e);
                __m512d e0 = _mm512_fmadd_pd(twelve, b, h3);  /* x = c - 6 */
                __m512d e1 = _mm512_fmadd_pd(four, b, h1);    /* x = c - 2 */
                __m512d e2 = _mm512_fnmadd_pd(four, b, h1);   /* x = c + 2 */
                __m512d e3 = _mm512_fnmadd_pd(twelve, b, h3); /* x = c + 6 */
                if (order == 2) {
                    e0 = _mm512_fmadd_pd(e0, e0, e0);
                    e1 = _mm512_fmadd_pd(e1, e1, e1);
                    e2 = _mm512_fmadd_pd(e2, e2, e2);
                    e3 = _mm512_fmadd_pd(e3, e3, e3);
                }
                __m512d p0 = _mm512_fmadd_pd(r[u], e0, r[u]);
                __m512d p1 = _mm512_fmadd_pd(r[u], e1, r[u]);
                __m512d p2 = _mm512_fmadd_pd(r[u], e2, r[u]);
                __m512d p3 = _mm512_fmadd_pd(r[u], e3, r[u]);
                loc[u] = _mm512_add_pd(loc[u], _mm512_add_pd(_mm512_add_pd(p0, p1),
                                                             _mm512_add_pd(p2, p3)));
                r[u] = p3; /* the last pair seeds the next step */
            }
        }
        UNROLL for (int u = 0; u < U512; u++) { /* TwoSum(s, loc) */
            __m512d hi = _mm512_add_pd(s[u], loc[u]);
            __m512d bb = _mm512_sub_pd(hi, s[u]);
            __m512d err = _mm512_add_pd(_mm512_sub_pd(s[u], _mm512_sub_pd(hi, bb)),
                                        _mm512_sub_pd(loc[u], bb));
            cs[u] = _mm512_add_pd(cs[u], err);
            s[u] = hi;
        }
    }
    UNROLL for (int u = 0; u < U512; u++) {
        double s0[8], c0[8];
        _mm512_storeu_pd(s0, _mm512_add_pd(s[u], s[u])); /* exact doublings */
        _mm512_storeu_pd(c0, _mm512_add_pd(cs[u], cs[u]));
        lanes_add(acc, s0, c0, 8);
    }
}

/* acc += terms a..b, a odd, all in bulk region `reg`; whole blocks go to
 * the bulk loop, the rest to direct512. */
T512 static void bulk512(uint64_t a, uint64_t b, int reg, dd *acc) {
    const uint64_t per = 2 * G * 8 * U512; /* terms per step, all lanes */
    uint64_t C = (b - a + 1) / (per * BLK) * BLK;
    if (C) {
        if (regions[reg].order == 2) bulk512_run(a, C, 2, acc);
        else bulk512_run(a, C, 1, acc);
        a += per * C;
    }
    if (a <= b) direct512(a, b, acc);
}

/* The same two kernels for AVX2 + FMA, 4 lanes per vector. */
T256 static void direct256(uint64_t a, uint64_t b, dd *acc) {
    uint64_t nv = (b - a + 1) / 4;
    if (nv) {
        double d0[4], st[4], s0[4], c0[4];
        direct_start(a, 4, d0, st);
        __m256d d = _mm256_loadu_pd(d0), step = _mm256_loadu_pd(st);
        __m256d one = _mm256_set1_pd(1.0);
        __m256d s = _mm256_setzero_pd(), c = _mm256_setzero_pd();
        for (uint64_t v = 0; v < nv; v++) {
            __m256d t = _mm256_div_pd(one, d);
            __m256d hi = _mm256_add_pd(s, t);
            __m256d bb = _mm256_sub_pd(hi, s);
            __m256d err = _mm256_add_pd(_mm256_sub_pd(s, _mm256_sub_pd(hi, bb)),
                                        _mm256_sub_pd(t, bb));
            c = _mm256_add_pd(c, err);
            s = hi;
            d = _mm256_add_pd(d, step);
        }
        _mm256_storeu_pd(s0, s);
        _mm256_storeu_pd(c0, c);
        lanes_add(acc, s0, c0, 4);
        a += nv * 4;
    }
    if (a <= b) scalar_sum(a, b, acc);
}


/* The bulk loop: U256 * 4 lanes, lane i summing the G * C pairs from
 * k = a + 2 G C i (a odd), G pairs per step around the centre c, all from
 * one seed r ~ 1/(x^2 - 1), the last pair computed (see the top of the
 * file).  Each pair's value is half its true value; the lane sums are
 * doubled at the end.  Always inlined with a constant order, so each region
 * gets its own loop. */
INLINE T256 void bulk256_run(uint64_t a, uint64_t C, int order, dd *acc) {
    const __m256d one = _mm256_set1_pd(1.0), step = _mm256_set1_pd(4.0 * G);
    const __m256d k1 = _mm256_set1_pd(-3.0), k3 = _mm256_set1_pd(-35.0);
    const __m256d four = _mm256_set1_pd(4.0), twelve = _mm256_set1_pd(12.0);
    __m256d c[U256], r[U256], s[U256], cs[U256];
    UNROLL for (int u = 0; u < U256; u++) {
        double c0[4], seed[4];
        lane_start(a + 2 * G * C * 4 * (uint64_t)u, 2 * G * C, 4, c0, seed);
        c[u] = _mm256_loadu_pd(c0);
        r[u] = _mm256_loadu_pd(seed);
        s[u] = cs[u] = _mm256_setzero_pd();
    }
    for (uint64_t blk = 0; blk < C / BLK; blk++) {
        __m256d loc[U256];
        UNROLL for (int u = 0; u < U256; u++) loc[u] = _mm256_setzero_pd();
        for (int st = 0; st < BLK; st++) {
            UNROLL for (int u = 0; u < U256; u++) {
                c[u] = _mm256_add_pd(c[u], step);
                __m256d b = _mm256_mul_pd(c[u], r[u]);
                __m256d e = _mm256_fnmadd_pd(c[u], b, one); /* 1 - c^2 r */
                __m256d h1 = _mm256_fmadd_pd(k1, r[u], e);
                __m256d h3 = _mm256_fmadd_pd(k3, r[u], e);
                __m256d e0 = _mm256_fmadd_pd(twelve, b, h3);  /* x = c - 6 */
                __m256d e1 = _mm256_fmadd_pd(four, b, h1);    /* x = c - 2 */
                __m256d e2 = _mm256_fnmadd_pd(four, b, h1);   /* x = c + 2 */
                __m256d e3 = _mm256_fnmadd_pd(twelve, b, h3); /* x = c + 6 */
                if (order == 2) {
                    e0 = _mm256_fmadd_pd(e0, e0, e0);
                    e1 = _mm256_fmadd_pd(e1, e1, e1);
                    e2 = _mm256_fmadd_pd(e2, e2, e2);
                    e3 = _mm256_fmadd_pd(e3, e3, e3);
                }
                __m256d p0 = _mm256_fmadd_pd(r[u], e0, r[u]);
                __m256d p1 = _mm256_fmadd_pd(r[u], e1, r[u]);
                __m256d p2 = _mm256_fmadd_pd(r[u], e2, r[u]);
                __m256d p3 = _mm256_fmadd_pd(r[u], e3, r[u]);
                loc[u] = _mm256_add_pd(loc[u], _mm256_add_pd(_mm256_add_pd(p0, p1),
                                                             _mm256_add_pd(p2, p3)));
                r[u] = p3; /* the last pair seeds the next step */
            }
        }
        UNROLL for (int u = 0; u < U256; u++) { /* TwoSum(s, loc) */
            __m256d hi = _mm256_add_pd(s[u], loc[u]);
            __m256d bb = _mm256_sub_pd(hi, s[u]);
            __m256d err = _mm256_add_pd(_mm256_sub_pd(s[u], _mm256_sub_pd(hi, bb)),
                                        _mm256_sub_pd(loc[u], bb));
            cs[u] = _mm256_add_pd(cs[u], err);
            s[u] = hi;
        }
    }
    UNROLL for (int u = 0; u < U256; u++) {
        double s0[4], c0[4];
        _mm256_storeu_pd(s0, _mm256_add_pd(s[u], s[u])); /* exact doublings */
        _mm256_storeu_pd(c0, _mm256_add_pd(cs[u], cs[u]));
        lanes_add(acc, s0, c0, 4);
    }
}

/* acc += terms a..b, a odd, all in bulk region `reg`; whole blocks go to
 * the bulk loop, the rest to direct256. */
T256 static void bulk256(uint64_t a, uint64_t b, int reg, dd *acc) {
    const uint64_t per = 2 * G * 4 * U256; /* terms per step, all lanes */
    uint64_t C = (b - a + 1) / (per * BLK) * BLK;
    if (C) {
        if (regions[reg].order == 2) bulk256_run(a, C, 2, acc);
        else bulk256_run(a, C, 1, acc);
        a += per * C;
    }
    if (a <= b) direct256(a, b, acc);
}

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
