/*
 * lconn.c - process.Pipe and its Connection objects.
 *
 * A Pipe is a socketpair (AF_UNIX, SOCK_SEQPACKET, O_CLOEXEC): sockets
 * rather than pipes so that writing to a closed peer returns EPIPE
 * (MSG_NOSIGNAL) instead of killing the writer with SIGPIPE, and
 * SOCK_SEQPACKET so that every message is one packet, sent and received
 * whole by one system call: any number of processes may send on one end
 * and receive on the other at once, and no message is ever split,
 * interleaved or taken in part.  Pipe(false) shuts down one direction of
 * each end.  The descriptors are NOT tracked private fds: a forked child
 * inherits both ends, which is how a Pipe reaches it.
 *
 * Framing: a packet is one tag byte, then
 *   'I'  the message, inline (up to inline_max bytes, 32 KB at most);
 *   'M'  nothing: a memfd passed with the packet (SCM_RIGHTS) holds it.
 * A message is a codec message for send/recv, raw bytes for
 * send_bytes/recv_bytes.  A larger message is thus one small packet
 * whatever its size; the receiver frees the reserved descriptor slot
 * (core/sys.h) for its memfd.  Nothing the peer sends is trusted: a
 * packet of any other shape, a memfd that is not a regular file or is
 * beyond MAX_FRAME, raises "corrupt message"; no length is read from the
 * stream, so none can be desynchronised.
 * Uses: lcodec.h, lbind.h, core/sys.h.
 * Must never: track its descriptors as private (a fork child inherits a
 * Pipe), or trust a length or descriptor the peer sends.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lconn.h"

#include "core/fdpass.h"
#include "core/sys.h"
#include "lauxlib.h"
#include "lbind.h"
#include "lcodec.h"

#define CONN "process.Connection"
/* A memfd message larger than this is refused by the reader as corrupt. */
#define MAX_FRAME ((uint64_t)1 << 40)
/* Messages up to this size travel inline (less where the socket buffer
 * is small: a packet must fit it whole). */
#define INLINE_MAX 32768
/* Descriptors a packet may carry before it is refused (one is valid). */
#define MAXFDS 8

typedef struct Conn {
    int fd;
    int readable, writable;
    size_t inline_max; /* set when fd is set (conn_setfd) */
    size_t off;        /* where the received message starts in buf */
    lmp_buf buf;       /* scratch for encoding and receiving, kept between calls */
} Conn;

/* Keep the scratch buffer between messages, unless a large one made it
 * big: then give the memory back. */
static void trim(Conn *c) {
    if (c->buf.cap > (1u << 20)) lmp_buf_free(&c->buf);
    else lmp_buf_reset(&c->buf);
}

static Conn *checkconn(lua_State *L) {
    Conn *c = luaL_checkudata(L, 1, CONN);
    if (c->fd < 0) luaL_error(L, "connection is closed");
    return c;
}

static void conn_setfd(Conn *c, int fd) {
    int sndbuf = 0;
    socklen_t len = sizeof sndbuf;
    c->fd = fd;
    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) < 0) sndbuf = 0;
    size_t room = (size_t)(sndbuf > 0 ? sndbuf : 0) / 4;
    c->inline_max = room < INLINE_MAX ? room : INLINE_MAX;
}

/* A memfd holding n bytes at p; -1 and errno on failure. */
static int memfd_of(const char *p, size_t n) {
    int mfd = lmp_fd_hi(memfd_create("luamp-message", MFD_CLOEXEC));
    if (mfd < 0) return -1;
    for (size_t off = 0; off < n;) {
        ssize_t w = write(mfd, p + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            int e = errno;
            close(mfd);
            errno = e;
            return -1;
        }
        off += (size_t)w;
    }
    return mfd;
}

/* One packet: the message inline, or its memfd. */
static int send_frame(lua_State *L, Conn *c, const char *p, size_t n, const char *op) {
    char tag = n <= c->inline_max ? 'I' : 'M';
    struct iovec iov[2] = {{&tag, 1}, {(void *)p, n}};
    int mfd = -1;
    if (tag == 'M' && (mfd = memfd_of(p, n)) < 0) return lmp_pushoserror(L, op, errno);
    ssize_t w = lmp_sendfds(c->fd, iov, tag == 'I' ? 2 : 1, &mfd, mfd >= 0 ? 1 : 0, 0);
    if (mfd >= 0) close(mfd);
    if (w < 0) return lmp_pushoserror(L, op, (int)-w);
    lua_pushboolean(L, 1);
    return 1;
}

