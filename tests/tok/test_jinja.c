/*
 * test_jinja — the Jinja interpreter feature by feature: each case is a
 * template, JSON variables and the output Python's jinja2 gives (with
 * trim_blocks and lstrip_blocks on), or an expected failure; plus hostile
 * templates that must stop at a limit with an error, not hang or crash.
 */
#include "testutil.h"

#include "tok/jinja.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Renders src with vars (JSON text or NULL); returns the status, output in *out. */
static tn_status render_opts(const char *src, const char *vars, const tn_jinja_opts *o, char **out)
{
    tn_jinja *t = NULL;
    *out = NULL;
    tn_status st = tn__jinja_compile(src, strlen(src), o, &t);
    if (st)
        return st;
    json_t *v = NULL;
    if (vars) {
        json_error_t e;
        v = json_loads(vars, 0, &e);
        assert_non_null(v);
    }
    size_t n;
    st = tn__jinja_render(t, v, out, &n);
    if (st == TN_OK)
        assert_int_equal(n, strlen(*out));
    json_decref(v);
    tn__jinja_free(t);
    return st;
}

static tn_status render(const char *src, const char *vars, char **out)
{
    tn_jinja_opts o = {.trim_blocks = true, .lstrip_blocks = true};
    return render_opts(src, vars, &o, out);
}

typedef struct tcase {
    const char *src, *vars, *want;
} tcase;

static void run_cases(const tcase *cs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *out;
        tn_status st = render(cs[i].src, cs[i].vars, &out);
        if (st != TN_OK)
            print_error("case %zu '%s': %s\n", i, cs[i].src, tn_last_error());
        assert_int_equal(st, TN_OK);
        if (strcmp(out, cs[i].want))
            print_error("case %zu '%s':\n  got  '%s'\n  want '%s'\n", i, cs[i].src, out, cs[i].want);
        assert_string_equal(out, cs[i].want);
        free(out);
    }
}

static void test_whitespace(void **state)
{
    (void)state;
    static const tcase cs[] = {
        {"a\n  {% if true %}\n  b\n  {% endif %}\nc", NULL, "a\n  b\nc"},
        {"a  {%- if true -%}  b  {%- endif -%}  c", NULL, "abc"},
        {"a {{- 'x' -}} b", NULL, "axb"},
        {"{# c #}\nx", NULL, "x"},
        {"  {%+ if true %}x{% endif %}", NULL, "  x"},
        {"{% if true +%}\nx{% endif %}", NULL, "\nx"},
        {"  {{ 'v' }}\n", NULL, "  v\n"},
        {"x {% if true %}y{% endif %}", NULL, "x y"},
    };
    run_cases(cs, TN_ARRAY_LEN(cs));
}

static void expect_error(const char *src, const char *vars, tn_status want, const char *msg);

/* {% raw %}: jinja2 3.1.6's output (trim_blocks, lstrip_blocks). */
static void test_raw(void **state)
{
    (void)state;
    static const tcase cs[] = {
        {"{% raw %}{{ x }} {% if %}{% endraw %}", NULL, "{{ x }} {% if %}"},
        {"a\n{% raw %}\n  {{ y }}\n  {% endraw %}\nb", NULL, "a\n\n  {{ y }}\nb"},
        {"a {%- raw -%}  {{ z }}  {%- endraw -%}  b", NULL, "a{{ z }}b"},
        {"{%raw%}{% for %}{#c#}{%endraw%}{{ 1 + 1 }}", NULL, "{% for %}{#c#}2"},
        {"x{% raw %}{% endraw x %}{% endraw %}y", NULL, "x{% endraw x %}y"},
        {"{% for x in [1] %}{% raw %}{{x}}{% endraw %}{% endfor %}", NULL, "{{x}}"},
    };
    run_cases(cs, TN_ARRAY_LEN(cs));
    expect_error("a\n{% raw %}abc", NULL, TN_ERR_FORMAT, "line 2 col 1: unclosed {% raw %} block");
}

