/*
 * test_tok_corpus — the fast encoders (word cache, merge rows, word split)
 * against straightforward references on real text: the first ~200 KB of
 * the English (wikitext-2 test) and Chinese (红楼梦) corpora, tokenized in
 * one call, must give exactly the ids of
 *   - SPM (Llama 2): a naive merge over strings, word by word: repeatedly
 *     join the adjacent pair whose concatenation is the piece with the
 *     highest score (leftmost on a tie), then pieces or byte tokens;
 *   - byte-level BPE (GPT-2): the pre-tokenizer's words, each merged by a
 *     naive BPE over mapped strings whose ranks come from a sorted copy of
 *     the GGUF merge list, never from the library's merge table;
 *   - byte-level BPE with Llama 3's whole-word rule (tiktoken file) and
 *     Qwen3 (tokenizer.json): the same vocabulary with the word split and
 *     the whole-word filter turned off (the path llama.cpp's vectors check
 *     in test_tok_bpe).
 */
#include "testutil.h"

#include "tok/tok_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLICE (200 * 1024)

/* The first ~SLICE bytes of path, ending before a character starts. */
static char *read_slice(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = malloc(SLICE + 1);
    assert_non_null(buf);
    size_t got = fread(buf, 1, SLICE + 1, f), n = got < SLICE ? got : SLICE;
    fclose(f);
    while (n > 0 && n < got && ((unsigned char)buf[n] & 0xC0) == 0x80)
        n--;
    *len = n;
    return buf;
}

static const char *const CORPORA[] = {TN_SHARED_DATA "corpora/en/wikitext-2-raw/wiki.test.raw",
                                      TN_SHARED_DATA "corpora/zh/novels/hongloumeng.txt"};

static int32_t *tok_all(const tn_vocab *v, const char *s, size_t len, size_t *n)
{
    int32_t *ids = malloc((len + 16) * sizeof *ids);
    assert_non_null(ids);
    assert_int_equal(tn_tokenize(v, s, len, false, false, ids, len + 16, n), TN_OK);
    return ids;
}

static void push(int32_t **a, size_t *n, size_t *cap, int32_t id)
{
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 1024;
        *a = realloc(*a, *cap * sizeof **a);
        assert_non_null(*a);
    }
    (*a)[(*n)++] = id;
}

static void assert_same(const int32_t *got, size_t n_got, const int32_t *want, size_t n_want, const char *what)
{
    size_t i = 0;
    while (i < n_got && i < n_want && got[i] == want[i])
        i++;
    if (i < n_got || i < n_want)
        print_error("%s: ids differ at %zu of %zu / %zu\n", what, i, n_got, n_want);
    assert_int_equal(n_got, n_want);
    assert_memory_equal(got, want, n_got * sizeof *got);
}

/* ---------------------------------------------------------------------------
 * SPM reference
 * ------------------------------------------------------------------------ */
typedef struct rsym {
    size_t start, n;
} rsym;

/* id of the piece e[start, start+n), -1 if none */
static int32_t piece(const tn_vocab *v, const char *e, size_t start, size_t n) { return tn__vocab_find(v, e + start, n); }

static void spm_word(const tn_vocab *v, const char *e, rsym *s, size_t ns, int32_t **out, size_t *n, size_t *cap)
{
    for (;;) {
        size_t best = 0;
        float bs = 0;
        bool any = false;
        for (size_t i = 0; i + 1 < ns; i++) {
            int32_t id = piece(v, e, s[i].start, s[i].n + s[i + 1].n);
            if (id >= 0 && (!any || v->scores[id] > bs)) {
                any = true;
                bs = v->scores[id];
                best = i;
            }
        }
        if (!any)
            break;
        s[best].n += s[best + 1].n;
        memmove(&s[best + 1], &s[best + 2], (ns - best - 2) * sizeof *s);
        ns--;
    }
    for (size_t i = 0; i < ns; i++) {
        int32_t id = piece(v, e, s[i].start, s[i].n);
        if (id >= 0) {
            push(out, n, cap, id);
            continue;
        }
        for (size_t j = 0; j < s[i].n; j++) {
            assert_true(v->byte_id[(unsigned char)e[s[i].start + j]] >= 0);
            push(out, n, cap, v->byte_id[(unsigned char)e[s[i].start + j]]);
        }
    }
}

