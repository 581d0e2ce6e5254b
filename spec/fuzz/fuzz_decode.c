/*
 * fuzz_decode.c - libFuzzer target for the codec's decoder (src/codec).
 *
 * Decodes arbitrary bytes WITHOUT LMP_CODEC_FUNCTIONS (the setting used for
 * every untrusted channel) into one long-lived lua_State, resetting the
 * stack each time.  Beyond "no crash, no sanitizer report" it checks:
 *   - the stack effect is exactly +1 and a failure pushes "codec: ...";
 *   - whatever decodes re-encodes (everything a decoder can produce without
 *     functions is sendable) and the re-encoding decodes again.  Only
 *     "nesting too deep" may stop the re-encode: lua_next order can reach a
 *     shared table through a deeper path than the message did.
 * Build (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *     -I/usr/include/lua5.4 spec/fuzz/fuzz_decode.c src/codec/codec.c \
 *     src/codec/decode.c src/core/buf.c -llua5.4 -lm -o /tmp/fuzz_decode
 *   /tmp/fuzz_decode -max_total_time=60 /tmp/corpus spec/fuzz/corpus
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "codec/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;

static int reencode(lua_State *S) {
    lmp_buf *b = lua_touserdata(S, 2);
    lmp_codec_encode(S, 1, b, NULL, 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static unsigned runs;
    if (!L) {
        L = luaL_newstate();
        luaL_openlibs(L);
    }
    lua_settop(L, 0);
    int rc = lmp_codec_decode(L, (const char *)data, size, 0);
    if (lua_gettop(L) != 1) abort();
    if (rc != 0) {
        const char *m = lua_tostring(L, 1);
        if (!m || strncmp(m, "codec: ", 7) != 0) abort();
    } else {
        lmp_buf b = LMP_BUF_INIT;
        lua_pushcfunction(L, reencode);
        lua_pushvalue(L, 1);
        lua_pushlightuserdata(L, &b);
        if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
            if (!strstr(lua_tostring(L, -1), "nesting too deep")) abort();
        } else if (lmp_codec_decode(L, b.data, b.len, 0) != 0) {
            abort();
        }
        lmp_buf_free(&b);
    }
    lua_settop(L, 0);
    if (++runs % 4096 == 0) lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
