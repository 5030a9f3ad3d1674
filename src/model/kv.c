/*
 * kv.c — the KV cache of the dense decoder: F32 K and V per layer and slot,
 * and which (sequence, position) each slot holds.
 *
 * Key idea: the caller chooses slots (a paged block manager above maps
 * (sequence, position) to slots; `tern run` uses slot = pos), so the cache
 * itself only has to answer one question quickly, once per forward call:
 * "which cells does this sequence hold, in position order?" Each sequence
 * keeps its cells on a doubly linked list sorted by position.
 *
 * HOW IT WORKS
 *
 * Insertion walks the list backwards from the tail until it finds a cell
 * with a lower position: a decode token or a prefill chunk appends, which is
 * O(1) per token. Removal unlinks in O(1); truncation pops from the tail;
 * dropping a whole sequence walks only that sequence's cells. Per forward
 * call the lists of the sequences in the batch are copied into one flat
 * array (tn__kv_apply_batch), grouped by sequence, so attention scans a
 * contiguous run of slots per token without touching the lists.
 *
 * EDGE CASES
 *
 * A slot written by a batch may hold a cell of another (or the same)
 * sequence: that cell is forgotten first. A (sequence, position) pair may
 * live in at most one cell, so the visiting order is well defined; a batch
 * that would create a second copy is rejected before anything is written
 * (rewind with tn_kv_seq_truncate, or reuse the same slot).
 *
 * TABLE MODE (tn_kv_seq_set_slots)
 *
 * With prefix caching one slot belongs to several sequences at once (a full
 * block of a shared prompt prefix sits in every sharing sequence's block
 * table), which a cell's single (sequence, position) cannot say. A sequence
 * in table mode therefore bypasses the cells: the caller hands over its
 * position -> slot array (borrowed), the batch check verifies that each of
 * its tokens writes slots[pos], and the flattening copies slots[0..] instead
 * of walking a list. Attention reads the same flat layout either way, so
 * the visiting order (increasing position) and hence the arithmetic are the
 * same as in the ordinary mode. The flat layout is sized n_slots (list runs
 * are distinct cells) plus the tables' total; set_slots grows it
 * geometrically when the total exceeds the capacity.
 *
 * STORAGE TYPES (tn_kv_new_typed)
 *
 * A cell's K (and V) of one layer is n_head_kv rows of head_dim values:
 *
 *   F32   head_dim floats per row                 4 * head_dim bytes
 *   F16   head_dim IEEE halves per row            2 * head_dim bytes
 *   Q8    head_dim int8 in kx/vx, plus one f32    head_dim + 4 bytes
 *         scale per row in ks/vs: x = d * q, d = max|x| / 127
 *
 * Rows are converted once when written (tn__kv_store) and widened on the
 * fly when read (kern/kvrows.h), so a cell's stored bits depend only on
 * that token's K/V: batch invariance holds for every type. Slots are the
 * same for every type, so the paged block manager and the prefix cache
 * above do not know the difference.
 *
 * LIMITATIONS
 *
 * Latent attention (deepseek2) caches F32 only. Inserting far before the tail of a long sequence
 * costs a walk over the cells after it.
 */
#include "model/model_int.h"
#include "kern/attn.h"
#include "kern/kvrows.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* ==========================================================================
 * Lifetime
 * ======================================================================== */

/* Creates a cache of n_slots cells for up to n_seq_max sequences, shaped for
 * model m (which must outlive nothing: only its sizes are read). All cells
 * start free. TN_ERR_INVALID for non-positive sizes, TN_ERR_NOMEM if the
 * buffers cannot be allocated (*out is NULL then). */
tn_status tn_kv_new(const tn_model *m, int32_t n_slots, int32_t n_seq_max, tn_kv_cache **out)
{
    return tn_kv_new_typed(m, n_slots, n_seq_max, TN_KV_F32, out);
}

static const char *const type_names[] = {[TN_KV_F32] = "f32", [TN_KV_F16] = "f16", [TN_KV_Q8] = "q8"};

const char *tn_kv_type_name(tn_kv_type t)
{
    return (unsigned)t < TN_ARRAY_LEN(type_names) ? type_names[t] : "?";
}

bool tn_kv_type_from_name(const char *name, tn_kv_type *out)
{
    for (size_t t = 0; name && t < TN_ARRAY_LEN(type_names); t++) {
        const char *a = type_names[t], *b = name;
        while (*a && *a == tolower((unsigned char)*b))
            a++, b++;
        if (!*a && !*b) {
            *out = (tn_kv_type)t;
            return true;
        }
    }
    return false;
}

