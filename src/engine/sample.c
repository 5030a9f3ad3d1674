/*
 * sample.c — the sampler: penalties, top-k, top-p, min-p, temperature and a
 * seeded draw, turning one row of logits into the next token.
 *
 * Key idea: never sort the vocabulary. Every truncation in the chain keeps a
 * *prefix* of the tokens ordered by logit (descending; ties by id), so each
 * can be found without ordering the rest: top-k with a k-element heap fed
 * only by the blocks whose SIMD maximum can enter it, min-p with one
 * threshold comparison per token, top-p with a histogram of probability
 * mass by float exponent (to drop the tail) and a quickselect that
 * partitions by logit and recurses only into the side where the nucleus
 * boundary lies (expected O(n), see the essays above prefilter_by_mass and
 * find_nucleus). The per-token loops (max, exp, sums) are written to
 * vectorize. All scratch (a copy of the logits for penalties, weights, the
 * candidate array, the penalty history) is sized in tn_sampler_new;
 * tn_sampler_sample never allocates.
 */
#include "engine/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* =========================================================================
 * RNG: xoshiro256** (Blackman & Vigna), state seeded by splitmix64.
 * ====================================================================== */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* Seeds r: its four state words are the first four outputs of splitmix64
 * started at seed (never all zero, whatever the seed). */
