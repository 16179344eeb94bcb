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
 * Each Redis (a shard, rc_shard) has two connections on the core's loop:
 * `sub` in subscriber mode, `cmd` for PUBLISH and the embedder's commands
 * (rc_server_redis), and the publishes that wait for it. A
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
 * Redis Cluster (cfg.backplane_cluster). The shards are the cluster's
 * nodes, met first as the seeds the embedder names, then in its map
 * (CLUSTER SLOTS, read from any node's command connection: the owner of
 * each of the 16384 slots); only those that own slots are connected (and
 * the seeds), and none is forgotten (a node that owns no slot keeps its
 * connections, quietly). A channel is the room's tag (rc_slot.h) then
 * head and name: its slot is the tag's, and it is SSUBSCRIBEd (one per
 * command: a command's channels must share a slot) and SPUBLISHed on the
 * shard that owns it; a channel entry remembers the shard its
 * subscription is on, and moves (SUNSUBSCRIBE there, answered, then
 * SSUBSCRIBE on the new owner) when the map changes. A cluster's
 * subscriber has no sentinel (PING says it is ready). The map is read
 * again on news that it changed: a MOVED answer (its slot's owner is
 * taken from it at once), an unasked sunsubscribe (Redis moved a slot
 * away), a lost connection (a failover may follow); and every
 * RC__MAP_CHECK_MS while it is unknown or a shard that owns slots is away.
 * Publishes wait in their shard's queue (in limbo while no shard owns
 * their slot), one bound for them all; when the map changes they move to
 * their slot's new shard, each slot's in order. A copy of a message for
 * several rooms reaches its own room's members only (deliver_listed): the
 * copies come from different shards, in no order between them.
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
#include <strings.h>

#include "loop/rc_internal.h"
#include "loop/rc_redis.h"
#include "proto/rc_bpwire.h"
#include "proto/rc_frame.h"
#include "proto/rc_slot.h"
#include "proto/rc_tls.h"

#define RC__GRACE_MS 1000      /* stopping: the last publishes may take this */
#define RC__COALESCE_MAX_MS 5u /* coalescing (above): held at most this */
#define RC__SUB_BATCH 256      /* channels per SUBSCRIBE when resubscribing */
/* A publisher unheard of this long is forgotten. */
#define RC__PEER_IDLE_MS 600000
/* A cluster (see "Redis Cluster" above): the nodes its map may name, and
 * how often the map is read again while it is unknown or a shard is
 * away. */
#define RC__SHARDS_MAX 1024
#define RC__MAP_CHECK_MS 500
#define RC__NO_SHARD 0xffffu
/* A shard's name in the logs (a longer host is cut), and an event's text:
 * "shard ", the name, ": ", then why its connection ended. */
#define RC__NAME_MAX 80
#define RC__TEXT_MAX (6 + RC__NAME_MAX + 2 + RC_BPWIRE_WHY_MAX)

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
  uint64_t room;  /* its room id; 0 once freed (kept until unsubscribed) */
  uint8_t live;   /* the local room exists (it has members) */
  uint8_t sub;    /* SUB_*, on shard */
  uint16_t shard; /* where sub is (not SUB_NONE) */
  uint16_t slot;  /* a cluster's: its channel's */
  char tag[RC_SLOT_TAG_LEN]; /* a cluster's: its channel starts with it */
  uint32_t len;
  rc_pending *pending; /* joins waiting for the history (see above) */
  char name[];         /* the room's name; the channel is head + name */
} rc_chan;

typedef struct rc_outmsg { /* a formatted PUBLISH waiting for Redis */
  struct rc_outmsg *next;
  size_t len;
  char *cmd;
  uint16_t slot; /* a cluster's: its channel's */
} rc_outmsg;

typedef struct rc_queue {
  rc_outmsg *head, *tail;
} rc_queue;

struct rc_backplane;

/* One Redis, or one node of a cluster: its two connections and the
 * publishes that wait for its command connection. */
typedef struct rc_shard {
  struct rc_backplane *bp;
  char *host;
  int port;
  uint16_t index;  /* in bp->shards */
  uint8_t owns;    /* a cluster's: owns slots in the map (else always 1) */
  uint8_t started; /* its connections are */
  uint8_t up;      /* both are ready */
  uint32_t nsubs;  /* channels subscribed on sub */
  rc_redis sub, cmd;
  rc_queue out;
  size_t inflight; /* handed to cmd, not yet answered */
} rc_shard;

typedef struct rc_peer {
  uint64_t id, seq, seen;
} rc_peer;

typedef struct rc_held { /* a delivery waiting to share a flush */
  uint64_t room, skip;
  rc_buf *b;
} rc_held;

