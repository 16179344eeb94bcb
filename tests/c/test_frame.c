/* test_frame.c - frame headers (server and masked client), masking and close
 * payloads against exact bytes (RFC 6455 5.2, 5.3, 5.5.1, 7.4). */
#include <stdint.h>
#include <string.h>

#include "proto/rc_frame.h"
#include "support/rc_test.h"

RC_TEST(header_len_thresholds) {
  RC_ASSERT_EQ_UINT(rc_frame_header_len(0), 2);
  RC_ASSERT_EQ_UINT(rc_frame_header_len(125), 2);
  RC_ASSERT_EQ_UINT(rc_frame_header_len(126), 4);
  RC_ASSERT_EQ_UINT(rc_frame_header_len(65535), 4);
  RC_ASSERT_EQ_UINT(rc_frame_header_len(65536), 10);
  RC_ASSERT_EQ_UINT(rc_frame_header_len(UINT64_C(0x7FFFFFFFFFFFFFFF)), 10);
}

RC_TEST(header_len_0) {
  uint8_t out[RC_FRAME_MAX_HEADER];
  size_t n = rc_frame_header(out, RC_OP_TEXT, 1, 0);
  RC_ASSERT_EQ_BYTES(out, n, "\x81\x00");
}

RC_TEST(header_len_125) {
  uint8_t out[RC_FRAME_MAX_HEADER];
  size_t n = rc_frame_header(out, RC_OP_TEXT, 1, 125);
  RC_ASSERT_EQ_BYTES(out, n, "\x81\x7d");
}

RC_TEST(header_len_126) {
  uint8_t out[RC_FRAME_MAX_HEADER];
  size_t n = rc_frame_header(out, RC_OP_BINARY, 1, 126);
  RC_ASSERT_EQ_BYTES(out, n, "\x82\x7e\x00\x7e");
}

RC_TEST(header_len_65535) {
  uint8_t out[RC_FRAME_MAX_HEADER];
  size_t n = rc_frame_header(out, RC_OP_BINARY, 1, 65535);
  RC_ASSERT_EQ_BYTES(out, n, "\x82\x7e\xff\xff");
}

RC_TEST(header_len_65536) {
  uint8_t out[RC_FRAME_MAX_HEADER];
  size_t n = rc_frame_header(out, RC_OP_BINARY, 1, 65536);
  RC_ASSERT_EQ_BYTES(out, n, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00");
}

RC_TEST(header_len_large_64_bit) {
  uint8_t out[RC_FRAME_MAX_HEADER];
  size_t n =
      rc_frame_header(out, RC_OP_BINARY, 1, UINT64_C(0x0123456789ABCDEF));
  RC_ASSERT_EQ_BYTES(out, n, "\x82\x7f\x01\x23\x45\x67\x89\xab\xcd\xef");
  n = rc_frame_header(out, RC_OP_TEXT, 1, UINT64_C(0x7FFFFFFFFFFFFFFF));
  RC_ASSERT_EQ_BYTES(out, n, "\x81\x7f\x7f\xff\xff\xff\xff\xff\xff\xff");
}

RC_TEST(header_fin_clear) {
  uint8_t out[RC_FRAME_MAX_HEADER];
  size_t n = rc_frame_header(out, RC_OP_TEXT, 0, 5);
  RC_ASSERT_EQ_BYTES(out, n, "\x01\x05");
  n = rc_frame_header(out, RC_OP_CONT, 0, 300);
  RC_ASSERT_EQ_BYTES(out, n, "\x00\x7e\x01\x2c");
  n = rc_frame_header(out, RC_OP_CONT, 1, 3);
  RC_ASSERT_EQ_BYTES(out, n, "\x80\x03");
  /* Any nonzero fin sets the bit. */
  n = rc_frame_header(out, RC_OP_BINARY, 42, 1);
  RC_ASSERT_EQ_BYTES(out, n, "\x82\x01");
}

RC_TEST(header_each_opcode) {
  static const struct {
    unsigned op;
    uint8_t b0;
  } v[] = {
      {RC_OP_CONT, 0x80},  {RC_OP_TEXT, 0x81}, {RC_OP_BINARY, 0x82},
      {RC_OP_CLOSE, 0x88}, {RC_OP_PING, 0x89}, {RC_OP_PONG, 0x8A},
  };
  for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
    uint8_t out[RC_FRAME_MAX_HEADER];
    size_t n = rc_frame_header(out, v[k].op, 1, 2);
    RC_ASSERT_EQ_UINT(n, 2);
    RC_CHECK_EQ_INT(out[0], v[k].b0);
    RC_CHECK_EQ_INT(out[1], 2); /* mask bit never set */
  }
}