/* for ... recursive with loop(seq): jinja2 3.1.6's output. */
static void test_recursive_loop(void **state)
{
    (void)state;
#define TREE "{\"items\": [{\"n\": \"a\", \"c\": [{\"n\": \"b\", \"c\": [{\"n\": \"c\", \"c\": []}]}, {\"n\": \"d\", \"c\": []}]}, {\"n\": \"e\", \"c\": []}]}"
    static const tcase cs[] = {
        {"{% for i in items recursive %}[{{ loop.depth }}{{ i.n }}{% if i.c %}{{ loop(i.c) }}{% endif %}]{% endfor %}", TREE, "[1a[2b[3c]][2d]][1e]"},
        {"{% for i in items recursive %}{{ loop.depth0 }}:{{ loop.index }}/{{ loop.length }}{{ i.n }};{{ loop(i.c) }}{% else %}-{% endfor %}", TREE, "0:1/2a;1:1/2b;2:1/1c;-1:2/2d;-0:2/2e;-"},
        {"<ul>\n{% for i in items recursive %}\n  <li>{{ i.n }}\n  {% if i.c %}<ul>{{ loop(i.c) }}</ul>{% endif %}\n  </li>\n{% endfor %}\n</ul>", TREE, "<ul>\n  <li>a\n<ul>  <li>b\n<ul>  <li>c\n  </li>\n</ul>  </li>\n  <li>d\n  </li>\n</ul>  </li>\n  <li>e\n  </li>\n</ul>"},
        {"{% set ns = namespace(t=0) %}{% for i in items recursive %}{% set ns.t = ns.t + 1 %}{{ loop(i.c) }}{% endfor %}{{ ns.t }}", TREE, "5"},
    };
#undef TREE
    run_cases(cs, TN_ARRAY_LEN(cs));
    expect_error("{% for i in [1] %}{{ loop([2]) }}{% endfor %}", NULL, TN_ERR_INVALID, "not callable");
    expect_error("{% for i in [[1]] recursive %}{{ loop(i, 2) }}{% endfor %}", NULL, TN_ERR_INVALID,
                 "exactly one sequence");
    /* a loop that recurses into itself forever stops at the depth limit */
    char *out;
    tn_jinja_opts o = {.trim_blocks = true, .lstrip_blocks = true, .max_depth = 30};
    assert_int_equal(render_opts("{% for i in [1] recursive %}{{ loop([i]) }}{% endfor %}", NULL, &o, &out),
                     TN_ERR_RANGE);
}

static void test_expressions(void **state)
{
    (void)state;
    static const tcase cs[] = {
        {"{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }}", NULL, "7 3 -4 1 2 1024"},
        {"{{ 7 / 2 }} {{ 4 / 2 }} {{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 1e20 }}", NULL,
         "3.5 2.0 2.5 0.30000000000000004 1e+20"},
        {"{{ 'a' ~ 1 ~ none }} {{ 'ab' * 3 }} {{ [1] + [2] }}", NULL, "a1None ababab [1, 2]"},
        {"{{ 1 < 2 and 'x' or 'y' }} {{ 0 or 'z' }} {{ not 1 }}", NULL, "x z False"},
        {"{{ 'b' in 'abc' }} {{ 3 not in [1, 2] }} {{ 'k' in {'k': 1} }}", NULL, "True True True"},
        {"{{ 'yes' if x else 'no' }}{{ 'v' if false }}", "{\"x\": []}", "no"},
        {"{{ s[1:3] }} {{ s[::-1] }} {{ s[-2:] }} {{ l[1:] }} {{ l[-1] }}", "{\"s\": \"hello\", \"l\": [1, 2, 3]}",
         "el olleh lo [2, 3] 3"},
        {"{{ d.a.b }} {{ d['a']['b'] }} {{ d.missing }}|{{ l[5] }}", "{\"d\": {\"a\": {\"b\": 7}}, \"l\": []}",
         "7 7 |"},
        {"{{ {'a': 1, 'b': [true, none, 'q']} }} {{ \"it's\" }} {{ [\"it's\"] }}", NULL,
         "{'a': 1, 'b': [True, None, 'q']} it's [\"it's\"]"},
        {"{{ 'a' 'b' }} {{ '\\u00e9\\n' | length }} {{ 'é' | length }}", NULL, "ab 2 1"},
        {"{{ 1 == 1.0 }} {{ true == 1 }} {{ [1, 2] == [1, 2] }} {{ 'a' < 'b' }}", NULL, "True True True True"},
    };
    run_cases(cs, TN_ARRAY_LEN(cs));
}

