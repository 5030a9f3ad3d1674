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

#include <stdlib.h>

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
            case TN__VOCAB_BPE: st = tn__bpe_encode(v, &bsc, text + f->off, f->len, &o); break;
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
