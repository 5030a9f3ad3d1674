/*
 * http.c — the server: the libevent loop, routing, authentication, body
 * limits, OpenAI-shaped error replies, the engine-to-loop bridge and the
 * SIGTERM drain.
 *
 * THE BRIDGE. The engine calls its event callback on the engine thread,
 * where no evhttp object may be touched. bridge_push() copies the event
 * (and its error text, which is only valid during the callback) into a
 * node, appends it to a mutex-guarded list and, if the list was empty,
 * calls event_active() on the `wake` event; libevent was told to use
 * pthreads (evthread_use_pthreads) before the base was made, so that call
 * is safe from any thread. On the
 * loop thread on_wake() swaps the whole list out under the lock and hands
 * each event to gen_on_event() in arrival order, which preserves each
 * request's token order (one engine thread produces them in order).
 *
 * BODY LIMITS. evhttp itself refuses bodies beyond a hard cap of twice
 * --max-body (plus 64 KiB) with its own 413 page, so memory stays bounded;
 * bodies between --max-body and that cap get a 413 in OpenAI's shape from
 * read_json_body().
 *
 * SCHEDULING. The loop thread runs under SCHED_BATCH (Linux) while it
 * serves. With as many compute threads as cores (the default) every core is
 * busy while tokens stream, and the loop thread is woken once per step by the
 * bridge. As an ordinary thread it preempted the CPU it woke on at once,
 * which is usually the engine thread's (the waker's), right inside
 * bridge_push: the engine thread then waited for the whole HTTP turn (SSE
 * chunk, socket write, the client's wake-up) before it could start the next
 * forward call, while the pool's worker spun on the other core. That serial
 * gap is what a single stream lost against `tern bench` (docs/serve.md,
 * performance). A SCHED_BATCH thread does not preempt on wake-up: it runs
 * on a free core, or at the next scheduler tick inside the forward call,
 * where the pool's dynamic chunks let the other compute thread take over
 * the work of the one it displaced. It keeps its fair share of the CPU
 * (SCHED_BATCH has nice 0's weight), so requests and tokens are not
 * starved, only delayed by at most a tick when no core is free. The policy
 * is set after the engine's threads exist (they must not inherit it) and
 * the caller's policy is restored when tn_serve_run returns.
 *
 * SHUTDOWN. SIGTERM or SIGINT: the listening socket is closed, the engine
 * stops accepting, and the loop runs until every live generation has
 * finished; after a grace period (30 s) the rest are cancelled. A second
 * signal cancels at once.
 */
#include "serve/serve_int.h"

#include "tok/chat.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_BODY ((size_t)1 << 20)
#define GRACE_S 30

/* --- errors and replies ------------------------------------------------------ */

int api_fail(api_err *e, int status, const char *param, const char *fmt, ...)
{
    memset(e, 0, sizeof *e);
    e->status = status;
    switch (status) {
    case 401: e->type = "authentication_error"; e->code = "invalid_api_key"; break;
    case 404: e->type = "not_found_error"; break;
    case 413: e->type = "invalid_request_error"; e->code = "request_too_large"; break;
    case 429: e->type = "rate_limit_error"; e->code = "queue_full"; e->retry_after = 1; break;
    case 503: e->type = "service_unavailable"; e->retry_after = 5; break;
    default: e->type = status >= 500 ? "server_error" : "invalid_request_error"; break;
    }
    if (param)
        snprintf(e->param, sizeof e->param, "%s", param);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 503: return "Service Unavailable";
    default: return status >= 500 ? "Internal Server Error" : "Error";
    }
}

void reply_json(struct evhttp_request *req, int status, json_t *j)
{
    struct evbuffer *b = evbuffer_new();
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    if (b && text) {
        evbuffer_add(b, text, strlen(text));
        evbuffer_add(b, "\n", 1);
    }
    evhttp_send_reply(req, status, reason(status), b);
    free(text);
    if (b)
        evbuffer_free(b);
}

