/*
 * main.c - the `luamp` runner, shaped like the stock `lua` command:
 *
 *   luamp [options] [script [args]]
 *     -e stat   execute string 'stat'
 *     -i        enter interactive mode after running script
 *     -l mod    require library 'mod' into a global named after its last
 *               dotted part (-l process.mpi sets 'mpi'; -l g=mod: into g)
 *     -v        show version information
 *     -E        ignore environment variables (LUA_INIT, LUA_PATH, ...)
 *     -W        turn warnings on
 *     --help    show the usage and exit
 *     --version show version information and exit
 *     --        stop handling options
 *     -         stop handling options and execute stdin
 *
 * The `process` module is built in (package.preload), so scripts need no
 * LUA_PATH.  Run from a build tree, the runner also finds that tree's
 * process.mpi (src/mpi/process/mpi.so beside it) without LUA_CPATH.  Uncaught errors print "luamp: msg" and a traceback and exit 1.
 * When the script ends by any path, lua_close runs the creator's clean-up:
 * daemonic children are terminated, the others joined.
 * Uses: luamp.h and the Lua C API only.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"
#include "luamp.h"
#include "start/method.h" /* LMP_CHILD_MODE */

static const char *progname = "luamp";
static lua_State *globalL;

static void usage(FILE *f) {
    fprintf(f,
            "usage: %s [options] [script [args]]\n"
            "Runs Lua 5.4 scripts with the modules 'process' and 'process.pi' preloaded\n"
            "(require them from any directory; no LUA_PATH or LUA_CPATH needed).\n"
            "Available options are:\n"
            "  -e stat   execute string 'stat'\n"
            "  -i        enter interactive mode after executing 'script'\n"
            "  -l mod    require library 'mod' into a global named after its last\n"
            "            dotted part ('-l process.mpi' sets global 'mpi')\n"
            "  -l g=mod  require library 'mod' into global 'g'\n"
            "  -v        show version information\n"
            "  -E        ignore environment variables\n"
            "  -W        turn warnings on\n"
            "  --help    show this help and exit\n"
            "  --version show version information and exit\n"
            "  --        stop handling options\n"
            "  -         stop handling options and execute stdin\n"
            "See luamp(1).\n",
            progname);
}

static void print_usage(const char *badoption) {
    if (badoption[1] == 'e' || badoption[1] == 'l')
        fprintf(stderr, "%s: '%s' needs argument\n", progname, badoption);
    else
        fprintf(stderr, "%s: unrecognized option '%s'\n", progname, badoption);
    usage(stderr);
}

static void l_message(const char *msg) {
    fprintf(stderr, "%s: %s\n", progname, msg);
    fflush(stderr);
}

static int report(lua_State *L, int status) {
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        l_message(msg ? msg : "(error object is not a string)");
        lua_pop(L, 1);
    }
    return status;
}

/* Ctrl-C while Lua runs: raise "interrupted!" at the next hook. */
static void lstop(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

static void laction(int i) {
    int flag = LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT;
    signal(i, SIG_DFL);
    lua_sethook(globalL, lstop, flag, 1);
}

static int docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, luamp_msghandler);
    lua_insert(L, base);
    globalL = L;
    signal(SIGINT, laction);
    int status = lua_pcall(L, narg, nres, base);
    signal(SIGINT, SIG_DFL);
    lua_remove(L, base);
    return status;
}

static void print_version(void) {
    printf("luamp %s (%s)\n", LUAMP_VERSION, LUA_RELEASE);
    fflush(stdout);
}

