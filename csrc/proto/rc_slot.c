/* rc_slot.c - the Redis Cluster key slot (see rc_slot.h for the rule).
 * The CRC is table-driven, a byte per step: entry b of the table is what
 * shifting a register whose top byte is b (the rest zero) 8 times through
 * the polynomial leaves. The table is a constant computed by the
 * preprocessor from the polynomial, so the 256 numbers are never written
 * out by hand and nothing is built at run time (the loop thread and the
 * binding may call these functions at once). */
#include "proto/rc_slot.h"

#include <string.h>

#define POLY 0x1021u

/* What 8 shifts of the register leave when its top byte is b and the rest
 * zero: the table entry of b. */
#define STEP(c)                                                                \
  (((c)&0x8000u) ? (((c) << 1) ^ POLY) & 0xffffu : ((c) << 1) & 0xffffu)
#define ENTRY(b)                                                               \
  STEP(STEP(STEP(STEP(STEP(STEP(STEP(STEP((unsigned)(b) << 8))))))))
#define ROW(b)                                                                 \
  ENTRY(b), ENTRY((b) + 1), ENTRY((b) + 2), ENTRY((b) + 3), ENTRY((b) + 4),    \
      ENTRY((b) + 5), ENTRY((b) + 6), ENTRY((b) + 7)
#define ROWS(b)                                                                \
  ROW(b), ROW((b) + 8), ROW((b) + 16), ROW((b) + 24), ROW((b) + 32),           \
      ROW((b) + 40), ROW((b) + 48), ROW((b) + 56)

static const uint16_t table[256] = {ROWS(0), ROWS(64), ROWS(128), ROWS(192)};

uint16_t rc_slot_crc16(const void *p, size_t len) {
  const unsigned char *b = p;
  unsigned crc = 0;
  for (size_t i = 0; i < len; i++)
    crc = ((crc << 8) & 0xffffu) ^ table[((crc >> 8) ^ b[i]) & 0xffu];
  return (uint16_t)crc;
}

size_t rc_slot_hashed(const void *key, size_t len, size_t *off) {
  const char *k = key;
  const char *open = len > 0 ? memchr(k, '{', len) : NULL;
  *off = 0;
  if (open == NULL)
    return len;
  size_t start = (size_t)(open - k) + 1;
  const char *close = start < len ? memchr(k + start, '}', len - start) : NULL;
  if (close == NULL || close == k + start)
    return len; /* no '}' after the '{', or an empty tag */
  *off = start;
  return (size_t)(close - (k + start));
}

uint16_t rc_slot_of(const void *key, size_t len) {
  size_t off;
  size_t n = rc_slot_hashed(key, len, &off);
  return (uint16_t)(rc_slot_crc16((const char *)key + off, n) &
                    (RC_SLOT_COUNT - 1));
}

uint16_t rc_slot_tag(const void *channel, size_t len, char *out) {
  unsigned crc = rc_slot_crc16(channel, len);
  out[0] = '{';
  for (int i = 0; i < 4; i++)
    out[1 + i] = (char)(0x40u | ((crc >> (12 - 4 * i)) & 0xfu));
  out[5] = '}';
  return rc_slot_of(out, RC_SLOT_TAG_LEN);
}
