/*
 * repack_k.h — Q4_K and Q6_K matrices repacked into groups of 16 rows
 * (internal dtypes TN_DTYPE_Q4_KX16, TN_DTYPE_Q6_KX16), the K-quant
 * siblings of the x16 layout of kern/repack.h: a vector lane is a row.
 *
 * Key idea: the same as Q4_0X16. The loader (src/model/load_repack.c, via
 * tn__x16_dtype_for / tn__x16_repack, which route Q4_K / Q6_K here)
 * replaces a matrix by this copy where the running ISA has the kernel
 * (AVX-512 VNNI); tn_matmul / tn_get_row see the x16 dtype
 * (tn__dtype_is_x16 is true for both) and come here. Never in a file.
 *
 * Q4_KX16 layout. n_out rows are cut into ceil(n_out / 16) groups of 16 (the last
 * padded with zero rows); n_in = 256 * nb. A group is nb super-blocks of
 * KSB = 2368 bytes (37 vectors of 64), super-block b at offset b * KSB:
 *
 *   offset        size   what
 *   0             32     d    f16, row r at 2r
 *   32            32     dmin f16, row r at 32 + 2r
 *   64            128    scales u8 (6-bit, decoded): sub-block j, row r at 64 + 16j + r
 *   192           128    mins u8 (6-bit, decoded): pair p = j/2, row r at
 *                          192 + 32p + 2r + j%2 (so each 32-bit lane holds
 *                          the words (m_2p, m_2p+1) once widened to int16)
 *   320 + 64v     64     quant vector v = 8c + k (c < 4, k < 8): bytes
 *                          4r..4r+3 = row r's file bytes qs[32c+4k .. 32c+4k+3],
 *                          i.e. low nibbles = elements 64c+4k+i (sub-block
 *                          2c), high nibbles = elements 64c+32+4k+i (2c+1)
 *
 * Q6_KX16 layout: the same groups, super-blocks of KSB6 = 3392 bytes (53
 * vectors; the file's 16 × 210 = 3360 plus padding):
 *
 *   offset        size   what
 *   0             32     d f16, row r at 2r
 *   32            256    scales i8: sub-block j (16 elements, j < 16), row r at 32 + 16j + r
 *   288           32     zero
 *   320 + 64v     64     low-nibble vector v = 8c + k (c < 4, k < 8): bytes 4r..4r+3 =
 *                          row r's ql[32c+4k .. +3]: low nibbles = elements
 *                          e = 128(c/2) + 32(c%2) + 4k + i, high nibbles = e + 64
 *   2368 + 64u    64     high-bit vector u = 8h + k (h < 2, k < 8): bytes 4r..4r+3 =
 *                          row r's qh[32h+4k .. +3]: bits 2m, 2m+1 = bits 4, 5
 *                          of element 128h + 32m + 4k + i's 6-bit quant (m < 4)
 *
 * Packed activations: the tokens' Q8_K blocks (tn__quantize_row_q8_K, the
 * one Q8_K quantizer) in tiles of 16 tokens, tile i at i * nb * XSB
 * (XSB = 4416 for Q4_K, XSB6 = 5184 for Q6_K), token t of the tile in
 * slot t; per super-block b at b * XSB:
 *
 *   offset           size   what
 *   256 t            256    qs (int8) of token t
 *   Q4_K: 4096 + 16 t  16   int16 s_j = bsums[2j] + bsums[2j+1], j < 8
 *                           (the sub-block sums, |s_j| <= 32·128)
 *         4352 + 4 t   4    f32 d of token t
 *   Q6_K: 4096 + 64 t  64   int32 -32 · bsums[j], j < 16 (the -32 offset of
 *                           the quants, as the start of each sub-block's sum)
 *         5120 + 4 t   4    f32 d of token t
 *
 * Arithmetic (the specification, tn__kx16_gemm_ref): Q4_K, for row r, token t,
 *   acc = 0; for b = 0 .. nb-1 in order:
 *     isum_j = Σ_{i in sub-block j} q_i · x_i              (int32, exact)
 *     sumi   = Σ_j sc_j · isum_j,  summ = Σ_j m_j · s_j    (int32, exact)
 *     acc = fmaf((float)sumi,  d_w · d_x,    acc)
 *     acc = fmaf(-(float)summ, dmin_w · d_x, acc)
 * Q6_K (q_i in [-32, 31], sc_j int8, 16-element sub-blocks):
 *   acc = 0; for b: sumi = Σ_j sc_j · Σ_{i in j} q_i · x_i;  acc = fmaf((float)sumi, d_w · d_x, acc)
 * (the products d_w·d_x and dmin_w·d_x rounded to f32 first; (float) of
 * an int32 rounds to nearest even). It is llama.cpp's per-super-block
 * formula with the two products fused into the accumulation, so it is not
 * bit-identical to the block-format Q4_K path (which rounds the products
 * and the difference separately) but within a few ulps of the row's L1
 * mass; every ISA kernel for the layout gives the scalar reference's bits
 * whatever the tile, the number of tokens or threads.
 */
