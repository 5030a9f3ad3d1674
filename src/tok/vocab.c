/*
 * vocab.c — building a tn_vocab from a GGUF file's tokenizer.ggml.* keys.
 *
 * Key idea: read and check everything once, then keep flat arrays (pieces in
 * one pool, scores, types, flags) and an open-addressing hash from piece
 * bytes to id, so encoders look up a byte span without allocating. After
 * tn_vocab_from_gguf returns the vocabulary is immutable: any number of
 * threads may tokenize with it at once.
 *
 * What is read (keys as llama.cpp's converters write them):
 *
 *   tokenizer.ggml.model            string   "llama" (SPM), "gpt2" (byte-level BPE), "bert" (WordPiece);
 *                                            "t5", "rwkv", ... are known but not supported
 *   tokenizer.ggml.pre              string   BPE: the pre-tokenizer (pretok.c); absent means "default"
 *   tokenizer.ggml.merges           string[] BPE: required, "left right" in rank order (rank = index)
 *   tokenizer.ggml.tokens           string[] required, n_tokens >= 1
 *   tokenizer.ggml.scores           f32[]    optional (0), length n_tokens
 *   tokenizer.ggml.token_type       int[]    optional (NORMAL), length n_tokens
 *   tokenizer.ggml.*_token_id       uint     bos (or cls), eos, eot, eom, unknown, seperator (sic), padding, fim_*;
 *                                            an id >= n_tokens is TN_ERR_FORMAT, a negative one means none
 *   tokenizer.ggml.add_bos_token    bool     default per model (true for SPM)
 *   tokenizer.ggml.add_eos_token    bool     default false
 *   tokenizer.ggml.add_space_prefix bool     default per model (true for SPM)
 *   general.name                    string   only to apply llama.cpp's per-model token attributes (Phi-3)
 *
 * And two keys of tern's own, written by the tokenizer.json converter
 * (hf_json.c) for what GGUF cannot say:
 *   tokenizer.tern.normalizer       string   "NFC": plain text is NFC-normalized before BPE (Qwen)
 *   tokenizer.tern.token_strip      u8[]     length n_tokens; bit 0: lstrip, bit 1: rstrip
 *
 * Like llama.cpp: an empty piece becomes "[EMPTY_<id>]"; tokens whose text
 * marks the end of a turn ("<|eot_id|>", "<|end|>", "<|endoftext|>", ...)
 * are made CONTROL and end generation; the special tokens matched in the
 * input are the control, user-defined and unknown ones, longest first.
 * Unlike llama.cpp (which asserts), duplicate pieces are TN_ERR_FORMAT.
 */
#include "tok/tok_int.h"

#include <ctype.h>
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ---------------------------------------------------------------------------
 * Model families: defaults, and whether an encoder exists yet. A new family
 * fills its row, adds its encoder and a case in tokenize.c.
 * ------------------------------------------------------------------------ */
typedef struct model_desc {
    const char *name;    /* tokenizer.ggml.model */
    const char *what;    /* for messages */
    tn__vocab_kind kind; /* 0: recognized but not planned here */
    bool supported;
    int32_t bos, eos, unk, sep, pad;
    bool add_bos, add_space_prefix;
} model_desc;

static const model_desc MODELS[] = {
    {"llama", "SentencePiece (SPM)", TN__VOCAB_SPM, true, 1, 2, 0, -1, -1, true, true},
    {"gpt2", "byte-level BPE", TN__VOCAB_BPE, true, 11, 11, -1, -1, -1, false, false},
    {"bert", "WordPiece", TN__VOCAB_WPM, true, 101, -1, 100, 102, 0, true, false},
    {"t5", "Unigram (T5)", 0, false, -1, 1, 2, -1, 0, false, true},
    {"rwkv", "RWKV", 0, false, -1, -1, -1, -1, -1, false, false},
    {"no_vocab", "no vocabulary", 0, false, -1, -1, -1, -1, -1, false, false},
    {"none", "no vocabulary", 0, false, -1, -1, -1, -1, -1, false, false},
};

#define KEY_MODEL "tokenizer.ggml.model"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES "tokenizer.ggml.token_type"
#define KEY_PRE "tokenizer.ggml.pre"
#define KEY_MERGES "tokenizer.ggml.merges"

/* ---------------------------------------------------------------------------
 * Small GGUF helpers
 * ------------------------------------------------------------------------ */

/* Element i of a packed little-endian integer array; false if t is not an
 * integer type. */
