/*
 * jinja.h — a sandboxed interpreter for the subset of Jinja2 that chat
 * templates use (tokenizer.chat_template), shared by src/tok/jinja_*.c and
 * used by chat.c.
 *
 * Key idea: compile once (lexer → token array → AST, all in one arena owned
 * by the compiled template), render many times. A render allocates every
 * value in a second arena that it frees as a whole at the end, so values are
 * plain structs shared by pointer without reference counts, and an error
 * deep inside an expression unwinds with longjmp to tn__jinja_render (the
 * arena makes that leak-free). Every render is bounded: steps, call depth,
 * output bytes and arena bytes all have limits, and nothing in the language
 * reaches files, the environment or the system (include/import/extends are
 * errors). Errors name the template line and column.
 *
 * The first section is the API for chat.c; the rest is what the jinja_*.c
 * files share (values, AST, the render state).
 */
#ifndef TERN_TOK_JINJA_H
#define TERN_TOK_JINJA_H

#include "base/base.h"

#include <jansson.h>
#include <setjmp.h>

/* ---- API ---------------------------------------------------------------- */

typedef struct tn_jinja tn_jinja;

typedef struct tn_jinja_opts {
    bool trim_blocks;   /* drop the first newline after a block tag */
    bool lstrip_blocks; /* drop spaces/tabs before a block tag at line start */
    uint64_t max_steps; /* evaluation steps per render; 0: 10,000,000 */
    int max_depth;      /* nested macro calls / expression depth; 0: 64 */
    size_t max_output;  /* output bytes; 0: 16 MiB */
    size_t max_memory;  /* render arena bytes; 0: 256 MiB */
    const char *today;  /* "YYYY-MM-DD" that strftime_now formats; NULL: the real clock */
} tn_jinja_opts;

/* Compiles len bytes of template source. opts may be NULL (defaults: no
 * trim/lstrip, default limits); it is copied. On a syntax error returns
 * TN_ERR_FORMAT with "jinja: line L col C: ..." and *out = NULL. The result
 * is immutable: any number of threads may render it at once. */
tn_status tn__jinja_compile(const char *src, size_t len, const tn_jinja_opts *opts, tn_jinja **out) TN_MUST_CHECK;
void tn__jinja_free(tn_jinja *t);

/* Renders with the variables of the JSON object vars (borrowed; may be
 * NULL). On success *out is a malloc'd NUL-terminated string of *out_len
 * bytes (the caller frees it). On failure *out = NULL and the status is
 * TN_ERR_INVALID (a runtime error or raise_exception, with line and
 * column), TN_ERR_RANGE (a limit was hit) or TN_ERR_NOMEM. */
tn_status tn__jinja_render(const tn_jinja *t, const json_t *vars, char **out, size_t *out_len) TN_MUST_CHECK;

/* ---- shared by jinja_*.c ------------------------------------------------ */

/* Arena: chunks of at least 64 KiB; a request past the byte limit fails. */
typedef struct jchunk jchunk;
typedef struct jarena {
    jchunk *head;
    size_t used, max;
} jarena;
void *tn__ja_alloc(jarena *a, size_t n); /* NULL past the limit or on malloc failure */
void tn__ja_free(jarena *a);

typedef enum jkind {
    JV_UNDEF = 0, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT,
    JV_MACRO, /* u.m */
    JV_FN,    /* u.fn: a global function or a method bound to a value */
} jkind;

typedef struct jlist jlist;
typedef struct jdict jdict;
typedef struct jmacro jmacro;
typedef struct jfn jfn;

typedef struct jv {
    uint8_t k; /* jkind */
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
        jlist *l;
        jdict *d;
        jmacro *m;
        jfn *fn;
    } u;
} jv;

struct jlist {
    jv *a;
    size_t n, cap;
};
struct jdict { /* insertion-ordered, linear lookup (template dicts are small) */
    jv *k, *v;
    size_t n, cap;
    bool ns; /* a namespace() object: attributes may be assigned */
    /* the loop object of a `for ... recursive`: loop(seq) renders the loop
     * node's body over seq one level deeper (jinja_eval.c) */
    const struct jnode *recurse;
    int depth; /* its loop.depth (1 at the outermost) */
};

/* AST. One node struct for all kinds; the comment on each kind says which
 * fields it uses. off is the byte offset in the source (for line/column). */
typedef enum jnk {
    /* expressions */
    N_LIT,     /* lit */
    N_NAME,    /* s */
    N_LIST,    /* kids */
    N_TUPLE,   /* kids */
    N_DICT,    /* kids = keys, kids2 = values */
    N_ATTR,    /* a . s */
    N_INDEX,   /* a [ b ] */
    N_SLICE,   /* a [ b : c : d ], each of b c d may be NULL */
    N_CALL,    /* a ( kids, names[i] = kids2[i] ) */
    N_FILTER,  /* a | s ( kids, names = kids2 ); a NULL: a filter block's body */
    N_TEST,    /* a is [not: op=1] s ( kids ) */
    N_UNARY,   /* op a: '-' '+' or 'n' (not) */
    N_BINARY,  /* a op b: arithmetic, comparison, 'i' in, 'I' not in, '~' */
    N_AND,     /* a and b */
    N_OR,      /* a or b */
    N_COND,    /* a if b else c (c may be NULL) */
    /* statements */
    N_TEXT,    /* s */
    N_OUT,     /* {{ a }} */
    N_IF,      /* if a: kids else kids2 (elif nests an N_IF in kids2) */
    N_FOR,     /* for names in a [if b]: kids else kids2; op=1 recursive */
    N_SET,     /* names = a; or a-less block set: names = render(kids); b: ns.attr target (N_ATTR) */
    N_MACRO,   /* macro s(names = kids2 defaults, NULL entries for none): kids */
    N_CALLBLK, /* call(names) a: kids — a is the N_CALL; kids is caller() */
    N_FILTBLK, /* filter a: kids — a is the filter chain with a NULL innermost operand */
    N_BREAK,
    N_CONTINUE,
    N_DO,      /* do a */
} jnk;