void tn_rng_seed(tn_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

/* The next 64 random bits; advances the state. */
uint64_t tn_rng_next(tn_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* Uniform in [0, 1): the top 53 bits of the next output times 2^-53. */
double tn_rng_uniform(tn_rng *r) { return (double)(tn_rng_next(r) >> 11) * 0x1.0p-53; }

/* =========================================================================
 * Sampler state
 * ====================================================================== */

/* A candidate token: its (penalized) logit, its weight (see weights()) and
 * its id. */
typedef struct cand {
    float logit;
    float w;
    int32_t id;
} cand;

struct tn_sampler {
    tn_sample_params p;
    int32_t n_vocab;
    tn_rng rng;

    /* Penalty history. count[t] is how often t occurs in the window;
     * present[0..n_present) lists the tokens with count > 0 (in no
     * particular order) and present_at[t] is t's index there, so penalties
     * cost O(distinct tokens in the window), not O(n_vocab). ring holds the
     * last penalty_last_n accepted tokens (absent when the window is
     * unbounded, penalty_last_n == -1). */
    int32_t *count;      /* (n_vocab) */
    int32_t *present;    /* (n_vocab) */
    int32_t *present_at; /* (n_vocab) */
    int32_t n_present;
    int32_t *ring;       /* (penalty_last_n) or NULL */
    int32_t ring_head;   /* next slot to write */
    int32_t ring_len;

    /* Logit bias (tn_sampler_set_logit_bias): bias_val[i] is added to the
     * logit of token bias_id[i]; an id may repeat (the biases add up). */
    int32_t *bias_id;    /* (n_bias) */
    float *bias_val;     /* (n_bias) */
    int32_t n_bias;

    float *work;         /* (n_vocab) biased, penalized copy of the logits */
    float *wbuf;         /* (n_vocab) weights of the whole vocabulary */
    cand *cand;          /* (n_vocab) candidates */
};

/* Defaults as llama.cpp's: temperature 0.8, top-k 40, top-p 0.95, min-p
 * 0.05, penalties off over a 64-token window, seed 0. */
tn_sample_params tn_sample_params_default(void)
{
    tn_sample_params p = {
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .penalty_last_n = 64,
        .seed = 0,
    };
    return p;
}

/* Allocates a sampler over n_vocab tokens with a copy of *p. Rejects with
 * TN_ERR_INVALID (naming the field) a NaN or non-finite parameter, a
 * repeat_penalty <= 0, penalty_last_n < -1 or n_vocab <= 0. On failure
 * *out is NULL. The sampler belongs to one thread at a time. */
tn_status tn_sampler_new(const tn_sample_params *p, int32_t n_vocab, tn_sampler **out)
{
    *out = NULL;
    if (!p)
        return tn__err(TN_ERR_INVALID, "sample: no parameters");
    if (n_vocab <= 0)
        return tn__err(TN_ERR_INVALID, "sample: n_vocab %d must be positive", (int)n_vocab);
    if (isnan(p->temperature))
        return tn__err(TN_ERR_INVALID, "sample: temperature is NaN");
    if (isnan(p->top_p))
        return tn__err(TN_ERR_INVALID, "sample: top_p is NaN");
    if (isnan(p->min_p))
        return tn__err(TN_ERR_INVALID, "sample: min_p is NaN");
    if (!isfinite(p->repeat_penalty) || p->repeat_penalty <= 0.0f)
        return tn__err(TN_ERR_INVALID, "sample: repeat_penalty %g must be a positive number",
                       (double)p->repeat_penalty);
    if (!isfinite(p->presence_penalty))
        return tn__err(TN_ERR_INVALID, "sample: presence_penalty is not finite");
    if (!isfinite(p->frequency_penalty))
        return tn__err(TN_ERR_INVALID, "sample: frequency_penalty is not finite");
    if (p->penalty_last_n < -1)
        return tn__err(TN_ERR_INVALID, "sample: penalty_last_n %d must be >= -1", (int)p->penalty_last_n);

    tn_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return tn__err(TN_ERR_NOMEM, "sample: out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    size_t n = (size_t)n_vocab;
    s->count = calloc(n, sizeof *s->count);
    s->present = malloc(n * sizeof *s->present);
    s->present_at = malloc(n * sizeof *s->present_at);
    s->work = malloc(n * sizeof *s->work);
    s->wbuf = malloc(n * sizeof *s->wbuf);
    s->cand = malloc(n * sizeof *s->cand);
    if (p->penalty_last_n > 0)
        s->ring = malloc((size_t)p->penalty_last_n * sizeof *s->ring);
    if (!s->count || !s->present || !s->present_at || !s->work || !s->wbuf || !s->cand ||
        (p->penalty_last_n > 0 && !s->ring)) {
        tn_sampler_free(s);
        return tn__err(TN_ERR_NOMEM, "sample: out of memory for a %d-token vocabulary", (int)n_vocab);
    }
    tn_rng_seed(&s->rng, p->seed);
    *out = s;
    return TN_OK;
}

/* Frees the sampler. NULL is a no-op. */
void tn_sampler_free(tn_sampler *s)
{
    if (!s)
        return;
    free(s->count);
    free(s->present);
    free(s->present_at);
    free(s->ring);
    free(s->bias_id);
    free(s->bias_val);
    free(s->work);
    free(s->wbuf);
    free(s->cand);
    free(s);
}

/* Replaces the sampler's logit bias with a copy of (ids[i], bias[i]) for
 * i < n; n == 0 clears it. Rejects with TN_ERR_INVALID (naming the entry)
 * an id outside [0, n_vocab), a non-finite bias or n < 0, leaving the old
 * bias in place; TN_ERR_NOMEM if the copy cannot be allocated. The bias is
 * added, not clamped: -100 (OpenAI's "ban") works as a ban because real
 * logits are far smaller than 100 apart. */
tn_status tn_sampler_set_logit_bias(tn_sampler *s, const int32_t *ids, const float *bias, int32_t n)
{
    if (n < 0 || (n > 0 && (!ids || !bias)))
        return tn__err(TN_ERR_INVALID, "sample: logit_bias of %d entries without arrays", (int)n);
    for (int32_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= s->n_vocab)
            return tn__err(TN_ERR_INVALID, "sample: logit_bias token id %d outside the vocabulary [0, %d)",
                           (int)ids[i], (int)s->n_vocab);
        if (!isfinite(bias[i]))
            return tn__err(TN_ERR_INVALID, "sample: logit_bias for token %d is not finite", (int)ids[i]);
    }
    int32_t *nid = NULL;
    float *nval = NULL;
    if (n > 0) {
        nid = malloc((size_t)n * sizeof *nid);
        nval = malloc((size_t)n * sizeof *nval);
        if (!nid || !nval) {
            free(nid);
            free(nval);
            return tn__err(TN_ERR_NOMEM, "sample: out of memory for a logit_bias of %d entries", (int)n);
        }
        memcpy(nid, ids, (size_t)n * sizeof *nid);
        memcpy(nval, bias, (size_t)n * sizeof *nval);
    }
    free(s->bias_id);
    free(s->bias_val);
    s->bias_id = nid;
    s->bias_val = nval;
    s->n_bias = n;
    return TN_OK;
}

static void count_add(tn_sampler *s, int32_t t)
{
    if (s->count[t]++ == 0) {
        s->present_at[t] = s->n_present;
        s->present[s->n_present++] = t;
    }
}

static void count_remove(tn_sampler *s, int32_t t)
{
    if (--s->count[t] == 0) {
        int32_t i = s->present_at[t];
        int32_t last = s->present[--s->n_present];
        s->present[i] = last;
        s->present_at[last] = i;
    }
}

/* Records token in the penalty window (dropping the oldest token once the
 * window holds penalty_last_n). Ids outside [0, n_vocab) are ignored, as is
 * everything when penalty_last_n is 0. */
void tn_sampler_accept(tn_sampler *s, int32_t token)
{
    if (token < 0 || token >= s->n_vocab || s->p.penalty_last_n == 0)
        return;
    if (s->p.penalty_last_n > 0) {
        if (s->ring_len == s->p.penalty_last_n)
            count_remove(s, s->ring[s->ring_head]);
        else
            s->ring_len++;
        s->ring[s->ring_head] = token;
        s->ring_head = (s->ring_head + 1) % s->p.penalty_last_n;
    }
    count_add(s, token);
}

/* =========================================================================
 * The chain
 * ====================================================================== */

static bool penalties_on(const tn_sampler *s)
{
    return s->p.penalty_last_n != 0 && s->n_present > 0 &&
           (s->p.repeat_penalty != 1.0f || s->p.presence_penalty != 0.0f || s->p.frequency_penalty != 0.0f);
}

/*
 * PENALTIES (llama.cpp's formula). For each token t that occurs c > 0 times
 * in the window:
 *     logit = logit > 0 ? logit / repeat_penalty : logit * repeat_penalty
 *     logit -= c * frequency_penalty + presence_penalty
 * The repetition penalty scales towards "less likely" whatever the sign
 * (dividing a positive logit, multiplying a negative one, for r > 1); the
 * presence penalty is paid once, the frequency penalty per occurrence.
 * Tokens absent from the window are untouched. Penalties come first in the
 * chain, so greedy decoding sees them too.
 */
static void apply_penalties(tn_sampler *s, float *l)
{
    const float r = s->p.repeat_penalty;
    for (int32_t i = 0; i < s->n_present; i++) {
        int32_t t = s->present[i];
        float v = l[t];
        v = v > 0.0f ? v / r : v * r;
        v -= (float)s->count[t] * s->p.frequency_penalty + s->p.presence_penalty;
        l[t] = v;
    }
}


/* =========================================================================
 * Vector helpers: written so that the compiler vectorizes them at -O3
 * without -ffast-math (no branches, integer selects, fixed lanes).
 * ====================================================================== */

#define BLOCK 256 /* elements per block of the blocked scans */

/* Four float lanes and the integer mask a lane compare yields (GCC/Clang
 * vector extensions: SSE2 on x86-64, NEON on AArch64, scalar code elsewhere). */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

/* The largest of x[0..n), ignoring NaN; -inf if there is none. Eight
 * independent lanes in two vectors, each `a > m ? a : m` as a compare and
 * a bitwise select: written as a plain scalar loop over eight lanes, GCC 12
 * -O3 kept it scalar (28 maxss, no packed op). */
static float vec_max(const float *x, int32_t n)
{
    const v4f ninf = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    v4f m0 = ninf, m1 = ninf;
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v4f a, b;
        memcpy(&a, x + i, sizeof a);
        memcpy(&b, x + i + 4, sizeof b);
        const v4i ka = a > m0, kb = b > m1;
        m0 = (v4f)(((v4i)a & ka) | ((v4i)m0 & ~ka));
        m1 = (v4f)(((v4i)b & kb) | ((v4i)m1 & ~kb));
    }
    float m = -INFINITY;
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    for (int j = 0; j < 4; j++) {
        m = m0[j] > m ? m0[j] : m;
        m = m1[j] > m ? m1[j] : m;
    }
    return m;
}

/* Whether any of x[0..n) is above t (NaN never is): one compare and an OR
 * per element, which the compiler vectorizes. */
static bool any_above(const float *x, int32_t n, float t)
{
    int32_t any = 0;
    for (int32_t i = 0; i < n; i++)
        any |= x[i] > t;
    return any != 0;
}

static inline uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/*
 * e^x for x <= 0 (the weight of a logit below the maximum), branch-free so
 * that loops over it vectorize; glibc's expf does not, and is 3-4x slower
 * over a vocabulary. Cephes' expf scheme: x = n ln2 + r with n = round(x /
 * ln2) (by the 1.5 * 2^23 rounding trick, whose low mantissa bits then hold
 * n), |r| <= ln2 / 2, e^r by a degree-7 polynomial, 2^n built in the
 * exponent bits. Relative error below 1e-6. Inputs below -87 (e^-87 ~ 1.6e-38,
 * the edge of normal floats), -inf and NaN give exactly 0.
 */
static inline float exp_nonpos(float x)
{
    const uint32_t lim = 0xc2ae0000u; /* bits of -87.0f; larger bits = more negative */
    uint32_t xb = f2u(x);
    uint32_t keep = (xb > lim || (xb > 0x7f800000u && xb < 0x80000000u)) ? 0u : ~0u;
    float xc = u2f(xb > lim ? lim : xb);
    float t = xc * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    float scale = u2f((f2u(t) - 0x4b400000u + 127u) << 23);
    return u2f(f2u(p * scale) & keep);
}

/* out[i] = exp_nonpos((x[i] - max) * scale) for i < n. */
static void weights(const float *x, int32_t n, float max, float scale, float *out)
{
    for (int32_t i = 0; i < n; i++)
        out[i] = exp_nonpos((x[i] - max) * scale);
}

/* Sum of one block (n <= BLOCK) in 8 float lanes. */
static float block_sum(const float *x, int32_t n)
{
    float acc[8] = {0};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += x[i + j];
    float s = 0.0f;
    for (; i < n; i++)
        s += x[i];
    return s + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Sum of x[0..n): float within blocks, double across them. */
static double vec_sum(const float *x, int32_t n)
{
    double s = 0.0;
    for (int32_t b = 0; b < n; b += BLOCK)
        s += block_sum(x + b, TN_MIN(BLOCK, n - b));
    return s;
}

/* =========================================================================
 * The chain
 * ====================================================================== */

/* a ranks before b: higher logit first, then lower id. */
static inline bool ranks_before(cand a, cand b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); }

/* Argmax, ties to the lowest id; NaN never wins; 0 if nothing is above
 * -inf. Blocked: a block is only compared against the best so far (any
 * element above it?), and its max taken when one is, so the first block
 * holding the maximum is found with one compare per element and a few
 * block maxima (a new best is rare after the first blocks); then one scan
 * of that block finds its first occurrence. This is the whole of the
 * engine's per-step host work at temperature 0 (docs/serve.md). */
static int32_t argmax(const float *l, int32_t n)
{
    float best = -INFINITY;
    int32_t from = 0;
    for (int32_t b = 0; b < n; b += BLOCK) {
        const int32_t len = TN_MIN(BLOCK, n - b);
        if (!any_above(l + b, len, best))
            continue;
        best = vec_max(l + b, len);
        from = b;
    }
    if (!(best > -INFINITY))
        return 0;
    for (int32_t i = from; i < n; i++)
        if (l[i] == best)
            return i;
    return 0;
}

/* Min-heap on rank: h[0] is the candidate that ranks last. */
static void heap_sift_down(cand *h, int32_t n, int32_t i)
{
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && ranks_before(h[c], h[c + 1]))
            c++;
        if (!ranks_before(h[i], h[c]))
            return;
        cand t = h[i];
        h[i] = h[c];
        h[c] = t;
        i = c;
    }
}

