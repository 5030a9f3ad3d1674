/*
 * test_detok — token pieces as llama.cpp prints them, and the streaming
 * detokenizer: a character split over byte tokens is held until complete,
 * and the stories260K reference run detokenizes to its reference text.
 */
#include "testutil.h"

#include "tok/tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LLAMA_VOCAB TN_SHARED_DATA "vocab/ggml-vocab-llama-spm.gguf"
#define STORIES_DIR TN_SHARED_DATA "models/stories260K/"

static tn_vocab *load_vocab(const char *path)
{
    tn_gguf *g = NULL;
    tn_status s = tn_gguf_open(path, &g);
    if (s != TN_OK)
        print_error("%s: %s\n", path, tn_last_error());
    assert_int_equal(s, TN_OK);
    tn_vocab *v = NULL;
    s = tn_vocab_from_gguf(g, &v);
    if (s != TN_OK)
        print_error("%s: %s\n", path, tn_last_error());
    assert_int_equal(s, TN_OK);
    tn_gguf_free(g);
    return v;
}

/* The id of a byte token <0xXX>. */
static int32_t byte_tok(const tn_vocab *v, unsigned b)
{
    char want[8];
    snprintf(want, sizeof want, "<0x%02X>", b);
    for (int32_t i = 0; i < tn_vocab_n_tokens(v); i++)
        if (tn_vocab_token_type(v, i) == TN_TOKEN_BYTE && strcmp(tn_vocab_piece(v, i), want) == 0)
            return i;
    fail_msg("no byte token %s", want);
    return -1;
}

static void expect_piece(const tn_vocab *v, int32_t id, bool special, const char *want, size_t want_len)
{
    char buf[64];
    memset(buf, '#', sizeof buf);
    size_t n = tn_token_to_piece(v, id, special, buf, sizeof buf);
    assert_int_equal(n, want_len);
    assert_memory_equal(buf, want, want_len);
    assert_int_equal(buf[n], '#'); /* no NUL, nothing past the piece */
}

static void test_token_to_piece(void **state)
{
    (void)state;
    tn_vocab *v = load_vocab(LLAMA_VOCAB);
    expect_piece(v, 15043, false, " Hello", 6);  /* "▁Hello" */
    expect_piece(v, 29871, false, " ", 1);       /* "▁" */
    expect_piece(v, 259, false, "  ", 2);        /* "▁▁" */
    expect_piece(v, 13, false, "\n", 1);         /* <0x0A> */
    expect_piece(v, byte_tok(v, 0), false, "\0", 1);
    expect_piece(v, byte_tok(v, 0xE2), false, "\xe2", 1);
    expect_piece(v, 1, false, "", 0);            /* <s>: control */
    expect_piece(v, 1, true, "<s>", 3);
    expect_piece(v, 2, true, "</s>", 4);
    expect_piece(v, 0, false, "", 0);            /* <unk> */
    expect_piece(v, 0, true, "<unk>", 5);
    expect_piece(v, -1, true, "", 0);
    expect_piece(v, 32000, true, "", 0);

    /* a short buffer: the full length comes back, a prefix is written */
    char small[4] = {'#', '#', '#', '#'};
    assert_int_equal(tn_token_to_piece(v, 15043, false, small, 3), 6);
    assert_memory_equal(small, " He#", 4);
    assert_int_equal(tn_token_to_piece(v, 15043, false, NULL, 0), 6);
    tn_vocab_free(v);
}

/* Streams ids through a tn_detok; asserts every chunk ends on a character
 * boundary when the text is valid UTF-8; returns the concatenation. */
static size_t stream(const tn_vocab *v, const int32_t *ids, size_t n, char *out, size_t cap, bool valid)
{
    tn_detok d;
    tn_detok_init(&d);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        char chunk[TN_DETOK_MAX];
        size_t k = tn_detok_push(&d, v, ids[i], chunk, sizeof chunk);
        if (valid && k > 0) {
            /* the chunk's last character is complete */
            size_t j = k;
            while (j > 0 && ((unsigned char)chunk[j - 1] & 0xC0) == 0x80)
                j--;
            assert_true(j > 0);
            unsigned char lead = (unsigned char)chunk[j - 1];
            size_t need = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
            assert_int_equal(k - (j - 1), need);
        }
        assert_true(w + k <= cap);
        memcpy(out + w, chunk, k);
        w += k;
    }
    char tail[8];
    size_t k = tn_detok_flush(&d, tail, sizeof tail);
    if (valid)
        assert_int_equal(k, 0);
    assert_true(w + k <= cap);
    memcpy(out + w, tail, k);
    return w + k;
}

