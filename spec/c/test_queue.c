/*
 * test_queue.c - the process-shared message queue (src/core/queue.c).
 *
 * Covers FIFO order, an unbounded backlog, timeouts (never early), a
 * bounded queue blocking its producers, many producers and consumers across
 * fork, processes killed while holding the lock or while waiting, message
 * sizes, attaching over exec, write errors and closed handles; and at the
 * end that every child was reaped and no descriptor or mapping leaked.
 * Processes synchronise through pipes, or by watching /proc/<pid>/syscall
 * until a child sleeps in futex(2); never by sleeping a guessed time.
 * Uses: queue.h, buf.h, tap.h.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/queue.h"
#include "tap.h"

/* ---- helpers ------------------------------------------------------------ */

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

static int maps_mention(const char *what) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strstr(line, what)) found = 1;
    fclose(f);
    return found;
}

/* Wait (up to 10 s) until pid sleeps in futex(2): blocked in a queue wait.
 * Polls /proc, which observes the state instead of guessing a delay. */
static int sleeping_in_futex(pid_t pid) {
    char path[64], buf[128];
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    double end = now() + 10;
    while (now() < end) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return 0;
        ssize_t r = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (r > 0) {
            buf[r] = 0;
            char want[16];
            snprintf(want, sizeof want, "%d ", (int)SYS_futex);
            if (strncmp(buf, want, strlen(want)) == 0) return 1;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* waitpid, retrying EINTR; the raw status or -1. */
static int reap(pid_t pid) {
    int st;
    pid_t r;
    do r = waitpid(pid, &st, 0);
    while (r < 0 && errno == EINTR);
    return r == pid ? st : -1;
}

static int exited_ok(int st) { return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0; }

static int killed_by(int st, int sig) {
    return st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == sig;
}

/* Get one message into a fresh buffer and compare it with p/n. */
static int get_is(lmp_queue *q, const void *p, size_t n, double timeout) {
    lmp_buf b = LMP_BUF_INIT;
    int rc = lmp_queue_get(q, &b, timeout);
    int same = rc == 0 && b.len == n && (n == 0 || memcmp(b.data, p, n) == 0);
    lmp_buf_free(&b);
    return same;
}

static int get_str(lmp_queue *q, const char *s, double timeout) {
    return get_is(q, s, strlen(s), timeout);
}

static int put_str(lmp_queue *q, const char *s, double timeout) {
    return lmp_queue_put(q, s, strlen(s), timeout);
}

/* Test hook: tell the parent through park_fd, then stay (lock held) until
 * killed. */
static int park_fd = -1;
static int park_at = 0;
static void park(int point) {
    if (point != park_at) return;
    char c = 'p';
    if (write(park_fd, &c, 1) != 1) _exit(3);
    for (;;) pause();
}

/* ---- tests -------------------------------------------------------------- */

static void test_fifo(void) {
    lmp_queue *q = NULL;
    ok(lmp_queue_new(0, &q) == 0 && q, "new unbounded queue");
    ok(lmp_queue_empty(q) == 1 && lmp_queue_size(q) == 0, "new queue is empty");
    const char *msgs[] = {"one", "two", "", "three", "x", "four and more"};
    int n = (int)(sizeof msgs / sizeof *msgs), good = 1;
    for (int i = 0; i < n; i++) good &= put_str(q, msgs[i], 0) == 0;
    ok(good, "puts never block on an unbounded queue (timeout 0)");
    ok(lmp_queue_size(q) == n && lmp_queue_empty(q) == 0, "size counts messages");
    lmp_buf b = LMP_BUF_INIT;
    lmp_buf_append(&b, "pre:", 4);
    ok(lmp_queue_get(q, &b, 0) == 0 && b.len == 7 && !memcmp(b.data, "pre:one", 7),
       "get appends to the buffer");
    lmp_buf_free(&b);
    good = 1;
    for (int i = 1; i < n; i++) good &= get_str(q, msgs[i], 0);
    ok(good, "messages come out in FIFO order");
    ok(lmp_queue_empty(q) == 1, "empty after draining");
    lmp_buf e = LMP_BUF_INIT;
    ok(lmp_queue_get(q, &e, 0) == -ETIMEDOUT && e.len == 0,
       "get with timeout 0 on an empty queue: -ETIMEDOUT, buffer untouched");
    lmp_buf_free(&e);
    lmp_queue_free(q);
}

static void test_backlog(void) {
    enum { N = 100000 };
    lmp_queue *q = NULL;
    lmp_queue_new(0, &q);
    char m[32];
    int good = 1;
    double t0 = now();
    for (int i = 0; i < N && good; i++) {
        int len = snprintf(m, sizeof m, "message %d", i);
        good = lmp_queue_put(q, m, (size_t)len, 0) == 0;
    }
    ok(good && lmp_queue_size(q) == N, "%d puts before any get (unbounded)", N);
    lmp_buf b = LMP_BUF_INIT;
    for (int i = 0; i < N && good; i++) {
        int len = snprintf(m, sizeof m, "message %d", i);
        lmp_buf_reset(&b);
        good = lmp_queue_get(q, &b, 0) == 0 && b.len == (size_t)len &&
               !memcmp(b.data, m, (size_t)len);
    }
    ok(good && lmp_queue_empty(q), "%d gets return them in order (%.2f s)", N,
       now() - t0);
    lmp_buf_free(&b);
    lmp_queue_free(q);
}

static void test_timeout(void) {
    lmp_queue *q = NULL;
    lmp_queue_new(0, &q);
    lmp_buf b = LMP_BUF_INIT;
    double t0 = now();
    int rc = lmp_queue_get(q, &b, 0.25);
    double dt = now() - t0;
    ok(rc == -ETIMEDOUT, "get on an empty queue times out");
    ok(dt >= 0.25, "not before the timeout (%.4f s >= 0.25)", dt);
    ok(dt < 1.5, "nor much after it (%.4f s)", dt);
    t0 = now();
    rc = lmp_queue_get(q, &b, 0);
    ok(rc == -ETIMEDOUT && now() - t0 < 0.5, "timeout 0 does not wait");
    lmp_buf_free(&b);
    lmp_queue_free(q);
}

static void test_maxsize(void) {
    lmp_queue *q = NULL;
    lmp_queue_new(2, &q);
    ok(put_str(q, "first", 0) == 0 && put_str(q, "second", 0) == 0,
       "bounded queue takes maxsize messages");
    double t0 = now();
    int rc = put_str(q, "third", 0.2);
    double dt = now() - t0;
    ok(rc == -ETIMEDOUT && dt >= 0.2 && dt < 1.5,
       "put on a full queue times out after the timeout (%.4f s)", dt);
    ok(lmp_queue_size(q) == 2, "the timed-out put added nothing");
    pid_t pid = fork();
    if (pid == 0) _exit(put_str(q, "third", LMP_FOREVER) == 0 ? 0 : 1);
    ok(sleeping_in_futex(pid), "a child's put blocks on the full queue");
    ok(get_str(q, "first", 5), "get makes room");
    ok(exited_ok(reap(pid)), "the blocked put completes");
    ok(get_str(q, "second", 0) && get_str(q, "third", 0) && lmp_queue_empty(q),
       "order kept across the blocked put");
    lmp_queue_free(q);
}

/* Three producers put NPER (producer, seq) records; two consumers take
 * records until a 0-byte stop message, then send all they got (appended in
 * one lmp_buf) through a pipe.  The parent puts the stops once every
 * producer has exited, then checks that each record arrived exactly once
 * and that each consumer saw every producer's records in order. */
enum { NPROD = 3, NCONS = 2, NPER = 50000 };

static void consumer(lmp_queue *q, int wfd) {
    lmp_buf b = LMP_BUF_INIT;
    uint32_t last[NPROD];
    memset(last, 0xff, sizeof last);
    int ordered = 1;
    for (;;) {
        size_t before = b.len;
        if (lmp_queue_get(q, &b, LMP_FOREVER) != 0) _exit(2);
        if (b.len == before) break; /* stop */
        if (b.len - before != 8) _exit(3);
        uint32_t rec[2];
        memcpy(rec, b.data + before, 8);
        if (rec[0] >= NPROD) _exit(4);
        if (last[rec[0]] != UINT32_MAX && rec[1] <= last[rec[0]]) ordered = 0;
        last[rec[0]] = rec[1];
    }
    uint32_t hdr[2] = {(uint32_t)ordered, (uint32_t)(b.len / 8)};
    if (write(wfd, hdr, sizeof hdr) != (ssize_t)sizeof hdr) _exit(5);
    for (size_t off = 0; off < b.len;) {
        ssize_t w = write(wfd, b.data + off, b.len - off);
        if (w <= 0) _exit(6);
        off += (size_t)w;
    }
    _exit(0);
}

static int read_full(int fd, void *p, size_t n) {
    for (size_t off = 0; off < n;) {
        ssize_t r = read(fd, (char *)p + off, n - off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        off += (size_t)r;
    }
    return 0;
}

static void test_mpmc(size_t maxsize) {
    lmp_queue *q = NULL;
    lmp_queue_new(maxsize, &q);
    pid_t prod[NPROD], cons[NCONS];
    int rfd[NCONS];
    double t0 = now();
    for (int c = 0; c < NCONS; c++) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) return;
        cons[c] = fork();
        if (cons[c] == 0) {
            close(p[0]);
            consumer(q, p[1]);
        }
        close(p[1]);
        rfd[c] = p[0];
    }
    for (int i = 0; i < NPROD; i++) {
        prod[i] = fork();
        if (prod[i] == 0) {
            for (uint32_t s = 0; s < NPER; s++) {
                uint32_t rec[2] = {(uint32_t)i, s};
                if (lmp_queue_put(q, rec, sizeof rec, LMP_FOREVER) != 0) _exit(1);
            }
            _exit(0);
        }
    }
    int good = 1;
    for (int i = 0; i < NPROD; i++) good &= exited_ok(reap(prod[i]));
    ok(good, "maxsize %zu: %d producers put %d messages each", maxsize, NPROD, NPER);
    good = 1;
    for (int c = 0; c < NCONS; c++) good &= lmp_queue_put(q, "", 0, LMP_FOREVER) == 0;
    ok(good, "stop messages queued");

    static unsigned char seen[NPROD][NPER];
    memset(seen, 0, sizeof seen);
    int ordered = 1, total = 0, dup = 0;
    for (int c = 0; c < NCONS; c++) {
        uint32_t hdr[2];
        if (read_full(rfd[c], hdr, sizeof hdr) < 0) {
            good = 0;
            break;
        }
        ordered &= (int)hdr[0];
        for (uint32_t k = 0; k < hdr[1]; k++) {
            uint32_t rec[2];
            if (read_full(rfd[c], rec, sizeof rec) < 0 || rec[0] >= NPROD ||
                rec[1] >= NPER) {
                good = 0;
                break;
            }
            if (seen[rec[0]][rec[1]]++) dup++;
            total++;
        }
        close(rfd[c]);
    }
    for (int c = 0; c < NCONS; c++) good &= exited_ok(reap(cons[c]));
    ok(good, "consumers exited cleanly and reported");
    int missing = 0;
    for (int i = 0; i < NPROD; i++)
        for (int s = 0; s < NPER; s++) missing += !seen[i][s];
    ok(total == NPROD * NPER && dup == 0 && missing == 0,
       "every message received exactly once (%d received, %d dup, %d missing, "
       "%.2f s)", total, dup, missing, now() - t0);
    ok(ordered, "each consumer saw each producer's messages in order");
    ok(lmp_queue_empty(q), "queue drained");
    lmp_queue_free(q);
}

/* A producer parked by the hook after writing its payload, lock held, is
 * SIGKILLed.  A consumer already asleep in get must neither see half a
 * message nor sleep forever once the queue moves on. */
static void test_killed_producer(void) {
    lmp_queue *q = NULL;
    lmp_queue_new(0, &q);
    int cp[2], pp[2];
    pipe2(cp, O_CLOEXEC);
    pipe2(pp, O_CLOEXEC);

    pid_t cons = fork();
    if (cons == 0) { /* reports the one message it gets */
        close(cp[0]);
        lmp_buf b = LMP_BUF_INIT;
        if (lmp_queue_get(q, &b, LMP_FOREVER) != 0) _exit(1);
        if (write(cp[1], b.data, b.len) != (ssize_t)b.len) _exit(2);
        _exit(0);
    }
    close(cp[1]);
    ok(sleeping_in_futex(cons), "consumer asleep in get");

    size_t big = 1 << 20;
    char *payload = malloc(big);
    memset(payload, 'h', big);
    pid_t prod = fork();
    if (prod == 0) {
        close(pp[0]);
        park_fd = pp[1];
        park_at = LMP_QHOOK_PUT_WRITTEN;
        lmp_queue_test_hook = park;
        lmp_queue_put(q, payload, big, LMP_FOREVER);
        _exit(4);
    }
    close(pp[1]);
    char c;
    ok(read(pp[0], &c, 1) == 1, "producer parked after writing 1 MB, lock held");
    kill(prod, SIGKILL);
    ok(killed_by(reap(prod), SIGKILL), "producer killed by SIGKILL");
    close(pp[0]);
    free(payload);

    ok(lmp_queue_size(q) == 0, "the killed producer's message was never counted");
    lmp_buf b = LMP_BUF_INIT;
    ok(lmp_queue_get(q, &b, 0) == -ETIMEDOUT, "no half message to get");
    lmp_buf_free(&b);
    ok(put_str(q, "after", 1) == 0, "put works after the owner died");
    char got[16] = {0};
    ssize_t r = read(cp[0], got, sizeof got - 1);
    ok(r == 5 && !strcmp(got, "after"), "the sleeping consumer woke with the next message");
    ok(exited_ok(reap(cons)), "consumer exited");
    close(cp[0]);
    ok(put_str(q, "x", 0) == 0 && get_str(q, "x", 0) && lmp_queue_empty(q),
       "queue fully usable");
    lmp_queue_free(q);
}

/* A consumer killed with the lock held after reading, before committing,
 * must not take the message with it. */
static void test_killed_consumer_holding_lock(void) {
    lmp_queue *q = NULL;
    lmp_queue_new(0, &q);
    put_str(q, "keep me", 0);
    put_str(q, "and me", 0);
    int pp[2];
    pipe2(pp, O_CLOEXEC);
    pid_t pid = fork();
    if (pid == 0) {
        close(pp[0]);
        park_fd = pp[1];
        park_at = LMP_QHOOK_GET_READ;
        lmp_queue_test_hook = park;
        lmp_buf b = LMP_BUF_INIT;
        lmp_queue_get(q, &b, LMP_FOREVER);
        _exit(4);
    }
    close(pp[1]);
    char c;
    ok(read(pp[0], &c, 1) == 1, "consumer parked after reading, lock held");
    kill(pid, SIGKILL);
    ok(killed_by(reap(pid), SIGKILL), "consumer killed by SIGKILL");
    close(pp[0]);
    ok(get_str(q, "keep me", 1) && get_str(q, "and me", 0) && lmp_queue_empty(q),
       "its message is still there, order kept");
    lmp_queue_free(q);
}

/* A consumer killed while asleep in get leaves nothing that matters. */
static void test_killed_waiting_consumer(void) {
    lmp_queue *q = NULL;
    lmp_queue_new(0, &q);
    pid_t pid = fork();
    if (pid == 0) {
        lmp_buf b = LMP_BUF_INIT;
        lmp_queue_get(q, &b, LMP_FOREVER);
        _exit(4);
    }
    ok(sleeping_in_futex(pid), "consumer asleep in get");
    kill(pid, SIGKILL);
    ok(killed_by(reap(pid), SIGKILL), "sleeping consumer killed");
    ok(put_str(q, "still here", 0) == 0 && get_str(q, "still here", 0),
       "put and get work; nothing was taken by the dead consumer");
    int p[2];
    pipe2(p, O_CLOEXEC);
    pid = fork();
    if (pid == 0) {
        close(p[0]);
        lmp_buf b = LMP_BUF_INIT;
        if (lmp_queue_get(q, &b, LMP_FOREVER) != 0) _exit(1);
        _exit(write(p[1], b.data, b.len) == (ssize_t)b.len ? 0 : 2);
    }
    close(p[1]);
    ok(sleeping_in_futex(pid), "a new consumer sleeps");
    put_str(q, "wake", 0);
    char got[8] = {0};
    ok(read(p[0], got, sizeof got - 1) == 4 && !strcmp(got, "wake"),
       "and is woken by the next put");
    ok(exited_ok(reap(pid)), "it exits");
    close(p[0]);
    lmp_queue_free(q);
}

static void fill(char *p, size_t n, unsigned seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        p[i] = (char)x;
    }
}

