/* rc_sha1.h - SHA-1 (FIPS 180-4) and base64 (RFC 4648), just enough for the
 * Sec-WebSocket-Accept value. Not for anything security-sensitive. */
#ifndef RC_SHA1_H
#define RC_SHA1_H

#include <stddef.h>
#include <stdint.h>

typedef struct rc_sha1 {
  uint32_t h[5];
  uint64_t len; /* bytes hashed so far */
  uint8_t block[64];
  size_t used;
} rc_sha1;

void rc_sha1_init(rc_sha1 *s);
void rc_sha1_update(rc_sha1 *s, const void *data, size_t len);
void rc_sha1_final(rc_sha1 *s, uint8_t digest[20]);

/* Standard base64 with '=' padding; writes 4*ceil(len/3) chars and a NUL.
 * Returns the number of chars written (without the NUL). */
size_t rc_base64_encode(const uint8_t *in, size_t len, char *out);

/* Decoded length of a valid standard base64 string, or -1 when it is not
 * valid padded base64. Used to check Sec-WebSocket-Key (must decode to 16). */
long rc_base64_decoded_len(const char *in, size_t len);

#endif