static bool arr_int(tn_gguf_type t, const void *data, uint64_t i, int64_t *out)
{
    const unsigned char *p = data;
    switch (t) {
    case TN_GGUF_UINT8: *out = p[i]; return true;
    case TN_GGUF_INT8: *out = (int8_t)p[i]; return true;
    case TN_GGUF_UINT16: { uint16_t x; memcpy(&x, p + 2 * i, 2); *out = x; return true; }
    case TN_GGUF_INT16: { int16_t x; memcpy(&x, p + 2 * i, 2); *out = x; return true; }
    case TN_GGUF_UINT32: { uint32_t x; memcpy(&x, p + 4 * i, 4); *out = x; return true; }
    case TN_GGUF_INT32: { int32_t x; memcpy(&x, p + 4 * i, 4); *out = x; return true; }
    case TN_GGUF_UINT64: { uint64_t x; memcpy(&x, p + 8 * i, 8); *out = x > INT64_MAX ? INT64_MAX : (int64_t)x; return true; }
    case TN_GGUF_INT64: { int64_t x; memcpy(&x, p + 8 * i, 8); *out = x; return true; }
    default: return false;
    }
}

/* Reads an optional bool key into *out (left alone when absent). */
static tn_status opt_bool(const tn_gguf *g, const char *key, bool *out)
{
    if (tn_gguf_find_key(g, key) < 0)
        return TN_OK;
    bool b;
    if (tn_gguf_get_bool(g, key, &b) != TN_OK)
        return tn__err(TN_ERR_FORMAT, "tok: %s is not a bool", key);
    *out = b;
    return TN_OK;
}

/* Reads an optional token id key into *id (left alone when absent). A
 * negative value (some converters write -1) means "none"; an id outside
 * the vocabulary is TN_ERR_FORMAT. */
static tn_status opt_id(const tn_gguf *g, const char *key, int32_t n_tokens, int32_t *id)
{
    if (tn_gguf_find_key(g, key) < 0)
        return TN_OK;
    int64_t val;
    uint32_t u;
    int32_t i;
    if (tn_gguf_get_u32(g, key, &u) == TN_OK)
        val = u;
    else if (tn_gguf_get_i32(g, key, &i) == TN_OK)
        val = i;
    else
        return tn__err(TN_ERR_FORMAT, "tok: %s is not a 32-bit integer token id", key);
    if (val < 0) {
        *id = -1;
        return TN_OK;
    }
    if (val >= n_tokens)
        return tn__err(TN_ERR_FORMAT, "tok: %s = %lld is out of range (the vocabulary has %d tokens)", key,
                       (long long)val, (int)n_tokens);
    *id = (int32_t)val;
    return TN_OK;
}

/* ---------------------------------------------------------------------------
 * The piece → id hash
 * ------------------------------------------------------------------------ */

/* Inserts token id; returns the id already holding the same piece, or -1. */
static int32_t hash_insert(tn_vocab *v, int32_t id)
{
    const char *s = v->pool + v->off[id];
    size_t n = v->len[id];
    uint64_t h = tn__tok_hash(s, n);
    for (uint32_t i = (uint32_t)(h >> 32) & v->slot_mask;; i = (i + 1) & v->slot_mask) {
        tn__vocab_slot *sl = &v->slots[i];
        if (sl->id < 0) {
            *sl = (tn__vocab_slot){(uint32_t)h, id, (uint32_t)n, v->off[id]};
            return -1;
        }
        if (sl->hash == (uint32_t)h && sl->len == n && memcmp(v->pool + sl->off, s, n) == 0)
            return sl->id;
    }
}

static int32_t find_str(const tn_vocab *v, const char *s) { return tn__vocab_find(v, s, strlen(s)); }

/* ---------------------------------------------------------------------------
 * Special tokens found by their text (llama.cpp's workaround for converters
 * that do not write the ids): the lowest id with one of these texts.
 * ------------------------------------------------------------------------ */
