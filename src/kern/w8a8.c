/*
 * w8a8.c — W8A8 matrix products: the scalar reference kernels (the
 * specification of every ISA's), run-time ISA choice, row quantization and
 * the threaded driver (layout in w8a8.h).
 *
 * HOW IT WORKS
 *
 * 1. Each token's activation row is quantized once into wdata by the ISA's
 *    quantizer (AVX-512 / AVX2 / scalar: the same bytes): n_in int8 (padded
 *    to 64 bytes) plus one f32 scale. For the AVX-512 GEMM the bytes are
 *    stored as q + 128 (unsigned), the form vpdpbusd takes.
 * 2. One token (decode): output rows are cut into chunks that threads take
 *    from an atomic counter; the rows go four at a time through the ISA's
 *    integer dot kernel, which shares the activation loads between them.
 * 3. Several tokens (prefill): the work is cut into (token block, row
 *    chunk) units. A token block's activations (<= XBLOCK_BYTES) stay in L2
 *    while the chunks of rows go by; inside a unit the ISA's GEMM runs
 *    register tiles (AVX-512: 4 rows x 6 tokens, AVX2: 4 x 2) so each loaded
 *    weight vector serves several tokens and each activation vector several
 *    rows. Both threads work on the same token block at a time.
 * 4. y = (float)isum * (d_w * d_x): exact integer sums, one rounding order,
 *    so the result is the same bits on every ISA, for every tiling, thread
 *    count and batch composition (tests/kern/test_w8a8.c checks all three).
 *
 * LIMITATIONS: weights must fit int8 per row, which outliers punish
 * (SmoothQuant exists for that, src/compress/smoothquant.c).
 */
#include "kern/w8a8.h"
#include "kern/hadamard.h"
#include "kern/kern_impl.h"

#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

/* Weight bytes per chunk when several tokens share the call. */
#define CHUNK_BYTES (128 * 1024)
/* Activation bytes per token block of the GEMM (they stay in L2). */
#define XBLOCK_BYTES (384 * 1024)
#define CHUNKS_PER_THREAD 8
#define MIN_PARALLEL_MACS (1 << 15)

/* ISA kernels (w8a8_avx2.c, w8a8_avx512.c). */
float tn__w8a8_quant_avx2(const float *x, int8_t *q, int64_t n, bool offset);
float tn__w8a8_quant_avx512(const float *x, int8_t *q, int64_t n, bool offset);
void tn__w8a8_idot_avx2(const int8_t *w, size_t w_stride, int nr, const int8_t *qx, int64_t n, int32_t *isum);
void tn__w8a8_idot_avx512(const int8_t *w, size_t w_stride, int nr, const int8_t *qx, int64_t n, int32_t *isum);
void tn__w8a8_gemm_avx2(const void *w, size_t w_row, int64_t nr, const int8_t *xq, size_t xq_row, const float *xd,
                        int64_t nt, int64_t n, float *y, size_t ys);
void tn__w8a8_gemm_avx512(const void *w, size_t w_row, int64_t nr, const int8_t *xq, size_t xq_row, const float *xd,
                          int64_t nt, int64_t n, float *y, size_t ys);

/* --- the scalar reference: the specification of every ISA's kernels ------ */

/* q = round(x / d), d = amax / 127 (0 row: d = 0, q = 0); rounding half
 * away from zero by truncating v ± 0.5; with offset, q + 128 as a byte. */
static float quant_scalar(const float *x, int8_t *q, int64_t n, bool offset)
{
    float amax = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        const float a = fabsf(x[j]);
        amax = a > amax ? a : amax;
    }
    const float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
    const uint8_t flip = offset ? 0x80u : 0u;
    for (int64_t j = 0; j < n; j++) {
        float v = x[j] * inv;
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        ((uint8_t *)q)[j] = (uint8_t)((uint8_t)(int8_t)(int32_t)(v + (v < 0.0f ? -0.5f : 0.5f)) ^ flip);
    }
    return d;
}

static void idot_scalar(const int8_t *w, size_t w_stride, int nr, const int8_t *qx, int64_t n, int32_t *isum)
{
    for (int r = 0; r < nr; r++) {
        const int8_t *wr = w + (size_t)r * w_stride;
        int32_t s = 0;
        for (int64_t j = 0; j < n; j++)
            s += (int32_t)wr[j] * (int32_t)qx[j];
        isum[r] = s;
    }
}

