/*
 * codec.c - the encoding half of the value codec (see codec.h for the
 * format); decode.c holds the other half.
 *
 * Uses: Lua's C API (raw access only) and lmp_buf.  Must never: call a
 * metamethod or any Lua code other than the caller's userdata hook, hold
 * malloc'd memory of its own across a call that may raise (all scratch state
 * lives on the Lua stack or the C stack), or recurse deeper than
 * LMP_CODEC_MAXDEPTH.
 */
#include "codec/codec.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

/* One step of the path from the root to the value being encoded.  Only
 * what is needed to print it is kept; it is rendered on error only, so the
 * happy path never builds strings. */
enum { SEG_KEYAT, SEG_KEYOF, SEG_UPVAL, SEG_STANDIN };
typedef struct seg {
    int kind;
    int idx;          /* SEG_KEYAT: stack index of the key */
    lua_Integer n;    /* SEG_UPVAL: upvalue number */
    const char *name; /* SEG_UPVAL: upvalue name (owned by the prototype) */
} seg;

typedef struct enc {
    lua_State *L;
    lmp_buf *b;
    const char *root;
    int flags;
    int depth;
    const lmp_codec_hooks *h; /* NULL: userdata refused */
    /* Stack slots, nil until first needed so that a scalar message costs
     * no table allocation:
     *   seen   table/Lua function/userdata -> id (1, 2, ...); the global
     *          table -> 0; a userdata whose stand-in is being encoded -> -id
     *   upvals lua_upvalueid -> id * 256 + upvalue number
     *   cfuncs C function -> "module\0field" (reverse package.loaded)
     *   mods   table -> its name in package.loaded (LMP_CODEC_FUNCTIONS) */
    int seen, upvals, cfuncs, mods;
    lua_Integer nextid;
    int nseg;
    seg path[LMP_CODEC_MAXDEPTH + 1];
} enc;

static void enc_value(enc *e, int idx);

/* ---- error paths ------------------------------------------------------ */

static int is_reserved(const char *s) {
    static const char *const words[] = {
        "and",  "break", "do",     "else", "elseif", "end",   "false",
        "for",  "function", "goto", "if",  "in",     "local", "nil",
        "not",  "or",    "repeat", "return", "then", "true",  "until",
        "while", NULL};
    for (int i = 0; words[i]; i++)
        if (strcmp(s, words[i]) == 0) return 1;
    return 0;
}

