/*
 * kern_impl.h — internal to src/kern: the per-ISA function table.
 *
 * Key idea: each ISA file (kern_ref.c, kern_avx2.c, kern_avx512.c) exports
 * one const table of the hot inner kernels; cpu.c picks the best table the
 * CPU and OS support and matmul.c calls through it. The scalar table is the
 * specification; every other table is checked against it by
 * tests/kern/test_kern.c.
 *
 * Contracts every table must keep (the tests check them):
 *
 *   - quantize_q8_0 produces exactly the blocks tn_quantize_row(TN_DTYPE_Q8_0)
 *     produces (llama.cpp's reference rounding: d = amax/127 stored as f16,
 *     q = roundf(x / d) with ties away from zero), bit for bit, on every ISA.
 *     So quantized activations never depend on the ISA or on n_tokens.
 *   - a dot kernel's result for a row is a pure function of (row, x, n): its
 *     reduction order depends only on n, never on alignment, the thread, or
 *     how many other rows (nr) or tokens the caller processes. Different
 *     ISAs may round differently (they sum in different orders).
 *   - integer dot products (Q8_0, Q4_0 weights against Q8_0 activations) sum
 *     the exact integer products of one block, then scale by d_w * d_x in
 *     f32, as llama.cpp does.
 *
 * Every SIMD kernel handles whatever its vector loop leaves over with a
 * scalar tail, so n need only be a multiple of the dtype's block size.
 */
#ifndef TERN_KERN_IMPL_H
#define TERN_KERN_IMPL_H

#include "kern/kern.h"
#include "kern/quants.h"

/* Most weight rows one dot call computes. */
#define TN__DOT_ROWS 4

/* Dot products of nr consecutive weight rows with one activation row:
 * y[r] = w_r · x for r in [0, nr), 1 <= nr <= TN__DOT_ROWS, where row r
 * starts w_stride bytes after row r-1 and holds n elements of the weight
 * dtype; x holds n elements of the dtype's activation type (F32 for
 * F32/F16/BF16 weights, Q8_0 blocks for Q8_0/Q4_0 and the other 32-element
 * formats, Q8_K blocks for the K-quants). Computing rows
 * together shares the activation loads and per-block activation work; each
 * y[r] is bit-identical to what nr = 1 gives for that row alone. */
typedef void (*tn__dot_fn)(const void *w, size_t w_stride, int nr, const void *x, int64_t n, float *y);

typedef struct tn__kern_ops {
    tn_isa isa;
    tn__dot_fn dot_f32;  /* rows: float[n],              x: float[n] */
    tn__dot_fn dot_f16;  /* rows: uint16_t[n] (f16),     x: float[n] */
    tn__dot_fn dot_bf16; /* rows: uint16_t[n] (bf16),    x: float[n] */
    tn__dot_fn dot_q8_0; /* rows: tn_block_q8_0[n/32],   x: tn_block_q8_0[n/32] */
    tn__dot_fn dot_q4_0; /* rows: tn_block_q4_0[n/32],   x: tn_block_q8_0[n/32] */
    /* Activations to Q8_0 blocks, n a multiple of 32 (see above). */
    void (*quantize_q8_0)(const float *x, tn_block_q8_0 *y, int64_t n);
    /* y[i] += a * x[i]. */
    void (*axpy_f32)(float *y, float a, const float *x, int64_t n);
    /* Optional (NULL: the table has none; matmul.c then calls the dot
     * kernels): the packed path for Q8_0 and Q4_0 weights. xpack rearranges
     * one token's Q8_0 activation blocks into tn__xpack_row_size(wt, n)
     * bytes; gemm_q sets y[t*y_stride + r] = w_r · x_t for nr rows (w_stride
     * bytes apart) and nt packed tokens (xp_stride bytes apart), each
     * element bit-identical to what the table's dot kernel gives for that
     * row and token. */
    void (*xpack)(tn_dtype wt, const tn_block_q8_0 *x, int64_t n, void *xp);
    void (*gemm_q)(tn_dtype wt, const void *w, size_t w_stride, int64_t nr, const void *xp, size_t xp_stride,
                   int64_t nt, int64_t n, float *y, size_t y_stride);
    /* Optional: the same for F32, F16 and BF16 weights against F32
     * activation rows (x_stride bytes apart), bit-identical per element to
     * the table's dot kernel. */
    void (*gemm_f)(tn_dtype wt, const void *w, size_t w_stride, int64_t nr, const float *x, size_t x_stride,
                   int64_t nt, int64_t n, float *y, size_t y_stride);
    /* Optional (NULL: matmul.c loops over dot_f32 / axpy_f32): attention's
     * loops over cache rows (kern.h, tn_dot_f32_rows / tn_axpy_f32_rows),
     * bit-identical to those loops over this table's kernels. */
    void (*dot_f32_rows)(const float *q, const float *base, const int32_t *idx, size_t stride, int64_t n_rows,
                         int64_t n, float scale, float *out);
    void (*axpy_f32_rows)(float *y, const float *p, const float *base, const int32_t *idx, size_t stride,
                          int64_t n_rows, int64_t n);
    /* Optional (NULL: the scalar table's): tn_softmax and tn_swiglu. */
    void (*softmax)(float *x, int64_t n);
    void (*swiglu)(float *gate, const float *up, int64_t n);
} tn__kern_ops;

