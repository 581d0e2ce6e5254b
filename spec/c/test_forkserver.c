/*
 * test_forkserver.c - the forkserver's loop (src/start/fs_server.c) driven
 * by hand over its protocol (forkserver.h): a request forks a child whose
 * exit status arrives on the status socket, garbage closes the connection,
 * a peer of another uid is refused (SO_PEERCRED; root only, it needs
 * setuid), and the server ends when the alive pipe reads EOF.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "start/forkserver.h"
#include "tap.h"

static struct sockaddr_un addr = {.sun_family = AF_UNIX};
static char dir[64];

/* The server in a child of ours; returns its pid and our alive end. */
static pid_t start_server(int *alive_w) {
    int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 8) < 0) return -1;
    int alive[2];
    if (pipe2(alive, O_CLOEXEC) < 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(alive[1]);
        lmp_served out;
        int rc = lmp_forkserver_serve(lfd, alive[0], &out);
        if (rc == 1) { /* a child the server forked: exit with what the
                        * payload memfd says (its first byte) */
            unsigned char code = 0;
            ssize_t n = pread(out.payload_fd, &code, 1, 0);
            (void)n;
            if (code == 200) raise(SIGTERM); /* handlers are the defaults */
            _exit(code);
        }
        _exit(rc == 0 ? 0 : 100);
    }
    close(lfd);
    close(alive[0]);
    *alive_w = alive[1];
    return pid;
}

static int connect_server(void) {
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* One request; returns the child's pid (> 0) and *status_r, or -errno
 * from the reply, or 0 when the connection was closed instead. */
static int request(int conn, unsigned char code, int *status_r, int *pidfd) {
    int mem = memfd_create("t", MFD_CLOEXEC);
    if (write(mem, &code, 1) != 1) return -EIO;
    int res[2], st[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, res) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, st) < 0)
        return -EIO;
    int fds[4] = {mem, res[1], st[1], res[1]};
    struct lmp_fs_request rq = {LMP_FS_MAGIC, 0};
    struct iovec iov = {&rq, sizeof rq};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof fds)];
    } ctl;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                       .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    ssize_t n = sendmsg(conn, &m, MSG_NOSIGNAL);
    close(mem), close(res[1]), close(st[1]), close(res[0]);
    if (n < 0) return -errno;
    struct lmp_fs_reply r;
    struct iovec riov = {&r, sizeof r};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } rctl;
    struct msghdr rm = {.msg_iov = &riov, .msg_iovlen = 1, .msg_control = rctl.buf,
                        .msg_controllen = sizeof rctl.buf};
    n = recvmsg(conn, &rm, MSG_CMSG_CLOEXEC);
    *pidfd = -1;
    struct cmsghdr *rc = CMSG_FIRSTHDR(&rm);
    if (n > 0 && rc && rc->cmsg_type == SCM_RIGHTS) memcpy(pidfd, CMSG_DATA(rc), sizeof(int));
    if (n != (ssize_t)sizeof r) {
        close(st[0]);
        return 0;
    }
    if (r.err) {
        close(st[0]);
        return -r.err;
    }
    *status_r = st[0];
    return r.pid;
}

static int read_status(int fd) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 10000) != 1) return -1000;
    int st = -1000;
    ssize_t n = read(fd, &st, sizeof st);
    close(fd);
    return n == (ssize_t)sizeof st ? st : -1001;
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/luamp-test-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s/s", dir);
    int alive_w;
    pid_t server = start_server(&alive_w);
    ok(server > 0, "the server runs");

    int conn = connect_server();
    ok(conn >= 0, "the owner connects");
    int st, pidfd;
    int pid = request(conn, 7, &st, &pidfd);
    ok(pid > 0, "a request forks a child (pid %d)", pid);
    if (pid > 0) {
        ok(read_status(st) == 7, "its exit status arrives on the status socket");
        ok(pidfd >= 0, "with a pidfd of the child for signals");
        if (pidfd >= 0) close(pidfd);
    }

    /* a child killed by a signal reports -signum */
    int conn2 = connect_server();
    pid = request(conn2, 200, &st, &pidfd);
    ok(pid > 0, "a second connection is served too");
    if (pid > 0) {
        int s = read_status(st);
        ok(s == -SIGTERM, "a child ended by SIGTERM reports -15 (got %d)", s);
        if (pidfd >= 0) close(pidfd);
    }
    close(conn2);

    /* garbage: the server drops the connection, nothing else */
    int bad = connect_server();
    ok(bad >= 0 && send(bad, "xyz", 3, MSG_NOSIGNAL) == 3, "garbage sent");
    char b;
    struct pollfd pf = {.fd = bad, .events = POLLIN};
    ok(poll(&pf, 1, 10000) == 1 && recv(bad, &b, 1, 0) == 0, "garbage closes the connection");
    close(bad);

    if (geteuid() == 0) {
        /* 0600: another uid cannot even connect */
        chmod(addr.sun_path, 0600);
        chmod(dir, 0755);
        pid_t k = fork();
        if (k == 0) {
            if (setgid(65534) < 0 || setuid(65534) < 0) _exit(2);
            int fd = connect_server();
            _exit(fd < 0 && errno == EACCES ? 0 : 1);
        }
        int ws;
        waitpid(k, &ws, 0);
        ok(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "a 0600 socket refuses another uid's connect");
        /* past the file mode, SO_PEERCRED: the server closes on it */
        chmod(addr.sun_path, 0666);
        k = fork();
        if (k == 0) {
            if (setgid(65534) < 0 || setuid(65534) < 0) _exit(2);
            int fd = connect_server();
            if (fd < 0) _exit(3);
            int s2, p2;
            int r = request(fd, 5, &s2, &p2);
            _exit(r == 0 || r == -EPIPE || r == -ECONNRESET ? 0 : 1);
        }
        waitpid(k, &ws, 0);
        ok(WIFEXITED(ws) && WEXITSTATUS(ws) == 0,
           "a peer of another uid is refused without a child (exit %d)", WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
    } else {
        printf("ok %d - # SKIP uid checks need root (setuid)\n", ++tap_n);
    }

    /* the owner ends: the server returns from its loop and exits 0 */
    close(alive_w);
    int ws;
    pid_t w = waitpid(server, &ws, 0);
    ok(w == server && WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "the server ends when the alive pipe closes");
    close(conn);
    unlink(addr.sun_path);
    rmdir(dir);
    return tap_done();
}
