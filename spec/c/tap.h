/*
 * tap.h - a minimal TAP producer for the C tests (meson runs them with
 * protocol: 'tap', so every check is counted on its own).
 *
 *   ok(cond, "what was checked");  ... return tap_done();
 */
#ifndef LMP_TAP_H
#define LMP_TAP_H

#include <stdio.h>

static int tap_n, tap_failed;

#define ok(cond, ...)                                                       \
    do {                                                                    \
        int tap_c_ = (cond) ? 1 : 0;                                        \
        printf("%sok %d - ", tap_c_ ? "" : "not ", ++tap_n);                \
        printf(__VA_ARGS__);                                                \
        printf("\n");                                                       \
        if (!tap_c_) {                                                      \
            tap_failed++;                                                   \
            printf("#   failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                   \
        fflush(stdout);                                                     \
    } while (0)

static inline int tap_done(void) {
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

#endif
