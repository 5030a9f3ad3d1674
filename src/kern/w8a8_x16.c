/*
 * w8a8_x16.c — the W8A8 x16 layout (kern/w8a8_x16.h): repacking, row
 * access, the scalar reference kernel (the specification) and the threaded
 * driver.
 *
 * HOW IT WORKS (tn__w8a8x16_matmul)
 *
 * 1. Each token's row is quantized with the W8A8 quantizer of the running
 *    ISA (the same bytes on every ISA; W8A8_HAD rotates the row by H first,
 *    as tn_w8a8_had_matmul does), its bias -128·Σq and scale kept, and its
 *    bytes scattered dword by dword into its slot of a 16-token tile.
 * 2. The 16-row groups are cut into chunks (an even number of groups
 *    with several tokens: the prefill kernel pairs them) that threads take
 *    from an atomic counter (tn__x16_run, kern/repack.h: the driver every
 *    x16 family shares). A chunk is all its groups against all tokens in one
 *    kernel call; the AVX-512 kernel walks the tokens in tiles of 16 and,
 *    per tile, each group from its first column to its last.
 *
 * DETERMINISM: each y element is one exact integer sum and one fixed f32
 * expression; chunks, tiles, chains and threads only change when and in
 * which order the integer is added up, which cannot change it.
 */
#include "kern/w8a8_x16.h"
#include "kern/repack.h"
#include "kern/hadamard.h"
#include "kern/kern_impl.h"
#include "kern/w8a8.h"

#include <string.h>

#define X16 16

/* Dword steps of a row of n_in columns. */
static int64_t steps(int64_t n_in) { return (n_in + 3) / 4; }
static size_t up64(size_t n) { return (n + 63) / 64 * 64; }

size_t tn__w8a8x16_group_bytes(int64_t n_in) { return 64 * (size_t)steps(n_in) + 64; }

/* --- the layout ---------------------------------------------------------- */

void tn__w8a8x16_repack(const void *src, int64_t n_in, int64_t n_out, void *dst)
{
    const int64_t K = steps(n_in), ng = (n_out + X16 - 1) / X16;
    const size_t gs = tn__w8a8x16_group_bytes(n_in), row = TN_W8A8_ROW(n_in);
    for (int64_t g = 0; g < ng; g++) {
        uint8_t *gd = (uint8_t *)dst + (size_t)g * gs;
        memset(gd, 0x80, 64 * (size_t)K); /* q = 0: padding columns and rows */
        memset(gd + 64 * (size_t)K, 0, 64);
        for (int r = 0; r < X16 && g * X16 + r < n_out; r++) {
            const uint8_t *sr = (const uint8_t *)src + (size_t)(g * X16 + r) * row;
            memcpy(gd + 64 * (size_t)K + 4 * (size_t)r, sr, 4);
            for (int64_t j = 0; j < n_in; j++)
                gd[64 * (size_t)(j / 4) + 4 * (size_t)r + (size_t)(j % 4)] = (uint8_t)(sr[4 + j] ^ 0x80u);
        }
    }
}

void tn__w8a8x16_get_row(const void *w, int64_t n_in, int64_t i, float *out)
{
    const int64_t K = steps(n_in);
    const uint8_t *gd = (const uint8_t *)w + (size_t)(i / X16) * tn__w8a8x16_group_bytes(n_in);
    const size_t r = (size_t)(i % X16);
    float d;
    memcpy(&d, gd + 64 * (size_t)K + 4 * r, 4);
    for (int64_t j = 0; j < n_in; j++)
        out[j] = d * (float)((int)gd[64 * (size_t)(j / 4) + 4 * r + (size_t)(j % 4)] - 128);
}

/* --- the specification --------------------------------------------------- */