/* arg table: script at 0, its arguments at 1.., options below 0. */
static void createargtable(lua_State *L, char **argv, int argc, int script) {
    if (script == argc) script = 0;
    lua_createtable(L, argc - script - 1, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int dochunk(lua_State *L, int status) {
    if (status == LUA_OK) status = docall(L, 0, 0);
    return report(L, status);
}

static int dostring(lua_State *L, const char *s, const char *name) {
    return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

static int dolibrary(lua_State *L, char *globname) {
    char *modname = strchr(globname, '=');
    if (modname == NULL) {
        modname = globname;
        globname = strrchr(modname, '.') ? strrchr(modname, '.') + 1 : modname;
    } else {
        *modname++ = '\0';
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, modname);
    int status = docall(L, 1, 1);
    if (status == LUA_OK) lua_setglobal(L, globname);
    return report(L, status);
}

/* A runner in a meson build tree (BUILD/luamp) puts the tree's
 * process.mpi, BUILD/src/mpi/process/mpi.so, first on package.cpath, as
 * its `process` is built in: the module must come from the same build.
 * Installed, nothing is there and package.cpath is left alone. */
static void build_tree_cpath(lua_State *L) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash) return;
    slash[1] = '\0';
    const char *mod = lua_pushfstring(L, "%ssrc/mpi/process/mpi.so", exe);
    int found = access(mod, R_OK) == 0;
    lua_pop(L, 1);
    if (!found) return;
    lua_getglobal(L, "package");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_getfield(L, -1, "cpath");
    lua_pushfstring(L, "%ssrc/mpi/?.so;%s", exe, luaL_optstring(L, -1, ""));
    lua_setfield(L, -3, "cpath");
    lua_pop(L, 2);
}

static int pushargs(lua_State *L) {
    if (lua_getglobal(L, "arg") != LUA_TTABLE) luaL_error(L, "'arg' is not a table");
    int n = (int)luaL_len(L, -1);
    luaL_checkstack(L, n + 3, "too many arguments to script");
    for (int i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
    lua_remove(L, -n - 1);
    return n;
}

static int handle_script(lua_State *L, char **argv) {
    const char *fname = argv[0];
    if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0) fname = NULL; /* stdin */
    int status = luaL_loadfile(L, fname);
    if (status == LUA_OK) {
        int n = pushargs(L);
        status = docall(L, n, LUA_MULTRET);
    }
    return report(L, status);
}

#define has_error 1
#define has_i 2
#define has_v 4
#define has_e 8
#define has_E 16

static int collectargs(char **argv, int *first) {
    int args = 0;
    int i;
    if (argv[0] == NULL) {
        *first = -1;
        return 0;
    }
    for (i = 1; argv[i] != NULL; i++) {
        *first = i;
        if (argv[i][0] != '-') return args;
        switch (argv[i][1]) {
        case '-':
            if (argv[i][2] != '\0') return has_error;
            *first = i + 1;
            return args;
        case '\0': return args;
        case 'E':
            if (argv[i][2] != '\0') return has_error;
            args |= has_E;
            break;
        case 'W':
            if (argv[i][2] != '\0') return has_error;
            break;
        case 'i':
        case 'v':
            if (argv[i][1] == 'i') args |= has_i; /* -i implies -v */
            if (argv[i][2] != '\0') return has_error;
            args |= has_v;
            break;
        case 'e':
        case 'l':
            if (argv[i][1] == 'e') args |= has_e;
            if (argv[i][2] == '\0') {
                i++;
                if (argv[i] == NULL || argv[i][0] == '-') return has_error;
            }
            break;
        default: return has_error;
        }
    }
    *first = i;
    return args;
}

static int runargs(lua_State *L, char **argv, int n) {
    for (int i = 1; i < n; i++) {
        int option = argv[i][1];
        switch (option) {
        case 'e':
        case 'l': {
            char *extra = argv[i] + 2;
            if (*extra == '\0') extra = argv[++i];
            int status = option == 'e' ? dostring(L, extra, "=(command line)")
                                       : dolibrary(L, extra);
            if (status != LUA_OK) return 0;
            break;
        }
        case 'W': lua_warning(L, "@on", 0); break;
        }
    }
    return 1;
}

static int handle_luainit(lua_State *L) {
    const char *name = "=LUA_INIT_5_4";
    const char *init = getenv(name + 1);
    if (init == NULL) {
        name = "=LUA_INIT";
        init = getenv(name + 1);
    }
    if (init == NULL) return LUA_OK;
    if (init[0] == '@') return dochunk(L, luaL_loadfile(L, init + 1));
    return dostring(L, init, name);
}

/* Is the status a syntax error at the end of the input (more to come)? */
static int incomplete(lua_State *L, int status) {
    if (status != LUA_ERRSYNTAX) return 0;
    size_t lmsg;
    const char *msg = lua_tolstring(L, -1, &lmsg);
    const char *eof = "<eof>";
    size_t le = strlen(eof);
    return lmsg >= le && strcmp(msg + lmsg - le, eof) == 0;
}

/* A read-eval-print loop like lua.c's, without line editing: an
 * expression prints its values ("=expr" too), an unfinished statement
 * continues on the next line (">> "). */
static void doREPL(lua_State *L) {
    char line[4096];
    for (;;) {
        lua_settop(L, 0);
        fputs("> ", stdout);
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin)) break;
        size_t len = strlen(line);
        if (len && line[len - 1] == '\n') line[--len] = '\0';
        const char *text = line[0] == '=' ? line + 1 : line;
        const char *ret = lua_pushfstring(L, "return %s;", text);
        int status = luaL_loadbuffer(L, ret, strlen(ret), "=stdin");
        if (status == LUA_OK) {
            lua_remove(L, -2);
        } else {
            lua_pop(L, 2);
            lua_pushstring(L, line); /* the statement so far */
            for (;;) {
                size_t n;
                const char *chunk = lua_tolstring(L, -1, &n);
                status = luaL_loadbuffer(L, chunk, n, "=stdin");
                if (!incomplete(L, status)) break;
                fputs(">> ", stdout);
                fflush(stdout);
                if (!fgets(line, sizeof line, stdin)) break; /* report the "<eof>" */
                lua_pop(L, 1); /* the "<eof>" message */
                lua_pushliteral(L, "\n");
                lua_pushstring(L, line);
                lua_concat(L, 3);
            }
            lua_remove(L, -2); /* the statement's text */
        }
        if (status == LUA_OK) status = docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK && lua_gettop(L) > 0) {
            lua_getglobal(L, "print");
            lua_insert(L, 1);
            if (lua_pcall(L, lua_gettop(L) - 1, 0, 0) != LUA_OK) report(L, LUA_ERRRUN);
        } else {
            report(L, status);
        }
    }
    lua_settop(L, 0);
    fputs("\n", stdout);
    fflush(stdout);
}

