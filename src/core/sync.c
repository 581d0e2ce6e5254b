/*
 * sync.c - cross-process synchronisation objects (see sync.h).
 *
 * Layout.  A segment starts with struct hdr (checked by attach), then the
 * kind's body at BODY.  Shared values keep their elements at DATA.  A
 * handle copies what it needs to stay in bounds (kind, element count, slot
 * count) at creation or attach and never trusts the segment for it again:
 * every process that can write the segment could corrupt it.
 *
 * Internal mutexes (Semaphore, Barrier) are held for a few instructions;
 * they are taken with the caller's deadline plus 0.1 s of grace, so a
 * "do not wait" call is not refused because another process was inside
 * for a microsecond, and a holder stopped with SIGSTOP still cannot keep
 * a caller past its timeout by more than that.
 */
#include "sync.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shm.h"

#define MAGIC 0x53504d4cu /* "LMPS" */
#define VERSION 1u
#define BODY 64u
#define DATA 128u
#define MAXSLOTS 4096u

struct hdr {
    uint32_t magic, version, kind, mutex_size;
    uint64_t size;
    uint32_t a, b; /* kind-specific sizes: element type and count, slots */
};

struct slock {
    pthread_mutex_t m;
    uint32_t depth;   /* written and read by the holder only */
    atomic_uint died; /* a death seen by locked(): the next acquire says so */
};

struct token { /* a record held by a live process */
    atomic_int tid;
    atomic_uint state; /* cond/barrier slots: 0 free, 1 waiting, 2 broken */
    uint32_t ticket;   /* cond: the waiter's ticket; barrier: generation */
    uint32_t pad;
    int64_t held; /* semaphore units held */
    pthread_mutex_t m;
};

struct ssem {
    pthread_mutex_t m;
    int64_t base; /* free units = base - sum of held */
    int64_t bound;
    int bounded;
    uint32_t hw; /* records in use are below hw */
    atomic_uint seq, waiters;
    struct token rec[LMP_SEM_HOLDERS];
};

struct sevent {
    atomic_uint flag, seq, waiters;
};

struct scond {
    uint32_t next;        /* next ticket; under the user's lock */
    atomic_uint released; /* tickets below it are notified (futex) */
    struct token slot[LMP_COND_WAITERS];
};

struct sbar {
    pthread_mutex_t m;
    uint32_t parties, count;
    atomic_uint gen, seq, waiters;
    uint32_t broken, brkgen, brkvalid, pending;
    pid_t runner; /* while pending: the thread running the action (an
                   * identity only; a dead runner is found by its slot) */
    struct token slot[];
};

struct lmp_sync {
    struct hdr *h;
    void *body;
    size_t size;
    int fd, kind;
    uint32_t a, b;       /* copies of h->a, h->b */
    int bslot;           /* barrier: our slot between wait and finish */
    uint32_t bgen, bidx;
};

/* ---- helpers ------------------------------------------------------------ */

static int ilock(pthread_mutex_t *m, const struct timespec *dl) {
    struct timespec ts;
    if (dl) {
        ts = *dl; /* + 0.1 s */
        ts.tv_nsec += 100000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        dl = &ts;
    }
    int rc = lmp_robust_lock(m, dl);
    return rc > 0 ? 0 : rc;
}

static void iunlock(pthread_mutex_t *m) { pthread_mutex_unlock(m); }

/* Does the calling thread hold m?  The futex word of a locked robust
 * mutex carries its owner's tid, and the kernel clears it when the owner
 * dies, so a new thread that got a dead one's tid is never taken for it
 * (glibc's layout; luamp is Linux and glibc only). */
static int held_by_me(pthread_mutex_t *m) {
    unsigned w = __atomic_load_n((unsigned *)&m->__data.__lock, __ATOMIC_RELAXED);
    return (pid_t)(w & FUTEX_TID_MASK) == lmp_tid();
}

/* Is the token's holder gone?  Takes it when so (then the caller owns
 * the record and must unlock it).  EBUSY: alive. */
