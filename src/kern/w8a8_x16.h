/*
 * w8a8_x16.h — W8A8 matrices (kern/w8a8.h) repacked into groups of 16 rows
 * (internal dtypes TN_DTYPE_W8A8X16, TN_DTYPE_W8A8_HADX16), for the VNNI
 * kernel whose vector lane is a weight row: the W8A8 sibling of the Q4_0 /
 * Q8_0 x16 layout (kern/repack.h, which routes the two dtypes here).
 *
 * Key idea: W8A8 has no blocks. A (row, token) product is ONE exact int32
 * sum over the whole row and one f32 epilogue, so a 16-row group is just
 * the rows' bytes interleaved four at a time, and the kernel's inner loop
 * is a single vpdpbusd per 64 weight bytes and token.
 *
 * Layout. n_out rows are cut into ceil(n_out / 16) groups of 16 (the last
 * padded with zero rows); K = ceil(n_in / 4). Group g starts at
 * g * GSTRIDE, GSTRIDE = 64 K + 64 (tn__w8a8x16_group_bytes):
 *
 *   offset     size   what
 *   64 k       64     vector k: bytes 4r..4r+3 = row r's q[4k..4k+3] XOR 0x80
 *                     (q + 128 as unsigned bytes; columns past n_in hold
 *                     0x80, i.e. q = 0)
 *   64 K       64     the 16 f32 row scales d_w, row r at 4r
 *
 * Packed activations (the scratch of tn__w8a8x16_matmul): each token's row
 * quantized exactly as tn_matmul quantizes for W8A8 (signed q, scale d_x;
 * W8A8_HAD rotates the row first), then stored in tiles of 16 tokens with
 * the tokens of a tile interleaved per dword, so one pointer and constant
 * offsets reach all of them:
 *
 *   tile i at i * K * ks, ks = 4 * min(16, n_tokens) bytes per step:
 *   k * ks + 4 t   4      token 16 i + t's q[4k..4k+3] (zeros past n_in)
 *
 * plus, per token, bias = -128 * Σ q (int32) and d_x (f32) in two arrays.
 * One token (decode) is thus its plain row, padded to a multiple of 4.
 *
 * Arithmetic (the specification, tn__w8a8x16_gemm_ref): for row r, token t
 *   isum = bias_t + Σ_j (q_w[j] + 128) · q_x[j]     = Σ_j q_w[j] · q_x[j]
 *   y    = (float)isum * (d_w[r] * d_x[t])
 * which is the scalar W8A8 kernel's expression with the same exact integer,
 * so every ISA, tile, token count and thread count gives the bits of
 * tn_matmul on the file's W8A8 layout.
 */
#ifndef TERN_KERN_W8A8_X16_H
#define TERN_KERN_W8A8_X16_H

#include "base/pool.h"
#include "kern/dtype.h"

/* True for TN_DTYPE_W8A8X16 and TN_DTYPE_W8A8_HADX16. */
static inline bool tn__dtype_is_w8a8x16(tn_dtype t) { return t == TN_DTYPE_W8A8X16 || t == TN_DTYPE_W8A8_HADX16; }

/* Bytes of one 16-row group (a whole matrix: tn__x16_matrix_bytes). */
size_t tn__w8a8x16_group_bytes(int64_t n_in);

/* Repacks the (n_out, n_in) W8A8 rows at src (TN_W8A8_ROW(n_in) bytes
 * each, either W8A8 dtype) into dst (tn__x16_matrix_bytes, 64-byte
 * aligned). Lossless: tn__w8a8x16_get_row gives back every row. */
void tn__w8a8x16_repack(const void *src, int64_t n_in, int64_t n_out, void *dst);

/* Row i (< n_out) of a repacked matrix, dequantized (tn_get_row; the same
 * floats as tn_w8a8_dequantize_row on the original row). */
void tn__w8a8x16_get_row(const void *w, int64_t n_in, int64_t i, float *out);

/* Scratch bytes and the product Y = X · Wᵀ (the tn_matmul_wsize /
 * tn_matmul contracts); xt: a W8A8 x16 dtype. */
size_t tn__w8a8x16_wsize(tn_dtype xt, int64_t n_in, int64_t n_tokens);
void tn__w8a8x16_matmul(tn_pool *pool, const void *w, tn_dtype xt, int64_t n_in, int64_t n_out, const float *x,
                        int64_t n_tokens, float *y, void *wdata);

/* An ISA's kernel: groups [0, ng) of w (gstride bytes apart, K steps)
 * against nt packed tokens (xp: tiles of 16 with ks bytes per step; bias,
 * dx per token): y[t * ystride + 16 g + r] for every row 16 g + r < nr. */
typedef void (*tn__w8a8x16_gemm_fn)(const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp,
                                    size_t ks, const int32_t *bias, const float *dx, int64_t nt, int64_t K, float *y,
                                    size_t ystride);
void tn__w8a8x16_gemm_ref(const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp, size_t ks,
                          const int32_t *bias, const float *dx, int64_t nt, int64_t K, float *y, size_t ystride);
void tn__w8a8x16_gemm_avx512(const uint8_t *w, size_t gstride, int64_t ng, int64_t nr, const uint8_t *xp, size_t ks,
                             const int32_t *bias, const float *dx, int64_t nt, int64_t K, float *y, size_t ystride);

/* The kernel of an ISA (the scalar reference for ISAs without one). */
tn__w8a8x16_gemm_fn tn__w8a8x16_gemm_of(int isa);

#endif /* TERN_KERN_W8A8_X16_H */
