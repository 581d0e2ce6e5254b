/*
 * fs_server.c - the forkserver's loop (see forkserver.h for the protocol).
 *
 * One thread, one poll over: the listening socket, the alive pipe, a
 * signalfd for SIGCHLD, and the accepted connections.  The server owns
 * every child it forks, so it reaps with waitpid(-1): nothing else lives
 * in this process.  SIGINT is ignored here (a Ctrl-C meant for the owner
 * must not take the server and its in-flight children's exit codes with
 * it); children get it back.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/fdpass.h"
#include "core/sys.h"
#include "forkserver.h"

#define MAXCONN 64

typedef struct kid {
    pid_t pid;
    int status_w;
    int daemon;
} kid;

typedef struct server {
    int lfd, alive, sfd;
    int conn[MAXCONN];
    int nconn;
    kid *kids;
    size_t nkids, capkids;
    sigset_t oldmask;
    int sigint_ignored; /* the owner ignored SIGINT: so do the children */
} server;

static void close_all(const int *fds, int n) {
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0) close(fds[i]);
}

static void report(server *s, pid_t pid, int st) {
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
    for (size_t i = 0; i < s->nkids; i++) {
        if (s->kids[i].pid != pid) continue;
        ssize_t w;
        /* MSG_NOSIGNAL: an owner that is gone must not SIGPIPE us */
        do w = send(s->kids[i].status_w, &code, sizeof code, MSG_NOSIGNAL);
        while (w < 0 && errno == EINTR);
        close(s->kids[i].status_w);
        s->kids[i] = s->kids[--s->nkids];
        return;
    }
}

static void reap_all(server *s) {
    struct signalfd_siginfo si;
    while (read(s->sfd, &si, sizeof si) > 0) {}
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) report(s, pid, st);
}

static void accept_one(server *s) {
    int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return;
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (s->nconn == MAXCONN || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 ||
        cr.uid != getuid()) {
        close(fd);
        return;
    }
    s->conn[s->nconn++] = fd;
}

static void reply(int conn, int err, pid_t pid, int pidfd) {
    struct lmp_fs_reply r = {err, pid};
    struct iovec iov = {&r, sizeof r};
    (void)lmp_sendfds(conn, &iov, 1, &pidfd, pidfd >= 0 ? 1 : 0, 0); /* a dead owner: nobody to tell */
}

/* In the new child: keep the request's descriptors, drop the server's. */
static void become_child(server *s, int daemon, pid_t server_pid) {
    close(s->lfd);
    close(s->alive);
    close(s->sfd);
    close_all(s->conn, s->nconn);
    for (size_t i = 0; i < s->nkids; i++) close(s->kids[i].status_w);
    free(s->kids);
    if (!s->sigint_ignored) signal(SIGINT, SIG_DFL);
    lmp_signals_reset(); /* and unblocks every signal */
    /* Every child dies with the server, daemon or not: its exit status
     * and its signals go through the server, and without it the child
     * could neither be reported nor reliably signalled.  (When the owner
     * ends, the server kills the daemons and stays until the others have
     * ended: see lmp_forkserver_serve.) */
    (void)daemon;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != server_pid) raise(SIGKILL); /* it died before the flag was set */
}

/* One request on conn.  Returns 1 in the child, 0 in the server, -1 when
 * the connection is finished (EOF or garbage). */
