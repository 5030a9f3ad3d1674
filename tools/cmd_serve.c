/*
 * cmd_serve.c — `tern serve`: an OpenAI-compatible HTTP server over the
 * engine (src/serve). Parses flags, then runs until SIGTERM or SIGINT.
 *
 * Exit codes: 0 after a clean shutdown, 1 a failure (the model cannot be
 * loaded, the address cannot be bound), 2 a usage error.
 */
#include "args.h"
#include "ep_tool.h"
#include "tools.h"

#include "serve/serve.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tern serve -m MODEL.gguf [options]\n"
            "\n"
            "Serves the model over HTTP: OpenAI /v1/chat/completions, /v1/completions,\n"
            "/v1/models; /health, /metrics (Prometheus), /tokenize, /detokenize; TGI\n"
            "/generate[_stream]; Triton /v2/models/NAME/generate[_stream]. See docs/serve.md.\n"
            "\n"
            "  -m, --model PATH       GGUF model file (required)\n"
            "      --name NAME        model id in the API (default: the file name without .gguf)\n"
            "      --chat-template F  built-in chat format (chatml, llama3, ...) instead of the\n"
            "                         model's template (default: the model's, else chatml)\n"
            "      --chat-template-file PATH  a Jinja chat template (e.g. a model's\n"
            "                         tokenizer_config.json chat_template) instead of the model's\n"
            "      --moe-stats FILE   write MoE routing statistics to FILE every 10 s and at exit\n"
            "                         (CSV if it ends in .csv, else JSON; see docs/moe.md)\n"
            "      --host ADDR        address to listen on (default 127.0.0.1)\n"
            "      --port N           port (default 8080)\n"
            "      --api-key KEY      require 'Authorization: Bearer KEY' (default: none;\n"
            "                         also read from $TERN_API_KEY)\n"
            "  -t, --threads N        compute threads (default: all cores)\n"
            "  -c, --ctx N            max tokens per sequence (default: the trained context)\n"
            "  -np, --parallel N      max sequences decoded at once (default 64)\n"
            "      --kv-size N        KV-cache tokens over all sequences (default 4 x ctx; >= ctx)\n"
            "      --kv-type T        KV-cache storage: f32 (default), f16, q8\n"
            "      --max-body BYTES   request body limit (default 1048576)\n"
            "      --max-queue N      waiting requests before 429 (default 256)\n"
            "      --timeout S        cancel a request generating longer than S seconds (default: none)\n"
            "      --http-timeout S   close a connection idle for S seconds, also a stream\n"
            "                         waiting for its first token (default 60)\n"
            "      --ep N             expert parallelism under `mpirun -np N`: each rank holds\n"
            "                         1/N of the routed experts and runs its own sequences\n"
            "                         and KV cache (--kv-size and -np are per rank); rank 0\n"
            "                         serves HTTP and spreads the requests (docs/ep.md)\n"
            "      --ep-timeout S     fail when a rank does not answer within S seconds\n"
            "                         (default 60)\n"
            "  -h, --help             this text\n");
}

/* --- expert parallelism (--ep): data-parallel engines ------------------ */

/* Every rank runs an engine over its own KV cache; rank 0's also serves
 * HTTP and spreads the requests (engine.h, "Data-parallel engines"). */
typedef struct serve_ep {
    ep_ctx c;
    tn_engine_link link;
} serve_ep;

static tn_status serve_ep_on_forward(void *ud, tn_forward *f)
{
    serve_ep *x = ud;
    if (!x->c.ep || ep_attach("tern serve", &x->c, f) != 0)
        return TN_ERR_INVALID; /* reason printed */
    return TN_OK;
}

/* The engine parameters every rank adds: the experts' routing, the link. */
static void serve_ep_setup(void *ud, tn_engine_params *ep)
{
    serve_ep *x = ud;
    int32_t budget = ep->step_token_budget > 0 ? ep->step_token_budget : 512; /* the engine's default */
    /* The model was loaded for this process (non-const: tn_serve_run's or
     * serve_ep_rank's) and no engine runs yet: ep_make may repack its experts. */
    if (ep_make("tern serve", &x->c, (tn_model *)ep->model, budget) != 0)
        return; /* on_forward fails the engine */
    ep_link("tern serve", &x->c, &x->link);
    ep->on_forward = serve_ep_on_forward;
    ep->hook_ud = x;
    ep->link = &x->link;
    ep->hook_idle_s = tn_comm_timeout(x->c.comm) / 4;
}

/* Ranks > 0: an engine like rank 0's, fed by rank 0, no HTTP; runs until
 * rank 0 ends the job. */
