/*
 * comm_mpi.c — tn_comm over Open MPI: the only file of tern that includes
 * mpi.h. Built when CMake finds MPI (TERN_HAVE_MPI); otherwise
 * tn_comm_mpi_new says so.
 *
 * Key idea: every operation is a set of nonblocking point-to-point
 * requests (MPI_Isend / MPI_Irecv, one or two per peer) polled with
 * MPI_Testsome against a deadline, never a blocking MPI call. Because each
 * request belongs to one known peer, a timeout can say exactly which ranks
 * never answered, which a blocking (or even a nonblocking) MPI collective
 * cannot.
 *
 * HOW IT WORKS
 *   - Two duplicates of MPI_COMM_WORLD: one for collectives, one for
 *     send/recv, so a user message never matches a collective's.
 *   - A collective's messages carry the tag (op number mod 4096) * 8 + kind:
 *     ranks that call different collectives, or get out of step, do not
 *     consume each other's messages; they time out and say so.
 *   - barrier: a zero-byte message to and from every peer.
 *     all-gather: this rank's block to every peer, theirs straight into
 *     place. all-to-all-v: one message per peer each way (zero bytes
 *     included, so liveness is checked even when there is nothing to say).
 *     all-reduce: an all-gather of the vectors into scratch, then the sum in
 *     rank order on every rank, so every rank gets the same bits.
 *   - Waiting: MPI_Testsome in a loop: ~200 polls back to back (a
 *     collective on one node completes in microseconds), then a 50 µs sleep
 *     between polls so that oversubscribed ranks leave the cores to each
 *     other. Each completed receive's length is checked against the
 *     expected one.
 *   - MPI_ERRORS_RETURN on the communicators: an MPI error comes back as a
 *     code, turned into TN_ERR_IO with MPI's own text and the peer.
 *
 * EDGE CASES: on a timeout the pending receives are cancelled and every
 * pending request is released; the communicator is broken (comm.c) and is
 * never used again, nor is MPI finalized (MPI_Finalize would wait for the
 * dead peer). A peer that exits makes Open MPI's runtime end the whole job
 * by itself; a peer that hangs is caught by the deadline.
 *
 * LIMITATIONS: size*(size-1) messages per collective and an all-gather
 * based all-reduce (each rank receives (size-1)*n values): right for the
 * small control messages and the dozens of ranks of expert parallelism,
 * wrong for a tensor-parallel all-reduce of large activations over many
 * ranks, which wants a ring (reduce-scatter + all-gather) behind the same
 * call. One message may carry at most INT_MAX bytes. MPI_Comm_dup at
 * creation is a blocking collective (before any deadline exists).
 */
#include "dist/comm_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef TERN_HAVE_MPI

tn_status tn_comm_mpi_new(tn_comm **out)
{
    *out = NULL;
    return tn__err(TN_ERR_UNSUPPORTED, "comm: this tern was built without MPI (install libopenmpi-dev, reconfigure)");
}

#else

#include <limits.h>
#include <mpi.h>

/* Receive-length marker for a send request. */
#define WANT_SEND ((size_t)-1)

enum { K_BARRIER = 1, K_ALLGATHER, K_ALLTOALLV, K_ALLREDUCE };

typedef struct mpi_state {
    MPI_Comm coll;          /* collectives */
    MPI_Comm p2p;           /* send/recv */
    MPI_Request *req;       /* (2*size) requests of the operation in progress */
    int *req_peer;          /* (2*size) the peer of each */
    size_t *req_want;       /* (2*size) bytes a receive expects; WANT_SEND for sends */
    int *idx;               /* (2*size) MPI_Testsome indices */
    MPI_Status *st;         /* (2*size) MPI_Testsome statuses */
    char *peer_mark;        /* (size) scratch for counting pending peers */
    float *red;             /* (size, red_cap) all-reduce scratch, grow-only */
    size_t red_cap;
} mpi_state;

/* Live MPI communicators, and whether tern called MPI_Init (then the last
 * free finalizes). Only the owner thread touches them. */
static int live_comms;
static bool we_initialized;

/* The target of zero-byte messages (MPI wants a valid address). */
static char zero_byte;

static const char *mpi_text(int code, char *buf)
{
    int len = 0;
    if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS)
        snprintf(buf, MPI_MAX_ERROR_STRING, "MPI error %d", code);
    return buf;
}

static void sleep_us(long us)
{
    struct timespec ts = {0, us * 1000L};
    nanosleep(&ts, NULL);
}

