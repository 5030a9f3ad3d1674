/*
 * test_moe — mixture-of-experts bookkeeping that the golden logits do not
 * show: the routing statistics window, that experts are addressed through
 * the placement map, the MLA cache width, that split attn_k_b / attn_v_b
 * tensors equal attn_kv_b, the real-shape presets'
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

/* Rewrites deepseek2 file src (F32 or F16 matrices) in the newer llama.cpp
 * form: attn_kv_b split into attn_k_b [nope, kv_lora, H] (W_UK[h]ᵀ per
 * head) and attn_v_b [kv_lora, dv, H], key_length / value_length of the
 * latent MQA head, head_count_kv 1, and the real sizes in *_mla keys. */
static void write_split(const char *src, const char *dst, const tn_hparams *hp)
{
    const int64_t H = hp->n_head, kvr = hp->kv_lora_rank, nope = hp->head_dim - hp->n_rot, dv = hp->head_dim_v;
    tn_gguf *g;
    tn_gguf_writer *w;
    assert_int_equal(tn_gguf_open(src, &g), TN_OK);
    assert_int_equal(tn_gguf_writer_new(&w), TN_OK);
    const char *skip[] = {"deepseek2.attention.key_length", "deepseek2.attention.value_length",
                          "deepseek2.attention.head_count_kv"};
    for (int64_t i = 0; i < tn_gguf_n_kv(g); i++) {
        const char *key = tn_gguf_kv_key(g, i);
        bool drop = false;
        for (size_t k = 0; k < TN_ARRAY_LEN(skip); k++)
            drop |= !strcmp(key, skip[k]);
        if (!drop)
            assert_int_equal(tn_gguf_set_from(w, g, i), TN_OK);
    }
    assert_int_equal(tn_gguf_set_u32(w, "deepseek2.attention.key_length", (uint32_t)(kvr + hp->n_rot)), TN_OK);
    assert_int_equal(tn_gguf_set_u32(w, "deepseek2.attention.value_length", (uint32_t)kvr), TN_OK);
    assert_int_equal(tn_gguf_set_u32(w, "deepseek2.attention.head_count_kv", 1), TN_OK);
    assert_int_equal(tn_gguf_set_u32(w, "deepseek2.attention.key_length_mla", (uint32_t)hp->head_dim), TN_OK);
    assert_int_equal(tn_gguf_set_u32(w, "deepseek2.attention.value_length_mla", (uint32_t)dv), TN_OK);
    char *bufs[2 * 64];
    int n_bufs = 0;
    for (int64_t i = 0; i < tn_gguf_n_tensors(g); i++) {
        const tn_gguf_tensor *t = tn_gguf_tensor_at(g, i);
        const char *kvb = strstr(t->name, ".attn_kv_b.weight");
        if (!kvb) {
            assert_int_equal(tn_gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data), TN_OK);
            continue;
        }
        assert_true(t->type == TN_DTYPE_F32 || t->type == TN_DTYPE_F16);
        assert_true(n_bufs + 2 <= (int)TN_ARRAY_LEN(bufs));
        const size_t es = t->type == TN_DTYPE_F32 ? 4 : 2;
        const char *in = t->data; /* per head: nope rows of W_UK, dv rows of W_UV, kvr columns */
        char *kb = malloc((size_t)(H * kvr * nope) * es), *vb = malloc((size_t)(H * dv * kvr) * es);
        assert_non_null(kb);
        assert_non_null(vb);
        for (int64_t h = 0; h < H; h++) {
            const char *head = in + (size_t)(h * (nope + dv) * kvr) * es;
            for (int64_t r = 0; r < kvr; r++)
                for (int64_t d = 0; d < nope; d++)
                    memcpy(kb + (size_t)((h * kvr + r) * nope + d) * es, head + (size_t)(d * kvr + r) * es, es);
            memcpy(vb + (size_t)(h * dv * kvr) * es, head + (size_t)(nope * kvr) * es, (size_t)(dv * kvr) * es);
        }
        char name[96];
        int blk = (int)(kvb - t->name);
        int64_t kne[3] = {nope, kvr, H}, vne[3] = {kvr, dv, H};
        snprintf(name, sizeof name, "%.*s.attn_k_b.weight", blk, t->name);
        assert_int_equal(tn_gguf_add_tensor(w, name, t->type, 3, kne, kb), TN_OK);
        snprintf(name, sizeof name, "%.*s.attn_v_b.weight", blk, t->name);
        assert_int_equal(tn_gguf_add_tensor(w, name, t->type, 3, vne, vb), TN_OK);
        bufs[n_bufs++] = kb;
        bufs[n_bufs++] = vb;
    }
    assert_true(n_bufs > 0);
    assert_int_equal(tn_gguf_writer_write(w, dst), TN_OK);
    tn_gguf_writer_free(w);
    tn_gguf_free(g);
    for (int i = 0; i < n_bufs; i++)
        free(bufs[i]);
}

