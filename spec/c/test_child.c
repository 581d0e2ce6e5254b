/*
 * test_child.c - the pure-C core: starting children with the fork method,
 * reaping exactly once, waiting with deadlines through EINTR, draining a
 * large result, signals, the exit clean-up, and leaving a host's own
 * children alone.  meson runs it twice: with pidfds and with the pipe
 * fallback (LUAMP_NO_PIDFD=1).
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <dirent.h>

#include "core/child.h"
#include "core/result.h"
#include "core/sys.h"
#include "start/method.h"
#include "tap.h"

static lmp_reg *reg;

/* Start a child; in the child run fn(arg) and _exit with its value. */
static lmp_child *start(int daemon, int (*fn)(lmp_child_info *, long), long arg) {
    lmp_child *c = lmp_child_new();
    lmp_start_opts o = {.daemon = daemon};
    lmp_child_info info;
    int rc = lmp_method_fork.start(reg, c, &o, &info);
    if (rc == 1) _exit(fn(&info, arg));
    if (rc < 0) {
        free(c);
        return NULL;
    }
    c->has_ud = 1;
    return c;
}

static int exit_with(lmp_child_info *i, long code) { (void)i; return (int)code; }
static int pause_forever(lmp_child_info *i, long a) {
    (void)i, (void)a;
    for (;;) pause();
    return 0;
}
static int ignore_term(lmp_child_info *i, long a) {
    (void)i, (void)a;
    signal(SIGTERM, SIG_IGN);
    for (;;) pause();
    return 0;
}
static int write_result(lmp_child_info *i, long n) {
    char *buf = malloc((size_t)n);
    memset(buf, 'x', (size_t)n);
    return lmp_result_send(i->result_w, buf, (size_t)n) == 0 ? 0 : 2;
}
static int segv(lmp_child_info *i, long a) {
    (void)i, (void)a;
    raise(SIGSEGV);
    return 0;
}

static int count_fds(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

static void on_alarm(int s) { (void)s; }

static void release(lmp_child *c) {
    lmp_child_close(c);
    lmp_child_drop(c);
}

int main(void) {
    lmp_fd_reserve(); /* held for the process's life, as the module does at its first use */
    int fds0 = count_fds();
    reg = lmp_reg_new();
    printf("# pidfd: %s\n", lmp_have_pidfd() ? "yes" : "no (pipe fallback)");

    lmp_child *c = start(0, exit_with, 7);
    ok(c != NULL, "fork start");
    ok(lmp_child_wait(c, -1) == 1 && c->exitcode == 7, "exit code 7 (got %d)", c->exitcode);
    ok(waitpid(c->pid, NULL, WNOHANG) < 0 && errno == ECHILD, "reaped exactly once");
    ok(lmp_child_wait(c, -1) == 1 && lmp_child_poll(c) == 1, "wait/poll after the end return at once");
    ok(lmp_child_signal(c, SIGKILL) == 0, "signal after the end is a no-op");
    release(c);

    c = start(0, segv, 0);
    ok(lmp_child_wait(c, 10) == 1 && c->exitcode == -SIGSEGV, "segfault gives -11 (got %d)", c->exitcode);
    release(c);

    /* join(timeout) is not cut short by signals, and not early */
    c = start(0, pause_forever, 0);
    struct sigaction sa = {.sa_handler = on_alarm}; /* no SA_RESTART */
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {.it_interval = {0, 10000}, .it_value = {0, 10000}};
    setitimer(ITIMER_REAL, &it, NULL);
    double t0 = lmp_now();
    int rc = lmp_child_wait(c, 0.25);
    double waited = lmp_now() - t0;
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    ok(rc == 0 && waited >= 0.25, "timeout through EINTR after %.3f s", waited);
    ok(lmp_child_poll(c) == 0, "still running");
    ok(lmp_child_signal(c, SIGTERM) == 0 && lmp_child_wait(c, 10) == 1 && c->exitcode == -SIGTERM,
       "terminate gives -15");
    release(c);

    /* a result larger than any socket buffer never blocks the child (it
     * goes in a memfd), and a small one goes inline */
    long sizes[] = {16L << 20, LMP_RESULT_INLINE, 5};
    for (int k = 0; k < 3; k++) {
        c = start(0, write_result, sizes[k]);
        ok(lmp_child_wait(c, 30) == 1 && c->exitcode == 0, "child sent %ld bytes and ended", sizes[k]);
        ok(c->result.len == (size_t)sizes[k] && c->result.data[sizes[k] - 1] == 'x',
           "parent collected all of it (%zu)", c->result.len);
        release(c);
    }
    c = start(0, exit_with, 0);
    ok(lmp_child_wait(c, 30) == 1 && c->result.len == 0, "a child that sends nothing: empty result");
    release(c);

    /* fork refused: nothing left behind, the record is reusable */
    lmp_fault_set("fork", EAGAIN, 1);
    c = lmp_child_new();
    lmp_start_opts o = {0};
    lmp_child_info info;
    ok(lmp_method_fork.start(reg, c, &o, &info) == -EAGAIN, "refused fork returns -EAGAIN");
    lmp_child_drop(c);

    /* the exit clean-up: a daemon that ignores SIGTERM is killed after
     * the grace period, a plain daemon terminated, a non-daemon joined */
    lmp_child *stubborn = start(1, ignore_term, 0);
    lmp_child *daemon = start(1, pause_forever, 0);
    lmp_child *plain = start(0, exit_with, 3);
    /* a host's own child, created without luamp, must be left alone */
    pid_t host_child = fork();
    if (host_child == 0) _exit(42);
    /* let the stubborn child install its handler before the clean-up */
    double give_up = lmp_now() + 10;
    while (lmp_now() < give_up) {
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/status", stubborn->pid);
        FILE *f = fopen(path, "r");
        int ignored = 0;
        while (f && fgets(buf, sizeof buf, f))
            if (strncmp(buf, "SigIgn:", 7) == 0) ignored = strtoull(buf + 7, NULL, 16) & (1ULL << (SIGTERM - 1));
        if (f) fclose(f);
        if (ignored) break;
        lmp_poll(NULL, 0, 0.005);
    }
    t0 = lmp_now();
    lmp_reg_shutdown(reg);
    waited = lmp_now() - t0;
    ok(stubborn->ended && stubborn->exitcode == -SIGKILL, "SIGTERM-ignoring daemon killed (%d)", stubborn->exitcode);
    ok(waited >= LMP_DAEMON_GRACE, "after the grace period (%.2f s)", waited);
    ok(daemon->ended && daemon->exitcode == -SIGTERM, "daemon terminated (%d)", daemon->exitcode);
    ok(plain->ended && plain->exitcode == 3, "non-daemon joined (%d)", plain->exitcode);
    int st = 0;
    ok(waitpid(host_child, &st, 0) == host_child && WEXITSTATUS(st) == 42, "host's own child untouched");
    release(stubborn);
    release(daemon);
    release(plain);

    lmp_reg_free(reg);
    ok(count_fds() == fds0, "no descriptor leaked (%d -> %d)", fds0, count_fds());
    return tap_done();
}
