/*
 * lspawn.c - what a spawn or forkserver child is started from: the
 * payload, both its sides.
 *
 * Parent: core.payload(env, value) encodes, before any process exists,
 *   env    {path, cpath, cwd}: plain values, decoded first so that the
 *          child can require what the rest refers to;
 *   value  the bootstrap (the Process object, its class, ...), with
 *          LMP_CODEC_FUNCTIONS and hooks that turn each Connection and
 *          Queue into "descriptor #i of the payload" (the descriptors are
 *          dup'ed into the payload and handed over by the start method);
 * into a memfd.  An unsendable value raises with its path; nothing has
 * been started then.
 *
 * Child: core.become(method, ...) (the runner's child mode: a spawn
 * child, or the forkserver, which returns in each child it forks) loads
 * the payload and the channels the method handed over; core.child_env()
 * and core.child_value() decode its two parts.
 *
 * Payload layout: struct header, the env message, the value message.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codec/codec.h"
#include "core/sys.h"
#include "lauxlib.h"
#include "lcodec.h"
#include "lconn.h"
#include "lproc.h"
#include "lsync.h"
#include "start/exec.h"
#include "start/forkserver.h"
#include "start/method.h"

#define PAYLOAD "process.Payload"
#define PAYLOAD_MAGIC 0x50504d4cu /* "LMPP" */
#define MAXFDS LMP_PAYLOAD_MAXFDS

struct header {
    uint32_t magic;
    uint32_t nfds;
    uint32_t parent_pid;
    uint32_t unused;
    uint64_t envlen;
};

typedef struct Payload {
    int fd;
    int nfds;
    int fds[MAXFDS];
} Payload;

/* ---- parent ---------------------------------------------------------- */

static void payload_release(Payload *p) {
    if (p->fd >= 0) close(p->fd);
    for (int i = 0; i < p->nfds; i++) close(p->fds[i]);
    p->fd = -1;
    p->nfds = 0;
}

static int payload_gc(lua_State *L) {
    payload_release(luaL_checkudata(L, 1, PAYLOAD));
    return 0;
}

static int add_fd(lua_State *L, Payload *p, int fd) {
    if (p->nfds == MAXFDS) luaL_error(L, "too many Connections and Queues (more than %d descriptors)", MAXFDS);
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (d < 0) { /* raised as {msg, ename}: start turns it into nil, msg, ename */
        int e = errno;
        lua_createtable(L, 2, 0);
        lua_pushfstring(L, "start: %s", strerror(e));
        lua_rawseti(L, -2, 1);
        lua_pushstring(L, lmp_errname(e));
        lua_rawseti(L, -2, 2);
        lua_error(L);
    }
    p->fds[p->nfds] = d;
    return p->nfds++;
}

/* Connection -> {"Connection", i, readable, writable}; Queue ->
 * {"Queue", i_header, i_spool}; i counts from 0 in the payload's list. */
static int enc_udata(lua_State *L, int idx, void *ud) {
    Payload *p = ud;
    int fd, r, w, q[2];
    if (lmp_conn_fds(L, idx, &fd, &r, &w)) {
        lua_createtable(L, 4, 0);
        lua_pushliteral(L, "Connection");
        lua_rawseti(L, -2, 1);
        lua_pushinteger(L, add_fd(L, p, fd));
        lua_rawseti(L, -2, 2);
        lua_pushboolean(L, r);
        lua_rawseti(L, -2, 3);
        lua_pushboolean(L, w);
        lua_rawseti(L, -2, 4);
        return 1;
    }
    if (lmp_queue_fds_of(L, idx, q)) {
        lua_createtable(L, 4, 0);
        lua_pushboolean(L, lmp_queue_joinable_of(L, idx));
        lua_rawseti(L, -2, 4);
        lua_pushliteral(L, "Queue");
        lua_rawseti(L, -2, 1);
        lua_pushinteger(L, add_fd(L, p, q[0]));
        lua_rawseti(L, -2, 2);
        lua_pushinteger(L, add_fd(L, p, q[1]));
        lua_rawseti(L, -2, 3);
        return 1;
    }
    if (lmp_sync_fd_of(L, idx, &fd)) { /* locks, events, shared values... */
        lmp_sync_standin(L, idx, add_fd(L, p, fd));
        return 1;
    }
    return 0;
}

