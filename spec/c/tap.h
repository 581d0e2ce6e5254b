/*
 * tap.h - a minimal TAP producer for the C tests (meson runs them with
 * protocol: 'tap', so every check is counted on its own).
 *
 *   ok(cond, "what was checked");  ... return tap_done();
 */
#ifndef LMP_TAP_H
#define LMP_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

/* A description is one line: what follows a newline in it (a captured
 * message, say) is printed as diagnostic lines ("# ..."), which TAP
 * consumers accept, instead of lines they cannot parse. */
static inline void tap_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void tap_line(const char *fmt, ...) {
    char text[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    const char *p = text, *nl;
    while ((nl = strchr(p, '\n'))) {
        printf("%.*s\n# ", (int)(nl - p), p);
        p = nl + 1;
    }
    printf("%s\n", p);
}

#define ok(cond, ...)                                                       \
    do {                                                                    \
        int tap_c_ = (cond) ? 1 : 0;                                        \
        printf("%sok %d - ", tap_c_ ? "" : "not ", ++tap_n);                \
        tap_line(__VA_ARGS__);                                              \
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
