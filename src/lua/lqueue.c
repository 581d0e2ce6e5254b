/*
 * lqueue.c - process.Queue over the shared queue engine (core/queue.h):
 * values are encoded with the codec on put and decoded on get.
 * A Queue created before start() reaches fork children as is.
 * Uses: core/queue.h, lcodec.h, lbind.h.
 * Must never: block without a deadline it was given, or in a child use a
 * Queue the payload did not carry.
 */
#include <errno.h>
#include <stdint.h>

#include "lqueue.h"

#include "core/queue.h"
#include "lauxlib.h"
#include "lbind.h"
#include "lcodec.h"

#define QUEUE "process.Queue"
#define JQUEUE "process.JoinableQueue"

typedef struct Queue {
    lmp_queue *q;
    int closed;
} Queue;

static Queue *testqueue(lua_State *L, int idx) {
    Queue *q = luaL_testudata(L, idx, QUEUE);
    return q ? q : luaL_testudata(L, idx, JQUEUE);
}

static Queue *checkqueue(lua_State *L) {
    Queue *q = testqueue(L, 1);
    if (!q) luaL_typeerror(L, 1, "Queue");
    if (q->closed || !q->q) luaL_error(L, "queue is closed");
    return q;
}

static int timeout_or_error(lua_State *L, int rc, const char *op) {
    if (rc == -ETIMEDOUT) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    return lmp_pushoserror(L, op, -rc);
}

/* q:put(v[, timeout]) -> true | nil, "timeout" | nil, err, ename */
static int queue_put(lua_State *L) {
    Queue *q = checkqueue(L);
    luaL_checkany(L, 2);
    if (lua_isnil(L, 2)) return luaL_argerror(L, 2, "nil cannot be put in a queue");
    double t = lmp_opttimeout(L, 3, -1);
    lmp_buf *b = lmp_lbuf_new(L);
    lmp_lencode(L, 2, b, "value", 0);
    int rc = lmp_queue_put(q->q, b->data, b->len, t);
    lmp_buf_free(b);
    if (rc < 0) return timeout_or_error(L, rc, "put");
    lua_pushboolean(L, 1);
    return 1;
}

/* q:get([timeout]) -> v | nil, "timeout" | nil, err, ename */
static int queue_get(lua_State *L) {
    Queue *q = checkqueue(L);
    double t = lmp_opttimeout(L, 2, -1);
    lmp_buf *b = lmp_lbuf_new(L);
    int rc = lmp_queue_get(q->q, b, t);
    if (rc < 0) return timeout_or_error(L, rc, "get");
    lmp_ldecode(L, b->data, b->len, 0);
    lmp_buf_free(b);
    return 1;
}

/* q:get_nowait() -> v | nil, "empty" */
static int queue_get_nowait(lua_State *L) {
    lua_settop(L, 1);
    lua_pushinteger(L, 0);
    int n = queue_get(L);
    if (n == 2) {
        lua_pop(L, 1);
        lua_pushliteral(L, "empty");
        return 2;
    }
    return n;
}

/* q:put_nowait(v) -> true | nil, "full" */
static int queue_put_nowait(lua_State *L) {
    lua_settop(L, 2);
    lua_pushinteger(L, 0);
    int n = queue_put(L);
    if (n == 2) {
        lua_pop(L, 1);
        lua_pushliteral(L, "full");
        return 2;
    }
    return n;
}

static int queue_full(lua_State *L) {
    lua_pushboolean(L, lmp_queue_full(checkqueue(L)->q));
    return 1;
}

/* q:task_done(): raises when called more often than put */
static int queue_task_done(lua_State *L) {
    Queue *q = checkqueue(L);
    int rc = lmp_queue_task_done(q->q);
    if (rc == -EOVERFLOW) return luaL_error(L, "task_done() called too many times");
    if (rc < 0) return lmp_pushoserror(L, "task_done", -rc);
    return 0;
}

