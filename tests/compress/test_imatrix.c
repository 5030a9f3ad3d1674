/*
 * test_imatrix.c — importance matrices (src/compress/imatrix.h).
 *
 * Accumulation gives the mean square of each column; the file is llama.cpp's
 * legacy .dat layout byte for byte (checked field by field here, and read by
 * llama-quantize by hand, docs/quantization.md) and loads back to the same
 * importances; truncated or hostile files are errors naming the entry; a
 * calibration run on stories260K records every dense product of every layer
 * with the right widths (attn_q/k/v share one input and so one entry value),
 * and `tern quantize --imatrix` uses it and records llama.cpp's keys.
 * MoE and MLA (tiny synthetic qwen2moe and deepseek2): expert stacks get
 * one slice per expert, averaged over that expert's tokens, which is
 * checked against the router's input (every token) weighted by the expert
 * loads tn_moe_stats counts in a separate forward run over the same
 * windows: sum_e n_e mean_e[c] = k N mean_router[c]; ncall counts windows;
 * MLA's projections have entries of their input widths; tern quantize
 * weights each expert with its slice; an expert that saw no token leaves
 * its stack out of the file, as llama-imatrix does.
 * Against llama.cpp: tests/golden/imatrix-tiny-{mixtral,deepseek2}.dat are
 * llama-imatrix's files (llama.cpp c392e5094, run by hand:
 *   tern synth --preset P --dtype f32 --vocab stories260K.v3.derived.gguf
 *       -o P.gguf --seed 7
 *   head -c 20000 tinyshakespeare/input.txt > text.txt
 *   llama-imatrix -m P.gguf -f text.txt -o golden.dat -c 64 --chunks 4 -b 64 -ub 64
 * ) and tern's collection over the same windows must give every entry
 * (per-expert slices, MLA projections) with the same width and ncall and
 * values within 2e-3 of the entry's largest (float differences of two
 * forward passes); tern adds output.weight, which llama-imatrix leaves out.
 */
#include "compress/imatrix.h"
#include "compress/quantize.h"
#include "model/synth.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STORIES TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf"
#define TEXT TN_SHARED_DATA "corpora/en/tinyshakespeare/input.txt"

static int32_t rd32(const unsigned char *p) { return (int32_t)((uint32_t)p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24); }

static void test_accumulate_save_load(void **state)
{
    tn_imatrix *im;
    assert_int_equal(tn_imatrix_new(&im), TN_OK);
    const float a[6] = {1, 2, 3, -1, 0, 1}; /* 2 rows of 3 */
    const float b[3] = {2, 2, 2};
    assert_int_equal(tn_imatrix_add(im, "blk.0.attn_q.weight", a, 2, 3), TN_OK);
    assert_int_equal(tn_imatrix_add(im, "blk.0.attn_q.weight", b, 1, 3), TN_OK);
    assert_int_equal(tn_imatrix_add(im, "output.weight", b, 1, 3), TN_OK);
    assert_int_equal(tn_imatrix_add(im, "output.weight", b, 1, 2), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "output.weight"));
    int64_t nc;
    const float *m = tn_imatrix_get(im, "blk.0.attn_q.weight", &nc);
    assert_int_equal(nc, 3);
    assert_true(fabsf(m[0] - 6.0f / 3) < 1e-6f && fabsf(m[1] - 8.0f / 3) < 1e-6f && fabsf(m[2] - 14.0f / 3) < 1e-6f);
    assert_null(tn_imatrix_get(im, "nope", &nc));
    assert_int_equal(nc, 0);

    char *path = tn_test_tmp_path(".dat");
    assert_int_equal(tn_imatrix_save(im, path, "data.txt"), TN_OK);
    size_t len;
    unsigned char *f = (unsigned char *)tn_test_read_file(path, &len);
    assert_non_null(f);
    /* n_entries, then name len, name, ncall, nval, values = mean * ncall */
    assert_int_equal(rd32(f), 2);
    assert_int_equal(rd32(f + 4), 19);
    assert_memory_equal(f + 8, "blk.0.attn_q.weight", 19);
    assert_int_equal(rd32(f + 27), 2); /* two calls */
    assert_int_equal(rd32(f + 31), 3);
    float v;
    memcpy(&v, f + 35, 4);
    assert_true(fabsf(v - 2.0f * 6.0f / 3) < 1e-6f);
    size_t off = 35 + 12;
    assert_int_equal(rd32(f + off), 13);
    off += 4 + 13 + 8 + 12;
    assert_int_equal(rd32(f + off), 0); /* chunks */
    assert_int_equal(rd32(f + off + 4), 8);
    assert_memory_equal(f + off + 8, "data.txt", 8);
    assert_int_equal(len, off + 16);

    tn_imatrix *im2;
    assert_int_equal(tn_imatrix_load(path, &im2), TN_OK);
    assert_int_equal(tn_imatrix_n_entries(im2), 2);
    const float *m2 = tn_imatrix_get(im2, "blk.0.attn_q.weight", &nc);
    assert_int_equal(nc, 3);
    for (int c = 0; c < 3; c++)
        assert_true(fabsf(m2[c] - m[c]) < 1e-6f * m[c]);
    /* saving the loaded one gives the same bytes */
    char *path2 = tn_test_tmp_path(".dat");
    assert_int_equal(tn_imatrix_save(im2, path2, "data.txt"), TN_OK);
    size_t len2;
    char *f2 = tn_test_read_file(path2, &len2);
    assert_int_equal(len2, len);
    assert_memory_equal(f2, f, len);

    /* every truncation is an error that names the file */
    for (size_t cut = 0; cut < off; cut += 3) {
        assert_int_equal(tn_test_write_file(path2, f, cut), 0);
        tn_imatrix *bad = NULL;
        assert_int_equal(tn_imatrix_load(path2, &bad), TN_ERR_FORMAT);
        assert_null(bad);
        assert_non_null(strstr(tn_last_error(), path2));
    }
    /* hostile counts */
    unsigned char h[16] = {0xff, 0xff, 0xff, 0x7f};
    assert_int_equal(tn_test_write_file(path2, h, 4), 0);
    tn_imatrix *bad = NULL;
    assert_int_equal(tn_imatrix_load(path2, &bad), TN_ERR_FORMAT);
    assert_int_equal(tn_imatrix_load("/nonexistent/x.dat", &bad), TN_ERR_IO);
    unlink(path);
    unlink(path2);
    free(path);
    free(path2);
    free(f);
    free(f2);
    tn_imatrix_free(im);
    tn_imatrix_free(im2);
}

