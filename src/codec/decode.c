/*
 * decode.c - the decoding half of the value codec (see codec.h for the
 * format); codec.c holds the encoder.
 *
 * Uses: Lua's C API (raw access only).  Must never: believe a length or a
 * count before comparing it with the bytes actually left, raise for
 * malformed input (every check returns -1 with a message in d->err), recurse
 * deeper than LMP_CODEC_MAXDEPTH, load bytecode without
 * LMP_CODEC_FUNCTIONS, or accept a userdata without a decode hook.  On
 * failure the partial value is simply dropped with lua_settop; the garbage
 * collector takes care of it.  Hooks and require are the only foreign code
 * it runs.
 */
#include "codec/codec.h"

#include <stdarg.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

/* Presizing: a table's claimed counts are bounded by the bytes left, but
 * nested tables all claim the same remaining bytes, so each claim is also
 * charged to one budget for the whole message: at most one presized slot
 * per input byte over all tables (what the bytes can actually hold).
 * Tables that really are bigger than their presize grow as usual. */

typedef struct dec {
    lua_State *L;
    const unsigned char *start, *p, *end;
    int flags;
    int depth;
    const lmp_codec_hooks *h; /* NULL: userdata refused */
    /* Stack slot: id -> table/Lua function/module/rebuilt userdata; nil
     * until needed.  A userdata whose stand-in is being decoded maps to the
     * refs table itself, which never escapes, so a REF to it is caught. */
    int refs;
    lua_Integer nref;
    size_t budget; /* presize slots still allowed (see above) */
    char err[200];
} dec;