static const char *const EOT_TEXTS[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                        "<|endoftext|>", "<EOT>", "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>"};
static const char *const EOM_TEXTS[] = {"<|eom_id|>"};
static const char *const FIM_PRE_TEXTS[] = {"<|fim_prefix|>", "<fim-prefix>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>", "<PRE>"};
static const char *const FIM_SUF_TEXTS[] = {"<|fim_suffix|>", "<fim-suffix>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "hole\xef\xbd\x9c>", "<SUF>"};
static const char *const FIM_MID_TEXTS[] = {"<|fim_middle|>", "<fim-middle>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>", "<MID>"};
static const char *const FIM_PAD_TEXTS[] = {"<|fim_pad|>", "<fim-pad>", "<PAD>"};
static const char *const FIM_REP_TEXTS[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>"};
static const char *const FIM_SEP_TEXTS[] = {"<|file_sep|>"};
static const char *const EOG_TEXTS[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                        "<|endoftext|>", "<|eom_id|>", "<EOT>"};

/* If *id is unset, sets it to the lowest id among texts; the token found is
 * made CONTROL. */
static void detect(tn_vocab *v, int32_t *id, const char *const *texts, size_t n)
{
    if (*id >= 0)
        return;
    for (size_t i = 0; i < n; i++) {
        int32_t t = find_str(v, texts[i]);
        if (t >= 0 && (*id < 0 || t < *id))
            *id = t;
    }
    if (*id >= 0)
        v->types[*id] = TN_TOKEN_CONTROL;
}

static void mark_eog(tn_vocab *v, int32_t id)
{
    if (id >= 0)
        v->flags[id] |= TN__TF_EOG;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool is_special_type(int t)
{
    return t == TN_TOKEN_CONTROL || t == TN_TOKEN_USER_DEFINED || t == TN_TOKEN_UNKNOWN;
}

/* True if the (not NUL-terminated) name contains needle, ignoring ASCII case. */
static bool name_contains(const char *name, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++) {
        size_t j = 0;
        while (j < m && tolower((unsigned char)name[i + j]) == needle[j])
            j++;
        if (j == m)
            return true;
    }
    return false;
}

/* llama.cpp sets strip attributes per model name, since GGUF does not carry
 * them: for Phi-3 every special token eats the spaces after it, except
 * <unk>, <s> and <|endoftext|>. */
static void apply_model_attrs(tn_vocab *v, const tn_gguf *g)
{
    const char *name;
    size_t n;
    if (tn_gguf_find_key(g, "general.name") < 0 || tn_gguf_get_str(g, "general.name", &name, &n) != TN_OK)
        return;
    if (!name_contains(name, n, "phi-3") && !name_contains(name, n, "phi3"))
        return;
    for (int32_t i = 0; i < v->n_special; i++)
        v->flags[v->special[i]] |= TN__TF_RSTRIP;
    int32_t id = find_str(v, "</s>");
    if (id >= 0)
        v->flags[id] |= TN__TF_RSTRIP;
    static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
    for (size_t i = 0; i < TN_ARRAY_LEN(keep); i++) {
        id = find_str(v, keep[i]);
        if (id >= 0)
            v->flags[id] &= (uint8_t)~TN__TF_RSTRIP;
    }
}

/* tokenizer.tern.*: the normalizer and the added tokens' strip flags. */
static tn_status read_tern_keys(tn_vocab *v, const tn_gguf *g)
{
    if (tn_gguf_find_key(g, TN__KEY_NORMALIZER) >= 0) {
        const char *name;
        size_t n;
        if (tn_gguf_get_str(g, TN__KEY_NORMALIZER, &name, &n) != TN_OK)
            return tn__err(TN_ERR_FORMAT, "tok: %s is not a string", TN__KEY_NORMALIZER);
        if (n == 3 && memcmp(name, "NFC", 3) == 0)
            v->nfc = true;
        else
            return tn__err(TN_ERR_UNSUPPORTED, "tok: %s = \"%.*s\" is not a supported normalizer (NFC is)",
                           TN__KEY_NORMALIZER, (int)TN_MIN(n, 40), name);
    }
    if (tn_gguf_find_key(g, TN__KEY_TOKEN_STRIP) >= 0) {
        tn_gguf_type et;
        uint64_t n;
        const void *data;
        if (tn_gguf_get_arr(g, TN__KEY_TOKEN_STRIP, &et, &n, &data) != TN_OK || et != TN_GGUF_UINT8 ||
            n != (uint64_t)v->n_tokens)
            return tn__err(TN_ERR_FORMAT, "tok: %s is not a u8 array of %d entries", TN__KEY_TOKEN_STRIP,
                           (int)v->n_tokens);
        const uint8_t *f = data;
        for (int32_t i = 0; i < v->n_tokens; i++) {
            if (f[i] & 1)
                v->flags[i] |= TN__TF_LSTRIP;
            if (f[i] & 2)
                v->flags[i] |= TN__TF_RSTRIP;
        }
    }
    return TN_OK;
}

/* ---------------------------------------------------------------------------
 * Building
 * ------------------------------------------------------------------------ */

static tn_status find_model(const tn_gguf *g, const model_desc **out)
{
    const char *s;
    size_t n;
    if (tn_gguf_find_key(g, KEY_MODEL) < 0)
        return tn__err(TN_ERR_FORMAT, "tok: %s is missing", KEY_MODEL);
    if (tn_gguf_get_str(g, KEY_MODEL, &s, &n) != TN_OK)
        return tn__err(TN_ERR_FORMAT, "tok: %s is not a string", KEY_MODEL);
    for (size_t i = 0; i < TN_ARRAY_LEN(MODELS); i++) {
        const model_desc *m = &MODELS[i];
        if (strlen(m->name) == n && memcmp(m->name, s, n) == 0) {
            if (!m->supported)
                return tn__err(TN_ERR_UNSUPPORTED,
                               "tok: %s = \"%s\" (%s) is not implemented; \"llama\", \"gpt2\" and \"bert\" are",
                               KEY_MODEL, m->name, m->what);
            *out = m;
            return TN_OK;
        }
    }
    return tn__err(TN_ERR_UNSUPPORTED, "tok: unknown %s \"%.*s\"", KEY_MODEL, (int)TN_MIN(n, 64), s);
}

/* Copies the pieces into one pool (two passes: size, then copy). */
static tn_status read_tokens(tn_vocab *v, const tn_gguf *g)
{
    int64_t kv = tn_gguf_find_key(g, KEY_TOKENS);
    if (kv < 0)
        return tn__err(TN_ERR_FORMAT, "tok: %s is missing", KEY_TOKENS);
    tn_gguf_type et;
    uint64_t n;
    const void *data;
    if (tn_gguf_get_arr(g, KEY_TOKENS, &et, &n, &data) != TN_OK || et != TN_GGUF_STRING)
        return tn__err(TN_ERR_FORMAT, "tok: %s is not an array of strings", KEY_TOKENS);
    if (n == 0)
        return tn__err(TN_ERR_FORMAT, "tok: %s is empty", KEY_TOKENS);
    if (n > (uint64_t)INT32_MAX / 2)
        return tn__err(TN_ERR_FORMAT, "tok: %s has %llu tokens, more than ids can address", KEY_TOKENS,
                       (unsigned long long)n);
    v->n_tokens = (int32_t)n;

    char empty[32];
    size_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if (tn_gguf_arr_str(g, kv, i, &s, &len) != TN_OK)
            return tn__err(TN_ERR_FORMAT, "tok: %s[%llu] cannot be read", KEY_TOKENS, (unsigned long long)i);
        if (len == 0)
            len = (size_t)snprintf(empty, sizeof empty, "[EMPTY_%llu]", (unsigned long long)i);
        if (len > TN_DETOK_MAX - 8)
            return tn__err(TN_ERR_UNSUPPORTED, "tok: %s[%llu] is %zu bytes long; pieces over %d bytes are not supported",
                           KEY_TOKENS, (unsigned long long)i, len, TN_DETOK_MAX - 8);
        total += len + 1;
        if (total > UINT32_MAX)
            return tn__err(TN_ERR_UNSUPPORTED, "tok: %s: the pieces take over 4 GiB", KEY_TOKENS);
    }

    v->pool = malloc(total);
    v->off = malloc(n * sizeof *v->off);
    v->len = malloc(n * sizeof *v->len);
    v->scores = calloc(n, sizeof *v->scores);
    v->types = malloc(n);
    v->flags = calloc(n, 1);
    if (!v->pool || !v->off || !v->len || !v->scores || !v->types || !v->flags)
        return tn__err(TN_ERR_NOMEM, "tok: out of memory for %llu tokens", (unsigned long long)n);

    size_t at = 0;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if (tn_gguf_arr_str(g, kv, i, &s, &len) != TN_OK)
            return tn__err(TN_ERR_FORMAT, "tok: %s[%llu] cannot be read", KEY_TOKENS, (unsigned long long)i);
        if (len == 0) {
            len = (size_t)snprintf(empty, sizeof empty, "[EMPTY_%llu]", (unsigned long long)i);
            s = empty;
        }
        memcpy(v->pool + at, s, len);
        v->pool[at + len] = '\0';
        v->off[i] = (uint32_t)at;
        v->len[i] = (uint32_t)len;
        v->types[i] = TN_TOKEN_NORMAL;
        if (len > v->max_len)
            v->max_len = (uint32_t)len;
        at += len + 1;
    }
    return TN_OK;
}

