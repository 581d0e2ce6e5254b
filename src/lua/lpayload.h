/*
 * lpayload.h - the payload a spawn or forkserver child starts from: made
 * by core.payload in the parent, loaded by core.become in the child
 * (lpayload.c).
 */
#ifndef LMP_LPAYLOAD_H
#define LMP_LPAYLOAD_H

#include "lua.h"
#include "start/method.h"

/* [-0, +0, e]  Add core.payload, core.become, core.child_env and
 * core.child_value to the core table on top. */
void lmp_open_payload(lua_State *L);

/* The payload userdata at idx, as the start methods take it: 1 and *out
 * filled, or 0 if idx is not one.  Release closes its descriptors once
 * the child has them. */
int lmp_payload_get(lua_State *L, int idx, lmp_payload *out);
void lmp_payload_release(lua_State *L, int idx);

#endif