static int pmain(lua_State *L) {
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    int script;
    int args = collectargs(argv, &script);
    luaL_checkversion(L);
    if (args == has_error) {
        print_usage(argv[script]);
        return 0;
    }
    if (args & has_v) print_version();
    if (args & has_E) {
        lua_pushboolean(L, 1);
        lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
    }
    luaL_openlibs(L);
    luamp_openlibs(L);
    build_tree_cpath(L);
    createargtable(L, argv, argc, script);
    lua_gc(L, LUA_GCRESTART);
    lua_gc(L, LUA_GCGEN, 0, 0);
    if (!(args & has_E) && handle_luainit(L) != LUA_OK) return 0;
    if (!runargs(L, argv, script)) return 0;
    if (script > 0 && script < argc && handle_script(L, argv + script) != LUA_OK) return 0;
    if (args & has_i) {
        doREPL(L);
    } else if (script < 1 || script == argc) {
        if (!(args & (has_e | has_v))) {
            if (isatty(0)) {
                print_version();
                doREPL(L);
            } else if (dochunk(L, luaL_loadfile(L, NULL)) != LUA_OK) {
                return 0; /* unlike lua.c: an error in stdin's chunk exits 1 */
            }
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* The child mode, for the process module's own use (never needed by
 * hand):
 *   luamp --luamp-child METHOD ARGS...
 * a runner a start method executed (a spawn child, the forkserver); what
 * it starts from is that method's business (src/start/spawn.c,
 * src/start/forkserver.c).  No LUA_INIT, no arg table, no SIGINT handler:
 * the target runs as it would in a forked child. */
static int child_main(lua_State *L) {
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    luaL_checkversion(L);
    luaL_openlibs(L);
    luamp_openlibs(L);
    lua_gc(L, LUA_GCRESTART);
    lua_gc(L, LUA_GCGEN, 0, 0);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "process");
    lua_call(L, 1, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "process.internal"); /* set by the module */
    lua_getfield(L, -1, "child_main");
    for (int i = 1; i < argc; i++) lua_pushstring(L, argv[i]);
    lua_call(L, argc - 1, 0); /* returns only in a forkserver at its end */
    lua_pushboolean(L, 1);
    return 1;
}

/* Descriptors 0-2 are stdio's: open /dev/null on any that is closed, so
 * that nothing the runtime opens lands there (libuv and lua.c-style tools
 * do the same; the library does it too at its first use). */
static void std_fds_open(void) {
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
        int n = open("/dev/null", O_RDWR);
        if (n >= 0 && n != fd) dup2(n, fd), close(n);
    }
}

int main(int argc, char **argv) {
    std_fds_open();
    /* --help and --version, as GNU tools have them (first), before a state */
    if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
    }
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        print_version();
        return EXIT_SUCCESS;
    }
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        l_message("cannot create state: not enough memory");
        return EXIT_FAILURE;
    }
    lua_gc(L, LUA_GCSTOP);
    int child = argc >= 2 && strcmp(argv[1], LMP_CHILD_MODE) == 0;
    lua_pushcfunction(L, child ? child_main : pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int status = lua_pcall(L, 2, 1, 0);
    int result = lua_toboolean(L, -1);
    report(L, status);
    lua_close(L); /* the creator's clean-up: daemons ended, others joined */
    return (result && status == LUA_OK) ? EXIT_SUCCESS : EXIT_FAILURE;
}
