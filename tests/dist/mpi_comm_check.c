/*
 * mpi_comm_check.c — the multi-process half of the tn_comm tests, run by
 * tests/cli/test_mpi_comm.sh under `mpirun -np N` in a private network
 * namespace. Not a cmocka test: every rank checks its own results and the
 * exit status and output carry the verdict.
 *
 *   mpi_comm_check ok TIMEOUT        every collective and send/recv, several
 *                                    rounds and sizes, results checked on
 *                                    every rank; prints "rank R: ok"
 *   mpi_comm_check hang R TIMEOUT    rank R stops taking part (sleeps); the
 *                                    others must fail within the timeout with
 *                                    a message naming the operation and R
 *   mpi_comm_check exit R TIMEOUT    rank R exits (status 0, no finalize)
 *                                    between two collectives
 *   mpi_comm_check badlen TIMEOUT    rank 0 sends 8 bytes where rank 1
 *                                    expects 4: rank 1 fails naming rank 0
 *   mpi_comm_check ep TIMEOUT        expert parallelism on a tiny MoE layer:
 *                                    the tokens are split unevenly over the
 *                                    ranks (rank 1 has none when N > 2), the
 *                                    experts placed contiguously (layer 0)
 *                                    and scattered (layer 1); every rank's
 *                                    rows must equal, bit for bit, the same
 *                                    layer run on one process over the whole
 *                                    batch; prints "rank R: ep ok"
 *
 * A failing rank prints "rank R: FAIL after S s: MESSAGE" to stderr and
 * exits 3; a wrong result prints "rank R: WRONG ..." and exits 2.
 */
#include "dist/comm.h"
#include "dist/ep.h"
#include "ep_testmodel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_rank = -1;
static double g_t0;

static void fail(tn_comm *c, tn_status s)
{
    fprintf(stderr, "rank %d: FAIL after %.2f s: %s: %s\n", g_rank, tn_time_s() - g_t0, tn_status_str(s),
            tn_last_error());
    tn_comm_free(c);
    exit(3);
}

#define CHECK(c, call)                                                                                                 \
    do {                                                                                                               \
        g_t0 = tn_time_s();                                                                                            \
        tn_status s_ = (call);                                                                                         \
        if (s_ != TN_OK)                                                                                               \
            fail(c, s_);                                                                                               \
    } while (0)

static void wrong(const char *what, long a, long b)
{
    fprintf(stderr, "rank %d: WRONG %s (%ld, %ld)\n", g_rank, what, a, b);
    exit(2);
}

/* Bytes rank s sends rank d in round `round` (0 included). */
static size_t a2a_count(int s, int d, int round) { return (size_t)((s * 3 + d * 5 + round * 11) % 13); }
static unsigned char a2a_byte(int s, int d, size_t k) { return (unsigned char)(s * 31 + d * 7 + k * 3 + 1); }

