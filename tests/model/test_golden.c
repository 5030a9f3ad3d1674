/*
 * test_golden — tern's logits against an independent implementation.
 *
 * Each .bin file in tests/golden holds the logits of every position of one
 * token sequence, computed by scripts/ref_forward.py (numpy, float64, written from
 * the models' math and Hugging Face's semantics, sharing no code with tern)
 * on one model: stories260K from ../shared/data, or a tiny synth preset in
 * one weight dtype, which this test regenerates through tn_synth_write with
 * the recorded preset, dtype, vocabulary and seed. The model file's size and
 * FNV-1a hash are recorded too: if the bytes differ (the synth generator or
 * the shared file changed) the test says so instead of reporting a logit
 * mismatch nobody could explain. The file format is documented in
 * scripts/make_goldens.py; docs/correctness.md has the tolerances and the
 * differences measured.
 *
 * For every golden and every ISA variant this CPU can run, tern's batched
 * forward runs the sequence three ways — one prefill batch, token by token,
 * and two chunks with the KV slots in reverse order — and every logit is
 * compared:
 *
 *   per row:  max_j |tern_j - ref_j|  <=  tol(dtype) * max_j |ref_j|
 *
 * and the argmax (the greedy next token) must agree at every position for
 * F32/F16/BF16 weights and at 14 of 16 for Q8_0/Q4_0. Quantized weights
 * have looser bounds because tern, like llama.cpp, rounds the activations
 * of a Q8_0/Q4_0 matrix product to Q8_0 while the reference computes in
 * float64 on the dequantized weights. The three ways of feeding the
 * sequence must also agree with each other to the bit.
 */
#include "testutil.h"

#include "base/base.h"
#include "base/pool.h"
#include "kern/kern.h"
#include "model/model.h"
#include "model/synth.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GOLDEN_DIR "tests/golden"
#define GOLDEN_MAGIC "TNGOLDEN"
#define GOLDEN_VERSION 1u
#define GOLDEN_HDR 320
enum { KIND_FILE = 1, KIND_SYNTH = 2 };

/* The three ways the sequence is fed to the forward pass. */
typedef enum mode { MODE_PREFILL = 0, MODE_TOKENWISE, MODE_CHUNKED, MODE_COUNT } mode;

typedef struct golden {
    char name[256];          /* file name without .bin */
    uint32_t kind;
    char model[129];         /* path (KIND_FILE) or preset (KIND_SYNTH) */
    char vocab[129];
    char dtype[17];
    uint64_t seed;
    uint64_t file_size;
    uint64_t file_fnv;
    int32_t n_tokens;
    int32_t n_vocab;
    int32_t *tokens;         /* (n_tokens) */
    float *logits;           /* (n_tokens, n_vocab) */
    /* What a run holds, freed by golden_teardown (also after a failure). */
    char *tmp_path;          /* the regenerated synth model */
    tn_model *tm;            /* the loaded model */
    tn_pool *pool;
    tn_kv_cache *kv;
    tn_forward *fwd;
    float *out[MODE_COUNT];  /* (n_tokens, n_vocab) per mode */
} golden;

/* --- reading goldens -------------------------------------------------- */

static uint32_t rd_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd_u64(const unsigned char *p)
{
    return (uint64_t)rd_u32(p) | (uint64_t)rd_u32(p + 4) << 32;
}

static void rd_str(char *dst, const unsigned char *p, size_t n)
{
    memcpy(dst, p, n);
    dst[n] = '\0';
}

/* Parses GOLDEN_DIR/<g->name>.bin into g; fails the test (naming the file)
 * if it is malformed. */
