/* test_bpwire.c - the backplane's wire (csrc/proto/rc_bpwire.c) against
 * exact bytes: channel heads and sentinels, envelopes, RESP commands, the
 * encoding of replies; and the rejection of malformed messages and of
 * replies a subscriber must never accept. No loop, no socket, no Redis:
 * replies are made by hiredis's reader from the bytes Redis would send. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "proto/rc_bpwire.h"
#include "rc_core.h"
#include "support/rc_test.h"

/* The reply Redis's bytes make (NULL when they are not one whole reply). */
static redisReply *reply_of(const char *bytes, size_t n) {
  redisReader *r = redisReaderCreate();
  void *reply = NULL;
  if (r == NULL || redisReaderFeed(r, bytes, n) != REDIS_OK ||
      redisReaderGetReply(r, &reply) != REDIS_OK)
    reply = NULL;
  redisReaderFree(r);
  return reply;
}
#define REPLY(lit) reply_of(lit, sizeof(lit) - 1)

/* --- names ---------------------------------------------------------------- */

RC_TEST(chan_head_escapes_backslash_and_bar) {
  char out[32];
  size_t n = rc_bpwire_chan_head("a|b\\c:", 6, out);
  RC_ASSERT_EQ_BYTES(out, n, "a\\|b\\\\c:|");
  RC_ASSERT_EQ_UINT(rc_bpwire_chan_head("a|b\\c:", 6, NULL), n);
}

RC_TEST(chan_head_of_the_empty_prefix_is_a_bar) {
  char out[4];
  size_t n = rc_bpwire_chan_head("", 0, out);
  RC_ASSERT_EQ_BYTES(out, n, "|");
}

RC_TEST(nested_prefixes_never_share_a_channel) {
  /* "a:" + room "b:|x" and "a:b:" + room "x" would be the same bytes
   * without the escaping. */
  char h1[16], h2[16];
  size_t n1 = rc_bpwire_chan_head("a:", 2, h1);
  size_t n2 = rc_bpwire_chan_head("a:b:", 4, h2);
  const char *name;
  size_t len;
  RC_ASSERT(rc_bpwire_chan_name(h1, n1, "a:b:|x", 6, &name, &len) == 0);
  RC_ASSERT(rc_bpwire_chan_name(h2, n2, "a:b:|x", 6, &name, &len) == 1);
  RC_ASSERT_EQ_BYTES(name, len, "x");
}

RC_TEST(sentinel_is_prefix_nul_server_and_the_id) {
  char head[32], out[64];
  size_t hl = rc_bpwire_chan_head("rc|", 3, head);
  size_t n = rc_bpwire_sentinel(head, hl, UINT64_C(0x0123456789abcdef), out);
  RC_ASSERT_EQ_UINT(n, RC_BPWIRE_SENTINEL_LEN(hl));
  RC_ASSERT_EQ_BYTES(out, n, "rc\\|\0server:0123456789abcdef");
}

/* --- the envelope --------------------------------------------------------- */

RC_TEST(envelope_for_one_room) {
  rc_bpwire_room room = {"lobby", 5, NULL};
  uint8_t out[64];
  size_t n = rc_bpwire_envelope_size(&room, 1, 2);
  RC_ASSERT_EQ_UINT(n, 22);
  RC_ASSERT_EQ_UINT(rc_bpwire_envelope(out, 1, 1, 0x0203, &room, 1, "hi", 2),
                    n);
  RC_ASSERT_EQ_BYTES(out, n,
                     "\0rc\x11"
                     "\0\0\0\0\0\0\0\x01"
                     "\0\0\0\0\0\0\x02\x03"
                     "hi");
}

RC_TEST(envelope_for_several_rooms_lists_them) {
  rc_bpwire_room rooms[2] = {{"a", 1, NULL}, {"bc", 2, NULL}};
  uint8_t out[64];
  size_t n = rc_bpwire_envelope_size(rooms, 2, 1);
  RC_ASSERT_EQ_UINT(n, 20 + 2 + 3 + 4 + 1);
  RC_ASSERT_EQ_UINT(rc_bpwire_envelope(out, 0, UINT64_C(0xff00000000000001), 9,
                                       rooms, 2, "z", 1),
                    n);
  RC_ASSERT_EQ_BYTES(out, n,
                     "\0rc\x12"
                     "\xff\0\0\0\0\0\0\x01"
                     "\0\0\0\0\0\0\0\x09"
                     "\0\x02"
                     "\0\x01"
                     "a"
                     "\0\x02"
                     "bc"
                     "z");
}

