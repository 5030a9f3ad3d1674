/*
 * repack.h — Q4_0 / Q8_0 matrices repacked into groups of 16 rows (internal
 * dtypes TN_DTYPE_Q4_0X16, TN_DTYPE_Q8_0X16), for the int8 kernels whose
 * vector lane is a weight row.
 *
 * Key idea: the model loader (src/model/load_repack.c) replaces a Q4_0 or
 * Q8_0 matrix by its repacked copy where the running ISA has a kernel for
 * the layout (AVX-512 VNNI, AVX2); tn_matmul and tn_get_row then see the x16
 * dtype and route here. The x16 dtypes never appear in a file.
 *
 * Layout. n_out rows are cut into ceil(n_out / 16) groups of 16 (the last
 * padded with zero rows); n_in = 32 * nb. A group takes GSTRIDE bytes
 * (tn__x16_group_bytes, a multiple of 64), group g at offset g * GSTRIDE:
 *
 *   offset             size      what
 *   b * QB             QB        block b's quants, QB/64 vectors of 64 bytes:
 *                                vector k, bytes 4r..4r+3 = row r's quant
 *                                bytes 4k..4k+3 of block b
 *                                  Q4_0 (QB 256): the block's qs[] as in the
 *                                    file (low nibble: element j, high
 *                                    nibble: element j + 16)
 *                                  Q8_0 (QB 512): qs[] XOR 0x80, i.e. q + 128
 *                                    as an unsigned byte
 *   nb * QB + b * 32   32        block b's 16 f16 scales, row r at 2r
 *   (zero padding to GSTRIDE)
 *
 * So one 64-byte load holds four quants of each of 16 rows, and VNNI's
 * vpdpbusd (unsigned weight bytes x signed activation bytes, four products
 * summed into each 32-bit lane) against a 4-byte activation broadcast
 * advances all 16 rows at once. The weights' offset (8 for Q4_0's nibbles,
 * 128 for Q8_0's flipped bytes) comes back as the start value -8·Σx
 * (-128·Σx) of each block's integer sum, taken from the packed activations.
 *
 * Packed activations: the tokens' Q8_0 blocks (tn_matmul's quantization,
 * the same bytes on every ISA) in tiles of 16 tokens, tile i at offset
 * i * nb * 640 (tn__x16_xtile_bytes), token t of the tile in slot t, so the
 * kernel addresses all 16 tokens of a block with constant offsets:
 *
 *   offset             size      what
 *   b * 512 + 32 t     32        block b's qs (int8) of token t
 *   nb * 512 + 64 b + 4 t   4    int32 bias of block b: -8·Σqs (Q4_0), -128·Σqs (Q8_0)
 *   nb * 576 + 64 b + 4 t   4    f32 d of block b
 *
 * Arithmetic (the specification, tn__x16_gemm_ref): for row r and token t,
 *   acc = 0; for b = 0 .. nb-1 in order:
 *     isum = bias_b + Σ_j wq_j · xq_j          (exact int32: Σ (q_w - off) x)
 *     acc  = fmaf((float)isum, d_w[r][b] * d_x[t][b], acc)
 * The integer sum equals llama.cpp's per-block sum; the f32 rounding is one
 * product and one fused multiply-add per block, so every ISA kernel for the
 * layout gives the same bits as the scalar one, whatever the tile, the
 * number of tokens or threads.
 */
#ifndef TERN_KERN_REPACK_H
#define TERN_KERN_REPACK_H

#include "base/pool.h"
#include "kern/dtype.h"
#include "kern/kern.h"

/* Rows per group. */
#define TN__X16 16

/* One family of x16 layouts: the two file dtypes it repacks and their x16
 * dtypes, the lowest ISA that has its kernel, and its entry points (the
 * contracts of the tn__x16_ functions below, which find a dtype's family
 * in a table and call it). Q4_0 / Q8_0 are this file's; Q4_K / Q6_K are
 * kern/repack_k.h's, W8A8 / W8A8_HAD kern/w8a8_x16.h's. A new layout is
 * one more family in repack.c's table. */
typedef struct tn__x16_family {
    tn_dtype file[2], x16[2];
    tn_isa min_isa;
    size_t (*group_bytes)(tn_dtype xt, int64_t n_in);
    void (*repack)(tn_dtype wt, const void *src, int64_t n_in, int64_t n_out, void *dst);
    void (*get_row)(tn_dtype xt, const void *w, int64_t n_in, int64_t i, float *out);
    size_t (*wsize)(tn_dtype xt, int64_t n_in, int64_t n_tokens);
    void (*matmul)(tn_pool *pool, const void *w, tn_dtype xt, int64_t n_in, int64_t n_out, const float *x,
                   int64_t n_tokens, float *y, void *wdata);
} tn__x16_family;

extern const tn__x16_family tn__x16_family_q;    /* Q4_0, Q8_0: repack.c */
extern const tn__x16_family tn__x16_family_k;    /* Q4_K, Q6_K: repack_k.c */
extern const tn__x16_family tn__x16_family_w8a8; /* W8A8, W8A8_HAD: w8a8_x16.c */

