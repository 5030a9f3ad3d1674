/*
 * spm.c — the SentencePiece-style encoder ("llama" vocabularies).
 *
 * Key idea: start from single UTF-8 characters and greedily merge the
 * adjacent pair whose concatenation is a vocabulary piece with the highest
 * score, using a priority queue of candidate pairs with lazy deletion; what
 * is left that is not a piece falls back to <0xXX> byte tokens. This is
 * llama.cpp's SPM tokenizer (and SentencePiece's BPE model), and it
 * reproduces their ids exactly.
 */
#include "tok/tok_int.h"

#include <stdlib.h>

/* A symbol: a span of the escaped text, linked to its live neighbours. A
 * symbol merged into its left neighbour gets n = 0 and is skipped. */
typedef struct sym {
    int32_t prev, next; /* -1 at the ends */
    uint32_t start, n;  /* bytes text[start, start + n) */
    int32_t id;         /* the piece's id once merged; -1 before */
} sym;

/* A candidate merge of symbol `left` with its right neighbour. `size` is
 * the byte length of the pair when it was queued: if either side has
 * changed since, the sizes no longer add up and the entry is stale. */
typedef struct bigram {
    float score;
    int32_t left;
    uint32_t size;
    int32_t id; /* the pair's piece */
} bigram;

/* Heap order: higher score first; on a tie the leftmost pair first. */
static inline bool before(const bigram *a, const bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct heap {
    bigram *a;
    size_t n, cap;
} heap;

static inline bool heap_push(heap *h, bigram b)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        bigram *a = realloc(h->a, cap * sizeof *a);
        if (!a)
            return false;
        h->a = a;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&b, &h->a[p]))
            break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = b;
    return true;
}

static bigram heap_pop(heap *h)
{
    bigram top = h->a[0], last = h->a[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && before(&h->a[c + 1], &h->a[c]))
            c++;
        if (!before(&h->a[c], &last))
            break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (n > 0)
        h->a[i] = last;
    return top;
}

/* Byte length of the UTF-8 sequence a lead byte announces, by its high
 * nibble, as llama.cpp splits: continuation and invalid bytes count as 1,
 * 0xF8..0xFF as 4. The caller clips the length at the end of the text. */
static const uint8_t UTF8_LEN[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};

/* Queues symbols l and r (adjacent, both live) if their concatenation is
 * a piece. */
static inline bool try_pair(const tn_vocab *v, const char *text, const sym *s, heap *h, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return true;
    uint32_t size = s[l].n + s[r].n;
    int32_t id = tn__vocab_find(v, text + s[l].start, size);
    if (id < 0)
        return true;
    return heap_push(h, (bigram){v->scores[id], l, size, id});
}

/* Steps 2-4 of the merge loop (below) on symbols [a, b), linked among
 * themselves; appends their ids to out. */
static tn_status merge_range(const tn_vocab *v, const char *e, sym *s, int32_t a, int32_t b, heap *h,
                             tn__tok_out *out)
{
    /* 2. seed the heap with every adjacent pair that is a piece */
    h->n = 0;
    for (int32_t i = a + 1; i < b; i++)
        if (!try_pair(v, e, s, h, i - 1, i))
            goto nomem;

    /* 3. merge the best pair until none is left */
    while (h->n > 0) {
        bigram g = heap_pop(h);
        sym *l = &s[g.left];
        if (l->n == 0 || l->next < 0)
            continue;
        sym *r = &s[l->next];
        if (l->n + r->n != g.size)
            continue;
        l->n += r->n;
        l->id = g.id;
        r->n = 0;
        l->next = r->next;
        if (l->next >= 0)
            s[l->next].prev = g.left;
        if (!try_pair(v, e, s, h, l->prev, g.left) || !try_pair(v, e, s, h, g.left, l->next))
            goto nomem;
    }

    /* 4. emit pieces, or bytes for the characters that are not pieces */
    for (int32_t i = a; i >= 0; i = s[i].next) {
        const char *p = e + s[i].start;
        int32_t id = s[i].id >= 0 ? s[i].id : tn__vocab_find(v, p, s[i].n);
        if (id >= 0) {
            tn__tok_push(out, id);
            continue;
        }
        bool all = true;
        for (uint32_t j = 0; j < s[i].n; j++)
            all = all && v->byte_id[(unsigned char)p[j]] >= 0;
        if (all) {
            for (uint32_t j = 0; j < s[i].n; j++)
                tn__tok_push(out, v->byte_id[(unsigned char)p[j]]);
        } else if (v->unk >= 0) {
            tn__tok_push(out, v->unk);
        }
    }
    return TN_OK;
nomem:
    return tn__err(TN_ERR_NOMEM, "tok: out of memory for the merge queue (%zu entries)", h->cap);
}

