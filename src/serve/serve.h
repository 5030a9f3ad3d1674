/*
 * serve — the HTTP serving layer: an OpenAI-compatible server (plus TGI- and
 * Triton-style generate endpoints, tokenize/detokenize, Prometheus metrics)
 * over the engine (src/engine/engine.h).
 *
 * Key idea: one libevent loop thread owns every HTTP object; the engine
 * thread owns the model and the KV cache. Engine events cross from the
 * engine thread to the loop thread through one locked queue and an
 * event_active() wake-up, so no evhttp object is ever touched off the loop
 * thread. See docs/serve.md for the API.
 */
#ifndef TERN_SERVE_SERVE_H
#define TERN_SERVE_SERVE_H

#include "base/base.h"
#include "engine/engine.h"
#include "model/model.h"

typedef struct tn_serve_params {
    const char *model_path;   /* GGUF file (required) */
    const char *model_name;   /* id reported by /v1/models and accepted in "model"; NULL: the file's base name */
    const char *host;         /* NULL: 127.0.0.1 */
    int port;                 /* 0: 8080 */
    const char *api_key;      /* NULL: no authentication */
    int32_t n_threads;        /* compute threads (0: all cores) */
    int32_t n_ctx;            /* max tokens per sequence (0: the model's trained context) */
    int32_t n_parallel;       /* max sequences decoded at once (0: engine default) */
    int32_t n_kv;             /* KV-cache capacity in tokens over all sequences (0: 4 x n_ctx); >= n_ctx */
    tn_kv_type kv_type;       /* KV-cache storage (0: F32), passed to the engine */
    size_t max_body;          /* request body limit in bytes (0: 1 MiB) */
    int32_t max_queue;        /* waiting requests beyond which submit answers 429 (0: engine default) */
    double timeout_s;         /* per-request generation timeout (0: none) */
    int32_t http_timeout_s;   /* idle connection timeout, reading a request or writing (0: 60) */
    const char *chat_template; /* a built-in format name (tok/chat.h); NULL: the model's template, else chatml */
    const char *chat_template_file; /* a Jinja chat template file; overrides chat_template and the model's */
    const char *moe_stats_path; /* MoE routing statistics written here every 10 s and at exit (.csv or JSON); NULL: none */
    /* Called on the calling thread with the engine's parameters just before
     * the engine starts, to add to them (expert parallelism sets its hooks
     * there: tools/ep_tool.c); NULL: none. */
    void (*engine_setup)(void *ud, tn_engine_params *ep);
    void *engine_setup_ud;
    tn_model_opts model_opts; /* how the model is loaded (expert parallelism: defer_experts, engine_setup repacks) */
} tn_serve_params;

/* Loads the model, starts the engine, listens, and serves until SIGTERM or
 * SIGINT: then it stops accepting connections, lets running requests finish
 * (cancelling them after a grace period), and returns TN_OK. Returns an
 * error (message in tn_last_error) if the model cannot be loaded or the
 * address cannot be bound. Call from the main thread; it installs signal
 * handlers for SIGTERM, SIGINT and ignores SIGPIPE. While it serves, the
 * calling thread (the HTTP loop) runs under SCHED_BATCH on Linux, so its
 * wake-ups do not preempt the compute threads (http.c, SCHEDULING); its
 * previous policy is restored before it returns. */
tn_status tn_serve_run(const tn_serve_params *p) TN_MUST_CHECK;

#endif /* TERN_SERVE_SERVE_H */
