/* rc_backplane.c - rooms shared across servers through Redis pub/sub.
 *
 * Three files make the backplane, one concern each:
 *   csrc/proto/rc_bpwire.c  the wire, sans I/O: channel names, the envelope
 *                           of a message, commands, the checks of replies;
 *   csrc/loop/rc_redis.c    one Redis connection on libuv (hiredis's reader
 *                           only), with reconnection: the seam;
 *   this file               what the backplane decides: which channels are
 *                           subscribed, what is published and buffered,
 *                           which messages reach which rooms, its state.
 *
 * Who calls whom. The server creates, starts, closes and frees it and hands
 * it RC_CMD_ROOM_NAME and RC_CMD_REDIS (rc__bp_*, rc_internal.h). Rooms
 * never call it by name: it sets s->room_hooks (made, gone, freed,
 * published; contract in rc_internal.h) and reaches rooms through the room
 * API (rc__room_get to read, rc__room_deliver to fan a message out). It
 * holds room ids, never rc_room pointers.
 *
 * Two Redis connections run on the core's loop: `sub` in subscriber mode,
 * `cmd` for PUBLISH and the embedder's commands (rc_server_redis). A
 * message from another server is framed once and fanned out to the local
 * members here, on the loop thread: Python never sees it. On `sub`, once
 * its setup is answered, every reply must be a push that rc_bpwire_push_parse
 * accepts; anything else ends the connection and the usual reconnection
 * follows: a bad Redis costs the backplane, never the server.
 *
 * Channels. A named room has a channel entry (rc_chan) from the moment it
 * is named until it is freed, whether or not it has local members; its
 * subscription follows the local room: SUBSCRIBE when the room is made
 * (first local member), UNSUBSCRIBE when it goes (last member left). A
 * SUBSCRIBE is never sent while an UNSUBSCRIBE of the same channel is in
 * flight (its answer would be taken for the new subscription's): each
 * entry tracks its state and the next step waits for the answer. The
 * server's sentinel channel (rc_bpwire.h), subscribed first and never
 * left, keeps the connection in subscriber mode; its answer says that the
 * connection is ready.
 *
 * Messages. Each publish is PUBLISHed once per named room it targets, in
 * the envelope of rc_bpwire.h. A server skips the messages that carry its
 * own id (its members had them at once). The copies of a message for
 * several rooms share one sequence number and come one after the other
 * from their publisher: the first copy a server gets reaches the members
 * of every listed room once, the others are skipped, since each
 * publisher's sequence only grows. A message without the envelope
 * (PUBLISHed by another program) is delivered as it is: text when it is
 * UTF-8, else binary. Whoever can PUBLISH on Redis can send to the rooms
 * (keep Redis on a trusted network, or reach it through TLS:
 * rc_server_backplane_tls, rc_redis.h); a payload over
 * max_message_size is dropped and counted (backplane_invalid), as is a
 * malformed message.
 *
 * Rooms with history (rc_core.h, "joining a room whose history Redis
 * keeps"). Their messages are published by a script in Redis, which gives
 * each its offset and stores it in the room's stream before PUBLISHing it
 * (python/roomcast/_redis_history.py), so every server, the publisher's
 * included, delivers them from here in offset order; the publisher's
 * server alone skips the connection the message excludes. A connection
 * joining such a room is first a pending entry of its channel (rc_pending):
 * the channel is subscribed for it, it is told once the subscription is
 * active, and until the embedder ends the join every message of the room
 * is kept for it (references, at most max_queue_bytes of them). The end
 * sends what the embedder read from the stream, then the kept messages
 * past the last offset it read, then joins: the two meet without a gap,
 * since the subscription was active before the stream was read, and
 * without a duplicate, since the offsets say where they meet.
 *
 * Coalescing. A message of a room with history makes a round trip before
 * its members get it: from the embedder's handler through the script and
 * back on the subscription. Under a burst, the writes of one turn would
 * carry what has come back while the rest is still on its way, and each
 * member would get two writes (two system calls) where a room without
 * history gets one. So, while the server is loaded (a flush took
 * RC__LONG_FLUSH_NS or more, lately: within four times its length), these
 * messages are held until the end of the turn, and past it while more may
 * follow: events that may lead to pushes (not Redis replies) wait for the
 * embedder or it still handles the ones it took (rc_server_idle ends
 * that), or commands wait for Redis's answer.
 * They are held half that long flush at most (RC__COALESCE_MAX_MS at
 * most): less than a member waits anyway behind one flush, and never when
 * the server is not loaded. A script's answer can arrive a poll before
 * what it published, so once nothing is left to wait for, one more turn
 * reads what may be on its way (`settle`). Held messages keep their order;
 * every command but a Redis one releases them first
 * (rc__bp_before_commands), as does the end. The run of a room's held
 * messages is written as a publish run is (rc__room_deliver_run).
 *
 * Failures. A connection that fails is retried by the seam (rc_redis.h);
 * the subscriber then resubscribes every room with local members.
 * Publishes made while the command connection is down, or while Redis has
 * not yet answered backplane_buffer bytes of them, wait in order in a
 * buffer of that many bytes; past it they are dropped and counted. Each
 * change of state is an RC_EV_BACKPLANE event.
 *
 * Lifetime: created with the server (rc__bp_create), its connections
 * started with the loop (rc__bp_start), closed when the loop ends
 * (rc__bp_close: the last publishes get RC__GRACE_MS), freed after it
 * (rc__bp_free). Loop thread only, but for rc_server_room_name and
 * rc_server_redis (any thread: they queue commands).
 */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop/rc_internal.h"
#include "loop/rc_redis.h"
#include "proto/rc_bpwire.h"
#include "proto/rc_frame.h"
#include "proto/rc_tls.h"

