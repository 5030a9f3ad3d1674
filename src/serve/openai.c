/*
 * openai.c — request parsing: the JSON body of a generate request in any of
 * the dialects (OpenAI chat and completions, TGI generate, Triton generate)
 * becomes one gen_params.
 *
 * Rules: unknown fields are ignored; a known field of the wrong type or out
 * of range is a 400 naming the field (param) and what was expected; null
 * means "not given". Defaults follow OpenAI (temperature 1, top_p 1, no
 * top-k or min-p, penalties off; max_tokens 16 for completions, the rest of
 * the context for chat). max_tokens beyond the context is clipped (the
 * finish reason is then "length"); a prompt longer than the context is a
 * 400 with code context_length_exceeded.
 */
#include "serve/serve_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_N 16          /* choices per prompt */
#define MAX_PROMPTS 64    /* prompts per completions request */
#define MAX_STOP 16

void gen_params_free(gen_params *gp)
{
    for (int32_t i = 0; i < gp->n_prompts; i++) {
        if (gp->prompt)
            free(gp->prompt[i]);
        if (gp->prompt_text)
            free(gp->prompt_text[i]);
    }
    free(gp->prompt);
    free(gp->prompt_text);
    free(gp->n_prompt_tok);
    for (int32_t i = 0; i < gp->n_stop; i++)
        free(gp->stop[i]);
    free(gp->stop);
    free(gp->bias_id);
    free(gp->bias);
    memset(gp, 0, sizeof *gp);
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* Each getter: 0 absent or null (out untouched), 1 read, -1 error (e set). */
static int get_num(json_t *o, const char *k, double lo, double hi, double *out, api_err *e)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return api_fail(e, 400, k, "'%s' must be a number, got %s", k, type_name(v));
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi)
        return api_fail(e, 400, k, "'%s' is %g, must be in [%g, %g]", k, x, lo, hi);
    *out = x;
    return 1;
}

static int get_int(json_t *o, const char *k, long long lo, long long hi, long long *out, api_err *e)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return 0;
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e15) {
        *out = (long long)json_real_value(v);
    } else if (json_is_integer(v)) {
        *out = json_integer_value(v);
    } else {
        return api_fail(e, 400, k, "'%s' must be an integer, got %s", k, type_name(v));
    }
    if (*out < lo || *out > hi)
        return api_fail(e, 400, k, "'%s' is %lld, must be in [%lld, %lld]", k, *out, lo, hi);
    return 1;
}

static int get_bool(json_t *o, const char *k, bool *out, api_err *e)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return api_fail(e, 400, k, "'%s' must be a boolean, got %s", k, type_name(v));
    *out = json_is_true(v);
    return 1;
}

static int get_str(json_t *o, const char *k, const char **out, api_err *e)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return api_fail(e, 400, k, "'%s' must be a string, got %s", k, type_name(v));
    *out = json_string_value(v);
    return 1;
}

int32_t *tokenize_text(srv *s, const char *text, size_t len, bool add_bos, int32_t *n, api_err *e)
{
    size_t cap = len + 2, got = 0;
    int32_t *t = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        free(t);
        t = malloc(cap * sizeof *t);
        if (!t) {
            api_fail(e, 500, NULL, "out of memory tokenizing %zu bytes", len);
            return NULL;
        }
        tn_status st = tn_tokenize(s->vocab, text, len, add_bos, true, t, cap, &got);
        if (st == TN_OK)
            break;
        if (st != TN_ERR_FULL || attempt == 1) {
            free(t);
            api_fail(e, 400, NULL, "cannot tokenize the text: %s", tn_last_error());
            return NULL;
        }
        cap = got;
    }
    if (got > INT32_MAX) {
        free(t);
        api_fail(e, 400, NULL, "the text is too long (%zu tokens)", got);
        return NULL;
    }
    *n = (int32_t)got;
    return t;
}

