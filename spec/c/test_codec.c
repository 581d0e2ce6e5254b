/*
 * test_codec.c - the value codec (src/codec): round trips of every kind of
 * value, refusals with their paths, hostile input, functions.
 *
 * Prints TAP.  Meant to run under -fsanitize=address,undefined as well:
 * every decode of hostile bytes gets its own exactly-sized malloc'd copy so
 * an over-read is caught.  With --bench it also prints throughput (as TAP
 * comments) against lua-cjson and string.pack on the same data.
 */
#include "codec/codec.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>

#include "tap.h"

/* ---- Lua-side tools: enc / dec / same ---------------------------------- */

static int buf_gc(lua_State *L) {
    lmp_buf_free(lua_touserdata(L, 1));
    return 0;
}

/* A buffer inside a userdata, so that a raising encode still frees it. */
static lmp_buf *new_buf(lua_State *L) {
    lmp_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
    lmp_buf_init(b);
    if (luaL_newmetatable(L, "test.buf")) {
        lua_pushcfunction(L, buf_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return b;
}

/* enc(v [, flags [, root]]) -> message; raises as lmp_codec_encode does. */
static int l_enc(lua_State *L) {
    int flags = (int)luaL_optinteger(L, 2, 0);
    const char *root = luaL_optstring(L, 3, NULL);
    lua_settop(L, 3);
    lmp_buf *b = new_buf(L);
    lmp_codec_encode(L, 1, b, root, flags);
    if (lua_gettop(L) != 4) return luaL_error(L, "encode moved the stack");
    lua_pushlstring(L, b->data, b->len);
    lmp_buf_free(b);
    return 1;
}

/* dec(s [, flags]) -> true, v | false, message */
static int l_dec(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int flags = (int)luaL_optinteger(L, 2, 0);
    lua_settop(L, 2);
    int rc = lmp_codec_decode(L, s, n, flags);
    if (lua_gettop(L) != 3) return luaL_error(L, "decode: stack not +1");
    if (rc != 0 && lua_type(L, 3) != LUA_TSTRING)
        return luaL_error(L, "decode: -1 without a message");
    lua_pushboolean(L, rc == 0);
    lua_insert(L, -2);
    return 2;
}

static int l_answer(lua_State *L) {
    lua_pushinteger(L, 42);
    return 1;
}

static int l_answer2(lua_State *L) { return l_answer(L); }
static int l_unknown(lua_State *L) { return lua_gettop(L); }
static int l_onlyhere(lua_State *L) { return lua_gettop(L); }

static int open_testmod(lua_State *L) {
    lua_newtable(L);
    lua_pushcfunction(L, l_answer);
    lua_setfield(L, -2, "answer");
    return 1;
}

static const char helpers[] =
    "local function copy(t) local c = {} for k, v in next, t do c[k] = v end "
    "return c end\n"
    /* Structural equality: same shape, same sharing, bit-exact floats,
     * integer/float kept apart.  m/r map a's tables to b's and back. */
    "function same(a, b, m, r)\n"
    "  m = m or {}; r = r or {}\n"
    "  if type(a) ~= type(b) then return false end\n"
    "  if type(a) == 'number' then\n"
    "    if math.type(a) ~= math.type(b) then return false end\n"
    "    if math.type(a) == 'float' then\n"
    "      return string.pack('<d', a) == string.pack('<d', b) end\n"
    "    return a == b\n"
    "  end\n"
    "  if type(a) ~= 'table' then return rawequal(a, b) end\n"
    "  if m[a] ~= nil or r[b] ~= nil then return m[a] == b end\n"
    "  if getmetatable(b) ~= nil then return false end\n"
    "  m[a] = b; r[b] = a\n"
    "  local n = 0\n"
    "  for k, v in next, a do\n"
    "    n = n + 1\n"
    "    local k2 = k\n"
    "    if type(k) == 'table' then\n"
    "      k2 = m[k]\n"
    "      if k2 == nil then\n"
    "        for c in next, b do\n"
    "          if type(c) == 'table' and r[c] == nil then\n"
    "            local m2, r2 = copy(m), copy(r)\n"
    "            if same(k, c, m2, r2) then\n"
    "              for x, y in next, m2 do m[x] = y end\n"
    "              for x, y in next, r2 do r[x] = y end\n"
    "              k2 = c; break\n"
    "            end\n"
    "          end\n"
    "        end\n"
    "      end\n"
    "      if k2 == nil then return false end\n"
    "    end\n"
    "    if not same(v, rawget(b, k2), m, r) then return false end\n"
    "  end\n"
    "  for _ in next, b do n = n - 1 end\n"
    "  return n == 0\n"
    "end\n"
    "function roundtrip(make, flags)\n"
    "  local v = assert(load(make))()\n"
    "  local ok, s = pcall(enc, v, flags)\n"
    "  if not ok then return false, 'encode: ' .. tostring(s) end\n"
    "  local ok2, w = dec(s, flags)\n"
    "  if not ok2 then return false, 'decode: ' .. w end\n"
    "  return true, v, w, s\n"
    "end\n"
    "function check_case(make, check)\n"
    "  local ok, v, w, s = roundtrip(make, 0)\n"
    "  if not ok then return false, v end\n"
    "  if not same(v, w) then return false, 'decoded value differs' end\n"
    "  if check and not assert(load(check))()(w, v) then\n"
    "    return false, 'check failed' end\n"
    "  return true, #s .. ' bytes'\n"
    "end\n"
    "function enc_error(make, flags, root)\n"
    "  local ok, msg = pcall(enc, assert(load(make))(), flags, root)\n"
    "  return ok and '(no error)' or msg\n"
    "end\n";

static lua_State *new_state(const char *who) {
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_register(L, "enc", l_enc);
    lua_register(L, "dec", l_dec);
    lua_pushstring(L, who);
    lua_setglobal(L, "WHO");
    lua_pushinteger(L, LMP_CODEC_FUNCTIONS);
    lua_setglobal(L, "FUNCS");
    lua_pushlightuserdata(L, &tap_n);
    lua_setglobal(L, "LIGHT");
    lua_newtable(L); /* _G.HIDDEN.f is two levels down: not found */
    lua_pushcfunction(L, l_unknown);
    lua_setfield(L, -2, "f");
    lua_setglobal(L, "HIDDEN");
    if (luaL_dostring(L, helpers) != LUA_OK) {
        printf("Bail out! helpers: %s\n", lua_tostring(L, -1));
        exit(1);
    }
    return L;
}

/* Call global fn with string/int arguments ("s"/"i" in sig); leaves
 * nres results; returns 0, or -1 after printing the error. */
static int call(lua_State *L, const char *fn, int nres, const char *sig, ...) {
    va_list ap;
    int n = 0;
    lua_getglobal(L, fn);
    va_start(ap, sig);
    for (; sig[n]; n++) {
        if (sig[n] == 's') {
            const char *s = va_arg(ap, const char *);
            if (s) lua_pushstring(L, s);
            else lua_pushnil(L);
        } else {
            lua_pushinteger(L, va_arg(ap, int));
        }
    }
    va_end(ap);
    if (lua_pcall(L, n, nres, 0) != LUA_OK) {
        printf("# %s: %s\n", fn, lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

/* ---- round trips --------------------------------------------------------- */

static const struct rt_case {
    const char *name, *make, *check;
} rt_cases[] = {
    {"nil", "return nil", NULL},
    {"true", "return true", NULL},
    {"false", "return false", NULL},
    {"0", "return 0", NULL},
    {"127 (last fixint)", "return 127", NULL},
    {"128", "return 128", NULL},
    {"-1", "return -1", NULL},
    {"math.maxinteger", "return math.maxinteger", NULL},
    {"math.mininteger", "return math.mininteger", NULL},
    {"2^53+1 as integer", "return (1 << 53) + 1",
     "return function(w) return w == 9007199254740993 and "
     "math.type(w) == 'integer' end"},
    {"1.0 stays a float", "return 1.0",
     "return function(w) return math.type(w) == 'float' end"},
    {"-0.0", "return -0.0",
     "return function(w) return 1 / w == -math.huge end"},
    {"nan", "return 0/0", "return function(w) return w ~= w end"},
    {"nan with payload", "return string.unpack('<d', "
                         "'\\1\\0\\0\\0\\0\\0\\248\\127')", NULL},
    {"inf", "return math.huge", NULL},
    {"-inf", "return -math.huge", NULL},
    {"0.1", "return 0.1", NULL},
    {"denormal", "return 4.9e-324", NULL},
    {"empty string", "return ''", NULL},
    {"\"\\0\"", "return '\\0'", NULL},
    {"63-byte string", "return ('x'):rep(63)", NULL},
    {"64-byte string", "return ('x'):rep(64)", NULL},
    {"all 256 bytes", "local t = {} for i = 0, 255 do t[#t + 1] = "
                      "string.char(i) end return table.concat(t)", NULL},
    {"1 MB string", "return ('ab\\0'):rep(349526)", NULL},
    {"empty table", "return {}", NULL},
    {"array", "return {1, 2.5, 'x', true, false, -7, math.mininteger}",
     NULL},
    {"array with holes", "return {1, nil, 3, nil, 5}", NULL},
    {"hash", "return {a = 1, ['odd key'] = 2, [1.5] = 3, [true] = 4, "
             "[-1] = 5, [0] = 6, [math.maxinteger] = 7, ['\\0'] = 8}",
     NULL},
    {"mixed array and hash", "local t = {10, 20, 30, x = 'y'} t[100] = 1 "
                             "t[5] = 5 return t", NULL},
    {"nested", "return {a = {b = {c = {d = 'deep'}}}, {1, {2, {3}}}}", NULL},
    {"cycle t.self = t", "local t = {} t.self = t return t",
     "return function(w) return w.self == w end"},
    {"mutual cycle", "local a, b = {}, {} a.b = b b.a = a return {a, b}",
     "return function(w) return w[1].b == w[2] and w[2].a == w[1] end"},
    {"shared subtable", "local s = {1} return {s, s, x = s, [s] = s}",
     "return function(w) return w[1] == w[2] and w.x == w[1] and "
     "w[w[1]] == w[1] end"},
    {"tables as keys", "return {[{1}] = 'one', [{2}] = 'two', [{}] = {}}",
     NULL},
    {"cycle through a key", "local t = {} t[t] = t return t",
     "return function(w) return w[w] == w end"},
    {"metatable not sent", "return setmetatable({1}, {__index = print})",
     "return function(w) return getmetatable(w) == nil end"},
    {"131072 floats", "local t = {} for i = 1, 131072 do t[i] = i + 0.25 "
                      "end return t", NULL},
    {"10000 integers", "local t = {} for i = 1, 10000 do t[i] = i * i - 5000 "
                       "end return t", NULL},
    {"1000 records", "local t = {} for i = 1, 1000 do t[i] = {x = i, y = -i, "
                     "name = 'n' .. i, f = i / 3} end return t", NULL},
    {"200 nested tables (the limit)",
     "local t = {} local c = t for i = 2, 200 do c[1] = {} c = c[1] end "
     "return t", NULL},
};

static void test_roundtrips(lua_State *L) {
    for (size_t i = 0; i < sizeof rt_cases / sizeof rt_cases[0]; i++) {
        const struct rt_case *c = &rt_cases[i];
        int top = lua_gettop(L);
        if (call(L, "check_case", 2, "ss", c->make, c->check) != 0) {
            ok(0, "round trip: %s", c->name);
            continue;
        }
        ok(lua_toboolean(L, -2), "round trip: %s (%s)", c->name,
           lua_tostring(L, -1));
        lua_settop(L, top);
    }
}

/* ---- refusals in the sender ------------------------------------------------ */

static const struct err_case {
    const char *make;
    int flags;
    const char *root, *want;
} err_cases[] = {
    {"return {x = {y = io.stdout}}", 0, NULL,
     "value.x.y: cannot send a userdata"},
    {"return {1, {handler = io.stdout}}", 0, "args",
     "args[2].handler: cannot send a userdata"},
    {"return {1, {2, coroutine.create(print)}}", 0, "args",
     "args[2][2]: cannot send a thread"},
    {"return {1, LIGHT}", 0, NULL, "value[2]: cannot send a userdata"},
    {"return {['odd key'] = io.stdout}", 0, NULL,
     "value[\"odd key\"]: cannot send a userdata"},
    {"return {['end'] = io.stdout}", 0, NULL,
     "value[\"end\"]: cannot send a userdata"},
    {"return {['a\\nb\\0\"'] = io.stdout}", 0, NULL,
     "value[\"a\\nb\\0\\\"\"]: cannot send a userdata"},
    {"return {[('k'):rep(50) .. '!'] = io.stdout}", 0, NULL,
     "value[\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...\"]: "
     "cannot send a userdata"},
    {"return {[1.5] = io.stdout}", 0, NULL, "value[1.5]: cannot send a userdata"},
    {"return {[true] = io.stdout}", 0, NULL,
     "value[true]: cannot send a userdata"},
    {"return {[{}] = io.stdout}", 0, NULL,
     "value[<table>]: cannot send a userdata"},
    {"return {[io.stdout] = 1}", 0, NULL, "value[<key>]: cannot send a userdata"},
    {"return {[{io.stdout}] = 1}", 0, NULL,
     "value[<key>][1]: cannot send a userdata"},
    {"return io.stdout", 0, "result", "result: cannot send a userdata"},
    {"return {cb = print}", 0, NULL, "value.cb: cannot send a function"},
    {"return {cb = function() end}", 0, NULL, "value.cb: cannot send a function"},
    {"local handle = io.stdout return {function() return handle end}",
     LMP_CODEC_FUNCTIONS, "args",
     "args[1]<upvalue 'handle'>: cannot send a userdata"},
    {"local t = {co = coroutine.create(print)} "
     "return {f = function() return t end}",
     LMP_CODEC_FUNCTIONS, NULL, "value.f<upvalue 't'>.co: cannot send a thread"},
    {"return {f = HIDDEN.f}", LMP_CODEC_FUNCTIONS, NULL,
     "value.f: cannot send a C function not found in package.loaded"},
    {"local t = {} local c = t for i = 2, 201 do c[1] = {} c = c[1] end "
     "return t",
     0, NULL, "value: nesting too deep (more than 200 levels)"},
    {"local t = {} local c = t for i = 2, 1000 do c[1] = {} c = c[1] end "
     "return t",
     0, NULL, "value: nesting too deep (more than 200 levels)"},
};

static void test_refusals(lua_State *L) {
    for (size_t i = 0; i < sizeof err_cases / sizeof err_cases[0]; i++) {
        const struct err_case *c = &err_cases[i];
        int top = lua_gettop(L);
        if (call(L, "enc_error", 1, "sis", c->make, c->flags, c->root) != 0) {
            ok(0, "refusal %s", c->want);
            continue;
        }
        const char *got = lua_tostring(L, -1);
        ok(got && strcmp(got, c->want) == 0, "refusal: %s", c->want);
        if (got && strcmp(got, c->want) != 0) printf("#   got: %s\n", got);
        lua_settop(L, top);
    }
}

/* ---- hostile bytes ------------------------------------------------------- */

static char last_msg[256];

/* Decode n bytes from an exactly-sized heap copy; check the stack effect
 * and that a failure carries a "codec: " message. */
static int dec_bytes(lua_State *L, const void *p, size_t n, int flags) {
    char *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    int top = lua_gettop(L);
    int rc = lmp_codec_decode(L, copy, n, flags);
    free(copy);
    if (lua_gettop(L) != top + 1) {
        printf("Bail out! decode left the stack at %+d\n", lua_gettop(L) - top);
        exit(1);
    }
    last_msg[0] = 0;
    if (rc != 0) {
        const char *m = lua_tostring(L, -1);
        if (!m || strncmp(m, "codec: ", 7) != 0) {
            printf("Bail out! decode failed without a message\n");
            exit(1);
        }
        snprintf(last_msg, sizeof last_msg, "%s", m);
    }
    lua_settop(L, top);
    return rc;
}

/* Encode the value made by src (raw C string via the enc global). */
static size_t make_msg(lua_State *L, const char *src, int flags, char **out) {
    size_t n;
    if (luaL_loadstring(L, src) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
        printf("Bail out! %s\n", lua_tostring(L, -1));
        exit(1);
    }
    lmp_buf b = LMP_BUF_INIT;
    lmp_codec_encode(L, -1, &b, NULL, flags); /* known sendable: no raise */
    lua_pop(L, 1);
    n = b.len;
    *out = b.data;
    return n;
}

static uint64_t rng = 0x9E3779B97F4A7C15u;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static const char rich[] =
    "local s = {'shared'} local t = {1, 2.5, -0.0, 0/0, math.mininteger, "
    "'x', ('long'):rep(40), s, s, {[s] = true, [{}] = false}, n = {m = {}}}"
    "t.self = t t[1e300] = -1 t.big = 1 << 40 return t";

static int expect_fail(lua_State *L, const unsigned char *p, size_t n,
                       const char *frag) {
    return dec_bytes(L, p, n, 0) == -1 && strstr(last_msg, frag) != NULL;
}

static void test_hostile(lua_State *L) {
    char *msg;
    size_t n = make_msg(L, rich, 0, &msg);
    ok(dec_bytes(L, msg, n, 0) == 0, "the rich message decodes (%zu bytes)", n);

    size_t bad = 0;
    for (size_t k = 0; k < n; k++)
        if (dec_bytes(L, msg, k, 0) != -1) bad++;
    ok(bad == 0, "all %zu truncations rejected (%zu accepted)", n, bad);
    ok(dec_bytes(L, msg, n - 1, 0) == -1 && strstr(last_msg, "truncated"),
       "truncation message: %s", last_msg);

    char *more = malloc(n + 1);
    memcpy(more, msg, n);
    more[n] = 0;
    ok(dec_bytes(L, more, n + 1, 0) == -1 && strstr(last_msg, "trailing"),
       "trailing garbage: %s", last_msg);
    free(more);

    size_t rejected = 0, accepted = 0;
    char *mut = malloc(n);
    for (int it = 0; it < 20000; it++) {
        memcpy(mut, msg, n);
        int flips = 1 + (int)(rnd() % 4);
        for (int f = 0; f < flips; f++) {
            size_t at = rnd() % n;
            if (rnd() & 1) mut[at] ^= (char)(1u << (rnd() % 8));
            else mut[at] = (char)rnd();
        }
        if (dec_bytes(L, mut, n, 0) == 0) accepted++;
        else rejected++;
        if (it % 1000 == 0) lua_gc(L, LUA_GCCOLLECT);
    }
    free(mut);
    ok(1, "20000 random byte flips: %zu rejected, %zu still valid, no crash",
       rejected, accepted);

    accepted = 0;
    unsigned char junk[64];
    for (int it = 0; it < 20000; it++) {
        size_t len = 1 + rnd() % sizeof junk;
        junk[0] = LMP_CODEC_MAGIC;
        for (size_t i = 1; i < len; i++) junk[i] = (unsigned char)rnd();
        if (dec_bytes(L, junk, len, 0) == 0) accepted++;
    }
    ok(1, "20000 random messages: no crash (%zu decoded)", accepted);
    free(msg);

    static const unsigned char empty[1];
    ok(expect_fail(L, empty, 0, "empty"), "empty input: %s", last_msg);
    static const unsigned char badmagic[] = {0x00, 0x00};
    ok(expect_fail(L, badmagic, 2, "not a luamp"), "bad magic: %s", last_msg);
    static const unsigned char newver[] = {LMP_CODEC_MAGIC + 1, 0x00};
    ok(expect_fail(L, newver, 2, "version"), "other version: %s", last_msg);
    static const unsigned char hugestr[] = {LMP_CODEC_MAGIC, LMP_TAG_STR, 0x80,
                                            0x80, 0x80, 0x80, 0x80, 0x80,
                                            0x80, 0x80, 0x40, 'x'};
    ok(expect_fail(L, hugestr, sizeof hugestr, "claims"),
       "string claiming 2^62 bytes: %s", last_msg);
    static const unsigned char hugearr[] = {LMP_CODEC_MAGIC, LMP_TAG_TABLE,
                                            0xff, 0xff, 0xff, 0xff, 0, 0,
                                            0, 0, LMP_TAG_NIL};
    ok(expect_fail(L, hugearr, sizeof hugearr, "claims"),
       "table claiming 2^32-1 items: %s", last_msg);
    static const unsigned char hugehash[] = {LMP_CODEC_MAGIC, LMP_TAG_TABLE,
                                             0, 0, 0, 0, 0xff, 0xff, 0xff,
                                             0xff, 0x80, 0x80};
    ok(expect_fail(L, hugehash, sizeof hugehash, "claims"),
       "table claiming 2^32-1 pairs: %s", last_msg);
    static const unsigned char longvar[] = {LMP_CODEC_MAGIC, LMP_TAG_INT,
                                            0xff, 0xff, 0xff, 0xff, 0xff,
                                            0xff, 0xff, 0xff, 0xff, 0x7f};
    ok(expect_fail(L, longvar, sizeof longvar, "varint"),
       "overlong varint: %s", last_msg);
    static const unsigned char ref0[] = {LMP_CODEC_MAGIC, LMP_TAG_REF, 1};
    ok(expect_fail(L, ref0, sizeof ref0, "bad reference"),
       "reference before any table: %s", last_msg);
    static const unsigned char ref2[] = {LMP_CODEC_MAGIC, LMP_TAG_TABLE, 1, 0,
                                         0, 0, 0, 0, 0, 0, LMP_TAG_REF, 2};
    ok(expect_fail(L, ref2, sizeof ref2, "bad reference"),
       "reference ahead: %s", last_msg);
    static const unsigned char ref1[] = {LMP_CODEC_MAGIC, LMP_TAG_TABLE, 1, 0,
                                         0, 0, 0, 0, 0, 0, LMP_TAG_REF, 1};
    ok(dec_bytes(L, ref1, sizeof ref1, 0) == 0, "reference to self decodes");
    static const unsigned char unk[] = {LMP_CODEC_MAGIC, 0x3f};
    ok(expect_fail(L, unk, 2, "unknown tag"), "unknown tag: %s", last_msg);
    static const unsigned char nilkey[] = {
        LMP_CODEC_MAGIC, LMP_TAG_TABLE, 0, 0, 0, 0, 1, 0, 0, 0,
        LMP_TAG_HKEY, LMP_TAG_NIL, 0x81};
    ok(expect_fail(L, nilkey, sizeof nilkey, "nil table key"),
       "nil key: %s", last_msg);
    static const unsigned char nankey[] = {
        LMP_CODEC_MAGIC, LMP_TAG_TABLE, 0, 0, 0, 0, 1, 0, 0, 0, LMP_TAG_HKEY,
        LMP_TAG_FLOAT, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f, 0x81};
    ok(expect_fail(L, nankey, sizeof nankey, "NaN table key"),
       "NaN key: %s", last_msg);
    static const unsigned char count[] = {
        LMP_CODEC_MAGIC, LMP_TAG_TABLE, 1, 0, 0, 0, 1, 0, 0, 0,
        LMP_TAG_HKEY, 0x81, 0x81, LMP_TAG_HKEY, 0x82, 0x82};
    ok(expect_fail(L, count, sizeof count, "header says"),
       "table entry counts not as announced: %s", last_msg);
    static const unsigned char hkey[] = {LMP_CODEC_MAGIC, LMP_TAG_HKEY, 1, 1};
    ok(expect_fail(L, hkey, sizeof hkey, "outside"),
       "table key outside a table: %s", last_msg);
    static const unsigned char fn[] = {LMP_CODEC_MAGIC, LMP_TAG_LFUNC, 4, 0,
                                       0, 0, 0x1b, 'L', 'u', 'a', 0};
    ok(expect_fail(L, fn, sizeof fn, "not allowed"),
       "function tag without the flag: %s", last_msg);
    static const unsigned char cfn[] = {LMP_CODEC_MAGIC, LMP_TAG_CFUNC, 2,
                                        'o', 's', 4, 't', 'i', 'm', 'e'};
    ok(expect_fail(L, cfn, sizeof cfn, "not allowed"),
       "C function tag without the flag: %s", last_msg);
    static const unsigned char glob[] = {LMP_CODEC_MAGIC, LMP_TAG_GLOBALS};
    ok(expect_fail(L, glob, sizeof glob, "not allowed"),
       "global marker without the flag: %s", last_msg);
    static const unsigned char join[] = {LMP_CODEC_MAGIC, LMP_TAG_UPJOIN, 1, 1};
    ok(expect_fail(L, join, sizeof join, "outside"),
       "upvalue join outside a function: %s", last_msg);

    /* Depth: LMP_CODEC_MAXDEPTH tables decode, one more does not, and a
     * million-deep bomb is refused without recursing a million times. */
    enum { H = 9 }; /* TABLE u32(1) u32(0) */
    size_t levels = 1000000, len = 1 + levels * H + 1;
    unsigned char *bomb = malloc(len);
    for (size_t i = 0; i < levels; i++)
        memcpy(bomb + 1 + i * H, "\x06\x01\0\0\0\0\0\0\0", H);
    bomb[len - 1] = LMP_TAG_NIL;
    /* A message that starts k levels from the end: the byte before the
     * k-th last header (a 0 of the previous one) becomes the magic. */
    unsigned char *at = bomb + (levels - LMP_CODEC_MAXDEPTH) * H;
    *at = LMP_CODEC_MAGIC;
    ok(dec_bytes(L, at, 1 + LMP_CODEC_MAXDEPTH * H + 1, 0) == 0,
       "200 nested tables decode");
    *at = 0;
    at -= H;
    *at = LMP_CODEC_MAGIC;
    ok(dec_bytes(L, at, 1 + (LMP_CODEC_MAXDEPTH + 1) * H + 1, 0) == -1 &&
           strstr(last_msg, "nesting too deep"),
       "201 nested tables: %s", last_msg);
    bomb[0] = LMP_CODEC_MAGIC;
    ok(expect_fail(L, bomb, len, "nesting too deep"), "depth bomb: %s",
       last_msg);
    free(bomb);
}

/* ---- functions ---------------------------------------------------------- */

/* Encode the value made by src in S, decode it with flags in R and call the
 * Lua check (a function of the decoded value) in R. */
static int fn_case(lua_State *S, lua_State *R, const char *src, int flags,
                   const char *check) {
    char *msg;
    size_t n = make_msg(S, src, LMP_CODEC_FUNCTIONS, &msg);
    int top = lua_gettop(R), res = 0;
    int rc = lmp_codec_decode(R, msg, n, flags);
    free(msg);
    if (rc != 0) {
        snprintf(last_msg, sizeof last_msg, "%s", lua_tostring(R, -1));
        lua_settop(R, top);
        return -1;
    }
    if (luaL_loadstring(R, check) != LUA_OK || lua_pcall(R, 0, 1, 0) != LUA_OK) {
        printf("# check: %s\n", lua_tostring(R, -1));
        lua_settop(R, top);
        return 0;
    }
    lua_insert(R, -2);
    if (lua_pcall(R, 1, 1, 0) != LUA_OK)
        printf("# check: %s\n", lua_tostring(R, -1));
    else
        res = lua_toboolean(R, -1);
    lua_settop(R, top);
    return res;
}

static void test_functions(lua_State *L, lua_State *L2) {
    const int F = LMP_CODEC_FUNCTIONS;
    ok(fn_case(L, L2, "local n, t = 41, {x = 1} "
                      "return function(a) return n + a + t.x end",
               F, "return function(f) return f(1) == 43 end"),
       "Lua function with upvalues, into another state");
    ok(fn_case(L, L2, "return function() return WHO, _ENV == _G end", F,
               "return function(f) local w, g = f() "
               "return w == 'L2' and g end"),
       "_ENV rebound to the receiver's globals");
    ok(fn_case(L, L2, "local _ENV = {WHO = 'custom'} "
                      "return function() return WHO end",
               F, "return function(f) return f() == 'custom' end"),
       "a custom _ENV table travels as a table");
    ok(fn_case(L, L2, "return {g = _G}", F,
               "return function(v) return v.g == _G end"),
       "the global table is a marker");
    ok(fn_case(L, L2, "local function fact(n) "
                      "return n <= 1 and 1 or n * fact(n - 1) end return fact",
               F, "return function(f) return f(10) == 3628800 end"),
       "recursive local function (upvalue is itself)");
    ok(fn_case(L, L2, "local c = 0 local function inc() c = c + 1 return c end "
                      "local function get() return c end "
                      "return {inc = inc, get = get}",
               F, "return function(t) t.inc() t.inc() return t.get() == 2 end"),
       "two closures keep sharing an upvalue");
    ok(fn_case(L, L2, "local t = {} local c = 5 "
                      "local function f() return t, c end "
                      "t.g = function() c = c + 1 end return f",
               F, "return function(f) local t, c = f() t.g() "
                  "local _, c2 = f() return c == 5 and c2 == 6 end"),
       "upvalue shared with a closure inside another upvalue");
    ok(fn_case(L, L2, "local f = function() return 1 end "
                      "return {f, f, {f}}",
               F, "return function(t) return t[1] == t[2] and "
                  "t[3][1] == t[1] and t[1]() == 1 end"),
       "the same closure twice decodes to one closure");
    ok(fn_case(L, L2, "local fmt = string.format "
                      "return {fmt, function(x) return fmt('<%d>', x) end}",
               F, "return function(t) return rawequal(t[1], string.format) "
                  "and t[2](7) == '<7>' end"),
       "C function by package.loaded path (string.format)");
    ok(fn_case(L, L2, "return {print, require, math.floor}", F,
               "return function(t) return t[1] == print and "
               "t[2] == require and t[3] == math.floor end"),
       "C functions from _G and math");
    ok(fn_case(L, L2, "return require('testmod').answer", F,
               "return function(f) return f() == 42 and "
               "package.loaded.testmod ~= nil end"),
       "C function from a module the receiver still has to require");
    ok(fn_case(L, L, "return package.loaded.answerfn", F,
               "return function(f) return f() == 42 end"),
       "C function that is itself package.loaded[module]");
    ok(fn_case(L, L2, "return package.loaded.onlyhere.f", F,
               "return function() return true end") == -1 &&
           strstr(last_msg, "onlyhere"),
       "module the receiver cannot require: %s", last_msg);
    ok(fn_case(L, L2, "return function() end", 0,
               "return function() return true end") == -1 &&
           strstr(last_msg, "not allowed"),
       "function message refused without the flag: %s", last_msg);

    char *msg;
    size_t n = make_msg(L, "local up = {1, 2} local function f(x) "
                           "return up[x] end return {f, f, up}",
                        F, &msg);
    size_t bad = 0;
    for (size_t k = 0; k < n; k++)
        if (dec_bytes(L2, msg, k, F) != -1) bad++;
    ok(bad == 0, "all %zu truncations of a function message rejected", n);
    free(msg);
}

/* ---- throughput (--bench) ------------------------------------------------ */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Best of `iters` calls of the global Lua function fn(): warm numbers,
 * the same rule for every contender. */
static double lua_best(lua_State *L, const char *fn, int iters) {
    double best = 1e9;
    for (int i = 0; i < iters; i++) {
        lua_gc(L, LUA_GCCOLLECT);
        lua_getglobal(L, fn);
        double t0 = now();
        if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
            printf("# %s: %s\n", fn, lua_tostring(L, -1));
            lua_pop(L, 1);
            return -1;
        }
        double t = now() - t0;
        if (t < best) best = t;
    }
    return best;
}

static void bench_one(lua_State *L, const char *name, const char *global,
                      double mb, int iters) {
    lmp_buf b = LMP_BUF_INIT;
    double te = 1e9, td = 1e9;
    lua_getglobal(L, global);
    for (int i = 0; i < iters; i++) { /* the buffer is reused, as a channel would */
        lmp_buf_reset(&b);
        double t0 = now();
        lmp_codec_encode(L, -1, &b, NULL, 0);
        if (now() - t0 < te) te = now() - t0;
    }
    for (int i = 0; i < iters; i++) {
        lua_gc(L, LUA_GCCOLLECT);
        double t0 = now();
        if (lmp_codec_decode(L, b.data, b.len, 0) != 0) printf("# bad bench\n");
        if (now() - t0 < td) td = now() - t0;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    printf("# %-12s %-11s enc %6.0f MB/s  dec %6.0f MB/s  (%zu bytes)\n",
           name, "luamp codec", mb / te, mb / td, b.len);
    lmp_buf_free(&b);
    char fn[64];
    const char *alt[] = {"cjson", "pack"};
    for (int a = 0; a < 2; a++) {
        snprintf(fn, sizeof fn, "%s_%s_enc", alt[a], global);
        double ae = lua_best(L, fn, iters);
        snprintf(fn, sizeof fn, "%s_%s_dec", alt[a], global);
        double ad = lua_best(L, fn, iters);
        printf("# %-12s %-11s enc %6.0f MB/s  dec %6.0f MB/s\n", name,
               a ? "string.pack" : "lua-cjson", mb / ae, mb / ad);
    }
}

static const char bench_lua[] =
    "local cjson = require 'cjson'\n"
    "floats = {} for i = 1, 131072 do floats[i] = math.random() * 1e6 end\n"
    "local blk = {} for i = 1, 1024 do blk[i] = string.char(97 + i % 26) end\n"
    "bigstr = table.concat(blk):rep(100 * 1024)\n"
    "local fmt = '<' .. ('d'):rep(#floats)\n"
    "local je, pe = cjson.encode(floats), string.pack(fmt, table.unpack(floats))\n"
    "function cjson_floats_enc() cjson.encode(floats) end\n"
    "function cjson_floats_dec() cjson.decode(je) end\n"
    "function pack_floats_enc() string.pack(fmt, table.unpack(floats)) end\n"
    "function pack_floats_dec() local t = {string.unpack(fmt, pe)} end\n"
    "local js, ps = cjson.encode(bigstr), string.pack('s8', bigstr)\n"
    "function cjson_bigstr_enc() cjson.encode(bigstr) end\n"
    "function cjson_bigstr_dec() cjson.decode(js) end\n"
    "function pack_bigstr_enc() string.pack('s8', bigstr) end\n"
    "function pack_bigstr_dec() string.unpack('s8', ps) end\n";

static void bench(lua_State *L) {
    if (luaL_dostring(L, bench_lua) != LUA_OK) {
        printf("# bench setup: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return;
    }
    bench_one(L, "1MB floats", "floats", 1.0, 30);
    bench_one(L, "100MB string", "bigstr", 100.0, 5);
}

int main(int argc, char **argv) {
    lua_State *L = new_state("L1"), *L2 = new_state("L2");
    luaL_requiref(L, "testmod", open_testmod, 0);
    lua_pop(L, 1);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushcfunction(L, l_answer2);
    lua_setfield(L, -2, "answerfn");
    lua_newtable(L);
    lua_pushcfunction(L, l_onlyhere);
    lua_setfield(L, -2, "f");
    lua_setfield(L, -2, "onlyhere");
    lua_pop(L, 1);
    /* L2 can require testmod (preload) but has never loaded it. */
    luaL_getsubtable(L2, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L2, open_testmod);
    lua_setfield(L2, -2, "testmod");
    lua_pop(L2, 1);

    test_roundtrips(L);
    test_refusals(L);
    test_hostile(L);
    test_functions(L, L2);
    ok(lua_gettop(L) == 0 && lua_gettop(L2) == 0, "stacks balanced");
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) bench(L);
    lua_close(L);
    lua_close(L2);
    return tap_done();
}
