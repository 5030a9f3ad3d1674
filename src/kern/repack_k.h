/*
 * repack_k.h — Q4_K matrices repacked into groups of 16 rows (internal
 * dtype TN_DTYPE_Q4_KX16), the K-quant sibling of the x16 layout of
 * kern/repack.h: a vector lane is a weight row.
 *
 * Key idea: the same as Q4_0X16. The loader (src/model/load_repack.c, via
 * tn__x16_dtype_for / tn__x16_repack, which route Q4_K here) replaces a
 * Q4_K matrix by this copy where the running ISA has the kernel (AVX-512
 * VNNI); tn_matmul / tn_get_row see TN_DTYPE_Q4_KX16 (tn__dtype_is_x16 is
 * true for it) and come here. Never in a file.
 *
 * Layout. n_out rows are cut into ceil(n_out / 16) groups of 16 (the last
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
 * Packed activations: the tokens' Q8_K blocks (tn__quantize_row_q8_K, the
 * one Q8_K quantizer) in tiles of 16 tokens, tile i at i * nb * XSB
 * (XSB = 4416), token t of the tile in slot t; per super-block b at b * XSB:
 *
 *   offset           size   what
 *   256 t            256    qs (int8) of token t
 *   4096 + 16 t      16     int16 s_j = bsums[2j] + bsums[2j+1], j < 8
 *                           (the sub-block sums, |s_j| <= 32·128)
 *   4352 + 4 t       4      f32 d of token t
 *
 * Arithmetic (the specification, tn__kx16_gemm_ref): for row r, token t,
 *   acc = 0; for b = 0 .. nb-1 in order:
 *     isum_j = Σ_{i in sub-block j} q_i · x_i              (int32, exact)
 *     sumi   = Σ_j sc_j · isum_j,  summ = Σ_j m_j · s_j    (int32, exact)
 *     acc = fmaf((float)sumi,  d_w · d_x,    acc)
 *     acc = fmaf(-(float)summ, dmin_w · d_x, acc)
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

/* TN_DTYPE_Q4_KX16 for Q4_K when the running ISA has the kernel (AVX-512
 * VNNI); TN_DTYPE_COUNT otherwise. */
tn_dtype tn__kx16_dtype_for(tn_dtype wt);

/* Bytes of a 16-row group / of a whole repacked (n_out, n_in) matrix. */
size_t tn__kx16_group_bytes(int64_t n_in);
size_t tn__kx16_matrix_bytes(int64_t n_in, int64_t n_out);

/* Repacks the (n_out, n_in) Q4_K matrix src (n_in a multiple of 256) into
 * dst (tn__kx16_matrix_bytes, 64-byte aligned). Bit-exact:
 * tn__kx16_get_row gives back every row as tn_dequantize_row would. */
void tn__kx16_repack(const void *src, int64_t n_in, int64_t n_out, void *dst);

/* Row i (< n_out) of a repacked matrix, dequantized (tn_get_row). */
void tn__kx16_get_row(const void *w, int64_t n_in, int64_t i, float *out);

/* Packs token t's Q8_K blocks (n_in elements) into its slot of xp. */
void tn__kx16_xpack(const void *xq8k, int64_t n_in, int64_t t, uint8_t *xp);

/* Scratch bytes and Y = X · Wᵀ (the tn_matmul_wsize / tn_matmul contracts). */
size_t tn__kx16_wsize(int64_t n_in, int64_t n_tokens);
void tn__kx16_matmul(tn_pool *pool, const void *w, int64_t n_in, int64_t n_out, const float *x, int64_t n_tokens,
                     float *y, void *wdata);

/* An ISA's kernel: groups [0, ng) of w (gstride bytes apart) against nt
 * packed tokens (xp: tiles of 16, nb super-blocks): y[t * ystride + 16g + r]
 * for every row 16g + r < nr. */
typedef void (*tn__kx16_gemm_fn)(const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp,
                                 int64_t nt, int64_t nb, float *y, size_t ystride);

void tn__kx16_gemm_ref(const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp, int64_t nt,
                       int64_t nb, float *y, size_t ystride);
void tn__kx16_gemm_avx512(const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp, int64_t nt,
                          int64_t nb, float *y, size_t ystride);

/* The kernel of an ISA (the scalar reference for ISAs without one). */
tn__kx16_gemm_fn tn__kx16_gemm_of(int isa);

#endif /* TERN_KERN_REPACK_K_H */