static int handle(server *s, int conn, lmp_served *out) {
    struct lmp_fs_request rq;
    struct iovec iov = {&rq, sizeof rq};
    int fds[LMP_PASS_MAXFDS], nfds, mflags;
    ssize_t n = lmp_recvfds(conn, &iov, 1, fds, LMP_PASS_MAXFDS, &nfds, MSG_DONTWAIT, &mflags);
    if (n == -EAGAIN || n == -EWOULDBLOCK) return 0;
    if (n <= 0) {
        close_all(fds, nfds);
        return -1;
    }
    if (n != (ssize_t)sizeof rq || rq.magic != LMP_FS_MAGIC || nfds < LMP_FS_FIXED) {
        close_all(fds, nfds);
        return -1;
    }
    if (mflags & MSG_CTRUNC) { /* out of descriptor slots */
        close_all(fds, nfds);
        reply(conn, EMFILE, 0, -1);
        return 0;
    }
    if (s->nkids == s->capkids) {
        size_t cap = s->capkids ? 2 * s->capkids : 16;
        kid *k = realloc(s->kids, cap * sizeof *k);
        if (!k) {
            close_all(fds, nfds);
            reply(conn, ENOMEM, 0, -1);
            return 0;
        }
        s->kids = k, s->capkids = cap;
    }
    pid_t server_pid = getpid();
    /* Every signal blocked across fork: the owner may signal the child
     * as soon as it has the reply, before the child has given SIGINT
     * back its default; blocked, the signal waits instead of hitting the
     * server's SIG_IGN (a blocked signal is never discarded as ignored). */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    pid_t pid = fork();
    if (pid != 0) sigprocmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        int e = errno;
        close_all(fds, nfds);
        reply(conn, e, 0, -1);
        return 0;
    }
    if (pid == 0) {
        close(fds[2]); /* the status socket is the server's to write */
        become_child(s, rq.daemon != 0, server_pid);
        out->payload_fd = fds[0];
        out->result_w = fds[1];
        out->parent_fd = fds[3];
        out->nfds = nfds - LMP_FS_FIXED;
        memcpy(out->fds, fds + LMP_FS_FIXED, sizeof(int) * (size_t)out->nfds);
        return 1;
    }
    s->kids[s->nkids++] = (kid){pid, fds[2], rq.daemon != 0};
    fds[2] = -1;
    int pidfd = lmp_have_pidfd() ? lmp_pidfd_open(pid) : -1;
    close_all(fds, nfds);
    reply(conn, 0, pid, pidfd);
    if (pidfd >= 0) close(pidfd);
    return 0;
}

int lmp_forkserver_serve(int listen_fd, int alive_fd, lmp_served *out) {
    server s = {.lfd = listen_fd, .alive = alive_fd};
    /* exec kept the owner's SIG_IGN (a nohup'ed or background job) */
    s.sigint_ignored = signal(SIGINT, SIG_IGN) == SIG_IGN;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &s.oldmask);
    s.sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (s.sfd < 0) return -errno;
    for (;;) {
        struct pollfd pf[3 + MAXCONN];
        pf[0] = (struct pollfd){.fd = s.alive, .events = POLLIN};
        pf[1] = (struct pollfd){.fd = s.sfd, .events = POLLIN};
        pf[2] = (struct pollfd){.fd = s.lfd, .events = POLLIN};
        for (int i = 0; i < s.nconn; i++) pf[3 + i] = (struct pollfd){.fd = s.conn[i], .events = POLLIN};
        int rc = lmp_poll(pf, 3 + s.nconn, -1);
        if (rc < 0) return rc;
        if (pf[0].revents) break; /* the owner has ended */
        if (pf[1].revents) reap_all(&s);
        int polled = s.nconn; /* a connection accepted below waits for the next poll */
        if (pf[2].revents) accept_one(&s);
        for (int i = 0; i < polled; i++) {
            if (!pf[3 + i].revents) continue;
            int h = handle(&s, s.conn[i], out);
            if (h == 1) return 1;
            if (h < 0) {
                close(s.conn[i]);
                s.conn[i] = -1;
            }
        }
        int k = 0; /* drop the finished connections */
        for (int i = 0; i < s.nconn; i++)
            if (s.conn[i] >= 0) s.conn[k++] = s.conn[i];
        s.nconn = k;
    }
    /* The owner has ended (killed, or its clean-up is done): daemons end
     * with it, as under fork; the others run to their end, which the
     * server waits for (they die with it, so it must outlive them), then
     * it goes.  Their exit statuses have nobody left to read them. */
    close(s.lfd);
    s.lfd = -1;
    close_all(s.conn, s.nconn);
    s.nconn = 0;
    for (size_t i = 0; i < s.nkids; i++)
        if (s.kids[i].daemon) kill(s.kids[i].pid, SIGKILL); /* unreaped: ours */
    for (;;) {
        reap_all(&s);
        if (s.nkids == 0) break;
        struct pollfd pf = {.fd = s.sfd, .events = POLLIN};
        if (lmp_poll(&pf, 1, -1) < 0) break;
    }
    for (size_t i = 0; i < s.nkids; i++) close(s.kids[i].status_w);
    free(s.kids);
    close(s.sfd);
    return 0;
}
