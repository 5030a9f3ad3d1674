/*
 * test_dtype.c — element types: half/bfloat conversions (exhaustive where
 * the domain is small, hand-picked rounding cases, and against the CPU's
 * F16C instructions where it has them), the traits table, and the Q8_0 /
 * Q4_0 reference quantizers (hand-computed blocks and error bounds).
 */
#include "kern/dtype.h"
#include "testutil.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t rng_state = 12345u;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}
static float rnd_uniform(float lo, float hi) { return lo + (hi - lo) * (float)(rng() >> 8) / 16777216.0f; }

/* --- half precision ---------------------------------------------------------- */

static void test_fp16_roundtrip_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = tn_fp16_to_fp32((uint16_t)h);
        const uint16_t back = tn_fp32_to_fp16(f);
        const bool is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (is_nan) {
            assert_true(isnan(f));
            assert_int_equal(back & 0x8000, h & 0x8000);
            assert_int_equal(back & 0x7c00, 0x7c00);
            assert_true(back & 0x3ff);
        } else {
            assert_int_equal(back, h);
        }
    }
    /* a few exact values */
    assert_true(tn_fp16_to_fp32(0x3c00) == 1.0f);
    assert_true(tn_fp16_to_fp32(0xc000) == -2.0f);
    assert_true(tn_fp16_to_fp32(0x7bff) == 65504.0f);
    assert_true(tn_fp16_to_fp32(0x0001) == ldexpf(1.0f, -24));
    assert_true(tn_fp16_to_fp32(0x03ff) == ldexpf(1023.0f, -24));
    assert_true(tn_fp16_to_fp32(0x0400) == ldexpf(1.0f, -14));
    assert_true(isinf(tn_fp16_to_fp32(0x7c00)) && tn_fp16_to_fp32(0xfc00) < 0);
    assert_int_equal(bits(tn_fp16_to_fp32(0x8000)), 0x80000000u);
}

static void test_fp32_to_fp16_rounding(void **state)
{
    (void)state;
    static const struct {
        float f;
        uint16_t h;
    } cases[] = {
        {1.0f, 0x3c00},
        {-2.0f, 0xc000},
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {65504.0f, 0x7bff},                 /* largest half */
        {65519.99f, 0x7bff},                /* just below the rounding boundary */
        {65520.0f, 0x7c00},                 /* tie between 65504 and 65536: even is inf */
        {1e10f, 0x7c00},                    /* overflow */
        {-1e10f, 0xfc00},
        {INFINITY, 0x7c00},
        {-INFINITY, 0xfc00},
        {1.0f + 0x1p-11f, 0x3c00},          /* tie, even mantissa below */
        {1.0f + 3 * 0x1p-11f, 0x3c02},      /* tie, even mantissa above */
        {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01}, /* just above the tie */
        {0x1p-24f, 0x0001},                 /* smallest subnormal */
        {0x1p-25f, 0x0000},                 /* tie between 0 and 2^-24: even is 0 */
        {0x1p-25f + 0x1p-40f, 0x0001},      /* above the tie */
        {3 * 0x1p-25f, 0x0002},             /* tie between 1 and 2 ulps: even is 2 */
        {0x1p-14f - 0x1p-25f, 0x0400},      /* tie between largest subnormal and smallest normal */
        {0x1p-14f, 0x0400},                 /* smallest normal */
        {1e-10f, 0x0000},                   /* underflow to zero */
        {-1e-10f, 0x8000},
        {0.1f, 0x2e66},
        {3.14159265f, 0x4248},
    };
    for (size_t i = 0; i < TN_ARRAY_LEN(cases); i++) {
        if (tn_fp32_to_fp16(cases[i].f) != cases[i].h)
            fail_msg("fp16(%a) = 0x%04x, want 0x%04x", (double)cases[i].f, tn_fp32_to_fp16(cases[i].f), cases[i].h);
    }
    const uint16_t qnan = tn_fp32_to_fp16(NAN);
    assert_int_equal(qnan & 0x7c00, 0x7c00);
    assert_true(qnan & 0x3ff);
    /* a signalling-pattern NaN whose payload lives only in the low bits must
     * stay NaN, not become infinity */
    const uint16_t snan = tn_fp32_to_fp16(from_bits(0x7f800001u));
    assert_int_equal(snan & 0x7c00, 0x7c00);
    assert_true(snan & 0x3ff);
}

