/*
 * test_comm.c — the single-process communicator: rank 0 of 1, collectives
 * are copies (all-gather, all-to-all-v with displacements) or leave the
 * data alone (all-reduce), send/recv and bad arguments are named errors,
 * and the timeout setting is checked. The MPI implementation is tested
 * only under mpirun in a private network namespace (an MPI singleton would
 * start its runtime on the machine's real interfaces):
 * tests/cli/test_mpi_comm.sh with tests/dist/mpi_comm_check.c.
 */
#include "dist/comm.h"
#include "testutil.h"

#include <string.h>

static tn_comm *single(void)
{
    tn_comm *c = NULL;
    assert_int_equal(tn_comm_single_new(&c), TN_OK);
    assert_non_null(c);
    return c;
}

static void test_identity(void **state)
{
    tn_comm *c = single();
    assert_int_equal(tn_comm_rank(c), 0);
    assert_int_equal(tn_comm_size(c), 1);
    assert_string_equal(tn_comm_kind(c), "single");
    assert_false(tn_comm_broken(c));
    assert_true(tn_comm_timeout(c) == TN_COMM_TIMEOUT_DEFAULT);
    assert_int_equal(tn_comm_set_timeout(c, 2.5), TN_OK);
    assert_true(tn_comm_timeout(c) == 2.5);
    assert_int_equal(tn_comm_set_timeout(c, 0.0), TN_ERR_INVALID);
    assert_int_equal(tn_comm_set_timeout(c, -1.0), TN_ERR_INVALID);
    assert_true(tn_comm_timeout(c) == 2.5);
    assert_int_equal(tn_comm_barrier(c), TN_OK);
    tn_comm_free(c);
    tn_comm_free(NULL);
}

static void test_collectives_copy(void **state)
{
    tn_comm *c = single();
    float v[5] = {1.5f, -2.0f, 0.0f, 3.25f, 1e30f};
    const float v0[5] = {1.5f, -2.0f, 0.0f, 3.25f, 1e30f};
    assert_int_equal(tn_comm_allreduce_sum_f32(c, v, 5), TN_OK);
    assert_memory_equal(v, v0, sizeof v);
    assert_int_equal(tn_comm_allreduce_sum_f32(c, NULL, 0), TN_OK);

    char out[7] = "xxxxxx";
    assert_int_equal(tn_comm_allgather(c, "abcdef", 6, out), TN_OK);
    assert_string_equal(out, "abcdef");
    assert_int_equal(tn_comm_allgather(c, NULL, 0, NULL), TN_OK);

    /* all-to-all-v honours both displacements. */
    const char send[] = "0123456789";
    char recv[12];
    memset(recv, '.', sizeof recv);
    size_t sc[1] = {4}, sd[1] = {3}, rc[1] = {4}, rd[1] = {5};
    assert_int_equal(tn_comm_alltoallv(c, send, sc, sd, recv, rc, rd), TN_OK);
    assert_memory_equal(recv, ".....3456...", 12);
    size_t z[1] = {0};
    assert_int_equal(tn_comm_alltoallv(c, NULL, z, z, NULL, z, z), TN_OK);
    assert_false(tn_comm_broken(c));
    tn_comm_free(c);
}

static void test_bad_arguments(void **state)
{
    tn_comm *c = single();
    char b[4] = {0};
    /* No peer exists: send/recv to rank 0 (self) or 1 (out of range). */
    assert_int_equal(tn_comm_send(c, 0, 1, b, 4), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "peer 0"));
    assert_int_equal(tn_comm_recv(c, 1, 1, b, 4), TN_ERR_INVALID);
    assert_int_equal(tn_comm_send(c, -1, 1, b, 4), TN_ERR_INVALID);
    /* Counts that disagree with themselves. */
    size_t sc[1] = {4}, rc[1] = {3}, d[1] = {0};
    assert_int_equal(tn_comm_alltoallv(c, b, sc, d, b + 1, rc, d), TN_ERR_INVALID);
    assert_non_null(strstr(tn_last_error(), "all-to-all-v"));
    assert_int_equal(tn_comm_alltoallv(c, b, NULL, d, b, rc, d), TN_ERR_INVALID);
    assert_int_equal(tn_comm_allgather(c, NULL, 4, b), TN_ERR_INVALID);
    assert_int_equal(tn_comm_allreduce_sum_f32(c, NULL, 3), TN_ERR_INVALID);
    /* Argument errors are the caller's, not the group's: still usable. */
    assert_false(tn_comm_broken(c));
    assert_int_equal(tn_comm_barrier(c), TN_OK);
    tn_comm_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_collectives_copy),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
