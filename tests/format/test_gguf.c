/*
 * test_gguf.c — the GGUF reader on real files, typed getters, the writer
 * round trip (every value type, nested arrays, fill callbacks), writer
 * argument errors, value formatting, and a read-back of our output by the
 * `gguf` Python package (the reader llama.cpp's tooling uses).
 *
 * Hostile input (truncations, bit flips, hand-made bad files) is in
 * test_gguf_hostile.c.
 */
#include "testutil.h"

#include "format/gguf.h"
#include "gguf_build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STORIES_V3 TN_SHARED_DATA "models/stories260K/stories260K.v3.derived.gguf"
#define STORIES_V1 TN_SHARED_DATA "models/stories260K/stories260K.v1.gguf"
#define STORIES_BIN TN_SHARED_DATA "models/stories260K/stories260K.bin"
#define TINY_RANDOM TN_SHARED_DATA "models/tiny-random/llama-2-tiny-random.gguf"

static tn_gguf *open_ok(const char *path)
{
    tn_gguf *g = NULL;
    tn_status st = tn_gguf_open(path, &g);
    if (st)
        fail_msg("open %s: %s", path, tn_last_error());
    return g;
}

static void assert_str(const char *s, size_t len, const char *want)
{
    assert_int_equal(len, strlen(want));
    assert_memory_equal(s, want, len);
}

static void assert_err_has(const char *needle)
{
    if (!strstr(tn_last_error(), needle))
        fail_msg("error '%s' does not mention '%s'", tn_last_error(), needle);
}

/* --- real files ---------------------------------------------------------- */

static void test_stories_v3(void **state)
{
    (void)state;
    tn_gguf *g = open_ok(STORIES_V3);
    assert_int_equal(tn_gguf_version(g), 3);
    assert_int_equal(tn_gguf_alignment(g), 32);
    assert_int_equal(tn_gguf_n_kv(g), 18);
    assert_int_equal(tn_gguf_n_tensors(g), 48);

    const char *s;
    size_t len;
    assert_int_equal(tn_gguf_get_str(g, "general.architecture", &s, &len), TN_OK);
    assert_str(s, len, "llama");
    uint32_t u;
    assert_int_equal(tn_gguf_get_u32(g, "llama.embedding_length", &u), TN_OK);
    assert_int_equal(u, 64);
    assert_int_equal(tn_gguf_get_u32(g, "llama.block_count", &u), TN_OK);
    assert_int_equal(u, 5);
    float eps;
    assert_int_equal(tn_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps), TN_OK);
    assert_true(eps > 0.9e-5f && eps < 1.1e-5f);

    tn_gguf_type et;
    uint64_t n;
    const void *data;
    assert_int_equal(tn_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data), TN_OK);
    assert_int_equal(et, TN_GGUF_STRING);
    assert_int_equal(n, 512);
    assert_null(data);
    int64_t kv = tn_gguf_find_key(g, "tokenizer.ggml.tokens");
    assert_true(kv >= 0);
    assert_string_equal(tn_gguf_kv_key(g, kv), "tokenizer.ggml.tokens");
    assert_int_equal(tn_gguf_kv_type(g, kv), TN_GGUF_ARRAY);
    assert_int_equal(tn_gguf_arr_str(g, kv, 0, &s, &len), TN_OK);
    assert_str(s, len, "<unk>");
    assert_int_equal(tn_gguf_arr_str(g, kv, 1, &s, &len), TN_OK);
    assert_str(s, len, "<s>");
    assert_int_equal(tn_gguf_arr_str(g, kv, 511, &s, &len), TN_OK);
    assert_true(len > 0);
    assert_int_equal(tn_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n, &data), TN_OK);
    assert_int_equal(et, TN_GGUF_INT32);
    assert_int_equal(n, 512);
    int32_t tt;
    memcpy(&tt, data, 4);
    assert_int_equal(tt, 2); /* <unk> is UNKNOWN */

    const tn_gguf_tensor *t = tn_gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(t);
    assert_ptr_equal(t, tn_gguf_tensor_at(g, 0));
    assert_int_equal(t->type, TN_DTYPE_F32);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 64);
    assert_int_equal(t->ne[1], 512);
    assert_int_equal(t->ne[2], 1);
    assert_int_equal(t->ne[3], 1);
    assert_int_equal(t->nbytes, 64 * 512 * 4);
    assert_int_equal(t->offset % 32, 0);

    /* the embedding bytes equal llama2.c's checkpoint (7 int header, then
     * the token embedding table, vocab x dim, the same row-major layout) */
    size_t bin_len;
    char *bin = tn_test_read_file(STORIES_BIN, &bin_len);
    assert_non_null(bin);
    assert_true(bin_len >= 28 + t->nbytes);
    assert_memory_equal(t->data, bin + 28, t->nbytes);
    free(bin);

    const tn_gguf_tensor *out = tn_gguf_find_tensor(g, "output.weight");
    assert_non_null(out);
    assert_int_equal(out->ne[0], 64);
    assert_null(tn_gguf_find_tensor(g, "nope"));
    assert_null(tn_gguf_find_tensor(g, NULL));
    assert_null(tn_gguf_tensor_at(g, 48));
    assert_null(tn_gguf_tensor_at(g, -1));
    assert_null(tn_gguf_kv_key(g, 18));
    assert_int_equal(tn_gguf_kv_type(g, -1), TN_GGUF_TYPE_COUNT);
    assert_int_equal(tn_gguf_find_key(g, "missing.key"), -1);
    tn_gguf_free(g);
}