/* The CPU's vcvtps2ph / vcvtph2ps implement IEEE round-to-nearest-even: an
 * independent implementation to compare against. */
__attribute__((target("f16c"))) static uint16_t hw_to_fp16(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
__attribute__((target("f16c"))) static float hw_from_fp16(uint16_t h) { return _cvtsh_ss(h); }

static void test_fp16_against_f16c(void **state)
{
    (void)state;
    if (!__builtin_cpu_supports("avx2")) { /* F16C comes with every AVX2 CPU */
        skip();
        return;
    }
    for (uint32_t h = 0; h < 65536; h++) {
        const float a = tn_fp16_to_fp32((uint16_t)h), b = hw_from_fp16((uint16_t)h);
        if (isnan(b))
            assert_true(isnan(a));
        else
            assert_int_equal(bits(a), bits(b));
    }
    /* every 1999th float bit pattern: covers all exponents, both signs */
    for (uint64_t u = 0; u <= 0xffffffffu; u += 1999) {
        const float f = from_bits((uint32_t)u);
        const uint16_t a = tn_fp32_to_fp16(f), b = hw_to_fp16(f);
        if (isnan(f))
            assert_true((a & 0x7c00) == 0x7c00 && (a & 0x3ff));
        else if (a != b)
            fail_msg("fp16(%a): 0x%04x, F16C says 0x%04x", (double)f, a, b);
    }
    /* dense around the half range's interesting points */
    for (uint32_t u = 0x33000000u; u < 0x39000000u; u += 7) {
        const float f = from_bits(u);
        assert_int_equal(tn_fp32_to_fp16(f), hw_to_fp16(f));
    }
    for (uint32_t u = 0x477f0000u; u < 0x47810000u; u++) {
        const float f = from_bits(u);
        assert_int_equal(tn_fp32_to_fp16(f), hw_to_fp16(f));
    }
}

static void test_bf16_rounding(void **state)
{
    (void)state;
    static const struct {
        uint32_t f;
        uint16_t h;
    } cases[] = {
        {0x3f800000u, 0x3f80},                /* 1.0 */
        {0x3f808000u, 0x3f80},                /* tie, even below */
        {0x3f818000u, 0x3f82},                /* tie, even above */
        {0x3f808001u, 0x3f81},                /* above the tie */
        {0x3f807fffu, 0x3f80},                /* below the tie */
        {0x7f7fffffu, 0x7f80},                /* FLT_MAX rounds to infinity */
        {0x7f800000u, 0x7f80},                /* inf */
        {0xff800000u, 0xff80},                /* -inf */
        {0x80000000u, 0x8000},                /* -0 */
        {0x00000001u, 0x0000},                /* tiny subnormal to zero */
        {0x00018000u, 0x0002},                /* subnormal tie, even above */
    };
    for (size_t i = 0; i < TN_ARRAY_LEN(cases); i++) {
        if (tn_fp32_to_bf16(from_bits(cases[i].f)) != cases[i].h)
            fail_msg("bf16(0x%08x) = 0x%04x, want 0x%04x", cases[i].f, tn_fp32_to_bf16(from_bits(cases[i].f)), cases[i].h);
    }
    /* NaN stays NaN even when its payload is only in the dropped bits */
    const uint16_t n = tn_fp32_to_bf16(from_bits(0x7f800001u));
    assert_int_equal(n & 0x7f80, 0x7f80);
    assert_true(n & 0x7f);
    /* every bf16 value round-trips */
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = tn_bf16_to_fp32((uint16_t)h);
        if (isnan(f))
            assert_true(isnan(tn_bf16_to_fp32(tn_fp32_to_bf16(f))));
        else
            assert_int_equal(tn_fp32_to_bf16(f), h);
    }
}

