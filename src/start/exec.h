/*
 * exec.h - starting a fresh `luamp` runner: what spawn children and the
 * forkserver are.
 *
 * Provides: lmp_exec, which runs a program with exactly the descriptors it
 * is given (plus 0, 1, 2) and reports a failed exec as an errno through a
 * close-on-exec error pipe; and lmp_runner_path, which finds the runner
 * without configuration.
 * Uses: core/sys.h.  Must never: include lua.h, allocate between vfork and
 * exec, or run any code of the caller's in the child.
 */
#ifndef LMP_EXEC_H
#define LMP_EXEC_H

#include <sys/types.h>

#include "core/bounds.h" /* LMP_EXEC_MAXFDS: at most this many descriptors are handed over */

/* lmp_exec flags */
enum { LMP_EXEC_DIE_WITH_PARENT = 1 }; /* SIGKILL when the caller's thread ends */

/* Run exe with argv (the environment is the caller's).  fds[i] becomes
 * descriptor 3 + i in the child (not close-on-exec there); every other
 * descriptor but 0, 1 and 2 is closed, signal handlers are back to their
 * defaults and the signal mask is empty.  Returns the pid, or -errno: the
 * exec's own errno (ENOENT, EACCES, ENOEXEC...) when it failed, in which
 * case the child has been reaped; or the fork's/pipe's.  The caller's
 * descriptors stay open. */
pid_t lmp_exec(const char *exe, char *const argv[], const int *fds, int nfds, int flags);

/* The runner to execute: the one set with lmp_set_runner_path if any;
 * else the `luamp` next to (or in a bin/ directory above) the shared
 * object this code was loaded from, which finds the build tree's runner
 * from build/process.so and an installed one from
 * PREFIX/lib/lua/5.4/process.so; else LUAMP_BINDIR/luamp (compiled in).
 * The search runs once.  Copied into buf: 0, or -ENAMETOOLONG. */
#include <stddef.h>
int lmp_runner_path(char *buf, size_t size);
/* NULL goes back to the search's answer.  0 or -ENOMEM. */
int lmp_set_runner_path(const char *path);

#endif
