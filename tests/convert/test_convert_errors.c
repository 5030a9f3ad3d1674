/*
 * test_convert_errors — bad or incomplete checkpoints: each must fail with
 * an error naming the file and the field or tensor, and leave no output.
 *
 * The good checkpoints come from scripts/make_hf_tiny.py (llama; qwen2 for
 * the sharded form, qwen3 for tied embeddings, qwen3_moe for the spelling
 * transformers 5 saves); each case copies one, breaks one thing (a
 * config.json field, a tensor, a shard, the tokenizer) and converts.
 */
#include "testutil.h"

#include "convert/convert.h"
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_root[128];
static char g_case[192];

/* Copies family's checkpoint to g_case (fresh). */
static void fresh(const char *family)
{
    char cmd[600];
    snprintf(g_case, sizeof g_case, "%s/case", g_root);
    snprintf(cmd, sizeof cmd, "rm -rf %s && cp -r %s/%s %s", g_case, g_root, family, g_case);
    assert_int_equal(system(cmd), 0);
}

static void path_of(const char *name, char *buf, size_t cap) { snprintf(buf, cap, "%s/%s", g_case, name); }

/* Replaces the first `from` in file name by `to`. */
static void edit(const char *name, const char *from, const char *to)
{
    char p[256];
    path_of(name, p, sizeof p);
    size_t len;
    char *s = tn_test_read_file(p, &len);
    assert_non_null(s);
    char *at = memmem(s, len, from, strlen(from));
    if (!at)
        fail_msg("%s has no '%s'", p, from);
    size_t a = (size_t)(at - s), fl = strlen(from), tl = strlen(to);
    char *o = malloc(len - fl + tl + 1);
    memcpy(o, s, a);
    memcpy(o + a, to, tl);
    memcpy(o + a + tl, at + fl, len - a - fl + 1);
    assert_int_equal(tn_test_write_file(p, o, len - fl + tl), 0);
    free(o);
    free(s);
}

static void remove_file(const char *name)
{
    char p[256];
    path_of(name, p, sizeof p);
    assert_int_equal(unlink(p), 0);
}

static void expect_fail(tn_dtype dtype, const char *needle1, const char *needle2)
{
    char *out = tn_test_tmp_path(".gguf");
    tn__err_clear();
    tn_status s = tn_convert_hf(g_case, out, dtype, NULL);
    if (s == TN_OK)
        fail_msg("conversion of a broken checkpoint succeeded (expected '%s')", needle1);
    const char *e = tn_last_error();
    printf("[convert-error] %s\n", e);
    if (!strstr(e, needle1) || (needle2 && !strstr(e, needle2)))
        fail_msg("error '%s' does not mention '%s'%s%s", e, needle1, needle2 ? " and " : "", needle2 ? needle2 : "");
    assert_int_not_equal(access(out, F_OK), 0);
    free(out);
}

static void test_good_still_converts(void **state)
{
    fresh("llama");
    char *out = tn_test_tmp_path(".gguf");
    tn_convert_info info;
    assert_int_equal(tn_convert_hf(g_case, out, TN_DTYPE_F16, &info), TN_OK);
    assert_string_equal(info.arch, "llama");
    assert_int_equal(info.n_vocab, 512);
    tn_model *m;
    assert_int_equal(tn_model_load(out, &m), TN_OK);
    tn_model_free(m);
    unlink(out);
    free(out);
}

/* transformers 5 saves configs with rope_parameters instead of rope_theta
 * and Qwen-MoE's expert count as num_local_experts: the same GGUF results. */
static void test_transformers5_spelling(void **state)
{
    fresh("qwen3_moe");
    edit("config.json", "\"rope_theta\": 10000.0", "\"rope_theta\": 20000.0"); /* not the default */
    char *a = tn_test_tmp_path(".gguf"), *b = tn_test_tmp_path(".gguf");
    assert_int_equal(tn_convert_hf(g_case, a, TN_DTYPE_F32, NULL), TN_OK);
    edit("config.json", "\"num_experts\": 4", "\"num_local_experts\": 4");
    edit("config.json", "\"rope_theta\": 20000.0", "\"rope_parameters\": {\"rope_theta\": 20000.0, \"rope_type\": \"default\"}");
    if (tn_convert_hf(g_case, b, TN_DTYPE_F32, NULL) != TN_OK)
        fail_msg("%s", tn_last_error());
    size_t la, lb;
    char *da = tn_test_read_file(a, &la), *db = tn_test_read_file(b, &lb);
    assert_non_null(da);
    assert_non_null(db);
    assert_int_equal(la, lb);
    assert_memory_equal(da, db, la);
    free(da);
    free(db);
    unlink(a);
    unlink(b);
    free(a);
    free(b);
}