static void run_ok(tn_comm *c)
{
    const int R = tn_comm_rank(c), N = tn_comm_size(c);
    for (int round = 0; round < 5; round++) {
        CHECK(c, tn_comm_barrier(c));

        /* all-reduce: rank r contributes (r+1)*j + r/4; the sum is formed in
         * rank order here too and must match to the bit. */
        const size_t n = round == 0 ? 0 : (size_t)(round * 997);
        float *v = malloc((n + 1) * sizeof(float)), *want = malloc((n + 1) * sizeof(float));
        for (size_t j = 0; j < n; j++) {
            v[j] = (float)(R + 1) * (float)j + 0.25f * (float)R;
            want[j] = (float)j; /* rank 0's term */
            for (int r = 1; r < N; r++)
                want[j] += (float)(r + 1) * (float)j + 0.25f * (float)r;
        }
        CHECK(c, tn_comm_allreduce_sum_f32(c, v, n));
        if (n > 0 && memcmp(v, want, n * sizeof(float)) != 0)
            wrong("all-reduce", round, (long)n);
        free(v);
        free(want);

        /* all-gather of 1 + round*50 bytes per rank. */
        const size_t gb = 1 + (size_t)round * 50;
        unsigned char *gs = malloc(gb), *gr = malloc(gb * (size_t)N);
        for (size_t k = 0; k < gb; k++)
            gs[k] = (unsigned char)(R * 17 + k);
        CHECK(c, tn_comm_allgather(c, gs, gb, gr));
        for (int r = 0; r < N; r++)
            for (size_t k = 0; k < gb; k++)
                if (gr[(size_t)r * gb + k] != (unsigned char)(r * 17 + k))
                    wrong("all-gather", r, (long)k);
        free(gs);
        free(gr);

        /* all-to-all-v: per-pair sizes (zeros included); the send blocks are
         * laid out in reverse rank order and the receive blocks with a gap
         * of 3 bytes, so displacements matter. */
        size_t *sc = calloc((size_t)N, sizeof(size_t)), *sd = calloc((size_t)N, sizeof(size_t));
        size_t *rc = calloc((size_t)N, sizeof(size_t)), *rd = calloc((size_t)N, sizeof(size_t));
        size_t st = 0, rt = 0;
        for (int p = N - 1; p >= 0; p--) {
            sc[p] = a2a_count(R, p, round);
            sd[p] = st;
            st += sc[p];
        }
        for (int p = 0; p < N; p++) {
            rc[p] = a2a_count(p, R, round);
            rd[p] = rt;
            rt += rc[p] + 3;
        }
        unsigned char *sb = malloc(st + 1), *rb = malloc(rt + 1);
        memset(rb, 0xEE, rt + 1);
        for (int p = 0; p < N; p++)
            for (size_t k = 0; k < sc[p]; k++)
                sb[sd[p] + k] = a2a_byte(R, p, k);
        CHECK(c, tn_comm_alltoallv(c, sb, sc, sd, rb, rc, rd));
        for (int p = 0; p < N; p++) {
            for (size_t k = 0; k < rc[p]; k++)
                if (rb[rd[p] + k] != a2a_byte(p, R, k))
                    wrong("all-to-all-v data from rank", p, (long)k);
            for (size_t k = 0; k < 3; k++)
                if (rb[rd[p] + rc[p] + k] != 0xEE)
                    wrong("all-to-all-v wrote past the block of rank", p, (long)k);
        }
        free(sb);
        free(rb);
        free(sc);
        free(sd);
        free(rc);
        free(rd);

        /* send/recv around a ring: even ranks send first, odd ranks receive
         * first, so even a message too large to buffer cannot deadlock. */
        if (N > 1) {
            const int to = (R + 1) % N, from = (R + N - 1) % N;
            const size_t mb = 64 + (size_t)round * 40000;
            unsigned char *ms = malloc(mb), *mr = malloc(mb);
            for (size_t k = 0; k < mb; k++)
                ms[k] = (unsigned char)(R + k * 5 + round);
            if (R % 2 == 0) {
                CHECK(c, tn_comm_send(c, to, round, ms, mb));
                CHECK(c, tn_comm_recv(c, from, round, mr, mb));
            } else {
                CHECK(c, tn_comm_recv(c, from, round, mr, mb));
                CHECK(c, tn_comm_send(c, to, round, ms, mb));
            }
            for (size_t k = 0; k < mb; k++)
                if (mr[k] != (unsigned char)(from + k * 5 + round))
                    wrong("send/recv byte", from, (long)k);
            free(ms);
            free(mr);
        }
    }
    CHECK(c, tn_comm_barrier(c));
    printf("rank %d: ok (%d ranks)\n", R, N);
}

enum { EP_TOKENS = 41 };

/* Rank r's tokens [*a, *b): rank 0 takes the first half; when N > 2 rank 1
 * takes none (an empty step); the other ranks share the second half. */
static void ep_share(int r, int N, int32_t *a, int32_t *b)
{
    const int32_t half = EP_TOKENS / 2, rest = EP_TOKENS - half;
    const int first_taker = N > 2 ? 2 : 1, takers = N - first_taker;
    if (N == 1) {
        *a = 0, *b = EP_TOKENS;
    } else if (r == 0) {
        *a = 0, *b = half;
    } else if (r < first_taker) {
        *a = *b = half;
    } else {
        *a = half + rest * (r - first_taker) / takers;
        *b = half + rest * (r - first_taker + 1) / takers;
    }
}