/* Bytes of one token's packed activations for xpack (a multiple of 64):
 * per group of four Q8_0 blocks 256, then the
 * n/32 mod 4 leftover blocks as they are. 0 for other dtypes. */
size_t tn__xpack_row_size(tn_dtype wt, int64_t n);

extern const tn__kern_ops tn__kern_ops_scalar;
extern const tn__kern_ops tn__kern_ops_avx2;
extern const tn__kern_ops tn__kern_ops_avx512;

/* The table in use (initializes detection on first use). */
const tn__kern_ops *tn__kern_ops_cur(void);

/* The table of an ISA, or NULL if this CPU/OS cannot run it. */
const tn__kern_ops *tn__kern_ops_of(tn_isa isa);

/* Whether the AVX2 level may use AVX-VNNI (VEX vpdpbusd on ymm; cpu.c:
 * the CPU and OS have it and TERN_AVX_VNNI is not 0), and the switch for
 * tests (false when turning it on where the CPU lacks it). */
bool tn__kern_avx_vnni(void);
bool tn__kern_set_avx_vnni(bool on);

/* Dot kernels of the formats in quants.h (Q4_1, Q5_0, Q5_1, IQ4_NL against
 * Q8_0 activations; Q2_K..Q6_K against Q8_K), indexed by weight dtype, with
 * the same contract as the table above. One table per ISA file; a NULL entry
 * means that ISA has no faster kernel and the next lower ISA's is used
 * (quants_ref.c has them all). */
/* gemm (optional, NULL: matmul.c calls the dot kernels): y[t*ys + r] =
 * w_r · x_t for nr rows (ws bytes apart) and nt activation rows in the
 * dtype's activation format (xs bytes apart), each element bit-identical
 * to what the same table's dot kernel gives for that row and token. */
typedef void (*tn__gemm_fn)(const void *w, size_t ws, int64_t nr, const void *x, size_t xs, int64_t nt, int64_t n,
                            float *y, size_t ys);

typedef struct tn__quant_ops {
    tn__dot_fn dot[TN_DTYPE_COUNT];
    tn__gemm_fn gemm[TN_DTYPE_COUNT];
} tn__quant_ops;

extern const tn__quant_ops tn__quant_ops_scalar; /* quants_ref.c */
extern const tn__quant_ops tn__quant_ops_avx2;   /* kern_avx2_q.c */
extern const tn__quant_ops tn__quant_ops_avx512; /* kern_avx512_q.c */

/* The gemm of a quants.h format for an ISA, or NULL if it has none. Only
 * the ISA whose table has it: its dot kernel is the same table's. */
