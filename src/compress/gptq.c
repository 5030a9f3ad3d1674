/*
 * gptq.c — GPTQ over tern's block formats (see gptq.h).
 *
 * HOW IT WORKS
 *   Prepare (once per input, O(n³) in double): with J the reversal of the
 *   column order, J H' J = L Lᵀ (Cholesky), so H' = R Rᵀ with R = J L J
 *   upper triangular and H'⁻¹ = (R⁻¹)ᵀ R⁻¹: U = R⁻¹ = J L⁻¹ J is the upper
 *   Cholesky factor of H'⁻¹ that GPTQ walks, from one factorization and one
 *   triangular inverse.
 *
 *   Quantize (per tile of TILE rows, so each row of U is read once per
 *   tile): columns in order, in lazy batches of BATCH columns (at least a
 *   quantization block). Column j of each row: round w_j to the nearest
 *   level of its block's grid, e = (w_j − q_j)/U[j][j], and w_k −= e·U[j][k]
 *   for the later columns of the batch at once; the columns after the batch
 *   get the whole batch's errors in one pass at its end (the paper's lazy
 *   batch update). A block's grid is fitted when its first column comes up,
 *   so every column of the block has all earlier updates.
 *
 * EDGE CASES
 *   Dead inputs (H[j][j] = 0): weight set to 0, as GPTQ does; the grid fit
 *   gets importance 0 there (quant_k adds a tiny floor). A block whose
 *   levels are all equal (scale 0) takes level 0.
 *
 * LIMITATIONS
 *   Scalar code; no act-order (columns are walked in storage order, which
 *   per-block scales require). The grid table costs (levels × block)
 *   dequantized values per row and block: 255 × 32 for Q8_0.
 */
#include "compress/gptq.h"

#include "compress/quant_k.h"
#include "kern/quants.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TILE 8
#define BATCH 128

/* --- the integers of a block -------------------------------------------------- */

typedef struct gspec {
    int ulo, uhi; /* stored integer range */
    bool nl;      /* non-uniform levels (IQ4_NL) */
} gspec;

static bool spec_of(tn_dtype t, gspec *g)
{
    switch (t) {
    case TN_DTYPE_Q4_0: case TN_DTYPE_Q4_1: *g = (gspec){0, 15, false}; return true;
    case TN_DTYPE_IQ4_NL: *g = (gspec){0, 15, true}; return true;
    case TN_DTYPE_Q5_0: case TN_DTYPE_Q5_1: *g = (gspec){0, 31, false}; return true;
    case TN_DTYPE_Q8_0: *g = (gspec){-127, 127, false}; return true; /* the int8 kernels want no −128 */
    case TN_DTYPE_Q2_K: *g = (gspec){0, 3, false}; return true;
    case TN_DTYPE_Q3_K: *g = (gspec){0, 7, false}; return true;
    case TN_DTYPE_Q4_K: *g = (gspec){0, 15, false}; return true;
    case TN_DTYPE_Q5_K: *g = (gspec){0, 31, false}; return true;
    case TN_DTYPE_Q6_K: *g = (gspec){0, 63, false}; return true;
    default: return false;
    }
}

bool tn_gptq_supported(tn_dtype t)
{
    gspec g;
    return spec_of(t, &g);
}

/* 4-bit pairs of the 32-element types: element i in qs[i % 16] nibble i / 16. */
static void set_nib32(uint8_t *qs, const int *u)
{
    for (int i = 0; i < 16; i++)
        qs[i] = (uint8_t)((u[i] & 15) | (u[i + 16] & 15) << 4);
}
static void set_qh32(uint8_t *qh, const int *u)
{
    memset(qh, 0, 4);
    for (int i = 0; i < 32; i++)
        qh[i / 8] |= (uint8_t)(((u[i] >> 4) & 1) << (i % 8));
}
/* 2-bit fields of Q2_K / Q3_K: i = 128h + 32k + l in qs[32h + l] bits 2k. */
static void set_2bit(uint8_t *qs, const int *u)
{
    memset(qs, 0, 64);
    for (int i = 0; i < TN_QK_K; i++)
        qs[32 * (i / 128) + i % 32] |= (uint8_t)((u[i] & 3) << (2 * ((i / 32) % 4)));
}
/* 4-bit fields of Q4_K / Q5_K: i = 64c + 32s + l in qs[32c + l] nibble s. */
static void set_4bit_k(uint8_t *qs, const int *u)
{
    memset(qs, 0, 128);
    for (int i = 0; i < TN_QK_K; i++)
        qs[32 * (i / 64) + i % 32] |= (uint8_t)((u[i] & 15) << (4 * ((i / 32) % 2)));
}

