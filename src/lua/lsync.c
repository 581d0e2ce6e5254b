/*
 * lsync.c - the synchronisation objects and shared values over the engine
 * in core/sync.h, and process.sleep.
 *
 * Every object is one userdata (Sync) whose metatable carries a private
 * marker, so a single check recognises all of them.  Objects that refer to
 * another keep it in their user value: a Condition its lock, a Value or an
 * Array its lock, a Barrier its action.  Under fork a child uses the
 * parent's mapping as it is; spawn and forkserver children rebuild each
 * object from its descriptor (lmp_sync_standin, lmp_sync_from_standin).
 *
 * Errors: OS refusals return nil, "op: strerror", "ENAME"; timeouts nil,
 * "timeout"; a dead lock holder nil, "lock owner died", "EOWNERDEAD";
 * misuse raises with the messages of API.md.
 */
#include "lsync.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/sync.h"
#include "lauxlib.h"
#include "lbind.h"
#include "luamp.h"

typedef struct Sync {
    const void *tag; /* &MARK: see checksync */
    lmp_sync *s;
    int kind;    /* LMP_SYNC_* */
    int flavour; /* Semaphore: bounded; shared: 1 Value, 2 Array */
    double timeout; /* Barrier's default */
} Sync;

static const char MARK = 0; /* key of the marker in our metatables */
#define K(k) (1u << (k))

enum { VALUE = 1, ARRAY = 2 };

#define LOCKS (K(LMP_SYNC_LOCK) | K(LMP_SYNC_RLOCK))
#define HOLDABLE (LOCKS | K(LMP_SYNC_SEM) | K(LMP_SYNC_COND))

static Sync *testsync(lua_State *L, int idx) {
    Sync *u = lua_touserdata(L, idx);
    if (!u || !lua_getmetatable(L, idx)) return NULL;
    int ok = lua_rawgetp(L, -1, &MARK) == LUA_TBOOLEAN;
    lua_pop(L, 2);
    return ok ? u : NULL;
}

/* The general check, through the metatable: anything that is not one of
 * ours raises here. */
static Sync *__attribute__((noinline, cold))
checksync_slow(lua_State *L, int idx, unsigned kinds, const char *tname) {
    Sync *u = testsync(L, idx);
    if (!u || !(kinds & K(u->kind))) luaL_typeerror(L, idx, tname);
    if (!u->s) luaL_error(L, "%s is closed", tname);
    return u;
}

/* The usual call, obj:method(), is checked without touching the
 * metatable: a full userdata of our size whose first word is the address
 * of MARK is one of ours (Lua code cannot write a userdata's bytes, and no
 * other library stores that address).  Anything else takes the general
 * path.  Inlined: the Lock pair is the hot path of this file. */
static inline Sync *checksync(lua_State *L, int idx, unsigned kinds, const char *tname) {
    Sync *u = lua_touserdata(L, idx);
    if (__builtin_expect(u && lua_rawlen(L, idx) == sizeof(Sync) && /* 0 for a light userdata */
                             u->tag == &MARK && u->s && (kinds & K(u->kind)), 1))
        return u;
    return checksync_slow(L, idx, kinds, tname);
}

/* The object in u's user value (a lock, an action), pushed. */
static int pushextra(lua_State *L, int idx) { return lua_getiuservalue(L, idx, 1); }

static int timeout_result(lua_State *L, int rc, const char *op) {
    if (rc == -ETIMEDOUT) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    if (rc == -EOWNERDEAD) {
        lua_pushnil(L);
        lua_pushliteral(L, "lock owner died");
        lua_pushliteral(L, "EOWNERDEAD");
        return 3;
    }
    return lmp_pushoserror(L, op, -rc);
}

/* ---- creating objects -------------------------------------------------- */

static const char *const TNAMES[] = {NULL, "Lock", "RLock", "Semaphore", "Event",
                                     "Condition", "Barrier", "Value"};

static const lmp_class *sync_class(int kind, int flavour);

static Sync *newsync(lua_State *L, int kind, int flavour) {
    Sync *u = lmp_class_new(L, sync_class(kind, flavour), sizeof *u, 1);
    u->tag = &MARK;
    u->s = NULL;
    u->kind = kind;
    u->flavour = flavour;
    u->timeout = -1;
    return u;
}

static int created(lua_State *L, Sync *u, int rc, const char *op) {
    (void)u;
    if (rc < 0) return lmp_pushoserror(L, op, -rc);
    return 1;
}

/* process.Lock(), process.RLock() */
static int new_lock(lua_State *L) {
    Sync *u = newsync(L, LMP_SYNC_LOCK, 0);
    return created(L, u, lmp_lock_new(0, &u->s), "Lock");
}

static int new_rlock(lua_State *L) {
    Sync *u = newsync(L, LMP_SYNC_RLOCK, 0);
    return created(L, u, lmp_lock_new(1, &u->s), "RLock");
}

static lua_Integer checkcount(lua_State *L, int arg, lua_Integer dflt, lua_Integer min) {
    if (lua_isnoneornil(L, arg)) return dflt;
    int isint;
    lua_Integer n = lua_tointegerx(L, arg, &isint);
    if (!isint) {
        if (lua_type(L, arg) == LUA_TNUMBER) luaL_argerror(L, arg, "number has no integer representation");
        luaL_typeerror(L, arg, "integer");
    }
    if (n < min) luaL_argerror(L, arg, lua_pushfstring(L, "must be >= %I", min));
    return n;
}

