/*
 * w8a8.c — W8A8 matrix products: the scalar reference kernel, run-time ISA
 * choice, row quantization and the threaded driver (layout in w8a8.h).
 *
 * HOW IT WORKS
 *
 * 1. Each token's activation row is quantized once into wdata: n_in int8
 *    (padded to 64 bytes) plus one f32 scale, per token, on every ISA the
 *    same bytes.
 * 2. Output rows are cut into chunks (a multiple of 4 rows, small enough to
 *    stay in L2 while all tokens go by); threads take chunks from an atomic
 *    counter. For each token the chunk's rows go four at a time through the
 *    ISA's integer dot kernel (w8a8_avx2.c, w8a8_avx512.c, or the scalar one
 *    here), which shares the activation loads between the four rows.
 * 3. y = (float)isum * (d_w * d_x): exact integer sums, one rounding order,
 *    so the result is the same bits on every ISA, for every tiling, thread
 *    count and batch composition.
 *
 * With several tokens on AVX-512 the rows go instead through 4 rows x 4
 * tokens tiles (w8a8_avx512.c), activations offset to unsigned; the sums
 * are the same integers, so the results are the same bits.
 *
 * LIMITATIONS: AVX2 has no token tiling (4 rows x 1 token); weights must
 * fit int8 per row, which outliers punish (SmoothQuant exists for
 * that, src/compress/smoothquant.c).
 */
#include "kern/w8a8.h"
#include "kern/kern_impl.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

/* Weight bytes per chunk when several tokens share the call. */
#define CHUNK_BYTES (256 * 1024)
#define CHUNKS_PER_THREAD 8
#define MIN_PARALLEL_MACS (1 << 15)

/* ISA kernels (w8a8_avx2.c, w8a8_avx512.c). */
void tn__w8a8_idot_avx2(const int8_t *w, size_t w_stride, int nr, const int8_t *qx, int64_t n, int32_t *isum);
void tn__w8a8_idot_avx512(const int8_t *w, size_t w_stride, int nr, const int8_t *qx, int64_t n, int32_t *isum);
void tn__w8a8_tile_avx512(const int8_t *w, size_t w_stride, int nr, const uint8_t *xu, size_t x_stride, int nt,
                          int64_t n, const int32_t *wsum, int32_t *isum);

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

tn_w8a8_idot_fn tn_w8a8_idot_of(int isa)
{
    if (isa < 0 || isa > TN_ISA_AVX512 || !tn__kern_ops_of((tn_isa)isa))
        return NULL; /* this CPU (or OS) cannot run it */
    switch (isa) {
    case TN_ISA_AVX512: return tn__w8a8_idot_avx512;
    case TN_ISA_AVX2: return tn__w8a8_idot_avx2;
    default: return idot_scalar;
    }
}

/* --- rows ---------------------------------------------------------------- */

/* q = round(x / d), d = amax / 127 (0 row: d = 0, q = 0); rounding half
 * away from zero by truncating v ± 0.5. Written so the compiler vectorizes
 * both loops (this runs once per token and matrix: a libm call per element
 * cost as much as a small matmul). The same code on every ISA. */
static float quantize_i8(const float *x, int8_t *q, int64_t n)
{
    float amax = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        const float a = fabsf(x[j]);
        amax = a > amax ? a : amax;
    }
    const float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
    for (int64_t j = 0; j < n; j++) {
        float v = x[j] * inv;
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        q[j] = (int8_t)(int32_t)(v + (v < 0.0f ? -0.5f : 0.5f));
    }
    return d;
}

