/*
 * test_moe — mixture-of-experts bookkeeping that the golden logits do not
 * show: the routing statistics window, that experts are addressed through
 * the placement map, the MLA cache width, the real-shape presets'
 * parameter counts, and that malformed MoE / MLA files are named errors. (Routing and MLA arithmetic are checked against the
 * numpy reference by test_golden: tiny-mixtral, tiny-qwen2moe,
 * tiny-qwen3moe, tiny-deepseek2, tiny-deepseek3.)
 */
#include "testutil.h"

#include "model/model_int.h"
#include "model/synth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VOCAB "../shared/data/models/stories260K/stories260K.v3.derived.gguf"
#define N_TOK 16

/* The statistics window: counts leave it after `window` calls; totals stay. */
static void test_stats_window(void **state)
{
    (void)state;
    tn_moe_stats *st = NULL;
    assert_int_equal(tn__moe_stats_new(2, 4, 3, &st), TN_OK);
    assert_int_equal(tn_moe_stats_window(st), 3);
    assert_int_equal(tn_moe_stats_n_calls(st), 0);
    for (int call = 0; call < 5; call++) {
        tn__moe_stats_begin_call(st);
        tn__moe_stats_add(st, 1, 2, call + 1); /* calls add 1, 2, 3, 4, 5 */
        tn__moe_stats_add(st, 0, 0, 10);
    }
    assert_int_equal(tn_moe_stats_n_calls(st), 3);
    assert_int_equal(tn_moe_stats_count(st, 1, 2), 3 + 4 + 5);
    assert_int_equal(tn_moe_stats_total(st, 1, 2), 1 + 2 + 3 + 4 + 5);
    assert_int_equal(tn_moe_stats_count(st, 0, 0), 30);
    assert_int_equal(tn_moe_stats_count(st, 0, 1), 0);
    assert_int_equal(tn_moe_stats_count(st, 2, 0), 0);  /* out of range */
    assert_int_equal(tn_moe_stats_count(st, 0, -1), 0);
    tn__moe_stats_free(st);
    assert_int_not_equal(tn__moe_stats_new(0, 4, 3, &st), TN_OK);
}

typedef struct fixture {
    char *path;
    tn_model *m;
    tn_pool *pool;
    tn_kv_cache *kv;
    tn_forward *f;
} fixture;

static void fx_open(fixture *fx, const char *preset)
{
    memset(fx, 0, sizeof *fx);
    fx->path = tn_test_tmp_path(".gguf");
    tn_synth_opts o = {.preset = preset, .dtype = "f32", .vocab_path = VOCAB, .out_path = fx->path, .seed = 7,
                       .n_threads = 1};
    if (tn_synth_write(&o) != TN_OK)
        fail_msg("synth %s: %s", preset, tn_last_error());
    if (tn_model_load(fx->path, &fx->m) != TN_OK)
        fail_msg("load %s: %s", preset, tn_last_error());
    assert_int_equal(tn_pool_new(2, &fx->pool), TN_OK);
    assert_int_equal(tn_kv_new(fx->m, 64, 1, &fx->kv), TN_OK);
    assert_int_equal(tn_forward_new(fx->m, N_TOK, &fx->f), TN_OK);
}

static void fx_close(fixture *fx)
{
    tn_forward_free(fx->f);
    tn_kv_free(fx->kv);
    tn_pool_free(fx->pool);
    tn_model_free(fx->m);
    unlink(fx->path);
    free(fx->path);
}

/* Prefills tokens 0..n-1 (ids spread over the vocabulary) from position 0
 * into a cleared cache; every row's logits into out ((n, n_vocab)). */
static void prefill(fixture *fx, int32_t n, float *out)
{
    int32_t tok[N_TOK], pos[N_TOK], seq[N_TOK], slot[N_TOK];
    bool want[N_TOK];
    for (int32_t i = 0; i < n; i++) {
        tok[i] = (i * 37 + 1) % fx->m->hp.n_vocab;
        pos[i] = slot[i] = i;
        seq[i] = 0;
        want[i] = true;
    }
    tn_kv_clear(fx->kv);
    tn_batch b = {.n_tokens = n, .token = tok, .pos = pos, .seq_id = seq, .kv_slot = slot, .want_logits = want};
    if (tn_forward_run(fx->f, fx->kv, fx->pool, &b, out) != TN_OK)
        fail_msg("forward: %s", tn_last_error());
}

/* Every (token, expert) assignment of a call is counted once per MoE layer:
 * the counts of a layer sum to n_tokens * n_expert_used. */
