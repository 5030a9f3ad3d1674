/*
 * dtype.c — the type traits table, half-precision conversions and the
 * reference quantizers.
 *
 * The quantizers round exactly as llama.cpp's reference ones
 * (quantize_row_*_ref) so a file quantized here and there agrees bit for
 * bit; they are the specification the faster kernels are checked against.
 */
#include "kern/dtype.h"
#include "kern/quants.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>

static const tn_dtype_traits traits[TN_DTYPE_COUNT] = {
    [TN_DTYPE_F32] = {"f32", 1, 4, true},
    [TN_DTYPE_F16] = {"f16", 1, 2, true},
    [TN_DTYPE_Q4_0] = {"q4_0", 32, 18, true},
    [TN_DTYPE_Q4_1] = {"q4_1", 32, 20, true},
    [TN_DTYPE_Q5_0] = {"q5_0", 32, 22, true},
    [TN_DTYPE_Q5_1] = {"q5_1", 32, 24, true},
    [TN_DTYPE_Q8_0] = {"q8_0", 32, 34, true},
    [TN_DTYPE_Q8_1] = {"q8_1", 32, 36, false},
    [TN_DTYPE_Q2_K] = {"q2_k", 256, 84, true},
    [TN_DTYPE_Q3_K] = {"q3_k", 256, 110, true},
    [TN_DTYPE_Q4_K] = {"q4_k", 256, 144, true},
    [TN_DTYPE_Q5_K] = {"q5_k", 256, 176, true},
    [TN_DTYPE_Q6_K] = {"q6_k", 256, 210, true},
    [TN_DTYPE_Q8_K] = {"q8_k", 256, 292, false},
    [TN_DTYPE_IQ4_NL] = {"iq4_nl", 32, 18, true},
    [TN_DTYPE_I8] = {"i8", 1, 1, false},
    [TN_DTYPE_I16] = {"i16", 1, 2, false},
    [TN_DTYPE_I32] = {"i32", 1, 4, false},
    [TN_DTYPE_I64] = {"i64", 1, 8, false},
    [TN_DTYPE_F64] = {"f64", 1, 8, false},
    [TN_DTYPE_BF16] = {"bf16", 1, 2, true},
    /* Bytes, as the file counts them (ne[0] = 4 + n_in per row); only the
     * model loader and tn_matmul know the layout (kern/w8a8.h). */
    [TN_DTYPE_W8A8] = {"w8a8", 1, 1, false},
    [TN_DTYPE_W8A8_HAD] = {"w8a8_had", 1, 1, false},
};

const tn_dtype_traits *tn_dtype_traits_of(int type)
{
    if (type < 0 || type >= TN_DTYPE_COUNT || traits[type].name == NULL)
        return NULL;
    return &traits[type];
}

bool tn_dtype_from_name(const char *name, tn_dtype *out)
{
    for (int t = 0; t < TN_DTYPE_COUNT; t++) {
        if (!traits[t].name)
            continue;
        const char *a = traits[t].name, *b = name;
        while (*a && *b && *a == tolower((unsigned char)*b))
            a++, b++;
        if (!*a && !*b) {
            *out = (tn_dtype)t;
            return true;
        }
    }
    return false;
}

/* --- half precision ------------------------------------------------------ */

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float tn_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) /* inf or nan */
        return bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return bits_f32(sign);
        /* subnormal: man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t tn_fp32_to_fp16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t abs = u & 0x7fffffffu;
    if (abs >= 0x7f800000u) /* inf or nan */
        return sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0);
    if (abs >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return sign | 0x7c00;
    if (abs < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        /* value * 2^24 rounded to nearest even gives the mantissa */
        float v = bits_f32(abs) * 16777216.0f;
        float r = nearbyintf(v); /* default rounding mode: nearest even */
        return sign | (uint16_t)r;
    }
    /* normal: rebias the exponent and round the 13 dropped bits to nearest even */
    uint32_t mant_odd = (abs >> 13) & 1;
    abs += 0xfffu + mant_odd;
    abs -= (uint32_t)(127 - 15) << 23;
    return sign | (uint16_t)(abs >> 13);
}

uint16_t tn_fp32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* nan: keep it quiet */
        return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

/* --- reference quantizers ------------------------------------------------ */