RC_TEST(parse_reads_what_envelope_wrote) {
  rc_bpwire_room rooms[2] = {{"a", 1, NULL}, {"bc", 2, NULL}};
  uint8_t buf[64];
  size_t n = rc_bpwire_envelope(buf, 1, 7, 8, rooms, 2, "hé", 3);
  rc_bpwire_msg m;
  RC_ASSERT_EQ_INT(rc_bpwire_parse(buf, n, 3, &m), RC_BPWIRE_OK);
  RC_ASSERT(m.enveloped && m.is_text && m.multi);
  RC_ASSERT_EQ_UINT(m.from, 7);
  RC_ASSERT_EQ_UINT(m.seq, 8);
  RC_ASSERT_EQ_UINT(m.nrooms, 2);
  RC_ASSERT_EQ_BYTES(m.payload, m.len, "hé");
  const char *name;
  size_t len;
  const uint8_t *q = rc_bpwire_next_room(m.rooms, &name, &len);
  RC_ASSERT_EQ_BYTES(name, len, "a");
  (void)rc_bpwire_next_room(q, &name, &len);
  RC_ASSERT_EQ_BYTES(name, len, "bc");
}

RC_TEST(a_foreign_message_is_its_own_payload) {
  rc_bpwire_msg m;
  RC_ASSERT_EQ_INT(rc_bpwire_parse((const uint8_t *)"hello", 5, 5, &m),
                   RC_BPWIRE_OK);
  RC_ASSERT(!m.enveloped && m.is_text && !m.multi);
  RC_ASSERT_EQ_BYTES(m.payload, m.len, "hello");
  RC_ASSERT_EQ_INT(rc_bpwire_parse((const uint8_t *)"\xff\x01", 2, 5, &m),
                   RC_BPWIRE_OK);
  RC_ASSERT(!m.enveloped && !m.is_text);
  /* "\0rc" but shorter than a header: another program's bytes (ASCII, so
   * text). */
  RC_ASSERT_EQ_INT(rc_bpwire_parse((const uint8_t *)"\0rc\x10", 4, 5, &m),
                   RC_BPWIRE_OK);
  RC_ASSERT(!m.enveloped && m.is_text && m.len == 4);
}

RC_TEST(parse_rejects_what_it_must) {
  uint8_t buf[64];
  rc_bpwire_room room = {"r", 1, NULL};
  rc_bpwire_msg m;
  /* Over max_payload, with or without an envelope. */
  size_t n = rc_bpwire_envelope(buf, 0, 5, 6, &room, 1, "abcd", 4);
  RC_ASSERT_EQ_INT(rc_bpwire_parse(buf, n, 3, &m), RC_BPWIRE_MALFORMED);
  RC_ASSERT(m.enveloped && m.from == 5 && m.seq == 6);
  RC_ASSERT_EQ_INT(rc_bpwire_parse((const uint8_t *)"abcd", 4, 3, &m),
                   RC_BPWIRE_MALFORMED);
  RC_ASSERT(!m.enveloped);
  /* Text that is not UTF-8. */
  n = rc_bpwire_envelope(buf, 1, 5, 6, &room, 1, "\xc3", 1);
  RC_ASSERT_EQ_INT(rc_bpwire_parse(buf, n, 100, &m), RC_BPWIRE_MALFORMED);
  /* Another version: nothing else read. */
  buf[3] = 0x31;
  RC_ASSERT_EQ_INT(rc_bpwire_parse(buf, n, 100, &m), RC_BPWIRE_OTHER_VERSION);
  RC_ASSERT(!m.enveloped && m.from == 0);
  /* A list of rooms cut short: its count, then a name's length. */
  rc_bpwire_room two[2] = {{"ab", 2, NULL}, {"c", 1, NULL}};
  n = rc_bpwire_envelope(buf, 0, 5, 6, two, 2, "", 0);
  RC_ASSERT_EQ_UINT(n, 20 + 2 + 4 + 3);
  for (size_t cut = 20; cut < n; cut++) {
    int v = rc_bpwire_parse(buf, cut, 100, &m);
    RC_CHECK_EQ_INT(v, RC_BPWIRE_MALFORMED);
  }
  RC_ASSERT_EQ_INT(rc_bpwire_parse(buf, n, 100, &m), RC_BPWIRE_OK);
  RC_ASSERT_EQ_UINT(m.len, 0);
}