/* Writes the stored integers u (one per element) into block blk of type t,
 * leaving its scales as they are (layouts: kern/quants.h). */
static void set_ints(tn_dtype t, void *blk, const int *u)
{
    switch (t) {
    case TN_DTYPE_Q4_0: set_nib32(((tn_block_q4_0 *)blk)->qs, u); break;
    case TN_DTYPE_Q4_1: set_nib32(((tn_block_q4_1 *)blk)->qs, u); break;
    case TN_DTYPE_IQ4_NL: set_nib32(((tn_block_iq4_nl *)blk)->qs, u); break;
    case TN_DTYPE_Q5_0:
        set_nib32(((tn_block_q5_0 *)blk)->qs, u);
        set_qh32(((tn_block_q5_0 *)blk)->qh, u);
        break;
    case TN_DTYPE_Q5_1:
        set_nib32(((tn_block_q5_1 *)blk)->qs, u);
        set_qh32(((tn_block_q5_1 *)blk)->qh, u);
        break;
    case TN_DTYPE_Q8_0:
        for (int i = 0; i < 32; i++)
            ((tn_block_q8_0 *)blk)->qs[i] = (int8_t)u[i];
        break;
    case TN_DTYPE_Q2_K: set_2bit(((tn_block_q2_K *)blk)->qs, u); break;
    case TN_DTYPE_Q3_K: {
        tn_block_q3_K *b = blk;
        int lo[TN_QK_K];
        memset(b->hmask, 0, sizeof b->hmask);
        for (int i = 0; i < TN_QK_K; i++) {
            lo[i] = u[i] & 3;
            if (u[i] & 4) /* bit 2: "q ≥ 0" */
                b->hmask[i % 32] |= (uint8_t)(1u << (i / 32));
        }
        set_2bit(b->qs, lo);
        break;
    }
    case TN_DTYPE_Q4_K: set_4bit_k(((tn_block_q4_K *)blk)->qs, u); break;
    case TN_DTYPE_Q5_K: {
        tn_block_q5_K *b = blk;
        set_4bit_k(b->qs, u);
        memset(b->qh, 0, sizeof b->qh);
        for (int i = 0; i < TN_QK_K; i++)
            b->qh[i % 32] |= (uint8_t)(((u[i] >> 4) & 1) << (i / 32));
        break;
    }
    case TN_DTYPE_Q6_K: {
        tn_block_q6_K *b = blk;
        memset(b->ql, 0, sizeof b->ql);
        memset(b->qh, 0, sizeof b->qh);
        for (int i = 0; i < TN_QK_K; i++) {
            const int h = i / 128, k = (i / 32) % 4, l = i % 32;
            b->ql[64 * h + 32 * (k & 1) + l] |= (uint8_t)((u[i] & 15) << (4 * (k >> 1)));
            b->qh[32 * h + l] |= (uint8_t)(((u[i] >> 4) & 3) << (2 * k));
        }
        break;
    }
    default: break;
    }
}

/* The grid of block blk: tab[k·bs + i] = element i's value at integer
 * ulo + k (the block dequantized with every integer set to it). */
static tn_status block_grid(tn_dtype t, const gspec *g, const void *blk, size_t tsize, int bs, unsigned char *tmp,
                            int *u, float *tab)
{
    memcpy(tmp, blk, tsize);
    for (int k = 0; k <= g->uhi - g->ulo; k++) {
        for (int i = 0; i < bs; i++)
            u[i] = g->ulo + k;
        set_ints(t, tmp, u);
        tn_status st = tn_dequantize_row(t, tmp, tab + (size_t)k * bs, bs);
        if (st != TN_OK)
            return st;
    }
    return TN_OK;
}

