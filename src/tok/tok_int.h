/*
 * tok_int.h — what the files of src/tok share: the vocabulary layout, the
 * piece→id hash, and the per-model encoders.
 *
 * Key idea: one tn_vocab for every tokenizer family. vocab.c fills the
 * common part (pieces, scores, types, special ids, the special-token list
 * used to split the input, the hash) from GGUF; each family (spm.c,
 * bpe.c with pretok.c, wordpiece.c) adds an encoder that turns one plain
 * text fragment into ids, and tokenize.c runs the steps all families share:
 * splitting out special tokens, BOS, the output buffer.
 */
#ifndef TERN_TOK_TOK_INT_H
#define TERN_TOK_TOK_INT_H

#include "tok/tok.h"

#include <string.h>

/* Tokenizer families, from tokenizer.ggml.model. */
typedef enum tn__vocab_kind {
    TN__VOCAB_SPM = 1, /* "llama": SentencePiece BPE with scores and byte fallback */
    TN__VOCAB_BPE,     /* "gpt2": byte-level BPE with rank-ordered merges (bpe.c) */
    TN__VOCAB_WPM,     /* "bert": WordPiece, greedy longest match (wordpiece.c) */
} tn__vocab_kind;

/* Per-token flags (tn_vocab.flags). */
enum {
    TN__TF_EOG = 1,    /* ends generation */
    TN__TF_LSTRIP = 2, /* when matched as a special token, eat spaces before it */
    TN__TF_RSTRIP = 4, /* ... and after it */
};

/* tern's own GGUF keys (vocab.c), written by the tokenizer.json converter. */
#define TN__KEY_NORMALIZER "tokenizer.tern.normalizer"
#define TN__KEY_TOKEN_STRIP "tokenizer.tern.token_strip"

/* One slot of the open-addressing hash from piece bytes to id. The piece's
 * length and pool offset are copied in, so a probe touches the slot and
 * the piece bytes only. */
typedef struct tn__vocab_slot {
    uint32_t hash; /* low 32 bits of the piece's hash */
    int32_t id;    /* -1: empty */
    uint32_t len;  /* len[id] */
    uint32_t off;  /* off[id] */
} tn__vocab_slot;

/* The BPE merge table, in two levels (bpe.c, "THE MERGE TABLE"): row l
 * holds the merges whose left side is token l as a small open-addressing
 * table of right ids, so the lookups of one left token share a few cache
 * lines. bits 0: token l is the left side of no merge. */
typedef struct tn__merge_row {
    uint32_t off;  /* first slot of the row in merge_right / merge_val */
    uint32_t bits; /* the row has 1 << bits slots */
} tn__merge_row;

typedef struct tn__merge_val {
    int32_t rank; /* lower merges first */
    int32_t id;   /* the merged piece */
} tn__merge_val;

/* A compiled pre-tokenizer (pretok.c): the regexes that cut text into
 * words before BPE. Immutable once built. */
typedef struct tn__pretok tn__pretok;

struct tn_vocab {
    tn__vocab_kind kind;
    int32_t n_tokens;

    char *pool;        /* every piece, each followed by a NUL */
    uint32_t *off;     /* (n_tokens) offset of piece i in pool (the pool is under 4 GiB) */
    uint32_t *len;     /* (n_tokens) its length in bytes (without the NUL) */
    float *scores;     /* (n_tokens) merge priority: higher merges first */
    uint8_t *types;    /* (n_tokens) TN_TOKEN_*, 0 when undefined */
    uint8_t *flags;    /* (n_tokens) TN__TF_* */
    uint32_t max_len;  /* longest piece in bytes */

    tn__vocab_slot *slots; /* (slot_mask + 1) */
    uint32_t slot_mask;

    int32_t byte_id[256]; /* byte fallback: <0xXX> (or the 1-byte piece), -1 if none */

    int32_t *special;  /* (n_special) control, user-defined and unknown ids, longest text first */
    int32_t n_special;

    /* SPM: no piece has a "▁" other than in a run at its start, so no merge
     * can cross the start of a word ("▁" after a non-"▁" symbol) and words
     * can be merged one at a time (see spm.c). */
    bool spm_word_split;

