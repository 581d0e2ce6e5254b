/*
 * lsys.c - core functions over the system that belong to no object (see
 * lsys.h).
 *
 * Provides to the files of lua/process/: core.getpid, core.now,
 * core.cpu_count, core.threads, core.signame, core.have_pidfd,
 * core.getcwd, core.chdir, core.set_executable, core.get_executable,
 * core.forkserver_pid, core.encode, core.decode, core.fault.
 * Uses: core/sys.h, core/state.h, start/exec.h, start/forkserver.h,
 * lcodec.h, lbind.h.
 * Must never: keep state of its own.
 */
#include "lsys.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codec/codec.h"
#include "core/bounds.h"
#include "core/state.h"
#include "core/sys.h"
#include "lauxlib.h"
#include "lbind.h"
#include "lcodec.h"
#include "start/exec.h"
#include "start/forkserver.h"

static int core_getpid(lua_State *L) {
    lua_pushinteger(L, lmp_self()); /* cached: the Lua side asks on every start and join */
    return 1;
}

static int core_now(lua_State *L) {
    lua_pushnumber(L, lmp_now());
    return 1;
}

/* core.encode(v[, functions[, size_only]]) -> bytes (or their count);
 * core.decode(bytes[, functions]) -> v  (for benchmarks and tests; the API
 * sends values through channels). */
static int core_encode(lua_State *L) {
    luaL_checkany(L, 1);
    int flags = lua_toboolean(L, 2) ? LMP_CODEC_FUNCTIONS : 0;
    int size_only = lua_toboolean(L, 3);
    lua_settop(L, 1);
    lmp_buf *b = lmp_lbuf_new(L);
    lmp_lencode(L, 1, b, "value", flags);
    if (size_only) lua_pushinteger(L, (lua_Integer)b->len);
    else lua_pushlstring(L, b->data, b->len);
    lmp_buf_free(b);
    return 1;
}

static int core_decode(lua_State *L) {
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    lmp_ldecode(L, p, n, lua_toboolean(L, 2) ? LMP_CODEC_FUNCTIONS : 0);
    return 1;
}

static int core_cpu_count(lua_State *L) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    lua_pushinteger(L, n > 0 ? n : 1);
    return 1;
}

/* core.signame(15) -> "SIGTERM" (nil for an unknown number) */
static int core_signame(lua_State *L) {
    lua_Integer s = luaL_checkinteger(L, 1);
    const char *n = s > 0 && s < NSIG ? sigabbrev_np((int)s) : NULL;
    if (!n) return 0;
    lua_pushfstring(L, "SIG%s", n);
    return 1;
}

static int core_have_pidfd(lua_State *L) {
    lua_pushboolean(L, lmp_have_pidfd());
    return 1;
}

/* core.fault(op, ename, count): test hook, see lmp_fault_set. */
static int core_fault(lua_State *L) {
    const char *op = lmp_checkcstring(L, 1);
    const char *name = lmp_checkcstring(L, 2);
    int err = lmp_errno(name);
    if (!err) return luaL_argerror(L, 2, "unknown errno name");
    if (lmp_fault_set(op, err, lua_isnoneornil(L, 3) ? 1 : (int)lmp_checkrange(L, 3, 0, INT_MAX)) < 0)
        return luaL_argerror(L, 1, "unknown operation");
    return 0;
}

/* core.getcwd() -> path | nil;  core.chdir(path) -> true | nil, err */
static int core_getcwd(lua_State *L) {
    char *p = getcwd(NULL, 0);
    if (!p) return 0;
    lua_pushstring(L, p);
    free(p);
    return 1;
}

static int core_chdir(lua_State *L) {
    const char *p = lmp_checkcstring(L, 1);
    if (chdir(p) < 0) return lmp_pushoserror(L, "chdir", errno);
    lua_pushboolean(L, 1);
    return 1;
}

/* core.set_executable(path | nil), core.get_executable() */
static int core_set_executable(lua_State *L) {
    const char *p = lmp_optcstring(L, 1, NULL);
    if (lmp_set_runner_path(p) < 0) return luaL_error(L, "not enough memory");
    return 0;
}

static int core_get_executable(lua_State *L) {
    char exe[PATH_MAX];
    if (lmp_runner_path(exe, sizeof exe) < 0) return lmp_pushoserror(L, "get_executable", ENAMETOOLONG);
    lua_pushstring(L, exe);
    return 1;
}

/* core.forkserver_pid() -> pid (or nil when none runs), then the
 * descriptors held for it (nil where none) */
static int core_forkserver_pid(lua_State *L) {
    int fds[3];
    pid_t pid = lmp_forkserver_pid(fds);
    if (pid) lua_pushinteger(L, pid);
    else lua_pushnil(L);
    for (int i = 0; i < 3; i++) {
        if (fds[i] >= 0) lua_pushinteger(L, fds[i]);
        else lua_pushnil(L);
    }
    return 4;
}

/* core.threads() -> number of threads in this process (1 if unknown):
 * /proc/self/task has one entry per thread, plus "." and "..". */
static int core_threads(lua_State *L) {
    struct stat st;
    lua_Integer n = 1;
    if (stat("/proc/self/task", &st) == 0 && st.st_nlink > 2) n = (lua_Integer)st.st_nlink - 2;
    lua_pushinteger(L, n);
    return 1;
}

static const luaL_Reg sys_funcs[] = {
    {"getpid", core_getpid},
    {"now", core_now},
    {"cpu_count", core_cpu_count},
    {"threads", core_threads},
    {"signame", core_signame},
    {"have_pidfd", core_have_pidfd},
    {"getcwd", core_getcwd},
    {"chdir", core_chdir},
    {"set_executable", core_set_executable},
    {"get_executable", core_get_executable},
    {"forkserver_pid", core_forkserver_pid},
    {"encode", core_encode},
    {"decode", core_decode},
    {"fault", core_fault},
    {NULL, NULL}};

void lmp_open_sys(lua_State *L) {
    luaL_setfuncs(L, sys_funcs, 0);
    lua_pushinteger(L, SIGTERM);
    lua_setfield(L, -2, "SIGTERM");
    lua_pushinteger(L, SIGKILL);
    lua_setfield(L, -2, "SIGKILL");
    lua_pushinteger(L, SIGINT);
    lua_setfield(L, -2, "SIGINT");
    /* the limits Lua shares with C (core/bounds.h) */
    lua_pushinteger(L, LMP_WAIT_MAX);
    lua_setfield(L, -2, "WAIT_MAX");
    lua_pushinteger(L, LMP_ERROR_MAX);
    lua_setfield(L, -2, "ERROR_MAX");
}
