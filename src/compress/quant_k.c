/*
 * quant_k.c — fitted weight quantizers: Q2_K … Q6_K, IQ4_NL, and the
 * importance-weighted Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 (see quant_k.h).
 *
 * HOW IT WORKS
 *   A format stores x_i ≈ s·q_i + b with small integers q_i in a fixed range
 *   and, per group of elements, a scale s (and for the "minimum" formats an
 *   offset b = −m, m ≥ 0 for the K-quants). For fixed integers the best s
 *   and b are a weighted least-squares solution in closed form; the hard
 *   part is choosing the integers. fit_sym / fit_asym try a grid of 21
 *   inverse scales around the one that maps the range onto the integer
 *   range exactly (±20 %, or ±1 integer step), round every element with each, solve for
 *   (s, b), and keep the candidate with the smallest weighted error; then
 *   they alternate "round with the current scale, refit the scale" twice.
 *
 *   A K super-block (256 elements) has 8 or 16 sub-blocks, each with its own
 *   small integer scale (and minimum) under one f16 d (and dmin):
 *     1. each sub-block is fitted on its own (float s_j, m_j);
 *     2. the s_j are fitted as integers times d with the same searches, each
 *        weighted by its sub-block's total weight (an error in a heavy
 *        sub-block costs more), and likewise the m_j times dmin;
 *     3. d and dmin are rounded to f16, the element integers re-rounded
 *        against the scales as they will be read back, and each sub-block's
 *        integer scale (and minimum) moved by ±1 where that lowers the
 *        sub-block's own error (step 2 fitted the scales to the float
 *        s_j, not to the error: on a trained model this took Q4_K's
 *        relative RMSE from 6.93 % to 6.77 %, below llama-quantize's 6.89 %);
 *     4. with all integers fixed, (d, dmin) are refitted by least squares
 *        over the whole super-block, rounded to f16, step 3 repeated, and
 *        the result kept only while the weighted error goes down.
 *   IQ4_NL has one f16 scale per 32 values on a non-uniform 16-level grid;
 *   the same search applies with "round" meaning "nearest grid level".
 *
 *   The 32-element types with an importance matrix (Q8_0, Q4_0, Q5_0, Q4_1,
 *   Q5_1, and IQ4_NL) store one f16 d (and m): after the fit, the better of
 *   its (d, m) and llama.cpp's plain rounding's is the start of a descent
 *   on the f16 lattice (d and m one f16 step either way, elements re-rounded
 *   to the nearest level, while the weighted error falls). So each block is
 *   no worse by its weights than the unweighted rounding, and locally
 *   optimal in what is actually stored (the fitted float scale, rounded to
 *   f16, is often a step or two off). Without an
 *   importance matrix IQ4_NL skips the descent (earlier files stay
 *   byte-identical) and the other five are the reference rounding.
 *
 * EDGE CASES
 *   An all-zero (or all-equal) group gives s = 0 (and the offset), no NaN.
 *   Weights: w_i = imp_i·√(σ² + x_i²) (imp_i = 1 without an importance
 *   matrix); imp_i gets 10⁻⁶ of the group's mean added so columns never seen
 *   during calibration still count a little, and a group of zero weight falls
 *   back to imp_i = 1.
 *
 * LIMITATIONS
 *   Not bit-identical to llama-quantize for these types (its searches differ
 *   in step counts and weights); the errors are compared in
 *   docs/quantization.md. Scalar code: a 1.1B model takes minutes.
 */
#include "compress/quant_k.h"

#include "kern/quants.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define N_GRID 10 /* the searches try 2·N_GRID + 1 inverse scales */

static inline int round_clamp(float v, int lo, int hi)
{
    if (!(v > (float)lo)) /* also catches NaN */
        return lo;
    if (v >= (float)hi)
        return hi;
    return (int)lrintf(v);
}
static inline float f16_round(float v) { return tn_fp16_to_fp32(tn_fp32_to_fp16(v)); }

/* --- the two fits -------------------------------------------------------------- */

/* Symmetric: x_i ≈ s·q_i, q_i in [qlo, qhi]. Writes q, returns s (0 for an
 * all-zero group). The value of largest magnitude is mapped near the wider
 * end of the range (qlo when |qlo| > qhi), as signed s allows. */
