/*
 * test_blocks.c — the block manager: reference counts, hash hits, the LRU
 * eviction order, and that every block comes back.
 */
#include "testutil.h"

#include "engine/blocks.h"

#include <stdlib.h>
#include <string.h>

enum { BS = 4 };

static tn_blocks *make(int32_t n)
{
    tn_blocks *bm = NULL;
    assert_int_equal(tn_blocks_new(n, BS, &bm), TN_OK);
    return bm;
}

/* tokens of "block k of prompt p" */
static void fill(int32_t *t, int p, int k)
{
    for (int i = 0; i < BS; i++)
        t[i] = 1000 * p + 10 * k + i;
}

/* Allocation hands out distinct blocks until none is left; refs and unrefs
 * count owners; a block comes back only when its last owner lets go. */
static void test_refcounts(void **state)
{
    tn_blocks *bm = make(4);
    int32_t b[4];
    bool seen[4] = {0};
    for (int i = 0; i < 4; i++) {
        b[i] = tn_blocks_alloc(bm);
        assert_true(b[i] >= 0 && b[i] < 4);
        assert_false(seen[b[i]]);
        seen[b[i]] = true;
        assert_int_equal(tn_blocks_refcount(bm, b[i]), 1);
    }
    assert_int_equal(tn_blocks_n_free(bm), 0);
    assert_int_equal(tn_blocks_alloc(bm), -1);

    tn_blocks_ref(bm, b[2]);
    assert_int_equal(tn_blocks_refcount(bm, b[2]), 2);
    tn_blocks_unref(bm, b[2]);
    assert_int_equal(tn_blocks_n_free(bm), 0);
    tn_blocks_unref(bm, b[2]);
    assert_int_equal(tn_blocks_n_free(bm), 1);
    assert_int_equal(tn_blocks_alloc(bm), b[2]);
    for (int i = 0; i < 4; i++)
        tn_blocks_unref(bm, b[i]);
    assert_int_equal(tn_blocks_n_free(bm), 4);
    tn_blocks_free(bm);
}

/* A hashed block is found by (hash, tokens) while owned and after release
 * (cached), not with other tokens; a second block with the same hash is not
 * registered; reviving a cached block takes it off the free list. */
static void test_hash_hits(void **state)
{
    tn_blocks *bm = make(4);
    int32_t t0[BS], t1[BS], other[BS];
    fill(t0, 1, 0);
    fill(t1, 1, 1);
    fill(other, 2, 0);
    uint64_t h0 = tn_blocks_hash(0, t0, BS), h1 = tn_blocks_hash(h0, t1, BS);
    assert_true(h0 != h1);
    assert_true(tn_blocks_hash(0, t1, BS) != h1); /* a chain: the parent matters */
    int32_t a = tn_blocks_alloc(bm), b = tn_blocks_alloc(bm);
    assert_true(tn_blocks_set_hash(bm, a, h0, t0));
    assert_true(tn_blocks_set_hash(bm, b, h1, t1));
    assert_int_equal(tn_blocks_lookup(bm, h0, t0), a);
    assert_int_equal(tn_blocks_lookup(bm, h1, t1), b);
    assert_int_equal(tn_blocks_lookup(bm, h0, other), -1); /* same hash, other tokens: no hit */
    assert_int_equal(tn_blocks_lookup(bm, tn_blocks_hash(0, other, BS), other), -1);

    /* A duplicate of a's content is not registered. */
    int32_t d = tn_blocks_alloc(bm);
    assert_false(tn_blocks_set_hash(bm, d, h0, t0));
    assert_false(tn_blocks_has_hash(bm, d));

    tn_blocks_unref(bm, b);
    tn_blocks_unref(bm, a);
    tn_blocks_unref(bm, d);
    assert_int_equal(tn_blocks_n_free(bm), 4);
    assert_int_equal(tn_blocks_n_cached(bm), 2);
    /* Still found while free; a hit revives it. */
    int32_t hit = tn_blocks_lookup(bm, h0, t0);
    assert_int_equal(hit, a);
    tn_blocks_ref(bm, hit);
    assert_int_equal(tn_blocks_refcount(bm, a), 1);
    assert_int_equal(tn_blocks_n_free(bm), 3);
    assert_int_equal(tn_blocks_n_cached(bm), 1);
    tn_blocks_unref(bm, a);
    tn_blocks_free(bm);
}

/* Eviction order: blocks without a hash go first (most recently released
 * first), then cached blocks, least recently released first; an evicted
 * block's hash is gone; a revived block moves to the back of the LRU. */
