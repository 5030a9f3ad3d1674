/*
 * engine — the serving engine: one thread that owns the model and the KV
 * cache and steps a continuous batch.
 *
 * Key idea (DESIGN.md): other threads submit requests and receive their
 * tokens as events; cancel is a message. Every step the scheduler picks
 * which sequences run — decode tokens of running requests first, then
 * chunks of waiting prompts under a per-step token budget (chunked prefill) —
 * builds one flattened tn_batch and calls tn_forward_run once. The KV cache
 * is paged: fixed-size blocks of slots, a block table per sequence,
 * reference counts, and a hash per full block so a prompt prefix already in
 * the cache (a repeated system prompt) is reused instead of recomputed.
 * When blocks run out a running request is preempted (its blocks freed, its
 * tokens recomputed later); a request that fits alone never fails for lack
 * of blocks.
 *
 * The scheduler's decisions are pure logic over a clock it is given, so the
 * same code runs under a simulated clock later (`tern sim`).
 *
 * Threads: tn_engine_new starts the engine thread; submit/cancel/stats may be
 * called from any thread. Event callbacks run ON THE ENGINE THREAD: they must
 * be quick and must not call back into the engine except tn_engine_cancel.
 */
#ifndef TERN_ENGINE_ENGINE_H
#define TERN_ENGINE_ENGINE_H

#include "engine/sample.h"
#include "model/model.h"
#include "tok/tok.h"

typedef struct tn_engine tn_engine;

typedef struct tn_engine_params {
    const tn_model *model;       /* borrowed; outlives the engine */
    const tn_vocab *vocab;       /* borrowed; outlives the engine */
    int32_t n_threads;           /* compute threads (0: all cores) */
    int32_t n_ctx;               /* max tokens of one sequence (prompt + output); 0: n_ctx_train */
    int32_t n_kv_slots;          /* KV-cache capacity in tokens over all sequences (0: 4 * n_ctx) */
    int32_t block_size;          /* KV block size in tokens (0: 16) */
    int32_t max_running;         /* max sequences in the batch at once (0: 64) */
    int32_t step_token_budget;   /* max tokens per forward call, decode + prefill chunks (0: 512) */
    int32_t max_waiting;         /* queue bound; submit beyond it is TN_ERR_FULL (0: 256) */
    bool prefix_cache;           /* reuse full blocks of identical prefixes (default on: set true) */
    const char *moe_stats_path;  /* MoE routing statistics written here by the engine thread every
                                    moe_stats_every_s (0: 10 s) while it steps, and when it stops
                                    (tn_moe_stats_write: .csv or JSON); NULL: none */
    double moe_stats_every_s;
    tn_kv_type kv_type;          /* KV-cache storage (0: F32; F16 or Q8 halve / quarter it) */
    /* Expert parallelism (tools/ep_tool.c); NULL: one process. on_forward(hook_ud, fwd) runs once in
     * tn_engine_new (it routes fwd's experts over the other processes, making every forward call
     * collective; its error fails tn_engine_new). */
    tn_status (*on_forward)(void *hook_ud, tn_forward *fwd);
    void *hook_ud;
    /* Data-parallel engines (engine_dp.c); NULL: one process. One engine per rank of the link, each
     * with its own KV cache and scheduler; rank 0's submit/cancel/stats cover them all. See
     * tn_engine_link below. */
    const struct tn_engine_link *link;
    double hook_idle_s;          /* rank 0's heartbeat while the whole group idles (0: 1 s); it must
                                    come well within the link's timeout */
} tn_engine_params;

typedef enum tn_finish {
    TN_FINISH_NONE = 0,          /* still running */
    TN_FINISH_LENGTH,            /* max_tokens reached or context full */
    TN_FINISH_STOP,              /* end-of-generation token or a stop token */
    TN_FINISH_CANCELLED,         /* tn_engine_cancel or engine shutdown */
    TN_FINISH_ERROR,             /* see tn_engine_event.error */
} tn_finish;

#define TN_MAX_TOP_LOGPROBS 20