/* process.Semaphore([n]), process.BoundedSemaphore([n]) */
static int new_sem_(lua_State *L, int bounded) {
    lua_Integer n = checkcount(L, 1, 1, 0);
    Sync *u = newsync(L, LMP_SYNC_SEM, bounded);
    return created(L, u, lmp_sem_new(n, bounded, &u->s), bounded ? "BoundedSemaphore" : "Semaphore");
}
static int new_sem(lua_State *L) { return new_sem_(L, 0); }
static int new_bsem(lua_State *L) { return new_sem_(L, 1); }

static int new_event(lua_State *L) {
    Sync *u = newsync(L, LMP_SYNC_EVENT, 0);
    return created(L, u, lmp_event_new(&u->s), "Event");
}

/* process.Condition([lock]): an RLock of its own by default */
static int new_cond(lua_State *L) {
    if (!lua_isnoneornil(L, 1)) checksync(L, 1, LOCKS, "Lock or RLock");
    else {
        lua_settop(L, 0);
        if (new_rlock(L) != 1) return 3;
    }
    Sync *u = newsync(L, LMP_SYNC_COND, 0);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    return created(L, u, lmp_cond_new(&u->s), "Condition");
}

/* process.Barrier(n [, action [, timeout]]) */
static int new_barrier(lua_State *L) {
    lua_settop(L, 3);
    lua_Integer n = checkcount(L, 1, 0, 1);
    luaL_argcheck(L, n <= UINT32_MAX, 1, "too many parties");
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
    double t = lmp_opttimeout(L, 3, -1);
    Sync *u = newsync(L, LMP_SYNC_BARRIER, 0);
    u->timeout = t;
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 1);
    return created(L, u, lmp_barrier_new((uint32_t)n, &u->s), "Barrier");
}

/* ---- Lock, RLock ---------------------------------------------------------- */

