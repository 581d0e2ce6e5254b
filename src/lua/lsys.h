/*
 * lsys.h - the core functions that belong to no object: clock, pid, CPU
 * and thread counts, working directory, the runner's path, signal names
 * and numbers, the codec as functions, test hooks (lsys.c).
 */
#ifndef LMP_LSYS_H
#define LMP_LSYS_H

#include "lua.h"

/* [-0, +0, e]  Add them, the constants SIGTERM, SIGKILL, SIGINT and the
 * limits Lua shares with C (WAIT_MAX, ERROR_MAX: core/bounds.h) to the
 * core table on top. */
void lmp_open_sys(lua_State *L);

#endif
