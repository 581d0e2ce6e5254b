/*
 * lcodec.c - codec helpers for the binding (see lcodec.h).
 */
#include "lcodec.h"

#include <math.h>
#include <string.h>

#include "codec/codec.h"
#include "core/sys.h"
#include "lauxlib.h"

#define LBUF "process.Buffer"

static int lbuf_gc(lua_State *L) {
    lmp_buf_free(luaL_checkudata(L, 1, LBUF));
    return 0;
}

lmp_buf *lmp_lbuf_new(lua_State *L) {
    lmp_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
    lmp_buf_init(b);
    if (luaL_newmetatable(L, LBUF)) {
        lua_pushcfunction(L, lbuf_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, lbuf_gc);
        lua_setfield(L, -2, "__close");
    }
    lua_setmetatable(L, -2);
    return b;
}

/* Encoding raises from inside; catch it to put b back as it was. */
static int encode_protected(lua_State *L) {
    lmp_buf *b = lua_touserdata(L, 2);
    const char *root = lua_touserdata(L, 3);
    int flags = (int)lua_tointeger(L, 4);
    const lmp_codec_hooks *h = lua_touserdata(L, 5);
    lmp_codec_encode_hooks(L, 1, b, root, flags, h);
    return 0;
}

void lmp_lencode_hooks(lua_State *L, int idx, lmp_buf *b, const char *root,
                       int flags, const lmp_codec_hooks *h) {
    size_t len = b->len;
    idx = lua_absindex(L, idx);
    lua_pushcfunction(L, encode_protected);
    lua_pushvalue(L, idx);
    lua_pushlightuserdata(L, b);
    lua_pushlightuserdata(L, (void *)root);
    lua_pushinteger(L, flags);
    lua_pushlightuserdata(L, (void *)h);
    if (lua_pcall(L, 5, 0, 0) != LUA_OK) {
        b->len = len;
        lua_error(L);
    }
}

void lmp_lencode(lua_State *L, int idx, lmp_buf *b, const char *root, int flags) {
    lmp_lencode_hooks(L, idx, b, root, flags, NULL);
}

void lmp_ldecode_hooks(lua_State *L, const char *p, size_t n, int flags,
                       const lmp_codec_hooks *h) {
    if (lmp_codec_decode_hooks(L, p, n, flags, h) != 0) lua_error(L);
}

void lmp_ldecode(lua_State *L, const char *p, size_t n, int flags) {
    lmp_ldecode_hooks(L, p, n, flags, NULL);
}

int lmp_pushoserror(lua_State *L, const char *op, int err) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", op, strerror(err));
    lua_pushstring(L, lmp_errname(err));
    return 3;
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