tn_kv_type tn_kv_get_type(const tn_kv_cache *kv) { return kv->type; }

/* Per layer and token: K and V, each n_head_kv rows (MLA: one row of kv_dim, K only). */
size_t tn_kv_bytes_per_token(const tn_kv_cache *kv)
{
    const size_t rows = (size_t)(kv->kv_dim / kv->head_dim), d = (size_t)kv->kv_dim;
    size_t one; /* K of one layer */
    switch (kv->type) {
    case TN_KV_F16: one = 2 * d; break;
    case TN_KV_Q8: one = d + 4 * rows; break;
    default: one = 4 * d; break;
    }
    return (size_t)kv->n_layer * one * (kv->has_v ? 2 : 1);
}

/* Contract in model.h. Sizes as tn_kv_new; `type` picks the storage. */
tn_status tn_kv_new_typed(const tn_model *m, int32_t n_slots, int32_t n_seq_max, tn_kv_type type,
                          tn_kv_cache **out)
{
    *out = NULL;
    if (!m)
        return tn__err(TN_ERR_INVALID, "kv: model is NULL");
    if ((unsigned)type >= TN_ARRAY_LEN(type_names))
        return tn__err(TN_ERR_INVALID, "kv: unknown cache type %d", (int)type);
    if (type != TN_KV_F32 && m->hp.kv_lora_rank > 0)
        return tn__err(TN_ERR_UNSUPPORTED, "kv: a %s cache is not supported for latent attention (%s): use f32",
                       type_names[type], m->hp.arch_name);
    if (n_slots <= 0 || n_seq_max <= 0)
        return tn__err(TN_ERR_INVALID, "kv: n_slots %d and n_seq_max %d must be positive", n_slots, n_seq_max);
    const tn_hparams *hp = &m->hp;
    /* MLA (deepseek2) caches the latent and the shared RoPE key, and no V. */
    uint64_t kv_dim = hp->kv_lora_rank > 0 ? (uint64_t)hp->kv_lora_rank + (uint64_t)hp->n_rot
                                           : (uint64_t)hp->n_head_kv * (uint64_t)hp->head_dim;
    uint64_t n_floats, bytes;
    if (!tn_mul_u64((uint64_t)hp->n_layer * (uint64_t)n_slots, kv_dim, &n_floats) ||
        !tn_mul_u64(n_floats, sizeof(float), &bytes) || bytes > (uint64_t)SIZE_MAX / 2)
        return tn__err(TN_ERR_NOMEM, "kv: %d slots x %d layers x %llu floats overflows", n_slots, hp->n_layer,
                       (unsigned long long)kv_dim);

    tn_kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv)
        return tn__err(TN_ERR_NOMEM, "kv: out of memory");
    kv->n_layer = hp->n_layer;
    kv->n_slots = n_slots;
    kv->n_seq_max = n_seq_max;
    kv->kv_dim = (int32_t)kv_dim;
    kv->head_dim = hp->head_dim;
    kv->n_score_rows = tn_n_cores();

    size_t ns = (size_t)n_slots, nq = (size_t)n_seq_max;
    kv->type = type;
    kv->has_v = hp->kv_lora_rank == 0;
    bool typed_ok = true;
    if (type == TN_KV_F32) {
        kv->k = tn_alloc_aligned((size_t)bytes, 64);
        kv->v = tn_alloc_aligned(hp->kv_lora_rank > 0 ? 64 : (size_t)bytes, 64);
    } else {
        size_t esz = type == TN_KV_F16 ? 2 : 1, nrows = (size_t)n_floats / (size_t)hp->head_dim;
        kv->kx = tn_alloc_aligned((size_t)n_floats * esz, 64);
        kv->vx = tn_alloc_aligned((size_t)n_floats * esz, 64);
        typed_ok = kv->kx && kv->vx;
        if (type == TN_KV_Q8) {
            kv->ks = tn_alloc_aligned(nrows * sizeof(float), 64);
            kv->vs = tn_alloc_aligned(nrows * sizeof(float), 64);
            typed_ok = typed_ok && kv->ks && kv->vs;
        }
        /* k/v stay NULL: the F32 paths below check typed_ok instead. */
    }
    kv->cell_seq = malloc(ns * sizeof(int32_t));
    kv->cell_pos = malloc(ns * sizeof(int32_t));
    kv->cell_prev = malloc(ns * sizeof(int32_t));
    kv->cell_next = malloc(ns * sizeof(int32_t));
    kv->seq_head = malloc(nq * sizeof(int32_t));
    kv->seq_tail = malloc(nq * sizeof(int32_t));
    kv->seq_n = malloc(nq * sizeof(int32_t));
    kv->slot_mark = calloc(ns, sizeof(uint32_t));
    kv->seq_mark = calloc(nq, sizeof(uint32_t));
    kv->keys = malloc(ns * sizeof(int64_t));
    kv->seq_off = malloc(nq * sizeof(int32_t));
    kv->order_slot = malloc(ns * sizeof(int32_t));
    kv->order_pos = malloc(ns * sizeof(int32_t));
    kv->order_cap = n_slots;
    kv->tab = calloc(nq, sizeof(const int32_t *));
    kv->tab_n = calloc(nq, sizeof(int32_t));
    /* attention's per-thread scratch: kern/attn.h's tiles, rows <= kv_dim wide */
    kv->score_row = (tn_attn_scratch_floats(kv->kv_dim, kv->kv_dim) + 15) & ~(size_t)15;
    kv->scores = tn_alloc_aligned((size_t)kv->n_score_rows * kv->score_row * sizeof(float), 64);
    if ((type == TN_KV_F32 ? !kv->k || !kv->v : !typed_ok) || !kv->cell_seq || !kv->cell_pos || !kv->cell_prev || !kv->cell_next ||
        !kv->seq_head || !kv->seq_tail || !kv->seq_n || !kv->slot_mark || !kv->seq_mark || !kv->keys ||
        !kv->seq_off || !kv->order_slot || !kv->order_pos || !kv->tab || !kv->tab_n || !kv->scores) {
        tn_kv_free(kv);
        return tn__err(TN_ERR_NOMEM, "kv: out of memory for %d slots (%llu bytes of K and V each)", n_slots,
                       (unsigned long long)bytes);
    }
    tn_kv_clear(kv);
    *out = kv;
    return TN_OK;
}

