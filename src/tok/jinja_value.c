/*
 * jinja_value.c — the values of the Jinja interpreter: arena, strings,
 * lists, ordered dicts, and Python's semantics for them (str(), repr(),
 * json.dumps, ==, <, truth, len, iteration).
 *
 * Key idea: templates were written against Python, so every conversion
 * reproduces what CPython prints: str(None) is "None", str(1.0) is "1.0",
 * str(['a']) is "['a']", json.dumps keeps dict insertion order and uses
 * ", " / ": " separators (",", ": " with indent). Values live in the render
 * arena and are shared by pointer; lists and dicts are mutable (append,
 * namespace attributes), strings never change after creation.
 */
#include "tok/jinja.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena -------------------------------------------------------------- */

struct jchunk {
    jchunk *next;
    size_t cap, used;
    _Alignas(16) char data[];
};

void *tn__ja_alloc(jarena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    jchunk *h = a->head;
    if (h && h->cap - h->used >= n) {
        void *r = h->data + h->used;
        h->used += n;
        return r;
    }
    size_t cap = n > 65536 ? n : 65536;
    if (cap > a->max || a->used > a->max - cap)
        return NULL;
    jchunk *c = malloc(sizeof *c + cap);
    if (!c)
        return NULL;
    c->cap = cap;
    c->used = n;
    c->next = h;
    a->head = c;
    a->used += cap;
    return c->data;
}

void tn__ja_free(jarena *a)
{
    jchunk *c = a->head;
    while (c) {
        jchunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
    a->used = 0;
}

void *tn__jx_alloc(jx *x, size_t n)
{
    void *r = tn__ja_alloc(&x->ar, n);
    if (!r)
        tn__jx_fail(x, TN_ERR_RANGE, "render memory limit (%zu bytes) reached", x->ar.max);
    return r;
}

/* ---- buffers ------------------------------------------------------------ */

void tn__jb_put(jx *x, jbuf *b, const char *p, size_t n)
{
    if (n == 0)
        return;
    size_t lim = x->t->o.max_output;
    if (b->n + n > lim || b->n + n < b->n)
        tn__jx_fail(x, TN_ERR_RANGE, "output larger than the limit of %zu bytes", lim);
    if (b->n + n > b->cap) {
        size_t cap = TN_MAX(b->cap * 2, b->n + n);
        cap = TN_MAX(cap, (size_t)64);
        jchunk *h = x->ar.head;
        /* the buffer is the arena's last allocation: grow it in place */
        size_t old = (b->cap + 15) & ~(size_t)15;
        if (b->p && h && b->p + old == h->data + h->used && h->used - old + cap <= h->cap) {
            h->used = h->used - old + ((cap + 15) & ~(size_t)15);
            b->cap = cap;
        } else {
            char *np = tn__jx_alloc(x, cap);
            if (b->n)
                memcpy(np, b->p, b->n);
            b->p = np;
            b->cap = cap;
        }
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

void tn__jb_putc(jx *x, jbuf *b, char c) { tn__jb_put(x, b, &c, 1); }

static void jb_puts(jx *x, jbuf *b, const char *s) { tn__jb_put(x, b, s, strlen(s)); }

jv tn__jb_take(jx *x, jbuf *b)
{
    jv v = {.k = JV_STR};
    v.u.s.p = b->p ? b->p : "";
    v.u.s.n = b->n;
    (void)x;
    return v;
}

/* ---- constructors ------------------------------------------------------- */

jv tn__jv_str(jx *x, const char *p, size_t n)
{
    jv v = {.k = JV_STR};
    char *s = tn__jx_alloc(x, n + 1);
    if (n)
        memcpy(s, p, n);
    s[n] = 0;
    v.u.s.p = s;
    v.u.s.n = n;
    return v;
}

jv tn__jv_cstr(const char *s)
{
    jv v = {.k = JV_STR};
    v.u.s.p = s;
    v.u.s.n = strlen(s);
    return v;
}

jv tn__jv_int(int64_t i) { return (jv){.k = JV_INT, .u.i = i}; }
jv tn__jv_float(double f) { return (jv){.k = JV_FLOAT, .u.f = f}; }
jv tn__jv_bool(bool b) { return (jv){.k = JV_BOOL, .u.b = b}; }
jv tn__jv_none(void) { return (jv){.k = JV_NONE}; }

jv tn__jv_list(jx *x)
{
    jv v = {.k = JV_LIST};
    v.u.l = tn__jx_alloc(x, sizeof(jlist));
    memset(v.u.l, 0, sizeof(jlist));
    return v;
}

jv tn__jv_dict(jx *x)
{
    jv v = {.k = JV_DICT};
    v.u.d = tn__jx_alloc(x, sizeof(jdict));
    memset(v.u.d, 0, sizeof(jdict));
    return v;
}

void tn__jl_push(jx *x, jlist *l, jv v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        jv *na = tn__jx_alloc(x, cap * sizeof *na);
        if (l->n)
            memcpy(na, l->a, l->n * sizeof *na);
        l->a = na;
        l->cap = cap;
    }
    l->a[l->n++] = v;
}

jv *tn__jd_get(const jdict *d, const char *key, size_t n)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].k == JV_STR && d->k[i].u.s.n == n && !memcmp(d->k[i].u.s.p, key, n))
            return &d->v[i];
    return NULL;
}

