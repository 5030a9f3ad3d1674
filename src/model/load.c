/*
 * load.c — hyper-parameters and the weight table of a dense decoder, read
 * from a GGUF file (llama.cpp's key and tensor names).
 *
 * Key idea: check everything the forward pass will rely on, here, once.
 * After tn_model_from_gguf succeeds, every tensor the forward pass touches
 * exists, has exactly the shape the hyper-parameters imply, has a dtype with
 * kernels and whole blocks per row; norm weights and biases are F32. The
 * forward pass then indexes weights without further checks. A file with a
 * tensor no supported architecture uses is rejected too (as llama.cpp does):
 * ignoring it could silently compute the wrong model.
 *
 * Supported `general.architecture` values and what differs between them:
 *
 *   arch    RoPE pairs      q/k/v biases   per-head q/k RMSNorm
 *   llama   NORM (2i,2i+1)  optional       -
 *   qwen2   NEOX (i,i+d/2)  required       -
 *   qwen3   NEOX            optional       required (attn_q_norm, attn_k_norm)
 *   qwen2moe NEOX           optional       -
 *   qwen3moe NEOX           optional       required
 *   deepseek2 NORM, on the qk_rope part only: multi-head latent attention (load_moe.c, mla.c)
 *
 * Mixture-of-experts layers (llama with <arch>.expert_count = Mixtral,
 * qwen2moe, qwen3moe) replace the dense ffn_* tensors by a router and
 * stacked experts; load_moe.c reads those keys and tensors.
 */
#include "model/model_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sizes above these are treated as corrupt files, which keeps every product
 * of two of them (and the byte sizes derived from them) far from overflow. */
#define MAX_DIM (1 << 24)    /* n_embd, n_ff, n_vocab, head_dim * n_head */
#define MAX_LAYERS 4096
#define MAX_HEADS 4096

struct tn__loader {
    tn_gguf *g;
    tn_model *m;
    char arch[32];
    const tn_gguf_tensor **used; /* (n_tensors) tensors taken so far */
    int64_t n_used;
};
typedef struct tn__loader loader;

/* ==========================================================================
 * Metadata keys
 * ======================================================================== */

/* Reads "<arch>.<suffix>" as u32 into *out. Absent: TN_ERR_FORMAT naming the
 * key if required, else *out = def. */
static tn_status key_u32(loader *L, const char *suffix, bool required, uint32_t def, uint32_t *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", L->arch, suffix);
    if (tn_gguf_find_key(L->g, key) < 0) {
        if (required)
            return tn__err(TN_ERR_FORMAT, "model: missing key '%s'", key);
        *out = def;
        return TN_OK;
    }
    tn_status s = tn_gguf_get_u32(L->g, key, out);
    if (s != TN_OK)
        return tn__err_prefix(TN_ERR_FORMAT, "model: key '%s'", key);
    return TN_OK;
}

static tn_status key_f32(loader *L, const char *suffix, bool required, float def, float *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", L->arch, suffix);
    if (tn_gguf_find_key(L->g, key) < 0) {
        if (required)
            return tn__err(TN_ERR_FORMAT, "model: missing key '%s'", key);
        *out = def;
        return TN_OK;
    }
    tn_status s = tn_gguf_get_f32(L->g, key, out);
    if (s != TN_OK)
        return tn__err_prefix(TN_ERR_FORMAT, "model: key '%s'", key);
    return TN_OK;
}

/* Copies "<arch>.<suffix>" (a string) into buf; absent: buf = "". */
static tn_status key_str(loader *L, const char *suffix, char *buf, size_t cap)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", L->arch, suffix);
    buf[0] = '\0';
    if (tn_gguf_find_key(L->g, key) < 0)
        return TN_OK;
    const char *s;
    size_t len;
    tn_status st = tn_gguf_get_str(L->g, key, &s, &len);
    if (st != TN_OK)
        return tn__err_prefix(TN_ERR_FORMAT, "model: key '%s'", key);
    if (len >= cap)
        return tn__err(TN_ERR_UNSUPPORTED, "model: key '%s' value too long (%zu bytes)", key, len);
    memcpy(buf, s, len);
    buf[len] = '\0';
    return TN_OK;
}

/* A hyper-parameter that must lie in [lo, hi]. */
static tn_status check_range(const char *arch, const char *what, int64_t v, int64_t lo, int64_t hi)
{
    if (v < lo || v > hi)
        return tn__err(TN_ERR_FORMAT, "model: %s.%s = %lld out of range [%lld, %lld]", arch, what, (long long)v,
                       (long long)lo, (long long)hi);
    return TN_OK;
}

