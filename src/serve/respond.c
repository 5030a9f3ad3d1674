/*
 * respond.c — response bodies: OpenAI chat and completions objects (whole
 * and as stream chunks), TGI and Triton generate replies, usage, errors.
 *
 * Text from the model may hold invalid UTF-8 (byte-fallback tokens can
 * produce anything); JSON strings must not, so every model string goes
 * through jstr(), which replaces each invalid byte with U+FFFD (NUL bytes
 * are valid and come out as \u0000).
 */
#include "serve/serve_int.h"

#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at p (n bytes left), 0 if invalid. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) { len = 2; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { len = 3; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; min = 0x10000; }
    else return 0;
    if (len > n)
        return 0;
    unsigned cp = c & (0xff >> (len + 1));
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

json_t *jstr(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n && utf8_seq(p + i, n - i))
        i += utf8_seq(p + i, n - i);
    if (i == n)
        return json_stringn(s, n);
    sbuf b = {0};
    for (i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        if (k) {
            (void)sbuf_add(&b, s + i, k);
            i += k;
        } else {
            (void)sbuf_add(&b, "\xef\xbf\xbd", 3); /* U+FFFD */
            i++;
        }
    }
    json_t *j = json_stringn(b.p ? b.p : "", b.len);
    sbuf_free(&b);
    return j;
}

json_t *resp_error(const api_err *e)
{
    return json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", e->msg, "type", e->type, "param",
                     e->param[0] ? e->param : NULL, "code", e->code);
}

json_t *usage_json(gen *g)
{
    long long prompt = 0, completion = 0, cached = 0;
    for (int32_t i = 0; i < g->n_choices; i++) {
        choice *c = &g->c[i];
        if (c->index % g->gp.n == 0) {
            prompt += c->n_prompt ? c->n_prompt : g->gp.n_prompt_tok[c->prompt_idx];
            cached += c->n_cached;
        }
        completion += c->n_generated;
    }
    return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", prompt, "completion_tokens", completion,
                     "total_tokens", prompt + completion, "prompt_tokens_details", "cached_tokens", cached);
}

/* The text echoed before a completion: the prompt as sent, or its tokens
 * detokenized when it was sent as ids. */
static void echo_text(gen *g, int32_t prompt_idx, sbuf *b)
{
    const char *t = g->gp.prompt_text ? g->gp.prompt_text[prompt_idx] : NULL;
    if (t) {
        (void)sbuf_add(b, t, strlen(t));
        return;
    }
    tn_detok dt;
    tn_detok_init(&dt);
    char piece[TN_DETOK_MAX];
    for (int32_t i = 0; i < g->gp.n_prompt_tok[prompt_idx]; i++) {
        size_t k = tn_detok_push(&dt, g->s->vocab, g->gp.prompt[prompt_idx][i], piece, sizeof piece);
        (void)sbuf_add(b, piece, k);
    }
    size_t k = tn_detok_flush(&dt, piece, sizeof piece);
    (void)sbuf_add(b, piece, k);
}

/* A token's text for logprobs (special tokens shown). */
static json_t *token_str(srv *s, int32_t id)
{
    char buf[TN_DETOK_MAX];
    size_t n = tn_token_to_piece(s->vocab, id, true, buf, sizeof buf);
    return jstr(buf, TN_MIN(n, sizeof buf));
}

static json_t *token_bytes(srv *s, int32_t id)
{
    char buf[TN_DETOK_MAX];
    size_t n = TN_MIN(tn_token_to_piece(s->vocab, id, true, buf, sizeof buf), sizeof buf);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer((unsigned char)buf[i]));
    return a;
}

/* Bytes of the echoed prompt (0 without echo): completion tokens' text
 * offsets count from the start of the echo. */
static size_t echo_len(gen *g, int32_t prompt_idx)
{
    if (!g->gp.echo)
        return 0;
    sbuf b = {0};
    echo_text(g, prompt_idx, &b);
    size_t n = b.len;
    sbuf_free(&b);
    return n;
}

/* The top alternatives of l as OpenAI's legacy {token: logprob} object. */
static json_t *top_object(gen *g, const lp_entry *l)
{
    json_t *top = json_object();
    for (int32_t k = 0; k < l->n_top && k < g->gp.logprobs; k++) {
        json_t *ks = token_str(g->s, l->top_token[k]);
        json_object_set_new(top, json_string_value(ks), json_real(l->top_logprob[k]));
        json_decref(ks);
    }
    return top;
}

/* Appends the prompt's tokens to the legacy logprobs arrays (echo with
 * logprobs): the first token has null logprob and null top_logprobs, as
 * OpenAI's. A token's text offset is where its text starts in the
 * detokenized prompt, clamped to the echoed text (the prompt as sent, which
 * is the same text unless the tokenizer normalized it). */
