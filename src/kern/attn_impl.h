/*
 * attn_impl.h — internal to src/kern: the per-ISA inner loops of attn.c.
 *
 * Key idea: attn.c owns the algorithm (tiles, running max and sum,
 * rescaling, GQA blocking); each ISA file (attn.c's scalar table,
 * attn_avx2.c, attn_avx512.c) supplies the five loops below. The scalar
 * table is the specification; tests/kern/test_attn.c checks the others
 * against it on odd shapes.
 *
 * Contract of every table: each result is a fixed-order function of its
 * inputs and of the lengths (hd, nt) only, never of alignment, of the
 * other heads or rows processed in the same call, or of the thread, so a
 * query's attention output never depends on the batch it is in.
 */
#ifndef TERN_KERN_ATTN_IMPL_H
#define TERN_KERN_ATTN_IMPL_H

#include "kern/attn.h"
#include "kern/kern.h"

typedef struct tn__attn_ops {
    /* dst[i] = f16 src[i] widened, i < n (exact). */
    void (*cvt_f16)(const uint16_t *src, float *dst, int64_t n);
    /* dst[i] = (float)src[i] * d, i < n (one rounding). */
    void (*cvt_i8)(const int8_t *src, float d, float *dst, int64_t n);
    /* s[g * ld + j] = (q_g · k[j]) * scale for g < G (q_g = q + g *
     * q_stride), j < nt, over hd floats. */
    void (*scores)(const float *q, size_t q_stride, int G, const float *const *k, int nt, int hd, float scale,
                   float *s, int ld);
    /* max(m, s[0], ..., s[nt-1]) (exact, so the same on every ISA; NaNs
     * may or may not be skipped: they reach the output through exp_tile). */
    float (*tile_max)(const float *s, int nt, float m);
    /* s[j] = e^(s[j] - m) for j < nt; returns their sum. m is finite. */
    float (*exp_tile)(float *s, int nt, float m);
    /* acc[d] = acc[d] * alpha, then acc[d] += p[j] * v[j][d] for j = 0,
     * 1, ... nt-1 in order, d < hd. */
    void (*pv)(float *acc, float alpha, const float *p, const float *const *v, int nt, int hd);
} tn__attn_ops;

extern const tn__attn_ops tn__attn_ops_scalar; /* attn.c */
extern const tn__attn_ops tn__attn_ops_avx2;   /* attn_avx2.c */
extern const tn__attn_ops tn__attn_ops_avx512; /* attn_avx512.c */

#endif /* TERN_KERN_ATTN_IMPL_H */
