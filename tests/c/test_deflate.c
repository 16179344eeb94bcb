/* test_deflate.c - permessage-deflate's compression (csrc/proto/rc_deflate.c):
 * round trips of JSON messages, the RFC 7692 7.2.3 examples, interop with
 * zlib as browsers and `websockets` use it (raw DEFLATE, Z_SYNC_FLUSH, the
 * tail stripped), the inflate bound against a deflate bomb, bad input, and
 * the context-takeover stream.
 *
 * Inputs and outputs live in heap buffers of exactly their size, so a read
 * or write one byte too far is caught under AddressSanitizer or valgrind.
 * Cases hold no resource across an RC_ASSERT (RC_CHECK where they do). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "proto/rc_deflate.h"
#include "support/rc_test.h"

#define MiB (1024 * 1024)

static void *xmalloc(size_t n) {
  void *p = malloc(n > 0 ? n : 1);
  if (p == NULL) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return p;
}

static uint8_t *dup_bytes(const void *s, size_t n) {
  uint8_t *p = xmalloc(n);
  if (n > 0)
    memcpy(p, s, n);
  return p;
}

/* A JSON message of exactly len bytes (len >= 64): chat, ticker and
 * presence objects in a batch, from a fixed seed, padded with spaces
 * before the closing bracket. */
static uint8_t *json_message(size_t len, uint32_t seed) {
  static const char *const words[] = {"hello",  "meeting", "noon",  "thanks",
                                      "deploy", "review",  "lunch", "price"};
  static const char *const syms[] = {"AAPL", "MSFT", "GOOG", "NVDA"};
  char *p = xmalloc(len + 1);
  size_t at = (size_t)snprintf(p, len + 1, "{\"type\":\"batch\",\"items\":[");
  for (int i = 0;; i++) {
    char one[160];
    seed = seed * 1103515245u + 12345u;
    uint32_t r = seed >> 8;
    int n;
    if (i % 3 == 0)
      n = snprintf(one, sizeof one,
                   "%s{\"type\":\"chat\",\"user\":\"user%04u\",\"text\":\"%s "
                   "%s\"}",
                   i ? "," : "", r % 10000, words[r % 8], words[(r >> 3) % 8]);
    else if (i % 3 == 1)
      n = snprintf(one, sizeof one,
                   "%s{\"type\":\"tick\",\"sym\":\"%s\",\"bid\":%u.%02u}",
                   i ? "," : "", syms[r % 4], 100 + r % 400, r % 100);
    else
      n = snprintf(one, sizeof one,
                   "%s{\"type\":\"presence\",\"user\":\"user%04u\","
                   "\"status\":\"online\"}",
                   i ? "," : "", r % 10000);
    if (at + (size_t)n + 2 > len)
      break;
    memcpy(p + at, one, (size_t)n);
    at += (size_t)n;
  }
  while (at < len - 2)
    p[at++] = ' ';
  p[at++] = ']';
  p[at++] = '}';
  uint8_t *out = dup_bytes(p, len);
  free(p);
  return out;
}

/* What a browser or `websockets` sends: raw DEFLATE with Z_SYNC_FLUSH, the
 * 4-byte tail stripped. z keeps its context between calls unless reset.
 * Returns a malloc'd buffer of exactly *out_len bytes. */
static uint8_t *zlib_sync_message(z_stream *z, const uint8_t *in, size_t len,
                                  size_t *out_len) {
  size_t cap = deflateBound(z, len) + 16;
  uint8_t *tmp = xmalloc(cap);
  z->next_in = (Bytef *)in;
  z->avail_in = (uInt)len;
  z->next_out = tmp;
  z->avail_out = (uInt)cap;
  if (deflate(z, Z_SYNC_FLUSH) != Z_OK || z->avail_in != 0) {
    fprintf(stderr, "zlib deflate failed\n");
    exit(2);
  }
  size_t n = cap - z->avail_out;
  if (n < 4 || memcmp(tmp + n - 4, "\x00\x00\xff\xff", 4) != 0) {
    fprintf(stderr, "zlib did not end with the tail\n");
    exit(2);
  }
  *out_len = n - 4;
  uint8_t *out = dup_bytes(tmp, n - 4);
  free(tmp);
  return out;
}