static float fit_sym(int n, int qlo, int qhi, const float *x, const float *w, int *q)
{
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < 1e-30f) {
        for (int i = 0; i < n; i++)
            q[i] = 0;
        return 0.0f;
    }
    const float wide = (float)(-qlo > qhi ? qlo : qhi); /* the end with more room */
    double best = -1.0;
    float best_inv = wide / max;
    for (int k = -N_GRID; k <= N_GRID; k++) {
        const float inv = wide * (1.0f + 0.02f * (float)k) / max;
        double sxq = 0, sqq = 0;
        for (int i = 0; i < n; i++) {
            const int l = round_clamp(inv * x[i], qlo, qhi);
            sxq += (double)w[i] * x[i] * l;
            sqq += (double)w[i] * l * l;
        }
        if (sqq > 0 && sxq * sxq / sqq > best) {
            best = sxq * sxq / sqq;
            best_inv = inv;
        }
    }
    /* alternate: round with the best scale, refit it */
    float s = 1.0f / best_inv;
    for (int it = 0; it < 3; it++) {
        double sxq = 0, sqq = 0;
        for (int i = 0; i < n; i++) {
            const int l = round_clamp(x[i] / s, qlo, qhi);
            sxq += (double)w[i] * x[i] * l;
            sqq += (double)w[i] * l * l;
        }
        if (!(sqq > 0) || sxq * sxq / sqq < best * (1 - 1e-12))
            break;
        best = sxq * sxq / sqq;
        s = (float)(sxq / sqq);
    }
    for (int i = 0; i < n; i++)
        q[i] = round_clamp(x[i] / s, qlo, qhi);
    return s;
}

/* Weighted error of x_i ≈ s·q_i + b. */
static double err_affine(int n, const float *x, const float *w, const int *q, float s, float b)
{
    double e = 0;
    for (int i = 0; i < n; i++) {
        const double d = (double)s * q[i] + b - x[i];
        e += w[i] * d * d;
    }
    return e;
}

/* Least-squares (s, b) for fixed q; b clamped to ≤ 0 when b_nonpos. */
static void solve_affine(int n, const float *x, const float *w, const int *q, bool b_nonpos, float *s, float *b)
{
    double W = 0, Sq = 0, Sqq = 0, Sx = 0, Sxq = 0;
    for (int i = 0; i < n; i++) {
        W += w[i];
        Sq += (double)w[i] * q[i];
        Sqq += (double)w[i] * q[i] * q[i];
        Sx += (double)w[i] * x[i];
        Sxq += (double)w[i] * x[i] * q[i];
    }
    const double det = W * Sqq - Sq * Sq;
    double ss, bb;
    if (det > 1e-30 * W * Sqq) {
        ss = (W * Sxq - Sq * Sx) / det;
        bb = (Sqq * Sx - Sq * Sxq) / det;
    } else { /* every q equal: only the offset is determined */
        ss = 0;
        bb = W > 0 ? Sx / W : 0;
    }
    if (b_nonpos && bb > 0) {
        bb = 0;
        ss = Sqq > 0 ? Sxq / Sqq : 0;
    }
    *s = (float)ss;
    *b = (float)bb;
}

/* Affine: x_i ≈ s·q_i + b, q_i in [0, qmax], s ≥ 0; with b_nonpos, b ≤ 0
 * (the K-quants store m = −b ≥ 0). Writes q, returns s, *b_out = b. */
static float fit_asym(int n, int qmax, const float *x, const float *w, bool b_nonpos, int *q, float *b_out)
{
    float min = x[0], max = x[0];
    for (int i = 1; i < n; i++) {
        min = fminf(min, x[i]);
        max = fmaxf(max, x[i]);
    }
    if (b_nonpos && min > 0)
        min = 0;
    if (!(max - min > 1e-30f)) {
        for (int i = 0; i < n; i++)
            q[i] = 0;
        *b_out = min;
        return 0.0f;
    }
    int tq[256];
    double best = INFINITY;
    float best_s = (max - min) / (float)qmax, best_b = min;
    for (int i = 0; i < n; i++)
        q[i] = round_clamp((x[i] - min) / best_s, 0, qmax);
    best = err_affine(n, x, w, q, best_s, best_b);
    for (int k = -N_GRID; k <= N_GRID; k++) {
        const float inv = ((float)qmax + 0.1f * (float)k) / (max - min);
        for (int i = 0; i < n; i++)
            tq[i] = round_clamp((x[i] - min) * inv, 0, qmax);
        float s, b;
        solve_affine(n, x, w, tq, b_nonpos, &s, &b);
        const double e = err_affine(n, x, w, tq, s, b);
        if (e < best) {
            best = e;
            best_s = s;
            best_b = b;
            memcpy(q, tq, (size_t)n * sizeof *q);
        }
    }
    for (int it = 0; it < 2 && best_s > 0; it++) {
        for (int i = 0; i < n; i++)
            tq[i] = round_clamp((x[i] - best_b) / best_s, 0, qmax);
        float s, b;
        solve_affine(n, x, w, tq, b_nonpos, &s, &b);
        const double e = err_affine(n, x, w, tq, s, b);
        if (!(e < best))
            break;
        best = e;
        best_s = s;
        best_b = b;
        memcpy(q, tq, (size_t)n * sizeof *q);
    }
    if (best_s < 0) { /* can only happen for pathological weights: keep a valid range */
        best_s = (max - min) / (float)qmax;
        best_b = min;
        for (int i = 0; i < n; i++)
            q[i] = round_clamp((x[i] - min) / best_s, 0, qmax);
    }
    *b_out = best_b;
    return best_s;
}

