/*
 * ep — expert parallelism for one MoE layer: the routed experts of a layer
 * are spread over the ranks of a tn_comm; each rank runs the attention of
 * its own tokens, and at each MoE layer every token travels to the ranks
 * holding its experts and its results come back (dispatch / combine).
 *
 * Placement: an owner map (n_layer, n_expert) says which rank computes
 * each logical expert; contiguous blocks by default (expert e on rank
 * e * size / n_expert). Inside a rank the expert is still addressed through
 * the model's expert_map (logical -> physical slot), never by raw index.
 * Every rank maps the whole model file; only the experts it computes are
 * read, so (mmap) only they become resident.
 *
 * The forward pass reaches it through model's routed-expert hook
 * (tn_ep_attach); routing and the shared expert stay on the token's rank.
 *
 * Not yet: replicas of hot experts (one owner per expert for now) and
 * overlap of communication with compute.
 */
#ifndef TERN_DIST_EP_H
#define TERN_DIST_EP_H

#include "dist/comm.h"
#include "model/model.h"

typedef struct tn_ep tn_ep;

/* Expert-parallel state for model m over comm, for batches of up to
 * n_batch_max local tokens. owner ((n_layer, n_expert) ranks, copied) may be
 * NULL for the contiguous default. m and comm are borrowed and must outlive
 * the result. TN_ERR_INVALID for a dense model or an owner out of
 * [0, size); TN_ERR_NOMEM. */
tn_status tn_ep_new(tn_comm *comm, const tn_model *m, int32_t n_batch_max, const int32_t *owner,
                    tn_ep **out) TN_MUST_CHECK;
void tn_ep_free(tn_ep *ep);

/* The rank that computes logical expert e of layer il. */
int32_t tn_ep_owner(const tn_ep *ep, int32_t il, int32_t e);

/* Replaces layer il's owners (n_expert ranks). Every rank must make the
 * same change between the same two calls. TN_ERR_INVALID for a rank out
 * of range (nothing changes then). */
tn_status tn_ep_set_owners(tn_ep *ep, int32_t il, const int32_t *owner) TN_MUST_CHECK;

/* The routed-expert part of MoE layer il for this rank's n tokens
 * (0 <= n <= n_batch_max; n == 0 still takes part: every rank calls this
 * for every MoE layer, in the same order). xn ((n, n_embd)) are the
 * normalized inputs, sel ((n, n_expert_used)) each token's logical experts
 * (distinct per token), w ((n, n_expert_used)) their routing weights. out
 * ((n, n_embd)) gets, per token, sum_j w[j] * FFN_{sel[j]}(x), added in
 * increasing expert index, so the bits do not depend on the placement or
 * the number of ranks (tested), and follow the order model/moe.c uses.
 * Collective: two all-to-all-v of rows (dispatch, combine) after one of
 * counts. Errors: TN_ERR_INVALID (n or an expert out of range; before any
 * communication, so every rank should validate the same way), TN_ERR_NOMEM,
 * and the communicator's errors (TN_ERR_IO: a peer failed or timed out).
 * Runs on the calling thread plus the pool's workers; allocates only when
 * a call needs more scratch than any before (grow-only). */
tn_status tn_ep_moe_ffn(tn_ep *ep, tn_pool *pool, int32_t il, const float *xn, int32_t n, const int32_t *sel,
                        const float *w, float *out) TN_MUST_CHECK;

/* Rows this rank sent to other ranks / computed for other ranks in the last
 * call (for measurements). */
int64_t tn_ep_rows_sent(const tn_ep *ep);
int64_t tn_ep_rows_computed(const tn_ep *ep);

/* Seconds spent in tn_ep_moe_ffn since tn_ep_new (or the last reset), split
 * into the three exchanges (comm: counts, dispatch, combine, including the
 * wait for the slowest peer) and everything else (compute: the experts'
 * matmuls, packing and the weighted sum), and the number of calls. */
typedef struct tn_ep_timing {
    double comm_s;
    double compute_s;
    int64_t n_calls;
} tn_ep_timing;
tn_ep_timing tn_ep_get_timing(const tn_ep *ep);
void tn_ep_reset_timing(tn_ep *ep);

/* --- the forward pass under expert parallelism (ep_step.c) ------------ */

/* Routes f's routed experts through ep (tn_forward_set_moe_routed): from
 * then on every tn_forward_run on f is collective over ep's communicator,
 * and a rank with nothing to do runs an empty batch (n_tokens 0). f must
 * be for the same model; ep must outlive f's use. TN_ERR_INVALID for a
 * dense model. */
tn_status tn_ep_attach(tn_ep *ep, tn_forward *f) TN_MUST_CHECK;

/* Step states for tn_ep_sync, in increasing precedence. */
enum { TN_EP_DONE = 0, TN_EP_IDLE = 1, TN_EP_STEP = 2 };

/* The step handshake: every rank calls this once per round with its state
 * (TN_EP_STEP: it has a batch for a step now; TN_EP_IDLE: nothing now but
 * more may come, a heartbeat; TN_EP_DONE: nothing more from it) and gets in
 * *agreed the largest state of all ranks. STEP: every rank runs
 * tn_forward_run once, an empty batch if it has none; IDLE: no step, call
 * again; DONE: every rank stops (all agree, so no rank is left waiting in a
 * MoE layer). Collective (one all-gather of an int32); the communicator's
 * errors (a rank that stops calling is caught by the timeout: a heartbeat
 * must come more often than that). */
tn_status tn_ep_sync(tn_ep *ep, int32_t state, int32_t *agreed) TN_MUST_CHECK;

/* The communicator ep runs over. */
tn_comm *tn_ep_comm(const tn_ep *ep);

/* This process's resident memory in bytes (VmRSS of /proc/self/status),
 * and the part of it that is file-backed (RssFile: mapped weights); -1
 * where the platform does not say. */
void tn_ep_resident(int64_t *rss, int64_t *rss_file);
/* The most resident memory this process has had (VmHWM), bytes; -1 where
 * the platform does not say. A report at exit, after the model is
 * unmapped, still shows what the run needed. */
int64_t tn_ep_resident_peak(void);

#endif /* TERN_DIST_EP_H */
