/*
 * comm — the communication interface (DESIGN.md, "Communication"): rank,
 * size, barrier, all-reduce, all-gather, all-to-all-v, send/recv, over a
 * group of processes. Expert-parallel dispatch/combine, tensor-parallel
 * all-reduce and the load balancer talk to each other only through it.
 *
 * Implementations: one process (comm_single.c; size 1, collectives are
 * copies) and Open MPI (comm_mpi.c, the only file that includes mpi.h). A
 * later NCCL/HCCL-style backend adds one file and one constructor.
 *
 * Key idea: NO CALL WAITS FOREVER. Every operation must finish within the
 * communicator's timeout (tn_comm_set_timeout; 60 s by default) measured
 * from its start. A peer that died, hangs, or called a different operation
 * makes the call fail with TN_ERR_IO and a message naming this rank, the
 * operation, and the peer rank it was still waiting for, e.g.
 *   "comm(mpi) rank 0: all-to-all-v #12: timed out after 2.0 s waiting for rank 3 (1 of 3 peers pending)"
 * After any failure the communicator is BROKEN: every later call returns
 * TN_ERR_IO at once (messages may be in flight; the collective sequence is
 * lost). The caller's only move is to report and exit non-zero (tools/), at
 * which point mpirun ends the job. A bounded wait is what turns a dead peer
 * into an error instead of a hang; the price is that a peer slower than the
 * timeout is indistinguishable from a dead one, so the timeout must exceed
 * the longest step that can separate two ranks.
 *
 * Semantics shared by every implementation:
 *   - Collectives are called by every rank in the same order with matching
 *     arguments (the same n, the same bytes per rank; all-to-all-v counts
 *     agree pairwise: what rank a sends to b is what b expects from a).
 *   - Results are identical on every rank, bit for bit: the all-reduce adds
 *     the ranks' vectors in rank order 0, 1, ..., size-1 on every rank.
 *   - Buffers are borrowed for the duration of the call only.
 *   - One thread per communicator (the engine thread); not thread-safe.
 */
#ifndef TERN_DIST_COMM_H
#define TERN_DIST_COMM_H

#include "base/base.h"

typedef struct tn_comm tn_comm;

/* Default per-operation timeout, seconds. */
#define TN_COMM_TIMEOUT_DEFAULT 60.0

/* A communicator of one process (rank 0, size 1). TN_ERR_NOMEM only. */
tn_status tn_comm_single_new(tn_comm **out) TN_MUST_CHECK;

/* The processes of this MPI job (MPI_COMM_WORLD, duplicated so that tern's
 * messages never mix with anyone else's). Initializes MPI (thread level
 * SERIALIZED: one thread at a time calls MPI, the one that owns the
 * communicator; `tern serve` hands it from its main thread to the engine
 * thread and back) unless
 * the program already did; then the last tn_comm_free of an MPI
 * communicator finalizes it. MPI errors are returned, never aborted on
 * (MPI_ERRORS_RETURN). Run outside mpirun, it is a job of one.
 * Errors: TN_ERR_UNSUPPORTED when tern was built without MPI or MPI was
 * already finalized; TN_ERR_IO when MPI fails to start; TN_ERR_NOMEM. */
tn_status tn_comm_mpi_new(tn_comm **out) TN_MUST_CHECK;

/* Frees c. An MPI communicator that is broken does NOT finalize MPI (that
 * would wait for the dead peer): the process is expected to exit non-zero
 * soon after. NULL is fine. */
void tn_comm_free(tn_comm *c);

int tn_comm_rank(const tn_comm *c);
int tn_comm_size(const tn_comm *c);
/* "single" or "mpi". */
const char *tn_comm_kind(const tn_comm *c);
/* Whether an earlier call failed (every call now returns TN_ERR_IO). */
bool tn_comm_broken(const tn_comm *c);

/* Per-operation timeout in seconds (> 0; TN_ERR_INVALID otherwise). Every
 * rank should use the same value. */
tn_status tn_comm_set_timeout(tn_comm *c, double seconds) TN_MUST_CHECK;
double tn_comm_timeout(const tn_comm *c);

/* Returns once every rank has entered the barrier. */
tn_status tn_comm_barrier(tn_comm *c) TN_MUST_CHECK;

/* buf ((n) f32) becomes, on every rank, the element-wise sum of all ranks'
 * buf, added in rank order. n may be 0. */
tn_status tn_comm_allreduce_sum_f32(tn_comm *c, float *buf, size_t n) TN_MUST_CHECK;

/* recv ((size, bytes)) gets every rank's `bytes` bytes of send, in rank
 * order (recv + r*bytes holds rank r's). send and recv must not overlap. */
tn_status tn_comm_allgather(tn_comm *c, const void *send, size_t bytes, void *recv) TN_MUST_CHECK;

/* All-to-all with per-peer sizes, in bytes: this rank sends
 * send[send_displs[r] ..+ send_counts[r]] to rank r and receives rank r's
 * message into recv[recv_displs[r] ..+ recv_counts[r]]; every array has
 * size entries. Counts may be 0 (the exchange still checks the peer is
 * alive). Typically the counts are first exchanged with tn_comm_allgather
 * or a small all-to-all-v of fixed size. A peer whose message has a length
 * other than recv_counts[r] is TN_ERR_IO. send_counts[rank] must equal
 * recv_counts[rank] (TN_ERR_INVALID). Counts above INT_MAX are TN_ERR_RANGE
 * for MPI. The receive regions must not overlap each other or send. */
tn_status tn_comm_alltoallv(tn_comm *c, const void *send, const size_t *send_counts, const size_t *send_displs,
                            void *recv, const size_t *recv_counts, const size_t *recv_displs) TN_MUST_CHECK;

/* Point to point, on a channel separate from the collectives. send
 * returns once buf may be reused (the message is buffered or delivered);
 * recv waits for a message from src with this tag that must be exactly
 * `bytes` long (TN_ERR_IO otherwise). tag in [0, 32767]; peer != own rank
 * and in range (TN_ERR_INVALID otherwise, so a single-process communicator
 * accepts no send/recv at all). */
tn_status tn_comm_send(tn_comm *c, int dst, int tag, const void *buf, size_t bytes) TN_MUST_CHECK;
tn_status tn_comm_recv(tn_comm *c, int src, int tag, void *buf, size_t bytes) TN_MUST_CHECK;

#endif /* TERN_DIST_COMM_H */
