/*
 * state.c - the one after-fork handler, and the process-wide state that
 * belongs to no other owner: this process's pid, its identity as a child,
 * the tracked descriptors, the runner's path (see state.h).
 */
#include "state.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- tracked descriptors ------------------------------------------- */

static pthread_mutex_t fd_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t fd_set_n, fd_set_cap = 16;
/* The first few live in the library's data page, which a forked child
 * writes anyway: tracking its own channels then copies no heap page.
 * Process-global (every lua_State of a host shares it) and guarded by
 * fd_lock; after fork only the forking thread exists, so the child walks
 * its inherited copy without locking (lmp_fd_close_tracked). */
static int fd_set_small[16];
static int *fd_set_v = fd_set_small;

void lmp_fd_track(int fd) {
    if (fd < 0) return;
    pthread_mutex_lock(&fd_lock);
    if (fd_set_n == fd_set_cap) {
        size_t cap = fd_set_cap * 2;
        int *v = fd_set_v == fd_set_small ? malloc(cap * sizeof *v) : realloc(fd_set_v, cap * sizeof *v);
        if (!v) { /* untracked: only costs hygiene in a later child */
            pthread_mutex_unlock(&fd_lock);
            return;
        }
        if (fd_set_v == fd_set_small) memcpy(v, fd_set_small, sizeof fd_set_small);
        fd_set_v = v;
        fd_set_cap = cap;
    }
    /* kept sorted, so that a child closes runs of them with close_range */
    size_t i = fd_set_n;
    while (i > 0 && fd_set_v[i - 1] > fd) i--;
    if (i > 0 && fd_set_v[i - 1] == fd) { /* already tracked */
        pthread_mutex_unlock(&fd_lock);
        return;
    }
    for (size_t j = fd_set_n; j > i; j--) fd_set_v[j] = fd_set_v[j - 1]; /* no libc call */
    fd_set_v[i] = fd;
    fd_set_n++;
    pthread_mutex_unlock(&fd_lock);
}

void lmp_fd_untrack(int fd) {
    pthread_mutex_lock(&fd_lock);
    for (size_t i = fd_set_n; i-- > 0;)
        if (fd_set_v[i] == fd) {
            memmove(fd_set_v + i, fd_set_v + i + 1, (--fd_set_n - i) * sizeof *fd_set_v);
            break;
        }
    pthread_mutex_unlock(&fd_lock);
}

void lmp_fd_close(int fd) {
    if (fd < 0) return;
    lmp_fd_untrack(fd);
    close(fd);
}

void lmp_fd_close_tracked(int keep) {
    /* Child side of fork: single-threaded now, the lock may be stale.
     * Re-initialised by assignment, not pthread_mutex_init: no call into
     * another page of libc text on the child's way to its target. */
    size_t kept = 0;
    for (size_t i = 0; i < fd_set_n;) {
        int lo = fd_set_v[i];
        if (lo == keep) {
            fd_set_v[kept++] = keep;
            i++;
            continue;
        }
        /* a run of consecutive tracked numbers: all ours, one call */
        size_t j = i + 1;
        while (j < fd_set_n && fd_set_v[j] == fd_set_v[j - 1] + 1 && fd_set_v[j] != keep) j++;
        int hi = fd_set_v[j - 1];
        if (hi == lo || syscall(SYS_close_range, (unsigned)lo, (unsigned)hi, 0u) < 0)
            for (int fd = lo; fd <= hi; fd++) close(fd);
        i = j;
    }
    fd_set_n = kept;
    fd_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
}

/* Around every fork, luamp's or a host's own: the forking thread takes
 * fd_lock, so the child inherits it free and the set whole. */
static void fd_atfork_prepare(void) { pthread_mutex_lock(&fd_lock); }
static void fd_atfork_parent(void) { pthread_mutex_unlock(&fd_lock); }
static void fd_atfork_child(void) { fd_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER; }
static const lmp_fork_hooks fd_hooks = {fd_atfork_prepare, fd_atfork_parent, fd_atfork_child};

/* ---- the runner's path ---------------------------------------------- */

static pthread_mutex_t path_lock = PTHREAD_MUTEX_INITIALIZER;
static char *set_path;   /* lmp_runner_set */
static char *found_path; /* the search's answer, once */

int lmp_runner_set(const char *path) {
    char *p = NULL;
    if (path && !(p = strdup(path))) return -ENOMEM;
    pthread_mutex_lock(&path_lock);
    free(set_path);
    set_path = p;
    pthread_mutex_unlock(&path_lock);
    return 0;
}

int lmp_runner_get(char *buf, size_t size, char *(*search)(void)) {
    pthread_mutex_lock(&path_lock);
    if (!set_path && !found_path) found_path = search();
    const char *p = set_path ? set_path : found_path ? found_path : "luamp";
    size_t n = strlen(p);
    int rc = n < size ? 0 : -ENAMETOOLONG;
    if (!rc) memcpy(buf, p, n + 1);
    pthread_mutex_unlock(&path_lock);
    return rc;
}

/* Taken by the forking thread, so the child inherits it free and the
 * paths whole. */
static void path_atfork_prepare(void) { pthread_mutex_lock(&path_lock); }
static void path_atfork_parent(void) { pthread_mutex_unlock(&path_lock); }
static void path_atfork_child(void) { path_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER; }
static const lmp_fork_hooks path_hooks = {path_atfork_prepare, path_atfork_parent, path_atfork_child};

/* Slots owned here are filled from the start; the others register. */
static const lmp_fork_hooks *slots[LMP_STATE_SLOTS] = {[LMP_STATE_FDS] = &fd_hooks,
                                                        [LMP_STATE_RUNNER] = &path_hooks};
static pid_t self_pid;
static lmp_identity identity = {-1, -1, 0, -1, NULL};

lmp_identity *lmp_identity_get(void) { return &identity; }

void lmp_identity_set(int result_w, int parent_r, pid_t parent_pid, void *inherited) {
    identity = (lmp_identity){result_w, parent_r, parent_pid, -1, inherited};
}

pid_t lmp_self(void) {
    if (!self_pid) self_pid = getpid();
    return self_pid;
}

/* Only the forking thread exists in the child, so a lock another thread
 * held at fork would never be released there, and what it guards could
 * be half-changed: the forking thread takes every lock first (prepare),
 * so the child inherits them free and the state consistent. */
static void on_prepare(void) {
    for (int i = 0; i < LMP_STATE_SLOTS; i++)
        if (slots[i] && slots[i]->prepare) slots[i]->prepare();
}

static void on_parent(void) {
    for (int i = LMP_STATE_SLOTS - 1; i >= 0; i--)
        if (slots[i] && slots[i]->parent) slots[i]->parent();
}

static void on_child(void) {
    self_pid = 0;
    for (int i = LMP_STATE_SLOTS - 1; i >= 0; i--)
        if (slots[i] && slots[i]->child) slots[i]->child();
}

static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static void install(void) { pthread_atfork(on_prepare, on_parent, on_child); }

void lmp_state_on_fork(int slot, const lmp_fork_hooks *h) {
    if (slot < 0 || slot >= LMP_STATE_SLOTS) return;
    pthread_once(&install_once, install);
    slots[slot] = h;
}
