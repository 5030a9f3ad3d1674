/*
 * test_convert_hf — `tern convert` against Hugging Face transformers.
 *
 * scripts/make_hf_tiny.py (numpy only) writes a tiny random checkpoint per
 * family; scripts/make_hf_goldens.py (run by hand with torch and
 * transformers) stored what transformers computes for them in
 * tests/golden/hf/<family>.bin: a 12-token sequence (8 prompt tokens and 4
 * tokens transformers generated greedily) and the logits at every position.
 * This test remakes the checkpoints, checks their bytes are the ones the
 * goldens were made from (size and FNV-1a of the safetensors files), converts
 * each with tn_convert_hf to F32 and runs tern's forward pass two ways (one
 * prefill batch and token by token, which is the decode path):
 *
 *   per row:  max_j |tern_j - hf_j|  <=  1e-4 * max_j |hf_j|   (F32)
 *
 * and the argmax agrees at every position. The checkpoints converted to F16
 * and BF16 must also load and stay within 3e-2 (weights rounded) with the
 * argmax agreeing at 11 of 12 positions. Converted to Q8_0 and Q4_0
 * (straight from the checkpoint) the file must equal converting to F32 and
 * running tern quantize's tn_quantize_model: every tensor's name, type,
 * shape and bytes, and general.file_type. docs/convert.md has the figures.
 */
#include "testutil.h"

#include "base/pool.h"
#include "compress/quantize.h"
#include "convert/convert.h"
#include "format/gguf.h"
#include "model/model.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GOLDEN_DIR "tests/golden/hf"
#define GOLDEN_HDR 320
#define KIND_HF 3u

static char g_dir[256]; /* the checkpoints made by make_hf_tiny.py */

typedef struct golden {
    char family[129];
    uint64_t ck_size, ck_fnv;
    int32_t n_tokens, n_vocab;
    int32_t *tokens;
    float *logits;
} golden;

static uint32_t rd_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd_u64(const unsigned char *p) { return (uint64_t)rd_u32(p) | (uint64_t)rd_u32(p + 4) << 32; }

static void golden_read(const char *family, golden *g)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.bin", GOLDEN_DIR, family);
    size_t len = 0;
    unsigned char *b = (unsigned char *)tn_test_read_file(path, &len);
    if (!b)
        fail_msg("%s: cannot read", path);
    if (len < GOLDEN_HDR || memcmp(b, "TNGOLDEN", 8) != 0 || rd_u32(b + 8) != 1 || rd_u32(b + 12) != KIND_HF)
        fail_msg("%s: not a version-1 TNGOLDEN file of kind %u", path, KIND_HF);
    memcpy(g->family, b + 16, 128);
    g->family[128] = '\0';
    g->ck_size = rd_u64(b + 296);
    g->ck_fnv = rd_u64(b + 304);
    g->n_tokens = (int32_t)rd_u32(b + 312);
    g->n_vocab = (int32_t)rd_u32(b + 316);
    if (g->n_tokens < 1 || g->n_tokens > 256 || g->n_vocab < 1 || g->n_vocab > 65536)
        fail_msg("%s: implausible n_tokens %d / n_vocab %d", path, g->n_tokens, g->n_vocab);
    if (len != GOLDEN_HDR + 4 * (size_t)g->n_tokens * (1 + (size_t)g->n_vocab))
        fail_msg("%s: size %zu does not match its header", path, len);
    g->tokens = malloc(4 * (size_t)g->n_tokens);
    g->logits = malloc(4 * (size_t)g->n_tokens * (size_t)g->n_vocab);
    assert_non_null(g->tokens);
    assert_non_null(g->logits);
    memcpy(g->tokens, b + GOLDEN_HDR, 4 * (size_t)g->n_tokens);
    memcpy(g->logits, b + GOLDEN_HDR + 4 * (size_t)g->n_tokens, 4 * (size_t)g->n_tokens * (size_t)g->n_vocab);
    free(b);
}

/* Size and FNV-1a 64 of the directory's *.safetensors files in name order. */
static void checkpoint_hash(const char *dir, uint64_t *size, uint64_t *h)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    assert_true(n > 0);
    *size = 0;
    *h = 0xcbf29ce484222325ull;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(names[i]->d_name);
        if (l > 12 && !strcmp(names[i]->d_name + l - 12, ".safetensors")) {
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dir, names[i]->d_name);
            size_t len;
            unsigned char *b = (unsigned char *)tn_test_read_file(p, &len);
            assert_non_null(b);
            for (size_t k = 0; k < len; k++) {
                *h ^= b[k];
                *h *= 0x100000001b3ull;
            }
            *size += len;
            free(b);
        }
        free(names[i]);
    }
    free(names);
}

static int argmax(const float *x, int32_t n)
{
    int b = 0;
    for (int32_t j = 1; j < n; j++)
        if (x[j] > x[b])
            b = j;
    return b;
}

