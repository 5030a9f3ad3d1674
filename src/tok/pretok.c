/*
 * pretok.c — byte-level BPE pre-tokenizers: the regexes that cut text into
 * words before merging, chosen by tokenizer.ggml.pre and run by PCRE2.
 *
 * Key idea: every pre-tokenizer is a list of regexes applied in turn, as
 * Hugging Face's Sequence of Split(..., "isolated") pre-tokenizers: each
 * regex cuts every word of the previous pass into its matches and the gaps
 * between them, and no word ever grows. The regexes are the ones the
 * models' tokenizer.json files carry (PCRE2 understands them as written:
 * \p{..} classes, (?i:...), look-ahead), compiled once per vocabulary with
 * PCRE2_UTF | PCRE2_UCP and JIT. The input is made valid UTF-8 once (the
 * way llama.cpp decodes it) so every match can pass PCRE2_NO_UTF_CHECK:
 * without it PCRE2 re-validates the whole subject on each call and the
 * split loop turns quadratic.
 */
#include "tok/tok_int.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>

/* ---------------------------------------------------------------------------
 * The table: llama.cpp's pre-tokenizer names, with the regexes of the
 * tokenizer.json each stands for.
 * ------------------------------------------------------------------------ */

/* GPT-2's own pattern (also ByteLevel's use_regex). */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define RE_LLAMA3                                                                                                \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|" \
    "\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                                                 \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|" \
    "\\s+(?!\\S)|\\s+"
#define RE_CJK "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf]+" /* [一-龥ࠀ-一가-퟿]+ */

typedef struct pre_desc {
    const char *names[12]; /* tokenizer.ggml.pre values (llama.cpp's), NULL-terminated */
    const char *re[7];     /* regexes, NULL-terminated */
    bool ignore_merges;
} pre_desc;

