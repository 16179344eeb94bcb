/* rc_frame.c - frame headers, client masking and close payloads (RFC 6455
 * 5.2, 5.3, 5.5.1, 7.4). */
#include "proto/rc_frame.h"

#include <string.h>

#include "proto/rc_utf8.h"

size_t rc_frame_header_len(uint64_t len) {
  if (len < 126)
    return 2;
  if (len <= 0xFFFF)
    return 4;
  return 10;
}

size_t rc_frame_header(uint8_t out[RC_FRAME_MAX_HEADER], unsigned opcode,
                       int fin, uint64_t len) {
  out[0] = (uint8_t)((fin ? 0x80u : 0u) | (opcode & 0x0Fu));
  if (len < 126) {
    out[1] = (uint8_t)len; /* mask bit clear: servers never mask */
    return 2;
  }
  if (len <= 0xFFFF) {
    out[1] = 126;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; i++)
    out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
  return 10;
}

size_t rc_frame_client_header(uint8_t out[RC_FRAME_MAX_CLIENT_HEADER],
                              unsigned opcode, uint64_t len,
                              const uint8_t key[4]) {
  size_t n = rc_frame_header(out, opcode, 1, len);
  out[1] |= 0x80u;
  memcpy(out + n, key, 4);
  return n + 4;
}

void rc_frame_mask(uint8_t *dst, const uint8_t *src, size_t len,
                   const uint8_t key[4]) {
  /* Eight bytes at a time: the key repeats every four, so a word of two
   * keys masks any 8-byte run that starts at a multiple of 4. */
  uint8_t k8[8];
  memcpy(k8, key, 4);
  memcpy(k8 + 4, key, 4);
  uint64_t kw;
  memcpy(&kw, k8, 8);
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, src + i, 8);
    w ^= kw;
    memcpy(dst + i, &w, 8);
  }
  for (; i < len; i++)
    dst[i] = src[i] ^ key[i & 3];
}

size_t rc_frame_close_payload(uint8_t out[125], unsigned code,
                              const char *reason, size_t reason_len) {
  if (code == 0)
    return 0;
  out[0] = (uint8_t)(code >> 8);
  out[1] = (uint8_t)code;
  if (reason == NULL)
    reason_len = 0;
  if (reason_len > 123) {
    /* Back up over continuation bytes so the cut never splits a character:
     * the peer must fail the connection on an invalid UTF-8 reason (8.1). */
    size_t cut = 123;
    while (cut > 0 && ((uint8_t)reason[cut] & 0xC0) == 0x80)
      cut--;
    reason_len = cut;
  }
  if (reason_len > 0)
    memcpy(out + 2, reason, reason_len);
  return 2 + reason_len;
}

int rc_close_code_valid(unsigned code) {
  if (code >= 1000 && code <= 1003)
    return 1;
  /* 1004 is reserved; 1005, 1006 and 1015 are for reporting only, never sent.
   */
  if (code >= 1007 && code <= 1014)
    return 1;
  return code >= 3000 && code <= 4999;
}

/* Header length once the first two bytes are known: 2 + extended length +
 * masking key. */
static size_t scan_header_len(const uint8_t *h) {
  size_t n = 2;
  unsigned len7 = h[1] & 0x7Fu;
  if (len7 == 126)
    n += 2;
  else if (len7 == 127)
    n += 8;
  if (h[1] & 0x80u)
    n += 4;
  return n;
}

/* The close code a complete header earns on its own, or 0. */
static uint16_t header_error(const uint8_t *h, uint64_t plen) {
  unsigned opcode = h[0] & 0x0Fu;
  if ((h[1] & 0x7Fu) == 127 && (h[2] & 0x80u))
    return 1002;
  if (opcode >= 0x8u && (!(h[0] & 0x80u) || plen > 125))
    return 1002;
  return 0;
}

