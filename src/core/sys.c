/*
 * sys.c - system call wrappers (see sys.h).
 *
 * The tracked-descriptor set is process-wide state: core/state.c owns it.
 */
#include "sys.h"
#include "bounds.h"
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double lmp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Errno names: the table tools/gen_errnames.sh makes at build time from
 * the compiler's <errno.h>, so every errno the platform defines is named
 * whatever the C library (glibc's strerrorname_np, which this matches,
 * exists only since 2.32; musl has none).  Canonical names first, by
 * value; then aliases (EWOULDBLOCK...), which only lmp_errno reads. */
#include "errnames.h"
static const struct {
    int code;
    const char *name;
} errnames[] = {LMP_ERRNAMES};
#define NERRNAMES (sizeof errnames / sizeof *errnames)

const char *lmp_errname(int err) {
    for (size_t i = 0; i < NERRNAMES; i++)
        if (errnames[i].code == err) return errnames[i].name;
    return "E?";
}

int lmp_errno(const char *name) {
    for (size_t i = 0; i < NERRNAMES; i++)
        if (strcmp(errnames[i].name, name) == 0) return errnames[i].code;
    return 0;
}

/* ---- standard descriptors ------------------------------------------ */

void lmp_fd_std_open(void) {
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
        int n = open("/dev/null", O_RDWR); /* lowest free: fd itself */
        if (n >= 0 && n != fd) {
            dup2(n, fd);
            close(n);
        }
    }
}

int lmp_fd_hi(int fd) {
    if (fd < 0 || fd > 2) return fd;
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    close(fd);
    errno = e;
    return n;
}

int lmp_fd_hi2(int fds[2]) {
    for (int i = 0; i < 2; i++) {
        int n = lmp_fd_hi(fds[i]);
        if (n < 0) {
            int e = errno;
            close(fds[1 - i]);
            fds[0] = fds[1] = -1;
            errno = e;
            return -1;
        }
        fds[i] = n;
    }
    return 0;
}

/* ---- the descriptor reserve ------------------------------------------ */

/* Not a tracked descriptor: a fork child keeps its copy as its own
 * reserve.  The lock is reset in every forked child (below). */
static pthread_mutex_t reserve_lock = PTHREAD_MUTEX_INITIALIZER;
static int reserve_fd = -1, reserve_last = -1;

/* Around every fork, luamp's or a host's own (state.h): the forking
 * thread takes the lock, so the child inherits it free and the reserve
 * whole.  Registered when the library is loaded. */
static void reserve_atfork_prepare(void) { pthread_mutex_lock(&reserve_lock); }
static void reserve_atfork_parent(void) { pthread_mutex_unlock(&reserve_lock); }
static void reserve_atfork_child(void) { reserve_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER; }
__attribute__((constructor)) static void sys_install_atfork(void) {
    static const lmp_fork_hooks reserve = {reserve_atfork_prepare, reserve_atfork_parent, reserve_atfork_child};
    lmp_state_on_fork(LMP_STATE_RESERVE, &reserve);
}

int lmp_fd_reserve(void) {
    pthread_mutex_lock(&reserve_lock);
    int rc = 0;
    if (reserve_fd < 0) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) fd = lmp_fd_hi(fd);
        if (fd < 0) rc = -errno;
        else reserve_fd = fd;
    }
    pthread_mutex_unlock(&reserve_lock);
    return rc;
}

int lmp_fd_reserve_release(void) {
    pthread_mutex_lock(&reserve_lock);
    if (reserve_fd < 0) {
        pthread_mutex_unlock(&reserve_lock);
        return 0;
    }
    close(reserve_fd);
    reserve_last = reserve_fd;
    reserve_fd = -1;
    return 1;
}