    /* BPE: the merge table, the id of each byte's mapped character, the
     * pre-tokenizer, and Llama 3's rule that a word which is a whole piece
     * is taken as it is (ignore_merges). */
    void *merges;                /* one allocation holding the three arrays below */
    tn__merge_row *merge_rows;   /* (n_tokens) */
    int32_t *merge_right;        /* (merge_slots) right id of each slot, -1: empty */
    tn__merge_val *merge_val;    /* (merge_slots) */
    size_t merge_slots;
    int32_t n_merges;
    /* BPE: which byte contexts a merge can join (bpe.c, "SPLITTING LONG
     * WORDS"): TN__JOIN_WORDS words of bits; NULL: words are not split. */
    uint64_t *join_bits;
    /* BPE with ignore_merges: a Bloom filter of the pieces' bytes (decoded),
     * TN__WHOLE_WORDS words, so most words that are no piece skip the
     * lookup; NULL: always look up. */
    uint64_t *whole_bits;
    tn__pretok *pretok;
    bool ignore_merges;

    int32_t bos, eos, eot, eom, unk, sep, pad; /* -1: none */
    bool add_bos, add_eos, add_space_prefix;
    bool nfc; /* BPE: NFC-normalize plain text first (tokenizer.tern.normalizer) */
};

/* Hash of n bytes (the one the vocabulary's table uses). */
static inline uint64_t tn__tok_hash(const char *s, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    /* the last 0..7 bytes without a variable-length copy: two overlapping
     * 4-byte loads, or first/middle/last byte */
    uint64_t w = 0;
    if (n >= 4) {
        uint32_t lo, hi;
        memcpy(&lo, s, 4);
        memcpy(&hi, s + n - 4, 4);
        w = (uint64_t)hi << 32 | lo;
    } else if (n > 0) {
        w = (uint64_t)(unsigned char)s[0] << 16 | (uint64_t)(unsigned char)s[n / 2] << 8 | (unsigned char)s[n - 1];
    }
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 32;
    return h;
}

/* a[0..n) == b[0..n), inline for the short strings pieces are. */
static inline bool tn__tok_bytes_eq(const char *a, const char *b, size_t n)
{
    for (; n >= 8; a += 8, b += 8, n -= 8) {
        uint64_t x, y;
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y)
            return false;
    }
    for (; n > 0; n--)
        if (*a++ != *b++)
            return false;
    return true;
}

/* The id of the token whose piece is exactly s[0..n), or -1. Never reads
 * outside s[0..n). */
static inline int32_t tn__vocab_find(const tn_vocab *v, const char *s, size_t n)
{
    uint64_t h = tn__tok_hash(s, n);
    uint32_t h32 = (uint32_t)h;
    for (uint32_t i = (uint32_t)(h >> 32) & v->slot_mask;; i = (i + 1) & v->slot_mask) {
        const tn__vocab_slot *sl = &v->slots[i];
        if (sl->id < 0)
            return -1;
        if (sl->hash == h32 && sl->len == n && tn__tok_bytes_eq(v->pool + sl->off, s, n))
            return sl->id;
    }
}

/* Where encoders put ids: counts all of them, stores the first cap. */
typedef struct tn__tok_out {
    int32_t *ids;
    size_t cap;
    size_t n;
} tn__tok_out;

static inline void tn__tok_push(tn__tok_out *o, int32_t id)
{
    if (o->n < o->cap)
        o->ids[o->n] = id;
    o->n++;
}

/* The word cache of one tn_tokenize call (wcache.c): the ids of the short
 * words an encoder has merged, by their bytes. Zero-initialized is empty. */
#define TN__WCACHE_WORD 64 /* longest word kept, in bytes */

typedef struct tn__word_cache {
    void *slots;
    size_t cap, n;
    char *bytes; /* the words */
    size_t bytes_cap, bytes_n;
    int32_t *ids; /* their ids */
    size_t ids_cap, ids_n;
} tn__word_cache;

