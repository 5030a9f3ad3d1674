/*
 * status.c — status names and the thread-local error message.
 */
#include "base/base.h"

#include <stdio.h>
#include <string.h>

#define TN_ERR_MSG_MAX 1024

static _Thread_local char err_msg[TN_ERR_MSG_MAX];

const char *tn_status_str(tn_status s)
{
    switch (s) {
#define TN__STATUS_CASE(name, code, msg) \
    case name:                           \
        return msg;
        TN_STATUS_LIST(TN__STATUS_CASE)
#undef TN__STATUS_CASE
    }
    return "unknown status";
}

const char *tn_last_error(void) { return err_msg; }

void tn__err_clear(void) { err_msg[0] = '\0'; }

tn_status tn__err(tn_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return s;
}

tn_status tn__err_prefix(tn_status s, const char *fmt, ...)
{
    char prefix[TN_ERR_MSG_MAX], old[TN_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_msg, sizeof old);
    snprintf(err_msg, sizeof err_msg, "%s: %s", prefix, old);
    return s;
}
