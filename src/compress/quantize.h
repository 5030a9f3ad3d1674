/*
 * quantize — convert a GGUF model's weights to another type, tensor by
 * tensor.
 *
 * Key idea: the output file is planned first (one target type per tensor,
 * chosen by the rules below), then written by the GGUF writer with one fill
 * callback per tensor that dequantizes the source rows to F32 and quantizes
 * them with tn_quantize_row, on the pool's threads. Only one tensor's output
 * is in memory at a time (plus the mapped input), so a model larger than
 * memory quantizes.
 *
 * WHICH TENSOR GETS WHICH TYPE (llama.cpp's llama_tensor_get_type, for the
 * dense decoder families tern runs)
 *   - Kept as they are (copied byte for byte): 1-D tensors, names that do not
 *     end in "weight" (biases), "*_norm.weight", rope_freqs.
 *   - Every other tensor gets the base type of the requested mix (Q4_K_M ->
 *     Q4_K, Q8_0 -> Q8_0, ...). Unless --pure, a quantized mix then raises
 *     some tensors as llama.cpp does: output.weight (token_embd.weight when
 *     the embeddings are tied) goes to Q6_K (to Q8_0 when its rows do not
 *     fill the base type's blocks; Q8_0 stays Q8_0); attn_v and ffn_down get
 *     Q6_K in the "more bits" layers (the first and last eighth and every
 *     third between) for Q4_K_M/Q5_K_M, Q3_K/Q4_K/Q5_K variants for the Q2_K
 *     and Q3_K mixes; attn_output is raised for Q2_K and Q3_K_M/L. --output-type
 *     overrides the output tensor's type.
 *   - FALLBACK. A tensor whose row length (ne[0]) is not a multiple of its
 *     type's block size cannot be stored in it. K-quants fall back as
 *     llama.cpp does (Q2_K/Q3_K -> IQ4_NL, Q4_K -> Q5_0, Q5_K -> Q5_1,
 *     Q6_K -> Q8_0); if that still does not fit, or for the 32-element
 *     types (where llama.cpp refuses the model), the tensor is stored as F16.
 *     stories260K's ffn_down (rows of 172) is the case in point.
 *   - A type this build cannot quantize to (tn_quantize_row answers
 *     TN_ERR_UNSUPPORTED; support grows as formats land) is an error when it
 *     is the base type; when a mix rule asked for it as an upgrade, Q8_0 is
 *     used instead (at least as precise) and the plan says so.
 *   - A tensor already in its target type is copied, not requantized.
 *   - IMPORTANCE (--imatrix): a converted tensor whose name has an entry of
 *     its row length gets that entry's column importances in its quantizer's
 *     weighted error (K-quants, IQ4_NL, Q4_0/Q4_1/Q5_0/Q5_1; the others
 *     ignore it); an entry of another width is an error; a tensor without
 *     an entry is quantized unweighted. The file's name, entry and chunk
 *     counts are recorded under llama.cpp's quantize.imatrix.* keys.
 *   - GPTQ (--hessian): a converted tensor whose hessian (compress/hessian.h
 *     naming rule) exists and whose type GPTQ supports (compress/gptq.h) is
 *     quantized by GPTQ, with diag H as the importance of the scale fits
 *     (instead of the imatrix entry); the others take the path above (a
 *     type GPTQ lacks is said once). A missing or malformed hessian tensor
 *     is an error naming it and the file. The file is recorded under
 *     quantize.hessian.file and quantize.gptq.damp.
 *
 * Metadata is copied entry by entry; general.file_type is set to llama.cpp's
 * LLAMA_FTYPE of the mix and general.quantization_version to 2 when any
 * tensor is quantized.
 */
#ifndef TERN_COMPRESS_QUANTIZE_H
#define TERN_COMPRESS_QUANTIZE_H

#include "base/base.h"
#include "format/gguf.h"
#include "kern/dtype.h"

/* One planned output tensor (and, after the write, its error). */
typedef struct tn_quant_tensor {
    const char *name;     /* borrowed from the input file (valid until tn_quant_report_deinit) */
    tn_dtype src_type;
    tn_dtype dst_type;
    int64_t n_elements;
    int64_t ne0;          /* row length */
    uint64_t src_bytes, dst_bytes;
    bool quantized;       /* converted (false: copied as is) */
    const char *note;     /* static text: why the type differs from the base, or NULL */
    bool imatrix;         /* quantized with importance weights (an entry exists and the type uses it) */
    bool gptq;            /* quantized by GPTQ (--hessian: it has a hessian and the type is supported) */
    double sse;           /* sum of squared errors vs the source (with stats; 0 for copies) */
    double ssq;           /* sum of squared source values (with stats) */
} tn_quant_tensor;