static void zlib_deflater(z_stream *z, int level) {
  memset(z, 0, sizeof *z);
  if (deflateInit2(z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    exit(2);
}

/* What a receiver does with plain zlib (RFC 7692 7.2.2): append the tail,
 * inflate with Z_SYNC_FLUSH. Returns the inflated length, or -1. */
static long zlib_inflate_message(const uint8_t *in, size_t len, uint8_t *out,
                                 size_t cap) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, -15) != Z_OK)
    return -1;
  uint8_t *buf = xmalloc(len + 4);
  memcpy(buf, in, len);
  memcpy(buf + len, "\x00\x00\xff\xff", 4);
  z.next_in = buf;
  z.avail_in = (uInt)(len + 4);
  z.next_out = out;
  z.avail_out = (uInt)cap;
  int rc = inflate(&z, Z_SYNC_FLUSH);
  long got =
      (rc == Z_OK || rc == Z_STREAM_END) ? (long)(cap - z.avail_out) : -1;
  inflateEnd(&z);
  free(buf);
  return got;
}

/* rc_inflate_message on a heap copy of exactly len bytes into a heap
 * buffer of exactly max bytes; the output is compared with want when the
 * result is RC_INFLATE_OK. */
static int inflate_check(rc_inflater *inf, const void *in, size_t len,
                         size_t max, const void *want, size_t want_len) {
  uint8_t *copy = dup_bytes(in, len);
  uint8_t *out = xmalloc(max);
  size_t got = 0;
  int rc = rc_inflate_message(inf, copy, len, out, max, &got);
  if (rc == RC_INFLATE_OK) {
    RC_CHECK_EQ_INT(got, want_len);
    if (got == want_len)
      RC_CHECK(want_len == 0 || memcmp(out, want, want_len) == 0);
  }
  free(copy);
  free(out);
  return rc;
}

static int stream_check(rc_inflate_stream *s, const void *in, size_t len,
                        size_t max, const void *want, size_t want_len) {
  uint8_t *copy = dup_bytes(in, len);
  uint8_t *out = xmalloc(max);
  size_t got = 0;
  int rc = rc_inflate_stream_feed(s, copy, len, out, max, &got);
  if (rc == RC_INFLATE_OK) {
    RC_CHECK_EQ_INT(got, want_len);
    if (got == want_len)
      RC_CHECK(want_len == 0 || memcmp(out, want, want_len) == 0);
  }
  free(copy);
  free(out);
  return rc;
}