#define RC__GRACE_MS 1000      /* stopping: the last publishes may take this */
#define RC__COALESCE_MAX_MS 5u /* coalescing (above): held at most this */
#define RC__SUB_BATCH 256      /* channels per SUBSCRIBE when resubscribing */
/* A publisher unheard of this long is forgotten. */
#define RC__PEER_IDLE_MS 600000

enum { SUB_NONE, SUB_PENDING, SUB_ON, SUB_LEAVING };

typedef struct rc_kept { /* a message kept for a pending join */
  rc_buf *b;
  uint64_t offset;
} rc_kept;

typedef struct rc_pending { /* a connection joining a room with history */
  struct rc_pending *next;
  uint64_t conn;
  uint8_t told;     /* RC_EV_RECOVER sent */
  uint8_t overflow; /* what was kept passed max_queue_bytes: dropped */
  uint32_t n, cap;
  size_t bytes;
  rc_kept *kept;
} rc_pending;

typedef struct rc_chan {
  struct rc_chan *next_name, *next_id;
  uint64_t room; /* its room id; 0 once freed (kept until unsubscribed) */
  uint8_t live;  /* the local room exists (it has members) */
  uint8_t sub;   /* SUB_* */
  uint32_t len;
  rc_pending *pending; /* joins waiting for the history (see above) */
  char name[];         /* the room's name; the channel is head + name */
} rc_chan;

typedef struct rc_outmsg { /* a formatted PUBLISH waiting for Redis */
  struct rc_outmsg *next;
  size_t len;
  char *cmd;
} rc_outmsg;

typedef struct rc_peer {
  uint64_t id, seq, seen;
} rc_peer;

typedef struct rc_held { /* a delivery waiting to share a flush */
  uint64_t room, skip;
  rc_buf *b;
} rc_held;

typedef struct rc_backplane {
  rc_server *s;
  rc_redis sub, cmd;
  rc_tls_ctx *tls; /* both links' (rediss://), or NULL */
  struct rc__room_hooks hooks;
  char *host, *username, *password, *prefix;
  char *head; /* of every channel: the escaped prefix, then '|' */
  size_t head_len;
  int port, db;
  size_t buffer_max;
  uint64_t seq;
  char *sentinel; /* see rc_bpwire.h */
  size_t sentinel_len;
  rc_chan **by_name, **by_id;
  uint32_t cap, nchans, nsubs;
  rc_outmsg *out_head, *out_tail;
  size_t out_bytes; /* in the buffer */
  size_t inflight;  /* handed to Redis, not yet answered */
  rc_peer *peers;
  uint32_t npeers, cappeers;
  uint8_t *scratch; /* the envelope of the message being published */
  size_t scratch_cap;
  uv_timer_t grace;
  int started, closing, up;
  rc_held *held; /* coalescing (see above), oldest first */
  uint32_t nheld, capheld;
  int settled;       /* nothing was left to wait for at the last check */
  uv_timer_t linger; /* releases what is held at the latest */
  uv_idle_t settle;  /* one more turn (its poll does not block) */
} rc_backplane;

static void store(atomic_uint_fast64_t *a, uint64_t v) {
  atomic_store_explicit(a, v, memory_order_relaxed);
}

static void bump(atomic_uint_fast64_t *a, uint64_t n) {
  atomic_fetch_add_explicit(a, n, memory_order_relaxed);
}

static rc_backplane *bp_of(rc_redis *l) { return l->data; }

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

