/*
 * metrics.c — Prometheus text exposition of the server and the engine.
 *
 * Names follow vLLM's with a `tern:` prefix (num_requests_running,
 * kv_cache_usage_perc, prefix_cache_queries_total, time_to_first_token_seconds,
 * ...) so existing dashboards need only the prefix changed. Gauges and
 * token counters come from tn_engine_get_stats() at scrape time; the
 * latency histograms are observed on the loop thread as events arrive
 * (TTFT once per request, TPOT once per token after the first of each
 * choice, e2e once per request), so no locking is needed. MoE routing
 * counts (moe_expert_tokens{layer,expert} over the engine's window,
 * moe_expert_tokens_total, moe_load_imbalance{layer}) come from a snapshot
 * the engine copies under its lock each step (tn_engine_moe_stats).
 * With data-parallel engines (tern serve --ep N) the engine gauges and
 * counters above are sums over the ranks, and dp_rank_* series break them
 * down by rank (rank 0's now, the others' as of the last step round).
 */
#include "serve/serve_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const double ttft_b[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
static const double tpot_b[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                                0.4,   0.5,   0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0};
static const double e2e_b[] = {0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0,
                               10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 120.0, 240.0, 480.0, 960.0};
static const double tok_b[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000};

static void hist_init(hist *h, const double *b, int n)
{
    memset(h, 0, sizeof *h);
    h->bounds = b;
    h->n_bounds = TN_MIN(n, HIST_MAX_BUCKETS);
}

void metrics_init(metrics *m)
{
    memset(m, 0, sizeof *m);
    hist_init(&m->ttft, ttft_b, (int)TN_ARRAY_LEN(ttft_b));
    hist_init(&m->tpot, tpot_b, (int)TN_ARRAY_LEN(tpot_b));
    hist_init(&m->e2e, e2e_b, (int)TN_ARRAY_LEN(e2e_b));
    hist_init(&m->n_prompt, tok_b, (int)TN_ARRAY_LEN(tok_b));
    hist_init(&m->n_gen, tok_b, (int)TN_ARRAY_LEN(tok_b));
}

