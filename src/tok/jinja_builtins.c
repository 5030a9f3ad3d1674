/*
 * jinja_builtins.c — Jinja's filters and tests, the Python string / list /
 * dict methods templates call, and the globals (raise_exception,
 * strftime_now, namespace, range, dict).
 *
 * Key idea: each builtin is looked up by name at render time in a small
 * table; arguments arrive as positional values plus keyword names/values
 * (jargs), and arg() fetches a parameter by position or keyword the way
 * Python binds a signature. Behaviour follows jinja2 3.x and CPython: e.g.
 * `indent` leaves the first line and blank lines alone unless asked,
 * `unique`/`sort`/`dictsort` compare strings case-insensitively by default,
 * `trim` and `strip()` remove Unicode whitespace.
 *
 * LIMITATIONS: upper/lower/title/capitalize change ASCII letters only;
 * no format strings (`%` on strings, str.format), no HTML-specific filters
 * beyond escape.
 */
#include "tok/jinja.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct jargs {
    const jv *a;
    int n;
    const char **kw;
    const jv *kwv;
    int nkw;
} jargs;

static const jv UNDEF = {.k = JV_UNDEF};

/* Parameter i (positional) or name (keyword), or undefined. */
static jv arg(const jargs *g, int i, const char *name)
{
    if (i >= 0 && i < g->n)
        return g->a[i];
    if (name)
        for (int k = 0; k < g->nkw; k++)
            if (!strcmp(g->kw[k], name))
                return g->kwv[k];
    return UNDEF;
}

static bool has(jv v) { return v.k != JV_UNDEF; }

static jv need_str(jx *x, jv v, const char *what)
{
    if (v.k != JV_STR)
        tn__jx_fail(x, TN_ERR_INVALID, "%s expects a string, got %s", what, tn__jv_type_name(v));
    return v;
}

static int64_t need_int(jx *x, jv v, const char *what)
{
    if (v.k == JV_INT)
        return v.u.i;
    if (v.k == JV_BOOL)
        return v.u.b;
    tn__jx_fail(x, TN_ERR_INVALID, "%s expects an integer, got %s", what, tn__jv_type_name(v));
}

static jv mkstr(const char *p, size_t n)
{
    jv v = {.k = JV_STR};
    v.u.s.p = p;
    v.u.s.n = n;
    return v;
}

/* ---- strings ------------------------------------------------------------ */

/* Length of the whitespace code point at s[i] (Python's str.isspace), or 0. */
static size_t ws_at(const unsigned char *s, size_t n, size_t i)
{
    unsigned char c = s[i];
    if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f))
        return 1;
    if (c == 0xC2 && i + 1 < n && (s[i + 1] == 0x85 || s[i + 1] == 0xA0))
        return 2;
    if (c == 0xE1 && i + 2 < n && s[i + 1] == 0x9A && s[i + 2] == 0x80)
        return 3;
    if (c == 0xE2 && i + 2 < n) {
        unsigned c1 = s[i + 1], c2 = s[i + 2];
        if (c1 == 0x80 && ((c2 >= 0x80 && c2 <= 0x8A) || c2 == 0xA8 || c2 == 0xA9 || c2 == 0xAF))
            return 3;
        if (c1 == 0x81 && c2 == 0x9F)
            return 3;
    }
    if (c == 0xE3 && i + 2 < n && s[i + 1] == 0x80 && s[i + 2] == 0x80)
        return 3;
    return 0;
}

/* Start of the code point that ends at s[e-1]. */
static size_t cp_start(const char *s, size_t e)
{
    size_t i = e - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    return i;
}

static bool in_chars(jv chars, const char *s, size_t i, size_t k)
{
    const char *c = chars.u.s.p;
    size_t n = chars.u.s.n;
    for (size_t j = 0; j < n;) {
        size_t m = j + 1;
        while (m < n && ((unsigned char)c[m] & 0xC0) == 0x80)
            m++;
        if (m - j == k - i && !memcmp(c + j, s + i, k - i))
            return true;
        j = m;
    }
    return false;
}

/* Python's str.strip/lstrip/rstrip; chars undefined/None: whitespace. */
static jv strip(jx *x, jv v, jv chars, bool left, bool right)
{
    const char *s = v.u.s.p;
    size_t a = 0, b = v.u.s.n;
    bool ws = chars.k != JV_STR;
    while (left && a < b) {
        size_t k = a + 1;
        while (k < b && ((unsigned char)s[k] & 0xC0) == 0x80)
            k++;
        if (ws ? ws_at((const unsigned char *)s, b, a) == k - a : in_chars(chars, s, a, k))
            a = k;
        else
            break;
    }
    while (right && b > a) {
        size_t i = cp_start(s, b);
        if (i < a)
            break;
        if (ws ? ws_at((const unsigned char *)s, b, i) == b - i : in_chars(chars, s, i, b))
            b = i;
        else
            break;
    }
    (void)x;
    return mkstr(s + a, b - a);
}

static jv map_case(jx *x, jv v, int mode) /* 0 lower, 1 upper, 2 capitalize, 3 title (str.title) */
{
    jv r = tn__jv_str(x, v.u.s.p, v.u.s.n);
    char *s = (char *)r.u.s.p;
    bool prev_letter = false;
    for (size_t i = 0; i < r.u.s.n; i++) {
        char c = s[i];
        bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        bool up = mode == 1 || (mode == 2 && i == 0) || (mode == 3 && letter && !prev_letter);
        if (up && c >= 'a' && c <= 'z')
            s[i] = (char)(c - 32);
        else if (!up && c >= 'A' && c <= 'Z')
            s[i] = (char)(c + 32);
        prev_letter = letter || ((unsigned char)c >= 0x80);
    }
    return r;
}

/* jinja2's title filter: words split at whitespace, '-', '(', '{', '[', '<';
 * each word's first character upper case, the rest lower. */
static jv title_filter(jx *x, jv v)
{
    jv r = tn__jv_str(x, v.u.s.p, v.u.s.n);
    char *s = (char *)r.u.s.p;
    bool start = true;
    for (size_t i = 0; i < r.u.s.n; i++) {
        char c = s[i];
        bool sep = c == ' ' || (c >= '\t' && c <= '\r') || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
        if (sep) {
            start = true;
            continue;
        }
        if (start && c >= 'a' && c <= 'z')
            s[i] = (char)(c - 32);
        else if (!start && c >= 'A' && c <= 'Z')
            s[i] = (char)(c + 32);
        start = false;
    }
    return r;
}

