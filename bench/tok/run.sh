#!/usr/bin/env bash
# run.sh — the tokenizer speed table of docs/tokenizers.md: byte-level BPE
# (GPT-2 GGUF, Llama 3 tiktoken, Qwen tokenizer.json) and SPM (Llama 2) on
# English (wikitext-2 test) and Chinese (红楼梦) text, one thread.
# Usage: bash bench/tok/run.sh   (from the repo root; builds build-rel/)
set -euo pipefail
cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-rel --target tern_tok -j"$(nproc)" >/dev/null
cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc bench/tok/bench_tokenize.c \
  -Lbuild-rel -ltern_tok -ltern_format -ltern_kern -ltern_base \
  -lpcre2-8 -ljansson -lutf8proc -lm -lpthread -o build-rel/bench_tokenize
V=../shared/data/vocab
EN=../shared/data/corpora/en/wikitext-2-raw/wiki.test.raw
ZH=../shared/data/corpora/zh/novels/hongloumeng.txt
for vocab in $V/ggml-vocab-gpt-2.gguf $V/llama3-tiktoken/tokenizer.model $V/hf/qwen3/tokenizer.json \
             $V/ggml-vocab-llama-spm.gguf; do
  for text in $EN $ZH; do
    build-rel/bench_tokenize "$vocab" "$text"
    echo
  done
done
