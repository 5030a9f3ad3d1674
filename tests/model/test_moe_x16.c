/*
 * test_moe_x16 — the x16 layout (kern/repack.h) for MoE models: stacked
 * expert tensors repacked expert by expert (load_repack_exps.c), the
 * router, shared experts and latent-attention projections repacked as 2-D
 * matrices (load_repack.c).
 *
 * Checked against the file's layout (TERN_REPACK=0, the block-format
 * path): every row of every expert read back through tn_weight_expert
 * equals the file's row to the bit; every prefill position of a Q4_0 and a
 * Q8_0 MoE model picks the same greedy token, with logits within the
 * quantized activations' rounding; repacking only some experts (an
 * expert-parallel rank: defer_experts) leaves the others as the file's
 * slices, in place, and repacking all of them after a deferred load gives
 * the bits of an ordinary load; experts stay addressed through expert_map.
 */
#include "testutil.h"

#include "kern/repack.h"
#include "model/model_int.h"
#include "model/synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VOCAB "../shared/data/models/stories260K/stories260K.v3.derived.gguf"
#define N_TOK 16

/* A synthetic model file of preset / dtype; free the path. */
static char *synth(const char *preset, const char *dtype)
{
    char *path = tn_test_tmp_path(".gguf");
    tn_synth_opts o = {.preset = preset, .dtype = dtype, .vocab_path = VOCAB, .out_path = path, .seed = 11,
                       .n_threads = 1};
    if (tn_synth_write(&o) != TN_OK)
        fail_msg("synth %s %s: %s", preset, dtype, tn_last_error());
    return path;
}

/* Loads path with TERN_REPACK=0 (the file's layout everywhere) or the default. */
static tn_model *load(const char *path, bool repack, const tn_model_opts *opts)
{
    if (!repack)
        setenv("TERN_REPACK", "0", 1);
    tn_model *m = NULL;
    tn_status s = tn_model_load_opts(path, opts, &m);
    unsetenv("TERN_REPACK");
    if (s != TN_OK)
        fail_msg("load %s: %s", path, tn_last_error());
    return m;
}

static const tn_weight *stack(const tn_layer *ly, int k)
{
    return k == 0 ? &ly->ffn_gate_exps : k == 1 ? &ly->ffn_up_exps : &ly->ffn_down_exps;
}

/* Every row of every expert of x reads back as the same row of the file
 * model f; returns how many experts of x are in the x16 layout. */
static int same_rows(const tn_model *x, const tn_model *f)
{
    const tn_hparams *hp = &x->hp;
    int n_x16 = 0;
    float *a = malloc((size_t)hp->n_embd * 4 * sizeof(float)), *b = malloc((size_t)hp->n_embd * 4 * sizeof(float));
    assert_non_null(a);
    assert_non_null(b);
    for (int il = 0; il < hp->n_layer; il++) {
        if (!x->layers[il].ffn_gate_inp.data)
            continue;
        for (int k = 0; k < 3; k++) {
            const tn_weight *wx = stack(&x->layers[il], k), *wf = stack(&f->layers[il], k);
            assert_int_equal(wx->type, wf->type); /* the tensor keeps the file's type; experts say theirs */
            assert_null(wf->exps);
            for (int32_t p = 0; p < hp->n_expert; p++) {
                const tn_matrix mx = tn_weight_expert(wx, p), mf = tn_weight_expert(wf, p);
                assert_int_equal(mf.type, wf->type);
                assert_int_equal(tn__x16_file_dtype(mx.type), wf->type);
                n_x16 += tn__dtype_is_x16(mx.type);
                for (int64_t r = 0; r < wx->ne[1]; r++) {
                    tn_get_row(mx.data, mx.type, wx->ne[0], r, a);
                    tn_get_row(mf.data, mf.type, wf->ne[0], r, b);
                    if (memcmp(a, b, (size_t)wx->ne[0] * sizeof(float)) != 0)
                        fail_msg("layer %d stack %d expert %d row %lld differs from the file's", il, k, p, (long long)r);
                }
            }
        }
    }
    free(a);
    free(b);
    return n_x16;
}