/* The RFC 7692 7.2.3 examples, all "Hello". */
static const uint8_t hello_7231[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
static const uint8_t hello_7232_second[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
static const uint8_t hello_7233[] = {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48,
                                     0x65, 0x6c, 0x6c, 0x6f, 0x00};
static const uint8_t hello_7234[] = {0xf3, 0x48, 0xcd, 0xc9,
                                     0xc9, 0x07, 0x00, 0x00};
static const uint8_t hello_7235[] = {0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff,
                                     0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00};

RC_TEST(json_round_trips_at_levels_1_and_6) {
  static const size_t sizes[] = {64, 256, 1024, 16384};
  static const int levels[] = {1, 6};
  rc_inflater *inf = rc_inflater_new();
  RC_ASSERT(inf != NULL);
  for (size_t l = 0; l < 2; l++) {
    rc_deflater *d = rc_deflater_new(levels[l]);
    RC_CHECK(d != NULL);
    if (d == NULL)
      break;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
      size_t n = sizes[i];
      uint8_t *msg = json_message(n, (uint32_t)(7 + i));
      size_t cap = rc_deflate_bound(n);
      uint8_t *comp = xmalloc(cap);
      size_t clen = 0;
      int rc = rc_deflate_message(d, msg, n, comp, cap, &clen);
      /* From 256 bytes on these messages shrink (64 may or may not). */
      if (n >= 256)
        RC_CHECK_EQ_INT(rc, RC_DEFLATE_OK);
      if (rc == RC_DEFLATE_OK) {
        RC_CHECK(clen < n);
        RC_CHECK_EQ_INT(comp[clen - 1], 0x00);
        /* Exactly n bytes of room: the bound is the message's size. */
        RC_CHECK_EQ_INT(inflate_check(inf, comp, clen, n, msg, n),
                        RC_INFLATE_OK);
        /* A receiver with plain zlib (a browser, `websockets`) agrees. */
        uint8_t *out = xmalloc(n);
        RC_CHECK_EQ_INT(zlib_inflate_message(comp, clen, out, n), (long)n);
        RC_CHECK(memcmp(out, msg, n) == 0);
        free(out);
        /* One byte less room than the message: TOO_BIG. */
        RC_CHECK_EQ_INT(inflate_check(inf, comp, clen, n - 1, NULL, 0),
                        RC_INFLATE_TOO_BIG);
      } else {
        RC_CHECK_EQ_INT(rc, RC_DEFLATE_NO_GAIN);
      }
      if (n == 1024)
        RC_CHECK(clen * 2 < n); /* JSON shrinks: at least twice here */
      free(comp);
      free(msg);
    }
    rc_deflater_free(d);
  }
  rc_inflater_free(inf);
}

RC_TEST(zlib_sync_flush_message_inflates) {
  rc_inflater *inf = rc_inflater_new();
  RC_ASSERT(inf != NULL);
  static const size_t sizes[] = {64, 1024, 16384};
  for (size_t i = 0; i < 3; i++) {
    z_stream z;
    zlib_deflater(&z, 6);
    uint8_t *msg = json_message(sizes[i], 99);
    size_t clen;
    uint8_t *comp = zlib_sync_message(&z, msg, sizes[i], &clen);
    RC_CHECK_EQ_INT(inflate_check(inf, comp, clen, sizes[i], msg, sizes[i]),
                    RC_INFLATE_OK);
    rc_inflate_stream *s = rc_inflate_stream_init(15);
    RC_CHECK(s != NULL);
    if (s != NULL)
      RC_CHECK_EQ_INT(stream_check(s, comp, clen, sizes[i], msg, sizes[i]),
                      RC_INFLATE_OK);
    rc_inflate_stream_free(s);
    deflateEnd(&z);
    free(comp);
    free(msg);
  }
  rc_inflater_free(inf);
}

/* 7.2.3.1: "Hello" in one compressed block; zlib at its default level
 * produces exactly these bytes, and both inflaters read them. Its second
 * example, the message in two fragments (f2 48 cd | c9 c9 07 00): joining
 * the frames' payloads is the caller's; joined, they are the same bytes. */
RC_TEST(rfc7692_7231_hello_both_ways) {
  z_stream z;
  zlib_deflater(&z, Z_DEFAULT_COMPRESSION);
  size_t clen;
  uint8_t *comp = zlib_sync_message(&z, (const uint8_t *)"Hello", 5, &clen);
  deflateEnd(&z);
  RC_CHECK_EQ_INT(clen, sizeof hello_7231);
  RC_CHECK(clen == sizeof hello_7231 && memcmp(comp, hello_7231, clen) == 0);
  free(comp);

  rc_inflater *inf = rc_inflater_new();
  RC_ASSERT(inf != NULL);
  RC_CHECK_EQ_INT(
      inflate_check(inf, hello_7231, sizeof hello_7231, 5, "Hello", 5),
      RC_INFLATE_OK);
  uint8_t joined[sizeof hello_7231];
  memcpy(joined, hello_7231, 3);     /* first fragment */
  memcpy(joined + 3, hello_7231 + 3, /* second fragment */
         sizeof hello_7231 - 3);
  RC_CHECK_EQ_INT(inflate_check(inf, joined, sizeof joined, 5, "Hello", 5),
                  RC_INFLATE_OK);
  /* The first fragment alone is not a message. */
  RC_CHECK(inflate_check(inf, hello_7231, 3, 64, NULL, 0) != RC_INFLATE_OK);
  rc_inflater_free(inf);

  /* Our compressor does not send "Hello" compressed: 8 bytes > 5. */
  rc_deflater *d = rc_deflater_new(6);
  RC_ASSERT(d != NULL);
  uint8_t out[5];
  size_t n = 0;
  RC_CHECK_EQ_INT(
      rc_deflate_message(d, (const uint8_t *)"Hello", 5, out, sizeof out, &n),
      RC_DEFLATE_NO_GAIN);
  rc_deflater_free(d);
}

/* 7.2.3.2: the second "Hello" refers back into the first message's
 * window; the stream inflates it, a standalone inflate cannot. */
RC_TEST(rfc7692_7232_shared_window) {
  rc_inflate_stream *s = rc_inflate_stream_init(15);
  RC_ASSERT(s != NULL);
  RC_CHECK_EQ_INT(stream_check(s, hello_7231, sizeof hello_7231, 5, "Hello", 5),
                  RC_INFLATE_OK);
  RC_CHECK_EQ_INT(stream_check(s, hello_7232_second, sizeof hello_7232_second,
                               5, "Hello", 5),
                  RC_INFLATE_OK);
  /* After a reset the window is gone: the back-reference is bad data. */
  rc_inflate_stream_reset(s);
  RC_CHECK_EQ_INT(stream_check(s, hello_7232_second, sizeof hello_7232_second,
                               5, "Hello", 5),
                  RC_INFLATE_BAD_DATA);
  rc_inflate_stream_free(s);

  rc_inflater *inf = rc_inflater_new();
  RC_ASSERT(inf != NULL);
  RC_CHECK_EQ_INT(inflate_check(inf, hello_7232_second,
                                sizeof hello_7232_second, 64, NULL, 0),
                  RC_INFLATE_BAD_DATA);
  rc_inflater_free(inf);
}

/* 7.2.3.3 (a block with no compression), 7.2.3.4 (BFINAL set), 7.2.3.5
 * (two blocks in one message): both inflaters. */
RC_TEST(rfc7692_7233_to_7235) {
  static const struct {
    const uint8_t *bytes;
    size_t len;
  } ex[] = {{hello_7233, sizeof hello_7233},
            {hello_7234, sizeof hello_7234},
            {hello_7235, sizeof hello_7235}};
  rc_inflater *inf = rc_inflater_new();
  RC_ASSERT(inf != NULL);
  for (size_t i = 0; i < 3; i++) {
    RC_CHECK_EQ_INT(inflate_check(inf, ex[i].bytes, ex[i].len, 5, "Hello", 5),
                    RC_INFLATE_OK);
    /* Exactly 5 bytes: one less is too big. */
    RC_CHECK_EQ_INT(inflate_check(inf, ex[i].bytes, ex[i].len, 4, NULL, 0),
                    RC_INFLATE_TOO_BIG);
    rc_inflate_stream *s = rc_inflate_stream_init(15);
    RC_CHECK(s != NULL);
    if (s == NULL)
      continue;
    /* Twice on one stream: the window carries over each time. */
    RC_CHECK_EQ_INT(stream_check(s, ex[i].bytes, ex[i].len, 5, "Hello", 5),
                    RC_INFLATE_OK);
    RC_CHECK_EQ_INT(stream_check(s, ex[i].bytes, ex[i].len, 5, "Hello", 5),
                    RC_INFLATE_OK);
    rc_inflate_stream_free(s);
  }
  rc_inflater_free(inf);
}

/* After 7.2.3.4's final block the stream goes on: a next message referring
 * back to "Hello" (7.2.3.2's bytes) still inflates. */
RC_TEST(stream_keeps_window_across_final_block) {
  rc_inflate_stream *s = rc_inflate_stream_init(15);
  RC_ASSERT(s != NULL);
  RC_CHECK_EQ_INT(stream_check(s, hello_7234, sizeof hello_7234, 5, "Hello", 5),
                  RC_INFLATE_OK);
  RC_CHECK_EQ_INT(stream_check(s, hello_7232_second, sizeof hello_7232_second,
                               5, "Hello", 5),
                  RC_INFLATE_OK);
  RC_CHECK_EQ_INT(stream_check(s, hello_7231, sizeof hello_7231, 5, "Hello", 5),
                  RC_INFLATE_OK);
  rc_inflate_stream_free(s);
}

/* Our output has 7.2.3.4's shape and a plain zlib receiver reads it; a
 * receiver that keeps one inflate stream reads two of our messages in a
 * row (the second starts a new DEFLATE stream after the final block). */
RC_TEST(our_messages_on_a_context_keeping_receiver) {
  rc_deflater *d = rc_deflater_new(6);
  RC_ASSERT(d != NULL);
  uint8_t *a = json_message(1024, 1), *b = json_message(2048, 2);
  uint8_t *ca = xmalloc(1024), *cb = xmalloc(2048);
  size_t la = 0, lb = 0;
  RC_CHECK_EQ_INT(rc_deflate_message(d, a, 1024, ca, 1024, &la), RC_DEFLATE_OK);
  RC_CHECK_EQ_INT(rc_deflate_message(d, b, 2048, cb, 2048, &lb), RC_DEFLATE_OK);
  rc_inflate_stream *s = rc_inflate_stream_init(15);
  RC_CHECK(s != NULL);
  if (s != NULL && la > 0 && lb > 0) {
    RC_CHECK_EQ_INT(stream_check(s, ca, la, 1024, a, 1024), RC_INFLATE_OK);
    RC_CHECK_EQ_INT(stream_check(s, cb, lb, 2048, b, 2048), RC_INFLATE_OK);
    RC_CHECK_EQ_INT(stream_check(s, ca, la, 1024, a, 1024), RC_INFLATE_OK);
  }
  rc_inflate_stream_free(s);
  rc_deflater_free(d);
  free(a);
  free(b);
  free(ca);
  free(cb);
}

/* 10 MB of zeros, about 10 KB compressed, against max = 1 MiB: TOO_BIG,
 * and not one byte written past max (a guard after it stays intact; the
 * exact-size buffer is also checked by ASan and valgrind). */
RC_TEST(deflate_bomb_is_too_big) {
  size_t big = 10 * 1000 * 1000;
  uint8_t *zeros = calloc(big, 1);
  RC_ASSERT(zeros != NULL);
  z_stream z;
  zlib_deflater(&z, 9);
  size_t clen;
  uint8_t *bomb = zlib_sync_message(&z, zeros, big, &clen);
  deflateEnd(&z);
  free(zeros);
  RC_CHECK(clen < 20 * 1000);

  rc_inflater *inf = rc_inflater_new();
  RC_CHECK(inf != NULL);
  uint8_t *out = xmalloc(MiB + 64);
  memset(out + MiB, 0xAA, 64);
  size_t got = 0;
  if (inf != NULL) {
    RC_CHECK_EQ_INT(rc_inflate_message(inf, bomb, clen, out, MiB, &got),
                    RC_INFLATE_TOO_BIG);
    RC_CHECK_EQ_INT(inflate_check(inf, bomb, clen, MiB, NULL, 0),
                    RC_INFLATE_TOO_BIG);
  }
  rc_inflate_stream *s = rc_inflate_stream_init(15);
  RC_CHECK(s != NULL);
  if (s != NULL) {
    RC_CHECK_EQ_INT(rc_inflate_stream_feed(s, bomb, clen, out, MiB, &got),
                    RC_INFLATE_TOO_BIG);
    /* Broken until reset; then it works again. */
    RC_CHECK_EQ_INT(
        stream_check(s, hello_7231, sizeof hello_7231, 5, "Hello", 5),
        RC_INFLATE_BAD_DATA);
    rc_inflate_stream_reset(s);
    RC_CHECK_EQ_INT(
        stream_check(s, hello_7231, sizeof hello_7231, 5, "Hello", 5),
        RC_INFLATE_OK);
    RC_CHECK_EQ_INT(stream_check(s, bomb, clen, MiB, NULL, 0),
                    RC_INFLATE_TOO_BIG);
  }
  for (size_t i = 0; i < 64; i++)
    RC_CHECK_EQ_INT(out[MiB + i], 0xAA);
  /* With room for all of it, the same bytes are 10 MB of zeros. */
  uint8_t *all = xmalloc(big);
  got = 0;
  if (inf != NULL) {
    RC_CHECK_EQ_INT(rc_inflate_message(inf, bomb, clen, all, big, &got),
                    RC_INFLATE_OK);
    RC_CHECK_EQ_INT(got, big);
  }
  free(all);
  rc_inflate_stream_free(s);
  rc_inflater_free(inf);
  free(out);
  free(bomb);
}

RC_TEST(garbage_and_truncated_are_bad_data) {
  rc_inflater *inf = rc_inflater_new();
  RC_ASSERT(inf != NULL);
  /* BTYPE 11 is reserved (RFC 1951 3.2.3). */
  static const uint8_t reserved[] = {0xff, 0xff, 0xff, 0xff};
  /* A stored block whose NLEN is not LEN's complement. */
  static const uint8_t bad_nlen[] = {0x00, 0x05, 0x00, 0x00, 0x00, 'H',
                                     'e',  'l',  'l',  'o',  0x00};
  RC_CHECK_EQ_INT(inflate_check(inf, reserved, sizeof reserved, 64, NULL, 0),
                  RC_INFLATE_BAD_DATA);
  RC_CHECK_EQ_INT(inflate_check(inf, bad_nlen, sizeof bad_nlen, 64, NULL, 0),
                  RC_INFLATE_BAD_DATA);
  rc_inflate_stream *s = rc_inflate_stream_init(15);
  RC_CHECK(s != NULL);
  if (s != NULL) {
    RC_CHECK_EQ_INT(stream_check(s, reserved, sizeof reserved, 64, NULL, 0),
                    RC_INFLATE_BAD_DATA);
    rc_inflate_stream_reset(s);
    RC_CHECK_EQ_INT(stream_check(s, bad_nlen, sizeof bad_nlen, 64, NULL, 0),
                    RC_INFLATE_BAD_DATA);
  }

  /* A 1 KiB message cut anywhere never inflates to the message; cut in
   * the middle of its data it is bad data. */
  rc_deflater *d = rc_deflater_new(6);
  RC_CHECK(d != NULL);
  uint8_t *msg = json_message(1024, 5);
  uint8_t *comp = xmalloc(1024);
  size_t clen = 0;
  if (d != NULL && s != NULL &&
      rc_deflate_message(d, msg, 1024, comp, 1024, &clen) == RC_DEFLATE_OK) {
    for (size_t k = 0; k + 1 < clen; k++) {
      RC_CHECK(inflate_check(inf, comp, k, 1024, NULL, 0) != RC_INFLATE_OK);
      rc_inflate_stream_reset(s);
      RC_CHECK(stream_check(s, comp, k, 1024, NULL, 0) != RC_INFLATE_OK);
    }
    RC_CHECK_EQ_INT(inflate_check(inf, comp, clen / 2, 1024, NULL, 0),
                    RC_INFLATE_BAD_DATA);
    rc_inflate_stream_reset(s);
    RC_CHECK_EQ_INT(stream_check(s, comp, clen / 2, 1024, NULL, 0),
                    RC_INFLATE_BAD_DATA);
  } else {
    RC_CHECK(0);
  }
  free(msg);
  free(comp);
  rc_deflater_free(d);
  rc_inflate_stream_free(s);
  rc_inflater_free(inf);
}

RC_TEST(random_bytes_do_not_shrink) {
  rc_deflater *d = rc_deflater_new(6);
  RC_ASSERT(d != NULL);
  size_t n = 4096;
  uint8_t *rnd = xmalloc(n), *out = xmalloc(n);
  uint32_t x = 2463534242u;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rnd[i] = (uint8_t)(x >> 24);
  }
  size_t got = 0;
  RC_CHECK_EQ_INT(rc_deflate_message(d, rnd, n, out, n, &got),
                  RC_DEFLATE_NO_GAIN);
  /* Empty and one-byte messages never shrink. */
  RC_CHECK_EQ_INT(rc_deflate_message(d, rnd, 0, out, n, &got),
                  RC_DEFLATE_NO_GAIN);
  RC_CHECK_EQ_INT(rc_deflate_message(d, rnd, 1, out, n, &got),
                  RC_DEFLATE_NO_GAIN);
  /* JSON that would shrink, into a buffer too small: NO_GAIN as well. */
  uint8_t *msg = json_message(1024, 3);
  RC_CHECK_EQ_INT(rc_deflate_message(d, msg, 1024, out, 16, &got),
                  RC_DEFLATE_NO_GAIN);
  free(msg);
  free(rnd);
  free(out);
  rc_deflater_free(d);
  RC_CHECK(rc_deflater_new(0) == NULL);
  RC_CHECK(rc_deflater_new(13) == NULL);
}

