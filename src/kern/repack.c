/*
 * repack.c — the x16 layout (kern/repack.h): repacking, row access, the
 * scalar reference kernel (the specification) and the threaded driver.
 *
 * HOW IT WORKS (tn__x16_matmul)
 *
 * 1. Each token's activation row is quantized to Q8_0 blocks with the ISA
 *    table's quantizer (the same bytes on every ISA), then packed once
 *    (tn__x16_xpack) into the int8 quants, the per-block bias and the f32
 *    scale the kernels read.
 * 2. The 16-row groups are cut into chunks (about CHUNKS_PER_THREAD per
 *    thread; with several tokens no larger than CHUNK_BYTES, so a chunk
 *    stays in L2 while all tokens go by) that threads take from an atomic
 *    counter. A chunk is all its groups against all tokens in one kernel
 *    call; the AVX-512 kernel walks the tokens in tiles of 16 and, per tile,
 *    each group block by block, unpacking a block's weights once per tile.
 *
 * DETERMINISM: every y element follows the fixed per-block sequence of
 * repack.h; chunks, tiles and threads only change when it is computed.
 */
#include "kern/repack.h"
#include "kern/kern_impl.h"
#include "kern/repack_k.h" /* Q4_K / Q6_K: their own layouts, routed there */

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#define CHUNK_BYTES (512 * 1024)
#define CHUNKS_PER_THREAD 8
#define MIN_PARALLEL_MACS (1 << 15)
#define MIN_PARALLEL_QUANT (1 << 16)

/* Quant bytes per (group, block). */
static size_t qbytes(tn_dtype xt) { return xt == TN_DTYPE_Q4_0X16 ? 256 : 512; }

tn_dtype tn__x16_dtype_for(tn_dtype wt)
{
    if (wt == TN_DTYPE_W8A8 || wt == TN_DTYPE_W8A8_HAD)
        return tn__w8a8x16_dtype_for(wt);
    if (wt == TN_DTYPE_Q4_K || wt == TN_DTYPE_Q6_K)
        return tn__kx16_dtype_for(wt);
    if (tn_kern_isa() < TN_ISA_AVX2)
        return TN_DTYPE_COUNT;
    return wt == TN_DTYPE_Q4_0 ? TN_DTYPE_Q4_0X16 : wt == TN_DTYPE_Q8_0 ? TN_DTYPE_Q8_0X16 : TN_DTYPE_COUNT;
}

size_t tn__x16_group_bytes(tn_dtype xt, int64_t n_in)
{
    if (tn__dtype_is_w8a8x16(xt))
        return tn__w8a8x16_group_bytes(n_in);
    if (tn__dtype_is_kx16(xt))
        return tn__kx16_group_bytes(xt, n_in);
    const size_t nb = (size_t)(n_in / 32);
    return (nb * (qbytes(xt) + 32) + 63) / 64 * 64;
}

size_t tn__x16_matrix_bytes(tn_dtype xt, int64_t n_in, int64_t n_out)
{
    if (tn__dtype_is_w8a8x16(xt))
        return tn__w8a8x16_matrix_bytes(n_in, n_out);
    return tn__x16_group_bytes(xt, n_in) * (size_t)((n_out + TN__X16 - 1) / TN__X16);
}

size_t tn__x16_xtile_bytes(int64_t n_in) { return (size_t)(n_in / 32) * 640; }

/* --- the layout ---------------------------------------------------------- */

