/* fuzz_bpwire.c - libFuzzer target for the backplane's wire codec alone
 * (csrc/proto/rc_bpwire.c): no loop, no socket, no server. fuzz_backplane.c
 * drives the same code behind a live connection.
 *
 * Input: one control byte, then the bytes of the chosen part.
 *   byte 0, bits 0-1  0: a message received on a channel
 *                     1: a prefix and a room name (split at the first NUL)
 *                     2: a command's arguments (split at each NUL)
 *                     3: what Redis sends: replies, read by hiredis's
 *                        reader with its arrays bounded as the seam bounds
 *                        them, each checked as a push and encoded
 *           bits 2-3  max_payload for 0: 0, 16, 1024, unbounded
 * Each input is copied to the heap at its exact length, so any over-read
 * is caught by ASan. Beyond memory safety it checks:
 *   0: a verdict among the three; a message accepted lies inside the input,
 *      its payload is at most max_payload and, when text, UTF-8; an
 *      envelope accepted is written back byte for byte by
 *      rc_bpwire_envelope from what was read (when its flags are ones we
 *      write); a malformed envelope still has its sender read; a history
 *      message (version 2) has its epoch, offset (the 20 digits read
 *      back) and payload where the format puts them.
 *   1: the head unescapes to the prefix and its first unescaped '|' is its
 *      last byte; head + name is a channel whose name is name; the
 *      sentinel is no room's channel and ends with 16 hex digits.
 *   2: rc_bpwire_command writes what redisFormatCommandArgv writes, and
 *      hiredis's reader reads the arguments back.
 *   3: a push accepted points inside its reply; the encoding of a reply
 *      is exactly rc_bpwire_reply_size bytes; an error reply is named;
 *      read as a cluster's map (CLUSTER SLOTS), each range given is
 *      within the slots with its first <= its last, its port in
 *      1..65535, its host inside the reply, and a map accepted gives one
 *      range per element.
 * A broken property aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "proto/rc_bpwire.h"
#include "proto/rc_utf8.h"

#include "fuzz_check.h"

#define MAX_ARGS 64

/* --- 0: messages ---------------------------------------------------------- */

static void check_envelope(const uint8_t *p, size_t n, const rc_bpwire_msg *m) {
  rc_bpwire_room rooms[8];
  size_t k = m->multi ? m->nrooms : 1;
  /* Only what we write is written back: known flags, several rooms listed
   * only when there are several, and few enough for this check. */
  if ((p[3] & 0x0c) != 0 || (m->multi != (k > 1)) || k > 8)
    return;
  const uint8_t *q = m->rooms;
  for (size_t i = 0; m->multi && i < k; i++)
    q = rc_bpwire_next_room(q, &rooms[i].name, &rooms[i].len);
  size_t size = rc_bpwire_envelope_size(rooms, k, m->len);
  FUZZ_CHECK(size == n);
  uint8_t *out = malloc(size);
  FUZZ_CHECK(out != NULL);
  FUZZ_CHECK(rc_bpwire_envelope(out, m->is_text, m->from, m->seq, rooms, k,
                                m->payload, m->len) == size);
  FUZZ_CHECK(memcmp(out, p, n) == 0);
  free(out);
}

static void check_position(const uint8_t *p, const rc_bpwire_msg *m) {
  FUZZ_CHECK((p[3] & 0xf0) == RC_BPWIRE_VERSION_HISTORY && !m->multi &&
             (p[3] & RC_BPWIRE_F_HISTORY));
  size_t at = RC_BPWIRE_HEADER + ((p[3] & RC_BPWIRE_F_EXCLUDE) ? 8 : 0);
  FUZZ_CHECK((const uint8_t *)m->epoch == p + at);
  FUZZ_CHECK(m->payload == p + at + RC_BPWIRE_EPOCH_LEN + RC_BPWIRE_OFFSET_LEN);
  char digits[RC_BPWIRE_OFFSET_LEN + 1];
  int w = snprintf(digits, sizeof(digits), "%020llu",
                   (unsigned long long)m->offset);
  FUZZ_CHECK(w == RC_BPWIRE_OFFSET_LEN &&
             memcmp(digits, p + at + RC_BPWIRE_EPOCH_LEN, w) == 0);
}

