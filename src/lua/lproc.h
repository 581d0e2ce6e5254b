/*
 * lproc.h - the C half of the Lua binding: the "process.Popen" userdata
 * (one started child) and the core functions the Lua layer builds the
 * Process class on.
 */
#ifndef LMP_LPROC_H
#define LMP_LPROC_H

#include "lua.h"

/* [-0, +1, m]  Pushes the core table (functions closed over this state's
 * child registry, created on first use and freed by lua_close). */
int lmp_open_core(lua_State *L);

#endif
