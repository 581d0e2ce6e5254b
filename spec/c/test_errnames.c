/*
 * test_errnames.c - the errno names (core/sys.h) against the platform:
 * every errno the C library names has the same name in luamp, and every
 * name luamp has maps back to its number (aliases included).  The table
 * is generated at build time (tools/gen_errnames.sh); this is what keeps
 * it honest, with glibc's strerrorname_np as the reference where there is
 * one and the table's own consistency everywhere.
 */
#include <errno.h>
#include <string.h>

#include "core/bounds.h"
#include "core/sys.h"
#include "tap.h"

int main(void) {
    int named = 0, checked = 0, mismatched = 0;
    for (int e = 1; e < LMP_ERRMAX; e++) {
        const char *n = lmp_errname(e);
        if (strcmp(n, "E?") == 0) continue;
        named++;
        if (lmp_errno(n) != e) {
            mismatched++;
            printf("# %d -> %s -> %d\n", e, n, lmp_errno(n));
        }
    }
    ok(named > 100 && mismatched == 0, "%d errnos named, each name maps back to its number", named);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
    mismatched = 0;
    for (int e = 1; e < LMP_ERRMAX; e++) {
        const char *ref = strerrorname_np(e);
        if (!ref) continue;
        checked++;
        if (strcmp(ref, lmp_errname(e)) != 0) {
            mismatched++;
            printf("# %d: C library %s, luamp %s\n", e, ref, lmp_errname(e));
        }
    }
    ok(checked > 100 && mismatched == 0 && checked == named,
       "every errno the C library names (%d) has its name in luamp (%d)", checked, named);
#else
    ok(1, "no strerrorname_np to compare with (not glibc 2.32+)");
#endif
    ok(strcmp(lmp_errname(ENOTRECOVERABLE), "ENOTRECOVERABLE") == 0 &&
           strcmp(lmp_errname(EOWNERDEAD), "EOWNERDEAD") == 0 && strcmp(lmp_errname(EHWPOISON), "EHWPOISON") == 0,
       "the late ones: ENOTRECOVERABLE, EOWNERDEAD, EHWPOISON");
    ok(lmp_errno("EWOULDBLOCK") == EAGAIN && lmp_errno("ENOTSUP") == ENOTSUP && lmp_errno("EDEADLOCK") == EDEADLK,
       "aliases map to their numbers");
    ok(strcmp(lmp_errname(0), "E?") == 0 && strcmp(lmp_errname(-1), "E?") == 0 &&
           strcmp(lmp_errname(LMP_ERRMAX), "E?") == 0 && lmp_errno("EBOGUS") == 0 && lmp_errno("") == 0,
       "unknown codes and names");
    return tap_done();
}
