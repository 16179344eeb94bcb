/* rc_backplane.c - rooms shared across servers through Redis pub/sub.
 *
 * Two Redis connections run on the core's loop: `sub` in
 * subscriber mode, `cmd` for PUBLISH and the embedder's commands
 * (rc_server_redis). A message from another server is framed once and
 * fanned out to the local members here, on the loop thread: Python never
 * sees it.
 *
 * Each connection is a libuv TCP stream whose bytes go through hiredis's
 * reply reader (redisReader) and nothing else of hiredis: its async layer
 * (0.14) asserts on a reply it did not expect (an extra reply, a short
 * subscribe array, a non-string first element), which took the whole
 * process down with a broken or hostile Redis. Here every reply is checked
 * before it is read: replies answer our commands in order (a ring of
 * waiters); on the subscriber connection, once its AUTH is answered,
 * every reply must be a ["message" | "subscribe" | "unsubscribe",
 * channel, payload | count] array. Anything else, a reader error, or a
 * reply longer than the link's bound ends the connection, and the usual
 * reconnection follows: a bad Redis costs the backplane, never the server.
 *
 * Channels. A room's channel is the prefix, escaped ('\\' and '|' take a
 * '\\' before them), '|', then the room's name: the first unescaped '|'
 * ends the prefix, so apps with nested prefixes ("a:" and "a:b:") never
 * share a channel. A named room has a channel entry (rc_chan) from the
 * moment it is named until it is freed, whether or not it has local
 * members; its subscription follows the local room: SUBSCRIBE when the
 * room is made (first local member), UNSUBSCRIBE when it goes (last member
 * left). A SUBSCRIBE is never sent while an UNSUBSCRIBE of the same channel
 * is in flight (its answer would be taken for the new subscription's):
 * each entry tracks its state and the next step waits for the answer. A
 * sentinel channel of this server (the escaped prefix, a NUL, "server:"
 * and its id: no room's channel), subscribed first and never left, keeps
 * the connection in subscriber mode; its answer says that the connection
 * is ready.
 *
 * Messages. Each publish is PUBLISHed once per named room it targets,
 * with a header: "\0rc", a flags byte (bit 0 text, bit 1 several rooms,
 * bits 4-7 the version, 1), this server's id and a sequence number (both
 * 64-bit big-endian), then for several rooms a 16-bit count and each
 * room's name (16-bit length, bytes), then the payload. A server skips
 * the messages that carry its own id (its members had them at once). The
 * copies of a message for several rooms share one sequence number and
 * come one after the other from their publisher: the first copy a server
 * gets reaches the members of every listed room once, the others are
 * skipped, since each publisher's sequence only grows. A message without
 * the header (PUBLISHed by another program) is delivered as it is: text
 * when it is UTF-8, else binary. Whoever can PUBLISH on Redis can send to
 * the rooms (the link has no TLS: keep Redis on a trusted network); a
 * payload over max_message_size is dropped and counted (backplane_invalid),
 * as is a malformed message.
 *
 * Failures. A connection that fails is retried with exponential backoff
 * (100 ms doubling to 5 s, with jitter); the subscriber resubscribes every
 * room with local members. Publishes made while the command connection is
 * down, or while Redis has not yet answered backplane_buffer bytes of
 * them, wait in order in a buffer of that many bytes; past it they are
 * dropped and counted. Each change of state is an RC_EV_BACKPLANE event.
 */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/hiredis.h>

#include "proto/rc_frame.h"
#include "loop/rc_internal.h"
#include "proto/rc_utf8.h"

#define RC__RETRY_FIRST_MS 100
#define RC__RETRY_MAX_MS 5000
#define RC__CONNECT_MS 5000 /* connect, AUTH and the first answer */
#define RC__GRACE_MS 1000   /* stopping: the last publishes may take this */
#define RC__SUB_BATCH 256   /* channels per SUBSCRIBE when resubscribing */
#define RC__HEADER 20
#define RC__VERSION 0x10
#define RC__F_TEXT 0x01
#define RC__F_MULTI 0x02
#define RC_BACKPLANE_PREFIX_MAX 200 /* bytes; the binding says so too */
/* A publisher unheard of this long is forgotten. */
#define RC__PEER_IDLE_MS 600000

enum { SUB_NONE, SUB_PENDING, SUB_ON, SUB_LEAVING };
enum { LINK_DOWN, LINK_RESOLVING, LINK_CONNECTING, LINK_READY };
enum { BP_DOWN = 0, BP_UP = 1, BP_RETRY = 2 }; /* RC_EV_BACKPLANE codes */

typedef struct rc_chan {
  struct rc_chan *next_name, *next_id;
  uint64_t room;   /* its room id; 0 once freed (kept until unsubscribed) */
  rc_room *live;   /* the local room while it has members */
  uint8_t sub;     /* SUB_* */
  uint32_t len;
  char name[];     /* the room's name; the channel is prefix + name */
} rc_chan;

struct rc_backplane;
struct rc_link;

/* What a command's reply goes to; reply is NULL when the connection ended
 * before it came. */
typedef void rc_reply_cb(struct rc_link *l, redisReply *reply, void *priv);

typedef struct rc_waiter {
  rc_reply_cb *fn;
  void *priv;
} rc_waiter;

/* One TCP connection of a link, freed in its close callback: the link may
 * have made a new one by then. */
typedef struct rc_sock {
  uv_tcp_t tcp;
  uv_connect_t connect;
  struct rc_link *link; /* NULL once the link has let it go */
  redisReader *reader;
  /* hiredis's reply functions, but for arrays: their table is allocated
   * from the count Redis announces, before any element arrives. */
  redisReplyObjectFunctions fns;
  void *(*make_array)(const redisReadTask *task, int elements);
  size_t max_elements;
  size_t partial; /* bytes read since the last whole reply */
  char rbuf[65536];
} rc_sock;

typedef struct rc_wreq {
  uv_write_t req;
  char *data; /* a formatted command, freed once written */
} rc_wreq;

typedef struct rc_link {
  struct rc_backplane *bp;
  rc_sock *sock;         /* NULL while down or resolving */
  uv_timer_t timer;      /* the next attempt, or the connect deadline */
  uv_getaddrinfo_t gai;
  uint8_t state;         /* LINK_* */
  uint8_t subscriber;
  uint8_t ever_ready;
  uint8_t draining;      /* stopping: disconnect once nothing waits */
  uint8_t bad;           /* the connection ends for a protocol violation */
  unsigned attempt;      /* failures since the last success */
  rc_waiter *wq;         /* a ring: the commands waiting for replies */
  uint32_t whead, wlen, wcap;
  size_t reply_max;      /* bytes; a longer reply ends the connection */
  char why[160];         /* what made the last attempt fail */
} rc_link;

typedef struct rc_outmsg { /* a formatted PUBLISH waiting for Redis */
  struct rc_outmsg *next;
  size_t len;
  char *cmd;
} rc_outmsg;

typedef struct rc_peer {
  uint64_t id, seq, seen;
} rc_peer;