static int dec_value(dec *d);

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int fail(dec *d, const char *fmt, ...) {
    va_list ap;
    int n = snprintf(d->err, sizeof d->err, "codec: ");
    va_start(ap, fmt);
    vsnprintf(d->err + n, sizeof d->err - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static inline size_t left(const dec *d) { return (size_t)(d->end - d->p); }
static inline size_t pos(const dec *d) { return (size_t)(d->p - d->start); }

static int truncated(dec *d) {
    return fail(d, "truncated message (%zu bytes, value incomplete)",
                (size_t)(d->end - d->start));
}

static int get_varint(dec *d, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
        if (d->p >= d->end) return truncated(d);
        unsigned c = *d->p++;
        if (shift == 63 && c > 1)
            return fail(d, "varint overflow at byte %zu", pos(d) - 1);
        v |= (uint64_t)(c & 0x7f) << shift;
        if (c < 0x80) {
            *out = v;
            return 0;
        }
    }
}

static inline uint64_t get_le(const unsigned char *p, int n) {
    uint64_t v = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(&v, p, (size_t)n);
#else
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
#endif
    return v;
}

static int get_u32(dec *d, uint64_t *out) {
    if (left(d) < 4) return truncated(d);
    *out = get_le(d->p, 4);
    d->p += 4;
    return 0;
}

/* A length that must fit in what is left of the message. */
static int get_len(dec *d, size_t *out, const char *what) {
    size_t at = pos(d);
    uint64_t n;
    if (get_varint(d, &n)) return -1;
    if (n > left(d))
        return fail(d, "%s at byte %zu claims %llu bytes but only %zu remain",
                    what, at, (unsigned long long)n, left(d));
    *out = (size_t)n;
    return 0;
}

static int enter(dec *d) {
    if (++d->depth > LMP_CODEC_MAXDEPTH)
        return fail(d, "nesting too deep at byte %zu (more than %d levels)",
                    pos(d) - 1, LMP_CODEC_MAXDEPTH);
    if (!lua_checkstack(d->L, 6))
        return fail(d, "Lua stack exhausted at byte %zu", pos(d) - 1);
    return 0;
}

/* Number the table/function at idx, in the same pre-order the encoder used. */
static void new_ref(dec *d, int idx) {
    lua_State *L = d->L;
    if (d->nref == 0) {
        lua_newtable(L);
        lua_replace(L, d->refs);
    }
    lua_pushvalue(L, idx);
    lua_rawseti(L, d->refs, ++d->nref);
}

/* Push the table/function numbered id, or fail. */
static int get_ref(dec *d, size_t at) {
    uint64_t id;
    if (get_varint(d, &id)) return -1;
    if (id < 1 || id > (uint64_t)d->nref)
        return fail(d, "bad reference %llu at byte %zu (%lld defined so far)",
                    (unsigned long long)id, at, (long long)d->nref);
    lua_rawgeti(d->L, d->refs, (lua_Integer)id);
    if (lua_rawequal(d->L, -1, d->refs))
        return fail(d, "reference %llu at byte %zu to a userdata whose "
                       "stand-in is still being decoded",
                    (unsigned long long)id, at);
    return 0;
}

/* Charge a claim of n slots to the budget: what is granted. */
static int hint(dec *d, uint64_t n) {
    size_t k = n < d->budget ? (size_t)n : d->budget;
    if (k > INT_MAX) k = INT_MAX;
    d->budget -= k;
    return (int)k;
}

/* TABLE u32(narr) u32(nhash), then narr + nhash entries in any order: a
 * bare value is the next array item, HKEY key value is any other entry. */
static int dec_table(dec *d) {
    lua_State *L = d->L;
    size_t at = pos(d) - 1;
    uint64_t narr = 0, nhash = 0, ai = 0;
    if (enter(d) || get_u32(d, &narr) || get_u32(d, &nhash)) return -1;
    /* Every item takes at least one byte, every HKEY pair three. */
    if (narr > left(d) || nhash > left(d) / 3 ||
        narr + 3 * nhash > left(d))
        return fail(d, "table at byte %zu claims %llu+%llu entries but only "
                       "%zu bytes remain",
                    at, (unsigned long long)narr, (unsigned long long)nhash,
                    left(d));
    int na = hint(d, narr);
    lua_createtable(L, na, hint(d, nhash));
    int t = lua_gettop(L);
    new_ref(d, t);
    for (uint64_t n = narr + nhash; n > 0; n--) {
        if (d->p >= d->end) return truncated(d);
        unsigned c = *d->p;
        if (c == LMP_TAG_FLOAT && left(d) >= 9) { /* bulk case, inline */
            union { lua_Number n; uint64_t u; } v;
            v.u = get_le(d->p + 1, 8);
            d->p += 9;
            lua_pushnumber(L, v.n);
            lua_rawseti(L, t, (lua_Integer)++ai);
        } else if (c != LMP_TAG_HKEY) {
            if (dec_value(d)) return -1;
            lua_rawseti(L, t, (lua_Integer)++ai);
        } else {
            size_t kat = pos(d);
            d->p++;
            if (dec_value(d)) return -1;
            int kt = lua_type(L, -1);
            if (kt == LUA_TNIL)
                return fail(d, "nil table key at byte %zu", kat);
            if (kt == LUA_TNUMBER && !lua_isinteger(L, -1)) {
                lua_Number k = lua_tonumber(L, -1);
                if (k != k) return fail(d, "NaN table key at byte %zu", kat);
            }
            if (dec_value(d)) return -1;
            lua_rawset(L, t);
        }
    }
    if (ai != narr)
        return fail(d, "table at byte %zu has %llu array items, header "
                       "says %llu",
                    at, (unsigned long long)ai, (unsigned long long)narr);
    d->depth--;
    return 0;
}

typedef struct chunk {
    const char *p;
    size_t n;
} chunk;

static const char *chunk_reader(lua_State *L, void *ud, size_t *size) {
    chunk *c = ud;
    (void)L;
    *size = c->n;
    c->n = 0;
    return *size ? c->p : NULL;
}

static int nups_of(lua_State *L, int idx) {
    lua_Debug ar;
    lua_pushvalue(L, idx);
    lua_getinfo(L, ">u", &ar);
    return ar.nups;
}

/* LFUNC: load the bytecode (trusted peers only), number the closure, then
 * set or join each upvalue.  A join may name a closure whose own upvalue is
 * still being decoded: they share the cell, so the later set reaches both. */
static int dec_lfunc(dec *d) {
    lua_State *L = d->L;
    size_t at = pos(d) - 1;
    uint64_t len = 0;
    if (!(d->flags & LMP_CODEC_FUNCTIONS))
        return fail(d, "function at byte %zu but functions are not allowed",
                    at);
    if (enter(d) || get_u32(d, &len)) return -1;
    if (len > left(d))
        return fail(d, "function at byte %zu claims %llu bytes but only %zu "
                       "remain",
                    at, (unsigned long long)len, left(d));
    chunk c = {(const char *)d->p, (size_t)len};
    if (lua_load(L, chunk_reader, &c, "=(codec)", "b") != LUA_OK)
        return fail(d, "bad function at byte %zu: %s", at,
                    lua_tostring(L, -1));
    d->p += len;
    int f = lua_gettop(L);
    new_ref(d, f);
    if (left(d) < 1) return truncated(d);
    int nups = *d->p++;
    if (nups != nups_of(L, f))
        return fail(d, "function at byte %zu has %d upvalues, message says %d",
                    at, nups_of(L, f), nups);
    for (int i = 1; i <= nups; i++) {
        if (d->p < d->end && *d->p == LMP_TAG_UPJOIN) {
            size_t jat = pos(d);
            d->p++;
            if (get_ref(d, jat)) return -1;
            if (left(d) < 1) return truncated(d);
            int n = *d->p++;
            if (lua_type(L, -1) != LUA_TFUNCTION || lua_iscfunction(L, -1) ||
                n < 1 || n > nups_of(L, -1))
                return fail(d, "bad upvalue join at byte %zu", jat);
            lua_upvaluejoin(L, f, i, -1, n);
            lua_pop(L, 1);
        } else {
            if (dec_value(d)) return -1;
            lua_setupvalue(L, f, i);
        }
    }
    d->depth--;
    return 0;
}

/* Push package.loaded[mod], calling the global require(mod) protected if it
 * is nil; or fail with "cannot load module 'mod': why". */
static int load_module(dec *d, const char *mod, size_t mlen) {
    lua_State *L = d->L;
    int sm = mlen > 60 ? 60 : (int)mlen;
    if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE) {
        lua_pushlstring(L, mod, mlen);
        lua_rawget(L, -2);
    } else {
        lua_pushnil(L);
    }
    lua_remove(L, -2);
    if (!lua_isnil(L, -1)) return 0;
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_pushliteral(L, "require");
    lua_rawget(L, -2);
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1))
        return fail(d, "cannot load module '%.*s': not loaded and there is "
                       "no require",
                    sm, mod);
    lua_pushlstring(L, mod, mlen);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        const char *why = lua_isstring(L, -1) ? lua_tostring(L, -1) : "?";
        return fail(d, "cannot load module '%.*s': %.*s", sm, mod,
                    (int)strcspn(why, "\n"), why); /* first line */
    }
    return 0;
}

