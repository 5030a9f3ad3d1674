#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *tn_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        if (len)
            *len = (size_t)n;
    }
    return buf;
}

int tn_test_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

char *tn_test_tmp_path(const char *suffix)
{
    static int counter;
    char *p = malloc(256);
    snprintf(p, 256, "/tmp/tern-test-%d-%d%s", (int)getpid(), counter++, suffix ? suffix : "");
    return p;
}

int tn_test_vectors_read(const char *inp_path, const char *out_path, tn_test_vector **out)
{
    static const char SEP[] = "\n__ggml_vocab_test__\n";
    const size_t sep_len = sizeof SEP - 1;
    size_t inp_len, out_len;
    char *inp = tn_test_read_file(inp_path, &inp_len);
    char *outs = tn_test_read_file(out_path, &out_len);
    tn_test_vector *v = NULL;
    int n = 0, cap = 0, ok = inp && outs;
    char *ip = inp, *op = outs;
    while (ok && ip < inp + inp_len) {
        char *sep = memmem(ip, (size_t)(inp + inp_len - ip), SEP, sep_len);
        char *eol = op < outs + out_len ? memchr(op, '\n', (size_t)(outs + out_len - op)) : NULL;
        if (!sep || !eol) {
            ok = 0;
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            v = realloc(v, (size_t)cap * sizeof *v);
        }
        tn_test_vector *t = &v[n++];
        t->len = (size_t)(sep - ip);
        t->text = malloc(t->len ? t->len : 1);
        memcpy(t->text, ip, t->len);
        *eol = '\0';
        t->ids = malloc(sizeof(int32_t) * ((size_t)(eol - op) / 2 + 1));
        t->n_ids = 0;
        for (char *q = op, *e;; q = e) {
            long x = strtol(q, &e, 10);
            if (e == q)
                break;
            t->ids[t->n_ids++] = (int32_t)x;
        }
        ip = sep + sep_len;
        op = eol + 1;
    }
    if (ok && op != outs + out_len)
        ok = 0;
    free(inp);
    free(outs);
    if (!ok) {
        tn_test_vectors_free(v, n);
        *out = NULL;
        return -1;
    }
    *out = v;
    return n;
}

void tn_test_vectors_free(tn_test_vector *v, int n)
{
    for (int i = 0; i < n; i++) {
        free(v[i].text);
        free(v[i].ids);
    }
    free(v);
}

int tn_test_read_ints(const char *path, int32_t *out, int max)
{
    char *txt = tn_test_read_file(path, NULL);
    if (!txt)
        return -1;
    int n = 0;
    char *p = txt, *end;
    for (long v = strtol(p, &end, 10); end != p; v = strtol(p, &end, 10)) {
        if (n == max) {
            n = -1;
            break;
        }
        out[n++] = (int32_t)v;
        p = end;
    }
    free(txt);
    return n;
}
