/*
 * fork.c - the fork start method.
 *
 * Provides: lmp_method_fork.  The child is a copy of the caller; it returns
 * from start() and the binding runs the target in it.
 * Uses: core/child.h, core/sys.h.
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

static void close2(int p[2]) {
    if (p[0] >= 0) close(p[0]);
    if (p[1] >= 0) close(p[1]);
}

static int fork_start(lmp_reg *r, lmp_child *c, const lmp_start_opts *o, lmp_child_info *info) {
    int use_pidfd = lmp_have_pidfd();
    int res[2] = {-1, -1}, death[2] = {-1, -1}, par[2] = {-1, -1};
    int err = lmp_fault_hit("pipe");
    if (err) return err;
    /* the result channel (result.h): a socket, for passing a memfd */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, res) < 0) return -errno;
    /* Without pidfd: the child holds the write end of `death` (EOF tells
     * the parent it ended), the parent the write end of `par` (EOF tells
     * the child its parent ended). */
    if (!use_pidfd && (pipe2(death, O_CLOEXEC) < 0 || pipe2(par, O_CLOEXEC) < 0)) {
        err = -errno;
        close2(res), close2(death), close2(par);
        return err;
    }
    int spare = -1; /* the pidfd's slot, reserved */
    if (use_pidfd && (spare = fcntl(res[0], F_DUPFD_CLOEXEC, 0)) < 0) {
        err = -errno;
        close2(res);
        return err;
    }
    pid_t parent = getpid();
    fflush(NULL);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    err = lmp_fault_hit("fork");
    pid_t pid = err ? -1 : fork();
    if (pid != 0) pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        if (!err) err = -errno;
        close2(res), close2(death), close2(par);
        if (spare >= 0) close(spare);
        return err;
    }
    if (pid == 0) {
        close(res[0]);
        if (spare >= 0) close(spare);
        if (!use_pidfd) close(death[0]), close(par[1]);
        lmp_reg_after_fork(-1);
        lmp_signals_reset(); /* handlers to default, then unblock all */
        if (o->daemon) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) raise(SIGKILL); /* it died before the flag was set */
        }
        lmp_fd_track(res[1]);
        lmp_fd_track(death[1]);
        lmp_fd_track(par[0]);
        info->result_w = res[1];
        info->parent_r = par[0];
        info->parent_pid = parent;
        return 1;
    }
    close(res[1]);
    if (!use_pidfd) close(death[1]), close(par[0]);
    int sentinel = death[0];
    if (use_pidfd) {
        close(spare);
        sentinel = lmp_fault_hit("pidfd");
        if (!sentinel) sentinel = lmp_pidfd_open(pid);
        if (sentinel < 0) {
            err = sentinel;
            lmp_kill_reap(pid);
            close(res[0]);
            return err;
        }
    }
    fcntl(res[0], F_SETFL, O_NONBLOCK);
    c->pid = pid;
    c->sentinel = sentinel;
    c->is_pidfd = use_pidfd;
    c->result_fd = res[0];
    c->parent_w = par[1];
    c->daemon = o->daemon ? 1 : 0;
    c->ended = 0;
    lmp_fd_track(sentinel);
    lmp_fd_track(res[0]);
    lmp_fd_track(par[1]);
    lmp_child_link(r, c);
    return 0;
}

const lmp_method lmp_method_fork = {"fork", fork_start};

const lmp_method *lmp_method_find(const char *name) {
    if (strcmp(name, "fork") == 0) return &lmp_method_fork;
    if (strcmp(name, "spawn") == 0) return &lmp_method_spawn;
    if (strcmp(name, "forkserver") == 0) return &lmp_method_forkserver;
    return NULL;
}
