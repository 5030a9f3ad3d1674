/*
 * perplexity.c — windows, scoring, the TNLOGITS file and the KL comparison
 * (see perplexity.h).
 *
 * TNLOGITS (version 1; little-endian; docs/formats.md has the same table)
 *
 *   offset  size                    field
 *   0       8                       magic "TNLOGITS"
 *   8       4                       u32 version = 1
 *   12      4                       u32 n_vocab
 *   16      4                       u32 n_ctx (window)
 *   20      4                       u32 n_chunks (windows)
 *   24      4                       u32 first: first scored position (n_ctx / 2)
 *   28      4                       u32 n_scored: scored positions per window (n_ctx - 1 - first)
 *   32      4 * n_chunks * n_ctx    i32 tokens of the windows, as tokenized (before the BOS substitution)
 *   ...     n_chunks * n_scored rows of (8 + 2 * n_vocab) bytes, window by window, position by position:
 *             f32 lo, f32 step, u16 q[n_vocab]        log p(token i) = lo + step * q[i]
 *
 * ROW ENCODING. A row is the log-softmax of the logits at one scored
 * position. hi is its maximum (<= 0, the most likely token) and lo =
 * max(minimum, hi - 32): probabilities below e^-32 of the top one (1e-14)
 * carry nothing a KL divergence could see, so they are clamped to lo. The
 * range is cut into 65535 steps of at most 32 / 65535 = 4.9e-4 nats, so a
 * probability is stored within 0.025 % of its value: 2 bytes per vocabulary
 * entry, half of F32 and far more accurate than F16 for the small
 * probabilities (F16 near -20 has steps of 1/64 nat).
 *
 * THE COMPARISON. A later run rounds its own log-probabilities to the base
 * row's grid (lo, step) before comparing, so both sides have the same
 * resolution and identical models give exactly KL 0, 100 % top-1 and Δp 0;
 * for different models the rounding errors of nearby values are the same on
 * both sides and mostly cancel. Our side is not clamped to the base's range
 * (compare_row says why).
 */
#include "compress/perplexity.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TNLOGITS_MAGIC "TNLOGITS"
#define TNLOGITS_VERSION 1u
#define TNLOGITS_HEADER 32
#define LP_RANGE 32.0f