static const tn_quant_tensor *find_t(const tn_quant_report *r, const char *name)
{
    for (int64_t i = 0; i < r->n_tensors; i++)
        if (!strcmp(r->tensors[i].name, name))
            return &r->tensors[i];
    return NULL;
}

static void test_collect_and_quantize(void **state)
{
    tn_model *m;
    tn_vocab *v;
    tn_imatrix *im;
    assert_int_equal(tn_model_load(STORIES, &m), TN_OK);
    assert_int_equal(tn_vocab_from_gguf(m->gguf, &v), TN_OK);
    assert_int_equal(tn_imatrix_new(&im), TN_OK);
    size_t len;
    char *text = tn_test_read_file(TEXT, &len);
    assert_non_null(text);
    assert_int_equal(tn_imatrix_collect(im, m, v, NULL, text, 60, 128, 0, NULL, NULL), TN_ERR_INVALID);
    assert_int_equal(tn_imatrix_collect(im, m, v, NULL, text, 20000, 128, 3, NULL, NULL), TN_OK);
    assert_int_equal(tn_imatrix_n_chunks(im), 3);
    /* 5 layers x 7 products + output */
    assert_int_equal(tn_imatrix_n_entries(im), 36);
    int64_t nq, nk, nd, no;
    const float *q = tn_imatrix_get(im, "blk.4.attn_q.weight", &nq);
    const float *k = tn_imatrix_get(im, "blk.4.attn_k.weight", &nk);
    assert_int_equal(nq, 64);
    assert_memory_equal(q, k, 64 * sizeof *q);
    const float *d = tn_imatrix_get(im, "blk.2.ffn_down.weight", &nd);
    assert_int_equal(nd, 172);
    for (int c = 0; c < 172; c++)
        assert_true(isfinite(d[c]) && d[c] >= 0);
    assert_non_null(tn_imatrix_get(im, "output.weight", &no));
    int32_t ncall;
    tn_imatrix_entry(im, 0, NULL, &ncall);
    assert_int_equal(ncall, 3);
    /* rmsnorm output with weights near 1: mean square per column is O(1) */
    double mean = 0;
    for (int c = 0; c < 64; c++)
        mean += q[c] / 64;
    assert_true(mean > 0.05 && mean < 50);

    char *path = tn_test_tmp_path(".dat"), *out = tn_test_tmp_path(".gguf");
    assert_int_equal(tn_imatrix_save(im, path, TEXT), TN_OK);
    tn_quant_opts o = {.in_path = STORIES, .out_path = out, .type = "Q4_0", .imatrix = path, .stats = true};
    tn_quant_report rep;
    assert_int_equal(tn_quantize_model(&o, &rep), TN_OK);
    int n_imp = 0;
    for (int64_t i = 0; i < rep.n_tensors; i++)
        n_imp += rep.tensors[i].imatrix;
    /* every Q4_0 matrix and the Q8_0 output: not the F16-fallback ffn_down (rows of 172) */
    assert_int_equal(n_imp, 5 * 6 + 1);
    assert_true(find_t(&rep, "output.weight")->imatrix);
    assert_false(find_t(&rep, "blk.1.ffn_down.weight")->imatrix);
    assert_true(find_t(&rep, "blk.1.ffn_up.weight")->imatrix);
    tn_quant_report_deinit(&rep);
    tn_gguf *g;
    assert_int_equal(tn_gguf_open(out, &g), TN_OK);
    int32_t n_ent = 0;
    assert_int_equal(tn_gguf_get_i32(g, "quantize.imatrix.entries_count", &n_ent), TN_OK);
    assert_int_equal(n_ent, 36);
    tn_gguf_free(g);

    /* an entry of the wrong width is refused, naming it */
    tn_imatrix *w;
    assert_int_equal(tn_imatrix_new(&w), TN_OK);
    float z[32] = {1};
    assert_int_equal(tn_imatrix_add(w, "blk.0.attn_q.weight", z, 1, 32), TN_OK);
    assert_int_equal(tn_imatrix_save(w, path, NULL), TN_OK);
    assert_int_equal(tn_quantize_model(&o, &rep), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "blk.0.attn_q.weight"));
    tn_quant_report_deinit(&rep);
    tn_imatrix_free(w);

    unlink(path);
    unlink(out);
    free(path);
    free(out);
    free(text);
    tn_imatrix_free(im);
    tn_vocab_free(v);
    tn_model_free(m);
}

