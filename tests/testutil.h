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

/* Writes len bytes to path; returns 0 on success. */
int tn_test_write_file(const char *path, const void *data, size_t len);

/* A fresh temporary file path under /tmp (unique per call); static storage
 * per call is not shared: the result is malloc'd, free it. */
char *tn_test_tmp_path(const char *suffix);

#endif
