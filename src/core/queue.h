/*
 * queue.h - a multi-producer, multi-consumer byte-message queue shared
 * between processes.
 *
 * Provides: lmp_queue, the engine under the Lua process.Queue.  A queue is
 * two memfds: a one-page header (a robust, process-shared mutex, the queue
 * state and two futex event counters) mapped MAP_SHARED, and a spool file
 * that holds the messages (an 8-byte length, then the bytes) between a head
 * and a tail offset.  A handle survives fork as is (the child uses its copy
 * of the pointer); a spawned process rebuilds one from the two descriptors
 * (lmp_queue_fds, then lmp_queue_attach on the other side).
 * Uses: buf.h, pthreads, Linux futexes and memfds.  Must never: include
 * lua.h, raise, exit, or register its descriptors with lmp_fd_track (a
 * forked child closes those, and a queue must keep working in the child).
 *
 * Guarantees:
 *  - FIFO over all producers: messages are delivered in the order their
 *    puts took the lock; each message goes to exactly one get.
 *  - A process killed at any point (SIGKILL included) leaves the queue
 *    usable: a put that had not committed leaves no trace, a get that had
 *    not committed leaves its message in the queue.  The next process to
 *    lock sees EOWNERDEAD, marks the mutex consistent and goes on.
 *  - Waiting is a futex eventcount (never polling); a process killed while
 *    waiting leaves nothing behind but a waiter count that is one too high,
 *    which only costs later wakers a spurious FUTEX_WAKE.
 *  - Timeouts are seconds on CLOCK_MONOTONIC and also bound the wait for
 *    the lock, with 0.1 s of grace (so a put or get with timeout 0 is not
 *    refused because another process held the lock for a microsecond);
 *    a call never reports a timeout before it has elapsed.
 *  - Task accounting for JoinableQueue: every put counts one unfinished
 *    task in the same commit as the message (a producer killed mid-put
 *    leaves neither), lmp_queue_task_done and lmp_queue_join settle them.
 *  - Descriptors are O_CLOEXEC; exec does not leak them unless passed on.
 *
 * Not guaranteed: a process blocked in SIGSTOP while holding the lock
 * stalls everyone else (callers with a timeout get -ETIMEDOUT); maxsize
 * counts messages, not bytes.
 */
#ifndef LMP_QUEUE_H
#define LMP_QUEUE_H

#include <stddef.h>

#include "buf.h"

typedef struct lmp_queue lmp_queue;

/* Timeout meaning "wait forever" (any negative value, or one over 1e9
 * seconds, does the same; the binding clamps a user's negative timeouts to
 * 0, i.e. "do not wait").  Signals do not cut a wait short: EINTR is
 * retried with the time that is left. */
#define LMP_FOREVER (-1.0)

/* Create a queue holding at most maxsize messages (0: unbounded, put never
 * blocks).  *out (transfer full) is freed with lmp_queue_free.
 * Returns 0, or -errno from memfd_create/ftruncate/mmap, -ENOMEM. */
int lmp_queue_new(size_t maxsize, lmp_queue **out);

/* Append the n bytes at p as one message (n may be 0; messages over 2 GB
 * are supported, each read/write is looped).  Blocks while the queue is
 * full, at most timeout seconds (0: not at all; < 0: forever).
 * Returns 0; -ETIMEDOUT; -EPIPE if this handle was closed; -EMSGSIZE if
 * the spool offset would overflow; the spool's write error (-ENOSPC,
 * -EFBIG under RLIMIT_FSIZE with SIGXFSZ ignored, -ENOMEM, -EIO) with the
 * queue unchanged; -ENOTRECOVERABLE, -EINVAL. */
int lmp_queue_put(lmp_queue *q, const void *p, size_t n, double timeout);

/* Remove the oldest message and append its bytes to out (out->len grows
 * by the message length; nothing else is touched).  Blocks while empty, at
 * most timeout seconds as for put.
 * Returns 0; -ETIMEDOUT; -EPIPE if this handle was closed; -ENOMEM if out
 * cannot grow (the message stays queued); -EIO on a spool read error or
 * a corrupt spool (the message stays queued). */
int lmp_queue_get(lmp_queue *q, lmp_buf *out, double timeout);

/* 1 if the queue holds no message, 0 if it holds some.  Lock-free snapshot
 * (like Python's Queue.empty, it may be stale by the time it returns). */
int lmp_queue_empty(lmp_queue *q);

/* Number of messages queued; a lock-free snapshot as for lmp_queue_empty. */
long lmp_queue_size(lmp_queue *q);

/* 1 if a bounded queue holds maxsize messages (lock-free snapshot). */
int lmp_queue_full(lmp_queue *q);

/* One task taken from the queue is done.  Returns 0; -EOVERFLOW when no
 * put is left unfinished (Python's "task_done() called too many times");
 * -errno from the lock. */
int lmp_queue_task_done(lmp_queue *q);

/* Wait until every message ever put has been matched by a task_done, at
 * most timeout seconds.  Returns 0, -ETIMEDOUT, -errno. */
int lmp_queue_join(lmp_queue *q, double timeout);

/* Mark this handle closed (Lua's Queue:close()): later puts and gets on it
 * return -EPIPE.  Other handles, in this or other processes, and messages
 * already queued are unaffected.  The handle still needs lmp_queue_free. */
void lmp_queue_close(lmp_queue *q);

/* Unmap and close this process's handle (NULL is a no-op).  Only this
 * handle goes: other processes (and a forked child's copy) keep working;
 * the kernel frees the queue when the last handle anywhere is gone.  Must
 * not be called while another thread of this process uses q. */
void lmp_queue_free(lmp_queue *q);

/* The header and spool descriptors (still owned by q), for passing to a
 * spawned child.  Both are O_CLOEXEC: the spawner dup2()s them into the
 * child's table.  Returns 0. */
int lmp_queue_fds(const lmp_queue *q, int fds[2]);

/* Rebuild a handle from a header and a spool descriptor (inherited over
 * exec).  On success the handle owns both descriptors (lmp_queue_free
 * closes them) and marks them FD_CLOEXEC again; on failure the caller
 * keeps them.  Returns 0; -EINVAL if header_fd is not a luamp queue header
 * of this build, or spool_fd is not a regular file; -errno from
 * fstat/mmap, -ENOMEM. */
int lmp_queue_attach(int header_fd, int spool_fd, lmp_queue **out);

/* ---- testing only ------------------------------------------------------
 * When set, called by a process holding the queue lock at the last point
 * before a put or get commits, so a test can park the process there and
 * kill it.  NULL (the default) in production. */
enum { LMP_QHOOK_PUT_WRITTEN = 1, LMP_QHOOK_GET_READ = 2 };
extern void (*lmp_queue_test_hook)(int point);

#endif
