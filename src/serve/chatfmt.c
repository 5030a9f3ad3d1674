/*
 * chatfmt.c — chat messages to one prompt string.
 *
 * Messages are validated and normalized first (role one of system,
 * developer, user, assistant, tool; content a string, an array of text parts
 * {"type":"text","text":...} joined into one string, or null for an
 * assistant turn that only called tools; other fields such as tool_calls
 * and tool_call_id pass through), then rendered with the chat template
 * (src/tok/chat.h): the model's tokenizer.chat_template, or the built-in
 * format named by --chat-template, or "chatml" when the model has none (as
 * llama.cpp does).
 */
#include "serve/serve_int.h"

#include "tok/chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool known_role(const char *role)
{
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool"};
    for (size_t i = 0; i < TN_ARRAY_LEN(roles); i++)
        if (!strcmp(role, roles[i]))
            return true;
    return false;
}

/* The text of a message's content as one JSON string (new reference), or
 * json_null() for null content; NULL with e set if it has the wrong shape. */
static json_t *content_text(json_t *content, size_t i, api_err *e)
{
    if (!content || json_is_null(content))
        return json_null();
    if (json_is_string(content))
        return json_incref(content);
    if (!json_is_array(content)) {
        api_fail(e, 400, "messages", "messages[%zu].content must be a string or a list of parts", i);
        return NULL;
    }
    sbuf b = {0};
    size_t k;
    json_t *part;
    json_array_foreach(content, k, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type)) {
            api_fail(e, 400, "messages", "messages[%zu].content[%zu] must be an object with a 'type'", i, k);
            goto fail;
        }
        if (strcmp(json_string_value(type), "text") != 0) {
            api_fail(e, 400, "messages", "messages[%zu].content[%zu]: part type '%.40s' is not supported (text only)",
                     i, k, json_string_value(type));
            goto fail;
        }
        if (!json_is_string(text)) {
            api_fail(e, 400, "messages", "messages[%zu].content[%zu].text must be a string", i, k);
            goto fail;
        }
        if (!sbuf_add(&b, json_string_value(text), json_string_length(text))) {
            api_fail(e, 400, "messages", "messages[%zu]: content too long", i);
            goto fail;
        }
    }
    json_t *j = json_stringn(b.p ? b.p : "", b.len);
    sbuf_free(&b);
    if (!j)
        api_fail(e, 400, "messages", "messages[%zu].content is not valid UTF-8", i);
    return j;
fail:
    sbuf_free(&b);
    return NULL;
}

/* A piece of the vocabulary as a C string for bos_token / eos_token. */
static const char *piece_or_empty(srv *s, int32_t id)
{
    const char *p = id >= 0 ? tn_vocab_piece(s->vocab, id) : NULL;
    return p ? p : "";
}

/* OpenAI's tools: a list of {"type": "function", "function": {"name", ...}}.
 * Returns 0, or -1 with e filled naming the bad entry. */
static int check_tools(json_t *tools, api_err *e)
{
    if (!json_is_array(tools))
        return api_fail(e, 400, "tools", "'tools' must be a list of tool definitions");
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        json_t *type = json_object_get(t, "type"), *fn = json_object_get(t, "function");
        if (!json_is_object(t) || !json_is_string(type))
            return api_fail(e, 400, "tools", "tools[%zu] must be an object with a string 'type'", i);
        if (!strcmp(json_string_value(type), "function") &&
            (!json_is_object(fn) || !json_is_string(json_object_get(fn, "name"))))
            return api_fail(e, 400, "tools", "tools[%zu].function must be an object with a string 'name'", i);
    }
    return 0;
}

/* An assistant message's tool_calls: a list of objects, each with a
 * function {name, arguments} (arguments a JSON string, as OpenAI sends it,
 * or an object). */
static int check_tool_calls(json_t *calls, size_t i, api_err *e)
{
    if (!json_is_array(calls))
        return api_fail(e, 400, "messages", "messages[%zu].tool_calls must be a list", i);
    size_t k;
    json_t *c;
    json_array_foreach(calls, k, c) {
        json_t *fn = json_object_get(c, "function");
        json_t *args = json_is_object(fn) ? json_object_get(fn, "arguments") : NULL;
        if (!json_is_object(c) || !json_is_object(fn) || !json_is_string(json_object_get(fn, "name")))
            return api_fail(e, 400, "messages", "messages[%zu].tool_calls[%zu] must have a 'function' with a "
                            "string 'name'", i, k);
        if (args && !json_is_string(args) && !json_is_object(args))
            return api_fail(e, 400, "messages", "messages[%zu].tool_calls[%zu].function.arguments must be a "
                            "JSON string or an object", i, k);
    }
    return 0;
}

