/*
 * bounds.h - the limits and codes every layer shares, each defined once.
 *
 * Provides: how many descriptors cross to a child and in what budget, the
 * exit code of a child whose status was lost, how many objects a wait
 * watches, how long a child's error message may be, the largest errno
 * value.
 * Everything else derives from these (start methods, the forkserver's
 * protocol, the payload); nothing repeats them as literals.
 * Uses: nothing.  Must never: include lua.h.
 */
#ifndef LMP_BOUNDS_H
#define LMP_BOUNDS_H

/* Descriptors one SCM_RIGHTS message may carry (Linux's SCM_MAX_FD). */
#define LMP_PASS_MAXFDS 253
/* Descriptors lmp_exec hands to a fresh runner (spawn children and the
 * forkserver), at 3 and up. */
#define LMP_EXEC_MAXFDS 250
/* Descriptors a start method adds to the payload's own, at most (the
 * payload memfd, the result channel, a death pipe or status socket, the
 * parent sentinel; room kept for more). */
#define LMP_METHOD_FIXEDFDS 8
/* Descriptors a payload may refer to (Connections, Queues, shared
 * primitives): what is left of the smallest budget above. */
#define LMP_PAYLOAD_MAXFDS (LMP_EXEC_MAXFDS - LMP_METHOD_FIXEDFDS)

/* The exit code reported for a child whose status cannot be known
 * (reaped by someone else, or its forkserver died). */
#define LMP_STATUS_LOST 255

/* Objects one wait may watch (core.wait, the pool's wait; and so the
 * processes pi.parallel runs at once).  Lua reads it as core.WAIT_MAX. */
#define LMP_WAIT_MAX 4096

/* Bytes of a child's error message it sends its parent: short enough to
 * travel inline on the result channel, so that sending it cannot fail for
 * want of a memfd.  Lua reads it as core.ERROR_MAX. */
#define LMP_ERROR_MAX 4096

/* errno values are below this on Linux: anything a peer reports as an
 * errno outside 1..LMP_ERRMAX-1 is garbage. */
#define LMP_ERRMAX 4096

#endif
