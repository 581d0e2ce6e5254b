/*
 * lmpi.c - process.mpi: a small MPI binding and the entry point that turns
 * ranks 1..N-1 into task servers.
 *
 *   mpiexec -n N luamp -l process.mpi script.lua     (or lua5.4 -l ...)
 *
 * luaopen_process_mpi initialises MPI (once).  On rank 0 it returns the
 * module (lua/process/mpi.lua completes it: the Pool, an MPI worker backend
 * of process.pool's scheduler).  On every other rank it never returns: it
 * runs the serving loop (mpi.lua's serve, which forks the workers and
 * relays between them and rank 0) until rank 0 says STOP, then finalises
 * MPI and exits 0, so the script after `-l process.mpi` only ever runs on
 * rank 0.
 *
 * Rank 0's end: when its Lua state closes (script end, an uncaught error)
 * or the process exits (os.exit, which skips lua_close in a stock lua5.4),
 * shutdown_mpi() sends STOP to every server, then receives and drops
 * whatever they still send until each has answered BYE, and finalises
 * MPI.  Only the process that initialised MPI does this: forked children
 * (workers on the servers, local Process children on rank 0) never touch
 * MPI.
 *
 * Waiting never spins a core: recv(timeout) probes with MPI_Improbe, a few
 * hundred times yielding the CPU in between, then between sleeps that grow
 * from 20 us up to a cap (1 ms by default, growing to 1% of the time
 * waited, at most 10 ms), so a rank idle for seconds probes about a
 * hundred times a second; given descriptors, it sleeps on them instead.
 * Sends are non-blocking (MPI_Isend, then MPI_Test with the same backoff,
 * receiving into an inbox what arrives meanwhile), so no MPI call blocks
 * and Open MPI's busy-polling in blocking calls (mpi_yield_when_idle)
 * does not matter here.  Messages are codec bytes (the Lua side encodes
 * them); the binding only moves strings with a tag.
 *
 * Uses: MPI (any MPI-3 implementation), the Lua C API.  The bytes a peer
 * sends are handed to Lua as a string; this file trusts nothing in them.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mpi.h>

#include "lauxlib.h"
#include "lua.h"
#include "lua/lembed.h"

#define LMP_API __attribute__((visibility("default")))

/* Tags of the protocol between rank 0 and the servers (see mpi.lua). */
enum { TAG_TASK = 1, TAG_CTRL = 2, TAG_STOP = 3, TAG_RESULT = 4, TAG_BYE = 5 };