static void heap_push(cand *h, int32_t j, cand c)
{
    h[j] = c;
    while (j > 0) {
        int32_t parent = (j - 1) / 2;
        if (!ranks_before(h[parent], h[j]))
            break;
        cand t = h[parent];
        h[parent] = h[j];
        h[j] = t;
        j = parent;
    }
}

/*
 * TOP-K by a bounded heap. The first k finite logits fill a min-heap whose
 * root is the weakest kept candidate; a later token enters only if it ranks
 * before the root (replace the root, sift down: O(log k)). Once the heap is
 * full, whole blocks are skipped when their (vectorized) maximum does not
 * exceed the root's logit: a token scanned later has a larger id than every
 * token in the heap, so an equal logit cannot rank before the root. For
 * real logits nearly every block is skipped, so the scan runs at the speed
 * of a SIMD max. The heap is then sorted in place (heapsort), best first.
 * -inf and NaN logits are never candidates. Returns the number kept (< k
 * when fewer finite logits exist).
 */
static int32_t select_top_k(const float *l, int32_t n, int32_t k, cand *h)
{
    int32_t m = 0, i = 0;
    for (; i < n && m < k; i++)
        if (l[i] > -INFINITY)
            heap_push(h, m++, (cand){l[i], 0.0f, i});
    while (i < n) {
        int32_t end = TN_MIN(i + 64, n);
        if (vec_max(l + i, end - i) > h[0].logit) {
            for (; i < end; i++) {
                cand c = {l[i], 0.0f, i};
                if (c.logit > -INFINITY && ranks_before(c, h[0])) {
                    h[0] = c;
                    heap_sift_down(h, m, 0);
                }
            }
        }
        i = end;
    }
    /* heapsort: repeatedly move the weakest to the end -> best first */
    for (int32_t end = m - 1; end > 0; end--) {
        cand t = h[0];
        h[0] = h[end];
        h[end] = t;
        heap_sift_down(h, end, 0);
    }
    return m;
}

