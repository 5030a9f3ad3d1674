/*
 * jinja_eval.c — the Jinja evaluator: expressions, statements, scopes,
 * macros, and the render entry point.
 *
 * Key idea: a tree walk over the AST with Python's semantics. Scopes are a
 * chain of frames: the root frame holds the context variables and top-level
 * sets; a for loop pushes one frame for the whole loop (so a set inside a
 * loop does not leak out, which is why templates use namespace()); a macro
 * call pushes a frame whose parent is the frame the macro was defined in.
 * Errors longjmp to tn__jinja_render; all memory is in the render arena.
 *
 * UNDEFINED (jinja2's default Undefined): a missing name, key, attribute or
 * index evaluates to undefined, which prints as "", is false, iterates as
 * empty and has length 0; using it as an operand of arithmetic, or taking
 * an attribute or item of it, is an error naming it.
 *
 * BOUNDS: every node evaluated counts one step (max_steps); macro calls
 * nest at most max_depth; output and arena bytes are capped (jinja_value.c).
 */
#include "tok/jinja.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Noreturn void tn__jx_fail(jx *x, tn_status st, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = 0, col = 0;
    if (x->at)
        tn__jinja_linecol(x->t->src, x->t->len, x->at->off, &line, &col);
    tn__err(st, "jinja: line %d col %d: %s", line, col, msg);
    x->st = st;
    longjmp(x->jb, 1);
}

static void step(jx *x)
{
    if (++x->steps > x->t->o.max_steps)
        tn__jx_fail(x, TN_ERR_RANGE, "step limit (%llu) reached", (unsigned long long)x->t->o.max_steps);
}

static jv undef_named(const char *name, size_t n)
{
    jv v = {.k = JV_UNDEF};
    v.u.s.p = name;
    v.u.s.n = n;
    return v;
}

_Noreturn static void fail_undef(jx *x, jv v, const char *what)
{
    if (v.u.s.p)
        tn__jx_fail(x, TN_ERR_INVALID, "'%.*s' is undefined (%s)", (int)TN_MIN(v.u.s.n, 60), v.u.s.p, what);
    tn__jx_fail(x, TN_ERR_INVALID, "undefined value (%s)", what);
}

/* ---- attribute and item access ------------------------------------------ */

jv tn__jx_getattr(jx *x, jv obj, const char *name, size_t n)
{
    if (obj.k == JV_UNDEF)
        fail_undef(x, obj, "attribute access");
    if (obj.k == JV_DICT) {
        jv *v = tn__jd_get(obj.u.d, name, n);
        if (v)
            return *v;
    }
    char nm[64];
    if (n < sizeof nm) {
        memcpy(nm, name, n);
        nm[n] = 0;
        jv m = tn__jx_method(x, obj, nm);
        if (m.k != JV_UNDEF)
            return m;
    }
    return undef_named(name, n);
}

/* Byte offset of code point i in s (n bytes); n if past the end. */
static size_t cp_offset(const char *s, size_t n, int64_t i)
{
    size_t o = 0;
    while (o < n && i > 0) {
        o++;
        while (o < n && ((unsigned char)s[o] & 0xC0) == 0x80)
            o++;
        i--;
    }
    return o;
}

jv tn__jx_getitem(jx *x, jv obj, jv key)
{
    switch (obj.k) {
    case JV_UNDEF: fail_undef(x, obj, "subscript");
    case JV_DICT: {
        jv *v = tn__jd_find(obj.u.d, key);
        if (v)
            return *v;
        if (key.k == JV_STR)
            return undef_named(key.u.s.p, key.u.s.n);
        return undef_named(NULL, 0);
    }
    case JV_LIST:
        if (key.k == JV_INT || key.k == JV_BOOL) {
            int64_t i = key.k == JV_INT ? key.u.i : key.u.b, n = (int64_t)obj.u.l->n;
            if (i < 0)
                i += n;
            if (i >= 0 && i < n)
                return obj.u.l->a[i];
        }
        break;
    case JV_STR:
        if (key.k == JV_INT) {
            int64_t i = key.u.i, n = tn__jv_len(x, obj);
            if (i < 0)
                i += n;
            if (i >= 0 && i < n) {
                size_t a = cp_offset(obj.u.s.p, obj.u.s.n, i);
                size_t b = cp_offset(obj.u.s.p + a, obj.u.s.n - a, 1) + a;
                jv c = {.k = JV_STR};
                c.u.s.p = obj.u.s.p + a;
                c.u.s.n = b - a;
                return c;
            }
        }
        break;
    default: break;
    }
    if (key.k == JV_STR)
        return tn__jx_getattr(x, obj, key.u.s.p, key.u.s.n);
    return undef_named(NULL, 0);
}

