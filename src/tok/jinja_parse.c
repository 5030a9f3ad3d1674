/*
 * jinja_parse.c — the Jinja lexer and parser: template source → AST.
 *
 * Key idea: the lexer turns the whole template into one token array first
 * (text runs, tag delimiters, expression tokens), applying whitespace
 * control as it goes, so the parser is a plain recursive descent over
 * tokens that never looks at raw text again.
 *
 * WHITESPACE CONTROL (as jinja2's lexer does it)
 *   - `{%-`, `{{-`, `{#-` strip all whitespace (newlines too) at the end of
 *     the text before the tag; `-%}`, `-}}`, `-#}` strip all whitespace at
 *     the start of the text after it.
 *   - trim_blocks: one "\n" right after `%}` or `#}` is dropped (`+%}`
 *     keeps it).
 *   - lstrip_blocks: spaces and tabs between the start of a line and a
 *     `{%` or `{#` are dropped (`{%+` keeps them). "Start of a line" is a
 *     newline inside the preceding text, or — when that text has none — the
 *     previous tag having ended with a newline it consumed (or the template
 *     start).
 *
 * EXPRESSION PRECEDENCE (lowest first, as in jinja2): `x if c else y`, or,
 * and, not, comparisons and (not) in, + -, ~, * / // %, **, unary - +,
 * then postfix (.attr, [index], [a:b:c], (call)), then filters `|f(...)`
 * and tests `is [not] t(...)`. So `a + b|trim` is `a + (b|trim)` and
 * `not x is defined` is `not (x is defined)`.
 *
 * RAW BLOCKS: `{% raw %}...{% endraw %}` is cut out by the lexer as one
 * text token (lex_raw), so nothing inside is ever lexed.
 *
 * LIMITATIONS: include/import/extends/block (no file access) are errors;
 * chained comparisons evaluate left to right pairwise.
 */
#include "tok/jinja.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { T_TEXT, T_VBEG, T_VEND, T_BBEG, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP, T_EOF };

typedef struct tok {
    uint8_t k;
    uint32_t off;
    const char *s; /* text, name or unescaped string */
    size_t n;
    int64_t i;
    double f;
    char op[3];
} tok;

typedef struct jp {
    tn_jinja *t;
    tok *toks;
    size_t n, cap, pos;
    jmp_buf jb;
    int depth;
} jp;

#define MAX_PARSE_DEPTH 200

void tn__jinja_linecol(const char *src, size_t len, size_t off, int *line, int *col)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (src[i] == '\n') {
            l++;
            c = 1;
        } else if (((unsigned char)src[i] & 0xC0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *col = c;
}

TN_PRINTF(3, 4)
_Noreturn static void perr(jp *p, size_t off, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line, col;
    tn__jinja_linecol(p->t->src, p->t->len, off, &line, &col);
    tn__err(TN_ERR_FORMAT, "jinja: line %d col %d: %s", line, col, msg);
    longjmp(p->jb, 1);
}

static void *palloc(jp *p, size_t n)
{
    void *r = tn__ja_alloc(&p->t->ar, n);
    if (!r) {
        tn__err(TN_ERR_NOMEM, "jinja: out of memory compiling the template");
        longjmp(p->jb, 2);
    }
    memset(r, 0, n);
    return r;
}

static tok *push_tok(jp *p, int k, size_t off)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        tok *nt = palloc(p, cap * sizeof *nt);
        if (p->n)
            memcpy(nt, p->toks, p->n * sizeof *nt);
        p->toks = nt;
        p->cap = cap;
    }
    tok *t = &p->toks[p->n++];
    memset(t, 0, sizeof *t);
    t->k = (uint8_t)k;
    t->off = (uint32_t)off;
    return t;
}

/* ---- lexer -------------------------------------------------------------- */

static size_t put_utf8(char *o, uint32_t c)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* A quoted string literal at s[*pos] (the quote); Python escapes. */
static void lex_string(jp *p, size_t *pos)
{
    const char *s = p->t->src;
    size_t len = p->t->len, start = *pos, i = start + 1;
    char q = s[start];
    size_t end = i; /* find the closing quote first: unescaping never grows */
    while (end < len && s[end] != q)
        end += s[end] == '\\' ? 2 : 1;
    char *o = palloc(p, TN_MIN(end, len) - start + 1);
    size_t n = 0;
    for (;;) {
        if (i >= len)
            perr(p, start, "unterminated string literal");
        char c = s[i];
        if (c == q) {
            i++;
            break;
        }
        if (c != '\\') {
            o[n++] = c;
            i++;
            continue;
        }
        if (i + 1 >= len)
            perr(p, start, "unterminated string literal");
        char e = s[i + 1];
        i += 2;
        switch (e) {
        case 'n': o[n++] = '\n'; break;
        case 't': o[n++] = '\t'; break;
        case 'r': o[n++] = '\r'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'v': o[n++] = '\v'; break;
        case 'a': o[n++] = '\a'; break;
        case '0': o[n++] = '\0'; break;
        case '\\': case '\'': case '"': o[n++] = e; break;
        case '\n': break;
        case 'x': case 'u': case 'U': {
            int nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t c2 = 0;
            for (int k = 0; k < nd; k++, i++) {
                if (i >= len || !isxdigit((unsigned char)s[i]))
                    perr(p, i - 2 - k, "bad \\%c escape", e);
                char h = s[i];
                c2 = c2 * 16 + (uint32_t)(isdigit((unsigned char)h) ? h - '0' : (tolower((unsigned char)h) - 'a' + 10));
            }
            if (c2 > 0x10FFFF)
                perr(p, i, "escape beyond U+10FFFF");
            n += put_utf8(o + n, c2); /* \x / \u need <= as many bytes as their source text */
            break;
        }
        default: o[n++] = '\\'; o[n++] = e; break;
        }
    }
    tok *t = push_tok(p, T_STR, start);
    t->s = o;
    t->n = n;
    *pos = i;
}

