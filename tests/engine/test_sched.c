/*
 * test_sched.c — the scheduler as pure logic over a fake clock: token
 * budget, chunked prefill, decode first, FCFS fairness, preemption and
 * resumption, prefix hits at admission, deadlines, no leaked blocks.
 *
 * A "model" here is nothing: after each step the test commits the step and
 * appends a made-up token to every sampled sequence, finishing sequences
 * that reach their capacity — exactly what the engine does around its
 * forward call.
 */
#include "testutil.h"

#include "engine/sched.h"

#include <stdlib.h>
#include <string.h>

static tn_sched *make(int32_t n_blocks, int32_t bs, int32_t max_running, int32_t budget, int32_t n_ctx,
                      bool prefix)
{
    tn_sched_params p = {.n_blocks = n_blocks,
                         .block_size = bs,
                         .max_running = max_running,
                         .step_token_budget = budget,
                         .n_ctx = n_ctx,
                         .prefix_cache = prefix};
    tn_sched *s = NULL;
    assert_int_equal(tn_sched_new(&p, &s), TN_OK);
    return s;
}

static tn_sched_seq *add(tn_sched *s, uint64_t id, int32_t n_prompt, int32_t max_new, double deadline)
{
    int32_t prompt[256];
    for (int32_t i = 0; i < n_prompt; i++)
        prompt[i] = (int32_t)((id * 37 + (uint64_t)i * 3) % 500);
    tn_sched_seq *q = NULL;
    assert_int_equal(tn_sched_add(s, id, prompt, n_prompt, max_new, deadline, NULL, &q), TN_OK);
    return q;
}

/* Checks the step's invariants: budget, items' slots inside their blocks,
 * no slot twice in the step, lanes distinct. */
static void check_step(tn_sched *s, const tn_sched_step *st, int32_t budget)
{
    int32_t total = 0;
    const tn_blocks *bm = tn_sched_blocks(s);
    int32_t n_slots = tn_blocks_n_blocks(bm) * tn_blocks_block_size(bm);
    char *used = calloc((size_t)n_slots, 1);
    bool lane_used[64] = {0};
    for (int32_t i = 0; i < st->n_items; i++) {
        const tn_sched_item *it = &st->items[i];
        assert_true(it->n > 0);
        assert_true(it->seq->state == TN_SEQ_RUNNING);
        assert_false(lane_used[it->seq->lane]);
        lane_used[it->seq->lane] = true;
        assert_int_equal(it->pos0, it->seq->n_computed);
        assert_true(it->pos0 + it->n <= it->seq->n_blocks * tn_blocks_block_size(bm));
        for (int32_t p = it->pos0; p < it->pos0 + it->n; p++) {
            int32_t sl = it->seq->slots[p];
            assert_true(sl >= 0 && sl < n_slots);
            assert_int_equal(used[sl], 0);
            used[sl] = 1;
            /* The slot is in a block this sequence alone owns (never written shared). */
            assert_int_equal(tn_blocks_refcount(bm, sl / tn_blocks_block_size(bm)), 1);
        }
        total += it->n;
    }
    free(used);
    assert_int_equal(total, st->n_tokens);
    assert_true(total <= budget);
}

/* What the engine does after the forward call: commit, then one token per
 * sampled item; sequences at capacity are finished. Returns how many
 * finished. */
static int complete(tn_sched *s, const tn_sched_step *st)
{
    tn_sched_commit(s, st);
    int done = 0;
    for (int32_t i = 0; i < st->n_items; i++) {
        tn_sched_seq *q = st->items[i].seq;
        if (!st->items[i].sample)
            continue;
        assert_true(tn_sched_append(s, q, 7 + q->n_tokens % 100));
        if (q->n_tokens == q->cap) {
            tn_sched_finish(s, q);
            done++;
        }
    }
    return done;
}

static void assert_all_free(tn_sched *s)
{
    tn_sched_stats st;
    tn_sched_get_stats(s, &st);
    assert_int_equal(st.n_running, 0);
    assert_int_equal(st.n_waiting, 0);
    assert_int_equal(st.blocks_used, 0);
}

