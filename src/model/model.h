/*
 * model — hyper-parameters, the weight table, the KV cache and the batched
 * forward pass of the decoder families: dense (llama, qwen2, qwen3) and
 * mixture-of-experts (llama with experts = Mixtral, qwen2moe, qwen3moe,
 * deepseek2 = DeepSeek-V2/V3 with multi-head latent attention; moe.c has
 * the routing essay, mla.c the latent attention).
 *
 * THE BATCHED FORWARD (DESIGN.md, "central interfaces")
 * One call runs one flattened batch. Token i carries its id, its position in
 * its sequence, its sequence id, the KV-cache slot its K/V are written to,
 * and whether its logits row is wanted. Prefill chunks and decode tokens of
 * many sequences share one call; each weight matrix is read once per call
 * for the whole batch. Token i attends to every cache cell that holds its
 * sequence at a position <= its own, including cells written earlier in the
 * same call, in increasing position order (so the result does not depend on
 * which slots the caller chose or what else is in the batch).
 *
 * The caller owns slot allocation: the serving layer's paged block manager
 * maps (sequence, position) to slots; `tern run` simply uses slot = pos.
 */
#ifndef TERN_MODEL_MODEL_H
#define TERN_MODEL_MODEL_H

#include "base/pool.h"
#include "format/gguf.h"
#include "kern/kern.h"

typedef enum tn_arch { TN_ARCH_LLAMA = 0, TN_ARCH_QWEN2, TN_ARCH_QWEN3, TN_ARCH_QWEN2MOE, TN_ARCH_QWEN3MOE,
                       TN_ARCH_DEEPSEEK2 } tn_arch;

/* How router logits become expert scores (<arch>.expert_gating_func, llama.cpp's numbering). */
typedef enum tn_expert_gating { TN_GATING_SOFTMAX = 1, TN_GATING_SIGMOID = 2 } tn_expert_gating;

/* RoPE pairing: NORM rotates adjacent pairs (x[2i], x[2i+1]) — llama's GGUF
 * q/k weights are permuted so this equals HF's rotate_half; NEOX rotates
 * (x[i], x[i + n_rot/2]) — qwen2/qwen3. */
typedef enum tn_rope_type { TN_ROPE_NORM = 0, TN_ROPE_NEOX = 1 } tn_rope_type;

typedef struct tn_hparams {
    tn_arch arch;
    char arch_name[32];        /* general.architecture */
    int32_t n_vocab;
    int32_t n_ctx_train;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;          /* n_embd / n_head unless attention.key_length says otherwise */
    int32_t n_ff;
    int32_t n_rot;             /* rope.dimension_count, default head_dim */
    float norm_eps;            /* attention.layer_norm_rms_epsilon */
    float rope_freq_base;      /* rope.freq_base, default 10000 */
    float rope_freq_scale;     /* 1 / rope.scaling.factor for linear scaling, else 1 */
    tn_rope_type rope_type;
    /* Mixture of experts; n_expert == 0 for a dense model. */
    int32_t n_expert;          /* expert_count: routed experts per MoE layer */
    int32_t n_expert_used;     /* expert_used_count: top-k */
    int32_t n_ff_exp;          /* expert_feed_forward_length (llama/Mixtral: feed_forward_length) */
    int32_t n_ff_shexp;        /* expert_shared_feed_forward_length; 0: no shared expert */
    int32_t n_expert_shared;   /* expert_shared_count (shared expert width = n_ff_shexp) */
    bool expert_weights_norm;  /* renormalize the top-k weights to sum 1 (Mixtral, qwen3moe: yes) */
    float expert_weights_scale;/* routed_scaling_factor applied after the norm (default 1) */
    tn_expert_gating expert_gating;
    int32_t n_layer_dense_lead;/* leading_dense_block_count: the first layers keep a dense FFN */
    int32_t n_expert_groups;   /* expert_group_count (1: no group limit) */
    int32_t n_group_used;      /* expert_group_used_count: groups the top-k may draw from */
    /* Multi-head latent attention (deepseek2); kv_lora_rank == 0 otherwise.
     * head_dim is then qk_nope + qk_rope (key_length) and n_rot qk_rope. */
    int32_t q_lora_rank;       /* attention.q_lora_rank; 0: plain attn_q */
    int32_t kv_lora_rank;      /* attention.kv_lora_rank */
    int32_t head_dim_v;        /* attention.value_length */
    /* YaRN RoPE scaling (deepseek2): rope_freq_scale = 1 / factor then. */
    bool rope_yarn;
    int32_t rope_yarn_orig_ctx;  /* rope.scaling.original_context_length */
    float rope_yarn_log_mul;     /* rope.scaling.yarn_log_multiplier (0.1 * mscale_all_dim) */
} tn_hparams;