void tn_w8a8_quantize_row(const float *x, void *dst, int64_t n)
{
    float d = quantize_i8(x, (int8_t *)dst + 4, n);
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

void tn_w8a8_quantize_act(const float *x, int8_t *q, float *d, int64_t n) { *d = quantize_i8(x, q, n); }

/* --- the driver ---------------------------------------------------------- */

static size_t act_row(int64_t n_in) { return ((size_t)n_in + 63) / 64 * 64; }

size_t tn_w8a8_wsize(int64_t n_in, int64_t n_tokens)
{
    if (n_in <= 0 || n_tokens <= 0)
        return 0;
    return (act_row(n_in) + sizeof(float)) * (size_t)n_tokens;
}

typedef struct job {
    tn_w8a8_idot_fn idot;
    const char *w;
    size_t w_row;
    int64_t n_in, n_out, n_tokens;
    const float *x;
    int8_t *xq;      /* (n_tokens, act_row) */
    float *xd;       /* (n_tokens) */
    size_t xq_row;
    float *y;
    bool tiled;      /* AVX-512 4x4 tiles: xq holds q + 128 as bytes */
    int64_t chunk, n_chunks;
    _Alignas(64) atomic_int_fast64_t next;
} job;

static void quant_fn(void *ctx, int ith, int nth)
{
    job *j = ctx;
    for (int64_t t = j->n_tokens * ith / nth; t < j->n_tokens * (ith + 1) / nth; t++) {
        int8_t *q = j->xq + (size_t)t * j->xq_row;
        j->xd[t] = quantize_i8(j->x + t * j->n_in, q, j->n_in);
        if (j->tiled) /* q + 128 as an unsigned byte: flip the sign bit */
            for (int64_t i = 0; i < j->n_in; i++)
                ((uint8_t *)q)[i] = (uint8_t)((uint8_t)q[i] ^ 0x80u);
    }
}

/* Rows [lo, hi) in 4 x 4 tiles (see w8a8_avx512.c): blocks of TILE_ROWS
 * rows stay in L2 while the tokens go by four at a time (their rows in L1). */
#define TILE_ROWS 128
static void rows_range_tiled(const job *j, int64_t lo, int64_t hi)
{
    int32_t isum[16], wsum[TILE_ROWS];
    float dw[TILE_ROWS];
    for (int64_t r0 = lo; r0 < hi; r0 += TILE_ROWS) {
        const int64_t r1 = TN_MIN(r0 + TILE_ROWS, hi);
        for (int64_t r = r0; r < r1; r++) {
            const char *wr = j->w + (size_t)r * j->w_row;
            const int8_t *q = (const int8_t *)wr + 4;
            int32_t sum = 0;
            for (int64_t i = 0; i < j->n_in; i++)
                sum += q[i];
            wsum[r - r0] = sum;
            memcpy(&dw[r - r0], wr, 4);
        }
        for (int64_t t = 0; t < j->n_tokens; t += 4) {
            const int nt = (int)TN_MIN((int64_t)4, j->n_tokens - t);
            const uint8_t *xu = (const uint8_t *)j->xq + (size_t)t * j->xq_row;
            for (int64_t r = r0; r < r1; r += 4) {
                const int nr = (int)TN_MIN((int64_t)4, r1 - r);
                tn__w8a8_tile_avx512((const int8_t *)(j->w + (size_t)r * j->w_row) + 4, j->w_row, nr, xu, j->xq_row,
                                     nt, j->n_in, wsum + (r - r0), isum);
                for (int u = 0; u < nt; u++)
                    for (int k = 0; k < nr; k++)
                        j->y[(t + u) * j->n_out + r + k] = (float)isum[u * 4 + k] * (dw[r - r0 + k] * j->xd[t + u]);
            }
        }
    }
}

static void rows_range(const job *j, int64_t lo, int64_t hi)
{
    if (j->tiled) {
        rows_range_tiled(j, lo, hi);
        return;
    }
    int32_t isum[4];
    for (int64_t t = 0; t < j->n_tokens; t++) {
        const int8_t *xq = j->xq + (size_t)t * j->xq_row;
        const float dx = j->xd[t];
        float *yt = j->y + t * j->n_out;
        for (int64_t r = lo; r < hi; r += 4) {
            const int nr = (int)TN_MIN((int64_t)4, hi - r);
            const char *wr = j->w + (size_t)r * j->w_row;
            j->idot((const int8_t *)wr + 4, j->w_row, nr, xq, j->n_in, isum);
            for (int k = 0; k < nr; k++) {
                float dw;
                memcpy(&dw, wr + (size_t)k * j->w_row, 4);
                yt[r + k] = (float)isum[k] * (dw * dx);
            }
        }
    }
}

static void rows_fn(void *ctx, int ith, int nth)
{
    job *j = ctx;
    (void)ith, (void)nth;
    for (;;) {
        const int64_t c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (c >= j->n_chunks)
            return;
        rows_range(j, c * j->chunk, TN_MIN((c + 1) * j->chunk, j->n_out));
    }
}

void tn_w8a8_matmul(tn_pool *pool, const void *w, int64_t n_in, int64_t n_out, const float *x, int64_t n_tokens,
                    float *y, void *wdata)
{
    if (n_in <= 0 || n_out <= 0 || n_tokens <= 0)
        return;
    job j = {
        .idot = tn_w8a8_idot_of((int)tn__kern_ops_cur()->isa),
        .w = w,
        .w_row = TN_W8A8_ROW(n_in),
        .n_in = n_in,
        .n_out = n_out,
        .n_tokens = n_tokens,
        .x = x,
        .xq = wdata,
        .xq_row = act_row(n_in),
        .y = y,
    };
    j.xd = (float *)(j.xq + j.xq_row * (size_t)n_tokens);
    j.tiled = n_tokens > 1 && tn__kern_ops_cur()->isa == TN_ISA_AVX512;
    const bool parallel = pool && n_in * n_out * n_tokens >= MIN_PARALLEL_MACS;
    if (parallel && n_tokens >= 8)
        tn_pool_run(pool, quant_fn, &j);
    else
        quant_fn(&j, 0, 1);
    const int nth = parallel ? tn_pool_size(pool) : 1;
    int64_t chunk = (n_out + (int64_t)nth * CHUNKS_PER_THREAD - 1) / ((int64_t)nth * CHUNKS_PER_THREAD);
    if (n_tokens > 1)
        chunk = TN_MIN(chunk, (int64_t)(CHUNK_BYTES / j.w_row));
    if (j.tiled) /* each chunk streams every token's activations once: not too many chunks */
        chunk = TN_MAX(chunk, (int64_t)TILE_ROWS);
    chunk = TN_MAX((chunk + 3) / 4 * 4, (int64_t)4);
    j.chunk = chunk;
    j.n_chunks = (n_out + chunk - 1) / chunk;
    atomic_init(&j.next, 0);
    if (parallel && j.n_chunks > 1)
        tn_pool_run(pool, rows_fn, &j);
    else
        rows_range(&j, 0, n_out);
}