/* Frees the cache. NULL is a no-op. */
void tn_kv_free(tn_kv_cache *kv)
{
    if (!kv)
        return;
    tn_free_aligned(kv->k);
    tn_free_aligned(kv->v);
    tn_free_aligned(kv->kx);
    tn_free_aligned(kv->vx);
    tn_free_aligned(kv->ks);
    tn_free_aligned(kv->vs);
    free(kv->cell_seq);
    free(kv->cell_pos);
    free(kv->cell_prev);
    free(kv->cell_next);
    free(kv->seq_head);
    free(kv->seq_tail);
    free(kv->seq_n);
    free(kv->slot_mark);
    free(kv->seq_mark);
    free(kv->keys);
    free(kv->seq_off);
    free(kv->order_slot);
    free(kv->order_pos);
    free(kv->tab);
    free(kv->tab_n);
    tn_free_aligned(kv->scores);
    free(kv);
}

/* Number of cells. */
int32_t tn_kv_n_slots(const tn_kv_cache *kv) { return kv->n_slots; }

/* ==========================================================================
 * The per-sequence lists
 * ======================================================================== */

static void cell_free(tn_kv_cache *kv, int32_t c)
{
    kv->cell_seq[c] = -1;
    kv->cell_pos[c] = -1;
    kv->cell_prev[c] = -1;
    kv->cell_next[c] = -1;
}

/* Takes cell c off its sequence's list and marks it free. */
static void cell_unlink(tn_kv_cache *kv, int32_t c)
{
    int32_t s = kv->cell_seq[c];
    int32_t p = kv->cell_prev[c], n = kv->cell_next[c];
    if (p >= 0)
        kv->cell_next[p] = n;
    else
        kv->seq_head[s] = n;
    if (n >= 0)
        kv->cell_prev[n] = p;
    else
        kv->seq_tail[s] = p;
    kv->seq_n[s]--;
    cell_free(kv, c);
}

/* Puts free cell c on sequence s's list at position pos, keeping the list
 * sorted; (s, pos) must not be on the list already. */
