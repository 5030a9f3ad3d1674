/*
 * cmd_loadgen.c — `tern loadgen`: a load generator for any OpenAI-compatible
 * server (tern serve, llama-server, vLLM). It streams completions and
 * reports time to first token (TTFT), time per output token (TPOT: from the
 * first to the last token over n - 1), inter-token latency (ITL: every gap
 * between streamed chunks) and end-to-end latency — mean, p50, p90, p99 —
 * plus request and token throughput and goodput (requests per second that
 * met both SLOs).
 *
 * Key idea: one libevent loop, one HTTP connection per request; load is
 * either closed-loop (--concurrency C requests in flight at all times) or
 * open-loop (--rate R: Poisson arrivals, R requests per second on
 * average, whatever the server's speed).
 *
 * PROMPTS. Synthetic (default): --prompt-len L is in TOKENS of the server's
 * own vocabulary. A built-in English paragraph is tokenized once by the
 * server (POST /tokenize, understood by tern serve, llama-server and vLLM),
 * and request i sends L token ids (the prompt as an id list, which servers
 * take as is: no BOS added) read cyclically from that pool starting at a
 * different offset per request, so prompts do not share a prefix and a
 * prefix cache cannot flatter the server. If the server has no /tokenize,
 * loadgen falls back to L repeats of " hello" as text and says so: that is
 * L WORDS, 1 to 3 tokens each (stories260K's 512-token vocabulary splits
 * " hello" in three: --prompt-len 32 gave 97 tokens with BOS). Generation is
 * forced to --output-len tokens (ignore_eos, temperature 0).
 *
 * --dataset FILE.jsonl: one request per line, used in turn (request i takes
 * line i mod lines): {"prompt": "text" | [ids]} goes to /v1/completions,
 * {"messages": [...]} to /v1/chat/completions; optional "max_tokens" (else
 * --output-len). Other fields are ignored; a line that is not such an
 * object is an error naming its number.
 *
 * Exit codes: 0 every request succeeded, 1 some failed (or none could
 * connect), 2 a usage error.
 */
#include "tools.h"

#include "base/base.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

typedef struct lg_opts {
    const char *url, *model, *dataset;
    int concurrency;
    double rate;
    int num, prompt_len, output_len;
    double slo_ttft_ms, slo_tpot_ms;
    int timeout_s;              /* per request (libevent's default, 50 s, is short on a loaded CPU) */
    bool json;
} lg_opts;

typedef struct lg_req {
    struct lg *lg;
    char *body;                 /* the request's JSON body (freed when it is sent) */
    bool chat;
    struct evhttp_connection *conn; /* freed at the end */
    double t_start, t_first, t_last;
    int n_chunks, n_tokens, n_prompt;
    double *itl;                /* (cap_itl) gaps in seconds */
    int n_itl, cap_itl;
    char line[1 << 16];         /* SSE line assembly */
    size_t line_len;
    bool ok, done;
} lg_req;

typedef struct lg {
    lg_opts o;
    struct event_base *base;
    struct evhttp_uri *uri;
    const char *host;
    int port;
    char path[512];             /* .../v1/completions */
    char chat_path[512];        /* .../v1/chat/completions */
    char tok_path[512];         /* .../tokenize */
    int32_t *pool;              /* (n_pool) token ids for synthetic prompts; NULL: text prompts */
    int n_pool;
    json_t **data;              /* (n_data) dataset lines (each {"prompt"|"messages"[, "max_tokens"]}) */
    int n_data;
    lg_req *reqs;
    int started, finished, in_flight;
    double t0, t_end;
    unsigned long long rng;
    struct event *timer;
} lg;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tern loadgen --url URL (--concurrency C | --rate R) --num N --prompt-len L --output-len O\n"
            "                    [--dataset FILE.jsonl] [--slo-ttft MS --slo-tpot MS] [--model NAME] [-o json]\n"
            "                    [--timeout S (per request, default 600)]\n"
            "\n"
            "Streams N completions (POST URL/v1/completions) and reports TTFT, TPOT, ITL and\n"
            "end-to-end latency (mean, p50, p90, p99), throughput and goodput under the SLOs.\n"
            "--prompt-len is in tokens of the server's vocabulary (via its /tokenize).\n"
            "--dataset: JSON lines {\"prompt\": TEXT|[IDS]} or {\"messages\": [...]}, optional\n"
            "\"max_tokens\"; request i uses line i mod the number of lines.\n");
}

