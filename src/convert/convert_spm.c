/*
 * convert_spm.c — a SentencePiece tokenizer.model (protobuf) as the
 * tokenizer.ggml.* keys of an SPM vocabulary ("llama"), as llama.cpp's
 * converter writes them.
 *
 * THE PROTOBUF, as far as it is read (sentencepiece_model.proto):
 *
 *   ModelProto      1: repeated SentencePiece pieces
 *                   2: TrainerSpec   40 unk_id (default 0), 41 bos_id (1),
 *                                    42 eos_id (2), 43 pad_id (-1)
 *                   3: NormalizerSpec 3 add_dummy_prefix (default true)
 *   SentencePiece   1: string piece  2: float score (fixed32)  3: enum type
 *                   (1 normal, 2 unknown, 3 control, 4 user-defined,
 *                   5 unused, 6 byte: the same numbers as GGUF's token types)
 *
 * Every other field is skipped by its wire type. Every varint, length and
 * fixed-width value is checked against the end of its enclosing message, so
 * a truncated or hostile file is an error naming the byte offset.
 */
#include "convert/convert_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PIECES (1 << 22)

typedef struct pb {
    const uint8_t *base;
    size_t at, end;
    const char *path;
} pb;

static tn_status pb_err(const pb *p, const char *what)
{
    return tn__err(TN_ERR_FORMAT, "convert: %s: not a SentencePiece model: %s at byte %zu", p->path, what, p->at);
}

static tn_status varint(pb *p, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (p->at >= p->end)
            return pb_err(p, "varint runs past the end of its message");
        uint8_t b = p->base[p->at++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return TN_OK;
    }
    return pb_err(p, "varint longer than 10 bytes");
}

/* Reads a field key; for wire type 2 also the length, checked, in *len. */
static tn_status field(pb *p, uint32_t *num, uint32_t *wt, uint64_t *len)
{
    uint64_t k;
    tn_status s = varint(p, &k);
    if (s != TN_OK)
        return s;
    *num = (uint32_t)(k >> 3);
    *wt = (uint32_t)(k & 7);
    *len = 0;
    if (*wt == 2) {
        if ((s = varint(p, len)) != TN_OK)
            return s;
        if (*len > p->end - p->at)
            return pb_err(p, "length-delimited field longer than its message");
    }
    return TN_OK;
}

static tn_status skip(pb *p, uint32_t wt, uint64_t len)
{
    uint64_t v;
    size_t n = wt == 1 ? 8 : wt == 5 ? 4 : wt == 2 ? (size_t)len : 0;
    if (wt == 0)
        return varint(p, &v);
    if (wt != 1 && wt != 2 && wt != 5)
        return pb_err(p, "unknown wire type");
    if (n > p->end - p->at)
        return pb_err(p, "field runs past the end of its message");
    p->at += n;
    return TN_OK;
}

typedef struct spm {
    char **piece;
    float *score;
    int32_t *type;
    size_t n, cap;
    int64_t unk, bos, eos, pad;
    bool dummy_prefix;
} spm;

static tn_status parse_piece(pb *p, spm *m)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 1024;
        if (cap > MAX_PIECES)
            return pb_err(p, "more than 4M pieces");
        char **np = realloc(m->piece, cap * sizeof *np);
        if (np)
            m->piece = np;
        float *ns = realloc(m->score, cap * sizeof *ns);
        if (ns)
            m->score = ns;
        int32_t *nt = realloc(m->type, cap * sizeof *nt);
        if (nt)
            m->type = nt;
        if (!np || !ns || !nt)
            return tn__err(TN_ERR_NOMEM, "convert: out of memory for %zu pieces", cap);
        m->cap = cap;
    }
    size_t i = m->n++;
    m->piece[i] = NULL;
    m->score[i] = 0.0f;
    m->type[i] = 1;
    while (p->at < p->end) {
        uint32_t num, wt;
        uint64_t len, v;
        tn_status s = field(p, &num, &wt, &len);
        if (s != TN_OK)
            return s;
        if (num == 1 && wt == 2) {
            free(m->piece[i]);
            if (!(m->piece[i] = strndup((const char *)p->base + p->at, (size_t)len)))
                return tn__err(TN_ERR_NOMEM, "convert: out of memory");
            if (strlen(m->piece[i]) != len)
                return pb_err(p, "piece contains a NUL byte");
            p->at += (size_t)len;
        } else if (num == 2 && wt == 5) {
            if (p->end - p->at < 4)
                return pb_err(p, "score runs past the end");
            memcpy(&m->score[i], p->base + p->at, 4);
            p->at += 4;
        } else if (num == 3 && wt == 0) {
            if ((s = varint(p, &v)) != TN_OK)
                return s;
            if (v < 1 || v > 6)
                return pb_err(p, "piece type outside 1..6");
            m->type[i] = (int32_t)v;
        } else if ((s = skip(p, wt, len)) != TN_OK) {
            return s;
        }
    }
    if (!m->piece[i])
        return pb_err(p, "piece without its string");
    return TN_OK;
}

