/*
 * cmd_convert.c — `tern convert`: a Hugging Face checkpoint directory to
 * GGUF. A thin main over tn_convert_hf (src/convert/convert.h).
 */
#include "convert/convert.h"
#include "tools.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tern convert HF_DIR OUT.gguf [--dtype f32|f16|bf16|q8_0|q4_0]\n"
            "\n"
            "Converts a Hugging Face checkpoint (config.json, model.safetensors or a sharded\n"
            "model.safetensors.index.json, tokenizer.json or a tiktoken tokenizer.model) to a\n"
            "GGUF file with llama.cpp's tensor names and metadata. Families: llama, mistral,\n"
            "mixtral, qwen2, qwen3, qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3.\n"
            "\n"
            "  --dtype T   type of the matrices (default f16); norms, biases and routers stay f32.\n"
            "              q8_0, q4_0: the types `tern quantize` gives in that mix, written straight\n"
            "              from the checkpoint (the same file as converting to f32, then quantizing)\n");
}

int tn_cmd_convert(int argc, char **argv)
{
    const char *pos[2] = {NULL, NULL};
    int n_pos = 0;
    tn_dtype dtype = TN_DTYPE_F16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--dtype")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tern convert: --dtype needs a value\n");
                return 2;
            }
            const char *t = argv[++i];
            if (!tn_dtype_from_name(t, &dtype) ||
                (dtype != TN_DTYPE_F32 && dtype != TN_DTYPE_F16 && dtype != TN_DTYPE_BF16 &&
                 dtype != TN_DTYPE_Q8_0 && dtype != TN_DTYPE_Q4_0)) {
                fprintf(stderr, "tern convert: --dtype '%s' (f32, f16, bf16, q8_0, q4_0)\n", t);
                return 2;
            }
            continue;
        }
        if (argv[i][0] == '-' || n_pos == 2) {
            fprintf(stderr, "tern convert: unexpected argument '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        }
        pos[n_pos++] = argv[i];
    }
    if (n_pos != 2) {
        usage(stderr);
        return 2;
    }
    tn_convert_info info;
    if (tn_convert_hf(pos[0], pos[1], dtype, &info) != TN_OK) {
        fprintf(stderr, "tern convert: %s\n", tn_last_error());
        return 1;
    }
    fprintf(stderr, "tern convert: %s (%s) -> %s: %lld tensors from %lld, %.2f M parameters, %d tokens, %s\n",
            info.family, info.arch, pos[1], (long long)info.n_tensors, (long long)info.n_src,
            (double)info.n_params / 1e6, info.n_vocab, tn_dtype_traits_of(dtype)->name);
    return 0;
}
