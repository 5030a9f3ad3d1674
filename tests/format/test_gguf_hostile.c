/*
 * test_gguf_hostile.c — the GGUF reader against input built to break it:
 * every truncation of a real and of a written file, thousands of random
 * mutations (run under ASan so any read outside the buffer fails the
 * test), and hand-made files with one bad field each, whose error must
 * name the field and its byte offset.
 *
 * Every buffer handed to tn_gguf_open_mem is malloc'd at exactly its size,
 * so ASan catches a read even one byte past the end.
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

static void assert_err_has(const char *needle)
{
    if (!strstr(tn_last_error(), needle))
        fail_msg("error '%s' does not mention '%s'", tn_last_error(), needle);
}

/* Opens an exact-size copy of data[0..len); returns the status. On success
 * walks every accessor (all values formatted, first and last byte of every
 * tensor read) before freeing. */
static tn_status try_open(const uint8_t *data, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, data, len);
    tn_gguf *g = NULL;
    tn__err_clear();
    tn_status st = tn_gguf_open_mem(copy, len, &g);
    if (st) {
        assert_null(g);
        assert_true(strncmp(tn_last_error(), "gguf: ", 6) == 0);
        assert_non_null(strstr(tn_last_error(), "at offset"));
    } else {
        char buf[256];
        volatile unsigned sum = 0;
        for (int64_t i = 0; i < tn_gguf_n_kv(g); i++) {
            tn_gguf_kv_format(g, i, buf, sizeof buf);
            tn_gguf_type et;
            uint64_t n;
            const void *d;
            const char *s;
            size_t sl;
            if (tn_gguf_kv_type(g, i) == TN_GGUF_ARRAY &&
                tn_gguf_get_arr(g, tn_gguf_kv_key(g, i), &et, &n, &d) == TN_OK && n > 0) {
                if (et == TN_GGUF_STRING && tn_gguf_arr_str(g, i, n - 1, &s, &sl) == TN_OK && sl)
                    sum += (unsigned char)s[sl - 1];
                if (et == TN_GGUF_ARRAY && tn_gguf_arr_arr(g, i, n - 1, &et, &n, &d) == TN_OK && d && n)
                    sum += *(const unsigned char *)d;
            }
        }
        for (int64_t i = 0; i < tn_gguf_n_tensors(g); i++) {
            const tn_gguf_tensor *t = tn_gguf_tensor_at(g, i);
            assert_ptr_equal(tn_gguf_find_tensor(g, t->name), t);
            if (t->nbytes)
                sum += ((const uint8_t *)t->data)[0] + ((const uint8_t *)t->data)[t->nbytes - 1];
        }
        (void)sum;
        tn_gguf_free(g);
    }
    free(copy);
    return st;
}

/* A small file with every value type, nested arrays and tensors, written
 * by our writer: end of the last tensor's bytes in *data_end. */
static uint8_t *small_written_file(size_t *len, size_t *data_end)
{
    tn_gguf_writer *w;
    assert_int_equal(tn_gguf_writer_new(&w), TN_OK);
    assert_int_equal(tn_gguf_set_str(w, "general.architecture", "llama"), TN_OK);
    assert_int_equal(tn_gguf_set_u32(w, "general.alignment", 16), TN_OK);
    assert_int_equal(tn_gguf_set_i32(w, "k.i32", -3), TN_OK);
    assert_int_equal(tn_gguf_set_u64(w, "k.u64", 99), TN_OK);
    assert_int_equal(tn_gguf_set_f32(w, "k.f32", 2.5f), TN_OK);
    assert_int_equal(tn_gguf_set_bool(w, "k.bool", false), TN_OK);
    const char *toks[] = {"a", "bb", "ccc", "dddd"};
    assert_int_equal(tn_gguf_set_arr_str(w, "k.toks", toks, 4), TN_OK);
    static const uint16_t u16s[] = {1, 2, 3};
    assert_int_equal(tn_gguf_set_arr(w, "k.u16s", TN_GGUF_UINT16, u16s, 3), TN_OK);
    static const int32_t s0[] = {1, 2}, s1[] = {3};
    const void *subs[] = {s0, s1};
    assert_int_equal(tn_gguf_set_arr_arr(w, "k.nested", TN_GGUF_INT32, subs, (const uint64_t[]){2, 1}, 2), TN_OK);
    static float a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    static uint8_t q[34 * 2];
    assert_int_equal(tn_gguf_add_tensor(w, "a", TN_DTYPE_F32, 2, (const int64_t[]){4, 2}, a), TN_OK);
    assert_int_equal(tn_gguf_add_tensor(w, "q", TN_DTYPE_Q8_0, 2, (const int64_t[]){32, 2}, q), TN_OK);
    assert_int_equal(tn_gguf_add_tensor(w, "b", TN_DTYPE_F32, 1, (const int64_t[]){3}, a), TN_OK);
    char *path = tn_test_tmp_path(".gguf");
    assert_int_equal(tn_gguf_writer_write(w, path), TN_OK);
    tn_gguf_writer_free(w);
    uint8_t *data = (uint8_t *)tn_test_read_file(path, len);
    assert_non_null(data);
    unlink(path);
    free(path);
    tn_gguf *g;
    assert_int_equal(tn_gguf_open_mem(data, *len, &g), TN_OK);
    *data_end = 0;
    for (int64_t i = 0; i < tn_gguf_n_tensors(g); i++) {
        const tn_gguf_tensor *t = tn_gguf_tensor_at(g, i);
        size_t end = (size_t)((const uint8_t *)t->data - data) + (size_t)t->nbytes;
        if (end > *data_end)
            *data_end = end;
    }
    tn_gguf_free(g);
    return data;
}

