/*
 * lpool.c - the few system calls process.Pool needs beyond the core:
 * a wait that returns when a signal interrupts it (so a Ctrl-C reaches
 * the Lua code of a pool's blocking call at once, instead of after the
 * wait's timeout), and SIGINT ignored in pool workers.
 *
 * And a worker's channel (pool_channel, a stream socketpair), its writers
 * (pool_sendframe, pool_sendframes for a batch) and a reader that takes every frame waiting in one
 * recv (8-byte little-endian length, then the bytes), never blocks, and keeps a partial frame for later, so a
 * large reply arriving slowly never stalls the pool's other work.
 *
 * And the per-task encoding the parent does most: a task's whole message
 * in one call (pool_task_message) and a reply's head (pool_reply_head),
 * with lists of numbers packed as pool_pack_numbers packs them.
 *
 * And the claims by which a worker and its owner agree, without a
 * message, whether a task handed ahead runs or is taken back
 * (pool_claim, pool_takeback, pool_started, on a shared int64 Array).
 *
 * Added to the core table by lmp_open_pool (lmodule.c); the Lua side is
 * lua/process/pool*.lua.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/bounds.h"
#include "core/buf.h"
#include "core/state.h"
#include "core/sys.h"
#include "lauxlib.h"
#include "lbind.h"
#include "lcodec.h"
#include "lconn.h"
#include "lpool.h"
#include "luamp.h"

/* core.pool_wait(fds, timeout) -> list of the indexes of the ready
 * descriptors (1-based; {} on timeout), and true as a second value when
 * a signal cut the wait short.  timeout: nil or math.huge waits
 * forever.  A descriptor that is not open counts as an error (EBADF). */
