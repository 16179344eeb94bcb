/* rc_bpwire.c - the backplane's wire, sans I/O (see rc_bpwire.h for the
 * formats). Every function here is a pure function of its arguments: the
 * loop side (rc_redis.c, rc_backplane.c) decides when to call them, this
 * file only what the bytes are. Commands are written by hand rather than
 * with redisFormatCommandArgv so that their size is known before anything
 * is copied and a SUBSCRIBE or PUBLISH is assembled from its parts (head,
 * name, envelope) in one buffer. */
#include "proto/rc_bpwire.h"
#include "proto/rc_slot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/rc_utf8.h"
#include "rc_core.h"

/* --- bytes -----------------------------------------------------------------
 */

static void put64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8)
    p[i] = (uint8_t)v;
}

static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | p[i];
  return v;
}

static void put16(uint8_t *p, size_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static size_t get16(const uint8_t *p) { return (size_t)p[0] << 8 | p[1]; }

/* --- names ---------------------------------------------------------------- */

size_t rc_bpwire_chan_head(const char *prefix, size_t n, char *out) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (prefix[i] == '\\' || prefix[i] == '|') {
      if (out != NULL)
        out[k] = '\\';
      k++;
    }
    if (out != NULL)
      out[k] = prefix[i];
    k++;
  }
  if (out != NULL)
    out[k] = '|';
  return k + 1;
}

size_t rc_bpwire_sentinel(const char *head, size_t head_len, uint64_t id,
                          char *out) {
  static const char hex[] = "0123456789abcdef";
  memcpy(out, head, head_len - 1); /* the escaped prefix, without its '|' */
  char *p = out + head_len - 1;
  memcpy(p, "\0server:", 8);
  p += 8;
  for (int i = 15; i >= 0; i--, id >>= 4)
    p[i] = hex[id & 15];
  return RC_BPWIRE_SENTINEL_LEN(head_len);
}

int rc_bpwire_chan_name(const char *head, size_t head_len, const char *ch,
                        size_t chlen, const char **name, size_t *name_len) {
  if (chlen < head_len || memcmp(ch, head, head_len) != 0)
    return 0;
  *name = ch + head_len;
  *name_len = chlen - head_len;
  return 1;
}

/* --- the envelope --------------------------------------------------------- */

size_t rc_bpwire_envelope_size(const rc_bpwire_room *rooms, size_t n,
                               size_t len) {
  size_t names = 0;
  for (size_t i = 0; n > 1 && i < n; i++)
    names += 2 + rooms[i].len;
  return RC_BPWIRE_HEADER + (n > 1 ? 2 + names : 0) + len;
}

size_t rc_bpwire_envelope(uint8_t *out, int is_text, uint64_t from,
                          uint64_t seq, const rc_bpwire_room *rooms, size_t n,
                          const void *payload, size_t len) {
  out[0] = 0;
  out[1] = 'r';
  out[2] = 'c';
  out[3] = (uint8_t)(RC_BPWIRE_VERSION | (is_text ? RC_BPWIRE_F_TEXT : 0) |
                     (n > 1 ? RC_BPWIRE_F_MULTI : 0));
  put64(out + 4, from);
  put64(out + 12, seq);
  uint8_t *p = out + RC_BPWIRE_HEADER;
  if (n > 1) {
    put16(p, n);
    p += 2;
    for (size_t i = 0; i < n; i++) {
      put16(p, rooms[i].len);
      memcpy(p + 2, rooms[i].name, rooms[i].len);
      p += 2 + rooms[i].len;
    }
  }
  if (len > 0)
    memcpy(p, payload, len);
  return (size_t)(p - out) + len;
}

/* The list of rooms at p (len bytes): 1 when its count and every name fit;
 * m->payload then follows it. */
static int rooms_parse(const uint8_t *p, size_t len, rc_bpwire_msg *m) {
  if (len < 2)
    return 0;
  m->nrooms = get16(p);
  m->rooms = p + 2;
  const uint8_t *q = m->rooms, *end = p + len;
  for (size_t i = 0; i < m->nrooms; i++) {
    if (end - q < 2 || (size_t)(end - q - 2) < get16(q))
      return 0;
    q += 2 + get16(q);
  }
  m->payload = q;
  m->len = (size_t)(end - q);
  return 1;
}

/* Version 2's fields after the header (m->payload, m->len): 1 when they
 * are all there and the offset is in digits; m->payload then follows them.
 * A message of a room with history is of one room. */
