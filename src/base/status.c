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
    char old[TN_ERR_MSG_MAX];
    memcpy(old, err_msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof err_msg - 2)
        return s;
    size_t used = (size_t)n;
    memcpy(err_msg + used, ": ", 2);
    used += 2;
    size_t room = sizeof err_msg - used - 1;
    size_t len = strnlen(old, room);
    memcpy(err_msg + used, old, len);
    err_msg[used + len] = '\0';
    return s;
}
