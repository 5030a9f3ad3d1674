/*
 * ep_step.c — the forward pass under expert parallelism: the hook that
 * sends a MoE layer's routed experts through tn_ep_moe_ffn, and the step
 * handshake that keeps every rank's forward calls in lockstep.
 *
 * HOW A STEP GOES (every rank, data-parallel attention):
 *
 *     tn_ep_sync(ep, state, &agreed)    one all-gather of an int32
 *     agreed DONE -> everyone stops; IDLE -> no step (a heartbeat); STEP ->
 *     tn_forward_run(f, its own kv, its own batch or an empty one)
 *         attention of its own tokens, locally
 *         each MoE layer: routing locally, then tn_ep_moe_ffn (collective:
 *         counts, dispatch, combine), then the shared expert locally
 *
 * Because every forward call runs every MoE layer's exchange, in layer
 * order, also with no tokens, the ranks' collective sequences stay aligned
 * whatever their batches. A failed exchange (a dead or hung peer: the
 * communicator's bounded wait) makes tn_forward_run return the error; the
 * communicator is then broken, so the next call fails at once and the tool
 * exits non-zero.
 */
#include "dist/ep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tn_status routed_hook(void *ctx, tn_pool *pool, int32_t il, const float *xn, int32_t n, const int32_t *sel,
                             const float *w, float *out)
{
    return tn_ep_moe_ffn(ctx, pool, il, xn, n, sel, w, out);
}

tn_status tn_ep_attach(tn_ep *ep, tn_forward *f)
{
    if (!ep || !f)
        return tn__err(TN_ERR_INVALID, "ep: attach needs an ep and a forward state");
    return tn_forward_set_moe_routed(f, routed_hook, ep);
}

tn_status tn_ep_sync(tn_ep *ep, int32_t state, int32_t *agreed)
{
    tn_comm *c = tn_ep_comm(ep);
    const int size = tn_comm_size(c);
    if (state < TN_EP_DONE || state > TN_EP_STEP)
        return tn__err(TN_ERR_INVALID, "ep: step state %d", state);
    int32_t mine = state, all[256];
    int32_t *v = size <= 256 ? all : malloc((size_t)size * sizeof *v);
    if (!v)
        return tn__err(TN_ERR_NOMEM, "ep: out of memory for %d ranks", size);
    tn_status s = tn_comm_allgather(c, &mine, sizeof mine, v);
    int32_t n = TN_EP_DONE;
    for (int r = 0; s == TN_OK && r < size; r++)
        n = TN_MAX(n, v[r]);
    if (v != all)
        free(v);
    if (s != TN_OK)
        return tn__err_prefix(s, "ep: step handshake");
    if (n > TN_EP_STEP)
        return tn__err(TN_ERR_IO, "ep: step handshake: a rank sent state %d", n);
    *agreed = n;
    return TN_OK;
}

/* Reads "Key:   N kB" from /proc/self/status; -1 if absent. */
static int64_t status_kb(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (!p)
        return -1;
    long long kb = -1;
    if (sscanf(p + strlen(key), " %lld", &kb) != 1)
        return -1;
    return (int64_t)kb * 1024;
}

/* Reads /proc/self/status into buf (NUL-terminated); false if absent. */
static bool read_status(char *buf, size_t cap)
{
    FILE *fp = fopen("/proc/self/status", "r");
    if (!fp)
        return false;
    size_t n = fread(buf, 1, cap - 1, fp);
    fclose(fp);
    buf[n] = 0;
    return true;
}

void tn_ep_resident(int64_t *rss, int64_t *rss_file)
{
    *rss = *rss_file = -1;
    char buf[8192];
    if (!read_status(buf, sizeof buf))
        return;
    *rss = status_kb(buf, "VmRSS:");
    *rss_file = status_kb(buf, "RssFile:");
}

int64_t tn_ep_resident_peak(void)
{
    char buf[8192];
    return read_status(buf, sizeof buf) ? status_kb(buf, "VmHWM:") : -1;
}
