/*
 * test_codec.c - the value codec (src/codec): round trips of every kind of
 * value, refusals with their paths, hostile input, functions, modules by
 * reference, _ENV upvalues, userdata hooks.
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

#include "lua/lcodec.h"
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

/* ---- userdata hooks ----------------------------------------------------
 * box(v) makes a "test.box" userdata whose stand-in is v (its user value);
 * unbox(b) gives v back.  A few stand-ins steer the hooks:
 *   encode: "refuse" -> return 0, "raise" -> raise, "two" -> push 2 values
 *   decode: "fail" -> -1 "no good", "codecfail" -> -1 "codec: ...",
 *           "unbalanced" -> 0 with one value too many
 * Anything else decodes to a new box holding the decoded stand-in. */
#define BOX "test.box"

static struct { int enc, dec; } hook_calls;

static int l_box(lua_State *L) {
    lua_settop(L, 1);
    lua_newuserdatauv(L, 1, 1);
    luaL_setmetatable(L, BOX);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

static int l_unbox(lua_State *L) {
    luaL_checkudata(L, 1, BOX);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

static int is_str(lua_State *L, int idx, const char *s) {
    return lua_type(L, idx) == LUA_TSTRING && strcmp(lua_tostring(L, idx), s) == 0;
}

static int box_encode(lua_State *L, int idx, void *ud) {
    (void)ud;
    hook_calls.enc++;
    if (!luaL_testudata(L, idx, BOX)) return 0;
    lua_getiuservalue(L, idx, 1);
    if (is_str(L, -1, "refuse")) {
        lua_pop(L, 1);
        return 0;
    }
    if (is_str(L, -1, "raise")) return luaL_error(L, "hook raised");
    if (is_str(L, -1, "two")) lua_pushinteger(L, 2);
    return 1;
}

static int box_decode(lua_State *L, void *ud) {
    (void)ud;
    hook_calls.dec++;
    if (is_str(L, -1, "fail")) {
        lua_pop(L, 1);
        lua_pushliteral(L, "no good");
        return -1;
    }
    if (is_str(L, -1, "codecfail")) {
        lua_pop(L, 1);
        lua_pushliteral(L, "codec: already prefixed");
        return -1;
    }
    if (is_str(L, -1, "unbalanced")) {
        lua_pushnil(L);
        return 0;
    }
    lua_newuserdatauv(L, 1, 1);
    luaL_setmetatable(L, BOX);
    lua_insert(L, -2);
    lua_setiuservalue(L, -2, 1);
    return 0;
}

static const lmp_codec_hooks box_hooks = {NULL, box_encode, box_decode};
static const lmp_codec_hooks enc_only_hooks = {NULL, box_encode, NULL};

/* hstats() -> encode calls, decode calls since the last hstats() */
static int l_hstats(lua_State *L) {
    lua_pushinteger(L, hook_calls.enc);
    lua_pushinteger(L, hook_calls.dec);
    hook_calls.enc = hook_calls.dec = 0;
    return 2;
}

/* enc(v [, flags [, root]]) -> message; raises as lmp_codec_encode does.
 * henc: the same through lmp_codec_encode_hooks with box_hooks. */
static int enc_with(lua_State *L, const lmp_codec_hooks *h) {
    int flags = (int)luaL_optinteger(L, 2, 0);
    const char *root = luaL_optstring(L, 3, NULL);
    lua_settop(L, 3);
    lmp_buf *b = new_buf(L);
    if (h) lmp_codec_encode_hooks(L, 1, b, root, flags, h);
    else lmp_codec_encode(L, 1, b, root, flags);
    if (lua_gettop(L) != 4) return luaL_error(L, "encode moved the stack");
    lua_pushlstring(L, b->data, b->len);
    lmp_buf_free(b);
    return 1;
}

static int l_enc(lua_State *L) { return enc_with(L, NULL); }
static int l_henc(lua_State *L) { return enc_with(L, &box_hooks); }

/* dec(s [, flags]) -> true, v | false, message;  hdec: with box_hooks. */
static int dec_with(lua_State *L, const lmp_codec_hooks *h) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int flags = (int)luaL_optinteger(L, 2, 0);
    lua_settop(L, 2);
    int rc = h ? lmp_codec_decode_hooks(L, s, n, flags, h)
               : lmp_codec_decode(L, s, n, flags);
    if (lua_gettop(L) != 3) return luaL_error(L, "decode: stack not +1");
    if (rc != 0 && lua_type(L, 3) != LUA_TSTRING)
        return luaL_error(L, "decode: -1 without a message");
    lua_pushboolean(L, rc == 0);
    lua_insert(L, -2);
    return 2;
}

static int l_dec(lua_State *L) { return dec_with(L, NULL); }
static int l_hdec(lua_State *L) { return dec_with(L, &box_hooks); }

/* The binding's variants (lua/lcodec.h).
 * lenc(v) -> ok, error or nil, buffer contents: encodes after "pre" into a
 * scratch buffer with lmp_lencode_hooks, catching what it raises.
 * ldec(s) -> v, raising like lmp_ldecode_hooks. */
static int lenc_inner(lua_State *L) {
    lmp_lencode_hooks(L, 2, lua_touserdata(L, 1), "args", 0, &box_hooks);
    return 0;
}

static int l_lenc(lua_State *L) {
    lua_settop(L, 1);
    lmp_buf *b = lmp_lbuf_new(L);
    if (lmp_buf_append(b, "pre", 3) != 0) return luaL_error(L, "no memory");
    lua_pushcfunction(L, lenc_inner);
    lua_pushlightuserdata(L, b);
    lua_pushvalue(L, 1);
    int st = lua_pcall(L, 2, 0, 0);
    lua_pushboolean(L, st == LUA_OK);
    if (st == LUA_OK) lua_pushnil(L);
    else lua_pushvalue(L, -2);
    lua_pushlstring(L, b->data, b->len);
    return 3;
}

static int l_ldec(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lmp_ldecode_hooks(L, s, n, 0, &box_hooks);
    return 1;
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
    lua_register(L, "henc", l_henc);
    lua_register(L, "hdec", l_hdec);
    lua_register(L, "hstats", l_hstats);
    lua_register(L, "lenc", l_lenc);
    lua_register(L, "ldec", l_ldec);
    lua_register(L, "box", l_box);
    lua_register(L, "unbox", l_unbox);
    luaL_newmetatable(L, BOX);
    lua_pop(L, 1);
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
    {"return {box(1)}", 0, NULL, "value[1]: cannot send a userdata"},
    {"return {box(1)}", LMP_CODEC_FUNCTIONS, NULL,
     "value[1]: cannot send a userdata"},
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

/* Run a Lua chunk that returns a boolean (and, when false, optionally a
 * string saying why); print its error if it raises. */
static int lua_true(lua_State *L, const char *src) {
    int top = lua_gettop(L), res = 0;
    if (luaL_loadstring(L, src) != LUA_OK || lua_pcall(L, 0, 2, 0) != LUA_OK) {
        printf("# %s\n", lua_tostring(L, -1));
    } else {
        res = lua_toboolean(L, -2);
        if (!res && lua_type(L, -1) == LUA_TSTRING)
            printf("#   %s\n", lua_tostring(L, -1));
    }
    lua_settop(L, top);
    return res;
}

/* ---- modules by reference ----------------------------------------------- */

static void test_modules(lua_State *L, lua_State *L2) {
    const int F = LMP_CODEC_FUNCTIONS;
    ok(fn_case(L, L2, "return {m = require('testmod'), s = string, "
                      "m2 = package.loaded.testmod}",
               F, "return function(t) return rawequal(t.m, "
                  "package.loaded.testmod) and rawequal(t.s, string) and "
                  "rawequal(t.m2, t.m) end"),
       "module tables by reference (string; testmod required by receiver)");
    ok(fn_case(L, L2, "local tm = require 'testmod' "
                      "return function() return tm, tm.answer() end",
               F, "return function(f) local m, a = f() "
                  "return rawequal(m, package.loaded.testmod) and a == 42 end"),
       "a module as a function's upvalue");
    ok(lua_true(L, "local v = package.loaded.luamod\n"
                   "local ok, w = dec(enc(v, FUNCS), FUNCS)\n"
                   "return ok and rawequal(v, w)"),
       "a Lua-defined module decodes to the same table in the same state");
    ok(lua_true(L, "local v = package.loaded.luamod\n"
                   "local s = enc(v)\n"
                   "local ok, w = dec(s)\n"
                   "return ok and not rawequal(v, w) and same(v, w) and "
                   "s:byte(2) == 6"),
       "without the flag a module table is sent by value");

    /* The exact bytes: one MODULE, then a REF to its id. */
    static const unsigned char twice[] = {
        LMP_CODEC_MAGIC, LMP_TAG_TABLE, 2, 0, 0, 0, 0, 0, 0, 0,
        LMP_TAG_MODULE, 6, 's', 't', 'r', 'i', 'n', 'g', LMP_TAG_REF, 2};
    char *msg;
    size_t n = make_msg(L, "return {string, string}", F, &msg);
    ok(n == sizeof twice && memcmp(msg, twice, n) == 0,
       "wire: {string, string} is TABLE, MODULE \"string\", REF 2");
    free(msg);
    ok(lua_true(L, "local ok, w = dec('\\209\\6\\2\\0\\0\\0\\0\\0\\0\\0"
                   "\\13\\6string\\7\\2', FUNCS)\n"
                   "return ok and rawequal(w[1], string) and "
                   "rawequal(w[2], string)"),
       "MODULE takes an id: a REF to it decodes to the module");
    ok(lua_true(L, "return enc(_G, FUNCS) == '\\209\\10' and "
                   "enc({package.loaded._G}, FUNCS):sub(-1) == '\\10'"),
       "the global table stays the GLOBALS marker");
    /* A package.loaded (swapped into the registry) where lua_next meets
     * "_G" BEFORE the other name of the same table, so that a first-found
     * rule would wrongly pick "_G".  Filler keys (not tables: ignored)
     * vary the layout; if the hash seed allows none (not seen in 6000
     * seeds), only the weaker check is left and the description says so. */
    lua_pushboolean(L, 0);
    lua_setglobal(L, "G_FIRST");
    int pref = lua_true(L, "local reg = debug.getregistry()\n"
                   "local orig, T, t, name = reg._LOADED, {}\n"
                   "for f = 0, 200 do\n"
                   "  for i = 1, 20 do\n"
                   "    t, name = {}, 'alias' .. i\n"
                   "    local before = f % 2 == 0\n"
                   "    if before then for j = 1, f do t['filler' .. j] = j end end\n"
                   "    t._G = T\n"
                   "    if not before then for j = 1, f do t['filler' .. j] = j end end\n"
                   "    t[name] = T\n"
                   "    local first\n"
                   "    for k, v in next, t do if v == T then first = k break end end\n"
                   "    if first == '_G' then G_FIRST = true goto found end\n"
                   "  end\n"
                   "end\n"
                   "::found::\n"
                   "reg._LOADED = t\n"
                   "local a = enc(T, FUNCS)\n"
                   "t[name] = nil\n"
                   "local b = enc(T, FUNCS)\n"
                   "reg._LOADED = orig\n"
                   "return a == '\\209\\13' .. string.char(#name) .. name and "
                   "b == '\\209\\13\\2_G', ('%q %q %q'):format(name, a, b)");
    lua_getglobal(L, "G_FIRST");
    int strong = lua_toboolean(L, -1);
    lua_pop(L, 1);
    ok(pref, "names other than \"_G\" are preferred, \"_G\" fills the gap%s",
       strong ? "" : " (weak: no layout met \"_G\" first)");

    ok(fn_case(L, L2, "return {package.loaded.onlytab}", F,
               "return function() return true end") == -1 &&
           strstr(last_msg, "codec: cannot load module 'onlytab': ") ==
               last_msg &&
           strstr(last_msg, "not found"),
       "module the receiver cannot require: %s", last_msg);
    static const unsigned char notab[] = {LMP_CODEC_MAGIC, LMP_TAG_MODULE, 8,
                                          'a', 'n', 's', 'w', 'e', 'r', 'f',
                                          'n'};
    ok(dec_bytes(L, notab, sizeof notab, F) == -1 &&
           strstr(last_msg, "cannot load module 'answerfn': it is a function"),
       "module that is not a table: %s", last_msg);
    ok(lua_true(L, "local r = require require = nil\n"
                   "local ok, m = dec('\\209\\13\\4nope', FUNCS)\n"
                   "require = r\n"
                   "return not ok and m == \"codec: cannot load module "
                   "'nope': not loaded and there is no require\""),
       "module not loaded and no require");
    ok(lua_true(L, "package.preload.raising = function() "
                   "error('boom\\nsecond line', 0) end\n"
                   "local ok, m = dec('\\209\\13\\7raising', FUNCS)\n"
                   "return not ok and m == \"codec: cannot load module "
                   "'raising': boom\""),
       "a require that raises: its first line");
    static const unsigned char modnf[] = {LMP_CODEC_MAGIC, LMP_TAG_MODULE, 6,
                                          's', 't', 'r', 'i', 'n', 'g'};
    ok(expect_fail(L, modnf, sizeof modnf, "not allowed"),
       "module tag without the flag: %s", last_msg);
    static const unsigned char modlong[] = {LMP_CODEC_MAGIC, LMP_TAG_MODULE, 7,
                                            's', 't', 'r', 'i', 'n', 'g'};
    ok(dec_bytes(L, modlong, sizeof modlong, F) == -1 &&
           strstr(last_msg, "claims"),
       "module name longer than the message: %s", last_msg);
    static const unsigned char modref[] = {LMP_CODEC_MAGIC, LMP_TAG_TABLE, 2,
                                           0, 0, 0, 0, 0, 0, 0,
                                           LMP_TAG_MODULE, 6, 's', 't', 'r',
                                           'i', 'n', 'g', LMP_TAG_REF, 3};
    ok(dec_bytes(L, modref, sizeof modref, F) == -1 &&
           strstr(last_msg, "bad reference 3"),
       "REF past the module's id: %s", last_msg);

    n = make_msg(L, "local tm = require 'testmod' "
                    "return {string, tm, function() return tm end, string}",
                 F, &msg);
    size_t bad = 0;
    for (size_t k = 0; k < n; k++)
        if (dec_bytes(L2, msg, k, F) != -1) bad++;
    ok(bad == 0, "all %zu truncations of a module message rejected", n);
    free(msg);
}

/* ---- _ENV upvalues --------------------------------------------------------- */

static void test_env(lua_State *L, lua_State *L2) {
    const int F = LMP_CODEC_FUNCTIONS;
    ok(fn_case(L, L2, "local _ENV = {WHO = 'custom'} "
                      "return function() return WHO end",
               F, "return function(f) return f() == 'L2' and "
                  "rawequal(select(2, debug.getupvalue(f, 1)), _G) end"),
       "a custom _ENV is replaced by the receiver's globals");
    ok(fn_case(L, L2, "local env = setmetatable({WHO = 'spec'}, "
                      "{__index = _G}) "
                      "return load('return function() return WHO, print end',"
                      " '=spec', 't', env)()",
               F, "return function(f) local w, p = f() "
                  "return w == 'L2' and p == print end"),
       "a function loaded under a busted-like environment");
    ok(fn_case(L, L2, "local env = {WHO = 'custom'} local f "
                      "do local _ENV = env f = function() return WHO end end "
                      "return {f, env}",
               F, "return function(t) return t[1]() == 'L2' and "
                  "t[2].WHO == 'custom' and t[2] ~= _G end"),
       "the custom table still travels when reached another way");
    ok(fn_case(L, L2, "local _ENV = {WHO = 'custom'} local c = 0 "
                      "local function inc() c = c + 1 return WHO end "
                      "local function get() return c, WHO end "
                      "return {inc, get}",
               F, "return function(t) local a = t[1]() t[1]() "
                  "local c, w = t[2]() return a == 'L2' and c == 2 and "
                  "w == 'L2' end"),
       "closures sharing an _ENV cell and a counter cell");
    char *msg;
    size_t n = make_msg(L, "local _ENV = {1} return function() return x end",
                        F, &msg);
    ok(n > 2 && msg[n - 2] == 1 && msg[n - 1] == LMP_TAG_GLOBALS,
       "wire: an _ENV upvalue is one GLOBALS byte");
    free(msg);
}

/* ---- userdata hooks -------------------------------------------------------- */

static int dec_bytes_h(lua_State *L, const void *p, size_t n, int flags,
                       const lmp_codec_hooks *h) {
    char *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    int top = lua_gettop(L);
    int rc = lmp_codec_decode_hooks(L, copy, n, flags, h);
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

/* henc(...) fails with exactly want. */
static int henc_error(lua_State *L, const char *make, const char *want) {
    int top = lua_gettop(L), res = 0;
    lua_getglobal(L, "pcall");
    lua_getglobal(L, "henc");
    if (luaL_loadstring(L, make) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK ||
        lua_pcall(L, 2, 2, 0) != LUA_OK) {
        printf("# %s\n", lua_tostring(L, -1));
    } else if (lua_toboolean(L, -2)) {
        printf("#   no error\n");
    } else {
        const char *got = lua_tostring(L, -1);
        res = got && strcmp(got, want) == 0;
        if (!res) printf("#   got: %s\n", got ? got : "(not a string)");
    }
    lua_settop(L, top);
    return res;
}

static void test_hooks(lua_State *L) {
    const int F = LMP_CODEC_FUNCTIONS;
    ok(lua_true(L, "hstats()\n"
                   "local b = box({x = 1, y = {2}})\n"
                   "local v = {b, b, k = b, [b] = 'key'}\n"
                   "local ok, w = hdec(henc(v))\n"
                   "local e, d = hstats()\n"
                   "return ok and w[1] == w[2] and w.k == w[1] and "
                   "w[w[1]] == 'key' and w[1] ~= b and "
                   "getmetatable(w[1]) == getmetatable(b) and "
                   "same(unbox(w[1]), unbox(b)) and e == 1 and d == 1"),
       "a userdata reached 4 times: one hook call each way, one value");
    static const unsigned char twice[] = {
        LMP_CODEC_MAGIC, LMP_TAG_TABLE, 2, 0, 0, 0, 0, 0, 0, 0,
        LMP_TAG_UDATA, LMP_TAG_FIXINT | 5, LMP_TAG_REF, 2};
    ok(lua_true(L, "local b = box(5) return henc({b, b}) == '\\209\\6\\2\\0\\0\\0"
                   "\\0\\0\\0\\0\\14\\133\\7\\2'"),
       "wire: UDATA, the stand-in, then REF 2 (%zu bytes)", sizeof twice);
    ok(dec_bytes_h(L, twice, sizeof twice, 0, &box_hooks) == 0,
       "those bytes decode with hooks");
    ok(lua_true(L, "local t = {} local ok, w = hdec(henc({box({t}), t, t}))\n"
                   "return ok and w[2] == w[3] and unbox(w[1])[1] == w[2] and "
                   "w[2] ~= t"),
       "ids after a userdata and its stand-in line up");
    ok(lua_true(L, "local ok, w = hdec(henc(box(nil)))\n"
                   "return ok and unbox(w) == nil"),
       "a nil stand-in");
    ok(lua_true(L, "local b = box({f = function(x) return x * 2 end})\n"
                   "local g = function() return b end\n"
                   "local ok, w = hdec(henc({g, b}, FUNCS), FUNCS)\n"
                   "return ok and w[1]() == w[2] and unbox(w[2]).f(21) == 42"),
       "with LMP_CODEC_FUNCTIONS: functions in a stand-in, a userdata "
       "upvalue");
    ok(henc_error(L, "return {f = io.stdout}",
                  "value.f: cannot send a userdata"),
       "the hook refuses a foreign userdata");
    ok(henc_error(L, "return {box('refuse')}",
                  "value[1]: cannot send a userdata"),
       "the hook refuses a box");
    ok(lua_true(L, "hstats() local ok, m = pcall(henc, {LIGHT})\n"
                   "local e = hstats()\n"
                   "return not ok and m == 'value[1]: cannot send a userdata' "
                   "and e == 0"),
       "light userdata refused without asking the hook");
    ok(henc_error(L, "return {coroutine.create(print)}",
                  "value[1]: cannot send a thread"),
       "threads still refused with hooks");
    ok(henc_error(L, "return {box({ok = 1, bad = {co = coroutine.create(print)}})}",
                  "value[1]<stand-in>.bad.co: cannot send a thread"),
       "unsendable value inside a stand-in has a path");
    ok(henc_error(L, "return {box({cb = print})}",
                  "value[1]<stand-in>.cb: cannot send a function"),
       "a stand-in obeys the flags");
    ok(henc_error(L, "local t = {} local b = box(t) t.self = b return {b}",
                  "value[1]<stand-in>.self: cannot send a userdata inside "
                  "its own stand-in"),
       "a stand-in containing its own userdata");
    ok(henc_error(L, "local ta = {} local a = box(ta) ta.b = box({a = a}) "
                     "return a",
                  "value<stand-in>.b<stand-in>.a: cannot send a userdata "
                  "inside its own stand-in"),
       "two stand-ins containing each other's userdata");
    ok(henc_error(L, "return {box('two')}",
                  "value[1]: userdata hook pushed 2 values, not 1"),
       "a hook pushing two values");
    ok(lua_true(L, "local ok, m = pcall(henc, {box('raise')})\n"
                   "return not ok and m:find('hook raised', 1, true)"),
       "a raising hook's error propagates");
    ok(henc_error(L, "local v = 1 for i = 1, 250 do v = box(v) end return v",
                  "value: nesting too deep (more than 200 levels)"),
       "stand-ins nested 250 deep");
    ok(lua_true(L, "local v = 1 for i = 1, 199 do v = box(v) end\n"
                   "local ok, w = hdec(henc({v}))\n"
                   "for i = 1, 199 do w = ok and unbox(i == 1 and w[1] or w) end\n"
                   "return ok and w == 1"),
       "stand-ins nested 200 deep (with their table) round-trip");

    /* The binding's variants. */
    ok(lua_true(L, "local b = box({1}) local v = {b, b}\n"
                   "local ok, err, s = lenc(v)\n"
                   "local w = ldec(s:sub(4))\n"
                   "return ok and err == nil and s == 'pre' .. henc(v) and "
                   "w[1] == w[2] and unbox(w[1])[1] == 1"),
       "lmp_lencode_hooks / lmp_ldecode_hooks round trip");
    ok(lua_true(L, "local ok, err, s = lenc({box('raise')})\n"
                   "return not ok and err:find('hook raised', 1, true) and "
                   "s == 'pre'"),
       "lmp_lencode_hooks: a raising hook leaves the buffer as it was");
    ok(lua_true(L, "local ok, err, s = lenc({x = box('refuse')})\n"
                   "return not ok and err == 'args.x: cannot send a userdata' "
                   "and s == 'pre'"),
       "lmp_lencode_hooks: a refusal names the path");
    ok(lua_true(L, "local ok, m = pcall(ldec, '\\209\\14\\68fail')\n"
                   "return not ok and m == 'codec: no good'"),
       "lmp_ldecode_hooks raises the hook's message");

    /* Decoding: refusals and hostile bytes. */
    static const unsigned char ud1[] = {LMP_CODEC_MAGIC, LMP_TAG_UDATA,
                                        LMP_TAG_FIXINT | 1};
    ok(dec_bytes_h(L, ud1, sizeof ud1, 0, NULL) == -1 &&
           strstr(last_msg, "userdata at byte 1 without a handler"),
       "UDATA without hooks: %s", last_msg);
    ok(dec_bytes_h(L, ud1, sizeof ud1, F, &enc_only_hooks) == -1 &&
           strstr(last_msg, "without a handler"),
       "UDATA with hooks but no decode hook: %s", last_msg);
    ok(lua_true(L, "local ok, m = dec(henc({box(1)}))\n"
                   "return not ok and m:find('without a handler', 1, true)"),
       "a hooked message decoded by lmp_codec_decode is refused");
    ok(dec_bytes_h(L, ud1, sizeof ud1, 0, &box_hooks) == 0,
       "minimal UDATA decodes with hooks");
    static const unsigned char udfail[] = {LMP_CODEC_MAGIC, LMP_TAG_UDATA,
                                           LMP_TAG_SHORTSTR | 4, 'f', 'a',
                                           'i', 'l'};
    ok(dec_bytes_h(L, udfail, sizeof udfail, 0, &box_hooks) == -1 &&
           strcmp(last_msg, "codec: no good") == 0,
       "the decode hook's message gets the prefix: %s", last_msg);
    static const unsigned char udcf[] = {
        LMP_CODEC_MAGIC, LMP_TAG_UDATA, LMP_TAG_SHORTSTR | 9, 'c', 'o', 'd',
        'e', 'c', 'f', 'a', 'i', 'l'};
    ok(dec_bytes_h(L, udcf, sizeof udcf, 0, &box_hooks) == -1 &&
           strcmp(last_msg, "codec: already prefixed") == 0,
       "a prefixed message is kept as is: %s", last_msg);
    static const unsigned char udub[] = {
        LMP_CODEC_MAGIC, LMP_TAG_UDATA, LMP_TAG_SHORTSTR | 10, 'u', 'n', 'b',
        'a', 'l', 'a', 'n', 'c', 'e', 'd'};
    ok(dec_bytes_h(L, udub, sizeof udub, 0, &box_hooks) == -1 &&
           strstr(last_msg, "broke its contract"),
       "a decode hook leaving the stack unbalanced: %s", last_msg);
    static const unsigned char udself[] = {LMP_CODEC_MAGIC, LMP_TAG_UDATA,
                                           LMP_TAG_REF, 1};
    ok(dec_bytes_h(L, udself, sizeof udself, 0, &box_hooks) == -1 &&
           strstr(last_msg, "still being decoded"),
       "REF to a userdata from its own stand-in: %s", last_msg);
    static const unsigned char udin[] = {
        LMP_CODEC_MAGIC, LMP_TAG_TABLE, 0, 0, 0, 0, 1, 0, 0, 0, LMP_TAG_HKEY,
        LMP_TAG_UDATA, LMP_TAG_TABLE, 1, 0, 0, 0, 0, 0, 0, 0, LMP_TAG_REF, 2,
        LMP_TAG_TRUE};
    ok(dec_bytes_h(L, udin, sizeof udin, 0, &box_hooks) == -1 &&
           strstr(last_msg, "reference 2 at byte 21"),
       "REF to a pending userdata deeper in its stand-in: %s", last_msg);
    static const unsigned char udouter[] = {
        LMP_CODEC_MAGIC, LMP_TAG_TABLE, 1, 0, 0, 0, 0, 0, 0, 0,
        LMP_TAG_UDATA, LMP_TAG_REF, 1};
    ok(dec_bytes_h(L, udouter, sizeof udouter, 0, &box_hooks) == 0,
       "a stand-in may refer to an enclosing table");
    static const unsigned char udtrunc[] = {LMP_CODEC_MAGIC, LMP_TAG_UDATA};
    ok(dec_bytes_h(L, udtrunc, sizeof udtrunc, 0, &box_hooks) == -1 &&
           strstr(last_msg, "truncated"),
       "UDATA with no stand-in: %s", last_msg);
    size_t levels = 1000000;
    unsigned char *bomb = malloc(levels + 2);
    bomb[0] = LMP_CODEC_MAGIC;
    memset(bomb + 1, LMP_TAG_UDATA, levels);
    bomb[levels + 1] = LMP_TAG_NIL;
    ok(dec_bytes_h(L, bomb, levels + 2, 0, &box_hooks) == -1 &&
           strstr(last_msg, "nesting too deep"),
       "a million nested UDATA tags: %s", last_msg);
    free(bomb);

    /* Truncations and flips of a message with userdata, modules, _ENV. */
    lua_getglobal(L, "henc");
    if (luaL_loadstring(L, "local b = box({'s', {1.5}}) local t = {b} "
                           "local tm = require 'testmod' "
                           "return {b, t, box(t), b, tm, "
                           "function() return b, x end}") != LUA_OK ||
        lua_pcall(L, 0, 1, 0) != LUA_OK) {
        printf("Bail out! %s\n", lua_tostring(L, -1));
        exit(1);
    }
    lua_pushinteger(L, F);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        printf("Bail out! %s\n", lua_tostring(L, -1));
        exit(1);
    }
    size_t n;
    const char *m = lua_tolstring(L, -1, &n);
    ok(dec_bytes_h(L, m, n, F, &box_hooks) == 0,
       "the hooked message decodes (%zu bytes)", n);
    size_t bad = 0;
    for (size_t k = 0; k < n; k++)
        if (dec_bytes_h(L, m, k, F, &box_hooks) != -1) bad++;
    ok(bad == 0, "all %zu truncations of a hooked message rejected", n);
    lua_pop(L, 1);

    /* Flips only without functions: Lua does not verify bytecode. */
    lua_getglobal(L, "henc");
    if (luaL_loadstring(L, "local b = box({'s', {1.5}}) local t = {b} "
                           "return {b, t, box(t), b, box('fail'), box(b)}") !=
            LUA_OK ||
        lua_pcall(L, 0, 1, 0) != LUA_OK || lua_pcall(L, 1, 1, 0) != LUA_OK) {
        printf("Bail out! %s\n", lua_tostring(L, -1));
        exit(1);
    }
    m = lua_tolstring(L, -1, &n);
    char *mut = malloc(n);
    size_t accepted = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(mut, m, n);
        int flips = 1 + (int)(rnd() % 4);
        for (int f = 0; f < flips; f++) {
            size_t at = rnd() % n;
            if (rnd() & 1) mut[at] ^= (char)(1u << (rnd() % 8));
            else mut[at] = (char)rnd();
        }
        if (dec_bytes_h(L, mut, n, 0, &box_hooks) == 0) accepted++;
        if (it % 1000 == 0) lua_gc(L, LUA_GCCOLLECT);
    }
    free(mut);
    lua_pop(L, 1);
    ok(1, "20000 random byte flips of a hooked message: no crash "
          "(%zu still valid)", accepted);
    unsigned char junk[48];
    static const unsigned char alphabet[] = {
        LMP_TAG_NIL,  LMP_TAG_TRUE,  LMP_TAG_TABLE, LMP_TAG_REF, LMP_TAG_HKEY,
        LMP_TAG_UDATA, LMP_TAG_MODULE, LMP_TAG_GLOBALS, 0, 1, 2, 0x81, 0x44};
    accepted = 0;
    for (int it = 0; it < 20000; it++) {
        size_t len = 1 + rnd() % sizeof junk;
        junk[0] = LMP_CODEC_MAGIC;
        for (size_t i = 1; i < len; i++)
            junk[i] = alphabet[rnd() % sizeof alphabet];
        if (dec_bytes_h(L, junk, len, 0, &box_hooks) == 0) accepted++;
    }
    ok(1, "20000 random messages of codec tags with hooks: no crash "
          "(%zu decoded)", accepted);
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


/* Decoder amplification (issue 10 #3): 200 nested tables, each claiming
 * 2^20 array items, in a 1 MB message.  Every claim fits the bytes left,
 * but they all claim the same bytes: the presizing must stay within a
 * small constant factor of the input, for the whole message.  Counted
 * with an allocator that tracks the peak of live bytes. */
static size_t amp_live, amp_peak;
static void *amp_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    if (ptr) amp_live -= osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    void *q = realloc(ptr, nsize);
    if (!q) {
        if (ptr) amp_live += osize;
        return NULL;
    }
    amp_live += nsize;
    if (amp_live > amp_peak) amp_peak = amp_live;
    return q;
}

static void test_amplification(void) {
    size_t len = (1u << 20) + 4096; /* every claim fits what is left */
    unsigned char *m = calloc(1, len); /* the rest: nil items */
    size_t at = 0;
    m[at++] = LMP_CODEC_MAGIC;
    for (int i = 0; i < 199; i++) { /* + the top level: 200 deep */
        m[at++] = LMP_TAG_TABLE;
        uint32_t narr = 1u << 20, nhash = 0;
        memcpy(m + at, &narr, 4), memcpy(m + at + 4, &nhash, 4);
        at += 8;
    }
    lua_State *L = lua_newstate(amp_alloc, NULL);
    size_t base = amp_live;
    amp_peak = base;
    double t0 = (double)clock() / CLOCKS_PER_SEC;
    int rc = lmp_codec_decode(L, (const char *)m, len, 0);
    double secs = (double)clock() / CLOCKS_PER_SEC - t0;
    size_t used = amp_peak - base;
    ok(rc != 0 && strstr(lua_tostring(L, -1), "codec: "), "200 nested 2^20 claims refused: %s",
       lua_tostring(L, -1));
    ok(used < 64 * len, "decoding a %zu-byte message allocated at most %zu bytes (%.1fx)", len, used,
       (double)used / (double)len);
    printf("# amplification: %.3f s of CPU\n", secs);
    lua_close(L);
    free(m);
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
    lua_newtable(L); /* a module table only L has */
    lua_setfield(L, -2, "onlytab");
    lua_pop(L, 1);
    if (luaL_dostring(L, "package.loaded.luamod = {x = 1, sub = {2, 'y'}}") !=
        LUA_OK) {
        printf("Bail out! %s\n", lua_tostring(L, -1));
        return 1;
    }
    /* L2 can require testmod (preload) but has never loaded it. */
    luaL_getsubtable(L2, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L2, open_testmod);
    lua_setfield(L2, -2, "testmod");
    lua_pop(L2, 1);

    test_roundtrips(L);
    test_refusals(L);
    test_hostile(L);
    test_functions(L, L2);
    test_modules(L, L2);
    test_env(L, L2);
    test_hooks(L);
    test_amplification();
    ok(lua_gettop(L) == 0 && lua_gettop(L2) == 0, "stacks balanced");
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) bench(L);
    lua_close(L);
    lua_close(L2);
    return tap_done();
}