/* Walks one sub-message, calling back for the varint fields asked for. */
static tn_status parse_spec(pb *p, spm *m, bool trainer)
{
    while (p->at < p->end) {
        uint32_t num, wt;
        uint64_t len, v;
        tn_status s = field(p, &num, &wt, &len);
        if (s != TN_OK)
            return s;
        if (wt == 0 && ((trainer && num >= 40 && num <= 43) || (!trainer && num == 3))) {
            if ((s = varint(p, &v)) != TN_OK)
                return s;
            int64_t x = (int64_t)(int32_t)(uint32_t)v;
            if (!trainer)
                m->dummy_prefix = v != 0;
            else if (num == 40)
                m->unk = x;
            else if (num == 41)
                m->bos = x;
            else if (num == 42)
                m->eos = x;
            else
                m->pad = x;
        } else if ((s = skip(p, wt, len)) != TN_OK) {
            return s;
        }
    }
    return TN_OK;
}

static tn_status parse(pb *p, spm *m)
{
    while (p->at < p->end) {
        uint32_t num, wt;
        uint64_t len;
        tn_status s = field(p, &num, &wt, &len);
        if (s != TN_OK)
            return s;
        if (wt == 2 && num >= 1 && num <= 3) {
            pb sub = {p->base, p->at, p->at + (size_t)len, p->path};
            s = num == 1 ? parse_piece(&sub, m) : parse_spec(&sub, m, num == 2);
            if (s != TN_OK)
                return s;
            p->at = sub.end;
        } else if ((s = skip(p, wt, len)) != TN_OK) {
            return s;
        }
    }
    if (m->n == 0)
        return pb_err(p, "no pieces");
    return TN_OK;
}

static tn_status set_id(tn_gguf_writer *w, const char *path, const char *key, int64_t id, size_t n)
{
    if (id < 0)
        return TN_OK; /* disabled in the trainer spec */
    if ((uint64_t)id >= n)
        return tn__err(TN_ERR_FORMAT, "convert: %s: %s %lld is not a piece id (%zu pieces)", path, key, (long long)id, n);
    return tn_gguf_set_u32(w, key, (uint32_t)id);
}

tn_status tn__cv_spm_to_gguf(const char *path, tn_gguf_writer *w)
{
    size_t len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return tn__err(TN_ERR_IO, "convert: cannot open %s: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 1 << 20;
            uint8_t *nb = cap <= (1u << 30) ? realloc(buf, cap) : NULL;
            if (!nb) {
                free(buf);
                fclose(f);
                return tn__err(TN_ERR_NOMEM, "convert: %s: too large or out of memory", path);
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    fclose(f);
    spm m = {.unk = 0, .bos = 1, .eos = 2, .pad = -1, .dummy_prefix = true};
    pb p = {buf, 0, len, path};
    tn_status s = parse(&p, &m);
    (void)(s == TN_OK &&
        ((s = tn_gguf_set_str(w, "tokenizer.ggml.model", "llama")) != TN_OK ||
         (s = tn_gguf_set_str(w, "tokenizer.ggml.pre", "default")) != TN_OK ||
         (s = tn_gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)m.piece, m.n)) != TN_OK ||
         (s = tn_gguf_set_arr(w, "tokenizer.ggml.scores", TN_GGUF_FLOAT32, m.score, m.n)) != TN_OK ||
         (s = tn_gguf_set_arr(w, "tokenizer.ggml.token_type", TN_GGUF_INT32, m.type, m.n)) != TN_OK ||
         (s = set_id(w, path, "tokenizer.ggml.bos_token_id", m.bos, m.n)) != TN_OK ||
         (s = set_id(w, path, "tokenizer.ggml.eos_token_id", m.eos, m.n)) != TN_OK ||
         (s = set_id(w, path, "tokenizer.ggml.unknown_token_id", m.unk, m.n)) != TN_OK ||
         (s = set_id(w, path, "tokenizer.ggml.padding_token_id", m.pad, m.n)) != TN_OK ||
         (s = tn_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", true)) != TN_OK ||
         (s = tn_gguf_set_bool(w, "tokenizer.ggml.add_eos_token", false)) != TN_OK ||
         (s = tn_gguf_set_bool(w, "tokenizer.ggml.add_space_prefix", m.dummy_prefix)) != TN_OK));
    for (size_t i = 0; i < m.n; i++)
        free(m.piece[i]);
    free(m.piece);
    free(m.score);
    free(m.type);
    free(buf);
    return s;
}