/* Appends one prompt (tokens owned by the callee from now on). */
static int add_prompt(gen_params *gp, int32_t *tok, int32_t n, char *text, api_err *e)
{
    int32_t k = gp->n_prompts;
    int32_t **p = realloc(gp->prompt, (size_t)(k + 1) * sizeof *p);
    if (p)
        gp->prompt = p;
    int32_t *np = realloc(gp->n_prompt_tok, (size_t)(k + 1) * sizeof *np);
    if (np)
        gp->n_prompt_tok = np;
    char **pt = realloc(gp->prompt_text, (size_t)(k + 1) * sizeof *pt);
    if (pt)
        gp->prompt_text = pt;
    if (!p || !np || !pt) {
        free(tok);
        free(text);
        return api_fail(e, 500, NULL, "out of memory");
    }
    gp->prompt[k] = tok;
    gp->n_prompt_tok[k] = n;
    gp->prompt_text[k] = text;
    gp->n_prompts = k + 1;
    return 0;
}

static int add_text_prompt(srv *s, gen_params *gp, const char *text, size_t len, bool add_bos, const char *param,
                           api_err *e)
{
    int32_t n = 0;
    int32_t *tok = tokenize_text(s, text, len, add_bos, &n, e);
    if (!tok)
        return -1;
    if (n == 0) {
        free(tok);
        return api_fail(e, 400, param, "'%s' is empty and the vocabulary adds no BOS token: nothing to start from",
                        param);
    }
    char *copy = malloc(len + 1);
    if (copy) {
        memcpy(copy, text, len);
        copy[len] = '\0';
    }
    return add_prompt(gp, tok, n, copy, e);
}

/* A JSON array of token ids; 0 if it is one, -1 otherwise (e set). */
static int add_token_prompt(srv *s, gen_params *gp, json_t *arr, const char *param, api_err *e)
{
    size_t n = json_array_size(arr);
    if (n == 0)
        return api_fail(e, 400, param, "'%s' holds an empty list of token ids", param);
    if (n > (size_t)s->n_ctx)
        return api_fail(e, 400, param, "'%s' has %zu tokens but the context holds %d", param, n, (int)s->n_ctx);
    int32_t *tok = malloc(n * sizeof *tok);
    if (!tok)
        return api_fail(e, 500, NULL, "out of memory");
    int32_t n_vocab = s->model->hp.n_vocab;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= n_vocab) {
            free(tok);
            return api_fail(e, 400, param, "'%s'[%zu] must be a token id in [0, %d)", param, i, (int)n_vocab);
        }
        tok[i] = (int32_t)json_integer_value(v);
    }
    return add_prompt(gp, tok, (int32_t)n, NULL, e);
}

/* prompt: string, list of strings, list of ids, list of lists of ids. */
static int parse_prompt(srv *s, json_t *body, gen_params *gp, const char *key, api_err *e)
{
    json_t *p = json_object_get(body, key);
    if (!p || json_is_null(p))
        return api_fail(e, 400, key, "'%s' is required", key);
    if (json_is_string(p))
        return add_text_prompt(s, gp, json_string_value(p), json_string_length(p), tn_vocab_add_bos(s->vocab), key,
                               e);
    if (!json_is_array(p) || json_array_size(p) == 0)
        return api_fail(e, 400, key, "'%s' must be a string, a list of strings, a list of token ids or a list of "
                                     "lists of token ids; got %s", key, json_is_array(p) ? "an empty list" : type_name(p));
    json_t *first = json_array_get(p, 0);
    if (json_is_integer(first))
        return add_token_prompt(s, gp, p, key, e);
    if (json_array_size(p) > MAX_PROMPTS)
        return api_fail(e, 400, key, "'%s' holds %zu prompts, at most %d are allowed", key, json_array_size(p),
                        MAX_PROMPTS);
    size_t i;
    json_t *v;
    json_array_foreach(p, i, v) {
        int rc;
        if (json_is_string(v))
            rc = add_text_prompt(s, gp, json_string_value(v), json_string_length(v), tn_vocab_add_bos(s->vocab),
                                 key, e);
        else if (json_is_array(v))
            rc = add_token_prompt(s, gp, v, key, e);
        else
            rc = api_fail(e, 400, key, "'%s'[%zu] must be a string or a list of token ids, got %s", key, i,
                          type_name(v));
        if (rc)
            return rc;
    }
    return 0;
}