static int g_inited;    /* MPI_Init done by us */
static int g_finalized; /* shutdown done */
static pid_t g_pid;     /* the process that initialised MPI */
static int g_rank, g_size;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void nap(double seconds) {
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Backoff state for a wait: `spins` probes, each after a sched_yield (a
 * reply that comes within ~0.1 ms is taken without a sleep's latency, and
 * a busy CPU goes to whoever needs it), then sleeps that
 * grow by half from 20 us to cap; past cap, a long wait may sleep up to 1% of
 * the time it has waited so far (at most 10 ms), so a rank idle for
 * seconds probes about a hundred times a second and a result is noticed
 * at most 1% late. */
typedef struct {
    int spins;
    double sleep, cap, start;
} backoff;

static void backoff_init(backoff *b, double cap) {
    b->spins = 256;
    b->sleep = 20e-6;
    b->cap = cap;
    b->start = now();
}

/* Sleep the next step, never past deadline (< 0: none); with descriptors,
 * the sleep is a ppoll on them.  Returns 0 once the deadline has passed,
 * 2 when a descriptor is ready, else 1. */
static int backoff_step_fds(backoff *b, double deadline, struct pollfd *pf, int nfds) {
    if (b->spins > 0) {
        b->spins--;
        sched_yield();
        return deadline < 0 || now() < deadline;
    }
    double s = b->sleep;
    if (deadline >= 0) {
        double left = deadline - now();
        if (left <= 0) return 0;
        if (s > left) s = left;
    }
    if (nfds > 0) {
        struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
        int rc = ppoll(pf, (nfds_t)nfds, &ts, NULL);
        if (rc > 0) return 2; /* EINTR: just probe again */
    } else {
        nap(s);
    }
    double cap = (now() - b->start) * 0.01;
    if (cap < b->cap) cap = b->cap;
    if (cap > 10e-3) cap = 10e-3;
    b->sleep = b->sleep * 1.5 > cap ? cap : b->sleep * 1.5;
    return 1;
}

static int backoff_step(backoff *b, double deadline) { return backoff_step_fds(b, deadline, NULL, 0); }

/* The last step of rank 0: STOP to every server, drain until every BYE,
 * finalise.  Idempotent; a no-op in any other process than the one that
 * initialised MPI, and on the servers (they finalise in serve_and_exit). */
static void shutdown_mpi(void) {
    if (!g_inited || g_finalized || getpid() != g_pid) return;
    g_finalized = 1;
    int fin = 0;
    MPI_Finalized(&fin);
    if (fin) return;
    if (g_rank == 0) {
        for (int r = 1; r < g_size; r++) MPI_Send(NULL, 0, MPI_BYTE, r, TAG_STOP, MPI_COMM_WORLD);
        int byes = 0;
        backoff b;
        backoff_init(&b, 1e-3);
        while (byes < g_size - 1) {
            int flag = 0;
            MPI_Message m;
            MPI_Status st;
            MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &m, &st);
            if (!flag) {
                backoff_step(&b, -1);
                continue;
            }
            int count = 0;
            MPI_Get_count(&st, MPI_BYTE, &count);
            char *buf = malloc(count > 0 ? (size_t)count : 1);
            if (buf == NULL) MPI_Abort(MPI_COMM_WORLD, 1);
            MPI_Mrecv(buf, count, MPI_BYTE, &m, &st);
            free(buf);
            if (st.MPI_TAG == TAG_BYE) byes++;
            backoff_init(&b, 1e-3);
        }
    }
    MPI_Finalize();
}

static int l_rank(lua_State *L) {
    lua_pushinteger(L, g_rank);
    return 1;
}

static int l_size(lua_State *L) {
    lua_pushinteger(L, g_size);
    return 1;
}

static int l_processor_name(lua_State *L) {
    char name[MPI_MAX_PROCESSOR_NAME + 1];
    int len = 0;
    MPI_Get_processor_name(name, &len);
    lua_pushlstring(L, name, (size_t)(len < 0 ? 0 : len));
    return 1;
}

static void check_usable(lua_State *L) {
    if (g_finalized || getpid() != g_pid) luaL_error(L, "process.mpi: MPI is not usable in this process");
}

/* Messages received while a send was waiting for its receiver, in
 * order: a registry table {head =, tail =, [i] = {source, tag, bytes}}.
 * recv takes them before it probes. */
#define INBOX "luamp.mpi.inbox"

static void push_inbox(lua_State *L) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, INBOX) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, 1);
        lua_setfield(L, -2, "head");
        lua_pushinteger(L, 0);
        lua_setfield(L, -2, "tail");
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, INBOX);
    }
}

static lua_Integer inbox_field(lua_State *L, const char *k) {
    lua_getfield(L, -1, k);
    lua_Integer v = lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

/* [-0, +3 | +0, e]  Receive one waiting message if there is one: pushes
 * source, tag, bytes and returns 1; else pushes nothing, returns 0. */
static int take_one(lua_State *L) {
    int flag = 0;
    MPI_Message m;
    MPI_Status st;
    int rc = MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &m, &st);
    if (rc != MPI_SUCCESS) return luaL_error(L, "process.mpi: MPI_Improbe failed (%d)", rc);
    if (!flag) return 0;
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    if (count < 0) count = 0;
    luaL_checkstack(L, 4, NULL);
    lua_pushinteger(L, st.MPI_SOURCE);
    lua_pushinteger(L, st.MPI_TAG);
    luaL_Buffer lb;
    char *p = luaL_buffinitsize(L, &lb, (size_t)count);
    rc = MPI_Mrecv(p, count, MPI_BYTE, &m, &st);
    if (rc != MPI_SUCCESS) return luaL_error(L, "process.mpi: MPI_Mrecv failed (%d)", rc);
    luaL_pushresultsize(&lb, (size_t)count);
    return 1;
}