static void test_tiny_random(void **state)
{
    (void)state;
    tn_gguf *g = open_ok(TINY_RANDOM);
    assert_int_equal(tn_gguf_version(g), 3);
    assert_int_equal(tn_gguf_n_tensors(g), 12);
    assert_int_equal(tn_gguf_n_kv(g), 18);
    uint32_t ft, emb;
    assert_int_equal(tn_gguf_get_u32(g, "general.file_type", &ft), TN_OK);
    assert_int_equal(ft, 1);
    assert_int_equal(tn_gguf_get_u32(g, "llama.embedding_length", &emb), TN_OK);
    assert_int_equal(emb, 8);
    const tn_gguf_tensor *t = tn_gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->type, TN_DTYPE_F16);
    assert_int_equal(t->ne[0], 8);
    assert_int_equal(t->ne[1], 32000);
    assert_int_equal(t->nbytes, 8 * 32000 * 2);
    int64_t kv = tn_gguf_find_key(g, "tokenizer.ggml.tokens");
    const char *s;
    size_t len;
    assert_int_equal(tn_gguf_arr_str(g, kv, 31999, &s, &len), TN_OK);
    assert_true(len > 0);
    assert_int_equal(tn_gguf_arr_str(g, kv, 32000, &s, &len), TN_ERR_RANGE);
    /* every tensor lies inside the file, at an aligned offset */
    for (int64_t i = 0; i < tn_gguf_n_tensors(g); i++)
        assert_int_equal(tn_gguf_tensor_at(g, i)->offset % tn_gguf_alignment(g), 0);
    tn_gguf_free(g);
}

static void test_v1_matches_v3(void **state)
{
    (void)state;
    tn_gguf *g1 = open_ok(STORIES_V1), *g3 = open_ok(STORIES_V3);
    assert_int_equal(tn_gguf_version(g1), 1);
    assert_int_equal(tn_gguf_n_tensors(g1), tn_gguf_n_tensors(g3));
    for (int64_t i = 0; i < tn_gguf_n_tensors(g3); i++) {
        const tn_gguf_tensor *b = tn_gguf_tensor_at(g3, i);
        const tn_gguf_tensor *a = tn_gguf_find_tensor(g1, b->name);
        assert_non_null(a);
        assert_int_equal(a->type, b->type);
        assert_int_equal(a->n_dims, b->n_dims);
        assert_memory_equal(a->ne, b->ne, sizeof a->ne);
        assert_int_equal(a->nbytes, b->nbytes);
        assert_memory_equal(a->data, b->data, b->nbytes);
    }
    /* same metadata, rendered identically */
    assert_int_equal(tn_gguf_n_kv(g1), tn_gguf_n_kv(g3));
    char x[256], y[256];
    for (int64_t i = 0; i < tn_gguf_n_kv(g3); i++) {
        int64_t j = tn_gguf_find_key(g1, tn_gguf_kv_key(g3, i));
        assert_true(j >= 0);
        assert_string_equal(tn_gguf_kv_format(g1, j, x, sizeof x), tn_gguf_kv_format(g3, i, y, sizeof y));
    }
    int64_t kv = tn_gguf_find_key(g1, "tokenizer.ggml.tokens");
    const char *s;
    size_t len;
    assert_int_equal(tn_gguf_arr_str(g1, kv, 2, &s, &len), TN_OK);
    assert_str(s, len, "</s>");
    tn_gguf_free(g1);
    tn_gguf_free(g3);
}

static void test_open_errors(void **state)
{
    (void)state;
    tn_gguf *g = (tn_gguf *)1;
    assert_int_equal(tn_gguf_open("/nonexistent/model.gguf", &g), TN_ERR_IO);
    assert_null(g);
    assert_err_has("/nonexistent/model.gguf");
    assert_int_equal(tn_gguf_open("/tmp", &g), TN_ERR_IO);
    assert_err_has("not a regular file");

    char *path = tn_test_tmp_path(".gguf");
    assert_int_equal(tn_test_write_file(path, "", 0), 0);
    assert_int_equal(tn_gguf_open(path, &g), TN_ERR_FORMAT);
    assert_err_has(path);
    assert_err_has("empty");
    /* a malformed file: the message starts with the path */
    assert_int_equal(tn_test_write_file(path, "GGUF\x07\0\0\0", 8), 0);
    assert_int_equal(tn_gguf_open(path, &g), TN_ERR_FORMAT);
    assert_true(strncmp(tn_last_error(), path, strlen(path)) == 0);
    assert_err_has("version");
    assert_err_has("offset 4");
    unlink(path);
    free(path);
    tn_gguf_free(NULL);
}

/* --- getters ------------------------------------------------------------- */

