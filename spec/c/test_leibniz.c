/*
 * test_leibniz.c - TAP test of src/kernels/leibniz.c: every code path this
 * CPU has (scalar, avx2, avx512) against an exact __float128 reference.
 *
 * Reference.  S(N) = sum_{k=1..N} (-1)^(k+1) / (2k - 1).  Short ranges are
 * summed directly in __float128 (denominators as leibniz.h defines them,
 * (double)(2k - 1), exact below 2^52).  For large N the tail is
 *     pi/4 - S(N) = (-1)^N sum_{j>=0} (-1)^j / (2N + 1 + 2j)
 *                 = (-1)^N / 2 * sum_{j>=0} (-1)^j f(j + 1/2),  f(x) = 1/(N+x)
 * and with f(x) = int_0^inf e^{-(N+x)t} dt and
 *     sum_{j>=0} (-1)^j e^{-(j+1/2)t} = sech(t/2) / 2 = 1/2 sum_n E_n (t/2)^n/n!
 * (E_n the Euler numbers) Watson's lemma gives the asymptotic expansion
 *     pi/4 - S(N) ~ (-1)^N / 2 * sum_{m>=0} E_2m / (2N)^(2m+1),
 * which is checked against the direct sum before it is used.
 *
 * Uses: kernels/leibniz.h, tap.h, libquadmath.  Runs in a few seconds.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <quadmath.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/leibniz.h"
#include "tap.h"

typedef __float128 q128;

#define P2(e) ((uint64_t)1 << (e))
#define ULP_PI 0x1p-51 /* ulp(pi) */

static const char *const path_names[] = {"scalar", "avx2", "avx512"};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Terms m..n summed in __float128; *abs (if not NULL) gets sum |t|. */
static q128 s_direct(uint64_t m, uint64_t n, q128 *abs) {
    q128 s = 0, a = 0;
    for (uint64_t k = m; k <= n; k++) {
        q128 t = 1 / (q128)(double)(int64_t)(2 * k - 1);
        s += (k & 1) ? t : -t;
        a += t;
    }
    if (abs) *abs = a;
    return s;
}

/* S(N) from the expansion, E_0 .. E_20; for N >= 1000 the first omitted
 * term is below 1e-50. */
static q128 s_asym(uint64_t N) {
    static const double euler[] = {1, -1, 5, -61, 1385, -50521, 2702765, -199360981,
                                   19391512145.0, -2404879675441.0, 370371188237525.0};
    q128 x = 2 * (q128)N, p = 1 / x, tail = 0;
    for (size_t j = 0; j < sizeof euler / sizeof euler[0]; j++) {
        tail += euler[j] * p;
        p /= x * x;
    }
    tail /= 2;
    return M_PIq / 4 - ((N & 1) ? -tail : tail);
}

/* The exact S(N) (S(0) = 0). */
static q128 s_exact(uint64_t N) {
    return N <= 1000000 ? s_direct(1, N, NULL) : s_asym(N);
}

/* Error of 4 * got against 4 * ref, in ulp of pi. */
static double ulps_pi(double got, q128 ref) {
    return fabs((double)((4 * (q128)got - 4 * ref) / ULP_PI));
}

static double ulp_of(double x) {
    return x == 0 ? 0x1p-1074 : nextafter(fabs(x), INFINITY) - fabs(x);
}

/* sum |t| over m..n, roughly (an upper bound is all a tolerance needs). */
static double abs_sum(uint64_t m, uint64_t n) {
    double a = (double)(2 * m - 1), b = (double)(2 * n + 1);
    return 0.5 * log(b / a) + 1 / a;
}

/* ---- the reference itself ------------------------------------------ */

static void check_reference(void) {
    static const uint64_t ns[] = {1000, 1001, 65536, 99999};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        q128 d = s_direct(1, ns[i], NULL), e = s_asym(ns[i]);
        double diff = fabs((double)(d - e));
        ok(diff < 1e-30, "expansion matches the direct __float128 sum at N=%" PRIu64 " (|diff| %.1e)",
           ns[i], diff);
    }
    q128 d = s_direct(1, 1000000, NULL), e = s_asym(1000000);
    ok(fabs((double)(d - e)) < 1e-30, "expansion matches the direct sum at N=1e6");
}

/* ---- API ------------------------------------------------------------ */