static jv replace(jx *x, jv s, jv old, jv new_, int64_t count)
{
    jbuf b = {0};
    const char *p = s.u.s.p, *end = p + s.u.s.n;
    size_t on = old.u.s.n;
    int64_t done = 0;
    if (on == 0) { /* Python inserts new between every character */
        jlist *cs = tn__jv_iter(x, s);
        for (size_t i = 0; i <= cs->n; i++) {
            if (count < 0 || done < count) {
                tn__jb_put(x, &b, new_.u.s.p, new_.u.s.n);
                done++;
            }
            if (i < cs->n)
                tn__jb_put(x, &b, cs->a[i].u.s.p, cs->a[i].u.s.n);
        }
        return tn__jb_take(x, &b);
    }
    while (p < end) {
        const char *f = (count < 0 || done < count) ? memmem(p, (size_t)(end - p), old.u.s.p, on) : NULL;
        if (!f)
            break;
        tn__jb_put(x, &b, p, (size_t)(f - p));
        tn__jb_put(x, &b, new_.u.s.p, new_.u.s.n);
        p = f + on;
        done++;
    }
    tn__jb_put(x, &b, p, (size_t)(end - p));
    return tn__jb_take(x, &b);
}

static jv split(jx *x, jv s, jv sep, int64_t maxsplit)
{
    jv r = tn__jv_list(x);
    const char *p = s.u.s.p;
    size_t n = s.u.s.n, i = 0;
    if (sep.k != JV_STR) {
        int64_t done = 0;
        for (;;) {
            while (i < n && ws_at((const unsigned char *)p, n, i))
                i += ws_at((const unsigned char *)p, n, i);
            if (i >= n)
                break;
            if (maxsplit >= 0 && done >= maxsplit) {
                size_t e = n;
                while (e > i && ws_at((const unsigned char *)p, n, cp_start(p, e)) == e - cp_start(p, e))
                    e = cp_start(p, e);
                tn__jl_push(x, r.u.l, mkstr(p + i, e - i));
                break;
            }
            size_t k = i;
            while (k < n && !ws_at((const unsigned char *)p, n, k))
                k++;
            tn__jl_push(x, r.u.l, mkstr(p + i, k - i));
            done++;
            i = k;
        }
        return r;
    }
    if (sep.u.s.n == 0)
        tn__jx_fail(x, TN_ERR_INVALID, "split: empty separator");
    int64_t done = 0;
    for (;;) {
        const char *f = (maxsplit < 0 || done < maxsplit) ? memmem(p + i, n - i, sep.u.s.p, sep.u.s.n) : NULL;
        if (!f) {
            tn__jl_push(x, r.u.l, mkstr(p + i, n - i));
            return r;
        }
        tn__jl_push(x, r.u.l, mkstr(p + i, (size_t)(f - (p + i))));
        i = (size_t)(f - p) + sep.u.s.n;
        done++;
    }
}

static bool affix(jx *x, jv s, jv fix, bool start)
{
    if (fix.k == JV_LIST) {
        for (size_t i = 0; i < fix.u.l->n; i++)
            if (affix(x, s, fix.u.l->a[i], start))
                return true;
        return false;
    }
    need_str(x, fix, start ? "startswith" : "endswith");
    if (fix.u.s.n > s.u.s.n)
        return false;
    return !memcmp(start ? s.u.s.p : s.u.s.p + s.u.s.n - fix.u.s.n, fix.u.s.p, fix.u.s.n);
}

static jv escape_html(jx *x, jv s)
{
    jbuf b = {0};
    for (size_t i = 0; i < s.u.s.n; i++) {
        char c = s.u.s.p[i];
        const char *e = c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '"' ? "&#34;"
                      : c == '\'' ? "&#39;" : NULL;
        if (e)
            tn__jb_put(x, &b, e, strlen(e));
        else
            tn__jb_putc(x, &b, c);
    }
    return tn__jb_take(x, &b);
}

static jv indent(jx *x, jv s, jv width, bool first, bool blank)
{
    jv ind;
    if (width.k == JV_STR) {
        ind = width;
    } else {
        int64_t w = has(width) ? need_int(x, width, "indent width") : 4;
        if (w < 0 || w > 1000)
            tn__jx_fail(x, TN_ERR_RANGE, "indent width %lld out of range", (long long)w);
        char *sp = tn__jx_alloc(x, (size_t)w + 1);
        memset(sp, ' ', (size_t)w);
        ind = mkstr(sp, (size_t)w);
    }
    /* (s + "\n").splitlines(), as jinja2 does it */
    jlist *lines = tn__jv_list(x).u.l;
    jbuf sb = {0};
    tn__jb_put(x, &sb, s.u.s.p, s.u.s.n);
    tn__jb_putc(x, &sb, '\n');
    const char *p = sb.p;
    size_t n = sb.n, i = 0;
    while (i < n) {
        size_t k = i;
        while (k < n && p[k] != '\n' && p[k] != '\r' && p[k] != '\v' && p[k] != '\f')
            k++;
        tn__jl_push(x, lines, mkstr(p + i, k - i));
        if (k < n && p[k] == '\r' && k + 1 < n && p[k + 1] == '\n')
            k++;
        i = k + 1;
    }
    jbuf b = {0};
    if (first)
        tn__jb_put(x, &b, ind.u.s.p, ind.u.s.n);
    for (size_t l = 0; l < lines->n; l++) {
        jv line = lines->a[l];
        if (l) {
            tn__jb_putc(x, &b, '\n');
            if (blank || line.u.s.n)
                tn__jb_put(x, &b, ind.u.s.p, ind.u.s.n);
        }
        tn__jb_put(x, &b, line.u.s.p, line.u.s.n);
    }
    return tn__jb_take(x, &b);
}

/* ---- sorting ------------------------------------------------------------ */

typedef struct sortspec {
    bool reverse, case_sensitive;
    jv attr;     /* sort by this attribute, or undefined */
    int by;      /* for dictsort: 0 key, 1 value; -1 not a pair */
} sortspec;

