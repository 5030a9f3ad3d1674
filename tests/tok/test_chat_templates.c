/*
 * test_chat_templates — every real chat template in ../shared/data/chat
 * rendered with every context must equal what Python's jinja2 produced
 * (goldens/TEMPLATE-CONTEXT.txt; a golden starting "ERROR:" must fail).
 * Also: built-in formats, the adaptations of chat.h, strftime_now.
 */
#include "testutil.h"

#include "tok/chat.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHAT_DIR TN_SHARED_DATA "chat/"

/* Renders template file tpath with the context file cpath the way the
 * goldens were made (the context's bos/eos/add_generation_prompt, every
 * other key a variable, strftime_now on 2024-07-26). */
static tn_status render_files(const char *tsrc, size_t tlen, const char *cpath, char **out, size_t *n)
{
    json_error_t jerr;
    json_t *c = json_load_file(cpath, 0, &jerr);
    assert_non_null(c);
    tn_chat_ctx ctx = {
        .messages = json_object_get(c, "messages"),
        .tools = json_object_get(c, "tools"),
        .vars = c,
        .add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt")),
        .bos_token = json_string_value(json_object_get(c, "bos_token")),
        .eos_token = json_string_value(json_object_get(c, "eos_token")),
        .today = "2024-07-26",
    };
    tn_status st = tn_chat_render(tsrc, tlen, &ctx, out, n);
    json_decref(c);
    return st;
}

static void first_diff(const char *name, const char *got, size_t gn, const char *want, size_t wn)
{
    size_t i = 0;
    while (i < gn && i < wn && got[i] == want[i])
        i++;
    size_t from = i > 40 ? i - 40 : 0;
    print_error("%s: differs at byte %zu\n  got:  '%.*s'\n  want: '%.*s'\n", name, i,
                (int)(TN_MIN(gn, i + 40) - from), got + from, (int)(TN_MIN(wn, i + 40) - from), want + from);
}

static void test_goldens(void **state)
{
    (void)state;
    static const char *contexts[] = {"simple", "system", "tool_use"};
    DIR *d = opendir(CHAT_DIR "templates");
    assert_non_null(d);
    struct dirent *e;
    int total = 0, pass = 0;
    while ((e = readdir(d))) {
        size_t nl = strlen(e->d_name);
        if (nl < 7 || strcmp(e->d_name + nl - 6, ".jinja"))
            continue;
        char path[1024];
        snprintf(path, sizeof path, CHAT_DIR "templates/%s", e->d_name);
        size_t tlen;
        char *tsrc = tn_test_read_file(path, &tlen);
        assert_non_null(tsrc);
        for (size_t c = 0; c < TN_ARRAY_LEN(contexts); c++) {
            char cpath[1024], gpath[1024], name[512];
            snprintf(name, sizeof name, "%.*s-%s", (int)(nl - 6), e->d_name, contexts[c]);
            snprintf(cpath, sizeof cpath, CHAT_DIR "contexts/%s.json", contexts[c]);
            snprintf(gpath, sizeof gpath, CHAT_DIR "goldens/%s.txt", name);
            size_t wn;
            char *want = tn_test_read_file(gpath, &wn);
            if (!want)
                continue;
            total++;
            char *got = NULL;
            size_t gn = 0;
            tn_status st = render_files(tsrc, tlen, cpath, &got, &gn);
            bool want_err = wn >= 6 && !memcmp(want, "ERROR:", 6);
            if (want_err) {
                if (st != TN_OK)
                    pass++;
                else
                    print_error("%s: rendered, but jinja2 failed: %s", name, want);
            } else if (st != TN_OK) {
                print_error("%s: %s\n", name, tn_last_error());
            } else if (gn == wn && !memcmp(got, want, wn)) {
                pass++;
            } else {
                first_diff(name, got, gn, want, wn);
            }
            free(got);
            free(want);
        }
        free(tsrc);
    }
    closedir(d);
    print_message("chat templates: %d of %d goldens byte-identical\n", pass, total);
    assert_int_equal(total, 90);
    assert_int_equal(pass, total);
}