static int serve_ep_rank(serve_ep *x, const tn_serve_params *p)
{
    const int rank = x->c.rank;
    tn_model *m = NULL;
    tn_vocab *v = NULL;
    tn_engine *e = NULL;
    int rc = 1;
    if (tn_model_load_opts(p->model_path, &p->model_opts, &m) != TN_OK || tn_vocab_from_gguf(m->gguf, &v) != TN_OK) {
        fprintf(stderr, "tern serve: rank %d: cannot load the model: %s\n", rank, tn_last_error());
        goto out;
    }
    tn_engine_params ep = {
        .model = m,
        .vocab = v,
        .n_threads = p->n_threads,
        .n_ctx = p->n_ctx,
        .max_running = p->n_parallel,
        .n_kv_slots = p->n_kv,
        .kv_type = p->kv_type,
        .max_waiting = p->max_queue,
        .prefix_cache = true,
    };
    serve_ep_setup(x, &ep);
    if (tn_engine_new(&ep, &e) != TN_OK) {
        fprintf(stderr, "tern serve: rank %d: cannot start the engine: %s\n", rank, tn_last_error());
        goto out;
    }
    tn_engine_wait_done(e);
    tn_engine_stats st;
    tn_engine_get_stats(e, &st);
    tn_log(TN_LOG_INFO, "tern serve: rank %d: %llu steps with tokens, %llu empty; %llu prompt tokens, %llu generated\n",
           rank, (unsigned long long)st.n_steps, (unsigned long long)st.n_empty_steps,
           (unsigned long long)st.prompt_tokens, (unsigned long long)st.generated_tokens);
    tn_engine_free(e);
    ep_report("tern serve", &x->c);
    rc = 0;
out:
    ep_leave(&x->c);
    tn_vocab_free(v);
    tn_model_free(m);
    return rc;
}

/* `tern serve`: returns the exit status (0 ok, 1 failure, 2 usage). */
int tn_cmd_serve(int argc, char **argv)
{
    tn_serve_params p;
    memset(&p, 0, sizeof p);
    ep_opts epo = {0};
    p.api_key = getenv("TERN_API_KEY");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tern serve: %s '%s'\n\n", a[0] == '-' ? "missing value after" : "unexpected argument", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        long x = 0;
        bool ok = true;
        const char *want = NULL;
        int epf = ep_parse_flag("tern serve", a, v, &epo);
        if (epf == 2)
            return 2;
        if (epf == 1)
            continue;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            p.model_path = v;
        } else if (!strcmp(a, "--chat-template")) {
            p.chat_template = v;
        } else if (!strcmp(a, "--chat-template-file")) {
            p.chat_template_file = v;
        } else if (!strcmp(a, "--moe-stats")) {
            p.moe_stats_path = v;
        } else if (!strcmp(a, "--name")) {
            p.model_name = v;
        } else if (!strcmp(a, "--host")) {
            p.host = v;
        } else if (!strcmp(a, "--port")) {
            ok = tn_arg_long(v, 1, 65535, &x);
            p.port = (int)x;
            want = "a port in [1, 65535]";
        } else if (!strcmp(a, "--api-key")) {
            p.api_key = v;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            ok = tn_arg_long(v, 1, 4096, &x);
            p.n_threads = (int32_t)x;
            want = "an integer in [1, 4096]";
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) {
            ok = tn_arg_long(v, 1, 1 << 24, &x);
            p.n_ctx = (int32_t)x;
            want = "an integer in [1, 16777216]";
        } else if (!strcmp(a, "-np") || !strcmp(a, "--parallel")) {
            ok = tn_arg_long(v, 1, 4096, &x);
            p.n_parallel = (int32_t)x;
            want = "an integer in [1, 4096]";
        } else if (!strcmp(a, "--kv-size")) {
            ok = tn_arg_long(v, 16, 1 << 26, &x);
            p.n_kv = (int32_t)x;
            want = "a token count in [16, 67108864]";
        } else if (!strcmp(a, "--kv-type")) {
            ok = tn_kv_type_from_name(v, &p.kv_type);
            want = "f32, f16 or q8";
        } else if (!strcmp(a, "--max-body")) {
            ok = tn_arg_long(v, 16, 1L << 32, &x);
            p.max_body = (size_t)x;
            want = "a byte count in [16, 4294967296]";
        } else if (!strcmp(a, "--max-queue")) {
            ok = tn_arg_long(v, 1, 1 << 20, &x);
            p.max_queue = (int32_t)x;
            want = "an integer in [1, 1048576]";
        } else if (!strcmp(a, "--http-timeout")) {
            ok = tn_arg_long(v, 1, 1L << 30, &x);
            p.http_timeout_s = (int32_t)x;
            want = "seconds >= 1";
        } else if (!strcmp(a, "--timeout")) {
            ok = tn_arg_long(v, 1, 1L << 30, &x);
            p.timeout_s = (double)x;
            want = "seconds >= 1";
        } else {
            fprintf(stderr, "tern serve: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "tern serve: bad value '%s' for %s: want %s\n", v, a, want);
            return 2;
        }
    }
    if (!p.model_path) {
        fprintf(stderr, "tern serve: -m MODEL is required\n\n");
        usage(stderr);
        return 2;
    }
    static serve_ep epx; /* the link's fail() may run until exit */
    if (ep_join_job("tern serve", &epo, &epx.c) != 0)
        return 1;
    if (epx.c.comm)
        p.n_threads = ep_threads(&epx.c, p.n_threads);
    p.model_opts = ep_model_opts(&epo);
    if (epx.c.rank > 0)
        return serve_ep_rank(&epx, &p);
    if (epx.c.comm) {
        p.engine_setup = serve_ep_setup;
        p.engine_setup_ud = &epx;
    }
    int rc = 0;
    if (tn_serve_run(&p) != TN_OK) {
        fprintf(stderr, "tern serve: %s\n", tn_last_error());
        rc = 1;
    }
    if (epx.c.comm && !tn_comm_broken(epx.c.comm)) { /* the other ranks' engines stop too */
        if (epx.c.ep)
            ep_report("tern serve", &epx.c);
        if (!epx.link.allgather)
            ep_link("tern serve", &epx.c, &epx.link);
        if (tn_engine_link_done(&epx.link) != TN_OK)
            rc = 1;
    }
    ep_leave(&epx.c);
    return rc;
}