typedef struct tn_engine_event {
    uint64_t id;                 /* the request's id */
    int32_t token;               /* the new token, or -1 for a final event without one */
    int32_t prompt_pos;          /* 0: a generated token. >= 1: a prompt-logprob event (requests with
                                    prompt_logprobs): token is prompt[prompt_pos], logprob and top_* are
                                    those of the model's distribution after prompt[0 .. prompt_pos);
                                    finish is NONE. They arrive in position order, before the first
                                    generated token, each position once (also across preemptions). */
    float logprob;               /* log-probability of token under the unmodified distribution (if asked) */
    int32_t n_top;               /* number of top alternatives filled (<= request's top_logprobs) */
    int32_t top_token[TN_MAX_TOP_LOGPROBS];
    float top_logprob[TN_MAX_TOP_LOGPROBS];
    tn_finish finish;            /* != NONE on the last event of the request */
    int32_t n_prompt;            /* usage, on every event */
    int32_t n_cached;            /* prompt tokens served from the prefix cache */
    int32_t n_generated;
    const char *error;           /* message when finish == ERROR; for CANCELLED the reason ("cancelled",
                                    "timeout", "engine shutting down"); valid during the callback */
} tn_engine_event;

/* Called on the engine thread for every generated token and once at the
 * end (the last event has finish != NONE; it may also carry a token). */
typedef void (*tn_engine_cb)(void *user, const tn_engine_event *ev);

typedef struct tn_request_params {
    const int32_t *prompt;       /* copied at submit */
    int32_t n_prompt;            /* >= 1 */
    int32_t max_tokens;          /* >= 0; clipped to the context */
    tn_sample_params sample;
    bool ignore_eos;
    const int32_t *stop_tokens;  /* extra token ids that end generation (copied) */
    int32_t n_stop_tokens;
    int32_t top_logprobs;        /* 0..TN_MAX_TOP_LOGPROBS; -1: no logprobs at all */
    bool prompt_logprobs;        /* also send the logprob of every prompt token but the first (events with
                                    prompt_pos >= 1; needs top_logprobs >= 0). The prompt is then computed
                                    in full (no prefix-cache reuse), and max_tokens 0 still runs it. */
    double timeout_s;            /* 0: none; a request running longer is cancelled */
    /* Logit bias (OpenAI's logit_bias): logit_bias[i] is added to the logit of
     * token logit_bias_ids[i] before penalties and truncation (-100 bans a
     * token in practice); ids in [0, n_vocab), biases finite; copied at
     * submit. n_logit_bias 0: none. Logprobs stay those of the unbiased
     * distribution. */
    const int32_t *logit_bias_ids;
    const float *logit_bias;
    int32_t n_logit_bias;
} tn_request_params;

tn_status tn_engine_new(const tn_engine_params *p, tn_engine **out) TN_MUST_CHECK;
/* Cancels everything still queued or running (each gets its final
 * CANCELLED event), stops and joins the engine thread, frees. On rank 0 of
 * a data-parallel group the requests running on other ranks get their
 * final event here too, on the calling thread (the engine thread has
 * stopped); then call tn_engine_link_done. */
void tn_engine_free(tn_engine *e);

/* Queues a request; *id identifies it in events. Errors: TN_ERR_INVALID for
 * a prompt longer than n_ctx or bad parameters (message says which),
 * TN_ERR_FULL when the waiting queue is full. Any thread. */
tn_status tn_engine_submit(tn_engine *e, const tn_request_params *r, tn_engine_cb cb, void *user,
                           uint64_t *id) TN_MUST_CHECK;

/* Asks the engine to stop a request; it finishes within one step with a
 * CANCELLED event and its blocks are freed. Unknown ids are ignored. Any
 * thread, including from a callback. */
void tn_engine_cancel(tn_engine *e, uint64_t id);

/* Stops accepting new requests (submit then fails with TN_ERR_FULL,
 * message "engine: draining, not accepting requests"); queued and running
 * ones continue to the end. Any thread. */
void tn_engine_drain(tn_engine *e);

/* Waits until nothing is queued or running (true), or timeout_s seconds
 * pass (false; timeout_s <= 0 waits without limit). With drain, the clean
 * shutdown: drain, wait_idle, free. Any thread except the engine's (not
 * from a callback). */
bool tn_engine_wait_idle(tn_engine *e, double timeout_s);

typedef struct tn_engine_stats {
    int32_t n_running, n_waiting;
    int32_t kv_blocks_total, kv_blocks_used;
    uint64_t prefix_queries, prefix_hits;   /* in tokens */
    uint64_t n_preemptions;
    uint64_t prompt_tokens, generated_tokens; /* totals */
    uint64_t n_steps;            /* forward calls with tokens of this engine */
    uint64_t n_empty_steps;      /* data-parallel: forward calls with none (another rank stepped) */
    /* Wall time of this process's engine thread (not summed over a data-parallel group): forward_s
     * inside forward calls with tokens; host_s from the end of one such call to the start of the next
     * when the engine did not wait for work in between (scheduling, sampling, stop checks, events):
     * the serial part of a step, which a single stream pays on top of the forward call. */
    double forward_s, host_s;
    /* The compute pool's counters (tn_pool_counters): jobs handed to the workers and the times a
     * worker slept for want of a job (each later costs a wake-up inside a forward call). */
    uint64_t pool_jobs, pool_sleeps;
} tn_engine_stats;

