/*
 * test_fsreply.c - the forkserver's owner side trusts no reply (issue 10
 * #6): a fake server (this very program, run as the runner through
 * lmp_set_runner_path) answers every request with a pid it chooses; a
 * pid that is not a child of the server (an unrelated process, -1, 0, 1,
 * the owner itself) or a pidfd of another process makes start fail with
 * EPROTO, and nothing is ever signalled.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/child.h"
#include "core/sys.h"
#include "start/exec.h"
#include "start/forkserver.h"
#include "start/method.h"
#include "tap.h"

/* The fake server: listening socket at 3, alive pipe at 4. */
static int fake_server(void) {
    int conn = accept(3, NULL, NULL);
    if (conn < 0) return 1;
    for (;;) {
        char buf[64];
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(int) * 253)];
        } u;
        struct iovec iov = {buf, sizeof buf};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b};
        ssize_t n = recvmsg(conn, &m, MSG_CMSG_CLOEXEC);
        if (n <= 0) return 0;
        /* keep nothing we were sent */
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
            for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof fd);
                close(fd);
            }
        struct lmp_fs_reply r = {0, (int32_t)atol(getenv("FAKE_PID"))};
        struct msghdr out = {.msg_iov = &(struct iovec){&r, sizeof r}, .msg_iovlen = 1};
        int pidfd = getenv("FAKE_PIDFD") ? (int)syscall(SYS_pidfd_open, getpid(), 0) : -1;
        if (pidfd >= 0) {
            out.msg_control = u.b;
            out.msg_controllen = CMSG_SPACE(sizeof(int));
            struct cmsghdr *c = CMSG_FIRSTHDR(&out);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &pidfd, sizeof(int));
        }
        sendmsg(conn, &out, MSG_NOSIGNAL);
        if (pidfd >= 0) close(pidfd);
    }
}

static volatile sig_atomic_t got_term;
static void on_term(int s) { (void)s; got_term = 1; }

/* Start one child through the fake answering pid; returns start's code. */
static int start_with(pid_t pid, int with_pidfd) {
    char v[32];
    snprintf(v, sizeof v, "%ld", (long)pid);
    setenv("FAKE_PID", v, 1);
    if (with_pidfd) setenv("FAKE_PIDFD", "1", 1);
    else unsetenv("FAKE_PIDFD");
    lmp_forkserver_stop(); /* a new fake for each case, with this env */
    lmp_reg *r = lmp_reg_new();
    lmp_child *c = lmp_child_new();
    int mfd = memfd_create("payload", MFD_CLOEXEC);
    lmp_payload pl = {mfd, NULL, 0};
    lmp_start_opts o = {0, &pl};
    lmp_child_info info;
    int rc = lmp_method_forkserver.start(r, c, &o, &info);
    close(mfd);
    if (rc == 0) { /* accepted: must not happen; never signal it */
        c->ended = 1;
        lmp_child_close(c);
    }
    lmp_child_drop(c);
    lmp_reg_free(r);
    return rc;
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], LMP_CHILD_MODE) == 0 && strcmp(argv[2], "forkserver") == 0) return fake_server();
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = '\0';
    lmp_set_runner_path(self);
    signal(SIGTERM, on_term); /* the owner itself must never be signalled */

    /* an unrelated process: a child of ours, not of the server */
    int hold[2];
    if (pipe(hold) < 0) return 1;
    pid_t other = fork();
    if (other == 0) {
        char ch;
        close(hold[1]);
        while (read(hold[0], &ch, 1) < 0 && errno == EINTR) {}
        _exit(0);
    }
    close(hold[0]);

    int rc = start_with(other, 0);
    ok(rc == -EPROTO, "a reply naming an unrelated process is refused: %s", strerror(-rc));
    rc = start_with(other, 1);
    ok(rc == -EPROTO, "an unrelated pid with the server's own pidfd is refused: %s", strerror(-rc));
    rc = start_with(-1, 0);
    ok(rc == -EPROTO, "a reply pid of -1 is refused (never kill(-1)): %s", strerror(-rc));
    rc = start_with(0, 0);
    ok(rc == -EPROTO, "a reply pid of 0 is refused: %s", strerror(-rc));
    rc = start_with(1, 0);
    ok(rc == -EPROTO, "a reply pid of 1 is refused: %s", strerror(-rc));
    rc = start_with(getpid(), 0);
    ok(rc == -EPROTO, "a reply naming the owner is refused: %s", strerror(-rc));
    lmp_forkserver_stop();

    int st = 0;
    ok(waitpid(other, &st, WNOHANG) == 0, "the unrelated process was never signalled");
    ok(!got_term, "the owner was never signalled");
    close(hold[1]);
    while (waitpid(other, &st, 0) < 0 && errno == EINTR) {}
    ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "it ends on its own");
    return tap_done();
}