static int position_parse(uint8_t flags, rc_bpwire_msg *m) {
  const uint8_t *q = m->payload;
  size_t need = RC_BPWIRE_EPOCH_LEN + RC_BPWIRE_OFFSET_LEN +
                ((flags & RC_BPWIRE_F_EXCLUDE) ? 8 : 0);
  if (!(flags & RC_BPWIRE_F_HISTORY) || (flags & RC_BPWIRE_F_MULTI) ||
      m->len < need)
    return 0;
  if (flags & RC_BPWIRE_F_EXCLUDE) {
    m->exclude = get64(q);
    q += 8;
  }
  m->epoch = (const char *)q;
  q += RC_BPWIRE_EPOCH_LEN;
  uint64_t offset = 0;
  for (size_t i = 0; i < RC_BPWIRE_OFFSET_LEN; i++) {
    if (q[i] < '0' || q[i] > '9')
      return 0;
    uint64_t d = (uint64_t)(q[i] - '0');
    if (offset > (UINT64_MAX - d) / 10)
      return 0;
    offset = offset * 10 + d;
  }
  m->history = 1;
  m->offset = offset;
  m->payload = q + RC_BPWIRE_OFFSET_LEN;
  m->len -= need;
  return 1;
}

int rc_bpwire_parse(const uint8_t *p, size_t len, size_t max_payload,
                    rc_bpwire_msg *m) {
  memset(m, 0, sizeof(*m));
  m->payload = p;
  m->len = len;
  if (len < RC_BPWIRE_HEADER || p[0] != 0 || p[1] != 'r' || p[2] != 'c') {
    if (len > max_payload)
      return RC_BPWIRE_MALFORMED;
    m->is_text = rc_utf8_valid(p, len); /* PUBLISHed by another program */
    return RC_BPWIRE_OK;
  }
  uint8_t flags = p[3];
  uint8_t version = flags & 0xf0;
  if (version != RC_BPWIRE_VERSION && version != RC_BPWIRE_VERSION_HISTORY)
    return RC_BPWIRE_OTHER_VERSION;
  m->enveloped = 1;
  m->from = get64(p + 4);
  m->seq = get64(p + 12);
  m->is_text = (flags & RC_BPWIRE_F_TEXT) != 0;
  m->multi = (flags & RC_BPWIRE_F_MULTI) != 0;
  m->payload = p + RC_BPWIRE_HEADER;
  m->len = len - RC_BPWIRE_HEADER;
  if (version == RC_BPWIRE_VERSION_HISTORY && !position_parse(flags, m))
    return RC_BPWIRE_MALFORMED;
  if (m->multi && !rooms_parse(m->payload, m->len, m))
    return RC_BPWIRE_MALFORMED;
  if (m->len > max_payload ||
      (m->is_text && !rc_utf8_valid(m->payload, m->len)))
    return RC_BPWIRE_MALFORMED;
  return RC_BPWIRE_OK;
}

const uint8_t *rc_bpwire_next_room(const uint8_t *q, const char **name,
                                   size_t *len) {
  *len = get16(q);
  *name = (const char *)q + 2;
  return q + 2 + *len;
}

/* --- commands ------------------------------------------------------------- */

/* Bytes of "<mark><n>\r\n". */
static size_t count_size(size_t n) {
  size_t d = 1;
  for (; n >= 10; n /= 10)
    d++;
  return 1 + d + 2;
}

static char *put_count(char *p, char mark, size_t n) {
  char digits[24];
  size_t d = 0;
  do {
    digits[d++] = (char)('0' + n % 10);
    n /= 10;
  } while (n > 0);
  *p++ = mark;
  while (d > 0)
    *p++ = digits[--d];
  *p++ = '\r';
  *p++ = '\n';
  return p;
}

/* The body of a bulk string whose count is written: a, b, CRLF. */
static char *put_bulk_rest(char *p, const void *a, size_t alen, const void *b,
                           size_t blen) {
  if (alen > 0)
    memcpy(p, a, alen);
  if (blen > 0)
    memcpy(p + alen, b, blen);
  p += alen + blen;
  *p++ = '\r';
  *p++ = '\n';
  return p;
}

/* A bulk string made of two parts (b may be empty). */
static char *put_bulk2(char *p, const void *a, size_t alen, const void *b,
                       size_t blen) {
  return put_bulk_rest(put_count(p, '$', alen + blen), a, alen, b, blen);
}

static size_t bulk_size(size_t len) { return count_size(len) + len + 2; }

/* size += n, or 0 when it would wrap (no command is that large). */
static size_t grow(size_t size, size_t n) {
  return size == 0 || n > SIZE_MAX - size ? 0 : size + n;
}

