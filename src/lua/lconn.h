/*
 * lconn.h - process.Pipe and its Connection objects (lconn.c).
 */
#ifndef LMP_LCONN_H
#define LMP_LCONN_H

#include "lua.h"

/* [-0, +0, e]  Add core.Pipe to the core table on top. */
void lmp_open_conn(lua_State *L);

/* Handing Connections to spawn and forkserver children (lpayload.c) and
 * pool workers (lpool.c): the descriptor behind an open one at idx (still
 * owned by it), 1 if idx is one, else 0; and a new one over a received
 * descriptor, which it then owns. */
int lmp_conn_fds(lua_State *L, int idx, int *fd, int *readable, int *writable);
void lmp_conn_push(lua_State *L, int fd, int readable, int writable);

#endif