static tn_status read_scores(tn_vocab *v, const tn_gguf *g)
{
    if (tn_gguf_find_key(g, KEY_SCORES) < 0)
        return TN_OK;
    tn_gguf_type et;
    uint64_t n;
    const void *data;
    if (tn_gguf_get_arr(g, KEY_SCORES, &et, &n, &data) != TN_OK ||
        (et != TN_GGUF_FLOAT32 && et != TN_GGUF_FLOAT64))
        return tn__err(TN_ERR_FORMAT, "tok: %s is not an array of floats", KEY_SCORES);
    if (n != (uint64_t)v->n_tokens)
        return tn__err(TN_ERR_FORMAT, "tok: %s has %llu entries but %s has %d", KEY_SCORES,
                       (unsigned long long)n, KEY_TOKENS, (int)v->n_tokens);
    for (uint64_t i = 0; i < n; i++) {
        float f;
        if (et == TN_GGUF_FLOAT32) {
            memcpy(&f, (const char *)data + 4 * i, 4);
        } else {
            double d;
            memcpy(&d, (const char *)data + 8 * i, 8);
            f = (float)d;
        }
        /* A NaN would make the merge order undefined: it never wins. */
        v->scores[i] = isnan(f) ? -INFINITY : f;
    }
    return TN_OK;
}