/* Progress, called on the writing thread after each tensor: i of n done. */
typedef void (*tn_quant_progress_fn)(void *ud, int64_t i, int64_t n, const tn_quant_tensor *t);

typedef struct tn_quant_opts {
    const char *in_path;
    const char *out_path;      /* replaced if it exists; removed if the write fails */
    const char *type;          /* a mix name: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL Q2_K
                                  Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K
                                  (and Q3_K, Q4_K, Q5_K: the _M mixes); any case */
    const char *output_type;   /* optional: a tensor type name for output.weight (token_embd if tied) */
    bool pure;                 /* every matrix gets the base type (fallbacks still apply) */
    const char *imatrix;       /* optional: importance matrix file (tern imatrix / llama-imatrix .dat) */
    const char *hessian;       /* optional: hessian file (tern imatrix --hessian): GPTQ (compress/gptq.h) */
    double gptq_damp;          /* GPTQ damping λ (H += λ·mean(diag H)·I), used when gptq_damp_set */
    bool gptq_damp_set;        /* false: 0.01 */
    bool stats;                /* measure each tensor's squared error vs the source (costs a dequantize) */
    int n_threads;             /* 0: all cores */
    tn_quant_progress_fn progress; /* optional */
    void *progress_ud;
} tn_quant_opts;

typedef struct tn_quant_report {
    tn_gguf *in;                  /* owned: the input, kept open so names stay valid */
    int64_t n_tensors;
    tn_quant_tensor *tensors;     /* (n_tensors), owned */
    uint32_t file_type;           /* LLAMA_FTYPE written */
    tn_dtype base_type;
    uint64_t src_bytes, dst_bytes;/* tensor data only */
    int64_t n_elements;           /* all tensors */
    double sse, ssq;              /* over the quantized tensors (with stats) */
    int64_t n_quant_elements;     /* elements of the quantized tensors */
} tn_quant_report;

/* Parses a mix name into its base tensor type and LLAMA_FTYPE. False if the
 * name is not one of the mixes above. */
bool tn_quant_mix_from_name(const char *name, tn_dtype *base, uint32_t *file_type);

/* Whether this build can quantize rows to type t (asks tn_quantize_row). */
bool tn_quant_type_supported(tn_dtype t);

/* The per-tensor type rules above, for writers that make tensors themselves
 * (tern convert --dtype): the choices tn_quantize_model makes, tensor by
 * tensor. Use: tn_quant_rules_init, optionally set n_head / n_head_kv /
 * have_out_type + out_type, tn_quant_rules_count every tensor name, then
 * tn_quant_rules_type every tensor in file order (the attn_v / ffn_down
 * layer counters follow that order). Caller storage; nothing to free. */
typedef struct tn_quant_rules {
    tn_dtype base;               /* the mix's base type */
    uint32_t file_type;          /* its LLAMA_FTYPE */
    bool mixed;                  /* the mix rules apply (quantized base, not pure) */
    int32_t n_head, n_head_kv;   /* for n_gqa; 0 if unknown */
    bool has_output;             /* a separate output.weight exists */
    bool have_out_type;          /* --output-type given: out_type */
    tn_dtype out_type;
    int n_attn_v, n_ffn_down;    /* how many of each (one per layer) */
    int i_attn_v, i_ffn_down;    /* counters, advanced in file order as llama.cpp does */
} tn_quant_rules;

/* False if mix is not one of the mixes above. */
bool tn_quant_rules_init(tn_quant_rules *r, const char *mix, bool pure);
/* Counts one tensor of the model (first pass). */
void tn_quant_rules_count(tn_quant_rules *r, const char *name);
/* The type tensor name (dims ne[4], unused dims 1) is written in, given its
 * source type; *note (may be NULL) gets why it differs from the base, or
 * NULL. */
tn_dtype tn_quant_rules_type(tn_quant_rules *r, const char *name, const int64_t ne[4], tn_dtype src_type,
                             const char **note);

/* Quantizes o->in_path into o->out_path. rep (caller storage, may be NULL)
 * receives the plan and, with o->stats, each tensor's error; free it with
 * tn_quant_report_deinit whatever the result. Errors: TN_ERR_INVALID for an
 * unknown type name or a missing option, TN_ERR_UNSUPPORTED when the base
 * type cannot be produced by this build (nothing is written then), and
 * whatever opening the input or writing the output failed with (the
 * message names the file and the tensor). Thread-safe (no shared state). */
tn_status tn_quantize_model(const tn_quant_opts *o, tn_quant_report *rep) TN_MUST_CHECK;

void tn_quant_report_deinit(tn_quant_report *rep);

#endif /* TERN_COMPRESS_QUANTIZE_H */
