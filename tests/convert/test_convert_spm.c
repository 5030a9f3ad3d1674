/*
 * test_convert_spm — SentencePiece tokenizer.model → tokenizer.ggml.* keys.
 *
 * The Llama 2 tokenizer.model (../shared/data/vocab/llama2c) converted by
 * tern must give the same 32,000 tokens, scores and token types, and the
 * same BOS/EOS/UNK ids, as ggml-vocab-llama-spm.gguf, which llama.cpp's
 * converter wrote from the same model; the vocabulary built from it must
 * tokenize llama.cpp's test strings as llama.cpp does. Then hostile input:
 * truncations of a small hand-made protobuf and of the real file, and
 * random mutations, must fail with an error naming the byte offset (or
 * parse), never read outside the buffer (ASan).
 */
#include "testutil.h"

#include "convert/convert_int.h"
#include "format/gguf.h"
#include "tok/tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SPM_MODEL TN_SHARED_DATA "vocab/llama2c/tokenizer.model"
#define SPM_GGUF TN_SHARED_DATA "vocab/ggml-vocab-llama-spm.gguf"

/* Converts path to a scratch GGUF and opens it (NULL and the status on failure). */
static tn_status convert(const char *path, tn_gguf **out)
{
    *out = NULL;
    tn_gguf_writer *w;
    assert_int_equal(tn_gguf_writer_new(&w), TN_OK);
    tn_status s = tn__cv_spm_to_gguf(path, w);
    if (s == TN_OK) {
        char *tmp = tn_test_tmp_path(".gguf");
        assert_int_equal(tn_gguf_writer_write(w, tmp), TN_OK);
        assert_int_equal(tn_gguf_open(tmp, out), TN_OK);
        unlink(tmp);
        free(tmp);
    }
    tn_gguf_writer_free(w);
    return s;
}

static void test_same_as_llamacpp(void **state)
{
    tn_gguf *got, *want;
    if (convert(SPM_MODEL, &got) != TN_OK)
        fail_msg("%s", tn_last_error());
    assert_int_equal(tn_gguf_open(SPM_GGUF, &want), TN_OK);
    const char *keys[] = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"};
    for (size_t k = 0; k < 3; k++) {
        tn_gguf_type et1, et2;
        uint64_t n1, n2;
        const void *d1, *d2;
        assert_int_equal(tn_gguf_get_arr(got, keys[k], &et1, &n1, &d1), TN_OK);
        assert_int_equal(tn_gguf_get_arr(want, keys[k], &et2, &n2, &d2), TN_OK);
        assert_int_equal(et1, et2);
        assert_int_equal(n1, 32000);
        assert_int_equal(n1, n2);
        if (et1 == TN_GGUF_STRING) {
            int64_t i1 = tn_gguf_find_key(got, keys[k]), i2 = tn_gguf_find_key(want, keys[k]);
            for (uint64_t i = 0; i < n1; i++) {
                const char *s1, *s2;
                size_t l1, l2;
                assert_int_equal(tn_gguf_arr_str(got, i1, i, &s1, &l1), TN_OK);
                assert_int_equal(tn_gguf_arr_str(want, i2, i, &s2, &l2), TN_OK);
                if (l1 != l2 || memcmp(s1, s2, l1) != 0)
                    fail_msg("token %llu: '%.*s' vs llama.cpp's '%.*s'", (unsigned long long)i, (int)l1, s1, (int)l2, s2);
            }
        } else if (memcmp(d1, d2, 4 * n1) != 0) {
            fail_msg("%s differs from llama.cpp's", keys[k]);
        }
    }
    const char *ids[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                         "tokenizer.ggml.unknown_token_id"};
    for (size_t k = 0; k < 3; k++) {
        uint32_t a, b;
        assert_int_equal(tn_gguf_get_u32(got, ids[k], &a), TN_OK);
        assert_int_equal(tn_gguf_get_u32(want, ids[k], &b), TN_OK);
        assert_int_equal(a, b);
    }

    /* The vocabulary built from it tokenizes llama.cpp's vectors as llama.cpp does. */
    tn_vocab *v;
    assert_int_equal(tn_vocab_from_gguf(got, &v), TN_OK);
    tn_test_vector *vec;
    int n = tn_test_vectors_read(TN_SHARED_DATA "vocab/ggml-vocab-llama-spm.gguf.inp",
                                 TN_SHARED_DATA "vocab/ggml-vocab-llama-spm.gguf.out", &vec);
    assert_true(n > 10);
    int32_t ids_out[4096];
    for (int i = 0; i < n; i++) {
        size_t m = 0;
        assert_int_equal(tn_tokenize(v, vec[i].text, vec[i].len, false, false, ids_out, 4096, &m), TN_OK);
        assert_int_equal(m, vec[i].n_ids);
        for (size_t j = 0; j < m; j++)
            assert_int_equal(ids_out[j], vec[i].ids[j]);
    }
    printf("[spm] 32000 tokens, scores, types and ids equal llama.cpp's; %d tokenizer vectors pass\n", n);
    tn_test_vectors_free(vec, n);
    tn_vocab_free(v);
    tn_gguf_free(got);
    tn_gguf_free(want);
}