static void test_statements(void **state)
{
    (void)state;
    static const tcase cs[] = {
        {"{% for x in l %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}"
         "{{ loop.length }};{% endfor %}",
         "{\"l\": [\"a\", \"b\"]}", "102TrueFalse2;211FalseTrue2;"},
        {"{% for x in l %}{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }}|{% endfor %}", "{\"l\": [1, 2, 3]}",
         "<1>2|1<2>3|2<3>|"},
        {"{% for x in [] %}x{% else %}empty{% endfor %}", NULL, "empty"},
        {"{% for x in l if x > 1 %}{{ x }}{{ loop.length }}{% endfor %}", "{\"l\": [1, 2, 3]}", "2232"},
        {"{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}", "{\"d\": {\"z\": 1, \"a\": 2}}", "z=1,a=2,"},
        {"{% for k in d %}{{ k }}{% endfor %}", "{\"d\": {\"z\": 1, \"a\": 2}}", "za"},
        {"{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}"
         "{{ x }}{% endfor %}",
         NULL, "013"},
        {"{% for x in l %}{{ loop.cycle('a', 'b') }}{% endfor %}", "{\"l\": [1, 2, 3]}", "aba"},
        {"{% if a %}1{% elif b %}2{% else %}3{% endif %}", "{\"a\": 0, \"b\": \"x\"}", "2"},
        {"{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}", NULL, "1"},
        {"{% set ns = namespace(x=1) %}{% for i in [1, 2] %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}", NULL,
         "4"},
        {"{% set a, b = 1, 2 %}{{ b }}{{ a }}", NULL, "21"},
        {"{% set s %}in{{ 1 }}{% endset %}[{{ s }}]", NULL, "[in1]"},
        {"{% macro m(a, b='d') %}<{{ a }}{{ b }}>{% endmacro %}{{ m(1) }}{{ m(1, b=2) }}{{ m(a=3) }}", NULL,
         "<1d><12><3d>"},
        {"{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}", NULL, "321"},
        {"{% macro w() %}[{{ caller() }}]{% endmacro %}{% call w() %}body{% endcall %}", NULL, "[body]"},
        {"{% filter upper %}abc{{ 'd' }}{% endfilter %}", NULL, "ABCD"},
        {"{% generation %}g{% endgeneration %}", NULL, "g"},
        {"{% set l = [] %}{% do l.append(1) %}{{ l.append(2) or '' }}{{ l }}", NULL, "[1, 2]"},
    };
    run_cases(cs, TN_ARRAY_LEN(cs));
}