static void test_stream_split_character(void **state)
{
    (void)state;
    tn_vocab *v = load_vocab(LLAMA_VOCAB);
    /* U+1F999 LLAMA (F0 9F A6 99) over four byte tokens: nothing comes out
     * until the fourth, then the whole character */
    tn_detok d;
    tn_detok_init(&d);
    char out[TN_DETOK_MAX];
    static const unsigned char llama[4] = {0xF0, 0x9F, 0xA6, 0x99};
    for (int i = 0; i < 3; i++)
        assert_int_equal(tn_detok_push(&d, v, byte_tok(v, llama[i]), out, sizeof out), 0);
    assert_int_equal(tn_detok_push(&d, v, byte_tok(v, llama[3]), out, sizeof out), 4);
    assert_memory_equal(out, llama, 4);
    assert_int_equal(tn_detok_flush(&d, out, sizeof out), 0);

    /* a held lead byte comes out together with the next token's text */
    assert_int_equal(tn_detok_push(&d, v, byte_tok(v, 0xC3), out, sizeof out), 0);
    assert_int_equal(tn_detok_push(&d, v, byte_tok(v, 0xA9), out, sizeof out), 2);
    assert_memory_equal(out, "\xc3\xa9", 2);
    assert_int_equal(tn_detok_push(&d, v, 15043, out, sizeof out), 6); /* " Hello" */
    assert_memory_equal(out, " Hello", 6);

    /* invalid sequences pass through: a lead byte followed by ASCII */
    assert_int_equal(tn_detok_push(&d, v, byte_tok(v, 0xE2), out, sizeof out), 0);
    assert_int_equal(tn_detok_push(&d, v, 15043, out, sizeof out), 7);
    assert_memory_equal(out, "\xe2 Hello", 7);
    /* lone continuation bytes and impossible leads are not held */
    assert_int_equal(tn_detok_push(&d, v, byte_tok(v, 0x80), out, sizeof out), 1);
    assert_int_equal(tn_detok_push(&d, v, byte_tok(v, 0xFF), out, sizeof out), 1);
    assert_int_equal(tn_detok_push(&d, v, byte_tok(v, 0xC0), out, sizeof out), 1);
    /* control tokens and invalid ids add nothing and keep what is held */
    assert_int_equal(tn_detok_push(&d, v, byte_tok(v, 0xF0), out, sizeof out), 0);
    assert_int_equal(tn_detok_push(&d, v, 1, out, sizeof out), 0);
    assert_int_equal(tn_detok_push(&d, v, -3, out, sizeof out), 0);
    assert_int_equal(tn_detok_push(&d, v, byte_tok(v, 0x9F), out, sizeof out), 0);
    /* the end of the stream gives the incomplete sequence as it is */
    assert_int_equal(tn_detok_flush(&d, out, sizeof out), 2);
    assert_memory_equal(out, "\xf0\x9f", 2);
    assert_int_equal(tn_detok_flush(&d, out, sizeof out), 0);

    /* a tokenized text with emoji and CJK (byte fallback) streams back
     * exactly, every chunk on a character boundary */
    const char *text = "Hello \xf0\x9f\xa6\x99 world \xe6\x88\x91\xe6\x83\xb3\xe5\x9c\xa8 caf\xc3\xa9 \xf0\x9f\x98\xb6\xe2\x80\x8d\xf0\x9f\x8c\xab\xef\xb8\x8f!";
    size_t len = strlen(text), n;
    int32_t ids[256];
    assert_int_equal(tn_tokenize(v, text, len, true, false, ids, 256, &n), TN_OK);
    int n_byte = 0;
    for (size_t i = 0; i < n; i++)
        n_byte += tn_vocab_token_type(v, ids[i]) == TN_TOKEN_BYTE;
    assert_true(n_byte >= 4); /* the llama emoji at least falls back to bytes */
    char back[512];
    size_t w = stream(v, ids, n, back, sizeof back, true);
    assert_int_equal(w, len + 1);
    assert_int_equal(back[0], ' ');
    assert_memory_equal(back + 1, text, len);
    tn_vocab_free(v);
}

