/*
 * lmodule.c - the module: luaopen_process, luaopen_process_pi and
 * luaopen_process_internal, the entry points a stock lua5.4 (require
 * "process"), the runner and host applications use.
 *
 * The module is the Lua file lua/process/init.lua (embedded at build time
 * with the other files of lua/process/, which it loads) called with the
 * C core table, which this file assembles from each object's file
 * (lproc.c, lchild.c, lpayload.c, lconn.c, lqueue.c, lsync.c, lpool.c,
 * lsys.c); process.pi is the native kernels table completed by
 * lua/process/pi.lua.
 * Uses: every lX.h of the binding, core/sys.h, core/bounds.h.
 * Must never: define a core function itself; be included by another
 * binding file (it is the top of the binding's include graph).
 */
#include <string.h>

#include "core/bounds.h"
#include "core/sys.h"
#include "lauxlib.h"
#include "lchild.h"
#include "lconn.h"
#include "lembed.h"
#include "lpayload.h"
#include "lpi.h"
#include "lpool.h"
#include "lproc.h"
#include "lqueue.h"
#include "lsync.h"
#include "lsys.h"
#include "lua.h"
#include "luamp.h"

/* [-0, +1, e]  Load embedded module `name` and call it with the value on
 * top of the stack (popped); pushes what it returns. */
static void run_embedded(lua_State *L, const char *name) {
    for (const lmp_embedded *e = lmp_embedded_lua; e->name; e++) {
        if (strcmp(e->name, name) != 0) continue;
        /* precompiled first; the source if this Lua's format differs */
        if (luaL_loadbufferx(L, e->bin, e->binlen, e->chunk, "b") != LUA_OK) {
            lua_pop(L, 1);
            if (luaL_loadbufferx(L, e->src, e->len, e->chunk, "t") != LUA_OK) lua_error(L);
        }
        lua_insert(L, -2);
        lua_call(L, 1, 1);
        return;
    }
    luaL_error(L, "luamp: no embedded module '%s'", name);
}

/* package.preload entry of an embedded submodule (process.pool...):
 * runs its chunk with the core table (upvalue 1). */
static int load_submodule(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    run_embedded(L, name);
    return 1;
}

/* [-1, +0, e]  Every embedded module but process and process.pi is
 * preloaded, loaded on first require with the core table (popped). */
static void preload_submodules(lua_State *L) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (const lmp_embedded *e = lmp_embedded_lua; e->name; e++) {
        if (strcmp(e->name, "process") == 0 || strcmp(e->name, "process.pi") == 0) continue;
        lua_pushvalue(L, -2);
        lua_pushcclosure(L, load_submodule, 1);
        lua_setfield(L, -2, e->name);
    }
    lua_pop(L, 2);
}

/* [-0, +1, e]  The core table: every binding file's functions. */
static void open_core(lua_State *L) {
    lua_newtable(L);
    lmp_open_proc(L);    /* start, methods, wait */
    lmp_open_child(L);   /* send_result, parent_sentinel, call, exit */
    lmp_open_payload(L); /* payload, become, child_env, child_value */
    lmp_open_conn(L);    /* Pipe */
    lmp_open_queues(L);  /* Queue, JoinableQueue */
    lmp_open_sync(L);    /* Lock, Event, Value, ..., sleep */
    lmp_open_sys(L);     /* getpid, now, signame, encode, ... */
    lmp_open_pool(L);
}

LUAMP_API int luaopen_process(lua_State *L) {
    lmp_fd_std_open(); /* no private descriptor of ours may land on 0-2 */
    lmp_fd_reserve();  /* held from the start: see sys.h (retried at start) */
    open_core(L);
    lua_pushvalue(L, -1);
    preload_submodules(L);
    run_embedded(L, "process");
    /* meson.build checks that LUAMP_VERSION is the project's version */
    lua_pushliteral(L, "luamp " LUAMP_VERSION);
    lua_setfield(L, -2, "_VERSION");
    return 1;
}

LUAMP_API int luaopen_process_pi(lua_State *L) {
    lmp_open_pi(L);
    run_embedded(L, "process.pi");
    return 1;
}

/* require "process.internal": the hooks the runner, specs and benchmarks
 * use, which are not API; lua/process/internal.lua makes the table. */
LUAMP_API int luaopen_process_internal(lua_State *L) {
    luaL_requiref(L, "process", luaopen_process, 0);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "process.internal");
    return 1;
}