static void test_routing_counts(void **state)
{
    (void)state;
    fixture fx;
    fx_open(&fx, "tiny-qwen3moe");
    const tn_hparams *hp = &fx.m->hp;
    float *out = malloc((size_t)N_TOK * hp->n_vocab * sizeof(float));
    assert_non_null(out);
    const tn_moe_stats *st = tn_forward_moe_stats(fx.f);
    assert_non_null(st);
    prefill(&fx, N_TOK, out);
    prefill(&fx, 5, out);
    assert_int_equal(tn_moe_stats_n_calls(st), 2);
    for (int32_t il = 0; il < hp->n_layer; il++) {
        int64_t sum = 0, total = 0, used = 0;
        for (int32_t e = 0; e < hp->n_expert; e++) {
            sum += tn_moe_stats_count(st, il, e);
            total += tn_moe_stats_total(st, il, e);
            used += tn_moe_stats_count(st, il, e) > 0;
        }
        assert_int_equal(sum, (N_TOK + 5) * hp->n_expert_used);
        assert_int_equal(total, sum);
        assert_true(used >= 2); /* random routers spread 21 tokens over more than one expert */
    }
    free(out);
    fx_close(&fx);
}

/* The forward pass reads experts through expert_map: remapping two experts
 * of a layer changes the logits, and restoring the map restores them to
 * the bit. A dense model has no map and no statistics. */
static void test_placement_map(void **state)
{
    (void)state;
    fixture fx;
    fx_open(&fx, "tiny-mixtral");
    const tn_hparams *hp = &fx.m->hp;
    size_t nl = (size_t)N_TOK * hp->n_vocab;
    float *a = malloc(nl * sizeof(float)), *b = malloc(nl * sizeof(float)), *c = malloc(nl * sizeof(float));
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_non_null(fx.m->expert_map);
    for (int32_t e = 0; e < hp->n_expert; e++)
        assert_int_equal(fx.m->expert_map[e], e);
    prefill(&fx, N_TOK, a);
    int32_t *map = fx.m->expert_map; /* layer 0 */
    map[0] = 1;
    map[1] = 0;
    prefill(&fx, N_TOK, b);
    map[0] = 0;
    map[1] = 1;
    prefill(&fx, N_TOK, c);
    assert_memory_not_equal(a, b, nl * sizeof(float));
    assert_memory_equal(a, c, nl * sizeof(float));
    free(a);
    free(b);
    free(c);
    fx_close(&fx);

    fx_open(&fx, "tiny-llama");
    assert_null(fx.m->expert_map);
    assert_null(tn_forward_moe_stats(fx.f));
    fx_close(&fx);
}

/* The MLA cache holds kv_lora_rank + n_rot floats per token and layer. */
static void test_mla_cache_width(void **state)
{
    (void)state;
    fixture fx;
    fx_open(&fx, "tiny-deepseek2");
    const tn_hparams *hp = &fx.m->hp;
    assert_int_equal(hp->kv_lora_rank, 32);
    assert_int_equal(hp->n_rot, 16);
    assert_int_equal(hp->q_lora_rank, 32);
    assert_int_equal(hp->n_layer_dense_lead, 1);
    assert_true(hp->rope_yarn);
    assert_int_equal(fx.kv->kv_dim, hp->kv_lora_rank + hp->n_rot);
    assert_null(fx.m->layers[0].ffn_gate_inp.data);
    assert_non_null(fx.m->layers[1].ffn_gate_inp.data);
    fx_close(&fx);
}

/* Real-shape MoE presets: parameter counts of the published models. */
static void test_preset_params(void **state)
{
    (void)state;
    /* DeepSeek-V2-Lite: 15.7B with its 102400-token vocabulary. */
    int64_t n = tn_synth_n_params(tn_synth_find_preset("deepseek-v2-lite"), 102400);
    assert_true(n > 15600000000LL && n < 15800000000LL);
    /* Mixtral 8x7B is 46.7B over 32 layers and a 32000 vocabulary; the preset keeps 14 layers. */
    n = tn_synth_n_params(tn_synth_find_preset("mixtral-like"), 32000);
    int64_t full = (n - 2 * 32000 * 4096 - 4096) / 14 * 32 + 2 * 32000 * 4096 + 4096;
    assert_true(full > 46600000000LL && full < 46800000000LL);
    /* Qwen3-30B-A3B is 30.5B over 48 layers and 151936 tokens; the preset keeps 32. */
    n = tn_synth_n_params(tn_synth_find_preset("qwen3-30b-a3b-like"), 151936);
    full = (n - 2 * 151936 * 2048 - 2048) / 32 * 48 + 2 * 151936 * 2048 + 2048;
    assert_true(full > 30400000000LL && full < 30600000000LL);
}