static bool is_sp(const char *e, const rsym *s) { return s->n == 3 && memcmp(e + s->start, "\xe2\x96\x81", 3) == 0; }

static void test_spm_corpora(void **state)
{
    (void)state;
    tn_gguf *g = NULL;
    assert_int_equal(tn_gguf_open(TN_SHARED_DATA "vocab/ggml-vocab-llama-spm.gguf", &g), TN_OK);
    tn_vocab *v = NULL;
    assert_int_equal(tn_vocab_from_gguf(g, &v), TN_OK);
    tn_gguf_free(g);
    assert_true(v->spm_word_split && v->add_space_prefix);
    for (size_t c = 0; c < TN_ARRAY_LEN(CORPORA); c++) {
        size_t len, n_got;
        char *text = read_slice(CORPORA[c], &len);
        int32_t *got = tok_all(v, text, len, &n_got);
        /* escape: "▁" first, every ' ' to "▁" */
        char *e = malloc(3 * len + 3);
        assert_non_null(e);
        size_t en = 0;
        memcpy(e, "\xe2\x96\x81", 3);
        en = 3;
        for (size_t i = 0; i < len; i++) {
            if (text[i] == ' ') {
                memcpy(e + en, "\xe2\x96\x81", 3);
                en += 3;
            } else {
                e[en++] = text[i];
            }
        }
        /* one symbol per character (the text is valid UTF-8) */
        rsym *s = malloc(en * sizeof *s);
        assert_non_null(s);
        size_t ns = 0;
        for (size_t off = 0; off < en;) {
            unsigned char b = (unsigned char)e[off];
            size_t l = b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
            s[ns++] = (rsym){off, l};
            off += l;
        }
        int32_t *want = NULL;
        size_t n_want = 0, cap = 0;
        for (size_t a = 0; a < ns;) {
            size_t b = a + 1;
            while (b < ns && !(is_sp(e, &s[b]) && !is_sp(e, &s[b - 1])))
                b++;
            spm_word(v, e, s + a, b - a, &want, &n_want, &cap);
            a = b;
        }
        assert_same(got, n_got, want, n_want, CORPORA[c]);
        free(want);
        free(s);
        free(e);
        free(got);
        free(text);
    }
    tn_vocab_free(v);
}

/* ---------------------------------------------------------------------------
 * Byte-level BPE reference (GPT-2)
 * ------------------------------------------------------------------------ */
typedef struct mrg {
    char *text; /* "left right" */
    int64_t rank;
} mrg;

static int mrg_cmp(const void *a, const void *b) { return strcmp(((const mrg *)a)->text, ((const mrg *)b)->text); }

static int64_t rank_of(const mrg *m, size_t nm, const char *l, const char *r)
{
    char key[512];
    size_t ll = strlen(l), rl = strlen(r);
    if (ll + rl + 2 > sizeof key)
        return -1;
    memcpy(key, l, ll);
    key[ll] = ' ';
    memcpy(key + ll + 1, r, rl + 1);
    mrg probe = {key, 0};
    const mrg *hit = bsearch(&probe, m, nm, sizeof *m, mrg_cmp);
    return hit ? hit->rank : -1;
}

