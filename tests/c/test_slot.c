/* test_slot.c - the Redis Cluster key slot (csrc/proto/rc_slot.c) against
 * the cluster specification's vectors and its hash tag examples. The same
 * function is checked against a real cluster's CLUSTER KEYSLOT in
 * tests/test_cluster_support.py (through roomcast._core.key_slot). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "proto/rc_slot.h"
#include "support/rc_test.h"

#define SLOT(lit) rc_slot_of(lit, sizeof(lit) - 1)
#define CRC(lit) rc_slot_crc16(lit, sizeof(lit) - 1)

/* The bytes rc_slot_hashed picks in lit, as a pointer and a length. */
#define HASHED(lit, p, n)                                                      \
  do {                                                                         \
    size_t off_;                                                               \
    (n) = rc_slot_hashed(lit, sizeof(lit) - 1, &off_);                         \
    (p) = (const char *)(lit) + off_;                                          \
  } while (0)

/* A bit at a time, straight from the definition: what the table must
 * agree with. */
static uint16_t crc16_bitwise(const uint8_t *p, size_t len) {
  unsigned crc = 0;
  for (size_t i = 0; i < len; i++) {
    crc ^= (unsigned)p[i] << 8;
    for (int j = 0; j < 8; j++)
      crc = crc & 0x8000u ? ((crc << 1) ^ 0x1021u) & 0xffffu
                          : (crc << 1) & 0xffffu;
  }
  return (uint16_t)crc;
}

RC_TEST(crc16_check_value_of_the_spec) {
  RC_ASSERT_EQ_UINT(CRC("123456789"), 0x31C3);
  RC_ASSERT_EQ_UINT(CRC(""), 0);
}

RC_TEST(crc16_table_agrees_with_the_bitwise_definition) {
  uint8_t buf[512];
  uint32_t x = 12345;
  for (size_t i = 0; i < sizeof buf; i++) {
    x = x * 1103515245u + 12345u; /* any bytes will do */
    buf[i] = (uint8_t)(x >> 16);
  }
  for (size_t n = 0; n <= sizeof buf; n += 7)
    RC_ASSERT_EQ_UINT(rc_slot_crc16(buf, n), crc16_bitwise(buf, n));
  for (unsigned b = 0; b < 256; b++) {
    uint8_t one = (uint8_t)b;
    RC_ASSERT_EQ_UINT(rc_slot_crc16(&one, 1), crc16_bitwise(&one, 1));
  }
}

RC_TEST(slot_of_plain_keys) {
  RC_ASSERT_EQ_UINT(SLOT("foo"), 12182);
  RC_ASSERT_EQ_UINT(SLOT("somekey"), 11058);
  RC_ASSERT_EQ_UINT(SLOT("123456789"), 0x31C3 & 0x3FFF);
  RC_ASSERT_EQ_UINT(rc_slot_of("", 0), 0);
}

RC_TEST(keys_with_one_tag_share_its_slot) {
  RC_ASSERT_EQ_UINT(SLOT("{user1000}.following"), SLOT("{user1000}.followers"));
  RC_ASSERT_EQ_UINT(SLOT("{user1000}.following"), SLOT("user1000"));
  RC_ASSERT_EQ_UINT(SLOT("foo{hash_tag}"), 2515);
  RC_ASSERT_EQ_UINT(SLOT("bar{hash_tag}"), 2515);
}

RC_TEST(an_empty_tag_hashes_the_whole_key) {
  const char *p;
  size_t n;
  HASHED("foo{}{bar}", p, n);
  RC_ASSERT_EQ_BYTES(p, n, "foo{}{bar}");
  RC_ASSERT_EQ_UINT(SLOT("foo{}{bar}"),
                    crc16_bitwise((const uint8_t *)"foo{}{bar}", 10) & 0x3FFF);
}

RC_TEST(the_tag_ends_at_the_first_closing_brace) {
  const char *p;
  size_t n;
  HASHED("foo{{bar}}zap", p, n);
  RC_ASSERT_EQ_BYTES(p, n, "{bar");
  RC_ASSERT_EQ_UINT(SLOT("foo{{bar}}zap"), SLOT("{bar"));
}

RC_TEST(only_the_first_tag_counts) {
  const char *p;
  size_t n;
  HASHED("foo{bar}{zap}", p, n);
  RC_ASSERT_EQ_BYTES(p, n, "bar");
  RC_ASSERT_EQ_UINT(SLOT("foo{bar}{zap}"), SLOT("bar"));
}

