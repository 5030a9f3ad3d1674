/*
 * test_synth.c — random-weight models of real shapes (src/model/synth.h).
 *
 * Every tiny preset is written in every dtype with the stories260K
 * vocabulary, read back with the GGUF reader and checked against a tensor
 * list built here independently of synth.c: names, shapes, types, metadata,
 * the value statistics the forward pass relies on (matrices ~N(0, 1/n_in),
 * norms near 1), that tern's loader accepts the file with the preset's
 * hyper-parameters and that a forward pass gives finite, unit-scale logits.
 * Also: same seed, same bytes; other seed, other bytes; a few values of the
 * random stream pinned by an independent implementation; clear errors for
 * bad options.
 */
#include "kern/kern.h"
#include "model/synth.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VOCAB TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf"
#define N_VOCAB 512

static const char *tiny_presets[] = {"tiny-llama", "tiny-llama-rope-linear", "tiny-llama3", "tiny-qwen2",
                                     "tiny-qwen3"};
static const char *dtypes[] = {"f32", "f16", "bf16", "q8_0", "q4_0"};

static tn_status synth_nt(const char *preset, const char *dtype, const char *vocab, const char *out, uint64_t seed,
                          int n_threads)
{
    tn_synth_opts o = {.preset = preset, .dtype = dtype, .vocab_path = vocab, .out_path = out, .seed = seed,
                       .n_threads = n_threads};
    return tn_synth_write(&o);
}

static tn_status synth(const char *preset, const char *dtype, const char *vocab, const char *out, uint64_t seed)
{
    return synth_nt(preset, dtype, vocab, out, seed, 1);
}

/* --- the expected tensor list, built from the preset alone ---------------- */

typedef struct expect {
    char name[64];
    int64_t ne0, ne1; /* ne1 = 0: a vector */
    bool matrix;      /* in the requested dtype; otherwise F32 */
} expect;

static int expected_tensors(const tn_synth_preset *p, int64_t n_vocab, expect *e)
{
    int n = 0;
    const int64_t q = (int64_t)p->n_head * p->head_dim, kv = (int64_t)p->n_head_kv * p->head_dim;
#define E(nm, a, b, m)                                    \
    do {                                                  \
        snprintf(e[n].name, sizeof e[n].name, "%s", nm);  \
        e[n].ne0 = (a), e[n].ne1 = (b), e[n].matrix = (m); \
        n++;                                              \
    } while (0)
    E("token_embd.weight", p->n_embd, n_vocab, true);
    E("output_norm.weight", p->n_embd, 0, false);
    if (!p->tied)
        E("output.weight", p->n_embd, n_vocab, true);
    if (p->rope_freqs_llama3)
        E("rope_freqs.weight", p->head_dim / 2, 0, false);
    for (int l = 0; l < p->n_layer; l++) {
        char b[64];
#define L(suffix, a, bb, m)                                     \
    do {                                                        \
        snprintf(b, sizeof b, "blk.%d.%s", l, suffix);          \
        E(b, a, bb, m);                                         \
    } while (0)
        L("attn_norm.weight", p->n_embd, 0, false);
        L("attn_q.weight", p->n_embd, q, true);
        L("attn_k.weight", p->n_embd, kv, true);
        L("attn_v.weight", p->n_embd, kv, true);
        L("attn_output.weight", q, p->n_embd, true);
        L("ffn_norm.weight", p->n_embd, 0, false);
        L("ffn_gate.weight", p->n_embd, p->n_ff, true);
        L("ffn_up.weight", p->n_embd, p->n_ff, true);
        L("ffn_down.weight", p->n_ff, p->n_embd, true);
        if (p->qkv_bias) {
            L("attn_q.bias", q, 0, false);
            L("attn_k.bias", kv, 0, false);
            L("attn_v.bias", kv, 0, false);
        }
        if (p->qk_norm) {
            L("attn_q_norm.weight", p->head_dim, 0, false);
            L("attn_k_norm.weight", p->head_dim, 0, false);
        }
#undef L
    }
#undef E
    return n;
}

static uint32_t get_u32(const tn_gguf *g, const char *arch, const char *key)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    uint32_t v = 0;
    assert_int_equal(tn_gguf_get_u32(g, k, &v), TN_OK);
    return v;
}

static float get_f32(const tn_gguf *g, const char *arch, const char *key)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    float v = 0;
    assert_int_equal(tn_gguf_get_f32(g, k, &v), TN_OK);
    return v;
}

