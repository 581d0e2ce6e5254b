/*
 * channels.c - what fork and spawn share: the descriptors between a parent
 * and a child it creates itself, and the parent's side once the child
 * exists (see method.h).
 *
 *  - the result channel (result.h): a socket, for passing a memfd;
 *  - without pidfds: the child holds the write end of `death` (EOF tells
 *    the parent it ended), the parent the write end of `par` (EOF tells
 *    the child its parent ended);
 *  - with pidfds: a descriptor slot reserved for the pidfd, freed just
 *    before pidfd_open, so that the descriptor limit refuses start()
 *    before any child exists.
 * And what the forkserver's owner side shares with them: the sockets and
 * pipes (never on 0-2), and filling, tracking and linking the record of a
 * child that exists (lmp_channels_attach).
 * Uses: core/sys.h, core/child.h.  Must never: include lua.h, leave a
 * descriptor open on a failed start.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/sys.h"
#include "method.h"

static void close_fd(int *fd) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

void lmp_channels_close(lmp_channels *ch) {
    close_fd(&ch->res[0]), close_fd(&ch->res[1]);
    close_fd(&ch->death[0]), close_fd(&ch->death[1]);
    close_fd(&ch->par[0]), close_fd(&ch->par[1]);
    close_fd(&ch->spare);
}

int lmp_channels_socket(int sv[2]) {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || lmp_fd_hi2(sv) < 0) {
        sv[0] = sv[1] = -1;
        return -errno;
    }
    return 0;
}

int lmp_channels_pipe(int p[2]) {
    if (pipe2(p, O_CLOEXEC) < 0 || lmp_fd_hi2(p) < 0) {
        p[0] = p[1] = -1;
        return -errno;
    }
    return 0;
}

void lmp_channels_attach(lmp_reg *r, lmp_child *c, const lmp_attach *a) {
    c->pid = a->pid;
    c->ops = a->ops;
    c->sentinel = a->sentinel;
    c->is_pidfd = a->is_pidfd ? 1 : 0;
    c->pidfd = a->pidfd;
    c->result_fd = a->result_fd;
    c->parent_w = a->parent_w;
    c->daemon = a->daemon ? 1 : 0;
    c->ended = 0;
    lmp_fd_track(a->sentinel);
    lmp_fd_track(a->result_fd);
    lmp_fd_track(a->parent_w);
    lmp_fd_track(a->pidfd);
    lmp_child_link(r, c);
}

int lmp_channels_open(lmp_channels *ch) {
    *ch = (lmp_channels){{-1, -1}, {-1, -1}, {-1, -1}, -1, lmp_have_pidfd()};
    int err = lmp_fault_hit("pipe");
    if (err) return err;
    /* the slot collecting a large result needs (sys.h), before any child */
    if ((err = lmp_fd_reserve()) < 0) return err;
    /* none of them may land on 0-2 */
    if ((err = lmp_channels_socket(ch->res)) < 0 ||
        (!ch->use_pidfd && ((err = lmp_channels_pipe(ch->death)) < 0 || (err = lmp_channels_pipe(ch->par)) < 0)) ||
        (ch->use_pidfd && (ch->spare = fcntl(ch->res[0], F_DUPFD_CLOEXEC, 3)) < 0 && (err = -errno))) {
        lmp_channels_close(ch);
        return err;
    }
    return 0;
}

int lmp_channels_adopt(lmp_channels *ch, lmp_reg *r, lmp_child *c, pid_t pid, int daemon) {
    close_fd(&ch->res[1]), close_fd(&ch->death[1]), close_fd(&ch->par[0]);
    int sentinel = ch->death[0];
    if (ch->use_pidfd) {
        close_fd(&ch->spare);
        sentinel = lmp_fault_hit("pidfd");
        if (!sentinel) sentinel = lmp_pidfd_open(pid);
        if (sentinel < 0) {
            /* start() either fully succeeds or leaves no process */
            lmp_kill_reap(pid);
            lmp_channels_close(ch);
            return sentinel;
        }
    }
    /* no O_NONBLOCK needed: the result is read with MSG_DONTWAIT */
    lmp_attach a = {pid, &lmp_child_own, sentinel, ch->use_pidfd, -1, ch->res[0], ch->par[1], daemon};
    lmp_channels_attach(r, c, &a);
    return 0;
}

void lmp_channels_keep(int fd) {
    if (fd < 0) return;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    lmp_fd_track(fd);
}
