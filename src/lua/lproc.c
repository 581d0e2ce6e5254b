/*
 * lproc.c - process objects: the "process.Popen" userdata (one started
 * child) and the core functions that start and wait for children (see
 * lproc.h).
 *
 * Provides to lua/process/ (proc.lua, state.lua, init.lua): core.start,
 * core.methods, core.wait and the Popen methods poll, wait, signal,
 * close, pid, sentinel, take_result.
 * Uses: start/method.h, core/child.h, core/state.h (a copies_caller start
 * that returns in the child sets the child's identity), lpayload.h (what
 * a spawn or forkserver child starts from), lbind.h.
 * Must never: hold malloc'd memory across a call that may raise; a Popen is
 * created empty before the child exists, so an allocation error can never
 * leave a child nobody tracks.
 */
#include "lproc.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <string.h>

#include "codec/codec.h"
#include "core/bounds.h"
#include "core/child.h"
#include "core/state.h"
#include "core/sys.h"
#include "lauxlib.h"
#include "lbind.h"
#include "lpayload.h"
#include "start/method.h"

#define POPEN "process.Popen"
#define REGISTRY "process.Registry"
#define REGISTRY_KEY "process.registry" /* this state's instance */

typedef struct Popen {
    lmp_child *c;
} Popen;

typedef struct Registry {
    lmp_reg *r;
} Registry;


static lmp_child *checkchild(lua_State *L, int idx) {
    Popen *p = luaL_checkudata(L, idx, POPEN);
    if (!p->c) luaL_error(L, "process object is closed");
    return p->c;
}

/* ---- Popen --------------------------------------------------------- */

static int push_status(lua_State *L, lmp_child *c, int rc, const char *op) {
    if (rc < 0) {
        return lmp_pushoserror(L, op, -rc);
    }
    if (rc == 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, c->exitcode);
    return 1;
}

/* popen:poll() -> exitcode | nil  (reaps a finished child) */
static int pop_poll(lua_State *L) {
    lmp_child *c = checkchild(L, 1);
    return push_status(L, c, lmp_child_poll(c), "poll");
}

/* popen:wait([timeout]) -> exitcode | nil on timeout */
static int pop_wait(lua_State *L) {
    lmp_child *c = checkchild(L, 1);
    double t = lmp_opttimeout(L, 2, -1);
    return push_status(L, c, lmp_child_wait(c, t), "join");
}

/* popen:signal(sig) -> true | nil, err, ename */
static int pop_signal(lua_State *L) {
    lmp_child *c = checkchild(L, 1);
    int sig = (int)lmp_checkrange(L, 2, 0, NSIG - 1);
    int rc = lmp_child_signal(c, sig);
    if (rc == -ECHILD) return luaL_error(L, "can only signal a child process");
    if (rc < 0) return lmp_pushoserror(L, "signal", -rc);
    lua_pushboolean(L, 1);
    return 1;
}

static int pop_pid(lua_State *L) {
    lua_pushinteger(L, checkchild(L, 1)->pid);
    return 1;
}

static int pop_sentinel(lua_State *L) {
    lmp_child *c = checkchild(L, 1);
    if (lmp_child_foreign(c)) return luaL_error(L, "can only use the sentinel of a child process");
    lua_pushinteger(L, c->sentinel);
    return 1;
}

/* popen:take_result() -> kind, value once the child has ended:
 *   "R", {n = N, ...}   the values the target returned
 *   "E", message        the target's error, with its traceback
 *   "X", message        the bytes could not be decoded (a child killed
 *                       half-way through writing them, say)
 *   nothing             the child sent nothing
 * The bytes are freed once decoded: call it once and keep the value. */
