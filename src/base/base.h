/*
 * base — status and error messages, logging, checked arithmetic, timing.
 *
 * Errors: a failing function sets a detailed, thread-local message with
 * tn__err(status, fmt, ...) and returns the status; callers that add context
 * (e.g. the file name) may prepend it with tn__err_prefix(). Tools print
 * tn_last_error() and exit; the library never exits on input.
 */
#ifndef TERN_BASE_H
#define TERN_BASE_H

#include "tern/tern.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TN_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define TN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TN_MAX(a, b) ((a) > (b) ? (a) : (b))

#if defined(__GNUC__)
#define TN_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TN_PRINTF(f, a)
#endif

/* Sets this thread's error message and returns s, so a failure reads
 * `return tn__err(TN_ERR_FORMAT, "gguf: tensor '%s' at offset %zu ...", ...)`. */
tn_status tn__err(tn_status s, const char *fmt, ...) TN_PRINTF(2, 3);

/* Prepends "PREFIX: " to this thread's error message; returns s. */
tn_status tn__err_prefix(tn_status s, const char *fmt, ...) TN_PRINTF(2, 3);

/* Clears this thread's error message. */
void tn__err_clear(void);

/* Logging to stderr. Level: 0 errors only, 1 info (default), 2 debug.
 * Set once at start (tools/), read by every thread. */
enum { TN_LOG_ERROR = 0, TN_LOG_INFO = 1, TN_LOG_DEBUG = 2 };
void tn_log_set_level(int level);
int tn_log_level(void);
void tn_log(int level, const char *fmt, ...) TN_PRINTF(2, 3);

/* Checked arithmetic: return false on overflow (result undefined then). */
static inline bool tn_mul_u64(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_mul_overflow(a, b, r); }
static inline bool tn_add_u64(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_add_overflow(a, b, r); }

/* Monotonic time in seconds. */
double tn_time_s(void);

/* Number of online CPU cores (>= 1). */
int tn_n_cores(void);

/* Aligned allocation (align a power of two >= sizeof(void*)); free with
 * tn_free_aligned. Returns NULL on failure. */
void *tn_alloc_aligned(size_t size, size_t align);
void tn_free_aligned(void *p);
/* For big buffers streamed every step (the repacked weights): 2 MiB-aligned
 * and advised to transparent huge pages (MADV_HUGEPAGE, which the kernel
 * honours in THP's "madvise" and "always" modes), so a decode step's walk
 * through hundreds of MiB costs a few hundred TLB entries, not 4 KiB pages'
 * hundred thousand (decode +16-22 % on TinyLlama-shaped Q4_0, docs/performance.md).
 * TERN_THP=0 gives plain 64-byte-aligned memory. Free with tn_free_aligned. */
void *tn_alloc_huge(size_t size);

#endif /* TERN_BASE_H */
