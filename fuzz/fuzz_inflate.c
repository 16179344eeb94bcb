/* fuzz_inflate.c - libFuzzer target for permessage-deflate's compression
 * alone (csrc/proto/rc_deflate.c, no loop).
 *
 * Input: one control byte, then the data. Control bits 0-5 choose a small
 * max (0 to 63 times 16 bytes), bit 6 the compression level (1 or 6), bit
 * 7 the compressor (libdeflate, or zlib with window bits 15 or 9).
 *
 * Properties, on every input:
 * - the data as a compressed message, through rc_inflate_message and a
 *   fresh rc_inflate_stream, into heap buffers of exactly max bytes (ASan
 *   catches a byte written past max): the result is OK, TOO_BIG or
 *   BAD_DATA, and OK comes with at most max bytes;
 * - the bound is consistent: against a large max (64 KiB) the verdict is
 *   the same when the output fits the small one (same bytes), OK with more
 *   than max bytes or not OK when the small max said TOO_BIG;
 * - when the stream (zlib) accepts the data, the standalone inflate
 *   (libdeflate) accepts it too, with the same bytes;
 * - the data as a plain message through rc_deflate_message: OK comes with
 *   fewer bytes than the data (from libdeflate, ending in 0x00), and
 *   inflates back to the data exactly, through both inflaters and with max
 *   equal to its size.
 * A broken property aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/rc_deflate.h"

#include "fuzz_check.h"

#define BIG_MAX (64 * 1024)

static rc_inflater *inf;
static rc_deflater *def1, *def6, *zdef15, *zdef9;
static rc_inflate_stream *stream;

static void setup(void) {
  if (inf != NULL)
    return;
  inf = rc_inflater_new();
  def1 = rc_deflater_new(1);
  def6 = rc_deflater_new(6);
  zdef15 = rc_deflater_new_zlib(6, 15);
  zdef9 = rc_deflater_new_zlib(1, 9);
  stream = rc_inflate_stream_init(15);
  FUZZ_CHECK(inf != NULL && def1 != NULL && def6 != NULL && stream != NULL);
  FUZZ_CHECK(zdef15 != NULL && zdef9 != NULL);
}

/* Inflates in[0..n) into a fresh heap buffer of exactly max bytes, which
 * it returns (NULL when the result is not OK); *rc, *len. */
static uint8_t *inflate_into(int use_stream, const uint8_t *in, size_t n,
                             size_t max, int *rc, size_t *len) {
  uint8_t *out = malloc(max > 0 ? max : 1);
  FUZZ_CHECK(out != NULL);
  *len = SIZE_MAX;
  if (use_stream) {
    rc_inflate_stream_reset(stream);
    *rc = rc_inflate_stream_feed(stream, in, n, out, max, len);
  } else {
    *rc = rc_inflate_message(inf, in, n, out, max, len);
  }
  FUZZ_CHECK(*rc == RC_INFLATE_OK || *rc == RC_INFLATE_TOO_BIG ||
             *rc == RC_INFLATE_BAD_DATA);
  if (*rc != RC_INFLATE_OK) {
    free(out);
    return NULL;
  }
  FUZZ_CHECK(*len <= max);
  return out;
}

static void check_bound(int use_stream, const uint8_t *in, size_t n,
                        size_t max) {
  int rc_small, rc_big;
  size_t len_small, len_big;
  uint8_t *small = inflate_into(use_stream, in, n, max, &rc_small, &len_small);
  uint8_t *big = inflate_into(use_stream, in, n, BIG_MAX, &rc_big, &len_big);
  if (rc_small == RC_INFLATE_OK) {
    FUZZ_CHECK(rc_big == RC_INFLATE_OK && len_big == len_small);
    FUZZ_CHECK(len_small == 0 || memcmp(small, big, len_small) == 0);
  }
  if (rc_big == RC_INFLATE_OK && len_big <= max)
    FUZZ_CHECK(rc_small == RC_INFLATE_OK);
  if (rc_small == RC_INFLATE_TOO_BIG)
    FUZZ_CHECK(rc_big != RC_INFLATE_OK || len_big > max);
  free(small);
  free(big);
}

static void check_stream_implies_standalone(const uint8_t *in, size_t n) {
  int rc_s, rc_m;
  size_t len_s, len_m;
  uint8_t *s = inflate_into(1, in, n, BIG_MAX, &rc_s, &len_s);
  uint8_t *m = inflate_into(0, in, n, BIG_MAX, &rc_m, &len_m);
  if (rc_s == RC_INFLATE_OK) {
    FUZZ_CHECK(rc_m == RC_INFLATE_OK && len_m == len_s);
    FUZZ_CHECK(len_s == 0 || memcmp(s, m, len_s) == 0);
  }
  free(s);
  free(m);
}

static void check_round_trip(rc_deflater *d, const uint8_t *in, size_t n) {
  uint8_t *comp = malloc(rc_deflate_bound(n) > 0 ? rc_deflate_bound(n) : 1);
  FUZZ_CHECK(comp != NULL);
  size_t clen = SIZE_MAX;
  int rc = rc_deflate_message(d, in, n, comp, rc_deflate_bound(n), &clen);
  FUZZ_CHECK(rc == RC_DEFLATE_OK || rc == RC_DEFLATE_NO_GAIN);
  if (rc == RC_DEFLATE_OK) {
    FUZZ_CHECK(clen < n && clen > 0);
    if (!(d == zdef15 || d == zdef9))
      FUZZ_CHECK(comp[clen - 1] == 0x00);
    for (int use_stream = 0; use_stream < 2; use_stream++) {
      int irc;
      size_t len;
      uint8_t *back = inflate_into(use_stream, comp, clen, n, &irc, &len);
      FUZZ_CHECK(irc == RC_INFLATE_OK && len == n);
      FUZZ_CHECK(memcmp(back, in, n) == 0);
      free(back);
    }
  }
  free(comp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  setup();
  size_t max = (size_t)(data[0] & 0x3f) * 16;
  rc_deflater *d;
  if (data[0] & 0x80)
    d = (data[0] & 0x40) ? zdef15 : zdef9;
  else
    d = (data[0] & 0x40) ? def6 : def1;
  /* An exact-size heap copy, so that a read past the end is caught. */
  size_t n = size - 1;
  uint8_t *in = malloc(n > 0 ? n : 1);
  FUZZ_CHECK(in != NULL);
  memcpy(in, data + 1, n);
  check_bound(0, in, n, max);
  check_bound(1, in, n, max);
  check_stream_implies_standalone(in, n);
  check_round_trip(d, in, n);
  free(in);
  return 0;
}
