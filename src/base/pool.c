/*
 * pool.c — the spin-then-sleep fork/join thread pool.
 *
 * HOW IT WORKS
 *
 * The pool owns n-1 worker threads; the caller of tn_pool_run is thread 0.
 * A job is published by writing fn/ctx, arming the `pending` counter with
 * n-1 and then incrementing the generation counter `gen` (release). Workers
 * remember the last generation they ran; one that sees `gen` move on
 * (acquire) reads fn/ctx, runs its share and decrements `pending` (release).
 * The caller runs share 0 itself and then waits for `pending` to reach zero
 * (acquire), so everything the workers wrote is visible when run returns.
 *
 * Waiting is spin-then-sleep on both sides. A worker spins on `gen` with the
 * CPU's pause hint for SPIN_S seconds after its last job: a decode step issues
 * hundreds of jobs a few microseconds apart, and a spinning worker picks the
 * next one up in well under a microsecond. After that it sleeps on a
 * condition variable, so an idle engine costs no CPU. The caller spins on
 * `pending` and falls back to sched_yield after a while, which matters when
 * the machine is oversubscribed and a worker has lost its core.
 * TERN_SPIN_US sets the workers' spin window in microseconds (diagnosis);
 * tn_pool_counters counts the jobs and the times a worker fell asleep.
 *
 * EDGE CASES
 *
 * Lost wake-ups: a worker about to sleep increments `n_sleeping` and then
 * re-reads `gen`, both under the mutex; the caller increments `gen` and then
 * reads `n_sleeping`. All four accesses are sequentially consistent, so at
 * least one side sees the other's write: either the worker sees the new
 * generation and does not sleep, or the caller sees a sleeper and broadcasts
 * under the mutex (which it can only take once the worker is inside
 * pthread_cond_wait or has left).
 *
 * Shutdown is a job like any other: `stop` is set before the generation moves,
 * workers see it after waking and exit; tn_pool_free joins them.
 *
 * LIMITATIONS
 *
 * One caller at a time (the owner thread); fn must not call tn_pool_run.
 * Workers are not pinned to cores.
 */
#include "base/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How long a worker spins after a job before it sleeps (TERN_SPIN_US overrides). */
#define SPIN_S_DEFAULT 100e-6
/* Pause iterations between clock reads while spinning. */
#define SPIN_CHECK 64
/* How many pause iterations the caller spins before yielding its core. */
#define JOIN_SPIN 4096

#define CACHE_LINE 64

typedef struct worker {
    tn_pool *pool;
    int ith;
    pthread_t thread;
} worker;

struct tn_pool {
    int n_threads;
    worker *workers; /* (n_threads - 1); workers[k] runs share k+1 */

    /* The job: written by the caller before gen moves. */
    tn_pool_fn fn;
    void *ctx;
    atomic_bool stop;
    double spin_s; /* how long a worker spins after a job before it sleeps */

