/*
 * lproc.h - process objects: the "process.Popen" userdata (one started
 * child) and the core functions that start and wait for children
 * (lproc.c).
 */
#ifndef LMP_LPROC_H
#define LMP_LPROC_H

#include "lua.h"

/* [-0, +0, e]  Add core.start, core.methods and core.wait to the core
 * table on top; they close over this state's child registry, created on
 * first use and freed by lua_close. */
void lmp_open_proc(lua_State *L);

#endif