typedef struct rc_backplane {
  rc_server *s;
  rc_link sub, cmd;
  char *host, *username, *password, *prefix;
  /* Channels are the prefix escaped ('\\' and '|' get a '\\' before
   * them), '|', then the room's name; chan holds that head and room for a
   * name after it. */
  char *chan;
  size_t chan_head, chan_cap;
  int port, db;
  size_t buffer_max;
  uint64_t seq, rng;
  char *sentinel; /* escaped prefix, "\0server:", the id in hex */
  size_t sentinel_len;
  rc_chan **by_name, **by_id;
  uint32_t cap, nchans, nsubs;
  rc_outmsg *out_head, *out_tail;
  size_t out_bytes; /* in the buffer */
  size_t inflight;  /* handed to hiredis, not yet answered */
  rc_peer *peers;
  uint32_t npeers, cappeers;
  uint8_t *scratch;
  size_t scratch_cap;
  uv_timer_t grace;
  int started, closing, up;
} rc_backplane;

static void store(atomic_uint_fast64_t *a, uint64_t v) {
  atomic_store_explicit(a, v, memory_order_relaxed);
}

static void bump(atomic_uint_fast64_t *a, uint64_t n) {
  atomic_fetch_add_explicit(a, n, memory_order_relaxed);
}

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

/* --- a Redis connection on libuv ---------------------------------------- */

static void link_drop(rc_link *l, const char *why);
static void link_drop_bad(rc_link *l, const char *why);
static void link_lost(rc_link *l);
static void on_sub_reply(rc_link *l, redisReply *r);

static void on_sock_closed(uv_handle_t *h) {
  rc_sock *k = h->data;
  redisReaderFree(k->reader);
  free(k);
}

/* The link lets its socket go: nothing reaches the link from it again. */
static void sock_release(rc_link *l) {
  rc_sock *k = l->sock;
  if (k == NULL)
    return;
  l->sock = NULL;
  k->link = NULL;
  uv_close((uv_handle_t *)&k->tcp, on_sock_closed);
}

static void on_written(uv_write_t *req, int status) {
  rc_wreq *w = RC__CONTAINER_OF(req, rc_wreq, req);
  rc_sock *k = req->handle->data;
  free(w->data);
  free(w);
  if (status < 0 && k->link != NULL)
    link_drop(k->link, uv_strerror(status));
}

/* Writes data (malloc'ed, len bytes) and, when fn is set, waits for its
 * reply in order. 0: data is the link's now; -1: the caller keeps it. */
static int link_send(rc_link *l, char *data, size_t len, rc_reply_cb *fn,
                     void *priv) {
  if (l->sock == NULL || len > UINT_MAX)
    return -1;
  if (fn != NULL && l->wlen == l->wcap) {
    uint32_t cap = l->wcap ? l->wcap * 2 : 16;
    rc_waiter *q = malloc(cap * sizeof(*q));
    if (q == NULL)
      return -1;
    for (uint32_t i = 0; i < l->wlen; i++)
      q[i] = l->wq[(l->whead + i) % l->wcap];
    free(l->wq);
    l->wq = q;
    l->whead = 0;
    l->wcap = cap;
  }
  rc_wreq *w = malloc(sizeof(*w));
  if (w == NULL)
    return -1;
  w->data = data;
  uv_buf_t buf = uv_buf_init(data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&l->sock->tcp, &buf, 1, on_written) !=
      0) {
    free(w);
    return -1;
  }
  if (fn != NULL)
    l->wq[(l->whead + l->wlen++) % l->wcap] = (rc_waiter){fn, priv};
  return 0;
}

/* link_send for a command given as arguments (lens NULL: C strings). */
static int link_command(rc_link *l, int argc, const char **argv,
                        const size_t *lens, rc_reply_cb *fn, void *priv) {
  char *cmd = NULL;
  int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
  if (len < 0)
    return -1;
  if (link_send(l, cmd, (size_t)len, fn, priv) != 0) {
    free(cmd);
    return -1;
  }
  return 0;
}

/* The connection is gone: every command still waiting gets NULL. */
static void waiters_fail(rc_link *l) {
  while (l->wlen > 0) {
    rc_waiter w = l->wq[l->whead];
    l->whead = (l->whead + 1) % l->wcap;
    l->wlen--;
    w.fn(l, NULL, w.priv);
  }
}

/* One whole reply. Replies answer the commands in the order they were
 * sent; on the subscriber connection, once its setup is answered, every
 * reply is a push (a message or a subscription's news), checked before
 * anything reads it. A reply that fits neither ends the connection. */
static void link_reply(rc_link *l, redisReply *r) {
  if (l->wlen > 0) {
    rc_waiter w = l->wq[l->whead];
    l->whead = (l->whead + 1) % l->wcap;
    l->wlen--;
    w.fn(l, r, w.priv);
    if (l->draining && l->wlen == 0 && l->sock != NULL)
      link_drop(l, "stopping");
  } else if (l->subscriber) {
    on_sub_reply(l, r);
  } else {
    link_drop_bad(l, "Redis sent a reply to no command");
  }
}

static void *bounded_array(const redisReadTask *task, int elements) {
  rc_sock *k = task->privdata;
  if ((size_t)elements > k->max_elements)
    return NULL; /* the reader fails ("Out of memory"): the link drops */
  return k->make_array(task, elements);
}

/* The reader of k: hiredis's, arrays bounded (a push to the subscriber
 * has 3 elements; a reply to the embedder, 2^20). 0 or -1. */
static int sock_reader(rc_sock *k, int subscriber) {
  k->reader = redisReaderCreate();
  if (k->reader == NULL)
    return -1;
  k->fns = *k->reader->fn;
  k->make_array = k->fns.createArray;
  k->fns.createArray = bounded_array;
  k->max_elements = subscriber ? 3 : (size_t)1 << 20;
  k->reader->fn = &k->fns;
  k->reader->privdata = k;
  return 0;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  rc_sock *k = h->data;
  *buf = uv_buf_init(k->rbuf, sizeof(k->rbuf));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  rc_sock *k = st->data;
  rc_link *l = k->link;
  if (l == NULL || n == 0)
    return;
  if (n < 0) {
    link_drop(l, n == UV_EOF ? "Redis closed the connection"
                             : uv_strerror((int)n));
    return;
  }
  if (redisReaderFeed(k->reader, buf->base, (size_t)n) != REDIS_OK) {
    link_drop(l, "out of memory");
    return;
  }
  k->partial += (size_t)n;
  while (k->link == l) { /* a reply may end the connection */
    void *reply = NULL;
    if (redisReaderGetReply(k->reader, &reply) != REDIS_OK) {
      char why[160];
      snprintf(why, sizeof(why), "protocol error from Redis: %s",
               k->reader->errstr);
      link_drop_bad(l, why);
      return;
    }
    if (reply == NULL)
      break;
    k->partial = k->reader->len - k->reader->pos;
    link_reply(l, reply);
    freeReplyObject(reply);
  }
  if (k->link == l && k->partial > l->reply_max)
    link_drop_bad(l, "a reply from Redis is larger than the bound");
}

/* --- events to the embedder ---------------------------------------------- */