static bool str_is(const tn_gguf *g, const char *key, const char *want)
{
    const char *s;
    size_t n;
    if (tn_gguf_get_str(g, key, &s, &n) != TN_OK)
        return false;
    return n == strlen(want) && !memcmp(s, want, n);
}

/* Metadata: the hyper-parameters of the preset, the file type, and every
 * tokenizer.* key of the vocabulary with the same type. */
static void check_metadata(const tn_gguf *g, const tn_gguf *vocab, const tn_synth_preset *p, tn_dtype dt)
{
    const char *arch = p->arch == TN_ARCH_LLAMA ? "llama" : p->arch == TN_ARCH_QWEN2 ? "qwen2" : "qwen3";
    assert_true(str_is(g, "general.architecture", arch));
    assert_true(tn_gguf_find_key(g, "general.name") >= 0);
    uint32_t ft = 99;
    assert_int_equal(tn_gguf_get_u32(g, "general.file_type", &ft), TN_OK);
    const uint32_t want_ft = dt == TN_DTYPE_F32 ? 0 : dt == TN_DTYPE_F16 ? 1 : dt == TN_DTYPE_Q4_0 ? 2
                           : dt == TN_DTYPE_Q8_0 ? 7 : 32;
    assert_int_equal(ft, want_ft);

    assert_int_equal(get_u32(g, arch, "context_length"), p->n_ctx_train);
    assert_int_equal(get_u32(g, arch, "embedding_length"), p->n_embd);
    assert_int_equal(get_u32(g, arch, "block_count"), p->n_layer);
    assert_int_equal(get_u32(g, arch, "feed_forward_length"), p->n_ff);
    assert_int_equal(get_u32(g, arch, "attention.head_count"), p->n_head);
    assert_int_equal(get_u32(g, arch, "attention.head_count_kv"), p->n_head_kv);
    assert_int_equal(get_u32(g, arch, "rope.dimension_count"), p->head_dim);
    assert_int_equal(get_u32(g, arch, "vocab_size"), N_VOCAB);
    assert_true(get_f32(g, arch, "attention.layer_norm_rms_epsilon") == p->norm_eps);
    assert_true(get_f32(g, arch, "rope.freq_base") == p->rope_freq_base);
    if (p->head_dim * p->n_head != p->n_embd) {
        assert_int_equal(get_u32(g, arch, "attention.key_length"), p->head_dim);
        assert_int_equal(get_u32(g, arch, "attention.value_length"), p->head_dim);
    }
    char k[128];
    snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
    if (p->rope_scale_linear > 0) {
        assert_true(str_is(g, k, "linear"));
        assert_true(get_f32(g, arch, "rope.scaling.factor") == p->rope_scale_linear);
    } else {
        assert_true(tn_gguf_find_key(g, k) < 0);
    }

    int n_tok_keys = 0;
    for (int64_t i = 0; i < tn_gguf_n_kv(vocab); i++) {
        const char *key = tn_gguf_kv_key(vocab, i);
        if (strncmp(key, "tokenizer.", 10))
            continue;
        n_tok_keys++;
        int64_t j = tn_gguf_find_key(g, key);
        assert_true(j >= 0);
        assert_int_equal(tn_gguf_kv_type(g, j), tn_gguf_kv_type(vocab, i));
    }
    assert_true(n_tok_keys >= 5);
    tn_gguf_type et;
    uint64_t n = 0;
    const void *data;
    assert_int_equal(tn_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data), TN_OK);
    assert_int_equal(et, TN_GGUF_STRING);
    assert_int_equal(n, N_VOCAB);
    const char *s0, *s1;
    size_t l0, l1;
    int64_t kv_g = tn_gguf_find_key(g, "tokenizer.ggml.tokens"), kv_v = tn_gguf_find_key(vocab, "tokenizer.ggml.tokens");
    assert_int_equal(tn_gguf_arr_str(g, kv_g, 300, &s0, &l0), TN_OK);
    assert_int_equal(tn_gguf_arr_str(vocab, kv_v, 300, &s1, &l1), TN_OK);
    assert_true(l0 == l1 && !memcmp(s0, s1, l0));
}

