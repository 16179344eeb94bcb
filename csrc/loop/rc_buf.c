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
#include "proto/rc_deflate.h"
#include "proto/rc_frame.h"
#include "proto/rc_http.h"
#include "proto/rc_tls.h"

rc_buf *rc__buf_new(size_t len) {
  void *block = malloc(sizeof(rc_buf) + len);
  return block != NULL ? rc__buf_from_block(block, len) : NULL;
}

rc_buf *rc__buf_from_block(void *block, size_t len) {
  rc_buf *b = block;
  b->refs = 1;
  b->len = len;
  b->is_message = 0;
  b->zstate = RC__BUF_Z_UNTRIED;
  b->z = NULL;
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

size_t rc__buf_payload_len(const rc_buf *b) {
  unsigned len7 = b->data[1] & 0x7Fu;
  size_t hl = len7 < 126 ? 2 : len7 == 126 ? 4 : 10;
  return b->len - hl;
}

/* The RSV1 bit of a frame's first byte (RFC 7692 6: "Per-Message
 * Compressed"). */
#define RC__RSV1 0x40u

rc_buf *rc__buf_deflated(rc_buf *b, rc_deflater *d, size_t min) {
  if (b->zstate == RC__BUF_Z_MADE)
    return b->z;
  if (b->zstate == RC__BUF_Z_PLAIN)
    return NULL;
  b->zstate = RC__BUF_Z_PLAIN; /* unless made below */
  size_t plen = rc__buf_payload_len(b);
  if (!b->is_message || d == NULL || plen < min || plen < 2)
    return NULL;
  const uint8_t *payload = b->data + (b->len - plen);
  /* Compressed into place after the longest header the result can need (it
   * is shorter than plen), then moved up behind the one it gets: a move of
   * the compressed bytes, not a second buffer. */
  size_t room = rc_frame_header_len(plen);
  rc_buf *z = rc__buf_new(room + plen);
  if (z == NULL)
    return NULL;
  size_t zlen;
  if (rc_deflate_message(d, payload, plen, z->data + room, plen, &zlen) !=
      RC_DEFLATE_OK) {
    free(z);
    return NULL;
  }
  uint8_t head[RC_FRAME_MAX_HEADER];
  size_t hl = rc_frame_header(head, b->data[0] & 0x0Fu, 1, zlen);
  if (hl < room)
    memmove(z->data + hl, z->data + room, zlen);
  memcpy(z->data, head, hl);
  z->data[0] |= RC__RSV1;
  z->len = hl + zlen;
  /* Sized from what it holds: it may wait in slow members' queues. */
  rc_buf *fit = realloc(z, sizeof(*z) + z->len);
  if (fit != NULL)
    z = fit;
  z->is_message = 1;
  z->zstate = RC__BUF_Z_PLAIN; /* the twin is never compressed itself */
  b->z = z;
  b->zstate = RC__BUF_Z_MADE;
  return z;
}

void rc__buf_take_deflated(rc_buf *b, const uint8_t *z, size_t zlen) {
  if (b->zstate != RC__BUF_Z_UNTRIED || zlen >= rc__buf_payload_len(b))
    return; /* compressed larger than plain: the message goes plain */
  rc_buf *t = rc__buf_frame(b->data[0] & 0x0Fu, z, zlen);
  if (t == NULL)
    return; /* compressed by the loop's compressor if needed */
  t->data[0] |= RC__RSV1;
  t->is_message = 1;
  t->zstate = RC__BUF_Z_PLAIN;
  b->z = t;
  b->zstate = RC__BUF_Z_MADE;
}

void rc__buf_unref(rc_buf *b) {
  if (b != NULL && --b->refs == 0) {
    rc__buf_unref(b->z);
    free(b);
  }
}
