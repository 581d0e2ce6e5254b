/*
 * spawn.c - the spawn start method, both its sides.
 *
 * Provides: lmp_method_spawn.  The child is a fresh `luamp` runner (exec.h)
 * in child mode:
 *
 *   luamp --luamp-child spawn RESULT PARENT FIRST N
 *
 * with the payload memfd at descriptor 3, the write end of the result
 * channel at RESULT, the parent sentinel at PARENT (-1: use a pidfd of the
 * parent), and the payload's own N descriptors from FIRST on.  Without
 * pidfds the write end of the death pipe sits at RESULT + 1 (kept open
 * until the child ends).  Nothing else crosses exec: the target and its
 * arguments are in the payload, never in argv or the environment.
 * The parent reaps and signals the child as its own (lmp_child_own, set
 * by the shared channels).
 * Uses: exec.h, core/child.h, core/sys.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/sys.h"
#include "exec.h"
#include "method.h"

/* The child's descriptors: the payload, the result channel, then (pipe
 * fallback only) the death pipe and the parent sentinel. */
enum { PAYLOAD_FD = 3, RESULT_FD = 4, DEATH_FD = 5, PARENT_FD = 6 };

static int spawn_start(lmp_reg *r, lmp_child *c, const lmp_start_opts *o, lmp_child_info *info) {
    (void)info;
    const lmp_payload *pl = o->payload;
    if (!pl || pl->nfds < 0 || pl->nfds > LMP_PAYLOAD_MAXFDS) return -EINVAL;
    lmp_channels ch;
    int err = lmp_channels_open(&ch);
    if (err) return err;
    int fds[LMP_EXEC_MAXFDS];
    int n = 0;
    fds[n++] = pl->fd;      /* PAYLOAD_FD */
    fds[n++] = ch.res[1];   /* RESULT_FD */
    if (!ch.use_pidfd) fds[n++] = ch.death[1], fds[n++] = ch.par[0]; /* DEATH_FD, PARENT_FD */
    int first = PAYLOAD_FD + n;
    for (int i = 0; i < pl->nfds; i++) fds[n++] = pl->fds[i];
    char a_res[16], a_par[16], a_first[16], a_n[16];
    snprintf(a_res, sizeof a_res, "%d", RESULT_FD);
    snprintf(a_par, sizeof a_par, "%d", ch.use_pidfd ? -1 : PARENT_FD);
    snprintf(a_first, sizeof a_first, "%d", first);
    snprintf(a_n, sizeof a_n, "%d", pl->nfds);
    char *argv[] = {"luamp", LMP_CHILD_MODE, "spawn", a_res, a_par, a_first, a_n, NULL};
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

/* A decimal argument in [lo, hi]; 0, or -EINVAL. */
static int arg_int(const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -EINVAL;
    *out = (int)v;
    return 0;
}

/* The child, right after exec: RESULT PARENT FIRST N (see above).  The
 * channels become private descriptors again (close-on-exec, closed in
 * the child's own fork children), the payload's are close-on-exec. */
static int spawn_become(int argc, char *const argv[], lmp_child_start *out) {
    int res, par, first, n;
    if (argc != 4 || arg_int(argv[0], 3, INT_MAX - 1, &res) || arg_int(argv[1], -1, INT_MAX, &par) ||
        arg_int(argv[2], 3, INT_MAX - LMP_PAYLOAD_MAXFDS, &first) || arg_int(argv[3], 0, LMP_PAYLOAD_MAXFDS, &n))
        return -EINVAL;
    out->payload_fd = PAYLOAD_FD;
    out->result_w = res;
    out->parent_r = par;
    lmp_channels_keep(res);
    if (par >= 0) lmp_channels_keep(par), lmp_channels_keep(res + 1); /* + the death pipe */
    for (int i = 0; i < n; i++) {
        out->fds[i] = first + i;
        fcntl(first + i, F_SETFD, FD_CLOEXEC);
    }
    out->nfds = n;
    return 1;
}

const lmp_method lmp_method_spawn = {"spawn", 0, spawn_start, spawn_become};