/* Unsigned scales: v_j ≈ d·l_j, l_j in [0, lmax] (v_j ≥ 0). Returns d. */
static float fit_unsigned(int n, int lmax, const float *v, const float *w, int *l)
{
    float max = 0.0f;
    for (int i = 0; i < n; i++)
        max = fmaxf(max, v[i]);
    if (!(max > 1e-30f)) {
        for (int i = 0; i < n; i++)
            l[i] = 0;
        return 0.0f;
    }
    double best = -1;
    float best_inv = (float)lmax / max;
    for (int k = -N_GRID; k <= N_GRID; k++) {
        const float inv = ((float)lmax + 0.1f * (float)k) / max;
        double svl = 0, sll = 0;
        for (int i = 0; i < n; i++) {
            const int q = round_clamp(inv * v[i], 0, lmax);
            svl += (double)w[i] * v[i] * q;
            sll += (double)w[i] * q * q;
        }
        if (sll > 0 && svl * svl / sll > best) {
            best = svl * svl / sll;
            best_inv = inv;
        }
    }
    double svl = 0, sll = 0;
    for (int i = 0; i < n; i++) {
        l[i] = round_clamp(best_inv * v[i], 0, lmax);
        svl += (double)w[i] * v[i] * l[i];
        sll += (double)w[i] * l[i] * l[i];
    }
    return sll > 0 ? (float)(svl / sll) : 0.0f;
}

/* --- weights ------------------------------------------------------------------ */

/* w_i = imp_i·√(σ² + x_i²), σ² = 2·mean(x²) over the n elements. */
static void make_weights(int n, const float *x, const float *imp, float *w)
{
    double sx2 = 0;
    for (int i = 0; i < n; i++)
        sx2 += (double)x[i] * x[i];
    const float sigma2 = (float)(2.0 * sx2 / n);
    double mimp = 0;
    if (imp) {
        for (int i = 0; i < n; i++)
            mimp += imp[i];
        mimp /= n;
    }
    const bool use_imp = imp && mimp > 0 && isfinite(mimp);
    for (int i = 0; i < n; i++) {
        const float a = use_imp ? imp[i] + (float)(1e-6 * mimp) : 1.0f;
        w[i] = a * sqrtf(sigma2 + x[i] * x[i]);
        if (!(w[i] > 0))
            w[i] = 1e-30f;
    }
}

/* --- K super-blocks -------------------------------------------------------------- */

/* What distinguishes the K formats for the fit. */
typedef struct kspec {
    int sub;        /* sub-block length: 16 or 32 */
    bool asym;      /* with a minimum: q in [0, qmax], m ≥ 0; else q in [qlo, qhi] */
    int qlo, qhi;   /* element integer range */
    int slo, shi;   /* sub-block scale integer range (minimums: [0, shi]) */
} kspec;

static const kspec SPEC_Q2_K = {16, true, 0, 3, 0, 15};
static const kspec SPEC_Q3_K = {16, false, -4, 3, -32, 31};
static const kspec SPEC_Q4_K = {32, true, 0, 15, 0, 63};
static const kspec SPEC_Q5_K = {32, true, 0, 31, 0, 63};
static const kspec SPEC_Q6_K = {16, false, -32, 31, -128, 127};

/* A fitted super-block: element integers, sub-block integer scales and
 * minimums, and the f16 super-scales. */
typedef struct kblock {
    int q[TN_QK_K];
    int sc[16], mn[16];
    uint16_t d, dmin;
} kblock;

/* Weighted error of sub-block j rounded against integer scale sc and minimum
 * mn under (d, dmin); writes the element integers to q. */
static double sub_err(const kspec *k, const float *x, const float *w, float d, float dmin, int sc, int mn, int *q)
{
    const float D = d * (float)sc, M = k->asym ? dmin * (float)mn : 0.0f;
    double e = 0;
    for (int i = 0; i < k->sub; i++) {
        const int l = D != 0.0f ? round_clamp((x[i] + M) / D, k->qlo, k->qhi) : 0;
        q[i] = l;
        const double r = (double)D * l - M - x[i];
        e += w[i] * r * r;
    }
    return e;
}

/* With d and dmin fixed, moves each sub-block's integer scale (and minimum)
 * by ±1 where that lowers the sub-block's own weighted error: step 2 fitted
 * the scales to the sub-blocks' float scales, not to the error itself.
 * Returns the super-block's weighted error. */
