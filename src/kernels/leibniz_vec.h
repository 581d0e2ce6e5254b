/*
 * leibniz_vec.h - the two vector kernels of leibniz.c, written once for
 * any vector width (included once per instruction set; never on its own).
 *
 * Expects: VEC (the vector type), VOP(op) (the intrinsic _mm<bits>_op),
 * W (lanes per vector), UNR (vectors per step of the bulk loop), TARGET
 * (the function attribute enabling the instruction set), LMP_VNAME(name)
 * (the name of this width's copy); and leibniz.c's helpers above its
 * include.  Undefines them all at its end.
 * Uses: nothing else.  Must never: include lua.h.
 */

/* acc += terms a..b (b <= KD): W consecutive signed terms per vector division, each
 * into its lane's TwoSum accumulator; the rest on the scalar path. */
TARGET static void LMP_VNAME(direct)(uint64_t a, uint64_t b, dd *acc) {
    uint64_t nv = (b - a + 1) / W;
    if (nv) {
        double d0[W], st[W], s0[W], c0[W];
        direct_start(a, W, d0, st);
        VEC d = VOP(loadu_pd)(d0), step = VOP(loadu_pd)(st);
        VEC one = VOP(set1_pd)(1.0);
        VEC s = VOP(setzero_pd)(), c = VOP(setzero_pd)();
        for (uint64_t v = 0; v < nv; v++) {
            VEC t = VOP(div_pd)(one, d);
            VEC hi = VOP(add_pd)(s, t);
            VEC bb = VOP(sub_pd)(hi, s);
            VEC err = VOP(add_pd)(VOP(sub_pd)(s, VOP(sub_pd)(hi, bb)),
                                        VOP(sub_pd)(t, bb));
            c = VOP(add_pd)(c, err);
            s = hi;
            d = VOP(add_pd)(d, step);
        }
        VOP(storeu_pd)(s0, s);
        VOP(storeu_pd)(c0, c);
        lanes_add(acc, s0, c0, W);
        a += nv * W;
    }
    if (a <= b) scalar_sum(a, b, acc);
}

/* The bulk loop: UNR * W lanes, lane i summing the G * C pairs from
 * k = a + 2 G C i (a odd), G pairs per step around the centre c, all from
 * one seed r ~ 1/(x^2 - 1), the last pair computed (see the top of the
 * file).  Each pair's value is half its true value; the lane sums are
 * doubled at the end.  Always inlined with a constant order, so each region
 * gets its own loop. */
INLINE TARGET void LMP_VNAME(bulk_run)(uint64_t a, uint64_t C, int order, dd *acc) {
    const VEC one = VOP(set1_pd)(1.0), step = VOP(set1_pd)(4.0 * G);
    const VEC k1 = VOP(set1_pd)(-3.0), k3 = VOP(set1_pd)(-35.0);
    const VEC four = VOP(set1_pd)(4.0), twelve = VOP(set1_pd)(12.0);
    VEC c[UNR], r[UNR], s[UNR], cs[UNR];
    UNROLL for (int u = 0; u < UNR; u++) {
        double c0[W], seed[W];
        lane_start(a + 2 * G * C * W * (uint64_t)u, 2 * G * C, W, c0, seed);
        c[u] = VOP(loadu_pd)(c0);
        r[u] = VOP(loadu_pd)(seed);
        s[u] = cs[u] = VOP(setzero_pd)();
    }
    for (uint64_t blk = 0; blk < C / BLK; blk++) {
        VEC loc[UNR];
        UNROLL for (int u = 0; u < UNR; u++) loc[u] = VOP(setzero_pd)();
        for (int st = 0; st < BLK; st++) {
            UNROLL for (int u = 0; u < UNR; u++) {
                c[u] = VOP(add_pd)(c[u], step);
                VEC b = VOP(mul_pd)(c[u], r[u]);
                VEC e = VOP(fnmadd_pd)(c[u], b, one); /* 1 - c^2 r */
                VEC h1 = VOP(fmadd_pd)(k1, r[u], e);
                VEC h3 = VOP(fmadd_pd)(k3, r[u], e);
                VEC e0 = VOP(fmadd_pd)(twelve, b, h3);  /* x = c - 6 */
                VEC e1 = VOP(fmadd_pd)(four, b, h1);    /* x = c - 2 */
                VEC e2 = VOP(fnmadd_pd)(four, b, h1);   /* x = c + 2 */
                VEC e3 = VOP(fnmadd_pd)(twelve, b, h3); /* x = c + 6 */
                if (order == 2) {
                    e0 = VOP(fmadd_pd)(e0, e0, e0);
                    e1 = VOP(fmadd_pd)(e1, e1, e1);
                    e2 = VOP(fmadd_pd)(e2, e2, e2);
                    e3 = VOP(fmadd_pd)(e3, e3, e3);
                }
                VEC p0 = VOP(fmadd_pd)(r[u], e0, r[u]);
                VEC p1 = VOP(fmadd_pd)(r[u], e1, r[u]);
                VEC p2 = VOP(fmadd_pd)(r[u], e2, r[u]);
                VEC p3 = VOP(fmadd_pd)(r[u], e3, r[u]);
                loc[u] = VOP(add_pd)(loc[u], VOP(add_pd)(VOP(add_pd)(p0, p1),
                                                             VOP(add_pd)(p2, p3)));
                r[u] = p3; /* the last pair seeds the next step */
            }
        }
        UNROLL for (int u = 0; u < UNR; u++) { /* TwoSum(s, loc) */
            VEC hi = VOP(add_pd)(s[u], loc[u]);
            VEC bb = VOP(sub_pd)(hi, s[u]);
            VEC err = VOP(add_pd)(VOP(sub_pd)(s[u], VOP(sub_pd)(hi, bb)),
                                        VOP(sub_pd)(loc[u], bb));
            cs[u] = VOP(add_pd)(cs[u], err);
            s[u] = hi;
        }
    }
    UNROLL for (int u = 0; u < UNR; u++) {
        double s0[W], c0[W];
        VOP(storeu_pd)(s0, VOP(add_pd)(s[u], s[u])); /* exact doublings */
        VOP(storeu_pd)(c0, VOP(add_pd)(cs[u], cs[u]));
        lanes_add(acc, s0, c0, W);
    }
}

/* acc += terms a..b, a odd, all in bulk region `reg`; whole blocks go to
 * the bulk loop, the rest to LMP_VNAME(direct). */
TARGET static void LMP_VNAME(bulk)(uint64_t a, uint64_t b, int reg, dd *acc) {
    const uint64_t per = 2 * G * W * UNR; /* terms per step, all lanes */
    uint64_t C = (b - a + 1) / (per * BLK) * BLK;
    if (C) {
        if (regions[reg].order == 2) LMP_VNAME(bulk_run)(a, C, 2, acc);
        else LMP_VNAME(bulk_run)(a, C, 1, acc);
        a += per * C;
    }
    if (a <= b) LMP_VNAME(direct)(a, b, acc);
}

#undef VEC
#undef VOP
#undef W
#undef UNR
#undef TARGET
#undef LMP_VNAME