static void quantize_q8_0(const float *x, tn_block_q8_0 *y, int64_t n)
{
    for (int64_t b = 0; b < n / TN_QK8_0; b++, x += TN_QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < TN_QK8_0; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = tn_fp32_to_fp16(d);
        for (int j = 0; j < TN_QK8_0; j++)
            y[b].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void quantize_q4_0(const float *x, tn_block_q4_0 *y, int64_t n)
{
    for (int64_t b = 0; b < n / TN_QK4_0; b++, x += TN_QK4_0) {
        /* the scale maps the value of largest magnitude, sign kept, to -8 */
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < TN_QK4_0; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8.0f;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = tn_fp32_to_fp16(d);
        for (int j = 0; j < TN_QK4_0 / 2; j++) {
            const int lo = (int)TN_MIN(15.0f, x[j] * id + 8.5f);
            const int hi = (int)TN_MIN(15.0f, x[j + TN_QK4_0 / 2] * id + 8.5f);
            y[b].qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

static bool blocks_ok(tn_dtype t, int64_t n)
{
    const tn_dtype_traits *tr = tn_dtype_traits_of(t);
    return tr && n >= 0 && n % tr->block_size == 0;
}

tn_status tn_quantize_row(tn_dtype t, const float *src, void *dst, int64_t n)
{
    if (!blocks_ok(t, n))
        return tn__err(TN_ERR_INVALID, "quantize: %" PRId64 " elements do not fill whole blocks of type %d", n, (int)t);
    switch (t) {
    case TN_DTYPE_F32:
        memcpy(dst, src, (size_t)n * 4);
        return TN_OK;
    case TN_DTYPE_F16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = tn_fp32_to_fp16(src[i]);
        return TN_OK;
    case TN_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = tn_fp32_to_bf16(src[i]);
        return TN_OK;
    case TN_DTYPE_Q8_0:
        quantize_q8_0(src, dst, n);
        return TN_OK;
    case TN_DTYPE_Q4_0:
        quantize_q4_0(src, dst, n);
        return TN_OK;
    default:
        if (tn__quants_quantize_row(t, src, dst, n))
            return TN_OK;
        return tn__err(TN_ERR_UNSUPPORTED, "quantize: type %s is not supported yet", tn_dtype_traits_of(t)->name);
    }
}

tn_status tn_dequantize_row(tn_dtype t, const void *src, float *dst, int64_t n)
{
    if (!blocks_ok(t, n))
        return tn__err(TN_ERR_INVALID, "dequantize: %" PRId64 " elements do not fill whole blocks of type %d", n, (int)t);
    switch (t) {
    case TN_DTYPE_F32:
        memcpy(dst, src, (size_t)n * 4);
        return TN_OK;
    case TN_DTYPE_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = tn_fp16_to_fp32(((const uint16_t *)src)[i]);
        return TN_OK;
    case TN_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = tn_bf16_to_fp32(((const uint16_t *)src)[i]);
        return TN_OK;
    case TN_DTYPE_Q8_0: {
        const tn_block_q8_0 *b = src;
        for (int64_t i = 0; i < n / TN_QK8_0; i++) {
            const float d = tn_fp16_to_fp32(b[i].d);
            for (int j = 0; j < TN_QK8_0; j++)
                dst[i * TN_QK8_0 + j] = d * (float)b[i].qs[j];
        }
        return TN_OK;
    }
    case TN_DTYPE_Q4_0: {
        const tn_block_q4_0 *b = src;
        for (int64_t i = 0; i < n / TN_QK4_0; i++) {
            const float d = tn_fp16_to_fp32(b[i].d);
            for (int j = 0; j < TN_QK4_0 / 2; j++) {
                dst[i * TN_QK4_0 + j] = d * (float)((b[i].qs[j] & 15) - 8);
                dst[i * TN_QK4_0 + j + TN_QK4_0 / 2] = d * (float)((b[i].qs[j] >> 4) - 8);
            }
        }
        return TN_OK;
    }
    default:
        if (tn__quants_dequantize_row(t, src, dst, n))
            return TN_OK;
        return tn__err(TN_ERR_UNSUPPORTED, "dequantize: type %s is not supported yet", tn_dtype_traits_of(t)->name);
    }
}
