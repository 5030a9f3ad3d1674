/*
 * engine_int.h — what engine.c and engine_dp.c share: the data-parallel
 * group's state (tn__dp) and the few engine internals it reaches.
 *
 * LOCKS: the engine's mutex (e->mu) and the group's (dp->mu). When both
 * are held, e->mu is taken first; engine_dp.c never takes e->mu while it
 * holds dp->mu, and calls callbacks with neither held.
 */
#ifndef TERN_ENGINE_ENGINE_INT_H
#define TERN_ENGINE_ENGINE_INT_H

#include "engine/engine.h"

typedef struct tn__dp tn__dp;

/* What the engine does after a round. */
enum {
    TN__DP_IDLE = 0, /* no step; the engine may wait (rank 0: up to hook_idle_s) */
    TN__DP_POLL = 1, /* no step; make the next round at once (work is in flight somewhere) */
    TN__DP_STEP = 2, /* every rank runs one forward call now, an empty one if it has no tokens */
};

/* Copies the link; allocates the round's buffers. TN_ERR_INVALID for a bad
 * rank or size, TN_ERR_NOMEM. */
tn_status tn__dp_new(const tn_engine_link *l, tn__dp **out) TN_MUST_CHECK;
/* Rank 0: every request still on another rank gets a final CANCELLED
 * event ("engine shutting down"), on the calling thread. Then frees. */
void tn__dp_free(tn__dp *dp);

/* One round (engine thread): have_items says whether this engine has
 * tokens for a forward call now. Returns TN__DP_*. Ranks > 0 submit the
 * requests and cancels that arrive into e; rank 0 hands the events that
 * arrive to their callbacks. A failure calls the link's fail (no return). */
int tn__dp_round(tn__dp *dp, tn_engine *e, bool have_items);

/* Rank 0, any thread: picks the rank for a new request given this
 * engine's live and queued requests and free KV blocks, and counts it as
 * routed there; -1 (nothing counted) when every rank's queue holds
 * max_waiting requests, as far as rank 0 knows. Returns 0 on other ranks. */
int32_t tn__dp_pick(tn__dp *dp, int32_t local_live, int32_t local_waiting, int32_t local_free_blocks,
                    int32_t max_waiting);

/* Rank 0: queues request id for rank (>= 1) and records its callback; the
 * engine is woken (tn__engine_wake) to make a round. TN_ERR_NOMEM. */
tn_status tn__dp_submit(tn__dp *dp, tn_engine *e, int32_t rank, uint64_t id, const tn_request_params *r,
                        tn_engine_cb cb, void *user) TN_MUST_CHECK;

/* Rank 0: if id runs on another rank, queues its cancel and returns true. */
bool tn__dp_cancel(tn__dp *dp, tn_engine *e, uint64_t id);

/* Rank 0: requests on other ranks that have not had their final event. */
int32_t tn__dp_remote_live(tn__dp *dp);

/* The group's rank and size; rank 0's snapshot of every other rank. */
int32_t tn__dp_rank(const tn__dp *dp);
int32_t tn__dp_rank_stats(tn__dp *dp, const tn_engine_stats *local, int32_t local_live, tn_engine_rank_stats *out,
                          int32_t max);

/* Ends the process through the link's fail(), with "forward step: why":
 * a forward call failed, and in a group that means a lost rank (or a
 * bug that has already put the ranks out of step). */
void tn__dp_fail(tn__dp *dp, const char *why);

/* Rank 0: adds the other ranks' counters (as of the last round) to *st. */
void tn__dp_add_stats(tn__dp *dp, tn_engine_stats *st);

/* Ranks > 0: waits for the DONE round (then e is stopping). */
void tn__dp_wait_done(tn__dp *dp);

/* --- engine.c, for engine_dp.c ---------------------------------------------- */

/* Wakes the engine thread for a round (rank 0 has something to send). */
void tn__engine_wake(tn_engine *e);
/* This engine's published counters and live requests (inbox + scheduler). */
void tn__engine_local(tn_engine *e, tn_engine_stats *st, int32_t *n_live);
/* Makes the engine thread stop after this iteration (the DONE round). */
void tn__engine_stop(tn_engine *e);

#endif /* TERN_ENGINE_ENGINE_INT_H */