void tn__w8a8x16_gemm_ref(const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp, size_t ks,
                          const int32_t *bias, const float *dx, int64_t nt, int64_t K, float *y, size_t ystride)
{
    for (int64_t g = 0; g < ng; g++) {
        const uint8_t *gd = w + (size_t)g * gstride;
        for (int r = 0; r < X16 && g * X16 + r < nr; r++) {
            float dw;
            memcpy(&dw, gd + 64 * (size_t)K + 4 * (size_t)r, 4);
            for (int64_t t = 0; t < nt; t++) {
                const uint8_t *x = xp + (size_t)(t / X16) * (size_t)K * ks + 4 * (size_t)(t % X16);
                /* unsigned: the exact sum, whose partial sums may pass 2^31 */
                uint32_t s = (uint32_t)bias[t];
                for (int64_t k = 0; k < K; k++)
                    for (int i = 0; i < 4; i++)
                        s += (uint32_t)((int32_t)gd[64 * (size_t)k + 4 * (size_t)r + (size_t)i] *
                                        (int32_t)(int8_t)x[(size_t)k * ks + (size_t)i]);
                y[(size_t)t * ystride + (size_t)(g * X16 + r)] = (float)(int32_t)s * (dw * dx[t]);
            }
        }
    }
}

tn__w8a8x16_gemm_fn tn__w8a8x16_gemm_of(int isa)
{
    return isa >= TN_ISA_AVX512 ? tn__w8a8x16_gemm_avx512 : tn__w8a8x16_gemm_ref;
}

/* --- the driver ---------------------------------------------------------- */

/* Scratch, in this order, each part 64-byte aligned: the quantized rows
 * (nt, up64(n_in)) int8; the tiles; bias (nt) int32; dx (nt) f32; for
 * W8A8_HAD the rotated rows (nt, n_in) f32. */
typedef struct scratch {
    size_t q_row, ks, tiles, bias, dx, xr, total;
} scratch;

static scratch scratch_of(tn_dtype xt, int64_t n_in, int64_t nt)
{
    scratch s;
    s.q_row = up64((size_t)n_in);
    s.ks = 4 * (size_t)(nt < X16 ? nt : X16);
    s.tiles = s.q_row * (size_t)nt;
    s.bias = s.tiles + up64((size_t)((nt + X16 - 1) / X16) * (size_t)steps(n_in) * s.ks);
    s.dx = s.bias + up64(4 * (size_t)nt);
    s.xr = s.dx + up64(4 * (size_t)nt);
    s.total = s.xr + (xt == TN_DTYPE_W8A8_HADX16 ? (size_t)n_in * (size_t)nt * sizeof(float) : 0);
    return s;
}

size_t tn__w8a8x16_wsize(tn_dtype xt, int64_t n_in, int64_t n_tokens)
{
    if (n_in <= 0 || n_tokens <= 0)
        return 0;
    return scratch_of(xt, n_in, n_tokens).total;
}

typedef struct job {
    tn__w8a8x16_gemm_fn gemm;
    tn_w8a8_quant_fn quant;
    const uint8_t *w;
    size_t gstride;
    int64_t n_in, n_out, n_tokens, K;
    const float *x;
    int8_t *xq;   /* (n_tokens, q_row) */
    uint8_t *xp;  /* the tiles */
    int32_t *bias; /* (n_tokens) */
    float *dx;    /* (n_tokens) */
    float *xr;    /* W8A8_HAD: (n_tokens, n_in); else NULL */
    size_t q_row, ks;
    float *y;
} job;

