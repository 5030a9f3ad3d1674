/*
 * test_alloc.c — tn_alloc_huge: 2 MiB alignment by default, 64 bytes with
 * TERN_THP=0, every byte writable and freed by tn_free_aligned, and the
 * mapping's huge-page advice where the kernel reports it (smaps' THPeligible).
 */
#include "base/base.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB ((size_t)1 << 20)

/* THPeligible of the mapping that holds p, from /proc/self/smaps; -1 if
 * the kernel does not report it. */
static int thp_eligible(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[512];
    int in = 0, r = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) { /* a mapping's header line */
            in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
            continue;
        }
        int v;
        if (in && sscanf(line, "THPeligible: %d", &v) == 1) {
            r = v;
            break;
        }
    }
    fclose(f);
    return r;
}

static void fill_and_check(unsigned char *p, size_t n)
{
    memset(p, 0xA5, n);
    assert_int_equal(p[0], 0xA5);
    assert_int_equal(p[n / 2], 0xA5);
    assert_int_equal(p[n - 1], 0xA5);
}

static void test_huge_by_default(void **state)
{
    (void)state;
    unsetenv("TERN_THP");
    const size_t n = 8 * MIB + 12345;
    unsigned char *p = tn_alloc_huge(n);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % (2 * MIB), 0);
    fill_and_check(p, n);
    /* where THP exists in "madvise" or "always" mode, the advised range is eligible */
    char mode[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f) {
        if (!fgets(mode, sizeof mode, f))
            mode[0] = '\0';
        fclose(f);
    }
    const int el = thp_eligible(p);
    if (el >= 0 && (strstr(mode, "[madvise]") || strstr(mode, "[always]")))
        assert_int_equal(el, 1);
    tn_free_aligned(p);
}

static void test_plain_with_thp_off(void **state)
{
    (void)state;
    setenv("TERN_THP", "0", 1);
    const size_t n = 3 * MIB + 7;
    unsigned char *p = tn_alloc_huge(n);
    unsetenv("TERN_THP");
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    fill_and_check(p, n);
    tn_free_aligned(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_huge_by_default),
        cmocka_unit_test(test_plain_with_thp_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
