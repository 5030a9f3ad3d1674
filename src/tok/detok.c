/*
 * detok.c — token ids back to text: one token's piece, and a streaming
 * detokenizer that never emits half a UTF-8 character.
 *
 * Key idea: a piece is rendered as llama.cpp prints it ("▁" → " ", <0xXX> →
 * that byte, control tokens → nothing; byte-level BPE pieces are mapped
 * back from GPT-2's byte alphabet to bytes). Byte tokens can split a character
 * over several ids, so the streaming form holds back a trailing incomplete
 * UTF-8 sequence (at most 3 bytes) until the bytes that complete it arrive;
 * anything that cannot become valid is passed through unchanged.
 */
#include "tok/tok_int.h"

static size_t copy_out(char *buf, size_t cap, const char *p, size_t n)
{
    if (buf && cap > 0)
        memcpy(buf, p, TN_MIN(n, cap));
    return n;
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The bytes of a token as llama.cpp's token_to_piece renders it; see tok.h.
 * Writes min(length, cap) bytes to buf (a prefix when cap is short) and
 * returns the full length. Unused and undefined-type tokens give 0, like
 * invalid ids. */
size_t tn_token_to_piece(const tn_vocab *v, int32_t id, bool render_special, char *buf, size_t cap)
{
    if (!v || id < 0 || id >= v->n_tokens)
        return 0;
    const char *p = v->pool + v->off[id];
    size_t n = v->len[id];
    switch (v->types[id]) {
    case TN_TOKEN_CONTROL:
    case TN_TOKEN_UNKNOWN:
        return render_special ? copy_out(buf, cap, p, n) : 0;
    case TN_TOKEN_USER_DEFINED:
        return copy_out(buf, cap, p, n);
    case TN_TOKEN_BYTE:
        if (n == 6 && memcmp(p, "<0x", 3) == 0 && p[5] == '>' && hex_val(p[3]) >= 0 && hex_val(p[4]) >= 0) {
            char b = (char)(hex_val(p[3]) << 4 | hex_val(p[4]));
            return copy_out(buf, cap, &b, 1);
        }
        return copy_out(buf, cap, p, n); /* a malformed byte token prints as itself */
    case TN_TOKEN_NORMAL: {
        if (v->kind == TN__VOCAB_BPE)
            return tn__bpe_decode_piece(p, n, buf, cap);
        /* "▁" (E2 96 81) becomes a space */
        size_t w = 0;
        for (size_t i = 0; i < n;) {
            char c;
            if (i + 3 <= n && memcmp(p + i, "\xe2\x96\x81", 3) == 0) {
                c = ' ';
                i += 3;
            } else {
                c = p[i++];
            }
            if (buf && w < cap)
                buf[w] = c;
            w++;
        }
        return w;
    }
    default:
        return 0;
    }
}

/* How many bytes at the end of s[0..n) are the start of a UTF-8 sequence
 * that is still missing bytes (0..3). A lead byte that cannot start a valid
 * sequence (0x80..0xC1, 0xF5..0xFF) or too many continuation bytes count as
 * complete: they are passed through. */
static size_t incomplete_tail(const char *s, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = (unsigned char)s[n - k];
        if ((c & 0xC0) == 0x80)
            continue;
        size_t need = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 1;
        return need > k ? k : 0;
    }
    return 0;
}

/* Resets d to an empty stream. */
void tn_detok_init(tn_detok *d) { memset(d, 0, sizeof *d); }

/* Appends the text of token id (control tokens give nothing) to out, less
 * an incomplete UTF-8 sequence at its end, which is held for the next call.
 * Returns bytes written. With cap >= TN_DETOK_MAX nothing is ever lost (the
 * vocabulary refuses pieces over TN_DETOK_MAX - 8 bytes); a smaller cap
 * truncates this call's output. An invalid id emits nothing. */
size_t tn_detok_push(tn_detok *d, const tn_vocab *v, int32_t id, char *out, size_t cap)
{
    char buf[TN_DETOK_MAX + 8];
    size_t np = d->n_pending > 0 && (size_t)d->n_pending <= sizeof d->pending ? (size_t)d->n_pending : 0;
    memcpy(buf, d->pending, np);
    size_t n = tn_token_to_piece(v, id, false, buf + np, sizeof buf - np);
    size_t total = np + TN_MIN(n, sizeof buf - np);
    size_t keep = incomplete_tail(buf, total);
    size_t emit = total - keep;
    copy_out(out, cap, buf, emit);
    memcpy(d->pending, buf + emit, keep);
    d->n_pending = (int)keep;
    return TN_MIN(emit, cap);
}

/* Emits the held bytes (an incomplete sequence at the end of the stream, as
 * it is) and resets d. Returns bytes written (at most cap). */
size_t tn_detok_flush(tn_detok *d, char *out, size_t cap)
{
    size_t np = d->n_pending > 0 && (size_t)d->n_pending <= sizeof d->pending ? (size_t)d->n_pending : 0;
    copy_out(out, cap, d->pending, np);
    d->n_pending = 0;
    return TN_MIN(np, cap);
}
