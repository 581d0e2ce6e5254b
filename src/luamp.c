/*
 * luamp.c - the embedding API (see luamp.h): a runtime that owns its
 * lua_State, native targets registered by a host, error codes.
 *
 * Uses: the Lua C API, luaopen_process (src/lua), core/sys.h for errno
 * names.  Must never: call exit(), or raise from a function whose doc has
 * no [-o, +p, x] marker (runs go through lua_pcall).
 */
#include "luamp.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/sys.h"
#include "lualib.h"

struct luamp_runtime {
    lua_State *L;
    char *error;    /* last run's message, malloc'd; NULL: none */
    int exitstatus; /* after LUAMP_EEXIT */
};

/* The error object os.exit raises inside a runtime: its address is
 * unique, so a script cannot fake it. */
static const char exit_token = 0;

LUAMP_API const char *luamp_version(void) { return LUAMP_VERSION; }

LUAMP_API void luamp_openlibs(lua_State *L) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_process);
    lua_setfield(L, -2, "process");
    lua_pushcfunction(L, luaopen_process_pi);
    lua_setfield(L, -2, "process.pi");
    lua_pushcfunction(L, luaopen_process_internal);
    lua_setfield(L, -2, "process.internal");
    lua_pop(L, 1);
}

LUAMP_API void luamp_register_target(lua_State *L, const char *module, const luaL_Reg *funcs) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, module) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, module);
    }
    luaL_setfuncs(L, funcs, 0);
    lua_pop(L, 2);
}

/* os.exit inside a runtime: unwind to the run with a token, so the host
 * gets LUAMP_EEXIT instead of losing its process. */
static int rt_exit(lua_State *L) {
    luamp_runtime *rt = lua_touserdata(L, lua_upvalueindex(1));
    if (lua_isboolean(L, 1)) rt->exitstatus = lua_toboolean(L, 1) ? 0 : 1;
    else rt->exitstatus = (int)luaL_optinteger(L, 1, 0);
    lua_pushlightuserdata(L, (void *)&exit_token);
    return lua_error(L);
}

LUAMP_API int luamp_msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* A runtime's: os.exit's token passes through untouched. */
static int msghandler(lua_State *L) {
    if (lua_touserdata(L, 1) == &exit_token) return 1;
    return luamp_msghandler(L);
}

static int openrt(lua_State *L) {
    luamp_runtime *rt = lua_touserdata(L, 1);
    luaL_openlibs(L);
    luamp_openlibs(L);
    lua_getglobal(L, "os");
    lua_pushlightuserdata(L, rt);
    lua_pushcclosure(L, rt_exit, 1);
    lua_setfield(L, -2, "exit");
    return 0;
}

LUAMP_API luamp_runtime *luamp_runtime_new(void) {
    luamp_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) return NULL;
    rt->L = luaL_newstate();
    if (!rt->L) {
        free(rt);
        return NULL;
    }
    lua_pushcfunction(rt->L, openrt);
    lua_pushlightuserdata(rt->L, rt);
    if (lua_pcall(rt->L, 1, 0, 0) != LUA_OK) {
        lua_close(rt->L);
        free(rt);
        return NULL;
    }
    return rt;
}

LUAMP_API lua_State *luamp_runtime_state(luamp_runtime *rt) { return rt ? rt->L : NULL; }

static void set_error(luamp_runtime *rt, const char *msg) {
    free(rt->error);
    rt->error = msg ? strdup(msg) : NULL;
}

/* Run what is on top of the stack (a loaded chunk and nargs arguments),
 * or report the load status. */
