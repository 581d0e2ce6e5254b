/*
 * luamp.h - the public C API of luamp, an embeddable Lua 5.4 process
 * runtime.  This header is the C reference; every function the library
 * exports is declared here and nowhere else.
 *
 * Two ways to embed:
 *
 *  1. A host that owns its lua_State opens the module into it:
 *
 *         luamp_openlibs(L);            // require "process" now works in L
 *
 *     lua_close(L) then performs the creator's exit clean-up for the
 *     children L started (daemons terminated, the others joined).
 *
 *  2. A host that wants luamp to own the state:
 *
 *         luamp_runtime *rt = luamp_runtime_new();
 *         if (luamp_runtime_dofile(rt, "job.lua", 0, NULL) != 0)
 *             fprintf(stderr, "%s\n", luamp_runtime_error(rt));
 *         luamp_runtime_close(rt);
 *
 * Native targets: luamp_register_target() puts a host's C functions in
 * package.loaded under a module name, so scripts pass them to
 * process.Process{target = ...} like pi.leibniz.
 *
 * Hosts' rules: luamp never calls waitpid(-1), never installs a SIGCHLD
 * handler and never calls exit(); each lua_State sees only the children it
 * started.  In return the host must not reap luamp's children itself: a
 * host that calls waitpid(-1) or sets SIGCHLD to SIG_IGN (or SA_NOCLDWAIT)
 * takes their exit status away, and such a child then reports exitcode
 * 255.  Descriptors a script opens (Pipes included) are inherited by every
 * child forked later, from any state of the process: close a runtime whose
 * children wait on a Pipe after closing the runtimes that forked since.
 *
 * Start methods: children are created by the state's start method
 * (process.set_start_method, or per context with process.get_context):
 *  - "fork" (the default): a copy of the calling process.  Only the
 *    calling thread is copied, so a host with other threads risks a
 *    deadlock in the child on a lock one of them held; luamp warns once
 *    on stderr when a multithreaded process forks.
 *  - "spawn": a fresh `luamp` runner executed for the child (vfork +
 *    exec); the target and what it needs are sent to it.
 *  - "forkserver": a fork of a server process, a fresh runner started on
 *    first use; every child dies with the server, the server with its
 *    owner.
 * A host with threads should use "spawn" or "forkserver".  Both execute
 * the runner installed next to the library (PREFIX/bin/luamp, or the
 * build tree's); process.set_executable(path) names another.  A C target
 * registered with luamp_register_target travels by its package.loaded
 * name, so under spawn and forkserver the child (the runner) must be able
 * to require it.  Whatever the method, use a lua_State from one thread
 * at a time, as Lua requires.
 *
 * Descriptors: the library's first use (luaopen_process) opens /dev/null
 * on any of descriptors 0-2 that is closed, and no descriptor of luamp's
 * ever lands on 0-2; it holds one descriptor in reserve for receiving
 * large results and messages at the descriptor limit.  luamp's locks are
 * reset in every forked child, a host's own fork included.
 *
 * Errors: functions returning int return 0 on success or a negative code,
 * either -errno or one of the LUAMP_E* codes below; luamp_strerror and
 * luamp_errname describe any of them.  Functions marked [-o, +p, x] use
 * the Lua manual's notation: they pop o values, push p, and x says whether
 * they may raise a Lua error ("e" any error, "m" memory errors only, "-"
 * never).  Unmarked functions never raise.
 */
#ifndef LUAMP_H
#define LUAMP_H

#include "lauxlib.h"
#include "lua.h"

#if defined(LUAMP_BUILDING) && defined(__GNUC__)
#define LUAMP_API __attribute__((visibility("default")))
#else
#define LUAMP_API
#endif

#define LUAMP_VERSION "0.1.0"

/* Codes beyond -errno (all negative, below any errno). */
#define LUAMP_ESYNTAX (-1001) /* the script does not compile */
#define LUAMP_ERUN (-1002)    /* the script raised an error */
#define LUAMP_EFILE (-1003)   /* the script file cannot be read */
#define LUAMP_EEXIT (-1004)   /* the script called os.exit (see
                                 luamp_runtime_exitstatus) */

/* ---- opening the module into a host's own state ---------------------- */

/* [-0, +1, e]  Open the `process` module and push its table: the
 * lua_CFunction behind require "process", for
 * luaL_requiref(L, "process", luaopen_process, 1). */
LUAMP_API int luaopen_process(lua_State *L);

/* [-0, +1, e]  Open `process.pi`, the native pi kernels. */
LUAMP_API int luaopen_process_pi(lua_State *L);

/* [-0, +1, e]  Open `process.internal`: hooks for luamp's runner, tests
 * and benchmarks (fault injection, the codec alone...); not API. */
LUAMP_API int luaopen_process_internal(lua_State *L);

/* [-0, +0, e]  Register `process` and `process.pi` in package.preload, so
 * scripts in L require them with no LUA_PATH or LUA_CPATH.  L needs the
 * package library (luaL_openlibs). */
LUAMP_API void luamp_openlibs(lua_State *L);

