/*
 * serve_int.h — what the files of src/serve share.
 *
 *   http.c     the server: listen, route, authenticate, limit, error replies,
 *              the engine-to-loop bridge, SIGTERM
 *   openai.c   request parsing: JSON bodies of every generate dialect into
 *              one gen_params, each wrong type or value an api_err
 *   respond.c  response JSON (OpenAI, TGI, Triton), whole and streamed
 *   gen.c      one generation request: its engine requests, detokenization,
 *              stop strings, finish reasons, usage
 *   sse.c      server-sent events over evhttp chunked replies
 *   routes.c   the small endpoints: models, health, tokenize, detokenize
 *   metrics.c  Prometheus counters and histograms
 *   chatfmt.c  rendering chat messages to a prompt
 *   buf.c      a growable byte buffer with a maximum
 *
 * THREADS. Everything here runs on the libevent loop thread except
 * bridge_push() (http.c), which the engine callback calls on the engine
 * thread. gen, choice, srv fields and metrics are loop-thread-only.
 */
#ifndef TERN_SERVE_SERVE_INT_H
#define TERN_SERVE_SERVE_INT_H

#include "engine/engine.h"
#include "serve/serve.h"

#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <pthread.h>

/* --- buf.c ----------------------------------------------------------------- */

/* A growable byte buffer, always NUL-terminated when p != NULL. Growth past
 * SBUF_MAX bytes fails (the buffer is left as it was). */
#define SBUF_MAX ((size_t)64 << 20)
typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

/* Appends n bytes; false when out of memory or past SBUF_MAX. */
bool sbuf_add(sbuf *b, const char *s, size_t n);
/* Drops the first n bytes (n <= len). */
void sbuf_consume(sbuf *b, size_t n);
void sbuf_free(sbuf *b);

/* --- errors in OpenAI's shape ------------------------------------------------ */

typedef struct api_err {
    int status;              /* HTTP status */
    const char *type;        /* "invalid_request_error", ... */
    const char *code;        /* NULL: null */
    char param[64];          /* "" : null */
    char msg[512];
    int retry_after;         /* seconds; 0: no Retry-After header */
} api_err;

/* Fills e (type chosen from the status) and returns -1, so parsers read
 * `return api_fail(e, 400, "temperature", "must be a number, got %s", t)`. */
int api_fail(api_err *e, int status, const char *param, const char *fmt, ...) TN_PRINTF(4, 5);

/* --- gen_params: a parsed generation request ---------------------------------- */

typedef enum api_kind { API_CHAT, API_COMPLETION, API_TGI, API_TRITON } api_kind;

typedef struct gen_params {
    api_kind api;
    bool stream;
    bool include_usage;       /* stream_options.include_usage */
    int32_t n;                /* choices per prompt */
    int32_t n_prompts;
    int32_t **prompt;         /* (n_prompts) token arrays, owned */
    int32_t *n_prompt_tok;    /* (n_prompts) */
    char **prompt_text;       /* (n_prompts) text to echo, owned (NULL entries: detokenize) */
    int32_t max_tokens;       /* -1: until the context is full */
    tn_sample_params sample;
    bool seed_given;
    char **stop;              /* (n_stop) stop strings, owned, non-empty */
    int32_t n_stop;
    int32_t logprobs;         /* -1: none; else how many top alternatives (0..20) */
    bool echo;
    bool prompt_logprobs;     /* completions with echo and logprobs: the prompt tokens' logprobs too */
    bool ignore_eos;
    bool details;             /* TGI "details" */
    bool chat_logprobs;       /* chat's logprobs format */
    int32_t *bias_id;         /* (n_bias) logit_bias token ids, owned */
    float *bias;              /* (n_bias) their biases in [-100, 100], owned */
    int32_t n_bias;
} gen_params;

void gen_params_free(gen_params *gp);

typedef struct srv srv;