void tn__x16_repack(tn_dtype wt, const void *src, int64_t n_in, int64_t n_out, void *dst)
{
    if (wt == TN_DTYPE_W8A8 || wt == TN_DTYPE_W8A8_HAD) {
        tn__w8a8x16_repack(src, n_in, n_out, dst);
        return;
    }
    if (wt == TN_DTYPE_Q4_K || wt == TN_DTYPE_Q6_K) {
        tn__kx16_repack(wt, src, n_in, n_out, dst);
        return;
    }
    const tn_dtype xt = wt == TN_DTYPE_Q4_0 ? TN_DTYPE_Q4_0X16 : TN_DTYPE_Q8_0X16;
    assert((wt == TN_DTYPE_Q4_0 || wt == TN_DTYPE_Q8_0) && n_in % 32 == 0);
    const int64_t nb = n_in / 32, ng = (n_out + TN__X16 - 1) / TN__X16;
    const size_t gs = tn__x16_group_bytes(xt, n_in), qb = qbytes(xt), row = tn_dtype_row_size(wt, n_in);
    memset(dst, 0, gs * (size_t)ng);
    for (int64_t g = 0; g < ng; g++) {
        uint8_t *gd = (uint8_t *)dst + (size_t)g * gs;
        for (int r = 0; r < TN__X16 && g * TN__X16 + r < n_out; r++) {
            const uint8_t *sr = (const uint8_t *)src + (size_t)(g * TN__X16 + r) * row;
            for (int64_t b = 0; b < nb; b++) {
                uint8_t *q = gd + (size_t)b * qb;
                uint16_t d;
                if (wt == TN_DTYPE_Q4_0) {
                    const tn_block_q4_0 *blk = (const tn_block_q4_0 *)sr + b;
                    d = blk->d;
                    for (int j = 0; j < 16; j++)
                        q[(j / 4) * 64 + 4 * r + j % 4] = blk->qs[j];
                } else {
                    const tn_block_q8_0 *blk = (const tn_block_q8_0 *)sr + b;
                    d = blk->d;
                    for (int j = 0; j < 32; j++)
                        q[(j / 4) * 64 + 4 * r + j % 4] = (uint8_t)((uint8_t)blk->qs[j] ^ 0x80u);
                }
                memcpy(gd + (size_t)nb * qb + (size_t)b * 32 + 2 * r, &d, 2);
            }
        }
    }
}

void tn__x16_get_row(tn_dtype xt, const void *w, int64_t n_in, int64_t i, float *out)
{
    if (tn__dtype_is_w8a8x16(xt)) {
        tn__w8a8x16_get_row(w, n_in, i, out);
        return;
    }
    if (tn__dtype_is_kx16(xt)) {
        tn__kx16_get_row(xt, w, n_in, i, out);
        return;
    }
    const int64_t nb = n_in / 32;
    const size_t qb = qbytes(xt);
    const uint8_t *gd = (const uint8_t *)w + (size_t)(i / TN__X16) * tn__x16_group_bytes(xt, n_in);
    const int r = (int)(i % TN__X16);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *q = gd + (size_t)b * qb;
        uint16_t dh;
        memcpy(&dh, gd + (size_t)nb * qb + (size_t)b * 32 + 2 * r, 2);
        const float d = tn_fp16_to_fp32(dh);
        float *o = out + b * 32;
        if (xt == TN_DTYPE_Q4_0X16) {
            for (int j = 0; j < 16; j++) {
                const uint8_t v = q[(j / 4) * 64 + 4 * r + j % 4];
                o[j] = d * (float)((v & 15) - 8);
                o[j + 16] = d * (float)((v >> 4) - 8);
            }
        } else {
            for (int j = 0; j < 32; j++)
                o[j] = d * (float)((int)q[(j / 4) * 64 + 4 * r + j % 4] - 128);
        }
    }
}

void tn__x16_xpack(tn_dtype xt, const tn_block_q8_0 *x, int64_t n_in, int64_t t, uint8_t *xp)
{
    const int64_t nb = n_in / 32;
    xp += (size_t)(t / TN__X16) * tn__x16_xtile_bytes(n_in) + (size_t)(t % TN__X16) * 32;
    uint8_t *xa = xp - (size_t)(t % TN__X16) * 28; /* the aux arrays: slot t at 4t */
    const int32_t off = xt == TN_DTYPE_Q4_0X16 ? 8 : 128;
    for (int64_t b = 0; b < nb; b++) {
        int32_t s = 0;
        for (int j = 0; j < 32; j++)
            s += x[b].qs[j];
        const int32_t bias = -off * s;
        const float d = tn_fp16_to_fp32(x[b].d);
        memcpy(xp + (size_t)b * 512, x[b].qs, 32);
        memcpy(xa + (size_t)nb * 512 + 64 * (size_t)b, &bias, 4);
        memcpy(xa + (size_t)nb * 576 + 64 * (size_t)b, &d, 4);
    }
}

