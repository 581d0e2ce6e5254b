/*
 * fork.c - the fork start method.
 *
 * Provides: lmp_method_fork.  The child is a copy of the caller; it returns
 * from start() and the binding runs the target in it.
 * Uses: core/child.h, core/sys.h, the shared channels (method.h).
 *
 * Order matters here:
 *  - every descriptor is created O_CLOEXEC before fork, so a concurrent
 *    exec in a host thread never inherits them;
 *  - stdio is flushed before fork, so output buffered in the parent is
 *    written once, not once per process;
 *  - every signal is blocked across fork: a signal sent to the new child
 *    before it has reset its handlers (interrupt() right after start())
 *    waits until the handlers are the defaults, instead of running the
 *    parent's handler in the child;
 *  - the pidfd is opened after fork in the parent.  That is race-free: the
 *    child cannot be reaped by anyone but us (we never waitpid(-1); a host
 *    that does, or that ignores SIGCHLD, loses us the exit status), so its
 *    pid stays valid, even as a zombie, until we reap it.  A descriptor
 *    slot is reserved before fork and freed just before pidfd_open, so
 *    the descriptor limit refuses start() before any child exists.  If
 *    pidfd_open still fails (ENOMEM), the parent kills and reaps the child
 *    and reports the error: start() either fully succeeds or leaves no
 *    process (though the child may have begun its target by then).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/sys.h"
#include "method.h"

static int fork_start(lmp_reg *r, lmp_child *c, const lmp_start_opts *o, lmp_child_info *info) {
    lmp_channels ch;
    int err = lmp_channels_open(&ch);
    if (err) return err;
    pid_t parent = lmp_self();
    fflush(NULL);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    err = lmp_fault_hit("fork");
    pid_t pid = err ? -1 : fork();
    if (pid != 0) pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        if (!err) err = -errno;
        lmp_channels_close(&ch);
        return err;
    }
    if (pid == 0) {
        close(ch.res[0]);
        if (ch.spare >= 0) close(ch.spare);
        if (!ch.use_pidfd) close(ch.death[0]), close(ch.par[1]);
        lmp_reg_after_fork(-1);
        lmp_fd_std_open(); /* the target's stdio never lands on our channels */
        lmp_signals_reset(); /* handlers to default, then unblock all */
        if (o->daemon) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) raise(SIGKILL); /* it died before the flag was set */
        }
        lmp_fd_track(ch.res[1]);
        lmp_fd_track(ch.death[1]);
        lmp_fd_track(ch.par[0]);
        info->result_w = ch.res[1];
        info->parent_r = ch.par[0];
        info->parent_pid = parent;
        return 1;
    }
    return lmp_channels_adopt(&ch, r, c, pid, o->daemon);
}

const lmp_method lmp_method_fork = {"fork", 1, fork_start, NULL};
