/* rc_buf.h - the shared frame buffer (rc_buf.c). Not installed.
 *
 * A buffer holds bytes ready for a socket: one WebSocket frame, or an HTTP
 * answer. It is made once and queued by reference on every connection it
 * goes to (a room's members), so a message is copied once however many
 * members it reaches.
 */
#ifndef RC_BUF_H
#define RC_BUF_H

#include <stddef.h>
#include <stdint.h>

/* A buffer is made on the embedder's thread and handed to the loop through
 * the command queue (whose lock orders the two); from then on only the loop
 * thread touches the count, so it is a plain integer: two atomic operations
 * per delivery cost more than the rest of the fan-out's user-space work.
 * Several loops sharing one buffer would each need a count of their own. */
typedef struct rc_buf {
  size_t refs;
  size_t len;
  /* 1: one whole data message, which drop_oldest may drop. Control frames
   * (wslay writes one as two buffers, header then payload) and HTTP answers
   * are 0: a payload's first byte proves nothing. */
  uint8_t is_message;
  uint8_t data[];
} rc_buf;

/* Each returns a buffer holding one reference, or NULL (out of memory). */
rc_buf *rc__buf_new(size_t len);
/* One complete unmasked frame: header then a copy of payload. */
rc_buf *rc__buf_frame(unsigned opcode, const void *payload, size_t len);
/* The same for a text (is_text) or binary message: is_message set. */
rc_buf *rc__buf_message(int is_text, const void *payload, size_t len);
/* A client's frame: masked with a fresh random key (RFC 6455 5.3); NULL
 * also when no random bytes could be had. */
rc_buf *rc__buf_client_frame(unsigned opcode, const void *payload, size_t len);
/* A complete HTTP response (see rc_http_response); head_only leaves the
 * body out but keeps its Content-Length. */
rc_buf *rc__buf_http(int status, const char *extra_headers, const void *body,
                     size_t body_len, int close_after, int head_only);

static inline void rc__buf_ref(rc_buf *b) { b->refs++; }
void rc__buf_unref(rc_buf *b); /* NULL-safe */

#endif