/* MODULE: the receiver's package.loaded[name] (required if need be), which
 * must be a table; numbered like the table it stands for. */
static int dec_module(dec *d) {
    lua_State *L = d->L;
    size_t at = pos(d) - 1, len;
    if (!(d->flags & LMP_CODEC_FUNCTIONS))
        return fail(d, "module at byte %zu but functions are not allowed",
                    at);
    if (get_len(d, &len, "module name")) return -1;
    const char *name = (const char *)d->p;
    d->p += len;
    if (load_module(d, name, len)) return -1;
    if (!lua_istable(L, -1))
        return fail(d, "cannot load module '%.*s': it is a %s, not a table",
                    len > 60 ? 60 : (int)len, name, luaL_typename(L, -1));
    new_ref(d, lua_gettop(L));
    return 0;
}

/* UDATA: take the id, decode the stand-in, let the hook rebuild the value
 * from it, then bind the id to the result. */
static int dec_udata(dec *d) {
    lua_State *L = d->L;
    size_t at = pos(d) - 1;
    if (!d->h || !d->h->decode_udata)
        return fail(d, "userdata at byte %zu without a handler", at);
    if (enter(d)) return -1;
    if (d->nref == 0) {
        lua_newtable(L);
        lua_replace(L, d->refs);
    }
    lua_Integer id = ++d->nref;
    lua_pushvalue(L, d->refs);
    lua_rawseti(L, d->refs, id); /* pending: the refs table itself */
    int top = lua_gettop(L);
    if (dec_value(d)) return -1;
    int r = d->h->decode_udata(L, d->h->ud);
    int moved = lua_gettop(L) - top - 1;
    if (moved != 0 || (r != 0 && !lua_isstring(L, -1)))
        return fail(d, "userdata hook at byte %zu broke its contract "
                       "(returned %d, stack %+d)",
                    at, r, moved);
    if (r != 0) {
        const char *m = lua_tostring(L, -1);
        if (strncmp(m, "codec: ", 7) == 0)
            snprintf(d->err, sizeof d->err, "%s", m);
        else
            fail(d, "%s", m);
        return -1;
    }
    lua_pushvalue(L, -1);
    lua_rawseti(L, d->refs, id);
    d->depth--;
    return 0;
}

/* CFUNC: package.loaded[module] (or require(module), protected), then
 * [field] raw unless field is empty. */
static int dec_cfunc(dec *d) {
    lua_State *L = d->L;
    size_t at = pos(d) - 1, mlen, flen;
    if (!(d->flags & LMP_CODEC_FUNCTIONS))
        return fail(d, "function at byte %zu but functions are not allowed",
                    at);
    if (get_len(d, &mlen, "module name")) return -1;
    const char *mod = (const char *)d->p;
    d->p += mlen;
    if (get_len(d, &flen, "field name")) return -1;
    const char *field = (const char *)d->p;
    d->p += flen;
    int sm = mlen > 60 ? 60 : (int)mlen, sf = flen > 60 ? 60 : (int)flen;
    if (load_module(d, mod, mlen)) return -1;
    if (flen > 0) {
        if (!lua_istable(L, -1))
            return fail(d, "module '%.*s' is not a table", sm, mod);
        lua_pushlstring(L, field, flen);
        lua_rawget(L, -2);
        lua_remove(L, -2);
    }
    if (!lua_isfunction(L, -1))
        return fail(d, "function %.*s%s%.*s not found", sm, mod,
                    flen ? "." : "", sf, field);
    return 0;
}