static void test_filters_and_tests(void **state)
{
    (void)state;
    static const tcase cs[] = {
        {"{{ '  x y \\n' | trim }}|{{ 'xxaxx' | trim('x') }}|{{ 'Ab' | upper }}{{ 'Ab' | lower }}", NULL,
         "x y|a|ABab"},
        {"{{ 'hello world' | title }} {{ 'hELLO' | capitalize }} {{ 'a-b c' | title }}", NULL,
         "Hello World Hello A-B C"},
        {"{{ 'aXbXc' | replace('X', '-') }} {{ [1, 2] | join(', ') }} {{ [3, 1, 2] | sort }} {{ [1, 2] | reverse }}",
         NULL, "a-b-c 1, 2 [1, 2, 3] [2, 1]"},
        {"{{ u | default('d') }} {{ '' | default('e', true) }} {{ [1, 2] | first }}{{ [1, 2] | last }}", NULL,
         "d e 12"},
        {"{{ d | items | list }} {{ d | dictsort }} {{ d | length }}", "{\"d\": {\"b\": 1, \"a\": 2}}",
         "[['b', 1], ['a', 2]] [['a', 2], ['b', 1]] 2"},
        {"{{ l | map(attribute='n') | join }} {{ l | selectattr('t', 'equalto', 'x') | list | length }} "
         "{{ l | rejectattr('t', 'equalto', 'x') | map(attribute='n') | list }}",
         "{\"l\": [{\"n\": 1, \"t\": \"x\"}, {\"n\": 2, \"t\": \"y\"}]}", "12 1 [2]"},
        {"{{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3] | reject('equalto', 2) | list }} "
         "{{ ['a', 'b'] | map('upper') | list }}",
         NULL, "[1, 3] [1, 3] ['A', 'B']"},
        {"{{ d | tojson }} {{ 'é\"\\n' | tojson }} {{ [] | tojson(indent=2) }}", "{\"d\": {\"k\": [1, true, null]}}",
         "{\"k\": [1, true, null]} \"é\\\"\\n\" []"},
        {"{{ d | tojson(indent=2) }}", "{\"d\": {\"k\": [1]}}", "{\n  \"k\": [\n    1\n  ]\n}"},
        {"{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}", NULL, "a\n  b\n\n  c|  a\n  b"},
        {"{{ '3' | int + 1 }} {{ 2.7 | int }} {{ 'x' | int }} {{ '1.5' | float }} {{ 2.5 | round }} {{ -3 | abs }}",
         NULL, "4 2 0 1.5 2.0 3"},
        {"{{ ['a', 'A', 'b'] | unique | list }} {{ 'one two  three' | wordcount }} {{ [1, 2, 3] | batch(2) | list }}",
         NULL, "['a', 'b'] 3 [[1, 2], [3]]"},
        {"{{ 1 | string ~ 'x' }} {{ [3, 5] | max }} {{ [3, 5] | sum }} {{ '<a>' | e }}", NULL, "1x 5 8 &lt;a&gt;"},
        {"{{ u is defined }}{{ u is undefined }}{{ none is none }}{{ 'a' is string }}{{ 1 is number }}"
         "{{ 1 is integer }}{{ 1.0 is float }}{{ {} is mapping }}{{ [] is iterable }}{{ [] is sequence }}"
         "{{ true is boolean }}{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby(3) }}{{ 'a' is equalto 'a' }}"
         "{{ 1 is not string }}",
         NULL, "FalseTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrue"},
        {"{{ ' a b '.strip() }}|{{ 'xab'.lstrip('x') }}|{{ 'a,b'.split(',') }}|{{ 'a b'.split() }}|"
         "{{ 'ab'.startswith('a') }}{{ 'ab'.endswith(('x', 'b')) }}|{{ 'ab'.upper() }}|{{ 'a b'.title() }}|"
         "{{ 'aa'.replace('a', 'b', 1) }}|{{ 'abc'.find('c') }}",
         NULL, "a b|ab|['a', 'b']|['a', 'b']|TrueTrue|AB|A B|ba|2"},
        {"{{ d.get('a') }} {{ d.get('z', 0) }} {{ d.keys() | list }} {{ d.values() | list }}", "{\"d\": {\"a\": 1}}",
         "1 0 ['a'] [1]"},
    };
    run_cases(cs, TN_ARRAY_LEN(cs));
}