/* A v3 file holding one scalar of each type, hand-made. */
static gb scalars_file(void)
{
    gb b = {0};
    gb_header(&b, 3, 0, 13);
    gb_key(&b, "u8", 0), gb_u8(&b, 200);
    gb_key(&b, "i8", 1), gb_u8(&b, (uint8_t)-100);
    gb_key(&b, "u16", 2), gb_u8(&b, 0x34), gb_u8(&b, 0x12);
    gb_key(&b, "i16", 3), gb_u8(&b, 0xff), gb_u8(&b, 0xff);
    gb_key(&b, "u32", 4), gb_u32(&b, 4000000000u);
    gb_key(&b, "i32", 5), gb_u32(&b, (uint32_t)-7);
    float f = 1.5f;
    uint32_t fb;
    memcpy(&fb, &f, 4);
    gb_key(&b, "f32", 6), gb_u32(&b, fb);
    gb_key(&b, "bool", 7), gb_u8(&b, 1);
    gb_kv_str(&b, "str", "hi\n\"there\"");
    gb_key(&b, "u64", 10), gb_u64(&b, 1ull << 40);
    gb_key(&b, "i64", 11), gb_u64(&b, (uint64_t)-5);
    double d = -2.25;
    uint64_t db;
    memcpy(&db, &d, 8);
    gb_key(&b, "f64", 12), gb_u64(&b, db);
    gb_key(&b, "arr", 9), gb_arr(&b, 5, 2), gb_u32(&b, 1), gb_u32(&b, 2);
    return b;
}

static tn_gguf *open_gb(gb *b, char **copy)
{
    *copy = malloc(b->len);
    memcpy(*copy, b->p, b->len);
    tn_gguf *g = NULL;
    if (tn_gguf_open_mem(*copy, b->len, &g))
        fail_msg("open_mem: %s", tn_last_error());
    return g;
}

static void test_getters(void **state)
{
    (void)state;
    gb b = scalars_file();
    char *copy;
    tn_gguf *g = open_gb(&b, &copy);
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    float f;
    bool bl;
    const char *s;
    size_t len;

    /* integers widen and narrow when the value fits */
    assert_int_equal(tn_gguf_get_u32(g, "u8", &u32), TN_OK);
    assert_int_equal(u32, 200);
    assert_int_equal(tn_gguf_get_i32(g, "i8", &i32), TN_OK);
    assert_int_equal(i32, -100);
    assert_int_equal(tn_gguf_get_u32(g, "u16", &u32), TN_OK);
    assert_int_equal(u32, 0x1234);
    assert_int_equal(tn_gguf_get_i32(g, "i16", &i32), TN_OK);
    assert_int_equal(i32, -1);
    assert_int_equal(tn_gguf_get_u64(g, "u32", &u64), TN_OK);
    assert_int_equal(u64, 4000000000u);
    assert_int_equal(tn_gguf_get_u64(g, "u64", &u64), TN_OK);
    assert_int_equal(u64, 1ull << 40);
    assert_int_equal(tn_gguf_get_i32(g, "i64", &i32), TN_OK);
    assert_int_equal(i32, -5);
    assert_int_equal(tn_gguf_get_u32(g, "arr", &u32), TN_ERR_FORMAT);
    assert_err_has("'arr'");

    /* ... and fail, naming the key, when it does not */
    assert_int_equal(tn_gguf_get_i32(g, "u32", &i32), TN_ERR_FORMAT);
    assert_err_has("'u32'");
    assert_err_has("4000000000");
    assert_int_equal(tn_gguf_get_u32(g, "u64", &u32), TN_ERR_FORMAT);
    assert_err_has("does not fit u32");
    assert_int_equal(tn_gguf_get_u32(g, "i32", &u32), TN_ERR_FORMAT);
    assert_err_has("-7");
    assert_int_equal(tn_gguf_get_u64(g, "i8", &u64), TN_ERR_FORMAT);
    assert_int_equal(tn_gguf_get_u32(g, "f32", &u32), TN_ERR_FORMAT);
    assert_err_has("type f32, expected an integer");

    assert_int_equal(tn_gguf_get_f32(g, "f32", &f), TN_OK);
    assert_true(f == 1.5f);
    assert_int_equal(tn_gguf_get_f32(g, "f64", &f), TN_OK);
    assert_true(f == -2.25f);
    assert_int_equal(tn_gguf_get_f32(g, "u32", &f), TN_ERR_FORMAT);
    assert_err_has("'u32'");
    assert_int_equal(tn_gguf_get_bool(g, "bool", &bl), TN_OK);
    assert_true(bl);
    assert_int_equal(tn_gguf_get_bool(g, "u8", &bl), TN_ERR_FORMAT);
    assert_err_has("expected bool");
    assert_int_equal(tn_gguf_get_str(g, "str", &s, &len), TN_OK);
    assert_str(s, len, "hi\n\"there\"");
    assert_int_equal(tn_gguf_get_str(g, "u8", &s, &len), TN_ERR_FORMAT);
    assert_err_has("expected str");

    tn_gguf_type et;
    uint64_t n;
    const void *data;
    assert_int_equal(tn_gguf_get_arr(g, "arr", &et, &n, &data), TN_OK);
    assert_int_equal(et, TN_GGUF_INT32);
    assert_int_equal(n, 2);
    assert_memory_equal(data, "\1\0\0\0\2\0\0\0", 8);
    assert_int_equal(tn_gguf_get_arr(g, "str", &et, &n, &data), TN_ERR_FORMAT);
    assert_err_has("expected arr");
    /* a numeric array is not a string array */
    assert_int_equal(tn_gguf_arr_str(g, tn_gguf_find_key(g, "arr"), 0, &s, &len), TN_ERR_FORMAT);
    assert_err_has("not an array of str");
    assert_int_equal(tn_gguf_arr_str(g, 99, 0, &s, &len), TN_ERR_RANGE);
    assert_int_equal(tn_gguf_arr_arr(g, -1, 0, &et, &n, &data), TN_ERR_RANGE);

    /* missing keys */
    assert_int_equal(tn_gguf_get_u32(g, "no.such.key", &u32), TN_ERR_NOT_FOUND);
    assert_err_has("'no.such.key' not found");
    assert_int_equal(tn_gguf_get_str(g, "nope", &s, &len), TN_ERR_NOT_FOUND);
    assert_int_equal(tn_gguf_get_f32(g, "nope", &f), TN_ERR_NOT_FOUND);
    assert_int_equal(tn_gguf_get_bool(g, "nope", &bl), TN_ERR_NOT_FOUND);
    assert_int_equal(tn_gguf_get_arr(g, "nope", &et, &n, &data), TN_ERR_NOT_FOUND);

    /* formatting */
    char buf[128];
    int64_t i = tn_gguf_find_key(g, "str");
    assert_string_equal(tn_gguf_kv_format(g, i, buf, sizeof buf), "\"hi\\n\\\"there\\\"\"");
    assert_string_equal(tn_gguf_kv_format(g, tn_gguf_find_key(g, "i16"), buf, sizeof buf), "-1");
    assert_string_equal(tn_gguf_kv_format(g, tn_gguf_find_key(g, "f64"), buf, sizeof buf), "-2.25");
    assert_string_equal(tn_gguf_kv_format(g, tn_gguf_find_key(g, "bool"), buf, sizeof buf), "true");
    assert_string_equal(tn_gguf_kv_format(g, tn_gguf_find_key(g, "arr"), buf, sizeof buf), "i32[2] [1, 2]");
    assert_string_equal(tn_gguf_kv_format(g, 99, buf, sizeof buf), "?");
    char small[8];
    assert_string_equal(tn_gguf_kv_format(g, tn_gguf_find_key(g, "arr"), small, sizeof small), "i32[...");
    tn_gguf_free(g);
    free(copy);
    free(b.p);
}

