/*
 * lpi.h - the C half of process.pi: the native Leibniz kernel as a Lua
 * function.
 */
#ifndef LMP_LPI_H
#define LMP_LPI_H

#include "lua.h"

/* [-0, +1, m]  Pushes a new table with
 *   leibniz(m, n) -> float   sum of (-1)^(k+1) / (2k - 1) for k = m..n,
 *                            1 <= m <= n <= 2^53 (integers, or floats with
 *                            an integer value such as 1e9); raises on
 *                            anything else
 *   impl                     "avx512", "avx2" or "scalar", the code path
 *                            chosen for this CPU (LUAMP_PI_IMPL can force
 *                            one it supports) */
int lmp_open_pi(lua_State *L);

#endif
