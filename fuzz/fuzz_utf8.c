/* fuzz_utf8.c - libFuzzer target for the UTF-8 validator alone
 * (csrc/proto/rc_utf8.c) against a reference decoder written here.
 *
 * The reference decodes code points the long way (the lead byte's bit
 * pattern gives the length, the payload bits are assembled, then the value
 * is judged: shortest form, not a surrogate, at most U+10FFFF: RFC 3629
 * section 3), where rc_utf8 compares each second byte with a range; the two
 * must agree on every input.
 *
 * rc_utf8 has no incremental form (a frame's text is validated whole, once
 * reassembled), so the split points are checked as prefixes and suffixes:
 * a prefix of the input is valid exactly when the reference stopped on a
 * code point boundary there without having met an error, and every suffix
 * gets the reference's verdict. Each slice is copied to the heap at its
 * exact length, so that an over-read past it (the 8-byte ASCII word loads)
 * is caught by ASan. The input is used as it is: no control byte.
 * A broken property aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/rc_utf8.h"

#include "fuzz_check.h"

/* All split points up to this length; beyond it, SPLITS of them spread over
 * the input (each check is linear, all of them quadratic). */
#define ALL_SPLITS_MAX 1024
#define SPLITS 256

/* Length of the well-formed code point at s[0..n), or 0 when the bytes
 * there are not one (ill-formed or cut short). */
static size_t ref_one(const uint8_t *s, size_t n) {
  uint8_t c = s[0];
  size_t len;
  uint32_t cp;
  if (c < 0x80)
    return 1;
  if ((c & 0xE0) == 0xC0) {
    len = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0; /* a continuation byte, or F8..FF */
  }
  if (n < len)
    return 0;
  for (size_t k = 1; k < len; k++) {
    if ((s[k] & 0xC0) != 0x80)
      return 0;
    cp = cp << 6 | (s[k] & 0x3F);
  }
  static const uint32_t shortest[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < shortest[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
    return 0;
  return len;
}

/* 1 when s[0..n) is well-formed; *reached: how far decoding got before an
 * error (n when none). at_boundary[i] is set for every i at which a code
 * point starts or the input ends, up to *reached. */
static int ref_valid(const uint8_t *s, size_t n, size_t *reached,
                     uint8_t *at_boundary) {
  size_t i = 0;
  if (at_boundary != NULL)
    at_boundary[0] = 1;
  while (i < n) {
    size_t len = ref_one(s + i, n - i);
    if (len == 0)
      break;
    i += len;
    if (at_boundary != NULL)
      at_boundary[i] = 1;
  }
  if (reached != NULL)
    *reached = i;
  return i == n;
}

/* rc_utf8_valid on a heap copy of s[0..n) of exactly n bytes. */
static int ours(const uint8_t *s, size_t n) {
  uint8_t *copy = malloc(n ? n : 1);
  FUZZ_CHECK(copy != NULL);
  memcpy(copy, s, n);
  int v = rc_utf8_valid(copy, n);
  free(copy);
  FUZZ_CHECK(v == 0 || v == 1);
  return v;
}

static void check_split(const uint8_t *s, size_t n, size_t k, size_t reached,
                        const uint8_t *at_boundary) {
  /* A prefix is valid when decoding the whole got to k without an error and
   * k starts a code point (or ends the input). */
  int prefix = k <= reached && at_boundary[k];
  FUZZ_CHECK(ours(s, k) == prefix);
  FUZZ_CHECK(ours(s + k, n - k) == ref_valid(s + k, n - k, NULL, NULL));
  /* Two valid halves make a valid whole. */
  if (prefix && ours(s + k, n - k))
    FUZZ_CHECK(ours(s, n));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *at_boundary = calloc(size + 1, 1);
  FUZZ_CHECK(at_boundary != NULL);
  size_t reached;
  int whole = ref_valid(data, size, &reached, at_boundary);
  FUZZ_CHECK(ours(data, size) == whole);
  if (size <= ALL_SPLITS_MAX) {
    for (size_t k = 0; k <= size; k++)
      check_split(data, size, k, reached, at_boundary);
  } else {
    for (size_t j = 0; j <= SPLITS; j++)
      check_split(data, size, size * j / SPLITS, reached, at_boundary);
  }
  free(at_boundary);
  return 0;
}
