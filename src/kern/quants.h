/*
 * quants.h — internal to src/kern: the blocks of the GGUF quantization
 * formats beyond Q8_0/Q4_0 (those are in dtype.h), and one accessor per
 * format that says where element i of a block lives.
 *
 * Key idea: the accessors below ARE the bit layouts. The reference
 * dequantizers (quants.c), the scalar dot products (quants_ref.c) and the
 * scalar tails of the ISA files all read a block through them, so a layout
 * is written down exactly once; the goldens made by the independent numpy
 * implementation (scripts/make_quant_goldens.py) check it.
 *
 * Two families:
 *   - 32-element blocks (Q4_1, Q5_0, Q5_1, IQ4_NL): dot products take Q8_0
 *     activations; a block's integer products are summed exactly, then scaled
 *     by d_w·d_x, plus m_w·d_x·Σq_x for the formats with a minimum.
 *   - 256-element "K" super-blocks (Q2_K..Q6_K): 8 or 16 sub-blocks with
 *     their own small integer scales (and minimums) under one f16 d (and
 *     dmin). Dot products take Q8_K activations, whose bsums (sums of 16
 *     consecutive quants) make the minimum terms one small integer sum.
 *
 * Block layouts (little-endian, packed, no padding; sizes are static_assert'ed):
 *
 *   Q4_1  (32, 20 bytes)  0: d f16   2: m f16   4: qs u8[16]
 *         q_i = i < 16 ? qs[i] & 15 : qs[i-16] >> 4          x_i = d·q_i + m
 *   Q5_0  (32, 22 bytes)  0: d f16   2: qh u8[4] (u32 LE)   6: qs u8[16]
 *         q_i = (nibble i as Q4_1) | (bit i of qh) << 4        x_i = d·(q_i - 16)
 *   Q5_1  (32, 24 bytes)  0: d f16   2: m f16   4: qh u8[4]   8: qs u8[16]
 *         q_i as Q5_0                                          x_i = d·q_i + m
 *   IQ4_NL (32, 18 bytes) 0: d f16   2: qs u8[16]
 *         q_i as Q4_1                                          x_i = d·KVALUES[q_i]
 *
 *   Q2_K (256, 84 bytes)  0: scales u8[16]  16: qs u8[64]  80: d f16  82: dmin f16
 *         i = 128h + 32k + l (h < 2, k < 4, l < 32), sub-block j = i / 16:
 *         q_i = (qs[32h+l] >> 2k) & 3
 *         x_i = (d·(scales[j] & 15))·q_i - dmin·(scales[j] >> 4)
 *   Q3_K (256, 110 bytes) 0: hmask u8[32]  32: qs u8[64]  96: scales u8[12]  108: d f16
 *         i = 128h + 32k + l, j = i / 16:
 *         q_i = ((qs[32h+l] >> 2k) & 3) - (bit (4h+k) of hmask[l] ? 0 : 4)   in [-4, 3]
 *         s_j = 6 bits: low 4 = (scales[j % 8] >> 4·(j / 8)) & 15,
 *                       high 2 = (scales[8 + j % 4] >> 2·(j / 4)) & 3;  minus 32
 *         x_i = (d·s_j)·q_i
 *   Q4_K (256, 144 bytes) 0: d f16  2: dmin f16  4: scales u8[12]  16: qs u8[128]
 *         i = 64c + 32s + l (c < 4, s < 2), j = i / 32 = 2c + s:
 *         q_i = (qs[32c+l] >> 4s) & 15
 *         (sc_j, m_j) 6 bits each, packed in the 12 scale bytes b[]:
 *           j < 4: sc = b[j] & 63, m = b[j+4] & 63
 *           j ≥ 4: sc = (b[j+4] & 15) | (b[j-4] >> 6) << 4, m = (b[j+4] >> 4) | (b[j] >> 6) << 4
 *         x_i = (d·sc_j)·q_i - dmin·m_j
 *   Q5_K (256, 176 bytes) 0: d f16  2: dmin f16  4: scales u8[12]  16: qh u8[32]  48: qs u8[128]
 *         q_i = (Q4_K's nibble) | (bit (i / 32) of qh[i % 32]) << 4;  x_i as Q4_K
 *   Q6_K (256, 210 bytes) 0: ql u8[128]  128: qh u8[64]  192: scales i8[16]  208: d f16
 *         i = 128h + 32k + l, j = i / 16:
 *         q_i = ((ql[64h + 32(k&1) + l] >> 4(k>>1)) & 15 | ((qh[32h+l] >> 2k) & 3) << 4) - 32
 *         x_i = (d·scales[j])·q_i
 *   Q8_K (256, 292 bytes) 0: d f32  4: qs i8[256]  260: bsums i16[16] (bsums[j] = Σ qs[16j..16j+15])
 *         x_i = d·qs[i]        (activations only; never stored in a file)
 *
 * The parenthesised products are rounded to f32 first, as the reference
 * implementations do; the dequantizers reproduce them bit for bit.
 */
