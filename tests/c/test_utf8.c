/* test_utf8.c - the strict UTF-8 validator: RFC 3629 boundaries, every class
 * of ill-formed sequence, and the 8-byte ASCII fast path at every offset. */
#include <stdint.h>
#include <string.h>

#include "proto/rc_utf8.h"
#include "support/rc_test.h"

#define VALID(lit) rc_utf8_valid((const uint8_t *)(lit), sizeof(lit) - 1)

RC_TEST(empty_is_valid) {
  RC_ASSERT_EQ_INT(rc_utf8_valid((const uint8_t *)"", 0), 1);
  RC_ASSERT_EQ_INT(rc_utf8_valid(NULL, 0), 1);
}

RC_TEST(valid_ascii_and_multibyte) {
  RC_ASSERT_EQ_INT(VALID("hello, world"), 1);
  RC_ASSERT_EQ_INT(VALID("\x00"), 1);             /* NUL is a code point */
  RC_ASSERT_EQ_INT(VALID("caf\xc3\xa9"), 1);      /* é, 2 bytes */
  RC_ASSERT_EQ_INT(VALID("\xe2\x82\xac"), 1);     /* €, 3 bytes */
  RC_ASSERT_EQ_INT(VALID("\xf0\x9f\x98\x80"), 1); /* U+1F600, 4 bytes */
  RC_ASSERT_EQ_INT(VALID("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z"), 1);
  RC_ASSERT_EQ_INT(VALID("\xed\x9f\xbf"), 1); /* U+D7FF, below surrogates */
  RC_ASSERT_EQ_INT(VALID("\xee\x80\x80"), 1); /* U+E000, above surrogates */
  RC_ASSERT_EQ_INT(VALID("\xef\xbf\xbe"), 1); /* U+FFFE noncharacter is valid */
}

RC_TEST(boundaries) {
  RC_ASSERT_EQ_INT(VALID("\x7f"), 1);             /* U+007F */
  RC_ASSERT_EQ_INT(VALID("\xc2\x80"), 1);         /* U+0080 */
  RC_ASSERT_EQ_INT(VALID("\xdf\xbf"), 1);         /* U+07FF */
  RC_ASSERT_EQ_INT(VALID("\xe0\xa0\x80"), 1);     /* U+0800 */
  RC_ASSERT_EQ_INT(VALID("\xef\xbf\xbf"), 1);     /* U+FFFF */
  RC_ASSERT_EQ_INT(VALID("\xf0\x90\x80\x80"), 1); /* U+10000 */
  RC_ASSERT_EQ_INT(VALID("\xf4\x8f\xbf\xbf"), 1); /* U+10FFFF */
}

RC_TEST(overlongs) {
  RC_ASSERT_EQ_INT(VALID("\xc0\x80"), 0);
  RC_ASSERT_EQ_INT(VALID("\xc1\xbf"), 0);
  RC_ASSERT_EQ_INT(VALID("\xe0\x80\x80"), 0);
  RC_ASSERT_EQ_INT(VALID("\xe0\x9f\xbf"), 0);
  RC_ASSERT_EQ_INT(VALID("\xf0\x80\x80\x80"), 0);
  RC_ASSERT_EQ_INT(VALID("\xf0\x8f\xbf\xbf"), 0);
  RC_ASSERT_EQ_INT(VALID("\xc0\xaf"), 0); /* the classic overlong '/' */
}

RC_TEST(surrogates) {
  RC_ASSERT_EQ_INT(VALID("\xed\xa0\x80"), 0);             /* U+D800 */
  RC_ASSERT_EQ_INT(VALID("\xed\xaf\xbf"), 0);             /* U+DBFF */
  RC_ASSERT_EQ_INT(VALID("\xed\xb0\x80"), 0);             /* U+DC00 */
  RC_ASSERT_EQ_INT(VALID("\xed\xbf\xbf"), 0);             /* U+DFFF */
  RC_ASSERT_EQ_INT(VALID("\xed\xa0\xbd\xed\xb8\x80"), 0); /* CESU-8 pair */
}

RC_TEST(above_max_code_point) {
  RC_ASSERT_EQ_INT(VALID("\xf4\x90\x80\x80"), 0); /* U+110000 */
  RC_ASSERT_EQ_INT(VALID("\xf4\xbf\xbf\xbf"), 0);
}

RC_TEST(invalid_lead_bytes) {
  for (unsigned b = 0xF5; b <= 0xFF; b++) {
    uint8_t s[4] = {(uint8_t)b, 0x80, 0x80, 0x80};
    RC_CHECK_EQ_INT(rc_utf8_valid(s, 1), 0);
    RC_CHECK_EQ_INT(rc_utf8_valid(s, 4), 0);
  }
}

