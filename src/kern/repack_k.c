/*
 * repack_k.c — the Q4_K / Q6_K x16 layouts (kern/repack_k.h): repacking,
 * row access, the scalar reference kernel (the specification) and the
 * threaded driver.
 *
 * HOW IT WORKS (tn__kx16_matmul)
 *
 * 1. Each token's activation row is quantized to Q8_K blocks with the one
 *    Q8_K quantizer (the same bytes on every ISA, the ones the block-format
 *    Q4_K path uses), then packed once (tn__kx16_xpack) into the int8
 *    quants, the eight sub-block sums and the f32 scale the kernels read.
 * 2. The 16-row groups are cut into chunks that threads take from an
 *    atomic counter (tn__x16_run, kern/repack.h: the driver every x16
 *    family shares). A chunk is all its groups against all tokens in one kernel
 *    call (kern_avx512_kx16.c: tiles of 16 tokens, each group super-block
 *    by super-block, the nibbles of a sub-block pair split once per tile).
 *
 * DETERMINISM: every y element follows the fixed per-super-block sequence
 * of repack_k.h; chunks, tiles and threads only change when it is computed.
 */
#include "kern/repack_k.h"
#include "kern/repack.h"
#include "kern/kern_impl.h"
#include "kern/quants.h"

#include <math.h>
#include <string.h>


/* Bytes per (group, super-block) of weights / of a packed 16-token tile. */
static size_t sbytes(tn_dtype xt) { return xt == TN_DTYPE_Q6_KX16 ? TN__KX16_SB6 : TN__KX16_SB; }
static size_t xsbytes(tn_dtype xt) { return xt == TN_DTYPE_Q6_KX16 ? TN__KX16_XSB6 : TN__KX16_XSB; }

size_t tn__kx16_group_bytes(tn_dtype xt, int64_t n_in) { return (size_t)(n_in / TN_QK_K) * sbytes(xt); }

/* --- the layout ---------------------------------------------------------- */

static void repack_q6(const void *src, int64_t n_in, int64_t n_out, void *dst)
{
    const int64_t nb = n_in / TN_QK_K, ng = (n_out + 15) / 16;
    const size_t gs = tn__kx16_group_bytes(TN_DTYPE_Q6_KX16, n_in), row = tn_dtype_row_size(TN_DTYPE_Q6_K, n_in);
    for (int64_t g = 0; g < ng; g++)
        for (int r = 0; r < 16 && g * 16 + r < n_out; r++) {
            const tn_block_q6_K *blk = (const tn_block_q6_K *)((const uint8_t *)src + (size_t)(g * 16 + r) * row);
            for (int64_t b = 0; b < nb; b++, blk++) {
                uint8_t *sb = (uint8_t *)dst + (size_t)g * gs + (size_t)b * TN__KX16_SB6;
                memcpy(sb + 2 * r, &blk->d, 2);
                for (int j = 0; j < 16; j++)
                    sb[32 + 16 * j + r] = (uint8_t)blk->scales[j];
                for (int v = 0; v < 32; v++)
                    memcpy(sb + 320 + 64 * v + 4 * r, blk->ql + 32 * (v / 8) + 4 * (v % 8), 4);
                for (int u = 0; u < 16; u++)
                    memcpy(sb + 2368 + 64 * u + 4 * r, blk->qh + 32 * (u / 8) + 4 * (u % 8), 4);
            }
        }
}

