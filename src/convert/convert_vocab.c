/*
 * convert_vocab.c — the tokenizer of a checkpoint as tokenizer.ggml.* keys.
 *
 * Key idea: tok/ already turns a tokenizer.json (byte-level BPE) or a
 * tiktoken rank file into the keys llama.cpp's converter writes; here they
 * are written to a scratch GGUF, read back, and copied into the output,
 * with the token list padded by "[PAD<id>]" tokens (type UNUSED) when the
 * embedding has more rows than the tokenizer has tokens (Qwen pads its
 * 151,665 tokens to 151,936 rows), as llama.cpp does. The chat template of
 * tokenizer_config.json becomes tokenizer.chat_template.
 *
 * Sources, in order: a SentencePiece tokenizer.model (protobuf,
 * convert_spm.c); tokenizer.json; a tiktoken tokenizer.model (tok/).
 */
#include "convert/convert_int.h"
#include "tok/tok.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOKEN_TYPE_UNUSED 5

static bool exists(const char *p) { return access(p, R_OK) == 0; }

/* A tiktoken file starts with "<base64> <rank>\n"; a protobuf does not. */
static bool is_tiktoken(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    char line[512];
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!ok)
        return false;
    size_t i = 0;
    while (line[i] && (isalnum((unsigned char)line[i]) || line[i] == '+' || line[i] == '/' || line[i] == '='))
        i++;
    if (i == 0 || line[i] != ' ')
        return false;
    i++;
    size_t d = i;
    while (line[i] >= '0' && line[i] <= '9')
        i++;
    return i > d && (line[i] == '\n' || line[i] == '\r' || line[i] == '\0');
}

/* Copies the scratch file's keys into w, padding the token arrays. */
static tn_status copy_padded(tn__cv *c, const tn_gguf *v, const char *src, int64_t n_vocab)
{
    tn_gguf_type et;
    uint64_t n = 0;
    const void *data;
    tn_status s = tn_gguf_get_arr(v, "tokenizer.ggml.tokens", &et, &n, &data);
    if (s != TN_OK)
        return tn__err_prefix(s, "convert: %s", src);
    if (n > (uint64_t)n_vocab)
        return tn__err(TN_ERR_FORMAT,
                       "convert: %s has %llu tokens but config.json's vocab_size (rows of embed_tokens) is %lld", src,
                       (unsigned long long)n, (long long)n_vocab);
    for (int64_t i = 0; i < tn_gguf_n_kv(v); i++) {
        const char *key = tn_gguf_kv_key(v, i);
        bool tokens = !strcmp(key, "tokenizer.ggml.tokens"), types = !strcmp(key, "tokenizer.ggml.token_type");
        bool scores = !strcmp(key, "tokenizer.ggml.scores");
        if (n == (uint64_t)n_vocab || !(tokens || types || scores)) {
            if ((s = tn_gguf_set_from(c->w, v, i)) != TN_OK)
                return s;
            continue;
        }
        if (tokens) {
            char **p = calloc((size_t)n_vocab, sizeof *p);
            s = p ? TN_OK : tn__err(TN_ERR_NOMEM, "convert: out of memory");
            for (int64_t j = 0; j < n_vocab && s == TN_OK; j++) {
                const char *str;
                size_t len = 0;
                char pad[32];
                if ((uint64_t)j < n) {
                    s = tn_gguf_arr_str(v, i, (uint64_t)j, &str, &len);
                } else {
                    snprintf(pad, sizeof pad, "[PAD%lld]", (long long)j);
                    str = pad;
                    len = strlen(pad);
                }
                if (s == TN_OK && !(p[j] = strndup(str, len)))
                    s = tn__err(TN_ERR_NOMEM, "convert: out of memory");
            }
            if (s == TN_OK)
                s = tn_gguf_set_arr_str(c->w, key, (const char *const *)p, (uint64_t)n_vocab);
            for (int64_t j = 0; p && j < n_vocab; j++)
                free(p[j]);
            free(p);
        } else {
            uint64_t m;
            if ((s = tn_gguf_get_arr(v, key, &et, &m, &data)) != TN_OK)
                return s;
            if (m != n || (et != TN_GGUF_INT32 && et != TN_GGUF_FLOAT32))
                return tn__err(TN_ERR_FORMAT, "convert: %s: %s has %llu entries for %llu tokens", src, key,
                               (unsigned long long)m, (unsigned long long)n);
            uint32_t *a = calloc((size_t)n_vocab, 4);
            if (!a)
                return tn__err(TN_ERR_NOMEM, "convert: out of memory");
            memcpy(a, data, (size_t)n * 4);
            for (int64_t j = (int64_t)n; j < n_vocab; j++) {
                if (types) {
                    int32_t t = TOKEN_TYPE_UNUSED;
                    memcpy(&a[j], &t, 4);
                } else {
                    float f = -10000.0f;
                    memcpy(&a[j], &f, 4);
                }
            }
            s = tn_gguf_set_arr(c->w, key, et, a, (uint64_t)n_vocab);
            free(a);
        }
        if (s != TN_OK)
            return s;
    }
    return TN_OK;
}