static int64_t slice_idx(jx *x, jv v, int64_t dflt, int64_t n, int64_t step)
{
    if (v.k == JV_UNDEF || v.k == JV_NONE)
        return dflt;
    if (v.k != JV_INT && v.k != JV_BOOL)
        tn__jx_fail(x, TN_ERR_INVALID, "slice indices must be integers or None, not %s", tn__jv_type_name(v));
    int64_t i = v.k == JV_INT ? v.u.i : v.u.b;
    if (i < 0) {
        i += n;
        if (i < 0)
            i = step < 0 ? -1 : 0;
    } else if (i >= n) {
        i = step < 0 ? n - 1 : n;
    }
    return i;
}

static jv do_slice(jx *x, jv obj, jv lo, jv hi, jv st)
{
    int64_t step = 1;
    if (st.k == JV_INT)
        step = st.u.i;
    else if (st.k != JV_UNDEF && st.k != JV_NONE)
        tn__jx_fail(x, TN_ERR_INVALID, "slice step must be an integer");
    if (step == 0)
        tn__jx_fail(x, TN_ERR_INVALID, "slice step cannot be zero");
    if (obj.k == JV_UNDEF)
        fail_undef(x, obj, "slice");
    jlist *items;
    if (obj.k == JV_LIST)
        items = obj.u.l;
    else if (obj.k == JV_STR)
        items = tn__jv_iter(x, obj);
    else
        tn__jx_fail(x, TN_ERR_INVALID, "'%s' object is not subscriptable", tn__jv_type_name(obj));
    int64_t n = (int64_t)items->n;
    int64_t a = slice_idx(x, lo, step < 0 ? n - 1 : 0, n, step);
    int64_t b = slice_idx(x, hi, step < 0 ? -1 : n, n, step);
    jv r = tn__jv_list(x);
    jbuf sb = {0};
    for (int64_t i = a; step > 0 ? i < b : i > b; i += step) {
        if (obj.k == JV_LIST)
            tn__jl_push(x, r.u.l, items->a[i]);
        else
            tn__jb_put(x, &sb, items->a[i].u.s.p, items->a[i].u.s.n);
    }
    return obj.k == JV_LIST ? r : tn__jb_take(x, &sb);
}

/* ---- operators ---------------------------------------------------------- */

_Noreturn static void bad_operands(jx *x, const char *op, jv a, jv b)
{
    if (a.k == JV_UNDEF)
        fail_undef(x, a, op);
    if (b.k == JV_UNDEF)
        fail_undef(x, b, op);
    tn__jx_fail(x, TN_ERR_INVALID, "unsupported operand types for %s: '%s' and '%s'", op, tn__jv_type_name(a),
                tn__jv_type_name(b));
}

static bool is_intlike(jv v) { return v.k == JV_INT || v.k == JV_BOOL; }
static int64_t ival(jv v) { return v.k == JV_INT ? v.u.i : v.u.b; }

static bool contains(jx *x, jv hay, jv needle)
{
    switch (hay.k) {
    case JV_STR:
        if (needle.k != JV_STR)
            tn__jx_fail(x, TN_ERR_INVALID, "'in <string>' requires string as left operand, not %s",
                        tn__jv_type_name(needle));
        if (needle.u.s.n == 0)
            return true;
        return needle.u.s.n <= hay.u.s.n && memmem(hay.u.s.p, hay.u.s.n, needle.u.s.p, needle.u.s.n) != NULL;
    case JV_LIST:
        for (size_t i = 0; i < hay.u.l->n; i++)
            if (tn__jv_eq(hay.u.l->a[i], needle))
                return true;
        return false;
    case JV_DICT: return tn__jd_find(hay.u.d, needle) != NULL;
    case JV_UNDEF: return false;
    default: tn__jx_fail(x, TN_ERR_INVALID, "argument of type '%s' is not iterable", tn__jv_type_name(hay));
    }
}