/* A peer with context takeover (zlib, never reset): the later messages
 * are mostly back-references into the earlier ones. */
RC_TEST(stream_context_takeover_over_several_messages) {
  static const int windows[] = {15, 9};
  for (size_t w = 0; w < 2; w++) {
    z_stream z;
    memset(&z, 0, sizeof z);
    RC_ASSERT(deflateInit2(&z, 6, Z_DEFLATED, -windows[w], 8,
                           Z_DEFAULT_STRATEGY) == Z_OK);
    rc_inflate_stream *s = rc_inflate_stream_init(windows[w]);
    RC_CHECK(s != NULL);
    uint8_t *msg = json_message(200, 11); /* within 9 bits' reach */
    size_t first = 0;
    for (int i = 0; i < 5 && s != NULL; i++) {
      size_t clen;
      uint8_t *comp = zlib_sync_message(&z, msg, 200, &clen);
      if (i == 0)
        first = clen;
      else
        RC_CHECK(clen * 4 < first); /* it does refer back */
      RC_CHECK_EQ_INT(stream_check(s, comp, clen, 200, msg, 200),
                      RC_INFLATE_OK);
      free(comp);
    }
    /* An empty message (an empty stored block, its tail stripped: 0x00)
     * inflates to nothing, here and standalone. */
    static const uint8_t empty[] = {0x00};
    if (s != NULL)
      RC_CHECK_EQ_INT(stream_check(s, empty, 1, 1, NULL, 0), RC_INFLATE_OK);
    rc_inflater *inf = rc_inflater_new();
    RC_CHECK(inf != NULL);
    if (inf != NULL)
      RC_CHECK_EQ_INT(inflate_check(inf, empty, 1, 0, NULL, 0), RC_INFLATE_OK);
    rc_inflater_free(inf);
    free(msg);
    deflateEnd(&z);
    rc_inflate_stream_free(s);
  }
  RC_CHECK(rc_inflate_stream_init(7) == NULL);
  RC_CHECK(rc_inflate_stream_init(16) == NULL);
}

