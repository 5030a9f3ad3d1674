/*
 * gen.c — one generation request: an HTTP request that became one engine
 * request per choice (n choices for each prompt), and the text those
 * engine requests produce.
 *
 * Key idea: engine events arrive (via the bridge) on the loop thread in
 * order. Each token is detokenized with the UTF-8-safe streaming
 * detokenizer into the choice's `held` buffer; release() then moves to
 * `out` every byte that can no longer be part of a stop string, and
 * streaming sends whatever `out` gained.
 *
 * STOP STRINGS. A stop string must never reach the client, also not its
 * first half in one chunk before the second half arrives. So after each
 * token: if a stop string occurs in held, the text before its earliest
 * occurrence is released, the rest dropped, the choice is marked stopped
 * (finish "stop") and its engine request cancelled; tokens that still
 * arrive before the cancel lands are ignored. Otherwise the longest suffix
 * of held that is a proper prefix of some stop string stays held (at most
 * the longest stop string's length - 1 bytes) and the rest is released. At
 * the end everything held is released. Usage then counts the tokens taken
 * up to and including the one that completed the stop string.
 *
 * LIFETIME. The gen lives until every submitted engine request has sent its
 * final event, even when the client left or an error was already answered
 * (the engine still holds the choice pointers until then). The HTTP side
 * ends earlier: when the reply is sent, or when the client disconnects
 * (on_close: every choice cancelled; the reply is still finished at the end,
 * which is how libevent frees a request whose connection went away).
 */
#include "serve/serve_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --- lifetime -------------------------------------------------------------- */

static void gen_free(gen *g)
{
    srv *s = g->s;
    if (g->prev)
        g->prev->next = g->next;
    else if (s->live == g)
        s->live = g->next;
    if (g->next)
        g->next->prev = g->prev;
    s->n_live--;
    for (int32_t i = 0; i < g->n_choices; i++) {
        sbuf_free(&g->c[i].held);
        sbuf_free(&g->c[i].out);
        free(g->c[i].lp);
        free(g->c[i].plp);
    }
    free(g->c);
    free(g->model_in_path);
    gen_params_free(&g->gp);
    free(g);
}

static void cancel_choices(gen *g)
{
    for (int32_t i = 0; i < g->n_choices; i++)
        if (g->c[i].submitted && !g->c[i].final)
            tn_engine_cancel(g->s->engine, g->c[i].id);
}

/* The client went away (EOF or timeout on the connection). libevent then
 * either detaches a request whose reply the user has not finished (its
 * connection becomes NULL and the request stays ours: finishing the reply
 * as usual frees it, sending chunks does nothing) or frees it right after
 * this callback; in that case forget it. Either way: stop the work. */
static void on_close(struct evhttp_connection *conn, void *arg)
{
    gen *g = arg;
    if (g->req) {
        evhttp_request_set_on_complete_cb(g->req, NULL, NULL);
        if (evhttp_request_get_connection(g->req) != NULL)
            g->req = NULL;
    }
    g->conn = NULL;
    g->gone = true;
    cancel_choices(g);
}

/* libevent finished the request itself (an error reply on a failing
 * connection); it frees req right after. */
static void on_complete(struct evhttp_request *req, void *arg)
{
    gen *g = arg;
    if (g->conn)
        evhttp_connection_set_closecb(g->conn, NULL, NULL);
    g->req = NULL;
    g->conn = NULL;
    g->gone = true;
    cancel_choices(g);
}

void gen_cancel_all(srv *s)
{
    for (gen *g = s->live; g; g = g->next)
        cancel_choices(g);
}

/* Ends the HTTP side: no callbacks any more (the connection may live on,
 * keep-alive, after g is freed). The caller then finishes the reply on the
 * returned request (which frees it, also when the client has gone). */
static struct evhttp_request *detach(gen *g)
{
    struct evhttp_request *req = g->req;
    if (req)
        evhttp_request_set_on_complete_cb(req, NULL, NULL);
    if (g->conn)
        evhttp_connection_set_closecb(g->conn, NULL, NULL);
    g->req = NULL;
    g->conn = NULL;
    return req;
}

/* --- text ---------------------------------------------------------------------- */

/* Moves text from held to out (see the file comment). Returns true if a
 * stop string was found (held is then emptied). False also when out cannot
 * grow (the text is dropped: better short than a crash). */