static int parse_stop(json_t *o, const char *key, gen_params *gp, api_err *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    json_t *one = NULL;
    size_t n;
    if (json_is_string(v)) {
        one = v;
        n = 1;
    } else if (json_is_array(v)) {
        n = json_array_size(v);
    } else {
        return api_fail(e, 400, key, "'%s' must be a string or a list of strings, got %s", key, type_name(v));
    }
    if (n > MAX_STOP)
        return api_fail(e, 400, key, "'%s' holds %zu strings, at most %d are allowed", key, n, MAX_STOP);
    gp->stop = calloc(n ? n : 1, sizeof *gp->stop);
    if (!gp->stop)
        return api_fail(e, 500, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *x = one ? one : json_array_get(v, i);
        if (!json_is_string(x))
            return api_fail(e, 400, key, "'%s'[%zu] must be a string, got %s", key, i, type_name(x));
        if (json_string_length(x) == 0)
            continue; /* an empty stop string would stop before anything: ignore it, as OpenAI does */
        if (json_string_length(x) > 1024)
            return api_fail(e, 400, key, "'%s'[%zu] is longer than 1024 bytes", key, i);
        gp->stop[gp->n_stop] = strdup(json_string_value(x));
        if (!gp->stop[gp->n_stop])
            return api_fail(e, 500, NULL, "out of memory");
        gp->n_stop++;
    }
    return 0;
}

/* The sampling fields every dialect shares, read from object o. */
static int parse_sampling(json_t *o, gen_params *gp, api_err *e)
{
    double x;
    long long k;
    int rc;
    tn_sample_params *sp = &gp->sample;
    if ((rc = get_num(o, "temperature", 0, 100, &x, e)) < 0)
        return -1;
    if (rc)
        sp->temperature = (float)x;
    if ((rc = get_num(o, "top_p", 0, 1, &x, e)) < 0)
        return -1;
    if (rc) {
        if (x <= 0)
            return api_fail(e, 400, "top_p", "'top_p' must be in (0, 1], got %g", x);
        sp->top_p = (float)x;
    }
    if ((rc = get_int(o, "top_k", -1, INT32_MAX, &k, e)) < 0)
        return -1;
    if (rc)
        sp->top_k = k < 0 ? 0 : (int32_t)k;
    if ((rc = get_num(o, "min_p", 0, 1, &x, e)) < 0)
        return -1;
    if (rc)
        sp->min_p = (float)x;
    if ((rc = get_num(o, "presence_penalty", -2, 2, &x, e)) < 0)
        return -1;
    if (rc)
        sp->presence_penalty = (float)x;
    if ((rc = get_num(o, "frequency_penalty", -2, 2, &x, e)) < 0)
        return -1;
    if (rc)
        sp->frequency_penalty = (float)x;
    if ((rc = get_num(o, "repetition_penalty", 0, 100, &x, e)) < 0)
        return -1;
    if (rc) {
        if (x <= 0)
            return api_fail(e, 400, "repetition_penalty", "'repetition_penalty' must be > 0");
        sp->repeat_penalty = (float)x;
    }
    if ((rc = get_int(o, "seed", INT64_MIN, INT64_MAX, &k, e)) < 0)
        return -1;
    if (rc) {
        sp->seed = (uint64_t)k;
        gp->seed_given = true;
    }
    if (get_bool(o, "ignore_eos", &gp->ignore_eos, e) < 0)
        return -1;
    return 0;
}

static int parse_max_tokens(json_t *o, const char *key, gen_params *gp, api_err *e)
{
    long long k;
    int rc = get_int(o, key, 0, INT32_MAX, &k, e);
    if (rc > 0)
        gp->max_tokens = (int32_t)k;
    return rc < 0 ? -1 : 0;
}

static int check_model(srv *s, json_t *body, const char *key, api_err *e)
{
    const char *m = NULL;
    if (get_str(body, key, &m, e) < 0)
        return -1;
    if (m && *m && strcmp(m, s->model_name) != 0) {
        api_fail(e, 404, key, "the model '%.200s' does not exist; this server serves '%s'", m, s->model_name);
        e->code = "model_not_found";
        return -1;
    }
    return 0;
}

/* OpenAI's logit_bias: an object mapping token ids (as decimal strings) to
 * numbers in [-100, 100], added to the logits before sampling (-100 bans a
 * token in practice). A key that is not a token id of the vocabulary, or a
 * value that is not a number in range, is a 400 naming "logit_bias". Keys
 * of a JSON object are unique, so there are at most n_vocab entries. */