/* --- one request ------------------------------------------------------------ */

static void on_sse_line(lg_req *r, const char *line)
{
    if (strncmp(line, "data:", 5) != 0)
        return;
    line += 5;
    while (*line == ' ')
        line++;
    if (!strcmp(line, "[DONE]"))
        return;
    json_t *j = json_loads(line, 0, NULL);
    if (!j)
        return;
    json_t *usage = json_object_get(j, "usage");
    if (json_is_object(usage)) {
        r->n_tokens = (int)json_integer_value(json_object_get(usage, "completion_tokens"));
        r->n_prompt = (int)json_integer_value(json_object_get(usage, "prompt_tokens"));
    }
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    const char *text = json_string_value(json_object_get(ch, "text"));
    if (!text)
        text = json_string_value(json_object_get(json_object_get(ch, "delta"), "content"));
    if (text && *text) {
        double now = tn_time_s();
        if (r->n_chunks == 0) {
            r->t_first = now;
        } else {
            if (r->n_itl == r->cap_itl) {
                int cap = r->cap_itl ? 2 * r->cap_itl : 64;
                double *p = realloc(r->itl, (size_t)cap * sizeof *p);
                if (p) {
                    r->itl = p;
                    r->cap_itl = cap;
                }
            }
            if (r->n_itl < r->cap_itl)
                r->itl[r->n_itl++] = now - r->t_last;
        }
        r->t_last = now;
        r->n_chunks++;
    }
    json_decref(j);
}

static void on_chunk(struct evhttp_request *req, void *arg)
{
    lg_req *r = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    char buf[4096];
    int n;
    while ((n = evbuffer_remove(in, buf, sizeof buf)) > 0) {
        for (int i = 0; i < n; i++) {
            if (buf[i] == '\n') {
                r->line[r->line_len] = '\0';
                on_sse_line(r, r->line);
                r->line_len = 0;
            } else if (buf[i] != '\r' && r->line_len + 1 < sizeof r->line) {
                r->line[r->line_len++] = buf[i];
            }
        }
    }
}

static void start_next(lg *g);

static void on_done(struct evhttp_request *req, void *arg)
{
    lg_req *r = arg;
    lg *g = r->lg;
    r->ok = req && evhttp_request_get_response_code(req) == 200 && r->n_chunks > 0;
    if (req && !r->ok && evhttp_request_get_response_code(req) != 200)
        fprintf(stderr, "tern loadgen: request %d: HTTP %d\n", (int)(r - g->reqs),
                evhttp_request_get_response_code(req));
    else if (!req || evhttp_request_get_response_code(req) == 0)
        fprintf(stderr, "tern loadgen: request %d: no response (connection failed, or no reply within %d s)\n",
                (int)(r - g->reqs), g->o.timeout_s);
    if (!r->n_tokens)
        r->n_tokens = r->n_chunks;
    r->done = true;
    if (!r->t_last)
        r->t_last = tn_time_s();
    g->finished++;
    g->in_flight--;
    if (g->finished == g->o.num) {
        g->t_end = tn_time_s();
        event_base_loopexit(g->base, NULL);
    } else if (g->o.concurrency > 0) {
        start_next(g);
    }
}

