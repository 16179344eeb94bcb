/* rc_sha1.c - SHA-1 (FIPS 180-4 section 6.1) and base64 (RFC 4648 section 4).
 *
 * The handshake hashes a 60-byte string once per connection, so this favours
 * a short, obviously correct implementation over speed. */
#include "proto/rc_sha1.h"

#include <string.h>

static uint32_t rol32(uint32_t x, unsigned n) {
  return (x << n) | (x >> (32 - n));
}

static uint32_t load_be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
         ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void store_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static void sha1_block(uint32_t h[5], const uint8_t block[64]) {
  /* A 16-word ring instead of the 80-word schedule keeps the stack small. */
  uint32_t w[16];
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
  for (int t = 0; t < 80; t++) {
    uint32_t wt;
    if (t < 16) {
      wt = load_be32(block + 4 * t);
    } else {
      wt = rol32(
          w[(t - 3) & 15] ^ w[(t - 8) & 15] ^ w[(t - 14) & 15] ^ w[t & 15], 1);
    }
    w[t & 15] = wt;
    uint32_t f, k;
    if (t < 20) {
      f = (b & c) | (~b & d);
      k = 0x5A827999u;
    } else if (t < 40) {
      f = b ^ c ^ d;
      k = 0x6ED9EBA1u;
    } else if (t < 60) {
      f = (b & c) | (b & d) | (c & d);
      k = 0x8F1BBCDCu;
    } else {
      f = b ^ c ^ d;
      k = 0xCA62C1D6u;
    }
    uint32_t tmp = rol32(a, 5) + f + e + k + wt;
    e = d;
    d = c;
    c = rol32(b, 30);
    b = a;
    a = tmp;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
}

void rc_sha1_init(rc_sha1 *s) {
  s->h[0] = 0x67452301u;
  s->h[1] = 0xEFCDAB89u;
  s->h[2] = 0x98BADCFEu;
  s->h[3] = 0x10325476u;
  s->h[4] = 0xC3D2E1F0u;
  s->len = 0;
  s->used = 0;
}

void rc_sha1_update(rc_sha1 *s, const void *data, size_t len) {
  const uint8_t *p = data;
  s->len += len;
  if (s->used > 0) {
    size_t take = 64 - s->used;
    if (take > len)
      take = len;
    memcpy(s->block + s->used, p, take);
    s->used += take;
    p += take;
    len -= take;
    if (s->used < 64)
      return;
    sha1_block(s->h, s->block);
    s->used = 0;
  }
  while (len >= 64) {
    sha1_block(s->h, p);
    p += 64;
    len -= 64;
  }
  if (len > 0) {
    memcpy(s->block, p, len);
    s->used = len;
  }
}

void rc_sha1_final(rc_sha1 *s, uint8_t digest[20]) {
  uint64_t bits = s->len * 8;
  s->block[s->used++] = 0x80;
  if (s->used > 56) {
    memset(s->block + s->used, 0, 64 - s->used);
    sha1_block(s->h, s->block);
    s->used = 0;
  }
  memset(s->block + s->used, 0, 56 - s->used);
  store_be32(s->block + 56, (uint32_t)(bits >> 32));
  store_be32(s->block + 60, (uint32_t)bits);
  sha1_block(s->h, s->block);
  for (int i = 0; i < 5; i++)
    store_be32(digest + 4 * i, s->h[i]);
  s->used = 0;
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t rc_base64_encode(const uint8_t *in, size_t len, char *out) {
  size_t o = 0;
  size_t i = 0;
  for (; i + 3 <= len; i += 3) {
    uint32_t v =
        ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
    out[o++] = b64_alphabet[(v >> 18) & 63];
    out[o++] = b64_alphabet[(v >> 12) & 63];
    out[o++] = b64_alphabet[(v >> 6) & 63];
    out[o++] = b64_alphabet[v & 63];
  }
  size_t rest = len - i;
  if (rest > 0) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (rest == 2)
      v |= (uint32_t)in[i + 1] << 8;
    out[o++] = b64_alphabet[(v >> 18) & 63];
    out[o++] = b64_alphabet[(v >> 12) & 63];
    out[o++] = rest == 2 ? b64_alphabet[(v >> 6) & 63] : '=';
    out[o++] = '=';
  }
  out[o] = '\0';
  return o;
}

static int b64_is_alpha(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* Strict about the alphabet, the length and where '=' may stand; lenient about
 * nonzero bits in the last symbol before the padding (RFC 4648 3.5 lets a
 * decoder choose), as most servers are, so that no client gets a needless 400.
 */
long rc_base64_decoded_len(const char *in, size_t len) {
  if (len % 4 != 0)
    return -1;
  if (len == 0)
    return 0;
  size_t pad = 0;
  if (in[len - 1] == '=') {
    pad = 1;
    if (in[len - 2] == '=')
      pad = 2;
  }
  for (size_t i = 0; i < len - pad; i++) {
    if (!b64_is_alpha(in[i]))
      return -1;
  }
  return (long)(len / 4 * 3 - pad);
}