void tn__kx16_repack(tn_dtype wt, const void *src, int64_t n_in, int64_t n_out, void *dst)
{
    assert((wt == TN_DTYPE_Q4_K || wt == TN_DTYPE_Q6_K) && n_in % TN_QK_K == 0);
    const tn_dtype xt = wt == TN_DTYPE_Q4_K ? TN_DTYPE_Q4_KX16 : TN_DTYPE_Q6_KX16;
    const int64_t nb = n_in / TN_QK_K, ng = (n_out + 15) / 16;
    const size_t gs = tn__kx16_group_bytes(xt, n_in), row = tn_dtype_row_size(TN_DTYPE_Q4_K, n_in);
    memset(dst, 0, gs * (size_t)ng);
    if (wt == TN_DTYPE_Q6_K) {
        repack_q6(src, n_in, n_out, dst);
        return;
    }
    for (int64_t g = 0; g < ng; g++)
        for (int r = 0; r < 16 && g * 16 + r < n_out; r++) {
            const tn_block_q4_K *blk = (const tn_block_q4_K *)((const uint8_t *)src + (size_t)(g * 16 + r) * row);
            for (int64_t b = 0; b < nb; b++, blk++) {
                uint8_t *sb = (uint8_t *)dst + (size_t)g * gs + (size_t)b * TN__KX16_SB;
                memcpy(sb + 2 * r, &blk->d, 2);
                memcpy(sb + 32 + 2 * r, &blk->dmin, 2);
                for (int j = 0; j < 8; j++) {
                    int sc, m;
                    tn__q4_K_scale_min(blk->scales, j, &sc, &m);
                    sb[64 + 16 * j + r] = (uint8_t)sc;
                    sb[192 + 32 * (j / 2) + 2 * r + j % 2] = (uint8_t)m;
                }
                for (int v = 0; v < 32; v++)
                    memcpy(sb + 320 + 64 * v + 4 * r, blk->qs + 32 * (v / 8) + 4 * (v % 8), 4);
            }
        }
}

/* Row r's quant of element i (< 256) in a group super-block: Q4_K's
 * nibble, Q6_K's 6-bit value minus 32. */
static inline int kq(const uint8_t *sb, int r, int i)
{
    const int c = i / 64, h = (i / 32) % 2, l = i % 32;
    return (sb[320 + 64 * (8 * c + l / 4) + 4 * r + l % 4] >> (4 * h)) & 15;
}

static inline int kq6(const uint8_t *sb, int r, int i)
{
    const int h = i / 128, m = (i / 32) % 4, l = i % 32, c = 2 * h + (m & 1);
    const int lo = (sb[320 + 64 * (8 * c + l / 4) + 4 * r + l % 4] >> (4 * (m >> 1))) & 15;
    const int hi = (sb[2368 + 64 * (8 * h + l / 4) + 4 * r + l % 4] >> (2 * m)) & 3;
    return (lo | hi << 4) - 32;
}

void tn__kx16_get_row(tn_dtype xt, const void *w, int64_t n_in, int64_t i, float *out)
{
    const int64_t nb = n_in / TN_QK_K;
    const uint8_t *gd = (const uint8_t *)w + (size_t)(i / 16) * tn__kx16_group_bytes(xt, n_in);
    const int r = (int)(i % 16);
    if (xt == TN_DTYPE_Q6_KX16) {
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *sb = gd + (size_t)b * TN__KX16_SB6;
            uint16_t dh;
            memcpy(&dh, sb + 2 * r, 2);
            const float d = tn_fp16_to_fp32(dh);
            for (int j = 0; j < 16; j++) {
                /* as the block-format dequantizer (quants.c): (d·sc)·q */
                const float dl = d * (float)(int8_t)sb[32 + 16 * j + r];
                for (int k = 16 * j; k < 16 * j + 16; k++)
                    out[b * TN_QK_K + k] = dl * (float)kq6(sb, r, k);
            }
        }
        return;
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *sb = gd + (size_t)b * TN__KX16_SB;
        uint16_t dh, mh;
        memcpy(&dh, sb + 2 * r, 2);
        memcpy(&mh, sb + 32 + 2 * r, 2);
        const float d = tn_fp16_to_fp32(dh), dmin = tn_fp16_to_fp32(mh);
        for (int j = 0; j < 8; j++) {
            /* as the block-format dequantizer (quants.c): (d·sc)·q - dmin·m */
            const float dl = d * (float)sb[64 + 16 * j + r];
            const float ml = dmin * (float)sb[192 + 32 * (j / 2) + 2 * r + j % 2];
            for (int k = 32 * j; k < 32 * j + 32; k++)
                out[b * TN_QK_K + k] = dl * (float)kq(sb, r, k) - ml;
        }
    }
}

