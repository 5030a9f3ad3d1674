/*
 * bpe.c — the byte-level BPE encoder ("gpt2" vocabularies: GPT-2, Llama 3,
 * Qwen, DeepSeek, Falcon, StarCoder, ...).
 *
 * Key idea: pieces are spelled in GPT-2's byte-to-unicode alphabet (every
 * byte is one printable character), so a word starts as one symbol per
 * byte, each already a vocabulary token, and merging works on token ids
 * alone: a hash from the pair (left id, right id) gives the merge's rank
 * and the merged token. The pair with the lowest rank is merged first (the
 * leftmost on a tie) until no adjacent pair is a merge. Text is first cut
 * into words by the pre-tokenizer (pretok.c); no merge crosses a word.
 */
#include "tok/tok_int.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------
 * The byte-to-unicode map
 * ------------------------------------------------------------------------ */

/* Bytes that stand for themselves: '!'..'~', 0xA1..0xAC, 0xAE..0xFF. */
static inline bool byte_is_self(unsigned b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

/* The code point byte b stands for: itself, or 0x100 + (how many bytes
 * below it do not stand for themselves): 0x00..0x20 are k = 0..32,
 * 0x7F..0xA0 are k = 33..66, 0xAD is k = 67. */
static uint32_t byte_cpt(unsigned b)
{
    if (byte_is_self(b))
        return b;
    return 0x100 + (b <= 0x20 ? b : b <= 0xA0 ? 33 + (b - 0x7F) : 67);
}

/* UTF-8 of the character that stands for byte b; see tok_int.h. */
int tn__bpe_byte_to_utf8(uint8_t b, char out[2])
{
    uint32_t c = byte_cpt(b);
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    out[0] = (char)(0xC0 | c >> 6);
    out[1] = (char)(0x80 | (c & 0x3F));
    return 2;
}

/* The byte code point c stands for, or -1; see tok_int.h. */
int tn__bpe_cpt_to_byte(uint32_t c)
{
    if (c < 0x100)
        return byte_is_self(c) ? (int)c : -1;
    if (c >= 0x100 + 68) /* 68 bytes do not stand for themselves */
        return -1;
    uint32_t k = c - 0x100;
    return k <= 32 ? (int)k : k <= 66 ? (int)(0x7F + k - 33) : 0xAD;
}

/* Decodes mapped characters back to bytes; see tok_int.h. */
size_t tn__bpe_decode_piece(const char *p, size_t n, char *buf, size_t cap)
{
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)p[i];
        /* every mapped character is 1 or 2 bytes: U+0021..U+0143 */
        if (c >= 0xC2 && c <= 0xC5 && i + 1 < n && ((unsigned char)p[i + 1] & 0xC0) == 0x80) {
            uint32_t cp = (uint32_t)(c & 0x1F) << 6 | ((unsigned char)p[i + 1] & 0x3F);
            int b = tn__bpe_cpt_to_byte(cp);
            if (b >= 0) {
                if (buf && w < cap)
                    buf[w] = (char)b;
                w++;
                i += 2;
                continue;
            }
        } else if (c < 0x80 && byte_is_self(c)) {
            if (buf && w < cap)
                buf[w] = (char)c;
            w++;
            i++;
            continue;
        }
        /* not in the map (a space, a control byte, another character):
         * copied as it is, one whole UTF-8 character at a time */
        size_t k = c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        k = TN_MIN(k, n - i);
        for (size_t j = 0; j < k; j++, w++)
            if (buf && w < cap)
                buf[w] = p[i + j];
        i += k;
    }
    return w;
}

/* ---------------------------------------------------------------------------
 * The merge table
 * ------------------------------------------------------------------------ */

