/*
 * lcodec.h - the codec seen from the binding: encoding into a buffer that
 * is freed even when encoding raises, and decoding that raises (lcodec.c).
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

#endif