static tn_status read_types(tn_vocab *v, const tn_gguf *g)
{
    if (tn_gguf_find_key(g, KEY_TYPES) < 0)
        return TN_OK;
    tn_gguf_type et;
    uint64_t n;
    const void *data;
    int64_t x;
    if (tn_gguf_get_arr(g, KEY_TYPES, &et, &n, &data) != TN_OK || (n > 0 && !arr_int(et, data, 0, &x)))
        return tn__err(TN_ERR_FORMAT, "tok: %s is not an array of integers", KEY_TYPES);
    if (n != (uint64_t)v->n_tokens)
        return tn__err(TN_ERR_FORMAT, "tok: %s has %llu entries but %s has %d", KEY_TYPES,
                       (unsigned long long)n, KEY_TOKENS, (int)v->n_tokens);
    for (uint64_t i = 0; i < n; i++) {
        arr_int(et, data, i, &x);
        v->types[i] = x >= TN_TOKEN_NORMAL && x <= TN_TOKEN_BYTE ? (uint8_t)x : 0;
    }
    return TN_OK;
}

/* True if every "▁" in every piece is part of a run at the piece's start
 * (the condition for merging word by word in spm.c). */
static bool pieces_split_at_words(const tn_vocab *v)
{
    for (int32_t i = 0; i < v->n_tokens; i++) {
        const char *p = v->pool + v->off[i];
        size_t n = v->len[i], k = 0;
        while (k + 3 <= n && memcmp(p + k, "\xe2\x96\x81", 3) == 0)
            k += 3;
        if (k < n && memmem(p + k, n - k, "\xe2\x96\x81", 3))
            return false;
    }
    return true;
}

static tn_status build_hash(tn_vocab *v)
{
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)v->n_tokens)
        cap *= 2;
    v->slots = malloc(cap * sizeof *v->slots);
    if (!v->slots)
        return tn__err(TN_ERR_NOMEM, "tok: out of memory for the piece hash (%u slots)", cap);
    for (uint32_t i = 0; i < cap; i++)
        v->slots[i].id = -1;
    v->slot_mask = cap - 1;
    for (int32_t i = 0; i < v->n_tokens; i++) {
        int32_t prev = hash_insert(v, i);
        if (prev >= 0)
            return tn__err(TN_ERR_FORMAT, "tok: %s[%d] repeats the piece of token %d (\"%.*s\")", KEY_TOKENS,
                           (int)i, (int)prev, (int)TN_MIN(v->len[i], 64u), v->pool + v->off[i]);
    }
    for (int b = 0; b < 256; b++) {
        char hex[8], one[2] = {(char)b, 0};
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        int32_t id = find_str(v, hex);
        v->byte_id[b] = id >= 0 ? id : tn__vocab_find(v, one, 1);
    }
    return TN_OK;
}