/* A copy of synth preset `preset` (f32) with key drop_key left out, u32 key
 * set_key set to set_val, and tensor drop_tensor left out; tn_model_load
 * must fail with status want and a message containing needle. */
static void expect_bad(const char *preset, const char *drop_key, const char *set_key, uint32_t set_val,
                       const char *drop_tensor, tn_status want, const char *needle)
{
    char *src = tn_test_tmp_path(".gguf"), *dst = tn_test_tmp_path(".gguf");
    tn_synth_opts o = {.preset = preset, .dtype = "f32", .vocab_path = VOCAB, .out_path = src, .seed = 1,
                       .n_threads = 1};
    assert_int_equal(tn_synth_write(&o), TN_OK);
    tn_gguf *g;
    tn_gguf_writer *w;
    assert_int_equal(tn_gguf_open(src, &g), TN_OK);
    assert_int_equal(tn_gguf_writer_new(&w), TN_OK);
    for (int64_t i = 0; i < tn_gguf_n_kv(g); i++) {
        const char *key = tn_gguf_kv_key(g, i);
        if (drop_key && !strcmp(key, drop_key))
            continue;
        if (set_key && !strcmp(key, set_key))
            assert_int_equal(tn_gguf_set_u32(w, key, set_val), TN_OK);
        else
            assert_int_equal(tn_gguf_set_from(w, g, i), TN_OK);
    }
    for (int64_t i = 0; i < tn_gguf_n_tensors(g); i++) {
        const tn_gguf_tensor *t = tn_gguf_tensor_at(g, i);
        if (drop_tensor && !strcmp(t->name, drop_tensor))
            continue;
        assert_int_equal(tn_gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data), TN_OK);
    }
    assert_int_equal(tn_gguf_writer_write(w, dst), TN_OK);
    tn_gguf_writer_free(w);
    tn_gguf_free(g);
    tn_model *m = (tn_model *)1;
    tn_status s = tn_model_load(dst, &m);
    if (s != want || !strstr(tn_last_error(), needle))
        fail_msg("%s: status %d, message '%s'; expected %d naming '%s'", preset, s, tn_last_error(), want, needle);
    assert_null(m);
    unlink(src);
    unlink(dst);
    free(src);
    free(dst);
}

/* Malformed MoE / MLA files are errors that name what is wrong. */
static void test_bad_files(void **state)
{
    (void)state;
    expect_bad("tiny-mixtral", NULL, "llama.expert_used_count", 5, NULL, TN_ERR_FORMAT, "expert_used_count");
    expect_bad("tiny-mixtral", NULL, NULL, 0, "blk.1.ffn_gate_inp.weight", TN_ERR_FORMAT, "blk.1.ffn_gate_inp");
    expect_bad("tiny-qwen2moe", NULL, NULL, 0, "blk.0.ffn_up_exps.weight", TN_ERR_FORMAT, "blk.0.ffn_up_exps");
    expect_bad("tiny-qwen2moe", NULL, "qwen2moe.expert_feed_forward_length", 64, NULL, TN_ERR_FORMAT,
               "ffn_gate_exps");
    expect_bad("tiny-qwen3moe", "qwen3moe.expert_count", NULL, 0, NULL, TN_ERR_FORMAT, "expert_count");
    expect_bad("tiny-deepseek2", "deepseek2.attention.kv_lora_rank", NULL, 0, NULL, TN_ERR_FORMAT, "kv_lora_rank");
    expect_bad("tiny-deepseek2", NULL, NULL, 0, "blk.0.attn_kv_b.weight", TN_ERR_FORMAT, "attn_kv_b");
    expect_bad("tiny-deepseek3", NULL, "deepseek2.expert_group_used_count", 5, NULL, TN_ERR_FORMAT, "groups");
    expect_bad("tiny-deepseek3", NULL, "deepseek2.leading_dense_block_count", 0, NULL, TN_ERR_FORMAT,
               "blk.0.ffn_gate_inp");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_window),
        cmocka_unit_test(test_routing_counts),
        cmocka_unit_test(test_placement_map),
        cmocka_unit_test(test_mla_cache_width),
        cmocka_unit_test(test_preset_params),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