static void golden_read(golden *g)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.bin", GOLDEN_DIR, g->name);
    size_t len = 0;
    unsigned char *b = (unsigned char *)tn_test_read_file(path, &len);
    if (!b)
        fail_msg("%s: cannot read", path);
    if (len < GOLDEN_HDR || memcmp(b, GOLDEN_MAGIC, 8) != 0)
        fail_msg("%s: not a golden file (bad magic)", path);
    if (rd_u32(b + 8) != GOLDEN_VERSION)
        fail_msg("%s: golden version %u, this test reads %u", path, rd_u32(b + 8), GOLDEN_VERSION);
    g->kind = rd_u32(b + 12);
    rd_str(g->model, b + 16, 128);
    rd_str(g->vocab, b + 144, 128);
    rd_str(g->dtype, b + 272, 16);
    g->seed = rd_u64(b + 288);
    g->file_size = rd_u64(b + 296);
    g->file_fnv = rd_u64(b + 304);
    g->n_tokens = (int32_t)rd_u32(b + 312);
    g->n_vocab = (int32_t)rd_u32(b + 316);
    if (g->n_tokens < 1 || g->n_tokens > 4096 || g->n_vocab < 1 || g->n_vocab > (1 << 20))
        fail_msg("%s: implausible n_tokens %d / n_vocab %d", path, g->n_tokens, g->n_vocab);
    size_t want = GOLDEN_HDR + 4 * (size_t)g->n_tokens * (1 + (size_t)g->n_vocab);
    if (len != want)
        fail_msg("%s: %zu bytes, header says %zu", path, len, want);
    g->tokens = malloc(4 * (size_t)g->n_tokens);
    g->logits = malloc(4 * (size_t)g->n_tokens * (size_t)g->n_vocab);
    assert_non_null(g->tokens);
    assert_non_null(g->logits);
    /* Little-endian on disk and on every target tern supports (x86-64, arm64). */
    memcpy(g->tokens, b + GOLDEN_HDR, 4 * (size_t)g->n_tokens);
    memcpy(g->logits, b + GOLDEN_HDR + 4 * (size_t)g->n_tokens, 4 * (size_t)g->n_tokens * (size_t)g->n_vocab);
    free(b);
}

