/*
 * result.c - the result channel (see result.h).
 *
 * Wire: one byte, then the payload.  'I': the payload follows inline up
 * to EOF.  'M': the byte carries a memfd (SCM_RIGHTS) holding the payload.
 */
#include "result.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bounds.h"
#include "fdpass.h"
#include "sys.h"

_Static_assert(LMP_ERROR_MAX + 64 <= LMP_RESULT_INLINE, "a child's error message must travel inline");

static int send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int send_memfd(int fd, const char *p, size_t n) {
    int mfd = lmp_fd_hi(memfd_create("luamp-result", MFD_CLOEXEC));
    if (mfd < 0) return -errno;
    for (size_t off = 0; off < n;) {
        ssize_t w = write(mfd, p + off, n - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(mfd);
            return -e;
        }
        off += (size_t)w;
    }
    char tag = 'M';
    struct iovec iov = {&tag, 1};
    ssize_t w = lmp_sendfds(fd, &iov, 1, &mfd, 1, 0);
    close(mfd);
    return w < 0 ? (int)w : 0;
}

int lmp_result_send(int fd, const void *p, size_t n) {
    /* Inline only what the socket buffer surely holds (some systems set
     * small defaults): the parent reads only after the child has ended. */
    int sndbuf = 0;
    socklen_t len = sizeof sndbuf;
    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) < 0) sndbuf = 0;
    size_t room = (size_t)(sndbuf > 0 ? sndbuf : 0) / 4;
    if (n + 1 > room || n > LMP_RESULT_INLINE) return send_memfd(fd, p, n);
    int rc = send_all(fd, "I", 1);
    return rc ? rc : send_all(fd, p, n);
}

/* Append the whole content of a memfd to out. */
static int read_memfd(int mfd, lmp_buf *out) {
    struct stat st;
    if (fstat(mfd, &st) < 0) return -errno;
    size_t n = (size_t)st.st_size;
    if (lmp_buf_reserve(out, n)) return -ENOMEM;
    for (size_t off = 0; off < n;) {
        ssize_t r = pread(mfd, lmp_buf_tail(out), n - off, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return r < 0 ? -errno : -EIO;
        off += (size_t)r;
        out->len += (size_t)r;
    }
    return 0;
}

static int collect(int fd, lmp_buf *out) {
    int first = 1, mode = 0;
    for (;;) {
        char chunk[16384];
        struct iovec iov = {chunk, first ? 1 : sizeof chunk}; /* the tag alone first */
        int mfds[1], nfds, mflags;
        ssize_t r = lmp_recvfds(fd, &iov, 1, mfds, 1, &nfds, MSG_DONTWAIT, &mflags);
        if (r == -EAGAIN) return 0; /* the writer is gone but a copy of its end lives on */
        if (r < 0) return (int)r;
        if (r == 0 || (mflags & MSG_CTRUNC)) {
            if (nfds) close(mfds[0]);
            if (r == 0) return mode == 0 && !first ? -EPROTO : 0; /* 'M' without its memfd */
            return -EMFILE; /* no slot: the kernel dropped the memfd */
        }
        for (int i = 0; i < nfds; i++) {
            int mfd = mfds[i];
            int rc = mode == 'M' || chunk[0] != 'M' ? -EPROTO : read_memfd(mfd, out);
            close(mfd);
            if (rc) return rc;
            mode = 'M';
        }
        if (first) {
            first = 0;
            if (chunk[0] != 'I' && chunk[0] != 'M') return -EPROTO;
            if (chunk[0] == 'I') mode = 'I';
            else if (mode != 'M') return -EPROTO; /* 'M' without its memfd */
            continue;
        }
        if (mode != 'I') return -EPROTO; /* bytes after a memfd */
        if (lmp_buf_append(out, chunk, (size_t)r)) return -ENOMEM;
    }
}

int lmp_result_collect(int fd, lmp_buf *out) {
    /* A memfd needs a free descriptor slot to arrive in: peek at the tag
     * (a peek without a control buffer receives no descriptor) and free
     * the reserved slot for it (sys.h) until the memfd is closed again, so
     * that a parent at its descriptor limit still collects a large
     * result. */
    char tag = 0;
    ssize_t pk;
    do pk = recv(fd, &tag, 1, MSG_PEEK | MSG_DONTWAIT);
    while (pk < 0 && errno == EINTR);
    int released = pk == 1 && tag == 'M' ? lmp_fd_reserve_release() : 0;
    int rc = collect(fd, out);
    if (released) lmp_fd_reserve_retake();
    return rc;
}
