/*
 * fdpass.h - descriptor passing (SCM_RIGHTS) over AF_UNIX sockets, the one
 * way luamp writes it: Pipe messages, results, the forkserver's requests
 * and replies.
 *
 * Provides: lmp_sendfds, lmp_recvfds.
 * Uses: libc, core/bounds.h.  Must never: include lua.h, keep a
 * descriptor it was not asked to keep (whatever does not fit the caller's
 * list is closed), block where the caller's flags say not to.
 */
#ifndef LMP_FDPASS_H
#define LMP_FDPASS_H

#include <sys/types.h>
#include <sys/uio.h>

#include "bounds.h"

/* Send one message of iov[0..iovcnt) carrying fds[0..nfds) (0 <= nfds <=
 * LMP_PASS_MAXFDS; 0: none), with MSG_NOSIGNAL | flags, retrying EINTR.
 * Returns the bytes sent, or -errno.  The descriptors stay the caller's. */
ssize_t lmp_sendfds(int sock, const struct iovec *iov, int iovcnt, const int *fds, int nfds, int flags);

/* Receive one message into iov[0..iovcnt) with MSG_CMSG_CLOEXEC | flags,
 * retrying EINTR, and room for maxfds descriptors (1 <= maxfds <=
 * LMP_PASS_MAXFDS: more makes the kernel drop them all and set
 * MSG_CTRUNC, as it does when this process is out of descriptor slots).
 * The descriptors received go to fds (*nfds of them, now the caller's);
 * *mflags gets the message's flags (MSG_TRUNC, MSG_CTRUNC).  Returns the
 * bytes received (0: the peer closed), or -errno with nothing received. */
ssize_t lmp_recvfds(int sock, struct iovec *iov, int iovcnt, int *fds, int maxfds, int *nfds, int flags,
                    int *mflags);

#endif