static void prompt_logprobs_into(gen *g, choice *c, json_t *tokens, json_t *lps, json_t *tops, json_t *offs)
{
    srv *s = g->s;
    const int32_t *p = g->gp.prompt[c->prompt_idx];
    int32_t n = g->gp.n_prompt_tok[c->prompt_idx];
    size_t elen = echo_len(g, c->prompt_idx), at = 0;
    tn_detok dt;
    tn_detok_init(&dt);
    char piece[TN_DETOK_MAX];
    for (int32_t i = 0; i < n; i++) {
        json_array_append_new(tokens, token_str(s, p[i]));
        bool have = i > 0 && c->plp && i <= c->n_plp;
        json_array_append_new(lps, have ? json_real(c->plp[i].logprob) : json_null());
        json_array_append_new(tops, have ? top_object(g, &c->plp[i]) : json_null());
        json_array_append_new(offs, json_integer((json_int_t)TN_MIN(at, elen)));
        at += tn_detok_push(&dt, s->vocab, p[i], piece, sizeof piece);
    }
}

/* Logprobs of entries [from, to) of c, in the dialect's shape; with_prompt:
 * the prompt's tokens first (completions with echo and logprobs). */
static json_t *logprobs_json_ex(gen *g, choice *c, int32_t from, int32_t to, bool with_prompt)
{
    srv *s = g->s;
    if (g->gp.logprobs < 0)
        return json_null();
    if (g->gp.chat_logprobs) {
        json_t *content = json_array();
        for (int32_t i = from; i < to; i++) {
            lp_entry *l = &c->lp[i];
            json_t *top = json_array();
            for (int32_t k = 0; k < l->n_top && k < g->gp.logprobs; k++)
                json_array_append_new(top, json_pack("{s:o, s:f, s:o}", "token", token_str(s, l->top_token[k]),
                                                     "logprob", (double)l->top_logprob[k], "bytes",
                                                     token_bytes(s, l->top_token[k])));
            json_array_append_new(content, json_pack("{s:o, s:f, s:o, s:o}", "token", token_str(s, l->token),
                                                     "logprob", (double)l->logprob, "bytes",
                                                     token_bytes(s, l->token), "top_logprobs", top));
        }
        return json_pack("{s:o}", "content", content);
    }
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    if (with_prompt && g->gp.prompt_logprobs)
        prompt_logprobs_into(g, c, tokens, lps, tops, offs);
    size_t shift = from < to ? echo_len(g, c->prompt_idx) : 0;
    for (int32_t i = from; i < to; i++) {
        lp_entry *l = &c->lp[i];
        json_array_append_new(tokens, token_str(s, l->token));
        json_array_append_new(lps, json_real(l->logprob));
        json_array_append_new(tops, top_object(g, l));
        json_array_append_new(offs, json_integer((json_int_t)(l->text_offset + shift)));
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offs);
}

static json_t *logprobs_json(gen *g, choice *c, int32_t from, int32_t to)
{
    return logprobs_json_ex(g, c, from, to, false);
}

static const char *tgi_finish(choice *c)
{
    if (!c->finish)
        return NULL;
    if (!strcmp(c->finish, "length"))
        return "length";
    if (!strcmp(c->finish, "stop"))
        return c->stopped ? "stop_sequence" : "eos_token";
    return c->finish;
}

static json_t *tgi_details(gen *g, choice *c)
{
    json_t *seed = g->gp.seed_given ? json_integer((json_int_t)g->gp.sample.seed) : json_null();
    return json_pack("{s:s?, s:i, s:o}", "finish_reason", tgi_finish(c), "generated_tokens", (int)c->n_generated,
                     "seed", seed);
}

static const char *model_name(gen *g)
{
    return g->model_in_path ? g->model_in_path : g->s->model_name;
}

