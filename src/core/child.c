/*
 * child.c - child records, reaping, waiting and the exit clean-up (see
 * child.h).
 *
 * Reaping is always targeted: waitid(P_PIDFD) on the child's own pidfd, or
 * waitpid(pid) in the pipe fallback.  A host's other children and its
 * SIGCHLD disposition are never touched.
 */
#include "child.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "result.h"
#include "state.h"
#include "sys.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

struct lmp_reg {
    lmp_child *head; /* valid only while gen is this process's fork_gen */
    unsigned gen;
    lmp_reg *prev, *next;
};

/* Every registry of the process, for the atexit clean-up. */
static pthread_mutex_t regs_lock = PTHREAD_MUTEX_INITIALIZER;
static lmp_reg *regs;
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;

static void at_exit(void) { lmp_reg_shutdown_all(); }
/* Bumped in every forked child (atfork): a registry whose gen differs
 * holds only its parent's records, and reads as empty.  A child thus
 * forgets them without writing to the registries' heap pages. */
static unsigned fork_gen;

static lmp_child *reg_head(const lmp_reg *r) { return r->gen == fork_gen ? r->head : NULL; }

static void reg_own(lmp_reg *r) {
    if (r->gen == fork_gen) return;
    r->head = NULL; /* the parent's records: inert copies, leaked on purpose */
    r->gen = fork_gen;
}
static void install_atexit(void) { atexit(at_exit); }

/* Around every fork (state.h), a host's own too: the forking thread takes
 * regs_lock, so the child inherits it free and the list whole; the child
 * then forgets the parent's records (the generation), which keeps the
 * ownership test right in children a host forks by itself (fork() then
 * exit() must not clean up our children). */
static void regs_atfork_prepare(void) { pthread_mutex_lock(&regs_lock); }
static void regs_atfork_parent(void) { pthread_mutex_unlock(&regs_lock); }
static void regs_atfork_child(void) {
    fork_gen++;
    regs_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER; /* no call: see sys.c */
}
__attribute__((constructor)) static void regs_install_atfork(void) {
    static const lmp_fork_hooks h = {regs_atfork_prepare, regs_atfork_parent, regs_atfork_child};
    lmp_state_on_fork(LMP_STATE_REGISTRIES, &h);
}

lmp_reg *lmp_reg_new(void) {
    lmp_reg *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    pthread_once(&atexit_once, install_atexit);
    r->gen = fork_gen;
    pthread_mutex_lock(&regs_lock);
    r->next = regs;
    if (regs) regs->prev = r;
    regs = r;
    pthread_mutex_unlock(&regs_lock);
    return r;
}

static void unlink_child(lmp_child *c) {
    lmp_reg *r = c->reg;
    if (!r) return;
    if (c->prev) c->prev->next = c->next;
    else r->head = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    c->reg = NULL;
}

static void free_child(lmp_child *c) {
    lmp_child_close(c);
    lmp_buf_free(&c->result);
    free(c);
}

void lmp_reg_free(lmp_reg *r) {
    if (!r) return;
    lmp_reg_shutdown(r);
    reg_own(r);
    pthread_mutex_lock(&regs_lock);
    if (r->prev) r->prev->next = r->next;
    else regs = r->next;
    if (r->next) r->next->prev = r->prev;
    pthread_mutex_unlock(&regs_lock);
    while (r->head) {
        lmp_child *c = r->head;
        unlink_child(c);
        if (!c->has_ud) free_child(c);
    }
    free(r);
}

/* Wait for every listed child until it ends or the deadline passes,
 * polling all sentinels at once.  Returns how many are still running. */
static int wait_all(lmp_child **v, int n, double timeout) {
    double deadline = timeout < 0 ? -1 : lmp_now() + timeout;
    for (;;) {
        struct pollfd pf[64];
        int k = 0, running = 0;
        for (int i = 0; i < n; i++) {
            if (v[i]->ended || lmp_child_poll(v[i]) != 0) continue;
            running++;
            if (k < 64) pf[k++] = (struct pollfd){.fd = v[i]->sentinel, .events = POLLIN};
        }
        if (!running) return 0;
        double left = 0.05; /* more than 64 children: rescan now and then */
        if (deadline >= 0) {
            double d = deadline - lmp_now();
            if (d <= 0) return running;
            if (k == running || d < left) left = d;
        } else if (k == running) {
            left = -1;
        }
        lmp_poll(pf, k, left);
    }
}

void lmp_reg_shutdown(lmp_reg *r) {
    if (!r) return;
    int n = 0;
    for (lmp_child *c = reg_head(r); c; c = c->next) n++;
    if (!n) return;
    lmp_child **v = malloc((size_t)n * sizeof *v);
    if (!v) return;
    int nd = 0, nn = 0;
    /* Daemons first (front of v), the rest after; records inherited from
     * a parent (a host's own fork) are not ours to end or wait for. */
    for (lmp_child *c = reg_head(r); c; c = c->next)
        if (c->daemon && !lmp_child_foreign(c)) v[nd++] = c;
    for (lmp_child *c = reg_head(r); c; c = c->next)
        if (!c->daemon && !lmp_child_foreign(c)) v[nd + nn++] = c;
    n = nd + nn;
    /* Nobody will read results any more. */
    for (int i = 0; i < n; i++) {
        if (v[i]->result_fd >= 0) {
            lmp_fd_close(v[i]->result_fd);
            v[i]->result_fd = -1;
        }
    }
    for (int i = 0; i < nd; i++) lmp_child_signal(v[i], SIGTERM);
    if (nd && wait_all(v, nd, LMP_DAEMON_GRACE) > 0) {
        for (int i = 0; i < nd; i++) lmp_child_signal(v[i], SIGKILL);
        wait_all(v, nd, -1);
    }
    wait_all(v + nd, nn, -1);
    free(v);
}