static int parse_logit_bias(srv *s, json_t *body, gen_params *gp, api_err *e)
{
    json_t *lb = json_object_get(body, "logit_bias");
    if (!lb || json_is_null(lb))
        return 0;
    if (!json_is_object(lb))
        return api_fail(e, 400, "logit_bias", "'logit_bias' must be an object, got %s", type_name(lb));
    size_t n = json_object_size(lb);
    if (n == 0)
        return 0;
    int32_t n_vocab = s->model->hp.n_vocab;
    if (n > (size_t)n_vocab)
        return api_fail(e, 400, "logit_bias", "'logit_bias' has %zu entries, more than the vocabulary (%d)", n,
                        (int)n_vocab);
    gp->bias_id = malloc(n * sizeof *gp->bias_id);
    gp->bias = malloc(n * sizeof *gp->bias);
    if (!gp->bias_id || !gp->bias)
        return api_fail(e, 500, "logit_bias", "out of memory for 'logit_bias'");
    const char *key;
    json_t *v;
    json_object_foreach(lb, key, v) {
        long long id = -1;
        size_t len = strlen(key);
        bool digits = len > 0 && len <= 10;
        for (size_t i = 0; digits && i < len; i++)
            digits = key[i] >= '0' && key[i] <= '9';
        if (digits)
            id = strtoll(key, NULL, 10);
        if (!digits || id >= n_vocab)
            return api_fail(e, 400, "logit_bias", "'logit_bias' key '%.40s' is not a token id in [0, %d)", key,
                            (int)n_vocab);
        if (!json_is_number(v))
            return api_fail(e, 400, "logit_bias", "'logit_bias'['%s'] must be a number, got %s", key,
                            type_name(v));
        double b = json_number_value(v);
        if (!(b >= -100.0 && b <= 100.0))
            return api_fail(e, 400, "logit_bias", "'logit_bias'['%s'] is %g, outside [-100, 100]", key, b);
        gp->bias_id[gp->n_bias] = (int32_t)id;
        gp->bias[gp->n_bias] = (float)b;
        gp->n_bias++;
    }
    return 0;
}

static int parse_openai(srv *s, api_kind api, json_t *body, gen_params *gp, api_err *e)
{
    if (check_model(s, body, "model", e))
        return -1;
    if (get_bool(body, "stream", &gp->stream, e) < 0)
        return -1;
    json_t *so = json_object_get(body, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so))
            return api_fail(e, 400, "stream_options", "'stream_options' must be an object, got %s", type_name(so));
        if (get_bool(so, "include_usage", &gp->include_usage, e) < 0)
            return -1;
    }
    long long k;
    int rc;
    if ((rc = get_int(body, "n", 1, MAX_N, &k, e)) < 0)
        return -1;
    if (rc)
        gp->n = (int32_t)k;
    gp->max_tokens = api == API_COMPLETION ? 16 : -1;
    if (parse_max_tokens(body, "max_tokens", gp, e) || parse_max_tokens(body, "max_completion_tokens", gp, e))
        return -1;
    if (parse_sampling(body, gp, e) || parse_stop(body, "stop", gp, e))
        return -1;
    const char *user;
    if (get_str(body, "user", &user, e) < 0)
        return -1;
    if (parse_logit_bias(s, body, gp, e))
        return -1;
    if (api == API_CHAT) {
        bool lp = false;
        if (get_bool(body, "logprobs", &lp, e) < 0)
            return -1;
        if ((rc = get_int(body, "top_logprobs", 0, TN_MAX_TOP_LOGPROBS, &k, e)) < 0)
            return -1;
        if (rc && !lp && k > 0)
            return api_fail(e, 400, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
        gp->logprobs = lp ? (rc ? (int32_t)k : 0) : -1;
        gp->chat_logprobs = true;
        json_t *msgs = json_object_get(body, "messages");
        if (!json_is_array(msgs) || json_array_size(msgs) == 0)
            return api_fail(e, 400, "messages", "'messages' must be a non-empty list of messages");
        char *text = render_chat(s, msgs, json_object_get(body, "tools"), e);
        if (!text)
            return -1;
        rc = add_text_prompt(s, gp, text, strlen(text), chat_wants_bos(s, text), "messages", e);
        free(text);
        if (rc)
            return -1;
        free(gp->prompt_text[0]);
        gp->prompt_text[0] = NULL;
    } else {
        if ((rc = get_int(body, "logprobs", 0, TN_MAX_TOP_LOGPROBS, &k, e)) < 0)
            return -1;
        gp->logprobs = rc ? (int32_t)k : -1;
        if (get_bool(body, "echo", &gp->echo, e) < 0)
            return -1;
        gp->prompt_logprobs = gp->echo && gp->logprobs >= 0;
        const char *suffix = NULL;
        if (get_str(body, "suffix", &suffix, e) < 0)
            return -1;
        if (suffix && *suffix)
            return api_fail(e, 400, "suffix", "'suffix' (insertion) is not supported");
        if (parse_prompt(s, body, gp, "prompt", e))
            return -1;
    }
    return 0;
}

