/*
 * kern_avx2_q.c — AVX2 dot products of the formats in quants.h.
 */
#include "kern/kern_impl.h"

const tn__quant_ops tn__quant_ops_avx2 = {.dot = {NULL}};