static jv repeat(jx *x, jv seq, int64_t times)
{
    if (times < 0)
        times = 0;
    if (seq.k == JV_STR) {
        jbuf b = {0};
        if (seq.u.s.n && (uint64_t)times > x->t->o.max_output / seq.u.s.n)
            tn__jx_fail(x, TN_ERR_RANGE, "string repetition beyond the output limit");
        for (int64_t i = 0; i < times; i++)
            tn__jb_put(x, &b, seq.u.s.p, seq.u.s.n);
        return tn__jb_take(x, &b);
    }
    jv r = tn__jv_list(x);
    if (seq.u.l->n && (uint64_t)times > x->t->o.max_output / seq.u.l->n)
        tn__jx_fail(x, TN_ERR_RANGE, "list repetition beyond the output limit");
    for (int64_t i = 0; i < times; i++)
        for (size_t k = 0; k < seq.u.l->n; k++)
            tn__jl_push(x, r.u.l, seq.u.l->a[k]);
    return r;
}

static jv arith(jx *x, char op, jv a, jv b)
{
    static const char *names[128] = {['+'] = "+", ['-'] = "-", ['*'] = "*", ['/'] = "/", ['F'] = "//",
                                     ['%'] = "%", ['P'] = "**"};
    const char *opn = names[(unsigned char)op];
    if (op == '+' && a.k == JV_STR && b.k == JV_STR) {
        jbuf s = {0};
        tn__jb_put(x, &s, a.u.s.p, a.u.s.n);
        tn__jb_put(x, &s, b.u.s.p, b.u.s.n);
        return tn__jb_take(x, &s);
    }
    if (op == '+' && a.k == JV_LIST && b.k == JV_LIST) {
        jv r = tn__jv_list(x);
        for (size_t i = 0; i < a.u.l->n; i++)
            tn__jl_push(x, r.u.l, a.u.l->a[i]);
        for (size_t i = 0; i < b.u.l->n; i++)
            tn__jl_push(x, r.u.l, b.u.l->a[i]);
        return r;
    }
    if (op == '*' && (a.k == JV_STR || a.k == JV_LIST) && is_intlike(b))
        return repeat(x, a, ival(b));
    if (op == '*' && (b.k == JV_STR || b.k == JV_LIST) && is_intlike(a))
        return repeat(x, b, ival(a));
    if (!tn__jv_is_num(a) || !tn__jv_is_num(b))
        bad_operands(x, opn, a, b);
    if (is_intlike(a) && is_intlike(b) && op != '/') {
        int64_t p = ival(a), q = ival(b), r;
        switch (op) {
        case '+':
            if (__builtin_add_overflow(p, q, &r))
                break;
            return tn__jv_int(r);
        case '-':
            if (__builtin_sub_overflow(p, q, &r))
                break;
            return tn__jv_int(r);
        case '*':
            if (__builtin_mul_overflow(p, q, &r))
                break;
            return tn__jv_int(r);
        case 'F': case '%': {
            if (q == 0)
                tn__jx_fail(x, TN_ERR_INVALID, "integer division or modulo by zero");
            if (p == INT64_MIN && q == -1)
                break;
            int64_t d = p / q, m = p % q;
            if (m != 0 && ((m < 0) != (q < 0))) {
                d -= 1;
                m += q;
            }
            return tn__jv_int(op == 'F' ? d : m);
        }
        case 'P': {
            if (q < 0)
                return tn__jv_float(pow((double)p, (double)q));
            int64_t acc = 1;
            bool ovf = false;
            for (int64_t i = 0; i < q && !ovf; i++)
                ovf = __builtin_mul_overflow(acc, p, &acc);
            if (!ovf)
                return tn__jv_int(acc);
            break;
        }
        }
        tn__jx_fail(x, TN_ERR_RANGE, "integer overflow in %s", opn);
    }
    double p = tn__jv_num(a), q = tn__jv_num(b);
    switch (op) {
    case '+': return tn__jv_float(p + q);
    case '-': return tn__jv_float(p - q);
    case '*': return tn__jv_float(p * q);
    case '/':
        if (q == 0)
            tn__jx_fail(x, TN_ERR_INVALID, "division by zero");
        return tn__jv_float(p / q);
    case 'F':
        if (q == 0)
            tn__jx_fail(x, TN_ERR_INVALID, "float floor division by zero");
        return tn__jv_float(floor(p / q));
    case '%': {
        if (q == 0)
            tn__jx_fail(x, TN_ERR_INVALID, "float modulo by zero");
        double m = fmod(p, q);
        if (m != 0 && ((m < 0) != (q < 0)))
            m += q;
        return tn__jv_float(m);
    }
    default: return tn__jv_float(pow(p, q));
    }
}

