/*
 * blocks.c — the block manager: reference counts, the free list that is
 * also the LRU of cached blocks, and the hash table of full blocks.
 *
 * BLOCK EVICTION (HOW IT WORKS)
 *
 * Every block with refcount 0 is on ONE doubly linked free list, which is
 * kept in two parts:
 *
 *     head -> [never-hashed blocks ...][cached blocks, oldest ... newest] <- tail
 *
 * A block released without a hash (a partial last block, a block whose
 * content another block already provides) is pushed at the head: it holds
 * nothing worth keeping, so it is reused first. A block released WITH a
 * hash is appended at the tail: it is the most recently used cached block.
 * Allocation always pops the head, so it consumes worthless blocks first
 * and only then evicts cached blocks, least recently released first; an
 * evicted block's hash leaves the table. A lookup hit on a cached block
 * unlinks it from the middle of the list (O(1)) and gives it an owner again.
 *
 * A sequence releases its blocks from its LAST block to its first, so the
 * first block of a prompt (the part most likely shared — a system prompt)
 * lands nearest the tail and is evicted last; the blocks of a long unique
 * tail go first. The same idea as vLLM's free-block queue, written here
 * from that description.
 *
 * EDGE CASES
 *
 * Two sequences may compute the same full block at the same time (two
 * copies of one prompt admitted in one step). The hash table keeps the first
 * copy; set_hash on the second returns false and that block stays unhashed,
 * so it is recycled first when released. Hashes are 64-bit chains; a lookup
 * also compares the block's tokens, so a hash collision between different
 * blocks of tokens can only mislead through a collision of the PARENT chain
 * (about 2^-64 per lookup) — documented, not guarded.
 *
 * LIMITATIONS
 *
 * The table never resizes (it is sized for every block carrying a hash).
 */
#include "engine/blocks.h"

#include <stdlib.h>
#include <string.h>

struct tn_blocks {
    int32_t n_blocks;
    int32_t block_size;
    int32_t *ref;          /* (n_blocks) owners */
    uint64_t *hash;        /* (n_blocks) valid where hashed */
    bool *hashed;          /* (n_blocks) */
    int32_t *tokens;       /* (n_blocks, block_size) content of hashed blocks */

    /* The free list (refcount 0 blocks); see the essay. */
    int32_t *prev, *next;  /* (n_blocks) -1 at the ends; both -1 and not head: not listed */
    int32_t head, tail;
    int32_t n_free;
    int32_t n_cached;      /* free blocks with a hash */

    /* Hash table: chains through hnext. */
    uint32_t mask;         /* buckets - 1 */
    int32_t *bucket;       /* (mask + 1) first block of the chain or -1 */
    int32_t *hnext;        /* (n_blocks) */
};

/* ==========================================================================
 * Lifetime and queries
 * ======================================================================== */

/* Contract in blocks.h. */
tn_status tn_blocks_new(int32_t n_blocks, int32_t block_size, tn_blocks **out)
{
    *out = NULL;
    if (n_blocks <= 0 || block_size <= 0 || (int64_t)n_blocks * block_size > INT32_MAX)
        return tn__err(TN_ERR_INVALID, "blocks: %d blocks of %d tokens: sizes must be positive and fit int32",
                       n_blocks, block_size);
    tn_blocks *bm = calloc(1, sizeof *bm);
    if (!bm)
        return tn__err(TN_ERR_NOMEM, "blocks: out of memory");
    uint32_t nb = 1;
    while (nb < (uint32_t)n_blocks * 2u)
        nb <<= 1;
    size_t n = (size_t)n_blocks;
    bm->n_blocks = n_blocks;
    bm->block_size = block_size;
    bm->mask = nb - 1;
    bm->ref = calloc(n, sizeof(int32_t));
    bm->hash = calloc(n, sizeof(uint64_t));
    bm->hashed = calloc(n, sizeof(bool));
    bm->tokens = malloc(n * (size_t)block_size * sizeof(int32_t));
    bm->prev = malloc(n * sizeof(int32_t));
    bm->next = malloc(n * sizeof(int32_t));
    bm->bucket = malloc((size_t)nb * sizeof(int32_t));
    bm->hnext = malloc(n * sizeof(int32_t));
    if (!bm->ref || !bm->hash || !bm->hashed || !bm->tokens || !bm->prev || !bm->next || !bm->bucket ||
        !bm->hnext) {
        tn_blocks_free(bm);
        return tn__err(TN_ERR_NOMEM, "blocks: out of memory for %d blocks", n_blocks);
    }
    for (uint32_t i = 0; i < nb; i++)
        bm->bucket[i] = -1;
    for (int32_t b = 0; b < n_blocks; b++) {
        bm->prev[b] = b - 1;
        bm->next[b] = b + 1 < n_blocks ? b + 1 : -1;
        bm->hnext[b] = -1;
    }
    bm->head = 0;
    bm->tail = n_blocks - 1;
    bm->n_free = n_blocks;
    *out = bm;
    return TN_OK;
}

void tn_blocks_free(tn_blocks *bm)
{
    if (!bm)
        return;
    free(bm->ref);
    free(bm->hash);
    free(bm->hashed);
    free(bm->tokens);
    free(bm->prev);
    free(bm->next);
    free(bm->bucket);
    free(bm->hnext);
    free(bm);
}

