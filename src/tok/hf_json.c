/*
 * hf_json.c — a byte-level BPE vocabulary from a Hugging Face
 * tokenizer.json (and tokenizer_config.json beside it).
 *
 * Key idea: translate the JSON into the tokenizer.ggml.* keys llama.cpp's
 * converter would write (tokens by id, token types, merges as "left
 * right", the pre-tokenizer's name, BOS/EOS ids), then build the vocabulary
 * from those keys like any GGUF file. So a tokenizer.json tokenizes exactly
 * as the GGUF converted from it, and `tern convert` can write the same keys.
 *
 * What is read:
 *   model.type                  must be "BPE"
 *   model.vocab                 {piece: id}
 *   model.merges                ["left right", ...] or [["left", "right"], ...], in rank order
 *   added_tokens[]              {id, content, special, lstrip, rstrip}: special → control, else
 *                               user-defined; lstrip/rstrip → tokenizer.tern.token_strip
 *   normalizer                  null, NFC, or a Sequence of at most one NFC → tokenizer.tern.normalizer;
 *                               any other normalizer is TN_ERR_UNSUPPORTED
 *   pre_tokenizer               ByteLevel (use_regex: GPT-2's pattern) or a Sequence of
 *                               Split {pattern.Regex, behavior "Isolated"} and ByteLevel;
 *                               the regexes must be a known set (pretok.c)
 *   tokenizer_config.json       bos_token, eos_token, pad_token (string or {content}),
 *                               add_bos_token, add_eos_token; optional
 * Ids not used by any piece become "[PAD<id>]" unused tokens, as in
 * llama.cpp's converter. Unlike llama.cpp (whose GGUF has no place for
 * it), the NFC normalizer is kept and applied, as Hugging Face does.
 */
#include "tok/tok_int.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

/* Loads a JSON file; TN_ERR_IO if it cannot be read, TN_ERR_FORMAT with
 * jansson's line and column if it does not parse. */
static tn_status load_json(const char *path, json_t **out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return tn__err(TN_ERR_IO, "tok: cannot open %s: %s", path, strerror(errno));
    json_error_t e;
    *out = json_loadf(f, JSON_REJECT_DUPLICATES, &e);
    fclose(f);
    if (!*out)
        return tn__err(TN_ERR_FORMAT, "tok: %s:%d:%d: %s", path, e.line, e.column, e.text);
    return TN_OK;
}

/* Converts literal CR and LF characters of a regex into the escapes \r and
 * \n (some tokenizer.json files write them raw), so regexes compare with
 * the table's spelling. Returns a malloc'd string or NULL. */
static char *escape_crlf(const char *s)
{
    size_t n = strlen(s), w = 0;
    char *o = malloc(2 * n + 1);
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' || s[i] == '\n') {
            o[w++] = '\\';
            o[w++] = s[i] == '\r' ? 'r' : 'n';
        } else {
            o[w++] = s[i];
        }
    }
    o[w] = '\0';
    return o;
}

/* Collects the regexes of one pre-tokenizer node into re[*n]. */
static tn_status collect_pre(const char *path, json_t *node, char **re, int *n, int depth)
{
    const char *type = json_string_value(json_object_get(node, "type"));
    if (!type)
        return tn__err(TN_ERR_FORMAT, "tok: %s: pre_tokenizer has no \"type\"", path);
    if (!strcmp(type, "Sequence") && depth == 0) {
        json_t *list = json_object_get(node, "pretokenizers");
        size_t i;
        json_t *it;
        if (!json_is_array(list))
            return tn__err(TN_ERR_FORMAT, "tok: %s: pre_tokenizer.pretokenizers is not an array", path);
        json_array_foreach(list, i, it)
        {
            tn_status s = collect_pre(path, it, re, n, 1);
            if (s != TN_OK)
                return s;
        }
        return TN_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        json_t *use = json_object_get(node, "use_regex");
        if (use && !json_is_true(use))
            return TN_OK;
        if (*n >= 8)
            return tn__err(TN_ERR_UNSUPPORTED, "tok: %s: more than 8 pre-tokenizer regexes", path);
        re[(*n)++] = strdup("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+");
        return re[*n - 1] ? TN_OK : tn__err(TN_ERR_NOMEM, "tok: out of memory");
    }
    if (!strcmp(type, "Split")) {
        const char *rx = json_string_value(json_object_get(json_object_get(node, "pattern"), "Regex"));
        const char *beh = json_string_value(json_object_get(node, "behavior"));
        if (!rx || !beh || strcmp(beh, "Isolated") != 0 || json_is_true(json_object_get(node, "invert")))
            return tn__err(TN_ERR_UNSUPPORTED,
                           "tok: %s: pre_tokenizer Split is supported only with a pattern.Regex, behavior "
                           "\"Isolated\" and invert false",
                           path);
        if (*n >= 8)
            return tn__err(TN_ERR_UNSUPPORTED, "tok: %s: more than 8 pre-tokenizer regexes", path);
        re[(*n)++] = escape_crlf(rx);
        return re[*n - 1] ? TN_OK : tn__err(TN_ERR_NOMEM, "tok: out of memory");
    }
    return tn__err(TN_ERR_UNSUPPORTED, "tok: %s: pre_tokenizer type \"%s\" is not supported", path, type);
}