/* A weight tensor borrowed from the mapped file. data == NULL: absent.
 * ne[0] is the contiguous (input) dimension; ne[2] > 1 only for the stacked
 * expert tensors (ne[2] = n_expert matrices of ne[1] rows each). */
typedef struct tn_matrix {
    const void *data;
    tn_dtype type;
} tn_matrix;

typedef struct tn_weight {
    const void *data;
    tn_dtype type;
    int64_t ne[3];
    /* Stacked expert tensors after tn_model_repack_experts: (ne[2]) each
     * expert's own matrix and dtype (x16 copies of the repacked experts, the
     * file's slices of the others); NULL: expert p is the p-th run of ne[1]
     * rows of `type` at data. Read experts through tn_weight_expert. */
    const tn_matrix *exps;
} tn_weight;

/* Expert p (a physical slot, < ne[2]) of a stacked expert tensor: its
 * (ne[1], ne[0]) matrix and dtype, whatever the layout. */
tn_matrix tn_weight_expert(const tn_weight *w, int32_t p);
/* tn_matmul scratch bytes for n_tokens rows against any expert of w (the
 * largest over the dtypes its experts have); 0 for an absent w. */
size_t tn_weight_expert_wsize(const tn_weight *w, int64_t n_tokens);

typedef struct tn_layer {
    tn_weight attn_norm;   /* (n_embd) f32 */
    tn_weight wq;          /* (n_head*head_dim rows, n_embd cols) */
    tn_weight wk;          /* (n_head_kv*head_dim, n_embd) */
    tn_weight wv;          /* (n_head_kv*head_dim, n_embd) */
    tn_weight bq, bk, bv;  /* qwen2 biases (rows) f32, else absent */
    tn_weight q_norm;      /* qwen3: (head_dim) f32, else absent */
    tn_weight k_norm;      /* qwen3: (head_dim) f32, else absent */
    tn_weight wo;          /* (n_embd, n_head*head_dim) */
    tn_weight ffn_norm;    /* (n_embd) f32 */
    tn_weight ffn_gate;    /* (n_ff, n_embd) */
    tn_weight ffn_up;      /* (n_ff, n_embd) */
    tn_weight ffn_down;    /* (n_embd, n_ff) */
    /* MoE layers (ffn_gate_inp present; then the dense ffn_* are absent). */
    tn_weight ffn_gate_inp;       /* router (n_expert rows, n_embd cols) */
    tn_weight ffn_gate_exps;      /* (n_expert, n_ff_exp rows, n_embd cols) stacked */
    tn_weight ffn_up_exps;        /* (n_expert, n_ff_exp, n_embd) */
    tn_weight ffn_down_exps;      /* (n_expert, n_embd, n_ff_exp) */
    tn_weight ffn_gate_inp_shexp; /* qwen2moe shared-expert gate (n_embd) f32-or-matrix row, or absent */
    tn_weight ffn_gate_shexp;     /* (n_ff_shexp, n_embd), or absent */
    tn_weight ffn_up_shexp;       /* (n_ff_shexp, n_embd) */
    tn_weight ffn_down_shexp;     /* (n_embd, n_ff_shexp) */
    tn_weight exp_probs_b;        /* deepseek3 selection bias (n_expert) f32, or absent */
    /* Multi-head latent attention (deepseek2; then wq/wk/wv/wo above are unused but wq = attn_q
     * when there is no q LoRA and wo = attn_output). */
    tn_weight wq_a;               /* (q_lora_rank, n_embd), or absent */
    tn_weight q_a_norm;           /* (q_lora_rank) f32 */
    tn_weight wq_b;               /* (n_head*head_dim, q_lora_rank) */
    tn_weight wkv_a;              /* (kv_lora_rank + n_rot, n_embd): latent, then the shared RoPE key */
    tn_weight kv_a_norm;          /* (kv_lora_rank) f32 */
    tn_weight wkv_b;              /* (n_head*(head_dim - n_rot + head_dim_v), kv_lora_rank): per head W_UK rows then W_UV rows, or absent */
    /* What mla.c multiplies by (load_moe.c): attn_k_b / attn_v_b of files that ship them split, else
     * made from attn_kv_b at load. Head h's W_UV is the first head_dim_v of the ne[1] rows from row h*ne[1]. */
    tn_weight wk_b;               /* (n_head, kv_lora_rank rows, head_dim - n_rot cols): W_UK[h]ᵀ */
    tn_weight wv_b;               /* (n_head, ne[1] >= head_dim_v rows, kv_lora_rank cols): W_UV[h] */
} tn_layer;

