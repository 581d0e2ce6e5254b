/*
 * fdpass.c - descriptor passing over AF_UNIX sockets (see fdpass.h).
 */
#include "fdpass.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Control space for the most descriptors one message may carry. */
typedef union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int) * LMP_PASS_MAXFDS)];
} ctl_space;

ssize_t lmp_sendfds(int sock, const struct iovec *iov, int iovcnt, const int *fds, int nfds, int flags) {
    if (nfds < 0 || nfds > LMP_PASS_MAXFDS) return -EINVAL;
    ctl_space ctl;
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    if (nfds > 0) {
        memset(&ctl, 0, CMSG_SPACE(sizeof(int) * (size_t)nfds));
        m.msg_control = ctl.buf;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n;
    do n = sendmsg(sock, &m, MSG_NOSIGNAL | flags);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

ssize_t lmp_recvfds(int sock, struct iovec *iov, int iovcnt, int *fds, int maxfds, int *nfds, int flags,
                    int *mflags) {
    *nfds = 0;
    *mflags = 0;
    if (maxfds < 1 || maxfds > LMP_PASS_MAXFDS) return -EINVAL;
    ctl_space ctl;
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt, .msg_control = ctl.buf,
                       .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)maxfds)};
    ssize_t n;
    do n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | flags);
    while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (*nfds < maxfds) fds[(*nfds)++] = fd;
            else close(fd); /* nothing a peer sends is trusted */
        }
    }
    *mflags = m.msg_flags;
    return n;
}
