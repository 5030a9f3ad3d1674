/*
 * chat.c — chat templates: build the variables a template expects from a
 * conversation, adapt the conversation to what the template can express,
 * render with the Jinja interpreter; plus built-in fallback formats.
 *
 * Key idea: the variables are one JSON object (messages, tools,
 * add_generation_prompt, bos_token, eos_token, and any extras), converted
 * to interpreter values at render time. Adaptations (see chat.h) work on a
 * deep copy, so the caller's messages are never touched.
 */
#include "tok/chat.h"

#include "tok/jinja.h"

#include <stdlib.h>
#include <string.h>

struct tn_chat_template {
    tn_jinja *j;
    bool mentions_tools;   /* "tools" appears in the source */
    bool object_arguments; /* pipes tool_call.arguments into items/tojson */
};

static bool contains(const char *s, size_t n, const char *needle)
{
    return memmem(s, n, needle, strlen(needle)) != NULL;
}

tn_status tn_chat_template_new(const char *src, size_t len, tn_chat_template **out)
{
    *out = NULL;
    tn_chat_template *t = calloc(1, sizeof *t);
    if (!t)
        return tn__err(TN_ERR_NOMEM, "chat template: out of memory");
    tn_jinja_opts o = {.trim_blocks = true, .lstrip_blocks = true};
    tn_status st = tn__jinja_compile(src, len, &o, &t->j);
    if (st) {
        free(t);
        return st;
    }
    t->mentions_tools = contains(src, len, "tools");
    t->object_arguments = contains(src, len, "tool_call.arguments | items") ||
                          contains(src, len, "tool_call.arguments | tojson");
    *out = t;
    return TN_OK;
}

void tn_chat_template_free(tn_chat_template *t)
{
    if (!t)
        return;
    tn__jinja_free(t->j);
    free(t);
}

/* The variables object for a render; NULL on out of memory. */
static json_t *make_vars(const tn_chat_ctx *c, json_t *messages)
{
    json_t *v = c->vars && json_is_object(c->vars) ? json_copy((json_t *)c->vars) : json_object();
    if (!v)
        return NULL;
    int bad = 0;
    bad |= json_object_set(v, "messages", messages);
    if (c->tools)
        bad |= json_object_set(v, "tools", (json_t *)c->tools);
    bad |= json_object_set_new(v, "add_generation_prompt", json_boolean(c->add_generation_prompt));
    bad |= json_object_set_new(v, "bos_token", json_string(c->bos_token ? c->bos_token : ""));
    bad |= json_object_set_new(v, "eos_token", json_string(c->eos_token ? c->eos_token : ""));
    if (bad) {
        json_decref(v);
        return NULL;
    }
    return v;
}

/* Whether a system message reaches the output (a probe render). */
static bool probe_system(const tn_chat_template *t, const tn_chat_ctx *c)
{
    static const char sys[] = "<System Needle>";
    json_t *msgs = json_pack("[{s:s,s:s},{s:s,s:s}]", "role", "system", "content", sys, "role", "user", "content",
                             "<User Needle>");
    if (!msgs)
        return true;
    tn_chat_ctx pc = *c;
    pc.tools = NULL;
    pc.vars = NULL;
    pc.add_generation_prompt = false;
    json_t *v = make_vars(&pc, msgs);
    json_decref(msgs);
    if (!v)
        return true;
    char *out = NULL;
    size_t n = 0;
    bool ok = tn__jinja_render(t->j, v, &out, &n) == TN_OK && contains(out, n, sys);
    free(out);
    json_decref(v);
    tn__err_clear();
    return ok;
}

static json_t *parsed_or_same(json_t *args)
{
    if (json_is_string(args)) {
        json_t *p = json_loads(json_string_value(args), JSON_DECODE_ANY, NULL);
        if (p)
            return p;
    }
    return json_incref(args);
}