static void test_bpe_corpora(void **state)
{
    (void)state;
    tn_gguf *g = NULL;
    assert_int_equal(tn_gguf_open(TN_SHARED_DATA "vocab/ggml-vocab-gpt-2.gguf", &g), TN_OK);
    tn_vocab *v = NULL;
    assert_int_equal(tn_vocab_from_gguf(g, &v), TN_OK);
    int64_t kv = tn_gguf_find_key(g, "tokenizer.ggml.merges");
    tn_gguf_type et;
    uint64_t nm;
    const void *data;
    assert_int_equal(tn_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &nm, &data), TN_OK);
    mrg *m = calloc(nm, sizeof *m);
    assert_non_null(m);
    for (uint64_t i = 0; i < nm; i++) {
        const char *str;
        size_t l;
        assert_int_equal(tn_gguf_arr_str(g, kv, i, &str, &l), TN_OK);
        m[i] = (mrg){strndup(str, l), (int64_t)i};
    }
    qsort(m, nm, sizeof *m, mrg_cmp);
    for (size_t c = 0; c < TN_ARRAY_LEN(CORPORA); c++) {
        size_t len, n_got;
        char *text = read_slice(CORPORA[c], &len);
        int32_t *got = tok_all(v, text, len, &n_got);
        tn__bpe_scratch sc = {0};
        const char *t;
        const tn__span *sp;
        size_t nw;
        assert_int_equal(tn__pretok_split(v->pretok, &sc, text, len, &t, &sp, &nw), TN_OK);
        int32_t *want = NULL;
        size_t n_want = 0, cap = 0;
        static char sym[1024][64];
        for (size_t w = 0; w < nw; w++) {
            size_t ns = sp[w].len;
            assert_true(ns <= 1024);
            for (size_t i = 0; i < ns; i++) {
                int k = tn__bpe_byte_to_utf8((uint8_t)t[sp[w].off + i], sym[i]);
                sym[i][k] = '\0';
            }
            for (;;) {
                int64_t best = -1;
                size_t at = 0;
                for (size_t i = 0; i + 1 < ns; i++) {
                    int64_t r = rank_of(m, nm, sym[i], sym[i + 1]);
                    if (r >= 0 && (best < 0 || r < best)) {
                        best = r;
                        at = i;
                    }
                }
                if (best < 0)
                    break;
                assert_true(strlen(sym[at]) + strlen(sym[at + 1]) < sizeof sym[0]);
                size_t la = strlen(sym[at]), lb = strlen(sym[at + 1]);
                char joined[sizeof sym[0]];
                memcpy(joined, sym[at], la);
                memcpy(joined + la, sym[at + 1], lb + 1);
                memcpy(sym[at], joined, la + lb + 1);
                memmove(sym[at + 1], sym[at + 2], (ns - at - 2) * sizeof sym[0]);
                ns--;
            }
            for (size_t i = 0; i < ns; i++) {
                int32_t id = tn__vocab_find(v, sym[i], strlen(sym[i]));
                assert_true(id >= 0);
                push(&want, &n_want, &cap, id);
            }
        }
        assert_same(got, n_got, want, n_want, CORPORA[c]);
        tn__bpe_scratch_free(&sc);
        free(want);
        free(got);
        free(text);
    }
    for (uint64_t i = 0; i < nm; i++)
        free(m[i].text);
    free(m);
    tn_vocab_free(v);
    tn_gguf_free(g);
}

/* Tokenizes both corpora with v as built and with its join/whole filters
 * off; the ids must be the same. */
static void check_split_vs_plain(tn_vocab *v, const char *what)
{
    assert_non_null(v->join_bits); /* the split is on for this vocabulary */
    for (size_t c = 0; c < TN_ARRAY_LEN(CORPORA); c++) {
        size_t len, n_fast, n_plain;
        char *text = read_slice(CORPORA[c], &len);
        int32_t *fast = tok_all(v, text, len, &n_fast);
        uint64_t *join = v->join_bits, *whole = v->whole_bits;
        v->join_bits = NULL;
        v->whole_bits = NULL;
        int32_t *plain = tok_all(v, text, len, &n_plain);
        v->join_bits = join;
        v->whole_bits = whole;
        print_message("%s %s: %zu tokens\n", what, CORPORA[c], n_fast);
        assert_same(fast, n_fast, plain, n_plain, CORPORA[c]);
        free(fast);
        free(plain);
        free(text);
    }
}

static void test_llama3_split(void **state)
{
    (void)state;
    tn_vocab *v = NULL;
    assert_int_equal(tn_vocab_from_tiktoken(TN_SHARED_DATA "vocab/llama3-tiktoken/tokenizer.model", &v), TN_OK);
    assert_true(v->ignore_merges);
    assert_non_null(v->whole_bits);
    check_split_vs_plain(v, "llama3");
    tn_vocab_free(v);
}

static void test_qwen3_split(void **state)
{
    (void)state;
    tn_vocab *v = NULL;
    assert_int_equal(tn_vocab_from_hf_json(TN_SHARED_DATA "vocab/hf/qwen3/tokenizer.json", &v), TN_OK);
    check_split_vs_plain(v, "qwen3");
    tn_vocab_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_spm_corpora), cmocka_unit_test(test_bpe_corpora),
                                       cmocka_unit_test(test_llama3_split), cmocka_unit_test(test_qwen3_split)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
