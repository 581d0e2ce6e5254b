/*
 * forkserver.c - the forkserver start method, the owner's side (see
 * forkserver.h for the protocol; fs_server.c is the server).
 *
 * One server per process, started on first use and restarted on the next
 * start after it died.  A child forked by this process (fork method)
 * inherits none of it: the connection is a tracked descriptor, closed in
 * every fork child, and the pid check below makes the child start its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/fdpass.h"
#include "core/child.h"
#include "core/state.h"
#include "core/sys.h"
#include "exec.h"
#include "forkserver.h"
#include "method.h"

static pthread_mutex_t fs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    pid_t owner;  /* the process these belong to; 0: none */
    pid_t pid;    /* the server */
    int conn;     /* connected socket */
    int alive_w;  /* write end of the alive pipe */
    int self_fd;  /* a pidfd of the owner, sent as each child's parent sentinel */
} fs = {0, 0, -1, -1, -1};

static int mine(void) { return fs.owner == getpid() && fs.pid > 0; }

/* Around every fork (a host's own too, core/state.h): the forking thread
 * takes fs_lock, so the child inherits it free and fs whole; the server
 * is the parent's, forgotten in the child (its descriptors are closed
 * there as tracked ones). */
static void fs_atfork_prepare(void) { pthread_mutex_lock(&fs_lock); }
static void fs_atfork_parent(void) { pthread_mutex_unlock(&fs_lock); }
static void fs_atfork_child(void) {
    fs_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    fs.owner = 0;
    fs.pid = 0;
    fs.conn = fs.alive_w = fs.self_fd = -1;
}
__attribute__((constructor)) static void fs_install_atfork(void) {
    static const lmp_fork_hooks h = {fs_atfork_prepare, fs_atfork_parent, fs_atfork_child};
    lmp_state_on_fork(LMP_STATE_FORKSERVER, &h);
}

static void forget(void) {
    lmp_fd_close(fs.conn);
    lmp_fd_close(fs.alive_w);
    fs.conn = fs.alive_w = -1;
    fs.pid = 0;
}

/* Close our ends, wait for the server to go (it exits on EOF at once;
 * killed after a grace period if it does not) and reap it. */
static void stop_locked(void) {
    if (!mine()) return;
    pid_t pid = fs.pid;
    forget();
    int pidfd = lmp_pidfd_open(pid);
    if (pidfd >= 0) {
        struct pollfd pf = {.fd = pidfd, .events = POLLIN};
        if (lmp_poll(&pf, 1, LMP_DAEMON_GRACE) == 0) kill(pid, SIGKILL);
        close(pidfd);
    }
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
}

void lmp_forkserver_stop(void) {
    /* A fork child never owns its parent's server: do not even take the
     * lock, which another thread of the parent may have held at fork. */
    if (fs.owner != getpid()) return;
    pthread_mutex_lock(&fs_lock);
    stop_locked();
    pthread_mutex_unlock(&fs_lock);
}

pid_t lmp_forkserver_pid(int fds[3]) {
    pthread_mutex_lock(&fs_lock);
    pid_t pid = mine() ? fs.pid : 0;
    int own = fs.owner == getpid();
    fds[0] = own ? fs.conn : -1;
    fds[1] = own ? fs.alive_w : -1;
    fds[2] = own ? fs.self_fd : -1;
    pthread_mutex_unlock(&fs_lock);
    return pid;
}

/* Forget the server and make sure it is gone: killed (it may merely have
 * closed its socket, or hang) and reaped. */
static void drop_server_locked(void) {
    pid_t pid = fs.pid;
    forget();
    if (pid > 0) lmp_kill_reap(pid);
}

/* A server that died (killed, crashed) is reaped and forgotten. */
static void check_alive_locked(void) {
    if (!mine()) return; /* none, or the parent's (reset by atfork_child) */
    struct pollfd pf = {.fd = fs.conn, .events = POLLIN};
    if (poll(&pf, 1, 0) > 0 && (pf.revents & (POLLHUP | POLLERR | POLLIN))) drop_server_locked();
}

/* The listening socket's address: in the abstract namespace (Linux), so
 * nothing is ever created on disk and nothing is left behind however the
 * owner ends; a random name, and the server refuses any peer of another
 * uid (SO_PEERCRED). */