static void state_event(rc_backplane *bp, uint16_t code, const char *text) {
  size_t len = strlen(text);
  rc_event *ev = rc__event_new(RC_EV_BACKPLANE, 0, len);
  if (ev == NULL)
    return;
  ev->code = code;
  memcpy(ev->data, text, len);
  rc__event_push(bp->s, ev);
}

/* Size of the encoding of reply (see enum rc_reply_type). */
static size_t reply_size(const redisReply *r) {
  switch (r->type) {
  case REDIS_REPLY_ARRAY: {
    size_t n = 5;
    for (size_t i = 0; i < r->elements; i++)
      n += reply_size(r->element[i]);
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

static char *reply_encode(const redisReply *r, char *p) {
  uint32_t n32;
  switch (r->type) {
  case REDIS_REPLY_ARRAY:
    *p++ = RC_REPLY_ARRAY;
    n32 = (uint32_t)r->elements;
    memcpy(p, &n32, 4);
    p += 4;
    for (size_t i = 0; i < r->elements; i++)
      p = reply_encode(r->element[i], p);
    return p;
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
    *p++ = RC_REPLY_ERROR;
    break;
  case REDIS_REPLY_STATUS:
    *p++ = RC_REPLY_STATUS;
    break;
  default:
    *p++ = RC_REPLY_STRING;
    break;
  }
  n32 = (uint32_t)r->len;
  memcpy(p, &n32, 4);
  if (r->len > 0)
    memcpy(p + 4, r->str, r->len);
  return p + 4 + r->len;
}

static void reply_event(rc_backplane *bp, uint64_t token, const redisReply *r,
                        const char *error) {
  size_t len = r != NULL ? reply_size(r) : 5 + strlen(error);
  rc_event *ev = rc__event_new(RC_EV_REDIS, token, len);
  if (ev == NULL)
    return;
  if (r != NULL) {
    (void)reply_encode(r, ev->data);
  } else {
    uint32_t n32 = (uint32_t)(len - 5);
    ev->data[0] = RC_REPLY_ERROR;
    memcpy(ev->data + 1, &n32, 4);
    memcpy(ev->data + 5, error, len - 5);
  }
  rc__event_push(bp->s, ev);
}

/* --- channel entries: by name and by room id ------------------------------ */

static uint32_t hash_name(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++)
    h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
  return (uint32_t)(h ^ (h >> 32));
}

static uint32_t hash_id(uint64_t id) {
  return (uint32_t)((id * 0x9E3779B97F4A7C15ull) >> 32);
}

static rc_chan *chan_by_name(rc_backplane *bp, const char *name, size_t len) {
  if (bp->cap == 0)
    return NULL;
  rc_chan *c = bp->by_name[hash_name(name, len) & (bp->cap - 1)];
  while (c != NULL && (c->len != len || memcmp(c->name, name, len) != 0))
    c = c->next_name;
  return c;
}

static rc_chan *chan_by_id(rc_backplane *bp, uint64_t id) {
  if (bp->cap == 0 || id == 0)
    return NULL;
  rc_chan *c = bp->by_id[hash_id(id) & (bp->cap - 1)];
  while (c != NULL && c->room != id)
    c = c->next_id;
  return c;
}

static void link_id(rc_backplane *bp, rc_chan *c) {
  uint32_t j = hash_id(c->room) & (bp->cap - 1);
  c->next_id = bp->by_id[j];
  bp->by_id[j] = c;
}

static void unlink_id(rc_backplane *bp, rc_chan *c) {
  rc_chan **pp = &bp->by_id[hash_id(c->room) & (bp->cap - 1)];
  while (*pp != c)
    pp = &(*pp)->next_id;
  *pp = c->next_id;
}

static void link_name(rc_backplane *bp, rc_chan *c) {
  uint32_t j = hash_name(c->name, c->len) & (bp->cap - 1);
  c->next_name = bp->by_name[j];
  bp->by_name[j] = c;
}

static int tables_grow(rc_backplane *bp) {
  uint32_t old = bp->cap, cap = old ? old * 2 : 64;
  rc_chan **by_name = calloc(cap, sizeof(*by_name));
  rc_chan **by_id = calloc(cap, sizeof(*by_id));
  if (by_name == NULL || by_id == NULL) {
    free(by_name);
    free(by_id);
    return UV_ENOMEM;
  }
  rc_chan **old_names = bp->by_name;
  free(bp->by_id);
  bp->by_name = by_name;
  bp->by_id = by_id;
  bp->cap = cap;
  for (uint32_t i = 0; i < old; i++) {
    rc_chan *c = old_names[i];
    while (c != NULL) {
      rc_chan *next = c->next_name;
      link_name(bp, c);
      if (c->room != 0)
        link_id(bp, c);
      c = next;
    }
  }
  free(old_names);
  return 0;
}

static void chan_delete(rc_backplane *bp, rc_chan *c) {
  rc_chan **pp = &bp->by_name[hash_name(c->name, c->len) & (bp->cap - 1)];
  while (*pp != c)
    pp = &(*pp)->next_name;
  *pp = c->next_name;
  if (c->room != 0)
    unlink_id(bp, c);
  bp->nchans--;
  free(c);
}

/* --- scratch space for building commands and messages --------------------- */

static uint8_t *scratch(rc_backplane *bp, size_t n) {
  if (n > bp->scratch_cap) {
    size_t cap = bp->scratch_cap ? bp->scratch_cap : 4096;
    while (cap < n)
      cap *= 2;
    uint8_t *p = realloc(bp->scratch, cap);
    if (p == NULL)
      return NULL;
    bp->scratch = p;
    bp->scratch_cap = cap;
  }
  return bp->scratch;
}

/* A large message must not keep its scratch space for the server's life. */
static void scratch_trim(rc_backplane *bp) {
  if (bp->scratch_cap > (1u << 20)) {
    free(bp->scratch);
    bp->scratch = NULL;
    bp->scratch_cap = 0;
  }
}

/* --- subscriptions -------------------------------------------------------- */

/* SUBSCRIBE or UNSUBSCRIBE for n channel entries. Returns 0 or -1. */
static int send_sub(rc_backplane *bp, const char *verb, rc_chan **chans,
                    size_t n) {
  const char *argv[RC__SUB_BATCH + 1];
  size_t lens[RC__SUB_BATCH + 1];
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += bp->chan_head + chans[i]->len;
  char *buf = (char *)scratch(bp, total ? total : 1);
  if (buf == NULL)
    return -1;
  argv[0] = verb;
  lens[0] = strlen(verb);
  char *p = buf;
  for (size_t i = 0; i < n; i++) {
    memcpy(p, bp->chan, bp->chan_head);
    memcpy(p + bp->chan_head, chans[i]->name, chans[i]->len);
    argv[i + 1] = p;
    lens[i + 1] = bp->chan_head + chans[i]->len;
    p += lens[i + 1];
  }
  /* Their answers are pushes (on_sub_reply), not replies anyone waits for. */
  return link_command(&bp->sub, (int)n + 1, argv, lens, NULL, NULL);
}

/* Brings c's subscription towards what its local room needs; deletes an
 * entry that was freed once nothing is in flight for it. */
static void chan_sync(rc_backplane *bp, rc_chan *c) {
  int want = c->live != NULL;
  if (bp->sub.state == LINK_READY) {
    if (want && c->sub == SUB_NONE) {
      if (send_sub(bp, "SUBSCRIBE", &c, 1) == 0)
        c->sub = SUB_PENDING;
    } else if (!want && c->sub == SUB_ON) {
      if (send_sub(bp, "UNSUBSCRIBE", &c, 1) == 0) {
        c->sub = SUB_LEAVING;
        bp->nsubs--;
        store(&bp->s->st_bp_channels, bp->nsubs);
      }
    }
  }
  if (c->room == 0 && c->live == NULL && c->sub == SUB_NONE)
    chan_delete(bp, c);
}

static void resubscribe_all(rc_backplane *bp) {
  rc_chan *batch[RC__SUB_BATCH];
  size_t n = 0;
  for (uint32_t i = 0; i < bp->cap; i++) {
    for (rc_chan *c = bp->by_name[i]; c != NULL; c = c->next_name) {
      if (c->live == NULL || c->sub != SUB_NONE)
        continue;
      batch[n++] = c;
      if (n == RC__SUB_BATCH) {
        if (send_sub(bp, "SUBSCRIBE", batch, n) == 0)
          for (size_t k = 0; k < n; k++)
            batch[k]->sub = SUB_PENDING;
        n = 0;
      }
    }
  }
  if (n > 0 && send_sub(bp, "SUBSCRIBE", batch, n) == 0)
    for (size_t k = 0; k < n; k++)
      batch[k]->sub = SUB_PENDING;
}

/* The subscriber connection is gone: so are its subscriptions. */
static void subscriptions_lost(rc_backplane *bp) {
  for (uint32_t i = 0; i < bp->cap; i++) {
    rc_chan *c = bp->by_name[i];
    while (c != NULL) {
      rc_chan *next = c->next_name;
      c->sub = SUB_NONE;
      if (c->room == 0 && c->live == NULL)
        chan_delete(bp, c);
      c = next;
    }
  }
  bp->nsubs = 0;
  store(&bp->s->st_bp_channels, 0);
}

/* --- messages from the other servers -------------------------------------- */

/* 1 unless publisher id already sent seq (a later copy of a message for
 * several rooms). */
static int peer_fresh(rc_backplane *bp, uint64_t id, uint64_t seq) {
  uint64_t now = uv_now(&bp->s->loop);
  for (uint32_t i = 0; i < bp->npeers; i++) {
    rc_peer *p = &bp->peers[i];
    if (p->id != id)
      continue;
    p->seen = now;
    if (seq <= p->seq)
      return 0;
    p->seq = seq;
    return 1;
  }
  /* New publisher: forget the ones unheard of for long (restarted servers
   * come back with new ids). */
  uint32_t w = 0;
  for (uint32_t i = 0; i < bp->npeers; i++)
    if (now - bp->peers[i].seen < RC__PEER_IDLE_MS)
      bp->peers[w++] = bp->peers[i];
  bp->npeers = w;
  if (bp->npeers == bp->cappeers) {
    uint32_t cap = bp->cappeers ? bp->cappeers * 2 : 16;
    rc_peer *p = realloc(bp->peers, cap * sizeof(*p));
    if (p == NULL)
      return 1; /* deliver; a duplicate is then possible, a loss is not */
    bp->peers = p;
    bp->cappeers = cap;
  }
  bp->peers[bp->npeers++] = (rc_peer){.id = id, .seq = seq, .seen = now};
  return 1;
}

static void deliver(rc_backplane *bp, const char *name, size_t name_len,
                    const uint8_t *p, size_t len) {
  rc_server *s = bp->s;
  int is_text, multi = 0;
  const uint8_t *names = NULL;
  size_t count = 0;
  if (len >= RC__HEADER && p[0] == 0 && p[1] == 'r' && p[2] == 'c') {
    uint8_t flags = p[3];
    if ((flags & 0xf0) != RC__VERSION) {
      bump(&s->st_bp_invalid, 1);
      return;
    }
    uint64_t from = get64(p + 4);
    if (from == s->id)
      return; /* ours: our members had it at once */
    if (!peer_fresh(bp, from, get64(p + 12)))
      return;
    is_text = flags & RC__F_TEXT;
    multi = (flags & RC__F_MULTI) != 0;
    p += RC__HEADER;
    len -= RC__HEADER;
    if (multi) {
      if (len < 2)
        goto invalid;
      count = get16(p);
      names = p + 2;
      const uint8_t *q = names, *end = p + len;
      for (size_t i = 0; i < count; i++) {
        if (end - q < 2 || (size_t)(end - q - 2) < get16(q))
          goto invalid;
        q += 2 + get16(q);
      }
      len -= (size_t)(q - p);
      p = q;
    }
    if (len > s->cfg.max_message_size ||
        (is_text && !rc_utf8_valid(p, len)))
      goto invalid;
  } else {
    if (len > s->cfg.max_message_size)
      goto invalid;
    is_text = rc_utf8_valid(p, len); /* PUBLISHed by another program */
  }
  rc_buf *b = rc__buf_message(is_text, p, len);
  if (b == NULL)
    return;
  if (!multi) {
    rc_chan *c = chan_by_name(bp, name, name_len);
    if (c != NULL && c->live != NULL)
      rc__room_publish(s, c->live->id, b, 0);
  } else {
    uint64_t few[16];
    uint64_t *ids = count <= 16 ? few : malloc(count * sizeof(*ids));
    if (ids != NULL) {
      size_t n = 0;
      const uint8_t *q = names;
      for (size_t i = 0; i < count; i++) {
        size_t l = get16(q);
        rc_chan *c = chan_by_name(bp, (const char *)q + 2, l);
        if (c != NULL && c->live != NULL)
          ids[n++] = c->live->id;
        q += 2 + l;
      }
      rc__room_broadcast(s, ids, n, b, 0);
      if (ids != few)
        free(ids);
    }
  }
  rc__buf_unref(b);
  bump(&s->st_bp_received, 1);
  return;
invalid:
  bump(&s->st_bp_invalid, 1);
}

/* --- the two connections -------------------------------------------------- */

static void link_connect(rc_link *l);
static void link_lost(rc_link *l);
static void out_flush(rc_backplane *bp);

static void update_up(rc_backplane *bp) {
  int up = bp->sub.state == LINK_READY && bp->cmd.state == LINK_READY;
  if (up == bp->up)
    return;
  bp->up = up;
  store(&bp->s->st_bp_up, (uint64_t)up);
  if (bp->closing)
    return;
  char text[200];
  unsigned rooms = 0;
  for (uint32_t i = 0; up && i < bp->cap; i++)
    for (rc_chan *c = bp->by_name[i]; c != NULL; c = c->next_name)
      rooms += c->live != NULL;
  if (up)
    snprintf(text, sizeof(text), "connected to %s:%d, %u rooms subscribed",
             bp->host, bp->port, rooms);
  else
    snprintf(text, sizeof(text), "%s",
             bp->sub.state != LINK_READY ? bp->sub.why : bp->cmd.why);
  state_event(bp, up ? BP_UP : BP_DOWN, text);
}

static void on_timer(uv_timer_t *t);

static void timer_in(rc_link *l, uint64_t ms) {
  /* Fails only for a closing handle, when no timer is wanted anyway. */
  (void)uv_timer_start(&l->timer, on_timer, ms, 0);
}

static uint64_t backoff_ms(rc_link *l) {
  rc_backplane *bp = l->bp;
  uint64_t d = RC__RETRY_FIRST_MS;
  for (unsigned i = 0; i < l->attempt && d < RC__RETRY_MAX_MS; i++)
    d *= 2;
  if (d > RC__RETRY_MAX_MS)
    d = RC__RETRY_MAX_MS;
  bp->rng ^= bp->rng << 13; /* xorshift64: jitter in [d/2, d] */
  bp->rng ^= bp->rng >> 7;
  bp->rng ^= bp->rng << 17;
  return d / 2 + bp->rng % (d / 2 + 1);
}

static void link_ready(rc_link *l) {
  rc_backplane *bp = l->bp;
  l->state = LINK_READY;
  (void)uv_timer_stop(&l->timer); /* the deadline; always returns 0 */
  if (l->ever_ready)
    bump(&bp->s->st_bp_reconnects, 1);
  l->ever_ready = 1;
  if (l->subscriber)
    resubscribe_all(bp);
  else
    out_flush(bp);
  update_up(bp);
}

/* Ends l's connection with reason why; link_lost follows at once. */
static void link_drop(rc_link *l, const char *why) {
  if (l->sock == NULL)
    return;
  snprintf(l->why, sizeof(l->why), "%s", why);
  sock_release(l);
  link_lost(l);
}

/* link_drop for a Redis that broke the protocol: the next attempt waits
 * its backoff, as after a failed connection, not a moment. */
static void link_drop_bad(rc_link *l, const char *why) {
  l->bad = 1;
  link_drop(l, why);
}

static void link_lost(rc_link *l) {
  rc_backplane *bp = l->bp;
  int was_ready = l->state == LINK_READY && !l->bad;
  int was_up = bp->up;
  l->bad = 0;
  sock_release(l);
  l->state = LINK_DOWN;
  l->draining = 0;
  waiters_fail(l);
  if (l->subscriber)
    subscriptions_lost(bp);
  else
    bp->inflight = 0;
  update_up(bp);
  if (bp->closing) {
    if (!l->subscriber && !uv_is_closing((uv_handle_t *)&bp->grace))
      uv_close((uv_handle_t *)&bp->grace, NULL);
    return;
  }
  if (!was_ready || !was_up) { /* else update_up has said why */
    char text[220];
    snprintf(text, sizeof(text), "%s:%d: %s", bp->host, bp->port, l->why);
    state_event(bp, BP_RETRY, text);
  }
  /* A healthy connection that ends is tried again at once; one that broke
   * the protocol keeps backing off, however often it got ready. */
  if (was_ready)
    l->attempt = 0;
  uint64_t ms = was_ready ? 0 : backoff_ms(l);
  l->attempt++;
  timer_in(l, ms);
}

/* Answers to AUTH and SELECT, and the command connection's first PING. */
static void on_setup_reply(rc_link *l, redisReply *r, void *priv) {
  if (r == NULL)
    return; /* the connection is gone */
  if (r->type == REDIS_REPLY_ERROR) {
    char why[160];
    snprintf(why, sizeof(why), "%s: %.*s", (const char *)priv,
             (int)(r->len < 120 ? r->len : 120), r->str);
    link_drop(l, why);
    return;
  }
  if (strcmp(priv, "PING") == 0 && l->state == LINK_CONNECTING)
    link_ready(l);
}

static int is_string(const redisReply *r) {
  return r->type == REDIS_REPLY_STRING;
}

/* A push on the subscriber connection: ["message", channel, payload] or
 * ["subscribe" | "unsubscribe", channel, count]; anything else, an error
 * included, ends the connection (Redis never sends it). */
static void on_sub_reply(rc_link *l, redisReply *r) {
  rc_backplane *bp = l->bp;
  if (r->type == REDIS_REPLY_ERROR) {
    char why[160];
    snprintf(why, sizeof(why), "Redis: %.*s",
             (int)(r->len < 120 ? r->len : 120), r->str);
    link_drop_bad(l, why);
    return;
  }
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
      !is_string(r->element[0]) || !is_string(r->element[1])) {
    link_drop_bad(l, "Redis sent an unexpected reply to the subscriber");
    return;
  }
  const char *kind = r->element[0]->str;
  const redisReply *third = r->element[2];
  int on = strcasecmp(kind, "subscribe") == 0;
  int message = strcasecmp(kind, "message") == 0;
  if (message ? !is_string(third)
              : ((!on && strcasecmp(kind, "unsubscribe") != 0) ||
                 third->type != REDIS_REPLY_INTEGER)) {
    link_drop_bad(l, "Redis sent an unexpected push to the subscriber");
    return;
  }
  const char *ch = r->element[1]->str;
  size_t chlen = r->element[1]->len;
  int ours = chlen >= bp->chan_head &&
             memcmp(ch, bp->chan, bp->chan_head) == 0;
  const char *name = ch + bp->chan_head;
  size_t name_len = ours ? chlen - bp->chan_head : 0;
  if (message) {
    if (ours)
      deliver(bp, name, name_len, (const uint8_t *)third->str, third->len);
    return;
  }
  if (chlen == bp->sentinel_len && memcmp(ch, bp->sentinel, chlen) == 0) {
    if (on && l->state == LINK_CONNECTING)
      link_ready(l);
    return;
  }
  rc_chan *c = ours ? chan_by_name(bp, name, name_len) : NULL;
  if (c == NULL)
    return;
  if (on && c->sub == SUB_PENDING) {
    c->sub = SUB_ON;
    bp->nsubs++;
    store(&bp->s->st_bp_channels, bp->nsubs);
  } else if (!on) {
    c->sub = SUB_NONE;
  }
  chan_sync(bp, c);
}

/* Queued once connected, answered in this order. Returns 0 or -1. */
static int link_setup(rc_link *l) {
  rc_backplane *bp = l->bp;
  int r = 0;
  if (bp->password != NULL) {
    const char *argv[3] = {"AUTH", bp->username, bp->password};
    if (bp->username != NULL)
      r = link_command(l, 3, argv, NULL, on_setup_reply, "AUTH");
    else
      r = link_command(l, 2, (const char *[]){"AUTH", bp->password}, NULL,
                       on_setup_reply, "AUTH");
  }
  if (r == 0 && !l->subscriber && bp->db != 0) {
    char db[24];
    (void)snprintf(db, sizeof(db), "%d", bp->db); /* an int always fits */
    r = link_command(l, 2, (const char *[]){"SELECT", db}, NULL,
                     on_setup_reply, "SELECT");
  }
  if (r == 0 && l->subscriber) {
    const char *argv[2] = {"SUBSCRIBE", bp->sentinel};
    size_t lens[2] = {9, bp->sentinel_len};
    r = link_command(l, 2, argv, lens, NULL, NULL);
  } else if (r == 0) {
    r = link_command(l, 1, (const char *[]){"PING"}, NULL, on_setup_reply,
                     "PING");
  }
  return r;
}

static void on_tcp_connect(uv_connect_t *req, int status) {
  rc_sock *k = RC__CONTAINER_OF(req, rc_sock, connect);
  rc_link *l = k->link;
  if (l == NULL)
    return; /* let go meanwhile (status is UV_ECANCELED) */
  if (status < 0) {
    char why[160];
    snprintf(why, sizeof(why), "cannot connect: %s", uv_strerror(status));
    link_drop(l, why);
    return;
  }
  (void)uv_tcp_nodelay(&k->tcp, 1); /* an optimisation: failure is harmless */
  int r = uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
  if (r != 0 || link_setup(l) != 0)
    link_drop(l, r != 0 ? uv_strerror(r) : "cannot queue the first commands");
}

static void link_open(rc_link *l, const char *ip) {
  rc_backplane *bp = l->bp;
  struct sockaddr_storage addr;
  int r = uv_ip4_addr(ip, bp->port, (struct sockaddr_in *)&addr);
  if (r != 0)
    r = uv_ip6_addr(ip, bp->port, (struct sockaddr_in6 *)&addr);
  rc_sock *k = r == 0 ? calloc(1, sizeof(*k)) : NULL;
  if (k != NULL && sock_reader(k, l->subscriber) != 0) {
    free(k);
    k = NULL;
  }
  if (k == NULL) {
    snprintf(l->why, sizeof(l->why), "%s",
             r != 0 ? uv_strerror(r) : "out of memory");
    link_lost(l);
    return;
  }
  r = uv_tcp_init(&bp->s->loop, &k->tcp);
  if (r != 0) {
    redisReaderFree(k->reader);
    free(k);
    snprintf(l->why, sizeof(l->why), "%s", uv_strerror(r));
    link_lost(l);
    return;
  }
  k->tcp.data = k;
  k->link = l;
  l->sock = k;
  l->state = LINK_CONNECTING;
  r = uv_tcp_connect(&k->connect, &k->tcp, (struct sockaddr *)&addr,
                     on_tcp_connect);
  if (r != 0) {
    char why[160];
    snprintf(why, sizeof(why), "cannot connect: %s", uv_strerror(r));
    link_drop(l, why);
    return;
  }
  timer_in(l, RC__CONNECT_MS);
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  rc_link *l = RC__CONTAINER_OF(req, rc_link, gai);
  char ip[64] = "";
  for (struct addrinfo *ai = res; status == 0 && ai != NULL && !ip[0];
       ai = ai->ai_next) {
    if (ai->ai_family == AF_INET &&
        uv_ip4_name((struct sockaddr_in *)ai->ai_addr, ip, sizeof(ip)) != 0)
      ip[0] = '\0';
    else if (ai->ai_family == AF_INET6 &&
             uv_ip6_name((struct sockaddr_in6 *)ai->ai_addr, ip,
                         sizeof(ip)) != 0)
      ip[0] = '\0';
  }
  uv_freeaddrinfo(res);
  l->state = LINK_DOWN;
  if (l->bp->closing)
    return;
  if (ip[0] == '\0') {
    snprintf(l->why, sizeof(l->why), "cannot resolve %s: %s", l->bp->host,
             status != 0 ? uv_strerror(status) : "no address");
    link_lost(l);
    return;
  }
  link_open(l, ip);
}

static void link_connect(rc_link *l) {
  rc_backplane *bp = l->bp;
  struct sockaddr_in a4;
  struct sockaddr_in6 a6;
  if (uv_ip4_addr(bp->host, bp->port, &a4) == 0 ||
      uv_ip6_addr(bp->host, bp->port, &a6) == 0) {
    link_open(l, bp->host);
    return;
  }
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int r = uv_getaddrinfo(&bp->s->loop, &l->gai, on_resolved, bp->host, NULL,
                         &hints);
  if (r != 0) {
    snprintf(l->why, sizeof(l->why), "cannot resolve %s: %s", bp->host,
             uv_strerror(r));
    link_lost(l);
    return;
  }
  l->state = LINK_RESOLVING;
}

static void on_timer(uv_timer_t *t) {
  rc_link *l = RC__CONTAINER_OF(t, rc_link, timer);
  if (l->bp->closing)
    return;
  if (l->state == LINK_DOWN)
    link_connect(l);
  else if (l->state == LINK_CONNECTING)
    link_drop(l, "no answer in time");
}

/* --- publishing ----------------------------------------------------------- */

static void on_published(rc_link *l, redisReply *reply, void *priv) {
  rc_backplane *bp = l->bp;
  size_t len = (size_t)(uintptr_t)priv;
  bp->inflight = bp->inflight > len ? bp->inflight - len : 0;
  if (reply != NULL && bp->out_head != NULL)
    out_flush(bp);
}

/* 0: cmd is the link's now; -1: the caller keeps it. */
static int out_send(rc_backplane *bp, char *cmd, size_t len) {
  if (link_send(&bp->cmd, cmd, len, on_published, (void *)(uintptr_t)len) !=
      0)
    return -1;
  bp->inflight += len;
  bump(&bp->s->st_bp_published, 1);
  return 0;
}

/* Hands the buffer to Redis, oldest first, while Redis keeps up. */
static void out_flush(rc_backplane *bp) {
  while (bp->out_head != NULL && bp->cmd.state == LINK_READY) {
    rc_outmsg *m = bp->out_head;
    if (bp->inflight > 0 && bp->inflight + m->len > bp->buffer_max &&
        !bp->closing)
      break;
    if (out_send(bp, m->cmd, m->len) != 0)
      break;
    bp->out_head = m->next;
    if (bp->out_head == NULL)
      bp->out_tail = NULL;
    bp->out_bytes -= m->len;
    free(m);
  }
  store(&bp->s->st_bp_buffered, bp->out_bytes);
}

/* Takes cmd (formatted by hiredis, freed with free). */
static void out_push(rc_backplane *bp, char *cmd, size_t len) {
  if (bp->cmd.state == LINK_READY && bp->out_head == NULL &&
      (bp->inflight == 0 || bp->inflight + len <= bp->buffer_max) &&
      out_send(bp, cmd, len) == 0)
    return;
  rc_outmsg *m = NULL;
  if (bp->out_bytes + len <= bp->buffer_max)
    m = malloc(sizeof(*m));
  if (m == NULL) {
    free(cmd);
    bump(&bp->s->st_bp_dropped, 1);
    return;
  }
  m->next = NULL;
  m->len = len;
  m->cmd = cmd;
  if (bp->out_tail != NULL)
    bp->out_tail->next = m;
  else
    bp->out_head = m;
  bp->out_tail = m;
  bp->out_bytes += len;
  store(&bp->s->st_bp_buffered, bp->out_bytes);
}

void rc__bp_publish(rc_server *s, const uint64_t *rooms, size_t n,
                    const rc_buf *b) {
  rc_backplane *bp = s->bp;
  if (bp->closing || n == 0)
    return;
  rc_chan *few[16];
  rc_chan **chans = n <= 16 ? few : malloc(n * sizeof(*chans));
  if (chans == NULL)
    return;
  size_t k = 0, names = 0;
  for (size_t i = 0; i < n; i++) {
    rc_chan *c = chan_by_id(bp, rooms[i]);
    if (c == NULL)
      continue;
    int seen = 0;
    for (size_t j = 0; j < k && !seen; j++)
      seen = chans[j] == c;
    if (!seen) {
      chans[k++] = c;
      names += 2 + c->len;
    }
  }
  if (k == 0 || k > 0xffff)
    goto done;
  /* The frame holds the payload after its header. */
  unsigned op = b->data[0] & 0x0f;
  unsigned code = b->data[1] & 0x7f;
  size_t hl = code < 126 ? 2 : code == 126 ? 4 : 10;
  size_t plen = b->len - hl;
  size_t mlen = RC__HEADER + (k > 1 ? 2 + names : 0) + plen;
  uint8_t *msg = scratch(bp, mlen);
  if (msg == NULL)
    goto done;
  msg[0] = 0;
  msg[1] = 'r';
  msg[2] = 'c';
  msg[3] = (uint8_t)(RC__VERSION | (op == RC_OP_TEXT ? RC__F_TEXT : 0) |
                     (k > 1 ? RC__F_MULTI : 0));
  put64(msg + 4, s->id);
  put64(msg + 12, ++bp->seq);
  uint8_t *p = msg + RC__HEADER;
  if (k > 1) {
    put16(p, k);
    p += 2;
    for (size_t i = 0; i < k; i++) {
      put16(p, chans[i]->len);
      memcpy(p + 2, chans[i]->name, chans[i]->len);
      p += 2 + chans[i]->len;
    }
  }
  if (plen > 0)
    memcpy(p, b->data + hl, plen);
  for (size_t i = 0; i < k; i++) {
    size_t clen = bp->chan_head + chans[i]->len; /* <= chan_cap */
    memcpy(bp->chan + bp->chan_head, chans[i]->name, chans[i]->len);
    const char *argv[3] = {"PUBLISH", bp->chan, (const char *)msg};
    size_t lens[3] = {7, clen, mlen};
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, 3, argv, lens);
    if (len < 0) {
      bump(&s->st_bp_dropped, 1);
      continue;
    }
    out_push(bp, cmd, (size_t)len);
  }
  scratch_trim(bp);
done:
  if (chans != few)
    free(chans);
}

