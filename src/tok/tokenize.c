/*
 * tokenize.c — tn_tokenize: special tokens, BOS, and the family encoder.
 *
 * Key idea: before any family-specific encoding, the input is cut into
 * fragments: runs of plain text and special tokens recognized by their
 * exact text. Each plain fragment is then encoded on its own by the
 * family's encoder (SPM with the leading-space rule applied after every
 * special token; byte-level BPE; WordPiece), so a special token's text
 * never merges with its neighbours.
 */
#include "tok/tok_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <utf8proc.h>

/* A fragment of the input: a special token, or the bytes text[off, off+len). */
typedef struct frag {
    int32_t id; /* -1: plain text */
    size_t off, len;
} frag;

typedef struct frag_list {
    frag *a;
    size_t n, cap;
} frag_list;

static bool frag_add(frag_list *l, int32_t id, size_t off, size_t len)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        frag *a = realloc(l->a, cap * sizeof *a);
        if (!a)
            return false;
        l->a = a;
        l->cap = cap;
    }
    l->a[l->n++] = (frag){id, off, len};
    return true;
}

static bool is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/*
 * SPLITTING OUT SPECIAL TOKENS
 *
 * HOW IT WORKS
 *   The special tokens (control, user-defined, unknown) are taken longest
 *   text first. For each, every plain fragment is searched left to right for
 *   non-overlapping occurrences; each occurrence becomes a token fragment
 *   and the text around it stays plain. Shorter tokens then only see what
 *   longer ones left. This is llama.cpp's order, and it differs from a
 *   single leftmost-longest scan when texts overlap (with "ab" and "bcd",
 *   "abcd" gives "a" + <bcd>).
 *
 * EDGE CASES
 *   - Without parse_special, control and unknown tokens are not searched;
 *     user-defined ones still are (as in llama.cpp and Hugging Face
 *     tokenizers, where added non-special tokens are always matched).
 *   - A token with the lstrip flag removes white space just before it,
 *     rstrip just after it (llama.cpp sets rstrip for Phi-3's specials).
 *
 * LIMITATIONS
 *   O(number of special tokens x text length) memmem work; a token list is
 *   rebuilt only when its token occurs.
 */
static tn_status split_special(const tn_vocab *v, const char *text, size_t len, bool parse_special,
                               frag_list *cur, frag_list *tmp)
{
    if (!frag_add(cur, -1, 0, len))
        goto nomem;
    for (int32_t k = 0; k < v->n_special; k++) {
        int32_t id = v->special[k];
        int t = v->types[id];
        if (!parse_special && (t == TN_TOKEN_CONTROL || t == TN_TOKEN_UNKNOWN))
            continue;
        const char *p = v->pool + v->off[id];
        size_t pl = v->len[id];
        bool found = false;
        for (size_t i = 0; i < cur->n && !found; i++)
            found = cur->a[i].id < 0 && memmem(text + cur->a[i].off, cur->a[i].len, p, pl) != NULL;
        if (!found)
            continue;
        tmp->n = 0;
        for (size_t i = 0; i < cur->n; i++) {
            frag f = cur->a[i];
            if (f.id >= 0) {
                if (!frag_add(tmp, f.id, 0, 0))
                    goto nomem;
                continue;
            }
            size_t off = f.off, end = f.off + f.len;
            while (off < end) {
                const char *m = memmem(text + off, end - off, p, pl);
                if (!m)
                    break;
                size_t at = (size_t)(m - text), left_end = at;
                if (v->flags[id] & TN__TF_LSTRIP)
                    while (left_end > off && is_space(text[left_end - 1]))
                        left_end--;
                if (left_end > off && !frag_add(tmp, -1, off, left_end - off))
                    goto nomem;
                if (!frag_add(tmp, id, 0, 0))
                    goto nomem;
                off = at + pl;
                if (v->flags[id] & TN__TF_RSTRIP)
                    while (off < end && is_space(text[off]))
                        off++;
            }
            if (off < end && !frag_add(tmp, -1, off, end - off))
                goto nomem;
        }
        frag_list swap = *cur;
        *cur = *tmp;
        *tmp = swap;
    }
    return TN_OK;
nomem:
    return tn__err(TN_ERR_NOMEM, "tok: out of memory splitting special tokens (%zu fragments)", cur->n + tmp->n);
}