static double refine_scales(const kspec *k, const float *x, const float *w, kblock *kb)
{
    const float d = tn_fp16_to_fp32(kb->d), dmin = tn_fp16_to_fp32(kb->dmin);
    const int nsub = TN_QK_K / k->sub, slo = k->asym ? 0 : k->slo;
    int tq[32];
    double e = 0;
    for (int j = 0; j < nsub; j++) {
        const float *xj = x + j * k->sub, *wj = w + j * k->sub;
        int *qj = kb->q + j * k->sub;
        const int sc0 = kb->sc[j], mn0 = kb->mn[j];
        double best = sub_err(k, xj, wj, d, dmin, sc0, mn0, qj);
        for (int ds = -1; ds <= 1; ds++)
            for (int dm = k->asym ? -1 : 0; dm <= (k->asym ? 1 : 0); dm++) {
                const int sc = sc0 + ds, mn = mn0 + dm;
                if ((ds == 0 && dm == 0) || sc < slo || sc > k->shi || mn < 0 || mn > k->shi)
                    continue;
                const double et = sub_err(k, xj, wj, d, dmin, sc, mn, tq);
                if (et < best) {
                    best = et;
                    kb->sc[j] = sc;
                    kb->mn[j] = mn;
                    memcpy(qj, tq, (size_t)k->sub * sizeof *qj);
                }
            }
        e += best;
    }
    return e;
}

static void fit_kblock(const kspec *k, const float *x, const float *imp, kblock *kb)
{
    float w[TN_QK_K], s[16], m[16], sw[16];
    const int nsub = TN_QK_K / k->sub;
    make_weights(TN_QK_K, x, imp, w);
    memset(kb, 0, sizeof *kb);

    /* 1. each sub-block on its own */
    for (int j = 0; j < nsub; j++) {
        const float *xj = x + j * k->sub, *wj = w + j * k->sub;
        int *qj = kb->q + j * k->sub;
        sw[j] = 0;
        for (int i = 0; i < k->sub; i++)
            sw[j] += wj[i];
        if (k->asym) {
            float b;
            s[j] = fit_asym(k->sub, k->qhi, xj, wj, true, qj, &b);
            m[j] = -b;
        } else {
            s[j] = fit_sym(k->sub, k->qlo, k->qhi, xj, wj, qj);
            m[j] = 0;
        }
    }

    /* 2. the sub-block scales as integers under one d (and dmin) */
    float d, dmin = 0;
    if (k->asym) {
        d = fit_unsigned(nsub, k->shi, s, sw, kb->sc);
        dmin = fit_unsigned(nsub, k->shi, m, sw, kb->mn);
    } else {
        d = fit_sym(nsub, k->slo, k->shi, s, sw, kb->sc);
    }
    kb->d = tn_fp32_to_fp16(d);
    kb->dmin = tn_fp32_to_fp16(dmin);

    /* 3. elements against the scales as stored, each sub-block's integer
     *    scale (and minimum) moved by ±1 where that lowers its error */
    double e = refine_scales(k, x, w, kb);

    /* 4. refit (d, dmin) with every integer fixed: x_i ≈ d·a_i − dmin·c_i,
     *    then step 3 again; kept only while the error falls */
    for (int it = 0; it < 2; it++) {
        double Saa = 0, Sac = 0, Scc = 0, Sxa = 0, Sxc = 0;
        for (int j = 0; j < nsub; j++)
            for (int i = j * k->sub; i < (j + 1) * k->sub; i++) {
                const double a = (double)kb->sc[j] * kb->q[i], c = k->asym ? kb->mn[j] : 0;
                Saa += w[i] * a * a;
                Sac += w[i] * a * c;
                Scc += w[i] * c * c;
                Sxa += w[i] * x[i] * a;
                Sxc += w[i] * x[i] * c;
            }
        double nd, nm = 0;
        if (k->asym) {
            /* minimize Σw(d a − dmin c − x)²: [Saa −Sac; −Sac Scc][d; dmin] = [Sxa; −Sxc] */
            const double det = Saa * Scc - Sac * Sac;
            if (!(det > 1e-30 * Saa * Scc))
                break;
            nd = (Sxa * Scc - Sac * Sxc) / det;
            nm = (Sac * Sxa - Saa * Sxc) / det;
            if (nd <= 0 || nm < 0)
                break;
        } else {
            if (!(Saa > 0))
                break;
            nd = Sxa / Saa;
        }
        kblock trial = *kb;
        trial.d = tn_fp32_to_fp16((float)nd);
        trial.dmin = tn_fp32_to_fp16((float)nm);
        const double et = refine_scales(k, x, w, &trial);
        if (!(et < e))
            break;
        e = et;
        *kb = trial;
    }
}

/* --- packing (layouts: kern/quants.h) ------------------------------------------- */

/* 2-bit fields of Q2_K / Q3_K: i = 128h + 32k + l in qs[32h + l] bits 2k. */
static void pack2(const int *q, uint8_t *qs)
{
    memset(qs, 0, 64);
    for (int i = 0; i < TN_QK_K; i++)
        qs[32 * (i / 128) + i % 32] |= (uint8_t)((q[i] & 3) << (2 * ((i / 32) % 4)));
}

static void quant_q2_K(const float *x, tn_block_q2_K *y, int64_t nb, const float *imp)
{
    kblock kb;
    for (int64_t b = 0; b < nb; b++, x += TN_QK_K, imp = imp ? imp + TN_QK_K : NULL) {
        fit_kblock(&SPEC_Q2_K, x, imp, &kb);
        for (int j = 0; j < 16; j++)
            y[b].scales[j] = (uint8_t)(kb.sc[j] | kb.mn[j] << 4);
        pack2(kb.q, y[b].qs);
        y[b].d = kb.d;
        y[b].dmin = kb.dmin;
    }
}