/* Releases the requests still pending after a failure. */
static void drop_pending(mpi_state *m, int n)
{
    for (int i = 0; i < n; i++) {
        if (m->req[i] == MPI_REQUEST_NULL)
            continue;
        if (m->req_want[i] != WANT_SEND)
            MPI_Cancel(&m->req[i]);
        MPI_Request_free(&m->req[i]);
    }
}

/*
 * Polls the operation's n requests until all completed, one failed, or the
 * deadline passed. op names the operation in messages.
 */
static tn_status wait_all(tn_comm *c, const char *op, int n)
{
    mpi_state *m = c->impl;
    const double t0 = tn_time_s(), deadline = t0 + c->timeout_s;
    char text[MPI_MAX_ERROR_STRING];
    for (int polls = 0;; polls++) {
        int done = 0;
        int rc = MPI_Testsome(n, m->req, &done, m->idx, m->st);
        if (rc != MPI_SUCCESS) {
            int peer = -1, code = rc;
            if (rc == MPI_ERR_IN_STATUS)
                for (int k = 0; k < done; k++)
                    if (m->st[k].MPI_ERROR != MPI_SUCCESS) {
                        peer = m->req_peer[m->idx[k]];
                        code = m->st[k].MPI_ERROR;
                        break;
                    }
            drop_pending(m, n);
            return tn__err(TN_ERR_IO, "comm(mpi) rank %d: %s #%llu: MPI error with rank %d: %s", c->rank, op,
                           (unsigned long long)c->n_ops, peer, mpi_text(code, text));
        }
        if (done == MPI_UNDEFINED)
            return TN_OK;
        for (int k = 0; k < done; k++) {
            int i = m->idx[k], got = 0;
            if (m->req_want[i] == WANT_SEND)
                continue;
            MPI_Get_count(&m->st[k], MPI_BYTE, &got);
            if ((size_t)got != m->req_want[i]) {
                drop_pending(m, n);
                return tn__err(TN_ERR_IO, "comm(mpi) rank %d: %s #%llu: rank %d sent %d bytes, expected %zu", c->rank,
                               op, (unsigned long long)c->n_ops, m->req_peer[i], got, m->req_want[i]);
            }
        }
        if (done > 0)
            continue;
        double now = tn_time_s();
        if (now > deadline) {
            int first = -1, pending = 0, peers = 0;
            memset(m->peer_mark, 0, (size_t)c->size);
            for (int i = 0; i < n; i++) {
                int p = m->req_peer[i];
                if (!m->peer_mark[p]) {
                    m->peer_mark[p] = 1;
                    peers++;
                }
                if (m->req[i] != MPI_REQUEST_NULL && m->peer_mark[p] == 1) {
                    m->peer_mark[p] = 2;
                    pending++;
                    if (first < 0)
                        first = p;
                }
            }
            drop_pending(m, n);
            return tn__err(TN_ERR_IO,
                           "comm(mpi) rank %d: %s #%llu: timed out after %.1f s waiting for rank %d (%d of %d peers "
                           "pending; dead, hung, or in a different operation)",
                           c->rank, op, (unsigned long long)c->n_ops, now - t0, first, pending, peers);
        }
        if (polls > 200)
            sleep_us(50);
    }
}

/* Adds request i: a receive of want bytes from peer, or a send. */
static tn_status post(tn_comm *c, const char *op, int i, bool is_send, int peer, MPI_Comm comm, int tag, void *buf,
                      size_t bytes)
{
    mpi_state *m = c->impl;
    char text[MPI_MAX_ERROR_STRING];
    m->req_peer[i] = peer;
    m->req_want[i] = is_send ? WANT_SEND : bytes;
    if (bytes > INT_MAX) {
        drop_pending(m, i);
        return tn__err(TN_ERR_RANGE, "comm(mpi) rank %d: %s: %zu bytes for rank %d exceed one MPI message (INT_MAX)",
                       c->rank, op, bytes, peer);
    }
    if (bytes == 0)
        buf = &zero_byte;
    int rc = is_send ? MPI_Isend(buf, (int)bytes, MPI_BYTE, peer, tag, comm, &m->req[i])
                     : MPI_Irecv(buf, (int)bytes, MPI_BYTE, peer, tag, comm, &m->req[i]);
    if (rc != MPI_SUCCESS) {
        m->req[i] = MPI_REQUEST_NULL;
        drop_pending(m, i);
        return tn__err(TN_ERR_IO, "comm(mpi) rank %d: %s #%llu: posting a %s with rank %d: %s", c->rank, op,
                       (unsigned long long)c->n_ops, is_send ? "send" : "receive", peer, mpi_text(rc, text));
    }
    return TN_OK;
}