/* The body of request i (malloc'ed JSON), see the file comment. */
static char *make_body(lg *g, int i, bool *chat)
{
    json_t *b = json_pack("{s:f, s:b, s:b, s:{s:b}}", "temperature", 0.0, "ignore_eos", 1, "stream", 1,
                          "stream_options", "include_usage", 1);
    int max_tokens = g->o.output_len;
    *chat = false;
    if (g->n_data > 0) {
        json_t *d = g->data[i % g->n_data], *m = json_object_get(d, "max_tokens");
        if (json_is_integer(m))
            max_tokens = (int)json_integer_value(m);
        *chat = json_object_get(d, "messages") != NULL;
        const char *k = *chat ? "messages" : "prompt";
        json_object_set(b, k, json_object_get(d, k));
    } else if (g->pool) {
        json_t *ids = json_array();
        int off = (int)(((unsigned long long)i * 7919u) % (unsigned)g->n_pool);
        for (int k = 0; k < g->o.prompt_len; k++)
            json_array_append_new(ids, json_integer(g->pool[(off + k) % g->n_pool]));
        json_object_set_new(b, "prompt", ids);
    } else {
        size_t cap = (size_t)g->o.prompt_len * 6 + 1;
        char *p = malloc(cap);
        if (p) {
            p[0] = '\0';
            for (int k = 0; k < g->o.prompt_len; k++)
                memcpy(p + 6 * k, " hello", 7);
            json_object_set_new(b, "prompt", json_string(p));
            free(p);
        }
    }
    json_object_set_new(b, "max_tokens", json_integer(max_tokens));
    if (g->o.model)
        json_object_set_new(b, "model", json_string(g->o.model));
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    return s;
}

static void start_one(lg *g)
{
    int i = g->started;
    lg_req *r = &g->reqs[g->started++];
    r->lg = g;
    r->t_start = tn_time_s();
    r->body = make_body(g, i, &r->chat);
    if (!r->body) {
        on_done(NULL, r);
        return;
    }
    struct evhttp_connection *c = evhttp_connection_base_new(g->base, NULL, g->host, (ev_uint16_t)g->port);
    struct evhttp_request *req = c ? evhttp_request_new(on_done, r) : NULL;
    if (!req) {
        if (c)
            evhttp_connection_free(c);
        on_done(NULL, r);
        return;
    }
    r->conn = c;
    evhttp_connection_set_timeout(c, g->o.timeout_s);
    evhttp_request_set_chunked_cb(req, on_chunk);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", g->host);
    evhttp_add_header(h, "Content-Type", "application/json");
    const char *key = getenv("OPENAI_API_KEY");
    if (key) {
        char auth[512];
        snprintf(auth, sizeof auth, "Bearer %s", key);
        evhttp_add_header(h, "Authorization", auth);
    }
    evbuffer_add(evhttp_request_get_output_buffer(req), r->body, strlen(r->body));
    free(r->body);
    r->body = NULL;
    g->in_flight++;
    if (evhttp_make_request(c, req, EVHTTP_REQ_POST, r->chat ? g->chat_path : g->path) != 0)
        on_done(NULL, r);
}

static void start_next(lg *g)
{
    if (g->started < g->o.num)
        start_one(g);
}

/* Open loop: start one, schedule the next after an exponential gap. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    lg *g = arg;
    start_next(g);
    if (g->started < g->o.num) {
        g->rng = g->rng * 6364136223846793005ull + 1442695040888963407ull;
        double u = ((g->rng >> 11) + 0.5) / 9007199254740992.0;
        double gap = -log(u) / g->o.rate;
        struct timeval tv = {(long)gap, (long)((gap - floor(gap)) * 1e6)};
        evtimer_add(g->timer, &tv);
    }
}

/* --- statistics ------------------------------------------------------------------ */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct dist {
    double mean, p50, p90, p99;
    int n;
} dist;

static dist summarize(double *v, int n)
{
    dist d = {0};
    d.n = n;
    if (n == 0)
        return d;
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    double s = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    d.mean = s / n;
#define PCT(p) v[(int)fmin((double)n - 1, floor((p) / 100.0 * (n - 1) + 0.5))]
    d.p50 = PCT(50);
    d.p90 = PCT(90);
    d.p99 = PCT(99);
#undef PCT
    return d;
}