    alignas(CACHE_LINE) atomic_uint_fast64_t gen; /* incremented once per job */
    alignas(CACHE_LINE) atomic_int pending;       /* workers still running the job */
    alignas(CACHE_LINE) atomic_int n_sleeping;    /* workers in (or entering) cond_wait */
    atomic_uint_fast64_t n_sleeps;                /* times a worker went to sleep (tn_pool_counters) */
    uint64_t n_jobs;                              /* jobs published; written by the owner only */

    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Waits until gen differs from seen; returns the new generation. */
static uint_fast64_t wait_job(tn_pool *p, uint_fast64_t seen)
{
    uint_fast64_t g;
    const double t0 = now_s();
    for (;;) {
        for (int i = 0; i < SPIN_CHECK; i++) {
            g = atomic_load_explicit(&p->gen, memory_order_acquire);
            if (g != seen)
                return g;
            cpu_relax();
        }
        if (now_s() - t0 > p->spin_s)
            break;
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->n_sleeping, 1);
    atomic_fetch_add_explicit(&p->n_sleeps, 1, memory_order_relaxed);
    while ((g = atomic_load(&p->gen)) == seen)
        pthread_cond_wait(&p->cv, &p->mu);
    atomic_fetch_sub(&p->n_sleeping, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    tn_pool *p = w->pool;
    uint_fast64_t seen = 0;
    for (;;) {
        seen = wait_job(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_relaxed))
            break;
        p->fn(p->ctx, w->ith, p->n_threads);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
    return NULL;
}

/* SPIN_S_DEFAULT, or TERN_SPIN_US microseconds (0 .. 1e6) when set. */
static double spin_seconds(void)
{
    const char *env = getenv("TERN_SPIN_US");
    if (!env || !*env)
        return SPIN_S_DEFAULT;
    char *end;
    double us = strtod(env, &end);
    if (*end || !(us >= 0 && us <= 1e6)) {
        tn_log(TN_LOG_ERROR, "pool: ignoring TERN_SPIN_US=%s (want microseconds in [0, 1e6])\n", env);
        return SPIN_S_DEFAULT;
    }
    return us * 1e-6;
}

/* Publishes the current fn/ctx/stop to the workers and wakes sleepers. */
static void publish(tn_pool *p)
{
    atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: pairs with the sleeper check */
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

static void stop_workers(tn_pool *p, int n_started)
{
    atomic_store_explicit(&p->stop, true, memory_order_relaxed);
    publish(p);
    for (int k = 0; k < n_started; k++)
        pthread_join(p->workers[k].thread, NULL);
}

/* Creates a pool; see pool.h. Call from the owner thread. On failure *out
 * is NULL and nothing is leaked. */
tn_status tn_pool_new(int n_threads, tn_pool **out)
{
    *out = NULL;
    const int n_cores = tn_n_cores();
    if (n_threads == 0 || n_threads > n_cores)
        n_threads = n_cores;
    if (n_threads < 1)
        n_threads = 1;

    tn_pool *p = tn_alloc_aligned(sizeof(*p), CACHE_LINE);
    if (!p)
        return tn__err(TN_ERR_NOMEM, "pool: cannot allocate the pool");
    memset(p, 0, sizeof(*p));
    p->n_threads = n_threads;
    atomic_init(&p->stop, false);
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->n_sleeping, 0);
    atomic_init(&p->n_sleeps, 0);
    p->spin_s = spin_seconds();
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        tn_free_aligned(p);
        return tn__err(TN_ERR_NOMEM, "pool: cannot create a mutex");
    }
    if (pthread_cond_init(&p->cv, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        tn_free_aligned(p);
        return tn__err(TN_ERR_NOMEM, "pool: cannot create a condition variable");
    }

    int started = 0;
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof(worker));
        if (!p->workers)
            goto err;
        for (; started < n_threads - 1; started++) {
            worker *w = &p->workers[started];
            w->pool = p;
            w->ith = started + 1;
            if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
                goto err;
        }
    }
    *out = p;
    return TN_OK;

err:
    stop_workers(p, started);
    free(p->workers);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    tn_free_aligned(p);
    return tn__err(TN_ERR_NOMEM, "pool: cannot start %d worker threads", n_threads - 1);
}

/* Stops and joins the workers, frees the pool. NULL is a no-op. */
void tn_pool_free(tn_pool *pool)
{
    if (!pool)
        return;
    stop_workers(pool, pool->n_threads - 1);
    free(pool->workers);
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    tn_free_aligned(pool);
}

/* Threads per job (1 for a NULL pool). */
int tn_pool_size(const tn_pool *pool) { return pool ? pool->n_threads : 1; }

/* Runs fn(ctx, i, n) for i in [0, n) and waits; see pool.h. */
void tn_pool_run(tn_pool *pool, tn_pool_fn fn, void *ctx)
{
    if (!pool || pool->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n_jobs++;
    publish(pool);
    fn(ctx, 0, pool->n_threads);
    for (int spins = 0; atomic_load_explicit(&pool->pending, memory_order_acquire) != 0; spins++) {
        if (spins < JOIN_SPIN)
            cpu_relax();
        else
            sched_yield();
    }
}

/* Jobs run on the workers and times a worker fell asleep; see pool.h. */
void tn_pool_counters(const tn_pool *pool, uint64_t *jobs, uint64_t *sleeps)
{
    *jobs = pool ? pool->n_jobs : 0;
    *sleeps = pool ? atomic_load_explicit(&((tn_pool *)pool)->n_sleeps, memory_order_relaxed) : 0;
}
