#!/usr/bin/env bash
# convert_vs_llamacpp.sh — the tiny checkpoints of make_hf_tiny.py, converted
# by `tern convert`, run greedily by llama.cpp's llama-simple and by
# `tern run`: the texts must be identical. Run by hand (llama.cpp is not part
# of CI); docs/convert.md has the result for the Feb-2025 llama.cpp build.
#
# Usage: scripts/convert_vs_llamacpp.sh TERN LLAMA_SIMPLE [FAMILY...]
set -u
TERN=${1:?usage: $0 TERN LLAMA_SIMPLE [FAMILY...]}
LLAMA=${2:?usage: $0 TERN LLAMA_SIMPLE [FAMILY...]}
shift 2
families=${*:-llama llama3 mistral qwen2 qwen3 mixtral qwen2_moe qwen3_moe deepseek_v2 deepseek_v3}
tmp=$(mktemp -d /tmp/tern-convert-llamacpp.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
prompt="Hello world, this is"
for f in $families; do
    python3 "$(dirname "$0")/make_hf_tiny.py" --out "$tmp" --family "$f" || exit 1
    "$TERN" convert "$tmp/$f" "$tmp/$f.gguf" --dtype f32 2> /dev/null || { echo "$f: tern convert failed"; continue; }
    # llama-simple ends its text with a newline that $(...) drops, as it drops none of tern's
    a=$(timeout 120 "$LLAMA" -m "$tmp/$f.gguf" -n 16 "$prompt" 2> "$tmp/err")
    b=$("$TERN" run -m "$tmp/$f.gguf" -p "$prompt" -n 16 --temp 0 2> /dev/null)
    if [ -z "$a" ]; then
        echo "$f: llama.cpp did not run: $(grep -m1 -i error "$tmp/err")"
    elif [ "$a" = "$b" ]; then
        echo "$f: identical greedy text (16 tokens)"
    else
        echo "$f: DIFFERENT greedy text"
    fi
done