void reply_error(srv *s, struct evhttp_request *req, const api_err *e)
{
    s->m.http_errors++;
    if (e->retry_after > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", e->retry_after);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", v);
    }
    if (e->status == 401)
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
    reply_json(req, e->status, resp_error(e));
}

json_t *read_json_body(srv *s, struct evhttp_request *req, api_err *e)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len > s->p.max_body) {
        api_fail(e, 413, NULL, "request body of %zu bytes exceeds the limit of %zu bytes (--max-body)", len,
                 s->p.max_body);
        return NULL;
    }
    if (len == 0) {
        api_fail(e, 400, NULL, "the request body is empty: expected a JSON object");
        return NULL;
    }
    const char *data = (const char *)evbuffer_pullup(in, -1);
    json_error_t je;
    json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        api_fail(e, 400, NULL, "malformed JSON in the request body at line %d, column %d: %s", je.line, je.column,
                 je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        api_fail(e, 400, NULL, "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

uint64_t srv_random(srv *s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tn_rng r;
    tn_rng_seed(&r, (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (++s->seq * 0x9e3779b97f4a7c15ull) ^
                        ((uint64_t)getpid() << 16));
    return tn_rng_next(&r);
}

/* --- the bridge ---------------------------------------------------------------- */

void bridge_push(void *user, const tn_engine_event *ev)
{
    choice *c = user;
    srv *s = c->g->s;
    bridge_item *it = malloc(sizeof *it);
    if (!it) {
        /* Cannot lose a final event (the gen would never be freed): spin
         * until memory frees up. Losing a token event only shortens the
         * text. */
        if (ev->finish == TN_FINISH_NONE)
            return;
        while (!(it = malloc(sizeof *it)))
            usleep(1000);
    }
    it->next = NULL;
    it->c = c;
    it->ev = *ev;
    it->ev.error = NULL;
    it->err[0] = '\0';
    if (ev->error)
        snprintf(it->err, sizeof it->err, "%s", ev->error);
    pthread_mutex_lock(&s->mu);
    bool was_empty = !s->head;
    if (s->tail)
        s->tail->next = it;
    else
        s->head = it;
    s->tail = it;
    pthread_mutex_unlock(&s->mu);
    /* One wake-up per batch: a non-empty list already has one on its way
     * (whoever found it empty activated `wake` after appending, and the
     * drain takes the whole list), so a step's events for 16 streams cost
     * one event_active, not 16 trips through libevent's lock. */
    if (was_empty)
        event_active(s->wake, EV_READ, 0);
}

/* Hands every queued event to its gen; returns how many. */
static int bridge_drain(srv *s)
{
    pthread_mutex_lock(&s->mu);
    bridge_item *it = s->head;
    s->head = s->tail = NULL;
    pthread_mutex_unlock(&s->mu);
    int n = 0;
    while (it) {
        bridge_item *next = it->next;
        gen_on_event(it->c, &it->ev, it->err[0] ? it->err : NULL);
        free(it);
        it = next;
        n++;
    }
    return n;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    srv *s = arg;
    bridge_drain(s);
    if (s->draining && s->n_live == 0)
        event_base_loopexit(s->base, NULL);
}

/* --- scheduling ----------------------------------------------------------------- */

/* The calling thread's policy before loop_yield_to_compute, restored by
 * loop_restore_policy. */
typedef struct sched_saved {
    bool changed;
    int policy;
    struct sched_param param;
} sched_saved;

/* Puts the calling (loop) thread under SCHED_BATCH; see SCHEDULING above.
 * Where the policy does not exist or cannot be set the thread stays as it
 * was (logged at debug level: serving works either way, only slower). */
static void loop_yield_to_compute(sched_saved *saved)
{
    saved->changed = false;
#ifdef SCHED_BATCH
    if (pthread_getschedparam(pthread_self(), &saved->policy, &saved->param) != 0)
        return;
    if (saved->policy != SCHED_OTHER)
        return; /* a real-time or idle policy chosen by the caller stays */
    struct sched_param sp = {.sched_priority = 0};
    int rc = pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    if (rc != 0) {
        tn_log(TN_LOG_DEBUG, "tern serve: cannot run the HTTP loop under SCHED_BATCH: %s\n", strerror(rc));
        return;
    }
    saved->changed = true;
#endif
}

static void loop_restore_policy(const sched_saved *saved)
{
    if (saved->changed)
        (void)pthread_setschedparam(pthread_self(), saved->policy, &saved->param);
}

/* --- shutdown ---------------------------------------------------------------- */

static void on_grace(evutil_socket_t fd, short what, void *arg)
{
    srv *s = arg;
    tn_log(TN_LOG_INFO, "tern serve: grace period over, cancelling %d requests\n", (int)s->n_live);
    gen_cancel_all(s);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    srv *s = arg;
    if (s->draining) {
        tn_log(TN_LOG_INFO, "tern serve: second signal, cancelling %d requests\n", (int)s->n_live);
        gen_cancel_all(s);
        return;
    }
    tn_log(TN_LOG_INFO, "tern serve: signal %d: no new connections, finishing %d requests\n", (int)sig,
           (int)s->n_live);
    s->draining = true;
    if (s->sock) {
        evhttp_del_accept_socket(s->http, s->sock);
        s->sock = NULL;
    }
    tn_engine_drain(s->engine);
    if (s->n_live == 0) {
        event_base_loopexit(s->base, NULL);
        return;
    }
    struct timeval tv = {GRACE_S, 0};
    s->grace = evtimer_new(s->base, on_grace, s);
    if (s->grace)
        evtimer_add(s->grace, &tv);
}

/* --- routing ------------------------------------------------------------------- */

/* Constant-time comparison of the bearer token with the key. */
static bool auth_ok(srv *s, struct evhttp_request *req)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h), k = strlen(s->p.api_key);
    unsigned diff = (unsigned)(n != k);
    for (size_t i = 0; i < k; i++)
        diff |= (unsigned char)s->p.api_key[i] ^ (unsigned char)(i < n ? h[i] : 0);
    return diff == 0;
}

static void route_generate(srv *s, struct evhttp_request *req, api_kind api, bool stream, const char *url_model)
{
    api_err e;
    if (s->draining) {
        api_fail(&e, 503, NULL, "the server is shutting down");
        reply_error(s, req, &e);
        return;
    }
    json_t *body = read_json_body(s, req, &e);
    if (!body) {
        reply_error(s, req, &e);
        return;
    }
    gen_params gp;
    int rc = parse_gen_request(s, api, body, &gp, &e);
    json_decref(body);
    if (rc != 0) {
        gen_params_free(&gp);
        reply_error(s, req, &e);
        return;
    }
    if (api == API_TGI || api == API_TRITON)
        gp.stream = stream;
    gen_start(s, req, &gp, url_model);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    srv *s = arg;
    s->m.http_requests++;
    api_err e;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path || !*path)
        path = "/";
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    bool get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD, post = cmd == EVHTTP_REQ_POST;

    if (!strcmp(path, "/health")) {
        if (!get)
            goto bad_method;
        route_health(s, req);
        return;
    }
    if (!strcmp(path, "/metrics")) {
        if (!get)
            goto bad_method;
        route_metrics(s, req);
        return;
    }
    if (s->p.api_key && !auth_ok(s, req)) {
        api_fail(&e, 401, NULL, "missing or incorrect API key: send 'Authorization: Bearer KEY'");
        reply_error(s, req, &e);
        return;
    }
    if (!strcmp(path, "/v1/models") || !strncmp(path, "/v1/models/", 11)) {
        if (!get)
            goto bad_method;
        route_models(s, req);
        return;
    }
    struct { const char *path; api_kind api; bool stream; } gens[] = {
        {"/v1/chat/completions", API_CHAT, false},
        {"/v1/completions", API_COMPLETION, false},
        {"/generate", API_TGI, false},
        {"/generate_stream", API_TGI, true},
    };
    for (size_t i = 0; i < TN_ARRAY_LEN(gens); i++) {
        if (strcmp(path, gens[i].path))
            continue;
        if (!post)
            goto bad_method;
        route_generate(s, req, gens[i].api, gens[i].stream, NULL);
        return;
    }
    /* Triton-style /v2/models/{model}/generate[_stream] */
    if (!strncmp(path, "/v2/models/", 11)) {
        const char *m = path + 11, *slash = strchr(m, '/');
        if (slash && slash > m && (!strcmp(slash, "/generate") || !strcmp(slash, "/generate_stream"))) {
            if (!post)
                goto bad_method;
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)TN_MIN((size_t)(slash - m), sizeof name - 1), m);
            char *dec = evhttp_uridecode(name, 0, NULL);
            if (strcmp(dec ? dec : name, s->model_name) != 0) {
                api_fail(&e, 404, "model", "the model '%.200s' does not exist; this server serves '%s'",
                         dec ? dec : name, s->model_name);
                e.code = "model_not_found";
                reply_error(s, req, &e);
            } else {
                route_generate(s, req, API_TRITON, !strcmp(slash, "/generate_stream"), s->model_name);
            }
            free(dec);
            return;
        }
    }
    if (!strcmp(path, "/tokenize")) {
        if (!post)
            goto bad_method;
        route_tokenize(s, req);
        return;
    }
    if (!strcmp(path, "/apply-template")) {
        if (!post)
            goto bad_method;
        route_apply_template(s, req);
        return;
    }
    if (!strcmp(path, "/detokenize")) {
        if (!post)
            goto bad_method;
        route_detokenize(s, req);
        return;
    }
    api_fail(&e, 404, NULL, "no route for %.200s", path);
    reply_error(s, req, &e);
    return;