/* FNV-1a, 64 bits. */
static uint64_t fnv1a64(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* --- tolerances ------------------------------------------------------- */

/* Bound on max |Δ| / max |ref| of a row, per weight dtype, and the least
 * number of positions (of 16) whose argmax must agree. Measured worst cases
 * (docs/correctness.md): F32 and F16/BF16 1.3e-6 — F16/BF16 weights widen
 * exactly to F32 and tern dots them with F32 activations — and Q8_0/Q4_0
 * 4.1e-2, all of it from rounding the activations to Q8_0 (the reference
 * with that rounding emulated agrees with tern to 1e-7 but for rare
 * rounding-tie flips). Every bound leaves at least 2.5x margin. */
typedef struct tolerance {
    double rel;
    int argmax_of_16;
} tolerance;

static tolerance tolerance_of(const char *dtype)
{
    if (!strcmp(dtype, "f32"))
        return (tolerance){1e-4, 16};
    if (!strcmp(dtype, "f16") || !strcmp(dtype, "bf16"))
        return (tolerance){1e-3, 16};
    if (!strcmp(dtype, "q8_0") || !strcmp(dtype, "q4_0"))
        return (tolerance){1e-1, 14};
    fail_msg("no tolerance for dtype '%s'", dtype);
    return (tolerance){0, 0};
}

/* --- running tern ----------------------------------------------------- */

static const char *const mode_name[MODE_COUNT] = {"prefill", "token-by-token", "chunked+reversed"};

/* Runs tokens [t0, t1) of g as one batch; slot_of maps position to KV slot.
 * Writes their logits rows to out + t0 * n_vocab. */
static void run_batch(tn_forward *f, tn_kv_cache *kv, tn_pool *pool, const golden *g, int32_t t0,
                      int32_t t1, int32_t (*slot_of)(int32_t, int32_t), float *out)
{
    int32_t n = t1 - t0;
    int32_t pos[4096], seq[4096], slot[4096];
    bool want[4096];
    for (int32_t i = 0; i < n; i++) {
        pos[i] = t0 + i;
        seq[i] = 0;
        slot[i] = slot_of(t0 + i, g->n_tokens);
        want[i] = true;
    }
    tn_batch b = {.n_tokens = n, .token = g->tokens + t0, .pos = pos, .seq_id = seq,
                  .kv_slot = slot, .want_logits = want};
    tn_status s = tn_forward_run(f, kv, pool, &b, out + (size_t)t0 * (size_t)g->n_vocab);
    if (s != TN_OK)
        fail_msg("%s: tn_forward_run(tokens %d..%d): %s", g->name, t0, t1, tn_last_error());
}

static int32_t slot_identity(int32_t pos, int32_t n) { return pos; }
/* Slots in reverse order: later positions in lower cells. */
static int32_t slot_reversed(int32_t pos, int32_t n) { return n - 1 - pos; }

/* Runs the golden's sequence through a fresh KV cache and forward state. */
static void run_mode(golden *g, mode md, float *out)
{
    int32_t n = g->n_tokens;
    assert_int_equal(tn_kv_new(g->tm, n, 1, &g->kv), TN_OK);
    assert_int_equal(tn_forward_new(g->tm, n, &g->fwd), TN_OK);
    tn_kv_cache *kv = g->kv;
    tn_forward *f = g->fwd;
    tn_pool *pool = g->pool;
    switch (md) {
    case MODE_PREFILL:
        run_batch(f, kv, pool, g, 0, n, slot_identity, out);
        break;
    case MODE_TOKENWISE:
        for (int32_t t = 0; t < n; t++)
            run_batch(f, kv, pool, g, t, t + 1, slot_identity, out);
        break;
    case MODE_CHUNKED: {
        int32_t cut = n / 3 > 0 ? n / 3 : 1;
        run_batch(f, kv, pool, g, 0, cut, slot_reversed, out);
        if (cut < n)
            run_batch(f, kv, pool, g, cut, n, slot_reversed, out);
        break;
    }
    default:
        fail();
    }
    tn_forward_free(g->fwd);
    tn_kv_free(g->kv);
    g->fwd = NULL;
    g->kv = NULL;
}

/* --- comparing -------------------------------------------------------- */

typedef struct cmp_result {
    double worst_rel;        /* max over rows of max|Δ| / max|ref| */
    double worst_abs;        /* max |Δ| */
    int argmax_agree;        /* positions whose argmax agrees */
} cmp_result;

static int argmax_row(const float *x, int32_t n)
{
    int best = 0;
    for (int32_t j = 1; j < n; j++)
        if (x[j] > x[best])
            best = j;
    return best;
}

static cmp_result compare(const golden *g, const float *got)
{
    cmp_result r = {0};
    int32_t nv = g->n_vocab;
    for (int32_t t = 0; t < g->n_tokens; t++) {
        const float *ref = g->logits + (size_t)t * (size_t)nv;
        const float *x = got + (size_t)t * (size_t)nv;
        double rmax = 0, dmax = 0;
        for (int32_t j = 0; j < nv; j++) {
            double d = fabs((double)x[j] - (double)ref[j]);
            if (!(d <= dmax))          /* NaN propagates as a failure */
                dmax = isnan(d) ? INFINITY : d;
            if (fabs(ref[j]) > rmax)
                rmax = fabs(ref[j]);
        }
        double rel = rmax > 0 ? dmax / rmax : dmax;
        if (rel > r.worst_rel)
            r.worst_rel = rel;
        if (dmax > r.worst_abs)
            r.worst_abs = dmax;
        r.argmax_agree += argmax_row(ref, nv) == argmax_row(x, nv);
    }
    return r;
}

/* --- the test ---------------------------------------------------------- */

/* With TERN_GOLDEN_DUMP=DIR in the environment, tern's prefill logits are
 * also written to DIR/<golden>.<isa>.f32 (raw little-endian floats, n_tokens
 * rows of n_vocab) for study next to the reference (docs/correctness.md). */
static void dump_logits(const golden *g, tn_isa isa, const float *x, size_t n)
{
    const char *dir = getenv("TERN_GOLDEN_DUMP");
    if (!dir || !*dir)
        return;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.%s.f32", dir, g->name, tn_isa_name(isa));
    if (tn_test_write_file(path, x, n * sizeof(float)) != 0)
        fail_msg("cannot write %s", path);
}

static void test_one_golden(void **state)
{
    golden *g = *state;
    golden_read(g);
    const tolerance tol = tolerance_of(g->dtype);
    /* Positions whose argmax must agree, scaled from 16 to n_tokens. */
    const int min_agree = (tol.argmax_of_16 * g->n_tokens + 15) / 16;

    /* The model the golden was made from. */
    const char *path = g->model;
    if (g->kind == KIND_SYNTH) {
        g->tmp_path = tn_test_tmp_path(".gguf");
        tn_synth_opts o = {.preset = g->model, .dtype = g->dtype, .vocab_path = g->vocab,
                           .out_path = g->tmp_path, .seed = g->seed};
        if (tn_synth_write(&o) != TN_OK)
            fail_msg("%s: tn_synth_write(%s, %s, seed %llu): %s", g->name, g->model, g->dtype,
                     (unsigned long long)g->seed, tn_last_error());
        path = g->tmp_path;
    } else if (g->kind != KIND_FILE) {
        fail_msg("%s: unknown golden kind %u", g->name, g->kind);
    }
    size_t len = 0;
    unsigned char *bytes = (unsigned char *)tn_test_read_file(path, &len);
    if (!bytes)
        fail_msg("%s: cannot read model %s", g->name, path);
    uint64_t h = fnv1a64(bytes, len);
    free(bytes);
    if (len != g->file_size || h != g->file_fnv)
        fail_msg("%s: the model file is not the one the golden was computed on "
                 "(size %zu, FNV-1a %016llx; golden recorded %llu, %016llx). %s changed: "
                 "regenerate the goldens with `python3 scripts/make_goldens.py --tern build/tern` "
                 "after checking the change is intended.",
                 g->name, len, (unsigned long long)h, (unsigned long long)g->file_size,
                 (unsigned long long)g->file_fnv,
                 g->kind == KIND_SYNTH ? "The synth generator (src/model/synth.c)" : "The shared model file");

    if (tn_model_load(path, &g->tm) != TN_OK)
        fail_msg("%s: tn_model_load: %s", g->name, tn_last_error());
    assert_int_equal(g->tm->hp.n_vocab, g->n_vocab);

    assert_int_equal(tn_pool_new(2, &g->pool), TN_OK);
    size_t nl = (size_t)g->n_tokens * (size_t)g->n_vocab;
    float **out = g->out;
    for (int md = 0; md < MODE_COUNT; md++) {
        out[md] = malloc(nl * sizeof(float));
        assert_non_null(out[md]);
    }

    const tn_isa isa_default = tn_kern_init();
    int n_isa_run = 0;
    for (int isa = TN_ISA_SCALAR; isa <= TN_ISA_AVX512; isa++) {
        if (!tn_kern_set_isa((tn_isa)isa))
            continue;
        n_isa_run++;
        for (int md = 0; md < MODE_COUNT; md++) {
            for (size_t i = 0; i < nl; i++)
                out[md][i] = NAN;
            run_mode(g, (mode)md, out[md]);
            if (md == MODE_PREFILL)
                dump_logits(g, (tn_isa)isa, out[md], nl);
            cmp_result r = compare(g, out[md]);
            printf("[golden] %-28s %-7s %-17s max|d|/max|ref| %.3e (tol %.0e)  max|d| %.3e  "
                   "argmax %d/%d (need %d)\n",
                   g->name, tn_isa_name((tn_isa)isa), mode_name[md], r.worst_rel, tol.rel, r.worst_abs,
                   r.argmax_agree, g->n_tokens, min_agree);
            if (!(r.worst_rel <= tol.rel))
                fail_msg("%s [%s, %s]: max|d|/max|ref| %.3e exceeds tolerance %.0e", g->name,
                         tn_isa_name((tn_isa)isa), mode_name[md], r.worst_rel, tol.rel);
            if (r.argmax_agree < min_agree)
                fail_msg("%s [%s, %s]: argmax agrees at only %d of %d positions (need %d)", g->name,
                         tn_isa_name((tn_isa)isa), mode_name[md], r.argmax_agree, g->n_tokens, min_agree);
        }
        /* The three ways of feeding the sequence see the same cache cells in
         * the same order (model.h), and matmul reductions do not depend on
         * the batch size (kern.h): they must agree to the bit. */
        for (int md = 1; md < MODE_COUNT; md++)
            for (size_t i = 0; i < nl; i++)
                if (memcmp(&out[md][i], &out[0][i], sizeof(float)) != 0)
                    fail_msg("%s [%s]: %s logit %zu (pos %zu) = %.9g differs from prefill's %.9g",
                             g->name, tn_isa_name((tn_isa)isa), mode_name[md], i % (size_t)g->n_vocab,
                             i / (size_t)g->n_vocab, out[md][i], out[0][i]);
    }
    assert_true(tn_kern_set_isa(isa_default));
    assert_true(n_isa_run >= 1);
}

/* Frees what test_one_golden holds; cmocka runs it after a failure too. */
static int golden_teardown(void **state)
{
    golden *g = *state;
    tn_kern_set_isa(tn_kern_init());
    tn_forward_free(g->fwd);
    tn_kv_free(g->kv);
    tn_model_free(g->tm);
    tn_pool_free(g->pool);
    if (g->tmp_path)
        unlink(g->tmp_path);
    free(g->tmp_path);
    for (int md = 0; md < MODE_COUNT; md++)
        free(g->out[md]);
    free(g->tokens);
    free(g->logits);
    g->fwd = NULL;
    g->kv = NULL;
    g->tm = NULL;
    g->pool = NULL;
    g->tmp_path = NULL;
    memset(g->out, 0, sizeof g->out);
    g->tokens = NULL;
    g->logits = NULL;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(((const golden *)a)->name, ((const golden *)b)->name);
}

int main(void)
{
    DIR *d = opendir(GOLDEN_DIR);
    if (!d) {
        fprintf(stderr, "test_golden: cannot open %s (run from the repo root)\n", GOLDEN_DIR);
        return 1;
    }
    size_t n = 0, cap = 0;
    golden *gs = NULL;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 5 || l >= sizeof gs->name + 4 || strcmp(e->d_name + l - 4, ".bin") != 0)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 32;
            gs = realloc(gs, cap * sizeof *gs);
            if (!gs)
                return 1;
        }
        memset(&gs[n], 0, sizeof gs[n]);
        memcpy(gs[n].name, e->d_name, l - 4);
        n++;
    }
    closedir(d);
    if (n == 0) {
        fprintf(stderr, "test_golden: no goldens in %s\n", GOLDEN_DIR);
        return 1;
    }
    qsort(gs, n, sizeof *gs, cmp_names);

    struct CMUnitTest *tests = calloc(n, sizeof *tests);
    if (!tests)
        return 1;
    for (size_t i = 0; i < n; i++) {
        tests[i].name = gs[i].name;
        tests[i].test_func = test_one_golden;
        tests[i].teardown_func = golden_teardown;
        tests[i].initial_state = &gs[i];
    }
    int rc = _cmocka_run_group_tests("golden", tests, n, NULL, NULL);
    free(tests);
    free(gs);
    return rc;
}