/* W_UK / W_UV prepared from attn_kv_b at load, and the same matrices
 * shipped split as attn_k_b / attn_v_b (newer llama.cpp files), give the
 * same logits to the bit (F32 and F16 weights: the prepared W_UKᵀ keeps the
 * file's values). The split file's tensors are used in place. */
static void test_mla_split_tensors(void **state)
{
    (void)state;
    const char *dtypes[] = {"f32", "f16"};
    for (size_t k = 0; k < TN_ARRAY_LEN(dtypes); k++) {
        fixture fx;
        memset(&fx, 0, sizeof fx);
        fx.path = tn_test_tmp_path(".gguf");
        tn_synth_opts o = {.preset = "tiny-deepseek2", .dtype = dtypes[k], .vocab_path = VOCAB, .out_path = fx.path,
                           .seed = 3, .n_threads = 1};
        assert_int_equal(tn_synth_write(&o), TN_OK);
        assert_int_equal(tn_model_load(fx.path, &fx.m), TN_OK);
        assert_int_equal(tn_pool_new(2, &fx.pool), TN_OK);
        assert_int_equal(tn_kv_new(fx.m, 64, 1, &fx.kv), TN_OK);
        assert_int_equal(tn_forward_new(fx.m, N_TOK, &fx.f), TN_OK);
        const tn_hparams hp = fx.m->hp;
        assert_non_null(fx.m->mla_owned); /* W_UKᵀ made at load */
        assert_int_equal(fx.m->layers[0].wk_b.ne[0], hp.head_dim - hp.n_rot);
        assert_int_equal(fx.m->layers[0].wk_b.ne[1], hp.kv_lora_rank);
        size_t nl = (size_t)N_TOK * hp.n_vocab;
        float *a = malloc(nl * sizeof(float)), *b = malloc(nl * sizeof(float));
        assert_non_null(a);
        assert_non_null(b);
        prefill(&fx, N_TOK, a);

        char *split = tn_test_tmp_path(".gguf");
        write_split(fx.path, split, &hp);
        fixture fs = fx;
        assert_int_equal(tn_model_load(split, &fs.m), TN_OK);
        assert_null(fs.m->mla_owned);
        assert_int_equal(fs.m->hp.head_dim, hp.head_dim);
        assert_int_equal(fs.m->hp.head_dim_v, hp.head_dim_v);
        assert_null(fs.m->layers[0].wkv_b.data);
        assert_int_equal(tn_forward_new(fs.m, N_TOK, &fs.f), TN_OK);
        prefill(&fs, N_TOK, b);
        for (size_t i = 0; i < nl; i++)
            if (a[i] != b[i])
                fail_msg("%s: logit %zu: %.9g (attn_kv_b) != %.9g (attn_k_b + attn_v_b)", dtypes[k], i, a[i], b[i]);
        tn_forward_free(fs.f);
        tn_model_free(fs.m);
        unlink(split);
        free(split);
        free(a);
        free(b);
        fx_close(&fx);
    }
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
        cmocka_unit_test(test_mla_split_tensors),
        cmocka_unit_test(test_preset_params),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