/* zlib's deflater: RFC 7692 7.2.1 to the letter (no BFINAL: a plain zlib
 * receiver never reaches the stream's end), windows 15 and 9 (a 9-bit
 * inflate stream reads the latter), round trips, and no gain on random
 * bytes or too small an output. */
RC_TEST(zlib_deflater_sync_flush_shape) {
  static const int windows[] = {15, 9};
  rc_inflater *inf = rc_inflater_new();
  RC_ASSERT(inf != NULL);
  for (size_t w = 0; w < 2; w++) {
    rc_deflater *d = rc_deflater_new_zlib(6, windows[w]);
    RC_CHECK(d != NULL);
    if (d == NULL)
      continue;
    static const size_t sizes[] = {256, 1024, 16384};
    for (size_t i = 0; i < 3; i++) {
      size_t n = sizes[i];
      uint8_t *msg = json_message(n, (uint32_t)(40 + i));
      uint8_t *comp = xmalloc(rc_deflate_bound(n));
      size_t clen = 0;
      RC_CHECK_EQ_INT(
          rc_deflate_message(d, msg, n, comp, rc_deflate_bound(n), &clen),
          RC_DEFLATE_OK);
      if (clen > 0) {
        RC_CHECK(clen < n);
        RC_CHECK_EQ_INT(inflate_check(inf, comp, clen, n, msg, n),
                        RC_INFLATE_OK);
        /* Tail appended, zlib inflates without reaching a final block. */
        z_stream z;
        memset(&z, 0, sizeof z);
        RC_CHECK(inflateInit2(&z, -windows[w]) == Z_OK);
        uint8_t *buf = xmalloc(clen + 4), *out = xmalloc(n);
        memcpy(buf, comp, clen);
        memcpy(buf + clen, "\x00\x00\xff\xff", 4);
        z.next_in = buf;
        z.avail_in = (uInt)(clen + 4);
        z.next_out = out;
        z.avail_out = (uInt)n;
        RC_CHECK_EQ_INT(inflate(&z, Z_SYNC_FLUSH), Z_OK);
        RC_CHECK_EQ_INT(z.avail_out, 0);
        RC_CHECK(memcmp(out, msg, n) == 0);
        inflateEnd(&z);
        free(buf);
        free(out);
        rc_inflate_stream *s = rc_inflate_stream_init(windows[w]);
        RC_CHECK(s != NULL);
        if (s != NULL)
          RC_CHECK_EQ_INT(stream_check(s, comp, clen, n, msg, n),
                          RC_INFLATE_OK);
        rc_inflate_stream_free(s);
      }
      /* Room for fewer bytes than the output: no gain, nothing more. */
      RC_CHECK_EQ_INT(rc_deflate_message(d, msg, n, comp, 8, &clen),
                      RC_DEFLATE_NO_GAIN);
      free(comp);
      free(msg);
    }
    uint8_t rnd[1024], out[1024];
    uint32_t x = 88172645u;
    for (size_t i = 0; i < sizeof rnd; i++) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      rnd[i] = (uint8_t)(x >> 24);
    }
    size_t got = 0;
    RC_CHECK_EQ_INT(
        rc_deflate_message(d, rnd, sizeof rnd, out, sizeof out, &got),
        RC_DEFLATE_NO_GAIN);
    rc_deflater_free(d);
  }
  rc_inflater_free(inf);
  RC_CHECK(rc_deflater_new_zlib(6, 8) == NULL);
  RC_CHECK(rc_deflater_new_zlib(0, 15) == NULL);
  RC_CHECK(rc_deflater_new_zlib(10, 15) == NULL);
}