RC_TEST(close_payload_code_and_reason) {
  uint8_t out[125];
  size_t n = rc_frame_close_payload(out, 1000, "bye", 3);
  RC_ASSERT_EQ_BYTES(out, n,
                     "\x03\xe8"
                     "bye");
  n = rc_frame_close_payload(out, 4999, NULL, 0);
  RC_ASSERT_EQ_BYTES(out, n, "\x13\x87");
  n = rc_frame_close_payload(out, 1011, "", 0);
  RC_ASSERT_EQ_BYTES(out, n, "\x03\xf3");
}

RC_TEST(close_payload_code_0_is_empty) {
  uint8_t out[125];
  memset(out, 0xAA, sizeof out);
  RC_ASSERT_EQ_UINT(rc_frame_close_payload(out, 0, "ignored", 7), 0);
  RC_ASSERT_EQ_INT(out[0], 0xAA);
}

RC_TEST(close_payload_reason_exactly_fits) {
  char reason[123];
  memset(reason, 'r', sizeof reason);
  uint8_t out[125];
  size_t n = rc_frame_close_payload(out, 1001, reason, sizeof reason);
  RC_ASSERT_EQ_UINT(n, 125);
  RC_ASSERT_EQ_MEM(out + 2, reason, 123);
}

RC_TEST(close_payload_truncates_ascii_at_125) {
  char reason[300];
  memset(reason, 'r', sizeof reason);
  uint8_t out[125];
  size_t n = rc_frame_close_payload(out, 1001, reason, sizeof reason);
  RC_ASSERT_EQ_UINT(n, 125);
  RC_ASSERT_EQ_INT(out[0], 0x03);
  RC_ASSERT_EQ_INT(out[1], 0xe9);
  RC_ASSERT_EQ_MEM(out + 2, reason, 123);
}

/* 122 ASCII bytes then a 3-byte character: keeping 123 bytes would split
 * it, so the whole character goes. */
RC_TEST(close_payload_truncates_on_utf8_boundary) {
  char reason[130];
  memset(reason, 'r', 122);
  memcpy(reason + 122,
         "\xe2\x82\xac"
         "abcde",
         8);
  uint8_t out[125];
  size_t n = rc_frame_close_payload(out, 1000, reason, sizeof reason);
  RC_ASSERT_EQ_UINT(n, 2 + 122);
  RC_ASSERT_EQ_MEM(out + 2, reason, 122);

  /* 120 ASCII then a 3-byte character ends exactly at 123: kept whole. */
  memset(reason, 'r', 120);
  memcpy(reason + 120,
         "\xe2\x82\xac"
         "abcdefg",
         10);
  n = rc_frame_close_payload(out, 1000, reason, sizeof reason);
  RC_ASSERT_EQ_UINT(n, 125);
  RC_ASSERT_EQ_MEM(out + 122, "\xe2\x82\xac", 3);

  /* All 4-byte characters: 30 fit in 120 bytes, the 31st would not. */
  for (size_t i = 0; i < 128; i += 4)
    memcpy(reason + i, "\xf0\x9f\x98\x80", 4);
  n = rc_frame_close_payload(out, 1000, reason, 128);
  RC_ASSERT_EQ_UINT(n, 2 + 120);
  RC_ASSERT_EQ_MEM(out + 2, reason, 120);
}