static void swap_cand(cand *a, cand *b)
{
    cand t = *a;
    *a = *b;
    *b = t;
}

/*
 * TOP-P (nucleus) WITHOUT SORTING, by quickselect on probability mass.
 *
 * WHAT: given candidates c[0..m) in any order, each with its weight w (its
 * temperature-1 probability times a common factor), and a target mass
 * `need` (top_p times the total weight of the distribution top-p is defined
 * over), reorder c so that its first `cut` entries are the nucleus: the
 * smallest prefix of the rank order (logit descending, id ascending) whose
 * weight reaches `need`. Returns cut. The nucleus is left in no particular
 * (but deterministic) order.
 *
 * HOW IT WORKS. Keep a window [lo, hi) that contains the boundary; every
 * entry left of lo ranks before every entry in the window and belongs to
 * the nucleus, and `need` is what the window must still contribute. Pick a
 * pivot (median of three by rank), partition the window into "ranks before
 * the pivot" | pivot | "ranks after", and sum the weight W of the first
 * part. Then:
 *   - W >= need: the boundary is inside the first part; hi = pivot index.
 *   - W + w(pivot) >= need: the nucleus ends at the pivot; done.
 *   - else everything up to the pivot is in; need -= W + w(pivot) and the
 *     window becomes the part after the pivot.
 * Each round touches only the window, which shrinks geometrically on
 * average: expected O(m) in total, against O(m log m) for a sort. Small
 * windows are finished by insertion sort and a scan.
 *
 * EDGE CASES. Ranks are a strict order (ids are distinct), so equal logits
 * cannot make partitioning loop. If rounding leaves `need` unreached after
 * the last entry, the whole array is the nucleus. need <= 0 keeps only the
 * best candidate (the nucleus is never empty).
 */