typedef struct tn_model {
    tn_gguf *gguf;         /* owned; weights point into its mapping */
    tn_hparams hp;
    tn_weight tok_embd;    /* (n_vocab rows, n_embd cols) */
    tn_weight output_norm; /* (n_embd) f32 */
    tn_weight output;      /* (n_vocab, n_embd); == tok_embd when tied */
    tn_weight rope_freqs;  /* (n_rot/2) f32 frequency divisors (Llama 3), or absent */
    tn_layer *layers;      /* (n_layer) */
    /* Expert placement (DESIGN.md): logical expert e of layer l lives in
     * physical slot expert_map[l * n_expert + e] of the stacked tensors.
     * Identity after load; NULL for a dense model. The forward pass never
     * indexes experts any other way, so a balancer may remap between calls. */
    int32_t *expert_map;   /* (n_layer, n_expert) */
    void **mla_owned;      /* (n_layer) the W_UKᵀ load_moe.c made from attn_kv_b (wk_b points there), or NULL */
    void *repacked;        /* the x16 copies of Q4_0/Q8_0 matrices (load_repack.c) their data points to, or NULL */
    tn_matrix *exps_tab;   /* (n_layer, 3, n_expert) the stacked tensors' exps tables (load_repack_exps.c), or NULL */
    void *exps_repacked;   /* the x16 copies of the repacked experts, or NULL */
} tn_model;

/* Loads a model from a GGUF file. Every hyper-parameter and tensor is
 * checked: a missing key, an unknown architecture, a tensor of the wrong
 * shape or a dtype without kernels is an error naming it. */
tn_status tn_model_load(const char *path, tn_model **out) TN_MUST_CHECK;
/* Same from an opened file; takes ownership of g (also on failure). */
tn_status tn_model_from_gguf(tn_gguf *g, tn_model **out) TN_MUST_CHECK;
void tn_model_free(tn_model *m);

/* How to load. defer_experts: leave the stacked expert tensors of Q4_0/Q8_0
 * MoE models in the file's layout (and their pages untouched), for a
 * process that computes only some experts (expert parallelism) and calls
 * tn_model_repack_experts with those once it knows them. Otherwise every
 * expert is repacked at load (where the x16 layout applies at all). */
typedef struct tn_model_opts {
    bool defer_experts;
} tn_model_opts;

/* tn_model_load with options (NULL: the defaults, i.e. tn_model_load). */
tn_status tn_model_load_opts(const char *path, const tn_model_opts *opts, tn_model **out) TN_MUST_CHECK;

/* Copies the experts of the stacked ffn_{gate,up,down}_exps tensors into
 * the x16 layout (kern/repack.h), each expert its own run of 16-row groups,
 * where the running ISA has a kernel for it and TERN_REPACK is not "0".
 * want: (n_layer, n_expert) bytes over PHYSICAL slots, nonzero = repack;
 * NULL = all. Only the wanted experts' bytes are read; their pages of the
 * file mapping are dropped afterwards. The others stay readable in the
 * file's layout (tn_weight_expert gives either). Once per model: a second
 * call is TN_ERR_INVALID; TN_ERR_NOMEM leaves the model unchanged. Not
 * while a forward pass runs. */
tn_status tn_model_repack_experts(tn_model *m, const uint8_t *want) TN_MUST_CHECK;

/* --- KV cache --------------------------------------------------------- */

/* n_slots cells; each holds one token's K and V for every layer (F32 for
 * now, (n_layer, n_slots, n_head_kv*head_dim)) and remembers which
 * (sequence, position) it holds. With multi-head latent attention
 * (kv_lora_rank > 0) a cell holds instead the latent and the shared RoPE
 * key, (n_layer, n_slots, kv_lora_rank + n_rot), and no V. */
typedef struct tn_kv_cache tn_kv_cache;

tn_status tn_kv_new(const tn_model *m, int32_t n_slots, int32_t n_seq_max, tn_kv_cache **out) TN_MUST_CHECK;

/* How K and V are stored (kv.c has the layouts): F32 (tn_kv_new's), F16,
 * or Q8 — int8 per token and K/V head with one f32 scale each. Q8 and F16
 * need a model without latent attention (TN_ERR_UNSUPPORTED otherwise). */
