/*
 * sys.h - thin, testable wrappers over the system calls the core needs.
 *
 * Provides: the monotonic clock, errno names, the set of descriptors luamp
 * owns privately (closed in every forked child), pidfd helpers with a
 * probe for kernels that lack them, and the signal reset a child performs.
 * Uses: libc and Linux syscalls.  Must never: include lua.h, raise, exit.
 */
#ifndef LMP_SYS_H
#define LMP_SYS_H

#include <sys/types.h>

/* Monotonic seconds (CLOCK_MONOTONIC); deadlines are computed from it. */
double lmp_now(void);

/* "EAGAIN" for EAGAIN etc., for every errno the platform's <errno.h>
 * defines (a table generated at build time, tools/gen_errnames.sh); "E?"
 * for unknown codes.  err is positive. */
const char *lmp_errname(int err);
/* The inverse: EAGAIN for "EAGAIN"; 0 for an unknown name. */
int lmp_errno(const char *name);

/* Private descriptors (lmp_fd_track...): process-wide state, declared in
 * state.h (included here: every user of the wrappers uses those too). */
#include "state.h"

/* Descriptors 0-2 belong to stdio: luamp never lets a private descriptor
 * land there (output written to a closed stdout would corrupt it).
 * lmp_fd_std_open opens /dev/null on any of 0-2 that is closed (as lua.c
 * style tools and libuv do at start); called by the runner, the module's
 * first use and every forked child.  lmp_fd_hi moves a fresh descriptor
 * that still landed on 0-2 (a host closed one later) to >= 3, O_CLOEXEC,
 * and returns it (fd < 0 is passed through, errno kept; -1 with errno set
 * if the move fails, fd closed): wrap the call that created it.
 * lmp_fd_hi2 does it for a pair: 0, or -1 and errno with both closed. */
void lmp_fd_std_open(void);
int lmp_fd_hi(int fd);
int lmp_fd_hi2(int fds[2]);

/* The descriptor reserve: one slot held (on /dev/null, >= 3, O_CLOEXEC) so
 * that receiving a passed descriptor (a large result's or message's
 * memfd) cannot fail at the descriptor limit: reserved before it is
 * needed, as start reserves its pidfd's slot.  lmp_fd_reserve makes sure
 * the slot is held (0, or -errno: a start refuses then); release frees it
 * just before a recvmsg that carries a descriptor (1 if it did; it holds
 * a lock until lmp_fd_reserve_retake, which takes the slot back). */
int lmp_fd_reserve(void);
int lmp_fd_reserve_release(void);
void lmp_fd_reserve_retake(void);

/* 1 when the kernel has pidfd_open and waitid(P_PIDFD); 0 otherwise, or
 * when LUAMP_NO_PIDFD=1 forces the pipe fallback (used by the test suite). */
int lmp_have_pidfd(void);
int lmp_pidfd_open(pid_t pid);                 /* fd or -errno */
int lmp_pidfd_send_signal(int pidfd, int sig); /* 0 or -errno */

/* Kill a child of ours that we will not use after all, and reap it. */
void lmp_kill_reap(pid_t pid);

/* In a freshly forked child: caught signals back to SIG_DFL (ignored ones
 * stay ignored, as across exec) and an empty signal mask. */
void lmp_signals_reset(void);

/* Monotonic-deadline poll: waits until one of fds is readable or the
 * timeout (seconds; < 0 forever) passes, retrying on EINTR with the time
 * that is left.  Returns the number ready (revents set), 0 on timeout,
 * -errno on failure. */
struct pollfd;
int lmp_poll(struct pollfd *fds, int n, double timeout);

/* Fault injection for the test suite (SQLite's swappable syscalls, cut
 * down): the next `count` calls of `op` ("fork", "pipe", "pidfd", "dup": the payload's
 * copy of a descriptor it carries) fail
 * with err.  lmp_fault_hit returns -err for an armed op, else 0. */
int lmp_fault_set(const char *op, int err, int count);
int lmp_fault_hit(const char *op);

#endif
