/*
 * matmul.c — Y = X · Wᵀ over the thread pool, and the other dispatched
 * entry points (tn_get_row, tn_dot_f32, tn_axpy_f32, their row loops,
 * tn_softmax, tn_swiglu).
 *
 * HOW IT WORKS
 *
 * 1. Activations. For Q8_0 and Q4_0 weights (and the other 32-element
 *    formats) each token's row of X is quantized to Q8_0 blocks in wdata
 *    (llama.cpp's scheme: the dot products are then exact int8 sums per
 *    block, scaled by d_w * d_x); K-quants take Q8_K blocks. F32, F16 and
 *    BF16 weights take X as it is. Where the ISA table has a packed path
 *    (xpack/gemm_q: AVX-512 VNNI for Q8_0 and Q4_0) each quantized row is
 *    then rearranged once into the vectors its inner loop loads, so that
 *    work is not repeated for every weight row. Quantization is split over
 *    the pool by tokens when there are enough of them to be worth a second
 *    fork/join.
 *
 * 2. Rows. Output rows (columns of Y) are cut into chunks of a multiple of
 *    TN__DOT_ROWS rows, about CHUNKS_PER_THREAD per thread, and the threads
 *    take chunks from a shared atomic counter until none are left. With equal
 *    chunks all threads would stream the same bytes, but this machine is
 *    shared: a thread that loses its core for a while must not make the
 *    others wait at the join, so whoever is running takes the next chunk.
 *    The caller is thread 0.
 *
 * 3. Tiles. A chunk is all its rows against all tokens. The packed path
 *    hands it to gemm_q (gemm_f for F32/F16/BF16), which walks the tokens in
 *    fours (sixes) and, for each, the chunk's rows in fours: a tile of
 *    accumulators in registers, the tile's tokens' activations in L1 and the
 *    chunk's weights in L2 while the tokens go by, so each weight byte comes
 *    from memory once per call. The K-quants on AVX-512 (gemm_k) do the
 *    same on their Q8_K rows, unpacking each row's super-block once per
 *    tile of tokens.
 *    Other dtypes call the dot kernels (TN__DOT_ROWS rows per call, sharing
 *    the activation work) in tiles of about TILE_BYTES of weights, looping
 *    over all tokens for each tile.
 *
 * DETERMINISM
 *
 * Every Y element is the table's dot kernel on (weight row, activation row,
 * n_in), or gemm_q, which promises the same bits element by element; the
 * kernels guarantee a row's result does not depend on how many rows or
 * tokens share the call (kern_impl.h): the tiling, the chunks, which thread
 * takes which chunk, and n_tokens only change which element is computed
 * when, never how. The quantized activations of a token depend only on that
 * token's row. So a token's outputs are bit-identical whatever else shares
 * the batch and however many threads run; they differ between ISAs only by
 * summation order.
 */
#include "kern/kern_impl.h"
#include "kern/repack.h"
#include "kern/w8a8.h"

#include <stdatomic.h>
#include <string.h>

/* Weight bytes per tile of the dot-kernel path (fits L1 with room for an
 * activation row). */
#define TILE_BYTES (32 * 1024)
/* Weight bytes per chunk of the gemm paths when n_tokens > 1: the chunk
 * stays in L2 while all tokens go by. */
#define CHUNK_BYTES_GEMM (512 * 1024)
/* Chunks per thread a matrix is cut into (load balance vs. counter traffic). */
#define CHUNKS_PER_THREAD 8
/* Below this many multiply-adds a matmul runs on the caller alone. */
#define MIN_PARALLEL_MACS (1 << 15)
/* Quantize activations in parallel from this many elements on. */
#define MIN_PARALLEL_QUANT (1 << 16)

