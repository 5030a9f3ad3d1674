/*
 * convert.c — the converter's driver and its tensor machinery: open the
 * checkpoint, let the family table (convert_arch.c) claim tensors and set
 * metadata, check nothing was left unclaimed, add the tokenizer, write.
 *
 * HOW A TENSOR IS WRITTEN: Hugging Face stores a linear layer as
 * [out, in] row-major; GGUF's ne[0] is the contiguous dimension, so the
 * same bytes are the GGUF tensor ne = {in, out} and no transpose is ever
 * needed. Experts [E] x [out, in] become ne = {in, out, E}. Rows are read
 * one at a time as floats (from F32, F16, BF16 or F64), optionally taken
 * in permuted order, and rounded to the output type with tn_quantize_row
 * (round to nearest even, as llama.cpp does).
 */
#include "compress/quant_k.h"
#include "compress/quantize.h"
#include "convert/convert_int.h"
#include "tok/tok.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ==========================================================================
 * Claiming checkpoint tensors
 * ======================================================================== */

bool tn__cv_has(const tn__cv *c, const char *name) { return tn_st_set_find(c->st, name) != NULL; }

static int64_t index_of(const tn__cv *c, const tn_st_tensor *t)
{
    int64_t lo = 0, hi = tn_st_set_n_tensors(c->st);
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int r = strcmp(tn_st_set_tensor_at(c->st, mid)->name, t->name);
        if (r == 0)
            return mid;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

tn_status tn__cv_take(tn__cv *c, const char *name, int64_t rows, int64_t cols, const tn_st_tensor **out)
{
    const tn_st_tensor *t = tn_st_set_find(c->st, name);
    if (!t)
        return tn__err(TN_ERR_FORMAT, "convert: %s: the checkpoint has no tensor '%s' (needed for %s)", c->dir, name,
                       c->family);
    int64_t i = index_of(c, t);
    if (c->claimed[i])
        return tn__err(TN_ERR_FORMAT, "convert: tensor '%s' used twice", name);
    c->claimed[i] = true;
    bool ok = cols == 0 ? t->n_dims == 1 && t->shape[0] == rows
                        : t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols;
    if (!ok) {
        char have[96] = "[", want[64];
        for (int d = 0; d < t->n_dims; d++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        strncat(have, "]", sizeof have - strlen(have) - 1);
        if (cols == 0)
            snprintf(want, sizeof want, "[%lld]", (long long)rows);
        else
            snprintf(want, sizeof want, "[%lld, %lld]", (long long)rows, (long long)cols);
        return tn__err(TN_ERR_FORMAT, "convert: %s: tensor '%s' has shape %s, config.json implies %s", t->file, name,
                       have, want);
    }
    if (t->dtype != TN_ST_F32 && t->dtype != TN_ST_F16 && t->dtype != TN_ST_BF16 && t->dtype != TN_ST_F64)
        return tn__err(TN_ERR_UNSUPPORTED, "convert: %s: tensor '%s' has dtype %s (F32, F16, BF16, F64 convert)",
                       t->file, name, tn_st_dtype_name(t->dtype));
    *out = t;
    return TN_OK;
}

static tn_status new_tensor(tn__cv *c, const char *gguf_name, int n_src, tn__cv_tensor **out)
{
    if (c->n_t == c->cap_t) {
        int64_t cap = c->cap_t ? 2 * c->cap_t : 64;
        tn__cv_tensor *nt = realloc(c->t, (size_t)cap * sizeof *nt);
        if (!nt)
            return tn__err(TN_ERR_NOMEM, "convert: out of memory");
        c->t = nt;
        c->cap_t = cap;
    }
    tn__cv_tensor *t = &c->t[c->n_t];
    memset(t, 0, sizeof *t);
    if (strlen(gguf_name) >= sizeof t->name)
        return tn__err(TN_ERR_INVALID, "convert: tensor name '%s' too long", gguf_name);
    strcpy(t->name, gguf_name);
    t->src = calloc((size_t)(n_src ? n_src : 1), sizeof *t->src);
    if (!t->src)
        return tn__err(TN_ERR_NOMEM, "convert: out of memory");
    t->n_src = n_src;
    c->n_t++;
    *out = t;
    return TN_OK;
}

tn_status tn__cv_add(tn__cv *c, const char *gguf_name, const char *hf_name, int64_t rows, int64_t cols, bool f32,
                     int perm_heads)
{
    tn__cv_tensor *t = NULL;
    tn_status s = new_tensor(c, gguf_name, 1, &t);
    if (s != TN_OK || (s = tn__cv_take(c, hf_name, rows, cols, &t->src[0])) != TN_OK)
        return s;
    if (perm_heads > 0 && (rows % perm_heads != 0 || (rows / perm_heads) % 2 != 0))
        return tn__err(TN_ERR_FORMAT, "convert: tensor '%s': %lld rows do not split into %d heads of even size",
                       hf_name, (long long)rows, perm_heads);
    t->rows = rows;
    t->cols = cols ? cols : 1;
    t->perm_heads = perm_heads;
    t->type = cols == 0 || f32 ? TN_DTYPE_F32 : c->dtype;
    t->n_dims = cols == 0 ? 1 : 2;
    t->ne[0] = cols == 0 ? rows : cols;
    t->ne[1] = cols == 0 ? 1 : rows;
    t->ne[2] = 1;
    return TN_OK;
}

tn_status tn__cv_add_experts(tn__cv *c, const char *gguf_name, const char *fmt, int n_expert, int64_t rows,
                             int64_t cols)
{
    if (n_expert < 1 || n_expert > CV_MAX_SRC)
        return tn__err(TN_ERR_UNSUPPORTED, "convert: %d experts (at most %d)", n_expert, CV_MAX_SRC);
    tn__cv_tensor *t = NULL;
    tn_status s = new_tensor(c, gguf_name, n_expert, &t);
    if (s != TN_OK)
        return s;
    for (int e = 0; e < n_expert; e++) {
        char name[256];
        snprintf(name, sizeof name, fmt, e);
        if ((s = tn__cv_take(c, name, rows, cols, &t->src[e])) != TN_OK)
            return s;
    }
    t->rows = rows;
    t->cols = cols;
    t->type = c->dtype;
    t->n_dims = 3;
    t->ne[0] = cols;
    t->ne[1] = rows;
    t->ne[2] = n_expert;
    return TN_OK;
}

tn_status tn__cv_add_data(tn__cv *c, const char *gguf_name, const float *v, int64_t n)
{
    tn__cv_tensor *t = NULL;
    tn_status s = new_tensor(c, gguf_name, 0, &t);
    if (s != TN_OK)
        return s;
    if (!(t->data = malloc((size_t)n * sizeof *v)))
        return tn__err(TN_ERR_NOMEM, "convert: out of memory");
    memcpy(t->data, v, (size_t)n * sizeof *v);
    t->rows = n;
    t->cols = 1;
    t->type = TN_DTYPE_F32;
    t->n_dims = 1;
    t->ne[0] = n;
    t->ne[1] = t->ne[2] = 1;
    return TN_OK;
}

/* ==========================================================================
 * Metadata helpers
 * ======================================================================== */

static void arch_key(const tn__cv *c, const char *key, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s.%s", c->arch, key);
}

tn_status tn__cv_u32(tn__cv *c, const char *key, int64_t v)
{
    char k[128];
    arch_key(c, key, k, sizeof k);
    if (v < 0 || v > UINT32_MAX)
        return tn__err(TN_ERR_RANGE, "convert: %s = %lld does not fit u32", k, (long long)v);
    return tn_gguf_set_u32(c->w, k, (uint32_t)v);
}

tn_status tn__cv_f32(tn__cv *c, const char *key, double v)
{
    char k[128];
    arch_key(c, key, k, sizeof k);
    return tn_gguf_set_f32(c->w, k, (float)v);
}

tn_status tn__cv_bool(tn__cv *c, const char *key, bool v)
{
    char k[128];
    arch_key(c, key, k, sizeof k);
    return tn_gguf_set_bool(c->w, k, v);
}

/* ==========================================================================
 * Writing
 * ======================================================================== */

/* Source row of output row r: identity, or the RoPE permutation. Within a
 * head of d rows, output row 2i + j comes from input row j * d/2 + i. */
static int64_t src_row(const tn__cv_tensor *t, int64_t r)
{
    if (t->perm_heads <= 0)
        return r;
    int64_t d = t->rows / t->perm_heads, h = r / d, k = r % d;
    return h * d + (k % 2) * (d / 2) + k / 2;
}

static tn_status fill(void *ctx, void *dst, size_t nbytes)
{
    const tn__cv_tensor *t = ctx;
    if (t->data) {
        if (nbytes != (size_t)t->rows * sizeof(float))
            return tn__err(TN_ERR_INVALID, "convert: %s: %zu bytes asked", t->name, nbytes);
        memcpy(dst, t->data, nbytes);
        return TN_OK;
    }
    size_t rs = tn_dtype_row_size(t->type, t->cols);
    if (nbytes != rs * (size_t)t->rows * (size_t)t->n_src)
        return tn__err(TN_ERR_INVALID, "convert: %s: %zu bytes asked, %zu expected", t->name, nbytes,
                       rs * (size_t)t->rows * (size_t)t->n_src);
    float *row = malloc((size_t)t->cols * sizeof *row);
    if (!row)
        return tn__err(TN_ERR_NOMEM, "convert: out of memory for a row of %lld", (long long)t->cols);
    uint8_t *o = dst;
    tn_status s = TN_OK;
    for (int e = 0; e < t->n_src && s == TN_OK; e++)
        for (int64_t r = 0; r < t->rows && s == TN_OK; r++, o += rs) {
            s = tn_st_read_f32(t->src[e], (uint64_t)(src_row(t, r) * t->cols), (uint64_t)t->cols, row);
            if (s == TN_OK) /* tn_quant_row: the quantizer tern quantize uses */
                s = tn_quant_row(t->type, row, o, t->cols, NULL);
        }
    free(row);
    return s;
}

static tn_status check_all_claimed(tn__cv *c)
{
    int64_t n = tn_st_set_n_tensors(c->st), n_layer = 0;
    if (tn_hf_config_int(c->cfg, "num_hidden_layers", false, 0, 0, INT32_MAX, &n_layer) != TN_OK)
        return TN_ERR_FORMAT;
    for (int64_t i = 0; i < n; i++) {
        if (c->claimed[i])
            continue;
        const tn_st_tensor *t = tn_st_set_tensor_at(c->st, i);
        size_t l = strlen(t->name);
        /* Precomputed RoPE tables some checkpoints carry. */
        if (l >= 21 && !strcmp(t->name + l - 21, "rotary_emb.inv_freq"))
            continue;
        /* DeepSeek-V3's multi-token-prediction layers sit after the last layer. */
        int layer;
        if (!strncmp(c->family, "deepseek", 8) && sscanf(t->name, "model.layers.%d.", &layer) == 1 &&
            layer >= n_layer)
            continue;
        return tn__err(TN_ERR_UNSUPPORTED, "convert: %s: tensor '%s' is not used by the %s converter", t->file,
                       t->name, c->family);
    }
    return TN_OK;
}

static void cv_free(tn__cv *c)
{
    for (int64_t i = 0; i < c->n_t; i++) {
        free(c->t[i].src);
        free(c->t[i].data);
    }
    free(c->t);
    free(c->claimed);
    tn_gguf_writer_free(c->w);
    tn_st_set_free(c->st);
    tn_hf_config_free(c->cfg);
}

/* --dtype q8_0|q4_0: the tensors were planned as F32 (what `--dtype f32`
 * writes); give each the type `tern quantize` would give it in that mix,
 * with the same rules (compress/quantize.h), so the result equals
 * converting to F32 and quantizing, byte for byte. */
static tn_status plan_mix(tn__cv *c, tn_dtype mix)
{
    tn_quant_rules r;
    if (!tn_quant_rules_init(&r, tn_dtype_traits_of(mix)->name, false))
        return tn__err(TN_ERR_UNSUPPORTED, "convert: no quantization mix %s", tn_dtype_traits_of(mix)->name);
    int64_t v = 0;
    if (tn_hf_config_int(c->cfg, "num_attention_heads", false, 0, 0, INT32_MAX, &v) == TN_OK)
        r.n_head = (int32_t)v;
    if (tn_hf_config_int(c->cfg, "num_key_value_heads", false, r.n_head, 0, INT32_MAX, &v) == TN_OK)
        r.n_head_kv = (int32_t)v;
    tn__err_clear();
    for (int64_t i = 0; i < c->n_t; i++)
        tn_quant_rules_count(&r, c->t[i].name);
    bool any = false;
    for (int64_t i = 0; i < c->n_t; i++) {
        tn__cv_tensor *t = &c->t[i];
        const int64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], 1};
        t->type = tn_quant_rules_type(&r, t->name, ne, t->type, NULL);
        any |= t->type != TN_DTYPE_F32 && t->type != TN_DTYPE_F16 && t->type != TN_DTYPE_BF16;
    }
    tn_status s = tn_gguf_set_u32(c->w, "general.file_type", r.file_type);
    if (s == TN_OK && any)
        s = tn_gguf_set_u32(c->w, "general.quantization_version", 2);
    return s;
}

