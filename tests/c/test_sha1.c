/* test_sha1.c - SHA-1 against FIPS 180 examples, base64 against RFC 4648
 * section 10, and the Sec-WebSocket-Key length check. */
#include <stdint.h>
#include <string.h>

#include "proto/rc_sha1.h"
#include "support/rc_test.h"

static void sha1_hex(const void *data, size_t len, size_t chunk, char hex[41]) {
  static const char digits[] = "0123456789abcdef";
  rc_sha1 s;
  uint8_t d[20];
  const uint8_t *p = data;
  rc_sha1_init(&s);
  if (chunk == 0)
    chunk = len > 0 ? len : 1;
  for (size_t off = 0; off < len; off += chunk) {
    size_t take = len - off < chunk ? len - off : chunk;
    rc_sha1_update(&s, p + off, take);
  }
  rc_sha1_final(&s, d);
  for (int i = 0; i < 20; i++) {
    hex[2 * i] = digits[d[i] >> 4];
    hex[2 * i + 1] = digits[d[i] & 15];
  }
  hex[40] = '\0';
}

RC_TEST(sha1_empty) {
  char hex[41];
  sha1_hex("", 0, 0, hex);
  RC_ASSERT_EQ_STR(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
}

RC_TEST(sha1_abc) {
  char hex[41];
  sha1_hex("abc", 3, 0, hex);
  RC_ASSERT_EQ_STR(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
}

RC_TEST(sha1_448_bit_message) {
  static const char m[] =
      "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  char hex[41];
  sha1_hex(m, sizeof m - 1, 0, hex);
  RC_ASSERT_EQ_STR(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  /* Byte-at-a-time must give the same digest as one call. */
  sha1_hex(m, sizeof m - 1, 1, hex);
  RC_ASSERT_EQ_STR(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
}

RC_TEST(sha1_896_bit_message) {
  static const char m[] =
      "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
      "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
  char hex[41];
  sha1_hex(m, sizeof m - 1, 0, hex);
  RC_ASSERT_EQ_STR(hex, "a49b2446a02c645bf419f995b67091253a04a259");
}

RC_TEST(sha1_million_a_in_odd_chunks) {
  static char buf[1000000];
  memset(buf, 'a', sizeof buf);
  static const size_t chunks[] = {0, 1, 3, 7, 63, 65, 997, 4099};
  for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
    char hex[41];
    sha1_hex(buf, sizeof buf, chunks[k], hex);
    RC_ASSERT_EQ_STR(hex, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
  }
}

/* Lengths around the 55/56 and 64-byte boundaries where padding spills into
 * a second block. */
RC_TEST(sha1_padding_boundaries) {
  static const struct {
    size_t n;
    const char *hex;
  } v[] = {
      {55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"},
      {56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"},
      {57, "f08f24908d682555111be7ff6f004e78283d989a"},
      {63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5"},
      {64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"},
      {65, "11655326c708d70319be2610e8a57d9a5b959d3b"},
      {119, "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56"},
      {120, "f34c1488385346a55709ba056ddd08280dd4c6d6"},
  };
  char buf[120];
  memset(buf, 'a', sizeof buf);
  for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
    char hex[41];
    sha1_hex(buf, v[k].n, 0, hex);
    RC_ASSERT_EQ_STR(hex, v[k].hex);
    sha1_hex(buf, v[k].n, 5, hex);
    RC_ASSERT_EQ_STR(hex, v[k].hex);
  }
}

RC_TEST(base64_rfc4648_vectors) {
  static const struct {
    const char *in, *out;
  } v[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
    char out[16];
    memset(out, 'X', sizeof out);
    size_t n = rc_base64_encode((const uint8_t *)v[k].in, strlen(v[k].in), out);
    RC_ASSERT_EQ_STR(out, v[k].out);
    RC_ASSERT_EQ_UINT(n, strlen(v[k].out));
    RC_ASSERT_EQ_INT(rc_base64_decoded_len(v[k].out, strlen(v[k].out)),
                     (long)strlen(v[k].in));
  }
}

RC_TEST(base64_all_byte_values) {
  uint8_t in[3] = {0xFB, 0xEF, 0xFF};
  char out[5];
  rc_base64_encode(in, 3, out);
  RC_ASSERT_EQ_STR(out, "++//");
  RC_ASSERT_EQ_INT(rc_base64_decoded_len(out, 4), 3);
  uint8_t zero[2] = {0, 0};
  rc_base64_encode(zero, 2, out);
  RC_ASSERT_EQ_STR(out, "AAA=");
}

RC_TEST(decoded_len_websocket_key) {
  static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
  RC_ASSERT_EQ_INT(rc_base64_decoded_len(key, sizeof key - 1), 16);
  /* 24 chars without padding decode to 18 bytes: not a valid key length. */
  static const char k18[] = "dGhlIHNhbXBsZSBub25jZQAA";
  RC_ASSERT_EQ_INT(rc_base64_decoded_len(k18, sizeof k18 - 1), 18);
}

RC_TEST(decoded_len_wrong_length) {
  RC_ASSERT_EQ_INT(rc_base64_decoded_len("Zm9", 3), -1);
  RC_ASSERT_EQ_INT(rc_base64_decoded_len("Zm9vY", 5), -1);
  RC_ASSERT_EQ_INT(rc_base64_decoded_len("dGhlIHNhbXBsZSBub25jZQ=", 23), -1);
  RC_ASSERT_EQ_INT(rc_base64_decoded_len("", 0), 0);
}

RC_TEST(decoded_len_bad_chars) {
  RC_ASSERT_EQ_INT(rc_base64_decoded_len("Zm9-", 4), -1); /* base64url */
  RC_ASSERT_EQ_INT(rc_base64_decoded_len("Zm9_", 4), -1);
  RC_ASSERT_EQ_INT(rc_base64_decoded_len("Zm 9", 4), -1);
  RC_ASSERT_EQ_INT(rc_base64_decoded_len("Zm\0v", 4), -1);
  RC_ASSERT_EQ_INT(rc_base64_decoded_len("Zm9\xff", 4), -1);
}

RC_TEST(decoded_len_bad_padding) {
  RC_ASSERT_EQ_INT(rc_base64_decoded_len("Z===", 4), -1);
  RC_ASSERT_EQ_INT(rc_base64_decoded_len("====", 4), -1);
  RC_ASSERT_EQ_INT(rc_base64_decoded_len("=Zg=", 4), -1);
  RC_ASSERT_EQ_INT(rc_base64_decoded_len("Zg=a", 4), -1);
  RC_ASSERT_EQ_INT(rc_base64_decoded_len("Zg==Zg==", 8), -1);
  RC_ASSERT_EQ_INT(rc_base64_decoded_len("Zm=v", 4), -1);
}

RC_TEST_MAIN(RC_CASE(sha1_empty), RC_CASE(sha1_abc),
             RC_CASE(sha1_448_bit_message), RC_CASE(sha1_896_bit_message),
             RC_CASE(sha1_million_a_in_odd_chunks),
             RC_CASE(sha1_padding_boundaries), RC_CASE(base64_rfc4648_vectors),
             RC_CASE(base64_all_byte_values),
             RC_CASE(decoded_len_websocket_key),
             RC_CASE(decoded_len_wrong_length), RC_CASE(decoded_len_bad_chars),
             RC_CASE(decoded_len_bad_padding))