/* --- truncation ---------------------------------------------------------- */

static void test_truncated_written(void **state)
{
    (void)state;
    size_t len, end;
    uint8_t *data = small_written_file(&len, &end);
    assert_true(end <= len && len - end < 16); /* only padding after the last tensor */
    for (size_t k = 0; k < len; k++) {
        tn_status st = try_open(data, k);
        if (k < end && st != TN_ERR_FORMAT)
            fail_msg("prefix of %zu bytes (of %zu): status %d", k, len, st);
        if (k >= end && st != TN_OK)
            fail_msg("prefix of %zu bytes cut only padding but failed: %s", k, tn_last_error());
    }
    assert_int_equal(try_open(data, len), TN_OK);
    free(data);
}

static void test_truncated_real(void **state)
{
    (void)state;
    const char *files[] = {STORIES_V3, STORIES_V1};
    for (size_t f = 0; f < 2; f++) {
        size_t len;
        uint8_t *data = (uint8_t *)tn_test_read_file(files[f], &len);
        assert_non_null(data);
        tn_gguf *g;
        assert_int_equal(tn_gguf_open_mem(data, len, &g), TN_OK);
        size_t header = (size_t)((const uint8_t *)tn_gguf_tensor_at(g, 0)->data - data);
        tn_gguf_free(g);
        /* every prefix through the header and the first tensor, then a
         * stride through the data, then the last bytes */
        for (size_t k = 0; k < len; k += k < header + 512 || k + 512 > len ? 1 : 4093)
            if (try_open(data, k) != TN_ERR_FORMAT)
                fail_msg("%s: prefix of %zu bytes did not fail with TN_ERR_FORMAT", files[f], k);
        assert_int_equal(try_open(data, len), TN_OK);
        free(data);
    }
}

/* --- random mutations ---------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Mutates buf in place at random positions below limit: bit flips, bytes
 * set to edge values, 8-byte words set to edge values. */
static void mutate(uint8_t *buf, size_t limit, int n_changes)
{
    static const uint64_t edges[] = {0, 1, 2, 3, 4, 5, 31, 32, 33, 0x7f, 0x80, 0xff, 0x7fffffff, 0xffffffff,
                                     0x7fffffffffffffffull, 0xffffffffffffffffull, 0x100000000ull};
    for (int c = 0; c < n_changes; c++) {
        size_t pos = (size_t)(rng() % limit);
        switch (rng() % 3) {
        case 0: buf[pos] ^= (uint8_t)(1u << (rng() % 8)); break;
        case 1: buf[pos] = (uint8_t)edges[rng() % TN_ARRAY_LEN(edges)]; break;
        default: {
            uint64_t v = edges[rng() % TN_ARRAY_LEN(edges)];
            for (size_t i = 0; i < 8 && pos + i < limit; i++)
                buf[pos + i] = (uint8_t)(v >> (8 * i));
        }
        }
    }
}

static void fuzz(const uint8_t *orig, size_t len, size_t limit, int rounds, int *n_ok, int *n_fail)
{
    uint8_t *buf = malloc(len);
    for (int r = 0; r < rounds; r++) {
        memcpy(buf, orig, limit < len ? limit : len); /* only the mutated region needs restoring */
        if (r == 0)
            memcpy(buf, orig, len);
        mutate(buf, limit, 1 + (int)(rng() % 4));
        tn_status st = try_open(buf, len);
        if (st == TN_OK)
            (*n_ok)++;
        else
            (*n_fail)++;
        assert_true(st == TN_OK || st == TN_ERR_FORMAT);
    }
    free(buf);
}