/* Tokens inside a tag from *pos to its closing delimiter; returns the
 * offset after the delimiter and its sign ('-', '+' or 0). */
static size_t lex_tag(jp *p, size_t pos, char kind, size_t tag_off, char *sign_out)
{
    const char *s = p->t->src;
    size_t len = p->t->len;
    int braces = 0;
    char close = kind == '{' ? '}' : '%';
    for (;;) {
        while (pos < len && isspace((unsigned char)s[pos]))
            pos++;
        if (pos >= len)
            perr(p, tag_off, "unclosed tag (no '%c}')", close);
        size_t q = pos;
        char sign = 0;
        if ((s[q] == '-' || s[q] == '+') && q + 2 < len + 0 && s[q + 1] == close && s[q + 2] == '}')
            sign = s[q++];
        if (q + 1 < len && s[q] == close && s[q + 1] == '}' && (close == '%' || braces == 0)) {
            push_tok(p, kind == '{' ? T_VEND : T_BEND, pos);
            *sign_out = sign;
            return q + 2;
        }
        char c = s[pos];
        if (isalpha((unsigned char)c) || c == '_') {
            size_t b = pos;
            while (pos < len && (isalnum((unsigned char)s[pos]) || s[pos] == '_'))
                pos++;
            tok *t = push_tok(p, T_NAME, b);
            t->s = s + b;
            t->n = pos - b;
        } else if (isdigit((unsigned char)c)) {
            size_t b = pos;
            bool fl = false;
            while (pos < len && (isdigit((unsigned char)s[pos]) || s[pos] == '_'))
                pos++;
            if (pos + 1 < len && s[pos] == '.' && isdigit((unsigned char)s[pos + 1])) {
                fl = true;
                pos++;
                while (pos < len && isdigit((unsigned char)s[pos]))
                    pos++;
            }
            if (pos < len && (s[pos] == 'e' || s[pos] == 'E')) {
                size_t e = pos + 1;
                if (e < len && (s[e] == '+' || s[e] == '-'))
                    e++;
                if (e < len && isdigit((unsigned char)s[e])) {
                    fl = true;
                    pos = e;
                    while (pos < len && isdigit((unsigned char)s[pos]))
                        pos++;
                }
            }
            char num[64];
            size_t nn = 0;
            for (size_t k = b; k < pos && nn < sizeof num - 1; k++)
                if (s[k] != '_')
                    num[nn++] = s[k];
            num[nn] = 0;
            tok *t = push_tok(p, fl ? T_FLOAT : T_INT, b);
            if (fl) {
                t->f = strtod(num, NULL);
            } else {
                errno = 0;
                t->i = strtoll(num, NULL, 10);
                if (errno)
                    perr(p, b, "integer literal out of range");
            }
        } else if (c == '\'' || c == '"') {
            lex_string(p, &pos);
        } else {
            static const char *two[] = {"**", "//", "==", "!=", "<=", ">="};
            size_t w = 0;
            for (size_t k = 0; k < TN_ARRAY_LEN(two); k++)
                if (pos + 1 < len && s[pos] == two[k][0] && s[pos + 1] == two[k][1])
                    w = 2;
            if (!w && strchr("+-*/%~<>=.,:|()[]{}", c))
                w = 1;
            if (!w)
                perr(p, pos, "unexpected character '%c'", c);
            if (c == '{')
                braces++;
            else if (c == '}')
                braces--;
            tok *t = push_tok(p, T_OP, pos);
            memcpy(t->op, s + pos, w);
            pos += w;
        }
    }
}

static bool is_name(tok *t, const char *name);

/* The body of `{% raw %}` (tag at s[tag]) from s[body] up to its
 * `{% endraw %}` becomes one text token, untouched, with the whitespace
 * control of the endraw tag (`{%- endraw`, lstrip_blocks) applied to its
 * end and of its `-%}` / trim_blocks to what follows. Returns where
 * lexing goes on. */
static size_t lex_raw(jp *p, size_t tag, size_t body, bool *line_start)
{
    const char *s = p->t->src;
    size_t len = p->t->len, e = body, ee = 0;
    char s1 = 0, s2 = 0;
    for (;; e++) {
        while (e + 1 < len && !(s[e] == '{' && s[e + 1] == '%'))
            e++;
        if (e + 1 >= len)
            perr(p, tag, "unclosed {%% raw %%} block (no {%% endraw %%})");
        size_t q = e + 2;
        s1 = q < len && (s[q] == '-' || s[q] == '+') ? s[q++] : 0;
        while (q < len && isspace((unsigned char)s[q]))
            q++;
        if (q + 6 > len || memcmp(s + q, "endraw", 6) != 0)
            continue;
        q += 6;
        while (q < len && isspace((unsigned char)s[q]))
            q++;
        s2 = q < len && (s[q] == '-' || s[q] == '+') ? s[q++] : 0;
        if (q + 1 < len && s[q] == '%' && s[q + 1] == '}') {
            ee = q + 2;
            break;
        }
    }
    size_t ce = e;
    if (s1 == '-') {
        while (ce > body && isspace((unsigned char)s[ce - 1]))
            ce--;
    } else if (s1 != '+' && p->t->o.lstrip_blocks) {
        size_t l = ce;
        while (l > body && s[l - 1] != '\n')
            l--;
        if (l > body || *line_start) {
            size_t k = l;
            while (k < ce && (s[k] == ' ' || s[k] == '\t'))
                k++;
            if (k == ce)
                ce = l;
        }
    }
    if (ce > body) {
        tok *k = push_tok(p, T_TEXT, body);
        k->s = s + body;
        k->n = ce - body;
    }
    if (s2 == '-') {
        while (ee < len && isspace((unsigned char)s[ee]))
            ee++;
    } else if (s2 != '+' && p->t->o.trim_blocks && ee < len && s[ee] == '\n') {
        ee++;
    }
    *line_start = ee > 0 && s[ee - 1] == '\n';
    return ee;
}