static void gemm_scalar(const void *w, size_t w_row, int64_t nr, const int8_t *xq, size_t xq_row, const float *xd,
                        int64_t nt, int64_t n, float *y, size_t ys)
{
    for (int64_t r = 0; r < nr; r++) {
        const char *wr = (const char *)w + (size_t)r * w_row;
        float dw;
        memcpy(&dw, wr, 4);
        for (int64_t t = 0; t < nt; t++) {
            int32_t s;
            idot_scalar((const int8_t *)wr + 4, 0, 1, xq + (size_t)t * xq_row, n, &s);
            y[(size_t)t * ys + (size_t)r] = (float)s * (dw * xd[t]);
        }
    }
}

bool tn_w8a8_kernels_of(int isa, tn_w8a8_kernels *k)
{
    if (isa < 0 || isa > TN_ISA_AVX512 || !tn__kern_ops_of((tn_isa)isa))
        return false; /* this CPU (or OS) cannot run it */
    switch (isa) {
    case TN_ISA_AVX512:
        *k = (tn_w8a8_kernels){tn__w8a8_quant_avx512, tn__w8a8_idot_avx512, tn__w8a8_gemm_avx512, true};
        break;
    case TN_ISA_AVX2: *k = (tn_w8a8_kernels){tn__w8a8_quant_avx2, tn__w8a8_idot_avx2, tn__w8a8_gemm_avx2, false}; break;
    default: *k = (tn_w8a8_kernels){quant_scalar, idot_scalar, gemm_scalar, false}; break;
    }
    return true;
}

/* --- rows ---------------------------------------------------------------- */

void tn_w8a8_quantize_row(const float *x, void *dst, int64_t n)
{
    float d = quant_scalar(x, (int8_t *)dst + 4, n, false);
    memcpy(dst, &d, 4);
}

void tn_w8a8_dequantize_row(const void *src, float *dst, int64_t n)
{
    float d;
    memcpy(&d, src, 4);
    const int8_t *q = (const int8_t *)src + 4;
    for (int64_t j = 0; j < n; j++)
        dst[j] = d * (float)q[j];
}

void tn_w8a8_quantize_act(const float *x, int8_t *q, float *d, int64_t n) { *d = quant_scalar(x, q, n, false); }

/* --- the driver ---------------------------------------------------------- */

static size_t act_row(int64_t n_in) { return ((size_t)n_in + 63) / 64 * 64; }

size_t tn_w8a8_wsize(int64_t n_in, int64_t n_tokens)
{
    if (n_in <= 0 || n_tokens <= 0)
        return 0;
    return (act_row(n_in) + sizeof(float)) * (size_t)n_tokens;
}

typedef struct job {
    tn_w8a8_kernels k;
    bool offset; /* activations stored as q + 128 */
    const char *w;
    size_t w_row;
    int64_t n_in, n_out, n_tokens;
    const float *x;
    float *xr;  /* W8A8_HAD: (n_tokens, n_in) rotated rows; NULL for W8A8 */
    int8_t *xq; /* (n_tokens, act_row) */
    float *xd;  /* (n_tokens) */
    size_t xq_row;
    float *y;
    int64_t chunk, n_chunks; /* rows per chunk, chunks */
    int64_t tblock;          /* tokens per block (GEMM) */
    int64_t n_units;
    _Alignas(64) atomic_int_fast64_t next;
} job;

static void quant_fn(void *ctx, int ith, int nth)
{
    job *j = ctx;
    for (int64_t t = j->n_tokens * ith / nth; t < j->n_tokens * (ith + 1) / nth; t++) {
        const float *x = j->x + t * j->n_in;
        if (j->xr) {
            float *r = j->xr + t * j->n_in;
            memcpy(r, x, (size_t)j->n_in * sizeof *r);
            tn_hadamard(r, j->n_in);
            x = r;
        }
        j->xd[t] = j->k.quant(x, j->xq + (size_t)t * j->xq_row, j->n_in, j->offset);
    }
}

/* One token, rows [lo, hi), four at a time through idot. */
static void rows_range(const job *j, int64_t lo, int64_t hi)
{
    int32_t isum[4];
    const float dx = j->xd[0];
    for (int64_t r = lo; r < hi; r += 4) {
        const int nr = (int)TN_MIN((int64_t)4, hi - r);
        const char *wr = j->w + (size_t)r * j->w_row;
        j->k.idot((const int8_t *)wr + 4, j->w_row, nr, j->xq, j->n_in, isum);
        for (int k = 0; k < nr; k++) {
            float dw;
            memcpy(&dw, wr + (size_t)k * j->w_row, 4);
            j->y[r + k] = (float)isum[k] * (dw * dx);
        }
    }
}