/* The token text of a tokenizer_config.json entry (string or {content}). */
static const char *config_token(json_t *cfg, const char *key)
{
    json_t *t = json_object_get(cfg, key);
    if (json_is_object(t))
        t = json_object_get(t, "content");
    return json_string_value(t);
}

/* Writes the vocabulary's tokenizer.ggml.* keys; see tok.h. */
tn_status tn_vocab_hf_json_to_gguf(const char *path, tn_gguf_writer *w)
{
    if (!path || !w)
        return tn__err(TN_ERR_INVALID, "tok: tn_vocab_hf_json_to_gguf: NULL path or writer");
    json_t *root = NULL, *cfg = NULL;
    char **pieces = NULL, *re[8] = {0}, **merges = NULL;
    int32_t *types = NULL;
    size_t n_tok = 0, n_merges = 0;
    int n_re = 0;
    tn_status s = load_json(path, &root);
    if (s != TN_OK)
        return s;

    json_t *model = json_object_get(root, "model");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!mtype || strcmp(mtype, "BPE") != 0) {
        s = tn__err(TN_ERR_UNSUPPORTED, "tok: %s: model.type is \"%s\"; only \"BPE\" (byte-level) is supported", path,
                    mtype ? mtype : "(missing)");
        goto done;
    }
    json_t *vocab = json_object_get(model, "vocab"), *added = json_object_get(root, "added_tokens");
    json_t *jm = json_object_get(model, "merges");
    if (!json_is_object(vocab) || !json_is_array(jm)) {
        s = tn__err(TN_ERR_FORMAT, "tok: %s: model.vocab must be an object and model.merges an array", path);
        goto done;
    }

    /* ids: the largest one sets the size */
    const char *key;
    json_t *val;
    size_t i;
    json_int_t max_id = -1;
    json_object_foreach(vocab, key, val)
    {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= INT32_MAX / 2) {
            s = tn__err(TN_ERR_FORMAT, "tok: %s: model.vocab[\"%.40s\"] is not a valid id", path, key);
            goto done;
        }
        max_id = TN_MAX(max_id, json_integer_value(val));
    }
    json_array_foreach(added, i, val)
    {
        json_t *id = json_object_get(val, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= INT32_MAX / 2 ||
            !json_is_string(json_object_get(val, "content"))) {
            s = tn__err(TN_ERR_FORMAT, "tok: %s: added_tokens[%zu] needs an id and a content", path, i);
            goto done;
        }
        max_id = TN_MAX(max_id, json_integer_value(id));
    }
    if (max_id < 0) {
        s = tn__err(TN_ERR_FORMAT, "tok: %s: model.vocab is empty", path);
        goto done;
    }
    n_tok = (size_t)max_id + 1;
    pieces = calloc(n_tok, sizeof *pieces);
    types = malloc(n_tok * sizeof *types);
    if (!pieces || !types)
        goto nomem;
    json_object_foreach(vocab, key, val)
    {
        size_t id = (size_t)json_integer_value(val);
        if (pieces[id]) {
            s = tn__err(TN_ERR_FORMAT, "tok: %s: model.vocab gives id %zu to two pieces", path, id);
            goto done;
        }
        if (!(pieces[id] = strdup(key)))
            goto nomem;
        types[id] = TN_TOKEN_NORMAL;
    }
    json_array_foreach(added, i, val)
    {
        size_t id = (size_t)json_integer_value(json_object_get(val, "id"));
        free(pieces[id]);
        if (!(pieces[id] = strdup(json_string_value(json_object_get(val, "content")))))
            goto nomem;
        types[id] = json_is_true(json_object_get(val, "special")) ? TN_TOKEN_CONTROL : TN_TOKEN_USER_DEFINED;
    }
    for (size_t id = 0; id < n_tok; id++) {
        if (pieces[id])
            continue;
        char buf[32];
        snprintf(buf, sizeof buf, "[PAD%zu]", id);
        if (!(pieces[id] = strdup(buf)))
            goto nomem;
        types[id] = TN_TOKEN_UNUSED;
    }

    /* merges, as "left right" */
    n_merges = json_array_size(jm);
    merges = calloc(n_merges ? n_merges : 1, sizeof *merges);
    if (!merges)
        goto nomem;
    json_array_foreach(jm, i, val)
    {
        if (json_is_string(val)) {
            merges[i] = strdup(json_string_value(val));
        } else if (json_is_array(val) && json_array_size(val) == 2 && json_is_string(json_array_get(val, 0)) &&
                   json_is_string(json_array_get(val, 1))) {
            const char *l = json_string_value(json_array_get(val, 0)), *r = json_string_value(json_array_get(val, 1));
            size_t ll = strlen(l), rl = strlen(r);
            if ((merges[i] = malloc(ll + rl + 2))) {
                memcpy(merges[i], l, ll);
                merges[i][ll] = ' ';
                memcpy(merges[i] + ll + 1, r, rl + 1);
            }
        } else {
            s = tn__err(TN_ERR_FORMAT, "tok: %s: model.merges[%zu] is neither \"left right\" nor [left, right]", path, i);
            goto done;
        }
        if (!merges[i])
            goto nomem;
    }

    /* the pre-tokenizer: a known regex set */
    json_t *pre = json_object_get(root, "pre_tokenizer");
    if (!json_is_object(pre)) {
        s = tn__err(TN_ERR_UNSUPPORTED, "tok: %s: pre_tokenizer is missing; a byte-level BPE needs one", path);
        goto done;
    }
    if ((s = collect_pre(path, pre, re, &n_re, 0)) != TN_OK)
        goto done;
    const char *pre_name = tn__pretok_name_for((const char *const *)re, n_re);
    if (!pre_name) {
        s = tn__err(TN_ERR_UNSUPPORTED, "tok: %s: the pre_tokenizer's %d regexes (the first: \"%.60s\") are not a known "
                    "pre-tokenizer", path, n_re, n_re > 0 ? re[0] : "");
        goto done;
    }

    if ((s = tn_gguf_set_str(w, "tokenizer.ggml.model", "gpt2")) != TN_OK ||
        (s = tn_gguf_set_str(w, "tokenizer.ggml.pre", pre_name)) != TN_OK ||
        (s = tn_gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)pieces, n_tok)) != TN_OK ||
        (s = tn_gguf_set_arr(w, "tokenizer.ggml.token_type", TN_GGUF_INT32, types, n_tok)) != TN_OK ||
        (s = tn_gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, n_merges)) != TN_OK)
        goto done;

    /* the normalizer: none, or NFC (alone or as a one-entry Sequence) */
    {
        json_t *norm = json_object_get(root, "normalizer");
        const char *what = NULL;
        if (norm && !json_is_null(norm)) {
            const char *type = json_string_value(json_object_get(norm, "type"));
            json_t *list = json_object_get(norm, "normalizers");
            if (type && !strcmp(type, "Sequence") && json_is_array(list) && json_array_size(list) <= 1) {
                norm = json_array_get(list, 0);
                type = norm ? json_string_value(json_object_get(norm, "type")) : NULL;
                if (!norm)
                    type = "";
            }
            if (type && !strcmp(type, "NFC")) {
                what = "NFC";
            } else if (!type || *type) {
                s = tn__err(TN_ERR_UNSUPPORTED, "tok: %s: normalizer \"%s\" is not supported (only NFC is)", path,
                            type ? type : "?");
                goto done;
            }
        }
        if (what && (s = tn_gguf_set_str(w, TN__KEY_NORMALIZER, what)) != TN_OK)
            goto done;
    }

    /* added tokens that eat the white space before (lstrip) or after
     * (rstrip) them */
    {
        bool any = false;
        json_array_foreach(added, i, val)
        {
            any = any || json_is_true(json_object_get(val, "lstrip")) || json_is_true(json_object_get(val, "rstrip"));
        }
        if (any) {
            uint8_t *strip = calloc(n_tok, 1);
            if (!strip)
                goto nomem;
            json_array_foreach(added, i, val)
            {
                size_t id = (size_t)json_integer_value(json_object_get(val, "id"));
                strip[id] = (uint8_t)((json_is_true(json_object_get(val, "lstrip")) ? 1 : 0) |
                                      (json_is_true(json_object_get(val, "rstrip")) ? 2 : 0));
            }
            s = tn_gguf_set_arr(w, TN__KEY_TOKEN_STRIP, TN_GGUF_UINT8, strip, n_tok);
            free(strip);
            if (s != TN_OK)
                goto done;
        }
    }

    /* tokenizer_config.json beside it: special ids and add_bos/add_eos */
    {
        char cpath[4096];
        const char *slash = strrchr(path, '/');
        int dir = slash ? (int)(slash - path + 1) : 0;
        snprintf(cpath, sizeof cpath, "%.*stokenizer_config.json", dir, path);
        FILE *f = fopen(cpath, "rb");
        if (f) {
            fclose(f);
            if ((s = load_json(cpath, &cfg)) != TN_OK)
                goto done;
            static const struct {
                const char *cfg, *key;
            } ids[] = {{"bos_token", "tokenizer.ggml.bos_token_id"},
                       {"eos_token", "tokenizer.ggml.eos_token_id"},
                       {"pad_token", "tokenizer.ggml.padding_token_id"},
                       {"unk_token", "tokenizer.ggml.unknown_token_id"}};
            for (size_t k = 0; k < TN_ARRAY_LEN(ids); k++) {
                const char *t = config_token(cfg, ids[k].cfg);
                if (!t)
                    continue;
                size_t id = 0;
                while (id < n_tok && strcmp(pieces[id], t) != 0)
                    id++;
                if (id == n_tok) {
                    s = tn__err(TN_ERR_FORMAT, "tok: %s: %s \"%.40s\" is not a token of %s", cpath, ids[k].cfg, t, path);
                    goto done;
                }
                if ((s = tn_gguf_set_u32(w, ids[k].key, (uint32_t)id)) != TN_OK)
                    goto done;
            }
            json_t *b = json_object_get(cfg, "add_bos_token");
            if (json_is_boolean(b) && (s = tn_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", json_is_true(b))) != TN_OK)
                goto done;
            b = json_object_get(cfg, "add_eos_token");
            if (json_is_boolean(b) && (s = tn_gguf_set_bool(w, "tokenizer.ggml.add_eos_token", json_is_true(b))) != TN_OK)
                goto done;
        }
    }
    s = TN_OK;
    goto done;
nomem:
    s = tn__err(TN_ERR_NOMEM, "tok: %s: out of memory", path);
done:
    if (pieces)
        for (size_t k = 0; k < n_tok; k++)
            free(pieces[k]);
    free(pieces);
    free(types);
    if (merges)
        for (size_t k = 0; k < n_merges; k++)
            free(merges[k]);
    free(merges);
    for (int k = 0; k < n_re; k++)
        free(re[k]);
    json_decref(root);
    json_decref(cfg);
    return s;
}

/* Builds the vocabulary of a tokenizer.json; see tok.h. */
tn_status tn_vocab_from_hf_json(const char *path, tn_vocab **out)
{
    return tn__vocab_from_converter(path, tn_vocab_hf_json_to_gguf, out);
}