/* [-1, +1, m]  The message handler luamp's runner and runtimes use, for
 * a host's own lua_pcall: the error message with a traceback; an error
 * object that is not a string shown by its __tostring, or as "(error
 * object is a X value)", as lua.c shows it. */
LUAMP_API int luamp_msghandler(lua_State *L);

/* [-0, +0, e]  Make the C functions in funcs (a NULL-terminated luaL_Reg
 * array, as for luaL_setfuncs) available as package.loaded[module].name,
 * creating that table or adding to it.  Scripts then reach them with
 * require(module), and pass them as process targets; a start method that
 * has to send a target by name finds them there.  module: a string such
 * as "host.kernels" (copied).  funcs: not retained. */
LUAMP_API void luamp_register_target(lua_State *L, const char *module, const luaL_Reg *funcs);

/* ---- a runtime that owns its state ------------------------------------ */

typedef struct luamp_runtime luamp_runtime;

/* A new runtime: a lua_State with the standard libraries and `process`
 * preloaded.  os.exit in its scripts ends the script (LUAMP_EEXIT), not
 * the host: it raises an error that only the run catches, so a script
 * that calls it under pcall can swallow it.  Returns NULL when memory runs out.  (transfer full: free it
 * with luamp_runtime_close.) */
LUAMP_API luamp_runtime *luamp_runtime_new(void);

/* The runtime's lua_State, to register functions or read globals; NULL
 * for a NULL rt.  (transfer none: valid until luamp_runtime_close; do not
 * lua_close it.) */
LUAMP_API lua_State *luamp_runtime_state(luamp_runtime *rt);

/* Run the Lua file at path (NULL: standard input) with the given
 * arguments as the script's `...` and `arg` (argv[0] is the script name;
 * argc may be 0 and argv NULL; argc < 0, or argv NULL with argc > 0, runs
 * with no arguments).  Returns 0, LUAMP_EFILE, LUAMP_ESYNTAX, LUAMP_ERUN
 * (the message, with a traceback, is in luamp_runtime_error), LUAMP_EEXIT
 * (the script called os.exit), -ENOMEM, or -EINVAL when rt is NULL. */
LUAMP_API int luamp_runtime_dofile(luamp_runtime *rt, const char *path, int argc, char **argv);

/* Run a chunk of Lua source; name labels it in messages ("=host" or
 * "@file.lua"; NULL: "=(string)").  Returns as luamp_runtime_dofile
 * (-EINVAL when rt or chunk is NULL). */
LUAMP_API int luamp_runtime_dostring(luamp_runtime *rt, const char *chunk, const char *name);

/* The message of the last failed run: the error and its traceback, or
 * "" when the last run succeeded.  (transfer none: valid until the next
 * run or luamp_runtime_close.) */
LUAMP_API const char *luamp_runtime_error(luamp_runtime *rt);

/* The status the script gave os.exit after a run returned LUAMP_EEXIT
 * (os.exit() and os.exit(true): 0; os.exit(false): 1; os.exit(n): n). */
LUAMP_API int luamp_runtime_exitstatus(luamp_runtime *rt);

/* Close the state: the creator's exit clean-up (daemonic children
 * terminated, killed after a grace period if they must be; the others
 * joined), then free everything.  NULL is a no-op. */
LUAMP_API void luamp_runtime_close(luamp_runtime *rt);

/* ---- shared memory: process.Value and process.Array from C ------------ */

/* Element types of a Value's or an Array's memory. */
#define LUAMP_SHARED_INT64 1  /* int64_t */
#define LUAMP_SHARED_INT32 2  /* int32_t */
#define LUAMP_SHARED_UINT8 3  /* uint8_t */
#define LUAMP_SHARED_DOUBLE 4 /* double */

/* [-0, +0, -]  If the value at idx is a process.Value or process.Array,
 * return 1 and its memory: *data (8-byte aligned), *type (LUAMP_SHARED_*)
 * and *n (elements: 1 for a Value); any pointer may be NULL.  Else 0.
 * The memory is shared with every process the object reached (passed in
 * args, or inherited through fork), so a C target, e.g. a kernel given an
 * Array among its arguments, publishes progress or partial results there
 * without messages.  Element i of an Array is data[i - 1] in Lua's terms.
 * Concurrent access must be atomic: __atomic_store_n / __atomic_add_fetch
 * (or C11 atomics) on naturally aligned elements, as the Lua side uses.
 * (transfer none: valid while the object is alive in this state; do not
 * free or unmap it.) */
LUAMP_API int luamp_shared_get(lua_State *L, int idx, void **data, int *type, size_t *n);

/* ---- errors and version ------------------------------------------------ */

/* A message for a code returned above (negative errno or LUAMP_E*); any
 * int is accepted ("unknown code" for what is neither).
 * (transfer none: a static string.) */
LUAMP_API const char *luamp_strerror(int code);

/* The code's name: "ENOMEM", "LUAMP_ERUN", ... (every errno the C library
 * knows); "E?" for any other int.
 * (transfer none: a static string.) */
LUAMP_API const char *luamp_errname(int code);

/* LUAMP_VERSION of the library actually linked. */
LUAMP_API const char *luamp_version(void);

#endif
