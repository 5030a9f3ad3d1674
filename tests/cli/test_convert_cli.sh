#!/usr/bin/env bash
# test_convert_cli.sh — `tern convert`'s command line: usage errors exit 2,
# a bad checkpoint exits 1 naming the file, a good one converts and the
# result runs (`tern run`) and carries llama.cpp's names (`tern info`).
#
# Usage: test_convert_cli.sh TERN_BINARY   (run from the repository root)
set -u
TERN=${1:?usage: $0 TERN_BINARY}
tmp=$(mktemp -d /tmp/tern-convert-cli.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { # description, expected rc, actual rc, stderr file, needle
    if [ "$3" -ne "$2" ] || ! grep -q -- "$5" "$4"; then
        echo "FAIL: $1 (rc $3, want $2; stderr: $(head -c 300 "$4"))"
        fail=1
    else
        echo "ok: $1"
    fi
}

python3 scripts/make_hf_tiny.py --out "$tmp" --family qwen2_moe || exit 1

"$TERN" convert > /dev/null 2> "$tmp/err"; check "no arguments" 2 $? "$tmp/err" "usage: tern convert"
"$TERN" convert "$tmp/qwen2_moe" "$tmp/o.gguf" --dtype q5_k 2> "$tmp/err"; check "bad dtype" 2 $? "$tmp/err" "q5_k"
"$TERN" convert "$tmp/nope" "$tmp/o.gguf" 2> "$tmp/err"; check "missing dir" 1 $? "$tmp/err" "$tmp/nope/config.json"
[ -e "$tmp/o.gguf" ] && { echo "FAIL: a failed conversion left $tmp/o.gguf"; fail=1; }

"$TERN" convert "$tmp/qwen2_moe" "$tmp/o.gguf" --dtype bf16 2> "$tmp/err"
check "convert qwen2_moe" 0 $? "$tmp/err" "qwen2_moe (qwen2moe)"
"$TERN" info "$tmp/o.gguf" > "$tmp/info" 2>&1
for want in "general.architecture" "qwen2moe" "blk.1.ffn_gate_exps.weight" "blk.0.ffn_gate_inp_shexp.weight" \
            "qwen2moe.expert_shared_feed_forward_length" "tokenizer.ggml.merges" "tokenizer.chat_template"; do
    grep -q -- "$want" "$tmp/info" || { echo "FAIL: tern info lacks '$want'"; fail=1; }
done
out=$("$TERN" run -m "$tmp/o.gguf" -p "Hello world" -n 8 --temp 0 2> "$tmp/err")
rc=$?
if [ $rc -ne 0 ] || [ "${out#Hello world}" = "$out" ]; then
    echo "FAIL: tern run on the converted model (rc $rc): $out $(cat "$tmp/err")"
    fail=1
else
    echo "ok: tern run on the converted model"
fi
"$TERN" convert "$tmp/qwen2_moe" "$tmp/q.gguf" --dtype q8_0 2> "$tmp/err"
check "convert qwen2_moe --dtype q8_0" 0 $? "$tmp/err" "q8_0"
"$TERN" info "$tmp/q.gguf" > "$tmp/info" 2>&1
grep -q "q8_0" "$tmp/info" || { echo "FAIL: tern info shows no q8_0 tensor in the --dtype q8_0 file"; fail=1; }
out=$("$TERN" run -m "$tmp/q.gguf" -p "Hello world" -n 4 --temp 0 2> "$tmp/err")
[ $? -eq 0 ] || { echo "FAIL: tern run on the q8_0 conversion: $(cat "$tmp/err")"; fail=1; }
exit $fail