static void quant_q3_K(const float *x, tn_block_q3_K *y, int64_t nb, const float *imp)
{
    kblock kb;
    for (int64_t b = 0; b < nb; b++, x += TN_QK_K, imp = imp ? imp + TN_QK_K : NULL) {
        fit_kblock(&SPEC_Q3_K, x, imp, &kb);
        int lo[TN_QK_K];
        memset(y[b].hmask, 0, sizeof y[b].hmask);
        for (int i = 0; i < TN_QK_K; i++) {
            const int u = kb.q[i] + 4; /* [0, 8): bit 2 is "q ≥ 0" */
            lo[i] = u & 3;
            if (u & 4)
                y[b].hmask[i % 32] |= (uint8_t)(1u << (i / 32));
        }
        pack2(lo, y[b].qs);
        memset(y[b].scales, 0, sizeof y[b].scales);
        for (int j = 0; j < 16; j++) {
            const int u = kb.sc[j] + 32; /* [0, 64) */
            y[b].scales[j % 8] |= (uint8_t)((u & 15) << (4 * (j / 8)));
            y[b].scales[8 + j % 4] |= (uint8_t)((u >> 4) << (2 * (j / 4)));
        }
        y[b].d = kb.d;
    }
}

/* Q4_K / Q5_K's 12 bytes of 6-bit scales and minimums. */
static void pack_scales_k4(const int *sc, const int *mn, uint8_t *s)
{
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)((sc[j] & 63) | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)((mn[j] & 63) | (mn[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((sc[j + 4] & 15) | (mn[j + 4] & 15) << 4);
    }
}

/* 4-bit fields of Q4_K / Q5_K: i = 64c + 32s + l in qs[32c + l] nibble s. */
static void pack4k(const int *q, uint8_t *qs)
{
    memset(qs, 0, 128);
    for (int i = 0; i < TN_QK_K; i++)
        qs[32 * (i / 64) + i % 32] |= (uint8_t)((q[i] & 15) << (4 * ((i / 32) % 2)));
}

static void quant_q4_K(const float *x, tn_block_q4_K *y, int64_t nb, const float *imp)
{
    kblock kb;
    for (int64_t b = 0; b < nb; b++, x += TN_QK_K, imp = imp ? imp + TN_QK_K : NULL) {
        fit_kblock(&SPEC_Q4_K, x, imp, &kb);
        y[b].d = kb.d;
        y[b].dmin = kb.dmin;
        pack_scales_k4(kb.sc, kb.mn, y[b].scales);
        pack4k(kb.q, y[b].qs);
    }
}

static void quant_q5_K(const float *x, tn_block_q5_K *y, int64_t nb, const float *imp)
{
    kblock kb;
    for (int64_t b = 0; b < nb; b++, x += TN_QK_K, imp = imp ? imp + TN_QK_K : NULL) {
        fit_kblock(&SPEC_Q5_K, x, imp, &kb);
        y[b].d = kb.d;
        y[b].dmin = kb.dmin;
        pack_scales_k4(kb.sc, kb.mn, y[b].scales);
        pack4k(kb.q, y[b].qs);
        memset(y[b].qh, 0, sizeof y[b].qh);
        for (int i = 0; i < TN_QK_K; i++)
            y[b].qh[i % 32] |= (uint8_t)(((kb.q[i] >> 4) & 1) << (i / 32));
    }
}

static void quant_q6_K(const float *x, tn_block_q6_K *y, int64_t nb, const float *imp)
{
    kblock kb;
    for (int64_t b = 0; b < nb; b++, x += TN_QK_K, imp = imp ? imp + TN_QK_K : NULL) {
        fit_kblock(&SPEC_Q6_K, x, imp, &kb);
        memset(y[b].ql, 0, sizeof y[b].ql);
        memset(y[b].qh, 0, sizeof y[b].qh);
        for (int i = 0; i < TN_QK_K; i++) {
            const int h = i / 128, k = (i / 32) % 4, l = i % 32, u = kb.q[i] + 32;
            y[b].ql[64 * h + 32 * (k & 1) + l] |= (uint8_t)((u & 15) << (4 * (k >> 1)));
            y[b].qh[32 * h + l] |= (uint8_t)((u >> 4) << (2 * k));
        }
        for (int j = 0; j < 16; j++)
            y[b].scales[j] = (int8_t)kb.sc[j];
        y[b].d = kb.d;
    }
}

/* --- 32-element blocks -------------------------------------------------------------- */

/* Index of the IQ4_NL level nearest v. */
static int nearest_level(float v)
{
    const int8_t *L = tn__iq4nl_values;
    if (v <= L[0])
        return 0;
    if (v >= L[15])
        return 15;
    int lo = 0, hi = 15; /* L[lo] < v < L[hi] */
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (v < L[mid])
            hi = mid;
        else
            lo = mid;
    }
    return v - L[lo] < L[hi] - v ? lo : hi;
}

