/*
 * load_repack.c — the loader's last step: Q4_0, Q8_0 and W8A8 matrices that
 * the forward pass multiplies are replaced by copies in the x16 layout
 * (kern/repack.h: 16 rows interleaved per block, the layout of the int8
 * kernels whose vector lane is a row), where the running ISA has a kernel
 * for it (AVX-512 VNNI, AVX2). The weight keeps its shape; only data and type
 * change, so every tn_matmul / tn_get_row call site works unchanged.
 *
 * Which matrices: the dense ones of every layer (wq, wk, wv, wo, ffn_gate,
 * ffn_up, ffn_down), a MoE layer's router and shared expert, the latent
 * attention's plain products (attn_q_a, attn_q_b, attn_kv_a_mqa; attn_q and
 * attn_output are wq and wo) and the output matrix. Not: the embedding
 * table (read row by row; with tied embeddings `output` gets the copy and
 * tok_embd keeps the file's layout), W_UK / W_UV (attn_k_b / attn_v_b, or
 * views of attn_kv_b: sliced per head, one head's small product per
 * thread) and the stacked expert tensors, which load_repack_exps.c repacks
 * expert by expert.
 *
 * Memory: the copies take one allocation the size of the originals (n_out
 * padded to 16); the pages of the originals that repacking read are then
 * dropped from the mapping (MADV_DONTNEED; the kernel reads them back from
 * the file if anything touches them again), so the resident size stays
 * about one copy of the weights.
 *
 * TERN_REPACK=0 in the environment keeps the file's layout (to compare).
 */
#include "kern/kern.h"
#include "kern/repack.h"
#include "kern/w8a8.h"
#include "model/model_int.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The matrices load_repack may replace, n_weights of them at most. */
static int matrices(tn_model *m, tn_weight **out)
{
    int n = 0;
    for (int il = 0; il < m->hp.n_layer; il++) {
        tn_layer *ly = &m->layers[il];
        tn_weight *ws[] = {&ly->wq,        &ly->wk,         &ly->wv,          &ly->wo,
                           &ly->ffn_gate,  &ly->ffn_up,     &ly->ffn_down,    &ly->ffn_gate_inp,
                           &ly->ffn_gate_shexp, &ly->ffn_up_shexp, &ly->ffn_down_shexp, &ly->wq_a,
                           &ly->wq_b,      &ly->wkv_a};
        for (size_t i = 0; i < TN_ARRAY_LEN(ws); i++)
            out[n++] = ws[i];
    }
    out[n++] = &m->output;
    return n;
}

/* W8A8 rows have no blocks: any n_in repacks (kern/w8a8_x16.h). */
static bool is_w8a8(const tn_weight *w) { return w->type == TN_DTYPE_W8A8 || w->type == TN_DTYPE_W8A8_HAD; }

static bool wanted(const tn_weight *w)
{
    return w->data && w->ne[2] <= 1 && (w->ne[0] % 32 == 0 || is_w8a8(w)) && w->ne[1] > 0 &&
           tn__x16_dtype_for(w->type) != TN_DTYPE_COUNT;
}

/* Drops the whole pages inside [p, p + n) of the file mapping. */
static void drop_pages(const void *p, size_t n)
{
    const long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0)
        return;
    const uintptr_t a = ((uintptr_t)p + (uintptr_t)ps - 1) / (uintptr_t)ps * (uintptr_t)ps;
    const uintptr_t b = ((uintptr_t)p + n) / (uintptr_t)ps * (uintptr_t)ps;
    if (b > a)
        (void)madvise((void *)a, b - a, MADV_DONTNEED);
}

tn_status tn__load_repack(tn_model *m)
{
    const char *env = getenv("TERN_REPACK");
    if (env && !strcmp(env, "0"))
        return TN_OK;
    const int cap = m->hp.n_layer * 14 + 1;
    tn_weight **ws = malloc((size_t)cap * sizeof *ws);
    if (!ws)
        return tn__err(TN_ERR_NOMEM, "model: out of memory repacking weights");
    const int n = matrices(m, ws);
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (wanted(ws[i]))
            total += tn__x16_matrix_bytes(tn__x16_dtype_for(ws[i]->type), ws[i]->ne[0], ws[i]->ne[1]);
    if (total == 0) {
        free(ws);
        return TN_OK;
    }
    char *buf = tn_alloc_huge(total);
    if (!buf) {
        free(ws);
        return tn__err(TN_ERR_NOMEM, "model: out of memory for %zu bytes of repacked weights", total);
    }
    const bool mapped = tn_gguf_is_mapped(m->gguf);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        tn_weight *w = ws[i];
        if (!wanted(w))
            continue;
        const tn_dtype xt = tn__x16_dtype_for(w->type);
        tn__x16_repack(w->type, w->data, w->ne[0], w->ne[1], buf + off);
        if (mapped && w->data != m->tok_embd.data)
            drop_pages(w->data, (is_w8a8(w) ? TN_W8A8_ROW(w->ne[0]) : tn_dtype_row_size(w->type, w->ne[0])) *
                                    (size_t)w->ne[1]);
        w->data = buf + off;
        w->type = xt;
        off += tn__x16_matrix_bytes(xt, w->ne[0], w->ne[1]);
    }
    free(ws);
    m->repacked = buf;
    return TN_OK;
}