static jv binary(jx *x, char op, jv a, jv b)
{
    switch (op) {
    case 'e': return tn__jv_bool(tn__jv_eq(a, b));
    case 'n': return tn__jv_bool(!tn__jv_eq(a, b));
    case '<': return tn__jv_bool(tn__jv_cmp(x, a, b) < 0);
    case 'l': return tn__jv_bool(tn__jv_cmp(x, a, b) <= 0);
    case '>': return tn__jv_bool(tn__jv_cmp(x, a, b) > 0);
    case 'g': return tn__jv_bool(tn__jv_cmp(x, a, b) >= 0);
    case 'i': return tn__jv_bool(contains(x, b, a));
    case 'I': return tn__jv_bool(!contains(x, b, a));
    case '~': {
        jbuf s = {0};
        tn__jv_str_into(x, &s, a);
        tn__jv_str_into(x, &s, b);
        return tn__jb_take(x, &s);
    }
    default: return arith(x, op, a, b);
    }
}

/* ---- calls -------------------------------------------------------------- */

static int exec_body(jx *x, jnode *const *kids, int n);

static jv capture(jx *x, jnode *const *kids, int n)
{
    jbuf b = {0};
    jbuf *save = x->out;
    x->out = &b;
    exec_body(x, kids, n);
    x->out = save;
    return tn__jb_take(x, &b);
}

static jframe *push_frame(jx *x, jframe *parent)
{
    jframe *f = tn__jx_alloc(x, sizeof *f);
    memset(f, 0, sizeof *f);
    f->parent = parent;
    return f;
}

static void set_var(jx *x, jframe *f, const char *name, jv v)
{
    tn__jd_set(x, &f->vars, tn__jv_cstr(name), v);
}

static jv call_macro(jx *x, jmacro *m, const jv *args, int n_args, const char **kw, const jv *kwv, int n_kw)
{
    const jnode *d = m->def;
    if (++x->depth > x->t->o.max_depth)
        tn__jx_fail(x, TN_ERR_RANGE, "macro calls nested deeper than %d", x->t->o.max_depth);
    jframe *f = push_frame(x, m->scope);
    jframe *save = x->frame;
    x->frame = f;
    jv varargs = tn__jv_list(x), kwargs = tn__jv_dict(x);
    for (int i = 0; i < n_args; i++) {
        if (i < d->n_names)
            set_var(x, f, d->names[i], args[i]);
        else
            tn__jl_push(x, varargs.u.l, args[i]);
    }
    for (int k = 0; k < n_kw; k++) {
        int i = 0;
        while (i < d->n_names && strcmp(d->names[i], kw[k]))
            i++;
        if (i < d->n_names) {
            if (i < n_args)
                tn__jx_fail(x, TN_ERR_INVALID, "macro got multiple values for argument '%s'", kw[k]);
            set_var(x, f, d->names[i], kwv[k]);
        } else {
            tn__jd_set(x, kwargs.u.d, tn__jv_cstr(kw[k]), kwv[k]);
        }
    }
    for (int i = 0; i < d->n_names; i++) {
        if (tn__jd_get(&f->vars, d->names[i], strlen(d->names[i])))
            continue;
        jnode *def = d->kind == N_MACRO && i < d->n_kids2 ? d->kids2[i] : NULL;
        set_var(x, f, d->names[i], def ? tn__jx_eval(x, def) : undef_named(d->names[i], strlen(d->names[i])));
    }
    set_var(x, f, "varargs", varargs);
    set_var(x, f, "kwargs", kwargs);
    if (m->caller.k == JV_MACRO)
        set_var(x, f, "caller", m->caller);
    jv r = capture(x, d->kids, d->n_kids);
    x->frame = save;
    x->depth--;
    return r;
}