static void test_fuzz_written(void **state)
{
    (void)state;
    size_t len, end;
    uint8_t *data = small_written_file(&len, &end);
    int ok = 0, bad = 0;
    fuzz(data, len, len, 6000, &ok, &bad);
    print_message("written file (%zu bytes): %d mutants opened, %d rejected\n", len, ok, bad);
    /* both outcomes happen: the fuzzer reaches past the first check */
    assert_true(ok > 0 && bad > 0);
    free(data);
}

static void test_fuzz_real_header(void **state)
{
    (void)state;
    const char *files[] = {STORIES_V3, STORIES_V1};
    for (size_t f = 0; f < 2; f++) {
        size_t len;
        uint8_t *data = (uint8_t *)tn_test_read_file(files[f], &len);
        assert_non_null(data);
        /* mutate the metadata and tensor infos (the first ~14 KiB) */
        int ok = 0, bad = 0;
        fuzz(data, len, 14144, 1500, &ok, &bad);
        print_message("%s: %d mutants opened, %d rejected\n", files[f], ok, bad);
        assert_true(ok > 0 && bad > 0);
        free(data);
    }
}

/* --- hand-made hostile files ---------------------------------------------- */

/* Expects data to fail with TN_ERR_FORMAT and a message containing each of
 * the NULL-terminated needles. */
static void expect_bad(gb *b, ...)
{
    tn_status st = try_open(b->p, b->len);
    if (st != TN_ERR_FORMAT)
        fail_msg("expected TN_ERR_FORMAT, got %d (%s)", st, tn_last_error());
    va_list ap;
    va_start(ap, b);
    for (const char *n; (n = va_arg(ap, const char *));)
        assert_err_has(n);
    va_end(ap);
    free(b->p);
    *b = (gb){0};
}

/* Header + one kv + one tensor info, data section of 64 bytes; the
 * tensor's fields are parameters. */
static gb one_tensor(uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset)
{
    gb b = {0};
    gb_header(&b, 3, 1, 1);
    gb_kv_str(&b, "general.architecture", "llama");
    gb_tensor(&b, "blk.0.attn_q.weight", n_dims, ne, type, offset);
    gb_pad(&b, 32);
    gb_zeros(&b, 64);
    return b;
}

static void test_hostile_header(void **state)
{
    (void)state;
    gb b = {0};
    gb_raw(&b, "GGUX\3\0\0\0", 8);
    gb_zeros(&b, 16);
    expect_bad(&b, "magic", "offset 0", NULL);

    gb_header(&b, 4, 0, 0);
    expect_bad(&b, "version", "offset 4", "unsupported version 4", NULL);
    gb_raw(&b, "GGUF\0\0\0\3", 8);
    gb_zeros(&b, 16);
    expect_bad(&b, "big-endian", NULL);

    gb_header(&b, 3, 0, 1000000000000ull);
    expect_bad(&b, "n_kv", "offset 16", "cannot fit", NULL);
    gb_header(&b, 3, 1ull << 62, 0);
    expect_bad(&b, "n_tensors", "offset 8", NULL);
    gb_header(&b, 1, 0, 0xffffffffu);
    expect_bad(&b, "n_kv", "offset 12", NULL);

    /* a header alone, no kvs or tensors: valid */
    gb_header(&b, 3, 0, 0);
    assert_int_equal(try_open(b.p, b.len), TN_OK);
    free(b.p);
    b = (gb){0};
    assert_int_equal(try_open((const uint8_t *)"", 0), TN_ERR_FORMAT);
}

