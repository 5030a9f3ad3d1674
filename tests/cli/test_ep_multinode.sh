#!/usr/bin/env bash
# test_ep_multinode.sh — expert parallelism across two "hosts": two network
# namespaces joined by a veth pair (10.77.0.1 and 10.77.0.2, nothing else),
# mpirun started in the first with a hostfile naming both addresses. Open
# MPI reaches a remote host through a launcher (ssh by default); here
# --mca plm_rsh_agent points at a script that runs the launch command with
# `ip netns exec` in the namespace standing for that host. Open MPI's TCP
# traffic is restricted to the veth subnet, so rank 0 and rank 1 really
# talk over an IP link. Asserts: each rank runs on its own host (address),
# and `tern run --ep 2` prints exactly one process's greedy text.
#
# Needs root (ip netns add, veth); exits 77 (skip) without it. The
# namespaces and the veth pair are removed at exit.
#
# Usage: test_ep_multinode.sh TERN_BINARY   (run from the repository root)
set -u
TERN=$(cd "$(dirname "${1:?usage: $0 TERN_BINARY}")" && pwd)/$(basename "$1")
SUPP=$(pwd)/tests/dist/lsan_mpi.supp
VOCAB=$(pwd)/../shared/data/models/stories260K/stories260K.v3.derived.gguf
command -v mpirun >/dev/null || { echo "SKIP: no mpirun"; exit 77; }
[ "$(id -u)" -eq 0 ] || { echo "SKIP: network namespaces need root"; exit 77; }
command -v ip >/dev/null || { echo "SKIP: no ip (iproute2)"; exit 77; }

S=$$
A=tern-hostA-$S B=tern-hostB-$S VA=tnva$S VB=tnvb$S
tmp=$(mktemp -d /tmp/tern-ep-mn.XXXXXX) || exit 1
cleanup() {
    ip netns del "$A" 2>/dev/null
    ip netns del "$B" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
if ! { ip netns add "$A" && ip netns add "$B"; } 2>/dev/null; then
    echo "SKIP: ip netns add is not permitted here"; exit 77
fi
ip link add "$VA" type veth peer name "$VB" &&
    ip link set "$VA" netns "$A" && ip link set "$VB" netns "$B" &&
    ip -n "$A" addr add 10.77.0.1/24 dev "$VA" && ip -n "$B" addr add 10.77.0.2/24 dev "$VB" &&
    ip -n "$A" link set "$VA" up && ip -n "$B" link set "$VB" up &&
    ip -n "$A" link set lo up && ip -n "$B" link set lo up || { echo "FAIL: cannot build the veth link"; exit 1; }

# The launcher: Open MPI calls "AGENT [options] HOST COMMAND..."; the
# command is a shell line (it sets PATH and starts orted).
printf '10.77.0.1 %s\n10.77.0.2 %s\n' "$A" "$B" >"$tmp/hosts.map"
cat >"$tmp/agent.sh" <<EOF
#!/bin/bash
while [ "\${1#-}" != "\$1" ]; do shift; done
host=\$1; shift
ns=\$(awk -v h="\$host" '\$1 == h { print \$2 }' "$tmp/hosts.map")
[ -n "\$ns" ] || { echo "agent: unknown host \$host" >&2; exit 1; }
exec ip netns exec "\$ns" bash -c "\$*"
EOF
chmod +x "$tmp/agent.sh"
printf '10.77.0.1 slots=1\n10.77.0.2 slots=1\n' >"$tmp/hostfile"

export OMPI_MCA_btl_tcp_if_include=10.77.0.0/24 OMPI_MCA_oob_tcp_if_include=10.77.0.0/24
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,tcp OMPI_MCA_plm_rsh_agent=$tmp/agent.sh
export ASAN_OPTIONS=${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}fast_unwind_on_malloc=0
export LSAN_OPTIONS=suppressions=$SUPP:print_suppressions=0
mpi() { # CMD...: mpirun from host A over both hosts; sets $st
    timeout -k 5 120 ip netns exec "$A" mpirun --allow-run-as-root --hostfile "$tmp/hostfile" -np 2 "$@" \
        >"$tmp/out" 2>"$tmp/err"
    st=$?
}
fail=0

mpi bash -c 'echo "rank $OMPI_COMM_WORLD_RANK at $(ip -o -4 addr show | awk "/10\.77\./ { print \$4 }")"'
if [ "$st" -eq 0 ] && grep -q 'rank 0 at 10.77.0.1/24' "$tmp/out" && grep -q 'rank 1 at 10.77.0.2/24' "$tmp/out"; then
    echo "ok: hostfile launch: rank 0 on host 10.77.0.1, rank 1 on host 10.77.0.2"
else
    echo "FAIL: hostfile launch: status $st"; cat "$tmp/out" "$tmp/err"; exit 1
fi

model=$tmp/tiny-deepseek2.gguf
"$TERN" synth --preset tiny-deepseek2 --dtype f32 --vocab "$VOCAB" -o "$model" -t 1 >/dev/null 2>&1 || { echo "FAIL: synth"; exit 1; }
RUN=(run -m "$model" -p "Once upon a time, there was a little girl who" -n 20 --temp 0 -t 1 -b 3)
"$TERN" "${RUN[@]}" >"$tmp/ref" 2>/dev/null || { echo "FAIL: one process"; exit 1; }
mpi "$TERN" "${RUN[@]}" --ep 2 --ep-timeout 30
if [ "$st" -eq 0 ] && cmp -s "$tmp/ref" "$tmp/out" && [ "$(grep -c -E 'rank [01]/2: resident' "$tmp/err")" -eq 2 ] &&
    ! grep -q -E 'AddressSanitizer|LeakSanitizer|runtime error:' "$tmp/err"; then
    echo "ok: tern run --ep 2 over two hosts: same greedy text as one process"
else
    echo "FAIL: tern run --ep 2 over two hosts: status $st"; cat "$tmp/ref"; echo; cat "$tmp/out"; echo; cat "$tmp/err"
    fail=1
fi
exit $fail