/* A snapshot of the counters (any thread). */
void tn_engine_get_stats(tn_engine *e, tn_engine_stats *out);

/* A snapshot of the MoE routing statistics as of the last step (any
 * thread): *out is a new tn_moe_stats the caller frees with
 * tn_moe_stats_free, or NULL for a dense model. TN_ERR_NOMEM on failure. */
tn_status tn_engine_moe_stats(tn_engine *e, tn_moe_stats **out) TN_MUST_CHECK;

/* ==========================================================================
 * Data-parallel engines over several processes (engine_dp.c)
 *
 * Each rank of a group (e.g. the processes of `mpirun -np N tern serve
 * --ep N`) runs its own engine: its own KV cache, block tables, scheduler.
 * Rank 0's engine is the front: tn_engine_submit there picks a rank for
 * the request (the fewest live requests, then the most free KV blocks, then
 * round robin) and tn_engine_cancel / tn_engine_get_stats / wait_idle cover
 * the requests of every rank; the events of a request on rank r come back
 * to rank 0 and reach the callback there, on rank 0's engine thread, as if
 * the request had run locally. The engines of ranks > 0 take requests only
 * from rank 0.
 *
 * All ranks step together: before each forward call every engine makes one
 * round over the link (an all-gather of a small header: its state, load
 * and byte counts; then, if any rank has bytes for another, one
 * all-to-all-v of requests, cancels and events). If any rank has tokens to
 * run, every rank runs one forward call, with an empty batch if it has
 * none, so the collective exchanges inside the forward pass (expert
 * parallelism) stay matched. Rank 0 paces the idle group: it makes a round
 * at least every hook_idle_s seconds (a heartbeat); ranks > 0 wait inside
 * the round.
 *
 * The link is the transport, given as functions so that the engine does not
 * depend on an MPI library (tools/ep_tool.c wraps tn_comm). Every rank must
 * run the same tern binary (the messages are the engine's structs).
 * ======================================================================== */

typedef struct tn_engine_link {
    int32_t rank, size;          /* this process's rank in [0, size) and the group's size (>= 1) */
    void *ud;
    /* Collective: recv ((size, bytes)) gets every rank's `bytes` of send, in rank order. */
    tn_status (*allgather)(void *ud, const void *send, size_t bytes, void *recv);
    /* Collective, in bytes: this rank sends send[send_displs[r] ..+ send_counts[r]] to each rank r
     * and receives r's message into recv[recv_displs[r] ..+ recv_counts[r]] (as tn_comm_alltoallv). */
    tn_status (*alltoallv)(void *ud, const void *send, const size_t *send_counts, const size_t *send_displs,
                           void *recv, const size_t *recv_counts, const size_t *recv_displs);
    /* Called with the reason when a round fails (a lost or hung rank, a malformed message); it must
     * not return (tools/ exit). */
    void (*fail)(void *ud, const char *why);
} tn_engine_link;

/* Rank 0, after its engine is freed: the last round, which stops the
 * engines of every other rank (their tn_engine_wait_done returns). Returns
 * the link's error (then the job has lost a rank anyway). Main thread. */
tn_status tn_engine_link_done(const tn_engine_link *l) TN_MUST_CHECK;

/* Ranks > 0: blocks until rank 0 ends the group (tn_engine_link_done);
 * the engine has then stopped (every request it held got a CANCELLED
 * event) and is ready for tn_engine_free. Returns at once without a link
 * or on rank 0. Not from the engine thread. */
void tn_engine_wait_done(tn_engine *e);

typedef struct tn_engine_rank_stats {
    tn_engine_stats st;          /* rank 0: now; others: as of the last round */
    int32_t n_live;              /* requests routed to the rank and not finished */
    uint64_t n_routed;           /* requests routed to the rank in all */
} tn_engine_rank_stats;

/* Rank 0: fills out[0 .. min(max, size)) with each rank's snapshot and
 * returns the group's size (1 without a link: out[0] is this engine's).
 * On ranks > 0 only its own. Any thread. */
int32_t tn_engine_get_rank_stats(tn_engine *e, tn_engine_rank_stats *out, int32_t max);

#endif /* TERN_ENGINE_ENGINE_H */