/*
 * THE MERGE TABLE
 *
 * HOW IT WORKS
 *   Merging asks, for each adjacent pair of token ids (l, r), whether l r
 *   is a merge, and if so its rank and result. The table has one row per
 *   left id: row l is a small open-addressing hash (linear probing, at most
 *   two thirds full) of the right ids that merge after l, keyed by a
 *   multiplicative hash of r. The rows are laid out one after another, with
 *   the right ids (4 bytes a slot) apart from the rank and result (8 bytes,
 *   read only on a hit), so a miss costs the row header and one line of
 *   keys.
 *
 *   Why two levels: one flat hash of 64-bit pair keys scatters the pairs of
 *   one left token over the whole table (16 MiB for Llama 3), and text with
 *   many distinct neighbours (Chinese: every character bigram is a pair
 *   to check, most of them not merges) misses the cache on almost every
 *   lookup. With rows, the working set is the rows of the left tokens the
 *   text uses, which for a common character is a line or two.
 *
 * EDGE CASES
 *   A pair listed twice keeps its lowest rank (and that merge's result).
 *   Rows are sized for the pairs listed, duplicates included, so every row
 *   keeps an empty slot and a probe always ends.
 *
 * LIMITATIONS
 *   n_tokens row headers (8 bytes each) whether or not a token merges, and
 *   up to 4 slots of 12 bytes per merge.
 */
static inline uint32_t right_slot(int32_t r, uint32_t bits)
{
    return ((uint32_t)r * 0x9E3779B1u) >> (32 - bits);
}

/* The merge of the pair (l, r) (both valid ids), or NULL. */
static inline const tn__merge_val *find_merge(const tn_vocab *v, int32_t l, int32_t r)
{
    tn__merge_row row = v->merge_rows[l];
    if (!row.bits)
        return NULL;
    const int32_t *key = v->merge_right + row.off;
    uint32_t mask = (1u << row.bits) - 1;
    for (uint32_t i = right_slot(r, row.bits);; i = (i + 1) & mask) {
        if (key[i] == r)
            return &v->merge_val[row.off + i];
        if (key[i] < 0)
            return NULL;
    }
}

/*
 * SPLITTING LONG WORDS
 *
 * HOW IT WORKS
 *   A word in Chinese (or another script without spaces) is a long run of
 *   letters that never repeats, so the word cache does not help and each
 *   one is merged byte by byte. But most of its character boundaries can
 *   never be crossed by a merge, and the word is then several independent
 *   words, each short and frequent.
 *
 *   Why it is exact: the first merge that crosses a boundary p of the word
 *   joins a symbol that ends at p with one that starts at p. In a
 *   consistent vocabulary (below) a symbol of id x covers exactly the
 *   bytes decode(piece(x)), so that merge (l, r) has the last bytes of
 *   decode(l) just before p and the first bytes of decode(r) just after p.
 *   For every merge we record its join context: the last min(2, |left|)
 *   bytes and the first min(2, |right|) bytes (4 kinds by the two
 *   lengths). A boundary where none of the 4 contexts the word has there
 *   was recorded is
 *   crossed by no merge, ever; merges on its two sides never share a
 *   symbol, so merging the sides apart (in rank order each) gives the same
 *   symbols as merging the whole word (equal ranks on different sides are
 *   different pairs and commute).
 *
 *   The contexts are bits: the 2^16 one-byte/one-byte contexts directly,
 *   the others hashed into 2^22 bits. A hash collision only makes a
 *   boundary look crossable: slower, never wrong.
 *
 * EDGE CASES
 *   Llama 3's whole-word rule applies to the word, not to its pieces: the
 *   caller looks the whole word up first, and the pieces are merged by the
 *   plain rules (and cached apart from whole words). A vocabulary where a
 *   merge's result is not its two sides' bytes (or a byte's symbol is not
 *   that byte) gets no join table, and its words are never split.
 */
static inline uint32_t join_hash(uint32_t bytes, unsigned k1, unsigned k2)
{
    uint64_t key = (uint64_t)bytes | (uint64_t)(k1 * 4 + k2) << 32;
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> (64 - TN__JOIN_HASH_BITS));
}

