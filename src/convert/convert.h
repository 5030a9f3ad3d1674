/*
 * convert — a Hugging Face checkpoint directory to one GGUF file with
 * llama.cpp's tensor names and metadata (`tern convert`).
 *
 * Key idea: the converter is a table per architecture family that maps
 * each GGUF tensor to one or more checkpoint tensors (experts are stacked)
 * with an optional row permutation, plus the hyper-parameters read from
 * config.json. Every checkpoint tensor must be claimed by the table and
 * must have exactly the shape config.json implies, so a checkpoint the
 * table does not fully understand is rejected instead of converted wrong.
 * Tensors are converted one at a time at write time (tn_gguf_add_tensor_fn),
 * so memory stays at one row of floats however large the model.
 *
 * Why a module of its own: it ties format/ (safetensors, config.json, the
 * GGUF writer) to tok/ (tokenizer.json and tiktoken vocabularies), and
 * format/ may not depend on tok/; model/ does not link tok/ either. So it
 * sits above both, beside model/, and only tools/ and tests use it. It
 * also uses compress/ (tn_quant_rules, tn_quant_row) for --dtype q8_0 /
 * q4_0, so the quantized file is the one tern quantize would write.
 */
#ifndef TERN_CONVERT_CONVERT_H
#define TERN_CONVERT_CONVERT_H

#include "base/base.h"
#include "kern/dtype.h"

/* What a conversion did, for the tool's summary line. */
typedef struct tn_convert_info {
    char family[32];      /* config.json model_type, e.g. "qwen2_moe" */
    char arch[32];        /* GGUF general.architecture, e.g. "qwen2moe" */
    int64_t n_tensors;    /* GGUF tensors written */
    int64_t n_src;        /* checkpoint tensors read */
    uint64_t n_params;
    int32_t n_vocab;
} tn_convert_info;

/* Converts checkpoint directory dir (config.json, model.safetensors or
 * model.safetensors.index.json with its shards, tokenizer.json or a
 * tiktoken tokenizer.model) into out_path. dtype: F32, F16 or BF16 for the
 * matrices (norms, biases and routers stay F32), or Q8_0 / Q4_0: then each
 * tensor gets the type `tern quantize` gives it in that mix (the rules of
 * compress/quantize.h, e.g. Q4_0's output.weight in Q6_K, rows that do not
 * fill 32-blocks in F16), quantized row by row straight from the
 * checkpoint: the file equals converting to F32 and quantizing. Supported model_type:
 * llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe, deepseek_v2,
 * deepseek_v3. On failure nothing is left at out_path and tn_last_error()
 * names the file and field. info may be NULL. */
tn_status tn_convert_hf(const char *dir, const char *out_path, tn_dtype dtype, tn_convert_info *info) TN_MUST_CHECK;

#endif /* TERN_CONVERT_CONVERT_H */