tn_status tn_convert_hf(const char *dir, const char *out_path, tn_dtype dtype, tn_convert_info *info)
{
    const bool mix = dtype == TN_DTYPE_Q8_0 || dtype == TN_DTYPE_Q4_0;
    if (dtype != TN_DTYPE_F32 && dtype != TN_DTYPE_F16 && dtype != TN_DTYPE_BF16 && !mix)
        return tn__err(TN_ERR_UNSUPPORTED, "convert: output type %s (f32, f16, bf16, q8_0, q4_0)",
                       tn_dtype_traits_of(dtype) ? tn_dtype_traits_of(dtype)->name : "?");
    tn__cv c = {.dir = dir, .dtype = mix ? TN_DTYPE_F32 : dtype};
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    tn_status s = tn_hf_config_load(path, &c.cfg);
    if (s == TN_OK)
        s = tn_st_set_open(dir, &c.st);
    if (s == TN_OK)
        s = tn_gguf_writer_new(&c.w);
    if (s == TN_OK && !(c.claimed = calloc((size_t)tn_st_set_n_tensors(c.st) + 1, 1)))
        s = tn__err(TN_ERR_NOMEM, "convert: out of memory");
    if (s == TN_OK)
        s = tn__cv_family(&c);
    if (s == TN_OK)
        s = check_all_claimed(&c);
    if (s == TN_OK && mix)
        s = plan_mix(&c, dtype);
    for (int64_t i = 0; i < c.n_t && s == TN_OK; i++) {
        const tn__cv_tensor *t = &c.t[i];
        s = tn_gguf_add_tensor_fn(c.w, t->name, t->type, t->n_dims, t->ne, fill, (void *)t);
        c.info.n_src += t->n_src;
        c.info.n_params += (uint64_t)(t->rows * t->cols * (t->data ? 1 : t->n_src));
    }
    if (s == TN_OK)
        s = tn__cv_vocab(&c, c.info.n_vocab);
    if (s == TN_OK) {
        s = tn_gguf_writer_write(c.w, out_path);
        if (s != TN_OK)
            unlink(out_path);
    }
    c.info.n_tensors = c.n_t;
    snprintf(c.info.family, sizeof c.info.family, "%s", c.family);
    snprintf(c.info.arch, sizeof c.info.arch, "%s", c.arch);
    if (info)
        *info = c.info;
    cv_free(&c);
    return s;
}