bad_method:
    api_fail(&e, 405, NULL, "method not allowed for %.200s", path);
    reply_error(s, req, &e);
}

/* --- start and stop -------------------------------------------------------------- */

static void srv_free(srv *s)
{
    if (s->engine)
        tn_engine_free(s->engine); /* final CANCELLED events land in the bridge */
    s->engine = NULL;
    if (s->base)
        bridge_drain(s);
    if (s->grace)
        event_free(s->grace);
    if (s->ev_term)
        event_free(s->ev_term);
    if (s->ev_int)
        event_free(s->ev_int);
    if (s->wake)
        event_free(s->wake);
    if (s->http)
        evhttp_free(s->http);
    if (s->base)
        event_base_free(s->base);
    tn_chat_template_free(s->chat);
    tn_vocab_free(s->vocab);
    tn_model_free(s->model);
    pthread_mutex_destroy(&s->mu);
}

static void default_name(srv *s)
{
    if (s->p.model_name) {
        snprintf(s->model_name, sizeof s->model_name, "%s", s->p.model_name);
        return;
    }
    const char *b = strrchr(s->p.model_path, '/');
    b = b ? b + 1 : s->p.model_path;
    size_t n = strlen(b);
    if (n > 5 && !strcmp(b + n - 5, ".gguf"))
        n -= 5;
    snprintf(s->model_name, sizeof s->model_name, "%.*s", (int)TN_MIN(n, sizeof s->model_name - 1), b);
}