jv *tn__jd_find(const jdict *d, jv key)
{
    if (key.k == JV_STR)
        return tn__jd_get(d, key.u.s.p, key.u.s.n);
    for (size_t i = 0; i < d->n; i++)
        if (tn__jv_eq(d->k[i], key))
            return &d->v[i];
    return NULL;
}

void tn__jd_set(jx *x, jdict *d, jv key, jv v)
{
    jv *slot = tn__jd_find(d, key);
    if (slot) {
        *slot = v;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        jv *nk = tn__jx_alloc(x, cap * sizeof *nk), *nv = tn__jx_alloc(x, cap * sizeof *nv);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = key;
    d->v[d->n] = v;
    d->n++;
}

jv tn__jv_from_json(jx *x, const json_t *j)
{
    if (++x->depth > 512)
        tn__jx_fail(x, TN_ERR_RANGE, "context JSON nested deeper than 512");
    jv r;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        r = tn__jv_dict(x);
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) tn__jd_set(x, r.u.d, tn__jv_str(x, k, strlen(k)), tn__jv_from_json(x, v));
        break;
    }
    case JSON_ARRAY: {
        r = tn__jv_list(x);
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) tn__jl_push(x, r.u.l, tn__jv_from_json(x, v));
        break;
    }
    case JSON_STRING: r = tn__jv_str(x, json_string_value(j), json_string_length(j)); break;
    case JSON_INTEGER: r = tn__jv_int(json_integer_value(j)); break;
    case JSON_REAL: r = tn__jv_float(json_real_value(j)); break;
    case JSON_TRUE: r = tn__jv_bool(true); break;
    case JSON_FALSE: r = tn__jv_bool(false); break;
    default: r = tn__jv_none(); break;
    }
    x->depth--;
    return r;
}

/* ---- predicates --------------------------------------------------------- */

bool tn__jv_is_num(jv v) { return v.k == JV_INT || v.k == JV_FLOAT || v.k == JV_BOOL; }

double tn__jv_num(jv v)
{
    return v.k == JV_FLOAT ? v.u.f : v.k == JV_INT ? (double)v.u.i : v.k == JV_BOOL ? (double)v.u.b : 0.0;
}

const char *tn__jv_type_name(jv v)
{
    switch (v.k) {
    case JV_UNDEF: return "undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return "list";
    case JV_DICT: return v.u.d->ns ? "Namespace" : "dict";
    case JV_MACRO: return "macro";
    default: return "function";
    }
}

bool tn__jv_truthy(jv v)
{
    switch (v.k) {
    case JV_UNDEF: case JV_NONE: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0.0;
    case JV_STR: return v.u.s.n != 0;
    case JV_LIST: return v.u.l->n != 0;
    case JV_DICT: return v.u.d->ns || v.u.d->n != 0;
    default: return true;
    }
}

