/*
 * lbind.c - the binding's helpers (see lbind.h).
 *
 * Provides: classes, the error convention, argument checks.
 * Uses: the Lua C API, core/sys.h (errno names).
 * Must never: hold state of its own beyond the metatables it makes in a
 * lua_State's registry.
 */
#include "lbind.h"

#include <math.h>
#include <string.h>

#include "core/sys.h"

void lmp_class_meta(lua_State *L, const lmp_class *c) {
    if (!luaL_newmetatable(L, c->name)) return;
    if (c->methods) {
        lua_newtable(L);
        luaL_setfuncs(L, c->methods, 0);
        lua_setfield(L, -2, "__index");
    }
    if (c->close) {
        lua_pushcfunction(L, c->close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, c->close);
        lua_setfield(L, -2, "__close");
    }
    if (c->tostring) {
        lua_pushcfunction(L, c->tostring);
        lua_setfield(L, -2, "__tostring");
    }
    if (c->extra) c->extra(L);
}

void *lmp_class_new(lua_State *L, const lmp_class *c, size_t size, int nuv) {
    void *p = lua_newuserdatauv(L, size, nuv);
    memset(p, 0, size);
    if (luaL_getmetatable(L, c->name) == LUA_TNIL) {
        lua_pop(L, 1);
        lmp_class_meta(L, c);
    }
    lua_setmetatable(L, -2);
    return p;
}

int lmp_pushoserror(lua_State *L, const char *op, int err) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", op, strerror(err));
    lua_pushstring(L, lmp_errname(err));
    return 3;
}

int lmp_raise_oserror(lua_State *L, const char *op, int err) {
    return luaL_error(L, "%s: %s", op, strerror(err));
}

lua_Integer lmp_checkrange(lua_State *L, int arg, lua_Integer lo, lua_Integer hi) {
    lua_Integer v = luaL_checkinteger(L, arg);
    if (v < lo || v > hi)
        luaL_argerror(L, arg, lua_pushfstring(L, "%I out of range [%I, %I]", v, lo, hi));
    return v;
}

const char *lmp_checkcstring(lua_State *L, int arg) {
    size_t n;
    const char *s = luaL_checklstring(L, arg, &n);
    if (strlen(s) != n) luaL_argerror(L, arg, "string contains a zero byte");
    return s;
}

const char *lmp_optcstring(lua_State *L, int arg, const char *dflt) {
    return lua_isnoneornil(L, arg) ? dflt : lmp_checkcstring(L, arg);
}

double lmp_opttimeout(lua_State *L, int arg, double dflt) {
    if (lua_isnoneornil(L, arg)) return dflt;
    double t = luaL_checknumber(L, arg);
    if (isnan(t)) luaL_argerror(L, arg, "timeout is NaN");
    if (t > 1e9) return -1;
    return t < 0 ? 0 : t;
}