static void test_format_abbreviates(void **state)
{
    (void)state;
    tn_gguf *g = open_ok(STORIES_V3);
    char buf[512];
    int64_t i = tn_gguf_find_key(g, "tokenizer.ggml.tokens");
    tn_gguf_kv_format(g, i, buf, sizeof buf);
    assert_true(strncmp(buf, "str[512] [\"<unk>\", \"<s>\", \"</s>\"", 32) == 0);
    assert_non_null(strstr(buf, ", ...]"));
    assert_true(strlen(buf) < 200);
    tn_gguf_free(g);
}

/* --- writer round trip --------------------------------------------------- */

typedef struct fill_ctx {
    int calls;
    uint8_t seed;
    tn_status fail_with;
} fill_ctx;

static tn_status fill_bytes(void *ctx, void *dst, size_t nbytes)
{
    fill_ctx *c = ctx;
    c->calls++;
    if (c->fail_with)
        return tn__err(c->fail_with, "test fill refused");
    for (size_t i = 0; i < nbytes; i++)
        ((uint8_t *)dst)[i] = (uint8_t)(c->seed + i * 7);
    return TN_OK;
}

/* Writes a file with every metadata type and a few tensors; returns its path. */
static char *write_everything(fill_ctx *fc, float *w32, uint16_t *w16, uint8_t *q8)
{
    tn_gguf_writer *w;
    assert_int_equal(tn_gguf_writer_new(&w), TN_OK);
    assert_int_equal(tn_gguf_set_str(w, "general.architecture", "llama"), TN_OK);
    assert_int_equal(tn_gguf_set_u32(w, "general.alignment", 64), TN_OK);
    assert_int_equal(tn_gguf_set_u32(w, "a.u32", 7), TN_OK);
    assert_int_equal(tn_gguf_set_i32(w, "a.i32", -7), TN_OK);
    assert_int_equal(tn_gguf_set_u64(w, "a.u64", 1ull << 50), TN_OK);
    assert_int_equal(tn_gguf_set_f32(w, "a.f32", 0.125f), TN_OK);
    assert_int_equal(tn_gguf_set_bool(w, "a.bool", true), TN_OK);
    assert_int_equal(tn_gguf_set_str(w, "a.empty", ""), TN_OK);
    /* numeric arrays of every element type */
    static const uint8_t raw[64] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 1, 0, 1, 0};
    static const tn_gguf_type numeric[] = {TN_GGUF_UINT8, TN_GGUF_INT8, TN_GGUF_UINT16, TN_GGUF_INT16,
                                           TN_GGUF_UINT32, TN_GGUF_INT32, TN_GGUF_FLOAT32, TN_GGUF_UINT64,
                                           TN_GGUF_INT64, TN_GGUF_FLOAT64};
    for (size_t k = 0; k < TN_ARRAY_LEN(numeric); k++) {
        char key[32];
        snprintf(key, sizeof key, "arr.%s", tn_gguf_type_name(numeric[k]));
        assert_int_equal(tn_gguf_set_arr(w, key, numeric[k], raw, 2), TN_OK);
    }
    static const uint8_t bools[] = {1, 0, 1};
    assert_int_equal(tn_gguf_set_arr(w, "arr.bool", TN_GGUF_BOOL, bools, 3), TN_OK);
    assert_int_equal(tn_gguf_set_arr(w, "arr.empty", TN_GGUF_FLOAT32, NULL, 0), TN_OK);
    const char *strs[] = {"alpha", "", "gamma \xe2\x9c\x93"};
    assert_int_equal(tn_gguf_set_arr_str(w, "arr.str", strs, 3), TN_OK);
    /* nested: two sub-arrays of i32, then of strings */
    static const int32_t s0[] = {1, 2, 3}, s1[] = {-4};
    const void *subs[] = {s0, s1};
    const uint64_t counts[] = {3, 1};
    assert_int_equal(tn_gguf_set_arr_arr(w, "arr.arr_i32", TN_GGUF_INT32, subs, counts, 2), TN_OK);
    const char *sa[] = {"x", "yy"}, *sb[] = {"zzz"};
    const void *ssubs[] = {sa, sb};
    const uint64_t scounts[] = {2, 1};
    assert_int_equal(tn_gguf_set_arr_arr(w, "arr.arr_str", TN_GGUF_STRING, ssubs, scounts, 2), TN_OK);
    /* replacing keeps the first position */
    assert_int_equal(tn_gguf_set_u32(w, "a.u32", 8), TN_OK);

    for (int i = 0; i < 5 * 3; i++)
        w32[i] = (float)i * 0.5f;
    for (int i = 0; i < 8; i++)
        w16[i] = (uint16_t)(0x3c00 + i);
    for (int i = 0; i < 34 * 2; i++)
        q8[i] = (uint8_t)i;
    assert_int_equal(tn_gguf_add_tensor(w, "w32", TN_DTYPE_F32, 2, (const int64_t[]){5, 3}, w32), TN_OK);
    assert_int_equal(tn_gguf_add_tensor(w, "w16", TN_DTYPE_F16, 3, (const int64_t[]){2, 2, 2}, w16), TN_OK);
    assert_int_equal(tn_gguf_add_tensor(w, "q8", TN_DTYPE_Q8_0, 4, (const int64_t[]){64, 1, 1, 1}, q8), TN_OK);
    assert_int_equal(tn_gguf_add_tensor(w, "empty", TN_DTYPE_F32, 2, (const int64_t[]){0, 4}, NULL), TN_OK);
    assert_int_equal(tn_gguf_add_tensor_fn(w, "filled", TN_DTYPE_I8, 1, (const int64_t[]){100}, fill_bytes, fc),
                     TN_OK);
    char *path = tn_test_tmp_path(".gguf");
    assert_int_equal(tn_gguf_writer_write(w, path), TN_OK);
    tn_gguf_writer_free(w);
    return path;
}

