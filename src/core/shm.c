/*
 * shm.c - shared-segment plumbing (see shm.h).
 */
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "state.h"
#include "sys.h"

#define PAGE 4096u

int lmp_shm_create(const char *name, size_t size, int *fd, void **addr) {
    size = (size + PAGE - 1) & ~(size_t)(PAGE - 1);
    int f = lmp_fd_hi(memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)); /* never 0-2 */
    if (f < 0) return -errno;
    void *m = MAP_FAILED;
    if (ftruncate(f, (off_t)size) < 0 ||
        fcntl(f, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0 ||
        (m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0)) ==
            MAP_FAILED) {
        int e = errno;
        close(f);
        return -e;
    }
    *fd = f;
    *addr = m;
    return 0;
}

int lmp_shm_attach(int fd, size_t min, void **addr, size_t *size) {
    struct stat st;
    if (fstat(fd, &st) < 0) return -errno;
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size < min ||
        st.st_size % PAGE != 0)
        return -EINVAL;
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK)) return -EINVAL;
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE,
                   MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return -errno;
    *addr = m;
    *size = (size_t)st.st_size;
    return 0;
}

const struct timespec *lmp_deadline(double timeout, struct timespec *ts) {
    if (timeout != timeout) timeout = 0;
    if (timeout < 0 || timeout > 1e9) return NULL;
    clock_gettime(CLOCK_MONOTONIC, ts);
    time_t sec = (time_t)timeout;
    ts->tv_sec += sec;
    ts->tv_nsec += (long)((timeout - (double)sec) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
    return ts;
}

static int before(const struct timespec *a, const struct timespec *b) {
    return a->tv_sec < b->tv_sec ||
           (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

int lmp_passed(const struct timespec *dl) {
    if (!dl) return 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return !before(&now, dl);
}

const struct timespec *lmp_slice(const struct timespec *dl, double slice,
                                 struct timespec *ts) {
    lmp_deadline(slice, ts);
    return dl && before(dl, ts) ? dl : ts;
}

int lmp_futex_wait(atomic_uint *word, unsigned seen,
                   const struct timespec *dl) {
    if (syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET, seen, dl,
                NULL, FUTEX_BITSET_MATCH_ANY) == 0)
        return 0;
    int e = errno;
    return e == EAGAIN || e == EINTR || e == ETIMEDOUT ? 0 : -e;
}

void lmp_futex_wake(atomic_uint *word, int n) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
}

int lmp_robust_init(pthread_mutex_t *m, int recursive) {
    pthread_mutexattr_t ma;
    int rc = pthread_mutexattr_init(&ma);
    if (rc) return -rc;
    rc = pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    if (!rc) rc = pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    if (!rc && recursive)
        rc = pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    if (!rc) rc = pthread_mutex_init(m, &ma);
    pthread_mutexattr_destroy(&ma);
    return -rc;
}

/* A mutex whose owner died and that its repairer could not make
 * consistent is ENOTRECOVERABLE for good; that is reported, never
 * retried. */
int lmp_robust_lock(pthread_mutex_t *m, const struct timespec *dl) {
    int rc;
    if (dl && lmp_passed(dl)) {
        rc = pthread_mutex_trylock(m);
        if (rc == EBUSY) return -ETIMEDOUT;
    } else {
        rc = dl ? pthread_mutex_clocklock(m, CLOCK_MONOTONIC, dl)
                : pthread_mutex_lock(m);
    }
    if (rc == EOWNERDEAD) {
        rc = pthread_mutex_consistent(m);
        if (rc) {
            pthread_mutex_unlock(m);
            return -rc;
        }
        return 1;
    }
    return -rc;
}

/* glibc's gettid() is a system call every time; the fast paths compare
 * owners, so the id is cached per thread and forgotten in a fork child
 * (which has a new one). */
static __thread pid_t tid_cache __attribute__((tls_model("initial-exec")));

static void tid_forget(void) { tid_cache = 0; }
__attribute__((constructor)) static void tid_register(void) {
    static const lmp_fork_hooks h = {NULL, NULL, tid_forget};
    lmp_state_on_fork(LMP_STATE_TID, &h);
}

pid_t lmp_tid(void) {
    if (__builtin_expect(tid_cache == 0, 0)) {
        tid_cache = (pid_t)syscall(SYS_gettid);
    }
    return tid_cache;
}