/* Value statistics of one tensor, dequantized. */
static void check_values(const tn_gguf_tensor *t, const expect *e)
{
    const int64_t rows = t->ne[1], n = t->ne[0];
    float *row = malloc((size_t)n * sizeof(float));
    assert_non_null(row);
    const size_t rb = tn_dtype_row_size(t->type, n);
    double sum = 0, sum2 = 0, mn = 1e30, mx = -1e30;
    for (int64_t r = 0; r < rows; r++) {
        assert_int_equal(tn_dequantize_row(t->type, (const uint8_t *)t->data + (size_t)r * rb, row, n), TN_OK);
        for (int64_t i = 0; i < n; i++) {
            assert_true(isfinite(row[i]));
            sum += row[i];
            sum2 += (double)row[i] * row[i];
            mn = fmin(mn, row[i]);
            mx = fmax(mx, row[i]);
        }
    }
    free(row);
    const double cnt = (double)(n * rows), mean = sum / cnt, var = sum2 / cnt - mean * mean;
    if (e->matrix) {
        /* ~N(0, 1/n_in): variance within 25% (quantization noise included) */
        const double want = 1.0 / (double)n;
        if (!(var > 0.75 * want && var < 1.25 * want && fabs(mean) < 0.1 * sqrt(want)))
            fail_msg("%s: mean %g var %g, want 0 and %g", t->name, mean, var, want);
    } else if (strstr(t->name, "rope_freqs")) {
        /* Llama 3.1 factors: 1 for the fastest pair, 8 for the slowest, in between blended */
        const float *f = t->data;
        assert_true(f[0] == 1.0f);
        assert_true(f[n - 1] == 8.0f);
        bool blended = false;
        for (int64_t i = 1; i < n; i++) {
            assert_true(f[i] >= f[i - 1]);
            blended |= f[i] > 1.0f && f[i] < 8.0f;
        }
        assert_true(blended);
    } else if (strstr(t->name, ".bias")) {
        assert_true(fabs(mean) < 0.02 && mx < 0.2 && mn > -0.2 && var > 0);
    } else {
        /* norm weights near 1, not all equal */
        assert_true(mn > 0.75 && mx < 1.25 && fabs(mean - 1.0) < 0.05 && var > 0);
    }
}

static void check_file(const char *path, const tn_synth_preset *p, tn_dtype dt, const tn_gguf *vocab)
{
    tn_gguf *g = NULL;
    tn_status s = tn_gguf_open(path, &g);
    if (s != TN_OK)
        fail_msg("open %s: %s", path, tn_last_error());
    assert_int_equal(tn_gguf_version(g), 3);
    check_metadata(g, vocab, p, dt);

    expect e[256];
    int n = expected_tensors(p, N_VOCAB, e);
    assert_int_equal(tn_gguf_n_tensors(g), n);
    for (int i = 0; i < n; i++) {
        const tn_gguf_tensor *t = tn_gguf_find_tensor(g, e[i].name);
        if (!t)
            fail_msg("%s %s: tensor %s missing", p->name, tn_dtype_traits_of(dt)->name, e[i].name);
        assert_int_equal(t->n_dims, e[i].ne1 ? 2 : 1);
        assert_int_equal(t->ne[0], e[i].ne0);
        assert_int_equal(t->ne[1], e[i].ne1 ? e[i].ne1 : 1);
        assert_int_equal(t->type, e[i].matrix ? dt : TN_DTYPE_F32);
        check_values(t, &e[i]);
    }
    tn_gguf_free(g);
}

/* --- tests ------------------------------------------------------------- */

