/*
 * tok — vocabularies, tokenization and streaming detokenization.
 *
 * Key idea: a vocabulary is built once from GGUF metadata
 * (tokenizer.ggml.*) into flat arrays plus a hash from piece to id; encoding
 * then never allocates per piece. Three families: SentencePiece-style
 * (`tokenizer.ggml.model = "llama"`: the leading-space rule, "▁" for
 * spaces, score-ordered merges, byte fallback to <0xXX>), byte-level BPE
 * ("gpt2": a pre-tokenizer regex chosen by tokenizer.ggml.pre, rank-ordered
 * merges over GPT-2's byte alphabet) and WordPiece ("bert"). A vocabulary
 * can also be built from a Hugging Face tokenizer.json or a tiktoken rank
 * file (Llama 3's tokenizer.model). Other families ("t5", "rwkv") return
 * TN_ERR_UNSUPPORTED.
 */
#ifndef TERN_TOK_TOK_H
#define TERN_TOK_TOK_H

#include "base/base.h"
#include "format/gguf.h"

typedef struct tn_vocab tn_vocab;

/* Token types as GGUF stores them (tokenizer.ggml.token_type). */
enum {
    TN_TOKEN_NORMAL = 1,
    TN_TOKEN_UNKNOWN = 2,
    TN_TOKEN_CONTROL = 3,
    TN_TOKEN_USER_DEFINED = 4,
    TN_TOKEN_UNUSED = 5,
    TN_TOKEN_BYTE = 6,
};

/* Builds a vocabulary from a GGUF file's tokenizer.ggml.* metadata. The
 * vocabulary copies what it needs; g may be freed afterwards. Missing or
 * contradictory fields (tokens/scores/types of different lengths, a BOS id
 * out of range, two tokens with the same piece) are TN_ERR_FORMAT naming the
 * key. A piece longer than TN_DETOK_MAX - 8 bytes is TN_ERR_UNSUPPORTED (so
 * TN_DETOK_MAX always suffices). The result is immutable: any number of
 * threads may use it at once. */
tn_status tn_vocab_from_gguf(const tn_gguf *g, tn_vocab **out) TN_MUST_CHECK;
void tn_vocab_free(tn_vocab *v);

int32_t tn_vocab_n_tokens(const tn_vocab *v);
int32_t tn_vocab_bos(const tn_vocab *v);        /* -1 if none */
int32_t tn_vocab_eos(const tn_vocab *v);        /* -1 if none */
bool tn_vocab_add_bos(const tn_vocab *v);       /* tokenizer.ggml.add_bos_token, default per model type (true for SPM) */
bool tn_vocab_is_eog(const tn_vocab *v, int32_t id); /* end of generation (EOS, EOT, ...) */
int tn_vocab_token_type(const tn_vocab *v, int32_t id);

/* The raw piece of a token as stored in the vocabulary (NUL-terminated);
 * NULL for an id out of range. */
const char *tn_vocab_piece(const tn_vocab *v, int32_t id);

/* Builds a byte-level BPE vocabulary from a Hugging Face tokenizer.json
 * (model "BPE" with a ByteLevel pre-tokenizer or decoder). The
 * pre-tokenizer's regexes must be one of the known sets (tokenizer.ggml.pre
 * names); added_tokens become control (special) or user-defined tokens;
 * BOS/EOS and add_bos_token come from tokenizer_config.json next to the
 * file when it exists. Errors name the file and the JSON field. */
tn_status tn_vocab_from_hf_json(const char *path, tn_vocab **out) TN_MUST_CHECK;
/* Writes the same vocabulary as tokenizer.ggml.* keys (what llama.cpp's
 * converter writes), for `tern convert`. */
tn_status tn_vocab_hf_json_to_gguf(const char *path, tn_gguf_writer *w) TN_MUST_CHECK;

/* Builds a byte-level BPE vocabulary from a tiktoken rank file (one
 * "base64-token rank" per line, ranks 0..n-1 in order). Merges are derived
 * from the ranks as Hugging Face's converter does (every split of a token
 * into two tokens, by the token's rank). A file of 128,000 ranks is Llama
 * 3's: its 256 special tokens (128000 <|begin_of_text|> ... 128255) are
 * added as control tokens, the pre-tokenizer is "llama-bpe" and BOS is
 * added; any other file gets no special tokens and the "llama-bpe"
 * pre-tokenizer. */
tn_status tn_vocab_from_tiktoken(const char *path, tn_vocab **out) TN_MUST_CHECK;
tn_status tn_vocab_tiktoken_to_gguf(const char *path, tn_gguf_writer *w) TN_MUST_CHECK;

/* Tokenizes len bytes of text. add_bos prepends BOS (if the vocab has one;
 * WordPiece also appends its separator, as BERT does).
 * parse_special: recognize control token texts in the input (otherwise they
 * tokenize as plain text); user-defined tokens are recognized either way,
 * as llama.cpp and Hugging Face tokenizers do. Writes at most cap ids to out and
 * sets *n_out to the number the full result needs; returns TN_ERR_FULL if
 * cap was too small (call again with a larger buffer). Invalid UTF-8 is
 * handled like the reference (bytes fall back to <0xXX>), never an error. */
tn_status tn_tokenize(const tn_vocab *v, const char *text, size_t len, bool add_bos, bool parse_special,
                      int32_t *out, size_t cap, size_t *n_out) TN_MUST_CHECK;

/* The bytes a token stands for, as llama.cpp's token_to_piece prints it:
 * "▁" becomes a space, <0xXX> becomes the byte, control tokens give ""
 * (unless render_special). Writes at most cap bytes (no NUL); returns the
 * full length (which may exceed cap). Invalid ids give 0. */
size_t tn_token_to_piece(const tn_vocab *v, int32_t id, bool render_special, char *buf, size_t cap);

/* Streaming detokenizer: feed ids one by one, get text that never ends in
 * the middle of a UTF-8 sequence (incomplete bytes are held until the
 * sequence completes; invalid sequences are passed through as they are, like
 * the references). Caller-owned state; no allocation. */
/* tn_detok is defined in tern/tern.h (public). */

void tn_detok_init(tn_detok *d);
/* Appends the token's text to out (at most cap bytes; control tokens give
 * nothing, as tn_token_to_piece without render_special); returns bytes
 * written (TN_DETOK_MAX bytes of room always suffices for one token). */
size_t tn_detok_push(tn_detok *d, const tn_vocab *v, int32_t id, char *out, size_t cap);
/* Emits whatever is still held (end of stream). */
size_t tn_detok_flush(tn_detok *d, char *out, size_t cap);

#endif /* TERN_TOK_TOK_H */