static int token_dead(struct token *t) {
    int rc = pthread_mutex_trylock(&t->m);
    if (rc == EOWNERDEAD) {
        pthread_mutex_consistent(&t->m);
        return 1;
    }
    return rc == 0; /* unlocked: its holder let go without clearing */
}

/* Take a free token for the calling thread (a dead one's too). */
static int token_claim(struct token *t) {
    return lmp_robust_lock(&t->m, NULL) >= 0 ? 0 : -1;
}

static size_t body_size(int kind, uint32_t a, uint32_t b) {
    switch (kind) {
    case LMP_SYNC_LOCK:
    case LMP_SYNC_RLOCK: return BODY + sizeof(struct slock);
    case LMP_SYNC_SEM: return BODY + sizeof(struct ssem);
    case LMP_SYNC_EVENT: return BODY + sizeof(struct sevent);
    case LMP_SYNC_COND: return BODY + sizeof(struct scond);
    case LMP_SYNC_BARRIER:
        return BODY + sizeof(struct sbar) + (size_t)b * sizeof(struct token);
    case LMP_SYNC_SHARED: {
        size_t es = a == LMP_SHARED_INT32 ? 4 : a == LMP_SHARED_UINT8 ? 1 : 8;
        return DATA + (size_t)b * es;
    }
    }
    return 0;
}

static int create(int kind, uint32_t a, uint32_t b, lmp_sync **out) {
    *out = NULL;
    lmp_sync *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    size_t size = body_size(kind, a, b);
    void *m;
    int rc = lmp_shm_create("luamp-sync", size, &s->fd, &m);
    if (rc) {
        free(s);
        return rc;
    }
    s->h = m;
    s->size = (size + 4095) & ~(size_t)4095;
    s->body = (char *)m + BODY;
    s->kind = kind;
    s->a = a;
    s->b = b;
    s->bslot = -1;
    s->h->kind = (uint32_t)kind;
    s->h->a = a;
    s->h->b = b;
    s->h->size = s->size;
    s->h->mutex_size = (uint32_t)sizeof(pthread_mutex_t);
    *out = s;
    return 0;
}

static void publish(lmp_sync *s) {
    s->h->version = VERSION;
    atomic_thread_fence(memory_order_seq_cst);
    s->h->magic = MAGIC;
}

static int init_tokens(struct token *t, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int rc = lmp_robust_init(&t[i].m, 0);
        if (rc) return rc;
    }
    return 0;
}

/* ---- lifetime ----------------------------------------------------------- */

/* A constructor's last step: publish *out, or free it when its
 * initialisation failed (rc). */
static int made(int rc, lmp_sync **out) {
    if (rc) {
        lmp_sync_free(*out);
        *out = NULL;
        return rc;
    }
    publish(*out);
    return 0;
}

int lmp_lock_new(int recursive, lmp_sync **out) {
    int rc = create(recursive ? LMP_SYNC_RLOCK : LMP_SYNC_LOCK, 0, 0, out);
    if (rc) return rc;
    struct slock *k = (*out)->body;
    rc = lmp_robust_init(&k->m, recursive);
    return made(rc, out);
}

int lmp_sem_new(int64_t value, int bounded, lmp_sync **out) {
    if (value < 0) return -EINVAL;
    int rc = create(LMP_SYNC_SEM, 0, 0, out);
    if (rc) return rc;
    struct ssem *m = (*out)->body;
    m->base = m->bound = value;
    m->bounded = bounded;
    rc = lmp_robust_init(&m->m, 0);
    if (!rc) rc = init_tokens(m->rec, LMP_SEM_HOLDERS);
    return made(rc, out);
}

int lmp_event_new(lmp_sync **out) {
    int rc = create(LMP_SYNC_EVENT, 0, 0, out);
    if (!rc) publish(*out);
    return rc;
}

int lmp_cond_new(lmp_sync **out) {
    int rc = create(LMP_SYNC_COND, 0, 0, out);
    if (rc) return rc;
    struct scond *c = (*out)->body;
    rc = init_tokens(c->slot, LMP_COND_WAITERS);
    return made(rc, out);
}

