/*
 * luamp.h - the public C API of luamp, an embeddable Lua 5.4 process
 * runtime.  This header is the C reference.
 *
 * A host with its own lua_State makes the `process` module available with
 * one call:
 *
 *     luamp_openlibs(L);          // require "process" now works in L
 *
 * Functions marked [-o, +p, x] follow the Lua manual's notation: they pop o
 * values, push p, and may raise (x = "e" errors, "m" memory only, "-" never).
 */
#ifndef LUAMP_H
#define LUAMP_H

#include "lua.h"

#if defined(LUAMP_BUILDING) && defined(__GNUC__)
#define LUAMP_API __attribute__((visibility("default")))
#else
#define LUAMP_API
#endif

#define LUAMP_VERSION "0.1.0"

/* [-0, +1, e]  Open the `process` module and push its table (the
 * lua_CFunction behind require "process").  Use it with
 * luaL_requiref(L, "process", luaopen_process, 1). */
LUAMP_API int luaopen_process(lua_State *L);

/* [-0, +1, e]  Open `process.pi`, the native pi kernels. */
LUAMP_API int luaopen_process_pi(lua_State *L);

/* [-0, +0, e]  Register `process` and `process.pi` in package.preload so
 * scripts can require them without any LUA_PATH or LUA_CPATH.  Needs the
 * package library to be open (luaL_openlibs). */
LUAMP_API void luamp_openlibs(lua_State *L);

#endif
