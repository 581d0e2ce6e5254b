/*
 * codec.h - the exact value codec: one Lua value <-> one self-contained
 * message of bytes.
 *
 * Provides: lmp_codec_encode / lmp_codec_decode, used for spawn and
 * forkserver arguments, results, and Pipe/Queue messages, and their _hooks
 * variants that also carry full userdata through caller-given hooks.
 * Uses: Lua 5.4 and lmp_buf (core/buf.h).  Must never: trust the bytes it
 * decodes (without LMP_CODEC_FUNCTIONS), raise on malformed input, or
 * allocate more than a small constant factor of the input it was given.
 *
 * What round-trips unchanged
 *   nil, booleans, integers (all 64 bits, still math.type "integer"), floats
 *   (bit-exact: inf, -inf, -0.0 and NaN payloads included, still "float"),
 *   strings with any bytes, and tables: array and hash parts, keys of any
 *   sendable type (tables too), shared subtables and cycles (a table reached
 *   twice decodes to one table; t.self = t works).  Tables are read raw:
 *   no __index/__pairs is consulted, and METATABLES ARE NOT SENT.
 *
 * Functions (only with LMP_CODEC_FUNCTIONS, on trusted channels)
 *   - A Lua function travels as its bytecode (lua_dump with debug info) plus
 *     each upvalue, encoded recursively inside the same message, so shared
 *     tables stay shared with the rest of the value.  Two closures that share
 *     an upvalue cell (lua_upvalueid) still share it after decoding
 *     (lua_upvaluejoin); the same closure sent twice decodes to one closure.
 *   - The sender's global table (LUA_RIDX_GLOBALS), wherever it appears in
 *     the value, is sent as a marker and decodes as the receiver's global
 *     table.
 *   - Every upvalue NAMED "_ENV" (lua_getupvalue) is sent as that marker too,
 *     whatever its value: a function defined under a custom environment
 *     (a sandbox, busted's spec environment, `local _ENV = t`) resolves its
 *     globals in the receiver's global table, and the custom table is not
 *     sent (unless reached some other way).  _ENV cells are never joined:
 *     closures that shared one each get the receiver's global table in a
 *     cell of their own, so assigning _ENV in one is not seen by the other.
 *   - A table that is a value of package.loaded (package.loaded[name] == t,
 *     name a string) is sent by reference, as its name, and decodes as the
 *     receiver's package.loaded[name] (calling the global require if it is
 *     not loaded yet; it must be a table).  Names other than "_G" are
 *     preferred; the global table itself is always the marker above.  Like
 *     a table, a module reference gets an id, so the same module reached
 *     twice is sent by name once and then as a REF.  Without the flag such
 *     tables are sent by value like any other.
 *   - A C function is sent by name: the codec looks for it in
 *     package.loaded[module][field] (one level; string keys only) or as
 *     package.loaded[module] itself, preferring any module over "_G".  The
 *     receiver resolves package.loaded[module] (calling the global require
 *     if it is not loaded yet) and takes [field] raw.  C upvalues are not
 *     sent: the receiver gets its own copy of that function.
 *   Bytecode is loaded with mode "b" but Lua does not verify bytecode, so
 *   a function payload is only accepted when the decoder is given the flag.
 *
 * Userdata (only through lmp_codec_encode_hooks / lmp_codec_decode_hooks)
 *   A full userdata is refused unless the encoder is given an encode_udata
 *   hook that accepts it: the hook pushes a stand-in value, which is sent in
 *   its place (encoded like any value, with the same flags; its path
 *   segment is "<stand-in>").  The decoder decodes the stand-in and hands it
 *   to the decode_udata hook, which rebuilds the value (any Lua value).  A
 *   userdata gets an id like a table (before its stand-in), so the same
 *   userdata reached twice is sent once and decodes to one value.  A
 *   stand-in may not contain its own userdata (the encoder refuses; the
 *   decoder fails on a REF to a userdata whose stand-in is still being
 *   decoded).  Works with or without LMP_CODEC_FUNCTIONS.  Light userdata
 *   and threads are always refused.  Hooks are the only foreign code the
 *   codec ever runs (require aside, when decoding with the flag).
 *
 * Errors in the sender name the offending value's path, in the form
 *   "<path>: cannot send a <typename>"      e.g.
 *   "args[2].handler: cannot send a userdata"
 * where <path> is root followed by one segment per step:
 *   [3]            integer key            .name      identifier-like string key
 *   ["odd key"]    other string key (escaped like %q, long keys cut with ...)
 *   [1.5] [true]   float / boolean key    [<table>]  key of another type
 *   [<key>]        the key itself is what could not be sent
 *   <upvalue 'h'>  upvalue h of a Lua function
 *   <stand-in>     the stand-in pushed for a userdata by the encode hook
 * e.g. "args[1]<upvalue 'handle'>: cannot send a userdata".  Other messages:
 *   "<path>: cannot send a function"            (flag missing)
 *   "<path>: cannot send a C function not found in package.loaded"
 *   "<path>: cannot send a userdata inside its own stand-in"
 *   "<path>: userdata hook pushed N values, not 1"
 *   "<root>: nesting too deep (more than 200 levels)"
 *
 * Wire format, version 1 (all multi-byte numbers little-endian; "uv" is an
 * unsigned LEB128 varint of at most 10 bytes):
 *   message  := MAGIC(0xD1) value                  (nothing may follow)
 *   value    := 0x80|n            integer 0..127
 *             | 0x40|n bytes[n]   string of 0..63 bytes
 *             | NIL | FALSE | TRUE
 *             | INT uv            zigzag-encoded 64-bit integer
 *             | FLOAT u64         IEEE-754 bits of the double
 *             | STR uv bytes      string of any length
 *             | TABLE u32(narr) u32(nhash) entry*(narr+nhash)
 *             | REF uv(id)        a table/Lua function/module/userdata
 *                                 defined earlier
 *             | LFUNC u32(len) bytecode u8(nups) upval*nups
 *             | CFUNC uv bytes(module) uv bytes(field)   field "" = module
 *             | GLOBALS           the receiver's global table
 *             | MODULE uv bytes(name)   the receiver's package.loaded[name]
 *             | UDATA value       a userdata, then its stand-in
 *   entry    := value                 the next array item t[i], i = 1, 2...
 *             | HKEY value value     any other key, then its value
 *   upval    := value | UPJOIN uv(id) u8(n)   share upvalue n of function id
 * Tables, Lua functions, modules and userdata are numbered 1, 2, ... in the
 * order their TABLE / LFUNC / MODULE / UDATA tags appear (before their
 * contents, so contents may refer back; a REF to a userdata whose stand-in
 * is still being decoded is an error).  GLOBALS and CFUNC get no id.
 * LFUNC, CFUNC, GLOBALS, MODULE need LMP_CODEC_FUNCTIONS; UDATA needs a
 * decode_udata hook.
 * narr counts the bare entries and nhash the HKEY ones, in any order (the
 * encoder follows lua_next: array part first, so a plain array costs no key
 * bytes).  Nesting of tables, functions and userdata stand-ins is limited to
 * LMP_CODEC_MAXDEPTH.
 */
