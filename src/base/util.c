/*
 * util.c — logging, time, core count, aligned and huge-page allocation.
 */
#include "base/base.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

/* 2 MiB-aligned, and marked for transparent huge pages unless TERN_THP=0:
 * see base.h. */
void *tn_alloc_huge(size_t size)
{
    const size_t huge = (size_t)2 << 20;
    const char *env = getenv("TERN_THP");
    const bool thp = !(env && !strcmp(env, "0"));
    void *p = tn_alloc_aligned(size, thp ? huge : 64);
#ifdef MADV_HUGEPAGE
    if (p && thp)
        (void)madvise(p, size, MADV_HUGEPAGE); /* advice only: without THP it stays 4 KiB pages */
#endif
    return p;
}
