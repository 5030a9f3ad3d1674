/*
 * tern.c — the `tern` binary: dispatch to a subcommand.
 */
#include "tools.h"

#include <stdio.h>
#include <string.h>

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
    {"run", tn_cmd_run, "generate text from a prompt"},
    {"info", tn_cmd_info, "print a GGUF file's metadata and tensor table"},
    {"synth", tn_cmd_synth, "write a random-weight model of a real shape"},
    {"tokenize", tn_cmd_tokenize, "text on stdin to token ids"},
    {"detokenize", tn_cmd_detokenize, "token ids on stdin to text"},
    {"template", tn_cmd_template, "render a chat template with a conversation"},
    {"serve", tn_cmd_serve, "serve a model over OpenAI-compatible HTTP"},
    {"loadgen", tn_cmd_loadgen, "load-test an OpenAI-compatible server (TTFT, TPOT, goodput)"},
    {"bench", tn_cmd_bench, "measure prompt and generation speed (like llama-bench)"},
    {"quantize", tn_cmd_quantize, "convert a GGUF model's weights to another type (F16 ... Q4_K_M)"},
    {"perplexity", tn_cmd_perplexity, "measure perplexity and KL divergence on a text"},
    {"convert", tn_cmd_convert, "convert a Hugging Face checkpoint (safetensors) to GGUF"},
    {"imatrix", tn_cmd_imatrix, "importance matrix of a model on a text (for quantize --imatrix)"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: tern COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "\n`tern COMMAND --help` describes a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "tern: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
