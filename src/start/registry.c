/*
 * registry.c - the start methods, by name (see method.h).
 *
 * Provides: lmp_methods, lmp_method_find.  A new method is a file of its
 * own defining one lmp_method, and a line here.
 * Uses: method.h.  Must never: include lua.h.
 */
#include <string.h>

#include "method.h"

/* The default method first (what get_start_method() answers). */
const lmp_method *const lmp_methods[] = {&lmp_method_fork, &lmp_method_spawn, &lmp_method_forkserver, NULL};

const lmp_method *lmp_method_find(const char *name) {
    for (int i = 0; lmp_methods[i]; i++)
        if (strcmp(name, lmp_methods[i]->name) == 0) return lmp_methods[i];
    return NULL;
}