static void check_api(void) {
    /* The first call decides from LUAMP_PI_IMPL. */
    setenv("LUAMP_PI_IMPL", "scalar", 1);
    ok(strcmp(lmp_leibniz_impl(), "scalar") == 0, "LUAMP_PI_IMPL=scalar is honoured (got %s)",
       lmp_leibniz_impl());
    setenv("LUAMP_PI_IMPL", "no-such-path", 1);
    ok(lmp_leibniz_use(NULL) == 0, "use(NULL) returns to the default");
    const char *best = lmp_leibniz_impl();
    unsetenv("LUAMP_PI_IMPL");
    ok(lmp_leibniz_use(NULL) == 0 && strcmp(lmp_leibniz_impl(), best) == 0,
       "an unknown LUAMP_PI_IMPL is ignored: default is %s", best);
    ok(lmp_leibniz_use("sse9") == -EINVAL, "use(unknown) is -EINVAL");
    ok(strcmp(lmp_leibniz_impl(), best) == 0, "a failed use() keeps the path");
    ok(lmp_leibniz_use("scalar") == 0, "scalar is always available");
    for (int i = 1; i < 3; i++) {
        int rc = lmp_leibniz_use(path_names[i]);
        ok(rc == 0 || rc == -ENOTSUP, "use(%s) is 0 or -ENOTSUP (%d)", path_names[i], rc);
    }
    ok(isnan(lmp_leibniz(0, 5)), "m = 0 gives NaN");
    ok(isnan(lmp_leibniz(5, 4)), "n < m gives NaN");
    ok(isnan(lmp_leibniz(1, LMP_LEIBNIZ_MAX + 1)), "n > 2^53 gives NaN");
    ok(lmp_leibniz(1, 1) == 1.0 && lmp_leibniz(2, 2) == -1.0 / 3,
       "single terms are correctly rounded");
}

/* ---- per path ------------------------------------------------------- */

typedef struct range {
    uint64_t m, n;
} range;

/* Short ranges, checked against the direct sum: odd/even bounds, single
 * terms, less than a vector, each bulk region and its edges, near 2^53. */
static const range short_ranges[] = {
    {1, 1}, {2, 2}, {3, 3}, {1, 2}, {2, 3}, {1, 3}, {2, 9}, {3, 10}, {4, 17}, {7, 9},
    {10, 12}, {11, 11}, {5, 1000}, {6, 1001}, {999, 100000}, {1000, 100001},
    {524287, 524300}, {524000, 1100000}, {P2(20) + 1, P2(20) + 200000},
    {P2(27) - 1000, P2(27) + 150000}, {P2(28) - 100000, P2(28) + 100001},
    {P2(28) + 2, P2(28) + 150001}, {P2(29) + 1, P2(29) + 300000},
    {P2(21) - 5, P2(21) + 33333}, {P2(23) - 100001, P2(23) + 200000},
    {1000000000, 1000300000}, {P2(40) + 1, P2(40) + 200000},
    {P2(52) - 150000, P2(52)}, {P2(52) - 1000, P2(52) + 1001}, {P2(52), P2(52)},
    {P2(52) + 1, P2(52) + 1}, {P2(53) - 100000, P2(53)}, {P2(53) - 1, P2(53)},
    {P2(53), P2(53)},
};
#define NSHORT (sizeof short_ranges / sizeof short_ranges[0])

/* Exact sums of short_ranges and sum |t| over each, computed once. */
static q128 short_ref[NSHORT], short_abs[NSHORT];

/* S(1e9) as the last path checked computed it, and the time it took. */
static double last_1e9, time_1e9;

static int check_sums(const char *p) {
    static const uint64_t ns[] = {1, 2, 3, 10, 1001, 1000000, 1000000000};
    double worst = 0, t1e9 = 0;
    int bad = 0;
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        double t0 = now();
        double got = lmp_leibniz(1, ns[i]);
        if (ns[i] == 1000000000) {
            time_1e9 = t1e9 = now() - t0;
            last_1e9 = got;
        }
        double u = ulps_pi(got, s_exact(ns[i]));
        if (u > worst) worst = u;
        bad += u > 4;
        ok(u <= 4, "%s: 4*S(%" PRIu64 ") within 4 ulp of pi (%.2f ulp)", p, ns[i], u);
    }
    printf("# %s: N=1e9 in %.3f s (%.3g terms/s), worst error %.2f ulp(pi)\n", p, t1e9,
           1e9 / t1e9, worst);
    /* N = 1e10 only where it takes under ~3 s. */
    if (t1e9 * 10 < 3) {
        double t0 = now();
        double got = lmp_leibniz(1, 10000000000u);
        double dt = now() - t0, u = ulps_pi(got, s_asym(10000000000u));
        ok(u <= 4, "%s: 4*S(1e10) within 4 ulp of pi (%.2f ulp, %.2f s)", p, u, dt);
        bad += u > 4;
    } else {
        ok(1, "%s: 4*S(1e10) # SKIP would take %.0f s", p, t1e9 * 10);
    }
    return bad;
}

/* fast: the path sums 1e9 terms in well under a second, so the long
 * checks below fit in the time budget (not so for scalar, -O0, ...). */