/* A version-2 message as python/roomcast/_redis_history.py makes it and
 * Redis's script fills it: header, [excluded connection], epoch, offset,
 * payload. */
static size_t history_message(uint8_t *out, int exclude, const char *offset,
                              const char *payload) {
  uint8_t flags = RC_BPWIRE_VERSION_HISTORY | RC_BPWIRE_F_TEXT |
                  RC_BPWIRE_F_HISTORY | (exclude ? RC_BPWIRE_F_EXCLUDE : 0);
  memcpy(out, "\0rc", 3);
  out[3] = flags;
  memset(out + 4, 0, 16);
  out[11] = 9; /* from = 9, seq = 0 */
  size_t n = 20;
  if (exclude) {
    memset(out + n, 0, 8);
    out[n + 7] = 42;
    n += 8;
  }
  memcpy(out + n, "0123456789abcdef", 16);
  n += 16;
  memcpy(out + n, offset, 20);
  n += 20;
  memcpy(out + n, payload, strlen(payload));
  return n + strlen(payload);
}

RC_TEST(a_history_message_carries_its_position) {
  uint8_t buf[128];
  rc_bpwire_msg m;
  size_t n = history_message(buf, 0, "00000000000000000042", "hi");
  RC_ASSERT_EQ_INT(rc_bpwire_parse(buf, n, 2, &m), RC_BPWIRE_OK);
  RC_ASSERT(m.enveloped && m.history && m.is_text && !m.multi);
  RC_ASSERT_EQ_UINT(m.from, 9);
  RC_ASSERT_EQ_UINT(m.offset, 42);
  RC_ASSERT_EQ_UINT(m.exclude, 0);
  RC_ASSERT_EQ_BYTES(m.epoch, 16, "0123456789abcdef");
  RC_ASSERT_EQ_BYTES(m.payload, m.len, "hi");
  n = history_message(buf, 1, "18446744073709551615", "");
  RC_ASSERT_EQ_INT(rc_bpwire_parse(buf, n, 2, &m), RC_BPWIRE_OK);
  RC_ASSERT_EQ_UINT(m.exclude, 42);
  RC_ASSERT_EQ_UINT(m.offset, UINT64_MAX);
  RC_ASSERT_EQ_UINT(m.len, 0);
  /* A version-1 message has no position. */
  rc_bpwire_room room = {"r", 1, NULL};
  n = rc_bpwire_envelope(buf, 1, 5, 6, &room, 1, "x", 1);
  RC_ASSERT_EQ_INT(rc_bpwire_parse(buf, n, 2, &m), RC_BPWIRE_OK);
  RC_ASSERT(!m.history && m.offset == 0);
}

RC_TEST(a_history_message_cut_short_or_not_in_digits_is_malformed) {
  uint8_t buf[128];
  rc_bpwire_msg m;
  size_t n = history_message(buf, 1, "00000000000000000007", "");
  for (size_t cut = 20; cut < n; cut++)
    RC_CHECK_EQ_INT(rc_bpwire_parse(buf, cut, 100, &m), RC_BPWIRE_MALFORMED);
  const char *bad[] = {"0000000000000000000x", "18446744073709551616",
                       "99999999999999999999", " 0000000000000000001"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    n = history_message(buf, 0, bad[i], "p");
    RC_CHECK_EQ_INT(rc_bpwire_parse(buf, n, 100, &m), RC_BPWIRE_MALFORMED);
  }
  /* Version 2 without the history flag, or listing rooms. */
  n = history_message(buf, 0, "00000000000000000001", "p");
  buf[3] &= (uint8_t)~RC_BPWIRE_F_HISTORY;
  RC_CHECK_EQ_INT(rc_bpwire_parse(buf, n, 100, &m), RC_BPWIRE_MALFORMED);
  buf[3] |= RC_BPWIRE_F_HISTORY | RC_BPWIRE_F_MULTI;
  RC_CHECK_EQ_INT(rc_bpwire_parse(buf, n, 100, &m), RC_BPWIRE_MALFORMED);
}

/* --- commands ------------------------------------------------------------- */