void tn__kx16_xpack(tn_dtype xt, const void *xq8k, int64_t n_in, int64_t t, uint8_t *xp)
{
    const int64_t nb = n_in / TN_QK_K;
    const tn_block_q8_K *x = xq8k;
    uint8_t *tile = xp + (size_t)(t / 16) * (size_t)nb * xsbytes(xt);
    const size_t slot = (size_t)(t % 16);
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *sb = tile + (size_t)b * xsbytes(xt);
        memcpy(sb + 256 * slot, x[b].qs, 256);
        if (xt == TN_DTYPE_Q6_KX16) {
            for (int j = 0; j < 16; j++) {
                const int32_t bias = -32 * (int32_t)x[b].bsums[j];
                memcpy(sb + 4096 + 64 * slot + 4 * (size_t)j, &bias, 4);
            }
            memcpy(sb + 5120 + 4 * slot, &x[b].d, 4);
            continue;
        }
        for (int j = 0; j < 8; j++) {
            const int16_t s = (int16_t)(x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
            memcpy(sb + 4096 + 16 * slot + 2 * (size_t)j, &s, 2);
        }
        memcpy(sb + 4352 + 4 * slot, &x[b].d, 4);
    }
}

/* --- the specification --------------------------------------------------- */

static void gemm_ref_q6(const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp, int64_t nt,
                        int64_t nb, float *y, size_t ystride)
{
    for (int64_t g = 0; g < ng; g++)
        for (int r = 0; r < 16 && g * 16 + r < nr; r++)
            for (int64_t t = 0; t < nt; t++) {
                const uint8_t *tile = xp + (size_t)(t / 16) * (size_t)nb * TN__KX16_XSB6;
                const size_t slot = (size_t)(t % 16);
                float acc = 0.0f;
                for (int64_t b = 0; b < nb; b++) {
                    const uint8_t *sb = w + (size_t)g * gstride + (size_t)b * TN__KX16_SB6;
                    const uint8_t *xb = tile + (size_t)b * TN__KX16_XSB6;
                    const int8_t *xq = (const int8_t *)xb + 256 * slot;
                    int32_t sumi = 0;
                    for (int j = 0; j < 16; j++) {
                        int32_t isum = 0;
                        for (int k = 16 * j; k < 16 * j + 16; k++)
                            isum += kq6(sb, r, k) * (int32_t)xq[k];
                        sumi += (int32_t)(int8_t)sb[32 + 16 * j + r] * isum;
                    }
                    uint16_t dh;
                    float dx;
                    memcpy(&dh, sb + 2 * r, 2);
                    memcpy(&dx, xb + 5120 + 4 * slot, 4);
                    acc = fmaf((float)sumi, tn_fp16_to_fp32(dh) * dx, acc);
                }
                y[(size_t)t * ystride + (size_t)(g * 16 + r)] = acc;
            }
}

void tn__kx16_gemm_ref(tn_dtype xt, const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp,
                       int64_t nt, int64_t nb, float *y, size_t ystride)
{
    if (xt == TN_DTYPE_Q6_KX16) {
        gemm_ref_q6(w, gstride, ng, nr, xp, nt, nb, y, ystride);
        return;
    }
    for (int64_t g = 0; g < ng; g++)
        for (int r = 0; r < 16 && g * 16 + r < nr; r++)
            for (int64_t t = 0; t < nt; t++) {
                const uint8_t *tile = xp + (size_t)(t / 16) * (size_t)nb * TN__KX16_XSB;
                const size_t slot = (size_t)(t % 16);
                float acc = 0.0f;
                for (int64_t b = 0; b < nb; b++) {
                    const uint8_t *sb = w + (size_t)g * gstride + (size_t)b * TN__KX16_SB;
                    const uint8_t *xb = tile + (size_t)b * TN__KX16_XSB;
                    const int8_t *xq = (const int8_t *)xb + 256 * slot;
                    int32_t sumi = 0, summ = 0;
                    for (int j = 0; j < 8; j++) {
                        int32_t isum = 0;
                        for (int k = 32 * j; k < 32 * j + 32; k++)
                            isum += kq(sb, r, k) * (int32_t)xq[k];
                        int16_t s;
                        memcpy(&s, xb + 4096 + 16 * slot + 2 * (size_t)j, 2);
                        sumi += (int32_t)sb[64 + 16 * j + r] * isum;
                        summ += (int32_t)sb[192 + 32 * (j / 2) + 2 * r + j % 2] * s;
                    }
                    uint16_t dh, mh;
                    float dx;
                    memcpy(&dh, sb + 2 * r, 2);
                    memcpy(&mh, sb + 32 + 2 * r, 2);
                    memcpy(&dx, xb + 4352 + 4 * slot, 4);
                    acc = fmaf((float)sumi, tn_fp16_to_fp32(dh) * dx, acc);
                    acc = fmaf(-(float)summ, tn_fp16_to_fp32(mh) * dx, acc);
                }
                y[(size_t)t * ystride + (size_t)(g * 16 + r)] = acc;
            }
}

