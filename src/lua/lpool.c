/*
 * lpool.c - the few system calls process.Pool needs beyond the core:
 * a wait that returns when a signal interrupts it (so a Ctrl-C reaches
 * the Lua code of a pool's blocking call at once, instead of after the
 * wait's timeout), and SIGINT ignored in pool workers.
 *
 * Added to the core table by lmp_open_pool (lmodule.c); the Lua side is
 * lua/process/pool*.lua.
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>

#include "core/sys.h"
#include "lauxlib.h"
#include "lcodec.h"
#include "lpool.h"

/* core.pool_wait(fds, timeout) -> list of the indexes of the ready
 * descriptors (1-based; {} on timeout), and true as a second value when
 * a signal cut the wait short.  timeout: nil or math.huge waits
 * forever.  A descriptor that is not open counts as an error (EBADF). */
static int pool_wait(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    double timeout = lmp_opttimeout(L, 2, -1);
    lua_Integer n = luaL_len(L, 1);
    if (n > 4096) return luaL_error(L, "too many objects to wait on");
    struct pollfd *pf = lua_newuserdatauv(L, sizeof *pf * (size_t)(n + 1), 0);
    for (lua_Integer i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        int isnum;
        lua_Integer fd = lua_tointegerx(L, -1, &isnum);
        if (!isnum || fd < 0 || fd > 0x7fffffff) return luaL_error(L, "bad descriptor #%d", (int)(i + 1));
        lua_pop(L, 1);
        pf[i] = (struct pollfd){.fd = (int)fd, .events = POLLIN};
    }
    int ms = -1;
    if (timeout >= 0) {
        double m = ceil(timeout * 1000.0); /* never wake before the deadline */
        ms = m > 2147483647.0 ? 2147483647 : (int)m;
    }
    int rc = poll(pf, (nfds_t)n, ms);
    if (rc < 0) {
        if (errno != EINTR) return lmp_pushoserror(L, "wait", errno);
        lua_newtable(L);
        lua_pushboolean(L, 1);
        return 2;
    }
    lua_createtable(L, rc, 0);
    int j = 0;
    for (lua_Integer i = 0; i < n; i++) {
        if (pf[i].revents & POLLNVAL) return lmp_pushoserror(L, "wait", EBADF);
        if (pf[i].revents) {
            lua_pushinteger(L, i + 1);
            lua_rawseti(L, -2, ++j);
        }
    }
    return 1;
}

/* core.pool_ignore_sigint(): a worker leaves Ctrl-C to its owner. */
static int pool_ignore_sigint(lua_State *L) {
    (void)L;
    signal(SIGINT, SIG_IGN);
    return 0;
}

static const luaL_Reg pool_funcs[] = {
    {"pool_wait", pool_wait},
    {"pool_ignore_sigint", pool_ignore_sigint},
    {NULL, NULL}};

void lmp_open_pool(lua_State *L) { luaL_setfuncs(L, pool_funcs, 0); }