void lmp_fd_reserve_retake(void) {
    /* the slot may have gone to another thread meanwhile: then the next
     * start takes one again, or refuses at the limit */
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) fd = lmp_fd_hi(fd);
    /* the same number as before if it is free (leak checks compare sets) */
    if (fd >= 0 && fd != reserve_last && fcntl(reserve_last, F_GETFD) < 0 && errno == EBADF &&
        dup3(fd, reserve_last, O_CLOEXEC) == reserve_last) {
        close(fd);
        fd = reserve_last;
    }
    reserve_fd = fd < 0 ? -1 : fd;
    pthread_mutex_unlock(&reserve_lock);
}

/* ---- pidfd --------------------------------------------------------- */

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static int pidfd_state = -1; /* -1 unknown, 0 no, 1 yes */

int lmp_have_pidfd(void) {
    if (pidfd_state >= 0) return pidfd_state;
    const char *force = getenv("LUAMP_NO_PIDFD");
    if (force && *force && strcmp(force, "0") != 0) return pidfd_state = 0;
    int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (fd < 0) return pidfd_state = 0;
    /* waitid(P_PIDFD) came in 5.4, pidfd_open in 5.3: probe the former
     * too.  Our own pid is not our child, so ECHILD means it is known. */
    siginfo_t si;
    int rc = waitid((idtype_t)P_PIDFD, (id_t)fd, &si, WEXITED | WNOHANG);
    int ok = rc == 0 || errno == ECHILD;
    close(fd);
    return pidfd_state = ok;
}

int lmp_pidfd_open(pid_t pid) {
    int fd = (int)syscall(SYS_pidfd_open, pid, 0); /* always O_CLOEXEC */
    if (fd >= 0) fd = lmp_fd_hi(fd);
    return fd < 0 ? -errno : fd;
}

int lmp_pidfd_send_signal(int pidfd, int sig) {
    return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 ? -errno : 0;
}

/* ---- signals ------------------------------------------------------- */

void lmp_kill_reap(pid_t pid) {
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
}

void lmp_signals_reset(void) {
    struct sigaction sa;
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        if (sigaction(s, NULL, &sa) != 0) continue; /* reserved by libc */
        if (!(sa.sa_flags & SA_SIGINFO) && (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN))
            continue;
        sa.sa_handler = SIG_DFL;
        sa.sa_flags = 0;
        sigemptyset(&sa.sa_mask);
        sigaction(s, &sa, NULL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* ---- waiting ------------------------------------------------------- */

int lmp_poll(struct pollfd *fds, int n, double timeout) {
    double deadline = timeout < 0 ? INFINITY : lmp_now() + timeout;
    for (;;) {
        int ms = -1;
        if (timeout >= 0) {
            double left = deadline - lmp_now();
            if (left < 0) left = 0;
            /* round up so we never wake just before the deadline */
            double m = ceil(left * 1000.0);
            ms = m > 2147483647.0 ? 2147483647 : (int)m;
        }
        int rc = poll(fds, (nfds_t)n, ms);
        if (rc >= 0) {
            if (rc == 0 && timeout >= 0 && lmp_now() < deadline) continue;
            return rc;
        }
        if (errno != EINTR) return -errno;
    }
}

/* ---- fault injection ----------------------------------------------- */

static struct {
    const char *op;
    int err, count;
} faults[] = {{"fork", 0, 0}, {"pipe", 0, 0}, {"pidfd", 0, 0}, {"dup", 0, 0}};
static int faults_armed; /* keeps the common path to one load */

int lmp_fault_set(const char *op, int err, int count) {
    for (size_t i = 0; i < sizeof faults / sizeof *faults; i++)
        if (strcmp(faults[i].op, op) == 0) {
            faults[i].err = err;
            faults[i].count = count;
            faults_armed = 0;
            for (size_t j = 0; j < sizeof faults / sizeof *faults; j++)
                faults_armed += faults[j].count > 0;
            return 0;
        }
    return -EINVAL;
}

int lmp_fault_hit(const char *op) {
    if (!faults_armed) return 0;
    for (size_t i = 0; i < sizeof faults / sizeof *faults; i++)
        if (faults[i].count > 0 && strcmp(faults[i].op, op) == 0) {
            if (--faults[i].count == 0) faults_armed--;
            return -faults[i].err;
        }
    return 0;
}