static bool release(choice *c, const gen_params *gp, bool final)
{
    sbuf *h = &c->held;
    size_t cut = h->len;
    bool hit = false;
    for (int32_t i = 0; i < gp->n_stop; i++) {
        const char *p = memmem(h->p ? h->p : "", h->len, gp->stop[i], strlen(gp->stop[i]));
        if (p && (size_t)(p - h->p) < cut) {
            cut = (size_t)(p - h->p);
            hit = true;
        }
    }
    if (!hit && !final) {
        size_t keep = 0;
        for (int32_t i = 0; i < gp->n_stop; i++) {
            size_t L = strlen(gp->stop[i]);
            for (size_t k = TN_MIN(L - 1, h->len); k > keep; k--)
                if (memcmp(h->p + h->len - k, gp->stop[i], k) == 0) {
                    keep = k;
                    break;
                }
        }
        cut = h->len - keep;
    }
    if (cut)
        (void)sbuf_add(&c->out, h->p, cut);
    sbuf_consume(h, hit ? h->len : cut);
    return hit;
}

/* Takes one generated token into the choice: logprobs, text. */
static void take_token(choice *c, const tn_engine_event *ev)
{
    gen *g = c->g;
    if (g->gp.logprobs >= 0) {
        if (c->n_lp == c->cap_lp) {
            int32_t cap = c->cap_lp ? 2 * c->cap_lp : 16;
            lp_entry *p = realloc(c->lp, (size_t)cap * sizeof *p);
            if (p) {
                c->lp = p;
                c->cap_lp = cap;
            }
        }
        if (c->n_lp < c->cap_lp) {
            lp_entry *l = &c->lp[c->n_lp++];
            l->token = ev->token;
            l->logprob = ev->logprob;
            l->n_top = TN_MIN(TN_MAX(ev->n_top, 0), TN_MAX_TOP_LOGPROBS);
            memcpy(l->top_token, ev->top_token, sizeof l->top_token);
            memcpy(l->top_logprob, ev->top_logprob, sizeof l->top_logprob);
            l->text_offset = c->out.len + c->held.len;
        }
    }
    char text[TN_DETOK_MAX];
    size_t k = tn_detok_push(&c->dt, g->s->vocab, ev->token, text, sizeof text);
    (void)sbuf_add(&c->held, text, k);
    c->n_tokens++;
    c->last_token = ev->token;
}

/* --- replies ---------------------------------------------------------------------- */

static void stream_progress(gen *g, choice *c)
{
    if (!g->req || !g->streaming)
        return;
    if (g->gp.echo && !c->echo_sent) {
        /* with prompt logprobs the echo waits for them: they all come before the first token */
        if (g->gp.prompt_logprobs && c->n_plp + 1 < g->gp.n_prompt_tok[c->prompt_idx] && !c->final)
            return;
        c->echo_sent = true;
        json_t *j = resp_echo_chunk(g, c);
        if (j)
            sse_send(g->req, j);
    }
    size_t n = c->out.len - c->sent;
    if (n == 0 && c->sent_lp == c->n_lp && !c->final)
        return;
    json_t *j = resp_chunk(g, c, c->out.p ? c->out.p + c->sent : "", n, c->sent_lp, c->n_lp,
                           c->final ? c->finish : NULL, false);
    c->sent = c->out.len;
    c->sent_lp = c->n_lp;
    if (j)
        sse_send(g->req, j);
}

static void count_finish(srv *s, const char *finish)
{
    if (!strcmp(finish, "stop"))
        s->m.finished_stop++;
    else if (!strcmp(finish, "length"))
        s->m.finished_length++;
    else if (!strcmp(finish, "error"))
        s->m.finished_error++;
    else
        s->m.finished_abort++;
}