/* The 32-element blocks store one f16 scale d (and for Q4_1 / Q5_1 an f16
 * offset m); every element is then best rounded to its nearest level. So a
 * block is fully described by (d, m) on the f16 lattice, and once a fit has
 * found a good float (s, b) the last step is a descent on that lattice:
 * move d (and m) by one f16 step while that lowers the weighted error, with
 * the elements re-rounded each time. The start is the better of the fit and
 * llama.cpp's plain rounding ("range onto the integer range"), so a block is
 * never worse, by its own weights, than the unweighted reference, and no
 * neighbouring (d ± 1 step, m ± 1 step) is better than what is stored. */
typedef struct blk32 {
    const float *x, *w; /* (32) values and weights */
    int qlo, qhi;       /* integer range (IQ4_NL: level indices 0..15) */
    bool affine;        /* x ≈ d·q + m, else x ≈ d·q */
    bool nl;            /* IQ4_NL: x ≈ d·levels[q] */
} blk32;

/* Weighted error of the block read back as (d16, m16), each element
 * rounded to its nearest level; writes the integers to q when not NULL. */
static double blk32_err(const blk32 *b, uint16_t d16, uint16_t m16, int *q)
{
    const float d = tn_fp16_to_fp32(d16), m = b->affine ? tn_fp16_to_fp32(m16) : 0.0f;
    double e = 0;
    for (int i = 0; i < 32; i++) {
        int l;
        double y;
        if (b->nl) {
            l = d != 0.0f ? nearest_level(b->x[i] / d) : 8;
            y = (double)d * tn__iq4nl_values[l];
        } else {
            l = d != 0.0f ? round_clamp((b->x[i] - m) / d, b->qlo, b->qhi) : 0;
            y = (double)d * l + m;
        }
        if (q)
            q[i] = l;
        const double r = y - b->x[i];
        e += b->w[i] * r * r;
    }
    return e;
}

/* The f16 one step from h towards +∞ (dir 1) or −∞ (dir −1); false at ±inf. */
static bool f16_step(uint16_t h, int dir, uint16_t *out)
{
    int o = (h & 0x8000) ? -(int)(h & 0x7fff) : (int)h; /* order-preserving integer */
    o += dir;
    if (o >= 0x7c00 || o <= -0x7c00)
        return false;
    *out = (uint16_t)(o < 0 ? 0x8000 | -o : o);
    return true;
}

/* From the better of the starts (d16[k], m16[k]), k < n_start, one-step moves
 * of d (and m) while the error falls. Writes the result and its integers. */
static void blk32_fit(const blk32 *b, const uint16_t *d16, const uint16_t *m16, int n_start, uint16_t *d_out,
                      uint16_t *m_out, int *q)
{
    uint16_t d = d16[0], m = m16[0];
    double e = blk32_err(b, d, m, NULL);
    for (int k = 1; k < n_start; k++) {
        const double ek = blk32_err(b, d16[k], m16[k], NULL);
        if (ek < e) {
            e = ek;
            d = d16[k];
            m = m16[k];
        }
    }
    for (int it = 0; it < 1000; it++) { /* each move lowers e: it ends */
        uint16_t bd = d, bm = m;
        double be = e;
        for (int dd = -1; dd <= 1; dd++)
            for (int dm = b->affine ? -1 : 0; dm <= (b->affine ? 1 : 0); dm++) {
                uint16_t nd = d, nm = m;
                if ((dd == 0 && dm == 0) || (dd && !f16_step(d, dd, &nd)) || (dm && !f16_step(m, dm, &nm)))
                    continue;
                const double et = blk32_err(b, nd, nm, NULL);
                if (et < be) {
                    be = et;
                    bd = nd;
                    bm = nm;
                }
            }
        if (!(be < e))
            break;
        e = be;
        d = bd;
        m = bm;
    }
    *d_out = d;
    *m_out = m;
    blk32_err(b, d, m, q);
}

