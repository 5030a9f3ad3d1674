/*
 * wordpiece.c — the WordPiece encoder ("bert" vocabularies), as llama.cpp
 * runs it.
 *
 * Key idea: GGUF WordPiece vocabularies spell a word-initial piece with a
 * leading "▁" and a continuation piece bare (the converter turned BERT's
 * "##" convention around), so after BERT's pre-processing each word becomes
 * "▁word" and is covered greedily by the longest piece at each position.
 * A word that cannot be covered completely becomes one unknown token.
 *
 * Pre-processing (llama.cpp's, which matches BERT's BasicTokenizer on the
 * test vectors): each code point is replaced by the first code point of
 * its canonical decomposition (so accents fall away), white space ends a
 * word, NUL, U+FFFD and control characters are dropped, and punctuation,
 * ASCII symbols and CJK ideographs become words of their own; everything
 * is lower-cased. Unicode data comes from utf8proc.
 */
#include "tok/tok_int.h"

#include <stdlib.h>
#include <utf8proc.h>

static bool is_ws(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* The CJK ideograph blocks BERT isolates (with Hugging Face's 0x2B920
 * bound, which llama.cpp copies). */
static bool is_cjk(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* Decodes one code point the way llama.cpp does (lead byte decides the
 * length; a malformed sequence is U+FFFD for one byte). */
static uint32_t next_cpt(const unsigned char *s, size_t n, size_t *i)
{
    unsigned c = s[*i];
    size_t k = c < 0x80 ? 1 : c < 0xC0 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF8 ? 4 : 0;
    bool ok = k > 0 && *i + k <= n;
    for (size_t j = 1; ok && j < k; j++)
        ok = (s[*i + j] & 0xC0) == 0x80;
    if (!ok) {
        (*i)++;
        return 0xFFFD;
    }
    uint32_t cp = k == 1 ? c : c & (0x7Fu >> k);
    for (size_t j = 1; j < k; j++)
        cp = cp << 6 | (s[*i + j] & 0x3F);
    *i += k;
    return cp;
}

static bool reserve(tn__bpe_scratch *sc, size_t need)
{
    if (need <= sc->word_cap)
        return true;
    size_t cap = sc->word_cap ? sc->word_cap : 256;
    while (cap < need)
        cap *= 2;
    char *w = realloc(sc->word, cap);
    if (!w)
        return false;
    sc->word = w;
    sc->word_cap = cap;
    return true;
}

static bool reserve_spans(tn__bpe_scratch *sc, size_t need)
{
    if (need <= sc->spans_cap[0])
        return true;
    size_t cap = sc->spans_cap[0] ? sc->spans_cap[0] : 64;
    while (cap < need)
        cap *= 2;
    tn__span *a = realloc(sc->spans[0], cap * sizeof *a);
    if (!a)
        return false;
    sc->spans[0] = a;
    sc->spans_cap[0] = cap;
    return true;
}

/*
 * THE WORD BUFFER
 *
 * Words are written one after another into sc->word, each as "▁" and its
 * lower-cased characters, and listed in sc->spans[0]. A code point takes at
 * most 4 bytes and a word 3 more, so 7 bytes per input byte always suffice.
 */
tn_status tn__wpm_encode(const tn_vocab *v, tn__bpe_scratch *sc, const char *text, size_t len, tn__tok_out *out)
{
    if (len > (size_t)INT32_MAX / 8)
        return tn__err(TN_ERR_RANGE, "tok: a text fragment of %zu bytes is over the 256 MB limit", len);
    if (!reserve(sc, 7 * len + 8) || !reserve_spans(sc, len + 1))
        return tn__err(TN_ERR_NOMEM, "tok: out of memory for %zu bytes of text", len);
    const unsigned char *s = (const unsigned char *)text;
    char *w = sc->word;
    tn__span *sp = sc->spans[0];
    size_t nw = 0, at = 0;
    bool open = false; /* a word is being written at sp[nw] */

#define CLOSE()                                    \
    do {                                           \
        if (open) {                                \
            sp[nw].len = (uint32_t)(at - sp[nw].off); \
            nw++;                                  \
            open = false;                          \
        }                                          \
    } while (0)
#define OPEN()                                     \
    do {                                           \
        if (!open) {                               \
            sp[nw].off = (uint32_t)at;             \
            memcpy(w + at, "\xe2\x96\x81", 3);     \
            at += 3;                               \
            open = true;                           \
        }                                          \
    } while (0)

    for (size_t i = 0; i < len;) {
        uint32_t c = next_cpt(s, len, &i);
        utf8proc_int32_t d[8];
        int last = 0;
        if (c <= 0x10FFFF && utf8proc_decompose_char((utf8proc_int32_t)c, d, 8, UTF8PROC_DECOMPOSE, &last) > 0)
            c = (uint32_t)d[0];
        if (is_ws(c)) {
            CLOSE();
            continue;
        }
        int cat = c <= 0x10FFFF ? utf8proc_category((utf8proc_int32_t)c) : UTF8PROC_CATEGORY_CN;
        if (c == 0 || c == 0xFFFD || cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
            cat == UTF8PROC_CATEGORY_CO || cat == UTF8PROC_CATEGORY_CS)
            continue;
        bool punct = cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
        bool sym = cat >= UTF8PROC_CATEGORY_SM && cat <= UTF8PROC_CATEGORY_SO;
        bool alone = punct || (c < 0x7F && sym) || is_cjk(c);
        if (alone)
            CLOSE();
        OPEN();
        uint32_t lc = (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
        at += (size_t)utf8proc_encode_char((utf8proc_int32_t)lc, (utf8proc_uint8_t *)w + at);
        if (alone)
            CLOSE();
    }
    CLOSE();
#undef OPEN
#undef CLOSE

    /* greedy longest match, all or nothing per word */
    for (size_t k = 0; k < nw; k++) {
        const char *word = w + sp[k].off;
        size_t n = sp[k].len, mark = out->n;
        bool ok = true;
        for (size_t i = 0; i < n && ok;) {
            size_t j = TN_MIN(n, i + v->max_len);
            int32_t id = -1;
            for (; j > i; j--)
                if ((id = tn__vocab_find(v, word + i, j - i)) >= 0)
                    break;
            if (id < 0) {
                ok = false;
                break;
            }
            tn__tok_push(out, id);
            i = j;
        }
        if (!ok)
            out->n = mark; /* the ids written past mark are simply overwritten */
        if (out->n == mark && v->unk >= 0)
            tn__tok_push(out, v->unk);
    }
    return TN_OK;
}