RC_TEST(command_in_resp) {
  size_t len;
  const char *argv[3] = {"SET", "k", ""};
  char *cmd = rc_bpwire_command(&len, 3, argv, NULL);
  RC_ASSERT(cmd != NULL);
  static const char want[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n";
  RC_CHECK(len == sizeof(want) - 1 && memcmp(cmd, want, len) == 0);
  free(cmd);
}

RC_TEST(command_matches_hiredis_for_binary_and_long_arguments) {
  static char big[12345];
  memset(big, 'x', sizeof(big));
  big[7] = '\0';
  big[8] = '\r';
  const char *argv[3] = {"PUBLISH", "a\0b", big};
  size_t lens[3] = {7, 3, sizeof(big)};
  size_t len;
  char *ours = rc_bpwire_command(&len, 3, argv, lens);
  char *theirs = NULL;
  int tlen = redisFormatCommandArgv(&theirs, 3, argv, lens);
  RC_CHECK(ours != NULL && tlen > 0 && len == (size_t)tlen &&
           memcmp(ours, theirs, len) == 0);
  free(ours);
  free(theirs);
}

RC_TEST(subscribe_names_head_and_room) {
  rc_bpwire_room rooms[2] = {{"a", 1, NULL}, {"bb", 2, NULL}};
  size_t len;
  char *cmd = rc_bpwire_subscribe(&len, "SUBSCRIBE", "p|", 2, rooms, 2);
  RC_ASSERT(cmd != NULL);
  static const char want[] =
      "*3\r\n$9\r\nSUBSCRIBE\r\n$3\r\np|a\r\n$4\r\np|bb\r\n";
  RC_CHECK(len == sizeof(want) - 1 && memcmp(cmd, want, len) == 0);
  free(cmd);
}

RC_TEST(publish_on_the_channel_of_a_room) {
  rc_bpwire_room room = {"lobby", 5, NULL};
  size_t len;
  char *cmd = rc_bpwire_publish(&len, "PUBLISH", "x\\||", 4, &room,
                                (const uint8_t *)"\0rc", 3);
  RC_ASSERT(cmd != NULL);
  static const char want[] =
      "*3\r\n$7\r\nPUBLISH\r\n$9\r\nx\\||lobby\r\n$3\r\n\0rc\r\n";
  RC_CHECK(len == sizeof(want) - 1 && memcmp(cmd, want, len) == 0);
  free(cmd);
}

RC_TEST(a_clusters_channels_start_with_the_rooms_tag) {
  rc_bpwire_room rooms[2] = {{"a", 1, "{@ABC}"}, {"bb", 2, "{ONML}"}};
  size_t len;
  char *cmd = rc_bpwire_subscribe(&len, "SSUBSCRIBE", "p|", 2, rooms, 2);
  RC_ASSERT(cmd != NULL);
  static const char sub[] = "*3\r\n$10\r\nSSUBSCRIBE\r\n$9\r\n{@ABC}p|a\r\n"
                            "$10\r\n{ONML}p|bb\r\n";
  RC_CHECK(len == sizeof(sub) - 1 && memcmp(cmd, sub, len) == 0);
  free(cmd);
  cmd = rc_bpwire_publish(&len, "SPUBLISH", "p|", 2, &rooms[1],
                          (const uint8_t *)"m", 1);
  RC_ASSERT(cmd != NULL);
  static const char pub[] =
      "*3\r\n$8\r\nSPUBLISH\r\n$10\r\n{ONML}p|bb\r\n$1\r\nm\r\n";
  RC_CHECK(len == sizeof(pub) - 1 && memcmp(cmd, pub, len) == 0);
  free(cmd);
}

RC_TEST(forbidden_commands_in_any_case) {
  RC_CHECK(rc_bpwire_forbidden("WAITAOF", 7));
  RC_CHECK(rc_bpwire_forbidden("debug", 5));
  RC_CHECK(rc_bpwire_forbidden("Subscribe", 9));
  RC_CHECK(rc_bpwire_forbidden("MULTI", 5));
  RC_CHECK(!rc_bpwire_forbidden("GET", 3));
  RC_CHECK(!rc_bpwire_forbidden("SUB", 3));         /* a prefix of one */
  RC_CHECK(!rc_bpwire_forbidden("SUBSCRIBEX", 10)); /* longer than one */
  RC_CHECK(rc_bpwire_forbidden("WAIT", 4));
}

/* --- replies -------------------------------------------------------------- */

RC_TEST(pushes_a_subscriber_accepts) {
  rc_bpwire_push p;
  char why[RC_BPWIRE_WHY_MAX];
  redisReply *r = REPLY("*3\r\n$7\r\nmessage\r\n$3\r\np|a\r\n$2\r\nhi\r\n");
  RC_ASSERT(r != NULL);
  RC_CHECK_EQ_INT(rc_bpwire_push_parse(r, &p, why), RC_BPWIRE_MESSAGE);
  RC_CHECK(p.channel_len == 3 && memcmp(p.channel, "p|a", 3) == 0);
  RC_CHECK(p.len == 2 && memcmp(p.payload, "hi", 2) == 0);
  freeReplyObject(r);
  r = REPLY("*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n:1\r\n");
  RC_ASSERT(r != NULL);
  RC_CHECK_EQ_INT(rc_bpwire_push_parse(r, &p, why), RC_BPWIRE_SUBSCRIBED);
  freeReplyObject(r);
  r = REPLY("*3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n");
  RC_ASSERT(r != NULL);
  RC_CHECK_EQ_INT(rc_bpwire_push_parse(r, &p, why), RC_BPWIRE_UNSUBSCRIBED);
  freeReplyObject(r);
  /* A cluster's sharded pub/sub. */
  r = REPLY("*3\r\n$8\r\nsmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n");
  RC_ASSERT(r != NULL);
  RC_CHECK_EQ_INT(rc_bpwire_push_parse(r, &p, why), RC_BPWIRE_MESSAGE);
  RC_CHECK(p.len == 2 && memcmp(p.payload, "hi", 2) == 0);
  freeReplyObject(r);
  r = REPLY("*3\r\n$10\r\nssubscribe\r\n$1\r\nc\r\n:1\r\n");
  RC_ASSERT(r != NULL);
  RC_CHECK_EQ_INT(rc_bpwire_push_parse(r, &p, why), RC_BPWIRE_SUBSCRIBED);
  freeReplyObject(r);
  r = REPLY("*3\r\n$12\r\nsunsubscribe\r\n$1\r\nc\r\n:0\r\n");
  RC_ASSERT(r != NULL);
  RC_CHECK_EQ_INT(rc_bpwire_push_parse(r, &p, why), RC_BPWIRE_UNSUBSCRIBED);
  freeReplyObject(r);
}

typedef struct ranges {
  unsigned n, first[4], last[4];
  int port[4];
  char host[4][16];
} ranges;

static int take_range(void *arg, unsigned first, unsigned last,
                      const char *host, size_t host_len, int port) {
  ranges *g = arg;
  if (g->n == 4 || host_len >= 16)
    return 7;
  g->first[g->n] = first;
  g->last[g->n] = last;
  g->port[g->n] = port;
  memcpy(g->host[g->n], host, host_len);
  g->host[g->n][host_len] = '\0';
  g->n++;
  return 0;
}

RC_TEST(a_clusters_map_is_read_from_cluster_slots) {
  char why[RC_BPWIRE_WHY_MAX];
  ranges g = {0};
  /* Two ranges, the first with a replica, the second's host unknown. */
  redisReply *r = REPLY("*2\r\n"
                        "*4\r\n:0\r\n:8191\r\n"
                        "*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n"
                        "*2\r\n$9\r\n127.0.0.1\r\n:7003\r\n"
                        "*3\r\n:8192\r\n:16383\r\n"
                        "*2\r\n$0\r\n\r\n:7001\r\n");
  RC_ASSERT(r != NULL);
  RC_CHECK_EQ_INT(rc_bpwire_slots_parse(r, take_range, &g, why), 0);
  RC_CHECK(g.n == 2 && g.first[0] == 0 && g.last[0] == 8191 &&
           g.port[0] == 7000 && strcmp(g.host[0], "127.0.0.1") == 0);
  RC_CHECK(g.first[1] == 8192 && g.last[1] == 16383 && g.port[1] == 7001 &&
           g.host[1][0] == '\0');
  freeReplyObject(r);
  /* What the callback returns stops it. */
  r = REPLY("*5\r\n" /* five ranges: the callback takes four */
            "*3\r\n:0\r\n:0\r\n*2\r\n$1\r\na\r\n:1\r\n"
            "*3\r\n:1\r\n:1\r\n*2\r\n$1\r\na\r\n:1\r\n"
            "*3\r\n:2\r\n:2\r\n*2\r\n$1\r\na\r\n:1\r\n"
            "*3\r\n:3\r\n:3\r\n*2\r\n$1\r\na\r\n:1\r\n"
            "*3\r\n:4\r\n:4\r\n*2\r\n$1\r\na\r\n:1\r\n");
  RC_ASSERT(r != NULL);
  g.n = 0;
  RC_CHECK_EQ_INT(rc_bpwire_slots_parse(r, take_range, &g, why), 7);
  freeReplyObject(r);
}

static int bad_map(const char *bytes, size_t n, const char *want_why) {
  char why[RC_BPWIRE_WHY_MAX];
  ranges g = {0};
  redisReply *r = reply_of(bytes, n);
  if (r == NULL)
    return 0;
  int ok = rc_bpwire_slots_parse(r, take_range, &g, why) == -1 &&
           strcmp(why, want_why) == 0;
  freeReplyObject(r);
  return ok;
}
#define BAD_MAP(lit, why) RC_CHECK(bad_map(lit, sizeof(lit) - 1, why))

RC_TEST(a_clusters_map_of_another_shape_is_refused) {
  static const char first[] = "CLUSTER SLOTS: range 1 is malformed";
  BAD_MAP("-ERR This instance has cluster support disabled\r\n",
          "CLUSTER SLOTS: ERR This instance has cluster support disabled");
  BAD_MAP(":0\r\n", "CLUSTER SLOTS: not an array");
  BAD_MAP("*1\r\n:1\r\n", first);
  BAD_MAP("*1\r\n*2\r\n:0\r\n:1\r\n", first); /* no node */
  BAD_MAP("*1\r\n*3\r\n:5\r\n:4\r\n*2\r\n$1\r\na\r\n:1\r\n", first);
  BAD_MAP("*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\na\r\n:1\r\n", first);
  BAD_MAP("*1\r\n*3\r\n:-1\r\n:0\r\n*2\r\n$1\r\na\r\n:1\r\n", first);
  BAD_MAP("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\na\r\n:0\r\n", first);
  BAD_MAP("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\na\r\n:65536\r\n", first);
  BAD_MAP("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n:1\r\n:1\r\n", first);
  BAD_MAP("*1\r\n*3\r\n:0\r\n:1\r\n*1\r\n$1\r\na\r\n", first);
  BAD_MAP("*1\r\n*3\r\n:0\r\n:1\r\n$1\r\na\r\n", first);
  BAD_MAP("*2\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\na\r\n:1\r\n:9\r\n",
          "CLUSTER SLOTS: range 2 is malformed");
}

static int bad_push(const char *bytes, size_t n, const char *want_why) {
  rc_bpwire_push p;
  char why[RC_BPWIRE_WHY_MAX];
  redisReply *r = reply_of(bytes, n);
  if (r == NULL)
    return 0;
  int ok = rc_bpwire_push_parse(r, &p, why) == RC_BPWIRE_BAD &&
           strcmp(why, want_why) == 0;
  freeReplyObject(r);
  return ok;
}
#define BAD_PUSH(lit, why) RC_CHECK(bad_push(lit, sizeof(lit) - 1, why))

RC_TEST(pushes_a_subscriber_refuses) {
  static const char shape[] =
      "Redis sent an unexpected reply to the subscriber";
  static const char push[] = "Redis sent an unexpected push to the subscriber";
  BAD_PUSH("-ERR no\r\n", "Redis: ERR no");
  BAD_PUSH("+OK\r\n", shape);
  BAD_PUSH(":3\r\n", shape);
  BAD_PUSH("*2\r\n$7\r\nmessage\r\n$1\r\nc\r\n", shape);
  BAD_PUSH("*3\r\n:1\r\n$1\r\nc\r\n$1\r\nx\r\n", shape);
  BAD_PUSH("*3\r\n$7\r\nmessage\r\n:1\r\n$1\r\nx\r\n", shape);
  BAD_PUSH("*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n:1\r\n", push);
  BAD_PUSH("*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n$1\r\nx\r\n", push);
  BAD_PUSH("*3\r\n$8\r\npmessage\r\n$1\r\nc\r\n$1\r\nx\r\n", push);
  BAD_PUSH("*3\r\n$9\r\nssmessage\r\n$1\r\nc\r\n$1\r\nx\r\n", push);
  BAD_PUSH("*3\r\n$1\r\ns\r\n$1\r\nc\r\n$1\r\nx\r\n", push);
  BAD_PUSH("*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n*0\r\n", push);
}

RC_TEST(error_replies_are_named_and_cut_at_120_bytes) {
  char why[RC_BPWIRE_WHY_MAX];
  redisReply *r = REPLY("+OK\r\n");
  RC_ASSERT(r != NULL);
  RC_CHECK(rc_bpwire_error(r, "AUTH", why) == 0);
  freeReplyObject(r);
  r = REPLY("-WRONGPASS invalid\r\n");
  RC_ASSERT(r != NULL);
  RC_CHECK(rc_bpwire_error(r, "AUTH", why) == 1);
  RC_CHECK(strcmp(why, "AUTH: WRONGPASS invalid") == 0);
  freeReplyObject(r);
  char long_error[300] = "-";
  memset(long_error + 1, 'e', 200);
  memcpy(long_error + 201, "\r\n", 3);
  r = reply_of(long_error, 203);
  RC_ASSERT(r != NULL);
  RC_CHECK(rc_bpwire_error(r, "PING", why) == 1);
  RC_CHECK(strlen(why) == 6 + 120);
  freeReplyObject(r);
}

RC_TEST(replies_encode_for_the_embedder) {
  redisReply *r = REPLY("*4\r\n:-5\r\n$-1\r\n$2\r\nab\r\n+OK\r\n");
  RC_ASSERT(r != NULL);
  char want[64], *w = want;
  uint32_t four = 4, two = 2;
  int64_t minus5 = -5;
  *w++ = RC_REPLY_ARRAY;
  memcpy(w, &four, 4), w += 4;
  *w++ = RC_REPLY_INTEGER;
  memcpy(w, &minus5, 8), w += 8;
  *w++ = RC_REPLY_NIL;
  *w++ = RC_REPLY_STRING;
  memcpy(w, &two, 4), w += 4;
  memcpy(w, "ab", 2), w += 2;
  *w++ = RC_REPLY_STATUS;
  memcpy(w, &two, 4), w += 4;
  memcpy(w, "OK", 2), w += 2;
  size_t n = rc_bpwire_reply_size(r);
  RC_CHECK_EQ_INT((int)n, (int)(w - want));
  char out[64];
  if (n <= sizeof(out)) {
    char *end = rc_bpwire_reply_put(r, out);
    RC_CHECK((size_t)(end - out) == n && memcmp(out, want, n) == 0);
  }
  freeReplyObject(r);
  char *e = rc_bpwire_error_put(out, "gone", 4);
  RC_CHECK(e - out == 9 && out[0] == RC_REPLY_ERROR &&
           memcmp(out + 5, "gone", 4) == 0);
}

RC_TEST_MAIN(RC_CASE(chan_head_escapes_backslash_and_bar),
             RC_CASE(a_history_message_carries_its_position),
             RC_CASE(a_history_message_cut_short_or_not_in_digits_is_malformed),
             RC_CASE(chan_head_of_the_empty_prefix_is_a_bar),
             RC_CASE(nested_prefixes_never_share_a_channel),
             RC_CASE(sentinel_is_prefix_nul_server_and_the_id),
             RC_CASE(envelope_for_one_room),
             RC_CASE(envelope_for_several_rooms_lists_them),
             RC_CASE(parse_reads_what_envelope_wrote),
             RC_CASE(a_foreign_message_is_its_own_payload),
             RC_CASE(parse_rejects_what_it_must), RC_CASE(command_in_resp),
             RC_CASE(command_matches_hiredis_for_binary_and_long_arguments),
             RC_CASE(subscribe_names_head_and_room),
             RC_CASE(publish_on_the_channel_of_a_room),
             RC_CASE(a_clusters_channels_start_with_the_rooms_tag),
             RC_CASE(a_clusters_map_is_read_from_cluster_slots),
             RC_CASE(a_clusters_map_of_another_shape_is_refused),
             RC_CASE(forbidden_commands_in_any_case),
             RC_CASE(pushes_a_subscriber_accepts),
             RC_CASE(pushes_a_subscriber_refuses),
             RC_CASE(error_replies_are_named_and_cut_at_120_bytes),
             RC_CASE(replies_encode_for_the_embedder))