/* --- the specification --------------------------------------------------- */

void tn__x16_gemm_ref(tn_dtype xt, const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp,
                      int64_t nt, int64_t nb, float *y, size_t ystride)
{
    const size_t qb = qbytes(xt);
    for (int64_t g = 0; g < ng; g++) {
        const uint8_t *gd = w + (size_t)g * gstride;
        for (int r = 0; r < TN__X16 && g * TN__X16 + r < nr; r++) {
            for (int64_t t = 0; t < nt; t++) {
                const uint8_t *tile = xp + (size_t)(t / TN__X16) * tn__x16_xtile_bytes(nb * 32);
                const size_t slot = (size_t)(t % TN__X16);
                float acc = 0.0f;
                for (int64_t b = 0; b < nb; b++) {
                    const uint8_t *q = gd + (size_t)b * qb;
                    const int8_t *x = (const int8_t *)tile + b * 512 + 32 * slot;
                    int32_t isum, bias;
                    float dx;
                    uint16_t dh;
                    memcpy(&bias, tile + (size_t)nb * 512 + 64 * (size_t)b + 4 * slot, 4);
                    memcpy(&dx, tile + (size_t)nb * 576 + 64 * (size_t)b + 4 * slot, 4);
                    memcpy(&dh, gd + (size_t)nb * qb + (size_t)b * 32 + 2 * r, 2);
                    isum = bias;
                    if (xt == TN_DTYPE_Q4_0X16) {
                        for (int j = 0; j < 16; j++) {
                            const uint8_t v = q[(j / 4) * 64 + 4 * r + j % 4];
                            isum += (int32_t)(v & 15) * x[j] + (int32_t)(v >> 4) * x[j + 16];
                        }
                    } else {
                        for (int j = 0; j < 32; j++)
                            isum += (int32_t)q[(j / 4) * 64 + 4 * r + j % 4] * x[j];
                    }
                    acc = fmaf((float)isum, tn_fp16_to_fp32(dh) * dx, acc);
                }
                y[(size_t)t * ystride + (size_t)(g * TN__X16 + r)] = acc;
            }
        }
    }
}

tn__x16_gemm_fn tn__x16_gemm_of(int isa)
{
    if (isa >= TN_ISA_AVX512)
        return tn__x16_gemm_avx512;
    if (isa >= TN_ISA_AVX2)
        return tn__kern_avx_vnni() ? tn__x16_gemm_avxvnni : tn__x16_gemm_avx2;
    return tn__x16_gemm_ref;
}

/* --- the driver ---------------------------------------------------------- */

static size_t q8_row(int64_t n_in) { return (tn_dtype_row_size(TN_DTYPE_Q8_0, n_in) + 63) / 64 * 64; }

size_t tn__x16_wsize(int64_t n_in, int64_t n_tokens)
{
    if (n_in <= 0 || n_tokens <= 0)
        return 0;
    return q8_row(n_in) * (size_t)n_tokens + tn__x16_xtile_bytes(n_in) * (size_t)((n_tokens + TN__X16 - 1) / TN__X16);
}

typedef struct job {
    tn__x16_gemm_fn gemm;
    void (*quantize)(const float *x, tn_block_q8_0 *y, int64_t n);
    tn_dtype xt;
    const uint8_t *w;
    size_t gstride;
    int64_t n_in, n_out, n_tokens;
    const float *x;
    uint8_t *xq, *xp; /* (n_tokens, q8_row) Q8_0 blocks; the packed tiles */
    float *y;
    int64_t chunk, n_chunks; /* in groups */
    _Alignas(64) atomic_int_fast64_t next;
} job;

