/*
 * baseline.c - the raw C floors the benchmarks compare luamp against,
 * measured in the same run on the same machine.
 *
 *   baseline forkwait N        fork + _exit(0) + waitpid, N times: us per round trip
 *   baseline forkfaults N      fork + _exit(0) + waitpid, N times: minor page faults per
 *                              round trip, this process and its children (getrusage),
 *                              then the parent's and the children's apart, then the CPU
 *                              time of both per round trip in us (one line, four numbers)
 *   baseline forkmech N        what luamp's fork start method does at the system-call level,
 *                              in C (result socketpair, reserved slot, signals blocked across
 *                              fork, pidfd_open, poll, waitid, result read; the child closes
 *                              the parent's ends, resets handled signals, unblocks): the
 *                              floor of the mechanism without Lua: us per round trip
 *   baseline sockpong N        pingpong over a unix stream socketpair with luamp's framing
 *                              (sendmsg of an 8-byte length + body, two reads): us per round trip
 *   baseline forkbatch N B     start B children, then reap them all, N times: us per child
 *   baseline firstof8 N        8 children block on pipes; release one, time until a
 *                              poll on their pidfds notices it: us (N samples, median)
 *   baseline firstof8r N       the same, but timed only once all 8 children are blocked
 *                              (each writes a byte to a shared ready pipe first): us
 *   baseline pingpong N        8-byte ping-pong over a pipe pair with a child: us per round trip
 *   baseline pipecopy MB       copy MB megabytes from a child through a pipe: MB/s
 *   baseline poolrt N          a task to a pre-started worker and its reply, over a
 *                              socketpair with length-framed messages (a task id and
 *                              an integer; the worker squares it): us per round trip
 *   baseline spawnlua N LUA    posix_spawn of `LUA -e ''` + waitpid: us per round trip
 *   baseline leibniz N         the naive loop over N terms of the pi series: terms/s
 *   baseline mutexpair N       lock + unlock of a robust process-shared pthread mutex
 *                              in shared memory, uncontended, EOWNERDEAD handled as a
 *                              user must: ns of process CPU time per pair
 *   baseline futexwake N       a child sleeps in FUTEX_WAIT; the parent bumps the word
 *                              and FUTEX_WAKEs it: us from the wake to the child
 *                              running (N samples, median)
 *
 * Each prints one number (the median of its samples where it takes
 * several).  Uses only libc: this is the floor, not luamp.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cputime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void forkwait(int n) {
    double *v = malloc(sizeof *v * (size_t)n);
    for (int i = 0; i < n; i++) {
        double t = now();
        pid_t p = fork();
        if (p == 0) _exit(0);
        waitpid(p, NULL, 0);
        v[i] = (now() - t) * 1e6;
    }
    printf("%.2f\n", median(v, n));
}

/* Minor faults of this process (*own) and of its reaped children (*kids);
 * returns the CPU time of both, in seconds. */
static double usage(long *own, long *kids) {
    struct rusage s, c;
    getrusage(RUSAGE_SELF, &s);
    getrusage(RUSAGE_CHILDREN, &c);
    *own = s.ru_minflt;
    *kids = c.ru_minflt;
    return (double)(s.ru_utime.tv_sec + s.ru_stime.tv_sec + c.ru_utime.tv_sec + c.ru_stime.tv_sec) +
           (double)(s.ru_utime.tv_usec + s.ru_stime.tv_usec + c.ru_utime.tv_usec + c.ru_stime.tv_usec) * 1e-6;
}

static void forkfaults(int n) {
    for (int i = 0; i < 20; i++) { /* the first rounds fault in code once */
        pid_t p = fork();
        if (p == 0) _exit(0);
        waitpid(p, NULL, 0);
    }
    long own0, kids0, own1, kids1;
    double cpu0 = usage(&own0, &kids0);
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) _exit(0);
        waitpid(p, NULL, 0);
    }
    double cpu1 = usage(&own1, &kids1);
    printf("%.2f %.2f %.2f %.1f\n", (double)(own1 - own0 + kids1 - kids0) / n, (double)(own1 - own0) / n,
           (double)(kids1 - kids0) / n, (cpu1 - cpu0) * 1e6 / n);
}