char *render_chat(srv *s, json_t *messages, json_t *tools, api_err *e)
{
    if (json_is_null(tools))
        tools = NULL;
    if (tools && check_tools(tools, e))
        return NULL;
    json_t *norm = json_array();
    size_t i;
    json_t *m;
    char *out = NULL;
    json_array_foreach(messages, i, m) {
        json_t *role = json_object_get(m, "role");
        if (!json_is_object(m) || !json_is_string(role)) {
            api_fail(e, 400, "messages", "messages[%zu] must be an object with a string 'role'", i);
            goto done;
        }
        if (!known_role(json_string_value(role))) {
            api_fail(e, 400, "messages", "messages[%zu].role '%.40s' is not one of system, developer, user, "
                     "assistant, tool", i, json_string_value(role));
            goto done;
        }
        json_t *calls = json_object_get(m, "tool_calls");
        if (calls && !json_is_null(calls) && check_tool_calls(calls, i, e))
            goto done;
        json_t *content = content_text(json_object_get(m, "content"), i, e);
        if (!content)
            goto done;
        json_t *copy = json_copy(m);
        json_object_set_new(copy, "content", content);
        json_array_append_new(norm, copy);
    }
    tn_chat_ctx ctx = {
        .messages = norm,
        .tools = tools,
        .add_generation_prompt = true,
        .bos_token = piece_or_empty(s, tn_vocab_bos(s->vocab)),
        .eos_token = piece_or_empty(s, tn_vocab_eos(s->vocab)),
    };
    size_t len = 0;
    tn_status st = tn_chat_template_render(s->chat, &ctx, &out, &len);
    if (st != TN_OK) {
        api_fail(e, 400, "messages", "the chat template cannot render these messages: %s", tn_last_error());
        out = NULL;
    }
done:
    json_decref(norm);
    return out;
}

bool chat_wants_bos(srv *s, const char *text)
{
    const char *bos = tn_vocab_bos(s->vocab) >= 0 ? tn_vocab_piece(s->vocab, tn_vocab_bos(s->vocab)) : NULL;
    return tn_vocab_add_bos(s->vocab) && !(bos && *bos && !strncmp(text, bos, strlen(bos)));
}

/* Reads a whole template file (malloc'ed, NUL-terminated). */
static char *read_template(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        (void)tn__err(TN_ERR_IO, "cannot open chat template file '%s'", path);
        return NULL;
    }
    sbuf b = {0};
    char chunk[4096];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        ok = b.len + n <= ((size_t)1 << 20) && sbuf_add(&b, chunk, n);
    bool err = ferror(f);
    fclose(f);
    if (!ok || err || !b.p) {
        sbuf_free(&b);
        (void)tn__err(TN_ERR_IO, "chat template file '%s': %s", path,
                      err ? "read error" : !ok ? "larger than 1 MiB" : "empty");
        return NULL;
    }
    *len = b.len;
    return b.p;
}

tn_status chat_init(srv *s, const char *name, const char *file)
{
    const char *src = NULL;
    size_t len = 0;
    const char *what = name;
    if (file) {
        char *text = read_template(file, &len);
        if (!text)
            return TN_ERR_IO;
        tn_status st = tn_chat_template_new(text, len, &s->chat);
        free(text);
        if (st != TN_OK)
            return tn__err_prefix(st, "chat template file '%s'", file);
        tn_log(TN_LOG_INFO, "tern serve: chat template: %s\n", file);
        return TN_OK;
    }
    if (name) {
        src = tn_chat_builtin(name);
        if (!src)
            return tn__err(TN_ERR_INVALID, "unknown chat template '%s' (built-in formats: chatml, llama2, llama3, "
                           "mistral, gemma, phi3, zephyr, vicuna, deepseek, alpaca)", name);
        len = strlen(src);
    } else if (tn_gguf_find_key(s->model->gguf, "tokenizer.chat_template") >= 0 &&
               tn_gguf_get_str(s->model->gguf, "tokenizer.chat_template", &src, &len) == TN_OK) {
        what = "the model's tokenizer.chat_template";
    } else {
        what = "chatml (the model has no chat template)";
        src = tn_chat_builtin("chatml");
        len = src ? strlen(src) : 0;
    }
    if (!src)
        return tn__err(TN_ERR_NOT_FOUND, "no chat template");
    tn_status st = tn_chat_template_new(src, len, &s->chat);
    if (st != TN_OK)
        return tn__err_prefix(st, "chat template %s", what);
    tn_log(TN_LOG_INFO, "tern serve: chat template: %s\n", what);
    return TN_OK;
}