static int32_t find_nucleus(cand *c, int32_t m, double need)
{
    int32_t lo = 0, hi = m;
    while (hi - lo > 16) {
        int32_t mid = lo + (hi - lo) / 2;
        /* median of three by rank, moved to hi - 1 */
        if (ranks_before(c[mid], c[lo]))
            swap_cand(&c[mid], &c[lo]);
        if (ranks_before(c[hi - 1], c[lo]))
            swap_cand(&c[hi - 1], &c[lo]);
        if (ranks_before(c[mid], c[hi - 1]))
            swap_cand(&c[mid], &c[hi - 1]);
        cand pivot = c[hi - 1];
        int32_t q = lo;
        double w_before = 0.0;
        for (int32_t i = lo; i < hi - 1; i++)
            if (ranks_before(c[i], pivot)) {
                w_before += c[i].w;
                swap_cand(&c[i], &c[q]);
                q++;
            }
        swap_cand(&c[q], &c[hi - 1]);
        if (w_before >= need && q > lo) {
            hi = q;
        } else if (w_before + pivot.w >= need) {
            return q + 1;
        } else {
            need -= w_before + pivot.w;
            lo = q + 1;
        }
    }
    /* finish: sort the small window by rank and scan it */
    for (int32_t i = lo + 1; i < hi; i++) {
        cand x = c[i];
        int32_t j = i;
        while (j > lo && ranks_before(x, c[j - 1])) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = x;
    }
    double acc = 0.0;
    for (int32_t i = lo; i < hi; i++) {
        acc += c[i].w;
        if (acc >= need)
            return i + 1;
    }
    return hi > 0 ? hi : 1;
}