static jv sort_key(jx *x, jv v, const sortspec *sp)
{
    if (sp->by >= 0)
        v = v.u.l->a[sp->by];
    if (sp->attr.k == JV_STR)
        v = tn__jx_getattr(x, v, sp->attr.u.s.p, sp->attr.u.s.n);
    if (!sp->case_sensitive && v.k == JV_STR) {
        jv r = map_case(x, v, 0);
        return r;
    }
    return v;
}

/* Stable merge sort (Python's sort is stable); the comparison may fail. */
static void msort(jx *x, jv *a, jv *keys, size_t n, jv *tmp, jv *tmpk, bool reverse)
{
    if (n < 2)
        return;
    size_t h = n / 2;
    msort(x, a, keys, h, tmp, tmpk, reverse);
    msort(x, a + h, keys + h, n - h, tmp, tmpk, reverse);
    size_t i = 0, j = h, o = 0;
    while (i < h && j < n) {
        int c = tn__jv_cmp(x, keys[j], keys[i]);
        bool take_right = reverse ? c > 0 : c < 0;
        if (take_right) {
            tmp[o] = a[j];
            tmpk[o++] = keys[j++];
        } else {
            tmp[o] = a[i];
            tmpk[o++] = keys[i++];
        }
    }
    while (i < h) {
        tmp[o] = a[i];
        tmpk[o++] = keys[i++];
    }
    while (j < n) {
        tmp[o] = a[j];
        tmpk[o++] = keys[j++];
    }
    memcpy(a, tmp, n * sizeof *a);
    memcpy(keys, tmpk, n * sizeof *keys);
}

static jv sorted(jx *x, jlist *in, const sortspec *sp)
{
    size_t n = in->n;
    jv r = tn__jv_list(x);
    jv *keys = tn__jx_alloc(x, (n + 1) * sizeof(jv) * 3);
    jv *tmp = keys + n, *tmpk = keys + 2 * n;
    for (size_t i = 0; i < n; i++) {
        tn__jl_push(x, r.u.l, in->a[i]);
        keys[i] = sort_key(x, in->a[i], sp);
    }
    msort(x, r.u.l->a, keys, n, tmp, tmpk, sp->reverse);
    return r;
}

static jv pairs(jx *x, jv d)
{
    jv r = tn__jv_list(x);
    for (size_t i = 0; i < d.u.d->n; i++) {
        jv p = tn__jv_list(x);
        tn__jl_push(x, p.u.l, d.u.d->k[i]);
        tn__jl_push(x, p.u.l, d.u.d->v[i]);
        tn__jl_push(x, r.u.l, p);
    }
    return r;
}

/* ---- tests -------------------------------------------------------------- */

static const char *const test_names[] = {
    "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number", "string",
    "mapping", "iterable", "sequence", "callable", "odd", "even", "divisibleby", "eq", "equalto", "==",
    "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "sameas",
    "lower", "upper", "escaped", "filter", "test",
};

bool tn__jx_has_test(const char *name)
{
    for (size_t i = 0; i < TN_ARRAY_LEN(test_names); i++)
        if (!strcmp(test_names[i], name))
            return true;
    return false;
}

