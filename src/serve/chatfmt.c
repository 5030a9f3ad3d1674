/*
 * chatfmt.c — chat messages to one prompt string.
 *
 * Messages are validated and normalized first (role one of system, developer,
 * user, assistant, tool; content a string, an array of text parts
 * {"type":"text","text":...}, or null for an assistant turn that only
 * called tools), then rendered. Until the model's own chat template can be
 * rendered (src/tok chat templates), a plain fallback is used:
 *
 *     System: ...\n\nUser: ...\n\nAssistant: ...\n\nAssistant:
 *
 * which reads as a dialogue to any model and needs no special tokens.
 */
#include "serve/serve_int.h"

#include <stdlib.h>
#include <string.h>

static const char *role_label(const char *role)
{
    if (!strcmp(role, "system") || !strcmp(role, "developer"))
        return "System";
    if (!strcmp(role, "user"))
        return "User";
    if (!strcmp(role, "assistant"))
        return "Assistant";
    if (!strcmp(role, "tool"))
        return "Tool";
    return NULL;
}

/* Appends the text of a message's content to b; -1 with e set if the
 * content has the wrong shape. */
static int content_text(json_t *content, size_t i, sbuf *b, api_err *e)
{
    if (!content || json_is_null(content))
        return 0;
    if (json_is_string(content)) {
        if (!sbuf_add(b, json_string_value(content), json_string_length(content)))
            return api_fail(e, 400, "messages", "messages[%zu]: content too long", i);
        return 0;
    }
    if (!json_is_array(content))
        return api_fail(e, 400, "messages", "messages[%zu].content must be a string or a list of parts", i);
    size_t k;
    json_t *part;
    json_array_foreach(content, k, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type))
            return api_fail(e, 400, "messages", "messages[%zu].content[%zu] must be an object with a 'type'", i, k);
        if (strcmp(json_string_value(type), "text") != 0)
            return api_fail(e, 400, "messages", "messages[%zu].content[%zu]: part type '%.40s' is not supported "
                            "(text only)", i, k, json_string_value(type));
        if (!json_is_string(text))
            return api_fail(e, 400, "messages", "messages[%zu].content[%zu].text must be a string", i, k);
        if (!sbuf_add(b, json_string_value(text), json_string_length(text)))
            return api_fail(e, 400, "messages", "messages[%zu]: content too long", i);
    }
    return 0;
}

char *render_chat(srv *s, json_t *messages, api_err *e)
{
    sbuf out = {0}, text = {0};
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m) {
        json_t *role = json_object_get(m, "role");
        if (!json_is_object(m) || !json_is_string(role)) {
            api_fail(e, 400, "messages", "messages[%zu] must be an object with a string 'role'", i);
            goto fail;
        }
        const char *label = role_label(json_string_value(role));
        if (!label) {
            api_fail(e, 400, "messages", "messages[%zu].role '%.40s' is not one of system, developer, user, "
                     "assistant, tool", i, json_string_value(role));
            goto fail;
        }
        text.len = 0;
        if (content_text(json_object_get(m, "content"), i, &text, e))
            goto fail;
        if (!sbuf_add(&out, label, strlen(label)) || !sbuf_add(&out, ": ", 2) ||
            !sbuf_add(&out, text.p ? text.p : "", text.len) || !sbuf_add(&out, "\n\n", 2)) {
            api_fail(e, 400, "messages", "the conversation is too long");
            goto fail;
        }
    }
    if (!sbuf_add(&out, "Assistant:", 10)) {
        api_fail(e, 400, "messages", "the conversation is too long");
        goto fail;
    }
    sbuf_free(&text);
    return out.p;
fail:
    sbuf_free(&text);
    sbuf_free(&out);
    return NULL;
}
