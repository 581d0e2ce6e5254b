/*
 * lchild.h - the child's side of a process: its identity (core/state.h)
 * as the Lua layer sees it, and how it ends (lchild.c).
 */
#ifndef LMP_LCHILD_H
#define LMP_LCHILD_H

#include "lua.h"

/* [-0, +0, e]  Add core.send_result, core.parent_sentinel, core.call and
 * core.exit to the core table on top. */
void lmp_open_child(lua_State *L);

#endif