bool tn__jx_test(jx *x, const char *t, jv v, const jv *args, int n_args)
{
    jv a0 = n_args > 0 ? args[0] : UNDEF;
#define IS(s) (!strcmp(t, s))
    if (IS("defined"))
        return v.k != JV_UNDEF;
    if (IS("undefined"))
        return v.k == JV_UNDEF;
    if (IS("none"))
        return v.k == JV_NONE;
    if (IS("boolean"))
        return v.k == JV_BOOL;
    if (IS("false"))
        return v.k == JV_BOOL && !v.u.b;
    if (IS("true"))
        return v.k == JV_BOOL && v.u.b;
    if (IS("integer"))
        return v.k == JV_INT;
    if (IS("float"))
        return v.k == JV_FLOAT;
    if (IS("number"))
        return v.k == JV_INT || v.k == JV_FLOAT || v.k == JV_BOOL;
    if (IS("string"))
        return v.k == JV_STR;
    if (IS("mapping"))
        return v.k == JV_DICT;
    if (IS("iterable"))
        return v.k == JV_STR || v.k == JV_LIST || v.k == JV_DICT || v.k == JV_UNDEF;
    if (IS("sequence"))
        return v.k == JV_STR || v.k == JV_LIST || v.k == JV_DICT;
    if (IS("callable"))
        return v.k == JV_MACRO || v.k == JV_FN;
    if (IS("odd") || IS("even")) {
        int64_t i = need_int(x, v, t);
        return IS("odd") ? (i % 2 != 0) : (i % 2 == 0);
    }
    if (IS("divisibleby")) {
        int64_t d = need_int(x, a0, "divisibleby");
        if (d == 0)
            tn__jx_fail(x, TN_ERR_INVALID, "divisibleby 0");
        return need_int(x, v, t) % d == 0;
    }
    if (IS("eq") || IS("equalto") || IS("=="))
        return tn__jv_eq(v, a0);
    if (IS("ne") || IS("!="))
        return !tn__jv_eq(v, a0);
    if (IS("lt") || IS("lessthan") || IS("<"))
        return tn__jv_cmp(x, v, a0) < 0;
    if (IS("le") || IS("<="))
        return tn__jv_cmp(x, v, a0) <= 0;
    if (IS("gt") || IS("greaterthan") || IS(">"))
        return tn__jv_cmp(x, v, a0) > 0;
    if (IS("ge") || IS(">="))
        return tn__jv_cmp(x, v, a0) >= 0;
    if (IS("in")) {
        if (a0.k == JV_STR && v.k == JV_STR)
            return v.u.s.n == 0 || memmem(a0.u.s.p, a0.u.s.n, v.u.s.p, v.u.s.n) != NULL;
        if (a0.k == JV_LIST) {
            for (size_t i = 0; i < a0.u.l->n; i++)
                if (tn__jv_eq(a0.u.l->a[i], v))
                    return true;
            return false;
        }
        if (a0.k == JV_DICT)
            return tn__jd_find(a0.u.d, v) != NULL;
        tn__jx_fail(x, TN_ERR_INVALID, "'in' test: argument of type '%s' is not a container",
                    tn__jv_type_name(a0));
    }
    if (IS("sameas")) {
        if (v.k != a0.k)
            return false;
        if (v.k == JV_LIST)
            return v.u.l == a0.u.l;
        if (v.k == JV_DICT)
            return v.u.d == a0.u.d;
        return tn__jv_eq(v, a0);
    }
    if (IS("lower") || IS("upper")) {
        if (v.k != JV_STR)
            return false;
        bool cased = false;
        for (size_t i = 0; i < v.u.s.n; i++) {
            char c = v.u.s.p[i];
            if (IS("lower") ? (c >= 'A' && c <= 'Z') : (c >= 'a' && c <= 'z'))
                return false;
            cased |= (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        }
        return cased;
    }
    if (IS("escaped"))
        return false;
    if (IS("filter") || IS("test"))
        return v.k == JV_STR; /* names only: any string could be looked up */
#undef IS
    tn__jx_fail(x, TN_ERR_INVALID, "no test named '%s'", t);
}

/* ---- filters ------------------------------------------------------------ */

static jv first_or_last(jx *x, jv v, bool last)
{
    jlist *l = tn__jv_iter(x, v);
    if (l->n == 0)
        return UNDEF;
    return l->a[last ? l->n - 1 : 0];
}

/* select/reject/selectattr/rejectattr: keep items whose test (args[start]
 * or truthiness) is `want`, after taking attribute attr if given. */
static jv select_items(jx *x, jv v, const jargs *g, int start, bool want, bool by_attr)
{
    jlist *l = tn__jv_iter(x, tn__jv_truthy(v) ? v : UNDEF); /* jinja2: `if value:` first */
    jv r = tn__jv_list(x);
    jv attr = by_attr ? need_str(x, arg(g, 0, NULL), "selectattr attribute") : UNDEF;
    jv test = arg(g, start, NULL);
    if (has(test))
        need_str(x, test, "select test name");
    char tname[64] = "";
    if (has(test)) {
        if (test.u.s.n >= sizeof tname)
            tn__jx_fail(x, TN_ERR_INVALID, "no test named '%.*s'", 40, test.u.s.p);
        memcpy(tname, test.u.s.p, test.u.s.n);
        tname[test.u.s.n] = 0;
    }
    int ta = g->n > start + 1 ? g->n - start - 1 : 0;
    for (size_t i = 0; i < l->n; i++) {
        jv item = l->a[i];
        jv val = by_attr ? tn__jx_getattr(x, item, attr.u.s.p, attr.u.s.n) : item;
        bool ok = has(test) ? tn__jx_test(x, tname, val, g->a + start + 1, ta) : tn__jv_truthy(val);
        if (ok == want)
            tn__jl_push(x, r.u.l, item);
    }
    return r;
}

static jv to_int(jx *x, jv v, jv dflt)
{
    switch (v.k) {
    case JV_INT: return v;
    case JV_BOOL: return tn__jv_int(v.u.b);
    case JV_FLOAT:
        if (isfinite(v.u.f) && fabs(v.u.f) < 9.2e18)
            return tn__jv_int((int64_t)v.u.f);
        break;
    case JV_STR: {
        char buf[64];
        jv t = strip(x, v, UNDEF, true, true);
        if (t.u.s.n == 0 || t.u.s.n >= sizeof buf)
            break;
        memcpy(buf, t.u.s.p, t.u.s.n);
        buf[t.u.s.n] = 0;
        char *end;
        errno = 0;
        long long i = strtoll(buf, &end, 10);
        if (!*end && !errno)
            return tn__jv_int(i);
        double f = strtod(buf, &end);
        if (!*end && isfinite(f) && fabs(f) < 9.2e18)
            return tn__jv_int((int64_t)f);
        break;
    }
    default: break;
    }
    return has(dflt) ? dflt : tn__jv_int(0);
}

static jv to_float(jx *x, jv v, jv dflt)
{
    if (v.k == JV_FLOAT)
        return v;
    if (v.k == JV_INT || v.k == JV_BOOL)
        return tn__jv_float(tn__jv_num(v));
    if (v.k == JV_STR) {
        char buf[64];
        jv t = strip(x, v, UNDEF, true, true);
        if (t.u.s.n && t.u.s.n < sizeof buf) {
            memcpy(buf, t.u.s.p, t.u.s.n);
            buf[t.u.s.n] = 0;
            char *end;
            double f = strtod(buf, &end);
            if (!*end)
                return tn__jv_float(f);
        }
    }
    return has(dflt) ? dflt : tn__jv_float(0.0);
}

static jv unique(jx *x, jv v, bool case_sensitive, jv attr)
{
    jlist *l = tn__jv_iter(x, v);
    jv r = tn__jv_list(x), seen = tn__jv_list(x);
    sortspec sp = {.case_sensitive = case_sensitive, .attr = attr, .by = -1};
    for (size_t i = 0; i < l->n; i++) {
        jv k = sort_key(x, l->a[i], &sp);
        bool dup = false;
        for (size_t j = 0; j < seen.u.l->n && !dup; j++)
            dup = tn__jv_eq(seen.u.l->a[j], k);
        if (!dup) {
            tn__jl_push(x, seen.u.l, k);
            tn__jl_push(x, r.u.l, l->a[i]);
        }
    }
    return r;
}

static jv minmax(jx *x, jv v, bool max, bool case_sensitive, jv attr)
{
    jlist *l = tn__jv_iter(x, v);
    if (l->n == 0)
        return UNDEF;
    sortspec sp = {.case_sensitive = case_sensitive, .attr = attr, .by = -1};
    size_t best = 0;
    jv bk = sort_key(x, l->a[0], &sp);
    for (size_t i = 1; i < l->n; i++) {
        jv k = sort_key(x, l->a[i], &sp);
        int c = tn__jv_cmp(x, k, bk);
        if (max ? c > 0 : c < 0) {
            best = i;
            bk = k;
        }
    }
    return l->a[best];
}

jv tn__jx_filter(jx *x, const char *f, jv v, const jv *args, int n_args, const char **kw, const jv *kwv,
                 int n_kw)
{
    jargs g = {args, n_args, kw, kwv, n_kw};
#define IS(s) (!strcmp(f, s))
    if (IS("safe") || IS("forceescape") || IS("e") || IS("escape")) {
        if (IS("safe"))
            return v;
        return escape_html(x, tn__jv_to_str(x, v));
    }
    if (IS("string"))
        return tn__jv_to_str(x, v);
    if (IS("tojson")) {
        jv ind = arg(&g, 0, "indent");
        jv sk = arg(&g, -1, "sort_keys");
        jbuf b = {0};
        tn__jv_json_into(x, &b, v, has(ind) && ind.k != JV_NONE ? (int)need_int(x, ind, "tojson indent") : -1,
                         tn__jv_truthy(sk), 0);
        return tn__jb_take(x, &b);
    }
    if (IS("length") || IS("count"))
        return tn__jv_int(tn__jv_len(x, v));
    if (IS("default") || IS("d")) {
        bool boolean = tn__jv_truthy(arg(&g, 1, "boolean"));
        jv dv = arg(&g, 0, "default_value");
        if (v.k == JV_UNDEF || (boolean && !tn__jv_truthy(v)))
            return has(dv) ? dv : mkstr("", 0);
        return v;
    }
    if (IS("first") || IS("last"))
        return first_or_last(x, v, IS("last"));
    if (IS("list")) {
        jlist *l = tn__jv_iter(x, v);
        jv r = tn__jv_list(x);
        for (size_t i = 0; i < l->n; i++)
            tn__jl_push(x, r.u.l, l->a[i]);
        return r;
    }
    if (IS("items")) {
        if (v.k == JV_UNDEF)
            return tn__jv_list(x);
        if (v.k != JV_DICT)
            tn__jx_fail(x, TN_ERR_INVALID, "items filter needs a mapping, got %s", tn__jv_type_name(v));
        return pairs(x, v);
    }
    if (IS("join")) {
        jv sep = arg(&g, 0, "d");
        jv attr = arg(&g, 1, "attribute");
        jlist *l = tn__jv_iter(x, v);
        jbuf b = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (i && sep.k == JV_STR)
                tn__jb_put(x, &b, sep.u.s.p, sep.u.s.n);
            jv item = attr.k == JV_STR ? tn__jx_getattr(x, l->a[i], attr.u.s.p, attr.u.s.n) : l->a[i];
            tn__jv_str_into(x, &b, item);
        }
        return tn__jb_take(x, &b);
    }
    if (IS("map")) {
        jlist *l = tn__jv_iter(x, tn__jv_truthy(v) ? v : UNDEF);
        jv r = tn__jv_list(x);
        jv attr = arg(&g, -1, "attribute");
        jv dflt = arg(&g, -1, "default");
        if (attr.k == JV_STR) {
            for (size_t i = 0; i < l->n; i++) {
                jv a = tn__jx_getattr(x, l->a[i], attr.u.s.p, attr.u.s.n);
                tn__jl_push(x, r.u.l, a.k == JV_UNDEF && has(dflt) ? dflt : a);
            }
            return r;
        }
        jv name = need_str(x, arg(&g, 0, NULL), "map filter name");
        char fname[64];
        if (name.u.s.n >= sizeof fname)
            tn__jx_fail(x, TN_ERR_INVALID, "no filter named '%.*s'", 40, name.u.s.p);
        memcpy(fname, name.u.s.p, name.u.s.n);
        fname[name.u.s.n] = 0;
        for (size_t i = 0; i < l->n; i++)
            tn__jl_push(x, r.u.l, tn__jx_filter(x, fname, l->a[i], args + 1, n_args - 1, kw, kwv, n_kw));
        return r;
    }
    if (IS("select") || IS("reject"))
        return select_items(x, v, &g, 0, IS("select"), false);
    if (IS("selectattr") || IS("rejectattr"))
        return select_items(x, v, &g, 1, IS("selectattr"), true);
    if (IS("unique"))
        return unique(x, v, tn__jv_truthy(arg(&g, 0, "case_sensitive")), arg(&g, 1, "attribute"));
    if (IS("min") || IS("max"))
        return minmax(x, v, IS("max"), tn__jv_truthy(arg(&g, 0, "case_sensitive")), arg(&g, 1, "attribute"));
    if (IS("sort")) {
        sortspec sp = {tn__jv_truthy(arg(&g, 0, "reverse")), tn__jv_truthy(arg(&g, 1, "case_sensitive")),
                       arg(&g, 2, "attribute"), -1};
        return sorted(x, tn__jv_iter(x, v), &sp);
    }
    if (IS("dictsort")) {
        if (v.k != JV_DICT)
            tn__jx_fail(x, TN_ERR_INVALID, "dictsort needs a mapping, got %s", tn__jv_type_name(v));
        jv by = arg(&g, 1, "by");
        bool by_value = by.k == JV_STR && by.u.s.n == 5 && !memcmp(by.u.s.p, "value", 5);
        sortspec sp = {tn__jv_truthy(arg(&g, 2, "reverse")), tn__jv_truthy(arg(&g, 0, "case_sensitive")), UNDEF,
                       by_value ? 1 : 0};
        return sorted(x, pairs(x, v).u.l, &sp);
    }
    if (IS("reverse")) {
        if (v.k == JV_STR) {
            jlist *cs = tn__jv_iter(x, v);
            jbuf b = {0};
            for (size_t i = cs->n; i-- > 0;)
                tn__jb_put(x, &b, cs->a[i].u.s.p, cs->a[i].u.s.n);
            return tn__jb_take(x, &b);
        }
        jlist *l = tn__jv_iter(x, v);
        jv r = tn__jv_list(x);
        for (size_t i = l->n; i-- > 0;)
            tn__jl_push(x, r.u.l, l->a[i]);
        return r;
    }
    if (IS("batch")) {
        int64_t n = need_int(x, arg(&g, 0, "linecount"), "batch size");
        if (n <= 0)
            tn__jx_fail(x, TN_ERR_INVALID, "batch size must be positive");
        jv fill = arg(&g, 1, "fill_with");
        jlist *l = tn__jv_iter(x, v);
        jv r = tn__jv_list(x), cur = UNDEF;
        for (size_t i = 0; i < l->n; i++) {
            if (cur.k == JV_UNDEF || (int64_t)cur.u.l->n == n) {
                cur = tn__jv_list(x);
                tn__jl_push(x, r.u.l, cur);
            }
            tn__jl_push(x, cur.u.l, l->a[i]);
        }
        if (has(fill) && cur.k == JV_LIST)
            while ((int64_t)cur.u.l->n < n)
                tn__jl_push(x, cur.u.l, fill);
        return r;
    }
    if (IS("sum")) {
        jlist *l = tn__jv_iter(x, v);
        jv attr = arg(&g, 0, "attribute"), acc = arg(&g, 1, "start");
        if (!has(acc))
            acc = tn__jv_int(0);
        for (size_t i = 0; i < l->n; i++) {
            jv item = attr.k == JV_STR ? tn__jx_getattr(x, l->a[i], attr.u.s.p, attr.u.s.n) : l->a[i];
            if (!tn__jv_is_num(item) || !tn__jv_is_num(acc))
                tn__jx_fail(x, TN_ERR_INVALID, "sum: cannot add %s", tn__jv_type_name(item));
            if (acc.k == JV_FLOAT || item.k == JV_FLOAT)
                acc = tn__jv_float(tn__jv_num(acc) + tn__jv_num(item));
            else
                acc = tn__jv_int((int64_t)tn__jv_num(acc) + (int64_t)tn__jv_num(item));
        }
        return acc;
    }
    if (IS("int"))
        return to_int(x, v, arg(&g, 0, "default"));
    if (IS("float"))
        return to_float(x, v, arg(&g, 0, "default"));
    if (IS("abs")) {
        if (v.k == JV_FLOAT)
            return tn__jv_float(fabs(v.u.f));
        int64_t i = need_int(x, v, "abs");
        return tn__jv_int(i < 0 ? -i : i);
    }
    if (IS("round")) {
        jv pr = arg(&g, 0, "precision"), me = arg(&g, 1, "method");
        int64_t p = has(pr) ? need_int(x, pr, "round precision") : 0;
        if (p < -20 || p > 20)
            tn__jx_fail(x, TN_ERR_RANGE, "round precision out of range");
        double f = tn__jv_num(to_float(x, v, UNDEF)), s = pow(10.0, (double)p);
        const char *m = me.k == JV_STR ? me.u.s.p : "common";
        double r = !strncmp(m, "ceil", 4) ? ceil(f * s) / s : !strncmp(m, "floor", 5) ? floor(f * s) / s
                                                                                      : nearbyint(f * s) / s;
        return tn__jv_float(r);
    }
    if (IS("attr")) {
        jv name = need_str(x, arg(&g, 0, "name"), "attr name");
        return tn__jx_getattr(x, v, name.u.s.p, name.u.s.n);
    }
    /* string filters */
    jv s = tn__jv_to_str(x, v);
    if (IS("trim")) {
        jv chars = arg(&g, 0, "chars");
        return strip(x, s, chars.k == JV_STR ? chars : UNDEF, true, true);
    }
    if (IS("upper") || IS("lower") || IS("capitalize"))
        return map_case(x, s, IS("lower") ? 0 : IS("upper") ? 1 : 2);
    if (IS("title"))
        return title_filter(x, s);
    if (IS("replace")) {
        jv cnt = arg(&g, 2, "count");
        jv a = tn__jv_to_str(x, arg(&g, 0, "old")), b = tn__jv_to_str(x, arg(&g, 1, "new"));
        return replace(x, s, a, b, has(cnt) && cnt.k != JV_NONE ? need_int(x, cnt, "replace count") : -1);
    }
    if (IS("indent"))
        return indent(x, s, arg(&g, 0, "width"), tn__jv_truthy(arg(&g, 1, "first")),
                      tn__jv_truthy(arg(&g, 2, "blank")));
    if (IS("wordcount"))
        return tn__jv_int((int64_t)split(x, s, UNDEF, -1).u.l->n);
    if (IS("center")) {
        int64_t w = has(arg(&g, 0, "width")) ? need_int(x, arg(&g, 0, "width"), "center width") : 80;
        int64_t n = tn__jv_len(x, s);
        if (w <= n)
            return s;
        if (w > 100000)
            tn__jx_fail(x, TN_ERR_RANGE, "center width out of range");
        int64_t pad = w - n, left = pad / 2 + (pad & w & 1);
        jbuf b = {0};
        for (int64_t i = 0; i < left; i++)
            tn__jb_putc(x, &b, ' ');
        tn__jb_put(x, &b, s.u.s.p, s.u.s.n);
        for (int64_t i = 0; i < pad - left; i++)
            tn__jb_putc(x, &b, ' ');
        return tn__jb_take(x, &b);
    }
#undef IS
    tn__jx_fail(x, TN_ERR_INVALID, "no filter named '%s'", f);
}