/* Slots: the parties of this generation, plus those of the last one still
 * on their way out. */
int lmp_barrier_new(uint32_t parties, lmp_sync **out) {
    if (parties < 1) return -EINVAL;
    uint32_t n = parties > (MAXSLOTS - 8) / 2 ? MAXSLOTS : 2 * parties + 8;
    int rc = create(LMP_SYNC_BARRIER, 0, n, out);
    if (rc) return rc;
    struct sbar *b = (*out)->body;
    b->parties = parties;
    rc = lmp_robust_init(&b->m, 0);
    if (!rc) rc = init_tokens(b->slot, n);
    return made(rc, out);
}

int lmp_shared_new(int type, size_t n, lmp_sync **out) {
    if (type < LMP_SHARED_INT64 || type > LMP_SHARED_DOUBLE || n < 1 ||
        n > (size_t)1 << 31)
        return -EINVAL;
    int rc = create(LMP_SYNC_SHARED, (uint32_t)type, (uint32_t)n, out);
    if (!rc) publish(*out);
    return rc;
}

int lmp_sync_attach(int fd, lmp_sync **out) {
    *out = NULL;
    void *m;
    size_t size;
    int rc = lmp_shm_attach(fd, 4096, &m, &size);
    if (rc) return rc;
    struct hdr *h = m;
    int kind = (int)h->kind;
    uint32_t a = h->a, b = h->b;
    size_t need = body_size(kind, a, b);
    if (h->magic != MAGIC || h->version != VERSION || h->size != size ||
        h->mutex_size != sizeof(pthread_mutex_t) || need == 0 ||
        need > size || (kind == LMP_SYNC_BARRIER && (b < 1 || b > MAXSLOTS)) ||
        (kind == LMP_SYNC_SHARED &&
         (a < LMP_SHARED_INT64 || a > LMP_SHARED_DOUBLE || b < 1))) {
        munmap(m, size);
        return -EINVAL;
    }
    lmp_sync *s = calloc(1, sizeof *s);
    if (!s) {
        munmap(m, size);
        return -ENOMEM;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    s->h = h;
    s->body = (char *)m + BODY;
    s->size = size;
    s->fd = fd;
    s->kind = kind;
    s->a = a;
    s->b = b;
    s->bslot = -1;
    *out = s;
    return 0;
}

int lmp_sync_kind(const lmp_sync *s) { return s->kind; }
int lmp_sync_fd(const lmp_sync *s) { return s->fd; }

static void sem_drop_mine(lmp_sync *s);

int lmp_sync_detach(lmp_sync *s) {
    int fd = s->fd;
    s->fd = -1;
    lmp_sync_free(s);
    return fd;
}

void lmp_sync_free(lmp_sync *s) {
    if (!s) return;
    if (s->h && s->h->magic == MAGIC) {
        if (s->kind == LMP_SYNC_LOCK || s->kind == LMP_SYNC_RLOCK) {
            struct slock *k = s->body;
            if (held_by_me(&k->m)) {
                unsigned d = k->depth;
                k->depth = 0;
                while (d--) pthread_mutex_unlock(&k->m);
            }
        } else if (s->kind == LMP_SYNC_SEM) {
            sem_drop_mine(s);
        }
    }
    if (s->h) munmap(s->h, s->size);
    if (s->fd >= 0) close(s->fd);
    free(s);
}

/* ---- Lock, RLock -------------------------------------------------------- */

/* The fast path (no timeout, nobody died) is one pthread lock, a load
 * and a store. */
int lmp_lock_acquire(lmp_sync *s, double timeout) {
    struct slock *k = s->body;
    int rc;
    if (timeout < 0) {
        rc = pthread_mutex_lock(&k->m);
        if (__builtin_expect(rc == 0, 1) &&
            !atomic_load_explicit(&k->died, memory_order_relaxed)) {
            k->depth++;
            return 0;
        }
        if (rc == EOWNERDEAD) {
            if (pthread_mutex_consistent(&k->m)) {
                pthread_mutex_unlock(&k->m);
                return -ENOTRECOVERABLE;
            }
            rc = 1;
        } else {
            rc = -rc;
        }
    } else if (timeout == 0) {
        rc = pthread_mutex_trylock(&k->m);
        if (rc == EBUSY) return -ETIMEDOUT;
        if (rc == EOWNERDEAD) {
            rc = 1;
            if (pthread_mutex_consistent(&k->m)) {
                pthread_mutex_unlock(&k->m);
                return -ENOTRECOVERABLE;
            }
        } else {
            rc = -rc;
        }
    } else {
        struct timespec ts;
        rc = lmp_robust_lock(&k->m, lmp_deadline(timeout, &ts));
    }
    if (rc < 0) return rc;
    if (rc == 1 || atomic_load_explicit(&k->died, memory_order_relaxed)) {
        /* the holder died: report it once, leave the lock free */
        atomic_store(&k->died, 0);
        k->depth = 0;
        pthread_mutex_unlock(&k->m);
        return -EOWNERDEAD;
    }
    k->depth++;
    return 0;
}

int lmp_lock_release(lmp_sync *s) {
    struct slock *k = s->body;
    if (!held_by_me(&k->m) || k->depth == 0) return -EPERM;
    k->depth--;
    pthread_mutex_unlock(&k->m);
    return 0;
}

unsigned lmp_lock_owned(lmp_sync *s) {
    struct slock *k = s->body;
    return held_by_me(&k->m) ? k->depth : 0;
}

/* A try-lock tells the truth even about a dead holder; a death seen here
 * is left for the next acquire to report. */
int lmp_lock_locked(lmp_sync *s) {
    struct slock *k = s->body;
    if (lmp_lock_owned(s)) return 1;
    int rc = pthread_mutex_trylock(&k->m);
    if (rc == EBUSY) return 1;
    if (rc == EOWNERDEAD) {
        if (pthread_mutex_consistent(&k->m) == 0) {
            k->depth = 0;
            atomic_store(&k->died, 1);
        }
        pthread_mutex_unlock(&k->m);
        return 0;
    }
    if (rc == 0) pthread_mutex_unlock(&k->m);
    return 0;
}

/* For Condition.wait: let go of every level, then take them back. */
static unsigned lock_release_all(lmp_sync *s) {
    struct slock *k = s->body;
    unsigned d = k->depth;
    k->depth = 0;
    for (unsigned i = 0; i < d; i++) pthread_mutex_unlock(&k->m);
    return d;
}

static int lock_take_back(lmp_sync *s, unsigned d) {
    struct slock *k = s->body;
    int rc = lmp_robust_lock(&k->m, NULL);
    if (rc < 0) return rc;
    int died = rc == 1;
    if (atomic_exchange(&k->died, 0)) died = 1;
    for (unsigned i = 1; i < d; i++) pthread_mutex_lock(&k->m);
    k->depth = d;
    return died;
}

/* ---- Semaphore ---------------------------------------------------------- */

static void rec_drop(struct token *r) {
    r->held = 0;
    atomic_store(&r->tid, 0);
    pthread_mutex_unlock(&r->m);
}

/* Free units; with reap, dead holders' records are emptied first (their
 * units come back by themselves: free = base - sum of held). */
static int64_t sem_free(struct ssem *m, int reap) {
    int64_t f = m->base;
    pid_t me = lmp_tid();
    uint32_t hw = m->hw < LMP_SEM_HOLDERS ? m->hw : LMP_SEM_HOLDERS;
    for (uint32_t i = 0; i < hw; i++) {
        struct token *r = &m->rec[i];
        pid_t t = atomic_load(&r->tid);
        if (t == 0) continue;
        if (reap && !(t == me && held_by_me(&r->m)) && token_dead(r)) {
            rec_drop(r);
            continue;
        }
        f -= r->held;
    }
    if (m->bounded && f > m->bound) { /* a dead holder's unit was released for it */
        m->base -= f - m->bound;
        f = m->bound;
    }
    return f;
}

static struct token *sem_mine(struct ssem *m) {
    pid_t me = lmp_tid();
    uint32_t hw = m->hw < LMP_SEM_HOLDERS ? m->hw : LMP_SEM_HOLDERS;
    for (uint32_t i = 0; i < hw; i++)
        if (atomic_load(&m->rec[i].tid) == me && held_by_me(&m->rec[i].m))
            return &m->rec[i];
    return NULL;
}

/* One unit to the caller: counted in its record (claimed on first use:
 * token locked, then tid, then held: each step a single store that a
 * death in between leaves harmless); without a free record, from base,
 * where a death cannot give it back. */
static void sem_take(struct ssem *m) {
    struct token *r = sem_mine(m);
    if (!r) {
        for (uint32_t i = 0; i < LMP_SEM_HOLDERS; i++) {
            if (atomic_load(&m->rec[i].tid) != 0) continue;
            if (token_claim(&m->rec[i]) < 0) continue;
            r = &m->rec[i];
            r->held = 0;
            atomic_store(&r->tid, lmp_tid());
            if (i >= m->hw) m->hw = i + 1;
            break;
        }
    }
    if (r) r->held++;
    else m->base--;
}

int lmp_sem_acquire(lmp_sync *s, double timeout) {
    struct ssem *m = s->body;
    struct timespec ts, sl;
    const struct timespec *dl = lmp_deadline(timeout, &ts);
    int rc = ilock(&m->m, dl);
    if (rc) return rc;
    for (;;) {
        int64_t f = sem_free(m, 0);
        if (f <= 0) f = sem_free(m, 1);
        if (f > 0) {
            sem_take(m);
            iunlock(&m->m);
            return 0;
        }
        if (lmp_passed(dl)) {
            iunlock(&m->m);
            return -ETIMEDOUT;
        }
        unsigned seen = atomic_load(&m->seq);
        atomic_fetch_add(&m->waiters, 1);
        iunlock(&m->m);
        rc = lmp_futex_wait(&m->seq, seen, lmp_slice(dl, LMP_SYNC_SLICE, &sl));
        atomic_fetch_sub(&m->waiters, 1);
        if (rc) return rc;
        if ((rc = ilock(&m->m, dl)) != 0) return rc;
    }
}

int lmp_sem_release(lmp_sync *s, int64_t k) {
    struct ssem *m = s->body;
    if (k < 1) return -EINVAL;
    int rc = ilock(&m->m, NULL);
    if (rc) return rc;
    if (m->bounded && sem_free(m, 1) > m->bound - k) {
        iunlock(&m->m);
        return -EOVERFLOW;
    }
    struct token *r = sem_mine(m);
    int64_t d = r && r->held > 0 ? (k < r->held ? k : r->held) : 0;
    if (m->base > 0 && k - d > INT64_MAX - m->base) { /* the count would overflow */
        iunlock(&m->m);
        return -EOVERFLOW;
    }
    if (d > 0) {
        r->held -= d;
        k -= d;
        if (r->held == 0) rec_drop(r);
    }
    m->base += k;
    atomic_fetch_add(&m->seq, 1);
    if (atomic_load(&m->waiters)) lmp_futex_wake(&m->seq, INT_MAX);
    iunlock(&m->m);
    return 0;
}

int64_t lmp_sem_value(lmp_sync *s) {
    struct ssem *m = s->body;
    if (ilock(&m->m, NULL)) return 0;
    int64_t f = sem_free(m, 1);
    iunlock(&m->m);
    return f < 0 ? 0 : f;
}

/* Dropping the last handle gives back what this thread holds. */
static void sem_drop_mine(lmp_sync *s) {
    struct ssem *m = s->body;
    if (ilock(&m->m, NULL)) return;
    struct token *r = sem_mine(m);
    if (r) {
        rec_drop(r);
        atomic_fetch_add(&m->seq, 1);
        if (atomic_load(&m->waiters)) lmp_futex_wake(&m->seq, INT_MAX);
    }
    iunlock(&m->m);
}

/* ---- Event ---------------------------------------------------------------
 * Lock-free: set stores the flag, bumps seq, then looks for sleepers; a
 * waiter reads seq, counts itself, then looks at the flag.  With
 * sequentially consistent atomics one of the two sees the other. */

void lmp_event_set(lmp_sync *s) {
    struct sevent *e = s->body;
    if (atomic_load(&e->flag)) return;
    atomic_store(&e->flag, 1);
    atomic_fetch_add(&e->seq, 1);
    if (atomic_load(&e->waiters)) lmp_futex_wake(&e->seq, INT_MAX);
}

void lmp_event_clear(lmp_sync *s) { atomic_store(&((struct sevent *)s->body)->flag, 0); }

int lmp_event_is_set(lmp_sync *s) { return atomic_load(&((struct sevent *)s->body)->flag) != 0; }

int lmp_event_wait(lmp_sync *s, double timeout) {
    struct sevent *e = s->body;
    if (atomic_load(&e->flag)) return 0;
    struct timespec ts;
    const struct timespec *dl = lmp_deadline(timeout, &ts);
    for (;;) {
        unsigned seen = atomic_load(&e->seq);
        atomic_fetch_add(&e->waiters, 1);
        if (atomic_load(&e->flag)) {
            atomic_fetch_sub(&e->waiters, 1);
            return 0;
        }
        if (lmp_passed(dl)) {
            atomic_fetch_sub(&e->waiters, 1);
            return -ETIMEDOUT;
        }
        int rc = lmp_futex_wait(&e->seq, seen, dl);
        atomic_fetch_sub(&e->waiters, 1);
        if (rc) return rc;
    }
}

/* ---- Condition -----------------------------------------------------------
 * State is guarded by the user's lock (wait and notify require holding
 * it).  A waiter takes a ticket and a slot whose token it holds while it
 * waits; notify moves `released` past the oldest n live tickets (a ticket
 * without a slot was given up by a waiter that timed out; a slot whose
 * token is dead belongs to a waiter that died) and wakes the sleepers. */

static int lock_kind_ok(lmp_sync *l) {
    return l && (l->kind == LMP_SYNC_LOCK || l->kind == LMP_SYNC_RLOCK);
}

int lmp_cond_wait(lmp_sync *cs, lmp_sync *lock, double timeout) {
    struct scond *c = cs->body;
    if (!lock_kind_ok(lock) || !lmp_lock_owned(lock)) return -EPERM;
    struct token *slot = NULL;
    for (int i = 0; i < LMP_COND_WAITERS && !slot; i++) {
        struct token *t = &c->slot[i];
        if (atomic_load(&t->state) == 0) {
            if (token_claim(t) == 0) slot = t;
        } else if (token_dead(t)) {
            slot = t;
        }
    }
    if (!slot) return -EAGAIN;
    uint32_t ticket = c->next++;
    slot->ticket = ticket;
    atomic_store(&slot->state, 1);
    struct timespec ts;
    const struct timespec *dl = lmp_deadline(timeout, &ts);
    unsigned depth = lock_release_all(lock);
    for (;;) {
        unsigned r = atomic_load(&c->released);
        if ((int32_t)(r - ticket) > 0 || lmp_passed(dl)) break;
        if (lmp_futex_wait(&c->released, r, dl) < 0) break;
    }
    int died = lock_take_back(lock, depth);
    int notified = (int32_t)(atomic_load(&c->released) - ticket) > 0;
    atomic_store(&slot->state, 0);
    pthread_mutex_unlock(&slot->m);
    if (died < 0) return died;
    return died ? -EOWNERDEAD : notified ? 0 : -ETIMEDOUT;
}

int lmp_cond_notify(lmp_sync *cs, lmp_sync *lock, long n) {
    struct scond *c = cs->body;
    if (!lock_kind_ok(lock) || !lmp_lock_owned(lock)) return -EPERM;
    uint32_t r = atomic_load(&c->released);
    long woke = 0;
    while ((n < 0 || woke < n) && (int32_t)(c->next - r) > 0) {
        for (int i = 0; i < LMP_COND_WAITERS; i++) {
            struct token *t = &c->slot[i];
            if (atomic_load(&t->state) != 1 || t->ticket != r) continue;
            if (token_dead(t)) {
                atomic_store(&t->state, 0);
                pthread_mutex_unlock(&t->m);
            } else {
                woke++;
            }
            break;
        }
        r++;
    }
    if (r != atomic_load(&c->released)) {
        atomic_store(&c->released, r);
        lmp_futex_wake(&c->released, INT_MAX);
    }
    return 0;
}

/* ---- Barrier -------------------------------------------------------------
 * A generation counter: the last party to arrive bumps it, which releases
 * the others.  Each waiting party holds a slot token tagged with its
 * generation; a party found dead breaks the barrier.  Breaking (abort, a
 * timeout, a death, a failed action) and reset mark the slots of the
 * waiting generation "broken" (state 2), so each waiter learns its own
 * outcome even after later generations.  The action's own thread calling
 * wait while it runs could only wait for itself: that breaks the barrier
 * (-EDEADLK) instead of hanging every party. */

static void bar_wake(struct sbar *b) {
    atomic_fetch_add(&b->seq, 1);
    if (atomic_load(&b->waiters)) lmp_futex_wake(&b->seq, INT_MAX);
}

static void bar_mark_broken(lmp_sync *s, struct sbar *b) {
    uint32_t g = atomic_load(&b->gen);
    for (uint32_t i = 0; i < s->b; i++)
        if (atomic_load(&b->slot[i].state) == 1 && b->slot[i].ticket == g)
            atomic_store(&b->slot[i].state, 2);
    b->brkgen = g;
    b->brkvalid = 1;
}

static void bar_break(lmp_sync *s, struct sbar *b) {
    b->broken = 1;
    b->pending = 0;
    bar_mark_broken(s, b);
    bar_wake(b);
}

static void slot_free(struct sbar *b, int i) {
    if (i < 0) return;
    atomic_store(&b->slot[i].state, 0);
    pthread_mutex_unlock(&b->slot[i].m);
}

/* Any party of generation g (other than slot `mine`) dead? */
static int bar_dead(lmp_sync *s, struct sbar *b, uint32_t g, int mine) {
    int dead = 0;
    for (uint32_t i = 0; i < s->b; i++) {
        struct token *t = &b->slot[i];
        if ((int)i == mine || atomic_load(&t->state) != 1 || t->ticket != g) continue;
        if (token_dead(t)) {
            atomic_store(&t->state, 0);
            pthread_mutex_unlock(&t->m);
            dead = 1;
        }
    }
    return dead;
}

static int slot_claim(lmp_sync *s, struct sbar *b, uint32_t g) {
    for (uint32_t i = 0; i < s->b; i++) {
        struct token *t = &b->slot[i];
        unsigned st = atomic_load(&t->state);
        int ok = st == 0 ? token_claim(t) == 0 : token_dead(t);
        if (!ok) continue;
        t->ticket = g;
        atomic_store(&t->state, 1);
        return (int)i;
    }
    return -1; /* more parties than slots: this one is not watched */
}

/* Sleep until something changes or a slice passes; the mutex is held on
 * entry and on return. */
static int bar_sleep(struct sbar *b, const struct timespec *dl) {
    struct timespec sl;
    unsigned seen = atomic_load(&b->seq);
    atomic_fetch_add(&b->waiters, 1);
    iunlock(&b->m);
    int rc = lmp_futex_wait(&b->seq, seen, lmp_slice(dl, LMP_SYNC_SLICE, &sl));
    atomic_fetch_sub(&b->waiters, 1);
    int rc2 = ilock(&b->m, NULL);
    return rc ? rc : rc2;
}

int lmp_barrier_wait(lmp_sync *s, double timeout, int has_action,
                     uint32_t *index) {
    struct sbar *b = s->body;
    struct timespec ts;
    const struct timespec *dl = lmp_deadline(timeout, &ts);
    int rc = ilock(&b->m, dl);
    if (rc) return rc;
    /* an action still running belongs to the previous generation */
    while (b->pending && !b->broken) {
        if (bar_dead(s, b, atomic_load(&b->gen), -1)) bar_break(s, b);
        else if (b->runner == lmp_tid()) { /* called from the action */
            bar_break(s, b);
            iunlock(&b->m);
            return -EDEADLK;
        } else if (lmp_passed(dl)) {
            iunlock(&b->m);
            return -ETIMEDOUT;
        } else if ((rc = bar_sleep(b, dl)) != 0) return rc;
    }
    uint32_t my = atomic_load(&b->gen);
    if (!b->broken && bar_dead(s, b, my, -1)) bar_break(s, b);
    if (b->broken) {
        iunlock(&b->m);
        return -EPIPE;
    }
    uint32_t idx = b->count++;
    int slot = slot_claim(s, b, my);
    *index = idx;
    if (b->count >= b->parties) {
        if (has_action) {
            b->pending = 1;
            b->runner = lmp_tid();
            s->bslot = slot;
            s->bgen = my;
            iunlock(&b->m);
            return 1;
        }
        b->count = 0;
        atomic_fetch_add(&b->gen, 1);
        bar_wake(b);
        slot_free(b, slot);
        iunlock(&b->m);
        return 0;
    }
    for (;;) {
        if ((rc = bar_sleep(b, dl)) != 0) {
            slot_free(b, slot); /* only a futex failure lands here */
            iunlock(&b->m);
            return rc;
        }
        int broken = slot >= 0 && atomic_load(&b->slot[slot].state) == 2;
        if (atomic_load(&b->gen) != my) {
            if (slot < 0) broken = b->brkvalid && b->brkgen == my;
            rc = broken ? -EPIPE : 0;
            break;
        }
        if (broken || b->broken) {
            rc = -EPIPE;
            break;
        }
        if (bar_dead(s, b, my, slot)) {
            bar_break(s, b);
            rc = -EPIPE;
            break;
        }
        if (lmp_passed(dl)) {
            bar_break(s, b);
            rc = -ETIMEDOUT;
            break;
        }
    }
    slot_free(b, slot);
    iunlock(&b->m);
    return rc;
}

int lmp_barrier_finish(lmp_sync *s, int ok) {
    struct sbar *b = s->body;
    int rc = ilock(&b->m, NULL);
    if (rc) return rc;
    int slot = s->bslot;
    s->bslot = -1;
    int broken = b->broken || atomic_load(&b->gen) != s->bgen ||
                 (slot >= 0 && atomic_load(&b->slot[slot].state) == 2);
    if (!ok && !broken) bar_break(s, b);
    else if (ok && !broken) {
        b->pending = 0;
        b->count = 0;
        atomic_fetch_add(&b->gen, 1);
        bar_wake(b);
    }
    slot_free(b, slot);
    iunlock(&b->m);
    return ok && !broken ? 0 : -EPIPE;
}

void lmp_barrier_abort(lmp_sync *s) {
    struct sbar *b = s->body;
    if (ilock(&b->m, NULL)) return;
    bar_break(s, b);
    iunlock(&b->m);
}

/* Parties waiting now get "broken"; the barrier is usable again. */
void lmp_barrier_reset(lmp_sync *s) {
    struct sbar *b = s->body;
    if (ilock(&b->m, NULL)) return;
    if (b->count > 0 || b->pending) bar_mark_broken(s, b);
    b->count = 0;
    b->pending = 0;
    b->broken = 0;
    atomic_fetch_add(&b->gen, 1);
    bar_wake(b);
    iunlock(&b->m);
}

uint32_t lmp_barrier_parties(lmp_sync *s) { return ((struct sbar *)s->body)->parties; }

uint32_t lmp_barrier_waiting(lmp_sync *s) {
    struct sbar *b = s->body;
    return b->broken ? 0 : b->count;
}

int lmp_barrier_broken(lmp_sync *s) { return ((struct sbar *)s->body)->broken != 0; }

/* ---- shared memory ------------------------------------------------------ */

void *lmp_shared_data(lmp_sync *s, int *type, size_t *n) {
    if (s->kind != LMP_SYNC_SHARED) return NULL;
    if (type) *type = (int)s->a;
    if (n) *n = s->b;
    return (char *)s->h + DATA;
}
