/*
 * state.h - the process-wide state across fork: one after-fork handler.
 *
 * Provides: this process's pid (cached, current in every fork child), its
 * identity as a child, the tracked descriptors, the runner's path, and the one
 * pthread_atfork handler of the library, which keeps every piece
 * of process-wide state whole across any fork, luamp's or a host's own:
 * each owner of a lock and of state only its parent may use registers a
 * slot below, once, at load.  Around a fork the forking thread takes
 * every registered lock (prepare, in slot order: that order is the lock
 * order of the whole library), releases them in the parent in reverse,
 * and in the child re-initialises them and forgets the parent's state
 * (child, in reverse).  No other pthread_atfork call exists in luamp.
 * Uses: nothing but libc.  Must never: include lua.h, call into libc in a
 * child hook beyond what async-signal-safe code may (the child of a
 * threaded host runs them), fork while holding a registered lock.
 */
#ifndef LMP_STATE_H
#define LMP_STATE_H

#include <sys/types.h>

/* The slots, in lock order: a lock may be taken while holding one of an
 * earlier slot, never of a later one. */
enum {
    LMP_STATE_REGISTRIES, /* core/child.c: every registry, the fork generation */
    LMP_STATE_FORKSERVER, /* start/forkserver.c: the owner's server */
    LMP_STATE_RUNNER,     /* core/state.c: the runner's path */
    LMP_STATE_FDS,        /* core/state.c: the tracked descriptors */
    LMP_STATE_RESERVE,    /* core/sys.c: the descriptor reserve */
    LMP_STATE_TID,        /* core/shm.c: the calling thread's cached id (no lock) */
    LMP_STATE_SLOTS
};

typedef struct lmp_fork_hooks {
    void (*prepare)(void); /* take the lock (NULL: none) */
    void (*parent)(void);  /* release it */
    void (*child)(void);   /* re-initialise it (by assignment), forget the parent's state */
} lmp_fork_hooks;

/* Register the hooks of one slot (from a constructor: before any thread
 * of the host can fork).  The handler itself is installed at the first
 * registration. */
void lmp_state_on_fork(int slot, const lmp_fork_hooks *h);

/* Private descriptors: luamp's own sentinels, pidfds and result channels.
 * Every one is O_CLOEXEC and registered here so that a forked child can
 * close all of them (a sibling's sentinel must never stay open by accident)
 * while keeping the user's own descriptors, as fork promises. */
void lmp_fd_track(int fd);
void lmp_fd_untrack(int fd);
/* Untrack and close; retries nothing (close must not be retried on EINTR). */
void lmp_fd_close(int fd);
/* In a freshly forked child: close every tracked descriptor but `keep`. */
void lmp_fd_close_tracked(int keep);

/* The runner's path (start/exec.h's lmp_set_runner_path and
 * lmp_runner_path keep it here): set copies path (NULL: search again),
 * 0 or -ENOMEM; get copies into buf the path set, else what search()
 * found (asked once, under the lock; malloc'd or NULL), 0 or
 * -ENAMETOOLONG. */
#include <stddef.h>
int lmp_runner_set(const char *path);
int lmp_runner_get(char *buf, size_t size, char *(*search)(void));

/* This process's pid, cached: no system call after the first, reset in
 * every forked child before any child hook runs. */
pid_t lmp_self(void);

/* The child's identity: what this process knows about the luamp process
 * that created it.  In the root (and in a host's own fork child, which
 * inherits it unchanged, as it inherits the descriptors) parent_pid is 0.
 * Set once by whoever makes this process a child (a copies_caller start
 * returning in the child, a fresh runner's become); read by the binding.
 * Only the thread that runs Lua touches it: no lock. */
typedef struct lmp_identity {
    int result_w;     /* write end of the result channel (-1: none) */
    int parent_r;     /* fallback parent sentinel (-1: use a pidfd) */
    pid_t parent_pid; /* the creator (0: this is the root) */
    int parent_pidfd; /* the creator's sentinel once opened (-1) */
    void *inherited;  /* fork: the creator's record being filled when it
                       * forked, kept (reachable, for leak checkers),
                       * never freed: freeing would only copy pages */
} lmp_identity;

/* This process's identity (never NULL). */
lmp_identity *lmp_identity_get(void);
/* This process became a child of parent_pid (see lmp_identity). */
void lmp_identity_set(int result_w, int parent_r, pid_t parent_pid, void *inherited);

#endif