static void test_sizes(void) {
    lmp_queue *q = NULL;
    lmp_queue_new(0, &q);
    size_t sizes[] = {0, 1, 10u << 20, 1, 0, 4095, 4096, 4097};
    int n = (int)(sizeof sizes / sizeof *sizes);
    char *buf = malloc(10u << 20);
    pid_t pid = fork();
    if (pid == 0) { /* another process puts them */
        for (int i = 0; i < n; i++) {
            fill(buf, sizes[i], (unsigned)i);
            if (lmp_queue_put(q, buf, sizes[i], LMP_FOREVER) != 0) _exit(1);
        }
        _exit(0);
    }
    ok(exited_ok(reap(pid)), "child put messages of 0, 1, 10 MB, ... bytes");
    for (int i = 0; i < n; i++) {
        fill(buf, sizes[i], (unsigned)i);
        ok(get_is(q, buf, sizes[i], 5), "got the %zu-byte message intact", sizes[i]);
    }
    ok(lmp_queue_empty(q), "empty");
    free(buf);
    lmp_queue_free(q);
}

/* Spool space: a queue that never drains gives consumed pages back as it
 * goes; one that drains gives its spool back. */
static void test_spool_space(void) {
    lmp_queue *q = NULL;
    lmp_queue_new(0, &q);
    int fds[2];
    lmp_queue_fds(q, fds);
    size_t n = 64 << 10;
    char *m = calloc(1, n);
    lmp_buf b = LMP_BUF_INIT;
    int good = put_str(q, "head", 0) == 0;
    long peak = 0;
    struct stat st;
    for (int i = 0; i < 400 && good; i++) { /* 25 MB through, never empty */
        lmp_buf_reset(&b);
        good = lmp_queue_put(q, m, n, 0) == 0 && lmp_queue_get(q, &b, 0) == 0;
        if (fstat(fds[1], &st) == 0 && st.st_blocks * 512L > peak)
            peak = st.st_blocks * 512L;
    }
    ok(good && peak < (4L << 20), "a queue that never drains keeps its spool "
       "small: %ld KB at most for 25 MB through", peak >> 10);
    good = 1;
    while (!lmp_queue_empty(q) && good) {
        lmp_buf_reset(&b);
        good = lmp_queue_get(q, &b, 0) == 0;
    }
    ok(good && fstat(fds[1], &st) == 0 && st.st_size == 0 && st.st_blocks == 0,
       "a drained queue gives its spool back");
    lmp_buf_free(&b);
    free(m);
    lmp_queue_free(q);
}

