/*
 * test_pool.c — the fork/join thread pool: every share runs exactly once per
 * job, results are visible to the caller when run returns, degenerate pools
 * (one thread, NULL) and repeated create/free.
 */
#include "base/pool.h"
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define MAX_THREADS 64

typedef struct job {
    atomic_int count[MAX_THREADS]; /* runs of each ith in this job */
    atomic_int bad_nth;            /* calls whose nth was not the pool size */
    int nth_expected;
    long plain[MAX_THREADS];       /* non-atomic writes, checked after run */
    long round;
} job;

static void count_fn(void *ctx, int ith, int nth)
{
    job *j = ctx;
    if (nth != j->nth_expected || ith < 0 || ith >= nth || ith >= MAX_THREADS) {
        atomic_fetch_add(&j->bad_nth, 1);
        return;
    }
    atomic_fetch_add(&j->count[ith], 1);
    j->plain[ith] = j->round * 1000 + ith;
}

static void job_reset(job *j, int nth, long round)
{
    for (int i = 0; i < MAX_THREADS; i++)
        atomic_store(&j->count[i], 0);
    atomic_store(&j->bad_nth, 0);
    j->nth_expected = nth;
    j->round = round;
    memset(j->plain, 0xff, sizeof(j->plain));
}

/* Runs one job and asserts each share ran once and its writes are visible. */
static void run_and_check(tn_pool *pool, job *j, long round)
{
    const int n = tn_pool_size(pool);
    job_reset(j, n, round);
    tn_pool_run(pool, count_fn, j);
    assert_int_equal(atomic_load(&j->bad_nth), 0);
    for (int i = 0; i < MAX_THREADS; i++)
        assert_int_equal(atomic_load(&j->count[i]), i < n ? 1 : 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(j->plain[i], round * 1000 + i);
}

static void test_clamp(void **state)
{
    (void)state;
    tn_pool *p = NULL;
    assert_int_equal(tn_pool_new(0, &p), TN_OK);
    assert_int_equal(tn_pool_size(p), tn_n_cores());
    tn_pool_free(p);
    assert_int_equal(tn_pool_new(100000, &p), TN_OK);
    assert_int_equal(tn_pool_size(p), tn_n_cores());
    tn_pool_free(p);
    assert_int_equal(tn_pool_new(-3, &p), TN_OK);
    assert_int_equal(tn_pool_size(p), 1);
    tn_pool_free(p);
    assert_int_equal(tn_pool_size(NULL), 1);
}

static void test_each_share_once_many_jobs(void **state)
{
    (void)state;
    tn_pool *p = NULL;
    assert_int_equal(tn_pool_new(0, &p), TN_OK);
    static job j;
    for (long r = 0; r < 20000; r++)
        run_and_check(p, &j, r);
    tn_pool_free(p);
}

/* Jobs separated by pauses longer than the spin window: workers must wake
 * from their condition variable every time. */
static void test_jobs_after_sleep(void **state)
{
    (void)state;
    tn_pool *p = NULL;
    assert_int_equal(tn_pool_new(0, &p), TN_OK);
    static job j;
    for (long r = 0; r < 20; r++) {
        run_and_check(p, &j, r);
        struct timespec ts = {0, 2 * 1000 * 1000}; /* 2 ms */
        nanosleep(&ts, NULL);
    }
    /* The counters saw every job and, with more than one thread, workers
     * that slept through the pauses (the spin window is far below 2 ms; a
     * worker descheduled for a whole pause may miss one, so only "some"),
     * at most once per worker per job plus once before the first. */
    uint64_t jobs, sleeps;
    tn_pool_counters(p, &jobs, &sleeps);
    const uint64_t n_workers = (uint64_t)tn_pool_size(p) - 1;
    if (n_workers > 0) {
        assert_int_equal(jobs, 20);
        assert_true(sleeps >= 1);
        assert_true(sleeps <= (jobs + 1) * n_workers);
    } else {
        assert_int_equal(jobs, 0);
        assert_int_equal(sleeps, 0);
    }
    tn_pool_free(p);
}

static void test_pool_of_one(void **state)
{
    (void)state;
    tn_pool *p = NULL;
    assert_int_equal(tn_pool_new(1, &p), TN_OK);
    assert_int_equal(tn_pool_size(p), 1);
    static job j;
    for (long r = 0; r < 100; r++)
        run_and_check(p, &j, r);
    tn_pool_free(p);
}

static void test_null_pool(void **state)
{
    (void)state;
    static job j;
    for (long r = 0; r < 10; r++)
        run_and_check(NULL, &j, r);
    tn_pool_free(NULL);
}

static void test_create_free_repeatedly(void **state)
{
    (void)state;
    static job j;
    for (int k = 0; k < 200; k++) {
        tn_pool *p = NULL;
        assert_int_equal(tn_pool_new(k % 3, &p), TN_OK);
        if (k % 2) /* half of them are freed without ever running a job */
            run_and_check(p, &j, k);
        tn_pool_free(p);
    }
}

/* A sum split over the threads equals the serial sum: shares partition the
 * index range and every partial result reaches the caller. */
typedef struct sum_job {
    const int *v;
    int n;
    long partial[MAX_THREADS];
} sum_job;

static void sum_fn(void *ctx, int ith, int nth)
{
    sum_job *s = ctx;
    const int lo = (int)((long)s->n * ith / nth), hi = (int)((long)s->n * (ith + 1) / nth);
    long acc = 0;
    for (int i = lo; i < hi; i++)
        acc += s->v[i];
    s->partial[ith] = acc;
}

static void test_partitioned_sum(void **state)
{
    (void)state;
    enum { N = 100003 };
    static int v[N];
    long want = 0;
    for (int i = 0; i < N; i++) {
        v[i] = (i * 7919) % 1009 - 500;
        want += v[i];
    }
    tn_pool *p = NULL;
    assert_int_equal(tn_pool_new(0, &p), TN_OK);
    sum_job s = {.v = v, .n = N};
    for (int r = 0; r < 1000; r++) {
        memset(s.partial, 0, sizeof(s.partial));
        tn_pool_run(p, sum_fn, &s);
        long got = 0;
        for (int i = 0; i < tn_pool_size(p); i++)
            got += s.partial[i];
        assert_int_equal(got, want);
    }
    tn_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clamp),
        cmocka_unit_test(test_each_share_once_many_jobs),
        cmocka_unit_test(test_jobs_after_sleep),
        cmocka_unit_test(test_pool_of_one),
        cmocka_unit_test(test_null_pool),
        cmocka_unit_test(test_create_free_repeatedly),
        cmocka_unit_test(test_partitioned_sum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