#ifndef TERN_KERN_QUANTS_H
#define TERN_KERN_QUANTS_H

#include "kern/dtype.h"

#define TN_QK_K 256

typedef struct tn_block_q4_1 {
    uint16_t d, m; /* f16 */
    uint8_t qs[16];
} tn_block_q4_1;
static_assert(sizeof(tn_block_q4_1) == 20, "q4_1 block is 20 bytes");

typedef struct tn_block_q5_0 {
    uint16_t d; /* f16 */
    uint8_t qh[4];
    uint8_t qs[16];
} tn_block_q5_0;
static_assert(sizeof(tn_block_q5_0) == 22, "q5_0 block is 22 bytes");

typedef struct tn_block_q5_1 {
    uint16_t d, m; /* f16 */
    uint8_t qh[4];
    uint8_t qs[16];
} tn_block_q5_1;
static_assert(sizeof(tn_block_q5_1) == 24, "q5_1 block is 24 bytes");

typedef struct tn_block_iq4_nl {
    uint16_t d; /* f16 */
    uint8_t qs[16];
} tn_block_iq4_nl;
static_assert(sizeof(tn_block_iq4_nl) == 18, "iq4_nl block is 18 bytes");

typedef struct tn_block_q2_K {
    uint8_t scales[16]; /* low 4 bits: scale, high 4: min */
    uint8_t qs[64];
    uint16_t d, dmin; /* f16 */
} tn_block_q2_K;
static_assert(sizeof(tn_block_q2_K) == 84, "q2_K block is 84 bytes");

typedef struct tn_block_q3_K {
    uint8_t hmask[32];
    uint8_t qs[64];
    uint8_t scales[12];
    uint16_t d; /* f16 */
} tn_block_q3_K;
static_assert(sizeof(tn_block_q3_K) == 110, "q3_K block is 110 bytes");

typedef struct tn_block_q4_K {
    uint16_t d, dmin; /* f16 */
    uint8_t scales[12];
    uint8_t qs[128];
} tn_block_q4_K;
static_assert(sizeof(tn_block_q4_K) == 144, "q4_K block is 144 bytes");

typedef struct tn_block_q5_K {
    uint16_t d, dmin; /* f16 */
    uint8_t scales[12];
    uint8_t qh[32];
    uint8_t qs[128];
} tn_block_q5_K;
static_assert(sizeof(tn_block_q5_K) == 176, "q5_K block is 176 bytes");

typedef struct tn_block_q6_K {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d; /* f16 */
} tn_block_q6_K;
static_assert(sizeof(tn_block_q6_K) == 210, "q6_K block is 210 bytes");

typedef struct tn_block_q8_K {
    float d;
    int8_t qs[TN_QK_K];
    int16_t bsums[TN_QK_K / 16];
} tn_block_q8_K;
static_assert(sizeof(tn_block_q8_K) == 292, "q8_K block is 292 bytes");

/* IQ4_NL's 16 non-linear levels. */
extern const int8_t tn__iq4nl_values[16];

/* --- where element i lives (the layouts above, as code) ------------------- */

static inline int tn__nib32(const uint8_t *qs, int i) { return i < 16 ? qs[i] & 15 : qs[i - 16] >> 4; }
static inline int tn__hbit32(const uint8_t *qh, int i) { return (qh[i / 8] >> (i % 8)) & 1; }

