/*
 * comm_single.c — the communicator of one process: rank 0 of 1. Barrier and
 * all-reduce do nothing, all-gather and all-to-all-v copy this rank's block,
 * send/recv have no peer (comm.c refuses them). Lets the expert-parallel
 * code run unchanged with N = 1.
 */
#include "dist/comm_int.h"

#include <stdlib.h>
#include <string.h>

static void single_free(tn_comm *c) { free(c); }

static tn_status single_barrier(tn_comm *c) { return TN_OK; }

static tn_status single_allreduce(tn_comm *c, float *buf, size_t n) { return TN_OK; }

static tn_status single_allgather(tn_comm *c, const void *send, size_t bytes, void *recv)
{
    if (bytes > 0)
        memmove(recv, send, bytes);
    return TN_OK;
}

static tn_status single_alltoallv(tn_comm *c, const void *send, const size_t *send_counts, const size_t *send_displs,
                                  void *recv, const size_t *recv_counts, const size_t *recv_displs)
{
    if (send_counts[0] > 0)
        memmove((char *)recv + recv_displs[0], (const char *)send + send_displs[0], send_counts[0]);
    return TN_OK;
}

/* Unreachable: comm.c rejects every peer of a one-rank communicator. */
static tn_status single_p2p(tn_comm *c, int peer, int tag, const void *buf, size_t bytes)
{
    return tn__err(TN_ERR_INVALID, "comm(single): no peer %d", peer);
}

static tn_status single_recv(tn_comm *c, int peer, int tag, void *buf, size_t bytes)
{
    return single_p2p(c, peer, tag, buf, bytes);
}

static const tn__comm_ops single_ops = {
    .kind = "single",
    .free = single_free,
    .barrier = single_barrier,
    .allreduce_sum_f32 = single_allreduce,
    .allgather = single_allgather,
    .alltoallv = single_alltoallv,
    .send = single_p2p,
    .recv = single_recv,
};

tn_status tn_comm_single_new(tn_comm **out)
{
    tn_comm *c = calloc(1, sizeof *c);
    *out = c;
    if (!c)
        return tn__err(TN_ERR_NOMEM, "comm(single): out of memory");
    c->ops = &single_ops;
    c->rank = 0;
    c->size = 1;
    c->timeout_s = TN_COMM_TIMEOUT_DEFAULT;
    return TN_OK;
}