/* Index k of the level of element i nearest x. */
static int nearest(const gspec *g, const float *tab, int bs, int i, float x)
{
    const int nlev = g->uhi - g->ulo + 1;
    int k0 = 0, k1 = nlev - 1;
    if (!g->nl) { /* affine in k: estimate, then the exact nearest of three */
        const float a = tab[i], b = tab[(size_t)(nlev - 1) * bs + i];
        if (a == b)
            return 0;
        long est = lrintf((x - a) / (b - a) * (float)(nlev - 1));
        est = est < 0 ? 0 : est > nlev - 1 ? nlev - 1 : est;
        k0 = (int)est - 1 < 0 ? 0 : (int)est - 1;
        k1 = (int)est + 1 > nlev - 1 ? nlev - 1 : (int)est + 1;
    }
    int best = k0;
    float bd = fabsf(tab[(size_t)k0 * bs + i] - x);
    for (int k = k0 + 1; k <= k1; k++) {
        const float d = fabsf(tab[(size_t)k * bs + i] - x);
        if (d < bd) {
            bd = d;
            best = k;
        }
    }
    return best;
}

/* --- prepare -------------------------------------------------------------------- */

tn_status tn_gptq_cholesky(double *a, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double *ai = a + i * n;
        for (int64_t j = 0; j <= i; j++) {
            const double *aj = a + j * n;
            double s = ai[j];
            for (int64_t k = 0; k < j; k++)
                s -= ai[k] * aj[k];
            if (j == i) {
                if (!(s > 0))
                    return tn__err(TN_ERR_INVALID, "gptq: matrix not positive definite at pivot %lld (%g)",
                                   (long long)i, s);
                ai[i] = sqrt(s);
            } else {
                ai[j] = s / aj[j];
            }
        }
        for (int64_t j = i + 1; j < n; j++)
            ai[j] = 0;
    }
    return TN_OK;
}

/* X = L⁻¹ for lower-triangular L (n, n); X lower, row by row. */
static void lower_inverse(const double *L, double *X, int64_t n)
{
    memset(X, 0, (size_t)n * (size_t)n * sizeof *X);
    for (int64_t i = 0; i < n; i++) {
        double *xi = X + i * n;
        const double *li = L + i * n;
        xi[i] = 1.0;
        for (int64_t k = 0; k < i; k++) {
            const double c = li[k];
            const double *xk = X + k * n;
            for (int64_t m = 0; m <= k; m++)
                xi[m] -= c * xk[m];
        }
        const double inv = 1.0 / li[i];
        for (int64_t m = 0; m <= i; m++)
            xi[m] *= inv;
    }
}

tn_status tn_gptq_prepare(const float *H, int64_t n, double damp, float *U, uint8_t *dead)
{
    double *A = malloc((size_t)n * (size_t)n * sizeof *A), *X = malloc((size_t)n * (size_t)n * sizeof *X);
    tn_status st = TN_OK;
    if (!A || !X) {
        st = tn__err(TN_ERR_NOMEM, "gptq: out of memory for a %lld x %lld hessian", (long long)n, (long long)n);
        goto out;
    }
    double mean = 0;
    for (int64_t j = 0; j < n; j++) {
        dead[j] = !(H[j * n + j] > 0);
        mean += dead[j] ? 1.0 : H[j * n + j];
    }
    mean /= (double)(n > 0 ? n : 1);
    for (int attempt = 0; attempt < 4; attempt++, damp = damp > 0 ? damp * 10 : 1e-6) {
        /* A = J H' J */
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                const int64_t si = n - 1 - i, sj = n - 1 - j;
                double v = dead[si] || dead[sj] ? 0.0 : H[si * n + sj];
                if (i == j)
                    v = (dead[si] ? 1.0 : v) + damp * mean;
                A[i * n + j] = v;
            }
        st = tn_gptq_cholesky(A, n);
        if (st == TN_OK)
            break;
        tn_log(TN_LOG_INFO, "gptq: hessian of %lld columns not positive definite with damping %g; trying %g\n",
               (long long)n, damp, damp > 0 ? damp * 10 : 1e-6);
        tn__err_clear();
    }
    if (st != TN_OK) {
        st = tn__err(TN_ERR_INVALID, "gptq: hessian of %lld columns is not positive definite even with damping %g",
                     (long long)n, damp);
        goto out;
    }
    lower_inverse(A, X, n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            U[i * n + j] = j >= i ? (float)X[(n - 1 - i) * n + (n - 1 - j)] : 0.0f;
out:
    free(A);
    free(X);
    return st;
}