static int report(lg *g)
{
    int n = g->o.num, ok = 0, good = 0, n_itl = 0;
    for (int i = 0; i < n; i++)
        n_itl += g->reqs[i].n_itl;
    double *ttft = calloc((size_t)n + 1, sizeof *ttft), *tpot = calloc((size_t)n + 1, sizeof *tpot),
           *e2e = calloc((size_t)n + 1, sizeof *e2e), *itl = calloc((size_t)n_itl + 1, sizeof *itl);
    if (!ttft || !tpot || !e2e || !itl) {
        fprintf(stderr, "tern loadgen: out of memory\n");
        return 1;
    }
    long long out_tokens = 0, in_tokens = 0;
    int k = 0, n_tpot = 0;
    for (int i = 0; i < n; i++) {
        lg_req *r = &g->reqs[i];
        if (!r->ok)
            continue;
        double t1 = r->t_first - r->t_start, tp = r->n_tokens > 1 ? (r->t_last - r->t_first) / (r->n_tokens - 1) : 0;
        ttft[ok] = t1 * 1e3;
        e2e[ok] = (r->t_last - r->t_start) * 1e3;
        if (r->n_tokens > 1)
            tpot[n_tpot++] = tp * 1e3;
        for (int j = 0; j < r->n_itl; j++)
            itl[k++] = r->itl[j] * 1e3;
        out_tokens += r->n_tokens;
        in_tokens += r->n_prompt;
        ok++;
        bool meets = (g->o.slo_ttft_ms <= 0 || t1 * 1e3 <= g->o.slo_ttft_ms) &&
                     (g->o.slo_tpot_ms <= 0 || tp * 1e3 <= g->o.slo_tpot_ms);
        good += meets;
    }
    double wall = g->t_end - g->t0;
    dist d[4] = {summarize(ttft, ok), summarize(tpot, n_tpot), summarize(itl, k), summarize(e2e, ok)};
    const char *names[4] = {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"};
    if (g->o.json) {
        json_t *j = json_pack("{s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:I, s:f}", "requests", n, "succeeded", ok,
                              "duration_s", wall, "request_throughput", ok / wall, "output_token_throughput",
                              out_tokens / wall, "goodput", good / wall, "mean_prompt_tokens",
                              ok ? (double)in_tokens / ok : 0.0, "output_tokens", out_tokens,
                              "slo_attainment", ok ? (double)good / n : 0.0);
        for (int i = 0; i < 4; i++)
            json_object_set_new(j, names[i], json_pack("{s:f, s:f, s:f, s:f}", "mean", d[i].mean, "p50", d[i].p50,
                                                       "p90", d[i].p90, "p99", d[i].p99));
        char *s = json_dumps(j, JSON_INDENT(2));
        printf("%s\n", s ? s : "{}");
        free(s);
        json_decref(j);
    } else {
        printf("requests %d (ok %d) in %.2f s, mean prompt %.1f tokens\n", n, ok, wall,
               ok ? (double)in_tokens / ok : 0.0);
        printf("| metric | mean | p50 | p90 | p99 |\n|---|---|---|---|---|\n");
        for (int i = 0; i < 4; i++)
            printf("| %s | %.2f | %.2f | %.2f | %.2f |\n", names[i], d[i].mean, d[i].p50, d[i].p90, d[i].p99);
        printf("request throughput %.3f req/s, output %.1f tok/s, goodput %.3f req/s (%d/%d within SLOs)\n",
               ok / wall, out_tokens / wall, good / wall, good, n);
    }
    free(ttft);
    free(tpot);
    free(e2e);
    free(itl);
    return ok == n ? 0 : 1;
}

/* --- prompts ------------------------------------------------------------------------ */

/* Text for synthetic prompts: varied English, so the token pool has no
 * short period and per-request offsets give different prompts. */
static const char POOL_TEXT[] =
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, counting the steps as his father had "
    "taught him. Two hundred and twelve, never more, never less. From the lantern room he could see the fishing "
    "boats returning along the northern channel, their hulls low with the day's catch, gulls wheeling above the "
    "wakes. On clear nights the lights of the mainland town flickered across the water like a scattered handful "
    "of embers. He kept a logbook of the weather, the ships that passed, and the small events that made one day "
    "different from another: a seal asleep on the jetty, a crate of oranges washed ashore after a storm, a letter "
    "from his sister asking when he would finally come home. Winter brought fog so thick that the beam seemed to "
    "stop a few yards from the glass, and he would sound the horn through the night, listening for answers from "
    "the dark. In spring the island filled with nesting birds and the paths grew bright with thrift and campion. "
    "Visitors were rare; the supply boat came on the first Monday of each month, weather permitting, bringing "
    "flour, lamp oil, newspapers already a week old, and sometimes a parcel of books chosen by the librarian in "
    "town, who seemed to know exactly what a solitary man might want to read.";

typedef struct http_once {
    struct event_base *base;
    struct evbuffer *body;
    int status;
} http_once;

static void on_once(struct evhttp_request *req, void *arg)
{
    http_once *h = arg;
    h->status = req ? evhttp_request_get_response_code(req) : 0;
    if (req)
        evbuffer_add_buffer(h->body, evhttp_request_get_input_buffer(req));
    event_base_loopexit(h->base, NULL);
}

/* Asks the server to tokenize POOL_TEXT (no special tokens); fills g->pool.
 * False when the server has no usable /tokenize. */
static bool fetch_pool(lg *g)
{
    struct evhttp_connection *c = evhttp_connection_base_new(g->base, NULL, g->host, (ev_uint16_t)g->port);
    http_once h = {g->base, evbuffer_new(), 0};
    struct evhttp_request *req = c && h.body ? evhttp_request_new(on_once, &h) : NULL;
    bool ok = false;
    if (req) {
        evhttp_connection_set_timeout(c, 30);
        struct evkeyvalq *hd = evhttp_request_get_output_headers(req);
        evhttp_add_header(hd, "Host", g->host);
        evhttp_add_header(hd, "Content-Type", "application/json");
        const char *key = getenv("OPENAI_API_KEY");
        if (key) {
            char auth[512];
            snprintf(auth, sizeof auth, "Bearer %s", key);
            evhttp_add_header(hd, "Authorization", auth);
        }
        /* tern/vLLM read "prompt" + add_special_tokens, llama-server "content" + add_special */
        json_t *b = json_pack("{s:s, s:s, s:b, s:b}", "prompt", POOL_TEXT, "content", POOL_TEXT,
                              "add_special_tokens", 0, "add_special", 0);
        if (g->o.model)
            json_object_set_new(b, "model", json_string(g->o.model));
        char *s = json_dumps(b, JSON_COMPACT);
        json_decref(b);
        if (s && evbuffer_add(evhttp_request_get_output_buffer(req), s, strlen(s)) == 0 &&
            evhttp_make_request(c, req, EVHTTP_REQ_POST, g->tok_path) == 0) {
            event_base_dispatch(g->base);
            ok = true;
        }
        free(s);
    }
    if (ok && h.status == 200) {
        size_t n = evbuffer_get_length(h.body);
        json_t *j = json_loadb((const char *)evbuffer_pullup(h.body, -1), n, 0, NULL);
        json_t *t = json_object_get(j, "tokens");
        size_t k = json_array_size(t);
        g->pool = k >= 16 ? malloc(k * sizeof *g->pool) : NULL;
        for (size_t i = 0; g->pool && i < k; i++) {
            json_t *v = json_array_get(t, i);
            /* llama-server with_pieces answers objects; plain answers are ids */
            json_t *id = json_is_object(v) ? json_object_get(v, "id") : v;
            if (!json_is_integer(id)) {
                free(g->pool);
                g->pool = NULL;
                break;
            }
            g->pool[i] = (int32_t)json_integer_value(id);
        }
        g->n_pool = g->pool ? (int)k : 0;
        json_decref(j);
    }
    if (h.body)
        evbuffer_free(h.body);
    if (c)
        evhttp_connection_free(c);
    return g->pool != NULL;
}

/* Reads a JSON-lines dataset into g->data; false with a message naming the
 * line. */
static bool load_dataset(lg *g, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "tern loadgen: cannot open dataset '%s': %s\n", path, strerror(errno));
        return false;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0;
    bool ok = true;
    while (ok && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t i = 0;
        while (i < (size_t)len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\n' || line[i] == '\r'))
            i++;
        if (i == (size_t)len)
            continue; /* blank */
        json_error_t err;
        json_t *j = json_loadb(line, (size_t)len, 0, &err);
        json_t *p = json_object_get(j, "prompt"), *m = json_object_get(j, "messages"),
               *mt = json_object_get(j, "max_tokens");
        const char *why = !j                                          ? err.text
                          : !json_is_object(j)                        ? "not a JSON object"
                          : !p == !m                                  ? "needs exactly one of \"prompt\" and \"messages\""
                          : p && !json_is_string(p) && !json_is_array(p) ? "\"prompt\" must be a string or a list of token ids"
                          : m && (!json_is_array(m) || !json_array_size(m)) ? "\"messages\" must be a non-empty list"
                          : mt && (!json_is_integer(mt) || json_integer_value(mt) < 1 || json_integer_value(mt) > 1000000)
                              ? "\"max_tokens\" must be an integer in [1, 1000000]"
                              : NULL;
        if (why) {
            fprintf(stderr, "tern loadgen: %s:%d: %s\n", path, lineno, why);
            json_decref(j);
            ok = false;
            break;
        }
        json_t **d = realloc(g->data, (size_t)(g->n_data + 1) * sizeof *d);
        if (!d) {
            json_decref(j);
            fprintf(stderr, "tern loadgen: out of memory reading '%s'\n", path);
            ok = false;
            break;
        }
        g->data = d;
        g->data[g->n_data++] = j;
    }
    free(line);
    fclose(f);
    if (ok && g->n_data == 0) {
        fprintf(stderr, "tern loadgen: dataset '%s' has no requests\n", path);
        ok = false;
    }
    return ok;
}

/* --- main ------------------------------------------------------------------------- */

static bool num_arg(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

int tn_cmd_loadgen(int argc, char **argv)
{
    lg g;
    memset(&g, 0, sizeof g);
    g.o.prompt_len = 64;
    g.o.output_len = 64;
    g.o.timeout_s = 600;
    g.o.num = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tern loadgen: missing value after '%s'\n", a);
            return 2;
        }
        const char *v = argv[++i];
        double x = 0;
        bool ok = true;
        if (!strcmp(a, "--url"))
            g.o.url = v;
        else if (!strcmp(a, "--model"))
            g.o.model = v;
        else if (!strcmp(a, "--dataset"))
            g.o.dataset = v;
        else if (!strcmp(a, "--concurrency") && (ok = num_arg(v, 1, 100000, &x)))
            g.o.concurrency = (int)x;
        else if (!strcmp(a, "--rate") && (ok = num_arg(v, 1e-6, 1e6, &x)))
            g.o.rate = x;
        else if (!strcmp(a, "--num") && (ok = num_arg(v, 1, 1e7, &x)))
            g.o.num = (int)x;
        else if (!strcmp(a, "--prompt-len") && (ok = num_arg(v, 1, 1e6, &x)))
            g.o.prompt_len = (int)x;
        else if (!strcmp(a, "--output-len") && (ok = num_arg(v, 1, 1e6, &x)))
            g.o.output_len = (int)x;
        else if (!strcmp(a, "--timeout") && (ok = num_arg(v, 1, 1e6, &x)))
            g.o.timeout_s = (int)x;
        else if (!strcmp(a, "--slo-ttft") && (ok = num_arg(v, 0, 1e9, &x)))
            g.o.slo_ttft_ms = x;
        else if (!strcmp(a, "--slo-tpot") && (ok = num_arg(v, 0, 1e9, &x)))
            g.o.slo_tpot_ms = x;
        else if (!strcmp(a, "-o") && (ok = !strcmp(v, "json") || !strcmp(v, "table")))
            g.o.json = !strcmp(v, "json");
        else if (ok) {
            fprintf(stderr, "tern loadgen: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "tern loadgen: bad value '%s' for %s\n", v, a);
            return 2;
        }
    }
    if (!g.o.url || !g.o.num || (g.o.concurrency > 0) == (g.o.rate > 0)) {
        fprintf(stderr, "tern loadgen: --url, --num and one of --concurrency or --rate are required\n\n");
        usage(stderr);
        return 2;
    }
    g.uri = evhttp_uri_parse(g.o.url);
    g.host = g.uri ? evhttp_uri_get_host(g.uri) : NULL;
    if (!g.host) {
        fprintf(stderr, "tern loadgen: cannot parse the URL '%s'\n", g.o.url);
        if (g.uri)
            evhttp_uri_free(g.uri);
        return 2;
    }
    g.port = evhttp_uri_get_port(g.uri) > 0 ? evhttp_uri_get_port(g.uri) : 80;
    const char *base_path = evhttp_uri_get_path(g.uri);
    size_t bl = base_path ? strlen(base_path) : 0;
    while (bl && base_path[bl - 1] == '/')
        bl--;
    bool v1 = bl >= 3 && !strncmp(base_path + bl - 3, "/v1", 3);
    const char *bp = base_path ? base_path : "";
    snprintf(g.path, sizeof g.path, "%.*s%s", (int)bl, bp, v1 ? "/completions" : "/v1/completions");
    snprintf(g.chat_path, sizeof g.chat_path, "%.*s%s", (int)bl, bp, v1 ? "/chat/completions" : "/v1/chat/completions");
    snprintf(g.tok_path, sizeof g.tok_path, "%.*s/tokenize", (int)(v1 ? bl - 3 : bl), bp);

    g.reqs = calloc((size_t)g.o.num, sizeof *g.reqs);
    g.base = event_base_new();
    if (!g.reqs || !g.base) {
        fprintf(stderr, "tern loadgen: out of memory\n");
        return 1;
    }
    if (g.o.dataset) {
        if (!load_dataset(&g, g.o.dataset)) {
            for (int i = 0; i < g.n_data; i++)
                json_decref(g.data[i]);
            free(g.data);
            free(g.reqs);
            event_base_free(g.base);
            evhttp_uri_free(g.uri);
            return 2;
        }
    } else if (!fetch_pool(&g)) {
        fprintf(stderr, "tern loadgen: the server has no usable %s: prompts are %d repeats of \" hello\" "
                "(--prompt-len counts words, not tokens)\n", g.tok_path, g.o.prompt_len);
    }

    g.t0 = tn_time_s();
    g.rng = 0x2545F4914F6CDD1Dull;
    if (g.o.concurrency > 0) {
        for (int i = 0; i < g.o.concurrency && i < g.o.num; i++)
            start_next(&g);
    } else {
        g.timer = evtimer_new(g.base, on_timer, &g);
        struct timeval tv = {0, 0};
        evtimer_add(g.timer, &tv);
    }
    event_base_dispatch(g.base);
    if (!g.t_end)
        g.t_end = tn_time_s();
    int rc = report(&g);
    fflush(stdout);
    for (int i = 0; i < g.o.num; i++) {
        free(g.reqs[i].itl);
        free(g.reqs[i].body);
        if (g.reqs[i].conn)
            evhttp_connection_free(g.reqs[i].conn);
    }
    free(g.reqs);
    free(g.pool);
    for (int i = 0; i < g.n_data; i++)
        json_decref(g.data[i]);
    free(g.data);
    if (g.timer)
        event_free(g.timer);
    event_base_free(g.base);
    evhttp_uri_free(g.uri);
    return rc;
}
