/*
 * lconn.h - process.Pipe (lconn.c) and process.Queue (lqueue.c).
 */
#ifndef LMP_LCONN_H
#define LMP_LCONN_H

#include "lua.h"

int lmp_open_pipe(lua_State *L);  /* process.Pipe([duplex]) */
int lmp_open_queue(lua_State *L); /* process.Queue([maxsize]) */

/* Handing Connections and Queues to spawn and forkserver children
 * (lspawn.c): the descriptors behind an open one at idx (still owned by
 * it), 1 if idx is one, else 0; and a new one over received descriptors,
 * which it then owns (on failure they stay the caller's). */
int lmp_conn_fds(lua_State *L, int idx, int *fd, int *readable, int *writable);
void lmp_conn_push(lua_State *L, int fd, int readable, int writable);
int lmp_queue_fds_of(lua_State *L, int idx, int fds[2]);
int lmp_queue_push(lua_State *L, int header_fd, int spool_fd); /* 0 or -errno, pushes on 0 */

/* JoinableQueue (lqueue.c): the constructor; whether the Queue at idx is
 * one; lmp_queue_push making one when joinable. */
int lmp_open_joinable_queue(lua_State *L);
int lmp_queue_joinable_of(lua_State *L, int idx);
int lmp_queue_push_joinable(lua_State *L, int header_fd, int spool_fd, int joinable);

#endif
