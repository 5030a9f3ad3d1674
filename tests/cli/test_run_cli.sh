#!/usr/bin/env bash
# test_run_cli.sh — `tern run` as a command: stdout carries only the text,
# seeds reproduce, chunked prefill changes nothing, and bad input (missing
# or corrupt model, bad flags, a prompt longer than the context) gives a
# clear message and a non-zero status, never a crash or a sanitizer report.
#
# Usage: test_run_cli.sh TERN_BINARY   (run from the repository root)
set -u
TERN=${1:?usage: $0 TERN_BINARY}
MODEL=../shared/data/models/stories260K/stories260K.v3.derived.gguf

tmp=$(mktemp -d /tmp/tern-run-cli.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }

# No sanitizer report, no crash: a crash is status >= 128 (a signal), and
# ASan/UBSan report on stderr.
sane() { # NAME STATUS STDERR_FILE
    if [ "$2" -ge 128 ]; then bad "$1: status $2 (crash)"; return 1; fi
    if grep -q -E 'AddressSanitizer|LeakSanitizer|runtime error:' "$3"; then
        bad "$1: sanitizer report:"; cat "$3"; return 1
    fi
    return 0
}

# run NAME EXPECTED_STATUS(0|1|2|nonzero) PATTERN_IN_STDERR -- ARGS...
expect() {
    local name=$1 want=$2 pat=$3
    shift 4
    "$TERN" run "$@" > "$tmp/out" 2> "$tmp/err"
    local rc=$?
    sane "$name" $rc "$tmp/err" || return
    if [ "$want" = nonzero ]; then
        [ $rc -ne 0 ] || { bad "$name: status 0, want non-zero"; return; }
    elif [ $rc -ne "$want" ]; then
        bad "$name: status $rc, want $want"; cat "$tmp/err"; return
    fi
    if [ -n "$pat" ] && ! grep -q -E -- "$pat" "$tmp/err"; then
        bad "$name: stderr does not match /$pat/:"; cat "$tmp/err"; return
    fi
    if [ "$want" != 0 ] && [ -s "$tmp/out" ]; then
        bad "$name: failed but wrote to stdout:"; cat "$tmp/out"; return
    fi
    ok "$name (status $rc)"
}

# --- stdout is the text and nothing else --------------------------------
"$TERN" run -m "$MODEL" -p "Once upon a time" -n 64 --temp 0 -t 2 > "$tmp/greedy64" 2> "$tmp/err"
rc=$?
sane "greedy 64" $rc "$tmp/err"
"$TERN" run -m "$MODEL" -p "Once upon a time" -n 16 --temp 0 -t 2 > "$tmp/greedy16" 2> "$tmp/err16"
rc16=$?
sane "greedy 16" $rc16 "$tmp/err16"
if [ $rc -ne 0 ] || [ $rc16 -ne 0 ]; then
    bad "greedy runs exited $rc / $rc16"; cat "$tmp/err" "$tmp/err16"
else
    # 16 tokens are a proper prefix of 64 tokens, and start with the echo
    n16=$(wc -c < "$tmp/greedy16")
    if [ "$n16" -gt 17 ] && [ "$n16" -lt "$(wc -c < "$tmp/greedy64")" ] &&
        cmp -s "$tmp/greedy16" <(head -c "$n16" "$tmp/greedy64") &&
        [ "$(head -c 17 "$tmp/greedy16")" = " Once upon a time" ]; then
        ok "stdout: echo + text, 16 tokens a prefix of 64"
    else
        bad "stdout of -n 16 is not the echo followed by a prefix of -n 64:"
        xxd "$tmp/greedy16" | head; xxd "$tmp/greedy64" | head
    fi
    if grep -q -E 'tern run|tokens/s|seed' "$tmp/greedy64"; then
        bad "stdout holds log lines:"; cat "$tmp/greedy64"
    else
        ok "stdout holds no log lines"
    fi
    if grep -q 'tokens/s' "$tmp/err" && grep -q 'prompt:' "$tmp/err" && grep -q 'generated:' "$tmp/err"; then
        ok "stderr holds the timings"
    else
        bad "stderr lacks the timings:"; cat "$tmp/err"
    fi
fi

# --- chunked prefill gives the same tokens -------------------------------
long="Once upon a time, there was a little girl named Lily. She loved to play outside"
"$TERN" run -m "$MODEL" -p "$long" -n 24 --temp 0 -t 2 > "$tmp/b512" 2> "$tmp/err"
rc1=$?
"$TERN" run -m "$MODEL" -p "$long" -n 24 --temp 0 -t 2 -b 3 > "$tmp/b3" 2> "$tmp/err3"
rc2=$?
sane "batch 512" $rc1 "$tmp/err"; sane "batch 3" $rc2 "$tmp/err3"
if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && cmp -s "$tmp/b512" "$tmp/b3"; then
    ok "prefill in chunks of 3 = one chunk"