static void test_lru_order(void **state)
{
    tn_blocks *bm = make(6);
    int32_t b[6], t[6][BS];
    uint64_t h[6];
    for (int i = 0; i < 6; i++) {
        b[i] = tn_blocks_alloc(bm);
        fill(t[i], 3, i);
        h[i] = tn_blocks_hash(i > 0 ? h[i - 1] : 0, t[i], BS);
    }
    /* b0..b3 hashed; b4, b5 not. */
    for (int i = 0; i < 4; i++)
        assert_true(tn_blocks_set_hash(bm, b[i], h[i], t[i]));
    /* Release order: b3, b1, b4, b0, b2, b5 — then revive b1 and release it
     * again, making it the most recently used cached block. */
    int rel[6] = {3, 1, 4, 0, 2, 5};
    for (int i = 0; i < 6; i++)
        tn_blocks_unref(bm, b[rel[i]]);
    assert_int_equal(tn_blocks_lookup(bm, h[1], t[1]), b[1]);
    tn_blocks_ref(bm, b[1]);
    tn_blocks_unref(bm, b[1]);

    /* Unhashed first, newest first: b5, b4. Then cached by age: b3, b0, b2, b1. */
    int want[6] = {5, 4, 3, 0, 2, 1};
    for (int i = 0; i < 6; i++) {
        int32_t got = tn_blocks_alloc(bm);
        if (got != b[want[i]])
            fail_msg("allocation %d: block %d, want %d (b%d)", i, got, b[want[i]], want[i]);
        assert_false(tn_blocks_has_hash(bm, got));
        if (want[i] < 4) /* its hash left with it */
            assert_int_equal(tn_blocks_lookup(bm, h[want[i]], t[want[i]]), -1);
        if (i == 2) /* b0..b2 still cached after b3's eviction */
            assert_int_equal(tn_blocks_lookup(bm, h[0], t[0]), b[0]);
    }
    assert_int_equal(tn_blocks_n_cached(bm), 0);
    for (int i = 0; i < 6; i++)
        tn_blocks_unref(bm, b[i]);
    assert_int_equal(tn_blocks_n_free(bm), 6);
    tn_blocks_free(bm);
}

/* A random workload of sequences sharing prefixes: refcounts always equal
 * the number of tables holding the block, and at the end every block is
 * free (no leak). */
static void test_no_leak_random(void **state)
{
    enum { NB = 16, NSEQ = 6, MAXB = 5 };
    tn_blocks *bm = make(NB);
    int32_t table[NSEQ][MAXB], n[NSEQ] = {0};
    uint64_t rng = 42;
    for (int iter = 0; iter < 3000; iter++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        int s = (int)((rng >> 33) % NSEQ), op = (int)((rng >> 40) % 3);
        int prompt = (int)((rng >> 50) % 3);
        if (op == 0 && n[s] > 0) { /* release the sequence, last block first */
            for (int k = n[s] - 1; k >= 0; k--)
                tn_blocks_unref(bm, table[s][k]);
            n[s] = 0;
        } else if (n[s] == 0) { /* start: take cached prefix blocks, then allocate */
            uint64_t h = 0;
            int32_t tk[BS];
            int len = 1 + (int)((rng >> 20) % MAXB);
            for (int k = 0; k < len; k++) {
                fill(tk, prompt, k);
                h = tn_blocks_hash(h, tk, BS);
                int32_t b = tn_blocks_lookup(bm, h, tk);
                if (b >= 0) {
                    tn_blocks_ref(bm, b);
                } else {
                    b = tn_blocks_alloc(bm);
                    if (b < 0)
                        break;
                    tn_blocks_set_hash(bm, b, h, tk);
                }
                table[s][n[s]++] = b;
            }
        }
        /* Invariant: refcount == number of tables holding the block. */
        int32_t count[NB] = {0};
        for (int q = 0; q < NSEQ; q++)
            for (int k = 0; k < n[q]; k++)
                count[table[q][k]]++;
        int32_t n_free = 0;
        for (int b = 0; b < NB; b++) {
            assert_int_equal(tn_blocks_refcount(bm, b), count[b]);
            n_free += count[b] == 0;
        }
        assert_int_equal(tn_blocks_n_free(bm), n_free);
    }
    for (int q = 0; q < NSEQ; q++)
        for (int k = n[q] - 1; k >= 0; k--)
            tn_blocks_unref(bm, table[q][k]);
    assert_int_equal(tn_blocks_n_free(bm), NB);
    for (int b = 0; b < NB; b++)
        assert_int_equal(tn_blocks_refcount(bm, b), 0);
    tn_blocks_free(bm);
}

static void test_bad_sizes(void **state)
{
    tn_blocks *bm = NULL;
    assert_int_equal(tn_blocks_new(0, 16, &bm), TN_ERR_INVALID);
    assert_int_equal(tn_blocks_new(4, 0, &bm), TN_ERR_INVALID);
    assert_null(bm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refcounts),
        cmocka_unit_test(test_hash_hits),
        cmocka_unit_test(test_lru_order),
        cmocka_unit_test(test_no_leak_random),
        cmocka_unit_test(test_bad_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