static void lex(jp *p)
{
    const char *s = p->t->src;
    size_t len = p->t->len, pos = 0;
    bool line_start = true;
    bool trim = p->t->o.trim_blocks, lstrip = p->t->o.lstrip_blocks;
    for (;;) {
        size_t t = pos;
        while (t + 1 < len && !(s[t] == '{' && (s[t + 1] == '{' || s[t + 1] == '%' || s[t + 1] == '#')))
            t++;
        if (t + 1 >= len) {
            if (pos < len) {
                tok *k = push_tok(p, T_TEXT, pos);
                k->s = s + pos;
                k->n = len - pos;
            }
            break;
        }
        char kind = s[t + 1];
        char sign = t + 2 < len && (s[t + 2] == '-' || s[t + 2] == '+') ? s[t + 2] : 0;
        size_t te = t;
        if (sign == '-') {
            while (te > pos && isspace((unsigned char)s[te - 1]))
                te--;
        } else if (sign != '+' && lstrip && kind != '{') {
            size_t l = te;
            while (l > pos && s[l - 1] != '\n')
                l--;
            if (l > pos || line_start) {
                size_t k = l;
                while (k < te && isspace((unsigned char)s[k]))
                    k++;
                if (k == te)
                    te = l;
            }
        }
        if (te > pos) {
            tok *k = push_tok(p, T_TEXT, pos);
            k->s = s + pos;
            k->n = te - pos;
        }
        size_t after;
        char esign = 0;
        if (kind == '#') {
            size_t e = t + 2;
            while (e + 1 < len && !(s[e] == '#' && s[e + 1] == '}'))
                e++;
            if (e + 1 >= len)
                perr(p, t, "unclosed comment");
            if (s[e - 1] == '-' && e - 1 >= t + 2 + (sign ? 1 : 0))
                esign = '-';
            after = e + 2;
        } else {
            push_tok(p, kind == '{' ? T_VBEG : T_BBEG, t);
            after = lex_tag(p, t + 2 + (sign ? 1 : 0), kind, t, &esign);
        }
        /* {% raw %}: as jinja2, trim_blocks does not apply after it */
        bool raw = kind == '%' && p->n >= 3 && p->toks[p->n - 3].k == T_BBEG && is_name(&p->toks[p->n - 2], "raw") &&
                   p->toks[p->n - 1].k == T_BEND;
        if (esign == '-') {
            while (after < len && isspace((unsigned char)s[after]))
                after++;
        } else if (!raw && kind != '{' && trim && esign != '+' && after < len && s[after] == '\n') {
            after++;
        }
        line_start = after > 0 && s[after - 1] == '\n';
        pos = after;
        if (raw) {
            p->n -= 3;
            pos = lex_raw(p, t, pos, &line_start);
        }
    }
    push_tok(p, T_EOF, len);
}

/* ---- parser helpers ----------------------------------------------------- */

static tok *peek(jp *p) { return &p->toks[p->pos]; }
static tok *peek2(jp *p) { return &p->toks[p->pos + 1 < p->n ? p->pos + 1 : p->pos]; }
static tok *next(jp *p)
{
    tok *t = &p->toks[p->pos];
    if (t->k != T_EOF)
        p->pos++;
    return t;
}
static bool is_op(tok *t, const char *op) { return t->k == T_OP && !strcmp(t->op, op); }
static bool is_name(tok *t, const char *name)
{
    return t->k == T_NAME && t->n == strlen(name) && !memcmp(t->s, name, t->n);
}
static bool accept_op(jp *p, const char *op)
{
    if (is_op(peek(p), op)) {
        p->pos++;
        return true;
    }
    return false;
}
static bool accept_name(jp *p, const char *name)
{
    if (is_name(peek(p), name)) {
        p->pos++;
        return true;
    }
    return false;
}
static const char *tok_desc(tok *t, char *buf, size_t cap)
{
    switch (t->k) {
    case T_TEXT: return "template text";
    case T_VBEG: return "'{{'";
    case T_VEND: return "'}}'";
    case T_BBEG: return "'{%'";
    case T_BEND: return "'%}'";
    case T_STR: return "a string";
    case T_INT: case T_FLOAT: return "a number";
    case T_EOF: return "end of template";
    case T_NAME: snprintf(buf, cap, "'%.*s'", (int)TN_MIN(t->n, 40), t->s); return buf;
    default: snprintf(buf, cap, "'%s'", t->op); return buf;
    }
}
static void expect_op(jp *p, const char *op)
{
    if (!accept_op(p, op)) {
        char b[64];
        perr(p, peek(p)->off, "expected '%s', got %s", op, tok_desc(peek(p), b, sizeof b));
    }
}
static void expect_kind(jp *p, int k, const char *what)
{
    if (peek(p)->k != k) {
        char b[64];
        perr(p, peek(p)->off, "expected %s, got %s", what, tok_desc(peek(p), b, sizeof b));
    }
    next(p);
}
static const char *pstrdup(jp *p, const char *s, size_t n)
{
    char *r = palloc(p, n + 1);
    memcpy(r, s, n);
    return r;
}
static const char *expect_ident(jp *p)
{
    tok *t = peek(p);
    if (t->k != T_NAME) {
        char b[64];
        perr(p, t->off, "expected a name, got %s", tok_desc(t, b, sizeof b));
    }
    next(p);
    return pstrdup(p, t->s, t->n);
}

