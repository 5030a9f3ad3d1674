/*
 * sse.c — server-sent events over an evhttp chunked reply: one
 * "data: JSON\n\n" event per chunk, "data: [DONE]\n\n" at the end of an
 * OpenAI stream. A client that has gone away is noticed by evhttp (the
 * connection's close callback, gen.c), never here.
 */
#include "serve/serve_int.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

void sse_begin(struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_send_reply_start(req, 200, "OK");
}

void sse_send_raw(struct evhttp_request *req, const char *s)
{
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return;
    evbuffer_add_printf(b, "data: %s\n\n", s);
    evhttp_send_reply_chunk(req, b);
    evbuffer_free(b);
}

void sse_send(struct evhttp_request *req, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text)
        sse_send_raw(req, text);
    free(text);
}

void sse_end(struct evhttp_request *req, bool done_marker)
{
    if (done_marker)
        sse_send_raw(req, "[DONE]");
    evhttp_send_reply_end(req);
}
