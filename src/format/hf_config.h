/*
 * hf_config — reading a Hugging Face config.json: typed getters whose
 * errors name the file and the field.
 *
 * Key idea: a JSON null counts as absent (configs write "q_lora_rank":
 * null), dotted keys reach into objects ("rope_scaling.factor"), and a
 * value of the wrong JSON type is an error, never a silent default.
 */
#ifndef TERN_FORMAT_HF_CONFIG_H
#define TERN_FORMAT_HF_CONFIG_H

#include "base/base.h"

typedef struct tn_hf_config tn_hf_config;

/* Loads path (JSON object at the top). TN_ERR_IO if it cannot be read,
 * TN_ERR_FORMAT with line and column if it does not parse. */
tn_status tn_hf_config_load(const char *path, tn_hf_config **out) TN_MUST_CHECK;
void tn_hf_config_free(tn_hf_config *c);
const char *tn_hf_config_path(const tn_hf_config *c);

/* True if key is present and not null. */
bool tn_hf_config_has(const tn_hf_config *c, const char *key);

/* Getters: absent (or null) and required -> TN_ERR_FORMAT "missing field";
 * absent and not required -> *out = def. Wrong type or out of [lo, hi] ->
 * TN_ERR_FORMAT naming file and field. Integers accept only JSON integers;
 * floats accept integers and reals. */
tn_status tn_hf_config_int(const tn_hf_config *c, const char *key, bool required, int64_t def, int64_t lo, int64_t hi,
                           int64_t *out) TN_MUST_CHECK;
tn_status tn_hf_config_f64(const tn_hf_config *c, const char *key, bool required, double def, double *out) TN_MUST_CHECK;
tn_status tn_hf_config_bool(const tn_hf_config *c, const char *key, bool required, bool def, bool *out) TN_MUST_CHECK;
/* String into buf (cap bytes incl. NUL); absent and not required -> "". */
tn_status tn_hf_config_str(const tn_hf_config *c, const char *key, bool required, char *buf, size_t cap) TN_MUST_CHECK;
/* The i-th string of an array field (e.g. architectures[0]). */
tn_status tn_hf_config_arr_str(const tn_hf_config *c, const char *key, size_t i, char *buf, size_t cap) TN_MUST_CHECK;

#endif /* TERN_FORMAT_HF_CONFIG_H */
