/*
 * lqueue.h - process.Queue and process.JoinableQueue (lqueue.c).
 */
#ifndef LMP_LQUEUE_H
#define LMP_LQUEUE_H

#include "lua.h"

/* [-0, +0, e]  Add core.Queue and core.JoinableQueue to the core table on
 * top. */
void lmp_open_queues(lua_State *L);

/* Handing Queues to spawn and forkserver children (lpayload.c): the
 * descriptors behind an open one at idx (still owned by it), 1 if idx is
 * one, else 0; whether it is joinable; and a new one over received
 * descriptors, which it then owns (0, or -errno with nothing pushed and
 * the descriptors still the caller's). */
int lmp_queue_fds_of(lua_State *L, int idx, int fds[2]);
int lmp_queue_joinable_of(lua_State *L, int idx);
int lmp_queue_push_joinable(lua_State *L, int header_fd, int spool_fd, int joinable);

#endif