typedef struct mm_job {
    tn__dot_fn dot;
    tn_dtype wt;
    const char *w;   /* (n_out, w_row bytes) */
    size_t w_row;
    const char *x;   /* (n_tokens, x_row bytes): F32, Q8_0/Q8_K or packed rows */
    size_t x_row;
    int64_t n_in, n_out, n_tokens;
    float *y;        /* (n_tokens, n_out) */
    /* activation quantization */
    void (*quantize)(const float *x, tn_block_q8_0 *y, int64_t n);
    void (*quantize_k)(const float *x, tn_block_q8_K *y, int64_t n); /* instead, for K-quants */
    const float *xf; /* (n_tokens, n_in) */
    char *xq;        /* (n_tokens, xq_row bytes) */
    size_t xq_row;
    /* the packed path (NULL: dot kernels) */
    void (*xpack)(tn_dtype wt, const tn_block_q8_0 *x, int64_t n, void *xp);
    void (*gemm_q)(tn_dtype wt, const void *w, size_t w_stride, int64_t nr, const void *xp, size_t xp_stride,
                   int64_t nt, int64_t n, float *y, size_t y_stride);
    char *xp;        /* (n_tokens, x_row bytes) packed */
    void (*gemm_f)(tn_dtype wt, const void *w, size_t w_stride, int64_t nr, const float *x, size_t x_stride,
                   int64_t nt, int64_t n, float *y, size_t y_stride);
    tn__gemm_fn gemm_k; /* the quants.h formats' tiled path (K-quants on AVX-512) */
    /* the chunks */
    int64_t chunk;   /* rows per chunk, a multiple of TN__DOT_ROWS */
    int64_t n_chunks;
    _Alignas(64) atomic_int_fast64_t next; /* next chunk to take */
} mm_job;

static void quantize_rows(const mm_job *j, int64_t t0, int64_t t1)
{
    for (int64_t t = t0; t < t1; t++) {
        char *q = j->xq + (size_t)t * j->xq_row;
        if (j->quantize_k)
            j->quantize_k(j->xf + t * j->n_in, (tn_block_q8_K *)q, j->n_in);
        else
            j->quantize(j->xf + t * j->n_in, (tn_block_q8_0 *)q, j->n_in);
        if (j->xpack)
            j->xpack(j->wt, (const tn_block_q8_0 *)q, j->n_in, j->xp + (size_t)t * j->x_row);
    }
}

static void quantize_fn(void *ctx, int ith, int nth)
{
    const mm_job *j = ctx;
    quantize_rows(j, j->n_tokens * ith / nth, j->n_tokens * (ith + 1) / nth);
}

/* y[r] for rows [r0, r1) of one token, TN__DOT_ROWS rows per kernel call. */
static void token_rows(const mm_job *j, const char *xt, float *yt, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r += TN__DOT_ROWS) {
        const int nr = (int)TN_MIN((int64_t)TN__DOT_ROWS, r1 - r);
        j->dot(j->w + (size_t)r * j->w_row, j->w_row, nr, xt, j->n_in, yt + r);
    }
}

/* Rows [lo, hi) against all tokens. */
static void rows_range(const mm_job *j, int64_t lo, int64_t hi)
{
    if (j->gemm_q) {
        j->gemm_q(j->wt, j->w + (size_t)lo * j->w_row, j->w_row, hi - lo, j->x, j->x_row, j->n_tokens, j->n_in,
                  j->y + lo, (size_t)j->n_out);
        return;
    }
    if (j->gemm_k) {
        j->gemm_k(j->w + (size_t)lo * j->w_row, j->w_row, hi - lo, j->x, j->x_row, j->n_tokens, j->n_in, j->y + lo,
                  (size_t)j->n_out);
        return;
    }
    if (j->gemm_f) {
        j->gemm_f(j->wt, j->w + (size_t)lo * j->w_row, j->w_row, hi - lo, (const float *)j->x, j->x_row, j->n_tokens,
                  j->n_in, j->y + lo, (size_t)j->n_out);
        return;
    }
    if (j->n_tokens == 1) {
        token_rows(j, j->x, j->y, lo, hi);
        return;
    }
    int64_t tile = (int64_t)(TILE_BYTES / j->w_row) / TN__DOT_ROWS * TN__DOT_ROWS;
    if (tile < TN__DOT_ROWS)
        tile = TN__DOT_ROWS;
    for (int64_t r0 = lo; r0 < hi; r0 += tile) {
        const int64_t r1 = TN_MIN(r0 + tile, hi);
        for (int64_t t = 0; t < j->n_tokens; t++)
            token_rows(j, j->x + (size_t)t * j->x_row, j->y + t * j->n_out, r0, r1);
    }
}

/* Takes chunks until none are left (see the essay, 2). */
static void rows_fn(void *ctx, int ith, int nth)
{
    mm_job *j = ctx;
    (void)ith, (void)nth;
    for (;;) {
        const int64_t c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (c >= j->n_chunks)
            return;
        const int64_t lo = c * j->chunk;
        rows_range(j, lo, TN_MIN(lo + j->chunk, j->n_out));
    }
}