static jv call_loop(jx *x, jdict *loop, const jv *args, int n_args, int n_kw);

static jv call_value(jx *x, jv callee, const jv *args, int n_args, const char **kw, const jv *kwv, int n_kw,
                     jv caller)
{
    if (callee.k == JV_MACRO) {
        jmacro *m = callee.u.m;
        if (caller.k == JV_MACRO) {
            jmacro *c = tn__jx_alloc(x, sizeof *c);
            *c = *m;
            c->caller = caller;
            m = c;
        }
        return call_macro(x, m, args, n_args, kw, kwv, n_kw);
    }
    if (callee.k == JV_FN)
        return tn__jx_call_fn(x, callee.u.fn, args, n_args, kw, kwv, n_kw);
    if (callee.k == JV_DICT && callee.u.d->recurse)
        return call_loop(x, callee.u.d, args, n_args, n_kw);
    if (callee.k == JV_UNDEF)
        fail_undef(x, callee, "call");
    tn__jx_fail(x, TN_ERR_INVALID, "'%s' object is not callable", tn__jv_type_name(callee));
}

static jv eval_call(jx *x, const jnode *n, jv caller)
{
    jv callee;
    if (n->a->kind == N_ATTR) {
        jv obj = tn__jx_eval(x, n->a->a);
        x->at = n;
        callee = tn__jx_method(x, obj, n->a->s);
        if (callee.k == JV_UNDEF)
            callee = tn__jx_getattr(x, obj, n->a->s, n->a->sn);
    } else {
        callee = tn__jx_eval(x, n->a);
    }
    jv *args = tn__jx_alloc(x, (size_t)(n->n_kids + n->n_kids2 + 1) * sizeof(jv));
    jv *kwv = args + n->n_kids;
    for (int i = 0; i < n->n_kids; i++)
        args[i] = tn__jx_eval(x, n->kids[i]);
    for (int i = 0; i < n->n_kids2; i++)
        kwv[i] = tn__jx_eval(x, n->kids2[i]);
    x->at = n;
    return call_value(x, callee, args, n->n_kids, n->names, kwv, n->n_kids2, caller);
}

/* ---- expressions -------------------------------------------------------- */

static jv lookup(jx *x, const char *name, size_t n)
{
    for (jframe *f = x->frame; f; f = f->parent) {
        jv *v = tn__jd_get(&f->vars, name, n);
        if (v)
            return *v;
    }
    jv g = tn__jx_global(x, name);
    if (g.k != JV_UNDEF)
        return g;
    return undef_named(name, n);
}

