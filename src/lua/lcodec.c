/*
 * lcodec.c - codec helpers for the binding (see lcodec.h).
 *
 * Provides: the scratch-buffer class, encoding that leaves the buffer as
 * it was when it raises, decoding that raises.
 * Uses: codec/codec.h, lbind.h.  Must never: leak a buffer when encoding
 * raises.
 */
#include "lcodec.h"

#include "codec/codec.h"
#include "lauxlib.h"
#include "lbind.h"

#define LBUF "process.Buffer"

static int lbuf_gc(lua_State *L) {
    lmp_buf_free(luaL_checkudata(L, 1, LBUF));
    return 0;
}

static const lmp_class lbuf_class = {LBUF, NULL, lbuf_gc, NULL, NULL};

lmp_buf *lmp_lbuf_new(lua_State *L) {
    lmp_buf *b = lmp_class_new(L, &lbuf_class, sizeof *b, 0);
    lmp_buf_init(b);
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