static tn_status read_specials(tn_vocab *v, const tn_gguf *g, const model_desc *m)
{
    int32_t n = v->n_tokens;
#define DEFAULT_ID(x) ((x) < n ? (x) : -1)
    v->bos = DEFAULT_ID(m->bos);
    v->eos = DEFAULT_ID(m->eos);
    v->unk = DEFAULT_ID(m->unk);
    v->sep = DEFAULT_ID(m->sep);
    v->pad = DEFAULT_ID(m->pad);
#undef DEFAULT_ID
    v->eot = v->eom = -1;
    int32_t fim[6] = {-1, -1, -1, -1, -1, -1}; /* pre suf mid pad rep sep */
    v->add_bos = m->add_bos;
    v->add_eos = false;
    v->add_space_prefix = m->add_space_prefix;

    const struct {
        const char *key;
        int32_t *id;
    } ids[] = {
        {"tokenizer.ggml.cls_token_id", &v->bos},
        {"tokenizer.ggml.bos_token_id", &v->bos},
        {"tokenizer.ggml.eos_token_id", &v->eos},
        {"tokenizer.ggml.eot_token_id", &v->eot},
        {"tokenizer.ggml.eom_token_id", &v->eom},
        {"tokenizer.ggml.unknown_token_id", &v->unk},
        {"tokenizer.ggml.seperator_token_id", &v->sep},
        {"tokenizer.ggml.padding_token_id", &v->pad},
        {"tokenizer.ggml.fim_pre_token_id", &fim[0]},
        {"tokenizer.ggml.fim_suf_token_id", &fim[1]},
        {"tokenizer.ggml.fim_mid_token_id", &fim[2]},
        {"tokenizer.ggml.fim_pad_token_id", &fim[3]},
        {"tokenizer.ggml.fim_rep_token_id", &fim[4]},
        {"tokenizer.ggml.fim_sep_token_id", &fim[5]},
        {"tokenizer.ggml.prefix_token_id", &fim[0]},
        {"tokenizer.ggml.suffix_token_id", &fim[1]},
        {"tokenizer.ggml.middle_token_id", &fim[2]},
    };
    for (size_t i = 0; i < TN_ARRAY_LEN(ids); i++) {
        tn_status s = opt_id(g, ids[i].key, n, ids[i].id);
        if (s != TN_OK)
            return s;
    }
    tn_status s;
    if ((s = opt_bool(g, "tokenizer.ggml.add_bos_token", &v->add_bos)) != TN_OK ||
        (s = opt_bool(g, "tokenizer.ggml.add_eos_token", &v->add_eos)) != TN_OK ||
        (s = opt_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix)) != TN_OK)
        return s;

    detect(v, &v->eot, EOT_TEXTS, TN_ARRAY_LEN(EOT_TEXTS));
    detect(v, &v->eom, EOM_TEXTS, TN_ARRAY_LEN(EOM_TEXTS));
    detect(v, &fim[0], FIM_PRE_TEXTS, TN_ARRAY_LEN(FIM_PRE_TEXTS));
    detect(v, &fim[1], FIM_SUF_TEXTS, TN_ARRAY_LEN(FIM_SUF_TEXTS));
    detect(v, &fim[2], FIM_MID_TEXTS, TN_ARRAY_LEN(FIM_MID_TEXTS));
    detect(v, &fim[3], FIM_PAD_TEXTS, TN_ARRAY_LEN(FIM_PAD_TEXTS));
    detect(v, &fim[4], FIM_REP_TEXTS, TN_ARRAY_LEN(FIM_REP_TEXTS));
    detect(v, &fim[5], FIM_SEP_TEXTS, TN_ARRAY_LEN(FIM_SEP_TEXTS));

    /* End of generation: EOS, EOT, EOM, the FIM pad/repo/sep tokens, and
     * every token whose text is one of EOG_TEXTS (made CONTROL). */
    for (size_t i = 0; i < TN_ARRAY_LEN(EOG_TEXTS); i++) {
        int32_t id = find_str(v, EOG_TEXTS[i]);
        if (id >= 0) {
            v->types[id] = TN_TOKEN_CONTROL;
            mark_eog(v, id);
        }
    }
    mark_eog(v, v->eos);
    mark_eog(v, v->eot);
    mark_eog(v, v->eom);
    mark_eog(v, fim[3]);
    mark_eog(v, fim[4]);
    mark_eog(v, fim[5]);
    return TN_OK;
}

/* BPE: the pre-tokenizer, the merges and the byte symbols. A merge whose
 * sides or result are not pieces can never apply to token ids; such merges
 * are skipped (llama.cpp would merge the text and then fall back to bytes). */
