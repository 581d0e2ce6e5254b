/*
 * buf.c - growable byte buffer (see buf.h).
 */
#include "buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void lmp_buf_init(lmp_buf *b) {
    b->data = NULL;
    b->len = b->cap = b->pos = 0;
}

void lmp_buf_free(lmp_buf *b) {
    free(b->data);
    lmp_buf_init(b);
}

void lmp_buf_reset(lmp_buf *b) { b->len = b->pos = 0; }

int lmp_buf_reserve(lmp_buf *b, size_t n) {
    if (n <= b->cap - b->len) return 0;
    if (n > SIZE_MAX / 2 - b->len) return -ENOMEM;
    size_t need = b->len + n;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int lmp_buf_append(lmp_buf *b, const void *p, size_t n) {
    int rc = lmp_buf_reserve(b, n);
    if (rc) return rc;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}