typedef enum tn_kv_type { TN_KV_F32 = 0, TN_KV_F16 = 1, TN_KV_Q8 = 2 } tn_kv_type;
tn_status tn_kv_new_typed(const tn_model *m, int32_t n_slots, int32_t n_seq_max, tn_kv_type type,
                          tn_kv_cache **out) TN_MUST_CHECK;
tn_kv_type tn_kv_get_type(const tn_kv_cache *kv);
/* K+V bytes one token takes over all layers. */
size_t tn_kv_bytes_per_token(const tn_kv_cache *kv);
/* "f32", "f16", "q8"; parsing is case-insensitive, false if unknown. */
const char *tn_kv_type_name(tn_kv_type t);
bool tn_kv_type_from_name(const char *name, tn_kv_type *out);
void tn_kv_free(tn_kv_cache *kv);
int32_t tn_kv_n_slots(const tn_kv_cache *kv);
/* Forgets every cell of sequence seq (they can be reused). */
void tn_kv_seq_rm(tn_kv_cache *kv, int32_t seq);
/* Forgets the cells of seq at positions >= pos (rewind). */
void tn_kv_seq_truncate(tn_kv_cache *kv, int32_t seq, int32_t pos);
/* Forgets everything. */
void tn_kv_clear(tn_kv_cache *kv);

/* Table mode, for a paged cache whose full blocks are shared by several
 * sequences (prefix caching). A cell records ONE (sequence, position), so a
 * slot in several sequences' block tables cannot be described by the cells;
 * instead the caller declares the whole mapping: sequence seq's positions
 * 0..n-1 live in slots[0..n-1] (the block table flattened to slots). From
 * then on, until tn_kv_seq_rm(seq), tn_kv_clear or another call for seq:
 *   - a batch token of seq at pos must have pos < n and kv_slot == slots[pos]
 *     (TN_ERR_INVALID otherwise), and writing it records nothing in the cells;
 *   - token i of seq attends to slots[0..pos[i]], in that order.
 * slots is BORROWED and read at every tn_forward_run: keep it alive and
 * unchanged in [0, n) until the next call for seq (growing it is fine: call
 * again with the larger n). slots == NULL or n == 0 leaves table mode. Any
 * cells seq held in the ordinary mode are forgotten. Slot contents are the
 * caller's business: writing a slot another sequence's table also names
 * overwrites that sequence's K/V.
 * Errors: TN_ERR_INVALID for seq out of range, n > n_slots or a slot out of
 * range (nothing changes then); TN_ERR_NOMEM if the per-call layout could
 * not grow. It grows only when the tables' total exceeds every earlier
 * total, so a steady decode loop does not allocate. Owner thread only. */
tn_status tn_kv_seq_set_slots(tn_kv_cache *kv, int32_t seq, const int32_t *slots, int32_t n) TN_MUST_CHECK;

/* --- batched forward -------------------------------------------------- */

/* tn_batch is defined in tern/tern.h (public). */

/* Scratch for batches of up to n_batch_max tokens; all the forward pass
 * needs is allocated here, so tn_forward_run does not allocate. */
typedef struct tn_forward tn_forward;

tn_status tn_forward_new(const tn_model *m, int32_t n_batch_max, tn_forward **out) TN_MUST_CHECK;
void tn_forward_free(tn_forward *f);

/* Runs the batch: writes its K/V into kv, and writes the logits rows of the
 * tokens with want_logits set, in batch order, to logits
 * ((n_wanted, n_vocab) floats). A malformed batch (ids, slots, sequences out
 * of range, duplicate slots, too many tokens) is TN_ERR_INVALID naming the
 * token and field; nothing is written then. Runs on the calling thread plus
 * the pool's workers. */
tn_status tn_forward_run(tn_forward *f, tn_kv_cache *kv, tn_pool *pool, const tn_batch *b,
                         float *logits) TN_MUST_CHECK;

/* Optional observer of every matrix product's input (for importance
 * matrices, tern imatrix): called on the owner thread, before the product,
 * with the layer (-1 for the output matrix), the tensor's short name (the
 * GGUF name without "blk.N." and ".weight": "attn_q", "attn_k", "attn_v",
 * "attn_output", "ffn_gate", "ffn_up", "ffn_down", "output"; MoE layers
 * "ffn_gate_inp", "ffn_{gate,up,down}_exps", "ffn_{gate,up,down}_shexp",
 * "ffn_gate_inp_shexp"; MLA layers "attn_q_a", "attn_q_b" (or "attn_q"),
 * "attn_kv_a_mqa", and "attn_kv_b" with the normalized latents as its
 * input, as in the unabsorbed product), expert (the logical expert of an
 * "_exps" tensor, whose rows are the tokens routed to it; -1 otherwise) and
 * its input rows x ((n_rows, n_cols) floats, valid during the call). The
 * last layer's attn_output and FFN, and "output", see only the tokens that
 * want logits. Routed experts are observed only when computed locally (not
 * under expert parallelism). fn NULL turns it off. */
