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
 * 2. (tn__x16_run, the driver every x16 family shares.) The 16-row
 *    groups are cut into chunks (about CHUNKS_PER_THREAD per
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

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#define CHUNK_BYTES (512 * 1024)
#define CHUNKS_PER_THREAD 8
#define MIN_PARALLEL_MACS (1 << 15)
#define MIN_PARALLEL_QUANT (1 << 16)

/* Quant bytes per (group, block). */
static size_t qbytes(tn_dtype xt) { return xt == TN_DTYPE_Q4_0X16 ? 256 : 512; }

static size_t q_group_bytes(tn_dtype xt, int64_t n_in)
{
    const size_t nb = (size_t)(n_in / 32);
    return (nb * (qbytes(xt) + 32) + 63) / 64 * 64;
}

size_t tn__x16_xtile_bytes(int64_t n_in) { return (size_t)(n_in / 32) * 640; }

/* --- the layout ---------------------------------------------------------- */

static void q_repack(tn_dtype wt, const void *src, int64_t n_in, int64_t n_out, void *dst)
{
    const tn_dtype xt = wt == TN_DTYPE_Q4_0 ? TN_DTYPE_Q4_0X16 : TN_DTYPE_Q8_0X16;
    assert((wt == TN_DTYPE_Q4_0 || wt == TN_DTYPE_Q8_0) && n_in % 32 == 0);
    const int64_t nb = n_in / 32, ng = (n_out + TN__X16 - 1) / TN__X16;
    const size_t gs = q_group_bytes(xt, n_in), qb = qbytes(xt), row = tn_dtype_row_size(wt, n_in);
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

static void q_get_row(tn_dtype xt, const void *w, int64_t n_in, int64_t i, float *out)
{
    const int64_t nb = n_in / 32;
    const size_t qb = qbytes(xt);
    const uint8_t *gd = (const uint8_t *)w + (size_t)(i / TN__X16) * q_group_bytes(xt, n_in);
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

static size_t q_wsize(tn_dtype xt, int64_t n_in, int64_t n_tokens)
{
    (void)xt;
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
} job;

static void quant_rows(void *ctx, int64_t t0, int64_t t1)
{
    const job *j = ctx;
    for (int64_t t = t0; t < t1; t++) {
        tn_block_q8_0 *q = (tn_block_q8_0 *)(j->xq + (size_t)t * q8_row(j->n_in));
        j->quantize(j->x + t * j->n_in, q, j->n_in);
        tn__x16_xpack(j->xt, q, j->n_in, t, j->xp);
    }
}

static void gemm_groups(void *ctx, int64_t g0, int64_t g1)
{
    const job *j = ctx;
    j->gemm(j->xt, j->w + (size_t)g0 * j->gstride, j->gstride, g1 - g0, j->n_out - g0 * TN__X16, j->xp, j->n_tokens,
            j->n_in / 32, j->y + g0 * TN__X16, (size_t)j->n_out);
}

static void q_matmul(tn_pool *pool, const void *w, tn_dtype xt, int64_t n_in, int64_t n_out, const float *x,
                     int64_t n_tokens, float *y, void *wdata)
{
    assert((xt == TN_DTYPE_Q4_0X16 || xt == TN_DTYPE_Q8_0X16) && n_in % 32 == 0 && wdata);
    if (n_out <= 0 || n_tokens <= 0 || n_in <= 0)
        return;
    const tn__kern_ops *ops = tn__kern_ops_cur();
    job j = {
        .gemm = tn__x16_gemm_of(ops->isa),
        .quantize = ops->quantize_q8_0,
        .xt = xt,
        .w = w,
        .gstride = q_group_bytes(xt, n_in),
        .n_in = n_in,
        .n_out = n_out,
        .n_tokens = n_tokens,
        .x = x,
        .xq = wdata,
        .xp = (uint8_t *)wdata + q8_row(n_in) * (size_t)n_tokens,
        .y = y,
    };
    const tn__x16_drive d = {&j, quant_rows, gemm_groups, n_in, n_out, n_tokens, j.gstride, 1};
    tn__x16_run(pool, &d);
}

/* --- the driver the families share ---------------------------------------- */

typedef struct run_job {
    const tn__x16_drive *d;
    int64_t chunk, n_chunks; /* in groups */
    _Alignas(64) atomic_int_fast64_t next;
} run_job;

static void rows_fn(void *ctx, int ith, int nth)
{
    const tn__x16_drive *d = ((const run_job *)ctx)->d;
    d->rows(d->ctx, d->n_tokens * ith / nth, d->n_tokens * (ith + 1) / nth);
}

static void chunks_fn(void *ctx, int ith, int nth)
{
    run_job *r = ctx;
    (void)ith, (void)nth;
    const int64_t ng = (r->d->n_out + TN__X16 - 1) / TN__X16;
    for (;;) {
        const int64_t c = atomic_fetch_add_explicit(&r->next, 1, memory_order_relaxed);
        if (c >= r->n_chunks)
            return;
        const int64_t g0 = c * r->chunk;
        r->d->groups(r->d->ctx, g0, TN_MIN(g0 + r->chunk, ng));
    }
}

void tn__x16_run(tn_pool *pool, const tn__x16_drive *d)
{
    run_job r = {.d = d};
    const bool parallel = pool && d->n_in * d->n_out * d->n_tokens >= MIN_PARALLEL_MACS;
    if (parallel && d->n_tokens > 1 && d->n_tokens * d->n_in >= MIN_PARALLEL_QUANT)
        tn_pool_run(pool, rows_fn, &r);
    else
        d->rows(d->ctx, 0, d->n_tokens);

    const int64_t ng = (d->n_out + TN__X16 - 1) / TN__X16, m = TN_MAX(d->chunk_multiple, 1);
    const int nth = parallel ? tn_pool_size(pool) : 1;
    int64_t chunk = (ng + (int64_t)nth * CHUNKS_PER_THREAD - 1) / ((int64_t)nth * CHUNKS_PER_THREAD);
    if (d->n_tokens > 1)
        chunk = (TN_MIN(chunk, (int64_t)(CHUNK_BYTES / d->gstride)) + m - 1) / m * m;
    r.chunk = TN_MAX(chunk, (int64_t)1);
    r.n_chunks = (ng + r.chunk - 1) / r.chunk;
    atomic_init(&r.next, 0);
    if (parallel && r.n_chunks > 1)
        tn_pool_run(pool, chunks_fn, &r);
    else
        chunks_fn(&r, 0, 1);
}

/* --- the families ------------------------------------------------------------ */

const tn__x16_family tn__x16_family_q = {
    .file = {TN_DTYPE_Q4_0, TN_DTYPE_Q8_0},
    .x16 = {TN_DTYPE_Q4_0X16, TN_DTYPE_Q8_0X16},
    .min_isa = TN_ISA_AVX2,
    .group_bytes = q_group_bytes,
    .repack = q_repack,
    .get_row = q_get_row,
    .wsize = q_wsize,
    .matmul = q_matmul,
};

static const tn__x16_family *const families[] = {&tn__x16_family_q, &tn__x16_family_k, &tn__x16_family_w8a8};

/* The family of x16 dtype xt and its index in it (*k), or NULL. */
static const tn__x16_family *family_of(tn_dtype xt, int *k)
{
    for (size_t f = 0; f < TN_ARRAY_LEN(families); f++)
        for (int i = 0; i < 2; i++)
            if (families[f]->x16[i] == xt) {
                if (k)
                    *k = i;
                return families[f];
            }
    return NULL;
}

bool tn__dtype_is_x16(tn_dtype t) { return family_of(t, NULL) != NULL; }

tn_dtype tn__x16_file_dtype(tn_dtype t)
{
    int k;
    const tn__x16_family *f = family_of(t, &k);
    return f ? f->file[k] : t;
}

/* The family that repacks file dtype wt and its index in it (*k), or NULL. */
static const tn__x16_family *family_of_file(tn_dtype wt, int *k)
{
    for (size_t f = 0; f < TN_ARRAY_LEN(families); f++)
        for (int i = 0; i < 2; i++)
            if (families[f]->file[i] == wt) {
                *k = i;
                return families[f];
            }
    return NULL;
}

tn_dtype tn__x16_dtype_for(tn_dtype wt)
{
    int k;
    const tn__x16_family *f = family_of_file(wt, &k);
    return f && tn_kern_isa() >= f->min_isa ? f->x16[k] : TN_DTYPE_COUNT;
}

size_t tn__x16_group_bytes(tn_dtype xt, int64_t n_in) { return family_of(xt, NULL)->group_bytes(xt, n_in); }

size_t tn__x16_matrix_bytes(tn_dtype xt, int64_t n_in, int64_t n_out)
{
    return tn__x16_group_bytes(xt, n_in) * (size_t)((n_out + TN__X16 - 1) / TN__X16);
}

void tn__x16_repack(tn_dtype wt, const void *src, int64_t n_in, int64_t n_out, void *dst)
{
    int k;
    const tn__x16_family *f = family_of_file(wt, &k);
    assert(f);
    f->repack(wt, src, n_in, n_out, dst);
}

void tn__x16_get_row(tn_dtype xt, const void *w, int64_t n_in, int64_t i, float *out)
{
    family_of(xt, NULL)->get_row(xt, w, n_in, i, out);
}

size_t tn__x16_wsize(tn_dtype xt, int64_t n_in, int64_t n_tokens)
{
    return family_of(xt, NULL)->wsize(xt, n_in, n_tokens);
}

void tn__x16_matmul(tn_pool *pool, const void *w, tn_dtype xt, int64_t n_in, int64_t n_out, const float *x,
                    int64_t n_tokens, float *y, void *wdata)
{
    family_of(xt, NULL)->matmul(pool, w, xt, n_in, n_out, x, n_tokens, y, wdata);
}