static int pool_wait(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    double timeout = lmp_opttimeout(L, 2, -1);
    lua_Integer n = luaL_len(L, 1);
    if (n > LMP_WAIT_MAX) return luaL_error(L, "too many objects to wait on");
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

#define READER "process.PoolReader"
#define MAX_FRAME ((uint64_t)1 << 40)

typedef struct Reader {
    int fd; /* not owned: the Connection closes it */
    lmp_buf buf;
} Reader;

static int reader_read(lua_State *L);
static int reader_gc(lua_State *L);
static const luaL_Reg reader_methods[] = {{"read", reader_read}, {NULL, NULL}};
static const lmp_class reader_class = {READER, reader_methods, reader_gc, NULL, NULL};

/* core.pool_reader(fd) -> a reader of the frames arriving on fd */
static int reader_new(lua_State *L) {
    int fd = (int)lmp_checkrange(L, 1, 0, INT_MAX);
    Reader *r = lmp_class_new(L, &reader_class, sizeof *r, 0);
    r->fd = fd;
    lmp_buf_init(&r->buf);
    return 1;
}

/* reader:read(list [, block]) -> n, eof: appends to list the frames
 * complete now (strings), n of them; eof is true once the peer closed (a
 * partial frame at EOF is dropped: its writer died in the middle).
 * Never blocks, unless block: then the first recv waits for data (a
 * worker waiting for its next task: one system call instead of a poll
 * and a recv; a signal that interrupts it returns 0 frames). */
static int reader_read(lua_State *L) {
    Reader *r = luaL_checkudata(L, 1, READER);
    luaL_checktype(L, 2, LUA_TTABLE);
    int block = lua_toboolean(L, 3);
    int eof = 0;
    for (;;) {
        if (lmp_buf_reserve(&r->buf, 65536)) return luaL_error(L, "not enough memory");
        size_t room = r->buf.cap - r->buf.len;
        ssize_t got = recv(r->fd, lmp_buf_tail(&r->buf), room, block ? 0 : MSG_DONTWAIT);
        if (block && got < 0 && errno == EINTR) break;
        block = 0;
        if (got < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            eof = 1; /* ECONNRESET and the like: the worker is gone */
            break;
        }
        if (got == 0) {
            eof = 1;
            break;
        }
        r->buf.len += (size_t)got;
        if ((size_t)got < room) break; /* drained */
    }
    lua_Integer n = luaL_len(L, 2), added = 0;
    size_t pos = r->buf.pos;
    while (r->buf.len - pos >= 8) {
        const unsigned char *h = (const unsigned char *)r->buf.data + pos;
        uint64_t len = 0;
        for (int i = 0; i < 8; i++) len |= (uint64_t)h[i] << (8 * i);
        if (len > MAX_FRAME) { /* corrupt: treat the worker as gone */
            eof = 1;
            pos = r->buf.len;
            break;
        }
        if (r->buf.len - pos - 8 < len) break; /* the rest comes later */
        lua_pushlstring(L, r->buf.data + pos + 8, (size_t)len);
        lua_rawseti(L, 2, n + ++added);
        pos += 8 + (size_t)len;
    }
    if (pos == r->buf.len) {
        lmp_buf_reset(&r->buf);
        if (r->buf.cap > (1u << 22)) lmp_buf_free(&r->buf); /* a large reply is gone */
    } else if (pos > 0) {
        memmove(r->buf.data, r->buf.data + pos, r->buf.len - pos);
        r->buf.len -= pos;
        r->buf.pos = 0;
    }
    lua_pushinteger(L, added);
    lua_pushboolean(L, eof);
    return 2;
}

static int reader_gc(lua_State *L) {
    Reader *r = luaL_checkudata(L, 1, READER);
    lmp_buf_free(&r->buf);
    return 0;
}

/* Everything m gathers, written whole on the blocking stream fd (a
 * short write resumes where it stopped; EINTR is retried): 0, or the
 * errno of the failed sendmsg.  m's iovecs are consumed. */
static int sendmsg_all(int fd, struct msghdr *m) {
    while (m->msg_iovlen > 0) {
        ssize_t w = sendmsg(fd, m, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        while (m->msg_iovlen > 0 && (size_t)w >= m->msg_iov->iov_len) { /* drop what went */
            w -= (ssize_t)m->msg_iov->iov_len;
            m->msg_iov++;
            m->msg_iovlen--;
        }
        if (m->msg_iovlen > 0) {
            m->msg_iov->iov_base = (char *)m->msg_iov->iov_base + w;
            m->msg_iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* core.pool_sendframe(fd, bytes): one frame (the 8-byte little-endian
 * length, then bytes) written whole, blocking, in one system call when
 * the socket takes it; true, or nil, err, ename. */
static int pool_sendframe(lua_State *L) {
    int fd = (int)luaL_checkinteger(L, 1);
    size_t n;
    const char *p = luaL_checklstring(L, 2, &n);
    unsigned char h[8];
    for (int i = 0; i < 8; i++) h[i] = (unsigned char)((uint64_t)n >> (8 * i));
    struct iovec iov[2] = {{h, 8}, {(void *)p, n}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    int e = sendmsg_all(fd, &m);
    if (e) return lmp_pushoserror(L, "send", e);
    lua_pushboolean(L, 1);
    return 1;
}

/* core.pool_sendframes(fd, list): the strings of list, each as one frame
 * (as pool_sendframe writes it), in order, blocking, gathered into as few
 * system calls as the socket allows (a batch of tasks for one worker:
 * no concatenation in Lua); true, or nil, err, ename. */
#define SENDV_MAX 64 /* frames per sendmsg (two iovecs each) */
static int pool_sendframes(lua_State *L) {
    int fd = (int)luaL_checkinteger(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 2);
    unsigned char hdr[SENDV_MAX][8];
    struct iovec iov[2 * SENDV_MAX];
    for (lua_Integer first = 1; first <= n; first += SENDV_MAX) {
        int k = 0;
        for (lua_Integer i = first; i <= n && i < first + SENDV_MAX; i++, k++) {
            size_t len;
            lua_rawgeti(L, 2, i);
            const char *p = lua_tolstring(L, -1, &len);
            if (p == NULL) return luaL_error(L, "frame %d is not a string", (int)i);
            lua_pop(L, 1); /* still referenced by the list */
            for (int b = 0; b < 8; b++) hdr[k][b] = (unsigned char)((uint64_t)len >> (8 * b));
            iov[2 * k] = (struct iovec){hdr[k], 8};
            iov[2 * k + 1] = (struct iovec){(void *)p, len};
        }
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)(2 * k)};
        int e = sendmsg_all(fd, &m);
        if (e) return lmp_pushoserror(L, "send", e);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.pool_channel() -> a, b: a pool's private channel to one worker, a
 * SOCK_STREAM socketpair framed by the pool itself (pool_sendframe,
 * pool_sendframes, pool_reader), so one recv takes every frame waiting.  Its
 * ends are Connections only so that one travels to a worker under every
 * start method; their send/recv (one packet a message, for SOCK_SEQPACKET
 * Pipes) are never used on it.  Or nil, err, ename. */
static int pool_channel(lua_State *L) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || lmp_fd_hi2(sv) < 0)
        return lmp_pushoserror(L, "Pipe", errno);
    lmp_conn_push(L, sv[0], 1, 1);
    lmp_conn_push(L, sv[1], 1, 1);
    return 2;
}

/* This process's pid without a system call (core/state.h: cached, and
 * forgotten in any forked child).  A pool checks it on every call (a pool
 * belongs to the process that made it). */
static int pool_getpid(lua_State *L) {
    lua_pushinteger(L, lmp_self());
    return 1;
}

/* core.pool_decode(s, pos [, functions]) -> the value encoded in s from
 * byte pos on (no copy of the tail, as s:sub(pos) would make). */
static int pool_decode(lua_State *L) {
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    lua_Integer pos = luaL_checkinteger(L, 2);
    luaL_argcheck(L, pos >= 1 && (size_t)pos <= n + 1, 2, "position out of range");
    lmp_ldecode(L, p + pos - 1, n - (size_t)(pos - 1), lua_toboolean(L, 3) ? LMP_CODEC_FUNCTIONS : 0);
    return 1;
}

/* A list of numbers travels as 9 bytes an item (a tag, then the 64 bits
 * little-endian): map's common case, 20x cheaper than the general codec.
 * Integers stay integers and floats keep every bit (nan, -0.0). */
#define NUM_INT 1
#define NUM_FLOAT 2
#define NUM_MAX ((lua_Integer)1 << 26)

static void put_le(unsigned char *p, uint64_t u, int nbytes) {
    for (int b = 0; b < nbytes; b++) p[b] = (unsigned char)(u >> (8 * b));
}

/* Items i..j of the table at t, 9 bytes each at p (a tag, NUM_INT or
 * NUM_FLOAT, then the value, little-endian): 1, or 0 with the first item
 * that is not a number left on the stack. */
static int pack_items(lua_State *L, int t, lua_Integer i, lua_Integer j, unsigned char *p) {
    for (lua_Integer k = i; k <= j; k++, p += 9) {
        if (lua_rawgeti(L, t, k) != LUA_TNUMBER) return 0;
        uint64_t u;
        if (lua_isinteger(L, -1)) {
            p[0] = NUM_INT;
            u = (uint64_t)lua_tointeger(L, -1);
        } else {
            lua_Number d = lua_tonumber(L, -1);
            p[0] = NUM_FLOAT;
            memcpy(&u, &d, 8);
        }
        lua_pop(L, 1);
        put_le(p + 1, u, 8);
    }
    return 1;
}

/* core.pool_pack_numbers(t, i, j) -> the bytes of t[i..j], or nil when
 * one of them is not a number (or the range is too long). */
static int pack_numbers(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer i = luaL_checkinteger(L, 2), j = luaL_checkinteger(L, 3);
    if (j < i) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (j - i >= NUM_MAX || i < 0 || j < 0) return 0;
    size_t n = (size_t)(j - i + 1);
    luaL_Buffer B;
    unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &B, n * 9);
    if (!pack_items(L, 1, i, j, p)) return 0; /* nil on top */
    luaL_pushresultsize(&B, n * 9);
    return 1;
}


/* core.pool_task_message(id, fnid, mode, cacheit, fnpart, args [, i, j])
 * -> a task's message, as string.pack("<BjjBBBs4s4", 1, id, fnid, mode,
 * cacheit, afmt, fnpart, bytes) makes it (process.pool's format), in one
 * call: args is the codec's bytes (afmt 0), or a table whose items i..j
 * (default 1..#args) go as a list of numbers (afmt 1, as pool_pack_numbers
 * packs them); nil when one of those is not a number.  A task is made per
 * apply_async: one string instead of two, and no format to parse. */
static int pool_task_message(lua_State *L) {
    lua_Integer id = luaL_checkinteger(L, 1), fnid = luaL_checkinteger(L, 2);
    lua_Integer mode = luaL_checkinteger(L, 3), cacheit = luaL_checkinteger(L, 4);
    size_t flen, alen = 0, n = 0;
    const char *fn = luaL_checklstring(L, 5, &flen);
    const char *abytes = NULL;
    lua_Integer i = 1, j = 0;
    if (lua_type(L, 6) == LUA_TSTRING) {
        abytes = lua_tolstring(L, 6, &alen);
    } else {
        luaL_checktype(L, 6, LUA_TTABLE);
        i = luaL_optinteger(L, 7, 1);
        j = lua_isnoneornil(L, 8) ? (lua_Integer)lua_rawlen(L, 6) : luaL_checkinteger(L, 8);
        if (j >= i) {
            if (j - i >= NUM_MAX || i < 0) return 0;
            n = (size_t)(j - i + 1);
        }
        alen = n * 9;
    }
    if (flen > 0xffffffffu || alen > 0xffffffffu) return luaL_error(L, "task too large");
    size_t size = 20 + 4 + flen + 4 + alen;
    luaL_Buffer B;
    unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &B, size);
    p[0] = 1; /* KIND_TASK */
    put_le(p + 1, (uint64_t)id, 8);
    put_le(p + 9, (uint64_t)fnid, 8);
    p[17] = (unsigned char)mode;
    p[18] = (unsigned char)cacheit;
    p[19] = abytes ? 0 : 1;
    put_le(p + 20, flen, 4);
    memcpy(p + 24, fn, flen);
    p += 24 + flen;
    put_le(p, alen, 4);
    p += 4;
    if (abytes) {
        memcpy(p, abytes, alen);
    } else {
        if (!pack_items(L, 6, i, j, p)) return 0; /* nil on top */
    }
    luaL_pushresultsize(&B, size);
    return 1;
}

/* core.pool_reply_head(bytes) -> id, status, format, seconds, pos: what
 * string.unpack("<jBBf", bytes) returns for a worker's reply (the head
 * process.pool's P.handle writes), without a format to parse: the parent
 * reads one per task.  A reply shorter than its head raises, as unpack. */
static int pool_reply_head(lua_State *L) {
    size_t len;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    if (len < 14) return luaL_error(L, "reply too short");
    uint64_t id = 0;
    uint32_t f = 0;
    for (int b = 0; b < 8; b++) id |= (uint64_t)s[b] << (8 * b);
    for (int b = 0; b < 4; b++) f |= (uint32_t)s[10 + b] << (8 * b);
    float secs;
    memcpy(&secs, &f, 4);
    lua_pushinteger(L, (lua_Integer)id);
    lua_pushinteger(L, s[8]);
    lua_pushinteger(L, s[9]);
    lua_pushnumber(L, (lua_Number)secs);
    lua_pushinteger(L, 15);
    return 5;
}

/* core.pool_unpack_numbers(s, pos [, into, at]) -> {n = count, ...}, or
 * with into: the numbers stored in into[at], into[at + 1]... (no table
 * made) and into returned; nil, "corrupt list of numbers" for bytes that
 * are not such a list (a reply from a worker: no protected call needed). */
static int unpack_numbers(lua_State *L) {
    size_t len;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    lua_Integer pos = luaL_checkinteger(L, 2);
    if (pos < 1 || (size_t)pos > len + 1 || (len - (size_t)(pos - 1)) % 9) goto corrupt;
    s += pos - 1;
    size_t n = (len - (size_t)(pos - 1)) / 9;
    lua_Integer at = 1;
    int into = !lua_isnoneornil(L, 3);
    if (into) {
        luaL_checktype(L, 3, LUA_TTABLE);
        at = luaL_checkinteger(L, 4);
        if (at < 1 || at > NUM_MAX * 64) return luaL_argerror(L, 4, "out of range");
        lua_pushvalue(L, 3);
    } else {
        lua_createtable(L, (int)n, 1);
    }
    for (size_t k = 0; k < n; k++, s += 9) {
        uint64_t u = 0;
        for (int b = 0; b < 8; b++) u |= (uint64_t)s[1 + b] << (8 * b);
        if (s[0] == NUM_INT) {
            lua_pushinteger(L, (lua_Integer)u);
        } else if (s[0] == NUM_FLOAT) {
            lua_Number d;
            memcpy(&d, &u, 8);
            lua_pushnumber(L, d);
        } else {
            goto corrupt;
        }
        lua_rawseti(L, -2, at + (lua_Integer)k);
    }
    if (!into) {
        lua_pushinteger(L, (lua_Integer)n);
        lua_setfield(L, -2, "n");
    }
    return 1;
corrupt:
    lua_pushnil(L);
    lua_pushliteral(L, "corrupt list of numbers");
    return 2;
}

/* core.pool_list(n) -> an empty table with room for n items (and n). */
static int pool_list(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    lua_createtable(L, n > 0 && n < NUM_MAX * 64 ? (int)n : 0, 1);
    return 1;
}

/* A worker's claims: an int64 process.Array of n slots; slot (seq - 1) % n
 * holds seq once the worker started its seq-th task, -seq when the
 * parent took that task back first.  One compare-exchange decides, so a
 * task handed ahead is either skipped or run, never both. */
static int64_t *claim_slot(lua_State *L, int64_t *seq) {
    void *data;
    int type;
    size_t n;
    if (!luamp_shared_get(L, 1, &data, &type, &n) || type != LUAMP_SHARED_INT64 || n == 0)
        luaL_argerror(L, 1, "int64 Array expected");
    lua_Integer s = luaL_checkinteger(L, 2);
    luaL_argcheck(L, s >= 1, 2, "out of range");
    *seq = (int64_t)s;
    return (int64_t *)data + (size_t)((s - 1) % (lua_Integer)n);
}

/* core.pool_claim(claims, seq) -> true: run it; false: taken back */
static int pool_claim(lua_State *L) {
    int64_t seq, *p = claim_slot(L, &seq);
    int64_t v = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    lua_pushboolean(L, v != -seq && __atomic_compare_exchange_n(p, &v, seq, 0, __ATOMIC_SEQ_CST,
                                                                __ATOMIC_SEQ_CST));
    return 1;
}

/* core.pool_takeback(claims, seq) -> true: the worker will skip it;
 * false: it has started it */
static int pool_takeback(lua_State *L) {
    int64_t seq, *p = claim_slot(L, &seq);
    int64_t v = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    lua_pushboolean(L, v != seq && __atomic_compare_exchange_n(p, &v, -seq, 0, __ATOMIC_SEQ_CST,
                                                               __ATOMIC_SEQ_CST));
    return 1;
}

/* core.pool_started(claims, seq) -> whether the worker started it */
static int pool_started(lua_State *L) {
    int64_t seq, *p = claim_slot(L, &seq);
    lua_pushboolean(L, __atomic_load_n(p, __ATOMIC_SEQ_CST) == seq);
    return 1;
}

static const luaL_Reg pool_funcs[] = {
    {"pool_claim", pool_claim},
    {"pool_takeback", pool_takeback},
    {"pool_started", pool_started},
    {"pool_pack_numbers", pack_numbers},
    {"pool_task_message", pool_task_message},
    {"pool_reply_head", pool_reply_head},
    {"pool_unpack_numbers", unpack_numbers},
    {"pool_list", pool_list},
    {"pool_getpid", pool_getpid},
    {"pool_decode", pool_decode},
    {"pool_wait", pool_wait},
    {"pool_ignore_sigint", pool_ignore_sigint},
    {"pool_reader", reader_new},
    {"pool_sendframe", pool_sendframe},
    {"pool_sendframes", pool_sendframes},
    {"pool_channel", pool_channel},
    {NULL, NULL}};

void lmp_open_pool(lua_State *L) {
    luaL_setfuncs(L, pool_funcs, 0);
}