static void quant_rows(void *ctx, int64_t t0, int64_t t1)
{
    const job *j = ctx;
    const size_t K = (size_t)j->K;
    for (int64_t t = t0; t < t1; t++) {
        const float *x = j->x + t * j->n_in;
        if (j->xr) {
            float *r = j->xr + t * j->n_in;
            memcpy(r, x, (size_t)j->n_in * sizeof *r);
            tn_hadamard(r, j->n_in);
            x = r;
        }
        int8_t *q = j->xq + (size_t)t * j->q_row;
        j->dx[t] = j->quant(x, q, j->n_in, false);
        memset(q + j->n_in, 0, 4 * K - (size_t)j->n_in);
        int32_t s = 0;
        for (int64_t i = 0; i < j->n_in; i++)
            s += q[i];
        j->bias[t] = -128 * s;
        uint8_t *p = j->xp + (size_t)(t / X16) * K * j->ks + 4 * (size_t)(t % X16);
        for (size_t k = 0; k < K; k++)
            memcpy(p + k * j->ks, q + 4 * k, 4);
    }
}

static void gemm_groups(void *ctx, int64_t g0, int64_t g1)
{
    const job *j = ctx;
    j->gemm(j->w + (size_t)g0 * j->gstride, j->gstride, g1 - g0, j->n_out - g0 * X16, j->xp, j->ks, j->bias, j->dx,
            j->n_tokens, j->K, j->y + g0 * X16, (size_t)j->n_out);
}

void tn__w8a8x16_matmul(tn_pool *pool, const void *w, tn_dtype xt, int64_t n_in, int64_t n_out, const float *x,
                        int64_t n_tokens, float *y, void *wdata)
{
    assert(tn__dtype_is_w8a8x16(xt) && wdata);
    if (n_out <= 0 || n_tokens <= 0 || n_in <= 0)
        return;
    const tn_isa isa = tn__kern_ops_cur()->isa;
    tn_w8a8_kernels k;
    const bool ok = tn_w8a8_kernels_of((int)isa, &k);
    assert(ok);
    (void)ok;
    const scratch s = scratch_of(xt, n_in, n_tokens);
    char *wd = wdata;
    job j = {
        .gemm = tn__w8a8x16_gemm_of((int)isa),
        .quant = k.quant,
        .w = w,
        .gstride = tn__w8a8x16_group_bytes(n_in),
        .n_in = n_in,
        .n_out = n_out,
        .n_tokens = n_tokens,
        .K = steps(n_in),
        .x = x,
        .xq = (int8_t *)wd,
        .xp = (uint8_t *)wd + s.tiles,
        .bias = (int32_t *)(wd + s.bias),
        .dx = (float *)(wd + s.dx),
        .xr = xt == TN_DTYPE_W8A8_HADX16 ? (float *)(wd + s.xr) : NULL,
        .q_row = s.q_row,
        .ks = s.ks,
        .y = y,
    };
    /* an even number of groups per chunk: the prefill kernel pairs them */
    const tn__x16_drive d = {&j, quant_rows, gemm_groups, n_in, n_out, n_tokens, j.gstride, 2};
    tn__x16_run(pool, &d);
}

/* The family entry points take the dtype; W8A8 and W8A8_HAD store the same. */
static size_t fam_group_bytes(tn_dtype xt, int64_t n_in)
{
    (void)xt;
    return tn__w8a8x16_group_bytes(n_in);
}

static void fam_repack(tn_dtype wt, const void *src, int64_t n_in, int64_t n_out, void *dst)
{
    (void)wt;
    tn__w8a8x16_repack(src, n_in, n_out, dst);
}

static void fam_get_row(tn_dtype xt, const void *w, int64_t n_in, int64_t i, float *out)
{
    (void)xt;
    tn__w8a8x16_get_row(w, n_in, i, out);
}

const tn__x16_family tn__x16_family_w8a8 = {
    .file = {TN_DTYPE_W8A8, TN_DTYPE_W8A8_HAD},
    .x16 = {TN_DTYPE_W8A8X16, TN_DTYPE_W8A8_HADX16},
    .min_isa = TN_ISA_AVX512,
    .group_bytes = fam_group_bytes,
    .repack = fam_repack,
    .get_row = fam_get_row,
    .wsize = tn__w8a8x16_wsize,
    .matmul = tn__w8a8x16_matmul,
};