typedef struct logits_header {
    uint32_t n_vocab, n_ctx, n_chunks, first, n_scored;
} logits_header;

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Log-softmax of n logits into lp (double sums: the row is long). */
static void log_softmax(const float *x, int32_t n, float *lp)
{
    float mx = x[0];
    for (int32_t i = 1; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    double s = 0.0;
    for (int32_t i = 0; i < n; i++)
        s += exp((double)x[i] - mx);
    double lse = mx + log(s);
    for (int32_t i = 0; i < n; i++)
        lp[i] = (float)((double)x[i] - lse);
}

/* The grid of a row: lo and step (see ROW ENCODING). */
static void row_grid(const float *lp, int32_t n, float *lo, float *step)
{
    float hi = lp[0], mn = lp[0];
    for (int32_t i = 1; i < n; i++) {
        hi = lp[i] > hi ? lp[i] : hi;
        mn = lp[i] < mn ? lp[i] : mn;
    }
    *lo = mn > hi - LP_RANGE ? mn : hi - LP_RANGE;
    float s = (hi - *lo) / 65535.0f;
    *step = s > 0.0f ? s : 1e-9f;
}

static void row_encode(const float *lp, int32_t n, float lo, float step, uint16_t *q)
{
    for (int32_t i = 0; i < n; i++) {
        float v = roundf((lp[i] - lo) / step);
        q[i] = (uint16_t)(v < 0.0f ? 0.0f : v > 65535.0f ? 65535.0f : v);
    }
}

/* --- the run --------------------------------------------------------------- */

typedef struct ppl_state {
    int32_t *tokens;    /* (n_tokens) the tokenized text */
    int32_t *win;       /* (n_ctx) one window, BOS substituted */
    int32_t *pos, *seq; /* (n_batch) */
    bool *want;         /* (n_ctx) */
    float *logits;      /* (n_scored, n_vocab) */
    float *lp;          /* (n_vocab) */
    unsigned char *row; /* (8 + 2 n_vocab) encoded row, ours */
    unsigned char *brow;/* (8 + 2 n_vocab) the base's row */
    uint16_t *qc;       /* (n_vocab) ours on the base grid */
    double *kl;         /* (n_chunks * n_scored) */
    int32_t *base_tokens;
    tn_kv_cache *kv;
    tn_forward *fwd;
    FILE *save, *base;
} ppl_state;

static void state_free(ppl_state *s)
{
    free(s->tokens);
    free(s->win);
    free(s->pos);
    free(s->seq);
    free(s->want);
    free(s->logits);
    free(s->lp);
    free(s->row);
    free(s->brow);
    free(s->qc);
    free(s->kl);
    free(s->base_tokens);
    tn_forward_free(s->fwd);
    tn_kv_free(s->kv);
    if (s->base)
        fclose(s->base);
}

static tn_status tokenize_text(const tn_vocab *v, const char *text, size_t len, ppl_state *s, size_t *n_out)
{
    size_t cap = len + 2, n = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        free(s->tokens);
        s->tokens = malloc(cap * sizeof *s->tokens);
        if (!s->tokens)
            return tn__err(TN_ERR_NOMEM, "perplexity: out of memory for %zu tokens", cap);
        tn_status st = tn_tokenize(v, text, len, tn_vocab_add_bos(v), false, s->tokens, cap, &n);
        if (st == TN_OK)
            break;
        if (st != TN_ERR_FULL || attempt == 1)
            return tn__err_prefix(st, "perplexity: tokenizing the text");
        cap = n;
    }
    *n_out = n;
    return TN_OK;
}

/* Reads and checks the base file's header; fills h. */
static tn_status read_base_header(const char *path, FILE *f, logits_header *h)
{
    unsigned char b[TNLOGITS_HEADER];
    if (fread(b, 1, sizeof b, f) != sizeof b)
        return tn__err(TN_ERR_FORMAT, "perplexity: %s: too short for a TNLOGITS header (%d bytes)", path,
                       TNLOGITS_HEADER);
    if (memcmp(b, TNLOGITS_MAGIC, 8) != 0)
        return tn__err(TN_ERR_FORMAT, "perplexity: %s: not a TNLOGITS file (bad magic at offset 0)", path);
    uint32_t ver = get_u32(b + 8);
    if (ver != TNLOGITS_VERSION)
        return tn__err(TN_ERR_FORMAT, "perplexity: %s: TNLOGITS version %u, this build reads %u", path, ver,
                       TNLOGITS_VERSION);
    h->n_vocab = get_u32(b + 12);
    h->n_ctx = get_u32(b + 16);
    h->n_chunks = get_u32(b + 20);
    h->first = get_u32(b + 24);
    h->n_scored = get_u32(b + 28);
    if (h->n_ctx < 4 || h->n_ctx > (1u << 24) || h->first != h->n_ctx / 2 || h->n_scored != h->n_ctx - 1 - h->first ||
        h->n_chunks == 0 || h->n_chunks > (1u << 24) || h->n_vocab == 0 || h->n_vocab > (1u << 24))
        return tn__err(TN_ERR_FORMAT,
                       "perplexity: %s: inconsistent header (n_vocab %u, n_ctx %u, n_chunks %u, first %u, "
                       "n_scored %u)",
                       path, h->n_vocab, h->n_ctx, h->n_chunks, h->first, h->n_scored);
    return TN_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile of sorted[0..n) with linear interpolation. */
static double quantile(const double *sorted, int64_t n, double q)
{
    double idx = q * (double)(n - 1);
    int64_t i = (int64_t)idx;
    if (i >= n - 1)
        return sorted[n - 1];
    double f = idx - (double)i;
    return sorted[i] * (1.0 - f) + sorted[i + 1] * f;
}

/* Compares one scored position: our log-probs s->lp against the base row
 * s->brow; tok is the correct next token. Ours are rounded to the base
 * row's grid but NOT clamped to its range: a token this model rates above
 * the base's top log-prob (or below its floor) keeps its value. Clamping
 * it (as the file's encoding must) dropped exactly the negative terms
 * p·(lb - lc) of the likeliest tokens and biased the mean KL upwards, by
 * 1.4x at KL 4e-3 and 14x at 5e-5 on simulated rows (the bias that made
 * tern's KL read ~3x llama-perplexity's). */
/* Each position's KL, one line each, in scoring order. */
static tn_status write_kl(const char *path, const double *kl, int64_t count)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return tn__err(TN_ERR_IO, "perplexity: cannot create %s", path);
    bool ok = true;
    for (int64_t i = 0; i < count && ok; i++)
        ok = fprintf(f, "%.9g\n", kl[i]) > 0;
    if (fclose(f) != 0 || !ok) {
        remove(path);
        return tn__err(TN_ERR_IO, "perplexity: cannot write %s", path);
    }
    return TN_OK;
}