/* q:join([timeout]) -> true | nil, "timeout" */
static int queue_join(lua_State *L) {
    Queue *q = checkqueue(L);
    int rc = lmp_queue_join(q->q, lmp_opttimeout(L, 2, -1));
    if (rc < 0) return timeout_or_error(L, rc, "join");
    lua_pushboolean(L, 1);
    return 1;
}

static int queue_empty(lua_State *L) {
    lua_pushboolean(L, lmp_queue_empty(checkqueue(L)->q));
    return 1;
}

static int queue_qsize(lua_State *L) {
    lua_pushinteger(L, lmp_queue_size(checkqueue(L)->q));
    return 1;
}

/* q:close(): this handle only; other processes keep using the queue. */
static int queue_close(lua_State *L) {
    Queue *q = testqueue(L, 1);
    if (!q) return luaL_typeerror(L, 1, "Queue");
    if (q->q && !q->closed) lmp_queue_close(q->q);
    q->closed = 1;
    return 0;
}

static int queue_gc(lua_State *L) {
    Queue *q = lua_touserdata(L, 1);
    lmp_queue_free(q->q);
    q->q = NULL;
    q->closed = 1;
    return 0;
}

static const luaL_Reg queue_methods[] = {
    {"put", queue_put},     {"get", queue_get},     {"empty", queue_empty},
    {"qsize", queue_qsize}, {"close", queue_close}, {"get_nowait", queue_get_nowait},
    {"put_nowait", queue_put_nowait}, {"full", queue_full},
    {"task_done", queue_task_done}, {"join", queue_join}, /* JoinableQueue only */
    {NULL, NULL}};

/* A JoinableQueue's methods are a Queue's plus task_done and join. */
static void queue_only(lua_State *L) {
    lua_getfield(L, -1, "__index");
    lua_pushnil(L);
    lua_setfield(L, -2, "task_done");
    lua_pushnil(L);
    lua_setfield(L, -2, "join");
    lua_pop(L, 1);
}

static const lmp_class queue_class = {QUEUE, queue_methods, queue_gc, NULL, queue_only};
static const lmp_class jqueue_class = {JQUEUE, queue_methods, queue_gc, NULL, NULL};

static Queue *newqueue(lua_State *L, int joinable) {
    return lmp_class_new(L, joinable ? &jqueue_class : &queue_class, sizeof(Queue), 0);
}

static int open_queue(lua_State *L, int joinable) {
    lua_Integer maxsize = luaL_optinteger(L, 1, 0);
    luaL_argcheck(L, maxsize >= 0, 1, "maxsize must be >= 0");
    Queue *q = newqueue(L, joinable);
    int rc = lmp_queue_new((size_t)maxsize, &q->q);
    if (rc < 0) return lmp_pushoserror(L, joinable ? "JoinableQueue" : "Queue", -rc);
    return 1;
}

/* process.Queue([maxsize]) -> queue | nil, err, ename */
static int core_queue(lua_State *L) { return open_queue(L, 0); }

/* process.JoinableQueue([maxsize]): the same queue (every put counts a
 * task), with task_done and join */
static int core_joinable_queue(lua_State *L) { return open_queue(L, 1); }

static const luaL_Reg queue_funcs[] = {
    {"Queue", core_queue}, {"JoinableQueue", core_joinable_queue}, {NULL, NULL}};

void lmp_open_queues(lua_State *L) { luaL_setfuncs(L, queue_funcs, 0); }

int lmp_queue_fds_of(lua_State *L, int idx, int fds[2]) {
    Queue *q = testqueue(L, idx);
    if (!q || q->closed || !q->q) return 0;
    lmp_queue_fds(q->q, fds);
    return 1;
}

int lmp_queue_joinable_of(lua_State *L, int idx) {
    return luaL_testudata(L, idx, JQUEUE) != NULL;
}

int lmp_queue_push_joinable(lua_State *L, int header_fd, int spool_fd, int joinable) {
    Queue *q = newqueue(L, joinable);
    int rc = lmp_queue_attach(header_fd, spool_fd, &q->q);
    if (rc < 0) lua_pop(L, 1);
    return rc;
}
