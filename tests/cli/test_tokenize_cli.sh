#!/usr/bin/env bash
# test_tokenize_cli.sh — `tern tokenize` and `tern detokenize`: the ids of
# llama.cpp's vectors for a GGUF, a tokenizer.json and a tiktoken file,
# --special, --pieces, BOS per the vocabulary, round trips, and clear errors
# (no model, a missing file, a non-vocabulary GGUF, bad ids) without crashes.
#
# Usage: test_tokenize_cli.sh TERN_BINARY   (run from the repository root)
set -u
TERN=${1:?usage: $0 TERN_BINARY}
V=../shared/data/vocab

tmp=$(mktemp -d /tmp/tern-tok-cli.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }

sane() { # NAME STATUS STDERR_FILE
    if [ "$2" -ge 128 ]; then bad "$1: status $2 (crash)"; return 1; fi
    if grep -q -E 'AddressSanitizer|LeakSanitizer|runtime error:' "$3"; then
        bad "$1: sanitizer report:"; cat "$3"; return 1
    fi
    return 0
}

# check NAME INPUT EXPECTED_STDOUT -- ARGS...
check() {
    local name=$1 input=$2 want=$3
    shift 4
    printf '%s' "$input" | "$TERN" "$@" > "$tmp/out" 2> "$tmp/err"
    local rc=$?
    sane "$name" $rc "$tmp/err" || return
    if [ $rc -ne 0 ]; then bad "$name: status $rc"; cat "$tmp/err"; return; fi
    if [ "$(cat "$tmp/out")" != "$want" ]; then
        bad "$name: got '$(cat "$tmp/out")', want '$want'"; return
    fi
    ok "$name"
}

# fails NAME INPUT STATUS PATTERN -- ARGS...
fails() {
    local name=$1 input=$2 want=$3 pat=$4
    shift 5
    printf '%s' "$input" | "$TERN" "$@" > "$tmp/out" 2> "$tmp/err"
    local rc=$?
    sane "$name" $rc "$tmp/err" || return
    if [ $rc -ne "$want" ]; then bad "$name: status $rc, want $want"; cat "$tmp/err"; return; fi
    if ! grep -q -E -- "$pat" "$tmp/err"; then bad "$name: stderr lacks /$pat/:"; cat "$tmp/err"; return; fi
    ok "$name"
}

# ids as in the vector files (line 13 of a .out is " Hello world")
check "gpt-2 ids" "Hello world" "15496 995" -- tokenize -m $V/ggml-vocab-gpt-2.gguf
check "qwen2 via tokenizer.json" " Hello world" "$(sed -n 13p $V/ggml-vocab-qwen2.gguf.out | sed 's/^ //')" \
    -- tokenize -m $V/hf/qwen3/tokenizer.json
# Llama 3 adds BOS (128000) unless --no-bos
check "llama3 via tiktoken, BOS" "Hello world" "128000 9906 1917" -- tokenize -m $V/llama3-tiktoken/tokenizer.model
check "llama3 --no-bos" "Hello world" "9906 1917" -- tokenize --no-bos -m $V/llama3-tiktoken/tokenizer.model
check "llama-spm BOS and space prefix" "Hello world" "1 15043 3186" -- tokenize -m $V/ggml-vocab-llama-spm.gguf
check "bert [CLS] [SEP]" "Hello world" "101 7592 2088 102" -- tokenize -m $V/ggml-vocab-bert-bge.gguf

# --special: control texts become their ids only on request
check "special on" "a<|endoftext|>b" "64 50256 65" -- tokenize --special -m $V/ggml-vocab-gpt-2.gguf
printf 'a<|endoftext|>b' | "$TERN" tokenize -m $V/ggml-vocab-gpt-2.gguf > "$tmp/out" 2> "$tmp/err"
if grep -qw 50256 "$tmp/out"; then bad "special off: 50256 produced from plain text"; else ok "special off"; fi

# --pieces: id, tab, escaped text
check "pieces" $'Hi\n' $'17250\tHi\n198\t\\n' -- tokenize --pieces -m $V/ggml-vocab-gpt-2.gguf

# detokenize, including a character split over byte tokens, and a round trip
check "detokenize" "15496 995" "Hello world" -- detokenize -m $V/ggml-vocab-gpt-2.gguf
text='Grüße, 世界! 🦙 tabs	and  spaces'
printf '%s' "$text" | "$TERN" tokenize --no-bos -m $V/llama3-tiktoken/tokenizer.model > "$tmp/ids" 2> "$tmp/err"
check "round trip (llama3)" "$(cat "$tmp/ids")" "$text" -- detokenize -m $V/llama3-tiktoken/tokenizer.model
check "detokenize --special" "128000,9906" "<|begin_of_text|>Hello" -- detokenize --special -m $V/llama3-tiktoken/tokenizer.model
check "detokenize hides control" "128000 9906" "Hello" -- detokenize -m $V/llama3-tiktoken/tokenizer.model
# a byte that starts no UTF-8 sequence counts as U+FFFD (llama.cpp), whose id is 4210
check "U+FFFD" $'\xef\xbf\xbd' "4210" -- tokenize -m $V/ggml-vocab-gpt-2.gguf
check "invalid UTF-8 in" $'\xff' "4210" -- tokenize -m $V/ggml-vocab-gpt-2.gguf

# errors
fails "no model" "x" 2 "-m MODEL is required" -- tokenize
fails "unknown option" "x" 2 "unknown option" -- tokenize -m $V/ggml-vocab-gpt-2.gguf --frobnicate
fails "missing file" "x" 1 "/nonexistent/vocab.gguf" -- tokenize -m /nonexistent/vocab.gguf
fails "missing json" "x" 1 "/nonexistent/tokenizer.json" -- tokenize -m /nonexistent/tokenizer.json
printf 'GGUF\003\000\000\000' > "$tmp/trunc.gguf"
fails "truncated gguf" "x" 1 "trunc.gguf|gguf" -- tokenize -m "$tmp/trunc.gguf"
fails "bad id" "15496 50257" 1 "50257.*not a token id" -- detokenize -m $V/ggml-vocab-gpt-2.gguf
fails "not a number" "15496 x7" 1 "x7.*not a token id" -- detokenize -m $V/ggml-vocab-gpt-2.gguf
printf 'GGUF\003\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' > "$tmp/empty.gguf"
fails "no vocabulary" "x" 1 "tokenizer.ggml.model is missing" -- tokenize -m "$tmp/empty.gguf"

exit $fail