/* ---------------------------------------------------------------------- */

/* A 20-token prompt under a budget of 8 is prefilled in chunks 8, 8, 4;
 * only the last chunk samples; then one token a step. */
static void test_chunked_prefill(void **state)
{
    tn_sched *s = make(16, 4, 4, 8, 64, false);
    tn_sched_seq *a = add(s, 1, 20, 3, 0);
    tn_sched_step st;
    int32_t want_pos[] = {0, 8, 16, 20, 21, 22}, want_n[] = {8, 8, 4, 1, 1, 1};
    for (int k = 0; k < 6; k++) {
        tn_sched_schedule(s, (double)k, &st);
        check_step(s, &st, 8);
        assert_int_equal(st.n_items, 1);
        assert_ptr_equal(st.items[0].seq, a);
        assert_int_equal(st.items[0].pos0, want_pos[k]);
        assert_int_equal(st.items[0].n, want_n[k]);
        assert_int_equal(st.items[0].sample, k >= 2);
        int done = complete(s, &st);
        assert_int_equal(done, k == 4 ? 1 : 0);
        if (done)
            break;
    }
    assert_all_free(s);
    tn_sched_free(s);
}

/* Two decoding sequences get their tokens before a long prompt's chunk,
 * which takes only what budget is left; every step respects the budget. */
static void test_decode_first(void **state)
{
    tn_sched *s = make(64, 4, 4, 8, 128, false);
    tn_sched_seq *a = add(s, 1, 3, 40, 0), *b = add(s, 2, 4, 40, 0);
    tn_sched_step st;
    tn_sched_schedule(s, 0, &st);
    assert_int_equal(st.n_items, 2); /* both prompts in one step: 3 + 4 <= 8 */
    complete(s, &st);
    tn_sched_seq *c = add(s, 3, 30, 4, 0);
    int32_t c_done = 0;
    for (int k = 1; k < 6; k++) {
        tn_sched_schedule(s, (double)k, &st);
        check_step(s, &st, 8);
        assert_true(st.n_items >= 2);
        assert_ptr_equal(st.items[0].seq, a);
        assert_ptr_equal(st.items[1].seq, b);
        assert_int_equal(st.items[0].n, 1);
        assert_int_equal(st.items[1].n, 1);
        if (c_done < 30) {
            assert_int_equal(st.n_items, 3);
            assert_ptr_equal(st.items[2].seq, c);
            assert_int_equal(st.items[2].n, TN_MIN(6, 30 - c_done));
            c_done += st.items[2].n;
        }
        complete(s, &st);
    }
    assert_int_equal(c_done, 30);
    tn_sched_free(s);
}

/* FCFS: with one lane, requests run one after the other in arrival order;
 * with several lanes and a small budget, every running decode gets one
 * token per step (nobody starves), oldest first when the budget is short. */
static void test_fairness(void **state)
{
    tn_sched *s = make(64, 4, 1, 16, 64, false);
    add(s, 1, 5, 3, 0);
    add(s, 2, 5, 3, 0);
    add(s, 3, 5, 3, 0);
    tn_sched_step st;
    uint64_t order[16];
    int n_order = 0;
    for (int k = 0; k < 20; k++) {
        tn_sched_schedule(s, (double)k, &st);
        check_step(s, &st, 16);
        if (st.n_items == 0)
            break;
        assert_int_equal(st.n_items, 1);
        if (n_order == 0 || order[n_order - 1] != st.items[0].seq->id)
            order[n_order++] = st.items[0].seq->id;
        complete(s, &st);
    }
    assert_int_equal(n_order, 3);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 3);
    assert_all_free(s);
    tn_sched_free(s);

    /* Three decoders and a budget of exactly three tokens: each one decodes
     * every step. */
    s = make(64, 4, 3, 3, 64, false);
    add(s, 1, 1, 20, 0);
    add(s, 2, 1, 20, 0);
    add(s, 3, 1, 20, 0);
    tn_sched_schedule(s, 0, &st);
    assert_int_equal(st.n_items, 3);
    complete(s, &st);
    int32_t count[4] = {0};
    for (int k = 1; k <= 10; k++) {
        tn_sched_schedule(s, (double)k, &st);
        check_step(s, &st, 3);
        assert_int_equal(st.n_items, 3); /* each running decode, every step */
        for (int32_t i = 0; i < st.n_items; i++)
            count[st.items[i].seq->id]++;
        complete(s, &st);
    }
    assert_int_equal(count[1], 10);
    assert_int_equal(count[2], 10);
    assert_int_equal(count[3], 10);
    tn_sched_free(s);
}