char *rc_bpwire_command(size_t *len, int argc, const char **argv,
                        const size_t *lens) {
  if (argc < 1)
    return NULL;
  size_t size = count_size((size_t)argc);
  for (int i = 0; i < argc; i++)
    size = grow(size, bulk_size(lens ? lens[i] : strlen(argv[i])));
  char *out = size ? malloc(size) : NULL;
  if (out == NULL)
    return NULL;
  char *p = put_count(out, '*', (size_t)argc);
  for (int i = 0; i < argc; i++)
    p = put_bulk2(p, argv[i], lens ? lens[i] : strlen(argv[i]), NULL, 0);
  *len = (size_t)(p - out);
  return out;
}

static size_t tag_len(const rc_bpwire_room *room) {
  return room->tag != NULL ? RC_SLOT_TAG_LEN : 0;
}

/* A room's channel as one bulk string: its tag, head, its name. */
static char *put_channel(char *p, const char *head, size_t head_len,
                         const rc_bpwire_room *room) {
  size_t t = tag_len(room);
  p = put_count(p, '$', t + head_len + room->len);
  if (t > 0)
    memcpy(p, room->tag, t);
  return put_bulk_rest(p + t, head, head_len, room->name, room->len);
}

char *rc_bpwire_subscribe(size_t *len, const char *verb, const char *head,
                          size_t head_len, const rc_bpwire_room *rooms,
                          size_t n) {
  size_t vlen = strlen(verb);
  size_t size = count_size(n + 1) + bulk_size(vlen);
  for (size_t i = 0; i < n; i++)
    size = grow(size, bulk_size(tag_len(&rooms[i]) + head_len + rooms[i].len));
  char *out = size ? malloc(size) : NULL;
  if (out == NULL)
    return NULL;
  char *p = put_count(out, '*', n + 1);
  p = put_bulk2(p, verb, vlen, NULL, 0);
  for (size_t i = 0; i < n; i++)
    p = put_channel(p, head, head_len, &rooms[i]);
  *len = (size_t)(p - out);
  return out;
}

char *rc_bpwire_publish(size_t *len, const char *verb, const char *head,
                        size_t head_len, const rc_bpwire_room *room,
                        const uint8_t *msg, size_t mlen) {
  size_t vlen = strlen(verb);
  size_t size = count_size(3) + bulk_size(vlen);
  size = grow(size, bulk_size(tag_len(room) + head_len + room->len));
  size = grow(size, bulk_size(mlen));
  char *out = size ? malloc(size) : NULL;
  if (out == NULL)
    return NULL;
  char *p = put_count(out, '*', 3);
  p = put_bulk2(p, verb, vlen, NULL, 0);
  p = put_channel(p, head, head_len, room);
  p = put_bulk2(p, msg, mlen, NULL, 0);
  *len = (size_t)(p - out);
  return out;
}

int rc_bpwire_forbidden(const char *name, size_t len) {
  static const char *const names[] = {
      "SUBSCRIBE",    "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE",
      "SUNSUBSCRIBE", "MONITOR",    "SELECT",     "AUTH",        "HELLO",
      "QUIT",         "RESET",      "CLIENT",     "SYNC",        "PSYNC",
      "WAIT",         "MULTI",      "EXEC",       "DISCARD",     "WATCH",
      "UNWATCH",      "BLPOP",      "BRPOP",      "BLMOVE",      "BRPOPLPUSH",
      "BZPOPMIN",     "BZPOPMAX",   "BLMPOP",     "BZMPOP",      "XREAD",
      "XREADGROUP",   "SHUTDOWN",   "WAITAOF",    "DEBUG"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
      return 1;
  return 0;
}

/* --- replies -------------------------------------------------------------- */

int rc_bpwire_error(const redisReply *r, const char *what, char *why) {
  if (r->type != REDIS_REPLY_ERROR)
    return 0;
  snprintf(why, RC_BPWIRE_WHY_MAX, "%s: %.*s", what,
           (int)(r->len < 120 ? r->len : 120), r->str);
  return 1;
}

static int is_string(const redisReply *r) {
  return r->type == REDIS_REPLY_STRING;
}

static int push_kind(const char *kind) {
  return strcasecmp(kind, "message") == 0       ? RC_BPWIRE_MESSAGE
         : strcasecmp(kind, "subscribe") == 0   ? RC_BPWIRE_SUBSCRIBED
         : strcasecmp(kind, "unsubscribe") == 0 ? RC_BPWIRE_UNSUBSCRIBED
                                                : RC_BPWIRE_BAD;
}

int rc_bpwire_push_parse(const redisReply *r, rc_bpwire_push *out, char *why) {
  if (rc_bpwire_error(r, "Redis", why))
    return RC_BPWIRE_BAD;
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
      !is_string(r->element[0]) || !is_string(r->element[1])) {
    snprintf(why, RC_BPWIRE_WHY_MAX,
             "Redis sent an unexpected reply to the subscriber");
    return RC_BPWIRE_BAD;
  }
  const char *kind = r->element[0]->str;
  const redisReply *third = r->element[2];
  int kind_of = push_kind(kind);
  if (kind_of == RC_BPWIRE_BAD && (kind[0] == 's' || kind[0] == 'S'))
    kind_of = push_kind(kind + 1); /* sharded: "smessage", ... */
  if (kind_of == RC_BPWIRE_BAD ||
      (kind_of == RC_BPWIRE_MESSAGE ? !is_string(third)
                                    : third->type != REDIS_REPLY_INTEGER)) {
    snprintf(why, RC_BPWIRE_WHY_MAX,
             "Redis sent an unexpected push to the subscriber");
    return RC_BPWIRE_BAD;
  }
  out->channel = r->element[1]->str;
  out->channel_len = r->element[1]->len;
  out->payload =
      kind_of == RC_BPWIRE_MESSAGE ? (const uint8_t *)third->str : NULL;
  out->len = kind_of == RC_BPWIRE_MESSAGE ? third->len : 0;
  return kind_of;
}