/* A tiny model: pieces "<unk>" (unknown), "<s>" (control), "a" (score -1.5),
 * a trainer spec with unk 0 / bos 1 / eos 1, a normalizer without the
 * dummy prefix. */
static const uint8_t TINY[] = {
    0x0a, 0x09, 0x0a, 0x05, '<', 'u', 'n', 'k', '>', 0x18, 0x02,                /* piece 0 */
    0x0a, 0x07, 0x0a, 0x03, '<', 's', '>', 0x18, 0x03,                          /* piece 1 */
    0x0a, 0x08, 0x0a, 0x01, 'a', 0x15, 0x00, 0x00, 0xc0, 0xbf,                  /* piece 2 */
    0x12, 0x0c, 0xc0, 0x02, 0x00, 0xc8, 0x02, 0x01, 0xd0, 0x02, 0x01, 0x08, 0x80, 0x01, /* trainer */
    0x1a, 0x02, 0x18, 0x00,                                                     /* normalizer */
};

static tn_status convert_bytes(const uint8_t *b, size_t n, tn_gguf **out)
{
    char *p = tn_test_tmp_path(".model");
    assert_int_equal(tn_test_write_file(p, b, n), 0);
    tn__err_clear();
    tn_status s = convert(p, out);
    if (s != TN_OK && !strstr(tn_last_error(), p))
        fail_msg("error '%s' does not name the file", tn_last_error());
    unlink(p);
    free(p);
    return s;
}

static void test_tiny_and_hostile(void **state)
{
    tn_gguf *g;
    assert_int_equal(convert_bytes(TINY, sizeof TINY, &g), TN_OK);
    tn_gguf_type et;
    uint64_t n;
    const void *d;
    assert_int_equal(tn_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n, &d), TN_OK);
    assert_int_equal(n, 3);
    float sc[3];
    memcpy(sc, d, sizeof sc);
    assert_true(sc[0] == 0.0f && sc[2] == -1.5f);
    assert_int_equal(tn_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n, &d), TN_OK);
    int32_t ty[3];
    memcpy(ty, d, sizeof ty);
    assert_true(ty[0] == 2 && ty[1] == 3 && ty[2] == 1);
    uint32_t eos;
    bool prefix = true;
    assert_int_equal(tn_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &eos), TN_OK);
    assert_int_equal(eos, 1);
    assert_int_equal(tn_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &prefix), TN_OK);
    assert_false(prefix);
    tn_gguf_free(g);

    /* Every truncation: a clean error or (at a message boundary) a parse. */
    int ok = 0;
    for (size_t k = 0; k < sizeof TINY; k++) {
        tn_status s = convert_bytes(TINY, k, &g);
        if (s == TN_OK) {
            ok++;
            tn_gguf_free(g);
        } else {
            assert_int_equal(s, TN_ERR_FORMAT);
            assert_true(strstr(tn_last_error(), "at byte") || strstr(tn_last_error(), "is not a piece id"));
        }
    }
    assert_true(ok < 6);
    /* Bad fields. */
    uint8_t b[sizeof TINY];
    memcpy(b, TINY, sizeof b);
    b[10] = 0x09; /* piece type 9 */
    assert_int_equal(convert_bytes(b, sizeof b, &g), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "piece type outside 1..6"));
    memcpy(b, TINY, sizeof b);
    b[1] = 0x7f; /* piece longer than the file */
    assert_int_equal(convert_bytes(b, sizeof b, &g), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "longer than its message"));
    memcpy(b, TINY, sizeof b);
    b[37] = 0x07; /* bos id 7 of 3 pieces */
    assert_int_equal(convert_bytes(b, sizeof b, &g), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "bos_token_id 7 is not a piece id"));
    /* Random mutations. */
    uint64_t r = 0x243f6a8885a308d3ull;
    for (int it = 0; it < 3000; it++) {
        memcpy(b, TINY, sizeof b);
        for (int k = 0; k < 2; k++) {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            b[r % sizeof b] = (uint8_t)(r >> 40);
        }
        if (convert_bytes(b, sizeof b, &g) == TN_OK)
            tn_gguf_free(g);
    }
    /* Truncations of the real file at 64 places. */
    size_t len;
    uint8_t *real = (uint8_t *)tn_test_read_file(SPM_MODEL, &len);
    assert_non_null(real);
    for (int k = 1; k <= 64; k++) {
        size_t cut = len * (size_t)k / 65 + (size_t)k;
        if (convert_bytes(real, cut, &g) == TN_OK)
            tn_gguf_free(g);
    }
    free(real);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_as_llamacpp),
        cmocka_unit_test(test_tiny_and_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