/* The recorded-context key of a[-k1..0) b[0..k2), k1, k2 in 1..2. */
static inline uint32_t join_bytes(const unsigned char *a, unsigned k1, const unsigned char *b, unsigned k2)
{
    uint32_t x = 0;
    for (unsigned i = k1; i > 0; i--)
        x = x << 8 | a[-(int)i];
    for (unsigned i = 0; i < k2; i++)
        x = x << 8 | b[i];
    return x;
}

static inline void bit_set(uint64_t *bits, uint32_t i) { bits[i >> 6] |= 1ull << (i & 63); }
static inline bool bit_get(const uint64_t *bits, uint32_t i) { return bits[i >> 6] >> (i & 63) & 1; }

/* Whether some merge may join w[p-1] and w[p] (0 < p < n). */
static inline bool join_possible(const uint64_t *bits, const unsigned char *w, size_t n, size_t p)
{
    const unsigned char *a = w + p, *b = w + p;
    if (bit_get(bits, (uint32_t)a[-1] << 8 | b[0]))
        return true;
    const uint64_t *hb = bits + TN__JOIN_PAIR_WORDS;
    bool l2 = p >= 2, r2 = p + 2 <= n;
    if (r2 && bit_get(hb, join_hash(join_bytes(a, 1, b, 2), 1, 2)))
        return true;
    if (l2 && bit_get(hb, join_hash(join_bytes(a, 2, b, 1), 2, 1)))
        return true;
    return l2 && r2 && bit_get(hb, join_hash(join_bytes(a, 2, b, 2), 2, 2));
}

/* Builds v->join_bits from the merges (or leaves it NULL, see above). */
static tn_status build_join_bits(tn_vocab *v, const int32_t *left, const int32_t *right, int32_t n)
{
    for (unsigned b = 0; b < 256; b++) {
        char raw[8];
        int32_t id = v->byte_id[b];
        if (id >= 0 && (tn__bpe_decode_piece(v->pool + v->off[id], v->len[id], raw, sizeof raw) != 1 ||
                        (unsigned char)raw[0] != b))
            return TN_OK;
    }
    uint64_t *bits = calloc(TN__JOIN_WORDS, sizeof *bits);
    if (!bits)
        return tn__err(TN_ERR_NOMEM, "tok: out of memory for the merge join table");
    uint64_t *hb = bits + TN__JOIN_PAIR_WORDS;
    for (int32_t k = 0; k < n; k++) {
        int32_t l = left[k], r = right[k];
        /* result == left + right as pieces (vocab.c finds the result by
         * the joined text), so only the sides' bytes are checked here */
        unsigned char a[4], b[2];
        size_t la = tn__bpe_decode_piece(v->pool + v->off[l], v->len[l], NULL, 0);
        size_t lb = tn__bpe_decode_piece(v->pool + v->off[r], v->len[r], (char *)b, sizeof b);
        if (la == 0 || lb == 0) {
            free(bits);
            return TN_OK;
        }
        /* the last two bytes of the left side: decode into a window */
        char tmp[2 * TN_DETOK_MAX];
        if (la > sizeof tmp) {
            free(bits);
            return TN_OK;
        }
        tn__bpe_decode_piece(v->pool + v->off[l], v->len[l], tmp, sizeof tmp);
        unsigned k1 = la >= 2 ? 2 : 1, k2 = lb >= 2 ? 2 : 1;
        memcpy(a, tmp + la - k1, k1);
        const unsigned char *end = a + k1;
        if (k1 == 1 && k2 == 1)
            bit_set(bits, (uint32_t)end[-1] << 8 | b[0]);
        else
            bit_set(hb, join_hash(join_bytes(end, k1, b, k2), k1, k2));
    }
    v->join_bits = bits;
    return TN_OK;
}

