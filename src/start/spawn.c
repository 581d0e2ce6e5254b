/*
 * spawn.c - the spawn start method.
 *
 * Provides: lmp_method_spawn.  The child is a fresh `luamp` runner (exec.h)
 * in child mode:
 *
 *   luamp --luamp-child spawn RESULT PARENT FIRST
 *
 * with the payload memfd at descriptor 3, the write end of the result
 * channel at RESULT, the parent sentinel at PARENT (-1: use a pidfd of the
 * parent), and the payload's own descriptors from FIRST on.  Without
 * pidfds the write end of the death pipe sits at RESULT + 1 (kept open
 * until the child ends).  Nothing else crosses exec: the target and its
 * arguments are in the payload, never in argv or the environment.
 * Uses: exec.h, core/child.h, core/sys.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/sys.h"
#include "exec.h"
#include "method.h"

static void close2(int p[2]) {
    if (p[0] >= 0) close(p[0]);
    if (p[1] >= 0) close(p[1]);
}

static int spawn_start(lmp_reg *r, lmp_child *c, const lmp_start_opts *o, lmp_child_info *info) {
    (void)info;
    const lmp_payload *pl = o->payload;
    if (!pl || pl->nfds > LMP_EXEC_MAXFDS - 4) return -EINVAL;
    int use_pidfd = lmp_have_pidfd();
    int res[2] = {-1, -1}, death[2] = {-1, -1}, par[2] = {-1, -1};
    int err = lmp_fault_hit("pipe");
    if (err) return err;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, res) < 0) return -errno;
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
    /* 3 payload, 4 result, [5 death, 6 parent], then the payload's own */
    int fds[LMP_EXEC_MAXFDS];
    int n = 0;
    fds[n++] = pl->fd;
    fds[n++] = res[1];
    if (!use_pidfd) fds[n++] = death[1], fds[n++] = par[0];
    int first = 3 + n;
    for (int i = 0; i < pl->nfds; i++) fds[n++] = pl->fds[i];
    char a_res[16], a_par[16], a_first[16];
    snprintf(a_res, sizeof a_res, "%d", 4);
    snprintf(a_par, sizeof a_par, "%d", use_pidfd ? -1 : 6);
    snprintf(a_first, sizeof a_first, "%d", first);
    char *argv[] = {"luamp", "--luamp-child", "spawn", a_res, a_par, a_first, NULL};
    fflush(NULL); /* the child shares our stdout; keep the order of output */
    char exe[PATH_MAX];
    pid_t pid = lmp_runner_path(exe, sizeof exe);
    if (pid == 0) pid = lmp_exec(exe, argv, fds, n, o->daemon ? LMP_EXEC_DIE_WITH_PARENT : 0);
    close(res[1]);
    if (!use_pidfd) close(death[1]), close(par[0]);
    if (pid < 0) {
        close(res[0]);
        if (!use_pidfd) close(death[0]), close(par[1]);
        if (spare >= 0) close(spare);
        return pid;
    }
    int sentinel = death[0];
    if (use_pidfd) {
        close(spare);
        sentinel = lmp_fault_hit("pidfd");
        if (!sentinel) sentinel = lmp_pidfd_open(pid);
        if (sentinel < 0) {
            lmp_kill_reap(pid);
            close(res[0]);
            return sentinel;
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

const lmp_method lmp_method_spawn = {"spawn", spawn_start};