static void compare_row(const ppl_state *s, int32_t n_vocab, int32_t tok, double *kl, bool *same_top, double *dp,
                        double *base_nll)
{
    float lo, step;
    memcpy(&lo, s->brow, 4);
    memcpy(&step, s->brow + 4, 4);
    const unsigned char *bq = s->brow + 8;
    double sum = 0.0;
    int32_t top_b = 0, top_c = 0;
    uint16_t max_b = 0;
    double max_c = 0.0;
    for (int32_t i = 0; i < n_vocab; i++) {
        const uint16_t qb = (uint16_t)(bq[2 * i] | bq[2 * i + 1] << 8);
        double qc = (double)roundf((s->lp[i] - lo) / step);
        if (qb == 0 && qc < 0.0)
            qc = 0.0; /* both below the base's floor (e^-32 of its top): nothing to see */
        if (qb > max_b || i == 0) {
            max_b = qb;
            top_b = i;
        }
        if (qc > max_c || i == 0) {
            max_c = qc;
            top_c = i;
        }
        const double lb = (double)lo + (double)step * qb, lc = (double)lo + (double)step * qc;
        if (qb != qc)
            sum += exp(lb) * (lb - lc);
        if (i == tok) {
            *dp = exp(lc) - exp(lb);
            *base_nll = -lb;
        }
    }
    *kl = sum;
    *same_top = top_b == top_c;
}