static void test_roundtrip(void **state)
{
    (void)state;
    fill_ctx fc = {.seed = 3};
    float w32[15];
    uint16_t w16[8];
    uint8_t q8[68];
    char *path = write_everything(&fc, w32, w16, q8);
    assert_int_equal(fc.calls, 1);
    tn_gguf *g = open_ok(path);
    assert_int_equal(tn_gguf_version(g), 3);
    assert_int_equal(tn_gguf_alignment(g), 64);
    assert_string_equal(tn_gguf_kv_key(g, 0), "general.architecture");
    assert_string_equal(tn_gguf_kv_key(g, 2), "a.u32");

    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    float f;
    bool bl;
    const char *s;
    size_t len;
    assert_int_equal(tn_gguf_get_u32(g, "a.u32", &u32), TN_OK);
    assert_int_equal(u32, 8);
    assert_int_equal(tn_gguf_kv_type(g, 2), TN_GGUF_UINT32);
    assert_int_equal(tn_gguf_get_i32(g, "a.i32", &i32), TN_OK);
    assert_int_equal(i32, -7);
    assert_int_equal(tn_gguf_get_u64(g, "a.u64", &u64), TN_OK);
    assert_int_equal(u64, 1ull << 50);
    assert_int_equal(tn_gguf_get_f32(g, "a.f32", &f), TN_OK);
    assert_true(f == 0.125f);
    assert_int_equal(tn_gguf_get_bool(g, "a.bool", &bl), TN_OK);
    assert_true(bl);
    assert_int_equal(tn_gguf_get_str(g, "a.empty", &s, &len), TN_OK);
    assert_int_equal(len, 0);

    tn_gguf_type et;
    uint64_t n;
    const void *data;
    static const tn_gguf_type numeric[] = {TN_GGUF_UINT8, TN_GGUF_INT8, TN_GGUF_UINT16, TN_GGUF_INT16,
                                           TN_GGUF_UINT32, TN_GGUF_INT32, TN_GGUF_FLOAT32, TN_GGUF_UINT64,
                                           TN_GGUF_INT64, TN_GGUF_FLOAT64};
    static const uint8_t raw[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    for (size_t k = 0; k < TN_ARRAY_LEN(numeric); k++) {
        char key[32];
        snprintf(key, sizeof key, "arr.%s", tn_gguf_type_name(numeric[k]));
        assert_int_equal(tn_gguf_get_arr(g, key, &et, &n, &data), TN_OK);
        assert_int_equal(et, numeric[k]);
        assert_int_equal(n, 2);
        size_t esz = numeric[k] == TN_GGUF_UINT8 || numeric[k] == TN_GGUF_INT8     ? 1
                     : numeric[k] == TN_GGUF_UINT16 || numeric[k] == TN_GGUF_INT16 ? 2
                     : numeric[k] == TN_GGUF_UINT64 || numeric[k] == TN_GGUF_INT64 ||
                             numeric[k] == TN_GGUF_FLOAT64
                         ? 8
                         : 4;
        assert_memory_equal(data, raw, 2 * esz);
    }
    assert_int_equal(tn_gguf_get_arr(g, "arr.bool", &et, &n, &data), TN_OK);
    assert_int_equal(et, TN_GGUF_BOOL);
    assert_memory_equal(data, "\1\0\1", 3);
    assert_int_equal(tn_gguf_get_arr(g, "arr.empty", &et, &n, &data), TN_OK);
    assert_int_equal(n, 0);

    int64_t kv = tn_gguf_find_key(g, "arr.str");
    assert_int_equal(tn_gguf_arr_str(g, kv, 0, &s, &len), TN_OK);
    assert_str(s, len, "alpha");
    assert_int_equal(tn_gguf_arr_str(g, kv, 1, &s, &len), TN_OK);
    assert_int_equal(len, 0);
    assert_int_equal(tn_gguf_arr_str(g, kv, 2, &s, &len), TN_OK);
    assert_str(s, len, "gamma \xe2\x9c\x93");

    kv = tn_gguf_find_key(g, "arr.arr_i32");
    assert_int_equal(tn_gguf_arr_arr(g, kv, 0, &et, &n, &data), TN_OK);
    assert_int_equal(et, TN_GGUF_INT32);
    assert_int_equal(n, 3);
    static const int32_t want0[] = {1, 2, 3};
    assert_memory_equal(data, want0, 12);
    assert_int_equal(tn_gguf_arr_arr(g, kv, 1, &et, &n, &data), TN_OK);
    assert_int_equal(n, 1);
    static const int32_t want1[] = {-4};
    assert_memory_equal(data, want1, 4);
    assert_int_equal(tn_gguf_arr_arr(g, kv, 2, &et, &n, &data), TN_ERR_RANGE);
    char buf[256];
    assert_string_equal(tn_gguf_kv_format(g, kv, buf, sizeof buf), "arr[2] [i32[3] [1, 2, 3], i32[1] [-4]]");
    kv = tn_gguf_find_key(g, "arr.arr_str");
    assert_int_equal(tn_gguf_arr_arr(g, kv, 0, &et, &n, &data), TN_OK);
    assert_int_equal(et, TN_GGUF_STRING);
    assert_int_equal(n, 2);
    assert_null(data);
    assert_string_equal(tn_gguf_kv_format(g, kv, buf, sizeof buf), "arr[2] [str[2] [\"x\", \"yy\"], str[1] [\"zzz\"]]");

    /* tensors: bytes, shapes, aligned offsets, fill callback output */
    assert_int_equal(tn_gguf_n_tensors(g), 5);
    const tn_gguf_tensor *t = tn_gguf_find_tensor(g, "w32");
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 5);
    assert_int_equal(t->ne[1], 3);
    assert_memory_equal(t->data, w32, sizeof(float) * 15);
    t = tn_gguf_find_tensor(g, "w16");
    assert_int_equal(t->type, TN_DTYPE_F16);
    assert_int_equal(t->n_dims, 3);
    assert_memory_equal(t->data, w16, 16);
    t = tn_gguf_find_tensor(g, "q8");
    assert_int_equal(t->type, TN_DTYPE_Q8_0);
    assert_int_equal(t->n_dims, 4);
    assert_int_equal(t->nbytes, 68);
    assert_memory_equal(t->data, q8, 68);
    t = tn_gguf_find_tensor(g, "empty");
    assert_int_equal(t->nbytes, 0);
    t = tn_gguf_find_tensor(g, "filled");
    assert_int_equal(t->type, TN_DTYPE_I8);
    assert_int_equal(t->nbytes, 100);
    for (int i = 0; i < 100; i++)
        assert_int_equal(((const uint8_t *)t->data)[i], (uint8_t)(3 + i * 7));
    for (int64_t i = 0; i < tn_gguf_n_tensors(g); i++)
        assert_int_equal(tn_gguf_tensor_at(g, i)->offset % 64, 0);
    tn_gguf_free(g);
    unlink(path);
    free(path);
}

