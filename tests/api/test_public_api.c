/*
 * test_public_api.c — libtern through its public header only, linked
 * against the shared library: load stories260K, tokenize a prompt, prefill
 * it, decode greedily with the sampler and check the text against
 * llama.cpp's reference continuation. This is also the usage example of
 * docs/api.md.
 */
#include <tern/tern.h>

#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#define MODEL TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf"
#define N_GEN 64

static void test_generate_matches_llamacpp(void **state)
{
    (void)state;
    tn_model *m = NULL;
    tn_vocab *v = NULL;
    tn_pool *pool = NULL;
    tn_kv_cache *kv = NULL;
    tn_forward *fw = NULL;
    tn_sampler *smp = NULL;
    assert_int_equal(tn_model_load(MODEL, &m), TN_OK);
    assert_int_equal(tn_vocab_load(MODEL, &v), TN_OK);
    assert_int_equal(tn_model_n_vocab(m), 512);
    assert_int_equal(tn_model_n_ctx_train(m), 512);
    assert_int_equal(tn_vocab_n_tokens(v), 512);
    assert_int_equal(tn_pool_new(2, &pool), TN_OK);
    assert_int_equal(tn_kv_new(m, 128, 1, &kv), TN_OK);
    assert_int_equal(tn_forward_new(m, 64, &fw), TN_OK);
    tn_sample_params sp = tn_sample_params_default();
    sp.temperature = 0;
    assert_int_equal(tn_sampler_new(&sp, tn_model_n_vocab(m), &smp), TN_OK);

    const char *prompt = "Once upon a time";
    int32_t ids[64];
    size_t n = 0;
    assert_int_equal(tn_tokenize(v, prompt, strlen(prompt), tn_vocab_add_bos(v), false, ids, 64, &n), TN_OK);
    assert_true(n >= 2 && ids[0] == tn_vocab_bos(v));

    /* the text: the prompt as its tokens print, then the continuation */
    char *text = calloc(1, 64 * 1024);
    size_t len = 0;
    tn_detok dt;
    tn_detok_init(&dt);
    for (size_t i = 0; i < n; i++)
        len += tn_detok_push(&dt, v, ids[i], text + len, TN_DETOK_MAX);

    int32_t pos[64], seq[64], slot[64];
    bool want[64];
    for (size_t i = 0; i < n; i++) {
        pos[i] = (int32_t)i, seq[i] = 0, slot[i] = (int32_t)i, want[i] = i + 1 == n;
        tn_sampler_accept(smp, ids[i]);
    }
    float *logits = malloc(sizeof(float) * 512);
    tn_batch b = {(int32_t)n, ids, pos, seq, slot, want};
    assert_int_equal(tn_forward_run(fw, kv, pool, &b, logits), TN_OK);
    int32_t p = (int32_t)n;
    for (int k = 0; k < N_GEN; k++) {
        int32_t t = tn_sampler_sample(smp, logits);
        tn_sampler_accept(smp, t);
        if (tn_vocab_is_eog(v, t))
            break;
        len += tn_detok_push(&dt, v, t, text + len, TN_DETOK_MAX);
        bool yes = true;
        tn_batch d = {1, &t, &p, &seq[0], &p, &yes};
        assert_int_equal(tn_forward_run(fw, kv, pool, &d, logits), TN_OK);
        p++;
    }
    len += tn_detok_flush(&dt, text + len, TN_DETOK_MAX);

    /* llama.cpp's output for this prompt is the first block of the file */
    size_t ref_len = 0;
    char *ref = tn_test_read_file(TN_SHARED_DATA "models/stories260K/llamacpp-greedy-64.txt", &ref_len);
    assert_non_null(ref);
    char *sep = strstr(ref, "\n\n\n----");
    assert_non_null(sep);
    *sep = '\0';
    assert_string_equal(text, ref);

    free(ref);
    free(text);
    free(logits);
    tn_sampler_free(smp);
    tn_forward_free(fw);
    tn_kv_free(kv);
    tn_pool_free(pool);
    tn_vocab_free(v);
    tn_model_free(m);
}

static void test_errors_say_where(void **state)
{
    (void)state;
    tn_model *m = NULL;
    assert_int_equal(tn_model_load("/nonexistent/model.gguf", &m), TN_ERR_IO);
    assert_null(m);
    assert_non_null(strstr(tn_last_error(), "/nonexistent/model.gguf"));
    assert_string_equal(tn_status_str(TN_ERR_FORMAT), "malformed data");
    tn_vocab *v = NULL;
    assert_int_not_equal(tn_vocab_load("/nonexistent/vocab.gguf", &v), TN_OK);
    assert_null(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_matches_llamacpp),
        cmocka_unit_test(test_errors_say_where),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