/* --- traits ------------------------------------------------------------------ */

static void test_traits(void **state)
{
    (void)state;
    assert_null(tn_dtype_traits_of(-1));
    assert_null(tn_dtype_traits_of(4)); /* a removed GGML type */
    assert_null(tn_dtype_traits_of(TN_DTYPE_COUNT));
    assert_int_equal(tn_dtype_traits_of(TN_DTYPE_Q8_0)->type_size, sizeof(tn_block_q8_0));
    assert_int_equal(tn_dtype_traits_of(TN_DTYPE_Q4_0)->type_size, sizeof(tn_block_q4_0));
    assert_int_equal(tn_dtype_row_size(TN_DTYPE_Q4_0, 4096), 4096 / 32 * 18);
    assert_int_equal(tn_dtype_row_size(TN_DTYPE_BF16, 7), 14);
    tn_dtype t;
    assert_true(tn_dtype_from_name("Q8_0", &t) && t == TN_DTYPE_Q8_0);
    assert_true(tn_dtype_from_name("bf16", &t) && t == TN_DTYPE_BF16);
    assert_false(tn_dtype_from_name("q8", &t));
    assert_false(tn_dtype_from_name("q8_00", &t));
    float x[32] = {0};
    tn_block_q8_0 b;
    assert_int_equal(tn_quantize_row(TN_DTYPE_Q8_0, x, &b, 31), TN_ERR_INVALID);
    assert_int_equal(tn_quantize_row(TN_DTYPE_Q4_K, x, &b, 256), TN_ERR_UNSUPPORTED);
}

/* --- quantizers ---------------------------------------------------------------- */

static void test_q8_0_hand_block(void **state)
{
    (void)state;
    /* amax 127 gives d = 1 exactly, so q = roundf(x): ties go away from zero */
    float x[32] = {127.0f, -63.5f, 31.75f, 0.5f, -0.5f, 2.5f, -2.5f, 0.49f, -127.0f};
    const int8_t want[32] = {127, -64, 32, 1, -1, 3, -3, 0, -127};
    tn_block_q8_0 b;
    assert_int_equal(tn_quantize_row(TN_DTYPE_Q8_0, x, &b, 32), TN_OK);
    assert_int_equal(b.d, 0x3c00);
    assert_memory_equal(b.qs, want, 32);
    float y[32];
    assert_int_equal(tn_dequantize_row(TN_DTYPE_Q8_0, &b, y, 32), TN_OK);
    for (int j = 0; j < 32; j++)
        assert_true(y[j] == (float)want[j]);

    /* all zeros: d = 0, every q = 0 */
    memset(x, 0, sizeof(x));
    assert_int_equal(tn_quantize_row(TN_DTYPE_Q8_0, x, &b, 32), TN_OK);
    assert_int_equal(b.d, 0);
    for (int j = 0; j < 32; j++)
        assert_int_equal(b.qs[j], 0);
}

