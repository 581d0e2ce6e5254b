/*
 * sync.h - locks, semaphores, events, conditions, barriers and shared
 * values across processes, robust to the death of any process using them.
 *
 * Provides: lmp_sync, one object in one shared segment (shm.h: a sealed
 * memfd mapped MAP_SHARED).  A handle survives fork as is; a spawned
 * process rebuilds one from the descriptor (lmp_sync_fd, then
 * lmp_sync_attach on the other side).  The engine under process.Lock,
 * RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier, Value
 * and Array (src/lua/lsync.c).
 * Uses: shm.h.  Must never: include lua.h, raise, exit, or register its
 * descriptors with lmp_fd_track.
 *
 * Death.  Liveness is read from the kernel's robust futex lists, never
 * from pids (which are reused):
 *  - A Lock or RLock is a robust process-shared pthread mutex, held by
 *    the thread that acquired it.  When that thread dies, the kernel marks
 *    the mutex and wakes one waiter; the next acquire gets -EOWNERDEAD,
 *    makes it consistent and releases it (so it does not hold it).
 *  - A process holding Semaphore units, waiting in a Condition or in a
 *    Barrier holds a "token": a robust mutex in a record of its own in the
 *    segment.  Others try-lock the tokens: EBUSY means alive, EOWNERDEAD
 *    dead.  A dead holder's units are given back (SysV SEM_UNDO), a dead
 *    Condition waiter is skipped by notify, a dead Barrier party breaks the
 *    barrier.  Waiters that sleep on a futex wake at least every
 *    LMP_SYNC_SLICE seconds to look, so nobody waits forever on the dead.
 *  - Every update of shared state is a single store, or made under a
 *    robust mutex in an order where dying between two stores leaves a state
 *    the next owner accepts as is.
 *
 * Timeouts are seconds on CLOCK_MONOTONIC (< 0: forever; 0: do not wait);
 * EINTR never cuts a wait short.
 */
#ifndef LMP_SYNC_H
#define LMP_SYNC_H

#include <stddef.h>
#include <stdint.h>

typedef struct lmp_sync lmp_sync;

enum {
    LMP_SYNC_LOCK = 1,
    LMP_SYNC_RLOCK,
    LMP_SYNC_SEM,
    LMP_SYNC_EVENT,
    LMP_SYNC_COND,
    LMP_SYNC_BARRIER,
    LMP_SYNC_SHARED
};

/* Element types of shared memory (the same numbers as luamp.h's
 * LUAMP_SHARED_*). */
enum {
    LMP_SHARED_INT64 = 1,
    LMP_SHARED_INT32 = 2,
    LMP_SHARED_UINT8 = 3,
    LMP_SHARED_DOUBLE = 4
};

/* How often a sleeper looks for dead processes (seconds). */
#define LMP_SYNC_SLICE 0.05

/* Waiters of one Condition at a time, and records of Semaphore holders. */
#define LMP_COND_WAITERS 128
#define LMP_SEM_HOLDERS 64

/* ---- lifetime (every kind) -------------------------------------------- */

/* Constructors: 0 and *out (transfer full, lmp_sync_free), or -errno
 * (memfd_create, mmap, -ENOMEM, -EINVAL for bad sizes). */
int lmp_lock_new(int recursive, lmp_sync **out);
/* value >= 0; bounded: release may not raise the value above it. */
int lmp_sem_new(int64_t value, int bounded, lmp_sync **out);
int lmp_event_new(lmp_sync **out);
int lmp_cond_new(lmp_sync **out);
/* parties >= 1 */
int lmp_barrier_new(uint32_t parties, lmp_sync **out);
/* n elements (n >= 1, at most 2^31) of type LMP_SHARED_*, zero-filled */
int lmp_shared_new(int type, size_t n, lmp_sync **out);

/* Rebuild a handle from a descriptor received over exec.  On success the
 * handle owns fd (FD_CLOEXEC again); on failure the caller keeps it.
 * Returns 0; -EINVAL if fd is not a luamp object of this build; -errno. */
int lmp_sync_attach(int fd, lmp_sync **out);

