/*
 * cmd_template.c — `tern template`: render a chat template with a
 * conversation and print the prompt text, so any template (a model's
 * tokenizer.chat_template, a .jinja file, or a built-in format) can be
 * checked by hand.
 *
 * Key idea: a thin shell over tn_chat_render; the context file has the
 * same shape as the contexts in ../shared/data/chat/contexts (messages, tools,
 * add_generation_prompt, bos_token, eos_token, any other variables), or is
 * a bare array of messages.
 */
#include "args.h"
#include "tools.h"

#include "format/gguf.h"
#include "tok/chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tern template (-m MODEL.gguf | --template FILE.jinja | --builtin NAME)\n"
            "                     --context CONTEXT.json [--raw] [--date YYYY-MM-DD]\n"
            "\n"
            "Prints the prompt the chat template makes of the conversation, with no\n"
            "trailing newline added. CONTEXT.json (also accepted as --messages) is an\n"
            "object {\"messages\": [...], \"tools\": [...], \"add_generation_prompt\": true,\n"
            "\"bos_token\": \"...\", \"eos_token\": \"...\", other variables} or an array of\n"
            "messages. -m reads tokenizer.chat_template from a GGUF file (a built-in\n"
            "format if the model has none: --builtin, default chatml). --raw renders\n"
            "the messages exactly as given (no adaptation to the template). --date\n"
            "fixes the date strftime_now formats. Built-in formats:");
    for (const char *const *n = tn_chat_builtin_names(); *n; n++)
        fprintf(out, " %s", *n);
    fprintf(out, "\n");
}

int tn_cmd_template(int argc, char **argv)
{
    const char *model = NULL, *tpath = NULL, *builtin = NULL, *cpath = NULL, *date = NULL;
    bool raw = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--raw")) {
            raw = true;
        } else if (has_val && (!strcmp(a, "-m") || !strcmp(a, "--model"))) {
            model = argv[++i];
        } else if (has_val && !strcmp(a, "--template")) {
            tpath = argv[++i];
        } else if (has_val && !strcmp(a, "--builtin")) {
            builtin = argv[++i];
        } else if (has_val && (!strcmp(a, "--context") || !strcmp(a, "--messages"))) {
            cpath = argv[++i];
        } else if (has_val && !strcmp(a, "--date")) {
            date = argv[++i];
        } else {
            fprintf(stderr, "tern template: unknown or incomplete option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!cpath || (!!model + !!tpath + (builtin && !model) != 1)) {
        usage(stderr);
        return 2;
    }
    int rc = 1;
    char *src = NULL, *out = NULL;
    size_t len = 0, out_len = 0;
    tn_gguf *g = NULL;
    json_t *ctxj = NULL;
    if (tpath) {
        src = tn_read_file("template", tpath, &len);
        if (!src)
            goto done;
    } else if (model) {
        if (tn_gguf_open(model, &g) != TN_OK) {
            fprintf(stderr, "tern template: %s\n", tn_last_error());
            goto done;
        }
        const char *s;
        size_t n;
        if (tn_gguf_get_str(g, "tokenizer.chat_template", &s, &n) == TN_OK) {
            src = malloc(n + 1);
            if (!src)
                goto done;
            memcpy(src, s, n);
            src[n] = 0;
            len = n;
        } else {
            const char *name = builtin ? builtin : "chatml";
            fprintf(stderr, "tern template: %s has no tokenizer.chat_template; using the built-in '%s'\n", model,
                    name);
            builtin = name;
        }
    }
    if (!src) {
        const char *b = tn_chat_builtin(builtin);
        if (!b) {
            fprintf(stderr, "tern template: no built-in format '%s'\n", builtin);
            goto done;
        }
        src = strdup(b);
        if (!src)
            goto done;
        len = strlen(src);
    }
    json_error_t jerr;
    ctxj = json_load_file(cpath, JSON_DECODE_ANY, &jerr);
    if (!ctxj) {
        fprintf(stderr, "tern template: %s: line %d column %d: %s\n", cpath, jerr.line, jerr.column, jerr.text);
        goto done;
    }
    bool is_obj = json_is_object(ctxj);
    tn_chat_ctx ctx = {
        .messages = is_obj ? json_object_get(ctxj, "messages") : ctxj,
        .tools = is_obj ? json_object_get(ctxj, "tools") : NULL,
        .vars = is_obj ? ctxj : NULL,
        .add_generation_prompt = is_obj ? json_is_true(json_object_get(ctxj, "add_generation_prompt")) : true,
        .bos_token = is_obj ? json_string_value(json_object_get(ctxj, "bos_token")) : NULL,
        .eos_token = is_obj ? json_string_value(json_object_get(ctxj, "eos_token")) : NULL,
        .today = date,
        .raw = raw,
    };
    if (is_obj && !json_object_get(ctxj, "add_generation_prompt"))
        ctx.add_generation_prompt = true;
    if (!json_is_array(ctx.messages)) {
        fprintf(stderr, "tern template: %s: no \"messages\" array\n", cpath);
        goto done;
    }
    if (tn_chat_render(src, len, &ctx, &out, &out_len) != TN_OK) {
        fprintf(stderr, "tern template: %s\n", tn_last_error());
        goto done;
    }
    fwrite(out, 1, out_len, stdout);
    rc = 0;
done:
    free(out);
    free(src);
    json_decref(ctxj);
    tn_gguf_free(g);
    return rc;
}