/* Four blocks of 4 slots and two sequences that each grow to 16 tokens:
 * the newer one is preempted (blocks released, n_computed forgotten, tokens
 * kept) and never the older; the newer resumes before a request that
 * arrived after it, recomputes, and finishes. No block leaks. */
static void test_preemption(void **state)
{
    tn_sched *s = make(4, 4, 4, 32, 16, false);
    tn_sched_seq *a = add(s, 1, 6, 10, 0), *b = add(s, 2, 6, 10, 0);
    tn_sched_step st;
    int b_first_preempt = -1, finished = 0;
    int32_t b_tokens_at_preempt = 0;
    tn_sched_seq *c = NULL;
    for (int k = 0; k < 100 && finished < 3; k++) {
        tn_sched_schedule(s, (double)k, &st);
        check_step(s, &st, 32);
        if (st.n_preempted > 0 && b_first_preempt < 0) {
            b_first_preempt = k;
            assert_true(b->state == TN_SEQ_WAITING);
            assert_int_equal(b->n_computed, 0);
            assert_int_equal(b->n_blocks, 0);
            assert_int_equal(b->n_preempted, 1);
            assert_true(a->state == TN_SEQ_RUNNING);
            b_tokens_at_preempt = b->n_tokens;
            assert_true(b_tokens_at_preempt > 6); /* it had generated: those are kept */
            c = add(s, 3, 4, 2, 0);               /* a newer request */
        }
        for (int32_t i = 0; i < st.n_items; i++) {
            if (c && st.items[i].seq == c) { /* b (id 2) first: running or finished by now */
                tn_sched_seq *bb = tn_sched_find(s, 2);
                assert_true(bb == NULL || bb->state == TN_SEQ_RUNNING);
            }
        }
        tn_sched_seq *aa = tn_sched_find(s, 1);
        assert_true(aa == NULL || aa->n_preempted == 0); /* the oldest is never the victim */
        finished += complete(s, &st);
    }
    assert_int_equal(finished, 3);
    assert_true(b_first_preempt >= 0);
    tn_sched_stats ss;
    tn_sched_get_stats(s, &ss);
    assert_true(ss.n_preemptions >= 1);
    assert_all_free(s);
    tn_sched_free(s);
}

/* A repeated prompt takes its full blocks from the cache (all but the block
 * of the last token); the stats count queries and hits in tokens. */
static void test_prefix_hits(void **state)
{
    tn_sched *s = make(16, 4, 4, 64, 32, true);
    tn_sched_step st;
    add(s, 7, 10, 1, 0);
    tn_sched_schedule(s, 0, &st);
    assert_int_equal(st.items[0].pos0, 0);
    complete(s, &st); /* generates its one token and finishes */
    assert_all_free(s);
    tn_sched_stats ss;
    tn_sched_get_stats(s, &ss);
    assert_int_equal(ss.prefix_hits, 0);
    assert_int_equal(ss.prefix_queries, 10);
    assert_int_equal(tn_blocks_n_cached(tn_sched_blocks(s)), 2);

    tn_sched_seq *b = add(s, 7, 10, 1, 0); /* same id => same tokens */
    tn_sched_schedule(s, 1, &st);
    assert_int_equal(st.n_items, 1);
    assert_int_equal(st.items[0].pos0, 8);
    assert_int_equal(st.items[0].n, 2);
    assert_int_equal(b->n_cached, 8);
    tn_sched_get_stats(s, &ss);
    assert_int_equal(ss.prefix_hits, 8);
    assert_int_equal(ss.prefix_queries, 20);
    complete(s, &st);

    /* A prompt of exactly two blocks: only the first is taken. */
    add(s, 7, 8, 1, 0);
    tn_sched_schedule(s, 2, &st);
    assert_int_equal(st.items[0].pos0, 4);
    complete(s, &st);
    /* Another prompt: no hit. */
    add(s, 8, 10, 1, 0);
    tn_sched_schedule(s, 3, &st);
    assert_int_equal(st.items[0].pos0, 0);
    complete(s, &st);
    assert_all_free(s);
    tn_sched_free(s);
}