/*
 * MASS PREFILTER for top-p over many candidates. A weight's float exponent
 * (its bits >> 23) is a bucket of the rank order: a token in a higher
 * bucket has a larger weight, hence a larger logit, so every bucket is a
 * contiguous stretch of ranks. One pass sums the weight per bucket; walking
 * the buckets from the top until the sum reaches `need` gives the bucket B
 * that holds the nucleus boundary; every token in a bucket below B is
 * outside the nucleus and is dropped (one compaction pass). find_nucleus
 * then partitions only the survivors (the nucleus plus the rest of bucket
 * B), not the vocabulary. Buckets are factors of 2 in probability, so for
 * real logits the survivors are a few hundred tokens at most. Returns the
 * new count; below 1024 candidates it does nothing (quickselect is cheap).
 */
static int32_t prefilter_by_mass(cand *c, int32_t m, double need)
{
    if (m <= 1024)
        return m;
    double hist[128] = {0}; /* weights are in [0, 1]: exponent bits <= 127 */
    for (int32_t i = 0; i < m; i++)
        hist[(f2u(c[i].w) >> 23) & 127] += c[i].w;
    uint32_t b = 127;
    double acc = hist[127];
    while (acc < need && b > 0)
        acc += hist[--b];
    int32_t k = 0;
    for (int32_t i = 0; i < m; i++)
        if ((f2u(c[i].w) >> 23) >= b)
            c[k++] = c[i];
    return k;
}

/* Draws from the whole vocabulary with weights exp((l - max) / T): no
 * truncation is on. Blocked like vec_sum, so the scan re-adds block sums in
 * the same order as the total and only walks one block element by element. */
static int32_t draw_full(tn_sampler *s, const float *l, int32_t n, float max_l, float inv_t)
{
    float *w = s->wbuf;
    weights(l, n, max_l, inv_t, w);
    double total = vec_sum(w, n);
    double u = tn_rng_uniform(&s->rng) * total;
    double acc = 0.0;
    for (int32_t b = 0; b < n; b += BLOCK) {
        int32_t len = TN_MIN(BLOCK, n - b);
        double bs = block_sum(w + b, len);
        if (u < acc + bs) {
            int32_t last = -1;
            for (int32_t i = b; i < b + len; i++) {
                acc += w[i];
                if (w[i] > 0.0f)
                    last = i;
                if (u < acc)
                    return i;
            }
            if (last >= 0) /* rounding inside the block: its last drawable token */
                return last;
        }
        acc += bs;
    }
    return argmax(l, n);
}

/*
 * THE CHAIN after penalties, in llama.cpp's order: top-k, top-p, min-p,
 * temperature, draw.
 *
 * Top-p and min-p are defined on the temperature-1 softmax of the candidates
 * that survive the step before: after top-k, top-p's total is the mass of
 * the k kept tokens (llama.cpp renormalises there); without top-k it is the
 * mass of the whole vocabulary. Min-p keeps the tokens with p >= min_p *
 * p_max, i.e. logit >= max_logit + log(min_p); renormalisation does not move
 * that line, so min-p after top-p is just the intersection of the two sets.
 *
 * Both sets are prefixes of the rank order, so their intersection is the
 * shorter one. We use this to do min-p FIRST, as a cheap filter: collect the
 * min-p set S (one comparison per token) while the total mass Z that top-p
 * is defined over is summed (vectorized). If S's mass is below top_p * Z,
 * the nucleus extends past S and the answer is S itself; otherwise the
 * nucleus lies inside S and find_nucleus runs on S alone (typically a few
 * dozen tokens instead of the vocabulary). Without min-p, S is every finite
 * logit.
 *
 * Temperature then only shapes the draw: weights exp((logit - max) / T)
 * over the kept set, a uniform u in [0, total), the first candidate whose
 * cumulative weight exceeds u. The candidate order is deterministic, so the
 * same seed and logits give the same token. Weights below e^-87 of the best
 * are 0: such a token is never drawn.
 */
