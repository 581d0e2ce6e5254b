/*
 * host.c - a C application that embeds luamp: it registers a native
 * kernel, runs a Lua script that fans the kernel out over child
 * processes, and prints the result.
 *
 *   cc host.c $(pkg-config --cflags --libs luamp) -o host
 *   ./host [terms]
 */
#include <stdio.h>
#include <stdlib.h>

#include "luamp.h"

/* The native kernel: sum of k*k for k = m..n, exact in 64-bit integers
 * (wrapping past 2^63 like Lua's own integers).  It runs in the children. */
static int sum_squares(lua_State *L) {
    lua_Integer m = luaL_checkinteger(L, 1), n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, m >= 1 && n >= m, 2, "want 1 <= m <= n");
    unsigned long long s = 0;
    for (lua_Integer k = m; k <= n; k++) s += (unsigned long long)k * (unsigned long long)k;
    lua_pushinteger(L, (lua_Integer)s);
    return 1;
}

static const luaL_Reg kernels[] = {{"sum_squares", sum_squares}, {NULL, NULL}};

/* The job, in Lua: split 1..N over one child per CPU, then add up. */
static const char *job =
    "local process = require 'process'\n"
    "local kernels = require 'host.kernels'\n"
    "local N = N -- set by the host\n"
    "local P = math.min(process.cpu_count(), N) -- no empty share\n"
    "local ps, first = {}, 1\n"
    "for i = 1, P do\n"
    "  local last = i == P and N or first + N // P - 1\n"
    "  ps[i] = process.Process{target = kernels.sum_squares, args = {first, last}}\n"
    "  assert(ps[i]:start())\n"
    "  first = last + 1\n"
    "end\n"
    "local total = 0\n"
    "for _, p in ipairs(ps) do\n"
    "  assert(p:join() == 0, p.error)\n"
    "  total = total + p:result()\n"
    "end\n"
    "-- N(N+1)(2N+1)/6, each division done on a factor before multiplying:\n"
    "-- the product would overflow 64 bits from N ~ 2.1e6 on, and then\n"
    "-- wraps exactly as the kernel's sum does\n"
    "local a, b, c = N, N + 1, 2 * N + 1\n"
    "if a % 2 == 0 then a = a // 2 else b = b // 2 end\n"
    "if a % 3 == 0 then a = a // 3 elseif b % 3 == 0 then b = b // 3 else c = c // 3 end\n"
    "local exact = a * b * c\n"
    "print(('sum of k^2 for k = 1..%d over %d processes: %d (%s)'):format(\n"
    "  N, P, total, total == exact and 'exact' or 'WRONG'))\n"
    "if total ~= exact then error('wrong total') end\n";

int main(int argc, char **argv) {
    long long terms = argc > 1 ? atoll(argv[1]) : 1000000;
    luamp_runtime *rt = luamp_runtime_new();
    if (!rt) {
        fprintf(stderr, "host: cannot create the runtime\n");
        return 1;
    }
    lua_State *L = luamp_runtime_state(rt);
    luamp_register_target(L, "host.kernels", kernels);

    lua_pushinteger(L, terms);
    lua_setglobal(L, "N");

    /* Errors come back as codes and messages, never as an exit. */
    int rc = luamp_runtime_dostring(rt, job, "=job");
    if (rc != 0) {
        fprintf(stderr, "host: %s: %s\n", luamp_errname(rc), luamp_runtime_error(rt));
        luamp_runtime_close(rt);
        return 1;
    }
    luamp_runtime_close(rt); /* joins whatever the script left running */
    return 0;
}