size_t rc_frame_scan_feed(rc_frame_scan *sc, const uint8_t *p, size_t len,
                          uint32_t max_frags) {
  const uint8_t *start = p;
  const uint8_t *hdr_start = NULL; /* in this chunk; NULL: an earlier one */
  if (sc->error || sc->closing)
    return 0;
  while (len > 0) {
    if (sc->left > 0) {
      size_t skip = sc->left < len ? (size_t)sc->left : len;
      sc->left -= skip;
      p += skip;
      len -= skip;
      continue;
    }
    if (sc->hlen == 0) {
      if ((*p & 0x0Fu) == RC_OP_CLOSE) {
        sc->closing = 1;
        return (size_t)(p - start);
      }
      hdr_start = p;
    }
    sc->hdr[sc->hlen++] = *p++;
    len--;
    if (sc->hlen < 2 || sc->hlen < scan_header_len(sc->hdr))
      continue;
    unsigned opcode = sc->hdr[0] & 0x0Fu;
    int fin = (sc->hdr[0] & 0x80u) != 0;
    unsigned len7 = sc->hdr[1] & 0x7Fu;
    uint64_t plen = len7;
    if (len7 == 126)
      plen = ((uint64_t)sc->hdr[2] << 8) | sc->hdr[3];
    else if (len7 == 127) {
      plen = 0;
      for (int i = 0; i < 8; i++)
        plen = (plen << 8) | sc->hdr[2 + i];
    }
    uint16_t err = header_error(sc->hdr, plen);
    if (err == 0 && opcode < 0x8u) { /* data frames open and close messages */
      sc->in_msg = !fin;
      if (opcode != RC_OP_CONT)
        sc->frags = 1;
      else if (sc->frags < UINT32_MAX)
        sc->frags++;
      if (max_frags != 0 && sc->frags > max_frags)
        err = 1009;
    }
    sc->hlen = 0;
    if (err != 0) {
      sc->error = err;
      return hdr_start != NULL ? (size_t)(hdr_start - start) : 0;
    }
    sc->left = plen;
  }
  return (size_t)(p - start);
}

int rc_frame_scan_at_rest(const rc_frame_scan *sc) {
  return sc->left == 0 && sc->hlen == 0 && !sc->in_msg && !sc->closing;
}

/* Payload length of a frame whose header is complete. */
static uint64_t header_payload_len(const uint8_t *h) {
  unsigned len7 = h[1] & 0x7Fu;
  if (len7 < 126)
    return len7;
  if (len7 == 126)
    return ((uint64_t)h[2] << 8) | h[3];
  uint64_t plen = 0;
  for (int i = 0; i < 8; i++)
    plen = (plen << 8) | h[2 + i];
  return plen;
}

size_t rc_frame_close_size(const uint8_t *frame, size_t len) {
  if (len < 2)
    return 2;
  size_t hl = scan_header_len(frame);
  if (len < hl)
    return hl;
  uint64_t plen = header_payload_len(frame);
  return plen > 125 ? hl : hl + (size_t)plen;
}

unsigned rc_frame_close_parse(uint8_t *frame, size_t len, int masked,
                              rc_frame_close *out) {
  memset(out, 0, sizeof(*out));
  size_t hl = scan_header_len(frame);
  uint64_t plen = header_payload_len(frame);
  /* FIN set, no reserved bits: no extension defines them on control
   * frames. A client masks every frame, a server none (RFC 6455 5.1). */
  if ((frame[0] & 0xF0u) != 0x80u || plen > 125 || plen == 1 ||
      ((frame[1] & 0x80u) != 0) != (masked != 0) || len != hl + plen)
    return 1002;
  uint8_t *payload = frame + hl;
  if (masked)
    rc_frame_mask(payload, payload, (size_t)plen, frame + hl - 4);
  if (plen == 0)
    return 0;
  unsigned code = ((unsigned)payload[0] << 8) | payload[1];
  if (!rc_close_code_valid(code))
    return 1002;
  if (!rc_utf8_valid(payload + 2, (size_t)plen - 2))
    return 1007;
  out->code = code;
  out->reason = payload + 2;
  out->reason_len = (size_t)plen - 2;
  return 0;
}