/* Looks up the word w[0..n) (2 <= n <= TN__WCACHE_WORD) with hash h
 * (tn__tok_hash, low 32 bits). A hit returns true with *ids / *n_ids
 * pointing into the cache (valid until the next put). A miss returns false
 * with *slot where tn__wcache_put may store the word, or NULL when the
 * cache is full or cannot grow. Never fails otherwise. */
bool tn__wcache_get(tn__word_cache *c, const char *w, size_t n, uint32_t h, void **slot, const int32_t **ids,
                    size_t *n_ids);
/* Stores ids[0..k) for w in the slot a miss gave (a NULL slot, k > 255 or
 * an allocation failure store nothing). A slot is good until the next get. */
void tn__wcache_put(tn__word_cache *c, void *slot, const char *w, size_t n, uint32_t h, const int32_t *ids, size_t k);
void tn__wcache_free(tn__word_cache *c);

/* Scratch an encoder may keep between fragments of one tn_tokenize call;
 * freed by tn__spm_scratch_free. Growth is checked: TN_ERR_NOMEM on
 * failure. */
typedef struct tn__spm_scratch {
    char *text;
    size_t text_cap;
    void *sym;
    size_t sym_cap;
    void *heap;
    size_t heap_cap;
    tn__word_cache cache;
} tn__spm_scratch;

/* Encodes one plain-text fragment (no special tokens in it) with the
 * SentencePiece rules: an optional leading "▁", spaces to "▁", score-ordered
 * merges, byte fallback. Appends ids to out. Fails only with TN_ERR_NOMEM
 * or TN_ERR_RANGE (a fragment over 256 MiB). */
tn_status tn__spm_encode(const tn_vocab *v, tn__spm_scratch *sc, const char *text, size_t len,
                         bool space_prefix, tn__tok_out *out);
void tn__spm_scratch_free(tn__spm_scratch *sc);

/* ---------------------------------------------------------------------------
 * Byte-level BPE (bpe.c, pretok.c)
 * ------------------------------------------------------------------------ */

/* The GPT-2 byte-to-unicode map: the code point that stands for byte b in
 * byte-level pieces (printable Latin-1 bytes stand for themselves, the
 * others for U+0100 + k in byte order). Writes its UTF-8 (1 or 2 bytes) to
 * out and returns the length. */
int tn__bpe_byte_to_utf8(uint8_t b, char out[2]);
/* The byte a code point stands for, or -1 if it is not in the map. */
int tn__bpe_cpt_to_byte(uint32_t cpt);

/* A span of text: bytes [off, off + len). */
typedef struct tn__span {
    uint32_t off, len;
} tn__span;

/* Scratch for one tn_tokenize call of a BPE or WordPiece vocabulary; all
 * growth is checked (TN_ERR_NOMEM). Freed by tn__bpe_scratch_free. */
typedef struct tn__bpe_scratch {
    char *clean;          /* the input with invalid UTF-8 replaced (pretok.c) */
    size_t clean_cap;
    tn__span *spans[2];   /* ping-pong word lists of the regex passes */
    size_t spans_cap[2];
    void *match_data;     /* pcre2_match_data_8 */
    void *jit_stack;      /* pcre2_jit_stack_8 */
    void *match_ctx;      /* pcre2_match_context_8 */
    void *sym;            /* bpe.c: symbols of one word */
    size_t sym_cap;
    void *heap;           /* bpe.c: candidate merges of one long word */
    size_t heap_cap;
    char *word;           /* bpe.c: a word in mapped form; wordpiece.c: words */
    size_t word_cap;
    tn__word_cache cache; /* bpe.c: merged words */
    tn__word_cache seg_cache; /* bpe.c: merged pieces of split long words */
} tn__bpe_scratch;

void tn__bpe_scratch_free(tn__bpe_scratch *sc);

/* Looks up the pre-tokenizer called name (tokenizer.ggml.pre; NULL or ""
 * means llama.cpp's "default") and compiles its regexes with PCRE2 (JIT
 * when available). *ignore_merges gets the family's whole-word rule. An
 * unknown name is TN_ERR_UNSUPPORTED naming it. */