static void test_presets(void **state)
{
    (void)state;
    size_t n = 0;
    const tn_synth_preset *p = tn_synth_presets(&n);
    assert_true(n >= 9);
    const char *required[] = {"tinyllama-1.1b", "llama-2-7b", "qwen2.5-0.5b", "qwen3-0.6b", "tiny-llama",
                              "tiny-llama-rope-linear", "tiny-llama3", "tiny-qwen2", "tiny-qwen3"};
    for (size_t i = 0; i < TN_ARRAY_LEN(required); i++)
        assert_non_null(tn_synth_find_preset(required[i]));
    assert_null(tn_synth_find_preset("gpt-5"));
    assert_null(tn_synth_find_preset(NULL));
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i + 1; j < n; j++)
            assert_string_not_equal(p[i].name, p[j].name);
        assert_int_equal(p[i].n_head % p[i].n_head_kv, 0);
        assert_int_equal(p[i].n_embd % 32, 0);
        assert_int_equal(p[i].n_ff % 32, 0);
        assert_int_equal((p[i].n_head * p[i].head_dim) % 32, 0);
        assert_int_equal(p[i].head_dim % 2, 0);
    }
    /* real shapes: the published parameter counts */
    const tn_synth_preset *tl = tn_synth_find_preset("tinyllama-1.1b");
    assert_int_equal(tl->n_embd, 2048);
    assert_int_equal(tl->n_layer, 22);
    assert_int_equal(tn_synth_n_params(tl, 32000), 1100048384);
    assert_int_equal(tn_synth_n_params(tn_synth_find_preset("llama-2-7b"), 32000), 6738415616);
    assert_int_equal(tn_synth_n_params(tn_synth_find_preset("qwen2.5-0.5b"), 151936), 494032768);
    assert_int_equal(tn_synth_n_params(tn_synth_find_preset("qwen3-0.6b"), 151936), 596049920);
    assert_true(tn_synth_find_preset("tiny-qwen3")->head_dim * 4 != 64);
}

static void test_tiny_all_dtypes(void **state)
{
    (void)state;
    tn_gguf *vocab = NULL;
    assert_int_equal(tn_gguf_open(VOCAB, &vocab), TN_OK);
    for (size_t i = 0; i < TN_ARRAY_LEN(tiny_presets); i++) {
        const tn_synth_preset *p = tn_synth_find_preset(tiny_presets[i]);
        assert_non_null(p);
        for (size_t d = 0; d < TN_ARRAY_LEN(dtypes); d++) {
            char *path = tn_test_tmp_path(".gguf");
            tn_status s = synth(p->name, dtypes[d], VOCAB, path, 7);
            if (s != TN_OK)
                fail_msg("synth %s %s: %s", p->name, dtypes[d], tn_last_error());
            tn_dtype dt;
            assert_true(tn_dtype_from_name(dtypes[d], &dt));
            check_file(path, p, dt, vocab);
            unlink(path);
            free(path);
        }
    }
    tn_gguf_free(vocab);
}

static void test_deterministic(void **state)
{
    (void)state;
    char *a = tn_test_tmp_path(".gguf"), *b = tn_test_tmp_path(".gguf"), *c = tn_test_tmp_path(".gguf");
    assert_int_equal(synth("tiny-qwen2", "q4_0", VOCAB, a, 42), TN_OK);
    assert_int_equal(synth_nt("tiny-qwen2", "q4_0", VOCAB, b, 42, 0), TN_OK); /* all cores: same bytes */
    assert_int_equal(synth("tiny-qwen2", "q4_0", VOCAB, c, 43), TN_OK);
    size_t na, nb, nc;
    char *da = tn_test_read_file(a, &na), *db = tn_test_read_file(b, &nb), *dc = tn_test_read_file(c, &nc);
    assert_non_null(da);
    assert_non_null(db);
    assert_non_null(dc);
    assert_int_equal(na, nb);
    assert_memory_equal(da, db, na);
    assert_int_equal(na, nc); /* same shapes, same size */
    assert_memory_not_equal(da, dc, na);

    /* every random tensor differs between the seeds, and no two tensors of
     * one file share a stream */
    tn_gguf *ga, *gc;
    assert_int_equal(tn_gguf_open(a, &ga), TN_OK);
    assert_int_equal(tn_gguf_open(c, &gc), TN_OK);
    for (int64_t i = 0; i < tn_gguf_n_tensors(ga); i++) {
        const tn_gguf_tensor *ta = tn_gguf_tensor_at(ga, i);
        const tn_gguf_tensor *tc = tn_gguf_find_tensor(gc, ta->name);
        assert_non_null(tc);
        assert_int_equal(ta->nbytes, tc->nbytes);
        assert_memory_not_equal(ta->data, tc->data, ta->nbytes);
    }
    const tn_gguf_tensor *q0 = tn_gguf_find_tensor(ga, "blk.0.attn_q.weight");
    const tn_gguf_tensor *q1 = tn_gguf_find_tensor(ga, "blk.1.attn_q.weight");
    assert_memory_not_equal(q0->data, q1->data, q0->nbytes);
    tn_gguf_free(ga);
    tn_gguf_free(gc);

    free(da), free(db), free(dc);
    unlink(a), unlink(b), unlink(c);
    free(a), free(b), free(c);
}