static int finish_run(luamp_runtime *rt, int status, int nargs) {
    lua_State *L = rt->L;
    if (status == LUA_OK) {
        int base = lua_gettop(L) - nargs;
        lua_pushcfunction(L, msghandler);
        lua_insert(L, base);
        status = lua_pcall(L, nargs, 0, base);
        lua_remove(L, base);
        if (status == LUA_OK) {
            set_error(rt, NULL);
            return 0;
        }
        if (lua_touserdata(L, -1) == &exit_token) {
            lua_pop(L, 1);
            set_error(rt, NULL);
            return LUAMP_EEXIT;
        }
    }
    set_error(rt, lua_tostring(L, -1) ? lua_tostring(L, -1) : "(error object is not a string)");
    lua_pop(L, 1);
    switch (status) {
    case LUA_ERRSYNTAX: return LUAMP_ESYNTAX;
    case LUA_ERRFILE: return LUAMP_EFILE;
    case LUA_ERRMEM: return -ENOMEM;
    default: return LUAMP_ERUN;
    }
}

/* Loading may raise only on memory errors; do it protected. */
static int load_args(lua_State *L) {
    const char *path = lua_touserdata(L, 1);
    int argc = (int)lua_tointeger(L, 2);
    char **argv = lua_touserdata(L, 3);
    lua_createtable(L, argc, 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]); /* NULL pushes nil: a hole, not a crash */
        lua_rawseti(L, -2, i);
    }
    lua_setglobal(L, "arg");
    int status = luaL_loadfile(L, path);
    lua_pushinteger(L, status);
    lua_insert(L, -2);
    /* status, then the chunk (or the message), then argv[1..argc-1] */
    int nres = 2;
    if (status == LUA_OK)
        for (int i = 1; i < argc; i++, nres++) lua_pushstring(L, argv[i]);
    return nres;
}

LUAMP_API int luamp_runtime_dofile(luamp_runtime *rt, const char *path, int argc, char **argv) {
    if (!rt) return -EINVAL;
    lua_State *L = rt->L;
    if (argc < 0 || (argc > 0 && !argv)) argc = 0;
    if (argc > INT_MAX - 8 || !lua_checkstack(L, argc + 8)) return -ENOMEM;
    int top = lua_gettop(L);
    lua_pushcfunction(L, load_args);
    lua_pushlightuserdata(L, (void *)path);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    if (lua_pcall(L, 3, LUA_MULTRET, 0) != LUA_OK) return finish_run(rt, LUA_ERRMEM, 0);
    int status = (int)lua_tointeger(L, top + 1);
    lua_remove(L, top + 1);
    int nargs = lua_gettop(L) - top - 1;
    return finish_run(rt, status, nargs > 0 ? nargs : 0);
}

LUAMP_API int luamp_runtime_dostring(luamp_runtime *rt, const char *chunk, const char *name) {
    if (!rt || !chunk) return -EINVAL;
    int status = luaL_loadbufferx(rt->L, chunk, strlen(chunk), name ? name : "=(string)", "t");
    return finish_run(rt, status, 0);
}

LUAMP_API const char *luamp_runtime_error(luamp_runtime *rt) { return rt && rt->error ? rt->error : ""; }

LUAMP_API int luamp_runtime_exitstatus(luamp_runtime *rt) { return rt ? rt->exitstatus : 0; }

LUAMP_API void luamp_runtime_close(luamp_runtime *rt) {
    if (!rt) return;
    lua_close(rt->L); /* the registry's finalizer runs the exit clean-up */
    free(rt->error);
    free(rt);
}

LUAMP_API const char *luamp_strerror(int code) {
    switch (code) {
    case 0: return "success";
    case LUAMP_ESYNTAX: return "the script does not compile";
    case LUAMP_ERUN: return "the script raised an error";
    case LUAMP_EFILE: return "the script file cannot be read";
    case LUAMP_EEXIT: return "the script called os.exit";
    default: return code < 0 && code != INT_MIN ? strerror(-code) : "unknown code";
    }
}

LUAMP_API const char *luamp_errname(int code) {
    switch (code) {
    case 0: return "OK";
    case LUAMP_ESYNTAX: return "LUAMP_ESYNTAX";
    case LUAMP_ERUN: return "LUAMP_ERUN";
    case LUAMP_EFILE: return "LUAMP_EFILE";
    case LUAMP_EEXIT: return "LUAMP_EEXIT";
    default: return code < 0 && code != INT_MIN ? lmp_errname(-code) : "E?";
    }
}