/* send(dest, tag, bytes): returns once bytes may be reused.  While the
 * receiver has not taken a large message, what arrives meanwhile is
 * received into the inbox: two ranks sending each other large messages
 * at once (rank 0 a task, a server a result) never deadlock. */
static int l_send(lua_State *L) {
    check_usable(L);
    lua_Integer dest = luaL_checkinteger(L, 1);
    lua_Integer tag = luaL_checkinteger(L, 2);
    size_t n;
    const char *s = luaL_optlstring(L, 3, "", &n);
    luaL_argcheck(L, dest >= 0 && dest < g_size && dest != g_rank, 1, "no such rank");
    luaL_argcheck(L, tag >= TAG_TASK && tag <= TAG_BYE, 2, "unknown tag");
    if (n > INT_MAX) return luaL_error(L, "process.mpi: message of %zu bytes is too large (at most %d)", n, INT_MAX);
    MPI_Request req;
    int rc = MPI_Isend(s, (int)n, MPI_BYTE, (int)dest, (int)tag, MPI_COMM_WORLD, &req);
    if (rc != MPI_SUCCESS) return luaL_error(L, "process.mpi: MPI_Isend failed (%d)", rc);
    backoff b;
    backoff_init(&b, 1e-3);
    for (;;) {
        int done = 0;
        rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return luaL_error(L, "process.mpi: MPI_Test failed (%d)", rc);
        if (done) return 0;
        if (take_one(L)) {
            push_inbox(L); /* source tag bytes inbox */
            lua_Integer tail = inbox_field(L, "tail") + 1;
            lua_createtable(L, 3, 0);
            for (int i = 3; i >= 1; i--) {
                lua_pushvalue(L, -2 - i);
                lua_rawseti(L, -2, 4 - i);
            }
            lua_rawseti(L, -2, tail);
            lua_pushinteger(L, tail);
            lua_setfield(L, -2, "tail");
            lua_pop(L, 4);
            backoff_init(&b, 1e-3);
        } else {
            backoff_step(&b, -1);
        }
    }
}

/* [-0, +3 | +0, e]  The oldest message of the inbox, if any. */
static int inbox_pop(lua_State *L) {
    push_inbox(L);
    lua_Integer head = inbox_field(L, "head"), tail = inbox_field(L, "tail");
    if (head > tail) {
        lua_pop(L, 1);
        return 0;
    }
    lua_rawgeti(L, -1, head);
    lua_pushnil(L);
    lua_rawseti(L, -3, head);
    lua_pushinteger(L, head + 1);
    lua_setfield(L, -3, "head");
    for (int i = 1; i <= 3; i++) lua_rawgeti(L, -i, i);
    lua_remove(L, -4); /* the entry */
    lua_remove(L, -4); /* the inbox */
    return 1;
}

/* recv([timeout [, cap [, fds]]]) -> source, tag, bytes
 *                                 | false (one of fds is readable)
 *                                 | nil (timeout)
 * timeout nil: wait forever; 0: just look.  cap: the longest sleep between
 * probes early in the wait (seconds, default 1 ms).  fds: a list of
 * descriptors to sleep on between probes, so that a local event ends the
 * wait at once while MPI is still probed. */
static int l_recv(lua_State *L) {
    check_usable(L);
    double timeout = luaL_optnumber(L, 1, -1);
    double cap = luaL_optnumber(L, 2, 1e-3);
    if (lua_isnil(L, 1)) timeout = -1;
    else if (timeout < 0) timeout = 0;
    if (!(cap > 0)) cap = 1e-3;
    struct pollfd *pf = NULL;
    int nfds = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_Integer n = luaL_len(L, 3);
        luaL_argcheck(L, n >= 0 && n <= 65536, 3, "too many descriptors");
        pf = lua_newuserdatauv(L, sizeof *pf * (size_t)(n + 1), 0);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_geti(L, 3, i);
            int isnum;
            lua_Integer fd = lua_tointegerx(L, -1, &isnum);
            lua_pop(L, 1);
            luaL_argcheck(L, isnum && fd >= 0 && fd <= INT_MAX, 3, "bad descriptor");
            pf[nfds++] = (struct pollfd){.fd = (int)fd, .events = POLLIN};
        }
    }
    if (inbox_pop(L)) return 3;
    double deadline = timeout < 0 ? -1 : now() + timeout;
    backoff b;
    backoff_init(&b, cap);
    for (;;) {
        if (take_one(L)) return 3;
        if (timeout == 0) return 0;
        int step = backoff_step_fds(&b, deadline, pf, nfds);
        if (step == 0) return 0;
        if (step == 2) {
            lua_pushboolean(L, 0);
            return 1;
        }
    }
}