typedef void (*tn_forward_observer)(void *ud, int32_t layer, const char *tensor, int32_t expert, const float *x,
                                    int32_t n_rows, int32_t n_cols);
void tn_forward_set_observer(tn_forward *f, tn_forward_observer fn, void *ud);

/* --- expert parallelism hook ------------------------------------------ */

/* Computes the routed-expert part of MoE layer il for n tokens: out
 * ((n, n_embd)) = per token sum_j w[j] * FFN_{sel[j]}(xn), added from zero
 * in increasing expert index. xn ((n, n_embd)), sel and w
 * ((n, n_expert_used)). n may be 0. dist/ep.c provides one that sends each
 * assignment to the rank holding its expert. */
typedef tn_status (*tn_moe_routed_fn)(void *ctx, tn_pool *pool, int32_t il, const float *xn, int32_t n,
                                      const int32_t *sel, const float *w, float *out);

/* Routes f's MoE layers' routed experts through fn (NULL: back to local
 * experts). With a hook the forward pass is COLLECTIVE: fn is called for
 * every MoE layer of every tn_forward_run, in layer order, also when the
 * batch has no tokens or no rows left before a MoE layer (then n == 0), so
 * every rank of an expert-parallel group can call tn_forward_run once per
 * step with whatever it has. An error of fn ends the call with that error
 * (the KV cells of the batch are written, its logits are not). Routing and
 * shared experts stay local. TN_ERR_INVALID for a dense model. */
tn_status tn_forward_set_moe_routed(tn_forward *f, tn_moe_routed_fn fn, void *ctx) TN_MUST_CHECK;

/* --- routing statistics (moe_stats.c) ---------------------------------- */

/* Tokens routed to each expert of each MoE layer over the last `window`
 * forward calls. The forward pass of a MoE model keeps one (owner thread
 * only); a dense model has none. */
typedef struct tn_moe_stats tn_moe_stats;

/* The forward state's statistics, or NULL for a dense model. */
const tn_moe_stats *tn_forward_moe_stats(const tn_forward *f);
/* Window length in calls, and how many calls the window holds now (<= window). */
int32_t tn_moe_stats_window(const tn_moe_stats *st);
int32_t tn_moe_stats_n_calls(const tn_moe_stats *st);
/* Tokens routed to logical expert e of layer il over the window (0 for a
 * dense layer or indexes out of range). */
int64_t tn_moe_stats_count(const tn_moe_stats *st, int32_t il, int32_t e);
/* Tokens routed to expert e of layer il since the statistics were made. */
int64_t tn_moe_stats_total(const tn_moe_stats *st, int32_t il, int32_t e);
int32_t tn_moe_stats_n_layer(const tn_moe_stats *st);
int32_t tn_moe_stats_n_expert(const tn_moe_stats *st);
/* max / mean of layer il's window counts (1: even load; 0 when nothing was
 * routed there in the window). */
double tn_moe_stats_imbalance(const tn_moe_stats *st, int32_t il);

/* Snapshots, for other threads: an empty copy sized like `like`
 * (TN_ERR_INVALID for NULL, TN_ERR_NOMEM), filled by tn_moe_stats_copy
 * (window counts, totals, n_calls; same sizes required), freed by
 * tn_moe_stats_free (only snapshots: the forward state frees its own). The
 * copy must run where the source may be read (its owner thread, or under
 * the lock that guards it). */
tn_status tn_moe_stats_snapshot_new(const tn_moe_stats *like, tn_moe_stats **out) TN_MUST_CHECK;
void tn_moe_stats_copy(tn_moe_stats *dst, const tn_moe_stats *src);
void tn_moe_stats_free(tn_moe_stats *st);

/* Writes the statistics to path: CSV when it ends in ".csv", else JSON
 * (formats in moe_stats.c); layers that never routed a token (dense ones)
 * are left out. Written to path.tmp, then renamed. TN_ERR_IO naming the
 * file on failure, TN_ERR_INVALID for NULL statistics. */
tn_status tn_moe_stats_write(const tn_moe_stats *st, const char *path) TN_MUST_CHECK;

#endif /* TERN_MODEL_MODEL_H */
