/*
 * queue.c - process-shared MPMC byte-message queue (see queue.h).
 *
 * Layout.  The header memfd holds one struct qshared (sealed against
 * resizing, so no holder can make another SIGBUS).  The spool memfd holds
 * messages as [u64 length][bytes], back to back from head to tail; it is
 * only ever touched with preadv/pwritev at explicit offsets, so the shared
 * file offset of the descriptor never matters.
 *
 * Crash consistency.  Everything is done under one robust mutex, and every
 * change of the queue state is committed by a single store: the state
 * lives twice (st[0], st[1]); an update writes the copy that is not live
 * and then flips `cur`.  A process killed anywhere before the flip leaves
 * the old state, one killed after it the new one; there is no half-updated
 * head/tail/count pair for the next owner (who gets EOWNERDEAD) to repair.
 * A put writes its whole message beyond tail before the flip, so a killed
 * producer leaves at most garbage past tail, which the next put overwrites.
 *
 * Waiting.  Two eventcounts: put_seq (consumers wait on it) and get_seq
 * (producers wait on it).  A waiter reads the counter under the lock,
 * unlocks and FUTEX_WAITs (shared, not PRIVATE) for it to change; a state
 * change bumps the counter under the same lock, so no wake-up can fall
 * between the check and the sleep.  The changer bumps and wakes *before*
 * it commits and unlocks: if it is killed after the wake the sleepers are
 * already up and meet EOWNERDEAD, whose repair wakes everyone again; if it
 * is killed before the bump nothing was committed.  (Waking after unlock
 * would leave a window where a killed producer's message sits in the queue
 * while consumers sleep.)  Woken waiters usually reach the mutex after the
 * owner has left it: a wake-up takes microseconds, the commit nanoseconds.
 */
#include "queue.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "sys.h"

#define QMAGIC 0x51504d4cu /* "LMPQ" */
#define QVERSION 2u
#define HDR_SIZE 4096u     /* one page; struct qshared is far smaller */
#define SLACK (1u << 20)   /* consumed spool bytes kept before release */
#define PAGE 4096u         /* granularity of hole punching */
#define PEEK 4096u         /* payload bytes read along with the length */
#define LENSZ 8u           /* the u64 length prefix */

struct qstate {
    uint64_t head;    /* spool offset of the oldest message */
    uint64_t tail;    /* spool offset where the next message goes */
    uint64_t count;   /* messages between head and tail */
    uint64_t punched; /* [0, punched) already given back; page aligned */
    uint64_t unfinished; /* puts not yet matched by a task_done */
};

struct qshared {
    uint32_t magic, version;     /* written last at creation */
    uint32_t hdr_size, mutex_size;
    uint64_t maxsize;            /* 0: unbounded; constant */
    pthread_mutex_t lock;        /* robust, process-shared */
    atomic_uint cur;             /* index of the live state */
    struct qstate st[2];
    atomic_uint put_seq;         /* futex: bumped by puts */
    atomic_uint get_seq;         /* futex: bumped by gets */
    atomic_uint cons_waiting;    /* sleepers on put_seq (may be high) */
    atomic_uint prod_waiting;    /* sleepers on get_seq (may be high) */
    atomic_long nmsg;            /* snapshot of count for empty/size */
    atomic_uint done_seq;        /* futex: bumped when unfinished hits 0 */
    atomic_uint join_waiting;    /* sleepers on done_seq (may be high) */
};

_Static_assert(sizeof(struct qshared) <= HDR_SIZE, "header fits a page");
_Static_assert(sizeof(atomic_uint) == 4, "futex words are 32-bit");

struct lmp_queue {
    struct qshared *sh;
    int hfd, sfd;
    int closed;
};

void (*lmp_queue_test_hook)(int point) = NULL;

/* ---- time, futex, lock ------------------------------------------------ */

/* Absolute CLOCK_MONOTONIC deadline for timeout seconds in *ts; NULL for
 * "forever" (negative, or so large it cannot matter: over 30 years). */