static tn_status read_bpe(tn_vocab *v, const tn_gguf *g)
{
    const char *pre = NULL;
    size_t pre_len = 0;
    if (tn_gguf_find_key(g, KEY_PRE) >= 0 && tn_gguf_get_str(g, KEY_PRE, &pre, &pre_len) != TN_OK)
        return tn__err(TN_ERR_FORMAT, "tok: %s is not a string", KEY_PRE);
    tn_status s = tn__pretok_new(pre, pre_len, &v->pretok, &v->ignore_merges);
    if (s != TN_OK)
        return s;
    /* Llama 3 adds BOS unless the file says otherwise (llama.cpp) */
    if (v->ignore_merges && tn_gguf_find_key(g, "tokenizer.ggml.add_bos_token") < 0)
        v->add_bos = true;

    for (int b = 0; b < 256; b++) {
        char c[2];
        v->byte_id[b] = tn__vocab_find(v, c, (size_t)tn__bpe_byte_to_utf8((uint8_t)b, c));
    }

    int64_t kv = tn_gguf_find_key(g, KEY_MERGES);
    if (kv < 0)
        return tn__err(TN_ERR_FORMAT, "tok: %s is missing (a \"gpt2\" vocabulary needs its merges)", KEY_MERGES);
    tn_gguf_type et;
    uint64_t n;
    const void *data;
    if (tn_gguf_get_arr(g, KEY_MERGES, &et, &n, &data) != TN_OK || et != TN_GGUF_STRING)
        return tn__err(TN_ERR_FORMAT, "tok: %s is not an array of strings", KEY_MERGES);
    if (n > (uint64_t)INT32_MAX / 4)
        return tn__err(TN_ERR_FORMAT, "tok: %s has %llu entries, too many", KEY_MERGES, (unsigned long long)n);
    int32_t *a = malloc((n ? n : 1) * 4 * sizeof *a);
    if (!a)
        return tn__err(TN_ERR_NOMEM, "tok: out of memory for %llu merges", (unsigned long long)n);
    int32_t *l = a, *r = a + n, *res = a + 2 * n, *rank = a + 3 * n;
    int32_t m = 0;
    char buf[2 * TN_DETOK_MAX];
    for (uint64_t i = 0; i < n; i++) {
        const char *str;
        size_t len;
        if (tn_gguf_arr_str(g, kv, i, &str, &len) != TN_OK) {
            free(a);
            return tn__err(TN_ERR_FORMAT, "tok: %s[%llu] cannot be read", KEY_MERGES, (unsigned long long)i);
        }
        /* "left right": split at the first space after the first byte */
        const char *sp = len > 1 ? memchr(str + 1, ' ', len - 1) : NULL;
        if (!sp) {
            free(a);
            return tn__err(TN_ERR_FORMAT, "tok: %s[%llu] = \"%.*s\" is not two pieces separated by a space", KEY_MERGES,
                           (unsigned long long)i, (int)TN_MIN(len, 64), str);
        }
        size_t ll = (size_t)(sp - str), rl = len - ll - 1;
        if (ll + rl > sizeof buf)
            continue;
        memcpy(buf, str, ll);
        memcpy(buf + ll, sp + 1, rl);
        int32_t li = tn__vocab_find(v, str, ll), ri = tn__vocab_find(v, sp + 1, rl), mi = tn__vocab_find(v, buf, ll + rl);
        if (li < 0 || ri < 0 || mi < 0)
            continue;
        l[m] = li;
        r[m] = ri;
        res[m] = mi;
        rank[m] = (int32_t)i;
        m++;
    }
    s = tn__bpe_build_merges(v, l, r, res, rank, m);
    free(a);
    return s;
}

/* The special tokens matched in the input, longest text first (ties by id):
 * sorted as 64-bit keys (~len << 32 | id), so the sort needs no context. */
static tn_status build_special_list(tn_vocab *v)
{
    int32_t n = 0;
    for (int32_t i = 0; i < v->n_tokens; i++)
        n += is_special_type(v->types[i]);
    v->special = malloc((size_t)(n ? n : 1) * sizeof *v->special);
    uint64_t *keys = malloc((size_t)(n ? n : 1) * sizeof *keys);
    if (!v->special || !keys) {
        free(keys);
        return tn__err(TN_ERR_NOMEM, "tok: out of memory for %d special tokens", (int)n);
    }
    n = 0;
    for (int32_t i = 0; i < v->n_tokens; i++)
        if (is_special_type(v->types[i]))
            keys[n++] = (uint64_t)(UINT32_MAX - v->len[i]) << 32 | (uint32_t)i;
    qsort(keys, (size_t)n, sizeof *keys, cmp_u64);
    for (int32_t i = 0; i < n; i++)
        v->special[i] = (int32_t)(keys[i] & 0xFFFFFFFFu);
    v->n_special = n;
    free(keys);
    return TN_OK;
}