/* The two bits of the whole-word filter for the bytes hashed to h. */
static inline uint32_t whole_bit(uint64_t h, int k)
{
    return (uint32_t)(k ? h >> 40 : h >> 8) & ((1u << TN__WHOLE_BITS) - 1);
}

/* Builds v->whole_bits (Llama 3's whole-word rule): two bits per piece,
 * from the hash of the bytes the piece stands for. */
static tn_status build_whole_bits(tn_vocab *v)
{
    uint64_t *bits = calloc(TN__WHOLE_WORDS, sizeof *bits);
    char *raw = malloc(2 * TN_DETOK_MAX);
    if (!bits || !raw) {
        free(bits);
        free(raw);
        return tn__err(TN_ERR_NOMEM, "tok: out of memory for the whole-word filter");
    }
    for (int32_t id = 0; id < v->n_tokens; id++) {
        size_t n = tn__bpe_decode_piece(v->pool + v->off[id], v->len[id], raw, 2 * TN_DETOK_MAX);
        if (n > 2 * TN_DETOK_MAX) {
            /* too long to hash here: no filter, every word is looked up */
            free(bits);
            free(raw);
            return TN_OK;
        }
        uint64_t h = tn__tok_hash(raw, n);
        bit_set(bits, whole_bit(h, 0));
        bit_set(bits, whole_bit(h, 1));
    }
    free(raw);
    v->whole_bits = bits;
    return TN_OK;
}

/* Builds the merge table; see tok_int.h. left/right/result are valid ids. */
tn_status tn__bpe_build_merges(tn_vocab *v, const int32_t *left, const int32_t *right, const int32_t *result,
                               const int32_t *rank, int32_t n)
{
    size_t nt = (size_t)v->n_tokens;
    uint32_t *count = calloc(nt ? nt : 1, sizeof *count);
    if (!count)
        return tn__err(TN_ERR_NOMEM, "tok: out of memory for %d merges", (int)n);
    for (int32_t k = 0; k < n; k++)
        count[left[k]]++;
    /* row sizes: a power of two over 1.5 x the pairs listed */
    size_t slots = 0;
    for (size_t l = 0; l < nt; l++) {
        uint32_t bits = 0;
        if (count[l]) {
            bits = 1;
            while ((1ull << bits) < (uint64_t)count[l] + count[l] / 2 + 1)
                bits++;
        }
        count[l] = bits;
        slots += bits ? (size_t)1 << bits : 0;
    }
    if (slots > UINT32_MAX) {
        free(count);
        return tn__err(TN_ERR_RANGE, "tok: %d merges are too many for the merge table", (int)n);
    }
    size_t bytes = nt * sizeof(tn__merge_row) + slots * (sizeof(int32_t) + sizeof(tn__merge_val));
    char *block = malloc(bytes ? bytes : 1);
    if (!block) {
        free(count);
        return tn__err(TN_ERR_NOMEM, "tok: out of memory for %d merges", (int)n);
    }
    v->merges = block;
    v->merge_rows = (tn__merge_row *)block;
    v->merge_val = (tn__merge_val *)(block + nt * sizeof(tn__merge_row));
    v->merge_right = (int32_t *)(block + nt * sizeof(tn__merge_row) + slots * sizeof(tn__merge_val));
    v->merge_slots = slots;
    uint32_t off = 0;
    for (size_t l = 0; l < nt; l++) {
        v->merge_rows[l] = (tn__merge_row){off, count[l]};
        off += count[l] ? 1u << count[l] : 0;
    }
    free(count);
    for (size_t i = 0; i < slots; i++)
        v->merge_right[i] = -1;
    v->n_merges = 0;
    for (int32_t k = 0; k < n; k++) {
        tn__merge_row row = v->merge_rows[left[k]];
        int32_t *key = v->merge_right + row.off;
        uint32_t mask = (1u << row.bits) - 1;
        for (uint32_t i = right_slot(right[k], row.bits);; i = (i + 1) & mask) {
            tn__merge_val *val = &v->merge_val[row.off + i];
            if (key[i] == right[k]) {
                if (rank[k] < val->rank)
                    *val = (tn__merge_val){rank[k], result[k]};
                break;
            }
            if (key[i] < 0) {
                key[i] = right[k];
                *val = (tn__merge_val){rank[k], result[k]};
                v->n_merges++;
                break;
            }
        }
    }
    tn_status st = build_join_bits(v, left, right, n);
    if (st == TN_OK && v->ignore_merges)
        st = build_whole_bits(v);
    return st;
}

