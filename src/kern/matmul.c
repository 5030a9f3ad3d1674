/*
 * matmul.c — Y = X · Wᵀ over the thread pool, and the other dispatched
 * entry points (tn_get_row, tn_dot_f32, tn_axpy_f32).
 *
 * HOW IT WORKS
 *
 * 1. Activations. For Q8_0 and Q4_0 weights each token's row of X is
 *    quantized to Q8_0 blocks in wdata (llama.cpp's scheme: the dot products
 *    are then exact int8 sums per block, scaled by d_w * d_x). F32, F16 and
 *    BF16 weights take X as it is. Quantization is split over the pool by
 *    tokens when there are enough of them to be worth a second fork/join.
 *
 * 2. Rows. Output rows (columns of Y) are split over the threads in
 *    contiguous, equal chunks (rounded to groups of TN__DOT_ROWS rows):
 *    thread i of n starts near n_out*i/n, so with n_out >> n all threads
 *    stream the same number of weight bytes and finish together. The caller
 *    is thread 0.
 *
 * 3. Tiles. The ISA kernels compute up to TN__DOT_ROWS rows per call,
 *    sharing the activation work. A thread walks its rows in tiles of about
 *    TILE_BYTES of weights; for each tile it loops over all tokens, and for
 *    each token over the tile's rows. The tile stays in L1/L2 while the
 *    tokens go by, so each weight row is read from memory once per call
 *    whatever n_tokens is.
 *
 * DETERMINISM
 *
 * Every Y element is the table's dot kernel on (weight row, activation row,
 * n_in), and the kernels guarantee a row's result does not depend on how
 * many rows share the call (kern_impl.h): the tiling, the thread split and
 * n_tokens only change which element is computed when, never how. The quantized
 * activations of a token depend only on that token's row. So a token's
 * outputs are bit-identical whatever else shares the batch and however many
 * threads run; they differ between ISAs only by summation order.
 */
#include "kern/kern_impl.h"

/* Weight bytes per tile (fits L1 with room for an activation row). */
#define TILE_BYTES (32 * 1024)
/* Below this many multiply-adds a matmul runs on the caller alone. */
#define MIN_PARALLEL_MACS (1 << 15)
/* Quantize activations in parallel from this many elements on. */
#define MIN_PARALLEL_QUANT (1 << 16)

typedef struct mm_job {
    tn__dot_fn dot;
    const char *w;   /* (n_out, w_row bytes) */
    size_t w_row;
    const char *x;   /* (n_tokens, x_row bytes): F32 or Q8_0 rows */
    size_t x_row;
    int64_t n_in, n_out, n_tokens;
    float *y;        /* (n_tokens, n_out) */
    /* activation quantization */
    void (*quantize)(const float *x, tn_block_q8_0 *y, int64_t n);
    void (*quantize_k)(const float *x, tn_block_q8_K *y, int64_t n); /* instead, for K-quants */
    const float *xf; /* (n_tokens, n_in) */
    char *xq;        /* (n_tokens, x_row bytes) */
} mm_job;

static void quantize_rows(const mm_job *j, int64_t t0, int64_t t1)
{
    for (int64_t t = t0; t < t1; t++) {
        if (j->quantize_k)
            j->quantize_k(j->xf + t * j->n_in, (tn_block_q8_K *)(j->xq + (size_t)t * j->x_row), j->n_in);
        else
            j->quantize(j->xf + t * j->n_in, (tn_block_q8_0 *)(j->xq + (size_t)t * j->x_row), j->n_in);
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

/* Start of thread i's rows: an equal share, rounded down to whole groups of
 * TN__DOT_ROWS so that only the last thread has a partial group. */
static int64_t split(int64_t n_out, int i, int nth)
{
    return i == nth ? n_out : n_out * i / nth / TN__DOT_ROWS * TN__DOT_ROWS;
}

static void rows_fn(void *ctx, int ith, int nth)
{
    const mm_job *j = ctx;
    const int64_t lo = split(j->n_out, ith, nth), hi = split(j->n_out, ith + 1, nth);
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

/* Scratch bytes tn_matmul needs: n_tokens rows of Q8_0 blocks for Q8_0/Q4_0
 * weights, 0 for float weights. */
size_t tn_matmul_wsize(tn_dtype wt, int64_t n_in, int64_t n_tokens)
{
    if (n_in <= 0 || n_tokens <= 0)
        return 0;
    if (tn__kern_act_q8_K(wt))
        return tn_dtype_row_size(TN_DTYPE_Q8_K, n_in) * (size_t)n_tokens;
    if (!tn__kern_act_q8_0(wt))
        return 0;
    return tn_dtype_row_size(TN_DTYPE_Q8_0, n_in) * (size_t)n_tokens;
}

/* Y = X · Wᵀ; see kern.h and the essay above. Call from the pool's owner
 * thread. Shapes are programmer invariants (asserted): the loader has
 * checked the dtype has kernels and n_in fills whole blocks. */
void tn_matmul(tn_pool *pool, const void *w, tn_dtype wt, int64_t n_in, int64_t n_out,
               const float *x, int64_t n_tokens, float *y, void *wdata)
{
    const tn__kern_ops *ops = tn__kern_ops_cur();
    const tn_dtype_traits *tr = tn_dtype_traits_of(wt);
    assert(tr && tr->computable && n_in % tr->block_size == 0);
    (void)tr;
    if (n_out <= 0 || n_tokens <= 0 || n_in <= 0)
        return;
    mm_job j = {
        .dot = tn__kern_dot(ops, wt),
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
        j.x_row = tn_dtype_row_size(tn__kern_act_q8_K(wt) ? TN_DTYPE_Q8_K : TN_DTYPE_Q8_0, n_in);
        if (parallel && n_tokens > 1 && n_tokens * n_in >= MIN_PARALLEL_QUANT)
            tn_pool_run(pool, quantize_fn, &j);
        else
            quantize_rows(&j, 0, n_tokens);
    }
    if (parallel)
        tn_pool_run(pool, rows_fn, &j);
    else
        rows_fn(&j, 0, 1);
}

/* Row i of a (rows, n_embd) table of type wt, dequantized into out. */
void tn_get_row(const void *w, tn_dtype wt, int64_t n_embd, int64_t i, float *out)
{
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