RC_TEST(braces_that_make_no_tag_hash_the_whole_key) {
  /* An unclosed '{', a '}' before any '{', a '{' at the very end. */
  static const char *keys[] = {"foo{bar", "}foo{", "foo}bar{", "{", "}", "a{"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    size_t len = strlen(keys[i]), off;
    RC_ASSERT_EQ_UINT(rc_slot_hashed(keys[i], len, &off), len);
    RC_ASSERT_EQ_UINT(off, 0);
    RC_ASSERT_EQ_UINT(rc_slot_of(keys[i], len),
                      crc16_bitwise((const uint8_t *)keys[i], len) & 0x3FFF);
  }
}

RC_TEST(the_tag_may_be_one_byte_or_a_nul) {
  const char *p;
  size_t n;
  HASHED("a{b}c", p, n);
  RC_ASSERT_EQ_BYTES(p, n, "b");
  HASHED("x{\0}y", p, n);
  RC_ASSERT_EQ_BYTES(p, n, "\0");
  RC_ASSERT_EQ_UINT(SLOT("x{\0}y"), SLOT("\0"));
}

RC_TEST(every_slot_is_below_the_count) {
  char key[8];
  for (unsigned i = 0; i < 70000; i += 3) {
    int n = snprintf(key, sizeof key, "k%u", i);
    RC_ASSERT(rc_slot_of(key, (size_t)n) < RC_SLOT_COUNT);
  }
}

/* --- a room's tag ------------------------------------------------------- */

RC_TEST(a_tag_is_braces_around_four_letters_of_the_crc) {
  char tag[RC_SLOT_TAG_LEN];
  /* CRC16("123456789") = 0x31C3: 3, 1, C, 3 -> 'C', 'A', 'L', 'C'. */
  uint16_t slot = rc_slot_tag("123456789", 9, tag);
  RC_ASSERT_EQ_BYTES(tag, sizeof tag, "{CALC}");
  RC_ASSERT_EQ_UINT(slot, SLOT("{CALC}"));
  RC_ASSERT_EQ_UINT(slot, SLOT("CALC"));
}

RC_TEST(names_after_a_tag_share_its_slot_whatever_the_room_holds) {
  /* Rooms whose names hold braces: the tag alone decides. */
  static const char *channels[] = {"rc|lobby", "rc|{x}", "rc|}{", "{}|{"};
  for (size_t i = 0; i < sizeof channels / sizeof channels[0]; i++) {
    char name[64];
    size_t n = strlen(channels[i]);
    uint16_t slot = rc_slot_tag(channels[i], n, name);
    memcpy(name + RC_SLOT_TAG_LEN, channels[i], n);
    RC_ASSERT_EQ_UINT(rc_slot_of(name, RC_SLOT_TAG_LEN + n), slot);
    memcpy(name + RC_SLOT_TAG_LEN + n, ":presence", 9);
    RC_ASSERT_EQ_UINT(rc_slot_of(name, RC_SLOT_TAG_LEN + n + 9), slot);
  }
}

RC_TEST(tags_fall_on_every_slot_four_times) {
  /* The 65536 two-byte channels have the 65536 CRCs (CRC16 of two bytes
   * is a bijection), so they make every tag once. */
  static uint8_t seen_crc[65536 / 8];
  static uint8_t per_slot[RC_SLOT_COUNT];
  memset(seen_crc, 0, sizeof seen_crc);
  memset(per_slot, 0, sizeof per_slot);
  for (unsigned v = 0; v < 65536; v++) {
    uint8_t ch[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    unsigned crc = rc_slot_crc16(ch, 2);
    RC_ASSERT(!(seen_crc[crc / 8] & (1u << (crc % 8))));
    seen_crc[crc / 8] |= (uint8_t)(1u << (crc % 8));
    char tag[RC_SLOT_TAG_LEN];
    per_slot[rc_slot_tag(ch, 2, tag)]++;
    for (int i = 1; i < 5; i++)
      RC_ASSERT(tag[i] >= '@' && tag[i] <= 'O');
  }
  for (unsigned s = 0; s < RC_SLOT_COUNT; s++)
    RC_ASSERT_EQ_UINT(per_slot[s], 4);
}

RC_TEST_MAIN(RC_CASE(crc16_check_value_of_the_spec),
             RC_CASE(crc16_table_agrees_with_the_bitwise_definition),
             RC_CASE(slot_of_plain_keys),
             RC_CASE(keys_with_one_tag_share_its_slot),
             RC_CASE(an_empty_tag_hashes_the_whole_key),
             RC_CASE(the_tag_ends_at_the_first_closing_brace),
             RC_CASE(only_the_first_tag_counts),
             RC_CASE(braces_that_make_no_tag_hash_the_whole_key),
             RC_CASE(the_tag_may_be_one_byte_or_a_nul),
             RC_CASE(every_slot_is_below_the_count),
             RC_CASE(a_tag_is_braces_around_four_letters_of_the_crc),
             RC_CASE(names_after_a_tag_share_its_slot_whatever_the_room_holds),
             RC_CASE(tags_fall_on_every_slot_four_times))