static void quant_rows(const job *j, int64_t t0, int64_t t1)
{
    for (int64_t t = t0; t < t1; t++) {
        tn_block_q8_0 *q = (tn_block_q8_0 *)(j->xq + (size_t)t * q8_row(j->n_in));
        j->quantize(j->x + t * j->n_in, q, j->n_in);
        tn__x16_xpack(j->xt, q, j->n_in, t, j->xp);
    }
}

static void quant_fn(void *ctx, int ith, int nth)
{
    const job *j = ctx;
    quant_rows(j, j->n_tokens * ith / nth, j->n_tokens * (ith + 1) / nth);
}

static void groups_fn(void *ctx, int ith, int nth)
{
    job *j = ctx;
    (void)ith, (void)nth;
    const int64_t ng = (j->n_out + TN__X16 - 1) / TN__X16;
    for (;;) {
        const int64_t c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (c >= j->n_chunks)
            return;
        const int64_t g0 = c * j->chunk, g1 = TN_MIN(g0 + j->chunk, ng);
        j->gemm(j->xt, j->w + (size_t)g0 * j->gstride, j->gstride, g1 - g0, j->n_out - g0 * TN__X16, j->xp, j->n_tokens, j->n_in / 32, j->y + g0 * TN__X16, (size_t)j->n_out);
    }
}

void tn__x16_matmul(tn_pool *pool, const void *w, tn_dtype xt, int64_t n_in, int64_t n_out, const float *x,
                    int64_t n_tokens, float *y, void *wdata)
{
    if (tn__dtype_is_w8a8x16(xt)) {
        tn__w8a8x16_matmul(pool, w, xt, n_in, n_out, x, n_tokens, y, wdata);
        return;
    }
    if (tn__dtype_is_kx16(xt)) {
        tn__kx16_matmul(pool, w, xt, n_in, n_out, x, n_tokens, y, wdata);
        return;
    }
    assert(tn__dtype_is_x16(xt) && n_in % 32 == 0 && wdata);
    if (n_out <= 0 || n_tokens <= 0 || n_in <= 0)
        return;
    const tn__kern_ops *ops = tn__kern_ops_cur();
    job j = {
        .gemm = tn__x16_gemm_of(ops->isa),
        .quantize = ops->quantize_q8_0,
        .xt = xt,
        .w = w,
        .gstride = tn__x16_group_bytes(xt, n_in),
        .n_in = n_in,
        .n_out = n_out,
        .n_tokens = n_tokens,
        .x = x,
        .xq = wdata,
        .xp = (uint8_t *)wdata + q8_row(n_in) * (size_t)n_tokens,
        .y = y,
    };
    const bool parallel = n_in * n_out * n_tokens >= MIN_PARALLEL_MACS;
    if (parallel && n_tokens > 1 && n_tokens * n_in >= MIN_PARALLEL_QUANT)
        tn_pool_run(pool, quant_fn, &j);
    else
        quant_rows(&j, 0, n_tokens);

    const int64_t ng = (n_out + TN__X16 - 1) / TN__X16;
    const int nth = parallel ? tn_pool_size(pool) : 1;
    int64_t chunk = (ng + (int64_t)nth * CHUNKS_PER_THREAD - 1) / ((int64_t)nth * CHUNKS_PER_THREAD);
    if (n_tokens > 1)
        chunk = TN_MIN(chunk, (int64_t)(CHUNK_BYTES / j.gstride));
    j.chunk = TN_MAX(chunk, (int64_t)1);
    j.n_chunks = (ng + j.chunk - 1) / j.chunk;
    atomic_init(&j.next, 0);
    if (parallel && j.n_chunks > 1)
        tn_pool_run(pool, groups_fn, &j);
    else
        groups_fn(&j, 0, 1);
}
