/*
 * tern — a large-language-model inference stack in C11.
 *
 * This is the public header of libtern. Everything here is prefixed tn_;
 * types are opaque. A function that can fail returns tn_status (0 ok, a
 * negative code otherwise); tn_status_str() names the code and
 * tn_last_error() gives the detailed message of the last failure on the
 * calling thread (what was wrong and where: a field, a byte offset).
 */
#ifndef TERN_TERN_H
#define TERN_TERN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TN_API_VERSION 1

#if defined(__GNUC__)
#define TN_MUST_CHECK __attribute__((warn_unused_result))
#else
#define TN_MUST_CHECK
#endif

/* ---------------------------------------------------------------------------
 * Status codes: one X-macro table so codes and messages never drift.
 * ------------------------------------------------------------------------ */
#define TN_STATUS_LIST(X)                                   \
    X(TN_OK, 0, "ok")                                       \
    X(TN_ERR_NOMEM, -1, "out of memory")                    \
    X(TN_ERR_IO, -2, "input/output error")                  \
    X(TN_ERR_FORMAT, -3, "malformed data")                  \
    X(TN_ERR_UNSUPPORTED, -4, "unsupported")                \
    X(TN_ERR_INVALID, -5, "invalid argument")               \
    X(TN_ERR_NOT_FOUND, -6, "not found")                    \
    X(TN_ERR_RANGE, -7, "value out of range")               \
    X(TN_ERR_FULL, -8, "capacity exhausted")

typedef enum tn_status {
#define TN__STATUS_ENUM(name, code, msg) name = code,
    TN_STATUS_LIST(TN__STATUS_ENUM)
#undef TN__STATUS_ENUM
} tn_status;

/* Short fixed text for a status code ("unknown status" for others). */
const char *tn_status_str(tn_status s);

/* The detailed message of the last error set on this thread ("" if none).
 * Valid until the next failing call on the same thread. */
const char *tn_last_error(void);

#ifdef __cplusplus
}
#endif
#endif /* TERN_TERN_H */