/* Builds a vocabulary from GGUF metadata; see tok.h. */
tn_status tn_vocab_from_gguf(const tn_gguf *g, tn_vocab **out)
{
    if (!out)
        return tn__err(TN_ERR_INVALID, "tok: tn_vocab_from_gguf: out is NULL");
    *out = NULL;
    if (!g)
        return tn__err(TN_ERR_INVALID, "tok: tn_vocab_from_gguf: g is NULL");

    const model_desc *m = NULL;
    tn_status s = find_model(g, &m);
    if (s != TN_OK)
        return s;
    tn_vocab *v = calloc(1, sizeof *v);
    if (!v)
        return tn__err(TN_ERR_NOMEM, "tok: out of memory");
    v->kind = m->kind;
    if ((s = read_tokens(v, g)) != TN_OK || (s = read_scores(v, g)) != TN_OK || (s = read_types(v, g)) != TN_OK ||
        (s = build_hash(v)) != TN_OK || (s = read_specials(v, g, m)) != TN_OK ||
        (s = build_special_list(v)) != TN_OK)
        goto err;
    if (v->kind == TN__VOCAB_BPE && (s = read_bpe(v, g)) != TN_OK)
        goto err;
    apply_model_attrs(v, g);
    if ((s = read_tern_keys(v, g)) != TN_OK)
        goto err;
    v->spm_word_split = v->kind == TN__VOCAB_SPM && pieces_split_at_words(v);
    *out = v;
    return TN_OK;
err:
    tn_vocab_free(v);
    return s;
}

/* Frees the vocabulary; NULL is a no-op. */
void tn_vocab_free(tn_vocab *v)
{
    if (!v)
        return;
    free(v->pool);
    free(v->off);
    free(v->len);
    free(v->scores);
    free(v->types);
    free(v->flags);
    free(v->slots);
    free(v->special);
    free(v->merges);
    free(v->join_bits);
    free(v->whole_bits);
    tn__pretok_free(v->pretok);
    free(v);
}

/* ---------------------------------------------------------------------------
 * Accessors: safe from any thread; out-of-range ids give neutral answers.
 * ------------------------------------------------------------------------ */

int32_t tn_vocab_n_tokens(const tn_vocab *v) { return v->n_tokens; }
int32_t tn_vocab_bos(const tn_vocab *v) { return v->bos; }
int32_t tn_vocab_eos(const tn_vocab *v) { return v->eos; }
bool tn_vocab_add_bos(const tn_vocab *v) { return v->add_bos && v->bos >= 0; }

bool tn_vocab_is_eog(const tn_vocab *v, int32_t id)
{
    return id >= 0 && id < v->n_tokens && (v->flags[id] & TN__TF_EOG);
}

/* The token's TN_TOKEN_* type; 0 for an undefined type or an invalid id. */
int tn_vocab_token_type(const tn_vocab *v, int32_t id)
{
    return id >= 0 && id < v->n_tokens ? v->types[id] : 0;
}

/* The raw piece, NUL-terminated, owned by the vocabulary; NULL for an
 * invalid id. */
const char *tn_vocab_piece(const tn_vocab *v, int32_t id)
{
    return id >= 0 && id < v->n_tokens ? v->pool + v->off[id] : NULL;
}

/* Builds a vocabulary through a converter: the writer writes a GGUF image
 * into an anonymous memory file, which is opened like any GGUF file. See
 * tok_int.h. */
tn_status tn__vocab_from_converter(const char *path, tn__vocab_convert_fn convert, tn_vocab **out)
{
    if (!out)
        return tn__err(TN_ERR_INVALID, "tok: %s: out is NULL", path ? path : "(null)");
    *out = NULL;
    tn_gguf_writer *w;
    tn_status s = tn_gguf_writer_new(&w);
    if (s != TN_OK)
        return s;
    s = convert(path, w);
    int fd = -1;
    char mem_path[64];
    if (s == TN_OK) {
        fd = memfd_create("tern-vocab", MFD_CLOEXEC);
        if (fd < 0)
            s = tn__err(TN_ERR_IO, "tok: cannot create a memory file for the vocabulary: %s", strerror(errno));
    }
    tn_gguf *g = NULL;
    if (s == TN_OK) {
        snprintf(mem_path, sizeof mem_path, "/proc/self/fd/%d", fd);
        s = tn_gguf_writer_write(w, mem_path);
    }
    if (s == TN_OK)
        s = tn_gguf_open(mem_path, &g);
    if (fd >= 0)
        close(fd);
    tn_gguf_writer_free(w);
    if (s != TN_OK)
        return s;
    s = tn_vocab_from_gguf(g, out);
    tn_gguf_free(g);
    return s;
}
