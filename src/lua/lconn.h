/*
 * lconn.h - process.Pipe (lconn.c) and process.Queue (lqueue.c).
 */
#ifndef LMP_LCONN_H
#define LMP_LCONN_H

#include "lua.h"

int lmp_open_pipe(lua_State *L);  /* process.Pipe([duplex]) */
int lmp_open_queue(lua_State *L); /* process.Queue([maxsize]) */

#endif