static void test_hostile_kv(void **state)
{
    (void)state;
    gb b = {0};
    /* a key length far past the end */
    gb_header(&b, 3, 0, 1);
    gb_u64(&b, 1ull << 60);
    gb_raw(&b, "general.name", 12);
    gb_u32(&b, 4);
    gb_u32(&b, 0);
    expect_bad(&b, "kv 0 key", "offset 24", "length", NULL);

    /* a string value length past the end */
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "general.name", 8);
    gb_u64(&b, 0xffffffffffffull);
    gb_raw(&b, "abc", 3);
    expect_bad(&b, "kv 0 ('general.name')", "string length", NULL);

    /* an array count past the end, numeric and string */
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "tokenizer.ggml.scores", 9);
    gb_arr(&b, 6, 1ull << 61);
    gb_zeros(&b, 16);
    expect_bad(&b, "kv 0 ('tokenizer.ggml.scores')", "array of", NULL);
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "tokenizer.ggml.tokens", 9);
    gb_arr(&b, 8, 1000000);
    gb_str(&b, "a");
    expect_bad(&b, "tokenizer.ggml.tokens", "array of 1000000 str", NULL);

    /* unknown value type, at top level and as an element type */
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "x.y", 13);
    gb_u32(&b, 0);
    expect_bad(&b, "kv 0 ('x.y')", "offset 35", "unknown value type 13", NULL);
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "x.y", 9);
    gb_arr(&b, 0xdead, 1);
    expect_bad(&b, "unknown array element type", NULL);

    /* nesting: 4 levels allowed, 5 rejected */
    for (int depth = 4; depth <= 5; depth++) {
        gb_header(&b, 3, 0, 1);
        gb_key(&b, "deep", 9);
        for (int d = 1; d < depth; d++)
            gb_arr(&b, 9, 1);
        gb_arr(&b, 4, 1);
        gb_u32(&b, 7);
        if (depth == 4) {
            assert_int_equal(try_open(b.p, b.len), TN_OK);
            free(b.p);
            b = (gb){0};
        } else {
            expect_bad(&b, "'deep'", "nested more than 4", NULL);
        }
    }

    /* bool other than 0 or 1 */
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "b", 7);
    gb_u8(&b, 2);
    expect_bad(&b, "kv 0 ('b')", "bool value 2", NULL);

    /* duplicate keys; a key with a NUL byte */
    gb_header(&b, 3, 0, 2);
    gb_kv_u32(&b, "llama.block_count", 1);
    gb_kv_u32(&b, "llama.block_count", 2);
    expect_bad(&b, "kv 1", "duplicate key 'llama.block_count'", NULL);
    gb_header(&b, 3, 0, 1);
    gb_strn(&b, "ab\0c", 4);
    gb_u32(&b, 4);
    gb_u32(&b, 1);
    expect_bad(&b, "kv 0 key", "NUL", NULL);

    /* general.alignment: zero, not a power of two, wrong type */
    const uint32_t bad_align[] = {0, 3, 48};
    for (size_t i = 0; i < 3; i++) {
        gb_header(&b, 3, 0, 1);
        gb_kv_u32(&b, "general.alignment", bad_align[i]);
        expect_bad(&b, "general.alignment", "power of two", NULL);
    }
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "general.alignment", 10);
    gb_u64(&b, 32);
    expect_bad(&b, "general.alignment", "expected u32", NULL);
}

