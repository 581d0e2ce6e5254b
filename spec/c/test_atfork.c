/*
 * test_atfork.c - a host that forks by itself while another of its
 * threads is inside luamp's process-wide state: the child must find every
 * lock usable (issue 14: fd_lock had no reset for a host's own fork,
 * path_lock none at all; regs_lock and fs_lock only a child-side reset:
 * now every lock goes through the one handler of core/state.h).  A thread takes the locks in a tight loop, so
 * most forks catch one held; each child uses them under an alarm, and a
 * child ended by SIGALRM deadlocked.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/child.h"
#include "core/sys.h"
#include "start/exec.h"
#include "start/forkserver.h"
#include "tap.h"

static atomic_int stop;

static void *hammer_fds(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        lmp_fd_track(1000);
        lmp_fd_untrack(1000);
    }
    return NULL;
}

static void *hammer_path(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) lmp_set_runner_path("/nonexistent/luamp");
    return NULL;
}

static void *hammer_reserve(void *arg) {
    (void)arg;
    while (!atomic_load(&stop))
        if (lmp_fd_reserve_release()) lmp_fd_reserve_retake();
    return NULL;
}

static void *hammer_regs(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) lmp_reg_free(lmp_reg_new());
    return NULL;
}

static void *hammer_fs(void *arg) {
    (void)arg;
    int fds[3];
    while (!atomic_load(&stop)) lmp_forkserver_pid(fds);
    return NULL;
}

/* Fork n times while fn runs in a thread; each child uses the state.
 * Returns how many children deadlocked. */
static int rounds(void *(*fn)(void *), int what, int n) {
    pthread_t th;
    atomic_store(&stop, 0);
    if (pthread_create(&th, NULL, fn, NULL) != 0) return -1;
    int stuck = 0;
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(2);
            char buf[4096];
            if (what == 0) lmp_fd_track(1001), lmp_fd_untrack(1001);
            else if (what == 1) lmp_runner_path(buf, sizeof buf);
            else if (what == 3) lmp_reg_free(lmp_reg_new());
            else if (what == 4) {
                int fds[3];
                if (lmp_forkserver_pid(fds) != 0) _exit(3); /* the parent's: never the child's */
            } else if (lmp_fd_reserve_release()) lmp_fd_reserve_retake();
            _exit(0);
        }
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
        if ((!WIFEXITED(st) || WEXITSTATUS(st) != 0) && ++stuck) break; /* one is enough: fail fast */
    }
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    return stuck;
}

int main(void) {
    lmp_fd_reserve();
    int s = rounds(hammer_fds, 0, 40);
    ok(s == 0, "host fork while a thread tracks descriptors: %d children deadlocked", s);
    s = rounds(hammer_path, 1, 40);
    ok(s == 0, "host fork while a thread sets the runner path: %d children deadlocked", s);
    s = rounds(hammer_reserve, 2, 40);
    ok(s == 0, "host fork while a thread uses the descriptor reserve: %d children deadlocked", s);
    s = rounds(hammer_regs, 3, 40);
    ok(s == 0, "host fork while a thread creates and frees registries: %d children deadlocked", s);
    s = rounds(hammer_fs, 4, 40);
    ok(s == 0, "host fork while a thread asks for the forkserver: %d children deadlocked", s);
    return tap_done();
}