static const pre_desc PRES[] = {
    {{"default"}, {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}, false},
    {{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v1-en", "jina-v2-es", "jina-v2-de", "jina-v2-code",
      "roberta-bpe", "mpt", "olmo"},
     {RE_GPT2},
     false},
    {{"jais", "trillion"}, {RE_GPT2}, false},
    {{"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"}, {RE_LLAMA3}, true},
    {{"dbrx", "smaug-bpe", "chatglm-bpe"}, {RE_LLAMA3}, false},
    {{"qwen2", "stablelm2", "megrez", "hunyuan"}, {RE_QWEN2}, false},
    {{"deepseek-llm"},
     {"[\\r\\n]",
      "\\s?[A-Za-z\xc2\xb5\xc3\x80-\xc3\x96\xc3\x98-\xc3\xb6\xc3\xb8-\xc6\xba\xc6\xbc-\xc6\xbf\xc7\x84-\xca\x93\xca\x95-"
      "\xca\xaf\xcd\xb0-\xcd\xb3\xcd\xb6\xcd\xb7\xcd\xbb-\xcd\xbd\xcd\xbf\xce\x86\xce\x88-\xce\x8a\xce\x8c\xce\x8e-"
      "\xce\xa1\xce\xa3-\xcf\xb5\xcf\xb7-\xd2\x81\xd2\x8a-\xd4\xaf\xd4\xb1-\xd5\x96\xe1\x82\xa0-\xe1\x83\x85\xe1\x8e"
      "\xa0-\xe1\x8f\xb5\xe1\x8f\xb8-\xe1\x8f\xbd\xe1\xb2\x90-\xe1\xb2\xba\xe1\xb2\xbd-\xe1\xb2\xbf\xe1\xb4\x80-\xe1"
      "\xb4\xab\xe1\xb5\xab-\xe1\xb5\xb7\xe1\xb5\xb9-\xe1\xb6\x9a\xe1\xb8\x80-\xe1\xbc\x95\xe1\xbc\x98-\xe1\xbc\x9d"
      "\xe1\xbc\xa0-\xe1\xbd\x85\xe1\xbd\x88-\xe1\xbd\x8d\xe1\xbd\x90-\xe1\xbd\x97\xe1\xbd\x99\xe1\xbd\x9b\xe1\xbd"
      "\x9d\xe1\xbd\x9f-\xe1\xbd\xbd\xe1\xbe\x80-\xe1\xbe\xb4\xe1\xbe\xb6-\xe1\xbe\xbc\xe1\xbe\xbe\xe1\xbf\x82-\xe1"
      "\xbf\x84\xe1\xbf\x86-\xe1\xbf\x8c\xe1\xbf\x90-\xe1\xbf\x93\xe1\xbf\x96-\xe1\xbf\x9b\xe1\xbf\xa0-\xe1\xbf\xac"
      "\xe1\xbf\xb2-\xe1\xbf\xb4\xe1\xbf\xb6-\xe1\xbf\xbc\xe2\x84\x82\xe2\x84\x87\xe2\x84\x8a-\xe2\x84\x93\xe2\x84"
      "\x95\xe2\x84\x99-\xe2\x84\x9d\xe2\x84\xa4\xe2\x84\xa6\xe2\x84\xa8\xe2\x84\xaa-\xe2\x84\xad\xe2\x84\xaf-\xe2"
      "\x84\xb4\xe2\x84\xb9\xe2\x84\xbc-\xe2\x84\xbf\xe2\x85\x85-\xe2\x85\x89\xe2\x85\x8e\xe2\x86\x83\xe2\x86\x84"
      "\xe2\xb0\x80-\xe2\xb1\xbb\xe2\xb1\xbe-\xe2\xb3\xa4\xe2\xb3\xab-\xe2\xb3\xae\xe2\xb3\xb2\xe2\xb3\xb3\xea\x99"
      "\x80-\xea\x99\xad\xea\x9a\x80-\xea\x9a\x9b\xea\x9c\xa2-\xea\x9d\xaf\xea\x9d\xb1-\xea\x9e\x87\xea\x9e\x8b-\xea"
      "\x9e\x8e\xea\xad\xb0-\xea\xae\xbf\xef\xac\x80-\xef\xac\x86\xef\xac\x93-\xef\xac\x97\xef\xbc\xa1-\xef\xbc\xba"
      "\xef\xbd\x81-\xef\xbd\x9a\xf0\x90\x90\x80-\xf0\x90\x91\x8f\xf0\x90\x92\xb0-\xf0\x90\x93\x93\xf0\x90\x93\x98-"
      "\xf0\x90\x93\xbb\xf0\x90\xb2\x80-\xf0\x90\xb2\xb2\xf0\x90\xb3\x80-\xf0\x90\xb3\xb2\xf0\x91\xa2\xa0-\xf0\x91"
      "\xa3\x9f\xf0\x9e\xa4\x80-\xf0\x9e\xa5\x83]+",
      "\\s?[!-/:-~\xef\xbc\x81-\xef\xbc\x8f\xef\xbc\x9a-\xef\xbd\x9e\xe2\x80\x98-\xe2\x80\x9f\xe3\x80\x80-\xe3\x80"
      "\x82]+",
      "\\s+$", RE_CJK, "\\p{N}+"},
     false},
    {{"deepseek-coder"}, {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK, "\\p{N}"}, false},
    {{"deepseek-v3"},
     {"\\p{N}{1,3}", "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
      "?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     false},
    {{"falcon"}, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}, false},
    {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"}, {"\\p{N}", RE_GPT2}, false},
    {{"poro-chat", "bloom", "gpt3-finnish"},
     {" ?[^(\\s|.,!?\xe2\x80\xa6\xe3\x80\x82\xef\xbc\x8c\xe3\x80\x81\xe0\xa5\xa4\xdb\x94\xd8\x8c)]+"},
     false},
    {{"viking"},
     {" ?[^(\\s|.,!?\xe2\x80\xa6\xe3\x80\x82\xef\xbc\x8c\xe3\x80\x81\xe0\xa5\xa4\xdb\x94\xd8\x8c)]+", "\\p{N}"},
     false},
    {{"tekken"},
     {"[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?"
      "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*"
      "[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     true},
    {{"gpt-4o", "minimax-m2", "kimi-k2"},
     {"[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|"
      "'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|"
      "'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     false},
    {{"chameleon"},
     {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
      "[\\p{P}!-/:-@\\[-`{-~]", RE_GPT2},
     false},
};

#define MAX_RE 7

struct tn__pretok {
    int n;
    pcre2_code *code[MAX_RE];
    bool jit[MAX_RE];
};

static const pre_desc *find_pre(const char *name, size_t n)
{
    for (size_t i = 0; i < TN_ARRAY_LEN(PRES); i++)
        for (int k = 0; k < 12 && PRES[i].names[k]; k++)
            if (strlen(PRES[i].names[k]) == n && memcmp(PRES[i].names[k], name, n) == 0)
                return &PRES[i];
    return NULL;
}

/* Compiles the named pre-tokenizer; see tok_int.h. */
tn_status tn__pretok_new(const char *name, size_t name_len, tn__pretok **out, bool *ignore_merges)
{
    *out = NULL;
    if (!name || name_len == 0) {
        name = "default";
        name_len = 7;
    }
    const pre_desc *d = find_pre(name, name_len);
    if (!d)
        return tn__err(TN_ERR_UNSUPPORTED, "tok: unknown pre-tokenizer tokenizer.ggml.pre = \"%.*s\"",
                       (int)TN_MIN(name_len, 64), name);
    tn__pretok *p = calloc(1, sizeof *p);
    if (!p)
        return tn__err(TN_ERR_NOMEM, "tok: out of memory for a pre-tokenizer");
    for (int i = 0; i < MAX_RE && d->re[i]; i++) {
        int err;
        PCRE2_SIZE at;
        p->code[i] = pcre2_compile((PCRE2_SPTR)d->re[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &at, NULL);
        if (!p->code[i]) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(err, msg, sizeof msg);
            tn__pretok_free(p);
            return tn__err(TN_ERR_UNSUPPORTED, "tok: pre-tokenizer \"%.*s\": regex %d does not compile at offset %zu: %s",
                           (int)name_len, name, i, (size_t)at, (const char *)msg);
        }
        p->n = i + 1;
        /* JIT is an optimization: without it (no JIT support on this
         * platform) the interpreter gives the same matches. */
        p->jit[i] = pcre2_jit_compile(p->code[i], PCRE2_JIT_COMPLETE) == 0;
    }
    *ignore_merges = d->ignore_merges;
    *out = p;
    return TN_OK;
}

void tn__pretok_free(tn__pretok *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n; i++)
        pcre2_code_free(p->code[i]);
    free(p);
}

/* The pre-tokenizer name whose regex list is exactly re[0..n); see
 * tok_int.h. The first name of a row is returned. */
const char *tn__pretok_name_for(const char *const *re, int n)
{
    for (size_t i = 0; i < TN_ARRAY_LEN(PRES); i++) {
        int k = 0;
        while (k < MAX_RE && PRES[i].re[k] && k < n && strcmp(PRES[i].re[k], re[k]) == 0)
            k++;
        if (k == n && (k == MAX_RE || !PRES[i].re[k]))
            return PRES[i].names[0];
    }
    return NULL;
}

/* ---------------------------------------------------------------------------
 * UTF-8 clean-up
 * ------------------------------------------------------------------------ */

/* Length of the valid UTF-8 prefix of s[0..n) (strict: no overlongs, no
 * surrogates, nothing above U+10FFFF). ASCII runs go 8 bytes at a time. */
static size_t valid_prefix(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t lo = 0x80, hi = 0xBF; /* range of the second byte */
        if (c >= 0xC2 && c <= 0xDF)
            k = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            k = 3;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 4;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else
            return i;
        if (i + k > n || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t j = 2; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return i;
        i += k;
    }
    return n;
}

static size_t put_utf8(uint32_t c, char *o)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | c >> 6);
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | c >> 12);
        o[1] = (char)(0x80 | (c >> 6 & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | c >> 18);
    o[1] = (char)(0x80 | (c >> 12 & 0x3F));
    o[2] = (char)(0x80 | (c >> 6 & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/*
 * INVALID UTF-8, AS LLAMA.CPP DECODES IT
 *
 * llama.cpp decodes by the lead byte alone: 0xxxxxxx is one byte; 110xxxxx,
 * 1110xxxx and 11110xxx take 1, 2 or 3 following bytes if they are all
 * 10xxxxxx (no check for overlong forms or surrogates); anything else (a
 * stray continuation byte, 11111xxx, a truncated sequence) becomes U+FFFD
 * and decoding resumes at the next byte. The code points are then written
 * back as UTF-8. We do the same, so an overlong "C0 80" becomes the byte 00;
 * a surrogate or a value above U+10FFFF, which PCRE2 cannot take (and
 * llama.cpp cannot write back), becomes U+FFFD as well.
 */
static size_t clean_utf8(const unsigned char *s, size_t n, char *o)
{
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 1 : c < 0xC0 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF8 ? 4 : 0;
        bool ok = k > 0 && i + k <= n;
        for (size_t j = 1; ok && j < k; j++)
            ok = (s[i + j] & 0xC0) == 0x80;
        if (!ok) {
            w += put_utf8(0xFFFD, o + w);
            i++;
            continue;
        }
        uint32_t cp = k == 1 ? c : c & (0x7Fu >> k);
        for (size_t j = 1; j < k; j++)
            cp = cp << 6 | (s[i + j] & 0x3F);
        if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            cp = 0xFFFD;
        w += put_utf8(cp, o + w);
        i += k;
    }
    return w;
}

/* ---------------------------------------------------------------------------
 * Splitting
 * ------------------------------------------------------------------------ */

static bool spans_reserve(tn__bpe_scratch *sc, int which, size_t n)
{
    if (n <= sc->spans_cap[which])
        return true;
    size_t cap = sc->spans_cap[which] ? sc->spans_cap[which] : 256;
    while (cap < n)
        cap *= 2;
    tn__span *a = realloc(sc->spans[which], cap * sizeof *a);
    if (!a)
        return false;
    sc->spans[which] = a;
    sc->spans_cap[which] = cap;
    return true;
}

static inline bool span_add(tn__bpe_scratch *sc, int which, size_t *n, size_t off, size_t len)
{
    if (*n == sc->spans_cap[which] && !spans_reserve(sc, which, *n + 1))
        return false;
    sc->spans[which][(*n)++] = (tn__span){(uint32_t)off, (uint32_t)len};
    return true;
}

/* Length of the UTF-8 character starting with byte c (valid text). */
static inline size_t char_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

/* Cuts text into words; see tok_int.h. */
tn_status tn__pretok_split(const tn__pretok *p, tn__bpe_scratch *sc, const char *text, size_t len,
                           const char **clean, const tn__span **spans, size_t *n_spans)
{
    *n_spans = 0;
    if (len > (size_t)INT32_MAX / 3)
        return tn__err(TN_ERR_RANGE, "tok: a text fragment of %zu bytes is over the 700 MB limit", len);
    const unsigned char *u = (const unsigned char *)text;
    size_t good = valid_prefix(u, len);
    const char *t = text;
    size_t tlen = len;
    if (good < len) {
        size_t need = good + 3 * (len - good);
        if (need > sc->clean_cap) {
            char *c = realloc(sc->clean, need);
            if (!c)
                return tn__err(TN_ERR_NOMEM, "tok: out of memory cleaning %zu bytes of text", len);
            sc->clean = c;
            sc->clean_cap = need;
        }
        memcpy(sc->clean, text, good);
        tlen = good + clean_utf8(u + good, len - good, sc->clean + good);
        t = sc->clean;
    }
    *clean = t;

    if (!sc->match_data && !(sc->match_data = pcre2_match_data_create(4, NULL)))
        return tn__err(TN_ERR_NOMEM, "tok: out of memory for regex match data");
    pcre2_match_data *md = sc->match_data;

    int cur = 0;
    size_t n = 0;
    if (!span_add(sc, cur, &n, 0, tlen))
        goto nomem;
    for (int r = 0; r < p->n; r++) {
        int nxt = cur ^ 1;
        size_t m = 0;
        for (size_t w = 0; w < n; w++) {
            tn__span s = sc->spans[cur][w];
            PCRE2_SPTR subj = (PCRE2_SPTR)(t + s.off);
            size_t pos = 0, gap = 0; /* gap: start of the text not yet emitted */
            while (pos < s.len) {
                int rc = p->jit[r] ? pcre2_jit_match(p->code[r], subj, s.len, pos, PCRE2_NO_UTF_CHECK, md, sc->match_ctx)
                                   : pcre2_match(p->code[r], subj, s.len, pos, PCRE2_NO_UTF_CHECK, md, sc->match_ctx);
                if (rc == PCRE2_ERROR_NOMATCH)
                    break;
                if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !sc->jit_stack) {
                    /* the default 32 KiB JIT stack was too small (a pathological
                     * input): retry with a stack of up to 8 MiB; a call that
                     * never needs it never pays for it */
                    sc->match_ctx = pcre2_match_context_create(NULL);
                    sc->jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
                    if (!sc->match_ctx || !sc->jit_stack)
                        return tn__err(TN_ERR_NOMEM, "tok: out of memory for a regex stack");
                    pcre2_jit_stack_assign(sc->match_ctx, NULL, sc->jit_stack);
                    continue;
                }
                if (rc < 0) {
                    PCRE2_UCHAR msg[160];
                    pcre2_get_error_message(rc, msg, sizeof msg);
                    return tn__err(TN_ERR_UNSUPPORTED, "tok: pre-tokenizer regex %d failed at byte %zu: %s", r,
                                   (size_t)s.off + pos, (const char *)msg);
                }
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
                size_t ms = ov[0], me = ov[1];
                if (me == ms) { /* an empty match cuts nothing: step over one character */
                    pos = ms + char_len(subj[ms]);
                    continue;
                }
                if (ms > gap && !span_add(sc, nxt, &m, s.off + gap, ms - gap))
                    goto nomem;
                if (!span_add(sc, nxt, &m, s.off + ms, me - ms))
                    goto nomem;
                pos = gap = me;
            }
            if (gap < s.len && !span_add(sc, nxt, &m, s.off + gap, s.len - gap))
                goto nomem;
        }
        cur = nxt;
        n = m;
    }
    *spans = sc->spans[cur];
    *n_spans = n;
    return TN_OK;
nomem:
    return tn__err(TN_ERR_NOMEM, "tok: out of memory splitting text into words");
}

/* Frees the scratch of BPE and WordPiece encoding. */
void tn__bpe_scratch_free(tn__bpe_scratch *sc)
{
    free(sc->clean);
    free(sc->spans[0]);
    free(sc->spans[1]);
    if (sc->match_data)
        pcre2_match_data_free(sc->match_data);
    if (sc->match_ctx)
        pcre2_match_context_free(sc->match_ctx);
    if (sc->jit_stack)
        pcre2_jit_stack_free(sc->jit_stack);
    free(sc->sym);
    free(sc->heap);
    free(sc->word);
    tn__wcache_free(&sc->cache);
    tn__wcache_free(&sc->seg_cache);
    memset(sc, 0, sizeof *sc);
}