RC_TEST(close_code_validity_table) {
  static const struct {
    unsigned code;
    int valid;
  } v[] = {
      {0, 0},    {999, 0},  {1000, 1}, {1001, 1},  {1002, 1},         {1003, 1},
      {1004, 0}, {1005, 0}, {1006, 0}, {1007, 1},  {1008, 1},         {1009, 1},
      {1010, 1}, {1011, 1}, {1012, 1}, {1013, 1},  {1014, 1},         {1015, 0},
      {1016, 0}, {1999, 0}, {2000, 0}, {2999, 0},  {3000, 1},         {3999, 1},
      {4000, 1}, {4999, 1}, {5000, 0}, {65535, 0}, {65536 + 1000, 0},
  };
  for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
    if (rc_close_code_valid(v[k].code) != v[k].valid) {
      fprintf(stderr, "  code %u\n", v[k].code);
      RC_CHECK_EQ_INT(rc_close_code_valid(v[k].code), v[k].valid);
    }
  }
}

static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};

/* A masked client frame: header, 4-byte key, payload (not really masked:
 * the scanner never looks at payload bytes). */
static size_t client_frame(uint8_t *out, unsigned op, int fin, size_t len) {
  size_t n = rc_frame_header(out, op, fin, len);
  out[1] |= 0x80;
  memset(out + n, 0xAB, 4 + len);
  return n + 4 + len;
}

RC_TEST(scan_rest_between_messages) {
  rc_frame_scan sc = {0};
  uint8_t buf[70000];
  RC_ASSERT_EQ_INT(rc_frame_scan_at_rest(&sc), 1);
  size_t n = client_frame(buf, RC_OP_TEXT, 1, 5);
  rc_frame_scan_feed(&sc, buf, n - 1, 0);
  RC_ASSERT_EQ_INT(rc_frame_scan_at_rest(&sc), 0);
  rc_frame_scan_feed(&sc, buf + n - 1, 1, 0);
  RC_ASSERT_EQ_INT(rc_frame_scan_at_rest(&sc), 1);
  /* 16-bit and 64-bit lengths, fed one byte at a time */
  size_t sizes[] = {200, 65536};
  for (int k = 0; k < 2; k++) {
    n = client_frame(buf, RC_OP_BINARY, 1, sizes[k]);
    for (size_t i = 0; i < n; i++) {
      RC_ASSERT_EQ_INT(rc_frame_scan_at_rest(&sc), i == 0);
      rc_frame_scan_feed(&sc, buf + i, 1, 0);
    }
    RC_ASSERT_EQ_INT(rc_frame_scan_at_rest(&sc), 1);
  }
}

RC_TEST(scan_fragmented_message_is_not_at_rest) {
  rc_frame_scan sc = {0};
  uint8_t buf[64];
  size_t n = client_frame(buf, RC_OP_TEXT, 0, 3);
  rc_frame_scan_feed(&sc, buf, n, 0);
  RC_ASSERT_EQ_INT(rc_frame_scan_at_rest(&sc), 0);
  n = client_frame(buf, RC_OP_PING, 1, 2); /* control frames interleave */
  rc_frame_scan_feed(&sc, buf, n, 0);
  RC_ASSERT_EQ_INT(rc_frame_scan_at_rest(&sc), 0);
  n = client_frame(buf, RC_OP_CONT, 0, 3);
  rc_frame_scan_feed(&sc, buf, n, 0);
  RC_ASSERT_EQ_INT(rc_frame_scan_at_rest(&sc), 0);
  n = client_frame(buf, RC_OP_CONT, 1, 3);
  rc_frame_scan_feed(&sc, buf, n, 0);
  RC_ASSERT_EQ_INT(rc_frame_scan_at_rest(&sc), 1);
}

/* A good frame, then a bad one: the scanner passes on exactly the good
 * frame's bytes, reports the code, and passes nothing afterwards. */
static void check_refused(uint8_t *bad, size_t bad_len, uint16_t code) {
  rc_frame_scan sc = {0};
  uint8_t buf[512];
  size_t good = client_frame(buf, RC_OP_TEXT, 1, 10);
  memcpy(buf + good, bad, bad_len);
  RC_CHECK_EQ_INT((long)rc_frame_scan_feed(&sc, buf, good + bad_len, 0),
                  (long)good);
  RC_CHECK_EQ_INT(sc.error, code);
  RC_CHECK_EQ_INT((long)rc_frame_scan_feed(&sc, buf, good, 0), 0);
}