typedef struct jnode jnode;
struct jnode {
    uint8_t kind;
    char op;
    uint32_t off;
    jnode *a, *b, *c, *d;
    jnode **kids, **kids2;
    int n_kids, n_kids2;
    const char **names; /* NUL-terminated */
    int n_names;
    const char *s;
    size_t sn;
    jv lit;
};

struct tn_jinja {
    jarena ar; /* AST and source copy */
    char *src;
    size_t len;
    jnode **body;
    int n_body;
    tn_jinja_opts o;
};

typedef struct jframe jframe;
struct jframe {
    jframe *parent;
    jdict vars;
};

struct jmacro {
    const jnode *def; /* N_MACRO; for caller(): the N_CALLBLK */
    jframe *scope;    /* frame the body's lookups start from */
    jv caller;        /* JV_MACRO or JV_UNDEF */
};

struct jfn {
    const char *name;
    jv self; /* bound value of a method; JV_UNDEF for a global */
    void *data;
};

typedef struct jbuf {
    char *p;
    size_t n, cap;
} jbuf;

/* The render state. */
typedef struct jx {
    const tn_jinja *t;
    jarena ar;
    jmp_buf jb;
    tn_status st;
    jbuf *out;
    size_t total_out;
    uint64_t steps;
    int depth;
    jframe *root, *frame; /* globals; where lookups start and set writes */
    jv blockval; /* the captured body of a filter block */
    const jnode *at; /* node being evaluated (for error positions) */
} jx;

/* Errors: formats the message with the current node's line and column,
 * sets it with tn__err and longjmps out of the render. */
_Noreturn void tn__jx_fail(jx *x, tn_status st, const char *fmt, ...) TN_PRINTF(3, 4);
/* Line and column (1-based) of byte offset off in src. */
void tn__jinja_linecol(const char *src, size_t len, size_t off, int *line, int *col);

/* Values (jinja_value.c). Allocation failures longjmp. */
void *tn__jx_alloc(jx *x, size_t n);
jv tn__jv_str(jx *x, const char *p, size_t n); /* copies */
jv tn__jv_cstr(const char *s);                   /* borrows a static string */
jv tn__jv_int(int64_t i);
jv tn__jv_float(double f);
jv tn__jv_bool(bool b);
jv tn__jv_none(void);
jv tn__jv_list(jx *x);
jv tn__jv_dict(jx *x);
void tn__jl_push(jx *x, jlist *l, jv v);
jv *tn__jd_get(const jdict *d, const char *key, size_t n);
jv *tn__jd_find(const jdict *d, jv key);
void tn__jd_set(jx *x, jdict *d, jv key, jv v);
jv tn__jv_from_json(jx *x, const json_t *j);
bool tn__jv_truthy(jv v);
bool tn__jv_eq(jv a, jv b);
int tn__jv_cmp(jx *x, jv a, jv b); /* <0, 0, >0; fails for unorderable types */
bool tn__jv_is_num(jv v);
double tn__jv_num(jv v);
const char *tn__jv_type_name(jv v);
/* Python's str(v) appended to b (repr for items inside lists/dicts). */
void tn__jv_str_into(jx *x, jbuf *b, jv v);
void tn__jv_repr_into(jx *x, jbuf *b, jv v);
jv tn__jv_to_str(jx *x, jv v); /* str(v) as a JV_STR (v itself if already one) */
/* json.dumps(v, ensure_ascii=False, indent=indent (<0: none), sort_keys) */
void tn__jv_json_into(jx *x, jbuf *b, jv v, int indent, bool sort_keys, int level);
/* Items of an iterable: a list's items, a dict's keys, a string's
 * characters (UTF-8 code points), nothing for undefined; fails otherwise. */
jlist *tn__jv_iter(jx *x, jv v);
int64_t tn__jv_len(jx *x, jv v);
void tn__jb_put(jx *x, jbuf *b, const char *p, size_t n);
void tn__jb_putc(jx *x, jbuf *b, char c);
jv tn__jb_take(jx *x, jbuf *b); /* the buffer's bytes as a string value */

/* Builtins (jinja_builtins.c). */
jv tn__jx_filter(jx *x, const char *name, jv v, const jv *args, int n_args, const char **kw, const jv *kwv,
                 int n_kw);
bool tn__jx_test(jx *x, const char *name, jv v, const jv *args, int n_args);
bool tn__jx_has_test(const char *name);
/* A method of v named name as a bound JV_FN, or JV_UNDEF if v has none. */
jv tn__jx_method(jx *x, jv v, const char *name);
/* A global function (raise_exception, namespace, range, strftime_now, ...)
 * or JV_UNDEF. */
jv tn__jx_global(jx *x, const char *name);
/* Calls a JV_FN. */
jv tn__jx_call_fn(jx *x, jfn *fn, const jv *args, int n_args, const char **kw, const jv *kwv, int n_kw);

/* Evaluation (jinja_eval.c), used by builtins that call back (map, select). */
jv tn__jx_eval(jx *x, const jnode *n);
jv tn__jx_getattr(jx *x, jv obj, const char *name, size_t n);
jv tn__jx_getitem(jx *x, jv obj, jv key);

#endif /* TERN_TOK_JINJA_H */