/* Copies a hand-made file with deeper nesting and scalar types the setters
 * lack (u8, i16, i64, f64, ...) through tn_gguf_set_from, and v1 -> v3. */
static void test_set_from(void **state)
{
    (void)state;
    gb b = scalars_file();
    /* append nothing: make a second file with 3-level nesting */
    gb nb = {0};
    gb_header(&nb, 2, 0, 1);
    gb_key(&nb, "deep", 9);
    gb_arr(&nb, 9, 2);
    gb_arr(&nb, 9, 1);
    gb_arr(&nb, 8, 2), gb_str(&nb, "a"), gb_str(&nb, "bc");
    gb_arr(&nb, 9, 0);
    char *c1, *c2;
    tn_gguf *g1 = open_gb(&b, &c1), *g2 = open_gb(&nb, &c2);
    tn_gguf *gv1 = open_ok(STORIES_V1);

    tn_gguf_writer *w;
    assert_int_equal(tn_gguf_writer_new(&w), TN_OK);
    for (int64_t i = 0; i < tn_gguf_n_kv(g1); i++)
        assert_int_equal(tn_gguf_set_from(w, g1, i), TN_OK);
    assert_int_equal(tn_gguf_set_from(w, g2, 0), TN_OK);
    for (int64_t i = 0; i < tn_gguf_n_kv(gv1); i++)
        assert_int_equal(tn_gguf_set_from(w, gv1, i), TN_OK);
    assert_int_equal(tn_gguf_set_from(w, g1, 99), TN_ERR_RANGE);
    char *path = tn_test_tmp_path(".gguf");
    assert_int_equal(tn_gguf_writer_write(w, path), TN_OK);
    tn_gguf_writer_free(w);

    tn_gguf *g = open_ok(path);
    assert_int_equal(tn_gguf_n_kv(g), tn_gguf_n_kv(g1) + 1 + tn_gguf_n_kv(gv1));
    char x[512], y[512];
    const tn_gguf *srcs[] = {g1, g2, gv1};
    for (size_t k = 0; k < 3; k++)
        for (int64_t i = 0; i < tn_gguf_n_kv(srcs[k]); i++) {
            int64_t j = tn_gguf_find_key(g, tn_gguf_kv_key(srcs[k], i));
            assert_true(j >= 0);
            assert_int_equal(tn_gguf_kv_type(g, j), tn_gguf_kv_type(srcs[k], i));
            assert_string_equal(tn_gguf_kv_format(g, j, x, sizeof x), tn_gguf_kv_format(srcs[k], i, y, sizeof y));
        }
    int64_t j = tn_gguf_find_key(g, "deep");
    assert_string_equal(tn_gguf_kv_format(g, j, x, sizeof x), "arr[2] [arr[1] [str[2] [\"a\", \"bc\"]], arr[0] []]");
    /* the v1 vocabulary survived the conversion to 64-bit lengths */
    int64_t kv = tn_gguf_find_key(g, "tokenizer.ggml.tokens");
    const char *s;
    size_t len;
    assert_int_equal(tn_gguf_arr_str(g, kv, 511, &s, &len), TN_OK);
    const char *s1;
    size_t len1;
    assert_int_equal(tn_gguf_arr_str(gv1, tn_gguf_find_key(gv1, "tokenizer.ggml.tokens"), 511, &s1, &len1), TN_OK);
    assert_int_equal(len, len1);
    assert_memory_equal(s, s1, len);

    tn_gguf_free(g);
    tn_gguf_free(g1);
    tn_gguf_free(g2);
    tn_gguf_free(gv1);
    unlink(path);
    free(path);
    free(c1);
    free(c2);
    free(b.p);
    free(nb.p);
}