jv tn__jx_eval(jx *x, const jnode *n)
{
    step(x);
    const jnode *saved = x->at;
    x->at = n;
    jv r;
    switch (n->kind) {
    case N_LIT: r = n->lit; break;
    case N_NAME: r = lookup(x, n->s, n->sn); break;
    case N_LIST:
    case N_TUPLE:
        r = tn__jv_list(x);
        for (int i = 0; i < n->n_kids; i++)
            tn__jl_push(x, r.u.l, tn__jx_eval(x, n->kids[i]));
        break;
    case N_DICT:
        r = tn__jv_dict(x);
        for (int i = 0; i < n->n_kids; i++) {
            jv k = tn__jx_eval(x, n->kids[i]);
            tn__jd_set(x, r.u.d, k, tn__jx_eval(x, n->kids2[i]));
        }
        break;
    case N_ATTR: {
        jv o = tn__jx_eval(x, n->a);
        x->at = n;
        r = tn__jx_getattr(x, o, n->s, n->sn);
        break;
    }
    case N_INDEX: {
        jv o = tn__jx_eval(x, n->a), k = tn__jx_eval(x, n->b);
        x->at = n;
        r = tn__jx_getitem(x, o, k);
        break;
    }
    case N_SLICE: {
        jv o = tn__jx_eval(x, n->a);
        jv lo = n->b ? tn__jx_eval(x, n->b) : tn__jv_none();
        jv hi = n->c ? tn__jx_eval(x, n->c) : tn__jv_none();
        jv st = n->d ? tn__jx_eval(x, n->d) : tn__jv_none();
        x->at = n;
        r = do_slice(x, o, lo, hi, st);
        break;
    }
    case N_CALL: r = eval_call(x, n, (jv){.k = JV_UNDEF}); break;
    case N_FILTER: {
        jv v = n->a ? tn__jx_eval(x, n->a) : x->blockval;
        jv *args = tn__jx_alloc(x, (size_t)(n->n_kids + n->n_kids2 + 1) * sizeof(jv));
        jv *kwv = args + n->n_kids;
        for (int i = 0; i < n->n_kids; i++)
            args[i] = tn__jx_eval(x, n->kids[i]);
        for (int i = 0; i < n->n_kids2; i++)
            kwv[i] = tn__jx_eval(x, n->kids2[i]);
        x->at = n;
        r = tn__jx_filter(x, n->s, v, args, n->n_kids, n->names, kwv, n->n_kids2);
        break;
    }
    case N_TEST: {
        jv v = tn__jx_eval(x, n->a);
        jv *args = tn__jx_alloc(x, (size_t)(n->n_kids + 1) * sizeof(jv));
        for (int i = 0; i < n->n_kids; i++)
            args[i] = tn__jx_eval(x, n->kids[i]);
        x->at = n;
        bool t = tn__jx_test(x, n->s, v, args, n->n_kids);
        r = tn__jv_bool(n->op ? !t : t);
        break;
    }
    case N_UNARY: {
        jv a = tn__jx_eval(x, n->a);
        x->at = n;
        if (n->op == 'n') {
            r = tn__jv_bool(!tn__jv_truthy(a));
        } else if (a.k == JV_FLOAT) {
            r = tn__jv_float(n->op == '-' ? -a.u.f : a.u.f);
        } else if (is_intlike(a)) {
            int64_t i = ival(a);
            if (n->op == '-' && i == INT64_MIN)
                tn__jx_fail(x, TN_ERR_RANGE, "integer overflow in unary -");
            r = tn__jv_int(n->op == '-' ? -i : i);
        } else {
            if (a.k == JV_UNDEF)
                fail_undef(x, a, "unary operator");
            tn__jx_fail(x, TN_ERR_INVALID, "bad operand type for unary %c: '%s'", n->op, tn__jv_type_name(a));
        }
        break;
    }
    case N_BINARY: {
        jv a = tn__jx_eval(x, n->a), b = tn__jx_eval(x, n->b);
        x->at = n;
        r = binary(x, n->op, a, b);
        break;
    }
    case N_AND: {
        jv a = tn__jx_eval(x, n->a);
        r = tn__jv_truthy(a) ? tn__jx_eval(x, n->b) : a;
        break;
    }
    case N_OR: {
        jv a = tn__jx_eval(x, n->a);
        r = tn__jv_truthy(a) ? a : tn__jx_eval(x, n->b);
        break;
    }
    case N_COND:
        if (tn__jv_truthy(tn__jx_eval(x, n->b)))
            r = tn__jx_eval(x, n->a);
        else
            r = n->c ? tn__jx_eval(x, n->c) : undef_named(NULL, 0);
        break;
    default: tn__jx_fail(x, TN_ERR_INVALID, "statement used as an expression");
    }
    x->at = saved;
    return r;
}

/* ---- statements --------------------------------------------------------- */

/* Binds for-loop or set targets: one name takes the value, several unpack
 * a sequence of exactly that length. */
static void bind_targets(jx *x, jframe *f, const char **names, int n, jv v)
{
    if (n == 1) {
        set_var(x, f, names[0], v);
        return;
    }
    if (v.k != JV_LIST && v.k != JV_STR)
        tn__jx_fail(x, TN_ERR_INVALID, "cannot unpack non-sequence %s into %d names", tn__jv_type_name(v), n);
    jlist *l = tn__jv_iter(x, v);
    if ((int)l->n != n)
        tn__jx_fail(x, TN_ERR_INVALID, "cannot unpack %zu values into %d names", l->n, n);
    for (int i = 0; i < n; i++)
        set_var(x, f, names[i], l->a[i]);
}

