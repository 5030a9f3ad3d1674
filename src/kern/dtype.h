/*
 * dtype — tensor element types, quant blocks and conversions.
 *
 * Type codes are GGML's, so a GGUF tensor's type field maps directly. A
 * quantized type stores rows as a sequence of fixed-size blocks; a row of n
 * elements (n a multiple of the block size) takes n / block_size * type_size
 * bytes.
 *
 * Block layouts (little-endian, packed):
 *
 *   Q8_0  (32 values, 34 bytes)   offset 0: d  f16 scale
 *                                 offset 2: qs int8[32]      x[i] = d * qs[i]
 *   Q4_0  (32 values, 18 bytes)   offset 0: d  f16 scale
 *                                 offset 2: qs uint8[16]     x[i]    = d * ((qs[i] & 15) - 8)
 *                                                            x[i+16] = d * ((qs[i] >> 4) - 8)
 */
#ifndef TERN_KERN_DTYPE_H
#define TERN_KERN_DTYPE_H

#include "base/base.h"

#include <assert.h>
#include <string.h>

typedef enum tn_dtype {
    TN_DTYPE_F32 = 0,
    TN_DTYPE_F16 = 1,
    TN_DTYPE_Q4_0 = 2,
    TN_DTYPE_Q4_1 = 3,
    TN_DTYPE_Q5_0 = 6,
    TN_DTYPE_Q5_1 = 7,
    TN_DTYPE_Q8_0 = 8,
    TN_DTYPE_Q8_1 = 9,
    TN_DTYPE_Q2_K = 10,
    TN_DTYPE_Q3_K = 11,
    TN_DTYPE_Q4_K = 12,
    TN_DTYPE_Q5_K = 13,
    TN_DTYPE_Q6_K = 14,
    TN_DTYPE_Q8_K = 15,
    TN_DTYPE_IQ4_NL = 20,
    TN_DTYPE_I8 = 24,
    TN_DTYPE_I16 = 25,
    TN_DTYPE_I32 = 26,
    TN_DTYPE_I64 = 27,
    TN_DTYPE_F64 = 28,
    TN_DTYPE_BF16 = 30,
    TN_DTYPE_W8A8 = 64,   /* tern's own, not GGML's: int8 rows with an f32 scale each (kern/w8a8.h) */
    TN_DTYPE_W8A8_HAD = 65, /* tern's own: W8A8 of W·H, its input rotated by H at run time (kern/hadamard.h) */
    TN_DTYPE_COUNT = 66,
    /* tern's internal layouts, never in a file and without traits: Q4_0 /
     * Q8_0 matrices repacked at load in groups of 16 rows (kern/repack.h),
     * Q4_K and Q6_K likewise (kern/repack_k.h) */
    TN_DTYPE_Q4_0X16 = 67,
    TN_DTYPE_Q8_0X16 = 68,
    TN_DTYPE_Q4_KX16 = 69,
    TN_DTYPE_Q6_KX16 = 70,
    /* W8A8 / W8A8_HAD matrices repacked at load in groups of 16 rows (kern/w8a8_x16.h) */
    TN_DTYPE_W8A8X16 = 71,
    TN_DTYPE_W8A8_HADX16 = 72
} tn_dtype;

typedef struct tn_dtype_traits {
    const char *name;   /* "f32", "q4_0", ... (llama.cpp's spelling, lower case) */
    int block_size;     /* elements per block (1 for plain types) */
    size_t type_size;   /* bytes per block */
    bool computable;    /* tern has dot-product kernels for weights of this type */
} tn_dtype_traits;

/* Traits of a type code, or NULL if the code is not a known GGML type
 * (codes are checked against the file; never index blindly). */
const tn_dtype_traits *tn_dtype_traits_of(int type);

/* Parses a type name ("f16", "Q8_0" — case-insensitive); false if unknown. */
bool tn_dtype_from_name(const char *name, tn_dtype *out);

/* Bytes of a row of n elements; n must be a multiple of the block size. */
static inline size_t tn_dtype_row_size(tn_dtype t, int64_t n)
{
    const tn_dtype_traits *tr = tn_dtype_traits_of(t);
    return (size_t)(n / tr->block_size) * tr->type_size;
}

#define TN_QK8_0 32
#define TN_QK4_0 32

typedef struct tn_block_q8_0 {
    uint16_t d;              /* f16 */
    int8_t qs[TN_QK8_0];
} tn_block_q8_0;
static_assert(sizeof(tn_block_q8_0) == 34, "q8_0 block is 34 bytes");

typedef struct tn_block_q4_0 {
    uint16_t d;              /* f16 */
    uint8_t qs[TN_QK4_0 / 2];
} tn_block_q4_0;
static_assert(sizeof(tn_block_q4_0) == 18, "q4_0 block is 18 bytes");

/* --- scalar conversions (exact IEEE semantics, round to nearest even) --- */
float tn_fp16_to_fp32(uint16_t h);
uint16_t tn_fp32_to_fp16(float f);
static inline float tn_bf16_to_fp32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
uint16_t tn_fp32_to_bf16(float f);

/* Quantizes / dequantizes one row of n elements (n a multiple of the block
 * size). Dequantization: every computable type and Q8_K (layouts of the
 * others in quants.h). Quantization: F32, F16, BF16, Q8_0, Q4_0, Q4_1,
 * Q5_0, Q5_1 and Q8_K; returns TN_ERR_UNSUPPORTED for others. Rounding follows
 * llama.cpp's reference quantizers so files agree bit for bit. */
tn_status tn_quantize_row(tn_dtype t, const float *src, void *dst, int64_t n) TN_MUST_CHECK;
tn_status tn_dequantize_row(tn_dtype t, const void *src, float *dst, int64_t n) TN_MUST_CHECK;

#endif /* TERN_KERN_DTYPE_H */