/* Random valid UTF-8 text over many scripts: the stream never splits a
 * character and reproduces the text. */
static void test_stream_random(void **state)
{
    (void)state;
    tn_vocab *v = load_vocab(LLAMA_VOCAB);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    static const uint32_t ranges[][2] = {
        {0x20, 0x7E}, {0xA0, 0x24F}, {0x400, 0x4FF}, {0x4E00, 0x9FFF}, {0xAC00, 0xD7A3}, {0x1F300, 0x1FAFF}, {0x10000, 0x10FFF},
    };
    for (int iter = 0; iter < 500; iter++) {
        char text[400];
        size_t len = 0;
        int nch = 1 + (int)(x % 60);
        for (int c = 0; c < nch; c++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            const uint32_t *r = ranges[(x >> 8) % TN_ARRAY_LEN(ranges)];
            uint32_t cp = r[0] + (uint32_t)((x >> 20) % (r[1] - r[0] + 1));
            if (cp == 0x2581)
                cp = 'x';
            if (cp < 0x80) {
                text[len++] = (char)cp;
            } else if (cp < 0x800) {
                text[len++] = (char)(0xC0 | cp >> 6);
                text[len++] = (char)(0x80 | (cp & 63));
            } else if (cp < 0x10000) {
                text[len++] = (char)(0xE0 | cp >> 12);
                text[len++] = (char)(0x80 | (cp >> 6 & 63));
                text[len++] = (char)(0x80 | (cp & 63));
            } else {
                text[len++] = (char)(0xF0 | cp >> 18);
                text[len++] = (char)(0x80 | (cp >> 12 & 63));
                text[len++] = (char)(0x80 | (cp >> 6 & 63));
                text[len++] = (char)(0x80 | (cp & 63));
            }
        }
        int32_t ids[512];
        size_t n;
        assert_int_equal(tn_tokenize(v, text, len, false, false, ids, 512, &n), TN_OK);
        char back[1024];
        size_t w = stream(v, ids, n, back, sizeof back, true);
        assert_int_equal(w, len + 1);
        assert_memory_equal(back + 1, text, len);
    }
    tn_vocab_free(v);
}

/* The stories260K reference greedy run (llama2.c): its ids, after BOS,
 * stream back to the reference text. llama2.c drops the space of the first
 * piece after BOS and ends its output with a newline; otherwise the bytes
 * are the same. */
static void test_stories_reference(void **state)
{
    (void)state;
    tn_vocab *v = load_vocab(STORIES_DIR "stories260K.v3.derived.gguf");
    size_t tlen, xlen;
    char *tokens = tn_test_read_file(STORIES_DIR "expected-greedy-t0.tokens.derived.txt", &tlen);
    char *text = tn_test_read_file(STORIES_DIR "expected-greedy-t0.txt", &xlen);
    assert_non_null(tokens);
    assert_non_null(text);
    int32_t ids[1024];
    size_t n = 0;
    for (char *p = tokens, *e;; p = e) {
        long id = strtol(p, &e, 10);
        if (e == p)
            break;
        assert_true(n < 1024);
        ids[n++] = (int32_t)id;
    }
    assert_int_equal(n, 257);
    assert_int_equal(ids[0], tn_vocab_bos(v));
    char *out = malloc(4096);
    size_t w = stream(v, ids + 1, n - 1, out, 4096, true);
    assert_true(xlen > 1 && text[xlen - 1] == '\n');
    assert_int_equal(w, xlen);
    assert_int_equal(out[0], ' ');
    assert_memory_equal(out + 1, text, xlen - 1);

    /* with BOS in the stream: BOS renders as nothing */
    size_t w2 = stream(v, ids, n, out, 4096, true);
    assert_int_equal(w2, w);
    free(out);
    free(tokens);
    free(text);
    tn_vocab_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_to_piece),
        cmocka_unit_test(test_stream_split_character),
        cmocka_unit_test(test_stream_random),
        cmocka_unit_test(test_stories_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