static jnode *mk(jp *p, int kind, size_t off)
{
    jnode *n = palloc(p, sizeof *n);
    n->kind = (uint8_t)kind;
    n->off = (uint32_t)off;
    return n;
}

/* A growable node vector in the compile arena. */
typedef struct nvec {
    jnode **a;
    int n, cap;
} nvec;
static void nv_push(jp *p, nvec *v, jnode *x)
{
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 4;
        jnode **na = palloc(p, (size_t)cap * sizeof *na);
        if (v->n)
            memcpy(na, v->a, (size_t)v->n * sizeof *na);
        v->a = na;
        v->cap = cap;
    }
    v->a[v->n++] = x;
}
typedef struct svec {
    const char **a;
    int n, cap;
} svec;
static void sv_push(jp *p, svec *v, const char *x)
{
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 4;
        const char **na = palloc(p, (size_t)cap * sizeof *na);
        if (v->n)
            memcpy(na, v->a, (size_t)v->n * sizeof *na);
        v->a = na;
        v->cap = cap;
    }
    v->a[v->n++] = x;
}

/* ---- expressions -------------------------------------------------------- */

static jnode *parse_expr(jp *p);
static jnode *parse_cond(jp *p, bool with_cond);
static jnode *parse_or(jp *p);
static jnode *parse_unary(jp *p, bool with_filter);

static void enter(jp *p)
{
    if (++p->depth > MAX_PARSE_DEPTH)
        perr(p, peek(p)->off, "expression or block nesting deeper than %d", MAX_PARSE_DEPTH);
}

/* (args, kw=args) after the '(' was consumed. */
static void parse_args(jp *p, jnode *n)
{
    nvec pos = {0}, kwv = {0};
    svec kw = {0};
    while (!accept_op(p, ")")) {
        if (pos.n + kwv.n > 0)
            expect_op(p, ",");
        if (accept_op(p, ")"))
            break;
        if (peek(p)->k == T_NAME && is_op(peek2(p), "=")) {
            sv_push(p, &kw, expect_ident(p));
            next(p);
            nv_push(p, &kwv, parse_expr(p));
        } else {
            if (kwv.n)
                perr(p, peek(p)->off, "positional argument after a keyword argument");
            nv_push(p, &pos, parse_expr(p));
        }
    }
    n->kids = pos.a;
    n->n_kids = pos.n;
    n->kids2 = kwv.a;
    n->n_kids2 = kwv.n;
    n->names = kw.a;
    n->n_names = kw.n;
}

static jnode *parse_primary(jp *p)
{
    tok *t = peek(p);
    jnode *n;
    char b[64];
    switch (t->k) {
    case T_NAME:
        next(p);
        n = mk(p, N_LIT, t->off);
        if (is_name(t, "true") || is_name(t, "True")) {
            n->lit = tn__jv_bool(true);
        } else if (is_name(t, "false") || is_name(t, "False")) {
            n->lit = tn__jv_bool(false);
        } else if (is_name(t, "none") || is_name(t, "None")) {
            n->lit = tn__jv_none();
        } else {
            n->kind = N_NAME;
            n->s = pstrdup(p, t->s, t->n);
            n->sn = t->n;
        }
        return n;
    case T_STR: {
        next(p);
        n = mk(p, N_LIT, t->off);
        /* adjacent literals concatenate: 'a' "b" */
        size_t total = t->n, k = p->pos;
        while (p->toks[k].k == T_STR)
            total += p->toks[k++].n;
        char *s = palloc(p, total + 1);
        memcpy(s, t->s, t->n);
        size_t o = t->n;
        while (peek(p)->k == T_STR) {
            tok *u = next(p);
            memcpy(s + o, u->s, u->n);
            o += u->n;
        }
        n->lit.k = JV_STR;
        n->lit.u.s.p = s;
        n->lit.u.s.n = total;
        return n;
    }
    case T_INT:
        next(p);
        n = mk(p, N_LIT, t->off);
        n->lit = tn__jv_int(t->i);
        return n;
    case T_FLOAT:
        next(p);
        n = mk(p, N_LIT, t->off);
        n->lit = tn__jv_float(t->f);
        return n;
    case T_OP:
        if (is_op(t, "(")) {
            next(p);
            if (accept_op(p, ")"))
                return mk(p, N_TUPLE, t->off);
            jnode *e = parse_expr(p);
            if (!is_op(peek(p), ",")) {
                expect_op(p, ")");
                return e;
            }
            nvec v = {0};
            nv_push(p, &v, e);
            while (accept_op(p, ",")) {
                if (is_op(peek(p), ")"))
                    break;
                nv_push(p, &v, parse_expr(p));
            }
            expect_op(p, ")");
            n = mk(p, N_TUPLE, t->off);
            n->kids = v.a;
            n->n_kids = v.n;
            return n;
        }
        if (is_op(t, "[")) {
            next(p);
            nvec v = {0};
            while (!accept_op(p, "]")) {
                if (v.n)
                    expect_op(p, ",");
                if (accept_op(p, "]"))
                    break;
                nv_push(p, &v, parse_expr(p));
            }
            n = mk(p, N_LIST, t->off);
            n->kids = v.a;
            n->n_kids = v.n;
            return n;
        }
        if (is_op(t, "{")) {
            next(p);
            nvec k = {0}, v = {0};
            while (!accept_op(p, "}")) {
                if (k.n)
                    expect_op(p, ",");
                if (accept_op(p, "}"))
                    break;
                nv_push(p, &k, parse_expr(p));
                expect_op(p, ":");
                nv_push(p, &v, parse_expr(p));
            }
            n = mk(p, N_DICT, t->off);
            n->kids = k.a;
            n->n_kids = k.n;
            n->kids2 = v.a;
            n->n_kids2 = v.n;
            return n;
        }
        break;
    default: break;
    }
    perr(p, t->off, "unexpected %s in expression", tok_desc(t, b, sizeof b));
}