tn_status tn_serve_run(const tn_serve_params *p)
{
    srv s_, *s = &s_;
    memset(s, 0, sizeof *s);
    s->p = *p;
    if (!s->p.host)
        s->p.host = "127.0.0.1";
    if (!s->p.port)
        s->p.port = 8080;
    if (!s->p.max_body)
        s->p.max_body = DEFAULT_MAX_BODY;
    if (!s->p.http_timeout_s)
        s->p.http_timeout_s = 60;
    if (s->p.api_key && !*s->p.api_key)
        s->p.api_key = NULL;
    pthread_mutex_init(&s->mu, NULL);
    metrics_init(&s->m);
    default_name(s);
    tn_status st = TN_OK;

    if ((st = tn_model_load_opts(p->model_path, &p->model_opts, &s->model)) != TN_OK) {
        tn__err_prefix(st, "cannot load the model");
        goto out;
    }
    if ((st = tn_vocab_from_gguf(s->model->gguf, &s->vocab)) != TN_OK) {
        tn__err_prefix(st, "cannot read the vocabulary of %s", p->model_path);
        goto out;
    }
    if ((st = chat_init(s, s->p.chat_template, s->p.chat_template_file)) != TN_OK)
        goto out;
    s->n_ctx = s->p.n_ctx > 0 ? s->p.n_ctx : s->model->hp.n_ctx_train;
    tn_engine_params ep = {
        .model = s->model,
        .vocab = s->vocab,
        .moe_stats_path = s->p.moe_stats_path,
        .n_threads = s->p.n_threads,
        .n_ctx = s->n_ctx,
        .max_running = s->p.n_parallel,
        .n_kv_slots = s->p.n_kv,
        .kv_type = s->p.kv_type,
        .max_waiting = s->p.max_queue,
        .prefix_cache = true,
    };
    if (s->p.engine_setup)
        s->p.engine_setup(s->p.engine_setup_ud, &ep);
    if ((st = tn_engine_new(&ep, &s->engine)) != TN_OK) {
        tn__err_prefix(st, "cannot start the engine");
        goto out;
    }

    if (evthread_use_pthreads() != 0) {
        st = tn__err(TN_ERR_UNSUPPORTED, "libevent has no pthreads support");
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);
    s->base = event_base_new();
    s->http = s->base ? evhttp_new(s->base) : NULL;
    s->wake = s->base ? event_new(s->base, -1, 0, on_wake, s) : NULL;
    s->ev_term = s->base ? evsignal_new(s->base, SIGTERM, on_signal, s) : NULL;
    s->ev_int = s->base ? evsignal_new(s->base, SIGINT, on_signal, s) : NULL;
    if (!s->http || !s->wake || !s->ev_term || !s->ev_int) {
        st = tn__err(TN_ERR_NOMEM, "cannot create the event loop");
        goto out;
    }
    evsignal_add(s->ev_term, NULL);
    evsignal_add(s->ev_int, NULL);
    size_t hard = s->p.max_body > SIZE_MAX / 4 ? SIZE_MAX / 2 : 2 * s->p.max_body + (64 << 10);
    evhttp_set_max_body_size(s->http, (ev_ssize_t)TN_MIN(hard, (size_t)INT64_MAX));
    evhttp_set_max_headers_size(s->http, 64 << 10);
    evhttp_set_timeout(s->http, s->p.http_timeout_s);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(s->http, on_request, s);
    s->sock = evhttp_bind_socket_with_handle(s->http, s->p.host, (ev_uint16_t)s->p.port);
    if (!s->sock) {
        st = tn__err(TN_ERR_IO, "cannot listen on %s:%d (in use, or not an address of this machine)", s->p.host,
                     s->p.port);
        goto out;
    }
    tn_log(TN_LOG_INFO, "tern serve: model '%s' (%s, context %d), listening on http://%s:%d\n", s->model_name,
           s->model->hp.arch_name, (int)s->n_ctx, s->p.host, s->p.port);
    sched_saved saved;
    loop_yield_to_compute(&saved);
    event_base_dispatch(s->base);
    loop_restore_policy(&saved);
    tn_log(TN_LOG_INFO, "tern serve: stopped\n");
out:
    srv_free(s);
    return st;
}