/* Unit c: token block c / n_chunks, row chunk c % n_chunks (one token:
 * chunk c). */
static void unit(const job *j, int64_t c)
{
    const int64_t rc = c % j->n_chunks, tb = c / j->n_chunks;
    const int64_t lo = rc * j->chunk, hi = TN_MIN(lo + j->chunk, j->n_out);
    if (j->n_tokens == 1) {
        rows_range(j, lo, hi);
        return;
    }
    const int64_t t0 = tb * j->tblock, nt = TN_MIN(j->tblock, j->n_tokens - t0);
    j->k.gemm(j->w + (size_t)lo * j->w_row, j->w_row, hi - lo, j->xq + (size_t)t0 * j->xq_row, j->xq_row,
              j->xd + t0, nt, j->n_in, j->y + (size_t)t0 * (size_t)j->n_out + lo, (size_t)j->n_out);
}

static void units_fn(void *ctx, int ith, int nth)
{
    job *j = ctx;
    (void)ith, (void)nth;
    for (;;) {
        const int64_t c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (c >= j->n_units)
            return;
        unit(j, c);
    }
}

static void matmul(tn_pool *pool, const void *w, int64_t n_in, int64_t n_out, const float *x, int64_t n_tokens,
                   float *y, void *wdata, float *xr)
{
    if (n_in <= 0 || n_out <= 0 || n_tokens <= 0)
        return;
    job j = {
        .w = w,
        .w_row = TN_W8A8_ROW(n_in),
        .n_in = n_in,
        .n_out = n_out,
        .n_tokens = n_tokens,
        .x = x,
        .xr = xr,
        .xq = wdata,
        .xq_row = act_row(n_in),
        .y = y,
    };
    const bool ok = tn_w8a8_kernels_of((int)tn__kern_ops_cur()->isa, &j.k);
    assert(ok);
    (void)ok;
    j.offset = n_tokens > 1 && j.k.gemm_offset;
    j.xd = (float *)(j.xq + j.xq_row * (size_t)n_tokens);
    const bool parallel = pool && n_in * n_out * n_tokens >= MIN_PARALLEL_MACS;
    if (parallel && n_tokens >= 8)
        tn_pool_run(pool, quant_fn, &j);
    else
        quant_fn(&j, 0, 1);
    const int nth = parallel ? tn_pool_size(pool) : 1;
    int64_t chunk = (n_out + (int64_t)nth * CHUNKS_PER_THREAD - 1) / ((int64_t)nth * CHUNKS_PER_THREAD);
    j.tblock = n_tokens;
    if (n_tokens > 1) {
        chunk = TN_MIN(chunk, (int64_t)(CHUNK_BYTES / j.w_row));
        j.tblock = TN_MAX((int64_t)(XBLOCK_BYTES / j.xq_row) / 6 * 6, (int64_t)6);
    }
    chunk = TN_MAX((chunk + 3) / 4 * 4, (int64_t)4);
    j.chunk = chunk;
    j.n_chunks = (n_out + chunk - 1) / chunk;
    j.n_units = j.n_chunks * ((n_tokens + j.tblock - 1) / j.tblock);
    atomic_init(&j.next, 0);
    if (parallel && j.n_units > 1)
        tn_pool_run(pool, units_fn, &j);
    else
        for (int64_t c = 0; c < j.n_units; c++)
            unit(&j, c);
}

void tn_w8a8_matmul(tn_pool *pool, const void *w, int64_t n_in, int64_t n_out, const float *x, int64_t n_tokens,
                    float *y, void *wdata)
{
    matmul(pool, w, n_in, n_out, x, n_tokens, y, wdata, NULL);
}

/* The rotated rows go after the quantized ones. */
static size_t rot_offset(int64_t n_in, int64_t n_tokens) { return (tn_w8a8_wsize(n_in, n_tokens) + 63) / 64 * 64; }

size_t tn_w8a8_had_wsize(int64_t n_in, int64_t n_tokens)
{
    if (n_in <= 0 || n_tokens <= 0)
        return 0;
    return rot_offset(n_in, n_tokens) + (size_t)n_in * (size_t)n_tokens * sizeof(float);
}

void tn_w8a8_had_matmul(tn_pool *pool, const void *w, int64_t n_in, int64_t n_out, const float *x, int64_t n_tokens,
                        float *y, void *wdata)
{
    if (n_in <= 0 || n_out <= 0 || n_tokens <= 0)
        return;
    matmul(pool, w, n_in, n_out, x, n_tokens, y, wdata, (float *)((char *)wdata + rot_offset(n_in, n_tokens)));
}