tn_status tn__pretok_new(const char *name, size_t name_len, tn__pretok **out, bool *ignore_merges);
void tn__pretok_free(tn__pretok *p);
/* The name of the pre-tokenizer whose regexes are exactly re[0..n) (as a
 * Hugging Face tokenizer.json writes them), or NULL. */
const char *tn__pretok_name_for(const char *const *re, int n);

/* Cuts text[0..len) into words: first the bytes are made valid UTF-8 the
 * way llama.cpp decodes them (each byte that does not start a sequence
 * becomes U+FFFD), then each regex in turn splits every word into its
 * matches and the gaps between them. On success *clean points at the text
 * the spans index (the input itself when it was valid, else sc->clean) and
 * *spans / *n_spans at the words (in sc). TN_ERR_NOMEM, TN_ERR_RANGE (text
 * over 2 GiB) or TN_ERR_INTERNAL (PCRE2 failed) otherwise. */
tn_status tn__pretok_split(const tn__pretok *p, tn__bpe_scratch *sc, const char *text, size_t len,
                           const char **clean, const tn__span **spans, size_t *n_spans);

/* Size of tn_vocab.join_bits in 64-bit words: a direct table of the 2^16
 * byte pairs, then a hashed table of 2^22 bits. */
#define TN__JOIN_PAIR_WORDS (1u << 10)
#define TN__JOIN_HASH_BITS 22
#define TN__JOIN_WORDS (TN__JOIN_PAIR_WORDS + (1u << (TN__JOIN_HASH_BITS - 6)))

#define TN__WHOLE_BITS 21
#define TN__WHOLE_WORDS (1u << (TN__WHOLE_BITS - 6))

/* Builds v->merges from the pair list: merge i joins pieces left[i] and
 * right[i] (ids) into piece result[i] with rank rank[i]. A pair listed twice
 * keeps its first (lowest) rank. */
tn_status tn__bpe_build_merges(tn_vocab *v, const int32_t *left, const int32_t *right, const int32_t *result,
                               const int32_t *rank, int32_t n);

/* Whether NFC leaves text[0..len) unchanged, by a sufficient test on
 * character ranges (tokenize.c); false means "maybe not". */
bool tn__tok_already_nfc(const char *text, size_t len);

/* Encodes one plain-text fragment with byte-level BPE: pre-tokenize, map
 * each word's bytes, merge by rank. Appends ids to out. */
tn_status tn__bpe_encode(const tn_vocab *v, tn__bpe_scratch *sc, const char *text, size_t len, tn__tok_out *out);

/* Decodes a byte-level piece (mapped characters) into the bytes it stands
 * for; characters outside the map are copied as they are. Writes at most
 * cap bytes, returns the full length. */
size_t tn__bpe_decode_piece(const char *p, size_t n, char *buf, size_t cap);

/* Encodes one plain-text fragment with WordPiece (llama.cpp's BERT
 * pre-processing: NFD base characters, lower case, split at white space,
 * punctuation and CJK characters, then greedy longest match of "▁"-prefixed
 * words; a word that cannot be matched becomes the unknown token). */
tn_status tn__wpm_encode(const tn_vocab *v, tn__bpe_scratch *sc, const char *text, size_t len, tn__tok_out *out);

/* Builds a vocabulary from a file in another format (tokenizer.json,
 * tiktoken): convert(path, w) writes the tokenizer.ggml.* keys llama.cpp's
 * converter would, then they are read back like any GGUF vocabulary. */
typedef tn_status (*tn__vocab_convert_fn)(const char *path, tn_gguf_writer *w);
tn_status tn__vocab_from_converter(const char *path, tn__vocab_convert_fn convert, tn_vocab **out);

/* Grows *p (an array of *cap elements of elem bytes) by doubling, from 64,
 * until it holds need elements; false (and *p untouched) when out of
 * memory. Scratch buffers of the tokenizers and the word cache. */
bool tn__grow(void **p, size_t *cap, size_t need, size_t elem);

#endif /* TERN_TOK_TOK_INT_H */