static void test_expert_slices(void **state)
{
    tn_imatrix *im;
    assert_int_equal(tn_imatrix_new(&im), TN_OK);
    const float a[4] = {1, 2, 3, 4}, b[2] = {2, 0}; /* expert 0: rows (1,2), (3,4); expert 2: (2,0) */
    assert_int_equal(tn_imatrix_add_expert(im, "blk.0.ffn_up_exps.weight", 0, 3, 0, a, 2, 2), TN_OK);
    assert_int_equal(tn_imatrix_add_expert(im, "blk.0.ffn_up_exps.weight", 2, 3, 0, b, 1, 2), TN_OK);
    assert_int_equal(tn_imatrix_add_expert(im, "blk.0.ffn_up_exps.weight", 2, 3, 1, b, 1, 2), TN_OK);
    assert_int_equal(tn_imatrix_add_expert(im, "blk.0.ffn_up_exps.weight", 3, 3, 1, b, 1, 2), TN_ERR_INVALID);
    assert_int_equal(tn_imatrix_add_expert(im, "blk.0.ffn_up_exps.weight", 0, 4, 1, b, 1, 2), TN_ERR_INVALID);
    int64_t nc;
    int32_t ncall;
    const float *m = tn_imatrix_get(im, "blk.0.ffn_up_exps.weight", &nc);
    assert_int_equal(nc, 6);
    tn_imatrix_entry(im, 0, NULL, &ncall);
    assert_int_equal(ncall, 2); /* two call ids */
    assert_true(m[0] == 5.0f && m[1] == 10.0f); /* (1 + 9) / 2, (4 + 16) / 2 */
    assert_true(m[2] == 0.0f && m[3] == 0.0f);  /* expert 1: nothing */
    assert_true(m[4] == 4.0f && m[5] == 0.0f);
    char *path = tn_test_tmp_path(".dat");
    assert_int_equal(tn_imatrix_add(im, "blk.0.attn_q.weight", b, 1, 2), TN_OK);
    assert_int_equal(tn_imatrix_save(im, path, NULL), TN_OK); /* expert 1 saw nothing: the stack is left out */
    tn_imatrix *back;
    assert_int_equal(tn_imatrix_load(path, &back), TN_OK);
    assert_int_equal(tn_imatrix_n_entries(back), 1);
    assert_null(tn_imatrix_get(back, "blk.0.ffn_up_exps.weight", &nc));
    tn_imatrix_free(back);
    const float c[2] = {1, 1};
    assert_int_equal(tn_imatrix_add_expert(im, "blk.0.ffn_up_exps.weight", 1, 3, 1, c, 1, 2), TN_OK);
    assert_int_equal(tn_imatrix_save(im, path, NULL), TN_OK);
    assert_int_equal(tn_imatrix_load(path, &back), TN_OK);
    assert_int_equal(tn_imatrix_n_entries(back), 2);
    m = tn_imatrix_get(back, "blk.0.ffn_up_exps.weight", &nc);
    assert_int_equal(nc, 6); /* each slice's mean survives the file (value = mean * ncall) */
    const float want[6] = {5, 10, 1, 1, 4, 0};
    for (int i = 0; i < 6; i++)
        assert_true(fabsf(m[i] - want[i]) <= 1e-6f * want[i]);
    tn_imatrix_free(back);
    unlink(path);
    free(path);
    tn_imatrix_free(im);
}

