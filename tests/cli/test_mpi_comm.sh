#!/usr/bin/env bash
# test_mpi_comm.sh — tn_comm over Open MPI with real processes: mpirun -np 1,
# 2 and 4 run tests/dist/mpi_comm_check.c, which checks every collective and
# send/recv on every rank; expert-parallel dispatch/combine at -np 2 and 4
# gives one process's bits; then the faults: a rank that hangs makes the
# others fail within the timeout, naming the operation and the rank; a rank
# that exits early ends the job non-zero within the bound; a message of the
# wrong length is an error naming its sender. Nothing may hang: every mpirun
# is bounded by `timeout`.
#
# Networking (../shared/DESIGN.md): everything runs inside a fresh network
# namespace with only lo up (unshare -n, as root), with Open MPI and UCX
# restricted to lo. Without root, unshare, or an MPI build the test skips
# (exit 77).
#
# Usage: test_mpi_comm.sh TERN_BINARY   (run from the repository root; the
# check program is built next to the tern binary)
set -u
BIN_DIR=$(cd "$(dirname "${1:?usage: $0 TERN_BINARY}")" && pwd)
CHECK=$BIN_DIR/mpi_comm_check

[ -x "$CHECK" ] || { echo "SKIP: $CHECK not built (no MPI)"; exit 77; }
. "$(dirname "$0")/../../scripts/mpi-loopback.sh"
tn_mpi_loopback "$0" "$@"

tmp=$(mktemp -d /tmp/tern-mpi.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }

# mpi NP TIME_LIMIT ARGS... : runs the check; sets $st, $out, $err, $secs
mpi() {
    local np=$1 lim=$2; shift 2
    local t0=$(date +%s.%N)
    timeout -k 5 "$lim" mpirun --allow-run-as-root --oversubscribe -np "$np" "$CHECK" "$@" \
        >"$tmp/out" 2>"$tmp/err"
    st=$?
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
    out=$(cat "$tmp/out"); err=$(cat "$tmp/err")
}

sanitizer_clean() { # NAME
    if grep -q -E 'AddressSanitizer|LeakSanitizer|runtime error:' "$tmp/err"; then
        bad "$1: sanitizer report:"; cat "$tmp/err"; return 1
    fi
    return 0
}

for np in 1 2 4; do
    mpi "$np" 120 ok 20
    n_ok=$(grep -c ": ok ($np ranks)" "$tmp/out")
    if [ "$st" -eq 0 ] && [ "$n_ok" -eq "$np" ]; then
        sanitizer_clean "np $np" && ok "np $np: every collective checked on all $np ranks (${secs}s)"
    else
        bad "np $np: status $st, $n_ok of $np ranks ok"; echo "$out"; echo "$err"
    fi
done

# Expert parallelism on a tiny MoE layer: every rank's rows equal one
# process's bits, with uneven shares (an empty rank at np 4) and two placements.
for np in 2 4; do
    mpi "$np" 120 ep 20
    n_ok=$(grep -c ": ep ok ($np ranks" "$tmp/out")
    if [ "$st" -eq 0 ] && [ "$n_ok" -eq "$np" ]; then
        sanitizer_clean "ep np $np" && ok "ep np $np: same bits as one process on all $np ranks (${secs}s)"
    else
        bad "ep np $np: status $st, $n_ok of $np ranks ok"; echo "$out"; echo "$err"
    fi
done

# A hung rank: the others fail by their own deadline (2 s) with TN_ERR_IO
# naming the operation and the hung rank, and the job ends non-zero.
mpi 4 60 hang 2 2
n_named=$(grep -c -E 'rank [013]: FAIL after [0-9.]+ s: input/output error: comm\(mpi\) rank [013]: all-gather #[0-9]+: timed out after 2\.[0-9] s waiting for rank 2' "$tmp/err")
if [ "$st" -ne 0 ] && [ "$st" -ne 124 ] && [ "$n_named" -ge 1 ] && awk "BEGIN{exit !($secs < 30)}"; then
    ok "hung rank: $n_named rank(s) named it, job status $st after ${secs}s"
else
    bad "hung rank: status $st, $n_named messages naming it, ${secs}s"; echo "$err"
fi
grep -m1 'timed out' "$tmp/err"

# A rank that exits early (status 0, no finalize): the job ends non-zero
# well within the bound, by our deadline or by mpirun noticing the exit.
mpi 4 60 exit 1 3
if [ "$st" -ne 0 ] && [ "$st" -ne 124 ] && awk "BEGIN{exit !($secs < 30)}"; then
    ok "early exit: job status $st after ${secs}s"
else
    bad "early exit: status $st after ${secs}s"; echo "$out"; echo "$err"
fi
grep -m1 -E 'FAIL|exited|terminated' "$tmp/err"

# A message longer than the receiver expects: an error naming the sender.
mpi 2 60 badlen 3
if [ "$st" -ne 0 ] && [ "$st" -ne 124 ] && grep -q -E 'rank 1: FAIL .*recv #[0-9]+: .*rank 0' "$tmp/err"; then
    ok "wrong length: $(grep -m1 'rank 1: FAIL' "$tmp/err")"
else
    bad "wrong length: status $st"; echo "$err"
fi

exit $fail