static int coll_tag(const tn_comm *c, int kind) { return (int)(c->n_ops % 4096) * 8 + kind; }

/*
 * The one exchange every collective is made of: to each peer p, send
 * sbuf(p) of sbytes(p); from each, receive rbytes(p) into rbuf(p). Given as
 * bases, per-peer displacements (NULL: p * stride) and counts (NULL: the
 * fixed size).
 */
typedef struct xchg {
    const char *sbase;
    const size_t *scount, *sdispl;
    size_t sfixed;    /* bytes to each peer when scount == NULL; sent from sbase (same block to all) */
    char *rbase;
    const size_t *rcount, *rdispl;
    size_t rfixed;    /* bytes from each peer when rcount == NULL, at rbase + p * rfixed */
} xchg;

static tn_status exchange(tn_comm *c, const char *op, int kind, const xchg *x)
{
    mpi_state *m = c->impl;
    const int tag = coll_tag(c, kind);
    int n = 0;
    tn_status s;
    for (int p = 0; p < c->size; p++) {
        if (p == c->rank)
            continue;
        size_t rb = x->rcount ? x->rcount[p] : x->rfixed;
        char *rp = x->rbase ? x->rbase + (x->rdispl ? x->rdispl[p] : (size_t)p * x->rfixed) : NULL;
        if ((s = post(c, op, n++, false, p, m->coll, tag, rp, rb)) != TN_OK)
            return s;
    }
    for (int p = 0; p < c->size; p++) {
        if (p == c->rank)
            continue;
        size_t sb = x->scount ? x->scount[p] : x->sfixed;
        const char *sp = x->sbase ? x->sbase + (x->sdispl ? x->sdispl[p] : 0) : NULL;
        if ((s = post(c, op, n++, true, p, m->coll, tag, (void *)sp, sb)) != TN_OK)
            return s;
    }
    return wait_all(c, op, n);
}

static tn_status mpi_barrier(tn_comm *c)
{
    xchg x = {0};
    return exchange(c, "barrier", K_BARRIER, &x);
}

static tn_status mpi_allgather(tn_comm *c, const void *send, size_t bytes, void *recv)
{
    xchg x = {.sbase = send, .sfixed = bytes, .rbase = recv, .rfixed = bytes};
    tn_status s = exchange(c, "all-gather", K_ALLGATHER, &x);
    if (s == TN_OK && bytes > 0)
        memcpy((char *)recv + (size_t)c->rank * bytes, send, bytes);
    return s;
}

static tn_status mpi_alltoallv(tn_comm *c, const void *send, const size_t *send_counts, const size_t *send_displs,
                               void *recv, const size_t *recv_counts, const size_t *recv_displs)
{
    xchg x = {.sbase = send, .scount = send_counts, .sdispl = send_displs,
              .rbase = recv, .rcount = recv_counts, .rdispl = recv_displs};
    tn_status s = exchange(c, "all-to-all-v", K_ALLTOALLV, &x);
    if (s == TN_OK && send_counts[c->rank] > 0)
        memmove((char *)recv + recv_displs[c->rank], (const char *)send + send_displs[c->rank],
                send_counts[c->rank]);
    return s;
}

static tn_status mpi_allreduce(tn_comm *c, float *buf, size_t n)
{
    mpi_state *m = c->impl;
    if (c->size == 1 || n == 0) {
        xchg x = {0};
        return c->size == 1 ? TN_OK : exchange(c, "all-reduce", K_ALLREDUCE, &x);
    }
    if (n > m->red_cap) {
        float *r = realloc(m->red, (size_t)c->size * n * sizeof(float));
        if (!r)
            return tn__err(TN_ERR_NOMEM, "comm(mpi) rank %d: all-reduce: no scratch for %d x %zu values", c->rank,
                           c->size, n);
        m->red = r;
        m->red_cap = n;
    }
    const size_t bytes = n * sizeof(float);
    xchg x = {.sbase = (const char *)buf, .sfixed = bytes, .rbase = (char *)m->red, .rfixed = bytes};
    tn_status s = exchange(c, "all-reduce", K_ALLREDUCE, &x);
    if (s != TN_OK)
        return s;
    memcpy(m->red + (size_t)c->rank * n, buf, bytes);
    memcpy(buf, m->red, bytes);
    for (int r = 1; r < c->size; r++) {
        const float *v = m->red + (size_t)r * n;
        for (size_t j = 0; j < n; j++)
            buf[j] += v[j];
    }
    return TN_OK;
}

