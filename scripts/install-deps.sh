#!/usr/bin/env bash
# Installs what tern needs to build and test on a fresh Debian 12 machine:
# the compiler and CMake, cmocka for unit tests, and the Python packages the
# test tooling uses (never the engine). Safe to run again.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq build-essential cmake pkg-config libcmocka-dev libpcre2-dev libjansson-dev libutf8proc-dev python3 python3-pip >/dev/null
python3 -m pip install -q --disable-pip-version-check numpy gguf 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check --break-system-packages numpy gguf
# serve: libevent (evhttp) and jansson; its tests drive it with the official openai client
$SUDO apt-get install -y -qq libevent-dev libjansson-dev >/dev/null
python3 -m pip install -q --disable-pip-version-check openai pytest requests 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check --break-system-packages openai pytest requests
# dist: Open MPI for multi-process expert parallelism; its tests run mpirun in
# a private network namespace (unshare from util-linux, ip from iproute2)
$SUDO apt-get install -y -qq openmpi-bin libopenmpi-dev iproute2 util-linux >/dev/null