/* Copy a received memfd's content into c->buf and close it.  NULL, or
 * what is wrong with it (raised by the caller once the slot is back). */
static const char *read_memfd(Conn *c, int mfd) {
    struct stat st;
    const char *bad = NULL;
    if (fstat(mfd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
        (uint64_t)st.st_size > MAX_FRAME)
        bad = "corrupt message (the descriptor passed is not a message)";
    size_t n = bad ? 0 : (size_t)st.st_size;
    if (!bad && lmp_buf_reserve(&c->buf, n)) bad = "not enough memory";
    for (size_t off = 0; !bad && off < n;) {
        ssize_t r = pread(mfd, c->buf.data + off, n - off, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) bad = "corrupt message (its memfd is shorter than it says)";
        else off += (size_t)r;
    }
    close(mfd);
    c->buf.len = n;
    c->off = 0;
    return bad;
}

/* Receive the next packet into c->buf (at c->off).  Returns 1, 0 when the
 * peer has closed, or -errno (an OS refusal); raises on a corrupt packet. */
static int recv_frame(lua_State *L, Conn *c) {
    if (!c->readable) luaL_error(L, "connection is write-only");
    lmp_buf_reset(&c->buf);
    if (lmp_buf_reserve(&c->buf, INLINE_MAX + 1)) luaL_error(L, "not enough memory");
    /* a memfd needs a free slot: peek at the tag (a peek without a
     * control buffer receives no descriptor) and free the reserved one */
    char tag;
    ssize_t r;
    do r = recv(c->fd, &tag, 1, MSG_PEEK);
    while (r < 0 && errno == EINTR);
    if (r < 0) return -errno;
    if (r == 0) return 0;
    int released = tag == 'M' ? lmp_fd_reserve_release() : 0;
    struct iovec iov = {c->buf.data, INLINE_MAX + 1};
    int fds[MAXFDS], nfds, mflags;
    /* not blocking while the slot is free: another reader may have taken
     * the packet we peeked at; then peek again */
    r = lmp_recvfds(c->fd, &iov, 1, fds, MAXFDS, &nfds, released ? MSG_DONTWAIT : 0, &mflags);
    int e = r < 0 ? (int)-r : 0;
    int mfd = -1;
    if (r == 1 && nfds == 1 && c->buf.data[0] == 'M' && !(mflags & (MSG_TRUNC | MSG_CTRUNC))) {
        mfd = fds[0];
        nfds = 0;
    }
    for (int i = 0; i < nfds; i++) close(fds[i]);
    const char *bad = mfd >= 0 ? read_memfd(c, mfd) : NULL; /* closes mfd */
    if (released) lmp_fd_reserve_retake();
    if (bad) luaL_error(L, "%s", bad);
    if (r < 0 && released && (e == EAGAIN || e == EWOULDBLOCK)) return recv_frame(L, c);
    if (r < 0) return -e;
    if (r == 0) return 0;
    if (mfd >= 0) return 1;
    if (mflags & MSG_CTRUNC) return -EMFILE; /* no slot: the memfd was dropped */
    if (c->buf.data[0] != 'I' || nfds > 0 || (mflags & MSG_TRUNC))
        luaL_error(L, "corrupt message (a packet of %d bytes, tag 0x%02x)", (int)r,
                   (unsigned char)c->buf.data[0]);
    c->buf.len = (size_t)r;
    c->off = 1;
    return 1;
}

/* recv's outcome: 1 message ready; otherwise the error convention: an OS
 * refusal returns nil, "op: strerror", "ENAME"; the peer's close raises
 * "connection closed" (Python's EOFError). */
static int recv_or_fail(lua_State *L, Conn *c, const char *op) {
    int rc = recv_frame(L, c);
    if (rc == 0) luaL_error(L, "connection closed");
    if (rc < 0) {
        trim(c);
        return lmp_pushoserror(L, op, -rc);
    }
    return 0;
}

/* conn:send(v) -> true | nil, err, ename */
static int conn_send(lua_State *L) {
    Conn *c = checkconn(L);
    luaL_checkany(L, 2);
    if (!c->writable) return luaL_error(L, "connection is read-only");
    lmp_buf_reset(&c->buf);
    lmp_lencode(L, 2, &c->buf, "value", 0);
    int n = send_frame(L, c, c->buf.data, c->buf.len, "send");
    trim(c);
    return n;
}

/* conn:recv() -> v | nil, err, ename; raises "connection closed" when the
 * peer closed */
static int conn_recv(lua_State *L) {
    Conn *c = checkconn(L);
    int n = recv_or_fail(L, c, "recv");
    if (n) return n;
    lmp_ldecode(L, c->buf.data + c->off, c->buf.len - c->off, 0);
    trim(c);
    return 1;
}

static int conn_send_bytes(lua_State *L) {
    Conn *c = checkconn(L);
    size_t n;
    const char *p = luaL_checklstring(L, 2, &n);
    if (!c->writable) return luaL_error(L, "connection is read-only");
    return send_frame(L, c, p, n, "send_bytes");
}

static int conn_recv_bytes(lua_State *L) {
    Conn *c = checkconn(L);
    int n = recv_or_fail(L, c, "recv_bytes");
    if (n) return n;
    lua_pushlstring(L, c->buf.data + c->off, c->buf.len - c->off);
    trim(c);
    return 1;
}

/* conn:poll([timeout]) -> true when a message (or the peer's close) is
 * waiting; timeout defaults to 0, math.huge waits forever. */
static int conn_poll(lua_State *L) {
    Conn *c = checkconn(L);
    if (!c->readable) return luaL_error(L, "connection is write-only");
    double t = lmp_opttimeout(L, 2, 0);
    struct pollfd pf = {.fd = c->fd, .events = POLLIN};
    int rc = lmp_poll(&pf, 1, t);
    if (rc < 0) return lmp_pushoserror(L, "poll", -rc);
    lua_pushboolean(L, rc > 0);
    return 1;
}

static int conn_fileno(lua_State *L) {
    lua_pushinteger(L, checkconn(L)->fd);
    return 1;
}

static int conn_close(lua_State *L) {
    Conn *c = luaL_checkudata(L, 1, CONN);
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    lmp_buf_free(&c->buf);
    return 0;
}

static int conn_tostring(lua_State *L) {
    Conn *c = luaL_checkudata(L, 1, CONN);
    if (c->fd < 0) lua_pushliteral(L, "<Connection closed>");
    else lua_pushfstring(L, "<Connection fd=%d%s%s>", c->fd, c->readable ? " readable" : "",
                         c->writable ? " writable" : "");
    return 1;
}

static const luaL_Reg conn_methods[] = {
    {"send", conn_send},           {"recv", conn_recv},
    {"send_bytes", conn_send_bytes}, {"recv_bytes", conn_recv_bytes},
    {"poll", conn_poll},           {"fileno", conn_fileno},
    {"close", conn_close},         {NULL, NULL}};

static const lmp_class conn_class = {CONN, conn_methods, conn_close, conn_tostring, NULL};

static Conn *newconn(lua_State *L, int readable, int writable) {
    Conn *c = lmp_class_new(L, &conn_class, sizeof *c, 0);
    c->fd = -1;
    c->readable = readable;
    c->writable = writable;
    lmp_buf_init(&c->buf);
    return c;
}

/* process.Pipe([duplex]) -> conn1, conn2 (duplex: both ways; otherwise
 * conn1 only receives and conn2 only sends), or nil, err, ename. */
static int core_pipe(lua_State *L) {
    int duplex = lua_isnoneornil(L, 1) ? 1 : lua_toboolean(L, 1);
    Conn *a = newconn(L, 1, duplex);
    Conn *b = newconn(L, duplex, 1);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0 || lmp_fd_hi2(sv) < 0)
        return lmp_pushoserror(L, "Pipe", errno);
    conn_setfd(a, sv[0]);
    conn_setfd(b, sv[1]);
    if (!duplex) {
        shutdown(sv[0], SHUT_WR);
        shutdown(sv[1], SHUT_RD);
    }
    return 2;
}

static const luaL_Reg conn_funcs[] = {{"Pipe", core_pipe}, {NULL, NULL}};

void lmp_open_conn(lua_State *L) { luaL_setfuncs(L, conn_funcs, 0); }

int lmp_conn_fds(lua_State *L, int idx, int *fd, int *readable, int *writable) {
    Conn *c = luaL_testudata(L, idx, CONN);
    if (!c || c->fd < 0) return 0;
    *fd = c->fd;
    *readable = c->readable;
    *writable = c->writable;
    return 1;
}

void lmp_conn_push(lua_State *L, int fd, int readable, int writable) {
    Conn *c = newconn(L, readable, writable);
    conn_setfd(c, fd);
}
