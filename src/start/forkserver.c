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
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/child.h"
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

/* In any forked child: the lock may have been held by another thread,
 * and the server is the parent's (its descriptors are closed there as
 * tracked ones). */
static void atfork_child(void) {
    pthread_mutex_init(&fs_lock, NULL);
    fs.owner = 0;
    fs.pid = 0;
    fs.conn = fs.alive_w = fs.self_fd = -1;
}
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void install_atfork(void) { pthread_atfork(NULL, NULL, atfork_child); }

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

static int start_server_locked(void) {
    char dir[80]; /* TMPDIR (<= 64) + "/luamp-XXXXXX"; + "/forkserver" fits sun_path */
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp || strlen(tmp) > 64) tmp = "/tmp";
    snprintf(dir, sizeof dir, "%s/luamp-XXXXXX", tmp);
    if (!mkdtemp(dir)) return -errno; /* mode 0700 */
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/forkserver", dir);
    int err = 0, lfd = -1, conn = -1, alive[2] = {-1, -1};
    pid_t pid = -1;
    lfd = lmp_fd_hi(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        chmod(sa.sun_path, 0600) < 0 || listen(lfd, 16) < 0 ||
        pipe2(alive, O_CLOEXEC) < 0 || lmp_fd_hi2(alive) < 0) {
        err = -errno;
        goto out;
    }
    int fds[2] = {lfd, alive[0]};
    char *argv[] = {"luamp", "--luamp-forkserver", NULL};
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
    if (conn < 0 || connect(conn, (struct sockaddr *)&sa, sizeof sa) < 0) {
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
    unlink(sa.sun_path);
    rmdir(dir);
    return err;
}

/* Send the request; -EPIPE when the server is gone (nothing was sent). */
static int send_request(const int *fds, int nfds, int daemon) {
    struct lmp_fs_request rq = {LMP_FS_MAGIC, (uint32_t)daemon};
    struct iovec iov = {&rq, sizeof rq};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * 253)];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                       .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    ssize_t n;
    do n = sendmsg(fs.conn, &m, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0) return errno == ECONNRESET || errno == ENOTCONN ? -EPIPE : -errno;
    return 0;
}

/* The reply: 0 and *pid (and *pidfd, or -1), or -errno. */
static int read_reply(pid_t *pid, int *pidfd) {
    struct lmp_fs_reply r;
    struct iovec iov = {&r, sizeof r};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                       .msg_controllen = sizeof ctl.buf};
    /* The server replies right after its fork: a server that does not
     * within this time is stuck (stopped, say) and is replaced. */
    struct pollfd pf = {.fd = fs.conn, .events = POLLIN};
    int rc = lmp_poll(&pf, 1, LMP_FS_REPLY_TIMEOUT);
    if (rc < 0) return rc;
    if (rc == 0) return -ETIMEDOUT;
    ssize_t n;
    do n = recvmsg(fs.conn, &m, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    *pidfd = -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (n > 0 && c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
        memcpy(pidfd, CMSG_DATA(c), sizeof(int)), *pidfd = lmp_fd_hi(*pidfd);
    if (n != (ssize_t)sizeof r) {
        if (*pidfd >= 0) close(*pidfd);
        return n < 0 ? -errno : -ECONNRESET; /* the server died meanwhile */
    }
    if (r.err) {
        if (*pidfd >= 0) close(*pidfd);
        return -r.err;
    }
    *pid = r.pid;
    return 0;
}

static void close2(int p[2]) {
    if (p[0] >= 0) close(p[0]);
    if (p[1] >= 0) close(p[1]);
}

static int fs_start(lmp_reg *r, lmp_child *c, const lmp_start_opts *o, lmp_child_info *info) {
    (void)info;
    const lmp_payload *pl = o->payload;
    if (!pl || pl->nfds > 253 - LMP_FS_FIXED) return -EINVAL;
    int err = lmp_fault_hit("pipe");
    if (err) return err;
    /* the slot collecting a large result needs (sys.h), before any child */
    if ((err = lmp_fd_reserve()) < 0) return err;
    int res[2] = {-1, -1}, status[2] = {-1, -1}, par[2] = {-1, -1};
    /* status: a socket, so that the exit code can be peeked at and stays
     * there: the sentinel remains readable after the reap, as a pidfd does */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, res) < 0 || lmp_fd_hi2(res) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, status) < 0 || lmp_fd_hi2(status) < 0) {
        err = -errno;
        close2(res), close2(status);
        return err;
    }
    pthread_once(&atfork_once, install_atfork);
    pthread_mutex_lock(&fs_lock);
    check_alive_locked();
    /* The parent sentinel: our pidfd, opened once; or a pipe whose write
     * end this process holds until the child ends. */
    int parent_fd = -1;
    if (lmp_have_pidfd()) {
        if (fs.self_fd < 0 && (fs.self_fd = lmp_pidfd_open(getpid())) >= 0) lmp_fd_track(fs.self_fd);
        parent_fd = fs.self_fd;
        if (parent_fd < 0) err = parent_fd;
    } else if (pipe2(par, O_CLOEXEC) < 0 || lmp_fd_hi2(par) < 0) {
        err = -errno;
    } else {
        parent_fd = par[0];
    }
    for (int attempt = 0; !err && attempt < 2; attempt++) {
        if (!mine() && (err = start_server_locked()) < 0) break;
        int fds[253];
        fds[0] = pl->fd, fds[1] = res[1], fds[2] = status[1], fds[3] = parent_fd;
        memcpy(fds + LMP_FS_FIXED, pl->fds, sizeof(int) * (size_t)pl->nfds);
        err = lmp_fault_hit("fork");
        if (!err) err = send_request(fds, LMP_FS_FIXED + pl->nfds, o->daemon);
        if (err == -EPIPE) { /* it died before reading: restart, once */
            drop_server_locked();
            err = -ECONNRESET; /* if the second attempt fails the same way */
            continue;
        }
        break;
    }
    pid_t pid = 0;
    int pidfd = -1;
    if (!err) {
        err = read_reply(&pid, &pidfd);
        /* gone or stuck mid-request: replaced at the next start (a child
         * it may have forked reports 255, like the others in flight) */
        if (err == -ECONNRESET || err == -ETIMEDOUT) drop_server_locked();
    }
    pthread_mutex_unlock(&fs_lock);
    close(res[1]);
    close(status[1]);
    if (par[0] >= 0) close(par[0]);
    if (err) {
        close(res[0]), close(status[0]);
        if (par[1] >= 0) close(par[1]);
        return err;
    }
    fcntl(res[0], F_SETFL, O_NONBLOCK);
    c->pid = pid;
    c->sentinel = status[0];
    c->remote = 1;
    c->pidfd = pidfd;
    c->is_pidfd = 0;
    c->result_fd = res[0];
    c->parent_w = par[1];
    c->daemon = o->daemon ? 1 : 0;
    c->ended = 0;
    lmp_fd_track(status[0]);
    lmp_fd_track(res[0]);
    lmp_fd_track(par[1]);
    lmp_fd_track(pidfd);
    lmp_child_link(r, c);
    return 0;
}

const lmp_method lmp_method_forkserver = {"forkserver", fs_start};