/* tokenizer_config.json's chat_template (a string) as tokenizer.chat_template. */
static tn_status chat_template(tn__cv *c)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", c->dir);
    if (!exists(path))
        return TN_OK;
    tn_hf_config *tc;
    tn_status s = tn_hf_config_load(path, &tc);
    if (s != TN_OK)
        return s;
    size_t cap = 1 << 20;
    char *buf = malloc(cap);
    if (!buf)
        s = tn__err(TN_ERR_NOMEM, "convert: out of memory");
    if (buf && tn_hf_config_has(tc, "chat_template")) {
        s = tn_hf_config_str(tc, "chat_template", false, buf, cap);
        if (s == TN_OK)
            s = tn_gguf_set_str(c->w, "tokenizer.chat_template", buf);
        else if (strstr(tn_last_error(), "is not a string"))
            s = TN_OK; /* a list of named templates: not carried over */
    }
    free(buf);
    tn_hf_config_free(tc);
    return s;
}

tn_status tn__cv_vocab(tn__cv *c, int64_t n_vocab)
{
    char tj[4096], tm[4096];
    snprintf(tj, sizeof tj, "%s/tokenizer.json", c->dir);
    snprintf(tm, sizeof tm, "%s/tokenizer.model", c->dir);
    const char *src;
    tn_status (*conv)(const char *, tn_gguf_writer *);
    /* A SentencePiece model wins over tokenizer.json: Llama 2 and Mistral
     * ship both, and their tokenizer.json is not byte-level BPE. */
    if (exists(tm) && !is_tiktoken(tm)) {
        src = tm;
        conv = tn__cv_spm_to_gguf;
    } else if (exists(tj)) {
        src = tj;
        conv = tn_vocab_hf_json_to_gguf;
    } else if (exists(tm)) {
        src = tm;
        conv = tn_vocab_tiktoken_to_gguf;
    } else {
        return tn__err(TN_ERR_IO, "convert: %s has neither tokenizer.json nor tokenizer.model", c->dir);
    }

    char scratch[] = "/tmp/tern-convert-vocab-XXXXXX";
    int fd = mkstemp(scratch);
    if (fd < 0)
        return tn__err(TN_ERR_IO, "convert: cannot create a scratch file in /tmp");
    close(fd);
    tn_gguf_writer *w = NULL;
    tn_gguf *v = NULL;
    tn_status s = tn_gguf_writer_new(&w);
    if (s == TN_OK && (s = conv(src, w)) != TN_OK)
        s = tn__err_prefix(s, "convert: tokenizer");
    if (s == TN_OK)
        s = tn_gguf_writer_write(w, scratch);
    if (s == TN_OK)
        s = tn_gguf_open(scratch, &v);
    if (s == TN_OK)
        s = copy_padded(c, v, src, n_vocab);
    if (s == TN_OK)
        s = chat_template(c);
    tn_gguf_free(v);
    tn_gguf_writer_free(w);
    unlink(scratch);
    return s;
}