/* Bytes of one token's packed row; see kern_impl.h. */
size_t tn__xpack_row_size(tn_dtype wt, int64_t n)
{
    const int64_t nb = n / TN_QK8_0, ng = nb / 4;
    if (wt != TN_DTYPE_Q4_0 && wt != TN_DTYPE_Q8_0)
        return 0;
    const size_t group = 256;
    const size_t s = group * (size_t)ng + sizeof(tn_block_q8_0) * (size_t)(nb - 4 * ng);
    return (s + 63) / 64 * 64;
}

/* Scratch bytes tn_matmul needs: n_tokens rows of Q8_0 (Q8_K) blocks for
 * the quantized-activation dtypes, plus their packed copies for Q8_0/Q4_0
 * (whatever the ISA: it may change between calls); 0 for float weights. */
size_t tn_matmul_wsize(tn_dtype wt, int64_t n_in, int64_t n_tokens)
{
    if (n_in <= 0 || n_tokens <= 0)
        return 0;
    if (wt == TN_DTYPE_W8A8)
        return tn_w8a8_wsize(n_in, n_tokens);
    if (wt == TN_DTYPE_W8A8_HAD)
        return tn_w8a8_had_wsize(n_in, n_tokens);
    if (tn__dtype_is_x16(wt))
        return tn__x16_wsize(wt, n_in, n_tokens);
    if (tn__kern_act_q8_K(wt))
        return tn_dtype_row_size(TN_DTYPE_Q8_K, n_in) * (size_t)n_tokens;
    if (!tn__kern_act_q8_0(wt))
        return 0;
    const size_t q = (tn_dtype_row_size(TN_DTYPE_Q8_0, n_in) + 63) / 64 * 64;
    return (q + tn__xpack_row_size(wt, n_in)) * (size_t)n_tokens;
}

/* Y = X · Wᵀ; see kern.h and the essay above. Call from the pool's owner
 * thread. Shapes are programmer invariants (asserted): the loader has
 * checked the dtype has kernels and n_in fills whole blocks. */
void tn_matmul(tn_pool *pool, const void *w, tn_dtype wt, int64_t n_in, int64_t n_out,
               const float *x, int64_t n_tokens, float *y, void *wdata)
{
    if (wt == TN_DTYPE_W8A8) { /* tern's own type: w8a8.c */
        tn_w8a8_matmul(pool, w, n_in, n_out, x, n_tokens, y, wdata);
        return;
    }
    if (wt == TN_DTYPE_W8A8_HAD) {
        tn_w8a8_had_matmul(pool, w, n_in, n_out, x, n_tokens, y, wdata);
        return;
    }
    if (tn__dtype_is_x16(wt)) { /* repacked at load: repack.c routes it to its family */
        tn__x16_matmul(pool, w, wt, n_in, n_out, x, n_tokens, y, wdata);
        return;
    }
    const tn__kern_ops *ops = tn__kern_ops_cur();
    const tn_dtype_traits *tr = tn_dtype_traits_of(wt);
    assert(tr && tr->computable && n_in % tr->block_size == 0);
    (void)tr;
    if (n_out <= 0 || n_tokens <= 0 || n_in <= 0)
        return;
    mm_job j = {
        .dot = tn__kern_dot(ops, wt),
        .wt = wt,
        .w = w,
        .w_row = tn_dtype_row_size(wt, n_in),
        .x = (const char *)x,
        .x_row = (size_t)n_in * sizeof(float),
        .n_in = n_in,
        .n_out = n_out,
        .n_tokens = n_tokens,
        .y = y,
    };
    assert(j.dot);
    const bool parallel = n_in * n_out * n_tokens >= MIN_PARALLEL_MACS;
    if (tn__kern_act_q8_0(wt) || tn__kern_act_q8_K(wt)) {
        assert(wdata);
        j.quantize = ops->quantize_q8_0;
        j.quantize_k = tn__kern_act_q8_K(wt) ? tn__quantize_row_q8_K : NULL;
        j.xf = x;
        j.xq = wdata;
        j.x = wdata;
        j.x_row = j.xq_row = tn_dtype_row_size(tn__kern_act_q8_K(wt) ? TN_DTYPE_Q8_K : TN_DTYPE_Q8_0, n_in);
        if (ops->xpack && ops->gemm_q && tn__xpack_row_size(wt, n_in) > 0) {
            j.xq_row = (j.xq_row + 63) / 64 * 64;
            j.xpack = ops->xpack;
            j.gemm_q = ops->gemm_q;
            j.xp = j.xq + j.xq_row * (size_t)n_tokens;
            j.x = j.xp;
            j.x_row = tn__xpack_row_size(wt, n_in);
        }
        if (parallel && n_tokens > 1 && n_tokens * n_in >= MIN_PARALLEL_QUANT)
            tn_pool_run(pool, quantize_fn, &j);
        else
            quantize_rows(&j, 0, n_tokens);
    }
    if (!j.xq && (wt == TN_DTYPE_F32 || wt == TN_DTYPE_F16 || wt == TN_DTYPE_BF16))
        j.gemm_f = ops->gemm_f;
    j.gemm_k = tn__quant_gemm(ops->isa, wt);
    const int nth = parallel ? tn_pool_size(pool) : 1;
    int64_t chunk = (n_out + (int64_t)nth * CHUNKS_PER_THREAD - 1) / ((int64_t)nth * CHUNKS_PER_THREAD);
    if ((j.gemm_q || j.gemm_f || j.gemm_k) && n_tokens > 1)
        chunk = TN_MIN(chunk, (int64_t)(CHUNK_BYTES_GEMM / j.w_row));
    chunk = TN_MAX((chunk + TN__DOT_ROWS - 1) / TN__DOT_ROWS * TN__DOT_ROWS, (int64_t)TN__DOT_ROWS);
    j.chunk = chunk;
    j.n_chunks = (n_out + chunk - 1) / chunk;
    atomic_init(&j.next, 0);
    if (parallel && j.n_chunks > 1)
        tn_pool_run(pool, rows_fn, &j);
    else
        rows_range(&j, 0, n_out);
}