static void quant_iq4_nl(const float *x, tn_block_iq4_nl *y, int64_t nb, const float *imp)
{
    float w[32];
    int q[32];
    for (int64_t b = 0; b < nb; b++, x += 32, imp = imp ? imp + 32 : NULL) {
        make_weights(32, x, imp, w);
        float amax = 0.0f, max = 0.0f;
        for (int i = 0; i < 32; i++)
            if (fabsf(x[i]) > amax) {
                amax = fabsf(x[i]);
                max = x[i];
            }
        memset(y[b].qs, 0, sizeof y[b].qs);
        if (amax < 1e-30f) {
            y[b].d = 0;
            for (int i = 0; i < 16; i++)
                y[b].qs[i] = (uint8_t)(8 | 8 << 4); /* level 1: d·1 = 0 */
            continue;
        }
        /* map the extreme to the negative end (−127) or the positive (113), ±10 % */
        double best = -1;
        float best_d = max / -127.0f;
        for (int side = 0; side < 2; side++)
            for (int k = -N_GRID; k <= N_GRID; k++) {
                const float end = side ? 113.0f : -127.0f;
                const float inv = end * (1.0f + 0.01f * (float)k) / max;
                double sxv = 0, svv = 0;
                for (int i = 0; i < 32; i++) {
                    const float v = tn__iq4nl_values[nearest_level(inv * x[i])];
                    sxv += (double)w[i] * x[i] * v;
                    svv += (double)w[i] * v * v;
                }
                if (svv > 0 && sxv * sxv / svv > best) {
                    best = sxv * sxv / svv;
                    best_d = (float)(sxv / svv);
                }
            }
        for (int it = 0; it < 2; it++) { /* re-round with the fitted d, refit */
            double sxv = 0, svv = 0;
            const float d = f16_round(best_d);
            if (d == 0.0f)
                break;
            for (int i = 0; i < 32; i++) {
                const float v = tn__iq4nl_values[nearest_level(x[i] / d)];
                sxv += (double)w[i] * x[i] * v;
                svv += (double)w[i] * v * v;
            }
            if (!(svv > 0) || sxv * sxv / svv <= best)
                break;
            best = sxv * sxv / svv;
            best_d = (float)(sxv / svv);
        }
        if (imp) { /* with an importance matrix: also the f16 descent (without, the files stay as they were) */
            const blk32 bk = {x, w, 0, 15, false, true};
            const uint16_t d0 = tn_fp32_to_fp16(best_d), m0 = 0;
            uint16_t m;
            blk32_fit(&bk, &d0, &m0, 1, &y[b].d, &m, q);
        } else {
            y[b].d = tn_fp32_to_fp16(best_d);
            const float d = tn_fp16_to_fp32(y[b].d);
            for (int i = 0; i < 32; i++)
                q[i] = d != 0.0f ? nearest_level(x[i] / d) : 8;
        }
        for (int i = 0; i < 16; i++)
            y[b].qs[i] = (uint8_t)(q[i] | q[i + 16] << 4);
    }
}

/* Q8_0 / Q4_0 / Q5_0 with importance: symmetric, q in [qlo, qhi] (Q8_0:
 * [−127, 127], as the reference rounding gives and the int8 kernels'
 * sign tricks need; Q4_0 / Q5_0: [−2^(bits−1), 2^(bits−1))). The reference
 * start maps the element of largest magnitude to qlo (Q8_0: |x| to 127). */
static void quant_sym32(tn_dtype t, const float *x, void *dst, int64_t nb, const float *imp)
{
    float w[32];
    int q[32];
    const int qlo = t == TN_DTYPE_Q8_0 ? -127 : t == TN_DTYPE_Q4_0 ? -8 : -16, qhi = t == TN_DTYPE_Q8_0 ? 127 : -qlo - 1;
    for (int64_t b = 0; b < nb; b++, x += 32, imp += 32) {
        make_weights(32, x, imp, w);
        float amax = 0.0f, max = 0.0f;
        for (int i = 0; i < 32; i++)
            if (fabsf(x[i]) > amax) {
                amax = fabsf(x[i]);
                max = x[i];
            }
        const float s = fit_sym(32, qlo, qhi, x, w, q);
        const uint16_t d0[2] = {tn_fp32_to_fp16(s), tn_fp32_to_fp16(t == TN_DTYPE_Q8_0 ? amax / 127.0f : max / (float)qlo)};
        const uint16_t m0[2] = {0, 0};
        const blk32 bk = {x, w, qlo, qhi, false, false};
        uint16_t d16, m16;
        blk32_fit(&bk, d0, m0, 2, &d16, &m16, q);
        if (t == TN_DTYPE_Q8_0) {
            tn_block_q8_0 *y = (tn_block_q8_0 *)dst + b;
            y->d = d16;
            for (int i = 0; i < 32; i++)
                y->qs[i] = (int8_t)q[i];
        } else if (t == TN_DTYPE_Q4_0) {
            tn_block_q4_0 *y = (tn_block_q4_0 *)dst + b;
            y->d = d16;
            for (int i = 0; i < 16; i++)
                y->qs[i] = (uint8_t)((q[i] + 8) | (q[i + 16] + 8) << 4);
        } else {
            tn_block_q5_0 *y = (tn_block_q5_0 *)dst + b;
            y->d = d16;
            memset(y->qh, 0, 4);
            for (int i = 0; i < 32; i++)
                q[i] += 16;
            for (int i = 0; i < 16; i++)
                y->qs[i] = (uint8_t)((q[i] & 15) | (q[i + 16] & 15) << 4);
            for (int i = 0; i < 32; i++)
                y->qh[i / 8] |= (uint8_t)(((q[i] >> 4) & 1) << (i % 8));
        }
    }
}