/* RoPE scaling, following llama.cpp: rope.scaling.type "none" means no
 * scaling; "linear" or an absent type divides positions by
 * rope.scaling.factor (or the older rope.scale_linear) when one is given;
 * anything else (yarn, longrope, ...) is not implemented. */
static tn_status read_rope_scaling(loader *L, tn_hparams *hp)
{
    char type[32];
    tn_status s = key_str(L, "rope.scaling.type", type, sizeof type);
    if (s != TN_OK)
        return s;
    hp->rope_freq_scale = 1.0f;
    if (strcmp(type, "none") == 0)
        return TN_OK;
    hp->rope_yarn = strcmp(type, "yarn") == 0 && hp->arch == TN_ARCH_DEEPSEEK2; /* load_moe.c reads the rest */
    if (type[0] && strcmp(type, "linear") != 0 && !hp->rope_yarn)
        return tn__err(TN_ERR_UNSUPPORTED, "model: %s.rope.scaling.type '%s' is not supported (none, linear)",
                       L->arch, type);
    float factor = 0.0f;
    if ((s = key_f32(L, "rope.scaling.factor", false, 0.0f, &factor)) != TN_OK)
        return s;
    if (factor == 0.0f && (s = key_f32(L, "rope.scale_linear", false, 0.0f, &factor)) != TN_OK)
        return s;
    if (factor != 0.0f) {
        if (!(factor > 0.0f && factor < 1e6f))
            return tn__err(TN_ERR_FORMAT, "model: %s.rope.scaling.factor = %g is not a positive factor", L->arch,
                           (double)factor);
        hp->rope_freq_scale = 1.0f / factor;
    }
    return TN_OK;
}

static tn_status read_hparams(loader *L, tn_hparams *hp)
{
    const char *a = L->arch;
    uint32_t ctx, embd, n_layer, n_ff, n_head, n_head_kv, head_dim, n_rot, v_len;
    tn_status s;
    if ((s = key_u32(L, "context_length", true, 0, &ctx)) != TN_OK ||
        (s = key_u32(L, "embedding_length", true, 0, &embd)) != TN_OK ||
        (s = key_u32(L, "block_count", true, 0, &n_layer)) != TN_OK ||
        (s = key_u32(L, "feed_forward_length", true, 0, &n_ff)) != TN_OK ||
        (s = key_u32(L, "attention.head_count", true, 0, &n_head)) != TN_OK)
        return s;
    if ((s = check_range(a, "context_length", ctx, 1, INT32_MAX)) != TN_OK ||
        (s = check_range(a, "embedding_length", embd, 1, MAX_DIM)) != TN_OK ||
        (s = check_range(a, "block_count", n_layer, 1, MAX_LAYERS)) != TN_OK ||
        (s = check_range(a, "feed_forward_length", n_ff, 1, MAX_DIM)) != TN_OK ||
        (s = check_range(a, "attention.head_count", n_head, 1, MAX_HEADS)) != TN_OK)
        return s;
    if ((s = key_u32(L, "attention.head_count_kv", false, n_head, &n_head_kv)) != TN_OK)
        return s;
    if ((s = check_range(a, "attention.head_count_kv", n_head_kv, 1, n_head)) != TN_OK)
        return s;
    if (n_head % n_head_kv != 0)
        return tn__err(TN_ERR_FORMAT, "model: %s.attention.head_count %u is not a multiple of head_count_kv %u", a,
                       n_head, n_head_kv);
    /* head_dim: n_embd / n_head unless attention.key_length overrides it. */
    uint32_t def_head_dim = embd % n_head == 0 ? embd / n_head : 0;
    if ((s = key_u32(L, "attention.key_length", false, def_head_dim, &head_dim)) != TN_OK)
        return s;
    if (head_dim == 0)
        return tn__err(TN_ERR_FORMAT,
                       "model: %s.embedding_length %u is not a multiple of head_count %u and no "
                       "attention.key_length is given",
                       a, embd, n_head);
    if ((s = check_range(a, "attention.key_length", head_dim, 2, MAX_DIM / n_head)) != TN_OK)
        return s;
    if ((s = key_u32(L, "attention.value_length", false, head_dim, &v_len)) != TN_OK)
        return s;
    hp->head_dim_v = (int32_t)v_len;
    if (v_len != head_dim && hp->arch != TN_ARCH_DEEPSEEK2)
        return tn__err(TN_ERR_UNSUPPORTED, "model: %s.attention.value_length %u differs from key_length %u", a,
                       v_len, head_dim);
    if ((s = key_u32(L, "rope.dimension_count", false, head_dim, &n_rot)) != TN_OK)
        return s;
    if (n_rot == 0 || n_rot > head_dim || n_rot % 2 != 0)
        return tn__err(TN_ERR_FORMAT, "model: %s.rope.dimension_count %u must be even and in [2, head_dim %u]", a,
                       n_rot, head_dim);
    float eps, base;
    if ((s = key_f32(L, "attention.layer_norm_rms_epsilon", true, 0.0f, &eps)) != TN_OK ||
        (s = key_f32(L, "rope.freq_base", false, 10000.0f, &base)) != TN_OK)
        return s;
    if (!(eps > 0.0f && eps < 1.0f))
        return tn__err(TN_ERR_FORMAT, "model: %s.attention.layer_norm_rms_epsilon = %g is not in (0, 1)", a,
                       (double)eps);
    if (!(base > 1.0f && base < 1e12f))
        return tn__err(TN_ERR_FORMAT, "model: %s.rope.freq_base = %g is not in (1, 1e12)", a, (double)base);
    if ((s = read_rope_scaling(L, hp)) != TN_OK)
        return s;

    hp->n_ctx_train = (int32_t)ctx;
    hp->n_embd = (int32_t)embd;
    hp->n_layer = (int32_t)n_layer;
    hp->n_ff = (int32_t)n_ff;
    hp->n_head = (int32_t)n_head;
    hp->n_head_kv = (int32_t)n_head_kv;
    hp->head_dim = (int32_t)head_dim;
    hp->n_rot = (int32_t)n_rot;
    hp->norm_eps = eps;
    hp->rope_freq_base = base;
    hp->rope_type = hp->arch == TN_ARCH_LLAMA || hp->arch == TN_ARCH_DEEPSEEK2 ? TN_ROPE_NORM : TN_ROPE_NEOX;
    return tn__load_moe_hparams(L, hp);
}