/* The random stream is part of synth's promise (same seed, same file, on
 * every machine). These values were computed by an independent Python
 * re-implementation of the stream as synth.c's header describes it
 * (splitmix64 per row, Irwin-Hall of four 16-bit fields, float32 scaling),
 * for seed 1234: token_embd is tensor 0, blk.1.ffn_down tensor 18 (n_in 96),
 * output_norm tensor 19. */
#define PIN_E0 0x1.ee802p-9f
#define PIN_E1 -0x1.4d987ep-3f
#define PIN_ELAST -0x1.9113f8p-7f
#define PIN_D5 0x1.41c71cp-6f
#define PIN_N3 0x1.1a1962p+0f

static void test_stream_pinned(void **state)
{
    (void)state;
    char *path = tn_test_tmp_path(".gguf");
    assert_int_equal(synth("tiny-llama", "f32", VOCAB, path, 1234), TN_OK);
    tn_gguf *g;
    assert_int_equal(tn_gguf_open(path, &g), TN_OK);
    const float *e = tn_gguf_find_tensor(g, "token_embd.weight")->data;
    const float *d = tn_gguf_find_tensor(g, "blk.1.ffn_down.weight")->data;
    const float *nrm = tn_gguf_find_tensor(g, "output_norm.weight")->data;
    assert_true(e[0] == PIN_E0);
    assert_true(e[1] == PIN_E1);
    assert_true(e[64 * 511 + 63] == PIN_ELAST);
    assert_true(d[5] == PIN_D5);
    assert_true(nrm[3] == PIN_N3);
    tn_gguf_free(g);
    unlink(path);
    free(path);
}

/* tern's loader accepts every tiny preset in every dtype with the right
 * hyper-parameters, and a forward pass over a few tokens gives finite
 * logits of unit-ish scale: the weight scaling keeps activations finite
 * through all layers. */
static void test_load_and_forward(void **state)
{
    (void)state;
    tn_pool *pool = NULL;
    assert_int_equal(tn_pool_new(1, &pool), TN_OK);
    for (size_t i = 0; i < TN_ARRAY_LEN(tiny_presets); i++) {
        const tn_synth_preset *p = tn_synth_find_preset(tiny_presets[i]);
        for (size_t d = 0; d < TN_ARRAY_LEN(dtypes); d++) {
            char *path = tn_test_tmp_path(".gguf");
            assert_int_equal(synth(p->name, dtypes[d], VOCAB, path, 3), TN_OK);
            tn_model *m = NULL;
            if (tn_model_load(path, &m) != TN_OK)
                fail_msg("load %s %s: %s", p->name, dtypes[d], tn_last_error());
            const tn_hparams *hp = &m->hp;
            assert_int_equal(hp->arch, p->arch);
            assert_int_equal(hp->n_vocab, N_VOCAB);
            assert_int_equal(hp->n_embd, p->n_embd);
            assert_int_equal(hp->n_layer, p->n_layer);
            assert_int_equal(hp->n_head, p->n_head);
            assert_int_equal(hp->n_head_kv, p->n_head_kv);
            assert_int_equal(hp->head_dim, p->head_dim);
            assert_int_equal(hp->n_ff, p->n_ff);
            assert_int_equal(hp->n_rot, p->head_dim);
            assert_true(hp->norm_eps == p->norm_eps);
            assert_true(hp->rope_freq_base == p->rope_freq_base);
            assert_true(hp->rope_freq_scale == (p->rope_scale_linear > 0 ? 1.0f / p->rope_scale_linear : 1.0f));
            assert_int_equal(hp->rope_type, p->arch == TN_ARCH_LLAMA ? TN_ROPE_NORM : TN_ROPE_NEOX);
            assert_true((m->rope_freqs.data != NULL) == p->rope_freqs_llama3);
            /* Tied: the file has no output.weight and output is the embedding
             * table (or the loader's x16 copy of it, kern/repack.h). */
            assert_true((tn_gguf_find_tensor(m->gguf, "output.weight") == NULL) == p->tied);
            if (p->tied) {
                float *r1 = malloc((size_t)hp->n_embd * sizeof(float)), *r2 = malloc((size_t)hp->n_embd * sizeof(float));
                assert_true(r1 && r2);
                for (int64_t r = 0; r < N_VOCAB; r += 37) {
                    tn_get_row(m->output.data, m->output.type, hp->n_embd, r, r1);
                    tn_get_row(m->tok_embd.data, m->tok_embd.type, hp->n_embd, r, r2);
                    assert_memory_equal(r1, r2, (size_t)hp->n_embd * sizeof(float));
                }
                free(r1), free(r2);
            }
            assert_true((m->layers[1].bq.data != NULL) == p->qkv_bias);
            assert_true((m->layers[1].q_norm.data != NULL) == p->qk_norm);

            enum { N = 6 };
            const int32_t tok[N] = {1, 500, 37, 200, 511, 3}, pos[N] = {0, 1, 2, 3, 4, 5}, seq[N] = {0};
            const bool want[N] = {true, true, true, true, true, true};
            tn_batch b = {.n_tokens = N, .token = tok, .pos = pos, .seq_id = seq, .kv_slot = pos, .want_logits = want};
            tn_kv_cache *kv = NULL;
            tn_forward *f = NULL;
            assert_int_equal(tn_kv_new(m, 16, 1, &kv), TN_OK);
            assert_int_equal(tn_forward_new(m, N, &f), TN_OK);
            float *logits = malloc(sizeof(float) * N * N_VOCAB);
            assert_non_null(logits);
            if (tn_forward_run(f, kv, pool, &b, logits) != TN_OK)
                fail_msg("forward %s %s: %s", p->name, dtypes[d], tn_last_error());
            double sum2 = 0, mx = 0;
            for (int j = 0; j < N * N_VOCAB; j++) {
                assert_true(isfinite(logits[j]));
                sum2 += (double)logits[j] * logits[j];
                mx = fmax(mx, fabs(logits[j]));
            }
            const double rms = sqrt(sum2 / (N * N_VOCAB));
            if (!(rms > 0.2 && rms < 5 && mx < 30))
                fail_msg("%s %s: logits rms %g, max |logit| %g", p->name, dtypes[d], rms, mx);
            free(logits);
            tn_forward_free(f);
            tn_kv_free(kv);
            tn_model_free(m);
            unlink(path);
            free(path);
        }
    }
    tn_pool_free(pool);
}