/* TGI: {"inputs": "...", "parameters": {max_new_tokens, do_sample, ...}}.
 * Greedy unless do_sample is true or a sampling parameter is given, as TGI. */
static int parse_tgi(srv *s, json_t *body, gen_params *gp, api_err *e)
{
    const char *inputs = NULL;
    if (get_str(body, "inputs", &inputs, e) < 0)
        return -1;
    if (!inputs)
        return api_fail(e, 400, "inputs", "'inputs' is required");
    json_t *p = json_object_get(body, "parameters");
    if (p && !json_is_null(p) && !json_is_object(p))
        return api_fail(e, 400, "parameters", "'parameters' must be an object, got %s", type_name(p));
    if (!p || json_is_null(p))
        p = body; /* nothing there; read the (absent) fields from the body */
    gp->max_tokens = 100;
    bool sample = false;
    if (parse_max_tokens(p, "max_new_tokens", gp, e) || get_bool(p, "do_sample", &sample, e) < 0)
        return -1;
    gp->sample.temperature = -1;
    if (parse_sampling(p, gp, e) || parse_stop(p, "stop", gp, e) || get_bool(p, "details", &gp->details, e) < 0)
        return -1;
    if (gp->sample.temperature < 0)
        gp->sample.temperature = sample ? 1.0f : 0.0f;
    return add_text_prompt(s, gp, inputs, strlen(inputs), tn_vocab_add_bos(s->vocab), "inputs", e);
}

/* Triton: {"text_input": "...", "max_tokens": N, "parameters": {...}}; the
 * sampling fields may sit at the top level or under parameters. */
static int parse_triton(srv *s, json_t *body, gen_params *gp, api_err *e)
{
    const char *text = NULL;
    if (get_str(body, "text_input", &text, e) < 0)
        return -1;
    if (!text)
        return api_fail(e, 400, "text_input", "'text_input' is required");
    gp->max_tokens = 16;
    if (parse_max_tokens(body, "max_tokens", gp, e) || parse_sampling(body, gp, e) ||
        parse_stop(body, "stop", gp, e))
        return -1;
    json_t *p = json_object_get(body, "parameters");
    if (p && !json_is_null(p)) {
        if (!json_is_object(p))
            return api_fail(e, 400, "parameters", "'parameters' must be an object, got %s", type_name(p));
        if (parse_max_tokens(p, "max_tokens", gp, e) || parse_sampling(p, gp, e) ||
            (!gp->stop && parse_stop(p, "stop", gp, e)))
            return -1;
    }
    return add_text_prompt(s, gp, text, strlen(text), tn_vocab_add_bos(s->vocab), "text_input", e);
}

int parse_gen_request(srv *s, api_kind api, json_t *body, gen_params *gp, api_err *e)
{
    memset(gp, 0, sizeof *gp);
    gp->api = api;
    gp->n = 1;
    gp->logprobs = -1;
    gp->sample = tn_sample_params_default();
    gp->sample.temperature = 1.0f;
    gp->sample.top_k = 0;
    gp->sample.top_p = 1.0f;
    gp->sample.min_p = 0.0f;
    gp->sample.penalty_last_n = -1;
    int rc;
    switch (api) {
    case API_CHAT:
    case API_COMPLETION: rc = parse_openai(s, api, body, gp, e); break;
    case API_TGI: rc = parse_tgi(s, body, gp, e); break;
    default: rc = parse_triton(s, body, gp, e); break;
    }
    if (rc)
        return -1;
    for (int32_t i = 0; i < gp->n_prompts; i++)
        if (gp->n_prompt_tok[i] > s->n_ctx) {
            api_fail(e, 400, api == API_CHAT ? "messages" : "prompt",
                     "the prompt has %d tokens but the model's context holds %d", (int)gp->n_prompt_tok[i],
                     (int)s->n_ctx);
            e->code = "context_length_exceeded";
            return -1;
        }
    return 0;
}