#ifndef TERN_KERN_REPACK_K_H
#define TERN_KERN_REPACK_K_H

#include "base/pool.h"
#include "kern/dtype.h"

/* Bytes of one (16-row group, super-block) of weights / of packed
 * activations of a tile of 16 tokens. */
#define TN__KX16_SB 2368
#define TN__KX16_XSB 4416
#define TN__KX16_SB6 3392
#define TN__KX16_XSB6 5184

static inline bool tn__dtype_is_kx16(tn_dtype t) { return t == TN_DTYPE_Q4_KX16 || t == TN_DTYPE_Q6_KX16; }

/* Bytes of a 16-row group (a whole matrix: tn__x16_matrix_bytes). */
size_t tn__kx16_group_bytes(tn_dtype xt, int64_t n_in);

/* Repacks the (n_out, n_in) matrix src of type wt (Q4_K or Q6_K; n_in a
 * multiple of 256) into dst (tn__x16_matrix_bytes, 64-byte aligned).
 * Bit-exact: tn__kx16_get_row gives back every row as tn_dequantize_row
 * would. */
void tn__kx16_repack(tn_dtype wt, const void *src, int64_t n_in, int64_t n_out, void *dst);

/* Row i (< n_out) of a repacked matrix, dequantized (tn_get_row). */
void tn__kx16_get_row(tn_dtype xt, const void *w, int64_t n_in, int64_t i, float *out);

/* Packs token t's Q8_K blocks (n_in elements) into its slot of xp. */
void tn__kx16_xpack(tn_dtype xt, const void *xq8k, int64_t n_in, int64_t t, uint8_t *xp);

/* Scratch bytes and Y = X · Wᵀ (the tn_matmul_wsize / tn_matmul contracts). */
size_t tn__kx16_wsize(tn_dtype xt, int64_t n_in, int64_t n_tokens);
void tn__kx16_matmul(tn_pool *pool, const void *w, tn_dtype xt, int64_t n_in, int64_t n_out, const float *x,
                     int64_t n_tokens, float *y, void *wdata);

/* An ISA's kernel: groups [0, ng) of w (gstride bytes apart) against nt
 * packed tokens (xp: tiles of 16, nb super-blocks): y[t * ystride + 16g + r]
 * for every row 16g + r < nr. */
typedef void (*tn__kx16_gemm_fn)(tn_dtype xt, const uint8_t *w, size_t gstride, int64_t ng, int64_t nr,
                                 const uint8_t *xp, int64_t nt, int64_t nb, float *y, size_t ystride);

void tn__kx16_gemm_ref(tn_dtype xt, const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp,
                       int64_t nt, int64_t nb, float *y, size_t ystride);
void tn__kx16_gemm_avx512(tn_dtype xt, const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp,
                          int64_t nt, int64_t nb, float *y, size_t ystride);

/* The kernel of an ISA (the scalar reference for ISAs without one). */
tn__kx16_gemm_fn tn__kx16_gemm_of(int isa);

#endif /* TERN_KERN_REPACK_K_H */