static void run_ep(tn_comm *c)
{
    const int R = tn_comm_rank(c), N = tn_comm_size(c);
    ep_testmodel tm;
    tn_comm *one = NULL;
    tn_ep *ep = NULL, *ep1 = NULL;
    if (!ept_make(&tm, 4242))
        wrong("out of memory", 0, 0);
    CHECK(c, tn_comm_single_new(&one));
    int32_t owner[EPT_LAYERS * EPT_EXPERTS];
    for (int e = 0; e < EPT_EXPERTS; e++) {
        owner[e] = e * N / EPT_EXPERTS;                       /* contiguous */
        owner[EPT_EXPERTS + e] = (e * 5 + 3) % N;             /* scattered */
    }
    CHECK(c, tn_ep_new(c, &tm.m, EP_TOKENS, owner, &ep));
    CHECK(c, tn_ep_new(one, &tm.m, EP_TOKENS, NULL, &ep1));
    static float x[EP_TOKENS * EPT_EMBD], w[EP_TOKENS * EPT_USED];
    static float out[EP_TOKENS * EPT_EMBD], ref[EP_TOKENS * EPT_EMBD];
    static int32_t sel[EP_TOKENS * EPT_USED];
    int32_t a, b;
    ep_share(R, N, &a, &b);
    const int32_t n = b - a;
    int64_t sent = 0;
    for (int step = 0; step < 3; step++)
        for (int il = 0; il < EPT_LAYERS; il++) {
            ept_batch(100 + (uint32_t)(step * 10 + il), EP_TOKENS, x, sel, w);
            CHECK(c, tn_ep_moe_ffn(ep1, NULL, il, x, EP_TOKENS, sel, w, ref));
            CHECK(c, tn_ep_moe_ffn(ep, NULL, il, x + (size_t)a * EPT_EMBD, n, sel + (size_t)a * EPT_USED,
                                   w + (size_t)a * EPT_USED, out));
            if (n > 0 && memcmp(out, ref + (size_t)a * EPT_EMBD, (size_t)n * EPT_EMBD * sizeof(float)) != 0)
                wrong("ep rows differ from one process, layer", il, step);
            sent += tn_ep_rows_sent(ep);
        }
    tn_ep_free(ep);
    tn_ep_free(ep1);
    tn_comm_free(one);
    ept_free(&tm);
    CHECK(c, tn_comm_barrier(c));
    printf("rank %d: ep ok (%d ranks, tokens [%d, %d), %lld rows sent)\n", R, N, a, b, (long long)sent);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s ok TIMEOUT | hang RANK TIMEOUT | exit RANK TIMEOUT | badlen TIMEOUT\n", argv[0]);
        return 1;
    }
    const char *mode = argv[1];
    const int victim = argc > 3 ? atoi(argv[2]) : -1;
    const double timeout = atof(argv[argc - 1]);
    tn_comm *c = NULL;
    CHECK(c, tn_comm_mpi_new(&c));
    g_rank = tn_comm_rank(c);
    CHECK(c, tn_comm_set_timeout(c, timeout));
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (!strcmp(mode, "ok")) {
        run_ok(c);
    } else if (!strcmp(mode, "hang") || !strcmp(mode, "exit")) {
        CHECK(c, tn_comm_barrier(c));
        if (g_rank == victim) {
            if (!strcmp(mode, "exit")) {
                printf("rank %d: exiting early\n", g_rank);
                exit(0);
            }
            printf("rank %d: hanging\n", g_rank);
            sleep((unsigned)(timeout * 10 + 10));
            exit(0);
        }
        char b[16] = {0}, out[16 * 64];
        if (tn_comm_size(c) > 64)
            return 1;
        CHECK(c, tn_comm_allgather(c, b, sizeof b, out));
        fprintf(stderr, "rank %d: WRONG: all-gather without rank %d succeeded\n", g_rank, victim);
        return 2;
    } else if (!strcmp(mode, "ep")) {
        run_ep(c);
    } else if (!strcmp(mode, "badlen")) {
        char b[8] = "1234567";
        if (g_rank == 0)
            CHECK(c, tn_comm_send(c, 1, 7, b, 8));
        else if (g_rank == 1)
            CHECK(c, tn_comm_recv(c, 0, 7, b, 4));
        CHECK(c, tn_comm_barrier(c));
        if (g_rank == 1) {
            fprintf(stderr, "rank 1: WRONG: an 8-byte message was accepted as 4\n");
            return 2;
        }
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 1;
    }
    tn_comm_free(c);
    return 0;
}