/* ==========================================================================
 * Tensors
 * ======================================================================== */

enum {
    T_REQUIRED = TN__TAKE_REQUIRED, /* absent is an error */
    T_F32 = TN__TAKE_F32,           /* a norm weight or bias: must be F32 */
};

/* Looks up tensor `name`, checks it and fills *w. ne0/ne1: the expected
 * shape; ne1 == 0 means a vector of ne0; ne1 < 0 means a matrix with any
 * positive number of rows (the embedding table, which defines n_vocab).
 * Absent and not required: w->data = NULL. */
static tn_status take3(loader *L, const char *name, int64_t ne0, int64_t ne1, int64_t ne2, int flags,
                       tn_weight *w)
{
    memset(w, 0, sizeof *w);
    const tn_gguf_tensor *t = tn_gguf_find_tensor(L->g, name);
    if (!t) {
        if (flags & T_REQUIRED)
            return tn__err(TN_ERR_FORMAT, "model: missing tensor '%s'", name);
        return TN_OK;
    }
    L->used[L->n_used++] = t;

    int64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
    /* W8A8 (kern/w8a8.h): rows of 4 + n_in bytes, for the plain matrices
     * tn_matmul multiplies (not embeddings, expert stacks or latent attention). */
    const bool w8a8 = t->type == TN_DTYPE_W8A8 || t->type == TN_DTYPE_W8A8_HAD;
    if (w8a8) {
        if (ne1 == 0 || ne2 != 1 || !strncmp(name, "token_embd", 10) || L->m->hp.arch == TN_ARCH_DEEPSEEK2 ||
            ne[0] <= 4)
            return tn__err(TN_ERR_UNSUPPORTED, "model: tensor '%s' is w8a8, which only dense layer matrices may be",
                           name);
        ne[0] -= 4;
    }
    bool vec = ne1 == 0;
    bool shape_ok = ne[0] == ne0 && ne[2] == ne2 && ne[3] == 1 &&
                    (vec ? ne[1] == 1 : ne1 < 0 ? (ne[1] >= 1 && ne[1] <= MAX_DIM) : ne[1] == ne1);
    if (!shape_ok) {
        char want[64];
        if (vec)
            snprintf(want, sizeof want, "[%lld]", (long long)ne0);
        else if (ne1 < 0)
            snprintf(want, sizeof want, "[%lld, n_vocab]", (long long)ne0);
        else if (ne2 != 1)
            snprintf(want, sizeof want, "[%lld, %lld, %lld]", (long long)ne0, (long long)ne1, (long long)ne2);
        else
            snprintf(want, sizeof want, "[%lld, %lld]", (long long)ne0, (long long)ne1);
        return tn__err(TN_ERR_FORMAT, "model: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected %s", name,
                       (long long)ne[0], (long long)ne[1], (long long)ne[2], (long long)ne[3], want);
    }
    const tn_dtype_traits *tr = tn_dtype_traits_of(t->type);
    if (!tr)
        return tn__err(TN_ERR_FORMAT, "model: tensor '%s' has unknown type %d", name, (int)t->type);
    if ((flags & T_F32) && t->type != TN_DTYPE_F32)
        return tn__err(TN_ERR_UNSUPPORTED, "model: tensor '%s' is %s; norm weights and biases must be f32", name,
                       tr->name);
    if (!tr->computable && !w8a8)
        return tn__err(TN_ERR_UNSUPPORTED, "model: tensor '%s' has type %s, which has no kernels", name, tr->name);
    if (ne[0] % tr->block_size != 0)
        return tn__err(TN_ERR_FORMAT, "model: tensor '%s' row of %lld elements is not a multiple of the %s block (%d)",
                       name, (long long)ne[0], tr->name, tr->block_size);
    w->data = t->data;
    w->type = t->type;
    w->ne[0] = ne[0];
    w->ne[1] = ne[1];
    w->ne[2] = ne[2];
    return TN_OK;
}

