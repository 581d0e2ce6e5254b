/*
 * result.h - the result channel between a child and its parent.
 *
 * Provides: the child's side (send one payload, never blocking on a parent
 * that is not reading) and the parent's (collect it once the child has
 * ended).  The channel is a unix stream socket.  A small payload goes
 * inline; a large one is written to a memfd whose descriptor goes over
 * the socket (SCM_RIGHTS), so even 100 MB leaves the child at once, and
 * the parent never has to wake up to drain it while waiting: a join is
 * one sleep on the sentinel, one wake-up at the end.
 * Uses: buf.h, Linux memfd.  Must never: include lua.h.
 */
#ifndef LMP_RESULT_H
#define LMP_RESULT_H

#include <stddef.h>

#include "buf.h"

/* Payloads up to this size go inline (and never more than a quarter of
 * the socket's send buffer). */
#define LMP_RESULT_INLINE 32768

/* Child: send the n bytes at p on fd.  0 or -errno (-EPIPE: the parent
 * is gone; nobody will read it). */
int lmp_result_send(int fd, const void *p, size_t n);

/* Parent, once the child has ended: append what the child sent on fd (a
 * non-blocking descriptor) to out.  0 (an empty out: the child sent
 * nothing) or -errno: -EMFILE when no descriptor slot was free for the
 * memfd, -EPROTO for a malformed message, -ENOMEM; out is then partial. */
int lmp_result_collect(int fd, lmp_buf *out);

#endif
