/*
 * lcodec.h - the codec seen from the binding: encoding into a buffer that
 * is freed even when encoding raises, and decoding that raises.
 */
#ifndef LMP_LCODEC_H
#define LMP_LCODEC_H

#include "codec/codec.h"
#include "core/buf.h"
#include "lua.h"

/* [-0, +1, e]  Push a new scratch-buffer userdata (freed by __gc and by
 * __close) and return its lmp_buf. */
lmp_buf *lmp_lbuf_new(lua_State *L);

/* [-0, +0, e]  Encode the value at idx into b (appending); raises with the
 * value's path on an unsendable value, leaving b as it was. */
void lmp_lencode(lua_State *L, int idx, lmp_buf *b, const char *root, int flags);

/* [-0, +1, e]  Decode one message and push it; raises "codec: ..." on
 * malformed bytes. */
void lmp_ldecode(lua_State *L, const char *p, size_t n, int flags);

/* [-0, +0, e]  lmp_lencode with userdata hooks h (NULL: none); whatever a
 * hook raises propagates, b left as it was. */
void lmp_lencode_hooks(lua_State *L, int idx, lmp_buf *b, const char *root,
                       int flags, const lmp_codec_hooks *h);

/* [-0, +1, e]  lmp_ldecode with userdata hooks h (NULL: none). */
void lmp_ldecode_hooks(lua_State *L, const char *p, size_t n, int flags,
                       const lmp_codec_hooks *h);

/* [-0, +1, m]  Like Lua's io library: nil, "op: strerror", "ENAME";
 * returns 3.  err is positive. */
int lmp_pushoserror(lua_State *L, const char *op, int err);

/* [-0, +0, v]  Values crossing into C are range-checked, never cut: an
 * integer argument in [lo, hi] (raises "out of range" otherwise), and a
 * string that C will see as a C string (raises on an embedded zero byte,
 * which would silently cut it). */
lua_Integer lmp_checkrange(lua_State *L, int arg, lua_Integer lo, lua_Integer hi);
const char *lmp_checkcstring(lua_State *L, int arg);
const char *lmp_optcstring(lua_State *L, int arg, const char *dflt);

/* Timeout argument: nil -> dflt; a number; negative -> 0; math.huge or
 * beyond 1e9 -> forever (-1). */
double lmp_opttimeout(lua_State *L, int arg, double dflt);

#endif
