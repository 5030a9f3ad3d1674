/*
 * chat — turning a conversation (OpenAI-style messages as JSON) into the
 * prompt text a model was trained on, by rendering its
 * tokenizer.chat_template with our own Jinja interpreter (jinja.h), or a
 * built-in format chosen by name when a model has no template.
 *
 * Key idea: the template is the model's contract, so we run it as it is
 * (sandboxed and bounded), and adapt the conversation, not the template,
 * when a template cannot express part of it (see tn_chat_ctx.raw).
 */
#ifndef TERN_TOK_CHAT_H
#define TERN_TOK_CHAT_H

#include "base/base.h"

#include <jansson.h>

typedef struct tn_chat_template tn_chat_template;

typedef struct tn_chat_ctx {
    const json_t *messages; /* array of {"role", "content", ["tool_calls"], ...}; borrowed, never modified */
    const json_t *tools;    /* array of tool definitions, or NULL (then `tools` is undefined) */
    const json_t *vars;     /* object of further template variables (e.g. builtin_tools), or NULL;
                               the fields of this struct override its keys */
    bool add_generation_prompt;
    const char *bos_token; /* NULL: "" */
    const char *eos_token; /* NULL: "" */
    const char *today;     /* "YYYY-MM-DD" for strftime_now; NULL: the real clock */
    /* false (default): adapt the conversation to what the template can
     * express, as llama.cpp / minja do:
     *   - a template that never mentions "tools" sees each assistant tool
     *     call as JSON text {"tool_calls": [{"name", "arguments", "id"}]}
     *     and each tool result as a user message
     *     {"tool_response": {"tool", "content", "tool_call_id"}} (indent 2);
     *   - a template that drops or rejects a system message (probed with a
     *     test render) gets it prepended to the first user message, + "\n";
     *   - a template that pipes `tool_call.arguments | items` or
     *     `| tojson` gets JSON-string arguments parsed into objects.
     * true: render the messages exactly as given. */
    bool raw;
} tn_chat_ctx;

/* Compiles a chat template (trim_blocks and lstrip_blocks on, as Hugging
 * Face renders them). TN_ERR_FORMAT with line and column on a syntax error.
 * The template is immutable; any thread may render it. */
tn_status tn_chat_template_new(const char *src, size_t len, tn_chat_template **out) TN_MUST_CHECK;
void tn_chat_template_free(tn_chat_template *t);

/* Renders the conversation. On success *out is malloc'd, NUL-terminated,
 * *out_len bytes (the caller frees it); on failure *out is NULL and the
 * status says why (TN_ERR_INVALID: the template raised or failed, with
 * line and column; TN_ERR_RANGE: a step/depth/size limit). */
tn_status tn_chat_template_render(const tn_chat_template *t, const tn_chat_ctx *ctx, char **out,
                                  size_t *out_len) TN_MUST_CHECK;

/* Compile + render + free in one call. */
tn_status tn_chat_render(const char *src, size_t len, const tn_chat_ctx *ctx, char **out,
                         size_t *out_len) TN_MUST_CHECK;

/* The Jinja source of a built-in format ("chatml", "llama2", "llama3",
 * "mistral", "gemma", "phi3", "zephyr", "vicuna", "deepseek", "alpaca"),
 * or NULL for an unknown name. The string is static. */
const char *tn_chat_builtin(const char *name);

/* The built-in names, NULL-terminated (static). */
const char *const *tn_chat_builtin_names(void);

#endif /* TERN_TOK_CHAT_H */