bool tn__jv_eq(jv a, jv b)
{
    if (tn__jv_is_num(a) && tn__jv_is_num(b)) {
        if (a.k != JV_FLOAT && b.k != JV_FLOAT)
            return (a.k == JV_INT ? a.u.i : a.u.b) == (b.k == JV_INT ? b.u.i : b.u.b);
        return tn__jv_num(a) == tn__jv_num(b);
    }
    if (a.k != b.k)
        return false;
    switch (a.k) {
    case JV_UNDEF: case JV_NONE: return true;
    case JV_STR: return a.u.s.n == b.u.s.n && !memcmp(a.u.s.p, b.u.s.p, a.u.s.n);
    case JV_LIST:
        if (a.u.l->n != b.u.l->n)
            return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!tn__jv_eq(a.u.l->a[i], b.u.l->a[i]))
                return false;
        return true;
    case JV_DICT:
        if (a.u.d == b.u.d)
            return true;
        if (a.u.d->ns || b.u.d->ns || a.u.d->n != b.u.d->n)
            return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            jv *o = tn__jd_find(b.u.d, a.u.d->k[i]);
            if (!o || !tn__jv_eq(a.u.d->v[i], *o))
                return false;
        }
        return true;
    case JV_MACRO: return a.u.m == b.u.m;
    default: return a.u.fn == b.u.fn;
    }
}

int tn__jv_cmp(jx *x, jv a, jv b)
{
    if (tn__jv_is_num(a) && tn__jv_is_num(b)) {
        if (a.k == JV_INT && b.k == JV_INT)
            return a.u.i < b.u.i ? -1 : a.u.i > b.u.i;
        double p = tn__jv_num(a), q = tn__jv_num(b);
        return p < q ? -1 : p > q;
    }
    if (a.k == JV_STR && b.k == JV_STR) {
        size_t n = TN_MIN(a.u.s.n, b.u.s.n);
        int c = memcmp(a.u.s.p, b.u.s.p, n);
        if (c)
            return c < 0 ? -1 : 1;
        return a.u.s.n < b.u.s.n ? -1 : a.u.s.n > b.u.s.n;
    }
    if (a.k == JV_LIST && b.k == JV_LIST) {
        size_t n = TN_MIN(a.u.l->n, b.u.l->n);
        for (size_t i = 0; i < n; i++) {
            int c = tn__jv_cmp(x, a.u.l->a[i], b.u.l->a[i]);
            if (c)
                return c;
        }
        return a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
    }
    tn__jx_fail(x, TN_ERR_INVALID, "cannot compare %s with %s", tn__jv_type_name(a), tn__jv_type_name(b));
}

/* ---- str / repr / json -------------------------------------------------- */

/* Python's repr(float): the shortest digits that read back exactly;
 * positional notation for decimal exponents -4..15, else 1e+16 style. */
static void float_into(jx *x, jbuf *b, double f, bool json)
{
    char buf[64];
    if (isnan(f)) {
        jb_puts(x, b, json ? "NaN" : "nan");
        return;
    }
    if (isinf(f)) {
        jb_puts(x, b, f > 0 ? (json ? "Infinity" : "inf") : (json ? "-Infinity" : "-inf"));
        return;
    }
    int prec = 1;
    for (; prec < 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, f);
        if (strtod(buf, NULL) == f)
            break;
    }
    snprintf(buf, sizeof buf, "%.*e", prec - 1, f);
    int exp = atoi(strchr(buf, 'e') + 1);
    if (exp >= -4 && exp < 16) {
        int dec = prec - 1 - exp;
        snprintf(buf, sizeof buf, "%.*f", dec > 0 ? dec : 0, f);
        if (!strchr(buf, '.'))
            strcat(buf, ".0");
    } /* else C's "1e+16" / "1.5e-05" is already Python's form */
    jb_puts(x, b, buf);
}

static void repr_str_into(jx *x, jbuf *b, const char *s, size_t n)
{
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    tn__jb_putc(x, b, q);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char hex[8];
        if (c == '\\')
            esc = "\\\\";
        else if (c == (unsigned char)q)
            esc = q == '\'' ? "\\'" : "\\\"";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c < 0x20 || c == 0x7f) {
            snprintf(hex, sizeof hex, "\\x%02x", c);
            esc = hex;
        }
        if (esc) {
            tn__jb_put(x, b, s + run, i - run);
            jb_puts(x, b, esc);
            run = i + 1;
        }
    }
    tn__jb_put(x, b, s + run, n - run);
    tn__jb_putc(x, b, q);
}