/* --- rooms ---------------------------------------------------------------- */

void rc__bp_room_made(rc_server *s, rc_room *r) {
  rc_chan *c = chan_by_id(s->bp, r->id);
  if (c == NULL)
    return;
  r->chan = c;
  c->live = r;
  chan_sync(s->bp, c);
}

void rc__bp_room_gone(rc_server *s, rc_room *r) {
  rc_chan *c = r->chan;
  if (c == NULL)
    return;
  r->chan = NULL;
  c->live = NULL;
  chan_sync(s->bp, c);
}

void rc__bp_room_freed(rc_server *s, uint64_t id) {
  rc_backplane *bp = s->bp;
  rc_chan *c = chan_by_id(bp, id);
  if (c == NULL)
    return;
  unlink_id(bp, c);
  c->room = 0;
  chan_sync(bp, c);
}

static void name_room(rc_backplane *bp, uint64_t id, const char *name,
                      size_t len) {
  if (id == 0 || chan_by_id(bp, id) != NULL)
    return; /* named once */
  if (bp->nchans + 1 > bp->cap && tables_grow(bp) != 0)
    return;
  rc_chan *c = chan_by_name(bp, name, len);
  if (c != NULL && c->room != 0)
    return; /* the name is another room's */
  if (c == NULL) {
    c = calloc(1, sizeof(*c) + len);
    if (c == NULL)
      return;
    c->len = (uint32_t)len;
    memcpy(c->name, name, len);
    link_name(bp, c);
    bp->nchans++;
  }
  c->room = id; /* a freed entry still unsubscribing is taken over */
  link_id(bp, c);
  rc_room *r = rc__room_get(bp->s, id, 0);
  if (r != NULL) {
    r->chan = c;
    c->live = r;
  }
  chan_sync(bp, c);
}