static void child_signals(void) {
    struct sigaction sa;
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP || sigaction(s, NULL, &sa) != 0) continue;
        if (!(sa.sa_flags & SA_SIGINFO) && (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN)) continue;
        sa.sa_handler = SIG_DFL;
        sa.sa_flags = 0;
        sigaction(s, &sa, NULL);
    }
}

static void forkmech(int n) {
    double *v = malloc(sizeof *v * (size_t)n);
    for (int i = 0; i < n; i++) {
        double t = now();
        int res[2], spare;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, res) < 0) exit(1);
        spare = fcntl(res[0], F_DUPFD_CLOEXEC, 0);
        sigset_t all, old, none;
        sigfillset(&all);
        sigemptyset(&none);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        pid_t p = fork();
        if (p == 0) {
            close(res[0]);
            close(spare);
            child_signals();
            sigprocmask(SIG_SETMASK, &none, NULL);
            _exit(0);
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        close(res[1]);
        close(spare);
        int pfd = (int)syscall(SYS_pidfd_open, p, 0);
        struct pollfd pf = {.fd = pfd, .events = POLLIN};
        while (poll(&pf, 1, -1) < 0 && errno == EINTR) {}
        siginfo_t si;
        waitid((idtype_t)3 /* P_PIDFD */, (id_t)pfd, &si, WEXITED);
        char c;
        recv(res[0], &c, 1, MSG_DONTWAIT);
        close(res[0]);
        close(pfd);
        v[i] = (now() - t) * 1e6;
    }
    printf("%.2f\n", median(v, n));
}

static void sockpong(int n) {
    int s[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) < 0) exit(1);
    pid_t p = fork();
    unsigned char hdr[8] = {2}, body[2] = {0xd1, 0};
    struct iovec iov[2] = {{hdr, 8}, {body, 2}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    if (p == 0) {
        close(s[0]);
        for (;;) {
            if (read(s[1], hdr, 8) != 8 || read(s[1], body, 2) != 2) _exit(0);
            if (sendmsg(s[1], &m, MSG_NOSIGNAL) != 10) _exit(0);
        }
    }
    close(s[1]);
    double *v = malloc(sizeof *v * (size_t)n);
    for (int i = 0; i < n; i++) {
        double t = now();
        if (sendmsg(s[0], &m, MSG_NOSIGNAL) != 10 || read(s[0], hdr, 8) != 8 || read(s[0], body, 2) != 2) exit(1);
        v[i] = (now() - t) * 1e6;
    }
    close(s[0]);
    waitpid(p, NULL, 0);
    printf("%.2f\n", median(v, n));
}

static void forkbatch(int n, int b) {
    double *v = malloc(sizeof *v * (size_t)n);
    pid_t *pids = malloc(sizeof *pids * (size_t)b);
    for (int i = 0; i < n; i++) {
        double t = now();
        for (int j = 0; j < b; j++) {
            pids[j] = fork();
            if (pids[j] == 0) _exit(0);
        }
        for (int j = 0; j < b; j++) waitpid(pids[j], NULL, 0);
        v[i] = (now() - t) * 1e6 / b;
    }
    printf("%.2f\n", median(v, n));
}