/* The module's C functions: its public surface (API.md), nothing else. */
static const luaL_Reg funcs[] = {
    {"rank", l_rank}, {"size", l_size}, {"processor_name", l_processor_name}, {NULL, NULL}};

/* What only mpi.lua sees (its second argument): the transport and tags. */
static const luaL_Reg private_funcs[] = {{"send", l_send}, {"recv", l_recv}, {NULL, NULL}};

/* __gc of a sentinel in the registry: rank 0's lua_close shuts MPI down. */
static int sentinel_gc(lua_State *L) {
    (void)L;
    shutdown_mpi();
    return 0;
}

static void init_mpi(lua_State *L) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        /* A stock lua5.4 dlopens this module RTLD_LOCAL; some MPI builds
         * load plugins that expect libmpi's symbols to be global. */
        Dl_info info;
        if (dladdr((void *)MPI_Init, &info) && info.dli_fname)
            (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
        int provided;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SINGLE, &provided) != MPI_SUCCESS)
            luaL_error(L, "process.mpi: MPI_Init failed");
        g_inited = 1;
        g_pid = getpid();
        atexit(shutdown_mpi);
    } else if (!g_inited) {
        /* initialised by the host: it finalises too */
        g_pid = getpid();
        g_finalized = 0;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
}

/* [-2, +2, e]  Run the embedded lua/process/mpi.lua with the module's
 * table and the private one on top (popped); pushes what it returns: the
 * module and its serving loop. */
static void run_embedded(lua_State *L) {
    const lmp_embedded *e = &lmp_embedded_lua[0];
    if (luaL_loadbufferx(L, e->bin, e->binlen, e->chunk, "b") != LUA_OK) {
        lua_pop(L, 1);
        if (luaL_loadbufferx(L, e->src, e->len, e->chunk, "t") != LUA_OK) lua_error(L);
    }
    lua_insert(L, -3);
    lua_call(L, 2, 2);
}

LMP_API int luaopen_process_mpi(lua_State *L);

LMP_API int luaopen_process_mpi(lua_State *L) {
    init_mpi(L);
    if (g_inited && g_rank == 0) {
        lua_newuserdatauv(L, 0, 0);
        lua_newtable(L);
        lua_pushcfunction(L, sentinel_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, "luamp.mpi.sentinel");
    }
    luaL_newlib(L, funcs);
    luaL_newlib(L, private_funcs);
    static const struct {
        const char *name;
        int tag;
    } tags[] = {{"TASK", TAG_TASK}, {"CTRL", TAG_CTRL}, {"STOP", TAG_STOP}, {"RESULT", TAG_RESULT}};
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++) {
        lua_pushinteger(L, tags[i].tag);
        lua_setfield(L, -2, tags[i].name);
    }
    run_embedded(L); /* module serve */
    /* rank 0, a host's MPI, or a forked child of a server (a worker
     * decoding a task that names process.mpi): just the module */
    if (g_rank == 0 || !g_inited || getpid() != g_pid) {
        lua_pop(L, 1);
        return 1;
    }
    /* A server: serve until STOP, then end here.  The require never
     * returns, so the module is made loaded by hand: tasks that name it
     * (an upvalue, require "process.mpi") find it in their worker. */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "process.mpi");
    lua_pop(L, 1);
    int status = lua_pcall(L, 0, 0, 0);
    if (status != LUA_OK) {
        fprintf(stderr, "process.mpi: rank %d: %s\n", g_rank,
                lua_tostring(L, -1) ? lua_tostring(L, -1) : "(error object)");
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Send(NULL, 0, MPI_BYTE, 0, TAG_BYE, MPI_COMM_WORLD);
    g_finalized = 1;
    MPI_Finalize();
    fflush(NULL);
    exit(0);
}
