/*
 * quantize.c — `tern quantize`: the per-tensor type rules, the plan and the
 * streaming write (see quantize.h).
 */
#include "compress/quantize.h"

#include "base/pool.h"
#include "compress/gptq.h"
#include "compress/hessian.h"
#include "compress/imatrix.h"
#include "compress/quant_k.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* --- mixes ----------------------------------------------------------------- */

/* A mix: a name, the base tensor type and llama.cpp's LLAMA_FTYPE. */
typedef struct mix {
    const char *name;
    tn_dtype base;
    uint32_t ftype;
} mix;

enum {
    FT_Q2_K = 10,
    FT_Q3_K_S = 11,
    FT_Q3_K_M = 12,
    FT_Q3_K_L = 13,
    FT_Q4_K_S = 14,
    FT_Q4_K_M = 15,
    FT_Q5_K_S = 16,
    FT_Q5_K_M = 17,
    FT_Q6_K = 18,
    FT_IQ4_NL = 25,
};

static const mix mixes[] = {
    {"F32", TN_DTYPE_F32, 0},       {"F16", TN_DTYPE_F16, 1},          {"BF16", TN_DTYPE_BF16, 32},
    {"Q8_0", TN_DTYPE_Q8_0, 7},     {"Q4_0", TN_DTYPE_Q4_0, 2},        {"Q4_1", TN_DTYPE_Q4_1, 3},
    {"Q5_0", TN_DTYPE_Q5_0, 8},     {"Q5_1", TN_DTYPE_Q5_1, 9},        {"IQ4_NL", TN_DTYPE_IQ4_NL, FT_IQ4_NL},
    {"Q2_K", TN_DTYPE_Q2_K, FT_Q2_K}, {"Q3_K_S", TN_DTYPE_Q3_K, FT_Q3_K_S}, {"Q3_K_M", TN_DTYPE_Q3_K, FT_Q3_K_M},
    {"Q3_K_L", TN_DTYPE_Q3_K, FT_Q3_K_L}, {"Q4_K_S", TN_DTYPE_Q4_K, FT_Q4_K_S}, {"Q4_K_M", TN_DTYPE_Q4_K, FT_Q4_K_M},
    {"Q5_K_S", TN_DTYPE_Q5_K, FT_Q5_K_S}, {"Q5_K_M", TN_DTYPE_Q5_K, FT_Q5_K_M}, {"Q6_K", TN_DTYPE_Q6_K, FT_Q6_K},
    /* llama-quantize's aliases */
    {"Q3_K", TN_DTYPE_Q3_K, FT_Q3_K_M},  {"Q4_K", TN_DTYPE_Q4_K, FT_Q4_K_M}, {"Q5_K", TN_DTYPE_Q5_K, FT_Q5_K_M},
};

bool tn_quant_mix_from_name(const char *name, tn_dtype *base, uint32_t *file_type)
{
    if (!name)
        return false;
    for (size_t i = 0; i < TN_ARRAY_LEN(mixes); i++) {
        if (!strcasecmp(name, mixes[i].name)) {
            *base = mixes[i].base;
            *file_type = mixes[i].ftype;
            return true;
        }
    }
    return false;
}

bool tn_quant_type_supported(tn_dtype t)
{
    return tn_quant_row_supported(t);
}

/* Whether tn_quant_row weights type t's error by importance. */
static bool uses_importance(tn_dtype t)
{
    return (t >= TN_DTYPE_Q2_K && t <= TN_DTYPE_Q6_K) || t == TN_DTYPE_IQ4_NL || t == TN_DTYPE_Q8_0 ||
           t == TN_DTYPE_Q4_0 || t == TN_DTYPE_Q4_1 || t == TN_DTYPE_Q5_0 || t == TN_DTYPE_Q5_1;
}