static const struct timespec *deadline(double timeout, struct timespec *ts) {
    if (timeout != timeout) timeout = 0; /* NaN: do not wait */
    if (timeout < 0 || timeout > 1e9) return NULL;
    clock_gettime(CLOCK_MONOTONIC, ts);
    time_t sec = (time_t)timeout;
    long ns = (long)((timeout - (double)sec) * 1e9);
    ts->tv_sec += sec;
    ts->tv_nsec += ns;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
    return ts;
}

static int passed(const struct timespec *dl) {
    if (!dl) return 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > dl->tv_sec ||
           (now.tv_sec == dl->tv_sec && now.tv_nsec >= dl->tv_nsec);
}

/* Sleep until *word may differ from seen, or the deadline.  Woken,
 * EAGAIN (it already changed), EINTR and ETIMEDOUT all mean "recheck under
 * the lock": 0.  Anything else (a seccomp filter's ENOSYS, say) is returned
 * so that the caller fails instead of spinning.  The absolute deadline
 * makes a retry after EINTR wait only for the time that is left. */
static int futex_wait(atomic_uint *word, unsigned seen,
                      const struct timespec *dl) {
    if (syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET, seen, dl,
                NULL, FUTEX_BITSET_MATCH_ANY) == 0)
        return 0;
    int e = errno;
    return e == EAGAIN || e == EINTR || e == ETIMEDOUT ? 0 : -e;
}

static void futex_wake_all(atomic_uint *word) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Wake every sleeper of both kinds (used after a repair). */
static void wake_everyone(struct qshared *sh) {
    atomic_fetch_add(&sh->put_seq, 1);
    atomic_fetch_add(&sh->get_seq, 1);
    atomic_fetch_add(&sh->done_seq, 1);
    futex_wake_all(&sh->put_seq);
    futex_wake_all(&sh->get_seq);
    futex_wake_all(&sh->done_seq);
}

/* Take the lock, giving up at the deadline (NULL: never).  When the
 * previous owner died holding it, the state is already consistent (see the
 * file comment): refresh the size snapshot and wake everyone, since the
 * dead owner may have bumped a counter and died before waking. */
static int qlock(struct qshared *sh, const struct timespec *dl) {
    struct timespec grace; /* see queue.h: a busy lock is not a full queue */
    if (dl) {
        grace = *dl; /* + 0.1 s */
        grace.tv_nsec += 100000000L;
        if (grace.tv_nsec >= 1000000000L) {
            grace.tv_sec++;
            grace.tv_nsec -= 1000000000L;
        }
        dl = &grace;
    }
    int rc = dl ? pthread_mutex_clocklock(&sh->lock, CLOCK_MONOTONIC, dl)
                : pthread_mutex_lock(&sh->lock);
    if (rc == EOWNERDEAD) {
        rc = pthread_mutex_consistent(&sh->lock);
        if (rc) {
            pthread_mutex_unlock(&sh->lock);
            return -rc;
        }
        unsigned c = atomic_load(&sh->cur) & 1u;
        atomic_store(&sh->nmsg, (long)sh->st[c].count);
        wake_everyone(sh);
        return 0;
    }
    return -rc;
}

static void qunlock(struct qshared *sh) { pthread_mutex_unlock(&sh->lock); }

static struct qstate live(struct qshared *sh) {
    return sh->st[atomic_load_explicit(&sh->cur, memory_order_acquire) & 1u];
}

/* The single store that makes an update visible (see the file comment). */
static void commit(struct qshared *sh, const struct qstate *s) {
    unsigned next = (atomic_load(&sh->cur) & 1u) ^ 1u;
    sh->st[next] = *s;
    atomic_store_explicit(&sh->cur, next, memory_order_release);
    atomic_store(&sh->nmsg, (long)s->count);
}

/* Wait, with the lock held, until the state changes (the counter moves).
 * Returns with the lock held (0) or not held (-errno, -ETIMEDOUT).  The
 * waiter count is raised under the lock, so a changer that reads 0 under
 * the lock knows no one can be asleep on the old value; it is lowered
 * without the lock, so a waiter killed in its sleep only leaves it high. */