static void cell_link(tn_kv_cache *kv, int32_t c, int32_t s, int32_t pos)
{
    int32_t after = kv->seq_tail[s];
    while (after >= 0 && kv->cell_pos[after] > pos)
        after = kv->cell_prev[after];
    int32_t before = after >= 0 ? kv->cell_next[after] : kv->seq_head[s];
    kv->cell_seq[c] = s;
    kv->cell_pos[c] = pos;
    kv->cell_prev[c] = after;
    kv->cell_next[c] = before;
    if (after >= 0)
        kv->cell_next[after] = c;
    else
        kv->seq_head[s] = c;
    if (before >= 0)
        kv->cell_prev[before] = c;
    else
        kv->seq_tail[s] = c;
    kv->seq_n[s]++;
}

/* The cell holding (s, pos), or -1. Walks from the tail: O(1) for appends. */
static int32_t seq_find(const tn_kv_cache *kv, int32_t s, int32_t pos)
{
    int32_t c = kv->seq_tail[s];
    while (c >= 0 && kv->cell_pos[c] > pos)
        c = kv->cell_prev[c];
    return c >= 0 && kv->cell_pos[c] == pos ? c : -1;
}

/* Takes seq out of table mode. */
static void tab_drop(tn_kv_cache *kv, int32_t seq)
{
    kv->tab_total -= kv->tab_n[seq];
    kv->tab[seq] = NULL;
    kv->tab_n[seq] = 0;
}

/* Forgets every cell of sequence seq (and its table). Out-of-range seq is a
 * no-op. */
void tn_kv_seq_rm(tn_kv_cache *kv, int32_t seq)
{
    if (!kv || seq < 0 || seq >= kv->n_seq_max)
        return;
    tab_drop(kv, seq);
    for (int32_t c = kv->seq_head[seq]; c >= 0;) {
        int32_t next = kv->cell_next[c];
        cell_free(kv, c);
        c = next;
    }
    kv->seq_head[seq] = kv->seq_tail[seq] = -1;
    kv->seq_n[seq] = 0;
}

/* Forgets the cells of seq at positions >= pos (in table mode: shortens
 * the table). Out-of-range seq is a no-op. */
void tn_kv_seq_truncate(tn_kv_cache *kv, int32_t seq, int32_t pos)
{
    if (!kv || seq < 0 || seq >= kv->n_seq_max)
        return;
    if (kv->tab[seq] && pos < kv->tab_n[seq]) {
        int32_t keep = TN_MAX(pos, 0);
        kv->tab_total -= kv->tab_n[seq] - keep;
        kv->tab_n[seq] = keep;
        if (keep == 0)
            kv->tab[seq] = NULL;
    }
    while (kv->seq_tail[seq] >= 0 && kv->cell_pos[kv->seq_tail[seq]] >= pos)
        cell_unlink(kv, kv->seq_tail[seq]);
}

/* Forgets everything (K/V bytes are left as they are: free cells are never read). */
void tn_kv_clear(tn_kv_cache *kv)
{
    if (!kv)
        return;
    for (int32_t c = 0; c < kv->n_slots; c++)
        cell_free(kv, c);
    for (int32_t s = 0; s < kv->n_seq_max; s++) {
        kv->seq_head[s] = kv->seq_tail[s] = -1;
        kv->seq_n[s] = 0;
        kv->tab[s] = NULL;
        kv->tab_n[s] = 0;
    }
    kv->tab_total = 0;
}

/* Contract in model.h. */
tn_status tn_kv_seq_set_slots(tn_kv_cache *kv, int32_t seq, const int32_t *slots, int32_t n)
{
    if (!kv || seq < 0 || seq >= kv->n_seq_max)
        return tn__err(TN_ERR_INVALID, "kv: set_slots: seq %d out of range [0, %d)", seq, kv ? kv->n_seq_max : 0);
    if (n < 0 || n > kv->n_slots || (n > 0 && !slots))
        return tn__err(TN_ERR_INVALID, "kv: set_slots: seq %d: %d slots (cache has %d)%s", seq, n, kv->n_slots,
                       n > 0 && !slots ? " but the array is NULL" : "");
    for (int32_t p = 0; p < n; p++)
        if (slots[p] < 0 || slots[p] >= kv->n_slots)
            return tn__err(TN_ERR_INVALID, "kv: set_slots: seq %d pos %d: slot %d out of range [0, %d)", seq, p,
                           slots[p], kv->n_slots);
    int64_t total = kv->tab_total - kv->tab_n[seq] + n;
    if (kv->n_slots + total > kv->order_cap) {
        int64_t cap = TN_MAX(kv->n_slots + total, 2 * kv->order_cap);
        int32_t *os = realloc(kv->order_slot, (size_t)cap * sizeof(int32_t));
        if (os)
            kv->order_slot = os;
        int32_t *op = os ? realloc(kv->order_pos, (size_t)cap * sizeof(int32_t)) : NULL;
        if (!op)
            return tn__err(TN_ERR_NOMEM, "kv: set_slots: out of memory for %lld table entries", (long long)cap);
        kv->order_pos = op;
        kv->order_cap = cap;
    }
    if (kv->seq_head[seq] >= 0 && n > 0) {
        for (int32_t c = kv->seq_head[seq]; c >= 0;) {
            int32_t next = kv->cell_next[c];
            cell_free(kv, c);
            c = next;
        }
        kv->seq_head[seq] = kv->seq_tail[seq] = -1;
        kv->seq_n[seq] = 0;
    }
    kv->tab_total = total;
    kv->tab[seq] = n > 0 ? slots : NULL;
    kv->tab_n[seq] = n;
    return TN_OK;
}