static int pop_take_result(lua_State *L) {
    lmp_child *c = checkchild(L, 1);
    if (!c->ended) return luaL_error(L, "process has not finished");
    if (c->result_err) {
        lmp_buf_free(&c->result);
        lua_pushliteral(L, "X");
        lua_pushfstring(L, "collecting it failed: %s", strerror(-c->result_err));
        return 2;
    }
    if (c->result.len == 0) return 0;
    const char *kind = c->result.data[0] == 'E' ? "E" : "R";
    if (c->result.data[0] != 'E' && c->result.data[0] != 'R') {
        lua_pushliteral(L, "X");
        lua_pushliteral(L, "codec: corrupt result");
    } else if (lmp_codec_decode(L, c->result.data + 1, c->result.len - 1, 0) == 0) {
        lua_pushstring(L, kind);
        lua_insert(L, -2);
    } else {
        lua_pushliteral(L, "X");
        lua_insert(L, -2);
    }
    lmp_buf_free(&c->result);
    return 2;
}

/* popen:close(): release descriptors (the child must have ended). */
static int pop_close(lua_State *L) {
    Popen *p = luaL_checkudata(L, 1, POPEN);
    if (p->c) {
        if (!p->c->ended && !lmp_child_foreign(p->c))
            return luaL_error(L, "cannot close a process while it is still running");
        lmp_child_close(p->c);
        lmp_child_drop(p->c);
        p->c = NULL;
    }
    return 0;
}

static int pop_gc(lua_State *L) {
    Popen *p = luaL_checkudata(L, 1, POPEN);
    lmp_child_drop(p->c);
    p->c = NULL;
    return 0;
}

static const luaL_Reg pop_methods[] = {
    {"poll", pop_poll},     {"wait", pop_wait},         {"signal", pop_signal},
    {"pid", pop_pid},       {"sentinel", pop_sentinel}, {"take_result", pop_take_result},
    {"close", pop_close},   {NULL, NULL}};

/* __gc and __close: let go of the record (the registry still reaps). */
static const lmp_class popen_class = {POPEN, pop_methods, pop_gc, NULL, NULL};

/* ---- core functions ------------------------------------------------ */

static lmp_reg *getreg(lua_State *L) {
    Registry *r = lua_touserdata(L, lua_upvalueindex(1));
    return r->r;
}

/* A forked child writes to copies of its parent's pages: one allocation
 * there can cost a dozen page copies (malloc sorting the chunks the
 * parent's collector freed).  Before fork, the parent makes sure that the
 * child's way to an empty target and back (bootstrap, run, finish, exit:
 * a few Lua calls deeper than start) finds its call records and stack
 * slots already allocated.  Nested calls leave their CallInfo records in
 * the state's list (the collector trims them only now and then). */
#define CHILD_DEPTH 12
static int warm_calls(lua_State *L) {
    lua_Integer n = lua_tointeger(L, 1);
    if (n > 0) {
        lua_pushcfunction(L, warm_calls);
        lua_pushinteger(L, n - 1);
        lua_call(L, 1, 0);
    }
    return 0;
}

static void warm_child_path(lua_State *L) {
    lua_checkstack(L, 8 * CHILD_DEPTH); /* stack slots for those frames */
    lua_pushcfunction(L, warm_calls);
    lua_pushinteger(L, CHILD_DEPTH);
    lua_call(L, 1, 0);
}

/* core.start(method, daemon[, payload]) -> popen in the parent; true in
 * the child (fork); nil, err, ename when the OS refuses.  The payload
 * (spawn, forkserver) is released either way. */
static int core_start(lua_State *L) {
    const char *mname = lmp_checkcstring(L, 1);
    lmp_payload pl;
    lmp_start_opts o = {.daemon = lua_toboolean(L, 2)};
    if (lmp_payload_get(L, 3, &pl)) o.payload = &pl;
    const lmp_method *m = lmp_method_find(mname);
    if (!m) return luaL_error(L, "cannot find context for '%s'", mname);
    if (!m->copies_caller && !o.payload) return luaL_argerror(L, 3, "payload expected");
    lmp_reg *reg = getreg(L);
    Popen *p = lmp_class_new(L, &popen_class, sizeof *p, 0); /* empty, safe to collect */
    if (m->copies_caller) warm_child_path(L); /* may raise: before any malloc */
    lmp_child *c = lmp_child_new();
    if (!c) return lmp_pushoserror(L, "start", ENOMEM);
    lmp_child_info info = {-1, -1, 0};
    int rc = m->start(reg, c, &o, &info);
    if (o.payload) lmp_payload_release(L, 3);
    if (rc < 0) {
        lmp_child_drop(c);
        return lmp_pushoserror(L, "start", -rc);
    }
    if (rc == 1) { /* in the child: this record describes nobody; freeing
                    * it would only write to pages shared with the parent,
                    * so it is kept (reachable, for leak checkers) */
        lmp_identity_set(info.result_w, info.parent_r, info.parent_pid, c);
        lua_pushboolean(L, 1);
        return 1;
    }
    c->has_ud = 1;
    p->c = c;
    return 1;
}

