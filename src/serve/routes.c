/*
 * routes.c — the small endpoints: GET /v1/models (and /v1/models/{id}),
 * GET /health, GET /metrics, POST /tokenize and POST /detokenize (vLLM's
 * shapes: {"prompt"} or {"messages"} in, {"tokens","count","max_model_len"}
 * out; {"tokens"} in, {"prompt"} out).
 */
#include "serve/serve_int.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

static json_t *model_obj(srv *s)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:i}", "id", s->model_name, "object", "model", "created",
                     (json_int_t)0, "owned_by", "tern", "max_model_len", (int)s->n_ctx);
}

void route_models(srv *s, struct evhttp_request *req)
{
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (strlen(path) > 11) {
        char *id = evhttp_uridecode(path + 11, 0, NULL);
        bool ok = id && !strcmp(id, s->model_name);
        if (!ok) {
            api_err e;
            api_fail(&e, 404, "model", "the model '%.200s' does not exist; this server serves '%s'", id ? id : "",
                     s->model_name);
            e.code = "model_not_found";
            free(id);
            reply_error(s, req, &e);
            return;
        }
        free(id);
        reply_json(req, 200, model_obj(s));
        return;
    }
    reply_json(req, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model_obj(s)));
}

void route_health(srv *s, struct evhttp_request *req)
{
    reply_json(req, s->draining ? 503 : 200, json_pack("{s:s}", "status", s->draining ? "draining" : "ok"));
}

void route_metrics(srv *s, struct evhttp_request *req)
{
    char *text = metrics_render(s);
    struct evbuffer *b = evbuffer_new();
    if (b && text)
        evbuffer_add(b, text, strlen(text));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; version=0.0.4");
    evhttp_send_reply(req, text ? 200 : 500, text ? "OK" : "Internal Server Error", b);
    if (b)
        evbuffer_free(b);
    free(text);
}

void route_tokenize(srv *s, struct evhttp_request *req)
{
    api_err e;
    json_t *body = read_json_body(s, req, &e);
    if (!body)
        goto fail;
    json_t *m = json_object_get(body, "model");
    if (m && !json_is_null(m) && (!json_is_string(m) || strcmp(json_string_value(m), s->model_name))) {
        api_fail(&e, 404, "model", "the model does not exist; this server serves '%s'", s->model_name);
        e.code = "model_not_found";
        goto fail;
    }
    json_t *ast = json_object_get(body, "add_special_tokens");
    if (ast && !json_is_boolean(ast)) {
        api_fail(&e, 400, "add_special_tokens", "'add_special_tokens' must be a boolean");
        goto fail;
    }
    bool add_bos = (!ast || json_is_true(ast)) && tn_vocab_add_bos(s->vocab);
    json_t *p = json_object_get(body, "prompt"), *msgs = json_object_get(body, "messages");
    char *text = NULL;
    if (json_is_string(p)) {
        text = strdup(json_string_value(p));
    } else if (json_is_array(msgs) && json_array_size(msgs) > 0) {
        text = render_chat(s, msgs, json_object_get(body, "tools"), &e);
        if (!text)
            goto fail;
        add_bos = (!ast || json_is_true(ast)) && chat_wants_bos(s, text);
    } else {
        api_fail(&e, 400, "prompt", "expected 'prompt' (a string) or 'messages' (a non-empty list)");
        goto fail;
    }
    if (!text) {
        api_fail(&e, 500, NULL, "out of memory");
        goto fail;
    }
    int32_t n = 0;
    int32_t *tok = tokenize_text(s, text, strlen(text), add_bos, &n, &e);
    free(text);
    if (!tok)
        goto fail;
    json_t *arr = json_array();
    for (int32_t i = 0; i < n; i++)
        json_array_append_new(arr, json_integer(tok[i]));
    free(tok);
    json_decref(body);
    reply_json(req, 200, json_pack("{s:o, s:i, s:i}", "tokens", arr, "count", (int)n, "max_model_len", (int)s->n_ctx));
    return;
fail:
    json_decref(body);
    reply_error(s, req, &e);
}

/* llama-server's POST /apply-template: {"messages"[, "tools"]} -> {"prompt":
 * the rendered text}, what a chat request would tokenize. */
void route_apply_template(srv *s, struct evhttp_request *req)
{
    api_err e;
    json_t *body = read_json_body(s, req, &e);
    if (!body)
        goto fail;
    json_t *msgs = json_object_get(body, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        api_fail(&e, 400, "messages", "'messages' must be a non-empty list of messages");
        goto fail;
    }
    char *text = render_chat(s, msgs, json_object_get(body, "tools"), &e);
    if (!text)
        goto fail;
    json_decref(body);
    reply_json(req, 200, json_pack("{s:o}", "prompt", jstr(text, strlen(text))));
    free(text);
    return;
fail:
    json_decref(body);
    reply_error(s, req, &e);
}

void route_detokenize(srv *s, struct evhttp_request *req)
{
    api_err e;
    json_t *body = read_json_body(s, req, &e);
    if (!body)
        goto fail;
    json_t *t = json_object_get(body, "tokens");
    if (!json_is_array(t)) {
        api_fail(&e, 400, "tokens", "'tokens' must be a list of token ids");
        goto fail;
    }
    sbuf b = {0};
    tn_detok dt;
    tn_detok_init(&dt);
    char piece[TN_DETOK_MAX];
    size_t i;
    json_t *v;
    int32_t n_vocab = tn_vocab_n_tokens(s->vocab);
    json_array_foreach(t, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= n_vocab) {
            sbuf_free(&b);
            api_fail(&e, 400, "tokens", "'tokens'[%zu] must be a token id in [0, %d)", i, (int)n_vocab);
            goto fail;
        }
        size_t k = tn_detok_push(&dt, s->vocab, (int32_t)json_integer_value(v), piece, sizeof piece);
        (void)sbuf_add(&b, piece, k);
    }
    size_t k = tn_detok_flush(&dt, piece, sizeof piece);
    (void)sbuf_add(&b, piece, k);
    json_decref(body);
    json_t *str = jstr(b.p ? b.p : "", b.len);
    sbuf_free(&b);
    reply_json(req, 200, json_pack("{s:o}", "prompt", str));
    return;
fail:
    json_decref(body);
    reply_error(s, req, &e);
}