void tn__jv_repr_into(jx *x, jbuf *b, jv v)
{
    if (v.k == JV_STR)
        repr_str_into(x, b, v.u.s.p, v.u.s.n);
    else if (v.k == JV_UNDEF)
        jb_puts(x, b, "Undefined");
    else
        tn__jv_str_into(x, b, v);
}

void tn__jv_str_into(jx *x, jbuf *b, jv v)
{
    char buf[32];
    if (++x->depth > 512)
        tn__jx_fail(x, TN_ERR_RANGE, "value nested deeper than 512 (or it contains itself)");
    switch (v.k) {
    case JV_UNDEF: break;
    case JV_NONE: jb_puts(x, b, "None"); break;
    case JV_BOOL: jb_puts(x, b, v.u.b ? "True" : "False"); break;
    case JV_INT:
        snprintf(buf, sizeof buf, "%lld", (long long)v.u.i);
        jb_puts(x, b, buf);
        break;
    case JV_FLOAT: float_into(x, b, v.u.f, false); break;
    case JV_STR: tn__jb_put(x, b, v.u.s.p, v.u.s.n); break;
    case JV_LIST:
        tn__jb_putc(x, b, '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i)
                jb_puts(x, b, ", ");
            tn__jv_repr_into(x, b, v.u.l->a[i]);
        }
        tn__jb_putc(x, b, ']');
        break;
    case JV_DICT:
        if (v.u.d->ns)
            jb_puts(x, b, "<Namespace ");
        tn__jb_putc(x, b, '{');
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i)
                jb_puts(x, b, ", ");
            tn__jv_repr_into(x, b, v.u.d->k[i]);
            jb_puts(x, b, ": ");
            tn__jv_repr_into(x, b, v.u.d->v[i]);
        }
        tn__jb_putc(x, b, '}');
        if (v.u.d->ns)
            tn__jb_putc(x, b, '>');
        break;
    case JV_MACRO: jb_puts(x, b, "<Macro>"); break;
    default: jb_puts(x, b, "<built-in function>"); break;
    }
    x->depth--;
}

jv tn__jv_to_str(jx *x, jv v)
{
    if (v.k == JV_STR)
        return v;
    jbuf b = {0};
    tn__jv_str_into(x, &b, v);
    return tn__jb_take(x, &b);
}

static void json_str_into(jx *x, jbuf *b, const char *s, size_t n)
{
    tn__jb_putc(x, b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char hex[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                snprintf(hex, sizeof hex, "\\u%04x", c);
                esc = hex;
            }
        }
        if (esc) {
            tn__jb_put(x, b, s + run, i - run);
            jb_puts(x, b, esc);
            run = i + 1;
        }
    }
    tn__jb_put(x, b, s + run, n - run);
    tn__jb_putc(x, b, '"');
}

static void newline_indent(jx *x, jbuf *b, int indent, int level)
{
    tn__jb_putc(x, b, '\n');
    for (int i = 0; i < indent * level; i++)
        tn__jb_putc(x, b, ' ');
}

static bool key_less(jv a, jv b)
{
    size_t n = TN_MIN(a.u.s.n, b.u.s.n);
    int c = memcmp(a.u.s.p, b.u.s.p, n);
    return c ? c < 0 : a.u.s.n < b.u.s.n;
}

