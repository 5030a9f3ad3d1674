/*
 * test_safetensors.c — the safetensors reader on good files and on files
 * built to break it: one bad field each (the error must name the file, the
 * tensor and what is wrong), every truncation of a good file, random byte
 * mutations of its header (under ASan any read outside the buffer fails),
 * and sharded sets whose index disagrees with the shards.
 *
 * Every buffer handed to tn_st_open_mem is malloc'd at exactly its size.
 */
#include "testutil.h"

#include "format/safetensors.h"
#include "kern/dtype.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A file: 8-byte length, the header text, then data bytes. */
static uint8_t *build(const char *header, const void *data, size_t data_len, size_t *len)
{
    size_t hl = strlen(header);
    *len = 8 + hl + data_len;
    uint8_t *b = malloc(*len ? *len : 1);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    if (data_len)
        memcpy(b + 8 + hl, data, data_len);
    return b;
}

static tn_status try_open(const uint8_t *data, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, data, len);
    tn_st_file *f = NULL;
    tn__err_clear();
    tn_status s = tn_st_open_mem(copy, len, "t.safetensors", &f);
    if (s != TN_OK) {
        assert_null(f);
        if (!strstr(tn_last_error(), "t.safetensors"))
            fail_msg("error '%s' does not name the file", tn_last_error());
    } else {
        volatile unsigned sum = 0;
        for (int64_t i = 0; i < tn_st_n_tensors(f); i++) {
            const tn_st_tensor *t = tn_st_tensor_at(f, i);
            assert_ptr_equal(tn_st_find(f, t->name), t);
            if (t->nbytes)
                sum += ((const uint8_t *)t->data)[0] + ((const uint8_t *)t->data)[t->nbytes - 1];
        }
        (void)sum;
        tn_st_close(f);
    }
    free(copy);
    return s;
}

static void expect_error(const char *header, size_t data_len, const char *needle)
{
    uint8_t data[256] = {0};
    assert_true(data_len <= sizeof data);
    size_t len;
    uint8_t *b = build(header, data, data_len, &len);
    tn_status s = try_open(b, len);
    free(b);
    if (s == TN_OK)
        fail_msg("header %s was accepted", header);
    if (!strstr(tn_last_error(), needle))
        fail_msg("error '%s' does not mention '%s'", tn_last_error(), needle);
}

static const char GOOD[] = "{\"__metadata__\":{\"format\":\"pt\"},"
                           "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                           "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[16,22]},"
                           "\"c\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[22,24]}}   ";

static uint8_t *good_file(size_t *len)
{
    uint8_t data[24];
    float a[4] = {1.0f, -2.5f, 3.25f, 1e-3f};
    memcpy(data, a, 16);
    uint16_t b[3] = {tn_fp32_to_bf16(0.5f), tn_fp32_to_bf16(-7.0f), tn_fp32_to_bf16(100.0f)};
    memcpy(data + 16, b, 6);
    uint16_t c = tn_fp32_to_fp16(-0.125f);
    memcpy(data + 22, &c, 2);
    return build(GOOD, data, sizeof data, len);
}

static void test_good(void **state)
{
    size_t len;
    uint8_t *b = good_file(&len);
    tn_st_file *f;
    assert_int_equal(tn_st_open_mem(b, len, "good", &f), TN_OK);
    assert_int_equal(tn_st_n_tensors(f), 3);
    const tn_st_tensor *a = tn_st_find(f, "a"), *bt = tn_st_find(f, "b"), *c = tn_st_find(f, "c");
    assert_non_null(a);
    assert_non_null(bt);
    assert_non_null(c);
    assert_null(tn_st_find(f, "__metadata__"));
    assert_int_equal(a->n_dims, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->n_elems, 4);
    float x[4];
    assert_int_equal(tn_st_read_f32(a, 1, 3, x), TN_OK);
    assert_true(x[0] == -2.5f && x[1] == 3.25f && x[2] == 1e-3f);
    assert_int_equal(tn_st_read_f32(bt, 0, 3, x), TN_OK);
    assert_true(x[0] == 0.5f && x[1] == -7.0f && x[2] == 100.0f);
    assert_int_equal(tn_st_read_f32(c, 0, 1, x), TN_OK);
    assert_true(x[0] == -0.125f);
    assert_int_equal(tn_st_read_f32(a, 2, 3, x), TN_ERR_RANGE);
    tn_st_close(f);
    free(b);
}

static void test_bad_fields(void **state)
{
    size_t len;
    uint8_t *b = build("", NULL, 0, &len);
    assert_int_equal(try_open(b, 4), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "shorter than the 8-byte"));
    free(b);
    /* header length past the end of the file */
    b = build("{}", NULL, 0, &len);
    b[0] = 200;
    assert_int_equal(try_open(b, len), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "header length 200"));
    b[0] = 0xff;
    b[7] = 0xff;
    assert_int_equal(try_open(b, len), TN_ERR_FORMAT);
    free(b);

    expect_error("{\"a\":", 0, "header JSON");
    expect_error("[1,2]", 0, "not a JSON object");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "duplicate");
    expect_error("{\"a\":7}", 0, "tensor 'a': entry is not an object");
    expect_error("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': field 'dtype'");
    expect_error("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': unknown dtype 'F33'");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "tensor 'a': shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":\"x\",\"data_offsets\":[0,4]}}", 4, "tensor 'a': field 'shape'");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                 "tensor 'a': field 'shape'");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
                 "tensor 'a': shape[1]");
    expect_error("{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", 4,
                 "tensor 'a': byte size overflows");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "tensor 'a': field 'data_offsets'");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "tensor 'a': field 'data_offsets'");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "tensor 'a': data_offsets [4, 0] outside");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 4, "tensor 'a': data_offsets [0, 8] outside");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[9223372036854775803,9223372036854775807]}}",
                 4, "tensor 'a': data_offsets [9223372036854775803, 9223372036854775807] outside");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "tensor 'a': data_offsets span 4 bytes");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlaps");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, "data bytes [4, 8) belong to no tensor");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "[4, 8) at the end");
    expect_error("{\"__metadata__\":[],\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                 "'__metadata__' is not an object");
    /* A tensor of a dtype the converter cannot read is opened, but not read. */
    uint8_t d[4] = {0};
    size_t l;
    uint8_t *f = build("{\"i\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}", d, 4, &l);
    tn_st_file *sf;
    assert_int_equal(tn_st_open_mem(f, l, "ints", &sf), TN_OK);
    float x;
    assert_int_equal(tn_st_read_f32(tn_st_find(sf, "i"), 0, 1, &x), TN_ERR_UNSUPPORTED);
    assert_non_null(strstr(tn_last_error(), "'i' has dtype I32"));
    tn_st_close(sf);
    free(f);
}