typedef struct rc_backplane {
  rc_server *s;
  rc_shard **shards; /* one for a Redis; a cluster's nodes, as met */
  uint32_t nshards;
  int cluster;
  uint16_t *owner; /* a cluster's map: each slot's shard, or RC__NO_SHARD */
  uint8_t map_known, map_asking, map_again;
  uv_timer_t map_timer;
  rc_tls_ctx *tls; /* every link's (rediss://), or NULL */
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
  rc_queue limbo;   /* a cluster's publishes whose shard is not known */
  size_t out_bytes; /* in the buffer: every shard's queue and limbo */
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

static rc_shard *shard_of(rc_redis *l) { return l->data; }
static rc_backplane *bp_of(rc_redis *l) { return shard_of(l)->bp; }

/* The shard that owns slot: a Redis's one; a cluster's by its map (NULL
 * while unknown). */
static rc_shard *owner_of(const rc_backplane *bp, uint16_t slot) {
  if (!bp->cluster)
    return bp->shards[0];
  if (!bp->map_known || bp->owner[slot] == RC__NO_SHARD)
    return NULL;
  return bp->shards[bp->owner[slot]];
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

static rc_bpwire_room room_of(const rc_backplane *bp, const rc_chan *c) {
  return (rc_bpwire_room){c->name, c->len, bp->cluster ? c->tag : NULL};
}

static rc_shard *chan_home(const rc_backplane *bp, const rc_chan *c) {
  return owner_of(bp, c->slot);
}

/* --- subscriptions -------------------------------------------------------- */

static void subs_count(rc_backplane *bp, rc_shard *sh, int delta) {
  sh->nsubs = (uint32_t)((int64_t)sh->nsubs + delta);
  bp->nsubs = (uint32_t)((int64_t)bp->nsubs + delta);
  store(&bp->s->st_bp_channels, bp->nsubs);
}

/* (UN)SUBSCRIBE, or a cluster's S(UN)SUBSCRIBE, on sh for n (<=
 * RC__SUB_BATCH; 1 on a cluster: one command's channels must share a slot)
 * channel entries. Their answers are pushes (on_push), not replies anyone
 * waits for. 0 or -1. */
static int send_sub(rc_backplane *bp, rc_shard *sh, int on, rc_chan **chans,
                    size_t n) {
  const char *verb = bp->cluster ? (on ? "SSUBSCRIBE" : "SUNSUBSCRIBE")
                                 : (on ? "SUBSCRIBE" : "UNSUBSCRIBE");
  rc_bpwire_room rooms[RC__SUB_BATCH];
  for (size_t i = 0; i < n; i++)
    rooms[i] = room_of(bp, chans[i]);
  size_t len;
  char *cmd = rc_bpwire_subscribe(&len, verb, bp->head, bp->head_len, rooms, n);
  if (cmd == NULL)
    return -1;
  if (rc__redis_send(&sh->sub, cmd, len, NULL, NULL) != 0) {
    free(cmd);
    return -1;
  }
  return 0;
}

/* Brings c's subscription towards what its local room needs, on the shard
 * that owns its slot (leaving another first: its answer must come before
 * the subscription elsewhere); deletes an entry that was freed once
 * nothing is in flight for it. */
static void chan_sync(rc_backplane *bp, rc_chan *c) {
  rc_shard *home = chan_home(bp, c);
  if (c->sub == SUB_NONE) {
    if (wanted(c) && home != NULL && rc__redis_is_ready(&home->sub) &&
        send_sub(bp, home, 1, &c, 1) == 0) {
      c->sub = SUB_PENDING;
      c->shard = home->index;
    }
  } else if (c->sub == SUB_ON && (!wanted(c) || home != bp->shards[c->shard])) {
    rc_shard *sh = bp->shards[c->shard];
    if (rc__redis_is_ready(&sh->sub) && send_sub(bp, sh, 0, &c, 1) == 0) {
      c->sub = SUB_LEAVING;
      subs_count(bp, sh, -1);
    }
  }
  if (c->room == 0 && !wanted(c) && c->sub == SUB_NONE)
    chan_delete(bp, c);
}

static void subscribe_batch(rc_backplane *bp, rc_shard *sh, rc_chan **batch,
                            size_t n) {
  if (n > 0 && send_sub(bp, sh, 1, batch, n) == 0) {
    for (size_t k = 0; k < n; k++) {
      batch[k]->sub = SUB_PENDING;
      batch[k]->shard = sh->index;
    }
  }
}

/* Every channel sh's connection should have, once it is (again) ready. */
static void resubscribe_all(rc_backplane *bp, rc_shard *sh) {
  rc_chan *batch[RC__SUB_BATCH];
  size_t n = 0, most = bp->cluster ? 1 : RC__SUB_BATCH;
  for (uint32_t i = 0; i < bp->cap; i++) {
    for (rc_chan *c = bp->by_name[i]; c != NULL; c = c->next_name) {
      if (!wanted(c) || c->sub != SUB_NONE || chan_home(bp, c) != sh)
        continue;
      batch[n++] = c;
      if (n == most) {
        subscribe_batch(bp, sh, batch, n);
        n = 0;
      }
    }
  }
  subscribe_batch(bp, sh, batch, n);
}

/* Every channel entry once; f may delete the one it is given. */
static void chans_each(rc_backplane *bp,
                       void (*f)(rc_backplane *, rc_chan *, void *),
                       void *arg) {
  for (uint32_t i = 0; i < bp->cap; i++) {
    rc_chan *c = bp->by_name[i];
    while (c != NULL) {
      rc_chan *next = c->next_name;
      f(bp, c, arg);
      c = next;
    }
  }
}

static void recover_event(rc_server *s, uint64_t conn, uint64_t room,
                          uint16_t code);

static void chan_lost(rc_backplane *bp, rc_chan *c, void *arg) {
  const rc_shard *sh = arg;
  if (c->sub == SUB_NONE || c->shard != sh->index)
    return;
  for (rc_pending *p = c->pending; p != NULL; p = p->next) {
    if (!p->told) {
      p->told = 1;
      recover_event(bp->s, p->conn, c->room, 0);
    }
  }
  c->sub = SUB_NONE;
  if (c->room == 0 && !wanted(c))
    chan_delete(bp, c);
}

/* sh's subscriber connection is gone: so are its subscriptions. The joins
 * still waiting for theirs are told they cannot have it. */
static void subscriptions_lost(rc_backplane *bp, rc_shard *sh) {
  chans_each(bp, chan_lost, sh);
  subs_count(bp, sh, -(int)sh->nsubs);
}

static void chan_sync_each(rc_backplane *bp, rc_chan *c, void *arg) {
  (void)arg;
  chan_sync(bp, c);
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

/* b, a message listing several rooms (m), to local members. On one Redis
 * (copy NULL) its first copy reaches the members of every listed room
 * named here, each once. A cluster's copy on room copy's channel reaches
 * copy's members but those of the rooms listed before it, whose own
 * copies reach them: each room's copies then come in its publisher's
 * order, from its own shard. */
static void deliver_listed(rc_backplane *bp, const rc_bpwire_msg *m, rc_buf *b,
                           const rc_chan *copy) {
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
    if (copy != NULL && len == copy->len && memcmp(name, copy->name, len) == 0)
      break;
    const rc_chan *c = chan_by_name(bp, name, len);
    if (c != NULL && c->live)
      ids[n++] = c->room;
  }
  if (copy == NULL)
    rc__room_deliver(bp->s, ids, n, b, 0);
  else
    rc__room_deliver_after(bp->s, ids, n, copy->room, b);
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
  if (s->batch_busy ||
      atomic_load_explicit(&s->embedder_busy, memory_order_relaxed))
    return 1;
  for (uint32_t i = 0; i < bp->nshards; i++)
    if (bp->shards[i]->cmd.wlen > 0)
      return 1;
  return 0;
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
  /* A room with history hears its messages from here only, ours too. A
   * cluster's copies for several rooms are each their own room's (see
   * deliver_listed): none is a later copy to skip. */
  if (m.enveloped && !m.history &&
      (m.from == s->id /* ours: our members had it at once */
       || (!bp->cluster && !peer_fresh(bp, m.from, m.seq))))
    return;
  if (verdict != RC_BPWIRE_OK)
    goto invalid;
  rc_buf *b = rc__buf_message(m.is_text, m.payload, m.len);
  if (b == NULL)
    return;
  if (m.multi && bp->cluster) {
    rc_chan *c = chan_by_name(bp, name, name_len);
    if (c != NULL && c->live)
      deliver_listed(bp, &m, b, c);
  } else if (m.multi) {
    deliver_listed(bp, &m, b, NULL);
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
  rc_shard *home = c != NULL ? chan_home(bp, c) : NULL;
  if (home == NULL || !rc__redis_is_ready(&home->sub)) {
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
  if (c->sub == SUB_ON && bp->shards[c->shard] == home)
    tell_joins(bp, c);
  else
    chan_sync(bp, c); /* tell_joins follows its (new) subscription */
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

/* --- the connections ------------------------------------------------------ */

static void out_flush(rc_shard *sh);
static void map_request(rc_backplane *bp);

static char *shard_name(const rc_shard *sh, char *out, size_t len) {
  (void)snprintf(out, len, strchr(sh->host, ':') ? "[%s]:%d" : "%s:%d",
                 sh->host, sh->port);
  return out;
}

/* Whether the backplane is up: its Redis's two connections are ready; a
 * cluster's, once its map is known, every shard's that owns slots. */
static int all_up(const rc_backplane *bp) {
  if (bp->cluster && !bp->map_known)
    return 0;
  int owners = 0;
  for (uint32_t i = 0; i < bp->nshards; i++) {
    const rc_shard *sh = bp->shards[i];
    if (!sh->owns)
      continue;
    if (!sh->up)
      return 0;
    owners++;
  }
  return owners > 0;
}

/* Why it is down: the first shard that owns slots and is not up. */
static void down_text(const rc_backplane *bp, char *text, size_t len) {
  char name[RC__NAME_MAX];
  for (uint32_t i = 0; i < bp->nshards; i++) {
    const rc_shard *sh = bp->shards[i];
    if (!sh->owns || sh->up)
      continue;
    const rc_redis *l = !rc__redis_is_ready(&sh->sub) ? &sh->sub : &sh->cmd;
    if (bp->cluster)
      (void)snprintf(text, len, "shard %s: %s",
                     shard_name(sh, name, sizeof(name)), l->why);
    else
      (void)snprintf(text, len, "%s", l->why);
    return;
  }
  (void)snprintf(text, len, "the cluster's map is not known");
}

static void update_up(rc_backplane *bp) {
  int up = all_up(bp);
  if (up == bp->up)
    return;
  bp->up = up;
  store(&bp->s->st_bp_up, (uint64_t)up);
  if (bp->closing)
    return;
  char text[RC__TEXT_MAX];
  unsigned rooms = 0;
  for (uint32_t i = 0; up && i < bp->cap; i++)
    for (rc_chan *c = bp->by_name[i]; c != NULL; c = c->next_name)
      rooms += c->live;
  if (!up) {
    down_text(bp, text, sizeof(text));
  } else if (!bp->cluster) {
    snprintf(text, sizeof(text), "connected to %s:%d, %u rooms subscribed",
             bp->shards[0]->host, bp->shards[0]->port, rooms);
  } else {
    unsigned owners = 0;
    for (uint32_t i = 0; i < bp->nshards; i++)
      owners += bp->shards[i]->owns;
    snprintf(text, sizeof(text),
             "connected to a Redis Cluster of %u shards, %u rooms subscribed",
             owners, rooms);
  }
  state_event(bp, up ? RC_BACKPLANE_UP : RC_BACKPLANE_DOWN, text);
}

/* sh->up follows its two connections; what waited for it goes. */
static void shard_update(rc_shard *sh) {
  int up = rc__redis_is_ready(&sh->sub) && rc__redis_is_ready(&sh->cmd);
  int was = sh->up;
  sh->up = (uint8_t)up;
  if (up && !was)
    out_flush(sh); /* what waited while the shard was away */
}

static void on_ready(rc_redis *l, int again) {
  rc_shard *sh = shard_of(l);
  rc_backplane *bp = sh->bp;
  if (again)
    bump(&bp->s->st_bp_reconnects, 1);
  if (l == &sh->sub)
    resubscribe_all(bp, sh);
  else if (bp->cluster && (!bp->map_known || bp->map_again))
    map_request(bp);
  shard_update(sh);
  out_flush(sh);
  update_up(bp);
}

static int any_cmd_connected(const rc_backplane *bp) {
  for (uint32_t i = 0; i < bp->nshards; i++)
    if (rc__redis_connected(&bp->shards[i]->cmd))
      return 1;
  return 0;
}

static void on_lost(rc_redis *l, int was_ready) {
  rc_shard *sh = shard_of(l);
  rc_backplane *bp = sh->bp;
  int was_up = bp->up;
  if (l == &sh->sub)
    subscriptions_lost(bp, sh);
  else
    sh->inflight = 0;
  shard_update(sh);
  update_up(bp);
  if (bp->closing) {
    if (l == &sh->cmd && !any_cmd_connected(bp) &&
        !uv_is_closing((uv_handle_t *)&bp->grace))
      uv_close((uv_handle_t *)&bp->grace, NULL);
    return;
  }
  if (bp->cluster && was_ready)
    map_request(bp); /* a master lost: its replica may take over */
  /* A cluster's node that owns no slot is only kept in reach: its
   * failures are not news, but while the map is not known (the seeds). */
  int news = sh->owns || !bp->map_known;
  if ((!was_ready || !was_up) && news) { /* else update_up said why */
    char text[RC__TEXT_MAX], name[RC__NAME_MAX];
    snprintf(text, sizeof(text), "%s%s: %s", bp->cluster ? "shard " : "",
             shard_name(sh, name, sizeof(name)), l->why);
    state_event(bp, RC_BACKPLANE_RETRY, text);
  }
}

/* Answers to AUTH and SELECT, and the first PING (the command connection's,
 * and a cluster's subscriber's). */
static void on_setup_reply(rc_redis *l, redisReply *r, void *priv) {
  char why[RC_BPWIRE_WHY_MAX];
  if (r == NULL)
    return; /* the connection is gone */
  if (rc_bpwire_error(r, priv, why))
    rc__redis_drop(l, why);
  else if (strcmp(priv, "PING") == 0)
    rc__redis_ready(l);
}

/* --- a cluster's map ------------------------------------------------------ */

static void shard_start(rc_backplane *bp, rc_shard *sh) {
  if (sh->started || !bp->started || bp->closing)
    return;
  sh->started = 1;
  rc__redis_start(&sh->sub);
  rc__redis_start(&sh->cmd);
}

static const rc__redis_ops sub_ops, cmd_ops;

/* The shard of host (len bytes) and port: the one met before, or a new one.
 * NULL when memory runs out or the cluster names too many nodes. */
static rc_shard *shard_get(rc_backplane *bp, const char *host, size_t len,
                           int port) {
  for (uint32_t i = 0; i < bp->nshards; i++) {
    rc_shard *sh = bp->shards[i];
    if (sh->port == port && strlen(sh->host) == len &&
        memcmp(sh->host, host, len) == 0)
      return sh;
  }
  if (bp->nshards == RC__SHARDS_MAX)
    return NULL;
  rc_shard **all = realloc(bp->shards, (bp->nshards + 1) * sizeof(*all));
  if (all == NULL)
    return NULL;
  bp->shards = all;
  rc_shard *sh = calloc(1, sizeof(*sh));
  char *h = malloc(len + 1);
  if (sh == NULL || h == NULL) {
    free(sh);
    free(h);
    return NULL;
  }
  memcpy(h, host, len);
  h[len] = '\0';
  rc_server *s = bp->s;
  /* A message, its envelope and the names of the rooms it is for, as one
   * RESP push; any reply to the embedder's commands (Redis's own bound on
   * a string is 512 MiB). */
  size_t sub_max = s->cfg.max_message_size + RC_BPWIRE_HEADER + 2 +
                   RC_BPWIRE_ROOMS_MAX * (2 + (size_t)RC_ROOM_NAME_MAX) +
                   bp->head_len + RC_SLOT_TAG_LEN + RC_ROOM_NAME_MAX + 128;
  sh->bp = bp;
  sh->host = h;
  sh->port = port;
  sh->index = (uint16_t)bp->nshards;
  sh->owns = !bp->cluster;
  uint64_t seed = s->id + 0x9E3779B97F4A7C15ull * bp->nshards;
  rc__redis_init(&sh->sub, &s->loop, sh->host, port, &sub_ops,
                 RC_BPWIRE_SUB_ELEMENTS, sub_max, seed);
  rc__redis_init(&sh->cmd, &s->loop, sh->host, port, &cmd_ops,
                 RC_BPWIRE_CMD_ELEMENTS, (size_t)1 << 30, ~seed);
  sh->sub.data = sh->cmd.data = sh;
  sh->sub.tls = sh->cmd.tls = bp->tls;
  bp->shards[bp->nshards++] = sh;
  return sh;
}

static void queue_put(rc_queue *q, rc_outmsg *m) {
  m->next = NULL;
  if (q->tail != NULL)
    q->tail->next = m;
  else
    q->head = m;
  q->tail = m;
}

/* After the map changed: each waiting publish to the queue of its slot's
 * shard now. A slot's publishes were all in one queue (its owner's then,
 * or limbo), in order: they stay in order. */
static void requeue(rc_backplane *bp) {
  rc_queue old[RC__SHARDS_MAX + 1];
  uint32_t n = bp->nshards;
  old[n] = bp->limbo;
  bp->limbo = (rc_queue){NULL, NULL};
  for (uint32_t i = 0; i < n; i++) {
    old[i] = bp->shards[i]->out;
    bp->shards[i]->out = (rc_queue){NULL, NULL};
  }
  for (uint32_t i = 0; i <= n; i++) {
    rc_outmsg *m = old[i == 0 ? n : i - 1].head; /* limbo first */
    while (m != NULL) {
      rc_outmsg *next = m->next;
      rc_shard *sh = owner_of(bp, m->slot);
      queue_put(sh != NULL ? &sh->out : &bp->limbo, m);
      m = next;
    }
  }
}

/* The map changed: shards start or stop owning slots, channels move to
 * their new shards, and so do the publishes that wait. */
static void map_changed(rc_backplane *bp) {
  for (uint32_t i = 0; i < bp->nshards; i++)
    bp->shards[i]->owns = 0;
  for (uint32_t slot = 0; slot < RC_SLOT_COUNT; slot++)
    if (bp->owner[slot] != RC__NO_SHARD)
      bp->shards[bp->owner[slot]]->owns = 1;
  for (uint32_t i = 0; i < bp->nshards; i++)
    if (bp->shards[i]->owns)
      shard_start(bp, bp->shards[i]);
  requeue(bp);
  chans_each(bp, chan_sync_each, NULL);
  for (uint32_t i = 0; i < bp->nshards; i++)
    out_flush(bp->shards[i]);
  update_up(bp);
}

typedef struct rc_map_read { /* CLUSTER SLOTS's answer, being read */
  rc_backplane *bp;
  const rc_shard *asked;
  uint16_t *owner;
} rc_map_read;

static int map_range(void *arg, unsigned first, unsigned last, const char *host,
                     size_t host_len, int port) {
  rc_map_read *m = arg;
  if (host_len == 0 || (host_len == 1 && host[0] == '?')) {
    host = m->asked->host; /* a node that does not know its address */
    host_len = strlen(host);
  }
  rc_shard *sh = shard_get(m->bp, host, host_len, port);
  if (sh == NULL)
    return 1;
  for (unsigned k = first; k <= last; k++)
    m->owner[k] = sh->index;
  return 0;
}

/* The answer to CLUSTER SLOTS: the new map, when it reads. */
static void on_map(rc_redis *l, redisReply *r, void *priv) {
  (void)priv;
  rc_shard *asked = shard_of(l);
  rc_backplane *bp = asked->bp;
  bp->map_asking = 0;
  if (r == NULL || bp->closing)
    return; /* the connection is gone: the timer asks again */
  uint16_t *owner = malloc(RC_SLOT_COUNT * sizeof(*owner));
  if (owner == NULL)
    return;
  memset(owner, 0xff, RC_SLOT_COUNT * sizeof(*owner)); /* RC__NO_SHARD */
  rc_map_read m = {bp, asked, owner};
  char why[RC_BPWIRE_WHY_MAX];
  int bad = rc_bpwire_slots_parse(r, map_range, &m, why);
  if (bad != 0) {
    char text[RC__TEXT_MAX], name[RC__NAME_MAX];
    snprintf(text, sizeof(text), "shard %s: %s",
             shard_name(asked, name, sizeof(name)),
             bad > 0 ? "CLUSTER SLOTS: too many nodes" : why);
    state_event(bp, RC_BACKPLANE_RETRY, text);
    free(owner);
    return;
  }
  int changed = !bp->map_known ||
                memcmp(owner, bp->owner, RC_SLOT_COUNT * sizeof(*owner)) != 0;
  memcpy(bp->owner, owner, RC_SLOT_COUNT * sizeof(*owner));
  free(owner);
  bp->map_known = 1;
  if (changed)
    map_changed(bp);
  if (bp->map_again)
    map_request(bp);
}

/* Reads the map (again) from any node whose command connection is ready;
 * with none, the map timer tries again. */
static void map_request(rc_backplane *bp) {
  if (!bp->cluster || bp->closing)
    return;
  if (bp->map_asking) {
    bp->map_again = 1; /* what changed may be after the answer on its way */
    return;
  }
  for (uint32_t i = 0; i < bp->nshards; i++) {
    rc_shard *sh = bp->shards[(i + bp->seq) % bp->nshards];
    if (!rc__redis_is_ready(&sh->cmd))
      continue;
    if (rc__redis_command(&sh->cmd, 2, (const char *[]){"CLUSTER", "SLOTS"},
                          NULL, on_map, NULL) == 0) {
      bp->map_asking = 1;
      bp->map_again = 0;
    }
    return;
  }
}

static void on_map_timer(uv_timer_t *t) {
  rc_backplane *bp = RC__CONTAINER_OF(t, rc_backplane, map_timer);
  if (!bp->map_known || !bp->up || bp->map_again)
    map_request(bp);
}

/* "MOVED <slot> <host>:<port>" (why, len bytes): the slot is that node's
 * now. What follows is learnt from the map, which is read again. */
static void moved(rc_backplane *bp, const rc_shard *from, const char *why,
                  size_t len) {
  map_request(bp);
  char text[128];
  if (len < 6 || len >= sizeof(text) || memcmp(why, "MOVED ", 6) != 0)
    return;
  memcpy(text, why, len);
  text[len] = '\0';
  char *end;
  long slot = strtol(text + 6, &end, 10);
  char *colon = strrchr(end, ':');
  if (end == text + 6 || *end != ' ' || slot < 0 || slot >= RC_SLOT_COUNT ||
      colon == NULL)
    return;
  long port = strtol(colon + 1, NULL, 10);
  const char *host = end + 1;
  size_t hlen = (size_t)(colon - host);
  if (port < 1 || port > 65535)
    return;
  rc_shard *sh = hlen > 0
                     ? shard_get(bp, host, hlen, (int)port)
                     : shard_get(bp, from->host, strlen(from->host), (int)port);
  if (sh == NULL || !bp->map_known || bp->owner[slot] == sh->index)
    return;
  bp->owner[slot] = sh->index;
  map_changed(bp);
}

/* An error on a cluster's subscriber connection: an SSUBSCRIBE the node
 * does not take (MOVED: the slot is another's). The channels waiting on
 * that node for that slot's subscription are subscribed where the error
 * says. Any other error ends the connection. */
static void sub_error(rc_redis *l, const redisReply *r, const char *why) {
  rc_shard *sh = shard_of(l);
  rc_backplane *bp = sh->bp;
  if (!bp->cluster || r->type != REDIS_REPLY_ERROR || r->len < 6 ||
      memcmp(r->str, "MOVED ", 6) != 0) {
    rc__redis_drop_bad(l, why);
    return;
  }
  long slot = strtol(r->str + 6, NULL, 10);
  for (uint32_t i = 0; i < bp->cap; i++)
    for (rc_chan *c = bp->by_name[i]; c != NULL; c = c->next_name)
      if (c->sub == SUB_PENDING && c->shard == sh->index && c->slot == slot)
        c->sub = SUB_NONE;
  moved(bp, sh, r->str, r->len);
  chans_each(bp, chan_sync_each, NULL);
}

/* A push on a subscriber connection: a message, or a subscription's news.
 * Anything else ends the connection. */
static void on_push(rc_redis *l, redisReply *r) {
  rc_shard *sh = shard_of(l);
  rc_backplane *bp = sh->bp;
  rc_bpwire_push push;
  char why[RC_BPWIRE_WHY_MAX];
  int kind = rc_bpwire_push_parse(r, &push, why);
  if (kind == RC_BPWIRE_BAD) {
    sub_error(l, r, why);
    return;
  }
  const char *ch = push.channel;
  size_t chlen = push.channel_len;
  if (bp->cluster) { /* its tag first */
    if (chlen < RC_SLOT_TAG_LEN || ch[0] != '{')
      return;
    ch += RC_SLOT_TAG_LEN;
    chlen -= RC_SLOT_TAG_LEN;
  }
  const char *name = NULL;
  size_t name_len = 0;
  int ours =
      rc_bpwire_chan_name(bp->head, bp->head_len, ch, chlen, &name, &name_len);
  if (kind == RC_BPWIRE_MESSAGE) {
    if (ours)
      deliver(bp, name, name_len, push.payload, push.len);
    return;
  }
  int on = kind == RC_BPWIRE_SUBSCRIBED;
  if (!bp->cluster && push.channel_len == bp->sentinel_len &&
      memcmp(push.channel, bp->sentinel, bp->sentinel_len) == 0) {
    if (on)
      rc__redis_ready(l); /* only while connecting */
    return;
  }
  rc_chan *c = ours ? chan_by_name(bp, name, name_len) : NULL;
  if (c == NULL || c->sub == SUB_NONE || c->shard != sh->index)
    return;
  if (on && c->sub == SUB_PENDING) {
    c->sub = SUB_ON;
    subs_count(bp, sh, 1);
    tell_joins(bp, c);
  } else if (!on) {
    if (c->sub == SUB_ON) {
      /* Not asked for: a cluster's slot left this node (migrated). */
      subs_count(bp, sh, -1);
      map_request(bp);
    }
    c->sub = SUB_NONE;
  }
  chan_sync(bp, c);
}

/* Queued once connected, answered in this order. 0 or -1. */
static int on_setup(rc_redis *l) {
  rc_shard *sh = shard_of(l);
  rc_backplane *bp = sh->bp;
  int sub = l == &sh->sub, r = 0;
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
  if (r == 0 && sub && !bp->cluster) {
    const char *argv[2] = {"SUBSCRIBE", bp->sentinel};
    size_t lens[2] = {9, bp->sentinel_len};
    r = rc__redis_command(l, 2, argv, lens, NULL, NULL);
  } else if (r == 0) {
    /* A cluster's subscriber has no sentinel: a sharded channel lives on
     * one shard, and the connection leaves subscriber mode harmlessly when
     * its last channel goes. */
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
  rc_shard *sh = shard_of(l);
  rc_backplane *bp = sh->bp;
  size_t len = (size_t)(uintptr_t)priv;
  sh->inflight = sh->inflight > len ? sh->inflight - len : 0;
  if (reply != NULL && bp->cluster && reply->type == REDIS_REPLY_ERROR) {
    /* MOVED (the map was behind), CLUSTERDOWN, ...: it is lost. */
    bump(&bp->s->st_bp_dropped, 1);
    moved(bp, sh, reply->str, reply->len);
  }
  if (reply != NULL && sh->out.head != NULL)
    out_flush(sh);
}

/* Whether a publish may go to sh now rather than to the buffer: while it
 * is up (both connections ready), or while it closes with the command
 * connection still ready. Not on the command connection alone: when the
 * subscriber connection is lost, Redis has most likely gone, and the
 * command connection's loss may not have been read yet (the two sockets'
 * events come in any order); a publish written to it then would be lost
 * without being counted. Buffered, it goes once both are back. */
static int out_open(const rc_shard *sh) {
  return rc__redis_is_ready(&sh->cmd) && (sh->up || sh->bp->closing);
}

/* 0: cmd is the link's now; -1: the caller keeps it. */
static int out_send(rc_shard *sh, char *cmd, size_t len) {
  if (rc__redis_send(&sh->cmd, cmd, len, on_published,
                     (void *)(uintptr_t)len) != 0)
    return -1;
  sh->inflight += len;
  bump(&sh->bp->s->st_bp_published, 1);
  return 0;
}

/* Hands sh's queue to Redis, oldest first, while Redis keeps up. */
static void out_flush(rc_shard *sh) {
  rc_backplane *bp = sh->bp;
  while (sh->out.head != NULL && out_open(sh)) {
    rc_outmsg *m = sh->out.head;
    if (sh->inflight > 0 && sh->inflight + m->len > bp->buffer_max &&
        !bp->closing)
      break;
    if (out_send(sh, m->cmd, m->len) != 0)
      break;
    sh->out.head = m->next;
    if (sh->out.head == NULL)
      sh->out.tail = NULL;
    bp->out_bytes -= m->len;
    free(m);
  }
  store(&bp->s->st_bp_buffered, bp->out_bytes);
}

/* Takes cmd (malloc'ed), a publish on a channel of slot. */
static void out_push(rc_backplane *bp, uint16_t slot, char *cmd, size_t len) {
  rc_shard *sh = owner_of(bp, slot);
  if (sh != NULL && out_open(sh) && sh->out.head == NULL &&
      (sh->inflight == 0 || sh->inflight + len <= bp->buffer_max) &&
      out_send(sh, cmd, len) == 0)
    return;
  rc_outmsg *m = NULL;
  if (bp->out_bytes + len <= bp->buffer_max)
    m = malloc(sizeof(*m));
  if (m == NULL) {
    free(cmd);
    bump(&bp->s->st_bp_dropped, 1);
    return;
  }
  m->len = len;
  m->cmd = cmd;
  m->slot = slot;
  queue_put(sh != NULL ? &sh->out : &bp->limbo, m);
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
      rooms[k++] = room_of(bp, c);
  }
  return k;
}

/* The envelope of b (a server frame) for k rooms, then one PUBLISH per
 * room (a cluster's SPUBLISH, to its room's shard). */
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
    char *cmd = rc_bpwire_publish(&len, bp->cluster ? "SPUBLISH" : "PUBLISH",
                                  bp->head, bp->head_len, &rooms[i], msg, mlen);
    uint16_t slot = bp->cluster ? rc_slot_of(rooms[i].tag, RC_SLOT_TAG_LEN) : 0;
    if (cmd == NULL)
      bump(&bp->s->st_bp_dropped, 1);
    else
      out_push(bp, slot, cmd, len);
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

/* A cluster's channel for c: its tag (of the channel without it, head and
 * name) and slot. 0 or UV_ENOMEM. */
static int chan_tag(const rc_backplane *bp, rc_chan *c) {
  char *ch = malloc(bp->head_len + c->len);
  if (ch == NULL)
    return UV_ENOMEM;
  memcpy(ch, bp->head, bp->head_len);
  memcpy(ch + bp->head_len, c->name, c->len);
  c->slot = rc_slot_tag(ch, bp->head_len + c->len, c->tag);
  free(ch);
  return 0;
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
    if (bp->cluster && chan_tag(bp, c) != 0) {
      free(c);
      return;
    }
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

/* Where the embedder's command goes: to the shard of its key's slot (key:
 * the slot + 1, as rc_server_redis found it), or, without a key, to the
 * first shard that owns slots and is ready. */
static rc_shard *command_shard(rc_backplane *bp, uint64_t key) {
  if (key != 0)
    return owner_of(bp, (uint16_t)(key - 1));
  for (uint32_t i = 0; i < bp->nshards; i++)
    if (bp->shards[i]->owns && rc__redis_is_ready(&bp->shards[i]->cmd))
      return bp->shards[i];
  return NULL;
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
  rc_shard *sh = command_shard(bp, cmd->room);
  if (sh == NULL || !rc__redis_is_ready(&sh->cmd)) {
    reply_event(bp, cmd->conn, NULL, "the Redis backplane is not connected");
    return;
  }
  uint64_t *token = malloc(sizeof(*token));
  if (token != NULL) {
    *token = cmd->conn;
    if (rc__redis_send(&sh->cmd, cmd->text, cmd->text_len, on_command_reply,
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
  bp->cluster = cfg->backplane_cluster != 0;
  return 0;
}

/* Each seed of a cluster's list, "host:port[,host:port...]" ("[v6]:port"),
 * to add(arg, host, host_len, port) when add is set. 0, UV_EINVAL for a
 * malformed list, or what add returned (not 0). */
static int seeds_each(const char *p,
                      int (*add)(void *, const char *, size_t, int),
                      void *arg) {
  while (1) {
    const char *end = strchr(p, ',');
    size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
    const char *colon = memrchr(p, ':', n);
    if (colon == NULL || colon == p || colon + 1 == p + n)
      return UV_EINVAL;
    long port = 0;
    for (const char *q = colon + 1; q < p + n; q++) {
      if (*q < '0' || *q > '9' || port > 65535)
        return UV_EINVAL;
      port = port * 10 + (*q - '0');
    }
    const char *h = p;
    size_t hlen = (size_t)(colon - p);
    if (h[0] == '[') {
      if (hlen < 3 || h[hlen - 1] != ']')
        return UV_EINVAL;
      h++;
      hlen -= 2;
    }
    if (port < 1 || port > 65535)
      return UV_EINVAL;
    int r = add != NULL ? add(arg, h, hlen, (int)port) : 0;
    if (r != 0)
      return r;
    if (end == NULL)
      return 0;
    p = end + 1;
  }
}

int rc_backplane_seeds_check(const char *seeds) {
  return seeds_each(seeds, NULL, NULL);
}

/* A seed: a shard until the map says which own slots. */
static int seed_add(void *bp, const char *host, size_t len, int port) {
  return shard_get(bp, host, len, port) != NULL ? 0 : UV_ENOMEM;
}

static int shards_make(rc_backplane *bp) {
  if (!bp->cluster)
    return shard_get(bp, bp->host, strlen(bp->host), bp->port) ? 0 : UV_ENOMEM;
  if (bp->db != 0)
    return UV_EINVAL; /* a cluster has database 0 only */
  bp->owner = malloc(RC_SLOT_COUNT * sizeof(*bp->owner));
  if (bp->owner == NULL)
    return UV_ENOMEM;
  memset(bp->owner, 0xff, RC_SLOT_COUNT * sizeof(*bp->owner));
  return seeds_each(bp->host, seed_add, bp);
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
  if (r == 0)
    r = shards_make(bp);
  if (r != 0)
    return r;
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
  bp->tls = ctx; /* every link's, those of shards met later too */
  for (uint32_t i = 0; i < bp->nshards; i++)
    bp->shards[i]->sub.tls = bp->shards[i]->cmd.tls = ctx;
  return 0;
}

void rc__bp_start(rc_server *s) {
  rc_backplane *bp = s->bp;
  /* A timer on an initialised loop cannot fail to initialise. */
  (void)uv_timer_init(&s->loop, &bp->grace);
  (void)uv_timer_init(&s->loop, &bp->linger);
  (void)uv_timer_init(&s->loop, &bp->map_timer);
  (void)uv_idle_init(&s->loop, &bp->settle);
  bp->started = 1;
  for (uint32_t i = 0; i < bp->nshards; i++)
    shard_start(bp, bp->shards[i]);
  if (bp->cluster && uv_timer_start(&bp->map_timer, on_map_timer,
                                    RC__MAP_CHECK_MS, RC__MAP_CHECK_MS) != 0)
    state_event(bp, RC_BACKPLANE_RETRY, "cannot start the map's timer");
}

static void on_grace(uv_timer_t *t) {
  rc_backplane *bp = RC__CONTAINER_OF(t, rc_backplane, grace);
  for (uint32_t i = 0; i < bp->nshards; i++)
    rc__redis_drop(&bp->shards[i]->cmd, "stopping");
}

void rc__bp_close(rc_server *s) {
  rc_backplane *bp = s->bp;
  if (!bp->started || bp->closing)
    return;
  bp->closing = 1;
  release(bp);
  uv_close((uv_handle_t *)&bp->linger, NULL);
  uv_close((uv_handle_t *)&bp->settle, NULL);
  uv_close((uv_handle_t *)&bp->map_timer, NULL);
  int draining = 0;
  for (uint32_t i = 0; i < bp->nshards; i++) {
    rc_shard *sh = bp->shards[i];
    if (!sh->started)
      continue;
    rc__redis_stop(&sh->sub);
    rc__redis_stop(&sh->cmd);
    rc__redis_drop(&sh->sub, "stopping");
    if (rc__redis_is_ready(&sh->cmd)) {
      out_flush(sh); /* what waits goes, bound or not */
      rc__redis_drain(&sh->cmd);
      draining = 1;
    } else {
      rc__redis_drop(&sh->cmd, "stopping");
    }
  }
  /* The last publishes are answered, then the connections end; or the
   * grace timer cuts them. */
  if (draining && uv_timer_start(&bp->grace, on_grace, RC__GRACE_MS, 0) != 0)
    on_grace(&bp->grace);
  if (!any_cmd_connected(bp) && !uv_is_closing((uv_handle_t *)&bp->grace))
    uv_close((uv_handle_t *)&bp->grace, NULL);
}

static void queue_free(rc_queue *q) {
  while (q->head != NULL) {
    rc_outmsg *m = q->head;
    q->head = m->next;
    free(m->cmd);
    free(m);
  }
  q->tail = NULL;
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
  queue_free(&bp->limbo);
  for (uint32_t i = 0; i < bp->nshards; i++) {
    rc_shard *sh = bp->shards[i];
    queue_free(&sh->out);
    rc__redis_free(&sh->sub);
    rc__redis_free(&sh->cmd);
    free(sh->host);
    free(sh);
  }
  free(bp->shards);
  free(bp->owner);
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

static int named(const char *want, const char *arg, size_t len) {
  return strlen(want) == len && strncasecmp(want, arg, len) == 0;
}

/* A cluster's command goes to the shard of its first key: for a script
 * (EVAL, EVALSHA, FCALL and their _RO forms) the first of its keys, when
 * it has any; else the first argument. -1: none (the command goes to any
 * shard). */
static int key_index(int argc, const char **argv, const size_t *lens) {
  static const char *const scripts[] = {"EVAL",       "EVALSHA", "EVAL_RO",
                                        "EVALSHA_RO", "FCALL",   "FCALL_RO"};
  for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++) {
    if (!named(scripts[i], argv[0], lens[0]))
      continue;
    if (argc < 4 || lens[2] == 0 || lens[2] > 9 || argv[2][0] == '0')
      return -1;
    return 3;
  }
  return argc > 1 ? 1 : -1;
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
  int key = s->bp->cluster ? key_index(argc, argv, argvlen) : -1;
  if (key >= 0) /* read only after rc__bp_create */
    cmd->room = 1u + rc_slot_of(argv[key], argvlen[key]);
  return rc__cmd_queue(s, cmd);
}
