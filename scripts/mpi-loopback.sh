# mpi-loopback.sh — sourced by the scripts that start `mpirun` (tests/cli,
# bench): keeps their traffic on loopback.
#
# tn_mpi_loopback "$0" "$@" re-runs the calling script in a private network
# namespace with only lo (unshare -n, as root) and, once inside, brings lo up
# and restricts Open MPI and UCX to it (TCP on lo, shared memory, self; no
# UCX probing of devices that are not there). Without mpirun, root or
# unshare it exits 77, which ctest reads as a skip. Checks a script wants to
# make before the namespace (files, packages) go before the call. Under
# AddressSanitizer, Open MPI's own start-up allocations are suppressed
# (tests/dist/lsan_mpi.supp says which).
tn_mpi_loopback() {
    if [ "${TERN_IN_NETNS:-}" != 1 ]; then
        command -v mpirun >/dev/null || { echo "SKIP: no mpirun"; exit 77; }
        [ "$(id -u)" -eq 0 ] || { echo "SKIP: a network namespace needs root"; exit 77; }
        unshare -n true 2>/dev/null || { echo "SKIP: unshare -n is not permitted here"; exit 77; }
        exec unshare -n env TERN_IN_NETNS=1 bash "$@"
    fi
    ip link set lo up || { echo "FAIL: cannot bring lo up"; exit 1; }
    export OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo UCX_NET_DEVICES=lo
    export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader,tcp
    local supp
    supp=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/dist/lsan_mpi.supp
    export ASAN_OPTIONS=${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}fast_unwind_on_malloc=0
    export LSAN_OPTIONS=suppressions=$supp:print_suppressions=0
}