/* ---- methods and globals ------------------------------------------------ */

static const char *const str_methods[] = {"strip", "lstrip", "rstrip", "startswith", "endswith", "split",
                                          "rsplit", "upper", "lower", "title", "capitalize", "replace", "find",
                                          "count", "join", "splitlines", "isdigit", "isalpha", "isspace",
                                          "isupper", "islower", NULL};
static const char *const list_methods[] = {"append", "extend", "pop", "insert", "index", "count", "copy",
                                           "reverse", NULL};
static const char *const dict_methods[] = {"items", "keys", "values", "get", "update", "pop", "setdefault",
                                           "copy", NULL};

static const char *find_name(const char *const *names, const char *name)
{
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], name))
            return names[i];
    return NULL;
}

static jv bound(jx *x, const char *name, jv self)
{
    jfn *fn = tn__jx_alloc(x, sizeof *fn);
    fn->name = name;
    fn->self = self;
    fn->data = NULL;
    return (jv){.k = JV_FN, .u.fn = fn};
}

jv tn__jx_method(jx *x, jv v, const char *name)
{
    const char *n = NULL;
    if (v.k == JV_STR)
        n = find_name(str_methods, name);
    else if (v.k == JV_LIST)
        n = find_name(list_methods, name);
    else if (v.k == JV_DICT && !v.u.d->ns)
        n = find_name(dict_methods, name);
    return n ? bound(x, n, v) : UNDEF;
}