static void test_writer_errors(void **state)
{
    (void)state;
    tn_gguf_writer *w;
    assert_int_equal(tn_gguf_writer_new(&w), TN_OK);
    assert_int_equal(tn_gguf_set_u32(w, "general.alignment", 3), TN_ERR_INVALID);
    assert_err_has("general.alignment");
    assert_int_equal(tn_gguf_set_u32(w, "general.alignment", 0), TN_ERR_INVALID);
    assert_int_equal(tn_gguf_set_i32(w, "general.alignment", 32), TN_ERR_INVALID);
    assert_int_equal(tn_gguf_set_u32(w, "", 1), TN_ERR_INVALID);
    assert_int_equal(tn_gguf_set_u32(w, NULL, 1), TN_ERR_INVALID);
    assert_int_equal(tn_gguf_set_str(w, "k", NULL), TN_ERR_INVALID);
    assert_int_equal(tn_gguf_set_arr(w, "k", TN_GGUF_STRING, "x", 1), TN_ERR_INVALID);
    assert_int_equal(tn_gguf_set_arr(w, "k", TN_GGUF_BOOL, "\2", 1), TN_ERR_INVALID);
    assert_err_has("bool");
    assert_int_equal(tn_gguf_set_arr(w, "k", TN_GGUF_INT32, NULL, 4), TN_ERR_INVALID);
    const char *with_null[] = {"a", NULL};
    assert_int_equal(tn_gguf_set_arr_str(w, "k", with_null, 2), TN_ERR_INVALID);
    assert_int_equal(tn_gguf_set_arr_arr(w, "k", TN_GGUF_ARRAY, NULL, NULL, 0), TN_ERR_INVALID);

    float x[64] = {0};
    int64_t ne[4] = {4, 4, 1, 1};
    assert_int_equal(tn_gguf_add_tensor(w, "t", TN_DTYPE_F32, 2, ne, x), TN_OK);
    assert_int_equal(tn_gguf_add_tensor(w, "t", TN_DTYPE_F32, 2, ne, x), TN_ERR_INVALID);
    assert_err_has("duplicate");
    assert_int_equal(tn_gguf_add_tensor(w, "u", TN_DTYPE_F32, 0, ne, x), TN_ERR_INVALID);
    assert_int_equal(tn_gguf_add_tensor(w, "u", TN_DTYPE_F32, 5, ne, x), TN_ERR_INVALID);
    assert_err_has("n_dims");
    assert_int_equal(tn_gguf_add_tensor(w, "u", TN_DTYPE_Q8_0, 1, (const int64_t[]){33}, x), TN_ERR_INVALID);
    assert_err_has("multiple");
    assert_int_equal(tn_gguf_add_tensor(w, "u", (tn_dtype)4, 1, ne, x), TN_ERR_INVALID);
    assert_err_has("unknown type");
    assert_int_equal(tn_gguf_add_tensor(w, "u", TN_DTYPE_F32, 1, (const int64_t[]){-1}, x), TN_ERR_INVALID);
    assert_int_equal(tn_gguf_add_tensor(w, "u", TN_DTYPE_F32, 4, (const int64_t[]){1 << 20, 1 << 20, 1 << 20, 1 << 20}, x),
                     TN_ERR_INVALID);
    assert_err_has("overflow");
    assert_int_equal(tn_gguf_add_tensor(w, "u", TN_DTYPE_F32, 1, ne, NULL), TN_ERR_INVALID);
    char longname[80];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(tn_gguf_add_tensor(w, longname, TN_DTYPE_F32, 1, ne, x), TN_ERR_INVALID);
    assert_int_equal(tn_gguf_add_tensor_fn(w, "u", TN_DTYPE_F32, 1, ne, NULL, NULL), TN_ERR_INVALID);

    /* a failing fill callback aborts the write and leaves no file */
    fill_ctx fc = {.fail_with = TN_ERR_IO};
    assert_int_equal(tn_gguf_add_tensor_fn(w, "bad", TN_DTYPE_F32, 1, ne, fill_bytes, &fc), TN_OK);
    char *path = tn_test_tmp_path(".gguf");
    assert_int_equal(tn_gguf_writer_write(w, path), TN_ERR_IO);
    assert_err_has("'bad'");
    assert_err_has("test fill refused");
    assert_int_equal(access(path, F_OK), -1);
    free(path);
    assert_int_equal(tn_gguf_writer_write(w, "/nonexistent-dir/x.gguf"), TN_ERR_IO);
    assert_err_has("/nonexistent-dir/x.gguf");
    tn_gguf_writer_free(w);
    tn_gguf_writer_free(NULL);
}