/* Runs the windows tn_imatrix_collect runs and returns the forward's MoE
 * statistics' totals (n_layer, n_expert) in cnt. */
static void expert_loads(const tn_model *m, const tn_vocab *v, const char *text, size_t len, int32_t n_ctx,
                         int32_t n_chunks, int64_t *cnt)
{
    size_t n = 0, cap = len + 2;
    int32_t *tok = malloc(cap * sizeof *tok), pos[64], seq[64] = {0};
    bool want[64];
    assert_true(n_ctx <= 64);
    assert_int_equal(tn_tokenize(v, text, len, tn_vocab_add_bos(v), false, tok, cap, &n), TN_OK);
    for (int32_t i = 0; i < n_ctx; i++)
        pos[i] = i, want[i] = true;
    tn_kv_cache *kv;
    tn_forward *f;
    assert_int_equal(tn_kv_new(m, n_ctx, 1, &kv), TN_OK);
    assert_int_equal(tn_forward_new(m, n_ctx, &f), TN_OK);
    float *logits = malloc((size_t)n_ctx * (size_t)m->hp.n_vocab * sizeof *logits);
    for (int32_t c = 0; c < n_chunks; c++) {
        int32_t *win = tok + (size_t)c * (size_t)n_ctx;
        if (tn_vocab_add_bos(v) && tn_vocab_bos(v) >= 0)
            win[0] = tn_vocab_bos(v);
        tn_kv_clear(kv);
        tn_batch b = {.n_tokens = n_ctx, .token = win, .pos = pos, .seq_id = seq, .kv_slot = pos, .want_logits = want};
        assert_int_equal(tn_forward_run(f, kv, NULL, &b, logits), TN_OK);
    }
    const tn_moe_stats *st = tn_forward_moe_stats(f);
    for (int32_t il = 0; il < m->hp.n_layer; il++)
        for (int32_t e = 0; e < m->hp.n_expert; e++)
            cnt[il * m->hp.n_expert + e] = tn_moe_stats_total(st, il, e);
    free(logits);
    tn_forward_free(f);
    tn_kv_free(kv);
    free(tok);
}

