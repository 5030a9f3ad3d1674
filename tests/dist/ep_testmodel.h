/*
 * ep_testmodel.h — a tiny mixture-of-experts model built in memory for the
 * expert-parallel tests (test_ep.c, mpi_comm_check.c): F32 stacked expert
 * tensors with a non-identity placement map, and a deterministic batch of
 * normalized inputs with routed experts and weights. Every process that
 * calls these with the same arguments gets the same bits.
 */
#ifndef TERN_TESTS_DIST_EP_TESTMODEL_H
#define TERN_TESTS_DIST_EP_TESTMODEL_H

#include "model/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { EPT_LAYERS = 2, EPT_EXPERTS = 8, EPT_USED = 3, EPT_EMBD = 32, EPT_FF = 24 };

typedef struct ep_testmodel {
    tn_model m;
    tn_layer layers[EPT_LAYERS];
    int32_t map[EPT_LAYERS * EPT_EXPERTS];
    float *w[EPT_LAYERS][3]; /* gate, up: (E, FF, EMBD); down: (E, EMBD, FF) */
} ep_testmodel;

/* xorshift32 in [-1, 1). */
static inline float ept_rand(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return (float)(*s >> 8) / 8388608.0f - 1.0f;
}

static inline void ept_weight(tn_weight *t, float *data, int64_t ne0, int64_t ne1)
{
    t->data = data;
    t->type = TN_DTYPE_F32;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = EPT_EXPERTS;
}

/* Fills tm; returns false when out of memory. Free with ept_free. */
static inline bool ept_make(ep_testmodel *tm, uint32_t seed)
{
    memset(tm, 0, sizeof *tm);
    tn_hparams *hp = &tm->m.hp;
    hp->n_layer = EPT_LAYERS;
    hp->n_embd = EPT_EMBD;
    hp->n_expert = EPT_EXPERTS;
    hp->n_expert_used = EPT_USED;
    hp->n_ff_exp = EPT_FF;
    tm->m.layers = tm->layers;
    tm->m.expert_map = tm->map;
    const size_t n = (size_t)EPT_EXPERTS * EPT_FF * EPT_EMBD;
    for (int il = 0; il < EPT_LAYERS; il++) {
        for (int k = 0; k < 3; k++) {
            tm->w[il][k] = malloc(n * sizeof(float));
            if (!tm->w[il][k])
                return false;
            for (size_t i = 0; i < n; i++)
                tm->w[il][k][i] = 0.3f * ept_rand(&seed);
        }
        ept_weight(&tm->layers[il].ffn_gate_exps, tm->w[il][0], EPT_EMBD, EPT_FF);
        ept_weight(&tm->layers[il].ffn_up_exps, tm->w[il][1], EPT_EMBD, EPT_FF);
        ept_weight(&tm->layers[il].ffn_down_exps, tm->w[il][2], EPT_FF, EPT_EMBD);
        /* Logical expert e lives in physical slot (3e + il) mod E: a permutation. */
        for (int e = 0; e < EPT_EXPERTS; e++)
            tm->map[il * EPT_EXPERTS + e] = (3 * e + il) % EPT_EXPERTS;
    }
    return true;
}

static inline void ept_free(ep_testmodel *tm)
{
    for (int il = 0; il < EPT_LAYERS; il++)
        for (int k = 0; k < 3; k++)
            free(tm->w[il][k]);
}

/* A batch of n tokens: x ((n, EMBD)), sel ((n, USED)) distinct experts per
 * token (skewed towards low indices, so some experts get many rows and some
 * none), w ((n, USED)) positive weights. */
static inline void ept_batch(uint32_t seed, int32_t n, float *x, int32_t *sel, float *w)
{
    for (int64_t i = 0; i < (int64_t)n * EPT_EMBD; i++)
        x[i] = ept_rand(&seed);
    for (int32_t i = 0; i < n; i++)
        for (int j = 0; j < EPT_USED; j++) {
            int32_t e;
            bool dup;
            do {
                float u = 0.5f * (ept_rand(&seed) + 1.0f);
                e = (int32_t)(u * u * EPT_EXPERTS) % EPT_EXPERTS;
                dup = false;
                for (int q = 0; q < j; q++)
                    dup |= sel[i * EPT_USED + q] == e;
            } while (dup);
            sel[i * EPT_USED + j] = e;
            w[i * EPT_USED + j] = 0.1f + 0.5f * (ept_rand(&seed) + 1.0f);
        }
}

/* Naive reference in double: out ((n, EMBD)) for layer il. */
static inline void ept_reference(const ep_testmodel *tm, int il, int32_t n, const float *x, const int32_t *sel,
                                 const float *w, double *out)
{
    double h[EPT_FF];
    for (int32_t i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * EPT_EMBD;
        double *oi = out + (size_t)i * EPT_EMBD;
        memset(oi, 0, EPT_EMBD * sizeof(double));
        for (int j = 0; j < EPT_USED; j++) {
            const int p = tm->map[il * EPT_EXPERTS + sel[i * EPT_USED + j]];
            const float *g = tm->w[il][0] + (size_t)p * EPT_FF * EPT_EMBD;
            const float *u = tm->w[il][1] + (size_t)p * EPT_FF * EPT_EMBD;
            const float *d = tm->w[il][2] + (size_t)p * EPT_EMBD * EPT_FF;
            for (int f = 0; f < EPT_FF; f++) {
                double a = 0, b = 0;
                for (int c = 0; c < EPT_EMBD; c++) {
                    a += (double)g[f * EPT_EMBD + c] * xi[c];
                    b += (double)u[f * EPT_EMBD + c] * xi[c];
                }
                h[f] = a / (1.0 + exp(-a)) * b;
            }
            for (int r = 0; r < EPT_EMBD; r++) {
                double y = 0;
                for (int f = 0; f < EPT_FF; f++)
                    y += (double)d[r * EPT_FF + f] * h[f];
                oi[r] += w[i * EPT_USED + j] * y;
            }
        }
    }
}

#endif /* TERN_TESTS_DIST_EP_TESTMODEL_H */