static void test_errors(void **state)
{
    (void)state;
    char *out = tn_test_tmp_path(".gguf");

    assert_int_equal(synth("no-such-model", "f16", VOCAB, out, 0), TN_ERR_NOT_FOUND);
    assert_non_null(strstr(tn_last_error(), "no-such-model"));
    assert_int_equal(access(out, F_OK), -1);

    assert_int_equal(synth("tiny-llama", "f17", VOCAB, out, 0), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "f17"));
    assert_int_equal(synth("tiny-llama", "q4_k", VOCAB, out, 0), TN_ERR_UNSUPPORTED);
    assert_non_null(strstr(tn_last_error(), "q4_k"));
    assert_int_equal(access(out, F_OK), -1);

    tn_synth_opts o = {.preset = "tiny-llama", .dtype = "f16", .vocab_path = VOCAB};
    assert_int_equal(tn_synth_write(&o), TN_ERR_INVALID);
    assert_int_equal(tn_synth_write(NULL), TN_ERR_INVALID);

    /* a vocabulary that does not exist */
    assert_int_not_equal(synth("tiny-llama", "f16", "/nonexistent/vocab.gguf", out, 0), TN_OK);
    assert_non_null(strstr(tn_last_error(), "/nonexistent/vocab.gguf"));
    assert_int_equal(access(out, F_OK), -1);

    /* a GGUF file without tokenizer keys */
    char *novocab = tn_test_tmp_path(".gguf");
    tn_gguf_writer *w;
    assert_int_equal(tn_gguf_writer_new(&w), TN_OK);
    assert_int_equal(tn_gguf_set_str(w, "general.architecture", "llama"), TN_OK);
    assert_int_equal(tn_gguf_writer_write(w, novocab), TN_OK);
    tn_gguf_writer_free(w);
    assert_int_equal(synth("tiny-llama", "f16", novocab, out, 0), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "tokenizer.ggml.tokens"));
    assert_int_equal(access(out, F_OK), -1);
    unlink(novocab);
    free(novocab);

    /* an output that cannot be written */
    assert_int_not_equal(synth("tiny-llama", "f16", VOCAB, "/nonexistent-dir/x.gguf", 0), TN_OK);
    assert_true(strlen(tn_last_error()) > 0);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_tiny_all_dtypes),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_stream_pinned),
        cmocka_unit_test(test_load_and_forward),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