/* Runs the for-loop n over seq at loop.depth depth (1: not recursed). */
static void run_for(jx *x, const jnode *n, jv seq, int depth)
{
    jlist *items = tn__jv_iter(x, seq);
    jframe *save = x->frame;
    jframe *f = push_frame(x, save);
    x->frame = f;
    if (n->b) { /* `for x in xs if cond`: filter first, so loop.length counts what remains */
        jlist *kept = tn__jv_list(x).u.l;
        for (size_t i = 0; i < items->n; i++) {
            bind_targets(x, f, n->names, n->n_names, items->a[i]);
            if (tn__jv_truthy(tn__jx_eval(x, n->b)))
                tn__jl_push(x, kept, items->a[i]);
        }
        items = kept;
    }
    size_t len = items->n;
    jv loop = tn__jv_dict(x);
    jdict *ld = loop.u.d;
    if (n->op == 1) { /* recursive */
        ld->recurse = n;
        ld->depth = depth;
    }
    set_var(x, f, "loop", loop);
    jfn *cyc = tn__jx_alloc(x, sizeof *cyc);
    cyc->name = "cycle";
    cyc->self = loop;
    cyc->data = NULL;
    for (size_t i = 0; i < len; i++) {
        step(x);
        bind_targets(x, f, n->names, n->n_names, items->a[i]);
        ld->n = 0;
        tn__jd_set(x, ld, tn__jv_cstr("index"), tn__jv_int((int64_t)i + 1));
        tn__jd_set(x, ld, tn__jv_cstr("index0"), tn__jv_int((int64_t)i));
        tn__jd_set(x, ld, tn__jv_cstr("revindex"), tn__jv_int((int64_t)(len - i)));
        tn__jd_set(x, ld, tn__jv_cstr("revindex0"), tn__jv_int((int64_t)(len - i - 1)));
        tn__jd_set(x, ld, tn__jv_cstr("first"), tn__jv_bool(i == 0));
        tn__jd_set(x, ld, tn__jv_cstr("last"), tn__jv_bool(i + 1 == len));
        tn__jd_set(x, ld, tn__jv_cstr("length"), tn__jv_int((int64_t)len));
        tn__jd_set(x, ld, tn__jv_cstr("depth"), tn__jv_int(depth));
        tn__jd_set(x, ld, tn__jv_cstr("depth0"), tn__jv_int(depth - 1));
        if (i > 0)
            tn__jd_set(x, ld, tn__jv_cstr("previtem"), items->a[i - 1]);
        if (i + 1 < len)
            tn__jd_set(x, ld, tn__jv_cstr("nextitem"), items->a[i + 1]);
        tn__jd_set(x, ld, tn__jv_cstr("cycle"), (jv){.k = JV_FN, .u.fn = cyc});
        int rc = exec_body(x, n->kids, n->n_kids);
        if (rc == 1)
            break;
    }
    x->frame = save;
    if (len == 0)
        exec_body(x, n->kids2, n->n_kids2);
}

static void exec_for(jx *x, const jnode *n)
{
    jv seq = tn__jx_eval(x, n->a);
    x->at = n;
    run_for(x, n, seq, 1);
}

/* loop(seq) in a recursive for: the loop's output over seq, one level
 * deeper; nesting counts against max_depth like macro calls. */
static jv call_loop(jx *x, jdict *loop, const jv *args, int n_args, int n_kw)
{
    if (n_args != 1 || n_kw != 0)
        tn__jx_fail(x, TN_ERR_INVALID, "loop() of a recursive for takes exactly one sequence");
    if (++x->depth > x->t->o.max_depth)
        tn__jx_fail(x, TN_ERR_RANGE, "recursive loop nested deeper than %d", x->t->o.max_depth);
    jbuf b = {0};
    jbuf *save = x->out;
    jframe *frame = x->frame;
    x->out = &b;
    run_for(x, loop->recurse, args[0], loop->depth + 1);
    x->out = save;
    x->frame = frame;
    x->depth--;
    return tn__jb_take(x, &b);
}

