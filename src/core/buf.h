/*
 * buf.h - growable byte buffer.
 *
 * Provides: lmp_buf, an append-only byte buffer with a read cursor, used by
 * the codec (encoding), the result channel (collecting a child's output) and
 * Connections (framing).
 * Uses: libc only.  Must never: include lua.h or raise; every function
 * reports allocation failure with a return code.
 */
#ifndef LMP_BUF_H
#define LMP_BUF_H

#include <stddef.h>

typedef struct lmp_buf {
    char *data;
    size_t len; /* bytes written */
    size_t cap; /* bytes allocated */
    size_t pos; /* read cursor, <= len */
} lmp_buf;

#define LMP_BUF_INIT {NULL, 0, 0, 0}

void lmp_buf_init(lmp_buf *b);
void lmp_buf_free(lmp_buf *b);
/* Forget the contents but keep the allocation. */
void lmp_buf_reset(lmp_buf *b);
/* Make room for n more bytes; 0 or -ENOMEM. */
int lmp_buf_reserve(lmp_buf *b, size_t n);
/* Append n bytes; 0 or -ENOMEM. */
int lmp_buf_append(lmp_buf *b, const void *p, size_t n);
/* Pointer to the n bytes of free space after len (after lmp_buf_reserve). */
static inline char *lmp_buf_tail(lmp_buf *b) { return b->data + b->len; }

#endif