/* --- commands from the embedder ------------------------------------------- */

static void on_command_reply(rc_link *l, redisReply *reply, void *priv) {
  uint64_t token;
  memcpy(&token, priv, sizeof(token));
  free(priv);
  reply_event(l->bp, token, reply, "the connection to Redis was lost");
}

void rc__bp_command(rc_server *s, rc_cmd *cmd) {
  rc_backplane *bp = s->bp;
  if (cmd->type == RC_CMD_ROOM_NAME) {
    name_room(bp, cmd->room, cmd->text, cmd->text_len);
    return;
  }
  if (bp->cmd.state != LINK_READY) {
    reply_event(bp, cmd->conn, NULL, "the Redis backplane is not connected");
    return;
  }
  uint64_t *token = malloc(sizeof(*token));
  if (token != NULL) {
    *token = cmd->conn;
    if (link_send(&bp->cmd, cmd->text, cmd->text_len, on_command_reply,
                  token) == 0) {
      cmd->text = NULL; /* the link's now */
      return;
    }
    free(token);
  }
  reply_event(bp, cmd->conn, NULL, "cannot send the command to Redis");
}

/* --- life ----------------------------------------------------------------- */

static char *dup_or_null(const char *str) {
  return str != NULL ? strdup(str) : NULL;
}