tn__kx16_gemm_fn tn__kx16_gemm_of(int isa) { return isa >= TN_ISA_AVX512 ? tn__kx16_gemm_avx512 : tn__kx16_gemm_ref; }

/* --- the driver ---------------------------------------------------------- */

static size_t q8k_row(int64_t n_in) { return (tn_dtype_row_size(TN_DTYPE_Q8_K, n_in) + 63) / 64 * 64; }

size_t tn__kx16_wsize(tn_dtype xt, int64_t n_in, int64_t n_tokens)
{
    if (n_in <= 0 || n_tokens <= 0)
        return 0;
    return q8k_row(n_in) * (size_t)n_tokens + (size_t)(n_in / TN_QK_K) * xsbytes(xt) * (size_t)((n_tokens + 15) / 16);
}

typedef struct job {
    tn__kx16_gemm_fn gemm;
    tn_dtype xt;
    const uint8_t *w;
    size_t gstride;
    int64_t n_in, n_out, n_tokens;
    const float *x;
    uint8_t *xq, *xp; /* (n_tokens, q8k_row) Q8_K blocks; the packed tiles */
    float *y;
} job;

static void quant_rows(void *ctx, int64_t t0, int64_t t1)
{
    const job *j = ctx;
    for (int64_t t = t0; t < t1; t++) {
        tn_block_q8_K *q = (tn_block_q8_K *)(j->xq + (size_t)t * q8k_row(j->n_in));
        tn__quantize_row_q8_K(j->x + t * j->n_in, q, j->n_in);
        tn__kx16_xpack(j->xt, q, j->n_in, t, j->xp);
    }
}

static void gemm_groups(void *ctx, int64_t g0, int64_t g1)
{
    const job *j = ctx;
    j->gemm(j->xt, j->w + (size_t)g0 * j->gstride, j->gstride, g1 - g0, j->n_out - g0 * 16, j->xp, j->n_tokens,
            j->n_in / TN_QK_K, j->y + g0 * 16, (size_t)j->n_out);
}

void tn__kx16_matmul(tn_pool *pool, const void *w, tn_dtype xt, int64_t n_in, int64_t n_out, const float *x,
                     int64_t n_tokens, float *y, void *wdata)
{
    assert(tn__dtype_is_kx16(xt) && n_in % TN_QK_K == 0 && wdata);
    if (n_out <= 0 || n_tokens <= 0 || n_in <= 0)
        return;
    job j = {
        .gemm = tn__kx16_gemm_of(tn__kern_ops_cur()->isa),
        .xt = xt,
        .w = w,
        .gstride = tn__kx16_group_bytes(xt, n_in),
        .n_in = n_in,
        .n_out = n_out,
        .n_tokens = n_tokens,
        .x = x,
        .xq = wdata,
        .xp = (uint8_t *)wdata + q8k_row(n_in) * (size_t)n_tokens,
        .y = y,
    };
    const tn__x16_drive d = {&j, quant_rows, gemm_groups, n_in, n_out, n_tokens, j.gstride, 1};
    tn__x16_run(pool, &d);
}

const tn__x16_family tn__x16_family_k = {
    .file = {TN_DTYPE_Q4_K, TN_DTYPE_Q6_K},
    .x16 = {TN_DTYPE_Q4_KX16, TN_DTYPE_Q6_KX16},
    .min_isa = TN_ISA_AVX512,
    .group_bytes = tn__kx16_group_bytes,
    .repack = tn__kx16_repack,
    .get_row = tn__kx16_get_row,
    .wsize = tn__kx16_wsize,
    .matmul = tn__kx16_matmul,
};