/* What may be forwarded as it came: the two endings RFC 7692 7.2.1 gives
 * a sender (Z_SYNC_FLUSH's, and a final block then one 0x00, which our
 * compressor writes), not a final block alone or with anything else
 * after it, which rc_inflate_message still accepts. */
RC_TEST(well_formed_endings) {
  static const char text[] =
      "{\"user\":\"ada\",\"text\":\"hello hello hello\"},"
      "{\"user\":\"bob\",\"text\":\"hello hello hello\"},"
      "{\"user\":\"eve\",\"text\":\"hello hello hello\"}";
  size_t tlen = sizeof text - 1;
  rc_inflater *inf = rc_inflater_new();
  RC_ASSERT(inf != NULL);
  uint8_t out[256], msg[256];
  size_t got, n;

  z_stream z;
  zlib_deflater(&z, 6);
  uint8_t *sync = zlib_sync_message(&z, (const uint8_t *)text, tlen, &n);
  deflateEnd(&z);
  RC_ASSERT_EQ_INT(rc_inflate_message(inf, sync, n, out, sizeof out, &got),
                   RC_INFLATE_OK);
  RC_CHECK(rc_inflater_well_formed(inf));
  free(sync);

  rc_deflater *d = rc_deflater_new(6);
  RC_ASSERT(d != NULL);
  RC_ASSERT_EQ_INT(
      rc_deflate_message(d, (const uint8_t *)text, tlen, msg, sizeof msg, &n),
      RC_DEFLATE_OK);
  rc_deflater_free(d);
  RC_ASSERT(msg[n - 1] == 0x00);
  RC_ASSERT_EQ_INT(rc_inflate_message(inf, msg, n, out, sizeof out, &got),
                   RC_INFLATE_OK);
  RC_CHECK(rc_inflater_well_formed(inf));
  RC_CHECK(got == tlen && memcmp(out, text, tlen) == 0);

  /* The final block without the 0x00 after it (zlib's Z_FINISH). */
  RC_ASSERT_EQ_INT(rc_inflate_message(inf, msg, n - 1, out, sizeof out, &got),
                   RC_INFLATE_OK);
  RC_CHECK(!rc_inflater_well_formed(inf));
  /* Anything else after the final block. */
  msg[n - 1] = 0xff;
  msg[n] = 0xfe;
  RC_ASSERT_EQ_INT(rc_inflate_message(inf, msg, n + 1, out, sizeof out, &got),
                   RC_INFLATE_OK);
  RC_CHECK(!rc_inflater_well_formed(inf));
  /* And after a refusal. */
  static const uint8_t reserved_btype[] = {0xff}; /* BTYPE 11 */
  RC_CHECK(rc_inflate_message(inf, reserved_btype, 1, out, sizeof out, &got) ==
           RC_INFLATE_BAD_DATA);
  RC_CHECK(!rc_inflater_well_formed(inf));
  rc_inflater_free(inf);
}

RC_TEST_MAIN(RC_CASE(json_round_trips_at_levels_1_and_6),
             RC_CASE(zlib_sync_flush_message_inflates),
             RC_CASE(rfc7692_7231_hello_both_ways),
             RC_CASE(rfc7692_7232_shared_window), RC_CASE(rfc7692_7233_to_7235),
             RC_CASE(stream_keeps_window_across_final_block),
             RC_CASE(our_messages_on_a_context_keeping_receiver),
             RC_CASE(deflate_bomb_is_too_big),
             RC_CASE(garbage_and_truncated_are_bad_data),
             RC_CASE(random_bytes_do_not_shrink),
             RC_CASE(stream_context_takeover_over_several_messages),
             RC_CASE(zlib_deflater_sync_flush_shape),
             RC_CASE(well_formed_endings))