/* A spawned child: attach to inherited descriptors, put one message. */
static int attach_child(const char *hs, const char *ss) {
    int hfd = atoi(hs), sfd = atoi(ss);
    lmp_queue *q = NULL;
    if (lmp_queue_attach(hfd, sfd, &q) != 0) return 1;
    if (!(fcntl(hfd, F_GETFD) & FD_CLOEXEC)) return 2;
    if (put_str(q, "from exec", 1) != 0) return 3;
    lmp_queue_free(q);
    return fcntl(hfd, F_GETFD) == -1 ? 0 : 4; /* free closed it */
}

static void test_attach(const char *self) {
    lmp_queue *q = NULL;
    lmp_queue_new(0, &q);
    int fds[2];
    ok(lmp_queue_fds(q, fds) == 0 && fds[0] >= 0 && fds[1] >= 0 &&
       (fcntl(fds[0], F_GETFD) & FD_CLOEXEC) && (fcntl(fds[1], F_GETFD) & FD_CLOEXEC),
       "both descriptors are O_CLOEXEC");
    lmp_queue *q2 = NULL;
    int h = fcntl(fds[0], F_DUPFD_CLOEXEC, 0), s = fcntl(fds[1], F_DUPFD_CLOEXEC, 0);
    ok(lmp_queue_attach(s, s, &q2) == -EINVAL && !q2, "attach refuses a spool as header");
    int p[2];
    pipe2(p, O_CLOEXEC);
    ok(lmp_queue_attach(p[0], s, &q2) == -EINVAL, "attach refuses a pipe");
    close(p[0]);
    close(p[1]);
    ok(lmp_queue_attach(h, s, &q2) == 0 && q2, "attach to duplicated descriptors");
    put_str(q2, "via q2", 0);
    ok(get_str(q, "via q2", 0), "a message put on one handle is got on the other");
    lmp_queue_free(q2);

    pid_t pid = fork();
    if (pid == 0) {
        int ch = dup(fds[0]), cs = dup(fds[1]); /* dup clears O_CLOEXEC */
        char a[16], b[16];
        snprintf(a, sizeof a, "%d", ch);
        snprintf(b, sizeof b, "%d", cs);
        execl(self, self, "--attach-child", a, b, (char *)NULL);
        _exit(127);
    }
    ok(get_str(q, "from exec", 10), "an exec'd child attached and put a message");
    ok(exited_ok(reap(pid)), "exec'd child exited 0 (attach restored O_CLOEXEC)");

    lmp_queue_close(q);
    lmp_buf b = LMP_BUF_INIT;
    ok(put_str(q, "no", 0) == -EPIPE && lmp_queue_get(q, &b, 0) == -EPIPE,
       "a closed handle refuses put and get with -EPIPE");
    lmp_buf_free(&b);
    lmp_queue_free(q);
}

