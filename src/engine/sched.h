/*
 * sched — the scheduler: which sequences run in the next forward call, and
 * with how many tokens; the paged block tables; preemption by recompute.
 *
 * Key idea: pure logic. It owns the sequences' tokens, block tables and the
 * block manager, and is told the time (tn_sched_schedule's `now`), so the
 * same code runs inside the engine thread and under a simulated clock
 * (tests, later `tern sim`). It never touches the model: the engine turns a
 * step's items into a tn_batch, runs it, then reports back with
 * tn_sched_commit and tn_sched_append. The policy (decode first, chunked
 * prefill under a token budget, FCFS admission, preemption of the latest
 * arrival) is described in the essay in sched.c.
 *
 * A sequence's positions p live in KV slot slots[p] = table[p / bs] * bs +
 * p % bs: seq->slots is exactly what tn_kv_seq_set_slots wants, and
 * seq->lane is the KV sequence id it runs under.
 *
 * Thread: whoever owns it (the engine thread); no locking.
 */
#ifndef TERN_ENGINE_SCHED_H
#define TERN_ENGINE_SCHED_H

#include "engine/blocks.h"

typedef enum tn_seq_state {
    TN_SEQ_WAITING = 0,  /* queued, holds no blocks (new, or preempted) */
    TN_SEQ_RUNNING,      /* has a lane and blocks; prefilling or decoding */
    TN_SEQ_DONE,         /* detached (timed out): holds nothing; pass to tn_sched_finish */
} tn_seq_state;

typedef struct tn_sched_seq {
    uint64_t id;
    void *user;            /* the caller's (the engine's request) */
    int32_t *tokens;       /* (cap) prompt, then generated tokens */
    int32_t n_prompt;
    int32_t n_tokens;      /* known tokens: prompt + generated */
    int32_t cap;           /* most tokens it may ever hold (prompt + max new tokens) */
    int32_t n_computed;    /* positions 0..n_computed-1 have K/V in the cache */
    int32_t n_cached;      /* prompt tokens the prefix cache served at first admission */
    int32_t *table;        /* (max_blocks) block ids */
    int32_t n_blocks;      /* blocks held */
    int32_t max_blocks;    /* ceil(cap / bs) */
    uint64_t *block_hash;  /* (max_blocks) chain hashes of the full blocks, first n_hashes known */
    int32_t n_hashes;
    int32_t n_registered;  /* full computed blocks already offered to the prefix cache */
    int32_t *slots;        /* (max_blocks * bs) position -> KV slot, valid below n_blocks * bs */
    int32_t lane;          /* KV sequence id while RUNNING, else -1 */
    uint64_t arrival;      /* submission order: lower is older */
    double deadline;       /* absolute time; 0: none */
    tn_seq_state state;
    int32_t n_preempted;   /* times it was preempted */
    bool admitted;         /* has been RUNNING at least once */
    bool no_prefix_lookup; /* the owner's: admit without prefix-cache reuse (every position gets computed,
                              e.g. for prompt logprobs); its blocks are still offered to the cache */
    uint64_t step_mark;    /* == the scheduler's step counter when scheduled (or preempted) this step */
    struct tn_sched_seq *wprev, *wnext; /* waiting list, sorted by arrival */
} tn_sched_seq;

typedef struct tn_sched_params {
    int32_t n_blocks;          /* KV blocks */
    int32_t block_size;        /* tokens per block */
    int32_t max_running;       /* lanes: sequences in the batch at once */
    int32_t step_token_budget; /* tokens per step (decode + prefill chunks) */
    int32_t n_ctx;             /* most tokens of one sequence; must be <= n_blocks * block_size */
    bool prefix_cache;
} tn_sched_params;

/* One piece of work of a step: positions pos0 ..+ n of seq. */
typedef struct tn_sched_item {
    tn_sched_seq *seq;
    int32_t pos0;
    int32_t n;
    bool sample;           /* the chunk ends at the last known token: its logits pick the next one */
} tn_sched_item;

typedef struct tn_sched_step {
    tn_sched_item *items;  /* (max_running) in scheduling order: decodes, then prefills */
    int32_t n_items;
    int32_t n_tokens;      /* sum of n over items (<= step_token_budget) */
    tn_sched_seq **expired; /* (max_running + n_waiting at the call) timed out: DONE, pass each to tn_sched_finish */
    int32_t n_expired;
    int32_t n_preempted;   /* preemptions during this step */
} tn_sched_step;

typedef struct tn_sched_stats {
    int32_t n_running, n_waiting;
    int32_t blocks_total, blocks_used; /* used: with an owner */
    uint64_t prefix_queries, prefix_hits; /* tokens looked up / found at admissions */
    uint64_t n_preemptions;
} tn_sched_stats;

typedef struct tn_sched tn_sched;

/* Creates a scheduler (and its block manager). TN_ERR_INVALID for bad sizes
 * (n_ctx larger than the cache, non-positive values), TN_ERR_NOMEM. */
tn_status tn_sched_new(const tn_sched_params *p, tn_sched **out) TN_MUST_CHECK;
/* Frees everything, including sequences still queued or running. */
void tn_sched_free(tn_sched *s);

/* Queues a new sequence: prompt copied, room for `max_new` more tokens
 * (n_prompt + max_new <= n_ctx, n_prompt >= 1, else TN_ERR_INVALID),
 * deadline 0 or an absolute time after which tn_sched_schedule expires it.
 * *out is the sequence (owned by the scheduler until tn_sched_finish). */
tn_status tn_sched_add(tn_sched *s, uint64_t id, const int32_t *prompt, int32_t n_prompt, int32_t max_new,
                       double deadline, void *user, tn_sched_seq **out) TN_MUST_CHECK;

/* Plans one step at time `now` into *st (storage inside the scheduler,
 * valid until the next call): expires sequences past their deadline, then
 * schedules decodes, prefill chunks and admissions, preempting when blocks
 * run out. Allocates blocks for every item, so after this call
 * seq->slots[0 .. pos0 + n) is valid for each item. Does not allocate
 * memory. */
void tn_sched_schedule(tn_sched *s, double now, tn_sched_step *st);

/* Records that the step's items were computed: advances n_computed and
 * offers newly full blocks to the prefix cache. Call once per step, after
 * the forward call and before tn_sched_append. */
void tn_sched_commit(tn_sched *s, const tn_sched_step *st);

/* Appends a generated token to seq (n_tokens < cap required; returns false
 * and does nothing when the sequence is full). */
bool tn_sched_append(tn_sched *s, tn_sched_seq *seq, int32_t token);

/* Removes seq wherever it is (waiting, running, DONE), releases its blocks
 * and frees it. */
void tn_sched_finish(tn_sched *s, tn_sched_seq *seq);

/* Finds a live sequence by id (waiting or running), or NULL. O(n). */
tn_sched_seq *tn_sched_find(tn_sched *s, uint64_t id);

/* Some live sequence (the oldest running, else the oldest waiting), or
 * NULL: to finish everything at shutdown. */
tn_sched_seq *tn_sched_any(const tn_sched *s);

/* Counters and current sizes. */
void tn_sched_get_stats(const tn_sched *s, tn_sched_stats *out);

/* The block manager (read-only use: tests, stats). */
const tn_blocks *tn_sched_blocks(const tn_sched *s);

/* The running sequences in arrival order; *n gets their count. */
tn_sched_seq *const *tn_sched_running(const tn_sched *s, int32_t *n);

#endif /* TERN_ENGINE_SCHED_H */