/* The `gguf` Python package (llama.cpp's gguf-py) reads our output and sees
 * the same keys, values and tensors. Skipped where it is not installed. */
static void test_python_reads_ours(void **state)
{
    (void)state;
    if (system("python3 -c 'import gguf' >/dev/null 2>&1") != 0)
        skip();
    fill_ctx fc = {.seed = 3};
    float w32[15];
    uint16_t w16[8];
    uint8_t q8[68];
    char *path = write_everything(&fc, w32, w16, q8);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "python3 - '%s' <<'EOF'\n"
             "import sys\n"
             "from gguf import GGUFReader\n"
             "r = GGUFReader(sys.argv[1])\n"
             "f = r.fields\n"
             "def val(k):\n"
             "    return f[k].contents()\n"
             "assert val('general.architecture') == 'llama', val('general.architecture')\n"
             "assert val('general.alignment') == 64\n"
             "assert val('a.u32') == 8 and val('a.i32') == -7 and val('a.u64') == 1 << 50\n"
             "assert val('a.f32') == 0.125 and val('a.bool') is True\n"
             "assert val('arr.str') == ['alpha', '', 'gamma \\u2713'], val('arr.str')\n"
             "# gguf-py parses nested arrays but contents() flattens them\n"
             "assert [t.name for t in f['arr.arr_i32'].types] == ['ARRAY', 'ARRAY', 'INT32']\n"
             "assert val('arr.arr_i32') == [1, 2, 3, -4], val('arr.arr_i32')\n"
             "assert [t.name for t in f['arr.arr_str'].types] == ['ARRAY', 'ARRAY', 'STRING']\n"
             "assert val('arr.arr_str') == ['x', 'yy', 'zzz'], val('arr.arr_str')\n"
             "assert val('arr.i16') == [0x0201, 0x0403]\n"
             "t = {x.name: x for x in r.tensors}\n"
             "assert [x.name for x in r.tensors] == ['w32', 'w16', 'q8', 'empty', 'filled']\n"
             "assert list(t['w32'].shape) == [5, 3] and t['w32'].data.flatten()[3] == 1.5\n"
             "assert t['q8'].tensor_type.name == 'Q8_0' and t['q8'].n_bytes == 68\n"
             "assert t['filled'].n_bytes == 100 and int(t['filled'].data[1]) == 10\n"
             "EOF",
             path);
    int rc = system(cmd);
    unlink(path);
    free(path);
    assert_int_equal(rc, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_v3),       cmocka_unit_test(test_tiny_random),
        cmocka_unit_test(test_v1_matches_v3),    cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_getters),          cmocka_unit_test(test_format_abbreviates),
        cmocka_unit_test(test_roundtrip),        cmocka_unit_test(test_set_from),
        cmocka_unit_test(test_writer_errors),    cmocka_unit_test(test_python_reads_ours),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