/* Applies the adaptations of chat.h to a deep copy of the messages. */
static json_t *adapt(const tn_chat_template *t, const tn_chat_ctx *c, bool system_ok)
{
    json_t *in = json_deep_copy(c->messages);
    if (!in)
        return NULL;
    json_t *msgs = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(in, i, m)
    {
        if (!json_is_object(m)) {
            json_array_append(msgs, m);
            continue;
        }
        json_t *calls = json_object_get(m, "tool_calls");
        const char *role = json_string_value(json_object_get(m, "role"));
        if (json_is_array(calls) && t->object_arguments) {
            size_t k;
            json_t *tc;
            json_array_foreach(calls, k, tc)
            {
                json_t *fn = json_object_get(tc, "function");
                json_t *args = json_object_get(fn, "arguments");
                if (json_is_string(args))
                    json_object_set_new(fn, "arguments", parsed_or_same(args));
            }
        }
        if (!t->mentions_tools && json_is_array(calls)) {
            json_t *list = json_array();
            size_t k;
            json_t *tc;
            json_array_foreach(calls, k, tc)
            {
                json_t *fn = json_object_get(tc, "function");
                json_t *o = json_object();
                json_object_set(o, "name", json_object_get(fn, "name") ? json_object_get(fn, "name") : json_null());
                json_t *args = json_object_get(fn, "arguments");
                json_object_set_new(o, "arguments", args ? parsed_or_same(args) : json_null());
                json_object_set(o, "id", json_object_get(tc, "id") ? json_object_get(tc, "id") : json_null());
                json_array_append_new(list, o);
            }
            json_t *wrap = json_object();
            json_object_set_new(wrap, "tool_calls", list);
            json_t *content = json_object_get(m, "content");
            if (content && json_is_string(content) && json_string_length(content))
                json_object_set(wrap, "content", content);
            char *text = json_dumps(wrap, JSON_INDENT(2) | JSON_ENSURE_ASCII);
            json_decref(wrap);
            json_object_set_new(m, "content", json_string(text ? text : ""));
            free(text);
            json_object_del(m, "tool_calls");
        }
        if (!t->mentions_tools && role && !strcmp(role, "tool")) {
            json_t *r = json_object(), *wrap = json_object();
            json_t *name = json_object_get(m, "name"), *id = json_object_get(m, "tool_call_id");
            json_object_set(r, "tool", name ? name : json_null());
            json_object_set(r, "content", json_object_get(m, "content") ? json_object_get(m, "content") : json_null());
            json_object_set(r, "tool_call_id", id ? id : json_null());
            json_object_set_new(wrap, "tool_response", r);
            char *text = json_dumps(wrap, JSON_INDENT(2) | JSON_ENSURE_ASCII);
            json_decref(wrap);
            json_t *nm = json_object();
            json_object_set_new(nm, "role", json_string("user"));
            json_object_set_new(nm, "content", json_string(text ? text : ""));
            free(text);
            json_array_append_new(msgs, nm);
            continue;
        }
        json_array_append(msgs, m);
    }
    json_decref(in);
    if (!system_ok) {
        json_t *sys = NULL;
        json_array_foreach(msgs, i, m)
        {
            const char *role = json_string_value(json_object_get(m, "role"));
            if (role && !strcmp(role, "system")) {
                sys = json_object_get(m, "content");
                break;
            }
        }
        if (sys && json_is_string(sys) && json_string_length(sys)) {
            json_t *kept = json_array();
            bool merged = false;
            json_array_foreach(msgs, i, m)
            {
                const char *role = json_string_value(json_object_get(m, "role"));
                if (role && !strcmp(role, "system"))
                    continue;
                if (!merged && role && !strcmp(role, "user")) {
                    const char *uc = json_string_value(json_object_get(m, "content"));
                    size_t sn = json_string_length(sys), un = uc ? strlen(uc) : 0;
                    char *s = malloc(sn + un + 2);
                    if (s) {
                        memcpy(s, json_string_value(sys), sn);
                        size_t o = sn;
                        if (un) {
                            s[o++] = '\n';
                            memcpy(s + o, uc, un);
                            o += un;
                        }
                        s[o] = 0;
                        json_object_set_new(m, "content", json_stringn(s, o));
                        free(s);
                    }
                    merged = true;
                }
                json_array_append(kept, m);
            }
            json_decref(msgs);
            msgs = kept;
        }
    }
    return msgs;
}