static void test_hostile_tensors(void **state)
{
    (void)state;
    gb b;
    const uint64_t ne4[4] = {4, 1, 1, 1};

    /* baseline: valid */
    b = one_tensor(1, ne4, 0, 0);
    assert_int_equal(try_open(b.p, b.len), TN_OK);
    free(b.p);

    b = one_tensor(0, ne4, 0, 0);
    expect_bad(&b, "tensor 0 ('blk.0.attn_q.weight')", "n_dims 0", NULL);
    const uint64_t ne5[5] = {4, 1, 1, 1, 1};
    b = one_tensor(5, ne5, 0, 0);
    expect_bad(&b, "tensor 0 ('blk.0.attn_q.weight')", "n_dims 5", NULL);

    const uint64_t huge[4] = {1ull << 32, 1ull << 32, 1, 1};
    b = one_tensor(2, huge, 0, 0);
    expect_bad(&b, "tensor 0 ('blk.0.attn_q.weight') dims", "element count overflows", NULL);
    const uint64_t hidden[4] = {0, 1ull << 40, 1ull << 40, 1};
    b = one_tensor(3, hidden, 0, 0);
    expect_bad(&b, "dims", "row count overflows", NULL);
    const uint64_t neg[2] = {4, 0x8000000000000000ull};
    b = one_tensor(2, neg, 0, 0);
    expect_bad(&b, "dims", "negative", NULL);
    /* element count fits, byte size does not */
    const uint64_t big_bytes[2] = {1ull << 31, 1ull << 31};
    b = one_tensor(2, big_bytes, 28, 0);
    expect_bad(&b, "tensor 0 ('blk.0.attn_q.weight') dims", "byte size overflows", NULL);

    b = one_tensor(1, ne4, 4, 0);
    expect_bad(&b, "tensor 0 ('blk.0.attn_q.weight') type", "unknown tensor type 4", NULL);
    b = one_tensor(1, ne4, 0xffffffffu, 0);
    expect_bad(&b, "unknown tensor type 4294967295", NULL);
    const uint64_t q33[1] = {33};
    b = one_tensor(1, q33, 8, 0);
    expect_bad(&b, "dims", "not a multiple of the q8_0 block size 32", NULL);

    b = one_tensor(1, ne4, 0, 16);
    expect_bad(&b, "tensor 0 ('blk.0.attn_q.weight') offset", "not a multiple of the alignment 32", NULL);
    b = one_tensor(1, ne4, 0, 64);
    expect_bad(&b, "tensor 0 ('blk.0.attn_q.weight') offset at offset 112", "[64, +16)", "past the end", NULL);
    b = one_tensor(1, ne4, 0, 0xffffffffffffffe0ull);
    expect_bad(&b, "past the end", NULL);
    const uint64_t ne17[1] = {17};
    b = one_tensor(1, ne17, 0, 0); /* 68 bytes in a 64-byte data section */
    expect_bad(&b, "offset", "past the end", NULL);

    /* overlapping, and duplicate names */
    b = (gb){0};
    gb_header(&b, 3, 3, 0);
    gb_tensor(&b, "a", 1, (const uint64_t[]){16}, 0, 0);
    gb_tensor(&b, "b", 1, (const uint64_t[]){8}, 0, 64);
    gb_tensor(&b, "c", 1, (const uint64_t[]){8}, 0, 32);
    gb_pad(&b, 32);
    gb_zeros(&b, 128);
    expect_bad(&b, "tensor 2 ('c') offset at offset 115", "[32, 64) overlap tensor 0 ('a')", NULL);
    gb_header(&b, 3, 2, 0);
    gb_tensor(&b, "a", 1, (const uint64_t[]){8}, 0, 0);
    gb_tensor(&b, "a", 1, (const uint64_t[]){8}, 0, 32);
    gb_pad(&b, 32);
    gb_zeros(&b, 64);
    expect_bad(&b, "tensor 1 name", "duplicate tensor name 'a'", NULL);

    /* zero-size tensors may share an offset; adjacent ones may touch */
    gb_header(&b, 3, 3, 0);
    gb_tensor(&b, "z1", 2, (const uint64_t[]){0, 4}, 0, 0);
    gb_tensor(&b, "z2", 1, (const uint64_t[]){0}, 0, 0);
    gb_tensor(&b, "x", 1, (const uint64_t[]){8}, 0, 0);
    gb_pad(&b, 32);
    gb_zeros(&b, 32);
    assert_int_equal(try_open(b.p, b.len), TN_OK);
    free(b.p);

    /* data section start past the end of the file */
    b = (gb){0};
    gb_header(&b, 3, 1, 0);
    gb_tensor(&b, "a", 1, (const uint64_t[]){0}, 0, 0);
    expect_bad(&b, "data section", "past the end", NULL);

    /* v1: 32-bit dims */
    b = (gb){0};
    gb_header(&b, 1, 1, 0);
    gb_tensor(&b, "a", 2, (const uint64_t[]){0xffffffffu, 0xffffffffu}, 0, 0);
    gb_pad(&b, 32);
    expect_bad(&b, "tensor 0 ('a') dims", "element count overflows", NULL);
}

/* tn_gguf_open on a hostile file names the path first. */
static void test_hostile_path_prefix(void **state)
{
    (void)state;
    gb b = one_tensor(1, (const uint64_t[]){4}, 2, 0);
    char *path = tn_test_tmp_path(".gguf");
    assert_int_equal(tn_test_write_file(path, b.p, b.len), 0);
    tn_gguf *g;
    assert_int_equal(tn_gguf_open(path, &g), TN_ERR_FORMAT);
    assert_true(strncmp(tn_last_error(), path, strlen(path)) == 0);
    assert_err_has(": gguf: tensor 0 ('blk.0.attn_q.weight') dims at offset");
    assert_err_has("block size");
    unlink(path);
    free(path);
    free(b.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truncated_written), cmocka_unit_test(test_truncated_real),
        cmocka_unit_test(test_fuzz_written),      cmocka_unit_test(test_fuzz_real_header),
        cmocka_unit_test(test_hostile_header),    cmocka_unit_test(test_hostile_kv),
        cmocka_unit_test(test_hostile_tensors),   cmocka_unit_test(test_hostile_path_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
