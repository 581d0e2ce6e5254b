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

/* lproc.c: this process is a child of parent_pid (spawn, forkserver),
 * sending its result on result_w; parent_r is its parent sentinel (-1: a
 * pidfd of parent_pid, opened on first use). */
#include <sys/types.h>
void lmp_became_child(int result_w, int parent_r, pid_t parent_pid);

/* lspawn.c: the payload userdata at idx (see there), as the start
 * methods take it: 1 and *out filled, or 0 if idx is not one.  Release
 * closes its descriptors once the child has them. */
#include "lauxlib.h"
#include "start/method.h"
int lmp_payload_get(lua_State *L, int idx, lmp_payload *out);
void lmp_payload_release(lua_State *L, int idx);
extern const luaL_Reg lmp_spawn_funcs[];

#endif