/* The reply to the embedder's command token, or error when there is none. */
static void reply_event(rc_backplane *bp, uint64_t token, const redisReply *r,
                        const char *error) {
  size_t len = r != NULL ? rc_bpwire_reply_size(r) : 5 + strlen(error);
  rc_event *ev = rc__event_new(RC_EV_REDIS, token, len);
  if (ev == NULL)
    return;
  if (r != NULL)
    (void)rc_bpwire_reply_put(r, ev->data);
  else
    (void)rc_bpwire_error_put(ev->data, error, len - 5);
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

static void pending_free(rc_pending *p) {
  for (uint32_t i = 0; i < p->n; i++)
    rc__buf_unref(p->kept[i].b);
  free(p->kept);
  free(p);
}

static void chan_free(rc_chan *c) {
  while (c->pending != NULL) {
    rc_pending *p = c->pending;
    c->pending = p->next;
    pending_free(p);
  }
  free(c);
}

/* The channel is wanted: its room has members here, or a join waits. */
static int wanted(const rc_chan *c) { return c->live || c->pending != NULL; }

static void chan_delete(rc_backplane *bp, rc_chan *c) {
  rc_chan **pp = &bp->by_name[hash_name(c->name, c->len) & (bp->cap - 1)];
  while (*pp != c)
    pp = &(*pp)->next_name;
  *pp = c->next_name;
  if (c->room != 0)
    unlink_id(bp, c);
  bp->nchans--;
  chan_free(c);
}

static rc_bpwire_room room_of(const rc_chan *c) {
  return (rc_bpwire_room){c->name, c->len};
}

/* --- subscriptions -------------------------------------------------------- */

/* SUBSCRIBE or UNSUBSCRIBE for n (<= RC__SUB_BATCH) channel entries. Their
 * answers are pushes (on_push), not replies anyone waits for. 0 or -1. */
static int send_sub(rc_backplane *bp, const char *verb, rc_chan **chans,
                    size_t n) {
  rc_bpwire_room rooms[RC__SUB_BATCH];
  for (size_t i = 0; i < n; i++)
    rooms[i] = room_of(chans[i]);
  size_t len;
  char *cmd = rc_bpwire_subscribe(&len, verb, bp->head, bp->head_len, rooms, n);
  if (cmd == NULL)
    return -1;
  if (rc__redis_send(&bp->sub, cmd, len, NULL, NULL) != 0) {
    free(cmd);
    return -1;
  }
  return 0;
}

/* Brings c's subscription towards what its local room needs; deletes an
 * entry that was freed once nothing is in flight for it. */
static void chan_sync(rc_backplane *bp, rc_chan *c) {
  if (rc__redis_is_ready(&bp->sub)) {
    if (wanted(c) && c->sub == SUB_NONE) {
      if (send_sub(bp, "SUBSCRIBE", &c, 1) == 0)
        c->sub = SUB_PENDING;
    } else if (!wanted(c) && c->sub == SUB_ON) {
      if (send_sub(bp, "UNSUBSCRIBE", &c, 1) == 0) {
        c->sub = SUB_LEAVING;
        bp->nsubs--;
        store(&bp->s->st_bp_channels, bp->nsubs);
      }
    }
  }
  if (c->room == 0 && !wanted(c) && c->sub == SUB_NONE)
    chan_delete(bp, c);
}

static void subscribe_batch(rc_backplane *bp, rc_chan **batch, size_t n) {
  if (n > 0 && send_sub(bp, "SUBSCRIBE", batch, n) == 0)
    for (size_t k = 0; k < n; k++)
      batch[k]->sub = SUB_PENDING;
}

static void resubscribe_all(rc_backplane *bp) {
  rc_chan *batch[RC__SUB_BATCH];
  size_t n = 0;
  for (uint32_t i = 0; i < bp->cap; i++) {
    for (rc_chan *c = bp->by_name[i]; c != NULL; c = c->next_name) {
      if (!wanted(c) || c->sub != SUB_NONE)
        continue;
      batch[n++] = c;
      if (n == RC__SUB_BATCH) {
        subscribe_batch(bp, batch, n);
        n = 0;
      }
    }
  }
  subscribe_batch(bp, batch, n);
}

static void recover_event(rc_server *s, uint64_t conn, uint64_t room,
                          uint16_t code);

/* The subscriber connection is gone: so are its subscriptions. The joins
 * still waiting for theirs are told they cannot have it. */
static void subscriptions_lost(rc_backplane *bp) {
  for (uint32_t i = 0; i < bp->cap; i++) {
    rc_chan *c = bp->by_name[i];
    while (c != NULL) {
      rc_chan *next = c->next_name;
      for (rc_pending *p = c->pending; p != NULL; p = p->next) {
        if (!p->told) {
          p->told = 1;
          recover_event(bp->s, p->conn, c->room, 0);
        }
      }
      c->sub = SUB_NONE;
      if (c->room == 0 && !wanted(c))
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

/* b to the local members of every room m lists that is named here. */
static void deliver_listed(rc_backplane *bp, const rc_bpwire_msg *m,
                           rc_buf *b) {
  uint64_t few[16];
  uint64_t *ids = m->nrooms <= 16 ? few : malloc(m->nrooms * sizeof(*ids));
  if (ids == NULL)
    return;
  size_t n = 0;
  const uint8_t *q = m->rooms;
  for (size_t i = 0; i < m->nrooms; i++) {
    const char *name;
    size_t len;
    q = rc_bpwire_next_room(q, &name, &len);
    rc_chan *c = chan_by_name(bp, name, len);
    if (c != NULL && c->live)
      ids[n++] = c->room;
  }
  rc__room_deliver(bp->s, ids, n, b, 0);
  if (ids != few)
    free(ids);
}

/* A message of a room with history, kept for the joins that wait (each
 * bounded by max_queue_bytes: past it, dropped and the join fails as a
 * slow consumer). */
static void keep_for_joins(rc_backplane *bp, rc_chan *c, rc_buf *b,
                           uint64_t offset, uint64_t skip) {
  size_t max = bp->s->cfg.max_queue_bytes;
  for (rc_pending *p = c->pending; p != NULL; p = p->next) {
    if (!p->told || p->overflow || p->conn == skip)
      continue; /* not told: the history will be read after it is */
    if (p->bytes + b->len > max) {
      for (uint32_t i = 0; i < p->n; i++)
        rc__buf_unref(p->kept[i].b);
      p->n = 0;
      p->bytes = 0;
      p->overflow = 1;
      continue;
    }
    if (p->n == p->cap) {
      uint32_t cap = p->cap ? p->cap * 2 : 8;
      rc_kept *k = realloc(p->kept, cap * sizeof(*k));
      if (k == NULL) {
        p->overflow = 1; /* a gap would follow: fail the join instead */
        continue;
      }
      p->kept = k;
      p->cap = cap;
    }
    rc__buf_ref(b);
    p->kept[p->n++] = (rc_kept){b, offset};
    p->bytes += b->len;
  }
}

/* --- coalescing (see the top of this file) ------------------------------- */

static void release(rc_backplane *bp) {
  rc_server *s = bp->s;
  uint32_t n = bp->nheld;
  bp->nheld = 0; /* delivering joins or leaves nothing: no re-entry */
  bp->settled = 0;
  atomic_store_explicit(&s->holding, 0, memory_order_relaxed);
  (void)uv_timer_stop(&bp->linger); /* these cannot fail */
  (void)uv_idle_stop(&bp->settle);
  uint64_t t0 = uv_hrtime();
  /* Each room's consecutive messages as one run: one write per member. */
  rc_buf *bufs[RC__RUN_MAX];
  uint64_t skips[RC__RUN_MAX];
  for (uint32_t i = 0; i < n;) {
    uint64_t room = bp->held[i].room;
    uint32_t k = 0;
    for (; i < n && k < RC__RUN_MAX && bp->held[i].room == room; i++, k++) {
      bufs[k] = bp->held[i].b;
      skips[k] = bp->held[i].skip;
    }
    rc__room_deliver_run(s, room, bufs, skips, k);
    for (uint32_t j = 0; j < k; j++)
      rc__buf_unref(bufs[j]);
  }
  rc__note_writes(s, t0);
}

static void on_settle(uv_idle_t *h) {
  (void)h; /* its being active is what counts: the check phase decides */
}

static void on_linger(uv_timer_t *t) {
  rc_backplane *bp = RC__CONTAINER_OF(t, rc_backplane, linger);
  release(bp);
  /* The writes go now: the check phase comes only after the next poll. */
  rc__flush_dirty(bp->s);
  rc__events_hand_over(bp->s);
}

static int waiting_for_more(rc_backplane *bp) {
  rc_server *s = bp->s;
  return s->batch_busy ||
         atomic_load_explicit(&s->embedder_busy, memory_order_relaxed) ||
         bp->cmd.wlen > 0;
}

/* 1: b waits in the line of held deliveries (it must, when the line is not
 * empty); 0: deliver it now. */
static int hold(rc_backplane *bp, uint64_t room, rc_buf *b, uint64_t skip) {
  rc_server *s = bp->s;
  if (bp->nheld == 0) {
    uint64_t len = s->long_flush_ns / 1000000u; /* ms, 2 or more */
    if (!bp->started || bp->closing || s->long_flush_ns == 0 ||
        uv_now(&s->loop) - s->long_flush_at > 4 * len)
      return 0;
    uint64_t ms = len / 2 < RC__COALESCE_MAX_MS ? len / 2 : RC__COALESCE_MAX_MS;
    if (uv_timer_start(&bp->linger, on_linger, ms, 0) != 0)
      return 0;
    atomic_store_explicit(&s->holding, 1, memory_order_relaxed);
  }
  if (bp->nheld == bp->capheld) {
    uint32_t cap = bp->capheld ? bp->capheld * 2 : 64;
    rc_held *h = realloc(bp->held, cap * sizeof(*h));
    if (h == NULL) {
      release(bp); /* the ones before it first, then it */
      return 0;
    }
    bp->held = h;
    bp->capheld = cap;
  }
  rc__buf_ref(b);
  bp->held[bp->nheld++] = (rc_held){room, skip, b};
  bump(&s->st_bp_coalesced, 1);
  return 1;
}

void rc__bp_release(rc_server *s, int force) {
  rc_backplane *bp = s->bp;
  if (bp->nheld == 0)
    return;
  if (force) {
    release(bp);
  } else if (waiting_for_more(bp)) {
    bp->settled = 0; /* and the loop may sleep until it changes */
    (void)uv_idle_stop(&bp->settle);
  } else if (bp->settled) {
    release(bp);
  } else if (uv_idle_start(&bp->settle, on_settle) == 0) {
    /* Redis answers before it publishes: what the answers were for may be
     * a poll away. One more turn, whose poll does not wait, reads it. */
    bp->settled = 1;
  } else {
    release(bp);
  }
}

void rc__bp_before_commands(rc_server *s, const rc_cmd *cmd) {
  rc_backplane *bp = s->bp;
  for (; bp->nheld > 0 && cmd != NULL; cmd = cmd->next)
    if (cmd->type != RC_CMD_REDIS)
      release(bp);
}

/* A message received on the channel of room name. */
static void deliver(rc_backplane *bp, const char *name, size_t name_len,
                    const uint8_t *p, size_t len) {
  rc_server *s = bp->s;
  rc_bpwire_msg m;
  int verdict = rc_bpwire_parse(p, len, s->cfg.max_message_size, &m);
  if (verdict == RC_BPWIRE_OTHER_VERSION)
    goto invalid;
  /* A room with history hears its messages from here only, ours too. */
  if (m.enveloped && !m.history &&
      (m.from == s->id /* ours: our members had it at once */
       || !peer_fresh(bp, m.from, m.seq)))
    return;
  if (verdict != RC_BPWIRE_OK)
    goto invalid;
  rc_buf *b = rc__buf_message(m.is_text, m.payload, m.len);
  if (b == NULL)
    return;
  if (m.multi) {
    deliver_listed(bp, &m, b);
  } else {
    rc_chan *c = chan_by_name(bp, name, name_len);
    uint64_t skip = m.history && m.from == s->id ? m.exclude : 0;
    if (c != NULL && c->live && !(m.history && hold(bp, c->room, b, skip)))
      rc__room_deliver(s, &c->room, 1, b, skip);
    if (c != NULL && m.history)
      keep_for_joins(bp, c, b, m.offset, skip);
  }
  rc__buf_unref(b);
  bump(&s->st_bp_received, 1);
  return;
invalid:
  bump(&s->st_bp_invalid, 1);
}

/* --- joins into rooms with history ---------------------------------------- */

static void recover_event(rc_server *s, uint64_t conn, uint64_t room,
                          uint16_t code) {
  rc_event *ev = rc__event_new(RC_EV_RECOVER, conn, sizeof(room));
  if (ev == NULL)
    return;
  ev->code = code;
  memcpy(ev->data, &room, sizeof(room));
  rc__event_push(s, ev);
}

/* c's subscription is active: the joins waiting for it may read the
 * history. */
static void tell_joins(rc_backplane *bp, rc_chan *c) {
  for (rc_pending *p = c->pending; p != NULL; p = p->next) {
    if (!p->told) {
      p->told = 1;
      recover_event(bp->s, p->conn, c->room, 1);
    }
  }
}

static rc_pending *pending_take(rc_chan *c, uint64_t conn) {
  for (rc_pending **pp = &c->pending; *pp != NULL; pp = &(*pp)->next) {
    rc_pending *p = *pp;
    if (p->conn == conn) {
      *pp = p->next;
      return p;
    }
  }
  return NULL;
}

static void recover_begin(rc_backplane *bp, uint64_t conn, uint64_t room) {
  rc_chan *c = chan_by_id(bp, room);
  if (c == NULL || !rc__redis_is_ready(&bp->sub)) {
    recover_event(bp->s, conn, room, 0); /* no name, or Redis is away */
    return;
  }
  rc_pending *p = pending_take(c, conn); /* a second begin starts again */
  if (p != NULL)
    pending_free(p);
  p = calloc(1, sizeof(*p));
  if (p == NULL) {
    recover_event(bp->s, conn, room, 0);
    chan_sync(bp, c);
    return;
  }
  p->conn = conn;
  p->next = c->pending;
  c->pending = p;
  if (c->sub == SUB_ON)
    tell_joins(bp, c);
  else
    chan_sync(bp, c);
}

static void recover_end(rc_backplane *bp, rc_cmd *cmd) {
  rc_server *s = bp->s;
  rc_chan *c = chan_by_id(bp, cmd->room);
  rc_pending *p = c != NULL ? pending_take(c, cmd->conn) : NULL;
  if (p == NULL)
    return; /* cancelled, or its room freed */
  rc_conn *conn = cmd->status != 0 ? rc__conn_find(s, cmd->conn) : NULL;
  if (conn != NULL && conn->state == RC_CONN_OPEN) {
    if (p->overflow) {
      rc__conn_slow_consumer(conn);
    } else {
      for (size_t i = 0; i < cmd->nbufs; i++)
        (void)rc__conn_enqueue_data(conn, cmd->bufs[i]);
      for (uint32_t i = 0; i < p->n; i++)
        if (p->kept[i].offset > cmd->offset)
          (void)rc__conn_enqueue_data(conn, p->kept[i].b);
      rc__server_join(s, conn, cmd->room);
    }
  }
  pending_free(p);
  chan_sync(bp, c);
}

/* --- the two connections -------------------------------------------------- */

static void out_flush(rc_backplane *bp);

static void update_up(rc_backplane *bp) {
  int up = rc__redis_is_ready(&bp->sub) && rc__redis_is_ready(&bp->cmd);
  if (up == bp->up)
    return;
  bp->up = up;
  store(&bp->s->st_bp_up, (uint64_t)up);
  if (bp->closing)
    return;
  if (up)
    out_flush(bp); /* what waited while the backplane was down */
  char text[200];
  unsigned rooms = 0;
  for (uint32_t i = 0; up && i < bp->cap; i++)
    for (rc_chan *c = bp->by_name[i]; c != NULL; c = c->next_name)
      rooms += c->live;
  if (up)
    snprintf(text, sizeof(text), "connected to %s:%d, %u rooms subscribed",
             bp->host, bp->port, rooms);
  else
    snprintf(text, sizeof(text), "%s",
             !rc__redis_is_ready(&bp->sub) ? bp->sub.why : bp->cmd.why);
  state_event(bp, up ? RC_BACKPLANE_UP : RC_BACKPLANE_DOWN, text);
}

static void on_ready(rc_redis *l, int again) {
  rc_backplane *bp = bp_of(l);
  if (again)
    bump(&bp->s->st_bp_reconnects, 1);
  if (l == &bp->sub)
    resubscribe_all(bp);
  else
    out_flush(bp);
  update_up(bp);
}

static void on_lost(rc_redis *l, int was_ready) {
  rc_backplane *bp = bp_of(l);
  int was_up = bp->up;
  if (l == &bp->sub)
    subscriptions_lost(bp);
  else
    bp->inflight = 0;
  update_up(bp);
  if (bp->closing) {
    if (l == &bp->cmd && !uv_is_closing((uv_handle_t *)&bp->grace))
      uv_close((uv_handle_t *)&bp->grace, NULL);
    return;
  }
  if (!was_ready || !was_up) { /* else update_up has said why */
    char text[220];
    snprintf(text, sizeof(text), "%s:%d: %s", bp->host, bp->port, l->why);
    state_event(bp, RC_BACKPLANE_RETRY, text);
  }
}

/* Answers to AUTH and SELECT, and the command connection's first PING. */
static void on_setup_reply(rc_redis *l, redisReply *r, void *priv) {
  char why[RC_BPWIRE_WHY_MAX];
  if (r == NULL)
    return; /* the connection is gone */
  if (rc_bpwire_error(r, priv, why))
    rc__redis_drop(l, why);
  else if (strcmp(priv, "PING") == 0)
    rc__redis_ready(l);
}

/* A push on the subscriber connection: a message, or a subscription's
 * news. Anything else ends the connection. */
static void on_push(rc_redis *l, redisReply *r) {
  rc_backplane *bp = bp_of(l);
  rc_bpwire_push push;
  char why[RC_BPWIRE_WHY_MAX];
  int kind = rc_bpwire_push_parse(r, &push, why);
  if (kind == RC_BPWIRE_BAD) {
    rc__redis_drop_bad(l, why);
    return;
  }
  const char *name = NULL;
  size_t name_len = 0;
  int ours = rc_bpwire_chan_name(bp->head, bp->head_len, push.channel,
                                 push.channel_len, &name, &name_len);
  if (kind == RC_BPWIRE_MESSAGE) {
    if (ours)
      deliver(bp, name, name_len, push.payload, push.len);
    return;
  }
  int on = kind == RC_BPWIRE_SUBSCRIBED;
  if (push.channel_len == bp->sentinel_len &&
      memcmp(push.channel, bp->sentinel, bp->sentinel_len) == 0) {
    if (on)
      rc__redis_ready(l); /* only while connecting */
    return;
  }
  rc_chan *c = ours ? chan_by_name(bp, name, name_len) : NULL;
  if (c == NULL)
    return;
  if (on && c->sub == SUB_PENDING) {
    c->sub = SUB_ON;
    bp->nsubs++;
    store(&bp->s->st_bp_channels, bp->nsubs);
    tell_joins(bp, c);
  } else if (!on) {
    c->sub = SUB_NONE;
  }
  chan_sync(bp, c);
}

/* Queued once connected, answered in this order. 0 or -1. */
static int on_setup(rc_redis *l) {
  rc_backplane *bp = bp_of(l);
  int sub = l == &bp->sub, r = 0;
  if (bp->password != NULL) {
    const char *argv[3] = {"AUTH", bp->username, bp->password};
    if (bp->username != NULL)
      r = rc__redis_command(l, 3, argv, NULL, on_setup_reply, "AUTH");
    else
      r = rc__redis_command(l, 2, (const char *[]){"AUTH", bp->password}, NULL,
                            on_setup_reply, "AUTH");
  }
  if (r == 0 && !sub && bp->db != 0) {
    char db[24];
    (void)snprintf(db, sizeof(db), "%d", bp->db); /* an int always fits */
    r = rc__redis_command(l, 2, (const char *[]){"SELECT", db}, NULL,
                          on_setup_reply, "SELECT");
  }
  if (r == 0 && sub) {
    const char *argv[2] = {"SUBSCRIBE", bp->sentinel};
    size_t lens[2] = {9, bp->sentinel_len};
    r = rc__redis_command(l, 2, argv, lens, NULL, NULL);
  } else if (r == 0) {
    r = rc__redis_command(l, 1, (const char *[]){"PING"}, NULL, on_setup_reply,
                          "PING");
  }
  return r;
}

static const rc__redis_ops sub_ops = {on_setup, on_ready, on_push, on_lost};
/* No push: a reply to no command ends the connection. */
static const rc__redis_ops cmd_ops = {on_setup, on_ready, NULL, on_lost};

/* --- publishing ----------------------------------------------------------- */

static void on_published(rc_redis *l, redisReply *reply, void *priv) {
  rc_backplane *bp = bp_of(l);
  size_t len = (size_t)(uintptr_t)priv;
  bp->inflight = bp->inflight > len ? bp->inflight - len : 0;
  if (reply != NULL && bp->out_head != NULL)
    out_flush(bp);
}

/* Whether a publish may go to Redis now rather than to the buffer: while
 * the backplane is up (both connections ready), or while it closes with
 * the command connection still ready. Not on the command connection alone:
 * when the subscriber connection is lost, Redis has most likely gone, and
 * the command connection's loss may not have been read yet (the two
 * sockets' events come in any order); a publish written to it then would be
 * lost without being counted. Buffered, it goes once both are back. */
static int out_open(const rc_backplane *bp) {
  return rc__redis_is_ready(&bp->cmd) && (bp->up || bp->closing);
}

/* 0: cmd is the link's now; -1: the caller keeps it. */
static int out_send(rc_backplane *bp, char *cmd, size_t len) {
  if (rc__redis_send(&bp->cmd, cmd, len, on_published,
                     (void *)(uintptr_t)len) != 0)
    return -1;
  bp->inflight += len;
  bump(&bp->s->st_bp_published, 1);
  return 0;
}

/* Hands the buffer to Redis, oldest first, while Redis keeps up. */
static void out_flush(rc_backplane *bp) {
  while (bp->out_head != NULL && out_open(bp)) {
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

/* Takes cmd (malloc'ed). */
static void out_push(rc_backplane *bp, char *cmd, size_t len) {
  if (out_open(bp) && bp->out_head == NULL &&
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

/* The named rooms among ids, each once, into rooms (n entries). */
static size_t named_rooms(rc_backplane *bp, const uint64_t *ids, size_t n,
                          rc_bpwire_room *rooms) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    rc_chan *c = chan_by_id(bp, ids[i]);
    if (c == NULL)
      continue;
    int seen = 0;
    for (size_t j = 0; j < k && !seen; j++)
      seen = rooms[j].name == c->name;
    if (!seen)
      rooms[k++] = room_of(c);
  }
  return k;
}

/* The envelope of b (a server frame) for k rooms, then one PUBLISH per
 * room. */
static void publish_to(rc_backplane *bp, const rc_bpwire_room *rooms, size_t k,
                       const rc_buf *b) {
  /* The frame holds the payload after its header. */
  unsigned op = b->data[0] & 0x0f;
  unsigned code = b->data[1] & 0x7f;
  size_t hl = code < 126 ? 2 : code == 126 ? 4 : 10;
  size_t plen = b->len - hl;
  size_t mlen = rc_bpwire_envelope_size(rooms, k, plen);
  uint8_t *msg = scratch(bp, mlen);
  if (msg == NULL)
    return;
  (void)rc_bpwire_envelope(msg, op == RC_OP_TEXT, bp->s->id, ++bp->seq, rooms,
                           k, b->data + hl, plen);
  for (size_t i = 0; i < k; i++) {
    size_t len;
    char *cmd =
        rc_bpwire_publish(&len, bp->head, bp->head_len, &rooms[i], msg, mlen);
    if (cmd == NULL)
      bump(&bp->s->st_bp_dropped, 1);
    else
      out_push(bp, cmd, len);
  }
  scratch_trim(bp);
}

/* The published hook: a local fan-out, now to the other servers. */
static void hook_published(void *ctx, const uint64_t *ids, size_t n,
                           const rc_buf *b) {
  rc_backplane *bp = ctx;
  if (bp->closing || n == 0)
    return;
  rc_bpwire_room few[16];
  rc_bpwire_room *rooms = n <= 16 ? few : malloc(n * sizeof(*rooms));
  if (rooms == NULL)
    return;
  size_t k = named_rooms(bp, ids, n, rooms);
  if (k > 0 && k <= RC_BPWIRE_ROOMS_MAX)
    publish_to(bp, rooms, k, b);
  if (rooms != few)
    free(rooms);
}

/* --- rooms ---------------------------------------------------------------- */

static void hook_made(void *ctx, uint64_t id) {
  rc_backplane *bp = ctx;
  rc_chan *c = chan_by_id(bp, id);
  if (c == NULL)
    return;
  c->live = 1;
  chan_sync(bp, c);
}

static void hook_gone(void *ctx, uint64_t id) {
  rc_backplane *bp = ctx;
  rc_chan *c = chan_by_id(bp, id);
  if (c == NULL || !c->live)
    return;
  c->live = 0;
  chan_sync(bp, c);
}

static void hook_freed(void *ctx, uint64_t id) {
  rc_backplane *bp = ctx;
  rc_chan *c = chan_by_id(bp, id);
  if (c == NULL)
    return;
  while (c->pending != NULL) { /* their room is gone: they cannot join */
    rc_pending *p = c->pending;
    c->pending = p->next;
    if (!p->told)
      recover_event(bp->s, p->conn, id, 0);
    pending_free(p);
  }
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
  c->live = rc__room_get(bp->s, id, 0) != NULL;
  chan_sync(bp, c);
}

/* --- commands from the embedder ------------------------------------------- */

static void on_command_reply(rc_redis *l, redisReply *reply, void *priv) {
  uint64_t token;
  memcpy(&token, priv, sizeof(token));
  free(priv);
  reply_event(bp_of(l), token, reply, "the connection to Redis was lost");
}

void rc__bp_command(rc_server *s, rc_cmd *cmd) {
  rc_backplane *bp = s->bp;
  if (cmd->type == RC_CMD_RECOVER_BEGIN) {
    if (bp == NULL)
      recover_event(s, cmd->conn, cmd->room, 0); /* no backplane */
    else
      recover_begin(bp, cmd->conn, cmd->room);
    return;
  }
  if (bp == NULL)
    return;
  if (cmd->type == RC_CMD_RECOVER_END) {
    recover_end(bp, cmd);
    return;
  }
  if (cmd->type == RC_CMD_ROOM_NAME) {
    name_room(bp, cmd->room, cmd->text, cmd->text_len);
    return;
  }
  if (!rc__redis_is_ready(&bp->cmd)) {
    reply_event(bp, cmd->conn, NULL, "the Redis backplane is not connected");
    return;
  }
  uint64_t *token = malloc(sizeof(*token));
  if (token != NULL) {
    *token = cmd->conn;
    if (rc__redis_send(&bp->cmd, cmd->text, cmd->text_len, on_command_reply,
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

/* The channel head and the sentinel. */
static int names_make(rc_backplane *bp) {
  size_t plen = strlen(bp->prefix);
  bp->head_len = rc_bpwire_chan_head(bp->prefix, plen, NULL);
  bp->head = malloc(bp->head_len);
  bp->sentinel_len = RC_BPWIRE_SENTINEL_LEN(bp->head_len);
  bp->sentinel = malloc(bp->sentinel_len);
  if (bp->head == NULL || bp->sentinel == NULL)
    return UV_ENOMEM;
  (void)rc_bpwire_chan_head(bp->prefix, plen, bp->head);
  (void)rc_bpwire_sentinel(bp->head, bp->head_len, bp->s->id, bp->sentinel);
  return 0;
}

/* Copies the strings of cfg; the copies outlive the caller's. */
static int copy_config(rc_backplane *bp, rc_config *cfg, const char *prefix) {
  bp->host = strdup(cfg->backplane_host);
  bp->prefix = strdup(prefix);
  bp->username = dup_or_null(cfg->backplane_username);
  bp->password = dup_or_null(cfg->backplane_password);
  if (bp->host == NULL || bp->prefix == NULL ||
      (cfg->backplane_username && bp->username == NULL) ||
      (cfg->backplane_password && bp->password == NULL))
    return UV_ENOMEM;
  cfg->backplane_host = bp->host;
  cfg->backplane_prefix = bp->prefix;
  cfg->backplane_username = bp->username;
  cfg->backplane_password = bp->password;
  bp->port = cfg->backplane_port > 0 ? cfg->backplane_port : 6379;
  bp->db = cfg->backplane_db;
  bp->buffer_max = cfg->backplane_buffer;
  return 0;
}

static void links_init(rc_backplane *bp) {
  rc_server *s = bp->s;
  /* A message, its envelope and the names of the rooms it is for, as one
   * RESP push; any reply to the embedder's commands (Redis's own bound on
   * a string is 512 MiB). */
  size_t sub_max = s->cfg.max_message_size + RC_BPWIRE_HEADER + 2 +
                   RC_BPWIRE_ROOMS_MAX * (2 + (size_t)RC_ROOM_NAME_MAX) +
                   bp->head_len + RC_ROOM_NAME_MAX + 128;
  rc__redis_init(&bp->sub, &s->loop, bp->host, bp->port, &sub_ops,
                 RC_BPWIRE_SUB_ELEMENTS, sub_max, s->id);
  rc__redis_init(&bp->cmd, &s->loop, bp->host, bp->port, &cmd_ops,
                 RC_BPWIRE_CMD_ELEMENTS, (size_t)1 << 30, ~s->id);
  bp->sub.data = bp->cmd.data = bp;
}

int rc__bp_create(rc_server *s) {
  rc_config *cfg = &s->cfg;
  if (cfg->backplane_host == NULL)
    return 0;
  const char *prefix =
      cfg->backplane_prefix ? cfg->backplane_prefix : "roomcast:";
  if (strlen(prefix) > RC_BPWIRE_PREFIX_MAX)
    return UV_EINVAL;
  rc_backplane *bp = calloc(1, sizeof(*bp));
  if (bp == NULL)
    return UV_ENOMEM;
  bp->s = s;
  s->bp = bp; /* rc__bp_free frees what follows, whatever fails */
  int r = copy_config(bp, cfg, prefix);
  if (r == 0)
    r = names_make(bp);
  if (r != 0)
    return r;
  links_init(bp);
  bp->hooks = (struct rc__room_hooks){hook_made, hook_gone, hook_freed,
                                      hook_published, bp};
  s->room_hooks = &bp->hooks;
  return 0;
}

static rc_tls_ctx *tls_ctx_of(const rc_backplane_tls *tls, char *err,
                              size_t errlen) {
  rc_tls_client_opts o = {
      .verify = tls->checks != RC_BP_TLS_NO_CHECK,
      .check_name = tls->checks == RC_BP_TLS_VERIFY,
      .cafile = tls->ca_certs,
      .certfile = tls->certfile,
      .keyfile = tls->keyfile,
  };
  return rc_tls_ctx_client_opts(&o, err, errlen);
}

int rc_backplane_tls_check(const rc_backplane_tls *tls, char *err,
                           size_t errlen) {
  rc_tls_ctx *ctx = tls_ctx_of(tls, err, errlen);
  if (ctx == NULL)
    return -1;
  rc_tls_ctx_free(ctx);
  return 0;
}

int rc_server_backplane_tls(rc_server *s, const rc_backplane_tls *tls,
                            char *err, size_t errlen) {
  rc_backplane *bp = s->bp;
  if (bp == NULL || bp->started) {
    (void)snprintf(err, errlen, "%s",
                   bp == NULL ? "there is no backplane"
                              : "the backplane has started");
    return -1;
  }
  rc_tls_ctx *ctx = tls_ctx_of(tls, err, errlen);
  if (ctx == NULL)
    return -1;
  rc_tls_ctx_free(bp->tls);
  bp->tls = bp->sub.tls = bp->cmd.tls = ctx;
  return 0;
}

void rc__bp_start(rc_server *s) {
  rc_backplane *bp = s->bp;
  /* A timer on an initialised loop cannot fail to initialise. */
  (void)uv_timer_init(&s->loop, &bp->grace);
  (void)uv_timer_init(&s->loop, &bp->linger);
  (void)uv_idle_init(&s->loop, &bp->settle);
  bp->started = 1;
  rc__redis_start(&bp->sub);
  rc__redis_start(&bp->cmd);
}

static void on_grace(uv_timer_t *t) {
  rc_backplane *bp = RC__CONTAINER_OF(t, rc_backplane, grace);
  rc__redis_drop(&bp->cmd, "stopping");
}

void rc__bp_close(rc_server *s) {
  rc_backplane *bp = s->bp;
  if (!bp->started || bp->closing)
    return;
  bp->closing = 1;
  release(bp);
  uv_close((uv_handle_t *)&bp->linger, NULL);
  uv_close((uv_handle_t *)&bp->settle, NULL);
  rc__redis_stop(&bp->sub);
  rc__redis_stop(&bp->cmd);
  rc__redis_drop(&bp->sub, "stopping");
  if (rc__redis_is_ready(&bp->cmd)) {
    out_flush(bp); /* what waits goes, bound or not */
    /* Answers the last publishes, then disconnects; or the grace timer
     * cuts it. */
    if (uv_timer_start(&bp->grace, on_grace, RC__GRACE_MS, 0) != 0)
      on_grace(&bp->grace);
    rc__redis_drain(&bp->cmd);
  } else {
    rc__redis_drop(&bp->cmd, "stopping");
  }
  if (!rc__redis_connected(&bp->cmd) &&
      !uv_is_closing((uv_handle_t *)&bp->grace))
    uv_close((uv_handle_t *)&bp->grace, NULL);
}

void rc__bp_free(rc_server *s) {
  rc_backplane *bp = s->bp;
  if (bp == NULL)
    return;
  s->room_hooks = NULL;
  for (uint32_t i = 0; i < bp->cap; i++) {
    rc_chan *c = bp->by_name[i];
    while (c != NULL) {
      rc_chan *next = c->next_name;
      chan_free(c);
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
  rc__redis_free(&bp->sub);
  rc__redis_free(&bp->cmd);
  rc_tls_ctx_free(bp->tls);
  for (uint32_t i = 0; i < bp->nheld; i++) /* only if the loop never ran */
    rc__buf_unref(bp->held[i].b);
  free(bp->held);
  free(bp->peers);
  free(bp->scratch);
  free(bp->host);
  free(bp->prefix);
  free(bp->head);
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

int rc_server_redis(rc_server *s, uint64_t token, int argc, const char **argv,
                    const size_t *argvlen) {
  if (s->bp == NULL || argc < 1 || rc_bpwire_forbidden(argv[0], argvlen[0]))
    return UV_EINVAL;
  rc_cmd *cmd = rc__cmd_make(RC_CMD_REDIS, token);
  if (cmd == NULL)
    return UV_ENOMEM;
  size_t len;
  cmd->text = rc_bpwire_command(&len, argc, argv, argvlen);
  if (cmd->text == NULL) {
    rc__cmd_free(cmd);
    return UV_ENOMEM;
  }
  cmd->text_len = len; /* malloc'ed: rc__cmd_free frees it */
  return rc__cmd_queue(s, cmd);
}