/* core.payload(env, value) -> payload | nil, err, ename; raises with the
 * offending path on an unsendable value, and {err, ename} when the OS
 * refuses a descriptor for a Connection or Queue in it */
static int core_payload(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    lua_settop(L, 2);
    Payload *p = lua_newuserdatauv(L, sizeof *p, 0);
    p->fd = -1;
    p->nfds = 0;
    if (luaL_newmetatable(L, PAYLOAD)) {
        lua_pushcfunction(L, payload_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    lmp_buf *b = lmp_lbuf_new(L);
    struct header h = {PAYLOAD_MAGIC, 0, (uint32_t)getpid(), 0, 0};
    if (lmp_buf_append(b, &h, sizeof h)) return luaL_error(L, "not enough memory");
    lmp_lencode(L, 1, b, "env", 0);
    h.envlen = b->len - sizeof h;
    lmp_codec_hooks hooks = {p, enc_udata, NULL};
    lmp_lencode_hooks(L, 2, b, "process", LMP_CODEC_FUNCTIONS, &hooks);
    h.nfds = (uint32_t)p->nfds;
    memcpy(b->data, &h, sizeof h);
    int fd = lmp_fd_hi(memfd_create("luamp-payload", MFD_CLOEXEC));
    if (fd < 0) return lmp_pushoserror(L, "start", errno);
    size_t off = 0;
    while (off < b->len) {
        ssize_t w = write(fd, b->data + off, b->len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            int e = errno;
            close(fd);
            return lmp_pushoserror(L, "start", e);
        }
        off += (size_t)w;
    }
    lmp_buf_free(b);
    p->fd = fd;
    lua_pushvalue(L, 3);
    return 1;
}

int lmp_payload_get(lua_State *L, int idx, lmp_payload *out) {
    Payload *p = luaL_testudata(L, idx, PAYLOAD);
    if (!p || p->fd < 0) return 0;
    out->fd = p->fd;
    out->fds = p->fds;
    out->nfds = p->nfds;
    return 1;
}

void lmp_payload_release(lua_State *L, int idx) {
    Payload *p = luaL_testudata(L, idx, PAYLOAD);
    if (p) payload_release(p);
}

/* ---- child ----------------------------------------------------------- */

/* The payload this process was started from (one per process). */
static struct {
    char *data;
    size_t len;
    struct header h;
    int fds[LMP_PAYLOAD_MAXFDS];
    int nfds;
} got;

/* Read the memfd whole; close it. */
static int load(lua_State *L, int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0) return lmp_pushoserror(L, "payload", errno);
    size_t n = (size_t)st.st_size;
    if (n < sizeof got.h) return luaL_error(L, "payload: truncated");
    char *d = malloc(n);
    if (!d) return luaL_error(L, "not enough memory");
    size_t off = 0;
    while (off < n) {
        ssize_t r = pread(fd, d + off, n - off, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(d);
            return luaL_error(L, "payload: %s", r < 0 ? strerror(errno) : "truncated");
        }
        off += (size_t)r;
    }
    close(fd);
    memcpy(&got.h, d, sizeof got.h);
    if (got.h.magic != PAYLOAD_MAGIC || got.h.envlen > n - sizeof got.h || got.h.nfds > LMP_PAYLOAD_MAXFDS) {
        free(d);
        return luaL_error(L, "payload: corrupt");
    }
    free(got.data);
    got.data = d;
    got.len = n;
    return 0;
}

/* core.become(method, args...) -> the creator's pid, in a runner that
 * method executed (the runner's child mode), with the payload loaded;
 * nil when there is no child to be (a forkserver whose owner ended).
 * What the child receives and where is the method's business
 * (start/method.h). */
static int core_become(lua_State *L) {
    static lmp_child_start s; /* large: not on the stack */
    const lmp_method *m = lmp_method_find(luaL_checkstring(L, 1));
    if (!m || !m->become) return luaL_error(L, "luamp: unknown child mode");
    int argc = lua_gettop(L) - 1;
    char *argv[16];
    if (argc > 16) return luaL_error(L, "luamp: bad child mode arguments");
    for (int i = 0; i < argc; i++) argv[i] = (char *)luaL_checkstring(L, i + 2);
    int rc = m->become(argc, argv, &s);
    if (rc == -EINVAL) return luaL_error(L, "luamp: bad child mode arguments");
    if (rc < 0) return lmp_pushoserror(L, m->name, -rc);
    if (rc == 0) return 0;
    load(L, s.payload_fd);
    got.nfds = s.nfds < (int)got.h.nfds ? s.nfds : (int)got.h.nfds;
    memcpy(got.fds, s.fds, sizeof(int) * (size_t)got.nfds);
    for (int i = got.nfds; i < s.nfds; i++) close(s.fds[i]);
    lmp_became_child(s.result_w, s.parent_r, (pid_t)got.h.parent_pid);
    lua_pushinteger(L, got.h.parent_pid);
    return 1;
}

static int take_fd(lua_State *L, int i) {
    if (i < 0 || i >= got.nfds || got.fds[i] < 0) {
        lua_pushliteral(L, "codec: payload refers to a missing descriptor");
        return -1;
    }
    int fd = got.fds[i];
    got.fds[i] = -1;
    return fd;
}

static int dec_udata(lua_State *L, void *ud) {
    (void)ud;
    if (lua_type(L, -1) != LUA_TTABLE) goto bad;
    lua_rawgeti(L, -1, 1);
    const char *kind = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (!kind) goto bad;
    lua_rawgeti(L, -1, 2);
    lua_rawgeti(L, -2, 3);
    lua_rawgeti(L, -3, 4);
    int a = (int)lua_tointeger(L, -3), b = (int)lua_tointeger(L, -2);
    int r = lua_toboolean(L, -2), w = lua_toboolean(L, -1);
    lua_pop(L, 3);
    if (strcmp(kind, "Connection") == 0) {
        int fd = take_fd(L, a);
        if (fd < 0) return -1;
        lmp_conn_push(L, fd, r, w);
    } else if (strcmp(kind, "Queue") == 0) {
        int h = take_fd(L, a);
        if (h < 0) return -1;
        int s = take_fd(L, b);
        if (s < 0) {
            close(h);
            return -1;
        }
        int rc = lmp_queue_push_joinable(L, h, s, w); /* [4]: joinable */
        if (rc < 0) {
            close(h), close(s);
            lua_pushfstring(L, "codec: Queue: %s", strerror(-rc));
            return -1;
        }
    } else if (strcmp(kind, "Sync") == 0) {
        int fd = take_fd(L, a);
        if (fd < 0) return -1;
        int rc = lmp_sync_from_standin(L, fd);
        if (rc < 0) {
            close(fd);
            lua_pushfstring(L, "codec: Sync: %s", strerror(-rc));
            return -1;
        }
    } else {
        goto bad;
    }
    lua_remove(L, -2);
    return 0;
bad:
    lua_pushliteral(L, "codec: unknown object in payload");
    return -1;
}

/* core.child_env() -> {path, cpath, cwd} */
static int core_child_env(lua_State *L) {
    if (!got.data) return luaL_error(L, "no payload");
    lmp_ldecode(L, got.data + sizeof got.h, got.h.envlen, 0);
    return 1;
}

/* core.child_value() -> the bootstrap value; the payload is freed and any
 * descriptor it did not use is closed. */
static int core_child_value(lua_State *L) {
    if (!got.data) return luaL_error(L, "no payload");
    size_t off = sizeof got.h + got.h.envlen;
    lmp_codec_hooks hooks = {NULL, NULL, dec_udata};
    lmp_ldecode_hooks(L, got.data + off, got.len - off, LMP_CODEC_FUNCTIONS, &hooks);
    for (int i = 0; i < got.nfds; i++)
        if (got.fds[i] >= 0) close(got.fds[i]), got.fds[i] = -1;
    free(got.data);
    got.data = NULL;
    return 1;
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

const luaL_Reg lmp_spawn_funcs[] = {
    {"payload", core_payload},
    {"become", core_become},
    {"child_env", core_child_env},
    {"child_value", core_child_value},
    {"set_executable", core_set_executable},
    {"get_executable", core_get_executable},
    {"forkserver_pid", core_forkserver_pid},
    {"threads", core_threads},
    {"getcwd", core_getcwd},
    {"chdir", core_chdir},
    {NULL, NULL}};