static void firstof8_run(int n, int ready) {
    double *v = malloc(sizeof *v * (size_t)n);
    int rd[2] = {-1, -1};
    if (ready && pipe(rd) < 0) exit(1);
    for (int i = 0; i < n; i++) {
        int fds[8][2];
        struct pollfd pf[8];
        pid_t pids[8];
        for (int j = 0; j < 8; j++) {
            if (pipe(fds[j]) < 0) exit(1);
            pids[j] = fork();
            if (pids[j] == 0) {
                char c;
                for (int x = 0; x <= j; x++) close(fds[x][1]); /* earlier siblings' too */
                if (ready && write(rd[1], "r", 1) != 1) _exit(1);
                while (read(fds[j][0], &c, 1) < 0 && errno == EINTR) {}
                _exit(0);
            }
            close(fds[j][0]);
            pf[j].fd = (int)syscall(SYS_pidfd_open, pids[j], 0);
            pf[j].events = POLLIN;
        }
        char got[8];
        for (int r = 0; ready && r < 8;) {
            ssize_t m = read(rd[0], got, (size_t)(8 - r));
            if (m <= 0) exit(1);
            r += (int)m;
        }
        int k = i % 8;
        double t = now();
        if (write(fds[k][1], "x", 1) != 1) exit(1);
        while (poll(pf, 8, -1) < 0 && errno == EINTR) {}
        v[i] = (now() - t) * 1e6;
        for (int j = 0; j < 8; j++) {
            close(fds[j][1]);
            waitpid(pids[j], NULL, 0);
            close(pf[j].fd);
        }
    }
    printf("%.2f\n", median(v, n));
}

static void firstof8(int n) { firstof8_run(n, 0); }
static void firstof8r(int n) { firstof8_run(n, 1); }

static void pingpong(int n) {
    int a[2], b[2];
    if (pipe(a) < 0 || pipe(b) < 0) exit(1);
    pid_t p = fork();
    char buf[8] = {0};
    if (p == 0) {
        close(a[1]);
        close(b[0]);
        for (;;) {
            if (read(a[0], buf, 8) != 8) _exit(0);
            if (write(b[1], buf, 8) != 8) _exit(0);
        }
    }
    close(a[0]);
    close(b[1]);
    double *v = malloc(sizeof *v * (size_t)n);
    for (int i = 0; i < n; i++) {
        double t = now();
        if (write(a[1], buf, 8) != 8 || read(b[0], buf, 8) != 8) exit(1);
        v[i] = (now() - t) * 1e6;
    }
    close(a[1]);
    waitpid(p, NULL, 0);
    printf("%.2f\n", median(v, n));
}

/* One framed message: 8-byte length, then the body (what a Pool sends). */
static int put_msg(int fd, const void *body, uint64_t n) {
    unsigned char m[64];
    memcpy(m, &n, 8);
    memcpy(m + 8, body, n);
    return write(fd, m, 8 + n) == (ssize_t)(8 + n) ? 0 : -1;
}

static int get_msg(int fd, void *body, uint64_t cap) {
    uint64_t n;
    if (read(fd, &n, 8) != 8 || n > cap) return -1;
    return read(fd, body, n) == (ssize_t)n ? 0 : -1;
}

static void poolrt(int n) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) exit(1);
    pid_t p = fork();
    int64_t task[2];
    if (p == 0) {
        close(sv[0]);
        for (;;) {
            if (get_msg(sv[1], task, sizeof task) < 0) _exit(0);
            task[1] *= task[1];
            if (put_msg(sv[1], task, sizeof task) < 0) _exit(0);
        }
    }
    close(sv[1]);
    double *v = malloc(sizeof *v * (size_t)n);
    for (int i = 0; i < n; i++) {
        double t = now();
        task[0] = i;
        task[1] = i;
        if (put_msg(sv[0], task, sizeof task) < 0 || get_msg(sv[0], task, sizeof task) < 0) exit(1);
        v[i] = (now() - t) * 1e6;
    }
    close(sv[0]);
    waitpid(p, NULL, 0);
    printf("%.2f\n", median(v, n));
}

static void pipecopy(int mb) {
    int fd[2];
    if (pipe(fd) < 0) exit(1);
    size_t chunk = 1 << 16;
    char *buf = calloc(1, chunk);
    double t = now();
    pid_t p = fork();
    if (p == 0) {
        close(fd[0]);
        for (size_t left = (size_t)mb << 20; left > 0;) {
            ssize_t w = write(fd[1], buf, left < chunk ? left : chunk);
            if (w <= 0) _exit(1);
            left -= (size_t)w;
        }
        _exit(0);
    }
    close(fd[1]);
    size_t got = 0;
    ssize_t r;
    while ((r = read(fd[0], buf, chunk)) > 0) got += (size_t)r;
    waitpid(p, NULL, 0);
    printf("%.1f\n", (double)got / (1 << 20) / (now() - t));
}