RC_TEST(scan_refuses_bad_control_frames_and_lengths) {
  uint8_t bad[300];
  size_t n = client_frame(bad, RC_OP_PING, 1, 126); /* control > 125 */
  check_refused(bad, n, 1002);
  n = client_frame(bad, RC_OP_PONG, 0, 2); /* fragmented control frame */
  check_refused(bad, n, 1002);
  n = client_frame(bad, RC_OP_BINARY, 1, 0);
  bad[1] = 0x80 | 127; /* 64-bit length with the top bit set */
  memset(bad + 2, 0xFF, 8);
  check_refused(bad, 14, 1002);
}

RC_TEST(scan_bad_header_split_across_reads_passes_nothing_of_it) {
  rc_frame_scan sc = {0};
  uint8_t buf[64];
  size_t n = client_frame(buf, RC_OP_PING, 0, 1);
  RC_ASSERT_EQ_INT((long)rc_frame_scan_feed(&sc, buf, 1, 0), 1);
  RC_ASSERT_EQ_INT(sc.error, 0);
  RC_ASSERT_EQ_INT((long)rc_frame_scan_feed(&sc, buf + 1, n - 1, 0), 0);
  RC_ASSERT_EQ_INT(sc.error, 1002);
}

/* The scanner stops at a close frame's first byte, even one split from
 * the rest of its header, and passes nothing after it. */
RC_TEST(scan_stops_at_a_close_frame) {
  rc_frame_scan sc = {0};
  uint8_t buf[64];
  size_t good = client_frame(buf, RC_OP_TEXT, 1, 3);
  size_t n = client_frame(buf + good, RC_OP_CLOSE, 1, 2);
  RC_ASSERT_EQ_INT((long)rc_frame_scan_feed(&sc, buf, good + n, 0), (long)good);
  RC_CHECK_EQ_INT(sc.closing, 1);
  RC_CHECK_EQ_INT(sc.error, 0);
  RC_CHECK_EQ_INT(rc_frame_scan_at_rest(&sc), 0);
  RC_CHECK_EQ_INT((long)rc_frame_scan_feed(&sc, buf, good, 0), 0);
  rc_frame_scan fresh = {0};
  RC_CHECK_EQ_INT((long)rc_frame_scan_feed(&fresh, buf + good, 1, 0), 0);
  RC_CHECK_EQ_INT(fresh.closing, 1);
}

/* A masked close frame with the given code and reason. */
static size_t close_frame(uint8_t *out, unsigned code, const char *reason) {
  uint8_t payload[125];
  size_t plen = rc_frame_close_payload(payload, code, reason, strlen(reason));
  size_t n = rc_frame_client_header(out, RC_OP_CLOSE, plen, key);
  rc_frame_mask(out + n, payload, plen, key);
  return n + plen;
}

/* Fed one byte at a time, as the connection gathers it. */
static unsigned parse_gathered(const uint8_t *frame, size_t len, int masked,
                               rc_frame_close *fc, uint8_t *buf) {
  size_t have = 0;
  while (have < rc_frame_close_size(buf, have)) {
    if (have == len)
      return 9999; /* wants more than the frame has */
    buf[have] = frame[have];
    have++;
  }
  if (have != len)
    return 9998; /* stopped short of the frame */
  return rc_frame_close_parse(buf, have, masked, fc);
}

RC_TEST(close_frames_with_every_registered_code_are_read) {
  static const unsigned codes[] = {1000, 1001, 1003, 1007, 1011,
                                   1012, 1013, 1014, 3000, 4999};
  uint8_t frame[RC_FRAME_MAX_CLOSE], buf[RC_FRAME_MAX_CLOSE];
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    size_t n = close_frame(frame, codes[i], "try again");
    rc_frame_close fc;
    RC_CHECK_EQ_INT(parse_gathered(frame, n, 1, &fc, buf), 0);
    RC_CHECK_EQ_INT(fc.code, codes[i]);
    RC_CHECK(fc.reason_len == 9 && memcmp(fc.reason, "try again", 9) == 0);
  }
  /* No payload: no status code. */
  uint8_t empty[6] = {0x88, 0x80, 1, 2, 3, 4};
  rc_frame_close fc;
  RC_CHECK_EQ_INT(parse_gathered(empty, 6, 1, &fc, buf), 0);
  RC_CHECK_EQ_INT(fc.code, 0);
}