int lmp_sync_kind(const lmp_sync *s);
/* The descriptor (still owned by s), to pass to a spawned child. */
int lmp_sync_fd(const lmp_sync *s);

/* Unmap this handle but leave its descriptor open; returns it. */
int lmp_sync_detach(lmp_sync *s);

/* Unmap and close this process's handle (NULL: no-op).  A lock the
 * calling thread holds is released first and its Semaphore units given
 * back (a robust mutex must not stay locked in memory that is gone). */
void lmp_sync_free(lmp_sync *s);

/* ---- Lock, RLock -------------------------------------------------------- */

/* 0 (held); -ETIMEDOUT; -EOWNERDEAD: the holder died, the lock is free
 * again and NOT held by the caller (reported once); -errno.  A plain Lock
 * acquired again by its holder waits (for the timeout). */
int lmp_lock_acquire(lmp_sync *s, double timeout);
/* 0; -EPERM when the calling thread does not hold it. */
int lmp_lock_release(lmp_sync *s);
/* 1 if some thread holds it (an RLock: held by anyone), else 0. */
int lmp_lock_locked(lmp_sync *s);
/* Recursion depth held by the calling thread (0: not held). */
unsigned lmp_lock_owned(lmp_sync *s);

/* ---- Semaphore ---------------------------------------------------------- */

/* 0 (one unit taken); -ETIMEDOUT; -errno. */
int lmp_sem_acquire(lmp_sync *s, double timeout);
/* Give back k >= 1 units: 0; -EOVERFLOW when a bounded semaphore would
 * exceed its initial value, or any would exceed INT64_MAX (nothing
 * changed). */
int lmp_sem_release(lmp_sync *s, int64_t k);
/* Units free now (dead holders' units given back first). */
int64_t lmp_sem_value(lmp_sync *s);

/* ---- Event -------------------------------------------------------------- */

void lmp_event_set(lmp_sync *s);
void lmp_event_clear(lmp_sync *s);
int lmp_event_is_set(lmp_sync *s);
/* 0 once set; -ETIMEDOUT. */
int lmp_event_wait(lmp_sync *s, double timeout);

/* ---- Condition (over a Lock or RLock handle the caller holds) ---------- */

/* Release lock fully, wait for a notify, take lock back at the same
 * depth.  0 notified; -ETIMEDOUT; -EOWNERDEAD: notified or not, lock is
 * held again but its previous holder died meanwhile; -EPERM: the caller
 * does not hold lock; -EAGAIN: LMP_COND_WAITERS already wait. */
int lmp_cond_wait(lmp_sync *c, lmp_sync *lock, double timeout);
/* Wake up to n waiters (n < 0: all), oldest first, skipping the dead.
 * 0; -EPERM when the caller does not hold lock. */
int lmp_cond_notify(lmp_sync *c, lmp_sync *lock, long n);

/* ---- Barrier ------------------------------------------------------------ */

/* Arrive.  *index gets the arrival index (0 first).  Returns 0 when all
 * parties arrived; 1 when the caller is the last and has_action: it must
 * run the action and call lmp_barrier_finish; -ETIMEDOUT (the barrier is
 * now broken); -EPIPE: broken (before or while waiting, by abort, reset,
 * a timeout elsewhere or a party's death); -EDEADLK: the caller is running
 * this barrier's action, which cannot end while it waits: the barrier is
 * now broken (the other parties get -EPIPE), nothing waited. */
int lmp_barrier_wait(lmp_sync *s, double timeout, int has_action,
                     uint32_t *index);
/* After 1 from wait: ok releases everyone (0), !ok breaks the barrier.
 * -EPIPE when it broke meanwhile (or !ok). */
int lmp_barrier_finish(lmp_sync *s, int ok);
void lmp_barrier_abort(lmp_sync *s);
void lmp_barrier_reset(lmp_sync *s);
uint32_t lmp_barrier_parties(lmp_sync *s);
uint32_t lmp_barrier_waiting(lmp_sync *s);
int lmp_barrier_broken(lmp_sync *s);

/* ---- shared memory ------------------------------------------------------ */

/* The elements (8-byte aligned, valid while s is), their type and count. */
void *lmp_shared_data(lmp_sync *s, int *type, size_t *n);

#endif