/* The length of the character at p (1 for a byte that does not start a
 * valid 1..3-byte sequence) and in *safe whether NFC leaves it alone
 * whatever surrounds it: it is in a range where no character has a
 * non-zero combining class, changes under NFC, or can be the second of a
 * canonical composition: below U+0300 (ASCII, Latin-1, most Latin),
 * general punctuation U+2010..U+2027 and U+2030..U+205E, CJK symbols
 * U+3000..U+3029, CJK ideographs U+4E00..U+9FFF, fullwidth forms
 * U+FF01..U+FF5E. test_tok_hf_json checks the ranges against utf8proc. */
static inline size_t nfc_char(const unsigned char *p, const unsigned char *end, bool *safe)
{
    unsigned c = *p;
    uint32_t cp;
    size_t n;
    if (c < 0x80) {
        *safe = true;
        return 1;
    }
    if ((c & 0xE0) == 0xC0 && end - p >= 2 && (p[1] & 0xC0) == 0x80) {
        cp = (c & 0x1Fu) << 6 | (p[1] & 0x3Fu);
        n = 2;
    } else if ((c & 0xF0) == 0xE0 && end - p >= 3 && (p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80) {
        cp = (c & 0x0Fu) << 12 | (p[1] & 0x3Fu) << 6 | (p[2] & 0x3Fu);
        n = 3;
    } else {
        *safe = false;
        return 1;
    }
    *safe = cp < 0x300 || (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3000 && cp <= 0x3029) ||
            (cp >= 0xFF01 && cp <= 0xFF5E) || (cp >= 0x2010 && cp <= 0x2027) || (cp >= 0x2030 && cp <= 0x205E);
    return n;
}

/* Whether every character of text is safe (above): NFC leaves it as is. */
bool tn__tok_already_nfc(const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text, *end = p + len;
    while (p < end) {
        bool safe;
        p += nfc_char(p, end, &safe);
        if (!safe)
            return false;
    }
    return true;
}

static bool buf_add(char **buf, size_t *n, size_t *cap, const void *src, size_t k)
{
    if (k == 0)
        return true;
    if (*n + k > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *n + k)
            c *= 2;
        char *b = realloc(*buf, c);
        if (!b)
            return false;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *n, src, k);
    *n += k;
    return true;
}

/*
 * A BPE fragment, NFC-normalized first when the vocabulary says so (as
 * Hugging Face's NFC normalizer does; special tokens are split out before,
 * so they are never normalized).
 *
 * HOW IT WORKS
 *   Most text is made of characters NFC never touches (nfc_char's safe
 *   ranges). Only the stretches that are not are normalized (utf8proc),
 *   each with the character before it (a base a combining mark may
 *   compose with) and up to the next safe character, which nothing after
 *   it can compose with or reorder across; the rest is copied. So English
 *   and Chinese text cost a scan, not a normalization.
 *
 * EDGE CASES
 *   A stretch that is not valid UTF-8 is copied unnormalized (utf8proc
 *   refuses it; the pre-tokenizer then replaces the bad bytes).
 */
