/*
 * lpool.h - process.Pool's system calls (lpool.c).
 */
#ifndef LMP_LPOOL_H
#define LMP_LPOOL_H

#include "lua.h"

/* [-0, +0, e]  Add the pool's functions to the core table on top. */
void lmp_open_pool(lua_State *L);

#endif