static jnode *parse_postfix(jp *p, jnode *n)
{
    for (;;) {
        tok *t = peek(p);
        if (is_op(t, ".")) {
            next(p);
            tok *a = peek(p);
            jnode *m = mk(p, N_ATTR, t->off);
            m->a = n;
            if (a->k == T_NAME) {
                m->s = expect_ident(p);
                m->sn = a->n;
            } else if (a->k == T_INT) {
                next(p);
                m->kind = N_INDEX;
                m->b = mk(p, N_LIT, a->off);
                m->b->lit = tn__jv_int(a->i);
            } else {
                char b[64];
                perr(p, a->off, "expected an attribute name after '.', got %s", tok_desc(a, b, sizeof b));
            }
            n = m;
        } else if (is_op(t, "[")) {
            next(p);
            jnode *m = mk(p, N_INDEX, t->off);
            m->a = n;
            jnode *lo = NULL;
            if (!is_op(peek(p), ":"))
                lo = parse_expr(p);
            if (accept_op(p, ":")) {
                m->kind = N_SLICE;
                m->b = lo;
                if (!is_op(peek(p), ":") && !is_op(peek(p), "]"))
                    m->c = parse_expr(p);
                if (accept_op(p, ":") && !is_op(peek(p), "]"))
                    m->d = parse_expr(p);
            } else {
                m->b = lo;
            }
            expect_op(p, "]");
            n = m;
        } else if (is_op(t, "(")) {
            next(p);
            jnode *m = mk(p, N_CALL, n->off); /* errors point at the callee */
            m->a = n;
            parse_args(p, m);
            n = m;
        } else {
            return n;
        }
    }
}

/* A filter application `name` or `name(args)` on operand a. */
static jnode *parse_filter_call(jp *p, jnode *a)
{
    tok *t = peek(p);
    jnode *f = mk(p, N_FILTER, t->off);
    f->a = a;
    f->s = expect_ident(p);
    while (accept_op(p, ".")) { /* dotted filter names: keep the last part */
        f->s = expect_ident(p);
    }
    f->sn = strlen(f->s);
    if (accept_op(p, "("))
        parse_args(p, f);
    return f;
}

static bool starts_test_arg(tok *t)
{
    if (t->k == T_STR || t->k == T_INT || t->k == T_FLOAT)
        return true;
    if (t->k == T_OP)
        return is_op(t, "[") || is_op(t, "{");
    if (t->k == T_NAME) {
        static const char *stop[] = {"else", "or", "and", "if", "in", "is", "not"};
        for (size_t i = 0; i < TN_ARRAY_LEN(stop); i++)
            if (is_name(t, stop[i]))
                return false;
        return true;
    }
    return false;
}

static jnode *parse_filter_expr(jp *p, jnode *n)
{
    for (;;) {
        tok *t = peek(p);
        if (is_op(t, "|")) {
            next(p);
            n = parse_filter_call(p, n);
        } else if (is_name(t, "is")) {
            next(p);
            jnode *m = mk(p, N_TEST, t->off);
            m->a = n;
            if (accept_name(p, "not"))
                m->op = 1;
            tok *nm = peek(p);
            if (nm->k == T_NAME && (is_name(nm, "none") || is_name(nm, "true") || is_name(nm, "false"))) {
                next(p);
                m->s = pstrdup(p, nm->s, nm->n);
            } else {
                m->s = expect_ident(p);
            }
            m->sn = strlen(m->s);
            if (accept_op(p, "(")) {
                parse_args(p, m);
            } else if (starts_test_arg(peek(p))) {
                jnode *arg = parse_postfix(p, parse_primary(p));
                m->kids = palloc(p, sizeof(jnode *));
                m->kids[0] = arg;
                m->n_kids = 1;
            }
            n = m;
        } else {
            return n;
        }
    }
}

static jnode *parse_unary(jp *p, bool with_filter)
{
    enter(p);
    tok *t = peek(p);
    jnode *n;
    if (is_op(t, "-") || is_op(t, "+")) {
        next(p);
        n = mk(p, N_UNARY, t->off);
        n->op = t->op[0];
        n->a = parse_unary(p, false);
    } else {
        n = parse_primary(p);
    }
    n = parse_postfix(p, n);
    if (with_filter)
        n = parse_filter_expr(p, n);
    p->depth--;
    return n;
}

