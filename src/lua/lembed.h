/*
 * lembed.h - the Lua half of the module, compiled into the library by
 * tools/embed.lua so neither the runner nor a host needs LUA_PATH.
 */
#ifndef LMP_LEMBED_H
#define LMP_LEMBED_H

#include <stddef.h>

typedef struct lmp_embedded {
    const char *name;  /* module name, "process" */
    const char *chunk; /* chunk name for tracebacks, "@process/init.lua" */
    const char *src;
    size_t len;
    const char *bin; /* the same, precompiled (tools/embed.lua) */
    size_t binlen;
} lmp_embedded;

extern const lmp_embedded lmp_embedded_lua[];

#endif