static void gen_finish(gen *g)
{
    srv *s = g->s;
    const char *error = NULL;
    for (int32_t i = 0; i < g->n_choices; i++)
        if (g->c[i].finish && !strcmp(g->c[i].finish, "error"))
            error = "the engine failed while generating";
    struct evhttp_request *req = detach(g);
    if (req && g->gone) {
        /* the connection is gone: finishing the reply frees the request */
        if (g->streaming)
            evhttp_send_reply_end(req);
        else
            evhttp_send_reply(req, 200, "OK", NULL);
    } else if (req) {
        api_err e;
        if (error)
            api_fail(&e, 500, NULL, "%s", error);
        if (g->streaming) {
            if (error)
                sse_send(req, resp_error(&e));
            else if (g->gp.include_usage)
                sse_send(req, resp_usage_chunk(g));
            sse_end(req, g->gp.api == API_CHAT || g->gp.api == API_COMPLETION);
        } else if (error) {
            reply_error(s, req, &e);
        } else {
            reply_json(req, 200, resp_full(g));
        }
    }
    double now = tn_time_s();
    hist_observe(&s->m.e2e, now - g->t_start);
    for (int32_t i = 0; i < g->n_choices; i++) {
        choice *c = &g->c[i];
        if (!c->submitted)
            continue;
        count_finish(s, c->finish ? c->finish : "abort");
        s->m.generation_tokens += (uint64_t)c->n_generated;
        hist_observe(&s->m.n_gen, c->n_generated);
        if (c->index % g->gp.n == 0) {
            s->m.prompt_tokens += (uint64_t)c->n_prompt;
            hist_observe(&s->m.n_prompt, c->n_prompt);
        }
    }
    gen_free(g);
}

/* --- events ------------------------------------------------------------------------ */

void gen_on_event(choice *c, const tn_engine_event *ev, const char *err)
{
    gen *g = c->g;
    srv *s = g->s;
    const gen_params *gp = &g->gp;
    if (c->final)
        return;
    c->n_prompt = ev->n_prompt;
    c->n_cached = ev->n_cached;
    if (ev->prompt_pos > 0) {
        /* a prompt token's logprob (echo with logprobs) */
        if (c->plp && ev->prompt_pos < g->gp.n_prompt_tok[c->prompt_idx]) {
            lp_entry *l = &c->plp[ev->prompt_pos];
            l->token = ev->token;
            l->logprob = ev->logprob;
            l->n_top = TN_MIN(TN_MAX(ev->n_top, 0), TN_MAX_TOP_LOGPROBS);
            memcpy(l->top_token, ev->top_token, sizeof l->top_token);
            memcpy(l->top_logprob, ev->top_logprob, sizeof l->top_logprob);
            c->n_plp = TN_MAX(c->n_plp, ev->prompt_pos);
        }
        stream_progress(g, c);
        return;
    }
    if (ev->token >= 0 && !c->stopped) {
        /* the end-of-generation token that ends a request is not text */
        bool eog = ev->finish == TN_FINISH_STOP && !gp->ignore_eos && tn_vocab_is_eog(s->vocab, ev->token);
        double now = tn_time_s();
        if (g->t_first == 0) {
            g->t_first = now;
            hist_observe(&s->m.ttft, now - g->t_start);
        }
        if (c->t_last > 0)
            hist_observe(&s->m.tpot, now - c->t_last);
        c->t_last = now;
        if (!eog) {
            take_token(c, ev);
            if (release(c, gp, false)) {
                c->stopped = true;
                tn_engine_cancel(s->engine, c->id);
            }
        }
    }
    if (ev->finish != TN_FINISH_NONE) {
        c->final = true;
        g->n_final++;
        if (!c->stopped) {
            char text[16];
            size_t k = tn_detok_flush(&c->dt, text, sizeof text);
            (void)sbuf_add(&c->held, text, k);
            c->stopped = release(c, gp, true);
        }
        if (c->stopped) {
            c->finish = "stop";
            c->n_generated = c->n_tokens;
        } else {
            c->n_generated = ev->n_generated;
            switch (ev->finish) {
            case TN_FINISH_LENGTH: c->finish = "length"; break;
            case TN_FINISH_STOP: c->finish = "stop"; break;
            case TN_FINISH_ERROR: c->finish = "error"; break;
            default: c->finish = "abort"; break;
            }
            if (ev->finish == TN_FINISH_ERROR)
                tn_log(TN_LOG_ERROR, "tern serve: request %s choice %d failed: %s\n", g->id, (int)c->index,
                       err ? err : "(no message)");
        }
    }
    stream_progress(g, c);
    if (g->n_final == g->n_choices)
        gen_finish(g);
}

/* --- start ------------------------------------------------------------------------- */