/* Runs the golden's tokens through m (prefill or one at a time) into out. */
static void run(const tn_model *m, tn_pool *pool, const golden *g, bool tokenwise, float *out)
{
    tn_kv_cache *kv;
    tn_forward *f;
    assert_int_equal(tn_kv_new(m, g->n_tokens, 1, &kv), TN_OK);
    assert_int_equal(tn_forward_new(m, g->n_tokens, &f), TN_OK);
    int32_t pos[256], seq[256];
    bool want[256];
    for (int32_t i = 0; i < g->n_tokens; i++) {
        pos[i] = i;
        seq[i] = 0;
        want[i] = true;
    }
    int32_t step = tokenwise ? 1 : g->n_tokens;
    for (int32_t t0 = 0; t0 < g->n_tokens; t0 += step) {
        tn_batch b = {.n_tokens = step, .token = g->tokens + t0, .pos = pos + t0, .seq_id = seq,
                      .kv_slot = pos + t0, .want_logits = want};
        if (tn_forward_run(f, kv, pool, &b, out + (size_t)t0 * (size_t)g->n_vocab) != TN_OK)
            fail_msg("%s: forward: %s", g->family, tn_last_error());
    }
    tn_forward_free(f);
    tn_kv_free(kv);
}

/* Converts, loads, runs both ways and compares; returns the worst relative
 * row error. */
static double check(const golden *g, tn_dtype dtype, double tol, int min_agree)
{
    char dir[512], *out = tn_test_tmp_path(".gguf");
    snprintf(dir, sizeof dir, "%s/%s", g_dir, g->family);
    if (tn_convert_hf(dir, out, dtype, NULL) != TN_OK)
        fail_msg("%s: convert: %s", g->family, tn_last_error());
    tn_model *m;
    if (tn_model_load(out, &m) != TN_OK)
        fail_msg("%s: load: %s", g->family, tn_last_error());
    assert_int_equal(m->hp.n_vocab, g->n_vocab);
    tn_pool *pool;
    assert_int_equal(tn_pool_new(1, &pool), TN_OK);
    size_t nl = (size_t)g->n_tokens * (size_t)g->n_vocab;
    float *x = malloc(nl * sizeof *x);
    assert_non_null(x);
    double worst = 0;
    for (int mode = 0; mode < 2; mode++) {
        run(m, pool, g, mode == 1, x);
        int agree = 0;
        for (int32_t t = 0; t < g->n_tokens; t++) {
            const float *ref = g->logits + (size_t)t * (size_t)g->n_vocab, *y = x + (size_t)t * (size_t)g->n_vocab;
            double dmax = 0, rmax = 0;
            for (int32_t j = 0; j < g->n_vocab; j++) {
                double d = fabs((double)y[j] - (double)ref[j]);
                dmax = d > dmax || isnan(d) ? (isnan(d) ? INFINITY : d) : dmax;
                rmax = fmax(rmax, fabs((double)ref[j]));
            }
            worst = fmax(worst, dmax / rmax);
            agree += argmax(ref, g->n_vocab) == argmax(y, g->n_vocab);
        }
        printf("[convert-hf] %-12s %-4s %-10s max|d|/max|ref| %.3e (tol %.0e)  argmax %d/%d\n", g->family,
               tn_dtype_traits_of(dtype)->name, mode ? "tokenwise" : "prefill", worst, tol, agree, g->n_tokens);
        if (!(worst <= tol))
            fail_msg("%s %s: max|d|/max|ref| %.3e exceeds %.0e", g->family, tn_dtype_traits_of(dtype)->name, worst,
                     tol);
        if (agree < min_agree)
            fail_msg("%s %s: argmax agrees at %d of %d positions", g->family, tn_dtype_traits_of(dtype)->name, agree,
                     g->n_tokens);
    }
    free(x);
    tn_pool_free(pool);
    tn_model_free(m);
    unlink(out);
    free(out);
    return worst;
}

