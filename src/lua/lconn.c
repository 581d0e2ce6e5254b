/*
 * lconn.c - process.Pipe and its Connection objects.
 *
 * A Pipe is a socketpair (AF_UNIX, SOCK_STREAM, O_CLOEXEC): sockets rather
 * than pipes so that writing to a closed peer returns EPIPE (MSG_NOSIGNAL)
 * instead of killing the writer with SIGPIPE.  Pipe(false) shuts down one
 * direction of each end.  The descriptors are NOT tracked private fds: a
 * forked child inherits both ends, which is how a Pipe reaches it.
 *
 * Framing: every message is an 8-byte little-endian length, then that many
 * bytes: a codec message for send/recv, raw bytes for send_bytes/recv_bytes.
 * A message is written whole by one send (partial writes are continued), so
 * messages from one writer never interleave; two processes writing to the
 * same end at once must use a Queue instead.
 * Uses: lcodec.h, core/sys.h.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/sys.h"
#include "lauxlib.h"
#include "lcodec.h"
#include "lconn.h"

#define CONN "process.Connection"
/* A frame longer than this is refused by the reader as corrupt. */
#define MAX_FRAME ((uint64_t)1 << 40)

typedef struct Conn {
    int fd;
    int readable, writable;
    lmp_buf buf; /* scratch for encoding and receiving, kept between calls */
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

/* Read exactly n bytes; returns n, fewer at EOF, or -errno. */
static ssize_t read_all(int fd, char *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r == 0) break;
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Header and body go out in one sendmsg (continued while partial). */
static int send_frame(lua_State *L, Conn *c, const char *p, size_t n, const char *op) {
    unsigned char hdr[8];
    for (int i = 0; i < 8; i++) hdr[i] = (unsigned char)((uint64_t)n >> (8 * i));
    struct iovec iov[2] = {{hdr, 8}, {(void *)p, n}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    size_t left = 8 + n;
    int rc = 0;
    while (left > 0) {
        ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            rc = -errno;
            break;
        }
        left -= (size_t)w;
        while (w > 0 && m.msg_iovlen > 0) { /* skip what went out */
            size_t k = (size_t)w < m.msg_iov->iov_len ? (size_t)w : m.msg_iov->iov_len;
            m.msg_iov->iov_base = (char *)m.msg_iov->iov_base + k;
            m.msg_iov->iov_len -= k;
            w -= (ssize_t)k;
            if (m.msg_iov->iov_len == 0) m.msg_iov++, m.msg_iovlen--;
        }
    }
    if (rc < 0) return lmp_pushoserror(L, op, -rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* Reads the next frame into c->buf (reset first); raises at EOF.  The
 * reads stop at the frame's end, so nothing of the next message is taken
 * from the socket: process.wait and poll see exactly what is pending. */
static void recv_frame(lua_State *L, Conn *c, const char *op) {
    if (!c->readable) luaL_error(L, "connection is write-only");
    unsigned char hdr[8];
    ssize_t r = read_all(c->fd, (char *)hdr, 8);
    if (r < 0) {
        lmp_pushoserror(L, op, (int)-r);
        lua_error(L);
    }
    if (r == 0) luaL_error(L, "connection closed");
    if (r < 8) luaL_error(L, "connection closed in the middle of a message");
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)hdr[i] << (8 * i);
    if (n > MAX_FRAME) luaL_error(L, "corrupt message: length %I", (lua_Integer)n);
    lmp_buf_reset(&c->buf);
    if (lmp_buf_reserve(&c->buf, (size_t)n)) luaL_error(L, "not enough memory");
    r = read_all(c->fd, c->buf.data, (size_t)n);
    if (r < 0) {
        lmp_pushoserror(L, op, (int)-r);
        lua_error(L);
    }
    if ((uint64_t)r < n) luaL_error(L, "connection closed in the middle of a message");
    c->buf.len = (size_t)n;
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

/* conn:recv() -> v; raises "connection closed" when the peer closed */
static int conn_recv(lua_State *L) {
    Conn *c = checkconn(L);
    recv_frame(L, c, "recv");
    lmp_ldecode(L, c->buf.data, c->buf.len, 0);
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
    recv_frame(L, c, "recv_bytes");
    lua_pushlstring(L, c->buf.data ? c->buf.data : "", c->buf.len);
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

static Conn *newconn(lua_State *L, int readable, int writable) {
    Conn *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->fd = -1;
    c->readable = readable;
    c->writable = writable;
    lmp_buf_init(&c->buf);
    if (luaL_newmetatable(L, CONN)) {
        luaL_newlib(L, conn_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, conn_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, conn_close);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, conn_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_setmetatable(L, -2);
    return c;
}

/* process.Pipe([duplex]) -> conn1, conn2 (duplex: both ways; otherwise
 * conn1 only receives and conn2 only sends), or nil, err, ename. */
int lmp_open_pipe(lua_State *L) {
    int duplex = lua_isnoneornil(L, 1) ? 1 : lua_toboolean(L, 1);
    Conn *a = newconn(L, 1, duplex);
    Conn *b = newconn(L, duplex, 1);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || lmp_fd_hi2(sv) < 0)
        return lmp_pushoserror(L, "Pipe", errno);
    a->fd = sv[0];
    b->fd = sv[1];
    if (!duplex) {
        shutdown(sv[0], SHUT_WR);
        shutdown(sv[1], SHUT_RD);
    }
    return 2;
}

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
    c->fd = fd;
}