/* ==========================================================================
 * Batch bookkeeping
 * ======================================================================== */

/* Starts a new call's marks; clears them on the (rare) wrap-around. */
static uint32_t next_stamp(tn_kv_cache *kv)
{
    if (++kv->stamp == 0) {
        memset(kv->slot_mark, 0, (size_t)kv->n_slots * sizeof(uint32_t));
        memset(kv->seq_mark, 0, (size_t)kv->n_seq_max * sizeof(uint32_t));
        kv->stamp = 1;
    }
    return kv->stamp;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Contract in model_int.h: range checks, then duplicate slots (marks),
 * duplicate (seq, pos) within the batch (sorted keys), then (seq, pos)
 * already held by a cell the batch does not overwrite. Writes only scratch. */
tn_status tn__kv_check_batch(tn_kv_cache *kv, const tn_batch *b)
{
    uint32_t st = next_stamp(kv);
    int32_t n = b->n_tokens;
    for (int32_t i = 0; i < n; i++) {
        int32_t s = b->seq_id[i], c = b->kv_slot[i];
        if (s < 0 || s >= kv->n_seq_max)
            return tn__err(TN_ERR_INVALID, "batch token %d: seq_id %d out of range [0, %d)", i, s, kv->n_seq_max);
        if (c < 0 || c >= kv->n_slots)
            return tn__err(TN_ERR_INVALID, "batch token %d: kv_slot %d out of range [0, %d)", i, c, kv->n_slots);
        if (kv->slot_mark[c] == st) {
            int32_t j = 0;
            while (b->kv_slot[j] != c)
                j++;
            return tn__err(TN_ERR_INVALID, "batch token %d: kv_slot %d is also used by token %d", i, c, j);
        }
        kv->slot_mark[c] = st;
    }
    /* Slots are distinct and in range, so n <= n_slots fits in keys. */
    for (int32_t i = 0; i < n; i++)
        kv->keys[i] = (int64_t)b->seq_id[i] << 32 | (int64_t)(uint32_t)b->pos[i];
    qsort(kv->keys, (size_t)n, sizeof(int64_t), cmp_i64);
    for (int32_t k = 1; k < n; k++) {
        if (kv->keys[k] != kv->keys[k - 1])
            continue;
        int32_t s = (int32_t)(kv->keys[k] >> 32), p = (int32_t)(kv->keys[k] & 0xffffffff);
        int32_t i = -1, j = -1;
        for (int32_t t = 0; t < n; t++) {
            if (b->seq_id[t] == s && b->pos[t] == p) {
                if (i < 0)
                    i = t;
                else if (j < 0)
                    j = t;
            }
        }
        return tn__err(TN_ERR_INVALID, "batch token %d: pos %d of seq_id %d is also given by token %d", j, p, s, i);
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t s = b->seq_id[i];
        if (kv->tab[s]) {
            if (b->pos[i] >= kv->tab_n[s] || kv->tab[s][b->pos[i]] != b->kv_slot[i])
                return tn__err(TN_ERR_INVALID,
                               "batch token %d: seq_id %d is in table mode and its table %s (kv_slot %d given)",
                               i, s, b->pos[i] >= kv->tab_n[s] ? "does not reach this pos" : "names another slot",
                               b->kv_slot[i]);
            continue;
        }
        int32_t c = seq_find(kv, b->seq_id[i], b->pos[i]);
        if (c >= 0 && kv->slot_mark[c] != st)
            return tn__err(TN_ERR_INVALID,
                           "batch token %d: pos %d of seq_id %d is already in kv_slot %d (truncate the sequence "
                           "or reuse that slot)",
                           i, b->pos[i], b->seq_id[i], c);
    }
    return TN_OK;
}

/* Contract in model_int.h. Cost: O(n_tokens) list updates for appends, plus
 * one walk over each batch sequence's cells, plus a binary search per token. */
void tn__kv_apply_batch(tn_kv_cache *kv, const tn_batch *b, int32_t *vis_off, int32_t *vis_n)
{
    int32_t n = b->n_tokens;
    /* Forget whatever the batch's slots held, then file the new cells. */
    for (int32_t i = 0; i < n; i++)
        if (kv->cell_seq[b->kv_slot[i]] >= 0)
            cell_unlink(kv, b->kv_slot[i]);
    for (int32_t i = 0; i < n; i++)
        if (!kv->tab[b->seq_id[i]])
            cell_link(kv, b->kv_slot[i], b->seq_id[i], b->pos[i]);

    /* Flatten each distinct sequence of the batch once. Cells are distinct
     * slots, so the list runs together hold at most n_slots entries; table
     * runs at most tab_total more (order_cap covers both). */
    uint32_t st = next_stamp(kv);
    int32_t used = 0;
    for (int32_t i = 0; i < n; i++) {
        int32_t s = b->seq_id[i];
        if (kv->seq_mark[s] == st)
            continue;
        kv->seq_mark[s] = st;
        kv->seq_off[s] = used;
        if (kv->tab[s]) {
            memcpy(kv->order_slot + used, kv->tab[s], (size_t)kv->tab_n[s] * sizeof(int32_t));
            for (int32_t p = 0; p < kv->tab_n[s]; p++)
                kv->order_pos[used + p] = p;
            used += kv->tab_n[s];
            continue;
        }
        for (int32_t c = kv->seq_head[s]; c >= 0; c = kv->cell_next[c]) {
            kv->order_slot[used] = c;
            kv->order_pos[used] = kv->cell_pos[c];
            used++;
        }
    }

    /* Token i sees the prefix of its run with positions <= its own: the
     * first position above it, found by binary search. */
    for (int32_t i = 0; i < n; i++) {
        int32_t s = b->seq_id[i], off = kv->seq_off[s];
        if (kv->tab[s]) {
            vis_off[i] = off;
            vis_n[i] = b->pos[i] + 1;
            continue;
        }
        int32_t lo = 0, hi = kv->seq_n[s];
        const int32_t *pos = kv->order_pos + off;
        while (lo < hi) {
            int32_t mid = lo + (hi - lo) / 2;
            if (pos[mid] <= b->pos[i])
                lo = mid + 1;
            else
                hi = mid;
        }
        vis_off[i] = off;
        vis_n[i] = lo;
    }
}

/* ==========================================================================
 * Writing a cell
 * ======================================================================== */

/* Contract in model_int.h. Q8 rows are per K/V head (head_dim values). */
void tn__kv_store(tn_kv_cache *kv, int32_t layer, int32_t slot, const float *k, const float *v)
{
    const size_t d = (size_t)kv->kv_dim, cell = (size_t)layer * kv->n_slots + (size_t)slot;
    switch (kv->type) {
    case TN_KV_F32:
        memcpy(kv->k + cell * d, k, d * sizeof(float));
        memcpy(kv->v + cell * d, v, d * sizeof(float));
        break;
    case TN_KV_F16: {
        uint16_t *kc = (uint16_t *)kv->kx + cell * d, *vc = (uint16_t *)kv->vx + cell * d;
        for (size_t i = 0; i < d; i++) {
            kc[i] = tn_fp32_to_fp16(k[i]);
            vc[i] = tn_fp32_to_fp16(v[i]);
        }
        break;
    }
    case TN_KV_Q8: {
        const size_t hd = (size_t)kv->head_dim, nh = d / hd;
        int8_t *kc = (int8_t *)kv->kx + cell * d, *vc = (int8_t *)kv->vx + cell * d;
        for (size_t h = 0; h < nh; h++) {
            tn_quantize_row_kv_q8(k + h * hd, kc + h * hd, kv->ks + cell * nh + h, (int64_t)hd);
            tn_quantize_row_kv_q8(v + h * hd, vc + h * hd, kv->vs + cell * nh + h, (int64_t)hd);
        }
        break;
    }
    }
}