static void test_config(void **state)
{
    fresh("llama");
    remove_file("config.json");
    expect_fail(TN_DTYPE_F32, "config.json", "cannot open");
    fresh("llama");
    edit("config.json", "\"hidden_size\": 64", "\"hidden_sizes\": 64");
    expect_fail(TN_DTYPE_F32, "config.json", "missing field 'hidden_size'");
    fresh("llama");
    edit("config.json", "\"hidden_size\": 64", "\"hidden_size\": \"64\"");
    expect_fail(TN_DTYPE_F32, "config.json", "field 'hidden_size' is not an integer");
    fresh("llama");
    edit("config.json", "\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"");
    expect_fail(TN_DTYPE_F32, "config.json", "model_type 'gpt2' is not supported");
    fresh("llama");
    edit("config.json", "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3");
    expect_fail(TN_DTYPE_F32, "config.json", "not a multiple of num_key_value_heads 3");
    fresh("llama");
    edit("config.json", "\"rope_scaling\": null", "\"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 8.0}");
    expect_fail(TN_DTYPE_F32, "config.json", "type 'dynamic' is not supported");
    fresh("llama");
    edit("config.json", "\"rope_scaling\": null", "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}");
    expect_fail(TN_DTYPE_F32, "config.json", "missing field 'rope_scaling.low_freq_factor'");
    fresh("llama");
    edit("config.json", "{", "{,");
    expect_fail(TN_DTYPE_F32, "config.json:", NULL);
}

static void test_tensors(void **state)
{
    fresh("llama");
    edit("config.json", "\"intermediate_size\": 96", "\"intermediate_size\": 97");
    expect_fail(TN_DTYPE_F32, "model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight' has shape [96, 64]",
                "config.json implies [97, 64]");
    fresh("llama");
    edit("config.json", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1");
    expect_fail(TN_DTYPE_F32, "tensor 'model.layers.1.", "is not used by the llama converter");
    fresh("llama");
    edit("config.json", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    expect_fail(TN_DTYPE_F32, "has no tensor 'model.layers.2.input_layernorm.weight'", NULL);
    fresh("llama");
    edit("config.json", "\"vocab_size\": 512", "\"vocab_size\": 600");
    expect_fail(TN_DTYPE_F32, "'model.embed_tokens.weight' has shape [512, 64]", "implies [600, 64]");
    fresh("qwen3");
    edit("config.json", "\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false");
    expect_fail(TN_DTYPE_F32, "no tensor 'lm_head.weight' and config.json's tie_word_embeddings is not true", NULL);
    fresh("llama");
    edit("model.safetensors", "\"dtype\":\"F32\"", "\"dtype\":\"I32\"");
    expect_fail(TN_DTYPE_F32, "has dtype I32", NULL);
    fresh("llama");
    edit("model.safetensors", "\"dtype\":\"F32\"", "\"dtype\":\"F31\"");
    expect_fail(TN_DTYPE_F32, "model.safetensors: tensor", "unknown dtype 'F31'");
    fresh("llama");
    char p[256];
    path_of("model.safetensors", p, sizeof p);
    assert_int_equal(truncate(p, 4000), 0);
    expect_fail(TN_DTYPE_F32, "model.safetensors", "outside the data buffer");
    fresh("qwen2");
    remove_file("model-00002-of-00002.safetensors");
    expect_fail(TN_DTYPE_F32, "cannot open", "model-00002-of-00002.safetensors");
    fresh("qwen2");
    edit("model.safetensors.index.json", "model-00002-of-00002", "model-00001-of-00002");
    expect_fail(TN_DTYPE_F32, "model.safetensors.index.json: weight_map puts tensor", "which lacks it");
}

static void test_tokenizer_and_output(void **state)
{
    fresh("llama");
    remove_file("tokenizer.json");
    expect_fail(TN_DTYPE_F32, "neither tokenizer.json nor tokenizer.model", NULL);
    char p[256];
    path_of("tokenizer.model", p, sizeof p);
    const unsigned char proto[] = {0x0a, 0x0b, 0x0a, 0x05, '<', 'u', 'n', 'k', '>', 0x15, 0, 0, 0, 0};
    assert_int_equal(tn_test_write_file(p, proto, sizeof proto), 0);
    expect_fail(TN_DTYPE_F32, "tokenizer.model: not a SentencePiece model", "at byte");
    /* A real SentencePiece model (Llama 2's 32,000 pieces) for a 512-row embedding. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp %svocab/llama2c/tokenizer.model %s", TN_SHARED_DATA, p);
    assert_int_equal(system(cmd), 0);
    expect_fail(TN_DTYPE_F32, "tokenizer.model has 32000 tokens but config.json's vocab_size", "is 512");
    fresh("llama");
    edit("tokenizer.json", "{", "[");
    expect_fail(TN_DTYPE_F32, "tokenizer.json", NULL);
    fresh("llama");
    edit("tokenizer.json", "\"type\": \"BPE\"", "\"type\": \"Unigram\"");
    expect_fail(TN_DTYPE_F32, "tokenizer.json", NULL);
    fresh("llama");
    expect_fail(TN_DTYPE_Q5_K, "output type q5_k", NULL);
    char *out = "/nonexistent-dir/x.gguf";
    assert_int_not_equal(tn_convert_hf(g_case, out, TN_DTYPE_F32, NULL), TN_OK);
    assert_non_null(strstr(tn_last_error(), "/nonexistent-dir/x.gguf"));
}

int main(void)
{
    snprintf(g_root, sizeof g_root, "/tmp/tern-convert-err-%d", (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "python3 scripts/make_hf_tiny.py --out %s --family llama --family qwen2 --family qwen3 --family qwen3_moe", g_root);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_convert_errors: '%s' failed (python3 with numpy is required)\n", cmd);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_still_converts),
        cmocka_unit_test(test_transformers5_spelling),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_tensors),
        cmocka_unit_test(test_tokenizer_and_output),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_root);
    if (system(cmd) != 0)
        fprintf(stderr, "test_convert_errors: could not remove %s\n", g_root);
    return rc;
}