/* --- quantize ---------------------------------------------------------------------- */

tn_status tn_gptq_quantize(tn_dtype t, const float *U, const uint8_t *dead, const float *imp, float *W,
                           int64_t n_rows, int64_t n, void *dst, float *q_out)
{
    gspec g;
    const tn_dtype_traits *tr = tn_dtype_traits_of(t);
    if (!spec_of(t, &g))
        return tn__err(TN_ERR_UNSUPPORTED, "gptq: type %s is not supported", tr ? tr->name : "?");
    const int bs = tr->block_size;
    const size_t tsize = tr->type_size, row_bytes = tn_dtype_row_size(t, n);
    if (n <= 0 || n % bs != 0)
        return tn__err(TN_ERR_INVALID, "gptq: rows of %lld do not fill whole blocks of %s", (long long)n, tr->name);
    const int nlev = g.uhi - g.ulo + 1;
    const int64_t batch = bs > BATCH ? bs : BATCH;
    float *tab = malloc((size_t)TILE * nlev * bs * sizeof *tab);
    float *E = malloc((size_t)TILE * batch * sizeof *E);
    int *ints = malloc((size_t)TILE * bs * sizeof *ints), *tmpu = malloc((size_t)bs * sizeof *tmpu);
    unsigned char *blk = malloc((size_t)TILE * tsize), *tmp = malloc(tsize);
    tn_status st = TN_OK;
    if (!tab || !E || !ints || !tmpu || !blk || !tmp) {
        st = tn__err(TN_ERR_NOMEM, "gptq: out of memory for rows of %lld", (long long)n);
        goto out;
    }
    for (int64_t r0 = 0; r0 < n_rows; r0 += TILE) {
        const int R = (int)(n_rows - r0 < TILE ? n_rows - r0 : TILE);
        for (int r = 0; r < R; r++)
            for (int64_t j = 0; j < n; j++)
                if (dead[j])
                    W[(r0 + r) * n + j] = 0.0f;
        for (int64_t b0 = 0; b0 < n; b0 += batch) {
            const int64_t b1 = b0 + batch < n ? b0 + batch : n;
            for (int64_t j = b0; j < b1; j++) {
                const int jj = (int)(j % bs);
                if (jj == 0)
                    for (int r = 0; r < R; r++) {
                        unsigned char *br = blk + (size_t)r * tsize;
                        if ((st = tn_quant_row(t, W + (r0 + r) * n + j, br, bs, imp ? imp + j : NULL)) != TN_OK ||
                            (st = block_grid(t, &g, br, tsize, bs, tmp, tmpu, tab + (size_t)r * nlev * bs)) != TN_OK)
                            goto out;
                    }
                const float *uj = U + j * n;
                const float ujj = uj[j];
                for (int r = 0; r < R; r++) {
                    float *w = W + (r0 + r) * n;
                    const float *grid = tab + (size_t)r * nlev * bs;
                    const int k = nearest(&g, grid, bs, jj, w[j]);
                    const float q = grid[(size_t)k * bs + jj];
                    ints[r * bs + jj] = g.ulo + k;
                    if (q_out)
                        q_out[(r0 + r) * n + j] = q;
                    const float e = (w[j] - q) / ujj;
                    E[r * batch + (j - b0)] = e;
                    w[j] = q;
                    for (int64_t m = j + 1; m < b1; m++)
                        w[m] -= e * uj[m];
                }
                if (jj == bs - 1)
                    for (int r = 0; r < R; r++) {
                        unsigned char *br = blk + (size_t)r * tsize;
                        set_ints(t, br, ints + r * bs);
                        memcpy((unsigned char *)dst + (size_t)(r0 + r) * row_bytes + (size_t)(j / bs) * tsize, br,
                               tsize);
                    }
            }
            if (b1 < n)
                for (int64_t i = b0; i < b1; i++) {
                    const float *ui = U + i * n;
                    for (int r = 0; r < R; r++) {
                        const float e = E[r * batch + (i - b0)];
                        float *w = W + (r0 + r) * n;
                        for (int64_t m = b1; m < n; m++)
                            w[m] -= e * ui[m];
                    }
                }
        }
    }
out:
    free(tab);
    free(E);
    free(ints);
    free(tmpu);
    free(blk);
    free(tmp);
    return st;
}