static tn_status encode_bpe(const tn_vocab *v, tn__bpe_scratch *sc, const char *text, size_t len, tn__tok_out *o)
{
    if (!v->nfc || tn__tok_already_nfc(text, len))
        return tn__bpe_encode(v, sc, text, len, o);
    const unsigned char *p = (const unsigned char *)text, *end = p + len;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    const unsigned char *done = p, *prev = p; /* copied up to done; prev: start of the last character */
    while (p < end) {
        bool safe;
        size_t k = nfc_char(p, end, &safe);
        if (safe) {
            prev = p;
            p += k;
            continue;
        }
        /* an unsafe stretch: from the character before it to the next safe one */
        const unsigned char *s0 = prev < p ? prev : p, *q = p + k;
        while (q < end) {
            size_t kq = nfc_char(q, end, &safe);
            if (safe)
                break;
            q += kq;
        }
        if (!buf_add(&buf, &n, &cap, done, (size_t)(s0 - done)))
            goto nomem;
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t m = utf8proc_map(s0, (utf8proc_ssize_t)(q - s0), &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (m == UTF8PROC_ERROR_NOMEM)
            goto nomem;
        bool ok = m >= 0 ? buf_add(&buf, &n, &cap, nfc, (size_t)m) : buf_add(&buf, &n, &cap, s0, (size_t)(q - s0));
        free(nfc);
        if (!ok)
            goto nomem;
        done = prev = p = q;
    }
    if (!buf_add(&buf, &n, &cap, done, (size_t)(end - done)))
        goto nomem;
    tn_status st = tn__bpe_encode(v, sc, buf, n, o);
    free(buf);
    return st;
nomem:
    free(buf);
    return tn__err(TN_ERR_NOMEM, "tok: out of memory normalizing %zu bytes", len);
}

/* Tokenizes text; see tok.h. Allocates scratch proportional to len for the
 * call only. Safe to call from any number of threads on one vocabulary. */
tn_status tn_tokenize(const tn_vocab *v, const char *text, size_t len, bool add_bos, bool parse_special,
                      int32_t *out, size_t cap, size_t *n_out)
{
    if (!v || !n_out || (!text && len > 0) || (!out && cap > 0))
        return tn__err(TN_ERR_INVALID, "tok: tn_tokenize: NULL vocabulary, text, output or count");
    *n_out = 0;

    tn__tok_out o = {out, cap, 0};
    frag_list frags = {0}, tmp = {0};
    tn__spm_scratch sc = {0};
    tn__bpe_scratch bsc = {0};
    tn_status st = TN_OK;

    if (add_bos && v->bos >= 0)
        tn__tok_push(&o, v->bos);
    if (len > 0) {
        st = split_special(v, text, len, parse_special, &frags, &tmp);
        /* SPM: the leading-space rule applies at the start of the text and
         * after every special token. */
        bool prev_special = true;
        for (size_t i = 0; st == TN_OK && i < frags.n; i++) {
            const frag *f = &frags.a[i];
            if (f->id >= 0) {
                tn__tok_push(&o, f->id);
                prev_special = true;
                continue;
            }
            switch (v->kind) {
            case TN__VOCAB_SPM:
                st = tn__spm_encode(v, &sc, text + f->off, f->len, v->add_space_prefix && prev_special, &o);
                break;
            case TN__VOCAB_BPE: st = encode_bpe(v, &bsc, text + f->off, f->len, &o); break;
            case TN__VOCAB_WPM: st = tn__wpm_encode(v, &bsc, text + f->off, f->len, &o); break;
            }
            prev_special = false;
        }
    }
    /* WordPiece (BERT): a sequence is [CLS] ... [SEP] */
    if (st == TN_OK && add_bos && v->kind == TN__VOCAB_WPM && v->bos >= 0 && v->sep >= 0)
        tn__tok_push(&o, v->sep);
    free(frags.a);
    free(tmp.a);
    tn__spm_scratch_free(&sc);
    tn__bpe_scratch_free(&bsc);
    if (st != TN_OK)
        return st;
    *n_out = o.n;
    if (o.n > cap)
        return tn__err(TN_ERR_FULL, "tok: the text needs %zu tokens but the buffer holds %zu", o.n, cap);
    return TN_OK;
}