/* Writes the head of every channel of prefix (n bytes) to out, when out is
 * not NULL: the prefix with '\\' and '|' escaped by a '\\', then '|'.
 * Returns its length. No room name holds a NUL and no escaped prefix an
 * unescaped '|': the first unescaped '|' of a channel ends its prefix, so
 * two prefixes never share a channel, however they nest. */
static size_t chan_head(const char *prefix, size_t n, char *out) {
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

/* The channel head and the sentinel (the escaped prefix, then
 * "\0server:" and the id: no room's channel, see the top). */
static int names_make(rc_backplane *bp) {
  size_t plen = strlen(bp->prefix);
  size_t head = chan_head(bp->prefix, plen, NULL);
  bp->chan_head = head;
  bp->chan_cap = head + RC_ROOM_NAME_MAX;
  bp->chan = malloc(bp->chan_cap);
  static const char tag[] = "server:";
  size_t cap = (head - 1) + 1 + (sizeof(tag) - 1) + 16 + 1; /* + the NUL */
  bp->sentinel = malloc(cap);
  if (bp->chan == NULL || bp->sentinel == NULL)
    return UV_ENOMEM;
  (void)chan_head(bp->prefix, plen, bp->chan);
  memcpy(bp->sentinel, bp->chan, head - 1);
  bp->sentinel[head - 1] = '\0';
  char *id = bp->sentinel + head;
  int n = snprintf(id, cap - head, "%s%016llx", tag,
                   (unsigned long long)bp->s->id);
  if (n != (int)(sizeof(tag) - 1 + 16))
    return UV_EINVAL;
  bp->sentinel_len = head + (size_t)n;
  return 0;
}

int rc__bp_create(rc_server *s) {
  rc_config *cfg = &s->cfg;
  if (cfg->backplane_host == NULL)
    return 0;
  rc_backplane *bp = calloc(1, sizeof(*bp));
  if (bp == NULL)
    return UV_ENOMEM;
  bp->s = s;
  const char *prefix = cfg->backplane_prefix ? cfg->backplane_prefix
                                             : "roomcast:";
  if (strlen(prefix) > RC_BACKPLANE_PREFIX_MAX) {
    free(bp);
    return UV_EINVAL;
  }
  bp->host = strdup(cfg->backplane_host);
  bp->prefix = strdup(prefix);
  bp->username = dup_or_null(cfg->backplane_username);
  bp->password = dup_or_null(cfg->backplane_password);
  s->bp = bp;
  if (bp->host == NULL || bp->prefix == NULL ||
      (cfg->backplane_username && bp->username == NULL) ||
      (cfg->backplane_password && bp->password == NULL))
    return UV_ENOMEM;
  /* The copies outlive the caller's strings. */
  cfg->backplane_host = bp->host;
  cfg->backplane_prefix = bp->prefix;
  cfg->backplane_username = bp->username;
  cfg->backplane_password = bp->password;
  int r = names_make(bp);
  if (r != 0)
    return r;
  bp->port = cfg->backplane_port > 0 ? cfg->backplane_port : 6379;
  bp->db = cfg->backplane_db;
  bp->buffer_max = cfg->backplane_buffer;
  bp->rng = s->id | 1;
  bp->sub.bp = bp->cmd.bp = bp;
  bp->sub.subscriber = 1;
  /* A message, its header and the names of the rooms it is for, as one
   * RESP push; any reply to the embedder's commands (Redis's own bound on
   * a string is 512 MiB). */
  bp->sub.reply_max = cfg->max_message_size + RC__HEADER + 2 +
                      0xffff * (2 + (size_t)RC_ROOM_NAME_MAX) +
                      bp->chan_cap + 128;
  bp->cmd.reply_max = (size_t)1 << 30;
  return 0;
}

void rc__bp_start(rc_server *s) {
  rc_backplane *bp = s->bp;
  /* Timers on an initialised loop cannot fail to initialise. */
  (void)uv_timer_init(&s->loop, &bp->sub.timer);
  (void)uv_timer_init(&s->loop, &bp->cmd.timer);
  (void)uv_timer_init(&s->loop, &bp->grace);
  bp->started = 1;
  timer_in(&bp->sub, 0);
  timer_in(&bp->cmd, 0);
}

static void on_grace(uv_timer_t *t) {
  rc_backplane *bp = RC__CONTAINER_OF(t, rc_backplane, grace);
  link_drop(&bp->cmd, "stopping");
}

void rc__bp_close(rc_server *s) {
  rc_backplane *bp = s->bp;
  if (!bp->started || bp->closing)
    return;
  bp->closing = 1;
  rc_link *links[2] = {&bp->sub, &bp->cmd};
  for (int i = 0; i < 2; i++) {
    rc_link *l = links[i];
    uv_close((uv_handle_t *)&l->timer, NULL);
    if (l->state == LINK_RESOLVING)
      (void)uv_cancel((uv_req_t *)&l->gai); /* its callback runs anyway */
  }
  link_drop(&bp->sub, "stopping");
  if (bp->cmd.state == LINK_READY) {
    out_flush(bp); /* what waits goes, bound or not */
    /* Answers the last publishes, then disconnects; or the grace timer
     * cuts it. */
    if (uv_timer_start(&bp->grace, on_grace, RC__GRACE_MS, 0) != 0)
      on_grace(&bp->grace);
    if (bp->cmd.wlen == 0)
      link_drop(&bp->cmd, "stopping");
    else
      bp->cmd.draining = 1;
  } else {
    link_drop(&bp->cmd, "stopping");
  }
  if (bp->cmd.sock == NULL && !uv_is_closing((uv_handle_t *)&bp->grace))
    uv_close((uv_handle_t *)&bp->grace, NULL);
}

void rc__bp_free(rc_server *s) {
  rc_backplane *bp = s->bp;
  if (bp == NULL)
    return;
  for (uint32_t i = 0; i < bp->cap; i++) {
    rc_chan *c = bp->by_name[i];
    while (c != NULL) {
      rc_chan *next = c->next_name;
      free(c);
      c = next;
    }
  }
  free(bp->by_name);
  free(bp->by_id);
  while (bp->out_head != NULL) {
    rc_outmsg *m = bp->out_head;
    bp->out_head = m->next;
    free(m->cmd);
    free(m);
  }
  free(bp->sub.wq);
  free(bp->cmd.wq);
  free(bp->peers);
  free(bp->scratch);
  free(bp->host);
  free(bp->prefix);
  free(bp->chan);
  free(bp->sentinel);
  free(bp->username);
  free(bp->password);
  free(bp);
  s->bp = NULL;
}

/* --- the public API ------------------------------------------------------- */

uint64_t rc_server_id(const rc_server *s) { return s->id; }

int rc_server_room_name(rc_server *s, uint64_t room, const char *name,
                        size_t len) {
  if (room == 0 || len == 0 || len > RC_ROOM_NAME_MAX ||
      memchr(name, '\0', len) != NULL)
    return UV_EINVAL;
  if (s->bp == NULL)
    return 0;
  rc_cmd *cmd = rc__cmd_make(RC_CMD_ROOM_NAME, 0);
  if (cmd == NULL)
    return UV_ENOMEM;
  cmd->room = room;
  cmd->text = malloc(len + 1);
  if (cmd->text == NULL) {
    rc__cmd_free(cmd);
    return UV_ENOMEM;
  }
  memcpy(cmd->text, name, len);
  cmd->text[len] = '\0';
  cmd->text_len = len;
  return rc__cmd_queue(s, cmd);
}

/* Commands that would change what the shared command connection is. */
static int forbidden(const char *name, size_t len) {
  static const char *const names[] = {
      "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE",
      "SUNSUBSCRIBE", "MONITOR", "SELECT", "AUTH", "HELLO", "QUIT", "RESET",
      "CLIENT", "SYNC", "PSYNC", "WAIT", "MULTI", "EXEC", "DISCARD", "WATCH",
      "UNWATCH", "BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BZPOPMIN",
      "BZPOPMAX", "BLMPOP", "BZMPOP", "XREAD", "XREADGROUP", "SHUTDOWN",
      "WAITAOF", "DEBUG"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
      return 1;
  return 0;
}

int rc_server_redis(rc_server *s, uint64_t token, int argc,
                    const char **argv, const size_t *argvlen) {
  if (s->bp == NULL || argc < 1 || forbidden(argv[0], argvlen[0]))
    return UV_EINVAL;
  rc_cmd *cmd = rc__cmd_make(RC_CMD_REDIS, token);
  if (cmd == NULL)
    return UV_ENOMEM;
  char *text = NULL;
  int len = redisFormatCommandArgv(&text, argc, argv, argvlen);
  if (len < 0) {
    rc__cmd_free(cmd);
    return UV_ENOMEM;
  }
  cmd->text = text; /* hiredis allocates it with malloc: rc__cmd_free frees */
  cmd->text_len = (size_t)len;
  return rc__cmd_queue(s, cmd);
}
