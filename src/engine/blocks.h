/*
 * blocks — the paged KV cache's block manager: allocation, reference
 * counts, and the prefix cache (a hash per full block, LRU eviction).
 *
 * Key idea: the KV cache's slots are cut into n_blocks blocks of block_size
 * consecutive slots (block b holds slots b*block_size ..+ block_size). A
 * sequence owns a block table (its positions p live in block
 * table[p / block_size] at offset p % block_size); a block may appear in
 * several tables (a shared prompt prefix) and counts its owners. A FULL
 * block can be given a hash that identifies its content — the chain hash of
 * every token from position 0 to its end, so equal hashes mean equal
 * prefixes, not just equal blocks — and a later sequence that starts with
 * the same tokens takes the block instead of recomputing it. A block whose
 * last owner lets go keeps its K/V and its hash: it is "cached free", and
 * stays findable until allocation needs the room (LRU eviction, see the
 * essay in blocks.c).
 *
 * Pure bookkeeping: no K/V bytes live here, no clock, no threads. The
 * engine thread owns it (through the scheduler).
 */
#ifndef TERN_ENGINE_BLOCKS_H
#define TERN_ENGINE_BLOCKS_H

#include "base/base.h"

typedef struct tn_blocks tn_blocks;

/* Creates a manager of n_blocks blocks of block_size tokens, all free.
 * TN_ERR_INVALID for non-positive sizes, TN_ERR_NOMEM. */
tn_status tn_blocks_new(int32_t n_blocks, int32_t block_size, tn_blocks **out) TN_MUST_CHECK;
void tn_blocks_free(tn_blocks *bm);

int32_t tn_blocks_n_blocks(const tn_blocks *bm);
int32_t tn_blocks_block_size(const tn_blocks *bm);
/* Blocks with no owner (including cached ones, which allocation may evict). */
int32_t tn_blocks_n_free(const tn_blocks *bm);
/* Free blocks that still carry a hash (findable by tn_blocks_lookup). */
int32_t tn_blocks_n_cached(const tn_blocks *bm);
/* Owners of block b (0 when free). */
int32_t tn_blocks_refcount(const tn_blocks *bm, int32_t b);
/* Whether block b carries a hash. */
bool tn_blocks_has_hash(const tn_blocks *bm, int32_t b);

/* Takes a free block with refcount 1 and no hash, or returns -1 when every
 * block has an owner. Prefers never-hashed free blocks; otherwise evicts the
 * least recently released cached block (its hash is forgotten). */
int32_t tn_blocks_alloc(tn_blocks *bm);

/* Adds an owner to block b (which may be free and cached: it is revived,
 * leaving the free list). */
void tn_blocks_ref(tn_blocks *bm, int32_t b);

/* Removes an owner of block b (refcount must be > 0). At zero the block is
 * free: with a hash it joins the LRU end of the free list (most recently
 * used, evicted last); without one it is handed out first. */
void tn_blocks_unref(tn_blocks *bm, int32_t b);

/* The chain hash of a full block: of its tokens (block_size of them) and
 * the hash of the block before it (0 for the first block). */
uint64_t tn_blocks_hash(uint64_t parent, const int32_t *tokens, int32_t n);

/* Gives full block b the hash h (its tokens are remembered to rule out
 * collisions). If another block already carries h the call does nothing and
 * returns false (the first copy stays the one found); true otherwise. */
bool tn_blocks_set_hash(tn_blocks *bm, int32_t b, uint64_t h, const int32_t *tokens);

/* The block carrying hash h whose tokens equal tokens[0..block_size), or
 * -1. Takes no reference: follow with tn_blocks_ref to keep it. */
int32_t tn_blocks_lookup(const tn_blocks *bm, uint64_t h, const int32_t *tokens);

#endif /* TERN_ENGINE_BLOCKS_H */
