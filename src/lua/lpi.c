/*
 * lpi.c - the native table behind process.pi (see lpi.h).
 *
 * Provides: lmp_open_pi, and on its table pi.leibniz and pi.impl.
 * Uses: kernels/leibniz.h for the sums; lauxlib for argument errors.
 * Must never: pass the kernel unchecked arguments (it would answer NaN where
 * a Lua caller deserves an error).  A call cannot be interrupted: 1e9 terms
 * take ~0.06 s on AVX-512, 1e12 about a minute.
 */
#include "lpi.h"

#include <math.h>
#include <stdint.h>

#include "kernels/leibniz.h"
#include "lauxlib.h"
#include "luamp.h"

/* Argument arg as a term index: an integer, or a float with an exact
 * integer value (1e9 is a float in Lua).  Integral floats beyond the
 * integer range (and +-inf) are clamped so the bound checks report them. */
static lua_Integer check_index(lua_State *L, int arg) {
    int isint;
    lua_Integer i = lua_tointegerx(L, arg, &isint);
    if (isint) return i;
    if (!lua_isnumber(L, arg)) return luaL_typeerror(L, arg, "number");
    lua_Number x = lua_tonumber(L, arg);
    if (x != floor(x)) /* a fraction, or NaN */
        return luaL_argerror(L, arg, lua_pushfstring(L, "integer expected, got %f", x));
    return x < 0 ? LUA_MININTEGER : LUA_MAXINTEGER;
}

/* The sum in about 50 chunks (at least 1e7 terms each), storing the
 * number of terms done after each in *cell, which a process.Array shares
 * with the parent (luamp_shared_get): progress without messages.  The
 * chunks' sums are added with Kahan's compensation. */
static double leibniz_reporting(uint64_t m, uint64_t n, int64_t *cell) {
    uint64_t total = n - m + 1, step = total / 50;
    if (step < 10000000) step = 10000000;
    double sum = 0.0, c = 0.0;
    for (uint64_t k = m; k <= n; k += step) {
        uint64_t last = n - k < step ? n : k + step - 1;
        double y = lmp_leibniz(k, last) - c;
        double t = sum + y;
        c = (t - sum) - y;
        sum = t;
        __atomic_store_n(cell, (int64_t)(last - m + 1), __ATOMIC_RELEASE);
        if (last == n) break;
    }
    return sum;
}

/* pi.leibniz(m, n [, progress, i]) -> sum of (-1)^(k+1) / (2k - 1) for
 * k = m..n; with an int64 process.Array progress, progress[i] counts the
 * terms done as the sum goes. */
static int pi_leibniz(lua_State *L) {
    lua_Integer m = check_index(L, 1);
    lua_Integer n = check_index(L, 2);
    luaL_argcheck(L, m >= 1, 1, "m must be >= 1");
    luaL_argcheck(L, n >= m, 2, "n must be >= m");
    luaL_argcheck(L, (lua_Unsigned)n <= LMP_LEIBNIZ_MAX, 2, "n must be <= 2^53");
    if (lua_isnoneornil(L, 3)) {
        lua_pushnumber(L, (lua_Number)lmp_leibniz((uint64_t)m, (uint64_t)n));
        return 1;
    }
    void *data;
    int type;
    size_t cells;
    if (!luamp_shared_get(L, 3, &data, &type, &cells) || type != LUAMP_SHARED_INT64)
        return luaL_typeerror(L, 3, "int64 process.Array");
    lua_Integer i = luaL_checkinteger(L, 4);
    luaL_argcheck(L, i >= 1 && (lua_Unsigned)i <= cells, 4, "index out of range");
    int64_t *cell = (int64_t *)data + (i - 1);
    lua_pushnumber(L, (lua_Number)leibniz_reporting((uint64_t)m, (uint64_t)n, cell));
    return 1;
}

static const luaL_Reg pi_funcs[] = {
    {"leibniz", pi_leibniz},
    {NULL, NULL},
};

int lmp_open_pi(lua_State *L) {
    luaL_newlib(L, pi_funcs);
    lua_pushstring(L, lmp_leibniz_impl());
    lua_setfield(L, -2, "impl");
    return 1;
}
