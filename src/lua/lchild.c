/*
 * lchild.c - the child's side: sending its result, knowing when its
 * creator ends, running the target, exiting (see lchild.h).
 *
 * Provides to lua/process/child.lua: core.send_result,
 * core.parent_sentinel, core.call, core.exit.
 * Uses: core/state.h (the child's identity, set by whoever made this
 * process a child: lproc.c after a copies_caller start, lpayload.c's
 * become), core/result.h, core/child.h, core/sys.h, lcodec.h, lbind.h.
 * Must never: set the identity itself, or run the parent's clean-up in a
 * child (core.exit leaves with _exit).
 */
#include "lchild.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/child.h"
#include "core/result.h"
#include "core/state.h"
#include "core/sys.h"
#include "lauxlib.h"
#include "lbind.h"
#include "lcodec.h"

/* core.exit(code): the end of a child, after its own clean-up.  Never
 * returns, never runs the parent's atexit work or closes the Lua state. */
static int core_exit(lua_State *L) {
    int code = (int)luaL_optinteger(L, 1, 0);
    lmp_reg_shutdown_all();
    fflush(NULL);
    _exit(code & 0xff);
    return 0;
}

/* core.send_result(kind, value): in a child, write the frame the parent's
 * take_result reads: one byte "R" (value is table.pack of the results) or
 * "E" (value is the error message), then the codec message.  Raises with
 * the path of an unsendable value before anything is written. */
static int core_send_result(lua_State *L) {
    const char *kind = luaL_checkstring(L, 1);
    luaL_checkany(L, 2);
    const lmp_identity *me = lmp_identity_get();
    if (me->result_w < 0) return luaL_error(L, "not in a child process");
    lmp_buf *b = lmp_lbuf_new(L);
    lmp_buf_append(b, kind[0] == 'E' ? "E" : "R", 1);
    lmp_lencode(L, 2, b, "result", 0);
    int rc = lmp_result_send(me->result_w, b->data, b->len);
    /* raise: the child's finish() turns it into its error (sent inline) */
    if (rc < 0 && rc != -EPIPE) return lmp_raise_oserror(L, "result", -rc);
    lmp_buf_free(b);
    lua_pushboolean(L, 1);
    return 1;
}

/* core.parent_sentinel() -> fd that becomes readable when the parent ends
 * (opened on first use), or nil when this process is not a child. */
static int core_parent_sentinel(lua_State *L) {
    lmp_identity *me = lmp_identity_get();
    if (me->parent_pid == 0) return 0;
    if (me->parent_r >= 0) {
        lua_pushinteger(L, me->parent_r);
        return 1;
    }
    if (me->parent_pidfd < 0) {
        int fd = lmp_fault_hit("pidfd"); /* the test hook, as start's */
        if (fd == 0) fd = lmp_pidfd_open(me->parent_pid);
        if (fd < 0 && fd != -ESRCH) return lmp_pushoserror(L, "parent_process", -fd);
        /* The pid named our parent only if it is still our parent now;
         * if it died, the pid may name another process: use a descriptor
         * that is readable at once instead. */
        if (fd < 0 || getppid() != me->parent_pid) {
            if (fd >= 0) close(fd);
            int p[2];
            if (pipe2(p, O_CLOEXEC) < 0 || lmp_fd_hi2(p) < 0)
                return lmp_pushoserror(L, "parent_process", errno);
            close(p[1]);
            fd = p[0];
        }
        lmp_fd_track(fd);
        me->parent_pidfd = fd;
    }
    lua_pushinteger(L, me->parent_pidfd);
    return 1;
}

/* core.call(handler, f, ...) -> ok, results...: f under lua_pcall with
 * the message handler.  Plain lua_pcall, without a continuation, so a
 * yield inside f cannot cross it: a child's target that yields gets an
 * error instead of resuming its parent's coroutine (and its pending code). */
static int core_call(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 1);
    lua_pushboolean(L, status == LUA_OK);
    lua_replace(L, 1);
    return lua_gettop(L);
}

static const luaL_Reg child_funcs[] = {
    {"send_result", core_send_result},
    {"parent_sentinel", core_parent_sentinel},
    {"call", core_call},
    {"exit", core_exit},
    {NULL, NULL}};

void lmp_open_child(lua_State *L) { luaL_setfuncs(L, child_funcs, 0); }
