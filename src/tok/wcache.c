/*
 * wcache.c — the word cache of one tn_tokenize call, shared by the SPM and
 * byte-level BPE encoders.
 *
 * Key idea: both encoders merge words that cannot interact (BPE: the
 * pre-tokenizer's words; SPM: the words between "▁" boundaries when the
 * vocabulary allows splitting), so a word's ids depend on its bytes alone.
 * Natural text repeats its words, so each call remembers the ids of the
 * short words it has merged and a repeated word costs one hash lookup
 * instead of a merge loop.
 *
 * HOW IT WORKS
 *   An open-addressing table (linear probing, at most half full) of
 *   (hash, where the bytes are, where the ids are), over two growable
 *   arenas: the words' bytes and their ids. A miss hands back the empty
 *   slot the word would take, so storing it after merging costs no second
 *   probe.
 *
 * EDGE CASES
 *   Only words of 2..TN__WCACHE_WORD bytes with at most 255 ids are kept.
 *   Ids are stored only when the caller's output had room for them (a call
 *   that only counts tokens caches nothing).
 *
 * LIMITATIONS
 *   The cache lives and dies with the call's scratch, so the vocabulary
 *   stays immutable and threads share nothing; a new call starts cold. It
 *   stops growing at TN__WCACHE_MAX words, and a cache that cannot grow
 *   (out of memory) just stops caching: it never fails the call.
 */
#include "tok/tok_int.h"

#include <stdlib.h>

#define WCACHE_MAX (1u << 20)

typedef struct wslot {
    uint32_t hash;
    uint32_t off;   /* word bytes in bytes[] */
    uint32_t ids;   /* ids in ids[] */
    uint8_t len, n; /* word length, id count; len 0: empty */
} wslot;

static bool rehash(tn__word_cache *c)
{
    size_t cap = c->cap ? 2 * c->cap : 256;
    wslot *t = calloc(cap, sizeof *t), *old = c->slots;
    if (!t)
        return false;
    for (size_t i = 0; i < c->cap; i++) {
        if (!old[i].len)
            continue;
        size_t j = old[i].hash & (cap - 1);
        while (t[j].len)
            j = (j + 1) & (cap - 1);
        t[j] = old[i];
    }
    free(old);
    c->slots = t;
    c->cap = cap;
    return true;
}

/* Looks w[0..n) up (2 <= n <= TN__WCACHE_WORD); see tok_int.h. */
bool tn__wcache_get(tn__word_cache *c, const char *w, size_t n, uint32_t h, void **slot, const int32_t **ids,
                    size_t *n_ids)
{
    *slot = NULL;
    if (2 * (c->n + 1) > c->cap && (c->n >= WCACHE_MAX || !rehash(c)))
        return false;
    wslot *t = c->slots;
    for (size_t j = h & (c->cap - 1);; j = (j + 1) & (c->cap - 1)) {
        if (!t[j].len) {
            *slot = &t[j];
            return false;
        }
        if (t[j].hash == h && t[j].len == n && tn__tok_bytes_eq(c->bytes + t[j].off, w, n)) {
            *ids = c->ids + t[j].ids;
            *n_ids = t[j].n;
            return true;
        }
    }
}

/* Remembers ids[0..k) for w; see tok_int.h. */
void tn__wcache_put(tn__word_cache *c, void *slot, const char *w, size_t n, uint32_t h, const int32_t *ids, size_t k)
{
    if (!slot || k > 255 || n > TN__WCACHE_WORD)
        return;
    if (!tn__grow((void **)&c->bytes, &c->bytes_cap, c->bytes_n + n, 1) ||
        !tn__grow((void **)&c->ids, &c->ids_cap, c->ids_n + k, sizeof(int32_t)))
        return;
    memcpy(c->bytes + c->bytes_n, w, n);
    memcpy(c->ids + c->ids_n, ids, k * sizeof(int32_t));
    *(wslot *)slot = (wslot){h, (uint32_t)c->bytes_n, (uint32_t)c->ids_n, (uint8_t)n, (uint8_t)k};
    c->bytes_n += n;
    c->ids_n += k;
    c->n++;
}

/* Frees the cache; the struct may be reused after. */
void tn__wcache_free(tn__word_cache *c)
{
    free(c->slots);
    free(c->bytes);
    free(c->ids);
    memset(c, 0, sizeof *c);
}

bool tn__grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q)
        return false;
    *p = q;
    *cap = c;
    return true;
}
