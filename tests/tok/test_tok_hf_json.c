/*
 * test_tok_hf_json — what a tokenizer.json says beyond llama.cpp's GGUF
 * keys: the NFC normalizer and the added tokens' lstrip/rstrip flags.
 *
 * The expected ids are Hugging Face tokenizers' (0.23.3, pip), written by
 * scripts/tok_hf_reference.py from the same files: Qwen3's tokenizer.json
 * as it is (its normalizer is NFC), and a copy with <|im_start|> made
 * lstrip and <|im_end|> rstrip. The copy is rebuilt here with jansson the
 * way the script builds it.
 */
#include "testutil.h"

#include "tok/tok_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#define QWEN3 TN_SHARED_DATA "vocab/hf/qwen3/tokenizer.json"

typedef struct hf_case {
    const char *text;
    int32_t ids[12];
    size_t n;
} hf_case;

static void check(const tn_vocab *v, const hf_case *c, bool special)
{
    int32_t got[64];
    size_t n = 0;
    assert_int_equal(tn_tokenize(v, c->text, strlen(c->text), false, special, got, 64, &n), TN_OK);
    if (n != c->n || memcmp(got, c->ids, n * sizeof *got) != 0) {
        print_error("\"%s\": got", c->text);
        for (size_t i = 0; i < n; i++)
            print_error(" %d", got[i]);
        print_error("\n");
    }
    assert_int_equal(n, c->n);
    assert_memory_equal(got, c->ids, n * sizeof *got);
}

/* NFC: decomposed text tokenizes as its composed form; compatibility
 * characters (the fi ligature) stay, canonical singletons (the Angstrom
 * sign) become their NFC form. */
static void test_nfc(void **state)
{
    (void)state;
    static const hf_case cases[] = {
        {"Cafe\xcc\x81 e\xcc\x81te\xcc\x81", {34, 2577, 963, 23639}, 4},
        /* Korean in conjoining jamo: 한국어 after NFC */
        {"\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab\xe1\x84\x80\xe1\x85\xae\xe1\x86\xa8\xe1\x84\x8b\xe1\x85\xa5",
         {23573, 124785, 31079},
         3},
        {"\xe2\x84\xab and A\xcc\x8a", {144044, 323, 79252}, 3},
        {"\xef\xac\x81ne \xc3\xa9", {144300, 811, 3958}, 3},
        /* canonical reordering of combining marks (dot below before dot above) */
        {"x\xcc\xa3\xcc\x87y", {6518, 233, 136, 96, 88}, 5},
    };
    tn_vocab *v = NULL;
    assert_int_equal(tn_vocab_from_hf_json(QWEN3, &v), TN_OK);
    assert_true(v->nfc);
    for (size_t i = 0; i < TN_ARRAY_LEN(cases); i++)
        check(v, &cases[i], false);
    /* the split and merge of the composed text is what runs */
    int32_t a[16], b[16];
    size_t na, nb;
    assert_int_equal(tn_tokenize(v, "caf\xc3\xa9", 5, false, false, a, 16, &na), TN_OK);
    assert_int_equal(tn_tokenize(v, "cafe\xcc\x81", 6, false, false, b, 16, &nb), TN_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    /* invalid UTF-8 is not refused: it goes on unnormalized */
    assert_int_equal(tn_tokenize(v, "e\xcc\x81\xff", 4, false, false, a, 16, &na), TN_OK);
    assert_true(na >= 2);
    tn_vocab_free(v);
}

/* The shortcut that skips NFC (tn__tok_already_nfc) only says yes for
 * characters that utf8proc leaves alone: combining class 0, NFC of the
 * character itself, and of it after "e", "A" and a Hangul leading
 * consonant (nothing composes with a previous character). */
static void test_nfc_shortcut(void **state)
{
    (void)state;
    size_t yes = 0;
    for (int32_t cp = 1; cp < 0x10000; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF)
            continue;
        utf8proc_uint8_t u[8];
        utf8proc_ssize_t n = utf8proc_encode_char(cp, u);
        if (!tn__tok_already_nfc((const char *)u, (size_t)n))
            continue;
        yes++;
        const utf8proc_property_t *pr = utf8proc_get_property(cp);
        assert_int_equal(pr->combining_class, 0);
        utf8proc_uint8_t *d = NULL;
        utf8proc_ssize_t dn = utf8proc_map(u, n, &d, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        assert_true(dn == n && memcmp(d, u, (size_t)n) == 0);
        free(d);
        static const char *const before[] = {"e", "A", "á"};
        for (size_t b = 0; b < TN_ARRAY_LEN(before); b++) {
            char in[16];
            size_t bl = strlen(before[b]);
            memcpy(in, before[b], bl);
            memcpy(in + bl, u, (size_t)n);
            utf8proc_uint8_t *c = NULL;
            utf8proc_ssize_t cn = utf8proc_map((const utf8proc_uint8_t *)in, (utf8proc_ssize_t)(bl + (size_t)n), &c,
                                               UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            assert_true(cn == (utf8proc_ssize_t)(bl + (size_t)n) && memcmp(c, in, (size_t)cn) == 0);
            free(c);
        }
    }
    assert_true(yes > 20000); /* the CJK ideographs at least */
    assert_false(tn__tok_already_nfc("e\xcc\x81", 3));
    assert_false(tn__tok_already_nfc("\xe2\x84\xab", 3));
}

/* Normalizing only the stretches that need it gives the ids of the whole
 * text normalized by utf8proc (and tokenized with NFC off): on the
 * Chinese corpus (a few Cyrillic and kana letters in it) and on a mix of
 * decomposed Latin, conjoining Hangul and CJK at stretch edges. */
static void test_nfc_stretches(void **state)
{
    (void)state;
    tn_vocab *v = NULL;
    assert_int_equal(tn_vocab_from_hf_json(QWEN3, &v), TN_OK);
    size_t len;
    char *zh = tn_test_read_file(TN_SHARED_DATA "corpora/zh/novels/hongloumeng.txt", &len);
    assert_non_null(zh);
    len = len > 200000 ? 200000 : len;
    while (len > 0 && ((unsigned char)zh[len] & 0xC0) == 0x80)
        len--;
    const char *mix = "e\xcc\x81\xcc\xa3x \xe4\xb8\xad\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab\xe4\xb8\xad"
                      "A\xcc\x8a\xe2\x84\xab\xe3\x80\x82\xe3\x81\x8b\xe3\x82\x99!\xcc\x81";
    const char *texts[] = {zh, mix};
    size_t lens[] = {len, strlen(mix)};
    for (size_t t = 0; t < 2; t++) {
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)texts[t], (utf8proc_ssize_t)lens[t], &nfc,
                                          UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        assert_true(m > 0);
        size_t cap = lens[t] + 16, na, nb;
        int32_t *a = malloc(cap * sizeof *a), *b = malloc(cap * sizeof *b);
        assert_true(a && b);
        assert_int_equal(tn_tokenize(v, texts[t], lens[t], false, false, a, cap, &na), TN_OK);
        v->nfc = false;
        assert_int_equal(tn_tokenize(v, (const char *)nfc, (size_t)m, false, false, b, cap, &nb), TN_OK);
        v->nfc = true;
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, na * sizeof *a);
        free(a);
        free(b);
        free(nfc);
    }
    free(zh);
    tn_vocab_free(v);
}