static tn_status mpi_send(tn_comm *c, int dst, int tag, const void *buf, size_t bytes)
{
    mpi_state *m = c->impl;
    tn_status s = post(c, "send", 0, true, dst, m->p2p, tag, (void *)buf, bytes);
    return s != TN_OK ? s : wait_all(c, "send", 1);
}

static tn_status mpi_recv(tn_comm *c, int src, int tag, void *buf, size_t bytes)
{
    mpi_state *m = c->impl;
    tn_status s = post(c, "recv", 0, false, src, m->p2p, tag, buf, bytes);
    return s != TN_OK ? s : wait_all(c, "recv", 1);
}

static void state_free(mpi_state *m)
{
    if (!m)
        return;
    free(m->req);
    free(m->req_peer);
    free(m->req_want);
    free(m->idx);
    free(m->st);
    free(m->peer_mark);
    free(m->red);
    free(m);
}

static void mpi_free(tn_comm *c)
{
    mpi_state *m = c->impl;
    if (!c->broken) {
        MPI_Comm_free(&m->coll);
        MPI_Comm_free(&m->p2p);
        if (--live_comms == 0 && we_initialized)
            MPI_Finalize();
    }
    state_free(m);
    free(c);
}

static const tn__comm_ops mpi_ops = {
    .kind = "mpi",
    .free = mpi_free,
    .barrier = mpi_barrier,
    .allreduce_sum_f32 = mpi_allreduce,
    .allgather = mpi_allgather,
    .alltoallv = mpi_alltoallv,
    .send = mpi_send,
    .recv = mpi_recv,
};

tn_status tn_comm_mpi_new(tn_comm **out)
{
    *out = NULL;
    char text[MPI_MAX_ERROR_STRING];
    int inited = 0, finalized = 0, rc;
    MPI_Finalized(&finalized);
    if (finalized)
        return tn__err(TN_ERR_UNSUPPORTED, "comm(mpi): MPI was already finalized in this process");
    MPI_Initialized(&inited);
    if (!inited) {
        int provided = 0;
        rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
        if (rc != MPI_SUCCESS)
            return tn__err(TN_ERR_IO, "comm(mpi): MPI_Init_thread failed: %s", mpi_text(rc, text));
        we_initialized = true;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    tn_comm *c = calloc(1, sizeof *c);
    mpi_state *m = calloc(1, sizeof *m);
    if (!c || !m) {
        free(c);
        free(m);
        return tn__err(TN_ERR_NOMEM, "comm(mpi): out of memory");
    }
    c->ops = &mpi_ops;
    c->impl = m;
    c->timeout_s = TN_COMM_TIMEOUT_DEFAULT;
    m->coll = m->p2p = MPI_COMM_NULL;
    rc = MPI_Comm_dup(MPI_COMM_WORLD, &m->coll);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_dup(MPI_COMM_WORLD, &m->p2p);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_rank(m->coll, &c->rank);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_size(m->coll, &c->size);
    if (rc != MPI_SUCCESS) {
        state_free(m);
        free(c);
        return tn__err(TN_ERR_IO, "comm(mpi): creating the communicator failed: %s", mpi_text(rc, text));
    }
    size_t n = 2 * (size_t)c->size;
    m->req = malloc(n * sizeof *m->req);
    m->req_peer = malloc(n * sizeof *m->req_peer);
    m->req_want = malloc(n * sizeof *m->req_want);
    m->idx = malloc(n * sizeof *m->idx);
    m->st = malloc(n * sizeof *m->st);
    m->peer_mark = malloc((size_t)c->size);
    live_comms++;
    if (!m->req || !m->req_peer || !m->req_want || !m->idx || !m->st || !m->peer_mark) {
        mpi_free(c);
        return tn__err(TN_ERR_NOMEM, "comm(mpi): out of memory for %d ranks", c->size);
    }
    for (size_t i = 0; i < n; i++)
        m->req[i] = MPI_REQUEST_NULL;
    *out = c;
    return TN_OK;
}

#endif /* TERN_HAVE_MPI */
