/*
 * test_embed.c - the embedding API (src/luamp.h), every public function,
 * the failure paths, and the host's rules: independent states see only
 * their own children, the host's own children and SIGCHLD disposition are
 * left alone, closing a runtime cleans up its children; a host with
 * threads is warned once about fork and can use spawn and forkserver.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lualib.h"
#include "luamp.h"
#include "tap.h"

static int twice(lua_State *L) {
    lua_pushinteger(L, 2 * luaL_checkinteger(L, 1));
    return 1;
}

static const luaL_Reg natives[] = {{"twice", twice}, {NULL, NULL}};

static volatile sig_atomic_t host_sigchld;
static void on_chld(int s) { (void)s; host_sigchld++; }

/* Run a chunk and return an integer global it sets (or -1). */
/* A host thread that just waits until told to end. */
static void *idle_thread(void *arg) {
    char c;
    ssize_t n = read(*(int *)arg, &c, 1);
    (void)n;
    return NULL;
}

/* With a second thread running: fork warns once (on stderr), spawn and
 * forkserver start without a warning. */
static void threaded_host(void) {
    int tp[2];
    pthread_t th;
    ok(pipe(tp) == 0 && pthread_create(&th, NULL, idle_thread, &tp[0]) == 0, "host thread started");
    fflush(stderr);
    FILE *cap = tmpfile();
    int saved = dup(2);
    dup2(fileno(cap), 2);
    luamp_runtime *rt = luamp_runtime_new();
    int rc = luamp_runtime_dostring(rt,
        "local process = require 'process'\n"
        "for i = 1, 2 do assert(process.Process{target = function() end}:start()):join() end\n"
        "for _, m in ipairs{'spawn', 'forkserver'} do\n"
        "  local p = process.get_context(m).Process{target = function(a) return a * 2 end, args = {21}}\n"
        "  assert(p:start()):join()\n"
        "  assert(p:result() == 42, m)\n"
        "end\n", "threads");
    const char *err = luamp_runtime_error(rt);
    ok(rc == 0, "fork, spawn and forkserver from a threaded host: %s", err);
    luamp_runtime_close(rt);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char text[4096] = "";
    rewind(cap);
    size_t n = fread(text, 1, sizeof text - 1, cap);
    text[n] = '\0';
    fclose(cap);
    int warnings = 0;
    for (const char *p = text; (p = strstr(p, "luamp: warning:")); p++) warnings++;
    ok(warnings == 1 && strstr(text, "2 threads") && strstr(text, "fork may deadlock"),
       "fork warned once about the threads: [%s]", text);
    ok(write(tp[1], "x", 1) == 1 && pthread_join(th, NULL) == 0, "host thread joined");
    close(tp[0]);
    close(tp[1]);
}

static long long run_get(luamp_runtime *rt, const char *chunk, const char *global) {
    if (luamp_runtime_dostring(rt, chunk, "=test") != 0) {
        printf("# %s\n", luamp_runtime_error(rt));
        return -1;
    }
    lua_State *L = luamp_runtime_state(rt);
    lua_getglobal(L, global);
    long long v = lua_isinteger(L, -1) ? (long long)lua_tointeger(L, -1) : -1;
    lua_pop(L, 1);
    return v;
}

