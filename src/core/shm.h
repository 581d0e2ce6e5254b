/*
 * shm.h - plumbing for objects that live in shared memory: a sealed memfd
 * segment, robust process-shared mutexes, futex waits with monotonic
 * deadlines, and the calling thread's id.
 *
 * Provides: lmp_shm_* (create, attach, unmap), lmp_deadline/lmp_passed,
 * lmp_futex_wait/wake, lmp_robust_init/lock/trylock, lmp_tid.
 * Uses: Linux memfds, futexes, glibc robust mutexes.  Must never: include
 * lua.h, raise, exit, or register its descriptors with lmp_fd_track (a
 * forked child closes those, and a segment must keep working there).
 */
#ifndef LMP_SHM_H
#define LMP_SHM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

/* A new memfd of size bytes (rounded up to pages), sealed against
 * resizing (so no holder can make another's mapping SIGBUS), mapped
 * MAP_SHARED and zero-filled.  *fd is O_CLOEXEC.  Returns 0 or -errno. */
int lmp_shm_create(const char *name, size_t size, int *fd, void **addr);

/* Map a segment received from another process; *size gets its length.
 * Refuses (-EINVAL) a descriptor that is not a sealed regular file of at
 * least min bytes.  The descriptor stays the caller's.  Returns 0 or
 * -errno. */
int lmp_shm_attach(int fd, size_t min, void **addr, size_t *size);

/* Absolute CLOCK_MONOTONIC deadline timeout seconds from now in *ts;
 * returns NULL for "forever" (negative, or over 1e9 s).  NaN: now. */
const struct timespec *lmp_deadline(double timeout, struct timespec *ts);

/* 1 once the deadline has passed (never for NULL). */
int lmp_passed(const struct timespec *dl);

/* The sooner of dl and slice seconds from now, in *ts. */
const struct timespec *lmp_slice(const struct timespec *dl, double slice,
                                 struct timespec *ts);

/* Sleep until *word may differ from seen or the absolute deadline dl
 * (NULL: forever).  Woken, changed, EINTR and timeout all return 0 (the
 * caller rechecks); a real failure (ENOSYS under seccomp) is -errno. */
int lmp_futex_wait(atomic_uint *word, unsigned seen,
                   const struct timespec *dl);
void lmp_futex_wake(atomic_uint *word, int n);

/* A robust, process-shared mutex (recursive when asked).  Returns 0 or
 * -errno. */
int lmp_robust_init(pthread_mutex_t *m, int recursive);

/* Lock m until dl (NULL: forever; dl already passed: one try).  When the
 * previous owner died, marks it consistent and returns 1 with m held;
 * otherwise 0 (held), -ETIMEDOUT, or -errno. */
int lmp_robust_lock(pthread_mutex_t *m, const struct timespec *dl);

/* The calling thread's id, cached (reset in a fork child). */
pid_t lmp_tid(void);

#endif