static const char *const globals[] = {"raise_exception", "strftime_now", "namespace", "range", "dict", NULL};

jv tn__jx_global(jx *x, const char *name)
{
    const char *n = find_name(globals, name);
    return n ? bound(x, n, UNDEF) : UNDEF;
}

static jv strftime_now(jx *x, jv fmt)
{
    need_str(x, fmt, "strftime_now format");
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *today = x->t->o.today;
    int y, mo, d;
    if (today && sscanf(today, "%d-%d-%d", &y, &mo, &d) == 3) {
        tm.tm_year = y - 1900;
        tm.tm_mon = mo - 1;
        tm.tm_mday = d;
        tm.tm_isdst = -1;
        time_t t = mktime(&tm); /* fills in the weekday and day of the year */
        if (t != (time_t)-1)
            localtime_r(&t, &tm);
    } else {
        time_t t = time(NULL);
        localtime_r(&t, &tm);
    }
    char f[256], out[512];
    if (fmt.u.s.n >= sizeof f)
        tn__jx_fail(x, TN_ERR_RANGE, "strftime_now format longer than %zu bytes", sizeof f - 1);
    memcpy(f, fmt.u.s.p, fmt.u.s.n);
    f[fmt.u.s.n] = 0;
    size_t n = strftime(out, sizeof out, f, &tm);
    return tn__jv_str(x, out, n);
}

