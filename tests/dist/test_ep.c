/*
 * test_ep.c — expert-parallel dispatch/combine on one process (the same
 * code as N ranks with N = 1): the layer's output matches a naive double
 * reference of the routed experts (through the placement map), tokens
 * computed in one batch or one by one give the same bits, an empty batch
 * works, placement arguments and malformed routing are named errors. The
 * multi-rank equality is tests/cli/test_mpi_comm.sh ("ep" mode).
 */
#include "dist/ep.h"
#include "ep_testmodel.h"
#include "testutil.h"

#include <math.h>
#include <string.h>

enum { N_TOK = 37 };

static void test_matches_reference(void **state)
{
    ep_testmodel tm;
    assert_true(ept_make(&tm, 12345));
    tn_comm *c = NULL;
    assert_int_equal(tn_comm_single_new(&c), TN_OK);
    tn_ep *ep = NULL;
    assert_int_equal(tn_ep_new(c, &tm.m, N_TOK, NULL, &ep), TN_OK);
    static float x[N_TOK * EPT_EMBD], w[N_TOK * EPT_USED], out[N_TOK * EPT_EMBD], one[EPT_EMBD];
    static int32_t sel[N_TOK * EPT_USED];
    static double ref[N_TOK * EPT_EMBD];
    for (int il = 0; il < EPT_LAYERS; il++) {
        ept_batch(777 + il, N_TOK, x, sel, w);
        assert_int_equal(tn_ep_moe_ffn(ep, NULL, il, x, N_TOK, sel, w, out), TN_OK);
        ept_reference(&tm, il, N_TOK, x, sel, w, ref);
        double max_err = 0, max_ref = 0;
        for (int i = 0; i < N_TOK * EPT_EMBD; i++) {
            max_err = fmax(max_err, fabs(out[i] - ref[i]));
            max_ref = fmax(max_ref, fabs(ref[i]));
        }
        assert_true(max_ref > 0.1);
        assert_true(max_err <= 1e-5 * max_ref);
        assert_int_equal(tn_ep_rows_computed(ep), N_TOK * EPT_USED);
        assert_int_equal(tn_ep_rows_sent(ep), 0);
        /* Token by token: the same bits as in the batch. */
        for (int i = 0; i < N_TOK; i++) {
            assert_int_equal(tn_ep_moe_ffn(ep, NULL, il, x + i * EPT_EMBD, 1, sel + i * EPT_USED, w + i * EPT_USED, one),
                             TN_OK);
            assert_memory_equal(one, out + i * EPT_EMBD, sizeof one);
        }
    }
    assert_int_equal(tn_ep_moe_ffn(ep, NULL, 0, NULL, 0, NULL, NULL, NULL), TN_OK);
    assert_int_equal(tn_ep_rows_computed(ep), 0);
    tn_ep_free(ep);
    tn_comm_free(c);
    ept_free(&tm);
}

static void test_errors(void **state)
{
    ep_testmodel tm;
    assert_true(ept_make(&tm, 1));
    tn_comm *c = NULL;
    assert_int_equal(tn_comm_single_new(&c), TN_OK);
    tn_ep *ep = NULL;
    int32_t owner[EPT_LAYERS * EPT_EXPERTS] = {0};
    owner[5] = 1; /* rank 1 of a communicator of 1 */
    assert_int_equal(tn_ep_new(c, &tm.m, 4, owner, &ep), TN_ERR_INVALID);
    assert_null(ep);
    assert_non_null(strstr(tn_last_error(), "expert 5"));
    assert_int_equal(tn_ep_new(c, &tm.m, 4, NULL, &ep), TN_OK);
    assert_int_equal(tn_ep_owner(ep, 1, 7), 0);
    assert_int_equal(tn_ep_set_owners(ep, 1, owner), TN_ERR_INVALID);
    assert_int_equal(tn_ep_set_owners(ep, 2, owner + EPT_EXPERTS), TN_ERR_INVALID);
    assert_int_equal(tn_ep_set_owners(ep, 1, owner + EPT_EXPERTS), TN_OK);

    float x[5 * EPT_EMBD] = {0}, w[5 * EPT_USED] = {0}, out[5 * EPT_EMBD];
    int32_t sel[5 * EPT_USED] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2};
    assert_int_equal(tn_ep_moe_ffn(ep, NULL, 0, x, 5, sel, w, out), TN_ERR_INVALID); /* 5 > 4 */
    sel[4] = EPT_EXPERTS;
    assert_int_equal(tn_ep_moe_ffn(ep, NULL, 0, x, 4, sel, w, out), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "token 1"));
    sel[4] = -1;
    assert_int_equal(tn_ep_moe_ffn(ep, NULL, 0, x, 4, sel, w, out), TN_ERR_INVALID);
    assert_int_equal(tn_ep_moe_ffn(ep, NULL, 2, x, 1, sel, w, out), TN_ERR_INVALID);
    assert_false(tn_comm_broken(c));
    tn_ep_free(ep);

    tm.m.hp.n_expert = 0;
    assert_int_equal(tn_ep_new(c, &tm.m, 4, NULL, &ep), TN_ERR_INVALID);
    tn_comm_free(c);
    ept_free(&tm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_reference),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