tn_status tn_chat_template_render(const tn_chat_template *t, const tn_chat_ctx *c, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (!c || !json_is_array(c->messages))
        return tn__err(TN_ERR_INVALID, "chat template: messages must be a JSON array");
    json_t *msgs;
    if (c->raw) {
        msgs = json_incref((json_t *)c->messages);
    } else {
        bool has_system = false;
        size_t i;
        json_t *m;
        json_array_foreach(c->messages, i, m)
        {
            const char *role = json_string_value(json_object_get(m, "role"));
            has_system |= role && !strcmp(role, "system");
        }
        /* the probe is cheap and the template immutable: run it per call
         * rather than caching in a shared object (no locking needed) */
        bool system_ok = !has_system || probe_system(t, c);
        msgs = adapt(t, c, system_ok);
    }
    if (!msgs)
        return tn__err(TN_ERR_NOMEM, "chat template: out of memory");
    json_t *v = make_vars(c, msgs);
    json_decref(msgs);
    if (!v)
        return tn__err(TN_ERR_NOMEM, "chat template: out of memory");
    tn_status st;
    if (c->today) {
        /* strftime_now reads the date from the template options: use a
         * copy of the compiled template's options with this date */
        tn_jinja tmp = *t->j;
        tmp.o.today = c->today;
        st = tn__jinja_render(&tmp, v, out, out_len);
    } else {
        st = tn__jinja_render(t->j, v, out, out_len);
    }
    json_decref(v);
    return st;
}

tn_status tn_chat_render(const char *src, size_t len, const tn_chat_ctx *ctx, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    tn_chat_template *t;
    tn_status st = tn_chat_template_new(src, len, &t);
    if (st)
        return st;
    st = tn_chat_template_render(t, ctx, out, out_len);
    tn_chat_template_free(t);
    return st;
}

/* ---- built-in formats ----------------------------------------------------
 * Written here from each family's published prompt format. */

static const struct {
    const char *name, *src;
} builtins[] = {
    {"chatml",
     "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
     "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
    {"llama2",
     "{% if messages and messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}"
     "{% set msgs = messages[1:] %}{% else %}{% set sys = none %}{% set msgs = messages %}{% endif %}"
     "{% for message in msgs %}{% if message['role'] == 'user' %}"
     "{% if loop.first and sys is not none %}{{ bos_token + '[INST] <<SYS>>\\n' + sys + '\\n<</SYS>>\\n\\n' + "
     "message['content'] | trim + ' [/INST]' }}{% else %}{{ bos_token + '[INST] ' + message['content'] | trim + "
     "' [/INST]' }}{% endif %}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] | trim + ' ' + "
     "eos_token }}{% endif %}{% endfor %}"},
    {"llama3",
     "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
     "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
     "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"},
    {"mistral",
     "{% if messages and messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}"
     "{% set msgs = messages[1:] %}{% else %}{% set msgs = messages %}{% endif %}{{ bos_token }}"
     "{% for message in msgs %}{% if message['role'] == 'user' %}{% if loop.first and sys is defined %}"
     "{{ '[INST] ' + sys + '\\n\\n' + message['content'] + ' [/INST]' }}{% else %}"
     "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}{% elif message['role'] == 'assistant' %}"
     "{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}"},
    {"gemma",
     "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' "
     "else 'user' %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
     "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"},
    {"phi3",
     "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
     "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"},
    {"zephyr",
     "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
     "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"},
    {"vicuna",
     "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
     "{% elif message['role'] == 'user' %}{{ 'USER: ' + message['content'] + '\\n' }}{% else %}"
     "{{ 'ASSISTANT: ' + message['content'] + eos_token + '\\n' }}{% endif %}{% endfor %}"
     "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"},
    {"deepseek",
     "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ 'User: ' + "
     "message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + "
     "message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
     "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"},
    {"alpaca",
     "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
     "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}{% else %}"
     "{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}{% endif %}{% endfor %}"
     "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"},
};

const char *tn_chat_builtin(const char *name)
{
    for (size_t i = 0; i < TN_ARRAY_LEN(builtins); i++)
        if (!strcmp(builtins[i].name, name))
            return builtins[i].src;
    return NULL;
}

const char *const *tn_chat_builtin_names(void)
{
    static const char *const names[] = {"chatml", "llama2", "llama3", "mistral", "gemma", "phi3",
                                        "zephyr", "vicuna", "deepseek", "alpaca", NULL};
    _Static_assert(TN_ARRAY_LEN(names) == TN_ARRAY_LEN(builtins) + 1, "one name per built-in");
    return names;
}