static int lock_acquire(lua_State *L) {
    Sync *u = checksync(L, 1, LOCKS, "Lock");
    double t = lua_gettop(L) < 2 ? -1 : lmp_opttimeout(L, 2, -1);
    int rc = lmp_lock_acquire(u->s, t);
    if (rc == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    return timeout_result(L, rc, "acquire");
}

static int lock_release(lua_State *L) {
    Sync *u = checksync(L, 1, LOCKS, "Lock");
    if (lmp_lock_release(u->s) < 0)
        return luaL_error(L, u->kind == LMP_SYNC_RLOCK ? "cannot release un-acquired lock"
                                                       : "release unlocked lock");
    return 0;
}

static int lock_locked(lua_State *L) {
    lua_pushboolean(L, lmp_lock_locked(checksync(L, 1, LOCKS, "Lock")->s));
    return 1;
}

/* ---- holding anything: acquire/release by kind, with, guard ------------ */

/* The lock behind a Condition (pushed and returned); u itself otherwise. */
static Sync *holdee(lua_State *L, int idx, Sync *u) {
    if (u->kind != LMP_SYNC_COND) return u;
    pushextra(L, idx);
    Sync *l = testsync(L, -1);
    lua_pop(L, 1); /* still referenced by the Condition */
    if (!l || !l->s) luaL_error(L, "Condition's lock is closed");
    return l;
}

static int hold(Sync *u, double t) {
    return u->kind == LMP_SYNC_SEM ? lmp_sem_acquire(u->s, t) : lmp_lock_acquire(u->s, t);
}

static int unhold(Sync *u) {
    return u->kind == LMP_SYNC_SEM ? lmp_sem_release(u->s, 1) : lmp_lock_release(u->s);
}

/* obj:with(f, ...) -> f's values (released on error too).  A dead
 * holder's lock raises "lock owner died", as guard() does: returning it
 * would be taken for f's values, and a caller that ignores them would
 * never learn that f did not run. */
static int sync_with(lua_State *L) {
    Sync *u = holdee(L, 1, checksync(L, 1, HOLDABLE, "Lock"));
    luaL_checkany(L, 2);
    int rc = hold(u, -1);
    if (rc == -EOWNERDEAD) return luaL_error(L, "lock owner died");
    if (rc < 0) return timeout_result(L, rc, "acquire");
    int top = lua_gettop(L);
    lua_pushvalue(L, 2);
    lua_rotate(L, 3, 1);
    int st = lua_pcall(L, top - 2, LUA_MULTRET, 0);
    unhold(u);
    if (st != LUA_OK) return lua_error(L);
    return lua_gettop(L) - 2;
}

#define GUARD "process.Guard"

/* The guard holds the pid that acquired: a fork child inheriting an open
 * guard must not release what its parent holds (a Semaphore would gain a
 * unit). */
static int guard_close(lua_State *L) {
    lua_getiuservalue(L, 1, 1);
    pid_t *held = lua_touserdata(L, 1);
    if (*held) {
        int mine = *held == getpid();
        *held = 0;
        if (!mine) return 0;
        Sync *u = testsync(L, -1);
        if (u && u->s) unhold(holdee(L, lua_gettop(L), u));
    }
    return 0;
}

/* local _ <close> = obj:guard(): acquired now, released when the variable
 * goes out of scope.  A dead holder's lock raises "lock owner died" here:
 * a guard has no way to return it. */
static int sync_guard(lua_State *L) {
    Sync *u = holdee(L, 1, checksync(L, 1, HOLDABLE, "Lock"));
    static const lmp_class guard_class = {GUARD, NULL, guard_close, NULL, NULL};
    pid_t *held = lmp_class_new(L, &guard_class, sizeof(pid_t), 1);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    int rc = hold(u, -1);
    if (rc == -EOWNERDEAD) return luaL_error(L, "lock owner died");
    if (rc < 0) return luaL_error(L, "acquire: %s", strerror(-rc));
    *held = getpid();
    return 1;
}

/* ---- Semaphore ------------------------------------------------------------ */

static int sem_acquire(lua_State *L) {
    Sync *u = checksync(L, 1, K(LMP_SYNC_SEM), "Semaphore");
    int rc = lmp_sem_acquire(u->s, lmp_opttimeout(L, 2, -1));
    if (rc < 0) return timeout_result(L, rc, "acquire");
    lua_pushboolean(L, 1);
    return 1;
}

static int sem_release(lua_State *L) {
    Sync *u = checksync(L, 1, K(LMP_SYNC_SEM), "Semaphore");
    lua_Integer k = checkcount(L, 2, 1, 1);
    int rc = lmp_sem_release(u->s, k);
    if (rc == -EOVERFLOW) return luaL_error(L, "semaphore released too many times");
    if (rc < 0) return lmp_pushoserror(L, "release", -rc);
    return 0;
}

static int sem_get_value(lua_State *L) {
    lua_pushinteger(L, lmp_sem_value(checksync(L, 1, K(LMP_SYNC_SEM), "Semaphore")->s));
    return 1;
}

/* ---- Event ------------------------------------------------------------------ */

static int event_set(lua_State *L) {
    lmp_event_set(checksync(L, 1, K(LMP_SYNC_EVENT), "Event")->s);
    return 0;
}

static int event_clear(lua_State *L) {
    lmp_event_clear(checksync(L, 1, K(LMP_SYNC_EVENT), "Event")->s);
    return 0;
}

static int event_is_set(lua_State *L) {
    lua_pushboolean(L, lmp_event_is_set(checksync(L, 1, K(LMP_SYNC_EVENT), "Event")->s));
    return 1;
}

static int event_wait(lua_State *L) {
    Sync *u = checksync(L, 1, K(LMP_SYNC_EVENT), "Event");
    int rc = lmp_event_wait(u->s, lmp_opttimeout(L, 2, -1));
    if (rc < 0 && rc != -ETIMEDOUT) return lmp_pushoserror(L, "wait", -rc);
    lua_pushboolean(L, rc == 0);
    return 1;
}

/* ---- Condition ---------------------------------------------------------- */

static int cond_acquire(lua_State *L) {
    Sync *l = holdee(L, 1, checksync(L, 1, K(LMP_SYNC_COND), "Condition"));
    int rc = lmp_lock_acquire(l->s, lmp_opttimeout(L, 2, -1));
    if (rc < 0) return timeout_result(L, rc, "acquire");
    lua_pushboolean(L, 1);
    return 1;
}

static int cond_release(lua_State *L) {
    Sync *l = holdee(L, 1, checksync(L, 1, K(LMP_SYNC_COND), "Condition"));
    if (lmp_lock_release(l->s) < 0)
        return luaL_error(L, l->kind == LMP_SYNC_RLOCK ? "cannot release un-acquired lock"
                                                       : "release unlocked lock");
    return 0;
}

static int cond_wait_(lua_State *L, Sync *c, Sync *l, double t) {
    int rc = lmp_cond_wait(c->s, l->s, t);
    if (rc == -EPERM) return luaL_error(L, "cannot wait on un-acquired lock");
    if (rc == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    return timeout_result(L, rc, "wait");
}

static int cond_wait(lua_State *L) {
    Sync *c = checksync(L, 1, K(LMP_SYNC_COND), "Condition");
    Sync *l = holdee(L, 1, c);
    return cond_wait_(L, c, l, lmp_opttimeout(L, 2, -1));
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* cond:wait_for(pred [, timeout]) -> pred's truthy value | nil, "timeout" */
static int cond_wait_for(lua_State *L) {
    Sync *c = checksync(L, 1, K(LMP_SYNC_COND), "Condition");
    Sync *l = holdee(L, 1, c);
    luaL_checkany(L, 2);
    double t = lmp_opttimeout(L, 3, -1);
    double end = t < 0 ? -1 : now() + t;
    lua_settop(L, 2);
    for (;;) {
        lua_pushvalue(L, 2);
        lua_call(L, 0, 1);
        if (lua_toboolean(L, -1)) return 1;
        lua_pop(L, 1);
        double left = end < 0 ? -1 : end - now();
        if (end >= 0 && left <= 0) break;
        if (cond_wait_(L, c, l, left) == 3) return 3; /* lock owner died, or the OS */
        lua_settop(L, 2);
    }
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
}

static int cond_notify_(lua_State *L, long n) {
    Sync *c = checksync(L, 1, K(LMP_SYNC_COND), "Condition");
    Sync *l = holdee(L, 1, c);
    if (lmp_cond_notify(c->s, l->s, n) == -EPERM)
        return luaL_error(L, "cannot notify on un-acquired lock");
    return 0;
}

static int cond_notify(lua_State *L) {
    lua_Integer n = checkcount(L, 2, 1, 0);
    return cond_notify_(L, n > LONG_MAX ? LONG_MAX : (long)n);
}

static int cond_notify_all(lua_State *L) { return cond_notify_(L, -1); }

/* ---- Barrier ---------------------------------------------------------------- */

static int barrier_wait(lua_State *L) {
    Sync *u = checksync(L, 1, K(LMP_SYNC_BARRIER), "Barrier");
    double t = lmp_opttimeout(L, 2, u->timeout);
    pushextra(L, 1);
    int has_action = !lua_isnil(L, -1);
    uint32_t idx = 0;
    int rc = lmp_barrier_wait(u->s, t, has_action, &idx);
    if (rc == 1) { /* the last to arrive runs the action */
        int st = lua_pcall(L, 0, 0, 0);
        rc = lmp_barrier_finish(u->s, st == LUA_OK);
        if (st != LUA_OK) return lua_error(L);
    }
    if (rc == -EPIPE) return luaL_error(L, "barrier is broken");
    if (rc == -EDEADLK) return luaL_error(L, "barrier is broken: its action called wait on it");
    if (rc < 0) return timeout_result(L, rc, "wait");
    lua_pushinteger(L, idx);
    return 1;
}

static int barrier_abort(lua_State *L) {
    lmp_barrier_abort(checksync(L, 1, K(LMP_SYNC_BARRIER), "Barrier")->s);
    return 0;
}

static int barrier_reset(lua_State *L) {
    lmp_barrier_reset(checksync(L, 1, K(LMP_SYNC_BARRIER), "Barrier")->s);
    return 0;
}

/* ---- Value, Array ------------------------------------------------------------ */

static const char *const TYPES[] = {"int64", "int32", "uint8", "double", NULL};

typedef union {
    int64_t i;
    double d;
} elem;

/* Lua value at idx as an element of type t: 0, or the reason it is not
 * one.  Integer types take integers and floats with an integral value;
 * "double" takes any number. */
static const char *toelem(lua_State *L, int idx, int t, elem *out) {
    if (lua_type(L, idx) != LUA_TNUMBER)
        return lua_pushfstring(L, "number expected, got %s", luaL_typename(L, idx));
    if (t == LMP_SHARED_DOUBLE) {
        out->d = lua_tonumber(L, idx);
        return NULL;
    }
    int isint;
    lua_Integer i = lua_tointegerx(L, idx, &isint);
    if (!isint) return "number has no integer representation";
    if ((t == LMP_SHARED_INT32 && (i < INT32_MIN || i > INT32_MAX)) ||
        (t == LMP_SHARED_UINT8 && (i < 0 || i > 255)))
        return lua_pushfstring(L, "value out of range for %s", TYPES[t - 1]);
    out->i = i;
    return NULL;
}

static void checkelem(lua_State *L, int arg, int t, elem *out) {
    const char *why = toelem(L, arg, t, out);
    if (why) luaL_argerror(L, arg, why);
}

static void *slot(Sync *u, size_t i, int *t) {
    size_t n;
    char *p = lmp_shared_data(u->s, t, &n);
    size_t es = *t == LMP_SHARED_INT32 ? 4 : *t == LMP_SHARED_UINT8 ? 1 : 8;
    return p + i * es;
}

static void pushelem(lua_State *L, Sync *u, size_t i) {
    int t;
    void *p = slot(u, i, &t);
    switch (t) {
    case LMP_SHARED_INT64: lua_pushinteger(L, __atomic_load_n((int64_t *)p, __ATOMIC_SEQ_CST)); break;
    case LMP_SHARED_INT32: lua_pushinteger(L, __atomic_load_n((int32_t *)p, __ATOMIC_SEQ_CST)); break;
    case LMP_SHARED_UINT8: lua_pushinteger(L, __atomic_load_n((uint8_t *)p, __ATOMIC_SEQ_CST)); break;
    default: {
        uint64_t b = __atomic_load_n((uint64_t *)p, __ATOMIC_SEQ_CST);
        double d;
        memcpy(&d, &b, sizeof d);
        lua_pushnumber(L, d);
    }
    }
}

static void storeelem(Sync *u, size_t i, const elem *e) {
    int t;
    void *p = slot(u, i, &t);
    switch (t) {
    case LMP_SHARED_INT64: __atomic_store_n((int64_t *)p, e->i, __ATOMIC_SEQ_CST); break;
    case LMP_SHARED_INT32: __atomic_store_n((int32_t *)p, (int32_t)e->i, __ATOMIC_SEQ_CST); break;
    case LMP_SHARED_UINT8: __atomic_store_n((uint8_t *)p, (uint8_t)e->i, __ATOMIC_SEQ_CST); break;
    default: {
        uint64_t b;
        memcpy(&b, &e->d, sizeof b);
        __atomic_store_n((uint64_t *)p, b, __ATOMIC_SEQ_CST);
    }
    }
}

/* Atomic add of the number at arg to element i, pushing the new value.
 * int64 wraps as Lua's integers do; int32 and uint8 refuse to leave their
 * range (nothing stored). */
static int addelem(lua_State *L, Sync *u, size_t i, int arg) {
    int t;
    void *p = slot(u, i, &t);
    elem d;
    const char *why = toelem(L, arg, t == LMP_SHARED_DOUBLE ? t : LMP_SHARED_INT64, &d);
    if (why) return luaL_argerror(L, arg, why);
    switch (t) {
    case LMP_SHARED_INT64:
        lua_pushinteger(L, (int64_t)__atomic_add_fetch((uint64_t *)p, (uint64_t)d.i, __ATOMIC_SEQ_CST));
        return 1;
    case LMP_SHARED_INT32: {
        int32_t old = __atomic_load_n((int32_t *)p, __ATOMIC_RELAXED), nv;
        do {
            int64_t v = (int64_t)old + (d.i > INT32_MAX ? (int64_t)INT32_MAX + 1 : d.i < INT32_MIN ? (int64_t)INT32_MIN - 1 : d.i);
            if (v < INT32_MIN || v > INT32_MAX) return luaL_error(L, "value out of range for int32");
            nv = (int32_t)v;
        } while (!__atomic_compare_exchange_n((int32_t *)p, &old, nv, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
        lua_pushinteger(L, nv);
        return 1;
    }
    case LMP_SHARED_UINT8: {
        uint8_t old = __atomic_load_n((uint8_t *)p, __ATOMIC_RELAXED), nv;
        do {
            int64_t v = (int64_t)old + (d.i > 256 ? 256 : d.i < -256 ? -256 : d.i);
            if (v < 0 || v > 255) return luaL_error(L, "value out of range for uint8");
            nv = (uint8_t)v;
        } while (!__atomic_compare_exchange_n((uint8_t *)p, &old, nv, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
        lua_pushinteger(L, nv);
        return 1;
    }
    default: {
        uint64_t old = __atomic_load_n((uint64_t *)p, __ATOMIC_RELAXED), nb;
        double v;
        do {
            memcpy(&v, &old, sizeof v);
            v += d.d;
            memcpy(&nb, &v, sizeof nb);
        } while (!__atomic_compare_exchange_n((uint64_t *)p, &old, nb, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
        lua_pushnumber(L, v);
        return 1;
    }
    }
}

/* compare_exchange at element i: expected at arg, new at arg + 1 */
static int cmpxchg(lua_State *L, Sync *u, size_t i, int arg) {
    int t;
    void *p = slot(u, i, &t);
    elem e, n;
    checkelem(L, arg, t, &e);
    checkelem(L, arg + 1, t, &n);
    int ok;
    switch (t) {
    case LMP_SHARED_INT64: {
        int64_t x = e.i;
        ok = __atomic_compare_exchange_n((int64_t *)p, &x, n.i, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        lua_pushboolean(L, ok);
        lua_pushinteger(L, x);
        break;
    }
    case LMP_SHARED_INT32: {
        int32_t x = (int32_t)e.i;
        ok = __atomic_compare_exchange_n((int32_t *)p, &x, (int32_t)n.i, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        lua_pushboolean(L, ok);
        lua_pushinteger(L, x);
        break;
    }
    case LMP_SHARED_UINT8: {
        uint8_t x = (uint8_t)e.i;
        ok = __atomic_compare_exchange_n((uint8_t *)p, &x, (uint8_t)n.i, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        lua_pushboolean(L, ok);
        lua_pushinteger(L, x);
        break;
    }
    default: { /* bitwise, as hardware compares: -0.0 differs from 0.0 */
        uint64_t x, nb;
        memcpy(&x, &e.d, sizeof x);
        memcpy(&nb, &n.d, sizeof nb);
        ok = __atomic_compare_exchange_n((uint64_t *)p, &x, nb, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        double d;
        memcpy(&d, &x, sizeof d);
        lua_pushboolean(L, ok);
        lua_pushnumber(L, d);
    }
    }
    return 2;
}

static size_t count(Sync *u) {
    size_t n;
    int t;
    lmp_shared_data(u->s, &t, &n);
    return n;
}

/* Array index at idx: 0-based, or (size_t)-1 when out of 1..n or not an
 * integer. */
static size_t aindex(lua_State *L, Sync *u, int idx) {
    int isint;
    lua_Integer i = lua_tointegerx(L, idx, &isint);
    if (!isint || i < 1 || (lua_Unsigned)i > count(u)) return (size_t)-1;
    return (size_t)(i - 1);
}

static int shared_get_lock(lua_State *L) {
    checksync(L, 1, K(LMP_SYNC_SHARED), "Value");
    if (pushextra(L, 1) == LUA_TNIL) return luaL_error(L, "this object was created without a lock");
    return 1;
}

static int value_add(lua_State *L) {
    Sync *u = checksync(L, 1, K(LMP_SYNC_SHARED), "Value");
    return addelem(L, u, 0, 2);
}

static int value_cmpxchg(lua_State *L) {
    Sync *u = checksync(L, 1, K(LMP_SYNC_SHARED), "Value");
    return cmpxchg(L, u, 0, 2);
}

static int array_add(lua_State *L) {
    Sync *u = checksync(L, 1, K(LMP_SYNC_SHARED), "Array");
    size_t i = aindex(L, u, 2);
    if (i == (size_t)-1) return luaL_error(L, "index out of range");
    return addelem(L, u, i, 3);
}

static int array_cmpxchg(lua_State *L) {
    Sync *u = checksync(L, 1, K(LMP_SYNC_SHARED), "Array");
    size_t i = aindex(L, u, 2);
    if (i == (size_t)-1) return luaL_error(L, "index out of range");
    return cmpxchg(L, u, i, 3);
}

static int array_totable(lua_State *L) {
    Sync *u = checksync(L, 1, K(LMP_SYNC_SHARED), "Array");
    size_t n = count(u);
    lua_createtable(L, n > INT32_MAX ? INT32_MAX : (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        pushelem(L, u, i);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int array_len(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)count(checksync(L, 1, K(LMP_SYNC_SHARED), "Array")));
    return 1;
}

/* v.value, v:method; a[i], a:method */
static int shared_index(lua_State *L) {
    Sync *u = checksync(L, 1, K(LMP_SYNC_SHARED), "Value");
    if (u->flavour == ARRAY && lua_type(L, 2) == LUA_TNUMBER) {
        size_t i = aindex(L, u, 2);
        if (i == (size_t)-1) return 0;
        pushelem(L, u, i);
        return 1;
    }
    if (u->flavour == VALUE && lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "value") == 0) {
        pushelem(L, u, 0);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(2));
    return 1;
}

static int shared_newindex(lua_State *L) {
    Sync *u = checksync(L, 1, K(LMP_SYNC_SHARED), "Value");
    int t;
    size_t i;
    lmp_shared_data(u->s, &t, NULL);
    if (u->flavour == ARRAY) {
        if (lua_type(L, 2) != LUA_TNUMBER) return luaL_error(L, "Array index must be an integer");
        i = aindex(L, u, 2);
        if (i == (size_t)-1) return luaL_error(L, "index out of range");
    } else {
        if (lua_type(L, 2) != LUA_TSTRING || strcmp(lua_tostring(L, 2), "value") != 0)
            return luaL_error(L, "Value has only the field 'value'");
        i = 0;
    }
    elem e;
    const char *why = toelem(L, 3, t, &e);
    if (why) return luaL_error(L, "bad value for %s (%s)", TYPES[t - 1], why);
    storeelem(u, i, &e);
    return 0;
}

static int shared_tostring(lua_State *L) {
    Sync *u = checksync(L, 1, K(LMP_SYNC_SHARED), "Value");
    int t;
    size_t n;
    lmp_shared_data(u->s, &t, &n);
    if (u->flavour == VALUE) {
        pushelem(L, u, 0);
        luaL_tolstring(L, -1, NULL);
        lua_pushfstring(L, "Value(%s, %s)", TYPES[t - 1], lua_tostring(L, -1));
    } else {
        lua_pushfstring(L, "Array(%s, %d)", TYPES[t - 1], (int)n);
    }
    return 1;
}

static int checktype(lua_State *L, int arg) { return luaL_checkoption(L, arg, NULL, TYPES) + 1; }

/* The lock option: {lock = true} (default: an RLock), false, or a lock.
 * Returns 0, or -errno when the OS refuses a new RLock. */
static int setlock(lua_State *L, int opts) {
    int has = 1;
    if (!lua_isnoneornil(L, opts)) {
        luaL_checktype(L, opts, LUA_TTABLE);
        lua_getfield(L, opts, "lock");
        if (lua_isboolean(L, -1)) has = lua_toboolean(L, -1);
        else if (!lua_isnil(L, -1)) {
            Sync *l = testsync(L, -1);
            if (!l || !(LOCKS & K(l->kind)) || !l->s)
                luaL_argerror(L, opts, lua_pushfstring(L, "lock must be a boolean, a Lock or an RLock, got %s",
                                                       luaL_typename(L, -1)));
            lua_setiuservalue(L, -2, 1);
            return 0;
        }
        lua_pop(L, 1);
    }
    if (!has) return 0;
    Sync *l = newsync(L, LMP_SYNC_RLOCK, 0);
    int rc = lmp_lock_new(1, &l->s);
    if (rc < 0) {
        lua_pop(L, 1);
        return rc;
    }
    lua_setiuservalue(L, -2, 1);
    return 0;
}

/* process.Value(type, init [, {lock = ...}]) */
static int new_value(lua_State *L) {
    lua_settop(L, 3);
    int t = checktype(L, 1);
    elem e;
    checkelem(L, 2, t, &e);
    Sync *u = newsync(L, LMP_SYNC_SHARED, VALUE);
    int rc = lmp_shared_new(t, 1, &u->s);
    if (rc < 0) return lmp_pushoserror(L, "Value", -rc);
    storeelem(u, 0, &e);
    if ((rc = setlock(L, 3)) < 0) return lmp_pushoserror(L, "Value", -rc);
    return 1;
}

/* process.Array(type, n | list [, {lock = ...}]) */
static int new_array(lua_State *L) {
    lua_settop(L, 3);
    int t = checktype(L, 1);
    lua_Integer n;
    int list = lua_istable(L, 2);
    if (list) n = luaL_len(L, 2);
    else n = checkcount(L, 2, 0, 1);
    luaL_argcheck(L, n >= 1 && n <= ((lua_Integer)1 << 31), 2, "size must be between 1 and 2^31");
    Sync *u = newsync(L, LMP_SYNC_SHARED, ARRAY);
    int rc = lmp_shared_new(t, (size_t)n, &u->s);
    if (rc < 0) return lmp_pushoserror(L, "Array", -rc);
    for (lua_Integer i = 1; list && i <= n; i++) {
        lua_geti(L, 2, i);
        elem e;
        const char *why = toelem(L, -1, t, &e);
        if (why) return luaL_argerror(L, 2, lua_pushfstring(L, "element %I: %s", i, why));
        storeelem(u, (size_t)(i - 1), &e);
        lua_pop(L, 1);
    }
    if ((rc = setlock(L, 3)) < 0) return lmp_pushoserror(L, "Array", -rc);
    return 1;
}

/* ---- shared by all -------------------------------------------------------- */

static int sync_gc(lua_State *L) {
    Sync *u = testsync(L, 1);
    if (u) {
        lmp_sync_free(u->s);
        u->s = NULL;
    }
    return 0;
}

static int sync_tostring(lua_State *L) {
    Sync *u = testsync(L, 1);
    const char *name = u && u->kind == LMP_SYNC_SEM && u->flavour ? "BoundedSemaphore"
                       : u ? TNAMES[u->kind] : "?";
    lua_pushfstring(L, "%s: %p", name, (void *)u);
    return 1;
}

/* Barrier fields (broken, parties, n_waiting) and methods. */
static int barrier_index(lua_State *L) {
    Sync *u = checksync(L, 1, K(LMP_SYNC_BARRIER), "Barrier");
    const char *k = lua_tostring(L, 2);
    if (k && strcmp(k, "broken") == 0) lua_pushboolean(L, lmp_barrier_broken(u->s));
    else if (k && strcmp(k, "parties") == 0) lua_pushinteger(L, lmp_barrier_parties(u->s));
    else if (k && strcmp(k, "n_waiting") == 0) lua_pushinteger(L, lmp_barrier_waiting(u->s));
    else {
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(2));
    }
    return 1;
}

static const luaL_Reg lock_m[] = {{"acquire", lock_acquire}, {"release", lock_release},
    {"locked", lock_locked}, {"with", sync_with}, {"guard", sync_guard}, {NULL, NULL}};
static const luaL_Reg sem_m[] = {{"acquire", sem_acquire}, {"release", sem_release},
    {"get_value", sem_get_value}, {"with", sync_with}, {"guard", sync_guard}, {NULL, NULL}};
static const luaL_Reg event_m[] = {{"set", event_set}, {"clear", event_clear},
    {"is_set", event_is_set}, {"wait", event_wait}, {NULL, NULL}};
static const luaL_Reg cond_m[] = {{"acquire", cond_acquire}, {"release", cond_release},
    {"wait", cond_wait}, {"wait_for", cond_wait_for}, {"notify", cond_notify},
    {"notify_all", cond_notify_all}, {"with", sync_with}, {"guard", sync_guard}, {NULL, NULL}};
static const luaL_Reg barrier_m[] = {{"wait", barrier_wait}, {"abort", barrier_abort},
    {"reset", barrier_reset}, {NULL, NULL}};
static const luaL_Reg value_m[] = {{"add", value_add}, {"compare_exchange", value_cmpxchg},
    {"get_lock", shared_get_lock}, {NULL, NULL}};
static const luaL_Reg array_m[] = {{"add", array_add}, {"compare_exchange", array_cmpxchg},
    {"totable", array_totable}, {"get_lock", shared_get_lock}, {NULL, NULL}};

/* One class per kind of object.  Every metatable carries MARK (testsync);
 * its methods get the metatable as upvalue (checksync); a Barrier's and a
 * shared value's __index is a closure over the metatable and the methods
 * (their attributes); a shared value also has __newindex, an Array __len. */
enum { PLAIN, BARRIER, SHARED, SHARED_ARRAY };

static void sync_extra(lua_State *L, const luaL_Reg *m, int shape) {
    lua_pushboolean(L, 1);
    lua_rawsetp(L, -2, &MARK);
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, m, 1); /* upvalue: the metatable (checksync) */
    if (shape != PLAIN) {
        lua_pushvalue(L, -2); /* upvalues: the metatable, the methods */
        lua_insert(L, -2);
        lua_pushcclosure(L, shape == BARRIER ? barrier_index : shared_index, 2);
    }
    lua_setfield(L, -2, "__index");
    if (shape == SHARED || shape == SHARED_ARRAY) {
        lua_pushvalue(L, -1);
        lua_pushcclosure(L, shared_newindex, 1);
        lua_setfield(L, -2, "__newindex");
    }
    if (shape == SHARED_ARRAY) {
        lua_pushcfunction(L, array_len);
        lua_setfield(L, -2, "__len");
    }
}

static void extra_lock(lua_State *L) { sync_extra(L, lock_m, PLAIN); }
static void extra_sem(lua_State *L) { sync_extra(L, sem_m, PLAIN); }
static void extra_event(lua_State *L) { sync_extra(L, event_m, PLAIN); }
static void extra_cond(lua_State *L) { sync_extra(L, cond_m, PLAIN); }
static void extra_barrier(lua_State *L) { sync_extra(L, barrier_m, BARRIER); }
static void extra_value(lua_State *L) { sync_extra(L, value_m, SHARED); }
static void extra_array(lua_State *L) { sync_extra(L, array_m, SHARED_ARRAY); }

/* Indexed by kind; [0] a BoundedSemaphore, [LMP_SYNC_SHARED + 1] an Array. */
static const lmp_class sync_classes[] = {
    {"process.BoundedSemaphore", NULL, sync_gc, sync_tostring, extra_sem},
    [LMP_SYNC_LOCK] = {"process.Lock", NULL, sync_gc, sync_tostring, extra_lock},
    [LMP_SYNC_RLOCK] = {"process.RLock", NULL, sync_gc, sync_tostring, extra_lock},
    [LMP_SYNC_SEM] = {"process.Semaphore", NULL, sync_gc, sync_tostring, extra_sem},
    [LMP_SYNC_EVENT] = {"process.Event", NULL, sync_gc, sync_tostring, extra_event},
    [LMP_SYNC_COND] = {"process.Condition", NULL, sync_gc, sync_tostring, extra_cond},
    [LMP_SYNC_BARRIER] = {"process.Barrier", NULL, sync_gc, sync_tostring, extra_barrier},
    [LMP_SYNC_SHARED] = {"process.Value", NULL, sync_gc, shared_tostring, extra_value},
    [LMP_SYNC_SHARED + 1] = {"process.Array", NULL, sync_gc, shared_tostring, extra_array},
};

static const lmp_class *sync_class(int kind, int flavour) {
    if (kind == LMP_SYNC_SHARED && flavour == ARRAY) return &sync_classes[LMP_SYNC_SHARED + 1];
    if (kind == LMP_SYNC_SEM && flavour) return &sync_classes[0];
    return &sync_classes[kind];
}

/* ---- travelling to spawned children ------------------------------------- */

int lmp_sync_fd_of(lua_State *L, int idx, int *fd) {
    Sync *u = testsync(L, idx);
    if (!u || !u->s) return 0;
    *fd = lmp_sync_fd(u->s);
    return 1;
}

void lmp_sync_standin(lua_State *L, int idx, lua_Integer fd_index) {
    Sync *u = testsync(L, idx);
    lua_createtable(L, 5, 0);
    lua_pushliteral(L, "Sync");
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, fd_index);
    lua_rawseti(L, -2, 2);
    lua_getiuservalue(L, idx, 1);
    lua_rawseti(L, -2, 3);
    lua_pushinteger(L, u->flavour);
    lua_rawseti(L, -2, 4);
    lua_pushnumber(L, u->timeout);
    lua_rawseti(L, -2, 5);
}

int lmp_sync_from_standin(lua_State *L, int fd) {
    int tab = lua_gettop(L);
    lmp_sync *s;
    int rc = lmp_sync_attach(fd, &s);
    if (rc < 0) return rc;
    lua_rawgeti(L, tab, 4);
    int flavour = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    int kind = lmp_sync_kind(s);
    if (kind == LMP_SYNC_SHARED) flavour = flavour == ARRAY ? ARRAY : VALUE;
    else if (kind != LMP_SYNC_SEM) flavour = 0;
    else flavour = flavour != 0;
    lua_rawgeti(L, tab, 3);
    Sync *x = lua_isnil(L, -1) ? NULL : testsync(L, -1);
    int ok = kind == LMP_SYNC_BARRIER ? lua_isnil(L, -1) || lua_isfunction(L, -1)
             : kind == LMP_SYNC_COND  ? x && (x->kind == LMP_SYNC_LOCK || x->kind == LMP_SYNC_RLOCK)
             : kind == LMP_SYNC_SHARED ? lua_isnil(L, -1) || (x && (x->kind == LMP_SYNC_LOCK || x->kind == LMP_SYNC_RLOCK))
                                       : lua_isnil(L, -1);
    if (!ok) {
        lua_pop(L, 1);
        lmp_sync_detach(s); /* fd stays the caller's */
        return -EINVAL;
    }
    Sync *u = newsync(L, kind, flavour);
    u->s = s;
    lua_rawgeti(L, tab, 5);
    u->timeout = lua_tonumber(L, -1);
    lua_pop(L, 1);
    lua_rotate(L, -2, 1); /* extra on top */
    lua_setiuservalue(L, -2, 1);
    return 0;
}

/* ---- native access (luamp.h) ---------------------------------------------- */

LUAMP_API int luamp_shared_get(lua_State *L, int idx, void **data, int *type, size_t *n) {
    Sync *u = testsync(L, idx);
    if (!u || !u->s || u->kind != LMP_SYNC_SHARED) return 0;
    int t;
    size_t k;
    void *p = lmp_shared_data(u->s, &t, &k);
    if (data) *data = p;
    if (type) *type = t;
    if (n) *n = k;
    return 1;
}

/* ---- process.sleep ----------------------------------------------------- */

/* process.sleep(seconds): an absolute monotonic deadline, so a handled
 * signal (EINTR) only resumes the same sleep. */
static int proc_sleep(lua_State *L) {
    double t = luaL_checknumber(L, 1);
    luaL_argcheck(L, t == t, 1, "seconds is NaN");
    if (t <= 0) return 0;
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    if (t > 1e9) t = 1e9;
    time_t sec = (time_t)t;
    dl.tv_sec += sec;
    dl.tv_nsec += (long)((t - (double)sec) * 1e9);
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &dl, NULL) == EINTR) {
    }
    return 0;
}

static const luaL_Reg sync_funcs[] = {
    {"Lock", new_lock},       {"RLock", new_rlock},     {"Semaphore", new_sem},
    {"BoundedSemaphore", new_bsem}, {"Event", new_event}, {"Condition", new_cond},
    {"Barrier", new_barrier}, {"Value", new_value},     {"Array", new_array},
    {"sleep", proc_sleep},    {NULL, NULL}};

void lmp_open_sync(lua_State *L) { luaL_setfuncs(L, sync_funcs, 0); }