static void messages(const uint8_t *p, size_t n, unsigned ctl) {
  static const size_t maxes[4] = {0, 16, 1024, SIZE_MAX};
  size_t max = maxes[(ctl >> 2) & 3];
  rc_bpwire_msg m;
  int v = rc_bpwire_parse(p, n, max, &m);
  FUZZ_CHECK(v == RC_BPWIRE_OK || v == RC_BPWIRE_OTHER_VERSION ||
             v == RC_BPWIRE_MALFORMED);
  int has_header =
      n >= RC_BPWIRE_HEADER && p[0] == 0 && p[1] == 'r' && p[2] == 'c';
  if (v == RC_BPWIRE_OTHER_VERSION) {
    FUZZ_CHECK(has_header && (p[3] & 0xf0) != RC_BPWIRE_VERSION);
    return;
  }
  FUZZ_CHECK(m.enveloped == has_header);
  if (v == RC_BPWIRE_MALFORMED) {
    FUZZ_CHECK(!m.enveloped ||
               (m.from == ((uint64_t)p[4] << 56 | (uint64_t)p[5] << 48 |
                           (uint64_t)p[6] << 40 | (uint64_t)p[7] << 32 |
                           (uint64_t)p[8] << 24 | (uint64_t)p[9] << 16 |
                           (uint64_t)p[10] << 8 | p[11])));
    return;
  }
  FUZZ_CHECK(m.payload >= p && m.len <= n &&
             (size_t)(m.payload - p) + m.len == n);
  FUZZ_CHECK(m.len <= max);
  if (m.is_text)
    FUZZ_CHECK(rc_utf8_valid(m.payload, m.len));
  if (m.history)
    check_position(p, &m);
  else if (m.enveloped)
    check_envelope(p, n, &m);
}

/* --- 1: names ------------------------------------------------------------- */

static void unescape_check(const char *head, size_t hl, const char *prefix,
                           size_t plen) {
  size_t j = 0;
  for (size_t i = 0; i + 1 < hl; i++) {
    FUZZ_CHECK(head[i] != '|'); /* every '|' before the last is escaped */
    if (head[i] == '\\')
      i++;
    FUZZ_CHECK(j < plen && head[i] == prefix[j]);
    j++;
  }
  FUZZ_CHECK(j == plen && head[hl - 1] == '|');
}

static void names(const uint8_t *p, size_t n) {
  const uint8_t *nul = memchr(p, 0, n);
  size_t plen = nul ? (size_t)(nul - p) : n;
  if (plen > RC_BPWIRE_PREFIX_MAX)
    plen = RC_BPWIRE_PREFIX_MAX;
  const char *name = nul ? (const char *)nul + 1 : "";
  size_t name_len = nul ? n - (size_t)(nul - p) - 1 : 0;
  const char *prefix = (const char *)p;
  size_t hl = rc_bpwire_chan_head(prefix, plen, NULL);
  FUZZ_CHECK(hl >= 1 && hl <= 2 * plen + 1);
  char *head = malloc(hl);
  char *ch = malloc(hl + name_len + 1);
  char *sentinel = malloc(RC_BPWIRE_SENTINEL_LEN(hl));
  FUZZ_CHECK(head != NULL && ch != NULL && sentinel != NULL);
  FUZZ_CHECK(rc_bpwire_chan_head(prefix, plen, head) == hl);
  unescape_check(head, hl, prefix, plen);
  memcpy(ch, head, hl);
  memcpy(ch + hl, name, name_len);
  const char *got;
  size_t got_len;
  FUZZ_CHECK(rc_bpwire_chan_name(head, hl, ch, hl + name_len, &got, &got_len) ==
             1);
  FUZZ_CHECK(got_len == name_len && memcmp(got, name, name_len) == 0);
  size_t sl =
      rc_bpwire_sentinel(head, hl, (uint64_t)n * 0x9E3779B97F4A7C15u, sentinel);
  FUZZ_CHECK(sl == RC_BPWIRE_SENTINEL_LEN(hl));
  FUZZ_CHECK(rc_bpwire_chan_name(head, hl, sentinel, sl, &got, &got_len) == 0);
  FUZZ_CHECK(memcmp(sentinel + hl - 1, "\0server:", 8) == 0);
  for (size_t i = sl - 16; i < sl; i++)
    FUZZ_CHECK(strchr("0123456789abcdef", sentinel[i]) != NULL &&
               sentinel[i] != '\0');
  free(head);
  free(ch);
  free(sentinel);
}

/* --- 2: commands ---------------------------------------------------------- */