static void test_truncations_and_mutations(void **state)
{
    size_t len;
    uint8_t *b = good_file(&len);
    for (size_t n = 0; n < len; n++)
        assert_int_not_equal(try_open(b, n), TN_OK);
    assert_int_equal(try_open(b, len), TN_OK);
    uint64_t r = 0x9e3779b97f4a7c15ull;
    int accepted = 0;
    for (int it = 0; it < 20000; it++) {
        uint8_t *m = malloc(len);
        memcpy(m, b, len);
        int n_mut = 1 + (int)(r % 3);
        for (int k = 0; k < n_mut; k++) {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            size_t at = (size_t)(r % (len - 24 < 8 ? len : len - 24)); /* the length and the header */
            m[at] = (uint8_t)(r >> 32);
        }
        accepted += try_open(m, len) == TN_OK;
        free(m);
    }
    printf("[safetensors] 20000 mutated headers: %d opened, the rest rejected\n", accepted);
    free(b);
}

/* --- sets ---------------------------------------------------------------- */

static void write_file(const char *dir, const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    assert_int_equal(tn_test_write_file(p, text, strlen(text)), 0);
}

static void write_st(const char *dir, const char *name, const char *header, size_t data_len)
{
    uint8_t data[64] = {0};
    size_t len;
    uint8_t *b = build(header, data, data_len, &len);
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    assert_int_equal(tn_test_write_file(p, b, len), 0);
    free(b);
}

static void expect_set_error(const char *dir, const char *needle)
{
    tn_st_set *s = NULL;
    if (tn_st_set_open(dir, &s) == TN_OK)
        fail_msg("set %s was accepted", dir);
    assert_null(s);
    if (!strstr(tn_last_error(), needle))
        fail_msg("error '%s' does not mention '%s'", tn_last_error(), needle);
}

static void test_sets(void **state)
{
    char dir[] = "/tmp/tern-st-set-XXXXXX";
    assert_non_null(mkdtemp(dir));
    expect_set_error(dir, "neither model.safetensors nor model.safetensors.index.json");

    const char *s1 = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    const char *s2 = "{\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    write_st(dir, "m-1.safetensors", s1, 4);
    write_st(dir, "m-2.safetensors", s2, 8);
    write_file(dir, "model.safetensors.index.json",
               "{\"metadata\":{},\"weight_map\":{\"x\":\"m-1.safetensors\",\"y\":\"m-2.safetensors\"}}");
    tn_st_set *s;
    assert_int_equal(tn_st_set_open(dir, &s), TN_OK);
    assert_int_equal(tn_st_set_n_tensors(s), 2);
    assert_non_null(tn_st_set_find(s, "x"));
    assert_int_equal(tn_st_set_find(s, "y")->shape[0], 2);
    assert_null(tn_st_set_find(s, "z"));
    tn_st_set_free(s);

    write_file(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"x\":\"m-1.safetensors\",\"y\":\"m-1.safetensors\"}}");
    expect_set_error(dir, "weight_map puts tensor 'y' in");
    write_file(dir, "model.safetensors.index.json", "{\"weight_map\":{\"x\":\"m-1.safetensors\",\"y\":\"m-3.safetensors\"}}");
    expect_set_error(dir, "m-3.safetensors");
    write_file(dir, "model.safetensors.index.json", "{\"weight_map\":{\"x\":\"../m-1.safetensors\"}}");
    expect_set_error(dir, "weight_map['x'] is not a file name");
    write_file(dir, "model.safetensors.index.json", "{\"weight_map\":{\"y\":\"m-2.safetensors\",\"x\":\"m-1.safetensors\",\"z\":\"m-1.safetensors\"}}");
    expect_set_error(dir, "'z'");
    write_st(dir, "m-2.safetensors", "{\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                     "\"q\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    write_file(dir, "model.safetensors.index.json", "{\"weight_map\":{\"x\":\"m-1.safetensors\",\"y\":\"m-2.safetensors\"}}");
    expect_set_error(dir, "tensor 'q' of");
    write_file(dir, "model.safetensors.index.json", "{\"weight_map\":[]}");
    expect_set_error(dir, "field 'weight_map'");
    write_file(dir, "model.safetensors.index.json", "{\"weight_map\":");
    expect_set_error(dir, "model.safetensors.index.json:1");

    char p[512];
    const char *names[] = {"m-1.safetensors", "m-2.safetensors", "model.safetensors.index.json"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    write_st(dir, "model.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8);
    expect_set_error(dir, "model.safetensors: tensor 'x': data_offsets span 8 bytes");
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_truncations_and_mutations),
        cmocka_unit_test(test_sets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
