/*
 * cpu.c — CPU feature detection and the choice of kernel table.
 *
 * Key idea: a variant is usable only if the CPU implements its instructions
 * (CPUID) AND the operating system saves the register state they use
 * (XGETBV reads XCR0: bits 1-2 for the SSE/AVX halves of the ymm registers,
 * bits 5-7 for the AVX-512 mask registers and the upper zmm state). A kernel
 * built with -mavx512f on a machine whose OS has not enabled the zmm state
 * would fault, so CPUID alone is not enough.
 *
 * The choice is made once (tn_kern_init, thread-safe); the TERN_ISA
 * environment variable (scalar|avx2|avx512) may force a lower variant, and
 * tn_kern_set_isa changes it afterwards (tests, benchmarks). AVX-VNNI (the
 * VEX vpdpbusd on ymm) is no level of its own: the AVX2 level's x16 kernel
 * uses it where the CPU has it (tn__kern_avx_vnni; TERN_AVX_VNNI=0 turns it
 * off, tn__kern_set_avx_vnni from tests). The current
 * table is an atomic pointer: a matmul reads it once and uses that table for
 * the whole call.
 */
#include "kern/kern_impl.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t xgetbv0(void)
{
    uint32_t eax, edx;
    __asm__ __volatile__("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

/* The best variant this CPU and OS can run. */
static tn_isa detect(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return TN_ISA_SCALAR;
    const bool osxsave = c & (1u << 27), avx = c & (1u << 28);
    const bool fma = c & (1u << 12), f16c = c & (1u << 29);
    if (!osxsave || !avx)
        return TN_ISA_SCALAR;
    const uint64_t xcr0 = xgetbv0();
    const bool os_ymm = (xcr0 & 0x6) == 0x6;
    const bool os_zmm = (xcr0 & 0xe6) == 0xe6;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return TN_ISA_SCALAR;
    const bool avx2 = b & (1u << 5);
    const bool avx512f = b & (1u << 16), avx512dq = b & (1u << 17);
    const bool avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
    const bool avx512vnni = c & (1u << 11);
    if (!(os_ymm && avx2 && fma && f16c))
        return TN_ISA_SCALAR;
    /* kern_avx512.c is compiled with -mavx512bf16 as well but uses no BF16
     * instruction, so a CPU without AVX512_BF16 (Ice Lake) still qualifies. */
    if (os_zmm && avx512f && avx512dq && avx512bw && avx512vl && avx512vnni)
        return TN_ISA_AVX512;
    return TN_ISA_AVX2;
}

/* AVX-VNNI: CPUID.(7,1):EAX bit 4, on top of a usable AVX2. */
static bool detect_avx_vnni(void)
{
    unsigned a, b, c, d;
    if (detect() < TN_ISA_AVX2 || !__get_cpuid_count(7, 1, &a, &b, &c, &d))
        return false;
    return a & (1u << 4);
}
#else
static tn_isa detect(void) { return TN_ISA_SCALAR; }
static bool detect_avx_vnni(void) { return false; }
#endif

static pthread_once_t once = PTHREAD_ONCE_INIT;
static tn_isa best = TN_ISA_SCALAR;
static _Atomic(const tn__kern_ops *) cur;
static bool has_avx_vnni;
static atomic_bool use_avx_vnni;

static const tn__kern_ops *table(tn_isa isa)
{
    switch (isa) {
    case TN_ISA_AVX512: return &tn__kern_ops_avx512;
    case TN_ISA_AVX2: return &tn__kern_ops_avx2;
    default: return &tn__kern_ops_scalar;
    }
}

static void init_once(void)
{
    best = detect();
    has_avx_vnni = detect_avx_vnni();
    const char *vnni_env = getenv("TERN_AVX_VNNI");
    atomic_store(&use_avx_vnni, has_avx_vnni && !(vnni_env && !strcmp(vnni_env, "0")));
    tn_isa isa = best;
    const char *env = getenv("TERN_ISA");
    if (env && *env) {
        tn_isa want = isa;
        if (!strcasecmp(env, "scalar"))
            want = TN_ISA_SCALAR;
        else if (!strcasecmp(env, "avx2"))
            want = TN_ISA_AVX2;
        else if (!strcasecmp(env, "avx512"))
            want = TN_ISA_AVX512;
        else
            tn_log(TN_LOG_ERROR, "kern: TERN_ISA=%s is not scalar|avx2|avx512; using %s\n", env, tn_isa_name(isa));
        if (want > best)
            tn_log(TN_LOG_ERROR, "kern: TERN_ISA=%s is not supported by this CPU; using %s\n", env, tn_isa_name(best));
        else
            isa = want;
    }
    atomic_store(&cur, table(isa));
}

/* Detects once and returns the ISA in use. Any thread. */
tn_isa tn_kern_init(void)
{
    pthread_once(&once, init_once);
    return atomic_load(&cur)->isa;
}

/* Forces a variant; false (and no change) if this CPU cannot run it. Call
 * while no matmul is in flight on another thread if the switch must be
 * seen by it. */
bool tn_kern_set_isa(tn_isa isa)
{
    tn_kern_init();
    if ((int)isa < TN_ISA_SCALAR || isa > best)
        return false;
    atomic_store(&cur, table(isa));
    return true;
}

/* True if the AVX2 level's kernels may use AVX-VNNI: the CPU and OS run
 * it and it is not turned off. Any thread. */
bool tn__kern_avx_vnni(void)
{
    tn_kern_init();
    return atomic_load(&use_avx_vnni);
}

/* Turns AVX-VNNI use on or off; false (and no change) when turning it on
 * on a CPU without it. Same caveat as tn_kern_set_isa. */
bool tn__kern_set_avx_vnni(bool on)
{
    tn_kern_init();
    if (on && !has_avx_vnni)
        return false;
    atomic_store(&use_avx_vnni, on);
    return true;
}

/* The ISA in use (detecting on first call). */
tn_isa tn_kern_isa(void) { return tn_kern_init(); }

/* "scalar", "avx2", "avx512", or "unknown". */
const char *tn_isa_name(tn_isa isa)
{
    switch (isa) {
    case TN_ISA_SCALAR: return "scalar";
    case TN_ISA_AVX2: return "avx2";
    case TN_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

/* The table in use. */
const tn__kern_ops *tn__kern_ops_cur(void)
{
    tn_kern_init();
    return atomic_load_explicit(&cur, memory_order_acquire);
}

/* The table of isa, or NULL if this machine cannot run it. */
const tn__kern_ops *tn__kern_ops_of(tn_isa isa)
{
    tn_kern_init();
    if ((int)isa < TN_ISA_SCALAR || isa > best)
        return NULL;
    return table(isa);
}
