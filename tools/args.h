/*
 * args — strict parsing of numeric command-line values, shared by the
 * subcommands. Each returns false (and leaves *out alone) unless the whole
 * string is a number of the right kind within [lo, hi].
 */
#ifndef TERN_TOOLS_ARGS_H
#define TERN_TOOLS_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

bool tn_arg_long(const char *s, long lo, long hi, long *out);
bool tn_arg_i32(const char *s, long lo, long hi, int32_t *out);
/* Finite floats only. */
bool tn_arg_f32(const char *s, float lo, float hi, float *out);
/* Decimal, no sign. */
bool tn_arg_u64(const char *s, uint64_t *out);

/* Reads a whole file (pipes too) into a NUL-terminated buffer the caller
 * frees; *len excludes the NUL. On failure prints "tern CMD: cannot read
 * PATH: reason" to stderr and returns NULL. */
char *tn_read_file(const char *cmd, const char *path, size_t *len);

#endif
