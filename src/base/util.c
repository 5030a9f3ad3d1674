/*
 * util.c — logging, time, core count, aligned allocation.
 */
#include "base/base.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = TN_LOG_INFO;

void tn_log_set_level(int level) { atomic_store(&log_level, level); }
int tn_log_level(void) { return atomic_load(&log_level); }

void tn_log(int level, const char *fmt, ...)
{
    if (level > atomic_load(&log_level))
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

double tn_time_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int tn_n_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

void *tn_alloc_aligned(size_t size, size_t align)
{
    void *p = NULL;
    if (size == 0)
        size = align;
    if (posix_memalign(&p, align, size) != 0)
        return NULL;
    return p;
}

void tn_free_aligned(void *p) { free(p); }