void tn__jv_json_into(jx *x, jbuf *b, jv v, int indent, bool sort_keys, int level)
{
    char buf[32];
    if (level > 512)
        tn__jx_fail(x, TN_ERR_RANGE, "tojson: value nested deeper than 512 (or it contains itself)");
    switch (v.k) {
    case JV_NONE: jb_puts(x, b, "null"); break;
    case JV_BOOL: jb_puts(x, b, v.u.b ? "true" : "false"); break;
    case JV_INT:
        snprintf(buf, sizeof buf, "%lld", (long long)v.u.i);
        jb_puts(x, b, buf);
        break;
    case JV_FLOAT: float_into(x, b, v.u.f, true); break;
    case JV_STR: json_str_into(x, b, v.u.s.p, v.u.s.n); break;
    case JV_LIST:
        if (v.u.l->n == 0) {
            jb_puts(x, b, "[]");
            break;
        }
        tn__jb_putc(x, b, '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i)
                jb_puts(x, b, indent >= 0 ? "," : ", ");
            if (indent >= 0)
                newline_indent(x, b, indent, level + 1);
            tn__jv_json_into(x, b, v.u.l->a[i], indent, sort_keys, level + 1);
        }
        if (indent >= 0)
            newline_indent(x, b, indent, level);
        tn__jb_putc(x, b, ']');
        break;
    case JV_DICT: {
        const jdict *d = v.u.d;
        if (d->n == 0) {
            jb_puts(x, b, "{}");
            break;
        }
        size_t *order = tn__jx_alloc(x, d->n * sizeof *order);
        for (size_t i = 0; i < d->n; i++) {
            order[i] = i;
            if (d->k[i].k != JV_STR && d->k[i].k != JV_INT && d->k[i].k != JV_BOOL && d->k[i].k != JV_NONE &&
                d->k[i].k != JV_FLOAT)
                tn__jx_fail(x, TN_ERR_INVALID, "tojson: keys must be str, int, float, bool or None, not %s",
                            tn__jv_type_name(d->k[i]));
        }
        if (sort_keys) {
            for (size_t i = 0; i < d->n; i++)
                if (d->k[i].k != JV_STR)
                    tn__jx_fail(x, TN_ERR_INVALID, "tojson: sort_keys needs string keys");
            for (size_t i = 1; i < d->n; i++) { /* insertion sort: template dicts are small */
                size_t o = order[i], j = i;
                for (; j > 0 && key_less(d->k[o], d->k[order[j - 1]]); j--)
                    order[j] = order[j - 1];
                order[j] = o;
            }
        }
        tn__jb_putc(x, b, '{');
        for (size_t j = 0; j < d->n; j++) {
            size_t i = order[j];
            if (j)
                jb_puts(x, b, indent >= 0 ? "," : ", ");
            if (indent >= 0)
                newline_indent(x, b, indent, level + 1);
            jv k = d->k[i];
            if (k.k == JV_STR) {
                json_str_into(x, b, k.u.s.p, k.u.s.n);
            } else {
                jbuf kb = {0};
                tn__jv_json_into(x, &kb, k, -1, false, level + 1);
                json_str_into(x, b, kb.p, kb.n);
            }
            jb_puts(x, b, ": ");
            tn__jv_json_into(x, b, d->v[i], indent, sort_keys, level + 1);
        }
        if (indent >= 0)
            newline_indent(x, b, indent, level);
        tn__jb_putc(x, b, '}');
        break;
    }
    default:
        tn__jx_fail(x, TN_ERR_INVALID, "tojson: object of type %s is not JSON serializable", tn__jv_type_name(v));
    }
}

/* ---- iteration ---------------------------------------------------------- */

jlist *tn__jv_iter(jx *x, jv v)
{
    switch (v.k) {
    case JV_LIST: return v.u.l;
    case JV_UNDEF: return tn__jv_list(x).u.l;
    case JV_DICT: {
        jlist *l = tn__jv_list(x).u.l;
        for (size_t i = 0; i < v.u.d->n; i++)
            tn__jl_push(x, l, v.u.d->k[i]);
        return l;
    }
    case JV_STR: {
        jlist *l = tn__jv_list(x).u.l;
        const char *s = v.u.s.p;
        size_t n = v.u.s.n, i = 0;
        while (i < n) {
            size_t k = i + 1;
            while (k < n && ((unsigned char)s[k] & 0xC0) == 0x80)
                k++;
            jv c = {.k = JV_STR};
            c.u.s.p = s + i; /* strings are immutable: share the bytes */
            c.u.s.n = k - i;
            tn__jl_push(x, l, c);
            i = k;
        }
        return l;
    }
    default: tn__jx_fail(x, TN_ERR_INVALID, "'%s' object is not iterable", tn__jv_type_name(v));
    }
}

int64_t tn__jv_len(jx *x, jv v)
{
    switch (v.k) {
    case JV_STR: {
        int64_t n = 0;
        for (size_t i = 0; i < v.u.s.n; i++)
            n += ((unsigned char)v.u.s.p[i] & 0xC0) != 0x80;
        return n;
    }
    case JV_LIST: return (int64_t)v.u.l->n;
    case JV_DICT: return (int64_t)v.u.d->n;
    case JV_UNDEF: return 0;
    default: tn__jx_fail(x, TN_ERR_INVALID, "object of type '%s' has no len()", tn__jv_type_name(v));
    }
}