static void commands(const uint8_t *p, size_t n) {
  const char *argv[MAX_ARGS];
  size_t lens[MAX_ARGS];
  int argc = 0;
  size_t start = 0;
  for (size_t i = 0; i <= n && argc < MAX_ARGS; i++) {
    if (i == n || p[i] == 0) {
      argv[argc] = (const char *)p + start;
      lens[argc++] = i - start;
      start = i + 1;
    }
  }
  size_t len;
  char *ours = rc_bpwire_command(&len, argc, argv, lens);
  char *theirs = NULL;
  int tlen = redisFormatCommandArgv(&theirs, argc, argv, lens);
  FUZZ_CHECK(ours != NULL && tlen > 0 && (size_t)tlen == len);
  FUZZ_CHECK(memcmp(ours, theirs, len) == 0);
  free(theirs);
  redisReader *r = redisReaderCreate();
  FUZZ_CHECK(r != NULL && redisReaderFeed(r, ours, len) == REDIS_OK);
  void *reply = NULL;
  FUZZ_CHECK(redisReaderGetReply(r, &reply) == REDIS_OK && reply != NULL);
  redisReply *c = reply;
  FUZZ_CHECK(c->type == REDIS_REPLY_ARRAY && c->elements == (size_t)argc);
  for (int i = 0; i < argc; i++)
    FUZZ_CHECK(c->element[i]->len == lens[i] &&
               memcmp(c->element[i]->str, argv[i], lens[i]) == 0);
  freeReplyObject(c);
  redisReaderFree(r);
  free(ours);
}

/* --- 3: replies ----------------------------------------------------------- */

static void *(*make_array)(const redisReadTask *task, int elements);

/* As the seam does: no table from a count Redis only announced. */
static void *bounded_array(const redisReadTask *task, int elements) {
  if ((size_t)elements > 4096)
    return NULL;
  return make_array(task, elements);
}

static int inside(const void *p, size_t len, const redisReply *e) {
  return (const char *)p >= e->str && (const char *)p + len <= e->str + e->len;
}

typedef struct ranges_seen {
  const redisReply *r;
  size_t n;
} ranges_seen;

static int check_range(void *arg, unsigned first, unsigned last,
                       const char *host, size_t host_len, int port) {
  ranges_seen *seen = arg;
  FUZZ_CHECK(first <= last && last < 16384 && port >= 1 && port <= 65535);
  FUZZ_CHECK(seen->n < seen->r->elements);
  const redisReply *node = seen->r->element[seen->n]->element[2];
  FUZZ_CHECK(inside(host, host_len, node->element[0]));
  seen->n++;
  return 0;
}

static void check_reply(const redisReply *r) {
  rc_bpwire_push push;
  char why[RC_BPWIRE_WHY_MAX];
  int kind = rc_bpwire_push_parse(r, &push, why);
  if (kind == RC_BPWIRE_BAD) {
    FUZZ_CHECK(memchr(why, '\0', sizeof(why)) != NULL && why[0] != '\0');
  } else {
    FUZZ_CHECK(r->type == REDIS_REPLY_ARRAY && r->elements == 3);
    FUZZ_CHECK(inside(push.channel, push.channel_len, r->element[1]));
    if (kind == RC_BPWIRE_MESSAGE)
      FUZZ_CHECK(inside(push.payload, push.len, r->element[2]));
  }
  FUZZ_CHECK(rc_bpwire_error(r, "X", why) == (r->type == REDIS_REPLY_ERROR));
  ranges_seen seen = {r, 0};
  if (rc_bpwire_slots_parse(r, check_range, &seen, why) == 0)
    FUZZ_CHECK(seen.n == r->elements);
  else
    FUZZ_CHECK(memchr(why, '\0', sizeof(why)) != NULL && why[0] != '\0');
  size_t size = rc_bpwire_reply_size(r);
  char *out = malloc(size + 1);
  FUZZ_CHECK(out != NULL);
  out[size] = 0x5a;
  FUZZ_CHECK(rc_bpwire_reply_put(r, out) == out + size);
  FUZZ_CHECK(out[size] == 0x5a);
  free(out);
}

static void replies(const uint8_t *p, size_t n) {
  redisReader *r = redisReaderCreate();
  FUZZ_CHECK(r != NULL);
  redisReplyObjectFunctions fns = *r->fn;
  make_array = fns.createArray;
  fns.createArray = bounded_array;
  r->fn = &fns;
  if (redisReaderFeed(r, (const char *)p, n) == REDIS_OK) {
    void *reply = NULL;
    while (redisReaderGetReply(r, &reply) == REDIS_OK && reply != NULL) {
      check_reply(reply);
      freeReplyObject(reply);
      reply = NULL;
    }
  }
  redisReaderFree(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  unsigned ctl = data[0];
  size_t n = size - 1;
  uint8_t *p = malloc(n ? n : 1); /* exactly n bytes for ASan */
  FUZZ_CHECK(p != NULL);
  memcpy(p, data + 1, n);
  switch (ctl & 3) {
  case 0:
    messages(p, n, ctl);
    break;
  case 1:
    names(p, n);
    break;
  case 2:
    commands(p, n);
    break;
  default:
    replies(p, n);
    break;
  }
  free(p);
  return 0;
}