static void spawnlua(int n, char *lua) {
    double *v = malloc(sizeof *v * (size_t)n);
    char *argv[] = {lua, "-e", "", NULL};
    for (int i = 0; i < n; i++) {
        double t = now();
        pid_t p;
        if (posix_spawn(&p, lua, NULL, NULL, argv, environ) != 0) exit(1);
        waitpid(p, NULL, 0);
        v[i] = (now() - t) * 1e6;
    }
    printf("%.2f\n", median(v, n));
}

static void leibniz(long long n) {
    double t = now();
    double s = 0;
    for (long long k = 1; k <= n; k++) s += (k & 1 ? 1.0 : -1.0) / (double)(2 * k - 1);
    double dt = now() - t;
    fprintf(stderr, "pi ~ %.15f\n", 4 * s);
    printf("%.4g\n", (double)n / dt);
}

static void mutexpair(long long n) {
    pthread_mutex_t *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(m, &a);
    double v[7];
    /* CPU time, as the Lua side measures it (os.clock): on a loaded
     * machine wall time mostly counts other processes' turns */
    for (int r = 0; r < 7; r++) {
        double t = cputime();
        for (long long i = 0; i < n; i++) {
            if (pthread_mutex_lock(m) == EOWNERDEAD) pthread_mutex_consistent(m);
            pthread_mutex_unlock(m);
        }
        v[r] = (cputime() - t) * 1e9 / (double)n;
    }
    printf("%.2f\n", median(v, 7));
}

struct wake {
    atomic_uint go, ack;
    double t0, lat;
};

static void fwait(atomic_uint *w, unsigned seen) {
    while (atomic_load(w) == seen) syscall(SYS_futex, w, FUTEX_WAIT, seen, NULL, NULL, 0);
}

static void fwake(atomic_uint *w) {
    atomic_fetch_add(w, 1);
    syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static void futexwake(int n) {
    struct wake *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    double *v = malloc(sizeof *v * (size_t)n);
    pid_t p = fork();
    if (p == 0) {
        for (int i = 0; i < n; i++) {
            fwait(&w->go, (unsigned)i);
            w->lat = now() - w->t0;
            fwake(&w->ack);
        }
        _exit(0);
    }
    for (int i = 0; i < n; i++) {
        struct timespec ts = {0, 200000}; /* let the child fall asleep */
        nanosleep(&ts, NULL);
        w->t0 = now();
        fwake(&w->go);
        fwait(&w->ack, (unsigned)i);
        v[i] = w->lat * 1e6;
    }
    waitpid(p, NULL, 0);
    printf("%.2f\n", median(v, n));
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: baseline MODE N [ARG]\n");
        return 2;
    }
    const char *m = argv[1];
    long long n = atoll(argv[2]);
    if (strcmp(m, "forkwait") == 0) forkwait((int)n);
    else if (strcmp(m, "forkfaults") == 0) forkfaults((int)n);
    else if (strcmp(m, "forkmech") == 0) forkmech((int)n);
    else if (strcmp(m, "sockpong") == 0) sockpong((int)n);
    else if (strcmp(m, "forkbatch") == 0 && argc > 3) forkbatch((int)n, atoi(argv[3]));
    else if (strcmp(m, "firstof8") == 0) firstof8((int)n);
    else if (strcmp(m, "firstof8r") == 0) firstof8r((int)n);
    else if (strcmp(m, "pingpong") == 0) pingpong((int)n);
    else if (strcmp(m, "pipecopy") == 0) pipecopy((int)n);
    else if (strcmp(m, "poolrt") == 0) poolrt((int)n);
    else if (strcmp(m, "spawnlua") == 0 && argc > 3) spawnlua((int)n, argv[3]);
    else if (strcmp(m, "leibniz") == 0) leibniz(n);
    else if (strcmp(m, "mutexpair") == 0) mutexpair(n);
    else if (strcmp(m, "futexwake") == 0) futexwake((int)n);
    else return 2;
    return 0;
}