static bool is_quantized(tn_dtype t)
{
    return tn_dtype_traits_of(t)->block_size > 1;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* --- the rules ------------------------------------------------------------- */

/* What the rules need to know about the whole model: tn_quant_rules. */
typedef tn_quant_rules model_info;

/* llama.cpp's use_more_bits: the first and last eighth and every third layer between. */
static bool use_more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* The type a matrix gets in a quantized mix before the fallback rules
 * (llama.cpp's llama_tensor_get_type for dense models; the IQ2/IQ3 mixes and
 * MoE branches are left out). */
static tn_dtype mix_type(model_info *mi, const char *name, int64_t ne0, tn_dtype base, uint32_t ft,
                         const char **note)
{
    tn_dtype t = base;
    int n_gqa = mi->n_head_kv > 0 ? mi->n_head / mi->n_head_kv : 1;
    if (!strcmp(name, "output.weight") || (!mi->has_output && !strcmp(name, "token_embd.weight"))) {
        if (ne0 % tn_dtype_traits_of(base)->block_size != 0)
            t = TN_DTYPE_Q8_0;
        else if (base != TN_DTYPE_Q8_0)
            t = TN_DTYPE_Q6_K;
        if (t != base)
            *note = "output tensor";
    } else if (strstr(name, "attn_v.weight")) {
        int i = mi->i_attn_v++, n = mi->n_attn_v;
        if (ft == FT_Q2_K)
            t = n_gqa >= 4 ? TN_DTYPE_Q4_K : TN_DTYPE_Q3_K;
        else if (ft == FT_Q3_K_M)
            t = i < 2 ? TN_DTYPE_Q5_K : TN_DTYPE_Q4_K;
        else if (ft == FT_Q3_K_L)
            t = TN_DTYPE_Q5_K;
        else if (ft == FT_IQ4_NL && n_gqa >= 4)
            t = TN_DTYPE_Q5_K;
        else if ((ft == FT_Q4_K_M || ft == FT_Q5_K_M) && use_more_bits(i, n))
            t = TN_DTYPE_Q6_K;
        else if (ft == FT_Q4_K_S && i < 4)
            t = TN_DTYPE_Q5_K;
        if (t != base)
            *note = "attn_v: more bits";
    } else if (strstr(name, "ffn_down")) {
        int i = mi->i_ffn_down++, n = mi->n_ffn_down;
        if (ft == FT_Q2_K)
            t = TN_DTYPE_Q3_K;
        else if (ft == FT_Q3_K_M)
            t = i < n / 16 ? TN_DTYPE_Q5_K : TN_DTYPE_Q4_K;
        else if (ft == FT_Q3_K_L)
            t = TN_DTYPE_Q5_K;
        else if (ft == FT_Q4_K_M && use_more_bits(i, n))
            t = TN_DTYPE_Q6_K;
        else if (ft == FT_IQ4_NL && i < n / 8)
            t = TN_DTYPE_Q5_K;
        else if (ft == FT_Q5_K_M && use_more_bits(i, n))
            t = TN_DTYPE_Q6_K;
        else if (ft == FT_Q4_K_S && i < n / 8)
            t = TN_DTYPE_Q5_K;
        if (t != base)
            *note = "ffn_down: more bits";
    } else if (strstr(name, "attn_output.weight")) {
        if (ft == FT_Q2_K)
            t = TN_DTYPE_Q3_K;
        else if (ft == FT_Q3_K_M)
            t = TN_DTYPE_Q4_K;
        else if (ft == FT_Q3_K_L)
            t = TN_DTYPE_Q5_K;
        if (t != base)
            *note = "attn_output: more bits";
    }
    return t;
}

/* The type used when rows of ne0 do not fill whole blocks of t. */
static tn_dtype fallback_type(tn_dtype t, int64_t ne0)
{
    tn_dtype f;
    switch (t) {
    case TN_DTYPE_Q2_K:
    case TN_DTYPE_Q3_K:
        f = TN_DTYPE_IQ4_NL;
        break;
    case TN_DTYPE_Q4_K:
        f = TN_DTYPE_Q5_0;
        break;
    case TN_DTYPE_Q5_K:
        f = TN_DTYPE_Q5_1;
        break;
    case TN_DTYPE_Q6_K:
        f = TN_DTYPE_Q8_0;
        break;
    default:
        f = TN_DTYPE_F16;
        break;
    }
    if (ne0 % tn_dtype_traits_of(f)->block_size != 0 || !tn_quant_type_supported(f))
        f = TN_DTYPE_F16;
    return f;
}

/* Whether a tensor is a matrix the mix applies to (llama.cpp's test). */
static bool quantizable(const char *name, const int64_t ne[4])
{
    if (!ends_with(name, "weight"))
        return false;
    int dims = 1;
    for (int d = 1; d < 4; d++)
        if (ne[d] > 1)
            dims = d + 1;
    if (dims < 2)
        return false;
    return !strstr(name, "_norm.weight") && !strstr(name, "ffn_gate_inp.weight") && strcmp(name, "rope_freqs.weight") != 0;
}

bool tn_quant_rules_init(tn_quant_rules *r, const char *mix, bool pure)
{
    memset(r, 0, sizeof *r);
    if (!tn_quant_mix_from_name(mix, &r->base, &r->file_type))
        return false;
    r->mixed = !pure && is_quantized(r->base);
    return true;
}

void tn_quant_rules_count(tn_quant_rules *r, const char *name)
{
    r->n_attn_v += strstr(name, "attn_v.weight") != NULL;
    r->n_ffn_down += strstr(name, "ffn_down") != NULL;
    r->has_output |= !strcmp(name, "output.weight");
}

tn_dtype tn_quant_rules_type(tn_quant_rules *r, const char *name, const int64_t ne[4], tn_dtype src_type,
                             const char **note_out)
{
    const char *note = NULL;
    tn_dtype dt = src_type;
    if (quantizable(name, ne)) {
        const tn_dtype base = r->base;
        dt = r->mixed ? mix_type(r, name, ne[0], base, r->file_type, &note) : base;
        bool is_out = !strcmp(name, "output.weight") || (!r->has_output && !strcmp(name, "token_embd.weight"));
        if (r->have_out_type && is_out) {
            dt = r->out_type;
            note = "--output-type";
        }
        if (dt != base && !tn_quant_type_supported(dt)) {
            tn_log(TN_LOG_INFO, "quantize: %s: %s cannot be produced by this build yet; using q8_0\n", name,
                   tn_dtype_traits_of(dt)->name);
            dt = TN_DTYPE_Q8_0;
            note = "upgrade type not available: q8_0";
        }
        if (ne[0] % tn_dtype_traits_of(dt)->block_size != 0) {
            tn_dtype f = fallback_type(dt, ne[0]);
            tn_log(TN_LOG_DEBUG, "quantize: %s: rows of %" PRId64 " do not fill %s blocks of %d; fallback %s\n", name,
                   ne[0], tn_dtype_traits_of(dt)->name, tn_dtype_traits_of(dt)->block_size,
                   tn_dtype_traits_of(f)->name);
            dt = f;
            note = "fallback: row length not a multiple of the block size";
        }
    }
    if (note_out)
        *note_out = note;
    return dt;
}

static int32_t get_arch_u32(const tn_gguf *g, const char *key)
{
    const char *arch;
    size_t len;
    if (tn_gguf_get_str(g, "general.architecture", &arch, &len) != TN_OK || len > 64) {
        tn__err_clear();
        return 0;
    }
    char k[128];
    snprintf(k, sizeof k, "%.*s.%s", (int)len, arch, key);
    uint32_t v = 0;
    if (tn_gguf_get_u32(g, k, &v) != TN_OK) {
        tn__err_clear();
        return 0;
    }
    return (int32_t)v;
}

/* Fills rep->tensors with each tensor's target type. */
static tn_status plan(const tn_quant_opts *o, bool have_out_type, tn_dtype out_type, tn_quant_report *rep)
{
    const tn_gguf *g = rep->in;
    int64_t n = tn_gguf_n_tensors(g);
    tn_quant_rules mi;
    if (!tn_quant_rules_init(&mi, o->type, o->pure))
        return tn__err(TN_ERR_INVALID, "quantize: unknown type '%s'", o->type);
    mi.n_head = get_arch_u32(g, "attention.head_count");
    mi.n_head_kv = get_arch_u32(g, "attention.head_count_kv");
    mi.have_out_type = have_out_type;
    mi.out_type = out_type;
    for (int64_t i = 0; i < n; i++)
        tn_quant_rules_count(&mi, tn_gguf_tensor_at(g, i)->name);

    rep->tensors = calloc(n > 0 ? (size_t)n : 1, sizeof *rep->tensors);
    if (!rep->tensors)
        return tn__err(TN_ERR_NOMEM, "quantize: out of memory for a plan of %" PRId64 " tensors", n);
    rep->n_tensors = n;
    for (int64_t i = 0; i < n; i++) {
        const tn_gguf_tensor *t = tn_gguf_tensor_at(g, i);
        tn_quant_tensor *q = &rep->tensors[i];
        q->name = t->name;
        q->src_type = t->type;
        q->ne0 = t->ne[0];
        q->n_elements = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        q->src_bytes = t->nbytes;
        const int64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
        const tn_dtype dt = tn_quant_rules_type(&mi, t->name, ne, t->type, &q->note);
        q->dst_type = dt;
        q->quantized = dt != t->type;
        q->dst_bytes = q->quantized ? tn_dtype_row_size(dt, t->ne[0]) * (uint64_t)(q->n_elements / t->ne[0])
                                    : t->nbytes;
        rep->src_bytes += q->src_bytes;
        rep->dst_bytes += q->dst_bytes;
        rep->n_elements += q->n_elements;
        if (q->quantized && is_quantized(t->type))
            tn_log(TN_LOG_INFO, "quantize: %s: requantizing from %s (quality is lost twice)\n", t->name,
                   tn_dtype_traits_of(t->type)->name);
    }
    return TN_OK;
}

/* --- the write --------------------------------------------------------------- */

/* State shared by every tensor's fill and the pool jobs. */
typedef struct qjob {
    tn_quant_report *rep;
    const tn_quant_opts *o;
    tn_pool *pool;
    int n_threads;
    float *scratch;        /* (n_threads, 2 * max_ne0) F32: source row, round trip */
    double *row_sse;       /* (max_rows) per-row squared error */
    double *row_ssq;       /* (max_rows) per-row squared source */
    int64_t max_ne0;
    int64_t n_done;
    /* the tensor being filled */
    const tn_gguf_tensor *src;
    tn_quant_tensor *q;
    unsigned char *dst;
    int64_t n_rows;
    tn_status *thread_st;  /* (n_threads) */
    const float *imp;      /* (ne0) importance of the current tensor's columns, or NULL */
    int64_t imp_rows;      /* > 0: imp has a slice of ne0 per matrix of imp_rows rows (experts) */
    tn_imatrix *im;        /* o->imatrix, loaded; or NULL */
    /* GPTQ (o->hessian) */
    tn_gguf *hg;           /* the hessian file, or NULL */
    bool tied;             /* no output.weight: token_embd is the output matrix */
    double damp;
    char u_name[160];      /* the hessian U and dead were prepared from ("" none) */
    int64_t u_n;
    float *U;              /* (u_n, u_n) upper Cholesky factor of H'⁻¹ */
    uint8_t *dead;         /* (u_n) */
    float *hdiag;          /* (u_n) diag H: the importance of the scale fits */
    float *wbuf;           /* (n_rows, ne0) the current tensor's rows in F32 */
    size_t wbuf_cap;
    uint32_t warned;       /* types GPTQ lacks that were reported (bit per dtype) */
} qjob;

/* --stats: row r's squared error of the result y against the source x, and
 * the source's sum of squares (the weight RMSE's two sums). */
static void record_row_error(qjob *j, int64_t r, const float *x, const float *y, int64_t ne0)
{
    double e = 0, v = 0;
    for (int64_t k = 0; k < ne0; k++) {
        const double dx = (double)y[k] - (double)x[k];
        e += dx * dx;
        v += (double)x[k] * x[k];
    }
    j->row_sse[r] = e;
    j->row_ssq[r] = v;
}

/* Pool job: GPTQ of rows [ith*n/nth, (ith+1)*n/nth) of the current tensor. */
static void gptq_rows(void *ctx, int ith, int nth)
{
    qjob *j = ctx;
    const tn_quant_tensor *q = j->q;
    const int64_t ne0 = q->ne0;
    const size_t src_row = tn_dtype_row_size(q->src_type, ne0), dst_row = tn_dtype_row_size(q->dst_type, ne0);
    const int64_t r0 = j->n_rows * ith / nth, r1 = j->n_rows * (ith + 1) / nth;
    float *w = j->wbuf + (size_t)r0 * (size_t)ne0;
    tn_status st = TN_OK;
    for (int64_t r = r0; r < r1 && st == TN_OK; r++)
        st = tn_dequantize_row(q->src_type, (const unsigned char *)j->src->data + (size_t)r * src_row,
                               j->wbuf + (size_t)r * (size_t)ne0, ne0);
    if (st == TN_OK && r1 > r0)
        st = tn_gptq_quantize(q->dst_type, j->U, j->dead, j->hdiag, w, r1 - r0, ne0, j->dst + (size_t)r0 * dst_row,
                              NULL);
    if (st == TN_OK && j->o->stats) {
        float *y = j->scratch + (size_t)ith * 2 * (size_t)j->max_ne0, *x = y + j->max_ne0;
        for (int64_t r = r0; r < r1 && st == TN_OK; r++) {
            st = tn_dequantize_row(q->src_type, (const unsigned char *)j->src->data + (size_t)r * src_row, x, ne0);
            if (st == TN_OK)
                st = tn_dequantize_row(q->dst_type, j->dst + (size_t)r * dst_row, y, ne0);
            if (st == TN_OK)
                record_row_error(j, r, x, y, ne0);
        }
    }
    if (st != TN_OK)
        j->thread_st[ith] = st;
}

/* With --hessian: whether tensor q gets GPTQ; prepares U for its hessian
 * (kept for the next tensor of the same input). */
static tn_status gptq_setup(qjob *j, const tn_quant_tensor *q, bool *use)
{
    *use = false;
    const float *H = NULL;
    tn_status st = tn_hessian_lookup(j->hg, j->o->hessian, q->name, j->tied, q->ne0, &H);
    if (st != TN_OK || !H)
        return st;
    if (!tn_gptq_supported(q->dst_type)) {
        const uint32_t bit = 1u << ((unsigned)q->dst_type % 32);
        if (!(j->warned & bit))
            tn_log(TN_LOG_INFO, "quantize: GPTQ does not support %s (first: %s); those tensors take the usual path\n",
                   tn_dtype_traits_of(q->dst_type)->name, q->name);
        j->warned |= bit;
        return TN_OK;
    }
    char name[160];
    if (!tn_hessian_name(q->name, j->tied, name, sizeof name))
        return TN_OK;
    if (strcmp(name, j->u_name) != 0) {
        const int64_t n = q->ne0;
        j->u_name[0] = 0;
        free(j->U);
        free(j->dead);
        free(j->hdiag);
        j->U = malloc((size_t)n * (size_t)n * sizeof *j->U);
        j->dead = malloc((size_t)n);
        j->hdiag = malloc((size_t)n * sizeof *j->hdiag);
        if (!j->U || !j->dead || !j->hdiag)
            return tn__err(TN_ERR_NOMEM, "quantize: out of memory for the GPTQ factor of %s", name);
        for (int64_t c = 0; c < n; c++)
            j->hdiag[c] = H[c * n + c];
        if ((st = tn_gptq_prepare(H, n, j->damp, j->U, j->dead)) != TN_OK)
            return tn__err_prefix(st, "quantize: hessian %s of %s", name, j->o->hessian);
        j->u_n = n;
        snprintf(j->u_name, sizeof j->u_name, "%s", name);
    }
    const size_t need = (size_t)q->n_elements;
    if (need > j->wbuf_cap) {
        free(j->wbuf);
        j->wbuf = malloc(need * sizeof *j->wbuf);
        if (!j->wbuf) {
            j->wbuf_cap = 0;
            return tn__err(TN_ERR_NOMEM, "quantize: out of memory for %s in F32", q->name);
        }
        j->wbuf_cap = need;
    }
    *use = true;
    return TN_OK;
}

/* Pool job: rows [ith*n/nth, (ith+1)*n/nth) of the current tensor. */
static void quant_rows(void *ctx, int ith, int nth)
{
    qjob *j = ctx;
    const tn_quant_tensor *q = j->q;
    int64_t ne0 = q->ne0;
    size_t src_row = tn_dtype_row_size(q->src_type, ne0), dst_row = tn_dtype_row_size(q->dst_type, ne0);
    float *x = j->scratch + (size_t)ith * 2 * (size_t)j->max_ne0, *y = x + j->max_ne0;
    int64_t r0 = j->n_rows * ith / nth, r1 = j->n_rows * (ith + 1) / nth;
    for (int64_t r = r0; r < r1; r++) {
        const unsigned char *s = (const unsigned char *)j->src->data + (size_t)r * src_row;
        unsigned char *d = j->dst + (size_t)r * dst_row;
        tn_status st = tn_dequantize_row(q->src_type, s, x, ne0);
        if (st == TN_OK)
            st = tn_quant_row(q->dst_type, x, d, ne0, j->imp && j->imp_rows ? j->imp + r / j->imp_rows * ne0 : j->imp);
        if (st == TN_OK && j->o->stats)
            st = tn_dequantize_row(q->dst_type, d, y, ne0);
        if (st != TN_OK) {
            j->thread_st[ith] = st;
            return;
        }
        if (j->o->stats)
            record_row_error(j, r, x, y, ne0);
    }
}

typedef struct fill_ctx {
    qjob *job;
    int64_t index;
} fill_ctx;

static tn_status fill_tensor(void *ctx, void *dst, size_t nbytes)
{
    fill_ctx *fc = ctx;
    qjob *j = fc->job;
    const tn_gguf_tensor *src = tn_gguf_tensor_at(j->rep->in, fc->index);
    tn_quant_tensor *q = &j->rep->tensors[fc->index];
    if (nbytes != q->dst_bytes)
        return tn__err(TN_ERR_INVALID, "quantize: %s: writer asks %zu bytes, plan has %" PRIu64, q->name, nbytes,
                       q->dst_bytes);
    if (!q->quantized) {
        memcpy(dst, src->data, nbytes);
    } else {
        j->src = src;
        j->q = q;
        j->imp = NULL;
        if (j->im) {
            int64_t nc = 0;
            const float *imp = tn_imatrix_get(j->im, q->name, &nc);
            /* a stack of experts (ne[2] > 1) has one slice of ne0 per expert, as llama-imatrix writes it */
            const int64_t n_mat = src->ne[2] * src->ne[3];
            if (imp && nc != q->ne0 && nc != q->ne0 * n_mat)
                return tn__err(TN_ERR_INVALID, "quantize: imatrix %s: %s has %" PRId64 " columns, the tensor rows of %" PRId64,
                               j->o->imatrix, q->name, nc, q->ne0);
            j->imp = imp;
            j->imp_rows = imp && nc != q->ne0 ? src->ne[1] : 0;
            q->imatrix = imp != NULL && uses_importance(q->dst_type);
        }
        j->dst = dst;
        j->n_rows = q->n_elements / q->ne0;
        bool gptq = false;
        if (j->hg) {
            tn_status st = gptq_setup(j, q, &gptq);
            if (st != TN_OK)
                return st;
            q->gptq = gptq;
            q->imatrix |= gptq;
        }
        for (int i = 0; i < j->n_threads; i++)
            j->thread_st[i] = TN_OK;
        tn_pool_run(j->pool, gptq ? gptq_rows : quant_rows, j);
        for (int i = 0; i < j->n_threads; i++)
            if (j->thread_st[i] != TN_OK)
                return tn__err_prefix(j->thread_st[i], "quantize: tensor '%s' (%s -> %s)", q->name,
                                      tn_dtype_traits_of(q->src_type)->name, tn_dtype_traits_of(q->dst_type)->name);
        if (j->o->stats) {
            double e = 0, v = 0;
            for (int64_t r = 0; r < j->n_rows; r++) {
                e += j->row_sse[r];
                v += j->row_ssq[r];
            }
            q->sse = e;
            q->ssq = v;
            j->rep->sse += e;
            j->rep->ssq += v;
            j->rep->n_quant_elements += q->n_elements;
        }
    }
    j->n_done++;
    if (j->o->progress)
        j->o->progress(j->o->progress_ud, j->n_done, j->rep->n_tensors, q);
    return TN_OK;
}

tn_status tn_quantize_model(const tn_quant_opts *o, tn_quant_report *rep_out)
{
    tn_quant_report local = {0}, *rep = rep_out ? rep_out : &local;
    memset(rep, 0, sizeof *rep);
    if (!o || !o->in_path || !o->out_path || !o->type)
        return tn__err(TN_ERR_INVALID, "quantize: input, output and type are required");

    tn_dtype base, out_type = TN_DTYPE_F32;
    uint32_t ft;
    if (!tn_quant_mix_from_name(o->type, &base, &ft))
        return tn__err(TN_ERR_INVALID,
                       "quantize: unknown type '%s' (want F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, "
                       "Q2_K, Q3_K_S/M/L, Q4_K_S/M, Q5_K_S/M or Q6_K)",
                       o->type);
    if (!tn_quant_type_supported(base))
        return tn__err(TN_ERR_UNSUPPORTED, "quantize: this build cannot quantize to %s yet (type %s)", o->type,
                       tn_dtype_traits_of(base)->name);
    bool have_out = o->output_type != NULL;
    if (have_out) {
        if (!tn_dtype_from_name(o->output_type, &out_type) || out_type == TN_DTYPE_Q8_K ||
            out_type == TN_DTYPE_Q8_1 || (out_type >= TN_DTYPE_I8 && out_type <= TN_DTYPE_F64))
            return tn__err(TN_ERR_INVALID, "quantize: unknown --output-type '%s'", o->output_type);
        if (!tn_quant_type_supported(out_type))
            return tn__err(TN_ERR_UNSUPPORTED, "quantize: this build cannot quantize to %s yet (--output-type)",
                           o->output_type);
    }
    rep->file_type = ft;
    rep->base_type = base;

    tn_status st = tn_gguf_open(o->in_path, &rep->in);
    if (st != TN_OK)
        return st;
    tn_gguf_writer *w = NULL;
    qjob job = {.rep = rep, .o = o};
    fill_ctx *fcs = NULL;
    if ((st = plan(o, have_out, out_type, rep)) != TN_OK)
        goto out;
    if (o->hessian) {
        if ((st = tn_gguf_open(o->hessian, &job.hg)) != TN_OK ||
            (st = tn_hessian_check_file(job.hg, o->hessian)) != TN_OK)
            goto out;
        job.tied = !tn_gguf_find_tensor(rep->in, "output.weight");
        tn__err_clear();
        job.damp = o->gptq_damp_set ? o->gptq_damp : 0.01;
    }
    if (o->imatrix && (st = tn_imatrix_load(o->imatrix, &job.im)) != TN_OK)
        goto out;

    /* metadata: everything, then file_type and quantization_version */
    if ((st = tn_gguf_writer_new(&w)) != TN_OK)
        goto out;
    const tn_gguf *g = rep->in;
    bool any_quant = false;
    int64_t max_rows = 1;
    job.max_ne0 = 1;
    for (int64_t i = 0; i < rep->n_tensors; i++) {
        const tn_quant_tensor *q = &rep->tensors[i];
        any_quant |= is_quantized(q->dst_type);
        if (q->quantized) {
            job.max_ne0 = TN_MAX(job.max_ne0, q->ne0);
            max_rows = TN_MAX(max_rows, q->n_elements / q->ne0);
        }
    }
    for (int64_t i = 0; i < tn_gguf_n_kv(g); i++)
        if ((st = tn_gguf_set_from(w, g, i)) != TN_OK)
            goto out;
    if ((st = tn_gguf_set_u32(w, "general.file_type", ft)) != TN_OK)
        goto out;
    if (any_quant && (st = tn_gguf_set_u32(w, "general.quantization_version", 2)) != TN_OK)
        goto out;
    if (job.im) {
        int32_t n_ent = (int32_t)tn_imatrix_n_entries(job.im);
        if ((st = tn_gguf_set_str(w, "quantize.imatrix.file", o->imatrix)) != TN_OK ||
            (st = tn_gguf_set_i32(w, "quantize.imatrix.entries_count", n_ent)) != TN_OK ||
            (st = tn_gguf_set_i32(w, "quantize.imatrix.chunks_count", tn_imatrix_n_chunks(job.im))) != TN_OK)
            goto out;
    }

    if (job.hg && ((st = tn_gguf_set_str(w, "quantize.hessian.file", o->hessian)) != TN_OK ||
                   (st = tn_gguf_set_f32(w, "quantize.gptq.damp", (float)job.damp)) != TN_OK))
        goto out;

    if ((st = tn_pool_new(o->n_threads, &job.pool)) != TN_OK)
        goto out;
    job.n_threads = tn_pool_size(job.pool);
    job.scratch = malloc((size_t)job.n_threads * 2 * (size_t)job.max_ne0 * sizeof(float));
    job.thread_st = calloc((size_t)job.n_threads, sizeof *job.thread_st);
    job.row_sse = calloc((size_t)max_rows, sizeof(double));
    job.row_ssq = calloc((size_t)max_rows, sizeof(double));
    fcs = calloc((size_t)(rep->n_tensors ? rep->n_tensors : 1), sizeof *fcs);
    if (!job.scratch || !job.thread_st || !job.row_sse || !job.row_ssq || !fcs) {
        st = tn__err(TN_ERR_NOMEM, "quantize: out of memory for scratch (rows of %" PRId64 ")", job.max_ne0);
        goto out;
    }
    for (int64_t i = 0; i < rep->n_tensors; i++) {
        const tn_gguf_tensor *t = tn_gguf_tensor_at(g, i);
        int dims = 1;
        for (int d = 1; d < TN_GGUF_MAX_DIMS; d++)
            if (t->ne[d] > 1)
                dims = d + 1;
        dims = TN_MAX(dims, t->n_dims);
        fcs[i] = (fill_ctx){&job, i};
        if ((st = tn_gguf_add_tensor_fn(w, t->name, rep->tensors[i].dst_type, dims, t->ne, fill_tensor, &fcs[i])) !=
            TN_OK)
            goto out;
    }
    st = tn_gguf_writer_write(w, o->out_path);
    if (st != TN_OK)
        tn__err_prefix(st, "quantize: writing %s", o->out_path);

out:
    free(fcs);
    free(job.scratch);
    free(job.thread_st);
    free(job.row_sse);
    free(job.row_ssq);
    tn_pool_free(job.pool);
    tn_imatrix_free(job.im);
    tn_gguf_free(job.hg);
    free(job.U);
    free(job.dead);
    free(job.hdiag);
    free(job.wbuf);
    tn_gguf_writer_free(w);
    if (rep == &local)
        tn_quant_report_deinit(rep);
    return st;
}

void tn_quant_report_deinit(tn_quant_report *rep)
{
    if (!rep)
        return;
    free(rep->tensors);
    tn_gguf_free(rep->in);
    memset(rep, 0, sizeof *rep);
}