int32_t tn_sampler_sample(tn_sampler *s, const float *logits)
{
    const int32_t n = s->n_vocab;
    const float *l = logits;
    const bool pen = penalties_on(s);
    if (pen || s->n_bias > 0) {
        /* the bias comes first (as OpenAI and vLLM apply it), then the
         * penalties, both on the sampler's own copy */
        memcpy(s->work, logits, (size_t)n * sizeof *s->work);
        for (int32_t i = 0; i < s->n_bias; i++)
            s->work[s->bias_id[i]] += s->bias_val[i];
        if (pen)
            apply_penalties(s, s->work);
        l = s->work;
    }
    if (!(s->p.temperature > 0.0f))
        return argmax(l, n);
    /* a temperature so small that 1/T overflows is greedy (the best token
     * survives every truncation) */
    const float inv_t = 1.0f / s->p.temperature;
    if (!isfinite(inv_t))
        return argmax(l, n);

    cand *c = s->cand;
    int32_t m;          /* candidates in c[0..m) */
    float max_l;        /* the best candidate logit */
    double z = 0;       /* weight of the distribution top-p is defined over */
    double w_s = 0;     /* weight of the min-p set */
    const bool use_min_p = s->p.min_p > 0.0f;
    const bool use_top_p = s->p.top_p < 1.0f;

    if (s->p.top_k > 0 && s->p.top_k < n) {
        m = select_top_k(l, n, s->p.top_k, c);
        if (m == 0)
            return argmax(l, n);
        max_l = c[0].logit;
        for (int32_t i = 0; i < m; i++) {
            c[i].w = exp_nonpos(c[i].logit - max_l);
            z += c[i].w;
        }
        w_s = z;
        if (use_min_p) {
            float t = max_l + logf(s->p.min_p);
            int32_t keep = 1;
            w_s = c[0].w;
            while (keep < m && c[keep].logit >= t)
                w_s += c[keep++].w;
            m = keep;
        }
    } else {
        max_l = vec_max(l, n);
        if (!(max_l > -INFINITY))
            return argmax(l, n);
        if (!use_top_p && !use_min_p)
            return draw_full(s, l, n, max_l, inv_t);
        if (use_top_p) {
            weights(l, n, max_l, 1.0f, s->wbuf);
            z = vec_sum(s->wbuf, n);
        }
        float t = use_min_p ? max_l + logf(s->p.min_p) : -INFINITY;
        m = 0;
        for (int32_t i = 0; i < n; i++) {
            float v = l[i];
            if ((v >= t || v == max_l) && v > -INFINITY)
                c[m++] = (cand){v, use_top_p ? s->wbuf[i] : 0.0f, i};
        }
        if (use_top_p) {
            if (use_min_p)
                for (int32_t i = 0; i < m; i++)
                    w_s += c[i].w;
            else
                w_s = z;
        }
    }

    if (use_top_p) {
        double need = (double)s->p.top_p * z;
        if (w_s >= need)
            m = find_nucleus(c, prefilter_by_mass(c, m, need), need);
    }

    /* temperature and the draw */
    double total = 0.0;
    int32_t best = 0;
    for (int32_t i = 0; i < m; i++) {
        c[i].w = exp_nonpos((c[i].logit - max_l) * inv_t);
        total += c[i].w;
        if (ranks_before(c[i], c[best]))
            best = i;
    }
    double u = tn_rng_uniform(&s->rng) * total;
    double acc = 0.0;
    for (int32_t i = 0; i < m; i++) {
        acc += c[i].w;
        if (u < acc)
            return c[i].id;
    }
    return c[best].id; /* rounding left u unreached */
}