static jv call_str_method(jx *x, const char *m, jv s, const jargs *g)
{
#define IS(q) (!strcmp(m, q))
    if (IS("strip") || IS("lstrip") || IS("rstrip")) {
        jv chars = arg(g, 0, "chars");
        return strip(x, s, chars.k == JV_STR ? chars : UNDEF, !IS("rstrip"), !IS("lstrip"));
    }
    if (IS("startswith") || IS("endswith"))
        return tn__jv_bool(affix(x, s, arg(g, 0, NULL), IS("startswith")));
    if (IS("split") || IS("rsplit")) {
        jv ms = arg(g, 1, "maxsplit");
        int64_t max = has(ms) ? need_int(x, ms, "maxsplit") : -1;
        if (IS("rsplit") && max >= 0)
            tn__jx_fail(x, TN_ERR_UNSUPPORTED, "rsplit with maxsplit is not supported");
        return split(x, s, arg(g, 0, "sep"), max);
    }
    if (IS("upper") || IS("lower") || IS("capitalize") || IS("title"))
        return map_case(x, s, IS("lower") ? 0 : IS("upper") ? 1 : IS("capitalize") ? 2 : 3);
    if (IS("replace")) {
        jv cnt = arg(g, 2, "count");
        return replace(x, s, need_str(x, arg(g, 0, NULL), "replace"), need_str(x, arg(g, 1, NULL), "replace"),
                       has(cnt) ? need_int(x, cnt, "replace count") : -1);
    }
    if (IS("find") || IS("count")) {
        jv sub = need_str(x, arg(g, 0, NULL), m);
        if (IS("find")) {
            const char *f = sub.u.s.n ? memmem(s.u.s.p, s.u.s.n, sub.u.s.p, sub.u.s.n) : s.u.s.p;
            if (!f)
                return tn__jv_int(-1);
            return tn__jv_int(tn__jv_len(x, mkstr(s.u.s.p, (size_t)(f - s.u.s.p))));
        }
        if (sub.u.s.n == 0)
            return tn__jv_int(tn__jv_len(x, s) + 1);
        int64_t c = 0;
        const char *p = s.u.s.p, *end = p + s.u.s.n, *f;
        while ((f = memmem(p, (size_t)(end - p), sub.u.s.p, sub.u.s.n))) {
            c++;
            p = f + sub.u.s.n;
        }
        return tn__jv_int(c);
    }
    if (IS("join")) {
        jlist *l = tn__jv_iter(x, arg(g, 0, NULL));
        jbuf b = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (i)
                tn__jb_put(x, &b, s.u.s.p, s.u.s.n);
            tn__jb_put(x, &b, need_str(x, l->a[i], "str.join").u.s.p, l->a[i].u.s.n);
        }
        return tn__jb_take(x, &b);
    }
    if (IS("splitlines"))
        return split(x, indent(x, s, tn__jv_int(0), false, false), tn__jv_cstr("\n"), -1);
    bool all = s.u.s.n > 0, cased = false;
    for (size_t i = 0; i < s.u.s.n; i++) {
        char c = s.u.s.p[i];
        bool ok = IS("isdigit") ? (c >= '0' && c <= '9')
                : IS("isalpha") ? ((c | 32) >= 'a' && (c | 32) <= 'z')
                : IS("isspace") ? ws_at((const unsigned char *)s.u.s.p, s.u.s.n, i) > 0
                : IS("isupper") ? !(c >= 'a' && c <= 'z')
                                : !(c >= 'A' && c <= 'Z');
        cased |= (c | 32) >= 'a' && (c | 32) <= 'z';
        all &= ok;
    }
    return tn__jv_bool(IS("isupper") || IS("islower") ? all && cased : all);
#undef IS
}

static jv call_list_method(jx *x, const char *m, jv self, const jargs *g)
{
    jlist *l = self.u.l;
#define IS(q) (!strcmp(m, q))
    if (IS("append")) {
        tn__jl_push(x, l, arg(g, 0, NULL));
        return tn__jv_none();
    }
    if (IS("extend")) {
        jlist *o = tn__jv_iter(x, arg(g, 0, NULL));
        size_t n = o->n;
        for (size_t i = 0; i < n; i++)
            tn__jl_push(x, l, o->a[i]);
        return tn__jv_none();
    }
    if (IS("pop") || IS("insert")) {
        jv iv = arg(g, 0, NULL);
        int64_t n = (int64_t)l->n, i = has(iv) ? need_int(x, iv, m) : (IS("pop") ? n - 1 : 0);
        if (i < 0)
            i += n;
        if (IS("insert")) {
            i = i < 0 ? 0 : i > n ? n : i;
            tn__jl_push(x, l, tn__jv_none());
            memmove(l->a + i + 1, l->a + i, (size_t)(n - i) * sizeof(jv));
            l->a[i] = arg(g, 1, NULL);
            return tn__jv_none();
        }
        if (i < 0 || i >= n)
            tn__jx_fail(x, TN_ERR_INVALID, "pop index out of range");
        jv r = l->a[i];
        memmove(l->a + i, l->a + i + 1, (size_t)(n - i - 1) * sizeof(jv));
        l->n--;
        return r;
    }
    if (IS("index") || IS("count")) {
        jv want = arg(g, 0, NULL);
        int64_t c = 0;
        for (size_t i = 0; i < l->n; i++)
            if (tn__jv_eq(l->a[i], want)) {
                if (IS("index"))
                    return tn__jv_int((int64_t)i);
                c++;
            }
        if (IS("index"))
            tn__jx_fail(x, TN_ERR_INVALID, "list.index(x): x not in list");
        return tn__jv_int(c);
    }
    if (IS("reverse")) {
        for (size_t i = 0; i < l->n / 2; i++) {
            jv t = l->a[i];
            l->a[i] = l->a[l->n - 1 - i];
            l->a[l->n - 1 - i] = t;
        }
        return tn__jv_none();
    }
    jv r = tn__jv_list(x); /* copy */
    for (size_t i = 0; i < l->n; i++)
        tn__jl_push(x, r.u.l, l->a[i]);
    return r;
#undef IS
}