/* Builds the symbols of the word e[ws, we) (at most k = we - ws >= 1 of
 * them) in sc->sym and merges them (steps 2-4). */
static tn_status merge_word(const tn_vocab *v, tn__spm_scratch *sc, const char *e, size_t ws, size_t we, heap *h,
                            tn__tok_out *out)
{
    size_t k = we - ws;
    if (sc->sym_cap < k) {
        size_t cap = sc->sym_cap ? sc->sym_cap : 64;
        while (cap < k)
            cap *= 2;
        sym *s = realloc(sc->sym, cap * sizeof *s);
        if (!s)
            return tn__err(TN_ERR_NOMEM, "tok: out of memory for %zu symbols", k);
        sc->sym = s;
        sc->sym_cap = cap;
    }
    sym *s = sc->sym;
    int32_t ns = 0;
    for (size_t off = ws; off < we; ns++) {
        size_t l = UTF8_LEN[(unsigned char)e[off] >> 4];
        if (l > we - off)
            l = we - off;
        s[ns] = (sym){ns - 1, ns + 1, (uint32_t)off, (uint32_t)l, -1};
        off += l;
    }
    s[ns - 1].next = -1;
    return merge_range(v, e, s, 0, ns, h, out);
}

/* Encodes the word e[ws, we) (we > ws), through the word cache: a word's
 * ids depend on its bytes alone (see wcache.c). */
static tn_status encode_word(const tn_vocab *v, tn__spm_scratch *sc, const char *e, size_t ws, size_t we, heap *h,
                             tn__tok_out *out)
{
    const char *w = e + ws;
    size_t wn = we - ws;
    if (wn < 2 || wn > TN__WCACHE_WORD)
        return merge_word(v, sc, e, ws, we, h, out);
    uint32_t hw = (uint32_t)tn__tok_hash(w, wn);
    void *slot;
    const int32_t *ids;
    size_t n_ids;
    if (tn__wcache_get(&sc->cache, w, wn, hw, &slot, &ids, &n_ids)) {
        for (size_t j = 0; j < n_ids; j++)
            tn__tok_push(out, ids[j]);
        return TN_OK;
    }
    size_t first = out->n;
    tn_status st = merge_word(v, sc, e, ws, we, h, out);
    if (st == TN_OK && out->n <= out->cap)
        tn__wcache_put(&sc->cache, slot, w, wn, hw, out->ids + first, out->n - first);
    return st;
}

