/* rc_utf8.c - strict UTF-8 validation (RFC 3629 section 4, the well-formed
 * byte sequences of Unicode table 3-7).
 *
 * Chat text is mostly ASCII, so ASCII runs are skipped eight bytes at a time;
 * memcpy keeps the word load free of alignment and aliasing trouble and
 * compiles to a single load. */
#include "proto/rc_utf8.h"

#include <string.h>

#define RC__HIGH_BITS 0x8080808080808080ull

int rc_utf8_valid(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    while (n - i >= 8) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      if (w & RC__HIGH_BITS)
        break;
      i += 8;
    }
    if (i >= n)
      break;
    uint8_t c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    /* Each lead byte fixes the sequence length and the allowed range of the
     * second byte; that range is what excludes overlongs (E0, F0), surrogates
     * (ED) and code points above U+10FFFF (F4). */
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      need = 2;
      if (c == 0xE0)
        lo = 0xA0;
      else if (c == 0xED)
        hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 3;
      if (c == 0xF0)
        lo = 0x90;
      else if (c == 0xF4)
        hi = 0x8F;
    } else {
      return 0; /* stray continuation, C0/C1 overlong lead, or F5..FF */
    }
    if (n - i - 1 < need)
      return 0;
    uint8_t c1 = s[i + 1];
    if (c1 < lo || c1 > hi)
      return 0;
    for (size_t k = 2; k <= need; k++) {
      if ((s[i + k] & 0xC0) != 0x80)
        return 0;
    }
    i += need + 1;
  }
  return 1;
}
