#!/usr/bin/env python3
"""Prints the Hugging Face tokenizers ids that tests/tok/test_tok_hf_json.c
expects: Qwen3's tokenizer.json (NFC normalizer) on decomposed text, and a
copy with <|im_start|> lstrip and <|im_end|> rstrip on text around them.

Usage (from the repo root, with `pip install tokenizers` in a venv):
    python3 scripts/tok_hf_reference.py
Measured with tokenizers 0.23.3."""
import json
import os
import tempfile

from tokenizers import Tokenizer

QWEN3 = "../shared/data/vocab/hf/qwen3/tokenizer.json"


def show(tok, text):
    print(json.dumps(text), tok.encode(text, add_special_tokens=False).ids)


def main():
    plain = Tokenizer.from_file(QWEN3)
    for text in ["Cafe\u0301 e\u0301te\u0301", "\u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165",
                 "\u212b and A\u030a", "\ufb01ne \u00e9", "x\u0323\u0307y"]:
        show(plain, text)
    with open(QWEN3) as f:
        j = json.load(f)
    for a in j["added_tokens"]:
        if a["content"] == "<|im_start|>":
            a["lstrip"] = True
        if a["content"] == "<|im_end|>":
            a["rstrip"] = True
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "tokenizer.json")
        with open(path, "w") as f:
            json.dump(j, f)
        strip = Tokenizer.from_file(path)
        texts = ["hello  <|im_start|>  world <|im_end|> \n x", "a\n<|im_end|>\n\nb <|im_start|>", " <|endoftext|> y"]
        print("with lstrip/rstrip:")
        for text in texts:
            show(strip, text)
        print("as it is:")
        for text in texts:
            show(plain, text)


if __name__ == "__main__":
    main()
