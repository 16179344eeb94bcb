/* test_accept.c - the Sec-WebSocket-Accept computation (rc_http.c, SHA-1
 * and base64 from OpenSSL) against RFC 6455 1.3's example and SHA-1's
 * FIPS 180 inputs used as keys, base64 against RFC 4648 section 10, and the
 * Sec-WebSocket-Key length check. The expected values were computed with
 * an independent SHA-1 (Python's hashlib). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/rc_http.h"
#include "support/rc_test.h"

static void check_accept(const char *key, size_t len, const char *want) {
  char out[29];
  memset(out, 'X', sizeof out);
  RC_ASSERT_EQ_INT(rc_ws_accept_value(key, len, out), 0);
  RC_ASSERT_EQ_STR(out, want);
}

RC_TEST(accept_rfc6455_example) {
  static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
  check_accept(key, sizeof key - 1, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

RC_TEST(accept_fips180_inputs) {
  check_accept("", 0, "Kfh9QIsMVZcl6xEPYxPHzW8SZ8w=");
  check_accept("abc", 3, "zwKd5BnoWxQ6GxTxxSmBSHGHX9M=");
  static const char m[] =
      "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  check_accept(m, sizeof m - 1, "5TDxQBt8sB21y45BB5IRA1LO1yc=");
}

RC_TEST(accept_million_a) {
  char *buf = malloc(1000000);
  RC_ASSERT(buf != NULL);
  memset(buf, 'a', 1000000);
  check_accept(buf, 1000000, "xyGSboaqW2r/msKuEQ3u70t2YOc=");
  free(buf);
}

/* Keys whose length with the 36-byte GUID puts SHA-1's padding around the
 * 55/56 and 64-byte block boundaries. */
RC_TEST(accept_padding_boundaries) {
  static const struct {
    size_t n;
    const char *accept;
  } v[] = {
      {19, "yzaGyu0mcUukN7CdsSwa30tnCpc="},
      {20, "dUYRM7bOMwDmbriNIPr11x+r3E0="},
      {21, "aZJiecHLfhX/GY5TTQfKOQ5Dpnk="},
      {27, "NCEiOv6lMC9mC8oEZnneqRdJ4DU="},
      {28, "xMWmCBqYJY4uXzUs8PNU1t+Pzro="},
      {29, "m8kT+K/C9sp8j44+NnEexy4o+Tg="},
      {83, "JM5KfcY+04u0quK7uTyka1S7/6k="},
      {84, "ulKRXZrQnbZPxNi6BcFGPe3Py5Q="},
  };
  char buf[84];
  memset(buf, 'a', sizeof buf);
  for (size_t k = 0; k < sizeof v / sizeof v[0]; k++)
    check_accept(buf, v[k].n, v[k].accept);
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

RC_TEST_MAIN(RC_CASE(accept_rfc6455_example), RC_CASE(accept_fips180_inputs),
             RC_CASE(accept_million_a), RC_CASE(accept_padding_boundaries),
             RC_CASE(base64_rfc4648_vectors), RC_CASE(base64_all_byte_values),
             RC_CASE(decoded_len_websocket_key),
             RC_CASE(decoded_len_wrong_length), RC_CASE(decoded_len_bad_chars),
             RC_CASE(decoded_len_bad_padding))