static int is_ident(const char *s, size_t len) {
    if (len == 0 || len > 64 || strlen(s) != len) return 0;
    if (!(s[0] == '_' || ((s[0] | 0x20) >= 'a' && (s[0] | 0x20) <= 'z')))
        return 0;
    for (size_t i = 1; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(c == '_' || (c >= '0' && c <= '9') ||
              ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')))
            return 0;
    }
    return !is_reserved(s);
}

/* ["..."] with %q-like escapes; keys longer than 40 bytes are cut. */
static void add_quoted(luaL_Buffer *B, const char *s, size_t len) {
    size_t n = len > 40 ? 40 : len;
    luaL_addstring(B, "[\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[8];
        if (c == '"' || c == '\\') {
            luaL_addchar(B, '\\');
            luaL_addchar(B, (char)c);
        } else if (c == '\n') {
            luaL_addstring(B, "\\n");
        } else if (c < 0x20 || c >= 0x7f) {
            snprintf(tmp, sizeof tmp, "\\%u", c);
            luaL_addstring(B, tmp);
        } else {
            luaL_addchar(B, (char)c);
        }
    }
    if (n < len) luaL_addstring(B, "...");
    luaL_addstring(B, "\"]");
}

static void add_key(lua_State *L, luaL_Buffer *B, int k) {
    size_t len;
    const char *s;
    switch (lua_type(L, k)) {
    case LUA_TSTRING:
        s = lua_tolstring(L, k, &len);
        if (is_ident(s, len)) {
            luaL_addchar(B, '.');
            luaL_addlstring(B, s, len);
        } else {
            add_quoted(B, s, len);
        }
        return;
    case LUA_TNUMBER:
        if (lua_isinteger(L, k))
            lua_pushfstring(L, "[%I]", (LUAI_UACINT)lua_tointeger(L, k));
        else
            lua_pushfstring(L, "[%f]", (LUAI_UACNUMBER)lua_tonumber(L, k));
        luaL_addvalue(B);
        return;
    case LUA_TBOOLEAN:
        luaL_addstring(B, lua_toboolean(L, k) ? "[true]" : "[false]");
        return;
    default:
        lua_pushfstring(L, "[<%s>]", luaL_typename(L, k));
        luaL_addvalue(B);
        return;
    }
}

/* Raise "<root><segments>: <what>".  Every slot this needs was reserved by
 * the lua_checkstack of the enclosing container. */
static void enc_fail(enc *e, const char *what) {
    lua_State *L = e->L;
    luaL_Buffer B;
    luaL_checkstack(L, 8, "codec error path");
    luaL_buffinit(L, &B);
    luaL_addstring(&B, e->root);
    for (int i = 0; i < e->nseg; i++) {
        const seg *s = &e->path[i];
        switch (s->kind) {
        case SEG_KEYAT:
            add_key(L, &B, s->idx);
            break;
        case SEG_KEYOF:
            luaL_addstring(&B, "[<key>]");
            break;
        case SEG_UPVAL:
            if (s->name && s->name[0] && strcmp(s->name, "(no name)") != 0)
                lua_pushfstring(L, "<upvalue '%s'>", s->name);
            else
                lua_pushfstring(L, "<upvalue %I>", (LUAI_UACINT)s->n);
            luaL_addvalue(&B);
            break;
        case SEG_STANDIN:
            luaL_addstring(&B, "<stand-in>");
            break;
        }
    }
    luaL_addstring(&B, ": ");
    luaL_addstring(&B, what);
    luaL_pushresult(&B);
    lua_error(L);
}

static void enc_nomem(enc *e) {
    luaL_error(e->L, "%s: not enough memory to encode", e->root);
}

/* ---- byte output ------------------------------------------------------ */

static inline char *room(enc *e, size_t n) {
    lmp_buf *b = e->b;
    if (b->cap - b->len < n && lmp_buf_reserve(b, n) != 0) enc_nomem(e);
    return b->data + b->len;
}

static inline void put_byte(enc *e, unsigned c) {
    char *p = room(e, 1);
    *p = (char)c;
    e->b->len++;
}

static inline void put_varint(enc *e, uint64_t v) {
    unsigned char *p = (unsigned char *)room(e, 10), *p0 = p;
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    e->b->len += (size_t)(p - p0);
}

static inline void put_le(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static inline void put_u64(enc *e, uint64_t v) {
    unsigned char *p = (unsigned char *)room(e, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(p, &v, 8);
#else
    put_le(p, v, 8);
#endif
    e->b->len += 8;
}

/* Reserve a u32 to be patched once its value is known; returns its offset
 * (not a pointer: the buffer may move before the patch). */
static size_t put_u32_later(enc *e) {
    room(e, 4);
    e->b->len += 4;
    return e->b->len - 4;
}

static void patch_u32(enc *e, size_t off, uint64_t v, const char *what) {
    if (v > UINT32_MAX) enc_fail(e, what);
    put_le((unsigned char *)e->b->data + off, v, 4);
}

static void put_bytes(enc *e, const char *s, size_t len) {
    char *p = room(e, len);
    memcpy(p, s, len);
    e->b->len += len;
}

/* ---- the value graph ---------------------------------------------------- */

/* Make the lazily created scratch table in slot *slot exist. */
static void need_table(enc *e, int slot) {
    if (lua_type(e->L, slot) == LUA_TTABLE) return;
    lua_newtable(e->L);
    lua_replace(e->L, slot);
}

/* For a table, Lua function or userdata at idx: if it was met before, write
 * a REF (or the GLOBALS marker) and return 1; otherwise give it the next id
 * and return 0.  Ids are given in pre-order, the order the decoder meets
 * the TABLE/LFUNC/MODULE/UDATA tags. */
static int seen_before(enc *e, int idx) {
    lua_State *L = e->L;
    if (lua_type(L, e->seen) != LUA_TTABLE) {
        need_table(e, e->seen);
        if (e->flags & LMP_CODEC_FUNCTIONS) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
            lua_pushinteger(L, 0);
            lua_rawset(L, e->seen);
        }
    }
    lua_pushvalue(L, idx);
    if (lua_rawget(L, e->seen) == LUA_TNUMBER) {
        lua_Integer id = lua_tointeger(L, -1);
        lua_pop(L, 1);
        if (id == 0) {
            put_byte(e, LMP_TAG_GLOBALS);
        } else if (id < 0) { /* the decoder could not resolve it */
            enc_fail(e, "cannot send a userdata inside its own stand-in");
        } else {
            put_byte(e, LMP_TAG_REF);
            put_varint(e, (uint64_t)id);
        }
        return 1;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushinteger(L, ++e->nextid);
    lua_rawset(L, e->seen);
    return 0;
}

/* Entering a table or function: bound the C recursion and make room for
 * the slots one level uses (key, value, scratch, error path). */
static void enter(enc *e) {
    if (++e->depth > LMP_CODEC_MAXDEPTH) {
        e->nseg = 0;
        enc_fail(e, "nesting too deep (more than 200 levels)");
    }
    if (!lua_checkstack(e->L, 10)) {
        e->nseg = 0;
        enc_fail(e, "nesting too deep (Lua stack exhausted)");
    }
}

/* Build the reverse map table -> name from package.loaded.  Names other
 * than "_G" win (the global table itself never gets here: it is the
 * GLOBALS marker); among those, whichever lua_next meets first. */
/* map[stack[key]] = the value on top (popped), unless the key is there
 * already: the reverse maps keep the first name found. */
static void set_once(lua_State *L, int map, int key) {
    lua_pushvalue(L, key);
    if (lua_rawget(L, map) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushvalue(L, key);
        lua_insert(L, -2);
        lua_rawset(L, map);
    } else {
        lua_pop(L, 2);
    }
}

static void build_mods(enc *e) {
    lua_State *L = e->L;
    luaL_checkstack(L, 8, "codec");
    need_table(e, e->mods);
    if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) != LUA_TTABLE) {
        lua_pop(L, 1);
        return;
    }
    int loaded = lua_gettop(L);
    for (int pass = 0; pass < 2; pass++) {
        lua_pushnil(L);
        while (lua_next(L, loaded)) { /* loaded+1 = name, +2 = module */
            if (lua_type(L, loaded + 1) == LUA_TSTRING &&
                lua_type(L, loaded + 2) == LUA_TTABLE) {
                size_t len;
                const char *name = lua_tolstring(L, loaded + 1, &len);
                int is_g = len == 2 && memcmp(name, "_G", 2) == 0;
                if (is_g == pass) {
                    lua_pushvalue(L, loaded + 1);
                    set_once(L, e->mods, loaded + 2);
                }
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* The table at t (just given an id) as MODULE name if package.loaded
 * holds it; returns 0 if it does not. */
static int enc_module(enc *e, int t) {
    lua_State *L = e->L;
    size_t len;
    if (lua_type(L, e->mods) != LUA_TTABLE) build_mods(e);
    lua_pushvalue(L, t);
    if (lua_rawget(L, e->mods) != LUA_TSTRING) {
        lua_pop(L, 1);
        return 0;
    }
    const char *name = lua_tolstring(L, -1, &len);
    put_byte(e, LMP_TAG_MODULE);
    put_varint(e, len);
    put_bytes(e, name, len);
    lua_pop(L, 1);
    return 1;
}

/* One lua_next pass.  Lua walks the array part first, in order, so the
 * items t[1], t[2], ... come out as bare values (their key is implied: the
 * count of bare values so far, plus one); every other entry is written as
 * HKEY key value.  The two counts are patched into the header at the end
 * so the decoder can presize the table. */
static void enc_table(enc *e, int t) {
    lua_State *L = e->L;
    if (seen_before(e, t)) return;
    if ((e->flags & LMP_CODEC_FUNCTIONS) && enc_module(e, t)) return;
    enter(e);
    put_byte(e, LMP_TAG_TABLE);
    size_t hpos = put_u32_later(e);
    put_u32_later(e);
    uint64_t narr = 0, nhash = 0;
    int top = lua_gettop(L) + 1; /* key slot; the value is at top + 1 */
    seg *s = &e->path[e->nseg++];
    s->idx = top;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_isinteger(L, top) &&
            lua_tointeger(L, top) == (lua_Integer)narr + 1) {
            narr++;
            if (lua_type(L, top + 1) == LUA_TNUMBER &&
                !lua_isinteger(L, top + 1)) { /* the bulk case, inline */
                union { lua_Number d; uint64_t u; } v;
                v.d = lua_tonumber(L, top + 1);
                char *p = room(e, 9);
                *p = LMP_TAG_FLOAT;
                e->b->len++;
                put_u64(e, v.u);
            } else {
                s->kind = SEG_KEYAT;
                enc_value(e, top + 1);
            }
        } else {
            put_byte(e, LMP_TAG_HKEY);
            s->kind = SEG_KEYOF;
            enc_value(e, top);
            s->kind = SEG_KEYAT;
            enc_value(e, top + 1);
            nhash++;
        }
        lua_settop(L, top);
    }
    e->nseg--;
    patch_u32(e, hpos, narr, "table too large");
    patch_u32(e, hpos + 4, nhash, "table too large");
    e->depth--;
}

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
    (void)L;
    return lmp_buf_append(ud, p, sz) != 0;
}

/* Build the reverse map C function -> "module\0field" from package.loaded
 * (one level).  Modules other than _G win, so string.format travels as
 * "string"/"format"; _G only fills the gaps (print, require...). */
static void build_cfuncs(enc *e) {
    lua_State *L = e->L;
    luaL_checkstack(L, 12, "codec");
    need_table(e, e->cfuncs);
    if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) != LUA_TTABLE) {
        lua_pop(L, 1);
        return;
    }
    int loaded = lua_gettop(L);
    for (int pass = 0; pass < 2; pass++) {
        lua_pushnil(L);
        while (lua_next(L, loaded)) { /* loaded+1 = module name, +2 = module */
            size_t mlen;
            const char *mod;
            if (lua_type(L, loaded + 1) != LUA_TSTRING) goto next;
            mod = lua_tolstring(L, loaded + 1, &mlen);
            if (strlen(mod) != mlen || (strcmp(mod, "_G") == 0) != pass)
                goto next;
            if (lua_iscfunction(L, loaded + 2)) {
                lua_pushlstring(L, mod, mlen + 1); /* "mod\0" */
                set_once(L, e->cfuncs, loaded + 2);
            } else if (lua_type(L, loaded + 2) == LUA_TTABLE) {
                lua_pushnil(L);
                while (lua_next(L, loaded + 2)) { /* +3 field, +4 value */
                    if (lua_type(L, loaded + 3) == LUA_TSTRING &&
                        lua_iscfunction(L, loaded + 4)) {
                        lua_pushvalue(L, loaded + 4);
                        if (lua_rawget(L, e->cfuncs) == LUA_TNIL) {
                            lua_pushvalue(L, loaded + 4);
                            lua_pushvalue(L, loaded + 1);
                            lua_pushlstring(L, "", 1);
                            lua_pushvalue(L, loaded + 3);
                            lua_concat(L, 3);
                            lua_rawset(L, e->cfuncs);
                        }
                        lua_pop(L, 1);
                    }
                    lua_pop(L, 1);
                }
            }
        next:
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

static void enc_cfunction(enc *e, int f) {
    lua_State *L = e->L;
    size_t len;
    if (lua_type(L, e->cfuncs) != LUA_TTABLE) build_cfuncs(e);
    lua_pushvalue(L, f);
    if (lua_rawget(L, e->cfuncs) != LUA_TSTRING) {
        lua_pop(L, 1);
        enc_fail(e, "cannot send a C function not found in package.loaded");
    }
    const char *s = lua_tolstring(L, -1, &len);
    size_t mlen = strlen(s);
    put_byte(e, LMP_TAG_CFUNC);
    put_varint(e, mlen);
    put_bytes(e, s, mlen);
    put_varint(e, len - mlen - 1);
    put_bytes(e, s + mlen + 1, len - mlen - 1);
    lua_pop(L, 1);
}

/* A Lua function: its bytecode, then its upvalues.  An upvalue named _ENV
 * is the GLOBALS marker, whatever it holds, and is never registered for
 * joining.  An upvalue cell already sent with another closure becomes an
 * UPJOIN to that closure's upvalue, registered before the value is encoded
 * so that closures reachable from the value itself join it too. */
static void enc_function(enc *e, int f) {
    lua_State *L = e->L;
    lua_Debug ar;
    if (!(e->flags & LMP_CODEC_FUNCTIONS)) enc_fail(e, "cannot send a function");
    if (lua_iscfunction(L, f)) {
        enc_cfunction(e, f);
        return;
    }
    if (seen_before(e, f)) return;
    lua_Integer fid = e->nextid;
    enter(e);
    put_byte(e, LMP_TAG_LFUNC);
    size_t lpos = put_u32_later(e);
    lua_pushvalue(L, f);
    int rc = lua_dump(L, dump_writer, e->b, 0);
    lua_pop(L, 1);
    if (rc != 0) enc_nomem(e);
    patch_u32(e, lpos, e->b->len - lpos - 4, "function too large");
    lua_pushvalue(L, f);
    lua_getinfo(L, ">u", &ar);
    put_byte(e, ar.nups);
    if (ar.nups > 0 && lua_type(L, e->upvals) != LUA_TTABLE)
        need_table(e, e->upvals);
    int top = lua_gettop(L) + 1;
    seg *s = &e->path[e->nseg++];
    s->kind = SEG_UPVAL;
    for (int i = 1; i <= ar.nups; i++) {
        s->name = lua_getupvalue(L, f, i); /* value at top */
        s->n = i;
        if (s->name && strcmp(s->name, "_ENV") == 0) {
            lua_settop(L, top - 1);
            put_byte(e, LMP_TAG_GLOBALS);
            continue;
        }
        void *cell = lua_upvalueid(L, f, i);
        if (lua_rawgetp(L, e->upvals, cell) == LUA_TNUMBER) {
            lua_Integer j = lua_tointeger(L, -1);
            lua_settop(L, top - 1);
            put_byte(e, LMP_TAG_UPJOIN);
            put_varint(e, (uint64_t)(j >> 8));
            put_byte(e, (unsigned)(j & 0xff));
            continue;
        }
        lua_pop(L, 1);
        lua_pushinteger(L, fid * 256 + i);
        lua_rawsetp(L, e->upvals, cell);
        enc_value(e, top);
        lua_settop(L, top - 1);
    }
    e->nseg--;
    e->depth--;
}

/* A full userdata the hook accepts: UDATA, then the stand-in the hook
 * pushed.  Its id is taken before the hook runs (a refusal raises, so it
 * never shows); while the stand-in is encoded the id is stored negated so
 * that meeting the userdata again inside it is refused. */
static void enc_udata(enc *e, int u) {
    lua_State *L = e->L;
    if (seen_before(e, u)) return;
    lua_Integer id = e->nextid;
    enter(e);
    int top = lua_gettop(L);
    int r = e->h->encode_udata(L, u, e->h->ud);
    int pushed = lua_gettop(L) - top;
    if (r == 0 || pushed != 1) {
        char what[64];
        lua_settop(L, top);
        if (r == 0) enc_fail(e, "cannot send a userdata");
        snprintf(what, sizeof what, "userdata hook pushed %d values, not 1",
                 pushed);
        enc_fail(e, what);
    }
    lua_pushvalue(L, u);
    lua_pushinteger(L, -id);
    lua_rawset(L, e->seen);
    put_byte(e, LMP_TAG_UDATA);
    seg *s = &e->path[e->nseg++];
    s->kind = SEG_STANDIN;
    enc_value(e, top + 1);
    e->nseg--;
    lua_pushvalue(L, u);
    lua_pushinteger(L, id);
    lua_rawset(L, e->seen);
    lua_settop(L, top);
    e->depth--;
}

static void enc_value(enc *e, int idx) {
    lua_State *L = e->L;
    size_t len;
    const char *s;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        put_byte(e, LMP_TAG_NIL);
        break;
    case LUA_TBOOLEAN:
        put_byte(e, lua_toboolean(L, idx) ? LMP_TAG_TRUE : LMP_TAG_FALSE);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            lua_Integer i = lua_tointeger(L, idx);
            if (i >= 0 && i < 128) {
                put_byte(e, LMP_TAG_FIXINT | (unsigned)i);
            } else {
                uint64_t u = (uint64_t)i;
                put_byte(e, LMP_TAG_INT);
                put_varint(e, (u << 1) ^ (i < 0 ? UINT64_MAX : 0));
            }
        } else {
            union { lua_Number d; uint64_t u; } v;
            v.d = lua_tonumber(L, idx);
            put_byte(e, LMP_TAG_FLOAT);
            put_u64(e, v.u);
        }
        break;
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        if (len < 64) {
            char *p = room(e, 1 + len);
            *p = (char)(LMP_TAG_SHORTSTR | len);
            memcpy(p + 1, s, len);
            e->b->len += 1 + len;
        } else {
            put_byte(e, LMP_TAG_STR);
            put_varint(e, len);
            put_bytes(e, s, len); /* one memcpy, whatever the size */
        }
        break;
    case LUA_TTABLE:
        enc_table(e, idx);
        break;
    case LUA_TFUNCTION:
        enc_function(e, idx);
        break;
    case LUA_TUSERDATA: /* full userdata only; light ones fall through */
        if (e->h && e->h->encode_udata) {
            enc_udata(e, idx);
            break;
        }
        /* fall through */
    default: { /* userdata (full and light), thread */
        char what[64];
        snprintf(what, sizeof what, "cannot send a %s", luaL_typename(L, idx));
        enc_fail(e, what);
    }
    }
}

void lmp_codec_encode(lua_State *L, int idx, lmp_buf *b, const char *root,
                      int flags) {
    lmp_codec_encode_hooks(L, idx, b, root, flags, NULL);
}

void lmp_codec_encode_hooks(lua_State *L, int idx, lmp_buf *b,
                            const char *root, int flags,
                            const lmp_codec_hooks *h) {
    enc e;
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 16, "codec");
    e.L = L;
    e.b = b;
    e.root = root ? root : "value";
    e.flags = flags;
    e.h = h;
    e.depth = 0;
    e.nextid = 0;
    e.nseg = 0;
    int base = lua_gettop(L);
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushnil(L);
    e.seen = base + 1;
    e.upvals = base + 2;
    e.cfuncs = base + 3;
    e.mods = base + 4;
    put_byte(&e, LMP_CODEC_MAGIC);
    enc_value(&e, idx);
    lua_settop(L, base);
}
