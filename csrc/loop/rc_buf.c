/* rc_buf.c - shared frame buffers: made once, queued by reference.
 *
 * Every byte a connection writes is in an rc_buf: data messages (made by
 * the command API on the embedder's thread), control frames and HTTP
 * answers (made on the loop thread). The count of references is a plain
 * integer: see rc_buf.h for why that is safe. A buffer is freed when its
 * last reference goes (rc__buf_unref), whichever queue held it last.
 */
#include <stdlib.h>
#include <string.h>

#include "loop/rc_buf.h"
#include "proto/rc_frame.h"
#include "proto/rc_http.h"
#include "proto/rc_tls.h"

rc_buf *rc__buf_new(size_t len) {
  rc_buf *b = malloc(sizeof(*b) + len);
  if (b == NULL)
    return NULL;
  b->refs = 1;
  b->len = len;
  b->is_message = 0;
  return b;
}

rc_buf *rc__buf_frame(unsigned opcode, const void *payload, size_t len) {
  size_t hl = rc_frame_header_len(len);
  rc_buf *b = rc__buf_new(hl + len);
  if (b == NULL)
    return NULL;
  rc_frame_header(b->data, opcode, 1, len);
  if (len > 0)
    memcpy(b->data + hl, payload, len);
  return b;
}

rc_buf *rc__buf_message(int is_text, const void *payload, size_t len) {
  rc_buf *b = rc__buf_frame(is_text ? RC_OP_TEXT : RC_OP_BINARY, payload, len);
  if (b != NULL)
    b->is_message = 1;
  return b;
}

rc_buf *rc__buf_client_frame(unsigned opcode, const void *payload, size_t len) {
  uint8_t key[4];
  if (rc_tls_random(key, sizeof key) != 0)
    return NULL;
  uint8_t head[RC_FRAME_MAX_CLIENT_HEADER];
  size_t hl = rc_frame_client_header(head, opcode, len, key);
  rc_buf *b = rc__buf_new(hl + len);
  if (b == NULL)
    return NULL;
  memcpy(b->data, head, hl);
  rc_frame_mask(b->data + hl, payload, len, key);
  b->is_message = opcode == RC_OP_TEXT || opcode == RC_OP_BINARY;
  return b;
}

rc_buf *rc__buf_http(int status, const char *extra_headers, const void *body,
                     size_t body_len, int close_after, int head_only) {
  size_t n;
  char *rsp =
      rc_http_response(status, extra_headers, body, body_len, close_after, &n);
  if (rsp == NULL)
    return NULL;
  if (head_only)
    n -= body_len; /* the body comes last */
  rc_buf *b = rc__buf_new(n);
  if (b != NULL)
    memcpy(b->data, rsp, n);
  free(rsp);
  return b;
}

void rc__buf_unref(rc_buf *b) {
  if (b != NULL && --b->refs == 0)
    free(b);
}