void hist_observe(hist *h, double v)
{
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

static void out(sbuf *b, const char *fmt, ...) TN_PRINTF(2, 3);
static void out(sbuf *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        (void)sbuf_add(b, line, TN_MIN((size_t)n, sizeof line - 1));
}

static void head(sbuf *b, const char *name, const char *type, const char *help)
{
    out(b, "# HELP tern:%s %s\n# TYPE tern:%s %s\n", name, help, name, type);
}

static void scalar(sbuf *b, const char *lbl, const char *name, const char *type, const char *help, double v)
{
    head(b, name, type, help);
    out(b, "tern:%s{%s} %.17g\n", name, lbl, v);
}

static void histogram(sbuf *b, const char *lbl, const char *name, const char *help, const hist *h)
{
    head(b, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        out(b, "tern:%s_bucket{%s,le=\"%g\"} %llu\n", name, lbl, h->bounds[i], (unsigned long long)cum);
    }
    cum += h->counts[h->n_bounds];
    out(b, "tern:%s_bucket{%s,le=\"+Inf\"} %llu\n", name, lbl, (unsigned long long)cum);
    out(b, "tern:%s_sum{%s} %.17g\n", name, lbl, h->sum);
    out(b, "tern:%s_count{%s} %llu\n", name, lbl, (unsigned long long)h->count);
}

/* Whether layer il of st ever routed a token (a dense layer never does). */
static bool moe_layer(const tn_moe_stats *st, int32_t il)
{
    for (int32_t e = 0; e < tn_moe_stats_n_expert(st); e++)
        if (tn_moe_stats_total(st, il, e) > 0)
            return true;
    return false;
}

/* MoE routing over the engine's statistics window (a snapshot copied under
 * the engine's lock); nothing for a dense model, nor for the dense layers
 * of a MoE model. */
static void moe_render(sbuf *b, const char *lbl, tn_engine *engine)
{
    tn_moe_stats *st = NULL;
    if (tn_engine_moe_stats(engine, &st) != TN_OK || !st)
        return;
    const int32_t L = tn_moe_stats_n_layer(st), E = tn_moe_stats_n_expert(st);
    scalar(b, lbl, "moe_window_steps", "gauge", "Engine steps the MoE routing window holds now.",
           tn_moe_stats_n_calls(st));
    head(b, "moe_expert_tokens", "gauge", "Tokens routed to each expert of each MoE layer over the window.");
    for (int32_t il = 0; il < L; il++)
        for (int32_t e = 0; moe_layer(st, il) && e < E; e++)
            out(b, "tern:moe_expert_tokens{%s,layer=\"%d\",expert=\"%d\"} %lld\n", lbl, il, e,
                (long long)tn_moe_stats_count(st, il, e));
    head(b, "moe_expert_tokens_total", "counter", "Tokens routed to each expert of each MoE layer since start.");
    for (int32_t il = 0; il < L; il++)
        for (int32_t e = 0; moe_layer(st, il) && e < E; e++)
            out(b, "tern:moe_expert_tokens_total{%s,layer=\"%d\",expert=\"%d\"} %lld\n", lbl, il, e,
                (long long)tn_moe_stats_total(st, il, e));
    head(b, "moe_load_imbalance", "gauge", "Max over mean of the experts' window tokens per MoE layer (1 = even).");
    for (int32_t il = 0; il < L; il++)
        if (moe_layer(st, il))
            out(b, "tern:moe_load_imbalance{%s,layer=\"%d\"} %.6g\n", lbl, il, tn_moe_stats_imbalance(st, il));
    tn_moe_stats_free(st);
}

/* Per-rank series of a data-parallel group (nothing for one engine). */
static void dp_render(sbuf *b, const char *lbl, tn_engine *engine)
{
    tn_engine_rank_stats rs[256];
    int32_t n = TN_MIN(tn_engine_get_rank_stats(engine, rs, 256), 256);
    if (n < 2)
        return;
    struct {
        const char *name, *type, *help;
    } m[] = {
        {"dp_rank_requests_running", "gauge", "Requests in the running batch of each data-parallel rank."},
        {"dp_rank_requests_waiting", "gauge", "Requests waiting on each data-parallel rank."},
        {"dp_rank_requests_live", "gauge", "Requests routed to each rank and not finished."},
        {"dp_rank_requests_routed_total", "counter", "Requests routed to each rank."},
        {"dp_rank_kv_cache_usage_perc", "gauge", "Fraction of each rank's KV-cache blocks in use."},
        {"dp_rank_kv_cache_blocks_total", "gauge", "KV-cache blocks of each rank."},
        {"dp_rank_generation_tokens_total", "counter", "Tokens generated by each rank."},
        {"dp_rank_engine_steps_total", "counter", "Forward steps with tokens of each rank."},
        {"dp_rank_engine_empty_steps_total", "counter", "Forward steps of each rank without tokens of its own."},
    };
    for (int k = 0; k < (int)TN_ARRAY_LEN(m); k++) {
        head(b, m[k].name, m[k].type, m[k].help);
        for (int32_t r = 0; r < n; r++) {
            const tn_engine_stats *st = &rs[r].st;
            double v = 0;
            switch (k) {
            case 0: v = st->n_running; break;
            case 1: v = st->n_waiting; break;
            case 2: v = rs[r].n_live; break;
            case 3: v = (double)rs[r].n_routed; break;
            case 4: v = st->kv_blocks_total > 0 ? (double)st->kv_blocks_used / st->kv_blocks_total : 0.0; break;
            case 5: v = st->kv_blocks_total; break;
            case 6: v = (double)st->generated_tokens; break;
            case 7: v = (double)st->n_steps; break;
            default: v = (double)st->n_empty_steps; break;
            }
            out(b, "tern:%s{%s,rank=\"%d\"} %.10g\n", m[k].name, lbl, (int)r, v);
        }
    }
}

char *metrics_render(srv *s)
{
    tn_engine_stats st;
    memset(&st, 0, sizeof st);
    tn_engine_get_stats(s->engine, &st);
    const metrics *m = &s->m;
    char lbl[300];
    snprintf(lbl, sizeof lbl, "model_name=\"%s\"", s->model_name);
    for (char *p = lbl + 12; *p && p[1]; p++) /* a quote or backslash in a name would break the format */
        if (*p == '"' || *p == '\\' || *p == '\n')
            *p = '_';
    sbuf b = {0};
    scalar(&b, lbl, "num_requests_running", "gauge", "Number of requests in the running batch.", st.n_running);
    scalar(&b, lbl, "num_requests_waiting", "gauge", "Number of requests waiting to be scheduled.", st.n_waiting);
    scalar(&b, lbl, "num_requests_http", "gauge", "Number of HTTP generation requests in flight.", s->n_live);
    scalar(&b, lbl, "kv_cache_usage_perc", "gauge", "Fraction of KV-cache blocks in use (1 = full).",
           st.kv_blocks_total > 0 ? (double)st.kv_blocks_used / st.kv_blocks_total : 0.0);
    scalar(&b, lbl, "kv_cache_blocks_total", "gauge", "KV-cache blocks in all.", st.kv_blocks_total);
    scalar(&b, lbl, "prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.",
           (double)st.prefix_queries);
    scalar(&b, lbl, "prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.",
           (double)st.prefix_hits);
    scalar(&b, lbl, "num_preemptions_total", "counter", "Requests preempted for lack of KV blocks.",
           (double)st.n_preemptions);
    scalar(&b, lbl, "prompt_tokens_total", "counter", "Prompt tokens processed.", (double)st.prompt_tokens);
    scalar(&b, lbl, "generation_tokens_total", "counter", "Tokens generated.", (double)st.generated_tokens);
    scalar(&b, lbl, "engine_steps_total", "counter", "Forward steps of the engine.", (double)st.n_steps);
    scalar(&b, lbl, "engine_forward_seconds_total", "counter", "Wall time inside forward calls with tokens.",
           st.forward_s);
    scalar(&b, lbl, "engine_host_seconds_total", "counter",
           "Wall time between consecutive forward calls (scheduling, sampling, events), idle waits excluded.",
           st.host_s);
    scalar(&b, lbl, "engine_pool_jobs_total", "counter", "Parallel jobs the compute threads ran.",
           (double)st.pool_jobs);
    scalar(&b, lbl, "engine_pool_sleeps_total", "counter",
           "Times a compute thread found no job within its spin time and slept (each costs a wake-up).",
           (double)st.pool_sleeps);
    head(&b, "request_success_total", "counter", "Finished requests (choices) by finish reason.");
    const char *reasons[] = {"stop", "length", "abort", "error"};
    const uint64_t counts[] = {m->finished_stop, m->finished_length, m->finished_abort, m->finished_error};
    for (int i = 0; i < 4; i++)
        out(&b, "tern:request_success_total{%s,finished_reason=\"%s\"} %llu\n", lbl, reasons[i],
            (unsigned long long)counts[i]);
    scalar(&b, lbl, "http_requests_total", "counter", "HTTP requests received.", (double)m->http_requests);
    scalar(&b, lbl, "http_errors_total", "counter", "HTTP requests answered with an error.", (double)m->http_errors);
    histogram(&b, lbl, "time_to_first_token_seconds", "Time from request arrival to its first token.", &m->ttft);
    histogram(&b, lbl, "time_per_output_token_seconds", "Time between consecutive tokens of a choice.", &m->tpot);
    histogram(&b, lbl, "e2e_request_latency_seconds", "Time from request arrival to its last token.", &m->e2e);
    histogram(&b, lbl, "request_prompt_tokens", "Prompt tokens per request.", &m->n_prompt);
    histogram(&b, lbl, "request_generation_tokens", "Generated tokens per choice.", &m->n_gen);
    moe_render(&b, lbl, s->engine);
    dp_render(&b, lbl, s->engine);
    return b.p;
}
