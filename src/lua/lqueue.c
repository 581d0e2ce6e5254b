/*
 * lqueue.c - process.Queue over the shared queue engine (core/queue.h):
 * values are encoded with the codec on put and decoded on get.
 * A Queue created before start() reaches fork children as is.
 */
#include <errno.h>
#include <stdint.h>

#include "core/queue.h"
#include "lauxlib.h"
#include "lcodec.h"
#include "lconn.h"

#define QUEUE "process.Queue"

typedef struct Queue {
    lmp_queue *q;
    int closed;
} Queue;

static Queue *checkqueue(lua_State *L) {
    Queue *q = luaL_checkudata(L, 1, QUEUE);
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
    Queue *q = luaL_checkudata(L, 1, QUEUE);
    if (q->q && !q->closed) lmp_queue_close(q->q);
    q->closed = 1;
    return 0;
}

static int queue_gc(lua_State *L) {
    Queue *q = luaL_checkudata(L, 1, QUEUE);
    lmp_queue_free(q->q);
    q->q = NULL;
    q->closed = 1;
    return 0;
}

static const luaL_Reg queue_methods[] = {
    {"put", queue_put},     {"get", queue_get},     {"empty", queue_empty},
    {"qsize", queue_qsize}, {"close", queue_close}, {NULL, NULL}};

static Queue *newqueue(lua_State *L) {
    Queue *q = lua_newuserdatauv(L, sizeof *q, 0);
    q->q = NULL;
    q->closed = 0;
    if (luaL_newmetatable(L, QUEUE)) {
        luaL_newlib(L, queue_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, queue_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return q;
}

/* process.Queue([maxsize]) -> queue | nil, err, ename */
int lmp_open_queue(lua_State *L) {
    lua_Integer maxsize = luaL_optinteger(L, 1, 0);
    luaL_argcheck(L, maxsize >= 0, 1, "maxsize must be >= 0");
    Queue *q = newqueue(L);
    int rc = lmp_queue_new((size_t)maxsize, &q->q);
    if (rc < 0) return lmp_pushoserror(L, "Queue", -rc);
    return 1;
}

int lmp_queue_fds_of(lua_State *L, int idx, int fds[2]) {
    Queue *q = luaL_testudata(L, idx, QUEUE);
    if (!q || q->closed || !q->q) return 0;
    lmp_queue_fds(q->q, fds);
    return 1;
}

int lmp_queue_push(lua_State *L, int header_fd, int spool_fd) {
    Queue *q = newqueue(L);
    int rc = lmp_queue_attach(header_fd, spool_fd, &q->q);
    if (rc < 0) lua_pop(L, 1);
    return rc;
}