int32_t tn_blocks_n_blocks(const tn_blocks *bm) { return bm->n_blocks; }
int32_t tn_blocks_block_size(const tn_blocks *bm) { return bm->block_size; }
int32_t tn_blocks_n_free(const tn_blocks *bm) { return bm->n_free; }
int32_t tn_blocks_n_cached(const tn_blocks *bm) { return bm->n_cached; }
int32_t tn_blocks_refcount(const tn_blocks *bm, int32_t b) { return bm->ref[b]; }
bool tn_blocks_has_hash(const tn_blocks *bm, int32_t b) { return bm->hashed[b]; }

/* ==========================================================================
 * The free list
 * ======================================================================== */

static void list_unlink(tn_blocks *bm, int32_t b)
{
    int32_t p = bm->prev[b], n = bm->next[b];
    if (p >= 0)
        bm->next[p] = n;
    else
        bm->head = n;
    if (n >= 0)
        bm->prev[n] = p;
    else
        bm->tail = p;
    bm->prev[b] = bm->next[b] = -1;
    bm->n_free--;
    if (bm->hashed[b])
        bm->n_cached--;
}

static void list_push_head(tn_blocks *bm, int32_t b)
{
    bm->prev[b] = -1;
    bm->next[b] = bm->head;
    if (bm->head >= 0)
        bm->prev[bm->head] = b;
    else
        bm->tail = b;
    bm->head = b;
    bm->n_free++;
}

static void list_push_tail(tn_blocks *bm, int32_t b)
{
    bm->next[b] = -1;
    bm->prev[b] = bm->tail;
    if (bm->tail >= 0)
        bm->next[bm->tail] = b;
    else
        bm->head = b;
    bm->tail = b;
    bm->n_free++;
    bm->n_cached++;
}

/* ==========================================================================
 * Hash table
 * ======================================================================== */

static uint32_t bucket_of(const tn_blocks *bm, uint64_t h) { return (uint32_t)(h ^ (h >> 32)) & bm->mask; }

static void hash_remove(tn_blocks *bm, int32_t b)
{
    int32_t *link = &bm->bucket[bucket_of(bm, bm->hash[b])];
    while (*link != b)
        link = &bm->hnext[*link];
    *link = bm->hnext[b];
    bm->hnext[b] = -1;
    bm->hashed[b] = false;
}

/* splitmix64's finalizer: a cheap, well-mixing 64-bit permutation. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Contract in blocks.h. */
uint64_t tn_blocks_hash(uint64_t parent, const int32_t *tokens, int32_t n)
{
    uint64_t h = mix64(parent + 0x9e3779b97f4a7c15ull);
    for (int32_t i = 0; i < n; i++)
        h = mix64(h ^ ((uint64_t)(uint32_t)tokens[i] + 0x632be59bd9b4e019ull * (uint64_t)(i + 1)));
    return h;
}

/* Contract in blocks.h. */
int32_t tn_blocks_lookup(const tn_blocks *bm, uint64_t h, const int32_t *tokens)
{
    size_t bytes = (size_t)bm->block_size * sizeof(int32_t);
    for (int32_t b = bm->bucket[bucket_of(bm, h)]; b >= 0; b = bm->hnext[b])
        if (bm->hash[b] == h && !memcmp(bm->tokens + (size_t)b * bm->block_size, tokens, bytes))
            return b;
    return -1;
}

/* Contract in blocks.h. */
bool tn_blocks_set_hash(tn_blocks *bm, int32_t b, uint64_t h, const int32_t *tokens)
{
    if (bm->hashed[b])
        return bm->hash[b] == h;
    for (int32_t o = bm->bucket[bucket_of(bm, h)]; o >= 0; o = bm->hnext[o])
        if (bm->hash[o] == h)
            return false;
    uint32_t k = bucket_of(bm, h);
    bm->hash[b] = h;
    bm->hashed[b] = true;
    bm->hnext[b] = bm->bucket[k];
    bm->bucket[k] = b;
    memcpy(bm->tokens + (size_t)b * bm->block_size, tokens, (size_t)bm->block_size * sizeof(int32_t));
    return true;
}

/* ==========================================================================
 * Allocation and reference counts
 * ======================================================================== */

/* Contract in blocks.h. */
int32_t tn_blocks_alloc(tn_blocks *bm)
{
    int32_t b = bm->head;
    if (b < 0)
        return -1;
    list_unlink(bm, b);
    if (bm->hashed[b])
        hash_remove(bm, b); /* eviction */
    bm->ref[b] = 1;
    return b;
}

/* Contract in blocks.h. */
void tn_blocks_ref(tn_blocks *bm, int32_t b)
{
    if (bm->ref[b]++ == 0)
        list_unlink(bm, b);
}

/* Contract in blocks.h. */
void tn_blocks_unref(tn_blocks *bm, int32_t b)
{
    if (--bm->ref[b] > 0)
        return;
    if (bm->hashed[b])
        list_push_tail(bm, b);
    else
        list_push_head(bm, b);
}
