/*
 * comm.c — the implementation-independent half of tn_comm: argument checks,
 * the broken flag, and dispatch to comm_single.c or comm_mpi.c.
 */
#include "dist/comm_int.h"

#include <stdlib.h>

void tn_comm_free(tn_comm *c)
{
    if (c)
        c->ops->free(c);
}

int tn_comm_rank(const tn_comm *c) { return c->rank; }
int tn_comm_size(const tn_comm *c) { return c->size; }
const char *tn_comm_kind(const tn_comm *c) { return c->ops->kind; }
bool tn_comm_broken(const tn_comm *c) { return c->broken; }
double tn_comm_timeout(const tn_comm *c) { return c->timeout_s; }

tn_status tn_comm_set_timeout(tn_comm *c, double seconds)
{
    if (!(seconds > 0.0) || seconds > 1e9)
        return tn__err(TN_ERR_INVALID, "comm: timeout %g s is not in (0, 1e9]", seconds);
    c->timeout_s = seconds;
    return TN_OK;
}

/* Common entry of every operation: refuses a broken communicator and
 * numbers the operation. */
static tn_status begin(tn_comm *c, const char *op)
{
    if (c->broken)
        return tn__err(TN_ERR_IO, "comm(%s) rank %d: %s: communicator unusable after an earlier failure",
                       c->ops->kind, c->rank, op);
    c->n_ops++;
    return TN_OK;
}

/* Common exit: a failed operation breaks the communicator. */
static tn_status end(tn_comm *c, tn_status s)
{
    if (s != TN_OK)
        c->broken = true;
    return s;
}

static tn_status check_peer(const tn_comm *c, const char *op, int peer, int tag)
{
    if (peer < 0 || peer >= c->size || peer == c->rank)
        return tn__err(TN_ERR_INVALID, "comm(%s) rank %d: %s: peer %d is not another rank of %d", c->ops->kind,
                       c->rank, op, peer, c->size);
    if (tag < 0 || tag > TN__COMM_TAG_MAX)
        return tn__err(TN_ERR_INVALID, "comm(%s) rank %d: %s: tag %d not in [0, %d]", c->ops->kind, c->rank, op, tag,
                       TN__COMM_TAG_MAX);
    return TN_OK;
}

tn_status tn_comm_barrier(tn_comm *c)
{
    tn_status s = begin(c, "barrier");
    return s != TN_OK ? s : end(c, c->ops->barrier(c));
}

tn_status tn_comm_allreduce_sum_f32(tn_comm *c, float *buf, size_t n)
{
    tn_status s = begin(c, "all-reduce");
    if (s != TN_OK)
        return s;
    if (n > 0 && !buf)
        return tn__err(TN_ERR_INVALID, "comm: all-reduce of %zu values from NULL", n);
    return end(c, c->ops->allreduce_sum_f32(c, buf, n));
}

tn_status tn_comm_allgather(tn_comm *c, const void *send, size_t bytes, void *recv)
{
    tn_status s = begin(c, "all-gather");
    if (s != TN_OK)
        return s;
    if (bytes > 0 && (!send || !recv))
        return tn__err(TN_ERR_INVALID, "comm: all-gather of %zu bytes with a NULL buffer", bytes);
    return end(c, c->ops->allgather(c, send, bytes, recv));
}

tn_status tn_comm_alltoallv(tn_comm *c, const void *send, const size_t *send_counts, const size_t *send_displs,
                            void *recv, const size_t *recv_counts, const size_t *recv_displs)
{
    tn_status s = begin(c, "all-to-all-v");
    if (s != TN_OK)
        return s;
    if (!send_counts || !send_displs || !recv_counts || !recv_displs)
        return tn__err(TN_ERR_INVALID, "comm: all-to-all-v without counts or displacements");
    if (send_counts[c->rank] != recv_counts[c->rank])
        return tn__err(TN_ERR_INVALID, "comm: all-to-all-v: rank %d sends itself %zu bytes but expects %zu", c->rank,
                       send_counts[c->rank], recv_counts[c->rank]);
    for (int r = 0; r < c->size; r++)
        if ((send_counts[r] > 0 && !send) || (recv_counts[r] > 0 && !recv))
            return tn__err(TN_ERR_INVALID, "comm: all-to-all-v: %zu/%zu bytes for rank %d with a NULL buffer",
                           send_counts[r], recv_counts[r], r);
    return end(c, c->ops->alltoallv(c, send, send_counts, send_displs, recv, recv_counts, recv_displs));
}

tn_status tn_comm_send(tn_comm *c, int dst, int tag, const void *buf, size_t bytes)
{
    tn_status s = check_peer(c, "send", dst, tag);
    if (s == TN_OK && bytes > 0 && !buf)
        s = tn__err(TN_ERR_INVALID, "comm: send of %zu bytes from NULL", bytes);
    if (s != TN_OK)
        return s;
    s = begin(c, "send");
    return s != TN_OK ? s : end(c, c->ops->send(c, dst, tag, buf, bytes));
}

tn_status tn_comm_recv(tn_comm *c, int src, int tag, void *buf, size_t bytes)
{
    tn_status s = check_peer(c, "recv", src, tag);
    if (s == TN_OK && bytes > 0 && !buf)
        s = tn__err(TN_ERR_INVALID, "comm: recv of %zu bytes into NULL", bytes);
    if (s != TN_OK)
        return s;
    s = begin(c, "recv");
    return s != TN_OK ? s : end(c, c->ops->recv(c, src, tag, buf, bytes));
}