/* tn_convert_hf(dtype mix) == tn_convert_hf(F32) + tn_quantize_model(mix). */
static void check_mix(const golden *g, tn_dtype mix)
{
    char dir[512], *direct = tn_test_tmp_path(".gguf"), *f32 = tn_test_tmp_path(".gguf"),
                   *requant = tn_test_tmp_path(".gguf");
    snprintf(dir, sizeof dir, "%s/%s", g_dir, g->family);
    if (tn_convert_hf(dir, direct, mix, NULL) != TN_OK || tn_convert_hf(dir, f32, TN_DTYPE_F32, NULL) != TN_OK)
        fail_msg("%s: convert %s: %s", g->family, tn_dtype_traits_of(mix)->name, tn_last_error());
    tn_quant_opts o = {.in_path = f32, .out_path = requant, .type = tn_dtype_traits_of(mix)->name, .n_threads = 1};
    tn_quant_report rep = {0};
    if (tn_quantize_model(&o, &rep) != TN_OK)
        fail_msg("%s: quantize: %s", g->family, tn_last_error());
    tn_quant_report_deinit(&rep);
    tn_gguf *a, *b;
    assert_int_equal(tn_gguf_open(direct, &a), TN_OK);
    assert_int_equal(tn_gguf_open(requant, &b), TN_OK);
    assert_int_equal(tn_gguf_n_tensors(a), tn_gguf_n_tensors(b));
    int64_t n_mix = 0;
    for (int64_t i = 0; i < tn_gguf_n_tensors(a); i++) {
        const tn_gguf_tensor *ta = tn_gguf_tensor_at(a, i), *tb = tn_gguf_tensor_at(b, i);
        assert_string_equal(ta->name, tb->name);
        if (ta->type != tb->type)
            fail_msg("%s %s: %s is %s, tern quantize made %s", g->family, tn_dtype_traits_of(mix)->name, ta->name,
                     tn_dtype_traits_of(ta->type)->name, tn_dtype_traits_of(tb->type)->name);
        assert_memory_equal(ta->ne, tb->ne, sizeof ta->ne);
        assert_int_equal(ta->nbytes, tb->nbytes);
        if (memcmp(ta->data, tb->data, ta->nbytes) != 0)
            fail_msg("%s %s: %s differs from tern quantize's", g->family, tn_dtype_traits_of(mix)->name, ta->name);
        n_mix += ta->type == mix;
    }
    uint32_t fa = 0, fb = 1, va = 0, vb = 1;
    assert_int_equal(tn_gguf_get_u32(a, "general.file_type", &fa), TN_OK);
    assert_int_equal(tn_gguf_get_u32(b, "general.file_type", &fb), TN_OK);
    assert_int_equal(fa, fb);
    assert_int_equal(tn_gguf_get_u32(a, "general.quantization_version", &va), TN_OK);
    assert_int_equal(tn_gguf_get_u32(b, "general.quantization_version", &vb), TN_OK);
    assert_int_equal(va, vb);
    assert_true(n_mix > 0); /* the mix's type is actually there */
    printf("[convert-hf] %-12s %-4s = convert f32 + quantize (%lld of %lld tensors in %s)\n", g->family,
           tn_dtype_traits_of(mix)->name, (long long)n_mix, (long long)tn_gguf_n_tensors(a),
           tn_dtype_traits_of(mix)->name);
    tn_gguf_free(a);
    tn_gguf_free(b);
    tn_model *m; /* and it loads */
    if (tn_model_load(direct, &m) != TN_OK)
        fail_msg("%s %s: load: %s", g->family, tn_dtype_traits_of(mix)->name, tn_last_error());
    tn_model_free(m);
    unlink(direct), unlink(f32), unlink(requant);
    free(direct), free(f32), free(requant);
}

static void test_family(void **state)
{
    const char *family = *state;
    golden g = {0};
    golden_read(family, &g);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", g_dir, family);
    uint64_t size, h;
    checkpoint_hash(dir, &size, &h);
    if (size != g.ck_size || h != g.ck_fnv)
        fail_msg("%s: scripts/make_hf_tiny.py made different bytes (%llu, %016llx) than the golden's checkpoint "
                 "(%llu, %016llx): rerun scripts/make_hf_goldens.py",
                 family, (unsigned long long)size, (unsigned long long)h, (unsigned long long)g.ck_size,
                 (unsigned long long)g.ck_fnv);
    check(&g, TN_DTYPE_F32, 1e-4, g.n_tokens);
    check(&g, TN_DTYPE_F16, 3e-2, g.n_tokens - 1);
    check(&g, TN_DTYPE_BF16, 3e-2, g.n_tokens - 1);
    check_mix(&g, TN_DTYPE_Q8_0);
    check_mix(&g, TN_DTYPE_Q4_0);
    free(g.tokens);
    free(g.logits);
}

static const char *const families[] = {"llama", "llama3", "mistral",   "qwen2",       "qwen3",      "mixtral",
                                       "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3"};

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/tern-hf-tiny-%d", (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "python3 scripts/make_hf_tiny.py --out %s", g_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_convert_hf: '%s' failed (python3 with numpy is required)\n", cmd);
        return 1;
    }
    struct CMUnitTest tests[TN_ARRAY_LEN(families)];
    for (size_t i = 0; i < TN_ARRAY_LEN(families); i++)
        tests[i] = (struct CMUnitTest){families[i], test_family, NULL, NULL, (void *)families[i]};
    int rc = cmocka_run_group_tests_name("convert_hf", tests, NULL, NULL);
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "test_convert_hf: could not remove %s\n", g_dir);
    return rc;
}