/* Writes Qwen3's tokenizer.json with <|im_start|> lstrip and <|im_end|>
 * rstrip into a fresh directory; returns the file's path (malloc'd). */
static char *write_strip_copy(char *dir)
{
    json_error_t e;
    json_t *root = json_load_file(QWEN3, 0, &e);
    assert_non_null(root);
    json_t *added = json_object_get(root, "added_tokens"), *t;
    size_t i;
    int hits = 0;
    json_array_foreach(added, i, t)
    {
        const char *c = json_string_value(json_object_get(t, "content"));
        if (!strcmp(c, "<|im_start|>"))
            hits += json_object_set(t, "lstrip", json_true()) == 0;
        if (!strcmp(c, "<|im_end|>"))
            hits += json_object_set(t, "rstrip", json_true()) == 0;
    }
    assert_int_equal(hits, 2);
    assert_non_null(mkdtemp(dir));
    char *path = malloc(strlen(dir) + 32);
    assert_non_null(path);
    sprintf(path, "%s/tokenizer.json", dir);
    assert_int_equal(json_dump_file(root, path, 0), 0);
    json_decref(root);
    return path;
}

static void test_strip(void **state)
{
    (void)state;
    char dir[] = "/tmp/tern-tok-strip-XXXXXX";
    char *path = write_strip_copy(dir);
    tn_vocab *v = NULL;
    assert_int_equal(tn_vocab_from_hf_json(path, &v), TN_OK);
    unlink(path);
    rmdir(dir);
    free(path);
    static const hf_case with[] = {
        {"hello  <|im_start|>  world <|im_end|> \n x", {14990, 151644, 220, 1879, 220, 151645, 87}, 7},
        {"a\n<|im_end|>\n\nb <|im_start|>", {64, 198, 151645, 65, 151644}, 5},
        {" <|endoftext|> y", {220, 151643, 379}, 3},
    };
    for (size_t i = 0; i < TN_ARRAY_LEN(with); i++)
        check(v, &with[i], true);
    tn_vocab_free(v);
    /* the file as it is: no strip */
    assert_int_equal(tn_vocab_from_hf_json(QWEN3, &v), TN_OK);
    static const hf_case without[] = {
        {"hello  <|im_start|>  world <|im_end|> \n x", {14990, 256, 151644, 220, 1879, 220, 151645, 715, 856}, 9},
        {"a\n<|im_end|>\n\nb <|im_start|>", {64, 198, 151645, 271, 65, 220, 151644}, 7},
    };
    for (size_t i = 0; i < TN_ARRAY_LEN(without); i++)
        check(v, &without[i], true);
    tn_vocab_free(v);
}

/* A normalizer other than NFC is refused, naming it. */
static void test_unsupported_normalizer(void **state)
{
    (void)state;
    json_error_t e;
    json_t *root = json_load_file(QWEN3, 0, &e);
    assert_non_null(root);
    json_t *norm = json_object();
    json_object_set_new(norm, "type", json_string("NFKC"));
    json_object_set_new(root, "normalizer", norm);
    char dir[] = "/tmp/tern-tok-norm-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    assert_int_equal(json_dump_file(root, path, 0), 0);
    json_decref(root);
    tn_vocab *v = NULL;
    assert_int_equal(tn_vocab_from_hf_json(path, &v), TN_ERR_UNSUPPORTED);
    assert_non_null(strstr(tn_last_error(), "NFKC"));
    assert_null(v);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_nfc), cmocka_unit_test(test_nfc_shortcut), cmocka_unit_test(test_nfc_stretches), cmocka_unit_test(test_strip),
                                       cmocka_unit_test(test_unsupported_normalizer)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
