/*
 * lbind.h - the binding's one way of doing the things every binding file
 * does: define a class of userdata, report an OS refusal, raise, check
 * the arguments that cross into C.
 *
 * Provides: lmp_class (a metatable made once per state: __name, __index,
 * __gc and __close the same function, __tostring), the error convention
 * of API.md (programmer errors raise with luaL_error and API.md's words;
 * OS refusals return nil, "op: strerror", "ENAME" with lmp_pushoserror,
 * or raise "op: strerror" with lmp_raise_oserror where there is no caller
 * to take a return value), range and string checks, timeouts.
 * Uses: the Lua C API, core/sys.h for errno names.
 * Must never: know any class or object of its own.
 */
#ifndef LMP_LBIND_H
#define LMP_LBIND_H

#include <stddef.h>

#include "lauxlib.h"
#include "lua.h"

/* A class of userdata, described once (static const) by the file that
 * owns it.  Its metatable is made the first time an object of it is made
 * in a state, and is the same for every object: __name (luaL_newmetatable,
 * so error messages name the class), __index the methods, __gc and
 * __close the same function (collecting an object and leaving a <close>
 * scope release the same resources), __tostring when given. */
typedef struct lmp_class {
    const char *name;        /* "process.Connection": registry key and __name */
    const luaL_Reg *methods; /* __index (NULL: none, or set by `extra`) */
    lua_CFunction close;     /* __gc and __close (NULL: none) */
    lua_CFunction tostring;  /* __tostring (NULL: Lua's, from __name) */
    /* [-0, +0, e] completes the new metatable on top (NULL: nothing) */
    void (*extra)(lua_State *L);
} lmp_class;

/* [-0, +1, m]  Push the class's metatable, made now if this state has
 * none yet. */
void lmp_class_meta(lua_State *L, const lmp_class *c);

/* [-0, +1, m]  A new userdata of `size` bytes with the class's metatable
 * (and nuv user values); its memory is the caller's to initialise, before
 * anything that may raise (the __gc runs on whatever it holds). */
void *lmp_class_new(lua_State *L, const lmp_class *c, size_t size, int nuv);

/* [-0, +3, m]  OS refusal, as Lua's io library reports one: pushes nil,
 * "op: strerror", "ENAME" and returns 3.  err is a positive errno. */
int lmp_pushoserror(lua_State *L, const char *op, int err);

/* [-0, +0, v]  Raise "op: strerror" for an OS failure that has no caller
 * to return to (a child's own end, a payload being loaded). */
int lmp_raise_oserror(lua_State *L, const char *op, int err);

/* [-0, +0, v]  Values crossing into C are range-checked, never cut: an
 * integer argument in [lo, hi] (raises "out of range" otherwise), and a
 * string that C will see as a C string (raises on an embedded zero byte,
 * which would silently cut it). */
lua_Integer lmp_checkrange(lua_State *L, int arg, lua_Integer lo, lua_Integer hi);
const char *lmp_checkcstring(lua_State *L, int arg);
const char *lmp_optcstring(lua_State *L, int arg, const char *dflt);

/* [-0, +0, v]  Timeout argument: nil -> dflt; a number; negative -> 0;
 * math.huge or beyond 1e9 -> forever (-1); NaN raises. */
double lmp_opttimeout(lua_State *L, int arg, double dflt);

#endif