/* Q4_1 / Q5_1 with importance: x ≈ d·q + m, q in [0, 2^bits), any sign of m;
 * the reference start is d = (max − min)/qmax, m = min. */
static void quant_asym32(int bits, const float *x, void *dst, int64_t nb, const float *imp)
{
    float w[32];
    int q[32];
    const int qmax = (1 << bits) - 1;
    for (int64_t b = 0; b < nb; b++, x += 32, imp += 32) {
        make_weights(32, x, imp, w);
        float off, min = x[0], max = x[0];
        for (int i = 1; i < 32; i++) {
            min = fminf(min, x[i]);
            max = fmaxf(max, x[i]);
        }
        const float s = fit_asym(32, qmax, x, w, false, q, &off);
        const uint16_t d0[2] = {tn_fp32_to_fp16(s), tn_fp32_to_fp16((max - min) / (float)qmax)};
        const uint16_t m0[2] = {tn_fp32_to_fp16(off), tn_fp32_to_fp16(min)};
        const blk32 bk = {x, w, 0, qmax, true, false};
        uint16_t d16, m16;
        blk32_fit(&bk, d0, m0, 2, &d16, &m16, q);
        if (bits == 4) {
            tn_block_q4_1 *y = (tn_block_q4_1 *)dst + b;
            y->d = d16;
            y->m = m16;
            for (int i = 0; i < 16; i++)
                y->qs[i] = (uint8_t)(q[i] | q[i + 16] << 4);
        } else {
            tn_block_q5_1 *y = (tn_block_q5_1 *)dst + b;
            y->d = d16;
            y->m = m16;
            memset(y->qh, 0, 4);
            for (int i = 0; i < 16; i++)
                y->qs[i] = (uint8_t)((q[i] & 15) | (q[i + 16] & 15) << 4);
            for (int i = 0; i < 32; i++)
                y->qh[i / 8] |= (uint8_t)(((q[i] >> 4) & 1) << (i % 8));
        }
    }
}

/* --- entry points ------------------------------------------------------------------------ */

bool tn_quant_row_supported(tn_dtype t)
{
    switch (t) {
    case TN_DTYPE_Q2_K:
    case TN_DTYPE_Q3_K:
    case TN_DTYPE_Q4_K:
    case TN_DTYPE_Q5_K:
    case TN_DTYPE_Q6_K:
    case TN_DTYPE_IQ4_NL:
        return true;
    default:
        break;
    }
    const tn_dtype_traits *tr = tn_dtype_traits_of(t);
    if (!tr || t == TN_DTYPE_Q8_K || t == TN_DTYPE_Q8_1)
        return false; /* activation-only formats: no weight kernels read them */
    float src[256] = {0};
    unsigned char dst[1024];
    if (tr->block_size > 256 || tr->type_size > sizeof dst)
        return false;
    tn_status st = tn_quantize_row(t, src, dst, tr->block_size);
    tn__err_clear();
    return st == TN_OK;
}

tn_status tn_quant_row(tn_dtype t, const float *x, void *dst, int64_t n, const float *imp)
{
    const tn_dtype_traits *tr = tn_dtype_traits_of(t);
    if (!tr || n < 0 || n % tr->block_size != 0)
        return tn__err(TN_ERR_INVALID, "quantize: %lld elements do not fill whole blocks of type %s", (long long)n,
                       tr ? tr->name : "?");
    const int64_t nb = n / tr->block_size;
    switch (t) {
    case TN_DTYPE_Q2_K: quant_q2_K(x, dst, nb, imp); return TN_OK;
    case TN_DTYPE_Q3_K: quant_q3_K(x, dst, nb, imp); return TN_OK;
    case TN_DTYPE_Q4_K: quant_q4_K(x, dst, nb, imp); return TN_OK;
    case TN_DTYPE_Q5_K: quant_q5_K(x, dst, nb, imp); return TN_OK;
    case TN_DTYPE_Q6_K: quant_q6_K(x, dst, nb, imp); return TN_OK;
    case TN_DTYPE_IQ4_NL: quant_iq4_nl(x, dst, nb, imp); return TN_OK;
    case TN_DTYPE_Q8_0:
        if (imp) {
            quant_sym32(t, x, dst, nb, imp);
            return TN_OK;
        }
        break;
    case TN_DTYPE_Q4_0:
        if (imp) {
            quant_sym32(t, x, dst, nb, imp);
            return TN_OK;
        }
        break;
    case TN_DTYPE_Q5_0:
        if (imp) {
            quant_sym32(t, x, dst, nb, imp);
            return TN_OK;
        }
        break;
    case TN_DTYPE_Q4_1:
        if (imp) {
            quant_asym32(4, x, dst, nb, imp);
            return TN_OK;
        }
        break;
    case TN_DTYPE_Q5_1:
        if (imp) {
            quant_asym32(5, x, dst, nb, imp);
            return TN_OK;
        }
        break;
    default:
        break;
    }
    return tn_quantize_row(t, x, dst, n);
}