/* Logits of a 16-token prefill ((N_TOK, n_vocab), malloc'd). */
static float *prefill(const tn_model *m)
{
    tn_pool *pool;
    tn_kv_cache *kv;
    tn_forward *f;
    assert_int_equal(tn_pool_new(2, &pool), TN_OK);
    assert_int_equal(tn_kv_new(m, 64, 1, &kv), TN_OK);
    assert_int_equal(tn_forward_new(m, N_TOK, &f), TN_OK);
    int32_t tok[N_TOK], pos[N_TOK], seq[N_TOK], slot[N_TOK];
    bool want[N_TOK];
    for (int32_t i = 0; i < N_TOK; i++) {
        tok[i] = (i * 37 + 1) % m->hp.n_vocab;
        pos[i] = slot[i] = i;
        seq[i] = 0;
        want[i] = true;
    }
    float *out = malloc((size_t)N_TOK * m->hp.n_vocab * sizeof(float));
    assert_non_null(out);
    tn_batch b = {.n_tokens = N_TOK, .token = tok, .pos = pos, .seq_id = seq, .kv_slot = slot, .want_logits = want};
    if (tn_forward_run(f, kv, pool, &b, out) != TN_OK)
        fail_msg("forward: %s", tn_last_error());
    tn_forward_free(f);
    tn_kv_free(kv);
    tn_pool_free(pool);
    return out;
}