static int wait_change(struct qshared *sh, atomic_uint *seq,
                       atomic_uint *waiting, const struct timespec *dl) {
    if (passed(dl)) {
        qunlock(sh);
        return -ETIMEDOUT;
    }
    unsigned seen = atomic_load(seq);
    atomic_fetch_add(waiting, 1);
    qunlock(sh);
    int rc = futex_wait(seq, seen, dl);
    atomic_fetch_sub(waiting, 1);
    return rc ? rc : qlock(sh, dl);
}

/* ---- spool I/O ---------------------------------------------------------- */

/* preadv/pwritev until every byte is moved.  The kernel moves at most
 * 0x7ffff000 bytes per call, so messages over 2 GB take several calls.
 * A read hitting end of file means the spool is not what the state says:
 * -EIO. */
static int xfer(int fd, struct iovec *iov, int cnt, uint64_t off, int wr) {
    for (;;) {
        while (cnt > 0 && iov->iov_len == 0) {
            iov++;
            cnt--;
        }
        if (cnt == 0) return 0;
        ssize_t r = wr ? pwritev(fd, iov, cnt, (off_t)off)
                       : preadv(fd, iov, cnt, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (r == 0) return -EIO;
        off += (uint64_t)r;
        size_t k = (size_t)r;
        while (cnt > 0 && k >= iov->iov_len) {
            k -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + k;
            iov->iov_len -= k;
        }
    }
}

/* ---- put / get ------------------------------------------------------------ */

int lmp_queue_put(lmp_queue *q, const void *p, size_t n, double timeout) {
    if (!q || (!p && n)) return -EINVAL;
    if (q->closed) return -EPIPE;
    if ((uint64_t)n > (uint64_t)INT64_MAX - LENSZ) return -EMSGSIZE;
    struct qshared *sh = q->sh;
    struct timespec ts;
    const struct timespec *dl = deadline(timeout, &ts);
    int rc = qlock(sh, dl);
    if (rc) return rc;
    struct qstate s;
    for (;;) {
        s = live(sh);
        if (sh->maxsize == 0 || s.count < sh->maxsize) break;
        rc = wait_change(sh, &sh->get_seq, &sh->prod_waiting, dl);
        if (rc) return rc;
    }
    if ((uint64_t)n > (uint64_t)INT64_MAX - LENSZ - s.tail) {
        qunlock(sh);
        return -EMSGSIZE;
    }
    /* The whole message goes past tail first; on failure (ENOSPC, EFBIG,
     * ...) nothing is committed and the queue is as it was. */
    uint64_t len = n;
    struct iovec iov[2] = {{&len, LENSZ}, {(void *)(uintptr_t)p, n}};
    rc = xfer(q->sfd, iov, n ? 2 : 1, s.tail, 1);
    if (rc) {
        qunlock(sh);
        return rc;
    }
    if (lmp_queue_test_hook) lmp_queue_test_hook(LMP_QHOOK_PUT_WRITTEN);
    s.tail += LENSZ + n;
    s.count++;
    s.unfinished++;
    atomic_fetch_add(&sh->put_seq, 1);
    if (atomic_load(&sh->cons_waiting)) futex_wake_all(&sh->put_seq);
    commit(sh, &s);
    qunlock(sh);
    return 0;
}

/* Read the message at s->head into out's spare room; *lenp gets its
 * length.  The length and up to PEEK payload bytes come in one preadv, so
 * a small message costs one system call. */
static int read_msg(lmp_queue *q, const struct qstate *s, lmp_buf *out,
                    uint64_t *lenp) {
    uint64_t avail = s->tail - s->head;
    if (s->tail < s->head || avail < LENSZ) return -EIO;
    size_t peek = avail - LENSZ < PEEK ? (size_t)(avail - LENSZ) : PEEK;
    int rc = lmp_buf_reserve(out, peek);
    if (rc) return rc;
    uint64_t len = 0;
    struct iovec iov[2] = {{&len, LENSZ}, {NULL, peek}};
    if (peek) iov[1].iov_base = lmp_buf_tail(out);
    rc = xfer(q->sfd, iov, peek ? 2 : 1, s->head, 0);
    if (rc) return rc;
    if (len > avail - LENSZ || len > SIZE_MAX) return -EIO;
    if (len > peek) { /* re-read all of it: simpler than splicing */
        rc = lmp_buf_reserve(out, (size_t)len);
        if (rc) return rc;
        struct iovec big = {lmp_buf_tail(out), (size_t)len};
        rc = xfer(q->sfd, &big, 1, s->head + LENSZ, 0);
        if (rc) return rc;
    }
    *lenp = len;
    return 0;
}

/* Spool space: when the queue drains, offsets restart at 0 and a spool
 * over SLACK is truncated (it is otherwise reused in place, which is
 * cheaper than giving pages back on every ping-pong).  A queue that never
 * drains would grow its spool forever, so consumed whole pages are punched
 * out once SLACK of them have gathered.  Only bytes before the *old* head
 * are punched: the message being taken is still live until the commit. */
int lmp_queue_get(lmp_queue *q, lmp_buf *out, double timeout) {
    if (!q || !out) return -EINVAL;
    if (q->closed) return -EPIPE;
    struct qshared *sh = q->sh;
    struct timespec ts;
    const struct timespec *dl = deadline(timeout, &ts);
    int rc = qlock(sh, dl);
    if (rc) return rc;
    struct qstate s;
    for (;;) {
        s = live(sh);
        if (s.count > 0) break;
        rc = wait_change(sh, &sh->put_seq, &sh->cons_waiting, dl);
        if (rc) return rc;
    }
    uint64_t len = 0;
    rc = read_msg(q, &s, out, &len);
    if (rc) {
        qunlock(sh);
        return rc;
    }
    if (lmp_queue_test_hook) lmp_queue_test_hook(LMP_QHOOK_GET_READ);
    uint64_t old_head = s.head;
    int shrink = 0;
    s.head += LENSZ + len;
    s.count--;
    if (s.count == 0) {
        shrink = s.tail > SLACK;
        s.head = s.tail = s.punched = 0;
    } else {
        uint64_t upto = old_head & ~(uint64_t)(PAGE - 1);
        if (upto > s.punched && upto - s.punched >= SLACK &&
            fallocate(q->sfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      (off_t)s.punched, (off_t)(upto - s.punched)) == 0)
            s.punched = upto;
    }
    atomic_fetch_add(&sh->get_seq, 1);
    if (atomic_load(&sh->prod_waiting)) futex_wake_all(&sh->get_seq);
    commit(sh, &s);
    /* Still under the lock: no producer may write the spool meanwhile. */
    if (shrink) (void)ftruncate(q->sfd, 0);
    qunlock(sh);
    out->len += (size_t)len;
    return 0;
}

int lmp_queue_full(lmp_queue *q) {
    return q->sh->maxsize && (uint64_t)atomic_load(&q->sh->nmsg) >= q->sh->maxsize;
}

int lmp_queue_task_done(lmp_queue *q) {
    struct qshared *sh = q->sh;
    int rc = qlock(sh, NULL);
    if (rc) return rc;
    struct qstate s = live(sh);
    if (s.unfinished == 0) {
        qunlock(sh);
        return -EOVERFLOW;
    }
    s.unfinished--;
    if (s.unfinished == 0) {
        atomic_fetch_add(&sh->done_seq, 1);
        if (atomic_load(&sh->join_waiting)) futex_wake_all(&sh->done_seq);
    }
    commit(sh, &s);
    qunlock(sh);
    return 0;
}

int lmp_queue_join(lmp_queue *q, double timeout) {
    struct qshared *sh = q->sh;
    struct timespec ts;
    const struct timespec *dl = deadline(timeout, &ts);
    int rc = qlock(sh, dl);
    if (rc) return rc;
    while (live(sh).unfinished > 0) {
        rc = wait_change(sh, &sh->done_seq, &sh->join_waiting, dl);
        if (rc) return rc;
    }
    qunlock(sh);
    return 0;
}

int lmp_queue_empty(lmp_queue *q) { return atomic_load(&q->sh->nmsg) == 0; }

long lmp_queue_size(lmp_queue *q) { return atomic_load(&q->sh->nmsg); }

void lmp_queue_close(lmp_queue *q) {
    if (q) q->closed = 1;
}

/* ---- lifetime -------------------------------------------------------- */

static lmp_queue *handle_new(void) {
    lmp_queue *q = calloc(1, sizeof *q);
    if (q) q->hfd = q->sfd = -1;
    return q;
}

void lmp_queue_free(lmp_queue *q) {
    if (!q) return;
    if (q->sh) munmap(q->sh, HDR_SIZE);
    if (q->hfd >= 0) close(q->hfd);
    if (q->sfd >= 0) close(q->sfd);
    free(q);
}

/* The header is sealed at its size: a holder of the descriptor cannot
 * shrink it under another process's mapping (which would SIGBUS it). */
int lmp_queue_new(size_t maxsize, lmp_queue **out) {
    if (!out) return -EINVAL;
    *out = NULL;
    lmp_queue *q = handle_new();
    if (!q) return -ENOMEM;
    int rc = 0;
    pthread_mutexattr_t ma;
    q->hfd = lmp_fd_hi(memfd_create("luamp-queue", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (q->hfd < 0) goto fail_errno;
    q->sfd = lmp_fd_hi(memfd_create("luamp-queue-spool", MFD_CLOEXEC));
    if (q->sfd < 0) goto fail_errno;
    if (ftruncate(q->hfd, HDR_SIZE) < 0) goto fail_errno;
    if (fcntl(q->hfd, F_ADD_SEALS,
              F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        goto fail_errno;
    void *m = mmap(NULL, HDR_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                   q->hfd, 0);
    if (m == MAP_FAILED) goto fail_errno;
    q->sh = m; /* zero-filled by the kernel */
    struct qshared *sh = q->sh;
    if ((rc = pthread_mutexattr_init(&ma)) != 0) goto fail;
    rc = pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    if (!rc) rc = pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    if (!rc) rc = pthread_mutex_init(&sh->lock, &ma);
    pthread_mutexattr_destroy(&ma);
    if (rc) goto fail;
    sh->maxsize = maxsize;
    sh->hdr_size = HDR_SIZE;
    sh->mutex_size = (uint32_t)sizeof(pthread_mutex_t);
    sh->version = QVERSION;
    atomic_thread_fence(memory_order_seq_cst); /* everything above first */
    sh->magic = QMAGIC;
    *out = q;
    return 0;
fail_errno:
    rc = errno;
fail:
    lmp_queue_free(q);
    return -rc;
}

int lmp_queue_fds(const lmp_queue *q, int fds[2]) {
    fds[0] = q->hfd;
    fds[1] = q->sfd;
    return 0;
}

int lmp_queue_attach(int header_fd, int spool_fd, lmp_queue **out) {
    if (!out) return -EINVAL;
    *out = NULL;
    struct stat hs, ss;
    if (fstat(header_fd, &hs) < 0 || fstat(spool_fd, &ss) < 0) return -errno;
    if (!S_ISREG(hs.st_mode) || !S_ISREG(ss.st_mode) ||
        hs.st_size != HDR_SIZE)
        return -EINVAL;
    int seals = fcntl(header_fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK)) return -EINVAL;
    void *m = mmap(NULL, HDR_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                   header_fd, 0);
    if (m == MAP_FAILED) return -errno;
    struct qshared *sh = m;
    if (sh->magic != QMAGIC || sh->version != QVERSION ||
        sh->hdr_size != HDR_SIZE ||
        sh->mutex_size != (uint32_t)sizeof(pthread_mutex_t)) {
        munmap(m, HDR_SIZE);
        return -EINVAL;
    }
    lmp_queue *q = handle_new();
    if (!q) {
        munmap(m, HDR_SIZE);
        return -ENOMEM;
    }
    /* Inherited over exec, they lost O_CLOEXEC; put it back. */
    fcntl(header_fd, F_SETFD, FD_CLOEXEC);
    fcntl(spool_fd, F_SETFD, FD_CLOEXEC);
    q->sh = sh;
    q->hfd = header_fd;
    q->sfd = spool_fd;
    *out = q;
    return 0;
}
