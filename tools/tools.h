/*
 * tools — the subcommands of the `tern` binary. Each is a thin main over
 * libtern: parse arguments, call the library, print, exit. Only tools/ may
 * exit the process.
 */
#ifndef TERN_TOOLS_H
#define TERN_TOOLS_H

int tn_cmd_run(int argc, char **argv);
int tn_cmd_info(int argc, char **argv);
int tn_cmd_synth(int argc, char **argv);
int tn_cmd_tokenize(int argc, char **argv);
int tn_cmd_detokenize(int argc, char **argv);
int tn_cmd_template(int argc, char **argv);
int tn_cmd_serve(int argc, char **argv);
int tn_cmd_loadgen(int argc, char **argv);
int tn_cmd_bench(int argc, char **argv);
int tn_cmd_quantize(int argc, char **argv);
int tn_cmd_perplexity(int argc, char **argv);
int tn_cmd_convert(int argc, char **argv);
int tn_cmd_imatrix(int argc, char **argv);

#endif