static void check_moe_model(const char *preset)
{
    char *path = tn_test_tmp_path(".gguf");
    tn_synth_opts so = {.preset = preset, .dtype = "f32", .vocab_path = STORIES, .out_path = path, .seed = 7,
                        .n_threads = 1};
    if (tn_synth_write(&so) != TN_OK)
        fail_msg("synth %s: %s", preset, tn_last_error());
    tn_model *m;
    tn_vocab *v;
    tn_imatrix *im;
    assert_int_equal(tn_model_load(path, &m), TN_OK);
    assert_int_equal(tn_vocab_from_gguf(m->gguf, &v), TN_OK);
    assert_int_equal(tn_imatrix_new(&im), TN_OK);
    size_t len;
    char *text = tn_test_read_file(TEXT, &len);
    assert_non_null(text);
    const int32_t n_ctx = 48, n_chunks = 3;
    len = 6000;
    assert_int_equal(tn_imatrix_collect(im, m, v, NULL, text, len, n_ctx, n_chunks, NULL, NULL), TN_OK);
    const tn_hparams *hp = &m->hp;
    const int32_t E = hp->n_expert, K = hp->n_expert_used, D = hp->n_embd;
    int64_t *cnt = calloc((size_t)hp->n_layer * (size_t)E, sizeof *cnt);
    expert_loads(m, v, text, len, n_ctx, n_chunks, cnt);
    int n_moe = 0;
    for (int32_t il = 0; il < hp->n_layer; il++) {
        char name[96];
        int64_t nc = 0;
        const tn_layer *ly = &m->layers[il];
        if (hp->kv_lora_rank > 0) { /* MLA */
            snprintf(name, sizeof name, "blk.%d.attn_kv_a_mqa.weight", (int)il);
            assert_non_null(tn_imatrix_get(im, name, &nc));
            assert_int_equal(nc, D);
            snprintf(name, sizeof name, "blk.%d.attn_kv_b.weight", (int)il);
            assert_non_null(tn_imatrix_get(im, name, &nc));
            assert_int_equal(nc, hp->kv_lora_rank);
            snprintf(name, sizeof name, "blk.%d.%s.weight", (int)il, hp->q_lora_rank > 0 ? "attn_q_b" : "attn_q");
            assert_non_null(tn_imatrix_get(im, name, &nc));
            assert_int_equal(nc, hp->q_lora_rank > 0 ? hp->q_lora_rank : D);
        }
        if (!ly->ffn_gate_inp.data)
            continue;
        n_moe++;
        snprintf(name, sizeof name, "blk.%d.ffn_gate_inp.weight", (int)il);
        const float *r = tn_imatrix_get(im, name, &nc);
        assert_non_null(r);
        assert_int_equal(nc, D);
        float *router = malloc((size_t)D * sizeof *router);
        memcpy(router, r, (size_t)D * sizeof *router);
        snprintf(name, sizeof name, "blk.%d.ffn_up_exps.weight", (int)il);
        const float *x = tn_imatrix_get(im, name, &nc);
        assert_non_null(x);
        assert_int_equal(nc, (int64_t)D * E);
        int32_t ncall = -1;
        for (int64_t i = 0; i < tn_imatrix_n_entries(im); i++)
            if (!strcmp(tn_imatrix_entry(im, i, NULL, NULL), name))
                tn_imatrix_entry(im, i, NULL, &ncall);
        assert_int_equal(ncall, n_chunks);
        int64_t total = 0;
        for (int32_t e = 0; e < E; e++)
            total += cnt[il * E + e];
        assert_int_equal(total, (int64_t)K * n_ctx * n_chunks);
        for (int32_t c = 0; c < D; c++) {
            double s = 0;
            for (int32_t e = 0; e < E; e++)
                s += (double)cnt[il * E + e] * x[(size_t)e * D + c];
            const double want = (double)K * n_ctx * n_chunks * router[c];
            if (fabs(s - want) > 1e-4 * want)
                fail_msg("%s layer %d column %d: sum_e n_e mean_e = %g, k N mean_router = %g", preset, (int)il,
                         (int)c, s, want);
        }
        free(router);
        snprintf(name, sizeof name, "blk.%d.ffn_down_exps.weight", (int)il);
        assert_non_null(tn_imatrix_get(im, name, &nc));
        assert_int_equal(nc, (int64_t)hp->n_ff_exp * E);
        if (hp->n_ff_shexp > 0) {
            snprintf(name, sizeof name, "blk.%d.ffn_down_shexp.weight", (int)il);
            assert_non_null(tn_imatrix_get(im, name, &nc));
            assert_int_equal(nc, hp->n_ff_shexp);
        }
    }
    assert_true(n_moe > 0);

    /* tern quantize weights each expert with its own slice */
    char *dat = tn_test_tmp_path(".dat"), *out = tn_test_tmp_path(".gguf");
    assert_int_equal(tn_imatrix_save(im, dat, TEXT), TN_OK);
    tn_quant_opts o = {.in_path = path, .out_path = out, .type = "Q4_0", .imatrix = dat, .pure = true};
    tn_quant_report rep;
    if (tn_quantize_model(&o, &rep) != TN_OK)
        fail_msg("%s: quantize: %s", preset, tn_last_error());
    int n_exp_imp = 0;
    for (int64_t i = 0; i < rep.n_tensors; i++)
        n_exp_imp += strstr(rep.tensors[i].name, "_exps.weight") && rep.tensors[i].imatrix;
    printf("imatrix %s: %lld entries, %d expert stacks quantized with their slices\n", preset,
           (long long)tn_imatrix_n_entries(im), n_exp_imp);
    assert_true(n_exp_imp > 0);
    tn_quant_report_deinit(&rep);
    unlink(dat), unlink(out), unlink(path);
    free(dat), free(out), free(path), free(cnt), free(text);
    tn_imatrix_free(im);
    tn_vocab_free(v);
    tn_model_free(m);
}

