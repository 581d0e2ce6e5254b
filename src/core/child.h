/*
 * child.h - one child process and the registry of a runtime's children.
 *
 * Provides: lmp_child (pid, sentinel, result channel, exit code), reaping
 * exactly once through the sentinel (waitid on a pidfd, or waitpid after a
 * death pipe reports EOF where the kernel lacks pidfd), waiting with a
 * deadline, collecting what the child sent on its result channel once it
 * has ended (result.h), signalling without pid-reuse races, and the
 * creator's exit clean-up (daemons terminated, then killed after a grace
 * period; non-daemons joined).
 * Uses: sys.h, buf.h.  Must never: call waitpid(-1), install a SIGCHLD
 * handler, include lua.h, exit.
 *
 * Ownership: a child record belongs to its registry while the child may
 * still need reaping, and to the Lua userdata that refers to it.  It is
 * freed by whichever lets go last (see lmp_child_drop).
 */
#ifndef LMP_CHILD_H
#define LMP_CHILD_H

#include <sys/types.h>

#include "bounds.h"
#include "buf.h"

/* Seconds a daemon gets between SIGTERM and SIGKILL when its creator ends. */
#define LMP_DAEMON_GRACE 1.0

typedef struct lmp_reg lmp_reg;
typedef struct lmp_child lmp_child;

/* How a child is reaped and signalled: a start method's own (see
 * src/start/method.h); the core never asks which method made a child. */
typedef struct lmp_child_ops {
    /* The sentinel is readable (the child ended): its exit code, n or
     * -signum, or LMP_STATUS_LOST when it cannot be known. */
    int (*status)(lmp_child *c);
    /* Send sig to the child, not yet reaped.  0 (also when it is gone
     * already) or -errno. */
    int (*signal)(lmp_child *c, int sig);
} lmp_child_ops;

/* The caller's own child (fork, spawn): reaped with waitid(P_PIDFD) on
 * the sentinel, or waitpid(pid) once the death pipe reads EOF. */
extern const lmp_child_ops lmp_child_own;

struct lmp_child {
    pid_t pid;
    const lmp_child_ops *ops; /* set by the start method */
    int sentinel;    /* readable once the child has ended (a pidfd, the
                      * read end of a death pipe, a status socket...);
                      * -1 once closed */
    int pidfd;       /* besides the sentinel, for signals (-1: none);
                      * closed at the reap */
    int result_fd;   /* parent's end of the result channel; -1 once read */
    int parent_w;    /* fallback only: write end of the child's parent pipe */
    int exitcode;    /* n, or -signum; valid once ended */
    pid_t owner;     /* the process that started it (see lmp_child_foreign) */
    unsigned ended : 1;   /* reaped */
    unsigned daemon : 1;
    unsigned is_pidfd : 1;
    unsigned has_ud : 1;  /* a Lua userdata still refers to it */
    lmp_buf result;       /* what the child sent, once it ended */
    int result_err;       /* 0, or -errno: collecting it failed */
    lmp_reg *reg;         /* NULL once detached */
    lmp_child *prev, *next;
};

/* Registries: one per runtime (lua_State).  All of a process's registries
 * are cleaned up by an atexit handler too, so os.exit() in any form still
 * terminates daemons and joins the rest. */
lmp_reg *lmp_reg_new(void);
/* Exit clean-up then free; records still held by a userdata are detached. */
void lmp_reg_free(lmp_reg *r);
/* The creator's exit clean-up for one registry (idempotent). */
void lmp_reg_shutdown(lmp_reg *r);
/* Every registry of this process (atexit, and a child's os.exit), then
 * the function set with lmp_reg_at_shutdown (the forkserver's stop). */
void lmp_reg_shutdown_all(void);
void lmp_reg_at_shutdown(void (*fn)(void));
/* In a freshly forked child: forget every inherited child record and
 * close every tracked descriptor except keep. */
void lmp_reg_after_fork(int keep);
/* This process's pid, cached: see state.h. */
#include "state.h"

/* True for a record inherited through fork: not this process's child;
 * touch nothing.  Comparing pids (rather than marking every record in
 * the child) keeps the child from writing to pages it shares with its
 * parent. */
int lmp_child_foreign(const lmp_child *c);

/* New zeroed record (fds -1, ops lmp_child_own), not yet in a registry;
 * NULL on ENOMEM. */
lmp_child *lmp_child_new(void);
void lmp_child_link(lmp_reg *r, lmp_child *c);
/* The userdata lets go: free now, or leave to the registry if unreaped. */
void lmp_child_drop(lmp_child *c);
/* Close the sentinel and any channel; only valid once ended. */
void lmp_child_close(lmp_child *c);

/* Non-blocking: reap if ended (collecting its result).
 * 1 ended (exitcode set), 0 running, -errno. */
int lmp_child_poll(lmp_child *c);
/* Wait until ended or timeout seconds (< 0: forever).
 * 1 ended, 0 timeout, -errno. */
int lmp_child_wait(lmp_child *c, double timeout);
/* Send sig unless already reaped (no-op then).  0 or -errno. */
int lmp_child_signal(lmp_child *c, int sig);

#endif