static void (*volatile shutdown_hook)(void);

void lmp_reg_at_shutdown(void (*fn)(void)) { shutdown_hook = fn; }

void lmp_reg_shutdown_all(void) {
    pthread_mutex_lock(&regs_lock);
    for (lmp_reg *r = regs; r; r = r->next) lmp_reg_shutdown(r);
    pthread_mutex_unlock(&regs_lock);
    if (shutdown_hook) shutdown_hook();
}

static pid_t self(void) { return lmp_self(); }

int lmp_child_foreign(const lmp_child *c) { return c->owner != self(); }

void lmp_reg_after_fork(int keep) {
    /* The atfork handler has already run (fork() calls it): the lists
     * read as empty and the lock is new.  Close the parent's tracked
     * descriptors but keep. */
    lmp_fd_close_tracked(keep);
}

lmp_child *lmp_child_new(void) {
    lmp_child *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->sentinel = c->result_fd = c->parent_w = c->pidfd = -1;
    c->owner = self();
    c->ops = &lmp_child_own;
    lmp_buf_init(&c->result);
    return c;
}

void lmp_child_link(lmp_reg *r, lmp_child *c) {
    reg_own(r);
    c->reg = r;
    c->prev = NULL;
    c->next = r->head;
    if (r->head) r->head->prev = c;
    r->head = c;
}

void lmp_child_drop(lmp_child *c) {
    if (!c || lmp_child_foreign(c)) return;
    c->has_ud = 0;
    if (c->ended || !c->reg) {
        unlink_child(c);
        free_child(c);
    }
    /* else: unreaped; the registry keeps it for the exit clean-up */
}

void lmp_child_close(lmp_child *c) {
    if (lmp_child_foreign(c)) return;
    lmp_fd_close(c->sentinel);
    lmp_fd_close(c->result_fd);
    lmp_fd_close(c->parent_w);
    lmp_fd_close(c->pidfd);
    c->sentinel = c->result_fd = c->parent_w = c->pidfd = -1;
}

/* Whether the ended child sent anything: one peeked byte.  Most targets
 * return nothing, and the collector's 16 kB buffer would have the parent
 * write (and so copy) one more page of its stack on every join. */
static int result_pending(int fd) {
    char b;
    ssize_t n;
    do n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return !(n == 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)));
}

/* The caller's own child ended: reap it (targeted, never waitpid(-1)). */
static int own_status(lmp_child *c) {
    if (c->is_pidfd) {
        siginfo_t si;
        int rc;
        do rc = waitid((idtype_t)P_PIDFD, (id_t)c->sentinel, &si, WEXITED);
        while (rc < 0 && errno == EINTR);
        if (rc < 0) return LMP_STATUS_LOST; /* ECHILD: someone else reaped it */
        return si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
    }
    int st;
    pid_t p;
    do p = waitpid(c->pid, &st, 0);
    while (p < 0 && errno == EINTR);
    if (p < 0) return LMP_STATUS_LOST;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

/* A pidfd names this very process even after its pid is reused; an
 * unreaped child's pid cannot be reused, so kill() is safe too. */
static int own_signal(lmp_child *c, int sig) {
    if (c->is_pidfd) {
        int rc = lmp_pidfd_send_signal(c->sentinel, sig);
        return rc == -ESRCH ? 0 : rc;
    }
    if (kill(c->pid, sig) < 0 && errno != ESRCH) return -errno;
    return 0;
}

const lmp_child_ops lmp_child_own = {own_status, own_signal};

/* The child has ended (its sentinel said so): collect its status. */
static int reap(lmp_child *c) {
    int code = c->ops->status(c);
    c->exitcode = code;
    c->ended = 1;
    /* The child is gone: what it sent is all there (see result.h).  A
     * failure leaves the result empty or cut short, which the binding
     * reports as a lost result. */
    if (c->result_fd >= 0 && result_pending(c->result_fd)) {
        c->result_err = lmp_result_collect(c->result_fd, &c->result);
    }
    if (c->result_fd >= 0) {
        lmp_fd_close(c->result_fd);
        c->result_fd = -1;
    }
    if (c->parent_w >= 0) {
        lmp_fd_close(c->parent_w);
        c->parent_w = -1;
    }
    if (c->pidfd >= 0) { /* no signal to send any more */
        lmp_fd_close(c->pidfd);
        c->pidfd = -1;
    }
    return 1;
}

int lmp_child_poll(lmp_child *c) {
    if (lmp_child_foreign(c)) return -ECHILD;
    if (c->ended) return 1;
    struct pollfd pf = {.fd = c->sentinel, .events = POLLIN};
    int n;
    do n = poll(&pf, 1, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    return n ? reap(c) : 0;
}

int lmp_child_wait(lmp_child *c, double timeout) {
    if (lmp_child_foreign(c)) return -ECHILD;
    if (c->ended) return 1;
    /* Only the sentinel: a child never blocks on its result channel, so
     * there is nothing to drain, and one sleep means one wake-up. */
    struct pollfd pf = {.fd = c->sentinel, .events = POLLIN};
    int n = lmp_poll(&pf, 1, timeout);
    if (n < 0) return n;
    return n ? reap(c) : 0;
}

int lmp_child_signal(lmp_child *c, int sig) {
    if (lmp_child_foreign(c)) return -ECHILD;
    if (c->ended) return 0;
    return c->ops->signal(c, sig);
}