/* Parses a generate body of the given dialect into *gp (zeroed first; free
 * with gen_params_free also on failure). Returns 0, or -1 with e filled:
 * 400 for a wrong type or value, 404 for an unknown model. */
int parse_gen_request(srv *s, api_kind api, json_t *body, gen_params *gp, api_err *e);

/* Tokenizes text as a prompt (BOS as the vocabulary says, special tokens
 * parsed). Returns a malloc'ed array and its length via *n, or NULL with e
 * filled. */
int32_t *tokenize_text(srv *s, const char *text, size_t len, bool add_bos, int32_t *n, api_err *e);

/* Renders chat messages (a JSON array) with the server's chat template to
 * one prompt string (malloc'ed), or NULL with e filled (400 naming the
 * message or "tools"). tools: the request's "tools" (NULL or JSON null:
 * none), passed to the template as `tools`. chatfmt.c. */
char *render_chat(srv *s, json_t *messages, json_t *tools, api_err *e);
/* Compiles the chat template into s->chat: the Jinja file `file` if not
 * NULL, else the built-in format `name`, else the model's
 * tokenizer.chat_template, else chatml. */
tn_status chat_init(srv *s, const char *name, const char *file) TN_MUST_CHECK;
/* Whether a rendered chat prompt gets BOS prepended: as the vocabulary
 * says, unless the template already wrote the BOS text itself. */
bool chat_wants_bos(srv *s, const char *text);

/* --- generations (gen.c) ---------------------------------------------------- */

/* One logprob record of a generated token. */
typedef struct lp_entry {
    int32_t token;
    float logprob;
    int32_t n_top;
    int32_t top_token[TN_MAX_TOP_LOGPROBS];
    float top_logprob[TN_MAX_TOP_LOGPROBS];
    size_t text_offset;       /* byte offset of its text in the choice's output */
} lp_entry;

typedef struct gen gen;

typedef struct choice {
    gen *g;
    int32_t index;            /* choice index in the response */
    int32_t prompt_idx;
    uint64_t id;              /* engine request id */
    bool submitted, final, stopped;
    const char *finish;       /* "stop", "length", "abort", "error" once final */
    tn_detok dt;
    sbuf held;                /* text held back: it may be the start of a stop string */
    sbuf out;                 /* released text */
    size_t sent;              /* bytes of out already streamed */
    lp_entry *lp;             /* (n_lp) */
    int32_t n_lp, cap_lp, sent_lp;
    lp_entry *plp;            /* (n_prompt of its prompt) prompt-token logprobs, entry 0 unused (the first
                                 token has none); NULL unless gp.prompt_logprobs */
    int32_t n_plp;            /* entries received (positions 1 .. n_plp) */
    bool echo_sent;           /* streaming: the echo chunk went out */
    int32_t n_tokens;         /* tokens taken into the output */
    int32_t n_prompt, n_cached, n_generated;
    double t_last;            /* time of the last token (TPOT) */
    int32_t last_token;       /* TGI stream: the token of the last chunk */
} choice;

struct gen {
    srv *s;
    gen *prev, *next;         /* srv's live list */
    struct evhttp_request *req;   /* NULL once replied (or freed by libevent) */
    struct evhttp_connection *conn;
    gen_params gp;
    char id[48];
    long created;
    double t_start, t_first;
    bool streaming;           /* SSE headers sent */
    bool gone;                /* the client disconnected */
    char *model_in_path;      /* Triton: the model name from the URL (owned) */
    int32_t n_choices, n_final;
    choice *c;                /* (n_choices) */
};

/* Takes ownership of *gp (zeroed on return), submits one engine request per
 * choice and answers req when they finish (streaming or not). On a submit
 * failure it answers the error itself. Returns nothing: the gen lives until
 * its last engine event. */
void gen_start(srv *s, struct evhttp_request *req, gen_params *gp, const char *url_model);

/* Processes one engine event (loop thread). */
void gen_on_event(choice *c, const tn_engine_event *ev, const char *err);

