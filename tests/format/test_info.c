/*
 * test_info.c — `tern info` (tools/cmd_info.c) on real and broken files.
 *
 * The subcommand is compiled into this test directly, so it is checked even
 * before the whole `tern` binary links; its stdout and stderr are captured
 * into temporary files and searched.
 */
#include "testutil.h"

#include "../../tools/cmd_info.c"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct captured {
    int rc;
    char *out, *err;
} captured;

/* Runs tn_cmd_info(argv) with fds 1 and 2 redirected to temporary files. */
static captured run_info(int argc, char **argv)
{
    char *po = tn_test_tmp_path(".out"), *pe = tn_test_tmp_path(".err");
    fflush(stdout);
    fflush(stderr);
    int save1 = dup(1), save2 = dup(2);
    int fo = open(po, O_WRONLY | O_CREAT | O_TRUNC, 0600), fe = open(pe, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(save1 >= 0 && save2 >= 0 && fo >= 0 && fe >= 0);
    dup2(fo, 1);
    dup2(fe, 2);
    captured c;
    c.rc = tn_cmd_info(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(save1, 1);
    dup2(save2, 2);
    close(save1);
    close(save2);
    close(fo);
    close(fe);
    c.out = tn_test_read_file(po, NULL);
    c.err = tn_test_read_file(pe, NULL);
    assert_non_null(c.out);
    assert_non_null(c.err);
    unlink(po);
    unlink(pe);
    free(po);
    free(pe);
    return c;
}

static void has(const char *text, const char *needle)
{
    if (!strstr(text, needle))
        fail_msg("output does not contain '%s':\n%s", needle, text);
}

static void test_info_stories(void **state)
{
    (void)state;
    char *argv[] = {"info", TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf", NULL};
    captured c = run_info(2, argv);
    assert_int_equal(c.rc, 0);
    assert_string_equal(c.err, "");
    has(c.out, "version:   3\n");
    has(c.out, "alignment: 32\n");
    has(c.out, "metadata: 18 keys\n");
    has(c.out, "general.architecture ");
    has(c.out, " str   \"llama\"\n");
    has(c.out, "llama.embedding_length ");
    has(c.out, " u32   64\n");
    has(c.out, " arr   str[512] [\"<unk>\", \"<s>\", \"</s>\", ");
    has(c.out, "tensors: 48\n");
    has(c.out, "token_embd.weight ");
    has(c.out, " f32     [64, 512] ");
    has(c.out, "131072\n");
    /* 292,800 parameters of f32: 1,171,200 bytes */
    has(c.out, "total: 48 tensors, 292800 parameters, 1171200 bytes\n");
    free(c.out);
    free(c.err);
}

static void test_info_errors(void **state)
{
    (void)state;
    char *missing[] = {"info", "/nonexistent/m.gguf", NULL};
    captured c = run_info(2, missing);
    assert_int_equal(c.rc, 1);
    assert_string_equal(c.out, "");
    has(c.err, "tern info: /nonexistent/m.gguf: cannot open");
    free(c.out);
    free(c.err);

    /* a truncated copy of a real file */
    size_t len;
    char *data = tn_test_read_file(TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf", &len);
    assert_non_null(data);
    char *path = tn_test_tmp_path(".gguf");
    assert_int_equal(tn_test_write_file(path, data, 5000), 0);
    char *trunc[] = {"info", path, NULL};
    c = run_info(2, trunc);
    assert_int_equal(c.rc, 1);
    has(c.err, "tern info: ");
    has(c.err, path);
    has(c.err, "kv 12 ('tokenizer.ggml.tokens')");
    free(c.out);
    free(c.err);
    unlink(path);
    free(path);
    free(data);

    char *none[] = {"info", NULL};
    c = run_info(1, none);
    assert_int_equal(c.rc, 2);
    has(c.err, "usage: tern info");
    free(c.out);
    free(c.err);
    char *help[] = {"info", "--help", NULL};
    c = run_info(2, help);
    assert_int_equal(c.rc, 0);
    has(c.out, "usage: tern info");
    free(c.out);
    free(c.err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_info_stories),
        cmocka_unit_test(test_info_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