#ifndef LMP_CODEC_H
#define LMP_CODEC_H

#include <stddef.h>

#include <lua.h>

#include "core/buf.h"

/* Flags for encode and decode. */
enum {
    /* Allow Lua functions (as bytecode + upvalues), C functions (by their
     * package.loaded path) and the global-table marker.  Decoding with this
     * flag loads bytecode: use it only for bytes from a trusted peer. */
    LMP_CODEC_FUNCTIONS = 1
};

/* Tables + functions + userdata nested inside each other, both ways. */
#define LMP_CODEC_MAXDEPTH 200
/* First byte of every message; a format change gets a new value. */
#define LMP_CODEC_MAGIC 0xD1

/* Wire tags (see above); exposed for tests and tools. */
enum {
    LMP_TAG_NIL = 0x00,
    LMP_TAG_FALSE = 0x01,
    LMP_TAG_TRUE = 0x02,
    LMP_TAG_INT = 0x03,
    LMP_TAG_FLOAT = 0x04,
    LMP_TAG_STR = 0x05,
    LMP_TAG_TABLE = 0x06,
    LMP_TAG_REF = 0x07,
    LMP_TAG_LFUNC = 0x08,
    LMP_TAG_CFUNC = 0x09,
    LMP_TAG_GLOBALS = 0x0A,
    LMP_TAG_UPJOIN = 0x0B,
    LMP_TAG_HKEY = 0x0C,
    LMP_TAG_MODULE = 0x0D,
    LMP_TAG_UDATA = 0x0E,
    LMP_TAG_SHORTSTR = 0x40, /* | length 0..63 */
    LMP_TAG_FIXINT = 0x80    /* | value 0..127 */
};