static int32_t argmax(const float *v, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/* The 2-D matrices of a MoE model that load_repack.c moves to x16. */
static void check_2d(const tn_model *x, const tn_model *f, bool x16)
{
    for (int il = 0; il < x->hp.n_layer; il++) {
        const tn_layer *lx = &x->layers[il], *lf = &f->layers[il];
        const tn_weight *wx[] = {&lx->ffn_gate_inp, &lx->ffn_gate_shexp, &lx->ffn_up_shexp, &lx->ffn_down_shexp,
                                 &lx->wq_a,         &lx->wq_b,           &lx->wkv_a};
        const tn_weight *wf[] = {&lf->ffn_gate_inp, &lf->ffn_gate_shexp, &lf->ffn_up_shexp, &lf->ffn_down_shexp,
                                 &lf->wq_a,         &lf->wq_b,           &lf->wkv_a};
        for (size_t i = 0; i < sizeof wx / sizeof wx[0]; i++) {
            if (!wf[i]->data || tn__x16_dtype_for(wf[i]->type) == TN_DTYPE_COUNT)
                continue; /* absent in this family, or a type without the layout (F32 norms...) */
            assert_int_equal(tn__dtype_is_x16(wx[i]->type), x16);
            float a[256], b[256];
            assert_true(wf[i]->ne[0] <= 256);
            for (int64_t r = 0; r < wf[i]->ne[1]; r++) {
                tn_get_row(wx[i]->data, wx[i]->type, wx[i]->ne[0], r, a);
                tn_get_row(wf[i]->data, wf[i]->type, wf[i]->ne[0], r, b);
                assert_memory_equal(a, b, (size_t)wf[i]->ne[0] * sizeof(float));
            }
        }
    }
}

/* Repacked experts read back as the file's rows, and the repacked model
 * greedily picks the file layout's tokens. */
static void test_repacked_equals_file(void **state)
{
    (void)state;
    const char *presets[] = {"tiny-qwen2moe", "tiny-deepseek2", "tiny-mixtral"};
    const char *dtypes[] = {"q4_0", "q8_0"};
    const bool x16 = tn__x16_dtype_for(TN_DTYPE_Q4_0) != TN_DTYPE_COUNT;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        for (size_t d = 0; d < 2; d++) {
            char *path = synth(presets[i], dtypes[d]);
            tn_model *x = load(path, true, NULL), *f = load(path, false, NULL);
            const tn_hparams *hp = &x->hp;
            int n_moe = 0;
            for (int il = 0; il < hp->n_layer; il++)
                n_moe += x->layers[il].ffn_gate_inp.data != NULL;
            const int n_x16 = same_rows(x, f);
            /* with a kernel for the layout every expert is repacked, else none */
            assert_int_equal(n_x16, x16 ? n_moe * 3 * hp->n_expert : 0);
            check_2d(x, f, x16);
            float *lx = prefill(x), *lf = prefill(f);
            double maxd = 0, maxv = 0;
            for (int32_t t = 0; t < N_TOK; t++) {
                const float *a = lx + (size_t)t * hp->n_vocab, *b = lf + (size_t)t * hp->n_vocab;
                if (argmax(a, hp->n_vocab) != argmax(b, hp->n_vocab))
                    fail_msg("%s %s: token %d: greedy %d (x16) != %d (file layout)", presets[i], dtypes[d], t,
                             argmax(a, hp->n_vocab), argmax(b, hp->n_vocab));
                for (int32_t v = 0; v < hp->n_vocab; v++) {
                    maxd = fmax(maxd, fabs((double)a[v] - b[v]));
                    maxv = fmax(maxv, fabs((double)b[v]));
                }
            }
            if (!(maxd <= 1e-3 * maxv + 1e-5))
                fail_msg("%s %s: logits differ by %g (largest %g)", presets[i], dtypes[d], maxd, maxv);
            free(lx);
            free(lf);
            tn_model_free(x);
            tn_model_free(f);
            unlink(path);
            free(path);
        }
}

/* An expert-parallel rank's load: defer_experts repacks no expert; then
 * only the wanted slots are copied, the others stay the file's slices in
 * place; a second call is refused. Repacking every slot after a deferred
 * load gives an ordinary load's logits to the bit. */
static void test_deferred_and_partial(void **state)
{
    (void)state;
    const bool x16 = tn__x16_dtype_for(TN_DTYPE_Q8_0) != TN_DTYPE_COUNT;
    char *path = synth("tiny-qwen3moe", "q8_0");
    const tn_model_opts defer = {.defer_experts = true};
    tn_model *p = load(path, true, &defer), *f = load(path, false, NULL), *full = load(path, true, NULL);
    const tn_hparams *hp = &f->hp; /* f lives to the end; p is loaded twice */
    const size_t E = (size_t)hp->n_expert;
    assert_null(p->exps_tab);
    assert_int_equal(same_rows(p, f), 0);
    uint8_t *want = calloc((size_t)hp->n_layer * E, 1);
    assert_non_null(want);
    int n_want = 0;
    for (size_t p_ = 1; p_ < E; p_ += 3, n_want++)
        want[1 * E + p_] = 1; /* layer 1, slots 1, 4, 7 */
    assert_int_equal(tn_model_repack_experts(p, want), TN_OK);
    assert_int_equal(same_rows(p, f), x16 ? n_want * 3 : 0);
    for (int il = 0; x16 && il < hp->n_layer; il++)
        for (int k = 0; k < 3; k++) {
            const tn_weight *w = stack(&p->layers[il], k);
            const size_t per = tn_dtype_row_size(w->type, w->ne[0]) * (size_t)w->ne[1];
            for (size_t e = 0; e < E; e++) {
                const tn_matrix mx = tn_weight_expert(w, (int32_t)e);
                assert_int_equal(tn__dtype_is_x16(mx.type), want[(size_t)il * E + e] != 0);
                if (!want[(size_t)il * E + e]) /* untouched: the file's bytes where they were */
                    assert_ptr_equal(mx.data, (const char *)w->data + e * per);
            }
        }
    assert_int_equal(tn_model_repack_experts(p, NULL), x16 ? TN_ERR_INVALID : TN_OK);
    free(want);
    tn_model_free(p);

    p = load(path, true, &defer);
    assert_int_equal(tn_model_repack_experts(p, NULL), TN_OK);
    float *a = prefill(p), *b = prefill(full);
    assert_memory_equal(a, b, (size_t)N_TOK * hp->n_vocab * sizeof(float));
    free(a);
    free(b);
    tn_model_free(p);
    tn_model_free(f);
    tn_model_free(full);
    unlink(path);
    free(path);
}

/* Repacked experts are still addressed through expert_map: swapping two
 * slots of a layer changes the logits; swapping back restores the bits. */
static void test_map_x16(void **state)
{
    (void)state;
    char *path = synth("tiny-qwen2moe", "q4_0");
    tn_model *m = load(path, true, NULL);
    const int32_t E = m->hp.n_expert;
    float *a = prefill(m);
    int32_t *map = m->expert_map + (size_t)1 * E;
    int32_t t = map[0];
    map[0] = map[1];
    map[1] = t;
    float *b = prefill(m);
    assert_memory_not_equal(a, b, (size_t)N_TOK * m->hp.n_vocab * sizeof(float));
    map[1] = map[0];
    map[0] = t;
    float *c = prefill(m);
    assert_memory_equal(a, c, (size_t)N_TOK * m->hp.n_vocab * sizeof(float));
    free(a);
    free(b);
    free(c);
    tn_model_free(m);
    unlink(path);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repacked_equals_file),
        cmocka_unit_test(test_deferred_and_partial),
        cmocka_unit_test(test_map_x16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