static void test_q4_0_hand_block(void **state)
{
    (void)state;
    /* the largest magnitude (-8, negative) maps to q = 0: d = -8 / -8 = 1 */
    float x[32] = {0};
    x[0] = -8.0f, x[1] = 7.0f, x[2] = 3.5f, x[3] = -0.5f, x[4] = 0.5f, x[5] = 1.49f;
    x[16] = 6.6f, x[17] = -7.6f;
    tn_block_q4_0 b;
    assert_int_equal(tn_quantize_row(TN_DTYPE_Q4_0, x, &b, 32), TN_OK);
    assert_int_equal(b.d, 0x3c00);
    /* q = min(15, (int)(x + 8.5)) */
    assert_int_equal(b.qs[0], 0 | (15 << 4));  /* -8 -> 0;  6.6 -> 15 */
    assert_int_equal(b.qs[1], 15 | (0 << 4));  /*  7 -> 15; -7.6 -> 0 */
    assert_int_equal(b.qs[2], 12 | (8 << 4));  /* 3.5 -> 12; 0 -> 8 */
    assert_int_equal(b.qs[3], 8 | (8 << 4));   /* -0.5 -> (int)8.0 = 8 */
    assert_int_equal(b.qs[4], 9 | (8 << 4));   /* 0.5 -> 9 */
    assert_int_equal(b.qs[5], 9 | (8 << 4));   /* 1.49 -> (int)9.99 = 9 */
    float y[32];
    assert_int_equal(tn_dequantize_row(TN_DTYPE_Q4_0, &b, y, 32), TN_OK);
    assert_true(y[0] == -8.0f && y[1] == 7.0f && y[2] == 4.0f && y[3] == 0.0f && y[16] == 7.0f && y[17] == -8.0f);

    /* a positive maximum gives a negative scale; the opposite extreme clamps */
    memset(x, 0, sizeof(x));
    x[0] = 8.0f, x[1] = -8.0f;
    assert_int_equal(tn_quantize_row(TN_DTYPE_Q4_0, x, &b, 32), TN_OK);
    assert_int_equal(b.d, 0xbc00); /* -1 */
    assert_int_equal(tn_dequantize_row(TN_DTYPE_Q4_0, &b, y, 32), TN_OK);
    assert_true(y[0] == 8.0f);
    assert_true(y[1] == -7.0f); /* 16 clamped to 15: -1 * (15 - 8) */
}

/* Quantize -> dequantize error of every element against the bound its scale
 * d allows: half a step (Q8_0), one step (Q4_0, whose opposite extreme can be
 * clamped), plus what rounding d to f16 costs over 127 / 8 steps; the f16
 * scale itself is within half an f16 ulp of d. */
static void test_quant_error_bounds(void **state)
{
    (void)state;
    enum { N = 32 * 256 };
    static float x[N], y[N];
    static tn_block_q8_0 q8[N / 32];
    static tn_block_q4_0 q4[N / 32];
    for (int i = 0; i < N; i++) {
        const float scale = ldexpf(1.0f, (int)(rng() % 20) - 10); /* 2^-10 .. 2^9 per element */
        x[i] = rnd_uniform(-1.0f, 1.0f) * scale;
    }
    double sq8 = 0, sq4 = 0, sx = 0;

    assert_int_equal(tn_quantize_row(TN_DTYPE_Q8_0, x, q8, N), TN_OK);
    assert_int_equal(tn_dequantize_row(TN_DTYPE_Q8_0, q8, y, N), TN_OK);
    for (int b = 0; b < N / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        const double d = amax / 127.0, dh = tn_fp16_to_fp32(q8[b].d);
        assert_true(fabs(d - dh) <= d * 0x1p-11);
        for (int j = 0; j < 32; j++) {
            const double e = fabs((double)x[b * 32 + j] - y[b * 32 + j]);
            assert_true(e <= d * 0.5 * (1 + 1e-5) + 127 * fabs(d - dh));
            sq8 += e * e / (d * d);
        }
    }
    assert_int_equal(tn_quantize_row(TN_DTYPE_Q4_0, x, q4, N), TN_OK);
    assert_int_equal(tn_dequantize_row(TN_DTYPE_Q4_0, q4, y, N), TN_OK);
    for (int b = 0; b < N / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        const double d = amax / 8.0, dh = fabs(tn_fp16_to_fp32(q4[b].d));
        assert_true(fabs(d - dh) <= d * 0x1p-11);
        for (int j = 0; j < 32; j++) {
            const double e = fabs((double)x[b * 32 + j] - y[b * 32 + j]);
            assert_true(e <= d * (1 + 1e-5) + 8 * fabs(d - dh));
            sq4 += e * e / (d * d);
            sx += 1;
        }
    }
    /* mean squared error in steps ~ 1/12 for uniform rounding error */
    assert_true(sq8 / sx < 0.1);
    assert_true(sq4 / sx < 0.1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_roundtrip_all),
        cmocka_unit_test(test_fp32_to_fp16_rounding),
        cmocka_unit_test(test_fp16_against_f16c),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_traits),
        cmocka_unit_test(test_q8_0_hand_block),
        cmocka_unit_test(test_q4_0_hand_block),
        cmocka_unit_test(test_quant_error_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