/* Deadlines are checked against the given clock: running and waiting
 * sequences past theirs come back in st.expired, their blocks released. */
static void test_deadline(void **state)
{
    tn_sched *s = make(16, 4, 1, 64, 32, false);
    tn_sched_seq *a = add(s, 1, 5, 20, 10.0), *b = add(s, 2, 5, 20, 3.0);
    tn_sched_step st;
    tn_sched_schedule(s, 1.0, &st);
    assert_int_equal(st.n_expired, 0);
    assert_int_equal(st.n_items, 1); /* one lane: a runs, b waits */
    complete(s, &st);
    tn_sched_schedule(s, 3.0, &st); /* b's deadline, while waiting */
    assert_int_equal(st.n_expired, 1);
    assert_ptr_equal(st.expired[0], b);
    assert_true(b->state == TN_SEQ_DONE);
    tn_sched_finish(s, b);
    complete(s, &st);
    tn_sched_schedule(s, 9.999, &st);
    assert_int_equal(st.n_expired, 0);
    complete(s, &st);
    tn_sched_schedule(s, 10.0, &st); /* a's, while running */
    assert_int_equal(st.n_expired, 1);
    assert_ptr_equal(st.expired[0], a);
    assert_int_equal(st.n_items, 0);
    tn_sched_stats ss;
    tn_sched_get_stats(s, &ss);
    assert_int_equal(ss.blocks_used, 0);
    tn_sched_finish(s, a);
    assert_all_free(s);
    tn_sched_free(s);
}

/* Many sequences of random sizes in a small cache with prefix sharing:
 * every one finishes, invariants hold at every step, nothing leaks. */
static void test_random_workload(void **state)
{
    tn_sched *s = make(12, 4, 5, 10, 40, true);
    uint64_t rng = 7;
    int added = 0, finished = 0;
    tn_sched_step st;
    for (int k = 0; k < 5000 && finished < 60; k++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        if (added < 60 && (rng >> 60) < 4) {
            int32_t np = 1 + (int32_t)((rng >> 20) % 24), mn = 1 + (int32_t)((rng >> 30) % 16);
            add(s, (uint64_t)(rng >> 40) % 3, np, mn, 0); /* ids 0..2: shared prefixes */
            added++;
        }
        tn_sched_schedule(s, (double)k, &st);
        check_step(s, &st, 10);
        finished += complete(s, &st);
    }
    assert_int_equal(finished, 60);
    assert_all_free(s);
    tn_sched_free(s);
}

static void test_invalid(void **state)
{
    tn_sched_params p = {.n_blocks = 2, .block_size = 4, .max_running = 1, .step_token_budget = 8, .n_ctx = 9};
    tn_sched *s = NULL;
    assert_int_equal(tn_sched_new(&p, &s), TN_ERR_INVALID); /* n_ctx > cache */
    s = make(4, 4, 1, 8, 16, false);
    int32_t t[20] = {0};
    tn_sched_seq *q = NULL;
    assert_int_equal(tn_sched_add(s, 1, t, 12, 5, 0, NULL, &q), TN_ERR_INVALID);
    assert_int_equal(tn_sched_add(s, 1, t, 0, 5, 0, NULL, &q), TN_ERR_INVALID);
    assert_null(q);
    tn_sched_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunked_prefill), cmocka_unit_test(test_decode_first),
        cmocka_unit_test(test_fairness),        cmocka_unit_test(test_preemption),
        cmocka_unit_test(test_prefix_hits),     cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_random_workload), cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