RC_TEST(bad_close_frames_are_refused) {
  uint8_t frame[RC_FRAME_MAX_CLOSE], buf[RC_FRAME_MAX_CLOSE];
  rc_frame_close fc;
  static const unsigned bad_codes[] = {0,    999,  1004, 1005, 1006,
                                       1015, 1016, 2999, 5000, 65535};
  for (size_t i = 0; i < sizeof bad_codes / sizeof bad_codes[0]; i++) {
    size_t n = close_frame(frame, bad_codes[i], "");
    if (bad_codes[i] == 0) { /* rc_frame_close_payload writes nothing */
      uint8_t zero[2] = {0, 0};
      n = rc_frame_client_header(frame, RC_OP_CLOSE, 2, key);
      rc_frame_mask(frame + n, zero, 2, key);
      n += 2;
    }
    RC_CHECK_EQ_INT(parse_gathered(frame, n, 1, &fc, buf), 1002);
  }
  size_t n = close_frame(frame, 1000, "bye");
  RC_CHECK_EQ_INT(parse_gathered(frame, n, 0, &fc, buf), 1002); /* masked */
  frame[0] = 0x08;                                              /* FIN clear */
  RC_CHECK_EQ_INT(parse_gathered(frame, n, 1, &fc, buf), 1002);
  frame[0] = 0xC8; /* RSV1 */
  RC_CHECK_EQ_INT(parse_gathered(frame, n, 1, &fc, buf), 1002);
  uint8_t half[7] = {0x88, 0x81, 1, 2, 3, 4, 5}; /* half a code */
  RC_CHECK_EQ_INT(parse_gathered(half, 7, 1, &fc, buf), 1002);
  /* Declares 126 bytes: refused on its header, nothing of it gathered. */
  uint8_t big[8] = {0x88, 0xFE, 0, 126, 1, 2, 3, 4};
  RC_CHECK_EQ_INT(rc_frame_close_size(big, 8), 8);
  RC_CHECK_EQ_INT(parse_gathered(big, 8, 1, &fc, buf), 1002);
  uint8_t payload[8] = {0x03, 0xE8, 0xC3, 0x28}; /* 1000, not UTF-8 */
  n = rc_frame_client_header(frame, RC_OP_CLOSE, 4, key);
  rc_frame_mask(frame + n, payload, 4, key);
  RC_CHECK_EQ_INT(parse_gathered(frame, n + 4, 1, &fc, buf), 1007);
  /* A server's close frame is not masked. */
  uint8_t srv[4] = {0x88, 0x02, 0x03, 0xF5}; /* 1013 */
  RC_CHECK_EQ_INT(parse_gathered(srv, 4, 0, &fc, buf), 0);
  RC_CHECK_EQ_INT(fc.code, 1013);
}

RC_TEST(scan_counts_fragments_against_the_limit) {
  rc_frame_scan sc = {0};
  uint8_t buf[64];
  size_t n = client_frame(buf, RC_OP_TEXT, 0, 1);
  RC_ASSERT_EQ_INT((long)rc_frame_scan_feed(&sc, buf, n, 3), (long)n);
  n = client_frame(buf, RC_OP_CONT, 0, 1);
  RC_ASSERT_EQ_INT((long)rc_frame_scan_feed(&sc, buf, n, 3), (long)n);
  n = client_frame(buf, RC_OP_PING, 1, 1); /* control frames do not count */
  RC_ASSERT_EQ_INT((long)rc_frame_scan_feed(&sc, buf, n, 3), (long)n);
  n = client_frame(buf, RC_OP_CONT, 0, 1);
  RC_ASSERT_EQ_INT((long)rc_frame_scan_feed(&sc, buf, n, 3), (long)n);
  RC_ASSERT_EQ_INT(sc.error, 0);
  RC_ASSERT_EQ_INT((long)rc_frame_scan_feed(&sc, buf, n, 3), 0);
  RC_ASSERT_EQ_INT(sc.error, 1009);
  /* a new message starts the count again */
  rc_frame_scan fresh = {0};
  for (int i = 0; i < 10; i++) {
    n = client_frame(buf, RC_OP_TEXT, 1, 1);
    RC_ASSERT_EQ_INT((long)rc_frame_scan_feed(&fresh, buf, n, 1), (long)n);
  }
}