/* Row i of a (rows, n_embd) table of type wt, dequantized into out. */
void tn_get_row(const void *w, tn_dtype wt, int64_t n_embd, int64_t i, float *out)
{
    if (tn__dtype_is_x16(wt)) {
        tn__x16_get_row(wt, w, n_embd, i, out);
        return;
    }
    const char *row = (const char *)w + tn_dtype_row_size(wt, n_embd) * (size_t)i;
    tn_status s = tn_dequantize_row(wt, row, out, n_embd);
    assert(s == TN_OK);
    (void)s;
}

/* Dot product with the current ISA's F32 kernel (the one F32 matmuls use);
 * its order depends only on n. */
float tn_dot_f32(const float *a, const float *b, int64_t n)
{
    float y;
    tn__kern_ops_cur()->dot_f32(a, 0, 1, b, n, &y);
    return y;
}

/* y += a * x with the current ISA's kernel. */
void tn_axpy_f32(float *y, float a, const float *x, int64_t n) { tn__kern_ops_cur()->axpy_f32(y, a, x, n); }

/* Softmax and SwiGLU with the current ISA's kernels (the scalar ones where
 * the table has none). */
void tn_softmax(float *x, int64_t n)
{
    const tn__kern_ops *ops = tn__kern_ops_cur();
    (ops->softmax ? ops->softmax : tn__kern_ops_scalar.softmax)(x, n);
}

void tn_swiglu(float *gate, const float *up, int64_t n)
{
    const tn__kern_ops *ops = tn__kern_ops_cur();
    (ops->swiglu ? ops->swiglu : tn__kern_ops_scalar.swiglu)(gate, up, n);
}

/* See kern.h: the loops of tn_dot_f32 / tn_axpy_f32 with one table lookup
 * (or the table's own fused loops, which promise the same bits). */
void tn_dot_f32_rows(const float *q, const float *base, const int32_t *idx, size_t stride, int64_t n_rows, int64_t n,
                     float scale, float *out)
{
    const tn__kern_ops *ops = tn__kern_ops_cur();
    if (ops->dot_f32_rows) {
        ops->dot_f32_rows(q, base, idx, stride, n_rows, n, scale, out);
        return;
    }
    const tn__dot_fn dot = ops->dot_f32;
    for (int64_t i = 0; i < n_rows; i++) {
        float d;
        dot(q, 0, 1, base + (size_t)idx[i] * stride, n, &d);
        out[i] = d * scale;
    }
}

void tn_axpy_f32_rows(float *y, const float *p, const float *base, const int32_t *idx, size_t stride, int64_t n_rows,
                      int64_t n)
{
    const tn__kern_ops *ops = tn__kern_ops_cur();
    if (ops->axpy_f32_rows) {
        ops->axpy_f32_rows(y, p, base, idx, stride, n_rows, n);
        return;
    }
    void (*axpy)(float *, float, const float *, int64_t) = ops->axpy_f32;
    memset(y, 0, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n_rows; i++)
        axpy(y, p[i], base + (size_t)idx[i] * stride, n);
}