/* Cancels every choice of every live gen (shutdown). */
void gen_cancel_all(srv *s);

/* --- responses (respond.c) ---------------------------------------------------- */

json_t *resp_full(gen *g);                       /* the whole non-streamed body */
json_t *resp_chunk(gen *g, choice *c, const char *text, size_t n, int32_t lp_from, int32_t lp_to,
                   const char *finish, bool first); /* one streamed chunk (NULL: nothing to send) */
json_t *resp_usage_chunk(gen *g);                /* the include_usage chunk */
json_t *resp_echo_chunk(gen *g, choice *c);      /* completions: the streamed echo of the prompt */
json_t *resp_error(const api_err *e);            /* {"error": {...}} */
json_t *usage_json(gen *g);
/* A JSON string of n bytes of model text, each invalid UTF-8 byte replaced
 * by U+FFFD. */
json_t *jstr(const char *s, size_t n);

/* --- SSE (sse.c) -------------------------------------------------------------- */

void sse_begin(struct evhttp_request *req);
/* Sends "data: JSON\n\n" (takes the reference of j). */
void sse_send(struct evhttp_request *req, json_t *j);
void sse_send_raw(struct evhttp_request *req, const char *s);
/* Sends "data: [DONE]\n\n" when done_marker, then ends the reply. */
void sse_end(struct evhttp_request *req, bool done_marker);

/* --- metrics (metrics.c) ------------------------------------------------------ */

#define HIST_MAX_BUCKETS 24
typedef struct hist {
    const double *bounds;
    int n_bounds;
    uint64_t counts[HIST_MAX_BUCKETS + 1];
    double sum;
    uint64_t count;
} hist;

typedef struct metrics {
    hist ttft, tpot, e2e, n_prompt, n_gen;
    uint64_t finished_stop, finished_length, finished_abort, finished_error;
    uint64_t http_requests, http_errors;
    uint64_t prompt_tokens, generation_tokens;
} metrics;

void metrics_init(metrics *m);
void hist_observe(hist *h, double v);
/* The Prometheus text exposition (malloc'ed). */
char *metrics_render(srv *s);

/* --- the server (http.c) ------------------------------------------------------- */

typedef struct bridge_item {
    struct bridge_item *next;
    choice *c;
    tn_engine_event ev;
    char err[256];
} bridge_item;

struct srv {
    tn_serve_params p;
    char model_name[256];
    tn_model *model;
    tn_vocab *vocab;
    tn_engine *engine;
    struct tn_chat_template *chat;
    int32_t n_ctx;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    struct event *wake, *ev_term, *ev_int, *grace;
    pthread_mutex_t mu;                /* guards head/tail */
    bridge_item *head, *tail;
    gen *live;                         /* live gens */
    int32_t n_live;
    bool draining;
    uint64_t seq;                      /* for response ids and unseeded requests */
    metrics m;
};

/* The engine callback (engine thread): queues the event for the loop. */
void bridge_push(void *user, const tn_engine_event *ev);

/* Sends a JSON body with status (takes the reference of j) / an error. */
void reply_json(struct evhttp_request *req, int status, json_t *j);
void reply_error(srv *s, struct evhttp_request *req, const api_err *e);

/* Reads the request body as JSON: returns a new reference or NULL with e
 * filled (400 malformed JSON, 413 too large, 400 not an object). */
json_t *read_json_body(srv *s, struct evhttp_request *req, api_err *e);

/* routes.c */
void route_models(srv *s, struct evhttp_request *req);
void route_health(srv *s, struct evhttp_request *req);
void route_metrics(srv *s, struct evhttp_request *req);
void route_tokenize(srv *s, struct evhttp_request *req);
void route_detokenize(srv *s, struct evhttp_request *req);
void route_apply_template(srv *s, struct evhttp_request *req);

/* A fresh pseudo-random 64-bit value (ids, unseeded requests). */
uint64_t srv_random(srv *s);

#endif /* TERN_SERVE_SERVE_INT_H */