/* True for the x16 dtypes of every family. */
bool tn__dtype_is_x16(tn_dtype t);

/* The file dtype an x16 dtype was repacked from (other dtypes: themselves). */
tn_dtype tn__x16_file_dtype(tn_dtype t);

/* The x16 dtype for a file dtype wt (Q4_0, Q8_0, Q4_K, Q6_K, W8A8,
 * W8A8_HAD) when the running ISA has a kernel for it; TN_DTYPE_COUNT (no
 * repack) otherwise. */
tn_dtype tn__x16_dtype_for(tn_dtype wt);

/* The threaded driver the families' matmul share: rows(ctx, t0, t1)
 * quantizes and packs activation rows [t0, t1) (split over the pool when
 * there are enough), then the ceil(n_out / 16) groups are cut into chunks
 * that threads take from an atomic counter, groups(ctx, g0, g1) computing
 * groups [g0, g1) against every token. A chunk is about 1/8 of a thread's
 * share; with several tokens at most 512 KiB of weights (it stays in L2
 * while the tokens go by), rounded up to a multiple of chunk_multiple
 * groups (W8A8's prefill kernel pairs groups). Which thread computes a
 * group never changes its bits: every family's order is fixed per element. */
typedef struct tn__x16_drive {
    void *ctx;
    void (*rows)(void *ctx, int64_t t0, int64_t t1);
    void (*groups)(void *ctx, int64_t g0, int64_t g1);
    int64_t n_in, n_out, n_tokens;
    size_t gstride;     /* bytes per group */
    int chunk_multiple; /* 1 or more */
} tn__x16_drive;

void tn__x16_run(tn_pool *pool, const tn__x16_drive *d);

/* Bytes of one 16-row group / of a whole repacked (n_out, n_in) matrix
 * (n_out padded to 16) / of one token's packed activations (Q4_0X16 and
 * Q8_0X16). xt: an x16 dtype. */
size_t tn__x16_group_bytes(tn_dtype xt, int64_t n_in);
size_t tn__x16_matrix_bytes(tn_dtype xt, int64_t n_in, int64_t n_out);
size_t tn__x16_xtile_bytes(int64_t n_in);

/* Repacks the (n_out, n_in) matrix src of type wt (Q4_0 or Q8_0, n_in a
 * multiple of 32; Q4_K / Q6_K, a multiple of 256; W8A8 / W8A8_HAD, any
 * n_in) into dst (tn__x16_matrix_bytes of its x16 dtype, 64-byte
 * aligned). Bit-exact: tn__x16_get_row gives back every row. */
void tn__x16_repack(tn_dtype wt, const void *src, int64_t n_in, int64_t n_out, void *dst);

/* Row i (< n_out) of a repacked matrix, dequantized (tn_get_row). */
void tn__x16_get_row(tn_dtype xt, const void *w, int64_t n_in, int64_t i, float *out);

/* Scratch bytes and the product Y = X · Wᵀ for an x16 matrix (the
 * tn_matmul_wsize / tn_matmul contracts). */
size_t tn__x16_wsize(tn_dtype xt, int64_t n_in, int64_t n_tokens);
void tn__x16_matmul(tn_pool *pool, const void *w, tn_dtype xt, int64_t n_in, int64_t n_out, const float *x,
                    int64_t n_tokens, float *y, void *wdata);

/* An ISA's kernel: groups [0, ng) of w (gstride bytes apart) against nt
 * packed tokens (xp: tiles of 16, nb blocks): y[t * ystride + 16g + r] for
 * every row 16g + r < nr. */
typedef void (*tn__x16_gemm_fn)(tn_dtype xt, const uint8_t *w, size_t gstride, int64_t ng, int64_t nr,
                                const uint8_t *xp, int64_t nt, int64_t nb, float *y, size_t ystride);

void tn__x16_gemm_ref(tn_dtype xt, const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp,
                      int64_t nt, int64_t nb, float *y, size_t ystride);
void tn__x16_gemm_avx512(tn_dtype xt, const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp,
                         int64_t nt, int64_t nb, float *y, size_t ystride);
void tn__x16_gemm_avx2(tn_dtype xt, const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp,
                       int64_t nt, int64_t nb, float *y, size_t ystride);
void tn__x16_gemm_avxvnni(tn_dtype xt, const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp,
                          int64_t nt, int64_t nb, float *y, size_t ystride);

/* The kernel of an ISA (the scalar reference for ISAs without one; on
 * AVX2 the AVX-VNNI one where tn__kern_avx_vnni()). */
tn__x16_gemm_fn tn__x16_gemm_of(int isa);

/* Packs token t's Q8_0 blocks (n_in elements) for an x16 dtype into its
 * slot of the packed activations xp. */
void tn__x16_xpack(tn_dtype xt, const tn_block_q8_0 *x, int64_t n_in, int64_t t, uint8_t *xp);

#endif /* TERN_KERN_REPACK_H */