static jnode *binary(jp *p, size_t off, char op, jnode *a, jnode *b)
{
    jnode *n = mk(p, N_BINARY, off);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static jnode *parse_pow(jp *p)
{
    jnode *a = parse_unary(p, true);
    while (is_op(peek(p), "**")) {
        size_t off = next(p)->off;
        a = binary(p, off, 'P', a, parse_unary(p, true));
    }
    return a;
}

static jnode *parse_math2(jp *p)
{
    jnode *a = parse_pow(p);
    for (;;) {
        tok *t = peek(p);
        char op = is_op(t, "*") ? '*' : is_op(t, "/") ? '/' : is_op(t, "//") ? 'F' : is_op(t, "%") ? '%' : 0;
        if (!op)
            return a;
        next(p);
        a = binary(p, t->off, op, a, parse_pow(p));
    }
}

static jnode *parse_concat(jp *p)
{
    jnode *a = parse_math2(p);
    while (is_op(peek(p), "~")) {
        size_t off = next(p)->off;
        a = binary(p, off, '~', a, parse_math2(p));
    }
    return a;
}

static jnode *parse_math1(jp *p)
{
    jnode *a = parse_concat(p);
    for (;;) {
        tok *t = peek(p);
        char op = is_op(t, "+") ? '+' : is_op(t, "-") ? '-' : 0;
        if (!op)
            return a;
        next(p);
        a = binary(p, t->off, op, a, parse_concat(p));
    }
}

static jnode *parse_compare(jp *p)
{
    jnode *a = parse_math1(p);
    for (;;) {
        tok *t = peek(p);
        char op = 0;
        if (is_op(t, "=="))
            op = 'e';
        else if (is_op(t, "!="))
            op = 'n';
        else if (is_op(t, "<"))
            op = '<';
        else if (is_op(t, "<="))
            op = 'l';
        else if (is_op(t, ">"))
            op = '>';
        else if (is_op(t, ">="))
            op = 'g';
        else if (is_name(t, "in"))
            op = 'i';
        else if (is_name(t, "not") && is_name(peek2(p), "in"))
            op = 'I';
        if (!op)
            return a;
        next(p);
        if (op == 'I')
            next(p);
        a = binary(p, t->off, op, a, parse_math1(p));
    }
}

static jnode *parse_not(jp *p)
{
    tok *t = peek(p);
    if (is_name(t, "not")) {
        next(p);
        enter(p);
        jnode *n = mk(p, N_UNARY, t->off);
        n->op = 'n';
        n->a = parse_not(p);
        p->depth--;
        return n;
    }
    return parse_compare(p);
}

static jnode *parse_and(jp *p)
{
    jnode *a = parse_not(p);
    while (is_name(peek(p), "and")) {
        jnode *n = mk(p, N_AND, next(p)->off);
        n->a = a;
        n->b = parse_not(p);
        a = n;
    }
    return a;
}

static jnode *parse_or(jp *p)
{
    jnode *a = parse_and(p);
    while (is_name(peek(p), "or")) {
        jnode *n = mk(p, N_OR, next(p)->off);
        n->a = a;
        n->b = parse_and(p);
        a = n;
    }
    return a;
}

static jnode *parse_cond(jp *p, bool with_cond)
{
    enter(p);
    jnode *a = parse_or(p);
    while (with_cond && is_name(peek(p), "if")) {
        jnode *n = mk(p, N_COND, next(p)->off);
        n->a = a;
        n->b = parse_or(p);
        if (accept_name(p, "else"))
            n->c = parse_cond(p, true);
        a = n;
    }
    p->depth--;
    return a;
}

static jnode *parse_expr(jp *p) { return parse_cond(p, true); }

/* `a, b` without parentheses (set values): a tuple when there is a comma. */
static jnode *parse_tuple_expr(jp *p)
{
    jnode *e = parse_expr(p);
    if (!is_op(peek(p), ","))
        return e;
    nvec v = {0};
    nv_push(p, &v, e);
    jnode *n = mk(p, N_TUPLE, e->off);
    while (accept_op(p, ","))
        nv_push(p, &v, parse_expr(p));
    n->kids = v.a;
    n->n_kids = v.n;
    return n;
}

/* ---- statements --------------------------------------------------------- */

/* Parses statements until `{% END %}` for END in ends (NULL-terminated;
 * NULL ends: the template's end). Returns the index of the end name hit;
 * the parser then stands after that name (before the rest of the tag). */
static int parse_body(jp *p, const char *const *ends, nvec *out, size_t open_off);

static void end_tag(jp *p) { expect_kind(p, T_BEND, "'%}'"); }

static jnode *parse_if(jp *p, size_t off)
{
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    jnode *n = mk(p, N_IF, off);
    n->a = parse_expr(p);
    end_tag(p);
    nvec body = {0}, els = {0};
    int e = parse_body(p, ends, &body, off);
    n->kids = body.a;
    n->n_kids = body.n;
    if (e == 0) {
        nv_push(p, &els, parse_if(p, p->toks[p->pos - 1].off));
    } else if (e == 1) {
        static const char *const ends2[] = {"endif", NULL};
        end_tag(p);
        parse_body(p, ends2, &els, off);
        end_tag(p);
    } else {
        end_tag(p);
    }
    n->kids2 = els.a;
    n->n_kids2 = els.n;
    return n;
}

static jnode *parse_stmt(jp *p)
{
    tok *bt = next(p); /* T_BBEG */
    tok *t = peek(p);
    size_t off = bt->off;
    if (t->k != T_NAME) {
        char b[64];
        perr(p, t->off, "expected a statement name, got %s", tok_desc(t, b, sizeof b));
    }
    enter(p);
    jnode *n;
    if (accept_name(p, "if")) {
        n = parse_if(p, off);
    } else if (accept_name(p, "for")) {
        static const char *const ends[] = {"else", "endfor", NULL};
        n = mk(p, N_FOR, off);
        svec names = {0};
        bool paren = accept_op(p, "(");
        do {
            sv_push(p, &names, expect_ident(p));
        } while (accept_op(p, ","));
        if (paren)
            expect_op(p, ")");
        n->names = names.a;
        n->n_names = names.n;
        if (!accept_name(p, "in"))
            perr(p, peek(p)->off, "expected 'in' in a for loop");
        n->a = parse_cond(p, false);
        if (is_op(peek(p), ",")) { /* for x in a, b */
            nvec v = {0};
            nv_push(p, &v, n->a);
            jnode *tu = mk(p, N_TUPLE, n->a->off);
            while (accept_op(p, ","))
                nv_push(p, &v, parse_cond(p, false));
            tu->kids = v.a;
            tu->n_kids = v.n;
            n->a = tu;
        }
        if (accept_name(p, "if"))
            n->b = parse_cond(p, false);
        if (accept_name(p, "recursive"))
            n->op = 1;
        end_tag(p);
        nvec body = {0}, els = {0};
        int e = parse_body(p, ends, &body, off);
        end_tag(p);
        if (e == 0) {
            static const char *const ends2[] = {"endfor", NULL};
            parse_body(p, ends2, &els, off);
            end_tag(p);
        }
        n->kids = body.a;
        n->n_kids = body.n;
        n->kids2 = els.a;
        n->n_kids2 = els.n;
    } else if (accept_name(p, "set")) {
        n = mk(p, N_SET, off);
        svec names = {0};
        tok *nt = peek(p);
        const char *first = expect_ident(p);
        if (is_op(peek(p), ".")) {
            next(p);
            jnode *tg = mk(p, N_ATTR, nt->off);
            tg->a = mk(p, N_NAME, nt->off);
            tg->a->s = first;
            tg->a->sn = strlen(first);
            tg->s = expect_ident(p);
            tg->sn = strlen(tg->s);
            n->b = tg;
        } else {
            sv_push(p, &names, first);
            while (accept_op(p, ","))
                sv_push(p, &names, expect_ident(p));
        }
        n->names = names.a;
        n->n_names = names.n;
        if (accept_op(p, "=")) {
            n->a = parse_tuple_expr(p);
            end_tag(p);
        } else {
            static const char *const ends[] = {"endset", NULL};
            if (n->b || names.n != 1)
                perr(p, peek(p)->off, "a block set takes one plain name");
            end_tag(p);
            nvec body = {0};
            parse_body(p, ends, &body, off);
            end_tag(p);
            n->kids = body.a;
            n->n_kids = body.n;
        }
    } else if (accept_name(p, "macro")) {
        static const char *const ends[] = {"endmacro", NULL};
        n = mk(p, N_MACRO, off);
        n->s = expect_ident(p);
        n->sn = strlen(n->s);
        expect_op(p, "(");
        svec params = {0};
        nvec defs = {0};
        while (!accept_op(p, ")")) {
            if (params.n)
                expect_op(p, ",");
            sv_push(p, &params, expect_ident(p));
            nv_push(p, &defs, accept_op(p, "=") ? parse_expr(p) : NULL);
        }
        end_tag(p);
        nvec body = {0};
        parse_body(p, ends, &body, off);
        if (peek(p)->k == T_NAME)
            next(p); /* {% endmacro name %} */
        end_tag(p);
        n->names = params.a;
        n->n_names = params.n;
        n->kids2 = defs.a;
        n->n_kids2 = defs.n;
        n->kids = body.a;
        n->n_kids = body.n;
    } else if (accept_name(p, "call")) {
        static const char *const ends[] = {"endcall", NULL};
        n = mk(p, N_CALLBLK, off);
        svec params = {0};
        if (accept_op(p, "(")) {
            while (!accept_op(p, ")")) {
                if (params.n)
                    expect_op(p, ",");
                sv_push(p, &params, expect_ident(p));
            }
        }
        n->names = params.a;
        n->n_names = params.n;
        n->a = parse_expr(p);
        if (n->a->kind != N_CALL)
            perr(p, n->a->off, "{%% call %%} needs a macro call");
        end_tag(p);
        nvec body = {0};
        parse_body(p, ends, &body, off);
        end_tag(p);
        n->kids = body.a;
        n->n_kids = body.n;
    } else if (accept_name(p, "filter")) {
        static const char *const ends[] = {"endfilter", NULL};
        n = mk(p, N_FILTBLK, off);
        jnode *f = parse_filter_call(p, NULL);
        while (accept_op(p, "|"))
            f = parse_filter_call(p, f);
        n->a = f;
        end_tag(p);
        nvec body = {0};
        parse_body(p, ends, &body, off);
        end_tag(p);
        n->kids = body.a;
        n->n_kids = body.n;
    } else if (accept_name(p, "generation")) {
        /* Hugging Face's marker for assistant spans: renders its body. */
        static const char *const ends[] = {"endgeneration", NULL};
        n = mk(p, N_IF, off);
        n->a = mk(p, N_LIT, off);
        n->a->lit = tn__jv_bool(true);
        end_tag(p);
        nvec body = {0};
        parse_body(p, ends, &body, off);
        end_tag(p);
        n->kids = body.a;
        n->n_kids = body.n;
    } else if (accept_name(p, "break")) {
        n = mk(p, N_BREAK, off);
        end_tag(p);
    } else if (accept_name(p, "continue")) {
        n = mk(p, N_CONTINUE, off);
        end_tag(p);
    } else if (accept_name(p, "do")) {
        n = mk(p, N_DO, off);
        n->a = parse_tuple_expr(p);
        end_tag(p);
    } else {
        static const char *const nofile[] = {"include", "import", "from", "extends", "block"};
        for (size_t i = 0; i < TN_ARRAY_LEN(nofile); i++)
            if (is_name(t, nofile[i]))
                perr(p, t->off, "'%s' is not supported (templates have no file access)", nofile[i]);
        perr(p, t->off, "unknown statement '%.*s'", (int)TN_MIN(t->n, 40), t->s);
    }
    p->depth--;
    return n;
}

static int parse_body(jp *p, const char *const *ends, nvec *out, size_t open_off)
{
    for (;;) {
        tok *t = peek(p);
        switch (t->k) {
        case T_TEXT: {
            next(p);
            jnode *n = mk(p, N_TEXT, t->off);
            n->s = t->s;
            n->sn = t->n;
            nv_push(p, out, n);
            break;
        }
        case T_VBEG: {
            next(p);
            jnode *n = mk(p, N_OUT, t->off);
            n->a = parse_expr(p);
            expect_kind(p, T_VEND, "'}}'");
            nv_push(p, out, n);
            break;
        }
        case T_BBEG: {
            tok *nm = peek2(p);
            if (ends)
                for (int i = 0; ends[i]; i++)
                    if (is_name(nm, ends[i])) {
                        p->pos += 2;
                        return i;
                    }
            if (nm->k == T_NAME) {
                static const char *const closers[] = {"endif", "endfor", "endset", "endmacro", "endcall",
                                                      "endfilter", "elif", "else", "endgeneration"};
                for (size_t i = 0; i < TN_ARRAY_LEN(closers); i++)
                    if (is_name(nm, closers[i]))
                        perr(p, nm->off, "unexpected '%s'%s", closers[i],
                             ends ? " (a different block is open)" : " (no block is open)");
            }
            nv_push(p, out, parse_stmt(p));
            break;
        }
        case T_EOF:
            if (ends) {
                int line, col;
                tn__jinja_linecol(p->t->src, p->t->len, open_off, &line, &col);
                int last = 0;
                while (ends[last + 1])
                    last++;
                perr(p, t->off, "unexpected end of template: the block opened at line %d col %d needs '%s'", line,
                     col, ends[last]);
            }
            return -1;
        default: {
            char b[64];
            perr(p, t->off, "unexpected %s", tok_desc(t, b, sizeof b));
        }
        }
    }
}

/* ---- API ---------------------------------------------------------------- */

tn_status tn__jinja_compile(const char *src, size_t len, const tn_jinja_opts *opts, tn_jinja **out)
{
    *out = NULL;
    if (len > UINT32_MAX - 1)
        return tn__err(TN_ERR_RANGE, "jinja: template of %zu bytes is too large", len);
    tn_jinja *t = calloc(1, sizeof *t);
    if (!t)
        return tn__err(TN_ERR_NOMEM, "jinja: out of memory");
    t->ar.max = (size_t)-1;
    if (opts)
        t->o = *opts;
    if (!t->o.max_steps)
        t->o.max_steps = 10000000;
    if (!t->o.max_depth)
        t->o.max_depth = 64;
    if (!t->o.max_output)
        t->o.max_output = (size_t)16 << 20;
    if (!t->o.max_memory)
        t->o.max_memory = (size_t)256 << 20;
    if (t->o.today) { /* the caller's string need not outlive the template */
        size_t n = strlen(t->o.today);
        char *d = tn__ja_alloc(&t->ar, n + 1);
        if (!d) {
            free(t);
            return tn__err(TN_ERR_NOMEM, "jinja: out of memory");
        }
        memcpy(d, t->o.today, n + 1);
        t->o.today = d;
    }
    t->ar.max = (size_t)-1;
    jp *p = calloc(1, sizeof *p);
    char *s = tn__ja_alloc(&t->ar, len + 1);
    if (!p || !s) {
        free(p);
        tn__jinja_free(t);
        return tn__err(TN_ERR_NOMEM, "jinja: out of memory");
    }
    memcpy(s, src, len);
    s[len] = 0;
    t->src = s;
    t->len = len;
    p->t = t;
    int rc = setjmp(p->jb);
    if (rc) {
        free(p);
        tn__jinja_free(t);
        return rc == 2 ? TN_ERR_NOMEM : TN_ERR_FORMAT;
    }
    lex(p);
    nvec body = {0};
    parse_body(p, NULL, &body, 0);
    t->body = body.a;
    t->n_body = body.n;
    free(p);
    *out = t;
    return TN_OK;
}

void tn__jinja_free(tn_jinja *t)
{
    if (!t)
        return;
    tn__ja_free(&t->ar);
    free(t);
}
