/*
 * pool — the compute thread pool: fork/join over a fixed set of threads.
 *
 * Key idea: workers spin on an atomic generation counter for a short while
 * after each job (a decode step issues hundreds of jobs a few microseconds
 * apart), then sleep on a condition variable, so an idle engine costs no CPU.
 * The calling thread is worker 0: tn_pool_run(fn) calls fn(ctx, i, n) for
 * i = 0..n-1 on n threads and returns when all have finished. Never more
 * threads than cores.
 */
#ifndef TERN_BASE_POOL_H
#define TERN_BASE_POOL_H

#include "base/base.h"

typedef struct tn_pool tn_pool;

/* One job: called once per thread, ith in [0, nth). */
typedef void (*tn_pool_fn)(void *ctx, int ith, int nth);

/* Creates a pool of n_threads (clamped to [1, tn_n_cores()]; 0 means all
 * cores). The caller's thread counts as one. */
tn_status tn_pool_new(int n_threads, tn_pool **out) TN_MUST_CHECK;

/* Stops and joins the workers. NULL is a no-op. */
void tn_pool_free(tn_pool *pool);

/* Number of threads that run each job (>= 1). */
int tn_pool_size(const tn_pool *pool);

/* Runs fn on every thread and waits for all. Must be called from one thread
 * at a time (the owner); fn must not call tn_pool_run. pool may be NULL:
 * then fn(ctx, 0, 1) runs on the caller. */
void tn_pool_run(tn_pool *pool, tn_pool_fn fn, void *ctx);

/* Counters since creation, for diagnosis: jobs handed to the workers
 * (tn_pool_run calls with more than one thread) and the times a worker
 * found no job within its spin time and went to sleep (each costs a
 * wake-up, tens of microseconds, when the next job comes). Read from the
 * owner thread; zeros for a NULL pool. */
void tn_pool_counters(const tn_pool *pool, uint64_t *jobs, uint64_t *sleeps);

#endif /* TERN_BASE_POOL_H */
