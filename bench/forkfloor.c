/*
 * forkfloor.c - a bare fork binding for bench/run.lua: the floor of any
 * Lua interpreter that forks, against which luamp's start+join is read.
 *
 * Provides: luaopen_forkfloor with fork() -> pid (0 in the child),
 * exit([code]) -> _exit, wait(pid).  Uses: libc, the Lua API.
 * Must never: be loaded outside the benchmarks (no signal reset, no
 * descriptor hygiene, no EINTR deadline: a measuring stick, not an API).
 */
#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lauxlib.h"
#include "lua.h"

static int ff_fork(lua_State *L) {
    lua_pushinteger(L, fork());
    return 1;
}

static int ff_exit(lua_State *L) {
    _exit((int)luaL_optinteger(L, 1, 0));
    return 0;
}

static int ff_wait(lua_State *L) {
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    return 0;
}

int luaopen_forkfloor(lua_State *L);
int luaopen_forkfloor(lua_State *L) {
    static const luaL_Reg f[] = {{"fork", ff_fork}, {"exit", ff_exit}, {"wait", ff_wait}, {NULL, NULL}};
    luaL_newlib(L, f);
    return 1;
}