static jv call_dict_method(jx *x, const char *m, jv self, const jargs *g)
{
    jdict *d = self.u.d;
#define IS(q) (!strcmp(m, q))
    if (IS("items"))
        return pairs(x, self);
    if (IS("keys") || IS("values")) {
        jv r = tn__jv_list(x);
        for (size_t i = 0; i < d->n; i++)
            tn__jl_push(x, r.u.l, IS("keys") ? d->k[i] : d->v[i]);
        return r;
    }
    if (IS("get") || IS("pop") || IS("setdefault")) {
        jv key = arg(g, 0, NULL), dflt = arg(g, 1, "default");
        jv *v = tn__jd_find(d, key);
        if (IS("get"))
            return v ? *v : has(dflt) ? dflt : tn__jv_none();
        if (IS("setdefault")) {
            if (v)
                return *v;
            jv nv = has(dflt) ? dflt : tn__jv_none();
            tn__jd_set(x, d, key, nv);
            return nv;
        }
        if (!v) {
            if (has(dflt))
                return dflt;
            tn__jx_fail(x, TN_ERR_INVALID, "dict.pop: key not found");
        }
        jv r = *v;
        size_t i = (size_t)(v - d->v);
        memmove(d->k + i, d->k + i + 1, (d->n - i - 1) * sizeof(jv));
        memmove(d->v + i, d->v + i + 1, (d->n - i - 1) * sizeof(jv));
        d->n--;
        return r;
    }
    if (IS("update")) {
        jv o = arg(g, 0, NULL);
        if (o.k == JV_DICT)
            for (size_t i = 0; i < o.u.d->n; i++)
                tn__jd_set(x, d, o.u.d->k[i], o.u.d->v[i]);
        for (int k = 0; k < g->nkw; k++)
            tn__jd_set(x, d, tn__jv_cstr(g->kw[k]), g->kwv[k]);
        return tn__jv_none();
    }
    jv r = tn__jv_dict(x); /* copy */
    for (size_t i = 0; i < d->n; i++)
        tn__jd_set(x, r.u.d, d->k[i], d->v[i]);
    return r;
#undef IS
}

jv tn__jx_call_fn(jx *x, jfn *fn, const jv *args, int n_args, const char **kw, const jv *kwv, int n_kw)
{
    jargs g = {args, n_args, kw, kwv, n_kw};
    const char *m = fn->name;
    jv self = fn->self;
    if (!strcmp(m, "cycle")) { /* loop.cycle: self is the loop dict */
        if (n_args == 0)
            tn__jx_fail(x, TN_ERR_INVALID, "loop.cycle needs at least one argument");
        jv *i0 = tn__jd_get(self.u.d, "index0", 6);
        return args[(i0 ? i0->u.i : 0) % n_args];
    }
    if (self.k == JV_STR)
        return call_str_method(x, m, self, &g);
    if (self.k == JV_LIST)
        return call_list_method(x, m, self, &g);
    if (self.k == JV_DICT)
        return call_dict_method(x, m, self, &g);
    if (!strcmp(m, "raise_exception")) {
        jv msg = tn__jv_to_str(x, arg(&g, 0, "message"));
        tn__jx_fail(x, TN_ERR_INVALID, "raise_exception: %.*s", (int)TN_MIN(msg.u.s.n, 300), msg.u.s.p);
    }
    if (!strcmp(m, "strftime_now"))
        return strftime_now(x, arg(&g, 0, NULL));
    if (!strcmp(m, "namespace") || !strcmp(m, "dict")) {
        jv r = tn__jv_dict(x);
        r.u.d->ns = !strcmp(m, "namespace");
        for (int i = 0; i < n_args; i++)
            if (args[i].k == JV_DICT)
                for (size_t k = 0; k < args[i].u.d->n; k++)
                    tn__jd_set(x, r.u.d, args[i].u.d->k[k], args[i].u.d->v[k]);
        for (int k = 0; k < n_kw; k++)
            tn__jd_set(x, r.u.d, tn__jv_cstr(kw[k]), kwv[k]);
        return r;
    }
    if (!strcmp(m, "range")) {
        int64_t a = 0, b, st = 1;
        if (n_args == 1) {
            b = need_int(x, args[0], "range");
        } else if (n_args >= 2) {
            a = need_int(x, args[0], "range");
            b = need_int(x, args[1], "range");
            if (n_args > 2)
                st = need_int(x, args[2], "range step");
        } else {
            tn__jx_fail(x, TN_ERR_INVALID, "range expects 1 to 3 integers");
        }
        if (st == 0)
            tn__jx_fail(x, TN_ERR_INVALID, "range step must not be zero");
        jv r = tn__jv_list(x);
        for (int64_t i = a; st > 0 ? i < b : i > b; i += st) {
            if (r.u.l->n >= 10000000)
                tn__jx_fail(x, TN_ERR_RANGE, "range longer than 10,000,000");
            tn__jl_push(x, r.u.l, tn__jv_int(i));
        }
        return r;
    }
    tn__jx_fail(x, TN_ERR_INVALID, "'%s' is not callable here", m);
}