static int dec_value(dec *d) {
    lua_State *L = d->L;
    uint64_t u;
    size_t n;
    if (d->p >= d->end) return truncated(d);
    unsigned c = *d->p++;
    if (c >= LMP_TAG_FIXINT) {
        lua_pushinteger(L, (lua_Integer)(c & 0x7f));
        return 0;
    }
    if (c >= LMP_TAG_SHORTSTR) {
        n = c & 0x3f;
        if (left(d) < n) return truncated(d);
        lua_pushlstring(L, (const char *)d->p, n);
        d->p += n;
        return 0;
    }
    switch (c) {
    case LMP_TAG_NIL:
        lua_pushnil(L);
        return 0;
    case LMP_TAG_FALSE:
    case LMP_TAG_TRUE:
        lua_pushboolean(L, c == LMP_TAG_TRUE);
        return 0;
    case LMP_TAG_INT:
        if (get_varint(d, &u)) return -1;
        u = (u >> 1) ^ (0 - (u & 1)); /* zigzag */
        lua_pushinteger(L, (lua_Integer)u);
        return 0;
    case LMP_TAG_FLOAT: {
        union { lua_Number n; uint64_t u; } v;
        if (left(d) < 8) return truncated(d);
        v.u = get_le(d->p, 8);
        d->p += 8;
        lua_pushnumber(L, v.n);
        return 0;
    }
    case LMP_TAG_STR:
        if (get_len(d, &n, "string")) return -1;
        lua_pushlstring(L, (const char *)d->p, n); /* one copy */
        d->p += n;
        return 0;
    case LMP_TAG_TABLE:
        return dec_table(d);
    case LMP_TAG_REF:
        return get_ref(d, pos(d) - 1);
    case LMP_TAG_LFUNC:
        return dec_lfunc(d);
    case LMP_TAG_CFUNC:
        return dec_cfunc(d);
    case LMP_TAG_GLOBALS:
        if (!(d->flags & LMP_CODEC_FUNCTIONS))
            return fail(d, "global table marker at byte %zu but functions "
                           "are not allowed",
                        pos(d) - 1);
        lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
        return 0;
    case LMP_TAG_MODULE:
        return dec_module(d);
    case LMP_TAG_UDATA:
        return dec_udata(d);
    case LMP_TAG_UPJOIN:
        return fail(d, "upvalue join outside a function at byte %zu",
                    pos(d) - 1);
    case LMP_TAG_HKEY:
        return fail(d, "table key outside a table at byte %zu", pos(d) - 1);
    default:
        return fail(d, "unknown tag 0x%02x at byte %zu", c, pos(d) - 1);
    }
}

int lmp_codec_decode(lua_State *L, const char *data, size_t len, int flags) {
    return lmp_codec_decode_hooks(L, data, len, flags, NULL);
}

int lmp_codec_decode_hooks(lua_State *L, const char *data, size_t len,
                           int flags, const lmp_codec_hooks *h) {
    dec d;
    int base = lua_gettop(L), rc;
    if (!lua_checkstack(L, 8)) {
        lua_pushliteral(L, "codec: Lua stack exhausted");
        return -1;
    }
    d.L = L;
    d.start = d.p = (const unsigned char *)data;
    d.end = d.start + len;
    d.flags = flags;
    d.h = h;
    d.depth = 0;
    d.nref = 0;
    d.budget = len;
    lua_pushnil(L);
    d.refs = base + 1;
    if (len == 0) {
        rc = fail(&d, "empty message");
    } else if (d.p[0] != LMP_CODEC_MAGIC) {
        if ((d.p[0] & 0xF0) == (LMP_CODEC_MAGIC & 0xF0))
            rc = fail(&d, "unsupported message version %d (this is %d)",
                      d.p[0] & 0x0F, LMP_CODEC_MAGIC & 0x0F);
        else
            rc = fail(&d, "not a luamp codec message (first byte 0x%02x)",
                      d.p[0]);
    } else {
        d.p++;
        rc = dec_value(&d);
        if (rc == 0 && d.p != d.end)
            rc = fail(&d, "trailing garbage after the value (%zu extra "
                          "bytes at byte %zu)",
                      left(&d), pos(&d));
    }
    if (rc != 0) {
        lua_settop(L, base);
        lua_pushstring(L, d.err);
        return -1;
    }
    lua_replace(L, base + 1);
    return 0;
}