static inline int tn__q4_1_q(const tn_block_q4_1 *b, int i) { return tn__nib32(b->qs, i); }
static inline int tn__q5_0_q(const tn_block_q5_0 *b, int i) { return (tn__nib32(b->qs, i) | tn__hbit32(b->qh, i) << 4) - 16; }
static inline int tn__q5_1_q(const tn_block_q5_1 *b, int i) { return tn__nib32(b->qs, i) | tn__hbit32(b->qh, i) << 4; }
static inline int tn__iq4_nl_q(const tn_block_iq4_nl *b, int i) { return tn__iq4nl_values[tn__nib32(b->qs, i)]; }

static inline int tn__q2_K_q(const tn_block_q2_K *b, int i)
{
    const int h = i / 128, k = (i / 32) % 4, l = i % 32;
    return (b->qs[32 * h + l] >> (2 * k)) & 3;
}

static inline int tn__q3_K_q(const tn_block_q3_K *b, int i)
{
    const int h = i / 128, k = (i / 32) % 4, l = i % 32;
    const int lo = (b->qs[32 * h + l] >> (2 * k)) & 3;
    return lo - (((b->hmask[l] >> (4 * h + k)) & 1) ? 0 : 4);
}

/* Q3_K sub-block scale j in [0, 16), already minus 32: [-32, 31]. */
static inline int tn__q3_K_scale(const tn_block_q3_K *b, int j)
{
    const int lo = (b->scales[j % 8] >> (4 * (j / 8))) & 15;
    const int hi = (b->scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | hi << 4) - 32;
}

/* Q4_K/Q5_K sub-block j in [0, 8): 6-bit scale and min. */
static inline void tn__q4_K_scale_min(const uint8_t *b, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = b[j] & 63;
        *m = b[j + 4] & 63;
    } else {
        *sc = (b[j + 4] & 15) | (b[j - 4] >> 6) << 4;
        *m = (b[j + 4] >> 4) | (b[j] >> 6) << 4;
    }
}

static inline int tn__q4_K_q(const tn_block_q4_K *b, int i)
{
    const int c = i / 64, s = (i / 32) % 2, l = i % 32;
    return (b->qs[32 * c + l] >> (4 * s)) & 15;
}

static inline int tn__q5_K_q(const tn_block_q5_K *b, int i)
{
    const int c = i / 64, s = (i / 32) % 2, l = i % 32;
    return ((b->qs[32 * c + l] >> (4 * s)) & 15) | ((b->qh[l] >> (i / 32)) & 1) << 4;
}

static inline int tn__q6_K_q(const tn_block_q6_K *b, int i)
{
    const int h = i / 128, k = (i / 32) % 4, l = i % 32;
    const int lo = (b->ql[64 * h + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 15;
    const int hi = (b->qh[32 * h + l] >> (2 * k)) & 3;
    return (lo | hi << 4) - 32;
}

/* --- entry points used by dtype.c and matmul.c --------------------------- */

/* Dequantizes n elements (a multiple of the block size) of one of the
 * formats above; false (nothing written) if t is not one of them. */
bool tn__quants_dequantize_row(tn_dtype t, const void *src, float *dst, int64_t n);

/* Quantizes n elements with the reference quantizer of t (Q4_1, Q5_0, Q5_1
 * so far: llama.cpp's rounding, bit for bit); false if t has none. */
bool tn__quants_quantize_row(tn_dtype t, const float *src, void *dst, int64_t n);

/* Activations to Q8_K blocks, n a multiple of 256: per block, the value of
 * largest magnitude (sign kept: max) maps to -127 (iscale = -127/max,
 * q = roundf(iscale·x) with ties away from zero, capped at 127,
 * d = 1/iscale in f32), bsums filled. An all-zero block gets d = 0. The only Q8_K quantizer, so quantized activations never depend on
 * the ISA. */
void tn__quantize_row_q8_K(const float *x, tn_block_q8_K *y, int64_t n);

#endif /* TERN_KERN_QUANTS_H */