/* Returns 0, or 1 for break, 2 for continue. */
static int exec(jx *x, const jnode *n)
{
    step(x);
    x->at = n;
    switch (n->kind) {
    case N_TEXT: tn__jb_put(x, x->out, n->s, n->sn); return 0;
    case N_OUT: {
        jv v = tn__jx_eval(x, n->a);
        tn__jv_str_into(x, x->out, v);
        return 0;
    }
    case N_IF:
        if (tn__jv_truthy(tn__jx_eval(x, n->a)))
            return exec_body(x, n->kids, n->n_kids);
        return exec_body(x, n->kids2, n->n_kids2);
    case N_FOR: exec_for(x, n); return 0;
    case N_SET: {
        jv v = n->a ? tn__jx_eval(x, n->a) : capture(x, n->kids, n->n_kids);
        x->at = n;
        if (n->b) {
            jv obj = tn__jx_eval(x, n->b->a);
            x->at = n;
            if (obj.k != JV_DICT || !obj.u.d->ns)
                tn__jx_fail(x, TN_ERR_INVALID, "cannot assign attribute '%s' on a non-namespace object (%s)",
                            n->b->s, tn__jv_type_name(obj));
            tn__jd_set(x, obj.u.d, tn__jv_cstr(n->b->s), v);
        } else {
            bind_targets(x, x->frame, n->names, n->n_names, v);
        }
        return 0;
    }
    case N_MACRO: {
        jmacro *m = tn__jx_alloc(x, sizeof *m);
        m->def = n;
        m->scope = x->frame;
        m->caller = (jv){.k = JV_UNDEF};
        set_var(x, x->frame, n->s, (jv){.k = JV_MACRO, .u.m = m});
        return 0;
    }
    case N_CALLBLK: {
        jmacro *c = tn__jx_alloc(x, sizeof *c);
        c->def = n;
        c->scope = x->frame;
        c->caller = (jv){.k = JV_UNDEF};
        jv v = eval_call(x, n->a, (jv){.k = JV_MACRO, .u.m = c});
        tn__jv_str_into(x, x->out, v);
        return 0;
    }
    case N_FILTBLK: {
        jv body = capture(x, n->kids, n->n_kids);
        jv save = x->blockval;
        x->blockval = body;
        jv v = tn__jx_eval(x, n->a);
        x->blockval = save;
        tn__jv_str_into(x, x->out, v);
        return 0;
    }
    case N_BREAK: return 1;
    case N_CONTINUE: return 2;
    case N_DO: tn__jx_eval(x, n->a); return 0;
    default: tn__jx_eval(x, n); return 0;
    }
}

static int exec_body(jx *x, jnode *const *kids, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = exec(x, kids[i]);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- render ------------------------------------------------------------- */

tn_status tn__jinja_render(const tn_jinja *t, const json_t *vars, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (vars && !json_is_object(vars))
        return tn__err(TN_ERR_INVALID, "jinja: the render variables must be a JSON object");
    jx *x = calloc(1, sizeof *x);
    if (!x)
        return tn__err(TN_ERR_NOMEM, "jinja: out of memory");
    x->t = t;
    x->ar.max = t->o.max_memory;
    x->blockval = tn__jv_cstr("");
    if (setjmp(x->jb)) {
        tn_status st = x->st;
        tn__ja_free(&x->ar);
        free(x);
        return st;
    }
    x->root = push_frame(x, NULL);
    x->frame = x->root;
    if (vars) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)vars, k, v)
            tn__jd_set(x, &x->root->vars, tn__jv_str(x, k, strlen(k)), tn__jv_from_json(x, v));
    }
    jbuf *main = tn__jx_alloc(x, sizeof *main);
    memset(main, 0, sizeof *main);
    x->out = main;
    exec_body(x, t->body, t->n_body);
    char *r = malloc(main->n + 1);
    if (!r) {
        tn__ja_free(&x->ar);
        free(x);
        return tn__err(TN_ERR_NOMEM, "jinja: out of memory for %zu bytes of output", main->n);
    }
    if (main->n)
        memcpy(r, main->p, main->n);
    r[main->n] = 0;
    *out = r;
    *out_len = main->n;
    tn__ja_free(&x->ar);
    free(x);
    return TN_OK;
}
