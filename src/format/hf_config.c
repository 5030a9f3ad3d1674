/*
 * hf_config.c — Hugging Face config.json getters (contract in hf_config.h).
 */
#include "format/hf_config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tn_hf_config {
    char *path;
    json_t *root;
};

tn_status tn_hf_config_load(const char *path, tn_hf_config **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return tn__err(TN_ERR_IO, "config: cannot open %s", path);
    json_error_t e;
    json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &e);
    fclose(f);
    if (!root)
        return tn__err(TN_ERR_FORMAT, "config: %s:%d:%d: %s", path, e.line, e.column, e.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return tn__err(TN_ERR_FORMAT, "config: %s: not a JSON object", path);
    }
    tn_hf_config *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(path))) {
        free(c);
        json_decref(root);
        return tn__err(TN_ERR_NOMEM, "config: out of memory");
    }
    c->root = root;
    *out = c;
    return TN_OK;
}

void tn_hf_config_free(tn_hf_config *c)
{
    if (!c)
        return;
    json_decref(c->root);
    free(c->path);
    free(c);
}

const char *tn_hf_config_path(const tn_hf_config *c) { return c->path; }

/* Follows a dotted key; NULL if absent or null anywhere on the way. */
static json_t *lookup(const tn_hf_config *c, const char *key)
{
    json_t *v = c->root;
    char part[128];
    const char *p = key;
    while (v && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n >= sizeof part || !json_is_object(v))
            return NULL;
        memcpy(part, p, n);
        part[n] = '\0';
        v = json_object_get(v, part);
        p += n + (dot ? 1 : 0);
    }
    return json_is_null(v) ? NULL : v;
}

bool tn_hf_config_has(const tn_hf_config *c, const char *key) { return lookup(c, key) != NULL; }

static tn_status missing(const tn_hf_config *c, const char *key)
{
    return tn__err(TN_ERR_FORMAT, "config: %s: missing field '%s'", c->path, key);
}

tn_status tn_hf_config_int(const tn_hf_config *c, const char *key, bool required, int64_t def, int64_t lo, int64_t hi,
                           int64_t *out)
{
    json_t *v = lookup(c, key);
    if (!v) {
        *out = def;
        return required ? missing(c, key) : TN_OK;
    }
    if (!json_is_integer(v))
        return tn__err(TN_ERR_FORMAT, "config: %s: field '%s' is not an integer", c->path, key);
    int64_t x = (int64_t)json_integer_value(v);
    if (x < lo || x > hi)
        return tn__err(TN_ERR_FORMAT, "config: %s: field '%s' = %lld out of range [%lld, %lld]", c->path, key,
                       (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return TN_OK;
}

tn_status tn_hf_config_f64(const tn_hf_config *c, const char *key, bool required, double def, double *out)
{
    json_t *v = lookup(c, key);
    if (!v) {
        *out = def;
        return required ? missing(c, key) : TN_OK;
    }
    if (!json_is_number(v))
        return tn__err(TN_ERR_FORMAT, "config: %s: field '%s' is not a number", c->path, key);
    *out = json_number_value(v);
    return TN_OK;
}

tn_status tn_hf_config_bool(const tn_hf_config *c, const char *key, bool required, bool def, bool *out)
{
    json_t *v = lookup(c, key);
    if (!v) {
        *out = def;
        return required ? missing(c, key) : TN_OK;
    }
    if (!json_is_boolean(v))
        return tn__err(TN_ERR_FORMAT, "config: %s: field '%s' is not true or false", c->path, key);
    *out = json_is_true(v);
    return TN_OK;
}

static tn_status copy_str(const tn_hf_config *c, const char *key, json_t *v, char *buf, size_t cap)
{
    const char *s = json_string_value(v);
    if (!s)
        return tn__err(TN_ERR_FORMAT, "config: %s: field '%s' is not a string", c->path, key);
    if (strlen(s) >= cap)
        return tn__err(TN_ERR_FORMAT, "config: %s: field '%s' is longer than %zu bytes", c->path, key, cap - 1);
    memcpy(buf, s, strlen(s) + 1);
    return TN_OK;
}

tn_status tn_hf_config_str(const tn_hf_config *c, const char *key, bool required, char *buf, size_t cap)
{
    json_t *v = lookup(c, key);
    buf[0] = '\0';
    if (!v)
        return required ? missing(c, key) : TN_OK;
    return copy_str(c, key, v, buf, cap);
}

tn_status tn_hf_config_arr_str(const tn_hf_config *c, const char *key, size_t i, char *buf, size_t cap)
{
    json_t *v = lookup(c, key);
    buf[0] = '\0';
    if (!v)
        return missing(c, key);
    if (!json_is_array(v) || i >= json_array_size(v))
        return tn__err(TN_ERR_FORMAT, "config: %s: field '%s' is not an array with an element %zu", c->path, key, i);
    return copy_str(c, key, json_array_get(v, i), buf, cap);
}