/* A spool write that fails (here EFBIG under RLIMIT_FSIZE, the way ENOSPC
 * would) is reported and leaves the queue as it was. */
static void test_write_error(void) {
    lmp_queue *q = NULL;
    lmp_queue_new(0, &q);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl = {64 << 10, 64 << 10};
        signal(SIGXFSZ, SIG_IGN);
        if (setrlimit(RLIMIT_FSIZE, &rl) < 0) _exit(10);
        static char big[256 << 10];
        if (put_str(q, "small", 0) != 0) _exit(11);
        if (lmp_queue_put(q, big, sizeof big, 0) != -EFBIG) _exit(12);
        if (lmp_queue_size(q) != 1) _exit(13);
        if (put_str(q, "small 2", 0) != 0) _exit(14);
        _exit(0);
    }
    int st = reap(pid);
    ok(exited_ok(st), "oversized write fails with -EFBIG, size unchanged (status %d)",
       WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    ok(get_str(q, "small", 0) && get_str(q, "small 2", 0) && lmp_queue_empty(q),
       "no trace of the failed message");
    lmp_queue_free(q);
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--attach-child"))
        return attach_child(argv[2], argv[3]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int fds0 = count_fds();
    double t0 = now();

    test_fifo();
    test_backlog();
    test_timeout();
    test_maxsize();
    test_mpmc(0);
    test_mpmc(16);
    test_killed_producer();
    test_killed_consumer_holding_lock();
    test_killed_waiting_consumer();
    test_sizes();
    test_spool_space();
    test_attach("/proc/self/exe");
    test_write_error();

    errno = 0;
    ok(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD, "every child reaped");
    int fds1 = count_fds();
    ok(fds1 == fds0, "no descriptor leaked (%d before, %d after)", fds0, fds1);
    ok(maps_mention("luamp-queue") == 0, "no queue mapping left");
    printf("# %.2f s\n", now() - t0);
    return tap_done();
}