static socklen_t server_addr(struct sockaddr_un *sa) {
    uint64_t rnd[2] = {0, 0};
    if (getrandom(rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd) {
        rnd[0] ^= (uint64_t)lmp_now() * 1000000007u;
        rnd[1] ^= (uint64_t)(uintptr_t)&rnd;
    }
    *sa = (struct sockaddr_un){.sun_family = AF_UNIX};
    int n = snprintf(sa->sun_path + 1, sizeof sa->sun_path - 1, "luamp-forkserver-%ld-%016llx%016llx",
                     (long)getpid(), (unsigned long long)rnd[0], (unsigned long long)rnd[1]);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

static int start_server_locked(void) {
    struct sockaddr_un sa;
    socklen_t salen = 0;
    int err = 0, lfd = -1, conn = -1, alive[2] = {-1, -1};
    pid_t pid = -1;
    int bound = -1;
    lfd = lmp_fd_hi(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    for (int tries = 0; lfd >= 0 && tries < 8; tries++) { /* a name taken: another */
        salen = server_addr(&sa);
        if ((bound = bind(lfd, (struct sockaddr *)&sa, salen)) == 0 || errno != EADDRINUSE) break;
    }
    if (lfd < 0 || bound < 0 || listen(lfd, 16) < 0 || pipe2(alive, O_CLOEXEC) < 0 || lmp_fd_hi2(alive) < 0) {
        err = -errno;
        goto out;
    }
    int fds[2] = {lfd, alive[0]}; /* LMP_FS_LISTEN_FD, LMP_FS_ALIVE_FD */
    char *argv[] = {"luamp", LMP_CHILD_MODE, "forkserver", NULL};
    fflush(NULL);
    char exe[PATH_MAX];
    pid = lmp_runner_path(exe, sizeof exe);
    if (pid == 0) pid = lmp_exec(exe, argv, fds, 2, 0);
    if (pid < 0) {
        err = pid;
        goto out;
    }
    /* the listening socket is ready: connect() completes at once */
    conn = lmp_fd_hi(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (conn < 0 || connect(conn, (struct sockaddr *)&sa, salen) < 0) {
        err = -errno;
        close(alive[1]);
        alive[1] = -1;
        lmp_kill_reap(pid);
        goto out;
    }
    lmp_reg_at_shutdown(lmp_forkserver_stop);
    fs.owner = getpid();
    fs.pid = pid;
    fs.conn = conn;
    fs.alive_w = alive[1];
    lmp_fd_track(conn);
    lmp_fd_track(alive[1]);
    conn = alive[1] = -1;
out:
    if (lfd >= 0) close(lfd);
    if (conn >= 0) close(conn);
    if (alive[0] >= 0) close(alive[0]);
    if (alive[1] >= 0) close(alive[1]);
    return err;
}

/* Send the request; 0 or -errno (EPIPE, ECONNRESET...: the server is gone). */
static int send_request(const int *fds, int nfds, int daemon) {
    struct lmp_fs_request rq = {LMP_FS_MAGIC, (uint32_t)daemon};
    struct iovec iov = {&rq, sizeof rq};
    ssize_t n = lmp_sendfds(fs.conn, &iov, 1, fds, nfds, 0);
    return n < 0 ? (int)n : 0;
}

/* The reply: 0 and *pid (and *pidfd, or -1), or -errno. */
static int read_reply(pid_t *pid, int *pidfd) {
    struct lmp_fs_reply r;
    struct iovec iov = {&r, sizeof r};
    *pidfd = -1;
    /* The server replies right after its fork: a server that does not
     * within this time is stuck (stopped, say) and is replaced. */
    struct pollfd pf = {.fd = fs.conn, .events = POLLIN};
    int rc = lmp_poll(&pf, 1, LMP_FS_REPLY_TIMEOUT);
    if (rc < 0) return rc;
    if (rc == 0) return -ETIMEDOUT;
    int fds[4], nfds, mflags;
    ssize_t n = lmp_recvfds(fs.conn, &iov, 1, fds, 4, &nfds, 0, &mflags);
    if (nfds > 0) *pidfd = lmp_fd_hi(fds[0]);
    for (int i = 1; i < nfds; i++) close(fds[i]); /* one at most: nothing a peer sends is trusted */
    if (n < 0) return (int)n;
    if (n == 0) { /* the server died meanwhile */
        if (*pidfd >= 0) close(*pidfd);
        *pidfd = -1;
        return -ECONNRESET;
    }
    if (n != (ssize_t)sizeof r || nfds > 1 || (mflags & MSG_TRUNC)) {
        if (*pidfd >= 0) close(*pidfd);
        *pidfd = -1;
        return -EPROTO;
    }
    if (r.err) {
        if (*pidfd >= 0) close(*pidfd);
        *pidfd = -1;
        return r.err > 0 && r.err < LMP_ERRMAX ? -r.err : -EPROTO;
    }
    *pid = r.pid;
    return 0;
}

/* The parent pid of pid from /proc/PID/stat, the cheapest file that has
 * it: "pid (comm) state ppid ..." (0 if it cannot be read: gone). */
static pid_t ppid_of(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* comm may hold anything but ends there */
    return p && p[1] == ' ' && p[2] && p[3] == ' ' ? (pid_t)strtol(p + 4, NULL, 10) : 0;
}

/* The pid a pidfd refers to (fdinfo "Pid:"): -1 once it has ended, 0 if
 * unknown (an older kernel, or not a pidfd). */
static pid_t pid_of_pidfd(int pidfd) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", pidfd);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    const char *p = strstr(buf, "\nPid:");
    return p ? (pid_t)strtol(p + 5, NULL, 10) : 0;
}

/* Nothing a peer sends is trusted, the server's reply included: the pid
 * must be a child of the server (so kill() of it can only reach the
 * child), and the pidfd must refer to that pid.  A child that has ended
 * and been reaped already cannot be checked, nor signalled: accepted.
 * 0 or -EPROTO. */
static int check_reply(pid_t pid, int pidfd) {
    if (pid <= 1 || pid == getpid() || pid == fs.pid) return -EPROTO;
    if (pidfd >= 0) {
        pid_t of = pid_of_pidfd(pidfd);
        if (of > 0 && of != pid) return -EPROTO;
        int rc = of == 0 ? lmp_pidfd_send_signal(pidfd, 0) : 0; /* a pidfd at all? */
        if (rc < 0 && rc != -ESRCH) return -EPROTO;
    }
    pid_t pp = ppid_of(pid);
    if (pp != 0 && pp != fs.pid) return -EPROTO;
    return 0;
}

static void close2(int p[2]) {
    if (p[0] >= 0) close(p[0]);
    if (p[1] >= 0) close(p[1]);
    p[0] = p[1] = -1;
}

/* The connection died (the server was killed, crashed, or closed it):
 * the start is tried again with a new server. */
static int dead_connection(int err) {
    return err == -EPIPE || err == -ECONNRESET || err == -ENOTCONN || err == -ECONNREFUSED ||
           err == -ECONNABORTED;
}

/* ---- the server's children, seen from the owner --------------------- */

/* The server writes the child's exit status, an int, to the sentinel (a
 * socket) once it has reaped it.  Peeked, never consumed: the status
 * stays and the sentinel stays readable, as a pidfd does.  EOF without a
 * status means the server died, and its children with it
 * (PR_SET_PDEATHSIG): the pidfd makes sure this one is gone before it is
 * reported ended, never running on unkillable. */
static int served_status(lmp_child *c) {
    int st = 0;
    ssize_t n;
    do n = recv(c->sentinel, &st, sizeof st, MSG_PEEK | MSG_WAITALL);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof st) return st;
    if (c->pidfd >= 0) {
        lmp_pidfd_send_signal(c->pidfd, SIGKILL);
        struct pollfd pf = {.fd = c->pidfd, .events = POLLIN};
        lmp_poll(&pf, 1, LMP_DAEMON_GRACE);
    }
    return LMP_STATUS_LOST;
}

/* Through the pidfd the server sent, which names this very process.
 * Without one, the pid is safe to use until the server reaps the child,
 * which it reports on the sentinel; there is a window of a few
 * microseconds between the two in which the pid could be reused (only
 * where the kernel lacks pidfds). */
static int served_signal(lmp_child *c, int sig) {
    if (c->pidfd >= 0) {
        int rc = lmp_pidfd_send_signal(c->pidfd, sig);
        return rc == -ESRCH ? 0 : rc;
    }
    if (lmp_child_poll(c) != 0) return 0;
    if (kill(c->pid, sig) < 0 && errno != ESRCH) return -errno;
    return 0;
}

static const lmp_child_ops served_ops = {served_status, served_signal};

/* ---- starting a child ------------------------------------------------ */

#define FS_ATTEMPTS 3

static int fs_start(lmp_reg *r, lmp_child *c, const lmp_start_opts *o, lmp_child_info *info) {
    (void)info;
    const lmp_payload *pl = o->payload;
    if (!pl || pl->nfds < 0 || pl->nfds > LMP_PAYLOAD_MAXFDS) return -EINVAL;
    int err = lmp_fault_hit("pipe");
    if (err) return err;
    /* the slot collecting a large result needs (sys.h), before any child */
    if ((err = lmp_fd_reserve()) < 0) return err;
    int res[2] = {-1, -1}, status[2] = {-1, -1}, par[2] = {-1, -1};
    pthread_mutex_lock(&fs_lock);
    check_alive_locked();
    /* The parent sentinel: our pidfd, opened once; or a pipe whose write
     * end this process holds until the child ends. */
    int parent_fd = -1;
    if (lmp_have_pidfd()) {
        if (fs.self_fd < 0 && (fs.self_fd = lmp_pidfd_open(getpid())) >= 0) lmp_fd_track(fs.self_fd);
        parent_fd = fs.self_fd;
        if (parent_fd < 0) err = parent_fd;
    } else if ((err = lmp_channels_pipe(par)) == 0) {
        parent_fd = par[0];
    }
    pid_t pid = 0;
    int pidfd = -1;
    /* A server that dies before, while or after it reads the request is
     * replaced and the request sent again (its children die with it, see
     * fs_server.c): each attempt with channels of its own, so nothing a
     * child of the dead server did can reach the next one. */
    for (int attempt = 0, setup_err = err; !setup_err && attempt < FS_ATTEMPTS; attempt++) {
        err = 0;
        close2(res), close2(status);
        /* status: a socket, so that the exit code can be peeked at and
         * stays there: the sentinel remains readable after the reap, as a
         * pidfd does */
        if ((err = lmp_channels_socket(res)) < 0 || (err = lmp_channels_socket(status)) < 0) break;
        if (!mine() && (err = start_server_locked()) < 0) break;
        int fds[LMP_FS_FIXED + LMP_PAYLOAD_MAXFDS];
        fds[0] = pl->fd, fds[1] = res[1], fds[2] = status[1], fds[3] = parent_fd;
        if (pl->nfds > 0) memcpy(fds + LMP_FS_FIXED, pl->fds, sizeof(int) * (size_t)pl->nfds);
        err = lmp_fault_hit("fork");
        if (!err) err = send_request(fds, LMP_FS_FIXED + pl->nfds, o->daemon);
        if (!err) err = read_reply(&pid, &pidfd);
        if (!err && (err = check_reply(pid, pidfd)) < 0) {
            /* a server that lies is not used again: replaced next time */
            if (pidfd >= 0) close(pidfd);
            pidfd = -1;
            drop_server_locked();
            break;
        }
        if (dead_connection(err)) {
            drop_server_locked();
            continue; /* err stays set if this was the last attempt */
        }
        /* stuck mid-request: replaced at the next start */
        if (err == -ETIMEDOUT || err == -EPROTO) drop_server_locked();
        break;
    }
    pthread_mutex_unlock(&fs_lock);
    if (res[1] >= 0) close(res[1]);
    if (status[1] >= 0) close(status[1]);
    if (par[0] >= 0) close(par[0]);
    if (err) {
        if (res[0] >= 0) close(res[0]);
        if (status[0] >= 0) close(status[0]);
        if (par[1] >= 0) close(par[1]);
        return err;
    }
    fcntl(res[0], F_SETFL, O_NONBLOCK);
    lmp_attach a = {pid, &served_ops, status[0], 0, pidfd, res[0], par[1], o->daemon};
    lmp_channels_attach(r, c, &a);
    return 0;
}

/* ---- the server, and each child it forks ----------------------------- */

/* In the runner the owner executed (`luamp --luamp-child forkserver`):
 * serve until the owner ends (0), and in each child forked, become it
 * (1).  Descriptors past what a payload may refer to are closed. */
static int fs_become(int argc, char *const argv[], lmp_child_start *out) {
    (void)argv;
    if (argc != 0) return -EINVAL;
    static lmp_served s; /* large: not on the stack */
    int rc = lmp_forkserver_serve(LMP_FS_LISTEN_FD, LMP_FS_ALIVE_FD, &s);
    if (rc <= 0) return rc;
    out->payload_fd = s.payload_fd;
    out->result_w = s.result_w;
    out->parent_r = s.parent_fd;
    lmp_channels_keep(s.result_w);
    lmp_channels_keep(s.parent_fd);
    out->nfds = s.nfds < LMP_PAYLOAD_MAXFDS ? s.nfds : LMP_PAYLOAD_MAXFDS;
    memcpy(out->fds, s.fds, sizeof(int) * (size_t)out->nfds);
    for (int i = out->nfds; i < s.nfds; i++) close(s.fds[i]);
    return 1;
}

const lmp_method lmp_method_forkserver = {"forkserver", 0, fs_start, fs_become};