static int check_ranges(const char *p, int fast) {
    int bad = 0;
    for (size_t i = 0; i < NSHORT; i++) {
        const range *r = &short_ranges[i];
        double got = lmp_leibniz(r->m, r->n), ref = (double)short_ref[i];
        double tol = 0x1p-52 * (double)short_abs[i] + ulp_of(ref);
        double err = fabs((double)((q128)got - short_ref[i]));
        bad += !(err <= tol);
        ok(err <= tol, "%s: terms %" PRIu64 "..%" PRIu64 " (err %.2g, tol %.2g)", p, r->m, r->n, err,
           tol);
    }
    /* Long ranges, against differences of exact partial sums. */
    static const range long_ranges[] = {
        {50000001, 100000000}, {12345679, 98765432}, {2, 100000000},
        {500000001, 1000000000}, {123456789, 987654321},
    };
    for (size_t i = 0; i < sizeof long_ranges / sizeof long_ranges[0]; i++) {
        const range *r = &long_ranges[i];
        if (!fast && r->n - r->m > 100000000) continue;
        q128 ref = s_exact(r->n) - s_exact(r->m - 1);
        double got = lmp_leibniz(r->m, r->n);
        double tol = 0x1p-52 * abs_sum(r->m, r->n) + ulp_of((double)ref);
        double err = fabs((double)((q128)got - ref));
        bad += !(err <= tol);
        ok(err <= tol, "%s: terms %" PRIu64 "..%" PRIu64 " (err %.2g, tol %.2g)", p, r->m, r->n, err,
           tol);
    }
    return bad;
}

/* Splitting 1..N into pieces and adding them matches the whole. */
static int check_splits(const char *p, int fast) {
    static const uint64_t cuts[] = {1,         2,         3,         1000,      524351,
                                    1048640,   8388673,   134217791, 268435520, 536870977,
                                    700000001};
    uint64_t N = fast ? 1000000000 : 100000000;
    double whole = lmp_leibniz(1, N);
    q128 exact = s_exact(N);
    int bad = 0;

    /* uneven pieces cut at region edges, odd and even starts */
    double sum = 0;
    uint64_t prev = 1;
    int pieces = 0;
    for (size_t i = 1; i < sizeof cuts / sizeof cuts[0] && cuts[i] <= N; i++, pieces++) {
        sum += lmp_leibniz(prev, cuts[i] - 1);
        prev = cuts[i];
    }
    sum += lmp_leibniz(prev, N);
    pieces++;
    double u1 = fabs(4 * (sum - whole)) / ULP_PI, u2 = ulps_pi(sum, exact);
    ok(u1 <= 4 && u2 <= 4, "%s: %d uneven pieces of 1..%" PRIu64 " add up (%.2f ulp(pi) from the whole, %.2f from exact)",
       p, pieces, N, u1, u2);
    bad += !(u1 <= 4 && u2 <= 4);

    /* P equal pieces, as a process pool would cut them */
    for (uint64_t P = 2; P <= 16; P *= 8) {
        sum = 0;
        for (uint64_t i = 0; i < P; i++) sum += lmp_leibniz(i * N / P + 1, (i + 1) * N / P);
        u1 = fabs(4 * (sum - whole)) / ULP_PI;
        u2 = ulps_pi(sum, exact);
        ok(u1 <= 4 && u2 <= 4, "%s: %" PRIu64 " equal pieces add up (%.2f ulp(pi) from the whole, %.2f from exact)",
           p, P, u1, u2);
        bad += !(u1 <= 4 && u2 <= 4);
    }
    return bad;
}

int main(void) {
    double t0 = now();
    check_reference();
    check_api();
    for (size_t i = 0; i < NSHORT; i++)
        short_ref[i] = s_direct(short_ranges[i].m, short_ranges[i].n, &short_abs[i]);

    double total[3];
    for (int i = 0; i < 3; i++) {
        const char *p = path_names[i];
        if (lmp_leibniz_use(p) != 0) {
            printf("# %s: not available on this CPU\n", p);
            continue;
        }
        ok(strcmp(lmp_leibniz_impl(), p) == 0, "%s is in use", p);
        int bad = check_sums(p);
        int fast = time_1e9 < 0.4;
        bad += check_ranges(p, fast) + check_splits(p, fast);
        printf("# %s: %s\n", p, bad ? "FAILURES" : "all checks passed");
        total[i] = last_1e9;
    }
    /* The paths agree with each other too (each within ~1 ulp of exact). */
    for (int i = 1; i < 3; i++) {
        if (lmp_leibniz_use(path_names[i]) != 0) continue;
        double u = fabs(4 * (total[i] - total[0])) / ULP_PI;
        ok(u <= 4, "%s and scalar agree at N=1e9 (%.2f ulp(pi))", path_names[i], u);
    }
    lmp_leibniz_use(NULL);
    printf("# total %.2f s\n", now() - t0);
    return tap_done();
}