static void test_moe_qwen2moe(void **state) { check_moe_model("tiny-qwen2moe"); }
static void test_moe_mla_deepseek2(void **state) { check_moe_model("tiny-deepseek2"); }

static void check_llama_golden(const char *preset)
{
    char *path = tn_test_tmp_path(".gguf"), golden[256];
    snprintf(golden, sizeof golden, "tests/golden/imatrix-%s.dat", preset);
    tn_synth_opts so = {.preset = preset, .dtype = "f32", .vocab_path = STORIES, .out_path = path, .seed = 7,
                        .n_threads = 1};
    if (tn_synth_write(&so) != TN_OK)
        fail_msg("synth %s: %s", preset, tn_last_error());
    tn_model *m;
    tn_vocab *v;
    tn_imatrix *im, *ref;
    assert_int_equal(tn_model_load(path, &m), TN_OK);
    assert_int_equal(tn_vocab_from_gguf(m->gguf, &v), TN_OK);
    assert_int_equal(tn_imatrix_new(&im), TN_OK);
    if (tn_imatrix_load(golden, &ref) != TN_OK)
        fail_msg("%s", tn_last_error());
    size_t len;
    char *text = tn_test_read_file(TEXT, &len);
    assert_non_null(text);
    assert_true(len >= 20000);
    assert_int_equal(tn_imatrix_collect(im, m, v, NULL, text, 20000, 64, 4, NULL, NULL), TN_OK);
    double worst = 0;
    int64_t n_exp = 0;
    for (int64_t i = 0; i < tn_imatrix_n_entries(ref); i++) {
        int64_t nr, nt;
        int32_t cr, ct = -1;
        const char *name = tn_imatrix_entry(ref, i, &nr, &cr);
        for (int64_t k = 0; k < tn_imatrix_n_entries(im); k++)
            if (!strcmp(tn_imatrix_entry(im, k, NULL, NULL), name))
                tn_imatrix_entry(im, k, NULL, &ct);
        const float *a = tn_imatrix_get(im, name, &nt), *b = tn_imatrix_get(ref, name, &nr);
        if (!a)
            fail_msg("%s: llama-imatrix has %s, tern has not", preset, name);
        if (nt != nr || ct != cr)
            fail_msg("%s: %s: tern width %lld ncall %d, llama-imatrix %lld, %d", preset, name, (long long)nt, (int)ct,
                     (long long)nr, (int)cr);
        double mx = 0, d = 0;
        for (int64_t c = 0; c < nr; c++) {
            mx = fmax(mx, fabs(b[c]));
            d = fmax(d, fabs((double)a[c] - b[c]));
        }
        if (d > 2e-3 * mx)
            fail_msg("%s: %s: max |tern - llama-imatrix| %g, max |llama-imatrix| %g", preset, name, d, mx);
        worst = fmax(worst, d / mx);
        n_exp += strstr(name, "_exps") != NULL;
    }
    int64_t no;
    assert_non_null(tn_imatrix_get(im, "output.weight", &no));
    assert_int_equal(tn_imatrix_n_entries(im), tn_imatrix_n_entries(ref) + 1);
    assert_true(n_exp > 0);
    printf("imatrix %s vs llama-imatrix: %lld entries (%lld expert stacks), worst max|d|/max|ref| %.2e\n", preset,
           (long long)tn_imatrix_n_entries(ref), (long long)n_exp, worst);
    unlink(path);
    free(path), free(text);
    tn_imatrix_free(im);
    tn_imatrix_free(ref);
    tn_vocab_free(v);
    tn_model_free(m);
}

static void test_llama_imatrix_mixtral(void **state) { check_llama_golden("tiny-mixtral"); }
static void test_llama_imatrix_deepseek2(void **state) { check_llama_golden("tiny-deepseek2"); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accumulate_save_load),
        cmocka_unit_test(test_collect_and_quantize),
        cmocka_unit_test(test_expert_slices),
        cmocka_unit_test(test_moe_qwen2moe),
        cmocka_unit_test(test_moe_mla_deepseek2),
        cmocka_unit_test(test_llama_imatrix_mixtral),
        cmocka_unit_test(test_llama_imatrix_deepseek2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