static char *render_builtin(const char *name, const char *ctx_name)
{
    const char *src = tn_chat_builtin(name);
    assert_non_null(src);
    char cpath[256];
    snprintf(cpath, sizeof cpath, CHAT_DIR "contexts/%s.json", ctx_name);
    char *out = NULL;
    size_t n;
    tn_status st = render_files(src, strlen(src), cpath, &out, &n);
    if (st)
        print_error("builtin %s: %s\n", name, tn_last_error());
    assert_int_equal(st, TN_OK);
    return out;
}

/* chatml is what OpenHermes ships and phi3 what Phi-3-mini ships: the
 * built-ins must render their goldens exactly. */
static void test_builtins_match_real_templates(void **state)
{
    (void)state;
    static const struct {
        const char *builtin, *golden;
    } pairs[] = {
        {"chatml", "teknium-OpenHermes-2.5-Mistral-7B"},
        {"phi3", "microsoft-Phi-3-mini-4k-instruct"},
        {"deepseek", "deepseek-ai-DeepSeek-Coder-V2-Instruct"},
    };
    static const char *contexts[] = {"simple", "system", "tool_use"};
    for (size_t i = 0; i < TN_ARRAY_LEN(pairs); i++)
        for (size_t c = 0; c < TN_ARRAY_LEN(contexts); c++) {
            char gpath[512];
            snprintf(gpath, sizeof gpath, CHAT_DIR "goldens/%s-%s.txt", pairs[i].golden, contexts[c]);
            size_t wn;
            char *want = tn_test_read_file(gpath, &wn);
            assert_non_null(want);
            char *got = render_builtin(pairs[i].builtin, contexts[c]);
            if (strcmp(got, want))
                first_diff(pairs[i].builtin, got, strlen(got), want, wn);
            assert_string_equal(got, want);
            free(got);
            free(want);
        }
    /* every built-in renders the system context and ends with its prompt */
    for (const char *const *n = tn_chat_builtin_names(); *n; n++) {
        char *got = render_builtin(*n, "system");
        assert_non_null(strstr(got, "llama.cpp!"));
        free(got);
    }
    assert_null(tn_chat_builtin("no-such-format"));
}

/* raw = true renders messages as given; the default adapts them. */
static void test_adaptations(void **state)
{
    (void)state;
    const char *t = "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}";
    json_t *msgs = json_pack("[{s:s,s:s},{s:s,s:s}]", "role", "system", "content", "S", "role", "user", "content", "U");
    tn_chat_ctx ctx = {.messages = msgs};
    char *out;
    size_t n;
    assert_int_equal(tn_chat_render(t, strlen(t), &ctx, &out, &n), TN_OK);
    assert_string_equal(out, "[system:S][user:U]"); /* the template shows system messages: kept */
    free(out);
    const char *nosys = "{% for m in messages if m.role != 'system' %}[{{ m.role }}:{{ m.content }}]{% endfor %}";
    assert_int_equal(tn_chat_render(nosys, strlen(nosys), &ctx, &out, &n), TN_OK);
    assert_string_equal(out, "[user:S\nU]"); /* dropped by the template: folded into the user turn */
    free(out);
    ctx.raw = true;
    assert_int_equal(tn_chat_render(nosys, strlen(nosys), &ctx, &out, &n), TN_OK);
    assert_string_equal(out, "[user:U]");
    free(out);
    json_decref(msgs);
}

static void test_strftime_and_errors(void **state)
{
    (void)state;
    json_t *msgs = json_array();
    tn_chat_ctx ctx = {.messages = msgs, .today = "2024-07-26"};
    const char *t = "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%A') }}";
    char *out;
    size_t n;
    assert_int_equal(tn_chat_render(t, strlen(t), &ctx, &out, &n), TN_OK);
    assert_string_equal(out, "26 Jul 2024|Friday");
    free(out);
    const char *r = "line one\n{{ raise_exception('no system role') }}";
    assert_int_equal(tn_chat_render(r, strlen(r), &ctx, &out, &n), TN_ERR_INVALID);
    assert_null(out);
    assert_non_null(strstr(tn_last_error(), "line 2 col 4"));
    assert_non_null(strstr(tn_last_error(), "no system role"));
    const char *syn = "{% if x %}\n{% endfor %}";
    assert_int_equal(tn_chat_render(syn, strlen(syn), &ctx, &out, &n), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "line 2"));
    json_decref(msgs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_goldens),
        cmocka_unit_test(test_builtins_match_real_templates),
        cmocka_unit_test(test_adaptations),
        cmocka_unit_test(test_strftime_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
