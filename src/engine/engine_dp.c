/*
 * engine_dp.c — data-parallel engines over several processes: rank 0
 * spreads requests over the ranks' engines and relays their events; every
 * rank's engine makes one round over the link before each forward call, so
 * all ranks step together (engine.h, "Data-parallel engines").
 *
 * HOW A ROUND GOES (every rank, on its engine thread):
 *
 *     take this rank's outboxes                     rank 0: requests and cancels per rank;
 *                                                   ranks > 0: events for rank 0
 *     all-gather of the header                      state (DONE/IDLE/STEP), live requests, the
 *                                                   engine's counters, bytes for each rank
 *     if any rank has bytes for another:
 *         all-to-all-v of the outboxes              every rank knows every count from the headers
 *     ranks > 0: submit the requests, cancel the cancels, into the own engine
 *     rank 0:    hand each event to its request's callback; keep the counters per rank
 *     agreed = DONE if rank 0 said DONE, else the largest state
 *
 * STEP: every rank runs one forward call (an empty one without tokens).
 * Otherwise the engine polls again at once while any rank has live
 * requests or messages moved (POLL), else rank 0 waits for work up to its
 * heartbeat and ranks > 0 wait inside the next round's all-gather (IDLE).
 * DONE comes only from rank 0 (tn_engine_link_done): ranks > 0 stop their
 * engines.
 *
 * WIRE FORMAT. A header is a struct hdr followed by size uint64 byte
 * counts. A message is a sequence of records:
 *
 *     offset  size  field
 *     0       4     kind (REQ 1, CANCEL 2, EVENT 3)
 *     4       4     bytes of the whole record, header included (a multiple of 8)
 *     8       ...   REQ:    struct req_wire, prompt (n_prompt i32), stop tokens (n_stop i32),
 *                           bias ids (n_bias i32), biases (n_bias f32)
 *                   CANCEL: the request id (u64)
 *                   EVENT:  struct ev_wire, top tokens (n_top i32), top logprobs (n_top f32),
 *                           the error text (err_len bytes, no NUL)
 *
 * The structs are copied as they are: every rank must run the same binary.
 * A record that does not add up (a length past the message, counts out of
 * range) is a failure of the link, reported through its fail().
 *
 * LIMITATIONS: rank 0 picks a rank when a request arrives, from the live
 * requests it routed and the free blocks reported at the last round; a
 * request does not move later. Prefix-cache hits happen only on the rank
 * that holds the prefix. MoE routing statistics (/metrics) are rank 0's
 * tokens only.
 */
#include "engine/engine_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { REC_REQ = 1, REC_CANCEL = 2, REC_EVENT = 3 };
enum { ST_DONE = 0, ST_IDLE = 1, ST_STEP = 2 }; /* a rank's state in the header; the largest wins */

typedef struct hdr {
    int32_t state;
    int32_t n_live;
    tn_engine_stats st;
} hdr; /* followed by (size) uint64: bytes for each rank */

typedef struct req_wire {
    uint64_t id;
    int32_t n_prompt, max_tokens, n_stop, top_logprobs, n_bias;
    uint8_t ignore_eos, prompt_logprobs, pad[2];
    double timeout_s;
    tn_sample_params sample;
} req_wire;

typedef struct ev_wire {
    uint64_t id;
    int32_t token, prompt_pos;
    float logprob;
    int32_t n_top, finish, n_prompt, n_cached, n_generated, err_len, pad;
} ev_wire;

/* Append-only bytes; growth past DBUF_MAX fails (the message is dropped
 * with a log line: a round carries at most that much per rank pair). */
#define DBUF_MAX ((size_t)1 << 30)
typedef struct dbuf {
    unsigned char *p;
    size_t len, cap;
} dbuf;

