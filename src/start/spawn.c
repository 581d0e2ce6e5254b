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

static int spawn_start(lmp_reg *r, lmp_child *c, const lmp_start_opts *o, lmp_child_info *info) {
    (void)info;
    const lmp_payload *pl = o->payload;
    if (!pl || pl->nfds > LMP_EXEC_MAXFDS - 4) return -EINVAL;
    lmp_channels ch;
    int err = lmp_channels_open(&ch);
    if (err) return err;
    /* 3 payload, 4 result, [5 death, 6 parent], then the payload's own */
    int fds[LMP_EXEC_MAXFDS];
    int n = 0;
    fds[n++] = pl->fd;
    fds[n++] = ch.res[1];
    if (!ch.use_pidfd) fds[n++] = ch.death[1], fds[n++] = ch.par[0];
    int first = 3 + n;
    for (int i = 0; i < pl->nfds; i++) fds[n++] = pl->fds[i];
    char a_par[16], a_first[16];
    snprintf(a_par, sizeof a_par, "%d", ch.use_pidfd ? -1 : 6);
    snprintf(a_first, sizeof a_first, "%d", first);
    char *argv[] = {"luamp", "--luamp-child", "spawn", "4", a_par, a_first, NULL};
    fflush(NULL); /* the child shares our stdout; keep the order of output */
    char exe[PATH_MAX];
    pid_t pid = lmp_runner_path(exe, sizeof exe);
    if (pid == 0) pid = lmp_exec(exe, argv, fds, n, o->daemon ? LMP_EXEC_DIE_WITH_PARENT : 0);
    if (pid < 0) {
        lmp_channels_close(&ch);
        return pid;
    }
    return lmp_channels_adopt(&ch, r, c, pid, o->daemon);
}

const lmp_method lmp_method_spawn = {"spawn", spawn_start};