static tn_status take(loader *L, const char *name, int64_t ne0, int64_t ne1, int flags, tn_weight *w)
{
    return take3(L, name, ne0, ne1, 1, flags, w);
}

/* The loader's services for load_moe.c (model_int.h). */
tn_status tn__load_take(tn__loader *L, const char *name, int64_t ne0, int64_t ne1, int64_t ne2, int flags,
                        tn_weight *w)
{
    return take3(L, name, ne0, ne1, ne2, flags, w);
}

tn_status tn__load_key_u32(tn__loader *L, const char *suffix, bool required, uint32_t def, uint32_t *out)
{
    return key_u32(L, suffix, required, def, out);
}

tn_status tn__load_key_f32(tn__loader *L, const char *suffix, bool required, float def, float *out)
{
    return key_f32(L, suffix, required, def, out);
}

tn_status tn__load_key_bool(tn__loader *L, const char *suffix, bool def, bool *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", L->arch, suffix);
    *out = def;
    if (tn_gguf_find_key(L->g, key) < 0)
        return TN_OK;
    if (tn_gguf_get_bool(L->g, key, out) != TN_OK)
        return tn__err_prefix(TN_ERR_FORMAT, "model: key '%s'", key);
    return TN_OK;
}

tn_model *tn__load_model(tn__loader *L) { return L->m; }