static bool dbuf_reserve(dbuf *b, size_t n)
{
    if (b->len + n <= b->cap)
        return true;
    if (b->len + n > DBUF_MAX)
        return false;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

static void dbuf_put(dbuf *b, const void *src, size_t n)
{
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

/* A request on another rank, as rank 0 knows it. */
typedef struct remote {
    uint64_t id;
    int32_t rank;
    tn_engine_cb cb;
    void *user;
} remote;

/* A request from rank 0, as a rank > 0 knows it (the local engine's user). */
typedef struct origin {
    uint64_t id;       /* rank 0's id */
    uint64_t local_id; /* this engine's */
    tn__dp *dp;
} origin;

struct tn__dp {
    tn_engine_link l;
    size_t hdr_bytes;
    unsigned char *hdr_send, *hdr_all; /* (hdr_bytes), (size, hdr_bytes) */
    size_t *sc, *sd, *rc, *rd;         /* (size) counts and displacements of the all-to-all-v */
    dbuf stage, recv;                  /* engine thread only */

    pthread_mutex_t mu;                /* guards everything below */
    pthread_cond_t done_cv;
    dbuf *out;                         /* (size) outboxes, by destination */
    dbuf *taken;                       /* (size) the outboxes of the round in progress */
    bool done;
    /* rank 0 */
    remote *rem;
    int32_t n_rem, cap_rem;
    int32_t *live;                     /* (size) requests routed to each rank and not finished */
    uint64_t *routed;                  /* (size) */
    tn_engine_stats *rst;              /* (size) each rank's counters at the last round */
    int32_t rr;                        /* round-robin start among equally loaded ranks */
    /* ranks > 0 */
    origin **org;
    int32_t n_org, cap_org;
};

/* ==========================================================================
 * Life cycle
 * ======================================================================== */

tn_status tn__dp_new(const tn_engine_link *l, tn__dp **out)
{
    *out = NULL;
    if (!l || l->size < 1 || l->rank < 0 || l->rank >= l->size || !l->allgather || !l->alltoallv || !l->fail)
        return tn__err(TN_ERR_INVALID, "engine: data-parallel link: rank %d of %d, or a function missing",
                       l ? (int)l->rank : -1, l ? (int)l->size : 0);
    tn__dp *dp = calloc(1, sizeof *dp);
    if (!dp)
        return tn__err(TN_ERR_NOMEM, "engine: out of memory for the data-parallel state");
    size_t S = (size_t)l->size;
    dp->l = *l;
    dp->hdr_bytes = sizeof(hdr) + S * sizeof(uint64_t);
    dp->hdr_send = calloc(1, dp->hdr_bytes);
    dp->hdr_all = calloc(S, dp->hdr_bytes);
    dp->sc = calloc(S, sizeof(size_t));
    dp->sd = calloc(S, sizeof(size_t));
    dp->rc = calloc(S, sizeof(size_t));
    dp->rd = calloc(S, sizeof(size_t));
    dp->out = calloc(S, sizeof(dbuf));
    dp->taken = calloc(S, sizeof(dbuf));
    dp->live = calloc(S, sizeof(int32_t));
    dp->routed = calloc(S, sizeof(uint64_t));
    dp->rst = calloc(S, sizeof(tn_engine_stats));
    pthread_mutex_init(&dp->mu, NULL);
    pthread_cond_init(&dp->done_cv, NULL);
    if (!dp->hdr_send || !dp->hdr_all || !dp->sc || !dp->sd || !dp->rc || !dp->rd || !dp->out || !dp->taken ||
        !dp->live || !dp->routed || !dp->rst) {
        tn__dp_free(dp);
        return tn__err(TN_ERR_NOMEM, "engine: out of memory for the data-parallel state of %d ranks", (int)S);
    }
    *out = dp;
    return TN_OK;
}

void tn__dp_free(tn__dp *dp)
{
    if (!dp)
        return;
    /* Rank 0: whatever still runs elsewhere ends here for its client. */
    for (int32_t i = 0; i < dp->n_rem; i++) {
        tn_engine_event ev;
        memset(&ev, 0, sizeof ev);
        ev.id = dp->rem[i].id;
        ev.token = -1;
        ev.finish = TN_FINISH_CANCELLED;
        ev.error = "engine shutting down";
        if (dp->rem[i].cb)
            dp->rem[i].cb(dp->rem[i].user, &ev);
    }
    for (int32_t i = 0; i < dp->n_org; i++)
        free(dp->org[i]);
    for (int32_t r = 0; dp->out && r < dp->l.size; r++)
        free(dp->out[r].p);
    for (int32_t r = 0; dp->taken && r < dp->l.size; r++)
        free(dp->taken[r].p);
    free(dp->stage.p);
    free(dp->recv.p);
    free(dp->rem);
    free(dp->org);
    free(dp->hdr_send);
    free(dp->hdr_all);
    free(dp->sc);
    free(dp->sd);
    free(dp->rc);
    free(dp->rd);
    free(dp->out);
    free(dp->taken);
    free(dp->live);
    free(dp->routed);
    free(dp->rst);
    pthread_cond_destroy(&dp->done_cv);
    pthread_mutex_destroy(&dp->mu);
    free(dp);
}

int32_t tn__dp_rank(const tn__dp *dp) { return dp->l.rank; }

/* ==========================================================================
 * Records
 * ======================================================================== */

/* Appends a record of `body` bytes (the caller then dbuf_puts exactly
 * them, padding included); false when the outbox cannot grow. Under mu. */
static bool rec_begin(dbuf *b, int32_t kind, size_t body)
{
    size_t n = 8 + pad8(body);
    if (n > INT32_MAX || !dbuf_reserve(b, n))
        return false;
    uint32_t h[2] = {(uint32_t)kind, (uint32_t)n};
    dbuf_put(b, h, sizeof h);
    return true;
}

static void rec_pad(dbuf *b, size_t body)
{
    static const unsigned char zero[8];
    dbuf_put(b, zero, pad8(body) - body);
}

/* Ranks > 0, engine thread (the local engine's callback): the event goes
 * to rank 0 in the next round. */
static void origin_cb(void *user, const tn_engine_event *ev)
{
    origin *o = user;
    tn__dp *dp = o->dp;
    size_t err_len = ev->error ? strlen(ev->error) : 0;
    err_len = TN_MIN(err_len, (size_t)1000);
    int32_t n_top = TN_MAX(0, TN_MIN(ev->n_top, TN_MAX_TOP_LOGPROBS));
    ev_wire w = {
        .id = o->id,
        .token = ev->token,
        .prompt_pos = ev->prompt_pos,
        .logprob = ev->logprob,
        .n_top = n_top,
        .finish = (int32_t)ev->finish,
        .n_prompt = ev->n_prompt,
        .n_cached = ev->n_cached,
        .n_generated = ev->n_generated,
        .err_len = (int32_t)err_len,
    };
    size_t body = sizeof w + (size_t)n_top * 8 + err_len;
    pthread_mutex_lock(&dp->mu);
    if (!dp->done) {
        dbuf *b = &dp->out[0];
        if (rec_begin(b, REC_EVENT, body)) {
            dbuf_put(b, &w, sizeof w);
            dbuf_put(b, ev->top_token, (size_t)n_top * sizeof(int32_t));
            dbuf_put(b, ev->top_logprob, (size_t)n_top * sizeof(float));
            dbuf_put(b, ev->error, err_len);
            rec_pad(b, body);
        } else {
            tn_log(TN_LOG_ERROR, "engine: rank %d: out of memory: an event of request %llu is lost\n",
                   (int)dp->l.rank, (unsigned long long)o->id);
        }
    }
    if (ev->finish != TN_FINISH_NONE) {
        for (int32_t i = 0; i < dp->n_org; i++)
            if (dp->org[i] == o) {
                dp->org[i] = dp->org[--dp->n_org];
                break;
            }
        free(o);
    }
    pthread_mutex_unlock(&dp->mu);
}

/* Ranks > 0: an error event for a request the local engine refused. */
static void refuse(tn__dp *dp, uint64_t id, int32_t n_prompt, const char *why)
{
    origin *o = calloc(1, sizeof *o);
    if (!o) {
        tn_log(TN_LOG_ERROR, "engine: rank %d: out of memory refusing request %llu\n", (int)dp->l.rank,
               (unsigned long long)id);
        return;
    }
    o->id = id;
    o->dp = dp;
    tn_engine_event ev;
    memset(&ev, 0, sizeof ev);
    ev.token = -1;
    ev.n_prompt = n_prompt;
    ev.finish = TN_FINISH_ERROR;
    ev.error = why;
    origin_cb(o, &ev); /* not in org: just sends and frees */
}

/* Ranks > 0: one REQ record into the local engine. */
static void take_request(tn__dp *dp, tn_engine *e, const unsigned char *p, size_t n)
{
    req_wire w;
    if (n < sizeof w) {
        dp->l.fail(dp->l.ud, "engine: data-parallel round: a request record is too short");
        return;
    }
    memcpy(&w, p, sizeof w);
    if (w.n_prompt < 0 || w.n_stop < 0 || w.n_bias < 0 || w.n_prompt > (1 << 26) || w.n_stop > (1 << 20) ||
        w.n_bias > (1 << 20) ||
        sizeof w + ((size_t)w.n_prompt + (size_t)w.n_stop + 2 * (size_t)w.n_bias) * 4 > n) {
        dp->l.fail(dp->l.ud, "engine: data-parallel round: a request record does not add up");
        return;
    }
    const unsigned char *q = p + sizeof w;
    int32_t *prompt = malloc(((size_t)w.n_prompt + (size_t)w.n_stop + 2 * (size_t)w.n_bias + 1) * 4);
    if (!prompt) {
        refuse(dp, w.id, w.n_prompt, "engine: out of memory for a request");
        return;
    }
    memcpy(prompt, q, ((size_t)w.n_prompt + (size_t)w.n_stop + 2 * (size_t)w.n_bias) * 4);
    int32_t *stop = prompt + w.n_prompt, *bias_ids = stop + w.n_stop;
    float *bias = (float *)(bias_ids + w.n_bias);
    tn_request_params rp = {
        .prompt = prompt,
        .n_prompt = w.n_prompt,
        .max_tokens = w.max_tokens,
        .sample = w.sample,
        .ignore_eos = w.ignore_eos,
        .stop_tokens = stop,
        .n_stop_tokens = w.n_stop,
        .top_logprobs = w.top_logprobs,
        .prompt_logprobs = w.prompt_logprobs,
        .timeout_s = w.timeout_s,
        .logit_bias_ids = bias_ids,
        .logit_bias = bias,
        .n_logit_bias = w.n_bias,
    };
    origin *o = calloc(1, sizeof *o);
    pthread_mutex_lock(&dp->mu);
    bool room = o != NULL;
    if (room && dp->n_org == dp->cap_org) {
        int32_t cap = dp->cap_org ? 2 * dp->cap_org : 64;
        origin **g = realloc(dp->org, (size_t)cap * sizeof *g);
        if (g) {
            dp->org = g;
            dp->cap_org = cap;
        } else {
            room = false;
        }
    }
    if (room) {
        o->id = w.id;
        o->dp = dp;
        dp->org[dp->n_org++] = o;
    }
    pthread_mutex_unlock(&dp->mu);
    if (!room) {
        free(o);
        free(prompt);
        refuse(dp, w.id, w.n_prompt, "engine: out of memory for a request");
        return;
    }
    /* The local engine's first event cannot come before its next
     * iteration (this is its engine thread), so local_id is set in time. */
    tn_status s = tn_engine_submit(e, &rp, origin_cb, o, &o->local_id);
    free(prompt);
    if (s != TN_OK) {
        char why[512];
        snprintf(why, sizeof why, "rank %d: %s", (int)dp->l.rank, tn_last_error());
        tn_engine_event ev;
        memset(&ev, 0, sizeof ev);
        ev.token = -1;
        ev.n_prompt = w.n_prompt;
        ev.finish = TN_FINISH_ERROR;
        ev.error = why;
        origin_cb(o, &ev); /* frees o */
    }
}

/* Ranks > 0: one CANCEL record. */
static void take_cancel(tn__dp *dp, tn_engine *e, const unsigned char *p, size_t n)
{
    uint64_t id;
    if (n < sizeof id) {
        dp->l.fail(dp->l.ud, "engine: data-parallel round: a cancel record is too short");
        return;
    }
    memcpy(&id, p, sizeof id);
    uint64_t local = 0;
    bool found = false;
    pthread_mutex_lock(&dp->mu);
    for (int32_t i = 0; i < dp->n_org && !found; i++)
        if (dp->org[i]->id == id) {
            local = dp->org[i]->local_id;
            found = true;
        }
    pthread_mutex_unlock(&dp->mu);
    if (found)
        tn_engine_cancel(e, local);
}

/* Rank 0: one EVENT record from rank src to its request's callback. */
static void take_event(tn__dp *dp, int32_t src, const unsigned char *p, size_t n)
{
    ev_wire w;
    if (n < sizeof w) {
        dp->l.fail(dp->l.ud, "engine: data-parallel round: an event record is too short");
        return;
    }
    memcpy(&w, p, sizeof w);
    if (w.n_top < 0 || w.n_top > TN_MAX_TOP_LOGPROBS || w.err_len < 0 || w.err_len > 1000 ||
        w.finish < TN_FINISH_NONE || w.finish > TN_FINISH_ERROR ||
        sizeof w + (size_t)w.n_top * 8 + (size_t)w.err_len > n) {
        dp->l.fail(dp->l.ud, "engine: data-parallel round: an event record does not add up");
        return;
    }
    tn_engine_event ev;
    memset(&ev, 0, sizeof ev);
    ev.id = w.id;
    ev.token = w.token;
    ev.prompt_pos = w.prompt_pos;
    ev.logprob = w.logprob;
    ev.n_top = w.n_top;
    ev.finish = (tn_finish)w.finish;
    ev.n_prompt = w.n_prompt;
    ev.n_cached = w.n_cached;
    ev.n_generated = w.n_generated;
    const unsigned char *q = p + sizeof w;
    memcpy(ev.top_token, q, (size_t)w.n_top * sizeof(int32_t));
    memcpy(ev.top_logprob, q + (size_t)w.n_top * 4, (size_t)w.n_top * sizeof(float));
    char err[1001];
    if (w.err_len > 0) {
        memcpy(err, q + (size_t)w.n_top * 8, (size_t)w.err_len);
        err[w.err_len] = 0;
        ev.error = err;
    }
    tn_engine_cb cb = NULL;
    void *user = NULL;
    pthread_mutex_lock(&dp->mu);
    for (int32_t i = 0; i < dp->n_rem; i++)
        if (dp->rem[i].id == w.id && dp->rem[i].rank == src) {
            cb = dp->rem[i].cb;
            user = dp->rem[i].user;
            if (ev.finish != TN_FINISH_NONE) {
                dp->rem[i] = dp->rem[--dp->n_rem];
                dp->live[src]--;
            }
            break;
        }
    pthread_mutex_unlock(&dp->mu);
    if (cb)
        cb(user, &ev);
}

/* Walks the records of one message from rank src. */
static void take_message(tn__dp *dp, tn_engine *e, int32_t src, const unsigned char *p, size_t n)
{
    while (n > 0) {
        uint32_t h[2];
        if (n < sizeof h) {
            dp->l.fail(dp->l.ud, "engine: data-parallel round: a record header is cut off");
            return;
        }
        memcpy(h, p, sizeof h);
        if (h[1] < sizeof h || h[1] > n || h[1] % 8) {
            char why[200];
            snprintf(why, sizeof why, "engine: data-parallel round: a record from rank %d claims %u bytes, %zu left",
                     (int)src, h[1], n);
            dp->l.fail(dp->l.ud, why);
            return;
        }
        const unsigned char *body = p + sizeof h;
        size_t nb = h[1] - sizeof h;
        if (dp->l.rank == 0 && h[0] == REC_EVENT)
            take_event(dp, src, body, nb);
        else if (dp->l.rank > 0 && src == 0 && h[0] == REC_REQ)
            take_request(dp, e, body, nb);
        else if (dp->l.rank > 0 && src == 0 && h[0] == REC_CANCEL)
            take_cancel(dp, e, body, nb);
        else {
            char why[200];
            snprintf(why, sizeof why, "engine: data-parallel round: rank %d sent record kind %u to rank %d",
                     (int)src, h[0], (int)dp->l.rank);
            dp->l.fail(dp->l.ud, why);
            return;
        }
        p += h[1];
        n -= h[1];
    }
}

/* ==========================================================================
 * The round
 * ======================================================================== */

static uint64_t hdr_bytes_for(const unsigned char *h, int32_t dst)
{
    uint64_t v;
    memcpy(&v, h + sizeof(hdr) + (size_t)dst * sizeof v, sizeof v);
    return v;
}

/* The exchange of one round, given the filled header: all-gather, then the
 * all-to-all-v of the taken outboxes if any rank has bytes for another.
 * Received messages are left in dp->recv at dp->rd. */
static bool exchange(tn__dp *dp, bool *moved)
{
    const int32_t S = dp->l.size, me = dp->l.rank;
    char why[600];
    tn_status s = dp->l.allgather(dp->l.ud, dp->hdr_send, dp->hdr_bytes, dp->hdr_all);
    if (s != TN_OK) {
        snprintf(why, sizeof why, "data-parallel round: %s", tn_last_error());
        dp->l.fail(dp->l.ud, why);
        return false;
    }
    bool any = false;
    size_t send_total = 0, recv_total = 0;
    for (int32_t r = 0; r < S; r++)
        for (int32_t d = 0; d < S; d++)
            if (r != d && hdr_bytes_for(dp->hdr_all + (size_t)r * dp->hdr_bytes, d) > 0)
                any = true;
    *moved = any;
    if (!any)
        return true;
    for (int32_t r = 0; r < S; r++) {
        dp->sc[r] = r == me ? 0 : dp->taken[r].len;
        dp->sd[r] = send_total;
        send_total += dp->sc[r];
        uint64_t in = r == me ? 0 : hdr_bytes_for(dp->hdr_all + (size_t)r * dp->hdr_bytes, me);
        if (in > DBUF_MAX) {
            snprintf(why, sizeof why, "engine: data-parallel round: rank %d announces %llu bytes", (int)r,
                     (unsigned long long)in);
            dp->l.fail(dp->l.ud, why);
            return false;
        }
        dp->rc[r] = (size_t)in;
        dp->rd[r] = recv_total;
        recv_total += dp->rc[r];
    }
    dp->stage.len = dp->recv.len = 0;
    if (!dbuf_reserve(&dp->stage, send_total + 8) || !dbuf_reserve(&dp->recv, recv_total + 8)) {
        dp->l.fail(dp->l.ud, "engine: data-parallel round: out of memory for the messages");
        return false;
    }
    for (int32_t r = 0; r < S; r++)
        if (r != me)
            dbuf_put(&dp->stage, dp->taken[r].p, dp->taken[r].len);
    s = dp->l.alltoallv(dp->l.ud, dp->stage.p, dp->sc, dp->sd, dp->recv.p, dp->rc, dp->rd);
    if (s != TN_OK) {
        snprintf(why, sizeof why, "data-parallel round: %s", tn_last_error());
        dp->l.fail(dp->l.ud, why);
        return false;
    }
    return true;
}

int tn__dp_round(tn__dp *dp, tn_engine *e, bool have_items)
{
    const int32_t S = dp->l.size, me = dp->l.rank;
    pthread_mutex_lock(&dp->mu);
    bool done = dp->done;
    for (int32_t r = 0; r < S && !done; r++) { /* swap: the callers keep appending to fresh outboxes */
        dbuf t = dp->taken[r];
        t.len = 0;
        dp->taken[r] = dp->out[r];
        dp->out[r] = t;
    }
    pthread_mutex_unlock(&dp->mu);
    if (done)
        return TN__DP_IDLE;

    hdr h;
    memset(&h, 0, sizeof h);
    h.state = have_items ? ST_STEP : ST_IDLE;
    tn__engine_local(e, &h.st, &h.n_live);
    memcpy(dp->hdr_send, &h, sizeof h);
    for (int32_t r = 0; r < S; r++) {
        uint64_t n = r == me ? 0 : dp->taken[r].len;
        memcpy(dp->hdr_send + sizeof h + (size_t)r * sizeof n, &n, sizeof n);
    }
    bool moved;
    if (!exchange(dp, &moved))
        return TN__DP_IDLE;

    int32_t agreed = ST_DONE;
    bool busy = moved;
    for (int32_t r = 0; r < S; r++) {
        hdr o;
        memcpy(&o, dp->hdr_all + (size_t)r * dp->hdr_bytes, sizeof o);
        if (o.state < ST_DONE || o.state > ST_STEP) {
            char why[200];
            snprintf(why, sizeof why, "engine: data-parallel round: rank %d sent state %d", (int)r, (int)o.state);
            dp->l.fail(dp->l.ud, why);
            return TN__DP_IDLE;
        }
        if (r == 0 && o.state == ST_DONE) {
            agreed = ST_DONE;
            break;
        }
        agreed = TN_MAX(agreed, o.state);
        busy = busy || o.n_live > 0;
        if (me == 0 && r > 0) {
            pthread_mutex_lock(&dp->mu);
            dp->rst[r] = o.st;
            pthread_mutex_unlock(&dp->mu);
        }
    }
    if (moved)
        for (int32_t r = 0; r < S; r++)
            if (r != me && dp->rc[r] > 0)
                take_message(dp, e, r, dp->recv.p + dp->rd[r], dp->rc[r]);
    if (agreed == ST_DONE) {
        if (me > 0) {
            tn__engine_stop(e);
            pthread_mutex_lock(&dp->mu);
            dp->done = true;
            pthread_cond_broadcast(&dp->done_cv);
            pthread_mutex_unlock(&dp->mu);
        }
        return TN__DP_IDLE;
    }
    if (agreed == ST_STEP)
        return TN__DP_STEP;
    return busy || me > 0 ? TN__DP_POLL : TN__DP_IDLE;
}

tn_status tn_engine_link_done(const tn_engine_link *l)
{
    tn__dp *dp;
    tn_status s = tn__dp_new(l, &dp);
    if (s != TN_OK)
        return s;
    hdr h;
    memset(&h, 0, sizeof h);
    h.state = ST_DONE;
    memcpy(dp->hdr_send, &h, sizeof h); /* no bytes for anyone; events still coming in are dropped */
    bool moved;
    if (!exchange(dp, &moved))
        s = TN_ERR_IO;
    tn__dp_free(dp);
    return s;
}

/* ==========================================================================
 * Rank 0: routing
 * ======================================================================== */

int32_t tn__dp_pick(tn__dp *dp, int32_t local_live, int32_t local_waiting, int32_t local_free_blocks,
                    int32_t max_waiting)
{
    if (dp->l.rank != 0)
        return 0;
    const int32_t S = dp->l.size;
    pthread_mutex_lock(&dp->mu);
    int32_t best = -1, best_load = 0, best_free = 0;
    for (int32_t k = 0; k < S; k++) {
        int32_t r = (dp->rr + k) % S;
        int32_t load = r == 0 ? local_live : dp->live[r];
        int32_t free_b = r == 0 ? local_free_blocks : dp->rst[r].kv_blocks_total - dp->rst[r].kv_blocks_used;
        /* Queued there, as far as rank 0 knows: what it routed and has not
         * seen finish, less what was running at the last round. */
        int32_t waiting = r == 0 ? local_waiting : load - dp->rst[r].n_running;
        if (waiting >= max_waiting)
            continue;
        if (best < 0 || load < best_load || (load == best_load && free_b > best_free)) {
            best = r;
            best_load = load;
            best_free = free_b;
        }
    }
    if (best < 0) { /* every rank's queue is full */
        pthread_mutex_unlock(&dp->mu);
        return -1;
    }
    dp->rr = (best + 1) % S;
    dp->routed[best]++;
    pthread_mutex_unlock(&dp->mu);
    return best;
}

tn_status tn__dp_submit(tn__dp *dp, tn_engine *e, int32_t rank, uint64_t id, const tn_request_params *r,
                        tn_engine_cb cb, void *user)
{
    req_wire w;
    memset(&w, 0, sizeof w);
    w.id = id;
    w.n_prompt = r->n_prompt;
    w.max_tokens = r->max_tokens;
    w.n_stop = r->n_stop_tokens;
    w.top_logprobs = r->top_logprobs;
    w.n_bias = r->n_logit_bias;
    w.ignore_eos = r->ignore_eos;
    w.prompt_logprobs = r->prompt_logprobs;
    w.timeout_s = r->timeout_s;
    w.sample = r->sample;
    size_t body = sizeof w + ((size_t)w.n_prompt + (size_t)w.n_stop + 2 * (size_t)w.n_bias) * 4;
    pthread_mutex_lock(&dp->mu);
    if (dp->n_rem == dp->cap_rem) {
        int32_t cap = dp->cap_rem ? 2 * dp->cap_rem : 64;
        remote *g = realloc(dp->rem, (size_t)cap * sizeof *g);
        if (!g) {
            dp->routed[rank]--;
            pthread_mutex_unlock(&dp->mu);
            return tn__err(TN_ERR_NOMEM, "engine: out of memory for a request on rank %d", (int)rank);
        }
        dp->rem = g;
        dp->cap_rem = cap;
    }
    dbuf *b = &dp->out[rank];
    if (!rec_begin(b, REC_REQ, body)) {
        dp->routed[rank]--;
        pthread_mutex_unlock(&dp->mu);
        return tn__err(TN_ERR_NOMEM, "engine: out of memory for a request of %d tokens for rank %d", r->n_prompt,
                       (int)rank);
    }
    dbuf_put(b, &w, sizeof w);
    dbuf_put(b, r->prompt, (size_t)w.n_prompt * 4);
    dbuf_put(b, r->stop_tokens, (size_t)w.n_stop * 4);
    dbuf_put(b, r->logit_bias_ids, (size_t)w.n_bias * 4);
    dbuf_put(b, r->logit_bias, (size_t)w.n_bias * 4);
    rec_pad(b, body);
    dp->rem[dp->n_rem++] = (remote){.id = id, .rank = rank, .cb = cb, .user = user};
    dp->live[rank]++;
    pthread_mutex_unlock(&dp->mu);
    tn__engine_wake(e);
    return TN_OK;
}

bool tn__dp_cancel(tn__dp *dp, tn_engine *e, uint64_t id)
{
    if (dp->l.rank != 0)
        return false;
    pthread_mutex_lock(&dp->mu);
    int32_t rank = -1;
    for (int32_t i = 0; i < dp->n_rem && rank < 0; i++)
        if (dp->rem[i].id == id)
            rank = dp->rem[i].rank;
    bool queued = false;
    if (rank > 0 && rec_begin(&dp->out[rank], REC_CANCEL, sizeof id)) {
        dbuf_put(&dp->out[rank], &id, sizeof id);
        queued = true;
    }
    pthread_mutex_unlock(&dp->mu);
    if (rank > 0 && !queued)
        tn_log(TN_LOG_ERROR, "engine: out of memory: cancel of request %llu on rank %d dropped\n",
               (unsigned long long)id, (int)rank);
    if (queued)
        tn__engine_wake(e);
    return rank > 0;
}

int32_t tn__dp_remote_live(tn__dp *dp)
{
    pthread_mutex_lock(&dp->mu);
    int32_t n = dp->n_rem;
    pthread_mutex_unlock(&dp->mu);
    return n;
}

int32_t tn__dp_rank_stats(tn__dp *dp, const tn_engine_stats *local, int32_t local_live, tn_engine_rank_stats *out,
                          int32_t max)
{
    int32_t n = dp->l.rank == 0 ? dp->l.size : 1;
    pthread_mutex_lock(&dp->mu);
    for (int32_t r = 0; r < TN_MIN(max, n); r++) {
        out[r].st = r == 0 ? *local : dp->rst[r];
        out[r].n_live = r == 0 ? local_live : dp->live[r];
        out[r].n_routed = dp->l.rank == 0 ? dp->routed[r] : 0;
    }
    pthread_mutex_unlock(&dp->mu);
    return n;
}

void tn__dp_fail(tn__dp *dp, const char *why)
{
    char msg[700];
    snprintf(msg, sizeof msg, "forward step: %s", why);
    dp->l.fail(dp->l.ud, msg);
}

void tn__dp_add_stats(tn__dp *dp, tn_engine_stats *out)
{
    pthread_mutex_lock(&dp->mu);
    for (int32_t r = 1; r < dp->l.size; r++) {
        const tn_engine_stats *o = &dp->rst[r];
        out->n_running += o->n_running;
        out->n_waiting += o->n_waiting;
        out->kv_blocks_total += o->kv_blocks_total;
        out->kv_blocks_used += o->kv_blocks_used;
        out->prefix_queries += o->prefix_queries;
        out->prefix_hits += o->prefix_hits;
        out->n_preemptions += o->n_preemptions;
        out->prompt_tokens += o->prompt_tokens;
        out->generated_tokens += o->generated_tokens;
        out->n_steps += o->n_steps;
        out->n_empty_steps += o->n_empty_steps;
    }
    pthread_mutex_unlock(&dp->mu);
}

void tn__dp_wait_done(tn__dp *dp)
{
    pthread_mutex_lock(&dp->mu);
    while (!dp->done)
        pthread_cond_wait(&dp->done_cv, &dp->mu);
    pthread_mutex_unlock(&dp->mu);
}