static int integer_in(const redisReply *r, long long lo, long long hi) {
  return r->type == REDIS_REPLY_INTEGER && r->integer >= lo && r->integer <= hi;
}

int rc_bpwire_slots_parse(const redisReply *r, rc_bpwire_range_cb *range,
                          void *arg, char *why) {
  if (rc_bpwire_error(r, "CLUSTER SLOTS", why))
    return -1;
  if (r->type != REDIS_REPLY_ARRAY) {
    snprintf(why, RC_BPWIRE_WHY_MAX, "CLUSTER SLOTS: not an array");
    return -1;
  }
  for (size_t i = 0; i < r->elements; i++) {
    const redisReply *e = r->element[i];
    const redisReply *node =
        e->type == REDIS_REPLY_ARRAY && e->elements >= 3 ? e->element[2] : NULL;
    if (node == NULL || !integer_in(e->element[0], 0, RC_SLOT_COUNT - 1) ||
        !integer_in(e->element[1], e->element[0]->integer, RC_SLOT_COUNT - 1) ||
        node->type != REDIS_REPLY_ARRAY || node->elements < 2 ||
        !is_string(node->element[0]) ||
        !integer_in(node->element[1], 1, 65535)) {
      snprintf(why, RC_BPWIRE_WHY_MAX, "CLUSTER SLOTS: range %zu is malformed",
               i + 1);
      return -1;
    }
    int stop = range(arg, (unsigned)e->element[0]->integer,
                     (unsigned)e->element[1]->integer, node->element[0]->str,
                     node->element[0]->len, (int)node->element[1]->integer);
    if (stop != 0)
      return stop;
  }
  return 0;
}

size_t rc_bpwire_reply_size(const redisReply *r) {
  switch (r->type) {
  case REDIS_REPLY_ARRAY: {
    size_t n = 5;
    for (size_t i = 0; i < r->elements; i++)
      n += rc_bpwire_reply_size(r->element[i]);
    return n;
  }
  case REDIS_REPLY_INTEGER:
    return 9;
  case REDIS_REPLY_NIL:
    return 1;
  default:
    return 5 + r->len;
  }
}

static char *put_string(char *p, char type, const char *str, size_t len) {
  uint32_t n32 = (uint32_t)len;
  *p++ = type;
  memcpy(p, &n32, 4);
  if (len > 0)
    memcpy(p + 4, str, len);
  return p + 4 + len;
}

char *rc_bpwire_reply_put(const redisReply *r, char *p) {
  switch (r->type) {
  case REDIS_REPLY_ARRAY: {
    uint32_t n32 = (uint32_t)r->elements;
    *p++ = RC_REPLY_ARRAY;
    memcpy(p, &n32, 4);
    p += 4;
    for (size_t i = 0; i < r->elements; i++)
      p = rc_bpwire_reply_put(r->element[i], p);
    return p;
  }
  case REDIS_REPLY_INTEGER: {
    int64_t v = r->integer;
    *p++ = RC_REPLY_INTEGER;
    memcpy(p, &v, 8);
    return p + 8;
  }
  case REDIS_REPLY_NIL:
    *p++ = RC_REPLY_NIL;
    return p;
  case REDIS_REPLY_ERROR:
    return put_string(p, RC_REPLY_ERROR, r->str, r->len);
  case REDIS_REPLY_STATUS:
    return put_string(p, RC_REPLY_STATUS, r->str, r->len);
  default:
    return put_string(p, RC_REPLY_STRING, r->str, r->len);
  }
}

char *rc_bpwire_error_put(char *p, const char *text, size_t len) {
  return put_string(p, RC_REPLY_ERROR, text, len);
}
