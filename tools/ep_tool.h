/*
 * ep_tool — the `--ep N` and `--ep-timeout S` flags shared by tern run,
 * bench and serve: under `mpirun -np N`, join the job's communicator and
 * route the forward pass's routed experts through expert parallelism
 * (src/dist/ep.h). Rank 0 talks to the user; the other ranks step along.
 */
#ifndef TERN_TOOLS_EP_TOOL_H
#define TERN_TOOLS_EP_TOOL_H

#include "dist/ep.h"
#include "engine/engine.h"

#include <stdio.h>

typedef struct ep_opts {
    int32_t n_ep;      /* 0: no expert parallelism */
    float timeout_s;   /* per-exchange bound, seconds (0: the communicator's default) */
} ep_opts;

/* Consumes `a v` if a is --ep or --ep-timeout: returns 1 (taken), 2 (a bad
 * value, message printed with cmd's name), or 0 (not an EP flag). */
int ep_parse_flag(const char *cmd, const char *a, const char *v, ep_opts *o);

/* Usage lines for the two flags. */
void ep_usage(FILE *out);

typedef struct ep_ctx {
    tn_comm *comm;     /* NULL without --ep */
    tn_ep *ep;
    int rank, size;    /* 0, 1 without --ep */
} ep_ctx;

/* How to load the model under these flags: with --ep the experts are not
 * repacked at load (defer_experts); ep_make repacks the rank's own. */
tn_model_opts ep_model_opts(const ep_opts *o);

/* Joins the MPI job (its size must be o->n_ep) and makes the EP state for
 * model m and batches of up to n_batch_max local tokens; then repacks the
 * experts this rank computes into the x16 layout if m was loaded with
 * ep_model_opts (before any forward pass). Without --ep, a zeroed ctx with
 * size 1. Returns 0, or 1 with the reason printed.
 * ep_join = ep_join_job, then ep_make (for tools that learn their rank
 * before they load the model). */
int ep_join(const char *cmd, const ep_opts *o, tn_model *m, int32_t n_batch_max, ep_ctx *ctx);
int ep_join_job(const char *cmd, const ep_opts *o, ep_ctx *ctx);
int ep_make(const char *cmd, ep_ctx *ctx, tn_model *m, int32_t n_batch_max);

/* A rank without sequences of its own (ranks > 0 of tern run and serve):
 * loads nothing more than a 1-slot cache; each round of tn_ep_sync it runs
 * an empty forward step when another rank steps, until all are DONE.
 * Returns 0, or 1 with the reason printed (a lost rank, a timeout). */
int ep_follow(const char *cmd, ep_ctx *ctx, const tn_model *m, int32_t n_threads);

/* One round of the step handshake for a rank that has sequences: state as
 * for tn_ep_sync. No-op without --ep. Returns 0, or 1 with the reason
 * printed. */
int ep_round(const char *cmd, ep_ctx *ctx, int32_t state);

/* Compute threads for this rank: `requested` if set, else the cores
 * divided among the job's ranks on this host (OMPI_COMM_WORLD_LOCAL_SIZE),
 * at least 1; 0 (all cores) without --ep. */
int32_t ep_threads(const ep_ctx *ctx, int32_t requested);

/* Routes f through ctx's EP (no-op without --ep). 0 ok, 1 printed error. */
int ep_attach(const char *cmd, ep_ctx *ctx, tn_forward *f);

/* Prints this rank's resident memory and EP timing to stderr ("cmd: rank
 * R/N: resident X MiB (file-backed Y MiB), ..."). */
void ep_report(const char *cmd, const ep_ctx *ctx);

/* Fills l with the engine's data-parallel link over ctx's communicator
 * (engine.h, tn_engine_link): rank, size, the all-gather and all-to-all-v,
 * and a fail that prints "CMD: rank R: the expert-parallel job lost a
 * rank: WHY" and ends the process with exit status 1 (the engine thread
 * cannot unwind the tool; mpirun then ends the job). ctx must outlive l. */
void ep_link(const char *cmd, ep_ctx *ctx, tn_engine_link *l);

/* Frees the EP state and leaves the job (a broken communicator does not
 * finalize MPI: the process should exit non-zero soon). */
void ep_leave(ep_ctx *ctx);

#endif