static void submit_failed(srv *s, gen *g, tn_status st)
{
    api_err e;
    if (st == TN_ERR_FULL && s->draining)
        api_fail(&e, 503, NULL, "the server is shutting down");
    else if (st == TN_ERR_FULL)
        api_fail(&e, 429, NULL, "the request queue is full (%s); retry later", tn_last_error());
    else if (st == TN_ERR_INVALID)
        api_fail(&e, 400, NULL, "%s", tn_last_error());
    else
        api_fail(&e, 500, NULL, "cannot queue the request: %s", tn_last_error());
    struct evhttp_request *req = detach(g);
    if (req)
        reply_error(s, req, &e);
    cancel_choices(g);
}

void gen_start(srv *s, struct evhttp_request *req, gen_params *gp, const char *url_model)
{
    api_err e;
    gen *g = calloc(1, sizeof *g);
    int32_t n_choices = gp->n_prompts * gp->n;
    choice *cs = g ? calloc((size_t)n_choices, sizeof *cs) : NULL;
    char *um = url_model ? strdup(url_model) : NULL;
    if (!g || !cs || (url_model && !um)) {
        free(g);
        free(cs);
        free(um);
        gen_params_free(gp);
        api_fail(&e, 500, NULL, "out of memory");
        reply_error(s, req, &e);
        return;
    }
    g->s = s;
    g->req = req;
    g->conn = evhttp_request_get_connection(req);
    g->gp = *gp;
    memset(gp, 0, sizeof *gp);
    g->c = cs;
    g->n_choices = n_choices;
    g->model_in_path = um;
    g->created = (long)time(NULL);
    g->t_start = tn_time_s();
    snprintf(g->id, sizeof g->id, "%s-%016llx", g->gp.api == API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)srv_random(s));
    g->next = s->live;
    if (s->live)
        s->live->prev = g;
    s->live = g;
    s->n_live++;

    for (int32_t i = 0; i < n_choices; i++) {
        choice *c = &g->c[i];
        c->g = g;
        c->index = i;
        c->prompt_idx = i / g->gp.n;
        tn_detok_init(&c->dt);
        int32_t np = g->gp.n_prompt_tok[c->prompt_idx];
        if (g->gp.prompt_logprobs) {
            c->plp = calloc((size_t)np, sizeof *c->plp);
            if (!c->plp) {
                submit_failed(s, g, TN_ERR_NOMEM);
                for (int32_t j = i; j < n_choices; j++) {
                    g->c[j].final = true;
                    g->c[j].finish = "error";
                    g->n_final++;
                }
                if (g->n_final == g->n_choices)
                    gen_free(g);
                return;
            }
        }
        int32_t room = s->n_ctx - np;
        tn_request_params rp = {
            .prompt = g->gp.prompt[c->prompt_idx],
            .n_prompt = np,
            .max_tokens = g->gp.max_tokens < 0 ? room : TN_MIN(g->gp.max_tokens, room),
            .sample = g->gp.sample,
            .ignore_eos = g->gp.ignore_eos,
            .top_logprobs = g->gp.logprobs,
            .prompt_logprobs = g->gp.prompt_logprobs,
            .timeout_s = s->p.timeout_s,
            .logit_bias_ids = g->gp.bias_id,
            .logit_bias = g->gp.bias,
            .n_logit_bias = g->gp.n_bias,
        };
        rp.sample.seed = g->gp.seed_given ? g->gp.sample.seed + (uint64_t)i : srv_random(s);
        tn_status st = tn_engine_submit(s->engine, &rp, bridge_push, c, &c->id);
        if (st != TN_OK) {
            submit_failed(s, g, st);
            for (int32_t j = i; j < n_choices; j++) {
                g->c[j].final = true;
                g->c[j].finish = "error";
                g->n_final++;
            }
            if (g->n_final == g->n_choices)
                gen_free(g); /* nothing was submitted: nothing will come back */
            return;
        }
        c->submitted = true;
    }
    evhttp_connection_set_closecb(g->conn, on_close, g);
    evhttp_request_set_on_complete_cb(req, on_complete, g);
    if (g->gp.stream) {
        sse_begin(req);
        g->streaming = true;
        for (int32_t i = 0; i < n_choices; i++) {
            json_t *j = resp_chunk(g, &g->c[i], "", 0, 0, 0, NULL, true);
            if (j)
                sse_send(req, j);
            if (g->gp.echo && !g->gp.prompt_logprobs)
                g->c[i].echo_sent = true; /* that first chunk was the echo */
        }
    }
}