RC_TEST(client_header_small) {
  /* RFC 6455 5.7: a masked "Hello" starts 0x81 0x85 0x37 0xfa 0x21 0x3d. */
  uint8_t h[RC_FRAME_MAX_CLIENT_HEADER];
  size_t n = rc_frame_client_header(h, RC_OP_TEXT, 5, key);
  RC_ASSERT_EQ_BYTES(h, n, "\x81\x85\x37\xfa\x21\x3d");
}

RC_TEST(client_header_16_and_64_bit_lengths) {
  uint8_t h[RC_FRAME_MAX_CLIENT_HEADER];
  size_t n = rc_frame_client_header(h, RC_OP_BINARY, 256, key);
  RC_ASSERT_EQ_BYTES(h, n, "\x82\xfe\x01\x00\x37\xfa\x21\x3d");
  n = rc_frame_client_header(h, RC_OP_PING, 65536, key);
  RC_ASSERT_EQ_BYTES(h, n,
                     "\x89\xff\x00\x00\x00\x00\x00\x01\x00\x00"
                     "\x37\xfa\x21\x3d");
}

RC_TEST(mask_rfc_example) {
  /* RFC 6455 5.7: "Hello" masked with 37 fa 21 3d. */
  uint8_t out[5];
  rc_frame_mask(out, (const uint8_t *)"Hello", 5, key);
  RC_ASSERT_EQ_BYTES(out, sizeof out, "\x7f\x9f\x4d\x51\x58");
}

RC_TEST(mask_every_length_and_in_place) {
  /* The word-at-a-time path and the byte tail agree with the definition,
   * and masking twice restores the input. */
  uint8_t src[67], dst[67], again[67];
  for (size_t i = 0; i < sizeof src; i++)
    src[i] = (uint8_t)(i * 7 + 1);
  for (size_t len = 0; len <= sizeof src; len++) {
    rc_frame_mask(dst, src, len, key);
    for (size_t i = 0; i < len; i++)
      RC_ASSERT_EQ_INT(dst[i], src[i] ^ key[i % 4]);
    memcpy(again, dst, len);
    rc_frame_mask(again, again, len, key);
    RC_ASSERT_EQ_MEM(again, src, len);
  }
}

RC_TEST_MAIN(RC_CASE(client_header_small),
             RC_CASE(client_header_16_and_64_bit_lengths),
             RC_CASE(mask_rfc_example), RC_CASE(mask_every_length_and_in_place),
             RC_CASE(scan_rest_between_messages),
             RC_CASE(scan_fragmented_message_is_not_at_rest),
             RC_CASE(scan_refuses_bad_control_frames_and_lengths),
             RC_CASE(scan_bad_header_split_across_reads_passes_nothing_of_it),
             RC_CASE(scan_counts_fragments_against_the_limit),
             RC_CASE(scan_stops_at_a_close_frame),
             RC_CASE(close_frames_with_every_registered_code_are_read),
             RC_CASE(bad_close_frames_are_refused),
             RC_CASE(header_len_thresholds), RC_CASE(header_len_0),
             RC_CASE(header_len_125), RC_CASE(header_len_126),
             RC_CASE(header_len_65535), RC_CASE(header_len_65536),
             RC_CASE(header_len_large_64_bit), RC_CASE(header_fin_clear),
             RC_CASE(header_each_opcode),
             RC_CASE(close_payload_code_and_reason),
             RC_CASE(close_payload_code_0_is_empty),
             RC_CASE(close_payload_reason_exactly_fits),
             RC_CASE(close_payload_truncates_ascii_at_125),
             RC_CASE(close_payload_truncates_on_utf8_boundary),
             RC_CASE(close_code_validity_table))