static inline tn__gemm_fn tn__quant_gemm(tn_isa isa, tn_dtype wt)
{
    if ((unsigned)wt >= TN_DTYPE_COUNT)
        return NULL;
    if (isa >= TN_ISA_AVX512 && tn__quant_ops_avx512.dot[wt])
        return tn__quant_ops_avx512.gemm[wt];
    if (isa >= TN_ISA_AVX2 && tn__quant_ops_avx2.dot[wt])
        return tn__quant_ops_avx2.gemm[wt];
    return NULL;
}

/* The dot kernel of a quants.h format for an ISA, or NULL if it has none. */
static inline tn__dot_fn tn__quant_dot(tn_isa isa, tn_dtype wt)
{
    if ((unsigned)wt >= TN_DTYPE_COUNT)
        return NULL;
    if (isa >= TN_ISA_AVX512 && tn__quant_ops_avx512.dot[wt])
        return tn__quant_ops_avx512.dot[wt];
    if (isa >= TN_ISA_AVX2 && tn__quant_ops_avx2.dot[wt])
        return tn__quant_ops_avx2.dot[wt];
    return tn__quant_ops_scalar.dot[wt];
}

/* The dot kernel of a weight dtype in a table, or NULL if it has none. */
static inline tn__dot_fn tn__kern_dot(const tn__kern_ops *ops, tn_dtype wt)
{
    switch (wt) {
    case TN_DTYPE_F32: return ops->dot_f32;
    case TN_DTYPE_F16: return ops->dot_f16;
    case TN_DTYPE_BF16: return ops->dot_bf16;
    case TN_DTYPE_Q8_0: return ops->dot_q8_0;
    case TN_DTYPE_Q4_0: return ops->dot_q4_0;
    default: return tn__quant_dot(ops->isa, wt);
    }
}

/* True if the activations of weight dtype wt are quantized to Q8_0. */
static inline bool tn__kern_act_q8_0(tn_dtype wt)
{
    return wt == TN_DTYPE_Q8_0 || wt == TN_DTYPE_Q4_0 || wt == TN_DTYPE_Q4_1 || wt == TN_DTYPE_Q5_0 ||
           wt == TN_DTYPE_Q5_1 || wt == TN_DTYPE_IQ4_NL;
}

/* True if the activations of weight dtype wt are quantized to Q8_K
 * (tn__quantize_row_q8_K, the same on every ISA). */
static inline bool tn__kern_act_q8_K(tn_dtype wt)
{
    return wt == TN_DTYPE_Q2_K || wt == TN_DTYPE_Q3_K || wt == TN_DTYPE_Q4_K || wt == TN_DTYPE_Q5_K ||
           wt == TN_DTYPE_Q6_K;
}

/* A register tile of an ISA file's block-format GEMM: y[t*ys + r] = w_r ·
 * x_t for r < R <= 4, t < T <= 4, nb blocks of the format. */
typedef void (*tn__tile4_fn)(int R, int T, const char *w, size_t ws, const char *x, size_t xs, int64_t nb, float *y,
                             size_t ys);

/* The tn__gemm_fn contract in tiles of 4 rows × 4 tokens, tokens outer, for
 * rows of nb blocks: the loop the per-ISA quant files share. */
static inline void tn__gemm_tiles4(tn__tile4_fn tile, const void *w, size_t ws, int64_t nr, const void *x, size_t xs,
                                   int64_t nt, int64_t nb, float *y, size_t ys)
{
    for (int64_t t = 0; t < nt; t += 4) {
        const int T = (int)TN_MIN(4, nt - t);
        for (int64_t r = 0; r < nr; r += 4) {
            const int R = (int)TN_MIN(4, nr - r);
            tile(R, T, (const char *)w + ws * (size_t)r, ws, (const char *)x + xs * (size_t)t, xs, nb,
                 y + ys * (size_t)t + (size_t)r, ys);
        }
    }
}

#endif /* TERN_KERN_IMPL_H */
