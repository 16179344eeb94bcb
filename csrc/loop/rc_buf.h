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
  /* permessage-deflate: RC__BUF_Z_UNTRIED until a member that negotiated
   * it needs the message; then RC__BUF_Z_MADE (z holds the compressed
   * frame, with its own reference, freed with this buffer) or
   * RC__BUF_Z_PLAIN (too short, no gain, or no memory: plain for all). */
  uint8_t zstate;
  struct rc_buf *z;
  uint8_t data[];
} rc_buf;

enum { RC__BUF_Z_UNTRIED = 0, RC__BUF_Z_MADE, RC__BUF_Z_PLAIN };

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

/* A block of len bytes after RC__BUF_HEADROOM bytes of room (malloc'd;
 * a TLS connection's ciphertext, rc_tls_take_block) made a buffer without
 * a copy: it takes the block over. */
#define RC__BUF_HEADROOM offsetof(rc_buf, data)
rc_buf *rc__buf_from_block(void *block, size_t len);

/* The payload length of a frame made by rc__buf_frame or rc__buf_message. */
size_t rc__buf_payload_len(const rc_buf *b);

struct rc_deflater;
/* The compressed twin of message frame b (RFC 7692 7.2.1: the same opcode,
 * RSV1 set, the payload compressed alone by d), made at the first call and
 * kept with b: one compression however many members take it. NULL when the
 * payload is shorter than min bytes, would not shrink, or memory is short:
 * the message then goes plain to every member (RSV1 is per message). Loop
 * thread only, like the count. */
rc_buf *rc__buf_deflated(rc_buf *b, struct rc_deflater *d, size_t min);

/* Gives message frame b, not yet compressed, the compressed twin made of
 * z[0..zlen), a payload compressed by the sender alone (a relayed
 * message as a member sent it): nothing when it is not shorter than the
 * plain payload or memory is short. */
void rc__buf_take_deflated(rc_buf *b, const uint8_t *z, size_t zlen);

static inline void rc__buf_ref(rc_buf *b) { b->refs++; }
void rc__buf_unref(rc_buf *b); /* NULL-safe */

#endif