json_t *resp_full(gen *g)
{
    api_kind api = g->gp.api;
    if (api == API_TGI) {
        choice *c = &g->c[0];
        json_t *j = json_pack("{s:o}", "generated_text", jstr(c->out.p ? c->out.p : "", c->out.len));
        if (g->gp.details)
            json_object_set_new(j, "details", tgi_details(g, c));
        return j;
    }
    if (api == API_TRITON) {
        choice *c = &g->c[0];
        return json_pack("{s:s, s:s, s:o}", "model_name", model_name(g), "model_version", "1", "text_output",
                         jstr(c->out.p ? c->out.p : "", c->out.len));
    }
    json_t *choices = json_array();
    for (int32_t i = 0; i < g->n_choices; i++) {
        choice *c = &g->c[i];
        json_t *ch;
        if (api == API_CHAT) {
            ch = json_pack("{s:i, s:{s:s, s:o}, s:o, s:s?}", "index", (int)c->index, "message", "role", "assistant",
                           "content", jstr(c->out.p ? c->out.p : "", c->out.len), "logprobs",
                           logprobs_json(g, c, 0, c->n_lp), "finish_reason", c->finish);
        } else {
            sbuf t = {0};
            if (g->gp.echo)
                echo_text(g, c->prompt_idx, &t);
            (void)sbuf_add(&t, c->out.p ? c->out.p : "", c->out.len);
            ch = json_pack("{s:i, s:o, s:o, s:s?}", "index", (int)c->index, "text", jstr(t.p ? t.p : "", t.len),
                           "logprobs", logprobs_json_ex(g, c, 0, c->n_lp, true), "finish_reason", c->finish);
            sbuf_free(&t);
        }
        json_array_append_new(choices, ch);
    }
    return json_pack("{s:s, s:s, s:I, s:s, s:o, s:o}", "id", g->id, "object",
                     api == API_CHAT ? "chat.completion" : "text_completion", "created", (json_int_t)g->created,
                     "model", model_name(g), "choices", choices, "usage", usage_json(g));
}

static json_t *chunk_envelope(gen *g, json_t *choices)
{
    json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", g->id, "object",
                          g->gp.api == API_CHAT ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)g->created, "model", model_name(g), "choices", choices);
    if (g->gp.include_usage)
        json_object_set_new(j, "usage", json_null());
    return j;
}

json_t *resp_chunk(gen *g, choice *c, const char *text, size_t n, int32_t lp_from, int32_t lp_to,
                   const char *finish, bool first)
{
    switch (g->gp.api) {
    case API_CHAT: {
        json_t *delta = first ? json_pack("{s:s, s:s}", "role", "assistant", "content", "")
                        : (n || !finish) ? json_pack("{s:o}", "content", jstr(text, n))
                                         : json_object();
        json_t *lp = first ? json_null() : logprobs_json(g, c, lp_from, lp_to);
        json_t *ch = json_pack("{s:i, s:o, s:o, s:s?}", "index", (int)c->index, "delta", delta, "logprobs", lp,
                               "finish_reason", finish);
        return chunk_envelope(g, json_pack("[o]", ch));
    }
    case API_COMPLETION: {
        if (first) /* the echo (sent later when it waits for prompt logprobs) */
            return g->gp.echo && !g->gp.prompt_logprobs ? resp_echo_chunk(g, c) : NULL;
        json_t *t = jstr(text, n);
        json_t *lp = logprobs_json(g, c, lp_from, lp_to);
        json_t *ch = json_pack("{s:i, s:o, s:o, s:s?}", "index", (int)c->index, "text", t, "logprobs", lp,
                               "finish_reason", finish);
        return chunk_envelope(g, json_pack("[o]", ch));
    }
    case API_TGI: {
        if (first)
            return NULL;
        json_t *lp = lp_to > 0 ? json_real(c->lp[lp_to - 1].logprob) : json_null();
        json_t *tok = json_pack("{s:i, s:o, s:o, s:b}", "id", (int)c->last_token, "text", jstr(text, n), "logprob",
                                lp, "special", finish && !c->stopped && !n);
        json_t *gt = finish ? jstr(c->out.p ? c->out.p : "", c->out.len) : json_null();
        json_t *det = finish ? tgi_details(g, c) : json_null();
        return json_pack("{s:i, s:o, s:o, s:o}", "index", (int)c->n_tokens, "token", tok, "generated_text", gt,
                         "details", det);
    }
    default:
        if (first || (!n && !finish))
            return NULL;
        return json_pack("{s:s, s:s, s:o}", "model_name", model_name(g), "model_version", "1", "text_output",
                         jstr(text, n));
    }
}

json_t *resp_echo_chunk(gen *g, choice *c)
{
    sbuf b = {0};
    echo_text(g, c->prompt_idx, &b);
    json_t *t = jstr(b.p ? b.p : "", b.len);
    sbuf_free(&b);
    json_t *lp = g->gp.prompt_logprobs ? logprobs_json_ex(g, c, 0, 0, true) : json_null();
    json_t *ch = json_pack("{s:i, s:o, s:o, s:n}", "index", (int)c->index, "text", t, "logprobs", lp,
                           "finish_reason");
    return chunk_envelope(g, json_pack("[o]", ch));
}

json_t *resp_usage_chunk(gen *g)
{
    json_t *j = chunk_envelope(g, json_array());
    json_object_set_new(j, "usage", usage_json(g));
    return j;
}