tn_status tn_perplexity(const tn_model *m, const tn_vocab *v, tn_pool *pool, const char *text, size_t len,
                        const tn_ppl_opts *o, tn_ppl_result *r)
{
    ppl_state s = {0};
    tn_status st = TN_OK;
    memset(r, 0, sizeof *r);
    double t0 = tn_time_s();
    const int32_t n_vocab = m->hp.n_vocab;
    logits_header bh = {0};

    if (o->kl_out && !o->kl_base)
        return tn__err(TN_ERR_INVALID, "perplexity: a per-position KL file (%s) needs a base run to compare with",
                       o->kl_out);
    if (o->kl_base) {
        s.base = fopen(o->kl_base, "rb");
        if (!s.base)
            return tn__err(TN_ERR_IO, "perplexity: cannot open the base file %s", o->kl_base);
        if ((st = read_base_header(o->kl_base, s.base, &bh)) != TN_OK)
            goto out;
        if (bh.n_vocab != (uint32_t)n_vocab) {
            st = tn__err(TN_ERR_FORMAT, "perplexity: %s has a vocabulary of %u, the model %d", o->kl_base,
                         bh.n_vocab, (int)n_vocab);
            goto out;
        }
        if (o->n_ctx && (uint32_t)o->n_ctx != bh.n_ctx) {
            st = tn__err(TN_ERR_FORMAT, "perplexity: %s was made with --ctx %u, not %d", o->kl_base, bh.n_ctx,
                         (int)o->n_ctx);
            goto out;
        }
        if (o->n_chunks && (uint32_t)o->n_chunks > bh.n_chunks) {
            st = tn__err(TN_ERR_FORMAT, "perplexity: %s holds %u windows, %d asked", o->kl_base, bh.n_chunks,
                         (int)o->n_chunks);
            goto out;
        }
    }
    const int32_t n_ctx = o->n_ctx ? o->n_ctx : o->kl_base ? (int32_t)bh.n_ctx : 512;
    if (n_ctx < 4 || n_ctx > (1 << 24)) {
        st = tn__err(TN_ERR_INVALID, "perplexity: window of %d tokens: want 4 or more", (int)n_ctx);
        goto out;
    }
    const int32_t first = n_ctx / 2, n_scored = n_ctx - 1 - first;

    size_t n_tok = 0;
    if ((st = tokenize_text(v, text, len, &s, &n_tok)) != TN_OK)
        goto out;
    if (n_tok < (size_t)n_ctx) {
        st = tn__err(TN_ERR_INVALID,
                     "perplexity: the text has %zu tokens, fewer than one window of %d (use a longer text or a "
                     "smaller --ctx)",
                     n_tok, (int)n_ctx);
        goto out;
    }
    int64_t n_fit = (int64_t)(n_tok / (size_t)n_ctx);
    int32_t n_chunks = o->n_chunks ? o->n_chunks : o->kl_base ? (int32_t)bh.n_chunks : (int32_t)TN_MIN(n_fit, INT32_MAX);
    if (n_chunks < 0 || n_chunks > n_fit) {
        st = tn__err(TN_ERR_INVALID, "perplexity: %d windows of %d asked, the text (%zu tokens) has %" PRId64,
                     (int)n_chunks, (int)n_ctx, n_tok, n_fit);
        goto out;
    }
    if (o->kl_base) {
        size_t nb = (size_t)bh.n_chunks * bh.n_ctx;
        s.base_tokens = malloc(nb * sizeof *s.base_tokens);
        if (!s.base_tokens) {
            st = tn__err(TN_ERR_NOMEM, "perplexity: out of memory for %zu base tokens", nb);
            goto out;
        }
        for (size_t i = 0; i < nb; i++) {
            unsigned char b[4];
            if (fread(b, 1, 4, s.base) != 4) {
                st = tn__err(TN_ERR_FORMAT, "perplexity: %s: truncated in the token table (token %zu)", o->kl_base,
                             i);
                goto out;
            }
            s.base_tokens[i] = (int32_t)get_u32(b);
        }
        for (size_t i = 0; i < (size_t)n_chunks * (size_t)n_ctx; i++) {
            if (s.base_tokens[i] != s.tokens[i]) {
                st = tn__err(TN_ERR_FORMAT,
                             "perplexity: %s was made from another text or tokenizer: token %zu is %d there, %d here",
                             o->kl_base, i, (int)s.base_tokens[i], (int)s.tokens[i]);
                goto out;
            }
        }
    }

    const int32_t n_batch = o->n_batch > 0 ? TN_MIN(o->n_batch, n_ctx) : TN_MIN(n_ctx, 512);
    const size_t row_bytes = 8 + 2 * (size_t)n_vocab;
    s.win = malloc((size_t)n_ctx * sizeof *s.win);
    s.pos = malloc((size_t)n_batch * sizeof *s.pos);
    s.seq = calloc((size_t)n_batch, sizeof *s.seq);
    s.want = malloc((size_t)n_ctx * sizeof *s.want);
    s.logits = malloc((size_t)n_scored * (size_t)n_vocab * sizeof *s.logits);
    s.lp = malloc((size_t)n_vocab * sizeof *s.lp);
    s.row = malloc(row_bytes);
    s.brow = malloc(row_bytes);
    s.qc = malloc((size_t)n_vocab * sizeof *s.qc);
    s.kl = o->kl_base ? malloc((size_t)n_chunks * (size_t)n_scored * sizeof *s.kl) : NULL;
    if (!s.win || !s.pos || !s.seq || !s.want || !s.logits || !s.lp || !s.row || !s.brow || !s.qc ||
        (o->kl_base && !s.kl)) {
        st = tn__err(TN_ERR_NOMEM, "perplexity: out of memory for a window of %d x %d logits", (int)n_scored,
                     (int)n_vocab);
        goto out;
    }
    if ((st = tn_kv_new_typed(m, n_ctx, 1, o->kv_type, &s.kv)) != TN_OK || (st = tn_forward_new(m, n_batch, &s.fwd)) != TN_OK)
        goto out;
    for (int32_t j = 0; j < n_ctx; j++)
        s.want[j] = j >= first && j < n_ctx - 1;

    if (o->save_logits) {
        s.save = fopen(o->save_logits, "wb");
        if (!s.save) {
            st = tn__err(TN_ERR_IO, "perplexity: cannot create %s", o->save_logits);
            goto out;
        }
        unsigned char h[TNLOGITS_HEADER];
        memcpy(h, TNLOGITS_MAGIC, 8);
        put_u32(h + 8, TNLOGITS_VERSION);
        put_u32(h + 12, (uint32_t)n_vocab);
        put_u32(h + 16, (uint32_t)n_ctx);
        put_u32(h + 20, (uint32_t)n_chunks);
        put_u32(h + 24, (uint32_t)first);
        put_u32(h + 28, (uint32_t)n_scored);
        bool ok = fwrite(h, 1, sizeof h, s.save) == sizeof h;
        for (size_t i = 0; ok && i < (size_t)n_chunks * (size_t)n_ctx; i++) {
            unsigned char b[4];
            put_u32(b, (uint32_t)s.tokens[i]);
            ok = fwrite(b, 1, 4, s.save) == 4;
        }
        if (!ok) {
            st = tn__err(TN_ERR_IO, "perplexity: cannot write %s", o->save_logits);
            goto out;
        }
    }
    if (o->kl_base) {
        /* skip the rest of the base's token table */
        long skip = (long)((size_t)(bh.n_chunks) * bh.n_ctx * 4);
        if (fseek(s.base, TNLOGITS_HEADER + skip, SEEK_SET) != 0) {
            st = tn__err(TN_ERR_IO, "perplexity: cannot seek in %s", o->kl_base);
            goto out;
        }
    }

    double nll = 0.0, nll2 = 0.0, base_nll = 0.0, top1 = 0.0, dp = 0.0, dp2 = 0.0;
    int64_t count = 0;
    const int32_t bos = tn_vocab_bos(v);
    for (int32_t c = 0; c < n_chunks; c++) {
        const int32_t *ct = s.tokens + (size_t)c * (size_t)n_ctx;
        memcpy(s.win, ct, (size_t)n_ctx * sizeof *s.win);
        if (tn_vocab_add_bos(v) && bos >= 0)
            s.win[0] = bos;
        tn_kv_clear(s.kv);
        float *out = s.logits;
        for (int32_t b0 = 0; b0 < n_ctx; b0 += n_batch) {
            int32_t nb = TN_MIN(n_batch, n_ctx - b0), n_want = 0;
            for (int32_t i = 0; i < nb; i++) {
                s.pos[i] = b0 + i;
                n_want += s.want[b0 + i];
            }
            tn_batch batch = {.n_tokens = nb,
                              .token = s.win + b0,
                              .pos = s.pos,
                              .seq_id = s.seq,
                              .kv_slot = s.pos,
                              .want_logits = s.want + b0};
            if ((st = tn_forward_run(s.fwd, s.kv, pool, &batch, out)) != TN_OK) {
                tn__err_prefix(st, "perplexity: window %d", (int)c);
                goto out;
            }
            out += (size_t)n_want * (size_t)n_vocab;
        }
        for (int32_t k = 0; k < n_scored; k++) {
            int32_t tok = ct[first + k + 1];
            log_softmax(s.logits + (size_t)k * (size_t)n_vocab, n_vocab, s.lp);
            double l = -(double)s.lp[tok];
            nll += l;
            nll2 += l * l;
            if (s.save) {
                float lo, step;
                row_grid(s.lp, n_vocab, &lo, &step);
                memcpy(s.row, &lo, 4);
                memcpy(s.row + 4, &step, 4);
                uint16_t *q = s.qc;
                row_encode(s.lp, n_vocab, lo, step, q);
                for (int32_t i = 0; i < n_vocab; i++) {
                    s.row[8 + 2 * i] = (unsigned char)(q[i] & 0xff);
                    s.row[8 + 2 * i + 1] = (unsigned char)(q[i] >> 8);
                }
                if (fwrite(s.row, 1, row_bytes, s.save) != row_bytes) {
                    st = tn__err(TN_ERR_IO, "perplexity: cannot write %s", o->save_logits);
                    goto out;
                }
            }
            if (s.base) {
                if (fread(s.brow, 1, row_bytes, s.base) != row_bytes) {
                    st = tn__err(TN_ERR_FORMAT, "perplexity: %s: truncated at window %d, position %d", o->kl_base,
                                 (int)c, (int)(first + k));
                    goto out;
                }
                double kl = 0, d = 0, bn = 0;
                bool same = false;
                compare_row(&s, n_vocab, tok, &kl, &same, &d, &bn);
                s.kl[count] = kl;
                top1 += same;
                dp += d;
                dp2 += d * d;
                base_nll += bn;
            }
            count++;
        }
        if (o->progress)
            o->progress(o->progress_ud, c + 1, n_chunks, exp(nll / (double)count));
    }

    r->n_ctx = n_ctx;
    r->n_chunks = n_chunks;
    r->n_tokens_text = (int32_t)TN_MIN(n_tok, INT32_MAX);
    r->n_scored = count;
    if (count > 0) {
        double mean = nll / (double)count, var = nll2 / (double)count - mean * mean;
        r->nll = mean;
        r->ppl = exp(mean);
        r->ppl_err = count > 1 && var > 0 ? r->ppl * sqrt(var / (double)(count - 1)) : 0.0;
    }
    if (s.base && count > 0) {
        r->has_kl = true;
        double sum = 0.0, sum2 = 0.0;
        for (int64_t i = 0; i < count; i++) {
            sum += s.kl[i];
            sum2 += s.kl[i] * s.kl[i];
        }
        r->kl_mean = sum / (double)count;
        double var = sum2 / (double)count - r->kl_mean * r->kl_mean;
        r->kl_err = count > 1 && var > 0 ? sqrt(var / (double)(count - 1)) : 0.0;
        if (o->kl_out && (st = write_kl(o->kl_out, s.kl, count)) != TN_OK)
            goto out;
        qsort(s.kl, (size_t)count, sizeof *s.kl, cmp_double);
        r->kl_median = quantile(s.kl, count, 0.5);
        r->kl_p99 = quantile(s.kl, count, 0.99);
        r->kl_p999 = quantile(s.kl, count, 0.999);
        r->kl_max = s.kl[count - 1];
        r->top1 = top1 / (double)count;
        r->dp_mean = dp / (double)count;
        r->dp_rms = sqrt(dp2 / (double)count);
        r->base_ppl = exp(base_nll / (double)count);
    }
    r->seconds = tn_time_s() - t0;

out:
    if (s.save) {
        if (fclose(s.save) != 0 && st == TN_OK)
            st = tn__err(TN_ERR_IO, "perplexity: cannot write %s", o->save_logits);
        if (st != TN_OK)
            remove(o->save_logits);
        s.save = NULL;
    }
    state_free(&s);
    return st;
}
