/*
 * model_api.c — the small accessors libtern's public API offers on a model
 * (tern/tern.h); inside the library code reads tn_model's fields directly.
 */
#include "model/model.h"

int32_t tn_model_n_vocab(const tn_model *m) { return m->hp.n_vocab; }

int32_t tn_model_n_ctx_train(const tn_model *m) { return m->hp.n_ctx_train; }
