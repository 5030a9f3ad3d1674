/*
 * buf.c — a growable byte buffer with a maximum size (SBUF_MAX): what a
 * choice's output text and held-back stop-string prefix live in. Growth
 * doubles; a failed growth leaves the buffer unchanged and returns false.
 */
#include "serve/serve_int.h"

#include <stdlib.h>
#include <string.h>

bool sbuf_add(sbuf *b, const char *s, size_t n)
{
    if (n > SBUF_MAX || b->len > SBUF_MAX - n)
        return false;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return false;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return true;
}

void sbuf_consume(sbuf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->p, b->p + n, b->len - n);
        b->len -= n;
    }
    if (b->p)
        b->p[b->len] = '\0';
}

void sbuf_free(sbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
