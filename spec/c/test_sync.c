/*
 * test_sync.c - the cross-process synchronisation engine (src/core/sync.c).
 *
 * Covers locks (recursion, ownership, timeouts), robustness to a SIGKILLed
 * holder (EOWNERDEAD once, then usable; a sleeper in acquire woken),
 * semaphore units given back by a dead holder, a dead Condition waiter
 * skipped by notify, a Barrier broken by a dead party, Event across fork,
 * atomic adds on shared memory from several processes, attach checks, and
 * at the end that no descriptor or mapping leaked.  Children are killed
 * once observed (pipes, /proc/<pid>/syscall), never after a guessed delay.
 * Uses: sync.h, tap.h.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/sync.h"
#include "tap.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d) return -1;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

static int count_maps(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int n = 0;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "luamp-sync")) n++;
    fclose(f);
    return n;
}

/* Wait until pid sleeps in futex(2) (up to 10 s). */
static int sleeping_in_futex(pid_t pid) {
    char path[64], buf[128], want[16];
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    snprintf(want, sizeof want, "%d ", (int)SYS_futex);
    double end = now() + 10;
    while (now() < end) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return 0;
        ssize_t r = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (r > 0) {
            buf[r] = 0;
            if (strncmp(buf, want, strlen(want)) == 0) return 1;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Fork a child running f(s); it writes one byte on the pipe when ready
 * (f does that) and exits with f's result. */
static int ready_pipe[2];

static void signal_ready(void) {
    char c = 1;
    if (write(ready_pipe[1], &c, 1) != 1) _exit(99);
}

static pid_t child(int (*f)(lmp_sync *), lmp_sync *s) {
    pid_t pid = fork();
    if (pid == 0) _exit(f(s));
    return pid;
}

static int wait_ready(void) {
    char c;
    return read(ready_pipe[0], &c, 1) == 1;
}

static int status_of(pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) != pid) return -1000;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

static int hold_lock(lmp_sync *s) {
    if (lmp_lock_acquire(s, -1) != 0) return 1;
    signal_ready();
    pause();
    return 0;
}

static int acquire_lock(lmp_sync *s) {
    int rc = lmp_lock_acquire(s, 10);
    if (rc != -EOWNERDEAD) return 2;
    return lmp_lock_acquire(s, 10) == 0 && lmp_lock_release(s) == 0 ? 0 : 3;
}

static int hold_units(lmp_sync *s) {
    if (lmp_sem_acquire(s, 0) || lmp_sem_acquire(s, 0)) return 1;
    signal_ready();
    pause();
    return 0;
}

static int hold_one(lmp_sync *s) {
    if (lmp_sem_acquire(s, 0)) return 1;
    signal_ready();
    pause();
    return 0;
}

static int take_unit(lmp_sync *s) { return lmp_sem_acquire(s, 10) == 0 ? 0 : 1; }

static int barrier_party(lmp_sync *s) {
    uint32_t idx;
    int rc = lmp_barrier_wait(s, 60, 0, &idx);
    return rc == -EPIPE ? 7 : rc == 0 ? 0 : 8;
}

static int set_event(lmp_sync *s) {
    lmp_event_set(s);
    return 0;
}

static int add_many(lmp_sync *s) {
    int64_t *p = lmp_shared_data(s, NULL, NULL);
    for (int i = 0; i < 100000; i++) __atomic_add_fetch(p, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static lmp_sync *cond_lock; /* for the waiter below */

static int cond_waiter(lmp_sync *c) {
    if (lmp_lock_acquire(cond_lock, -1)) return 1;
    signal_ready();
    int rc = lmp_cond_wait(c, cond_lock, 10);
    lmp_lock_release(cond_lock);
    return rc == 0 ? 0 : 2;
}

/* Threads count as waiters of their own (a token each). */
static lmp_sync *t_cond, *t_lock;
static atomic_int t_in;

static void *thread_waiter(void *arg) {
    (void)arg;
    lmp_lock_acquire(t_lock, -1);
    atomic_fetch_add(&t_in, 1);
    int rc = lmp_cond_wait(t_cond, t_lock, 10);
    lmp_lock_release(t_lock);
    return (void *)(intptr_t)rc;
}

static void test_cond_full(void) {
    pthread_t th[LMP_COND_WAITERS];
    ok(lmp_lock_new(0, &t_lock) == 0 && lmp_cond_new(&t_cond) == 0, "Condition over a Lock");
    for (int i = 0; i < LMP_COND_WAITERS; i++) pthread_create(&th[i], NULL, thread_waiter, NULL);
    double end = now() + 10;
    while (atomic_load(&t_in) < LMP_COND_WAITERS && now() < end) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    /* the last one to count itself may still be on its way into wait */
    ok(lmp_lock_acquire(t_lock, 10) == 0, "%d threads wait", LMP_COND_WAITERS);
    ok(lmp_cond_wait(t_cond, t_lock, 1) == -EAGAIN, "one more waiter: -EAGAIN, lock still held");
    ok(lmp_lock_owned(t_lock) == 1 && lmp_cond_notify(t_cond, t_lock, -1) == 0, "notify_all");
    lmp_lock_release(t_lock);
    int all = 1;
    for (int i = 0; i < LMP_COND_WAITERS; i++) {
        void *r;
        pthread_join(th[i], &r);
        all &= r == NULL;
    }
    ok(all, "every thread was notified");
    lmp_sync_free(t_cond);
    lmp_sync_free(t_lock);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pipe2(ready_pipe, O_CLOEXEC) < 0) return 1;
    int fds0 = count_fds(), maps0 = count_maps();
    lmp_sync *l, *r, *s, *b, *e, *c, *v;

    /* ---- locks ---- */
    ok(lmp_lock_new(0, &l) == 0, "Lock created");
    ok(lmp_lock_acquire(l, -1) == 0 && lmp_lock_locked(l), "acquire, locked");
    double t0 = now();
    ok(lmp_lock_acquire(l, 0.05) == -ETIMEDOUT && now() - t0 >= 0.05,
       "a held Lock times out for its own holder too, never early");
    ok(lmp_lock_acquire(l, 0) == -ETIMEDOUT, "timeout 0 does not wait");
    ok(lmp_lock_release(l) == 0 && lmp_lock_release(l) == -EPERM, "release once, then EPERM");
    ok(lmp_lock_new(1, &r) == 0, "RLock created");
    ok(lmp_lock_acquire(r, -1) == 0 && lmp_lock_acquire(r, 0) == 0 && lmp_lock_owned(r) == 2,
       "RLock recursion depth 2");
    ok(lmp_lock_release(r) == 0 && lmp_lock_release(r) == 0 && lmp_lock_release(r) == -EPERM,
       "RLock released twice, then EPERM");

    /* a holder SIGKILLed: EOWNERDEAD once to a sleeper in acquire */
    pid_t h = child(hold_lock, l);
    ok(wait_ready(), "child holds the lock");
    pid_t w = child(acquire_lock, l);
    ok(sleeping_in_futex(w), "another child sleeps in acquire");
    kill(h, SIGKILL);
    ok(status_of(h) == -SIGKILL, "holder killed");
    ok(status_of(w) == 0, "the sleeper got EOWNERDEAD once, then the lock");
    ok(lmp_lock_acquire(l, 1) == 0 && lmp_lock_release(l) == 0, "usable afterwards");

    /* death seen by locked() is reported by the next acquire */
    h = child(hold_lock, l);
    ok(wait_ready(), "child holds the lock again");
    kill(h, SIGKILL);
    status_of(h);
    ok(!lmp_lock_locked(l), "locked() is false once the holder died");
    ok(lmp_lock_acquire(l, 1) == -EOWNERDEAD && !lmp_lock_locked(l), "acquire reports it, not held");
    ok(lmp_lock_acquire(l, 1) == 0, "then acquires");
    lmp_sync_free(l); /* held: released before unmapping */
    lmp_sync_free(r);

    /* ---- semaphores ---- */
    ok(lmp_sem_new(2, 1, &s) == 0, "BoundedSemaphore(2)");
    ok(lmp_sem_release(s, 1) == -EOVERFLOW, "over-release refused");
    h = child(hold_units, s);
    ok(wait_ready() && lmp_sem_value(s) == 0, "child holds both units");
    w = child(take_unit, s);
    ok(sleeping_in_futex(w), "a waiter sleeps");
    kill(h, SIGKILL);
    status_of(h);
    ok(status_of(w) == 0, "the waiter got a unit the dead holder gave back");
    ok(lmp_sem_value(s) == 2, "and its own came back when it exited: 2");
    lmp_sync_free(s);

    /* more holders than records: the extra ones' units cannot come back */
    ok(lmp_sem_new(LMP_SEM_HOLDERS + 6, 0, &s) == 0, "Semaphore(holders + 6)");
    pid_t many[LMP_SEM_HOLDERS + 2];
    int all_ready = 1;
    for (int i = 0; i < LMP_SEM_HOLDERS + 2; i++) {
        many[i] = child(hold_one, s);
        all_ready &= wait_ready();
    }
    ok(all_ready && lmp_sem_value(s) == 4, "holders + 2 children hold a unit each: 4 left");
    for (int i = 0; i < LMP_SEM_HOLDERS + 2; i++) kill(many[i], SIGKILL);
    for (int i = 0; i < LMP_SEM_HOLDERS + 2; i++) status_of(many[i]);
    ok(lmp_sem_value(s) == LMP_SEM_HOLDERS + 4, "the recorded units came back, the 2 others did not");
    lmp_sync_free(s);

    /* ---- condition: a dead waiter does not take a notify ---- */
    ok(lmp_lock_new(1, &cond_lock) == 0 && lmp_cond_new(&c) == 0, "Condition");
    ok(lmp_cond_wait(c, cond_lock, 0) == -EPERM, "wait without the lock: EPERM");
    pid_t dead = child(cond_waiter, c);
    ok(wait_ready(), "waiter 1 holds the lock");
    ok(lmp_lock_acquire(cond_lock, 10) == 0 && lmp_lock_release(cond_lock) == 0,
       "waiter 1 is inside wait");
    pid_t live = child(cond_waiter, c);
    ok(wait_ready() && lmp_lock_acquire(cond_lock, 10) == 0, "waiter 2 is inside wait");
    kill(dead, SIGKILL);
    status_of(dead);
    ok(lmp_cond_notify(c, cond_lock, 1) == 0 && lmp_lock_release(cond_lock) == 0, "notify(1)");
    ok(status_of(live) == 0, "reached the live waiter");
    lmp_sync_free(c);
    lmp_sync_free(cond_lock);

    test_cond_full();

    /* ---- barrier: a dead party breaks it ---- */
    ok(lmp_barrier_new(3, &b) == 0, "Barrier(3)");
    pid_t p1 = child(barrier_party, b), p2 = child(barrier_party, b);
    double end = now() + 10;
    while (lmp_barrier_waiting(b) < 2 && now() < end) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    ok(lmp_barrier_waiting(b) == 2, "two parties wait");
    kill(p1, SIGKILL);
    status_of(p1);
    t0 = now();
    ok(status_of(p2) == 7 && now() - t0 < 5, "the other party learns the barrier is broken");
    uint32_t idx;
    ok(lmp_barrier_wait(b, 1, 0, &idx) == -EPIPE && lmp_barrier_broken(b), "broken for newcomers");
    lmp_barrier_reset(b);
    ok(!lmp_barrier_broken(b), "reset");
    lmp_sync_free(b);

    /* ---- event ---- */
    ok(lmp_event_new(&e) == 0 && lmp_event_wait(e, 0) == -ETIMEDOUT, "Event unset");
    pid_t se = child(set_event, e);
    ok(lmp_event_wait(e, 10) == 0 && lmp_event_is_set(e), "set in a child wakes the parent");
    status_of(se);
    lmp_sync_free(e);

    /* ---- shared memory ---- */
    ok(lmp_shared_new(LMP_SHARED_INT64, 4, &v) == 0, "int64[4]");
    int type;
    size_t n;
    int64_t *p = lmp_shared_data(v, &type, &n);
    ok(p && type == LMP_SHARED_INT64 && n == 4 && p[3] == 0, "zero-filled, typed");
    pid_t a[3];
    for (int i = 0; i < 3; i++) a[i] = child(add_many, v);
    int all = 1;
    for (int i = 0; i < 3; i++) all &= status_of(a[i]) == 0;
    ok(all && p[0] == 300000, "3 x 100000 atomic adds: %lld", (long long)p[0]);
    /* attach: what a spawned child does with the descriptor */
    lmp_sync *v2;
    int fd = dup(lmp_sync_fd(v));
    ok(lmp_sync_attach(fd, &v2) == 0, "attach a copy of the descriptor");
    int64_t *pb = lmp_shared_data(v2, NULL, &n);
    ok(pb && n == 4 && pb[0] == 300000, "sees the same memory");
    lmp_sync_free(v2);
    lmp_sync_free(v);
    int bad = memfd_create("x", MFD_CLOEXEC);
    ok(ftruncate(bad, 8192) == 0 && lmp_sync_attach(bad, &v2) == -EINVAL, "unsealed memfd refused");
    close(bad);
    ok(lmp_shared_new(9, 1, &v2) == -EINVAL && lmp_barrier_new(0, &v2) == -EINVAL, "bad sizes refused");

    close(ready_pipe[0]);
    close(ready_pipe[1]);
    if (getenv("SYNC_DEBUG")) { char cmd[64]; snprintf(cmd, sizeof cmd, "ls -l /proc/%d/fd; grep luamp /proc/%d/maps", getpid(), getpid()); if (system(cmd)) {} }
    ok(count_fds() == fds0 - 2, "no descriptor left behind");
    ok(count_maps() == maps0, "no mapping left behind");
    ok(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD, "every child reaped");
    return tap_done();
}