/*
 * THE MERGE LOOP
 *
 * HOW IT WORKS
 *   1. The fragment is escaped: "▁" (U+2581) first if the leading-space rule
 *      applies, then every ' ' replaced by "▁". The escaped text is split
 *      into symbols, one per UTF-8 character, in a doubly linked list.
 *   2. Every adjacent pair whose concatenated bytes are a piece of the
 *      vocabulary goes into a max-heap keyed by that piece's score (ties:
 *      the leftmost pair).
 *   3. Pop the best pair. If it is stale (its left symbol was absorbed, or
 *      either symbol grew since it was queued, so the sizes no longer add
 *      up to the queued size) drop it. Otherwise the left symbol absorbs the
 *      right one, and the two pairs the new symbol forms with its
 *      neighbours are queued if they are pieces. Repeat until the heap is
 *      empty.
 *   4. Walk the list: a symbol that is a piece emits its id; one that is not
 *      (only possible for a single character the vocabulary lacks) emits one
 *      byte token per byte.
 *
 *   Word by word: merges are local, so when no piece has a "▁" other than
 *   in a run at its start (vocab.c checks this at load; true for the Llama
 *   vocabularies), no pair across a word start (a "▁" symbol after a
 *   non-"▁" one) is ever a piece, nor is any merged symbol that would span
 *   it. Steps 2-4 then run on each word alone, in order, with the same
 *   result: within a word the order of merges is the same, and words never
 *   interact. The heap stays a few entries deep and in cache, which makes
 *   long texts ~8x faster than one heap over the whole fragment.
 *
 *   The right symbol of a queued pair is not stored: while both symbols
 *   live, the left one's `next` is still that right symbol (a symbol's
 *   `next` only changes when it absorbs it), and once the left one has
 *   absorbed anything its size alone reaches the queued size, so the check
 *   "left.n + left.next.n == size" rejects every stale entry.
 *
 * EDGE CASES
 *   - llama.cpp keeps a table to re-split a final symbol that is not a
 *     piece; it never fires, because every merge result is a piece by
 *     construction and a single character can never equal a merged pair
 *     (a pair is longer than its first character's announced length, a
 *     single symbol never is). Step 4 is therefore "piece, or bytes".
 *   - Invalid UTF-8: the lead byte's announced length is trusted but clipped
 *     at the end of the text, so nothing past the input is read; the odd
 *     symbols are usually not pieces and fall back to bytes, as in
 *     llama.cpp.
 *   - Every piece takes part in merges, control and byte pieces included
 *     (as in llama.cpp): if "<s>" could be built from pieces it would be.
 *     The Llama vocabularies contain no such chains.
 *   - A byte with no <0xXX> token (nor a 1-byte piece): the symbol becomes
 *     one UNK id, or nothing if the vocabulary has no UNK.
 *
 * LIMITATIONS
 *   O(n log w) for a fragment of n bytes and words of w symbols (O(n log n)
 *   when words cannot be split), with 20 bytes per symbol of the longest
 *   word of scratch plus
 *   at most 3 queued pairs per symbol of a word at 16 bytes; fragments over
 *   256 MiB are refused (symbol indexes are 32-bit).
 */
tn_status tn__spm_encode(const tn_vocab *v, tn__spm_scratch *sc, const char *text, size_t len, bool space_prefix,
                         tn__tok_out *out)
{
    if (len > (1u << 28))
        return tn__err(TN_ERR_RANGE, "tok: a text fragment of %zu bytes is over the 256 MiB limit", len);
    /* 1. escape */
    size_t cap = 3 * len + 3;
    if (sc->text_cap < cap) {
        char *t = realloc(sc->text, cap);
        if (!t)
            return tn__err(TN_ERR_NOMEM, "tok: out of memory escaping %zu bytes", len);
        sc->text = t;
        sc->text_cap = cap;
    }
    char *e = sc->text;
    size_t n = 0;
    if (space_prefix) {
        memcpy(e, "\xe2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len;) {
        const char *sp = memchr(text + i, ' ', len - i);
        size_t run = sp ? (size_t)(sp - (text + i)) : len - i;
        memcpy(e + n, text + i, run);
        n += run;
        i += run;
        if (sp) {
            memcpy(e + n, "\xe2\x96\x81", 3);
            n += 3;
            i++;
        }
    }
    if (n == 0)
        return TN_OK;

    /* 2-4, word by word when the vocabulary allows it. The word starts
     * are found by stepping over characters without building symbols: a
     * word the cache knows needs none. */
    heap h = {sc->heap, 0, sc->heap_cap};
    tn_status st = TN_OK;
    size_t ws = 0;
    bool prev_sp = false;
    if (v->spm_word_split) {
        for (size_t off = 0; off < n && st == TN_OK;) {
            unsigned char c = (unsigned char)e[off];
            if (c < 0x80) { /* ASCII: one character, never "▁" */
                prev_sp = false;
                off++;
                continue;
            }
            size_t l = UTF8_LEN[c >> 4];
            if (l > n - off)
                l = n - off;
            bool sp = l == 3 && memcmp(e + off, "\xe2\x96\x81", 3) == 0;
            if (sp && !prev_sp && off > ws) {
                st = encode_word(v, sc, e, ws, off, &h, out);
                ws = off;
            }
            prev_sp = sp;
            off += l;
        }
    }
    if (st == TN_OK)
        st = encode_word(v, sc, e, ws, n, &h, out);
    sc->heap = h.a;
    sc->heap_cap = h.cap;
    return st;
}

/* Frees what tn__spm_encode kept; the struct may be reused after. */
void tn__spm_scratch_free(tn__spm_scratch *sc)
{
    free(sc->text);
    free(sc->sym);
    free(sc->heap);
    tn__wcache_free(&sc->cache);
    memset(sc, 0, sizeof *sc);
}