/* ---------------------------------------------------------------------------
 * Merging one word
 * ------------------------------------------------------------------------ */

typedef struct sym {
    int32_t id;         /* token id; -1: a byte with no token (never merges, emits nothing) */
    int32_t prev, next; /* live neighbours, -1 at the ends */
    int32_t rank;       /* rank of the merge with the next symbol, INT32_MAX if none */
    int32_t mid;        /* ... and the id it makes (valid when rank is) */
} sym;

typedef struct cand {
    int32_t rank, left; /* left symbol index */
    int32_t lid, rid;   /* the ids when queued: stale if either changed */
} cand;

static inline bool cand_before(const cand *a, const cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(cand *h, size_t *n, cand c)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&c, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static cand heap_pop(cand *h, size_t *n)
{
    cand top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && cand_before(&h[c + 1], &h[c]))
            c++;
        if (!cand_before(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

static inline void set_rank(const tn_vocab *v, sym *s, int32_t i)
{
    int32_t j = s[i].next;
    s[i].rank = INT32_MAX;
    if (j >= 0 && s[i].id >= 0 && s[j].id >= 0) {
        const tn__merge_val *m = find_merge(v, s[i].id, s[j].id);
        if (m) {
            s[i].rank = m->rank;
            s[i].mid = m->id;
        }
    }
}

/* Merges symbol i with its next one (s[i].rank and mid are current). */
static inline void merge_at(sym *s, int32_t i)
{
    int32_t j = s[i].next;
    s[i].id = s[i].mid;
    s[i].next = s[j].next;
    if (s[j].next >= 0)
        s[s[j].next].prev = i;
    s[j].id = -2; /* dead: heap entries that start at j are stale */
    s[j].next = -1;
}

/*
 * MERGING A WORD
 *
 * HOW IT WORKS
 *   Symbols form a linked list; each knows the rank of merging with its
 *   next neighbour. Short words (the vast majority) scan the list for the
 *   lowest rank, merge, and update the two ranks that changed: O(n^2) but
 *   with tiny n and no queue. Long words use a binary heap of candidate
 *   pairs with lazy deletion: an entry whose two ids are no longer the
 *   ids of that symbol and its next neighbour is stale and skipped, which
 *   makes the whole word O(n log n).
 *
 * EDGE CASES
 *   Equal ranks take the leftmost pair, as llama.cpp and Hugging Face do.
 *   A byte whose mapped character is not a token (a damaged vocabulary)
 *   stays a symbol that never merges and emits nothing, as in llama.cpp.
 */
#define SHORT_WORD 16
#define SPLIT_MIN 4 /* shorter words are never split */

static void merge_short(const tn_vocab *v, sym *s, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        set_rank(v, s, i);
    for (;;) {
        int32_t best = -1, br = INT32_MAX;
        for (int32_t i = 0; i >= 0; i = s[i].next)
            if (s[i].rank < br) {
                br = s[i].rank;
                best = i;
            }
        if (best < 0)
            return;
        merge_at(s, best);
        set_rank(v, s, best);
        if (s[best].prev >= 0)
            set_rank(v, s, s[best].prev);
    }
}

static void merge_long(const tn_vocab *v, sym *s, cand *h)
{
    size_t n = 0;
    for (int32_t i = 0; i >= 0; i = s[i].next) {
        set_rank(v, s, i);
        if (s[i].rank != INT32_MAX)
            heap_push(h, &n, (cand){s[i].rank, i, s[i].id, s[s[i].next].id});
    }
    while (n > 0) {
        cand c = heap_pop(h, &n);
        int32_t i = c.left, j = s[i].next;
        if (s[i].id != c.lid || j < 0 || s[j].id != c.rid)
            continue; /* stale */
        merge_at(s, i);
        set_rank(v, s, i);
        if (s[i].rank != INT32_MAX)
            heap_push(h, &n, (cand){s[i].rank, i, s[i].id, s[s[i].next].id});
        int32_t p = s[i].prev;
        if (p >= 0) {
            set_rank(v, s, p);
            if (s[p].rank != INT32_MAX)
                heap_push(h, &n, (cand){s[p].rank, p, s[p].id, s[i].id});
        }
    }
}

/* Llama 3: a word that is a piece is taken whole. Pushes its id, or
 * nothing when the word is not a piece. */
static tn_status whole_word(const tn_vocab *v, tn__bpe_scratch *sc, const unsigned char *w, size_t n,
                            tn__tok_out *out)
{
    if (v->whole_bits) {
        /* no piece stands for these bytes unless both bits are set */
        uint64_t h = tn__tok_hash((const char *)w, n);
        if (!bit_get(v->whole_bits, whole_bit(h, 0)) || !bit_get(v->whole_bits, whole_bit(h, 1)))
            return TN_OK;
    }
    if (!tn__grow((void **)&sc->word, &sc->word_cap, 2 * n, 1))
        return tn__err(TN_ERR_NOMEM, "tok: out of memory for a %zu-byte word", n);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        m += (size_t)tn__bpe_byte_to_utf8(w[i], sc->word + m);
    int32_t id = tn__vocab_find(v, sc->word, m);
    if (id >= 0)
        tn__tok_push(out, id);
    return TN_OK;
}

/* Encodes one word w[0..n) (valid UTF-8, n >= 1); whole: apply Llama 3's
 * whole-word rule when the vocabulary has it. */
static tn_status encode_word(const tn_vocab *v, tn__bpe_scratch *sc, const unsigned char *w, size_t n, bool whole,
                             tn__tok_out *out)
{
    if (n == 1) {
        if (v->byte_id[w[0]] >= 0)
            tn__tok_push(out, v->byte_id[w[0]]);
        return TN_OK;
    }
    if (whole && v->ignore_merges) {
        size_t before = out->n;
        tn_status st = whole_word(v, sc, w, n, out);
        if (st != TN_OK || out->n != before)
            return st;
    }
    if (!tn__grow(&sc->sym, &sc->sym_cap, n, sizeof(sym)))
        return tn__err(TN_ERR_NOMEM, "tok: out of memory for a %zu-byte word", n);
    sym *s = sc->sym;
    int32_t ns = (int32_t)n;
    for (int32_t i = 0; i < ns; i++)
        s[i] = (sym){v->byte_id[w[i]], i - 1, i + 1 < ns ? i + 1 : -1, INT32_MAX, -1};
    if (ns <= SHORT_WORD) {
        merge_short(v, s, ns);
    } else {
        /* at most n initial candidates plus two per merge */
        if (!tn__grow(&sc->heap, &sc->heap_cap, 3 * n, sizeof(cand)))
            return tn__err(TN_ERR_NOMEM, "tok: out of memory for a %zu-byte word", n);
        merge_long(v, s, sc->heap);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next)
        if (s[i].id >= 0)
            tn__tok_push(out, s[i].id);
    return TN_OK;
}

/* Encodes a piece of a split word (plain rules), through its own cache. */
static tn_status encode_piece(const tn_vocab *v, tn__bpe_scratch *sc, const unsigned char *w, size_t n,
                              tn__tok_out *out)
{
    if (n < 2 || n > TN__WCACHE_WORD)
        return encode_word(v, sc, w, n, false, out);
    uint32_t h = (uint32_t)tn__tok_hash((const char *)w, n);
    void *slot;
    const int32_t *ids;
    size_t k;
    if (tn__wcache_get(&sc->seg_cache, (const char *)w, n, h, &slot, &ids, &k)) {
        for (size_t j = 0; j < k; j++)
            tn__tok_push(out, ids[j]);
        return TN_OK;
    }
    size_t first = out->n;
    tn_status st = encode_word(v, sc, w, n, false, out);
    if (st == TN_OK && out->n <= out->cap)
        tn__wcache_put(&sc->seg_cache, slot, (const char *)w, n, h, out->ids + first, out->n - first);
    return st;
}

/* Encodes a word that starts or ends outside ASCII (n >= SPLIT_MIN, the
 * vocabulary has join bits): whole-word rule first, then split at the boundaries no
 * merge can cross ("SPLITTING LONG WORDS"), each piece through the piece
 * cache (the whole word too when it does not split). */
static tn_status encode_long(const tn_vocab *v, tn__bpe_scratch *sc, const unsigned char *w, size_t n,
                             tn__tok_out *out)
{
    if (v->ignore_merges) {
        size_t before = out->n;
        tn_status st = whole_word(v, sc, w, n, out);
        if (st != TN_OK || out->n != before)
            return st;
    }
    size_t s0 = 0;
    for (size_t p = 1; p < n; p++) {
        unsigned c = w[p];
        /* only between characters, and not inside a run of ASCII (Latin
         * words are crossed by merges almost everywhere) */
        if ((c & 0xC0) == 0x80 || (c < 0x80 && w[p - 1] < 0x80) || join_possible(v->join_bits, w, n, p))
            continue;
        tn_status st = encode_piece(v, sc, w + s0, p - s0, out);
        if (st != TN_OK)
            return st;
        s0 = p;
    }
    return encode_piece(v, sc, w + s0, n - s0, out);
}

/* Whether the word w[0..n) (n >= 1) starts or ends outside ASCII: the
 * words worth splitting (a run of Chinese characters, after a space or
 * not). Only a route: either path gives the same ids. */
static inline bool has_high(const unsigned char *w, size_t n) { return (w[0] | w[n - 1]) >= 0x80; }

/* Encodes one fragment; see tok_int.h. */
tn_status tn__bpe_encode(const tn_vocab *v, tn__bpe_scratch *sc, const char *text, size_t len, tn__tok_out *out)
{
    const char *t;
    const tn__span *sp;
    size_t n;
    tn_status st = tn__pretok_split(v->pretok, sc, text, len, &t, &sp, &n);
    for (size_t i = 0; st == TN_OK && i < n; i++) {
        const unsigned char *w = (const unsigned char *)t + sp[i].off;
        size_t wl = sp[i].len;
        /* a word that may split goes straight to its pieces and their
         * cache: long unique words (Chinese) would only fill this one */
        if (v->join_bits && wl >= SPLIT_MIN && has_high(w, wl)) {
            st = encode_long(v, sc, w, wl, out);
            continue;
        }
        if (wl < 2 || wl > TN__WCACHE_WORD) {
            if (wl > 0)
                st = encode_word(v, sc, w, wl, true, out);
            continue;
        }
        /* words repeat: see wcache.c */
        uint32_t h = (uint32_t)tn__tok_hash((const char *)w, wl);
        void *slot;
        const int32_t *ids;
        size_t k;
        if (tn__wcache_get(&sc->cache, (const char *)w, wl, h, &slot, &ids, &k)) {
            for (size_t j = 0; j < k; j++)
                tn__tok_push(out, ids[j]);
            continue;
        }
        size_t first = out->n;
        st = encode_word(v, sc, w, wl, true, out);
        if (st == TN_OK && out->n <= out->cap)
            tn__wcache_put(&sc->cache, slot, (const char *)w, wl, h, out->ids + first, out->n - first);
    }
    return st;
}