RC_TEST(stray_continuation) {
  RC_ASSERT_EQ_INT(VALID("\x80"), 0);
  RC_ASSERT_EQ_INT(VALID("\xbf"), 0);
  RC_ASSERT_EQ_INT(VALID("a\x80z"), 0);
  RC_ASSERT_EQ_INT(VALID("\xc3\xa9\xa9"), 0); /* one continuation too many */
  RC_ASSERT_EQ_INT(VALID("\xe2\x82\xac\x80"), 0);
}

RC_TEST(missing_continuation) {
  RC_ASSERT_EQ_INT(VALID("\xc3z"), 0);
  RC_ASSERT_EQ_INT(VALID("\xe2\x82z"), 0);
  RC_ASSERT_EQ_INT(VALID("\xf0\x9f\x98z"), 0);
  RC_ASSERT_EQ_INT(VALID("\xe2\xc3\xa9"), 0);
}

RC_TEST(truncated_at_end) {
  RC_ASSERT_EQ_INT(VALID("abc\xc3"), 0);
  RC_ASSERT_EQ_INT(VALID("abc\xe2\x82"), 0);
  RC_ASSERT_EQ_INT(VALID("abc\xe2"), 0);
  RC_ASSERT_EQ_INT(VALID("abc\xf0\x9f\x98"), 0);
  RC_ASSERT_EQ_INT(VALID("abc\xf0\x9f"), 0);
  RC_ASSERT_EQ_INT(VALID("abc\xf0"), 0);
}

/* The validator must not look at bytes past n: a valid sequence cut by n is
 * invalid even though the following bytes would complete it. */
RC_TEST(length_is_respected) {
  static const uint8_t s[] = {'a', 0xe2, 0x82, 0xac};
  RC_ASSERT_EQ_INT(rc_utf8_valid(s, 4), 1);
  RC_ASSERT_EQ_INT(rc_utf8_valid(s, 3), 0);
  RC_ASSERT_EQ_INT(rc_utf8_valid(s, 2), 0);
  RC_ASSERT_EQ_INT(rc_utf8_valid(s, 1), 1);
}

/* Every offset 0..40 in a 48-byte ASCII run, so the bad byte lands in each
 * lane of the 8-byte word and in the byte-wise tail. */
RC_TEST(ascii_run_with_bad_byte_at_every_offset) {
  static const uint8_t bad[] = {0x80, 0xff, 0xc0, 0xf5};
  uint8_t buf[48];
  for (size_t k = 0; k < sizeof bad; k++) {
    for (size_t off = 0; off <= 40; off++) {
      memset(buf, 'x', sizeof buf);
      RC_ASSERT_EQ_INT(rc_utf8_valid(buf, sizeof buf), 1);
      buf[off] = bad[k];
      RC_CHECK_EQ_INT(rc_utf8_valid(buf, sizeof buf), 0);
      /* Also when the bad byte is the very last one. */
      RC_CHECK_EQ_INT(rc_utf8_valid(buf, off + 1), 0);
    }
  }
}

/* Multibyte characters at every offset of an ASCII run: the fast path must
 * hand over to the state machine and pick up again after it. */
RC_TEST(multibyte_at_every_offset) {
  uint8_t buf[64];
  for (size_t off = 0; off <= 40; off++) {
    memset(buf, 'y', sizeof buf);
    memcpy(buf + off, "\xf0\x9f\x98\x80", 4);
    RC_CHECK_EQ_INT(rc_utf8_valid(buf, sizeof buf), 1);
    /* A surrogate at the same place must still be caught. */
    memcpy(buf + off, "\xed\xa0\x80y", 4);
    RC_CHECK_EQ_INT(rc_utf8_valid(buf, sizeof buf), 0);
  }
}

RC_TEST(long_ascii_run) {
  static uint8_t buf[4099];
  memset(buf, 'q', sizeof buf);
  RC_ASSERT_EQ_INT(rc_utf8_valid(buf, sizeof buf), 1);
  buf[sizeof buf - 1] = 0xC3;
  RC_ASSERT_EQ_INT(rc_utf8_valid(buf, sizeof buf), 0);
}

RC_TEST_MAIN(RC_CASE(empty_is_valid), RC_CASE(valid_ascii_and_multibyte),
             RC_CASE(boundaries), RC_CASE(overlongs), RC_CASE(surrogates),
             RC_CASE(above_max_code_point), RC_CASE(invalid_lead_bytes),
             RC_CASE(stray_continuation), RC_CASE(missing_continuation),
             RC_CASE(truncated_at_end), RC_CASE(length_is_respected),
             RC_CASE(ascii_run_with_bad_byte_at_every_offset),
             RC_CASE(multibyte_at_every_offset), RC_CASE(long_ascii_run))
