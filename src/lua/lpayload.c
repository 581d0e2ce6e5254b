/*
 * lpayload.c - the payload: what a spawn or forkserver child is started
 * from, both its sides (see lpayload.h).
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
 * Uses: codec (lcodec.h), the objects that travel (lconn.h, lqueue.h,
 * lsync.h), start/method.h (become), core/state.h (the identity a child
 * gets), lbind.h.
 * Must never: start a process (lproc.c does, with the payload this makes),
 * or leave a descriptor it dup'ed open once the start is over.
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

#include "lpayload.h"

#include "codec/codec.h"
#include "core/state.h"
#include "core/sys.h"
#include "lauxlib.h"
#include "lbind.h"
#include "lcodec.h"
#include "lconn.h"
#include "lqueue.h"
#include "lsync.h"
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
    int oserr; /* an OS refusal while encoding (add_fd), else 0 */
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

static const lmp_class payload_class = {PAYLOAD, NULL, payload_gc, NULL, NULL};

static int add_fd(lua_State *L, Payload *p, int fd) {
    if (p->nfds == MAXFDS) luaL_error(L, "too many Connections and Queues (more than %d descriptors)", MAXFDS);
    int d = lmp_fault_hit("dup");
    if (d == 0) d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    else errno = -d, d = -1;
    if (d < 0) { /* ends the encoding; core.payload returns nil, msg, ename */
        p->oserr = errno;
        luaL_error(L, "start: %s", strerror(errno));
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

/* Encode the value (3) into the buffer (2) with the payload's hooks (1). */
static int encode_value(lua_State *L) {
    lmp_codec_hooks hooks = {lua_touserdata(L, 1), enc_udata, NULL};
    lmp_lencode_hooks(L, 3, lua_touserdata(L, 2), "process", LMP_CODEC_FUNCTIONS, &hooks);
    return 0;
}

/* core.payload(env, value) -> payload | nil, err, ename; raises with the
 * offending path on an unsendable value; an OS refusal (a descriptor for
 * a Connection or Queue in it, the memfd) returns nil, err, ename */
static int core_payload(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    lua_settop(L, 2);
    Payload *p = lmp_class_new(L, &payload_class, sizeof *p, 0);
    p->fd = -1;
    lmp_buf *b = lmp_lbuf_new(L);
    struct header h = {PAYLOAD_MAGIC, 0, (uint32_t)getpid(), 0, 0};
    if (lmp_buf_append(b, &h, sizeof h)) return luaL_error(L, "not enough memory");
    lmp_lencode(L, 1, b, "env", 0);
    h.envlen = b->len - sizeof h;
    lua_pushcfunction(L, encode_value);
    lua_pushlightuserdata(L, p);
    lua_pushlightuserdata(L, b);
    lua_pushvalue(L, 2);
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
        if (p->oserr) return lmp_pushoserror(L, "start", p->oserr);
        return lua_error(L);
    }
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
    if (fstat(fd, &st) < 0) return lmp_raise_oserror(L, "payload", errno);
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
    lmp_identity_set(s.result_w, s.parent_r, (pid_t)got.h.parent_pid, NULL);
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

static const luaL_Reg payload_funcs[] = {
    {"payload", core_payload},
    {"become", core_become},
    {"child_env", core_child_env},
    {"child_value", core_child_value},
    {NULL, NULL}};

void lmp_open_payload(lua_State *L) { luaL_setfuncs(L, payload_funcs, 0); }