static tn_status take_layer(loader *L, int il, tn_layer *ly)
{
    const tn_hparams *hp = &L->m->hp;
    int64_t embd = hp->n_embd, q_dim = (int64_t)hp->n_head * hp->head_dim;
    int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim, ff = hp->n_ff;
    int bias = T_F32 | (hp->arch == TN_ARCH_QWEN2 ? T_REQUIRED : 0);
    int qk_norm = T_F32 | (hp->arch == TN_ARCH_QWEN3 || hp->arch == TN_ARCH_QWEN3MOE ? T_REQUIRED : 0);
    bool moe = hp->n_expert > 0 && il >= hp->n_layer_dense_lead;
    int dense = moe ? 0 : T_REQUIRED; /* MoE layers: load_moe.c takes the FFN */
    if (hp->arch == TN_ARCH_DEEPSEEK2)
        return tn__load_deepseek2_layer(L, il, ly);
    struct {
        const char *suffix;
        int64_t ne0, ne1;
        int flags;
        tn_weight *w;
    } spec[] = {
        {"attn_norm.weight", embd, 0, T_REQUIRED | T_F32, &ly->attn_norm},
        {"attn_q.weight", embd, q_dim, T_REQUIRED, &ly->wq},
        {"attn_k.weight", embd, kv_dim, T_REQUIRED, &ly->wk},
        {"attn_v.weight", embd, kv_dim, T_REQUIRED, &ly->wv},
        {"attn_q.bias", q_dim, 0, bias, &ly->bq},
        {"attn_k.bias", kv_dim, 0, bias, &ly->bk},
        {"attn_v.bias", kv_dim, 0, bias, &ly->bv},
        {"attn_q_norm.weight", hp->head_dim, 0, qk_norm, &ly->q_norm},
        {"attn_k_norm.weight", hp->head_dim, 0, qk_norm, &ly->k_norm},
        {"attn_output.weight", q_dim, embd, T_REQUIRED, &ly->wo},
        {"ffn_norm.weight", embd, 0, T_REQUIRED | T_F32, &ly->ffn_norm},
        {"ffn_gate.weight", embd, ff, dense, &ly->ffn_gate},
        {"ffn_up.weight", embd, ff, dense, &ly->ffn_up},
        {"ffn_down.weight", ff, embd, dense, &ly->ffn_down},
    };
    for (size_t i = 0; i < TN_ARRAY_LEN(spec); i++) {
        char name[96];
        snprintf(name, sizeof name, "blk.%d.%s", il, spec[i].suffix);
        tn_status s = take(L, name, spec[i].ne0, spec[i].ne1, spec[i].flags, spec[i].w);
        if (s != TN_OK)
            return s;
    }
    if (moe) {
        tn_status s = tn__load_moe_layer(L, il, ly);
        if (s != TN_OK)
            return s;
    }
    /* q and k norms come as a pair, and so do the three biases. */
    if (!ly->q_norm.data != !ly->k_norm.data)
        return tn__err(TN_ERR_FORMAT, "model: layer %d has only one of attn_q_norm and attn_k_norm", il);
    if (!ly->bq.data != !ly->bk.data || !ly->bq.data != !ly->bv.data)
        return tn__err(TN_ERR_FORMAT, "model: layer %d has some but not all of the attn_q/k/v biases", il);
    return TN_OK;
}

static tn_status take_tensors(loader *L)
{
    tn_model *m = L->m;
    tn_hparams *hp = &m->hp;
    tn_status s = take(L, "token_embd.weight", hp->n_embd, -1, T_REQUIRED, &m->tok_embd);
    if (s != TN_OK)
        return s;
    hp->n_vocab = (int32_t)m->tok_embd.ne[1];

    /* The tokenizer, when the file has one, must cover the same ids. */
    if (tn_gguf_find_key(L->g, "tokenizer.ggml.tokens") >= 0) {
        tn_gguf_type et;
        uint64_t n;
        const void *data;
        if (tn_gguf_get_arr(L->g, "tokenizer.ggml.tokens", &et, &n, &data) != TN_OK)
            return tn__err_prefix(TN_ERR_FORMAT, "model: key 'tokenizer.ggml.tokens'");
        if (n != (uint64_t)hp->n_vocab)
            return tn__err(TN_ERR_FORMAT,
                           "model: tokenizer.ggml.tokens has %llu tokens but token_embd.weight has %d rows",
                           (unsigned long long)n, hp->n_vocab);
    }
    if ((s = take(L, "output_norm.weight", hp->n_embd, 0, T_REQUIRED | T_F32, &m->output_norm)) != TN_OK ||
        (s = take(L, "output.weight", hp->n_embd, hp->n_vocab, 0, &m->output)) != TN_OK ||
        (s = take(L, "rope_freqs.weight", hp->n_rot / 2, 0, T_F32, &m->rope_freqs)) != TN_OK)
        return s;
    if (!m->output.data)
        m->output = m->tok_embd; /* tied embeddings */
    if (m->rope_freqs.data) {
        const float *ff = m->rope_freqs.data;
        for (int i = 0; i < hp->n_rot / 2; i++)
            if (!(ff[i] > 0.0f && ff[i] < 1e30f))
                return tn__err(TN_ERR_FORMAT, "model: rope_freqs.weight[%d] = %g is not a positive divisor", i,
                               (double)ff[i]);
    }

    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers)
        return tn__err(TN_ERR_NOMEM, "model: out of memory for %d layers", hp->n_layer);
    for (int il = 0; il < hp->n_layer; il++)
        if ((s = take_layer(L, il, &m->layers[il])) != TN_OK)
            return s;

    /* Every tensor of the file must have been taken. */
    int64_t n_t = tn_gguf_n_tensors(L->g);
    if (L->n_used != n_t) {
        for (int64_t i = 0; i < n_t; i++) {
            const tn_gguf_tensor *t = tn_gguf_tensor_at(L->g, i);
            bool found = false;
            for (int64_t j = 0; j < L->n_used && !found; j++)
                found = L->used[j] == t;
            if (!found)
                return tn__err(TN_ERR_UNSUPPORTED, "model: tensor '%s' is not used by architecture %s", t->name,
                               L->arch);
        }
    }
    return TN_OK;
}

