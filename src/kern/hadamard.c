/*
 * hadamard.c — the blockwise fast Walsh–Hadamard transform (hadamard.h).
 */
#include "kern/hadamard.h"

#include <math.h>

int64_t tn_hadamard_block(int64_t n)
{
    if (n <= 0)
        return 1;
    int64_t b = n & -n; /* the lowest set bit: the largest power of two dividing n */
    return b > TN_HADAMARD_MAX_BLOCK ? TN_HADAMARD_MAX_BLOCK : b;
}

void tn_hadamard(float *x, int64_t n)
{
    const int64_t b = tn_hadamard_block(n);
    if (b < 2)
        return;
    const float scale = 1.0f / sqrtf((float)b);
    for (int64_t o = 0; o < n; o += b) {
        float *v = x + o;
        for (int64_t h = 1; h < b; h *= 2)
            for (int64_t i = 0; i < b; i += 2 * h)
                for (int64_t j = i; j < i + h; j++) {
                    const float a = v[j], c = v[j + h];
                    v[j] = a + c;
                    v[j + h] = a - c;
                }
        for (int64_t j = 0; j < b; j++)
            v[j] *= scale;
    }
}
