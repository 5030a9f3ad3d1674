/*
 * comm_int.h — what a communicator implementation provides (comm_single.c,
 * comm_mpi.c). comm.c checks every argument, the broken flag and the tag
 * range before calling an operation, and marks the communicator broken
 * when one fails; an implementation only moves bytes and reports.
 */
#ifndef TERN_DIST_COMM_INT_H
#define TERN_DIST_COMM_INT_H

#include "dist/comm.h"

/* One implementation. Every member is required. Operations receive checked
 * arguments and must return within c->timeout_s of their start; on failure
 * they set the error message (tn__err) naming the rank, the operation and
 * the peer, and return TN_ERR_IO (or TN_ERR_NOMEM / TN_ERR_RANGE). */
typedef struct tn__comm_ops {
    const char *kind;
    void (*free)(tn_comm *c);
    tn_status (*barrier)(tn_comm *c);
    tn_status (*allreduce_sum_f32)(tn_comm *c, float *buf, size_t n);
    tn_status (*allgather)(tn_comm *c, const void *send, size_t bytes, void *recv);
    tn_status (*alltoallv)(tn_comm *c, const void *send, const size_t *send_counts, const size_t *send_displs,
                           void *recv, const size_t *recv_counts, const size_t *recv_displs);
    tn_status (*send)(tn_comm *c, int dst, int tag, const void *buf, size_t bytes);
    tn_status (*recv)(tn_comm *c, int src, int tag, void *buf, size_t bytes);
} tn__comm_ops;

struct tn_comm {
    const tn__comm_ops *ops;
    int rank;
    int size;
    double timeout_s;
    bool broken;
    uint64_t n_ops;     /* operations started: numbers them in messages */
    void *impl;         /* the implementation's state */
};

/* Largest point-to-point tag. */
#define TN__COMM_TAG_MAX 32767

#endif /* TERN_DIST_COMM_INT_H */