/* ==========================================================================
 * Entry points
 * ======================================================================== */

/* Builds a model over g, taking ownership of g (freed on failure). On
 * failure *out is NULL and tn_last_error() names the key or tensor. */
static tn_status from_gguf(tn_gguf *g, const tn_model_opts *opts, tn_model **out)
{
    *out = NULL;
    if (!g)
        return tn__err(TN_ERR_INVALID, "model: gguf is NULL");
    loader L = {.g = g};
    tn_status s = TN_OK;
    tn_model *m = calloc(1, sizeof *m);
    int64_t n_t = tn_gguf_n_tensors(g);
    L.used = malloc((size_t)(n_t > 0 ? n_t : 1) * sizeof *L.used);
    if (!m || !L.used) {
        s = tn__err(TN_ERR_NOMEM, "model: out of memory");
        goto err;
    }
    m->gguf = g;
    L.m = m;

    const char *arch;
    size_t len;
    if (tn_gguf_find_key(g, "general.architecture") < 0) {
        s = tn__err(TN_ERR_FORMAT, "model: missing key 'general.architecture'");
        goto err;
    }
    if (tn_gguf_get_str(g, "general.architecture", &arch, &len) != TN_OK) {
        s = tn__err_prefix(TN_ERR_FORMAT, "model: key 'general.architecture'");
        goto err;
    }
    static const struct {
        const char *name;
        tn_arch arch;
    } archs[] = {{"llama", TN_ARCH_LLAMA},       {"qwen2", TN_ARCH_QWEN2},       {"qwen3", TN_ARCH_QWEN3},
                 {"qwen2moe", TN_ARCH_QWEN2MOE}, {"qwen3moe", TN_ARCH_QWEN3MOE}, {"deepseek2", TN_ARCH_DEEPSEEK2}};
    size_t k = 0;
    while (k < TN_ARRAY_LEN(archs) && !(strlen(archs[k].name) == len && memcmp(archs[k].name, arch, len) == 0))
        k++;
    if (k == TN_ARRAY_LEN(archs)) {
        s = tn__err(TN_ERR_UNSUPPORTED, "model: architecture '%.*s' is not supported (llama, qwen2, qwen3, qwen2moe, qwen3moe, deepseek2)",
                    (int)TN_MIN(len, 64), arch);
        goto err;
    }
    m->hp.arch = archs[k].arch;
    snprintf(m->hp.arch_name, sizeof m->hp.arch_name, "%s", archs[k].name);
    snprintf(L.arch, sizeof L.arch, "%s", archs[k].name);

    if ((s = read_hparams(&L, &m->hp)) != TN_OK || (s = take_tensors(&L)) != TN_OK ||
        (s = tn__load_repack(m)) != TN_OK ||
        (!(opts && opts->defer_experts) && (s = tn_model_repack_experts(m, NULL)) != TN_OK))
        goto err;
    free(L.used);
    *out = m;
    return TN_OK;
err:
    free(L.used);
    if (m) {
        free(m->layers);
        free(m->expert_map);
        tn__load_mla_free(m);
        tn_free_aligned(m->repacked);
        free(m);
    }
    tn_gguf_free(g);
    return s;
}

tn_status tn_model_from_gguf(tn_gguf *g, tn_model **out) { return from_gguf(g, NULL, out); }

/* Opens path and loads the model from it; on failure the message is
 * prefixed with the path. */
tn_status tn_model_load(const char *path, tn_model **out) { return tn_model_load_opts(path, NULL, out); }

tn_status tn_model_load_opts(const char *path, const tn_model_opts *opts, tn_model **out)
{
    *out = NULL;
    tn_gguf *g;
    tn_status s = tn_gguf_open(path, &g);
    if (s != TN_OK)
        return s;
    s = from_gguf(g, opts, out);
    if (s != TN_OK)
        return tn__err_prefix(s, "%s", path);
    return TN_OK;
}

/* Frees the model and its file mapping. NULL is a no-op. */
void tn_model_free(tn_model *m)
{
    if (!m)
        return;
    tn_gguf_free(m->gguf);
    free(m->layers);
    free(m->expert_map);
    tn__load_mla_free(m);
    tn_free_aligned(m->repacked);
    tn_free_aligned(m->exps_repacked);
    free(m->exps_tab);
    free(m);
}