/* Userdata hooks (see "Userdata" above).  Either hook may be NULL: a NULL
 * encode_udata refuses every userdata, a NULL decode_udata refuses every
 * UDATA tag. */
typedef struct lmp_codec_hooks {
    void *ud;
    /* Encoder: the value at stack index idx (absolute) is a full userdata.
     * Push ONE stand-in value that the codec can send (nil/boolean/number/
     * string/table of those; with LMP_CODEC_FUNCTIONS functions too) and
     * return 1; or push nothing and return 0 to refuse (the usual
     * "<path>: cannot send a userdata" error follows).  May raise.  Called
     * once per distinct userdata per message.  A few stack slots are free;
     * lua_checkstack for more. */
    int (*encode_udata)(lua_State *L, int idx, void *ud);
    /* Decoder: the decoded stand-in is on top of the stack; replace it with
     * the rebuilt value (pop 1, push 1) and return 0, or return -1 leaving
     * an error message string on top instead (the decode then fails with
     * that message, prefixed "codec: " if it lacks it).  Must not raise
     * except on memory errors.  A few stack slots are free; lua_checkstack
     * for more. */
    int (*decode_udata)(lua_State *L, void *ud);
} lmp_codec_hooks;

/* [-0, +0, e]
 * Append the encoding of the value at stack index idx to b, as one
 * self-contained message (MAGIC included).
 *   root   names the value in error paths (NULL means "value").
 *   flags  0 or LMP_CODEC_FUNCTIONS.
 * Errors: raises a Lua error on an unsendable value (message as above),
 * on nesting deeper than LMP_CODEC_MAXDEPTH, and on memory exhaustion.
 * Ownership: the caller owns b.  Because this may raise (longjmp), keep b
 * somewhere that frees it either way (a userdata with __gc / __close).  If
 * it raises, b->len may have grown: bytes after the old b->len are garbage,
 * so truncate back to it.  Never calls metamethods or Lua code (nor,
 * here, any hook). */
void lmp_codec_encode(lua_State *L, int idx, lmp_buf *b, const char *root,
                      int flags);

/* [-0, +0, e]
 * lmp_codec_encode with userdata hooks h (NULL: none, exactly
 * lmp_codec_encode).  Calls h->encode_udata for each distinct full
 * userdata met; whatever it raises propagates (same rules for b). */
void lmp_codec_encode_hooks(lua_State *L, int idx, lmp_buf *b,
                            const char *root, int flags,
                            const lmp_codec_hooks *h);

/* [-0, +1, m]
 * Decode one message of exactly len bytes.
 * Returns 0 and pushes the value, or returns -1 and pushes an error message
 * (a string starting "codec: ") when the bytes are malformed: bad magic,
 * truncated, trailing bytes, unknown tag, bad back-reference, nesting
 * deeper than LMP_CODEC_MAXDEPTH, a length larger than the bytes present,
 * nil/NaN table keys, a function/module/global marker without
 * LMP_CODEC_FUNCTIONS, or a userdata (lmp_codec_decode has no hooks).
 * Never raises for bad bytes; may raise only on memory errors (and, with
 * LMP_CODEC_FUNCTIONS, never for a failing require: that is a -1 too,
 * "codec: cannot load module 'name': <first line of the error>").
 * Allocation is bounded by a constant factor of len. */
int lmp_codec_decode(lua_State *L, const char *data, size_t len, int flags);

/* [-0, +1, m]
 * lmp_codec_decode with userdata hooks h (NULL: none, exactly
 * lmp_codec_decode).  A UDATA tag without h->decode_udata is a -1; a -1
 * from the hook fails the decode with its message. */
int lmp_codec_decode_hooks(lua_State *L, const char *data, size_t len,
                           int flags, const lmp_codec_hooks *h);

#endif
