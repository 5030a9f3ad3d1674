/*
 * hadamard.h — the block Hadamard rotation of tern's W8A8_HAD type.
 *
 * Key idea: a per-token int8 scale fails when a token's largest activation
 * sits in a different channel each token (ffn_down's input, silu(g)·u, is
 * like that): one outlier sets the step for the whole row. Rotating the row
 * by an orthonormal Hadamard matrix H spreads every outlier over the block,
 * and since H is symmetric and H·H = I, W·x = (W·H)·(H·x): the weights are
 * stored rotated (at quantization time) and each activation row is rotated
 * at run time before it is quantized (QuaRot's trick, blockwise).
 *
 * The block is the largest power of two dividing n, at most
 * TN_HADAMARD_MAX_BLOCK; H_b is Sylvester's (entries ±1) divided by √b, so
 * the transform is the fast Walsh–Hadamard butterfly, n·log2(b) additions.
 */
#ifndef TERN_KERN_HADAMARD_H
#define TERN_KERN_HADAMARD_H

#include <stdint.h>

#define TN_HADAMARD_MAX_BLOCK 512

/* The block size for rows of n: the largest power of two dividing n, at
 * most TN_HADAMARD_MAX_BLOCK (1 for odd n: no rotation). */
int64_t tn_hadamard_block(int64_t n);

/* x[0..n) <- blockwise H_b·x / √b in place (b = tn_hadamard_block(n)).
 * Applying it twice gives x back up to rounding. The order of operations
 * depends on n only. */
void tn_hadamard(float *x, int64_t n);

#endif /* TERN_KERN_HADAMARD_H */
