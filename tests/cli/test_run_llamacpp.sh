#!/usr/bin/env bash
# test_run_llamacpp.sh — `tern run` greedy output equals llama.cpp's, byte
# for byte, on the real stories260K model.
#
# The reference (../shared/data/models/stories260K/llamacpp-greedy-64.txt)
# holds three blocks, each the prompt as llama.cpp echoes it (its tokens
# detokenized: " Once upon a time", with the SPM leading space) followed by
# 64 greedily generated tokens. Each block is followed by the separator
# "\n\n\n----\n": the three newlines belong to the separator, not to the
# text (the 64th token ends the block: "...mom said", then the 65th would be
# ","). So a block's text is exactly what `tern run ... -n 64 --temp 0`
# must print on stdout.
#
# Usage: test_run_llamacpp.sh TERN_BINARY   (run from the repository root)
set -u
TERN=${1:?usage: $0 TERN_BINARY}
DATA=../shared/data/models/stories260K
MODEL=$DATA/stories260K.v3.derived.gguf
REF=$DATA/llamacpp-greedy-64.txt
PROMPTS=("Once upon a time" "The little dog" "Tom and Lily were friends")

tmp=$(mktemp -d /tmp/tern-run-llamacpp.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT

# Split the reference into block1..block3 (exact bytes, separator removed).
awk -v dir="$tmp" 'BEGIN { RS = "\n\n\n----\n" } { n++; printf "%s", $0 > (dir "/block" n) } END { print n > (dir "/count") }' "$REF"
if [ "$(cat "$tmp/count")" != 3 ]; then
    echo "FAIL: expected 3 blocks in $REF, found $(cat "$tmp/count")"
    exit 1
fi

fail=0
for i in 0 1 2; do
    prompt=${PROMPTS[$i]}
    want=$tmp/block$((i + 1))
    got=$tmp/got$((i + 1))
    # the block must start with the echoed prompt, or we are comparing the wrong thing
    if [ "$(head -c $((${#prompt} + 1)) "$want")" != " $prompt" ]; then
        echo "FAIL: block $((i + 1)) of $REF does not start with ' $prompt'"
        fail=1
        continue
    fi
    "$TERN" run -m "$MODEL" -p "$prompt" -n 64 --temp 0 -t 2 > "$got" 2> "$tmp/err"
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "FAIL: tern run exited $rc for '$prompt':"
        cat "$tmp/err"
        fail=1
        continue
    fi
    if cmp -s "$want" "$got"; then
        echo "ok: '$prompt' ($(wc -c < "$got") bytes identical)"
    else
        echo "FAIL: '$prompt' differs from llama.cpp"
        echo "--- llama.cpp (xxd) vs +++ tern run (xxd):"
        diff <(xxd "$want") <(xxd "$got")
        fail=1
    fi
done
exit $fail
