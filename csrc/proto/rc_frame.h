/* rc_frame.h - WebSocket frame encoding (RFC 6455 5.2, 5.3).
 * Server frames are never masked, so one encoded frame serves every member;
 * a client masks every frame with a fresh key (rc_frame_client_header,
 * rc_frame_mask), so its frames are its own. */
#ifndef RC_FRAME_H
#define RC_FRAME_H

#include <stddef.h>
#include <stdint.h>

enum {
  RC_OP_CONT = 0x0,
  RC_OP_TEXT = 0x1,
  RC_OP_BINARY = 0x2,
  RC_OP_CLOSE = 0x8,
  RC_OP_PING = 0x9,
  RC_OP_PONG = 0xA,
};

#define RC_FRAME_MAX_HEADER 10

/* Length of the header for a payload of len bytes: 2, 4 or 10. */
size_t rc_frame_header_len(uint64_t len);

/* Writes the header of one unmasked frame with FIN set (fin != 0) or clear
 * into out and returns its length (2, 4 or 10): 7-bit, 16-bit or 64-bit
 * length as the RFC requires (the shortest form). */
size_t rc_frame_header(uint8_t out[RC_FRAME_MAX_HEADER], unsigned opcode,
                       int fin, uint64_t len);

#define RC_FRAME_MAX_CLIENT_HEADER 14

/* Writes the header of one masked client frame with FIN set: the same
 * lengths as rc_frame_header, the mask bit, then the 4-byte masking key.
 * Returns 6, 8 or 14. */
size_t rc_frame_client_header(uint8_t out[RC_FRAME_MAX_CLIENT_HEADER],
                              unsigned opcode, uint64_t len,
                              const uint8_t key[4]);

/* dst[i] = src[i] XOR key[i % 4] for i < len (RFC 6455 5.3); dst may be
 * src. Masking twice with the same key gives the bytes back. */
void rc_frame_mask(uint8_t *dst, const uint8_t *src, size_t len,
                   const uint8_t key[4]);

/* Writes a close payload: 2-byte big-endian code then the reason, truncated
 * on a UTF-8 boundary so that the payload stays <= 125 bytes. code 0 means no
 * status (empty payload). Returns the payload length. */
size_t rc_frame_close_payload(uint8_t out[125], unsigned code,
                              const char *reason, size_t reason_len);

/* 1 when code may appear in a close frame on the wire (RFC 6455 7.4):
 * 1000-1003, 1007-1011, 1012-1014 (IANA), 3000-4999. */
int rc_close_code_valid(unsigned code);

/* Tracks frame boundaries in a client's byte stream without keeping any
 * payload: enough to know when no frame and no fragmented message is in
 * progress, so that a connection's parser state can be dropped while it is
 * idle. It trusts nothing it reads: lengths only count bytes down. */
typedef struct rc_frame_scan {
  uint64_t left; /* payload bytes of the current frame still to come */
  uint8_t hdr[14];
  uint8_t hlen;    /* header bytes gathered so far */
  uint8_t in_msg;  /* a data frame without FIN was seen: message unfinished */
  uint32_t frags;  /* data frames of the current message so far (saturates) */
  uint16_t error;  /* close code for the first bad header; then it stops */
  uint8_t closing; /* stopped at the first byte of a close frame */
} rc_frame_scan;

/* Advances the scanner over len bytes and returns how many of them may go
 * on to the frame parser: all of them, or the bytes before the first
 * header it stops at, after which every later call returns 0. It stops at
 * a bad header (sc->error then holds the close code) and at the first byte
 * of a close frame (sc->closing set: the close frame is the caller's to
 * read whole, see rc_frame_close_size). Bad headers, refused before any of
 * their payload is buffered: a control frame that is fragmented or longer
 * than 125 bytes, a 64-bit length with its top bit set (1002), and a data
 * frame that makes a message of more than max_frags fragments (1009; 0: no
 * limit). Other protocol errors (reserved bits and opcodes, masking) are
 * left to the parser. */
size_t rc_frame_scan_feed(rc_frame_scan *sc, const uint8_t *p, size_t len,
                          uint32_t max_frags);

/* 1 when the bytes fed so far end exactly between two messages. */
int rc_frame_scan_at_rest(const rc_frame_scan *sc);

/* A close frame read whole: at most a 14-byte header and 125 bytes. */
#define RC_FRAME_MAX_CLOSE (RC_FRAME_MAX_CLIENT_HEADER + 125)

/* How many bytes of a close frame are needed to go on, given its first len
 * bytes: 2 before the length is known, then the header's length, then the
 * whole frame's (header only when it declares more than 125 bytes, which
 * rc_frame_close_parse refuses). The frame is complete when len reaches
 * it. Never more than RC_FRAME_MAX_CLOSE. */
size_t rc_frame_close_size(const uint8_t *frame, size_t len);

typedef struct rc_frame_close {
  unsigned code;         /* 0: no status code (an empty payload) */
  const uint8_t *reason; /* inside the frame, unmasked; valid UTF-8 */
  size_t reason_len;
} rc_frame_close;

/* Reads a complete close frame (len == rc_frame_close_size(frame, len)),
 * unmasking its payload in place. masked: 1 for a frame from a client,
 * which must be masked, 0 for one from a server, which must not. Returns 0
 * with *out filled, or the close code to fail the connection with: 1002
 * for a fragmented frame, reserved bits, the wrong masking, a payload of 1
 * or more than 125 bytes, or a code no endpoint may send
 * (rc_close_code_valid); 1007 for a reason that is not UTF-8. */
unsigned rc_frame_close_parse(uint8_t *frame, size_t len, int masked,
                              rc_frame_close *out);

#endif