/* core.methods() -> the start methods' names, the default first, and a
 * set of those whose child is a copy of the caller (no payload). */
static int core_methods(lua_State *L) {
    lua_newtable(L);
    lua_newtable(L);
    for (int i = 0; lmp_methods[i]; i++) {
        lua_pushstring(L, lmp_methods[i]->name);
        lua_rawseti(L, -3, i + 1);
        if (lmp_methods[i]->copies_caller) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, lmp_methods[i]->name);
        }
    }
    return 2;
}

/* core.wait(items, timeout) -> list of indexes ready.  Items are integer
 * descriptors or Popen userdata (their sentinels). */
static int core_wait(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    double timeout = lmp_opttimeout(L, 2, -1);
    lua_Integer n = luaL_len(L, 1);
    if (n > LMP_WAIT_MAX) return luaL_error(L, "too many objects to wait on");
    struct pollfd *pf = lua_newuserdatauv(L, sizeof *pf * (size_t)(n + 1), 0);
    for (lua_Integer i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        int fd;
        if (lua_isinteger(L, -1)) {
            lua_Integer v = lua_tointeger(L, -1);
            if (v < 0 || v > INT_MAX) /* never poll a truncated alias */
                return luaL_error(L, "bad argument #1 to 'wait' (object %d: descriptor %I out of range)",
                                  (int)(i + 1), v);
            fd = (int)v;
        } else {
            Popen *p = luaL_testudata(L, -1, POPEN);
            if (!p) return luaL_error(L, "bad object #%d to 'wait'", (int)(i + 1));
            if (!p->c) return luaL_error(L, "process object is closed");
            /* an inherited record's descriptor numbers mean nothing here:
             * they were closed at fork and may name other files now */
            if (lmp_child_foreign(p->c)) return luaL_error(L, "can only wait for a child process");
            fd = p->c->sentinel;
        }
        lua_pop(L, 1);
        pf[i] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    int ready = 0;
    int rc = lmp_poll(pf, (int)n, timeout);
    if (rc < 0) return lmp_pushoserror(L, "wait", -rc);
    for (lua_Integer i = 0; i < n; i++)
        if (pf[i].revents & POLLNVAL) return lmp_pushoserror(L, "wait", EBADF);
        else if (pf[i].revents) ready++;
    lua_createtable(L, ready, 0);
    int j = 0;
    for (lua_Integer i = 0; i < n; i++)
        if (pf[i].revents) {
            lua_pushinteger(L, i + 1);
            lua_rawseti(L, -2, ++j);
        }
    return 1;
}

static const luaL_Reg proc_funcs[] = {
    {"start", core_start}, {"methods", core_methods}, {"wait", core_wait}, {NULL, NULL}};

static int reg_gc(lua_State *L) {
    Registry *r = luaL_checkudata(L, 1, REGISTRY);
    lmp_reg_free(r->r);
    r->r = NULL;
    return 0;
}

static const lmp_class registry_class = {REGISTRY, NULL, reg_gc, NULL, NULL};

void lmp_open_proc(lua_State *L) {
    /* One registry per state, kept in the Lua registry. */
    if (lua_getfield(L, LUA_REGISTRYINDEX, REGISTRY_KEY) == LUA_TNIL) {
        lua_pop(L, 1);
        Registry *r = lmp_class_new(L, &registry_class, sizeof *r, 0);
        r->r = lmp_reg_new();
        if (!r->r) luaL_error(L, "not enough memory");
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, REGISTRY_KEY);
    }
    luaL_setfuncs(L, proc_funcs, 1);
}