int main(void) {
    ok(strcmp(luamp_version(), LUAMP_VERSION) == 0, "luamp_version is %s", luamp_version());

    /* the host installs its own SIGCHLD handler and has its own child */
    struct sigaction sa = {.sa_handler = on_chld}, now;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    int hp[2];
    if (pipe(hp) < 0) return 1;
    pid_t host_child = fork();
    if (host_child == 0) {
        char c;
        close(hp[1]);
        while (read(hp[0], &c, 1) < 0 && errno == EINTR) {}
        _exit(42);
    }
    close(hp[0]);

    luamp_runtime *rt = luamp_runtime_new();
    ok(rt != NULL, "luamp_runtime_new");
    ok(luamp_runtime_state(rt) != NULL, "luamp_runtime_state");
    ok(luamp_runtime_dostring(rt, "x = 1 + 1", NULL) == 0 && strcmp(luamp_runtime_error(rt), "") == 0,
       "dostring runs a chunk");

    int rc = luamp_runtime_dostring(rt, "x = = 1", "=bad");
    ok(rc == LUAMP_ESYNTAX && strstr(luamp_runtime_error(rt), "bad:1:"), "syntax error: %s (%s)",
       luamp_errname(rc), luamp_runtime_error(rt));
    rc = luamp_runtime_dostring(rt, "local function f() error('boom') end f()", "=boom");
    ok(rc == LUAMP_ERUN && strstr(luamp_runtime_error(rt), "boom:1: boom") &&
           strstr(luamp_runtime_error(rt), "stack traceback:"),
       "runtime error with a traceback");
    rc = luamp_runtime_dofile(rt, "/no/such/script.lua", 0, NULL);
    ok(rc == LUAMP_EFILE && strstr(luamp_runtime_error(rt), "cannot open"), "missing file: %s",
       luamp_errname(rc));
    rc = luamp_runtime_dostring(rt, "os.exit(3)", NULL);
    ok(rc == LUAMP_EEXIT && luamp_runtime_exitstatus(rt) == 3, "os.exit(3) ends the script, not the host");
    rc = luamp_runtime_dostring(rt, "os.exit(false)", NULL);
    ok(rc == LUAMP_EEXIT && luamp_runtime_exitstatus(rt) == 1, "os.exit(false) gives 1");

    /* dofile with arguments */
    char path[] = "/tmp/luamp-embed-XXXXXX";
    int fd = mkstemp(path);
    const char *script = "local a, b = ...\nargs = #arg .. a .. b\nn = tonumber(a) + tonumber(b)\n";
    ok(fd >= 0 && write(fd, script, strlen(script)) == (ssize_t)strlen(script), "script written");
    close(fd);
    char *argv[] = {path, "4", "5", NULL};
    ok(luamp_runtime_dofile(rt, path, 3, argv) == 0, "dofile with arguments");
    ok(run_get(rt, "", "n") == 9, "arguments reached the script as ...");
    /* no arguments: the README's own call, and argc < 0 / argv NULL */
    const char *noargs = "nargs = select('#', ...); argn = #arg\n";
    fd = open(path, O_WRONLY | O_TRUNC);
    ok(fd >= 0 && write(fd, noargs, strlen(noargs)) == (ssize_t)strlen(noargs), "script rewritten");
    close(fd);
    rc = luamp_runtime_dofile(rt, path, 0, NULL);
    ok(rc == 0 && run_get(rt, "", "nargs") == 0, "dofile(rt, path, 0, NULL): %s", luamp_runtime_error(rt));
    rc = luamp_runtime_dofile(rt, path, -5, argv);
    ok(rc == 0 && run_get(rt, "", "nargs") == 0, "dofile with argc < 0 runs with no arguments");
    rc = luamp_runtime_dofile(rt, path, 3, NULL);
    ok(rc == 0 && run_get(rt, "", "nargs") == 0, "dofile with argv NULL runs with no arguments");
    rc = luamp_runtime_dofile(rt, path, 1, argv);
    ok(rc == 0 && run_get(rt, "", "nargs") == 0 && run_get(rt, "", "argn") == 0,
       "dofile with only the script name: no ..., arg[0] only");
    ok(luamp_runtime_dofile(NULL, path, 0, NULL) == -EINVAL && luamp_runtime_dostring(rt, NULL, NULL) == -EINVAL,
       "NULL runtime or chunk refused with -EINVAL");
    unlink(path);

    /* a native target registered by the host, run in a child */
    luamp_register_target(luamp_runtime_state(rt), "test.native", natives);
    ok(run_get(rt,
               "local process = require 'process'\n"
               "local native = require 'test.native'\n"
               "local p = process.Process{target = native.twice, args = {21}}\n"
               "p:start(); p:join(); r = p:result()",
               "r") == 42,
       "registered C function as a process target");

    /* a refused fork is an error the script sees, not a crash */
    rc = luamp_runtime_dostring(rt,
                                "local process = require 'process'\n"
                                "require('process.internal').fault('fork', 'EAGAIN')\n"
                                "assert(process.Process{target = function() end}:start())",
                                "=refused");
    ok(rc == LUAMP_ERUN && strstr(luamp_runtime_error(rt), "start: Resource temporarily unavailable"),
       "refused fork reported as LUAMP_ERUN with the start message");

    /* two runtimes each see only their own children */
    luamp_runtime *rt2 = luamp_runtime_new();
    const char *spawn_two =
        "process = require 'process'\n"
        "local r, w = process.Pipe(false)\n"
        "hold = {w = w}\n"
        "for i = 1, 2 do process.Process{target = function() w:close(); pcall(r.recv, r) end}:start() end\n"
        "r:close()\n"
        "n = #process.active_children()";
    ok(run_get(rt, spawn_two, "n") == 2, "runtime 1 has 2 children");
    ok(run_get(rt2, "process = require 'process'; n = #process.active_children()", "n") == 0,
       "runtime 2 sees none of them");
    ok(run_get(rt2,
               "process.Process{daemon = true, target = function() process.parent_process():join() end}:start()\n"
               "n = #process.active_children()",
               "n") == 1,
       "runtime 2 has its own");
    ok(run_get(rt, "n = #process.active_children()", "n") == 2, "runtime 1 still has exactly its 2");
    ok(run_get(rt, "for _, p in ipairs(process.active_children()) do pid = p.pid end", "pid") > 0, "a child pid");
    long long daemon_pid = run_get(rt,
                                   "local d = process.Process{daemon = true, target = function()\n"
                                   "  process.parent_process():join() end}\n"
                                   "d:start(); dpid = d.pid",
                                   "dpid");
    ok(daemon_pid > 0, "daemon started");

    /* the host forks by itself and its child calls exit(): luamp's atexit
     * clean-up there must leave the parent's children alone */
    pid_t hf = fork();
    if (hf == 0) exit(0);
    int hst = 0;
    while (waitpid(hf, &hst, 0) < 0 && errno == EINTR) {}
    ok(WIFEXITED(hst) && WEXITSTATUS(hst) == 0 && kill((pid_t)daemon_pid, 0) == 0,
       "a host's own fork+exit leaves luamp's daemon running");

    /* closing a runtime: its daemon is terminated, the children blocked
     * on the pipe are joined once the pipe closes with the state.  rt2
     * goes first: its child was forked holding a copy of rt's pipe. */
    luamp_runtime_close(rt2);
    luamp_runtime_close(rt);
    ok(kill((pid_t)daemon_pid, 0) < 0 && errno == ESRCH, "daemon gone after luamp_runtime_close");
    luamp_runtime_close(NULL);

    /* the host's rules */
    sigaction(SIGCHLD, NULL, &now);
    ok(now.sa_handler == on_chld, "host's SIGCHLD handler untouched");
    ok(write(hp[1], "x", 1) == 1, "release the host's child");
    int st = 0;
    pid_t w;
    do w = waitpid(host_child, &st, 0);
    while (w < 0 && errno == EINTR);
    ok(w == host_child && WIFEXITED(st) && WEXITSTATUS(st) == 42, "host reaps its own child");
    close(hp[1]);

    /* a host that owns its state: luamp_openlibs, then lua_close cleans up */
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luamp_openlibs(L);
    ok(luaL_dostring(L, "local process = require 'process'\n"
                        "local pi = require 'process.pi'\n"
                        "local p = process.Process{daemon = true, target = function()\n"
                        "  process.parent_process():join() end}\n"
                        "p:start(); dpid = p.pid; leib = pi.leibniz(1, 1)") == LUA_OK,
       "luamp_openlibs into the host's own state");
    lua_getglobal(L, "dpid");
    pid_t d2 = (pid_t)lua_tointeger(L, -1);
    lua_close(L);
    ok(d2 > 0 && kill(d2, 0) < 0 && errno == ESRCH, "lua_close terminated the daemon");
    L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "process", luaopen_process, 1);
    ok(lua_istable(L, -1), "luaL_requiref with luaopen_process");
    luaL_requiref(L, "process.pi", luaopen_process_pi, 0);
    lua_getfield(L, -1, "leibniz");
    ok(lua_iscfunction(L, -1), "luaopen_process_pi has leibniz");
    lua_close(L);

    ok(strcmp(luamp_errname(-ENOMEM), "ENOMEM") == 0 && strcmp(luamp_strerror(-ENOMEM), strerror(ENOMEM)) == 0,
       "errno codes named");
    ok(strcmp(luamp_errname(LUAMP_ERUN), "LUAMP_ERUN") == 0 && strlen(luamp_strerror(LUAMP_EEXIT)) > 0,
       "luamp codes named");
    ok(strcmp(luamp_errname(12345), "E?") == 0, "unknown code");
    ok(strcmp(luamp_errname(INT_MIN), "E?") == 0 && strcmp(luamp_strerror(INT_MIN), "unknown code") == 0 &&
           strcmp(luamp_errname(-100000), "E?") == 0 && strcmp(luamp_errname(INT_MAX), "E?") == 0,
       "extreme codes: no overflow (INT_MIN, -100000, INT_MAX)");
    ok(strcmp(luamp_errname(-ENOTRECOVERABLE), "ENOTRECOVERABLE") == 0 &&
           strcmp(luamp_errname(-EHOSTUNREACH), "EHOSTUNREACH") == 0,
       "every errno named (ENOTRECOVERABLE, EHOSTUNREACH)");
    { /* the one message handler (the runner's and the runtimes') */
        lua_State *H = luaL_newstate();
        luaL_openlibs(H);
        lua_pushcfunction(H, luamp_msghandler);
        luaL_loadstring(H, "error('boom')");
        const char *m = lua_pcall(H, 0, 0, 1) == LUA_ERRRUN ? lua_tostring(H, -1) : NULL;
        ok(m && strstr(m, "boom") && strstr(m, "stack traceback:"), "luamp_msghandler: message and traceback");
        lua_settop(H, 1);
        luaL_loadstring(H, "error(setmetatable({}, {__tostring = function() return 'mine' end}))");
        m = lua_pcall(H, 0, 0, 1) == LUA_ERRRUN ? lua_tostring(H, -1) : NULL;
        ok(m && strcmp(m, "mine") == 0, "luamp_msghandler: an error object's __tostring");
        lua_settop(H, 1);
        luaL_loadstring(H, "error({})");
        m = lua_pcall(H, 0, 0, 1) == LUA_ERRRUN ? lua_tostring(H, -1) : NULL;
        ok(m && strncmp(m, "(error object is a table value)", 31) == 0, "luamp_msghandler: other error objects, as lua.c");
        lua_close(H);
    }
    threaded_host();
    printf("# host SIGCHLD handler ran %d times (for its own and luamp's children: no harm)\n", (int)host_sigchld);
    return tap_done();
}