static void expect_error(const char *src, const char *vars, tn_status want, const char *msg)
{
    char *out;
    tn_status st = render(src, vars, &out);
    if (st != want)
        print_error("'%s': status %d, want %d (%s)\n", src, st, want, st ? tn_last_error() : out);
    assert_int_equal(st, want);
    assert_null(out);
    if (!strstr(tn_last_error(), msg))
        print_error("'%s': error '%s' lacks '%s'\n", src, tn_last_error(), msg);
    assert_non_null(strstr(tn_last_error(), msg));
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("{% if x %}", NULL, TN_ERR_FORMAT, "line 1 col 11: unexpected end of template");
    expect_error("a\n{{ 1 + }}", NULL, TN_ERR_FORMAT, "line 2 col 8");
    expect_error("{% include 'x' %}", NULL, TN_ERR_FORMAT, "no file access");
    expect_error("{{ 'abc }}", NULL, TN_ERR_FORMAT, "unterminated string");
    expect_error("{% endif %}", NULL, TN_ERR_FORMAT, "unexpected 'endif'");
    expect_error("\n  {{ u.x }}", NULL, TN_ERR_INVALID, "line 2 col 7: 'u' is undefined");
    expect_error("{{ 'a' + 1 }}", NULL, TN_ERR_INVALID, "unsupported operand types for +: 'str' and 'int'");
    expect_error("{{ 1 // 0 }}", NULL, TN_ERR_INVALID, "by zero");
    expect_error("{{ x | nosuch }}", NULL, TN_ERR_INVALID, "no filter named 'nosuch'");
    expect_error("{% set x = 1 %}{% set x.a = 2 %}", NULL, TN_ERR_INVALID, "non-namespace");
    expect_error("{{ raise_exception('bad ' ~ 1) }}", NULL, TN_ERR_INVALID, "raise_exception: bad 1");
}

/* Hostile templates stop at a limit with an error. */
static void test_limits(void **state)
{
    (void)state;
    tn_jinja_opts o = {.max_steps = 100000, .max_output = 1 << 16, .max_depth = 20, .max_memory = 64 << 20};
    char *out;
    assert_int_equal(render_opts("{% for i in range(200000) %}{% endfor %}", NULL, &o, &out), TN_ERR_RANGE);
    assert_non_null(strstr(tn_last_error(), "step limit"));
    assert_int_equal(render_opts("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", NULL, &o, &out), TN_ERR_RANGE);
    assert_non_null(strstr(tn_last_error(), "nested deeper"));
    assert_int_equal(render_opts("{% for i in range(10000) %}xxxxxxxxxx{% endfor %}", NULL, &o, &out),
                     TN_ERR_RANGE);
    assert_non_null(strstr(tn_last_error(), "output"));
    assert_int_equal(render_opts("{{ 'x' * 100000000000 }}", NULL, &o, &out), TN_ERR_RANGE);
    assert_int_equal(render_opts("{% set ns = namespace(s='x') %}{% for i in range(40) %}"
                                 "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                                 NULL, &o, &out),
                     TN_ERR_RANGE);
    /* deeply nested expressions are a syntax error, not a stack overflow */
    size_t n = 100000;
    char *deep = malloc(2 * n + 16);
    assert_non_null(deep);
    strcpy(deep, "{{ ");
    memset(deep + 3, '(', n);
    strcpy(deep + 3 + n, "1");
    memset(deep + 4 + n, ')', n);
    strcpy(deep + 4 + 2 * n, " }}");
    assert_int_equal(render_opts(deep, NULL, &o, &out), TN_ERR_FORMAT);
    assert_non_null(strstr(tn_last_error(), "deeper"));
    free(deep);
    /* and within the limits the same interpreter still works */
    assert_int_equal(render_opts("{% for i in range(3) %}{{ i }}{% endfor %}", NULL, &o, &out), TN_OK);
    assert_string_equal(out, "012");
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whitespace), cmocka_unit_test(test_raw), cmocka_unit_test(test_recursive_loop),   cmocka_unit_test(test_expressions),
        cmocka_unit_test(test_statements),   cmocka_unit_test(test_filters_and_tests),
        cmocka_unit_test(test_errors),       cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