else
    bad "prefill in chunks of 3 differs (status $rc1/$rc2)"; diff "$tmp/b512" "$tmp/b3"
fi

# --- seeds --------------------------------------------------------------
sample() { "$TERN" run -m "$MODEL" -p "Once upon a time" -n 48 --temp 0.8 -t 2 --seed "$1" 2> "$tmp/errs"; }
sample 1 > "$tmp/s1a"; ra=$?
sample 1 > "$tmp/s1b"; rb=$?
if [ $ra -eq 0 ] && [ $rb -eq 0 ] && cmp -s "$tmp/s1a" "$tmp/s1b" && grep -q 'seed 1,' "$tmp/errs"; then
    ok "--seed 1 twice: identical output"
else
    bad "--seed 1 twice differs (status $ra/$rb)"; diff "$tmp/s1a" "$tmp/s1b"
fi
differs=0
for s in 2 3 4; do
    sample $s > "$tmp/s$s" || bad "seed $s: status $?"
    cmp -s "$tmp/s1a" "$tmp/s$s" || differs=1
done
if [ $differs -eq 1 ]; then ok "other seeds change the output"; else bad "seeds 1-4 all give the same text"; fi
# without --seed a seed is chosen and printed
"$TERN" run -m "$MODEL" -p "Once" -n 4 -t 2 > /dev/null 2> "$tmp/errr"
if grep -q -E 'seed [0-9]+' "$tmp/errr"; then ok "random seed is printed"; else bad "no seed on stderr"; cat "$tmp/errr"; fi

# --- failures ------------------------------------------------------------
head -c 5000 "$MODEL" > "$tmp/trunc-header.gguf"
head -c 1000000 "$MODEL" > "$tmp/trunc-data.gguf"
: > "$tmp/empty.gguf"
expect "missing model"      1 "nonexistent\.gguf.*(No such file|cannot open)" -- -m "$tmp/nonexistent.gguf" -p hi
expect "truncated metadata" 1 "trunc-header\.gguf" -- -m "$tmp/trunc-header.gguf" -p hi
expect "truncated tensors"  1 "trunc-data\.gguf.*(past the end|truncat)" -- -m "$tmp/trunc-data.gguf" -p hi
expect "empty file"         1 "empty\.gguf" -- -m "$tmp/empty.gguf" -p hi
expect "vocabulary only"    1 "token_embd" -- -m ../shared/data/vocab/ggml-vocab-llama-spm.gguf -p hi
expect "bad --temp"         2 "--temp" -- -m "$MODEL" -p hi --temp abc
expect "bad -n"             2 "'-n'|for -n" -- -m "$MODEL" -p hi -n 12x
expect "bad --top-p"        2 "--top-p" -- -m "$MODEL" -p hi --top-p 1.5
expect "bad --top-k"        2 "--top-k" -- -m "$MODEL" -p hi --top-k -3
expect "bad --repeat-penalty" 2 "--repeat-penalty" -- -m "$MODEL" -p hi --repeat-penalty 0
expect "bad --seed"         2 "--seed" -- -m "$MODEL" -p hi --seed -5
expect "bad -t"             2 "'-t'|for -t" -- -m "$MODEL" -p hi -t 0
expect "unknown flag"       2 "--bogus" -- -m "$MODEL" -p hi --bogus 1
expect "missing value"      2 "missing value.*--ctx" -- -m "$MODEL" -p hi --ctx
expect "no prompt"          2 "-p PROMPT" -- -m "$MODEL"
expect "prompt > context"   1 "context" -- -m "$MODEL" -p "Once upon a time there was" --ctx 3
huge=$(for i in $(seq 200); do printf 'Once upon a time '; done)
expect "prompt > trained context" 1 "has [0-9]+ tokens.*trained context" -- -m "$MODEL" -p "$huge" -n 4

# --- limits that are not errors -------------------------------------------
expect "context full stops" 0 "context full" -- -m "$MODEL" -p "Once" -n -1 --ctx 12 --seed 5 -t 2
expect "empty prompt (BOS)" 0 "" -- -m "$MODEL" -p "" -n 8 --seed 5 -t 2
"$TERN" run --help > "$tmp/help" 2>&1
if [ $? -eq 0 ] && grep -q -- '--top-p' "$tmp/help"; then ok "--help"; else bad "--help"; fi

exit $fail
