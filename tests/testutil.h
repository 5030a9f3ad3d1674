/*
 * testutil — helpers shared by the cmocka tests.
 */
#ifndef TERN_TESTS_TESTUTIL_H
#define TERN_TESTS_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* Path of a file under ../shared/data (tests run from the repo root). */
#define TN_SHARED_DATA "../shared/data/"

/* Reads a whole file into a malloc'd buffer (NUL-terminated); NULL if it
 * cannot be read. *len gets the size without the NUL. */
char *tn_test_read_file(const char *path, size_t *len);

/* Reads whitespace-separated integers (a token-id file such as
 * stories260K's expected-greedy-t0.tokens.derived.txt) into out; returns
 * how many were read (at most max, and -1 if the file cannot be read or
 * holds more than max). */
int tn_test_read_ints(const char *path, int32_t *out, int max);

/* Writes len bytes to path; returns 0 on success. */
int tn_test_write_file(const char *path, const void *data, size_t len);

/* A fresh temporary file path under /tmp (unique per call); static storage
 * per call is not shared: the result is malloc'd, free it. */
char *tn_test_tmp_path(const char *suffix);

/* llama.cpp's tokenizer vectors: INP holds each string followed by the line
 * "__ggml_vocab_test__" (the newline before it is not part of the string);
 * OUT holds one line of ids per string. Each text is an exact-size malloc'd
 * copy (not NUL-terminated), so ASan sees any read past it. */
typedef struct tn_test_vector {
    char *text;
    size_t len;
    int32_t *ids;
    size_t n_ids;
} tn_test_vector;

/* Reads both files; returns the number of vectors (-1 if a file is missing
 * or the two disagree in count or shape) and sets *out (free with
 * tn_test_vectors_free). */
int tn_test_vectors_read(const char *inp_path, const char *out_path, tn_test_vector **out);
void tn_test_vectors_free(tn_test_vector *v, int n);

#endif
