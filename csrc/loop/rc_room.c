/* rc_room.c - rooms: membership and fan-out.
 *
 * A room is an array of members; a connection keeps the list of its rooms.
 * Each side stores the other's index, so joining and leaving are O(1)
 * (swap with the last entry and fix the moved entry's back-index).
 *
 * Fan-out lives here and in rc_conn.c only. The message was copied once,
 * into one framed rc_buf, when it was published. Publishes that end a
 * wake-up's commands come as a run (rc__room_publish_run): the room builds
 * one iovec of the run's frames and every member with nothing queued is
 * written from it at once, one writev() each (rc__conn_deliver_now);
 * members with frames waiting, or excluded from one of the messages, and
 * the bytes a socket does not take, get a reference to the same buffers in
 * their output queue, written at the end of the turn. Any other publish
 * or broadcast queues its reference on every member (rc__conn_enqueue_data).
 *
 * Rooms know nothing of Redis: what else must hear of them (the backplane)
 * listens through s->room_hooks (struct rc__room_hooks in rc_internal.h,
 * with its contract), NULL when nothing does.
 */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include <stdlib.h>
#include <string.h>

#include "loop/rc_internal.h"

/* --- ids ------------------------------------------------------------------
 *
 * A room's mode must not depend on who joins first: rooms go when their
 * last member leaves and come back with the next join, and a room shared
 * by name could otherwise be remade by a member of another kind. The id
 * carries the mode instead, from the moment it is made; every incarnation
 * of the room reads it from there, and a join asking for another mode is
 * refused before it reaches the loop (rc_server_join). */

uint64_t rc_server_room_new_relay(rc_server *s, int relay) {
  if (relay < RC_RELAY_NONE || relay > RC_RELAY_OTHERS)
    return 0;
  uint64_t n = atomic_fetch_add(&s->next_room, 1) + 1;
  return (n << RC__ROOM_MODE_BITS) | (uint64_t)relay;
}

/* --- id -> room: open addressing, linear probing, backward-shift delete -- */

static uint32_t slot_of(uint64_t id, uint32_t cap) {
  /* ids are sequential: multiply to spread them over the table */
  return (uint32_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

static int table_grow(rc_server *s) {
  uint32_t cap = s->rooms_cap ? s->rooms_cap * 2 : 64;
  rc_room **t = calloc(cap, sizeof(*t));
  if (t == NULL)
    return UV_ENOMEM;
  for (uint32_t i = 0; i < s->rooms_cap; i++) {
    rc_room *r = s->rooms[i];
    if (r == NULL)
      continue;
    uint32_t j = slot_of(r->id, cap);
    while (t[j] != NULL)
      j = (j + 1) & (cap - 1);
    t[j] = r;
  }
  free(s->rooms);
  s->rooms = t;
  s->rooms_cap = cap;
  return 0;
}

rc_room *rc__room_get(rc_server *s, uint64_t id, int create) {
  if (s->rooms_cap != 0) {
    uint32_t j = slot_of(id, s->rooms_cap);
    while (s->rooms[j] != NULL) {
      if (s->rooms[j]->id == id)
        return s->rooms[j];
      j = (j + 1) & (s->rooms_cap - 1);
    }
  }
  if (!create || id == 0)
    return NULL;
  if ((s->rooms_n + 1) * 2 > s->rooms_cap && table_grow(s) != 0)
    return NULL;
  rc_room *r = calloc(1, sizeof(*r));
  if (r == NULL)
    return NULL;
  r->id = id;
  r->relay = rc__room_mode(id);
  uint32_t j = slot_of(id, s->rooms_cap);
  while (s->rooms[j] != NULL)
    j = (j + 1) & (s->rooms_cap - 1);
  s->rooms[j] = r;
  s->rooms_n++;
  atomic_store_explicit(&s->st_rooms_open, s->rooms_n, memory_order_relaxed);
  if (s->room_hooks != NULL)
    s->room_hooks->made(s->room_hooks->ctx, id);
  return r;
}

static void table_remove(rc_server *s, rc_room *r) {
  uint32_t mask = s->rooms_cap - 1;
  uint32_t j = slot_of(r->id, s->rooms_cap);
  while (s->rooms[j] != r)
    j = (j + 1) & mask;
  s->rooms[j] = NULL;
  /* Shift back the entries whose probe run crossed the hole. */
  uint32_t k = (j + 1) & mask;
  while (s->rooms[k] != NULL) {
    uint32_t home = slot_of(s->rooms[k]->id, s->rooms_cap);
    /* k may move to j when home is not cyclically within (j, k]. */
    if (((k - home) & mask) >= ((k - j) & mask)) {
      s->rooms[j] = s->rooms[k];
      s->rooms[k] = NULL;
      j = k;
    }
    k = (k + 1) & mask;
  }
  s->rooms_n--;
  atomic_store_explicit(&s->st_rooms_open, s->rooms_n, memory_order_relaxed);
}

/* --- membership ---------------------------------------------------------- */

void rc__room_join(rc_server *s, rc_room *r, rc_conn *c) {
  for (uint32_t i = 0; i < c->nrooms; i++)
    if (c->rooms[i].room == r)
      return; /* already a member */
  if (r->n == r->cap) {
    uint32_t cap = r->cap ? r->cap * 2 : 4;
    struct rc_member *m = realloc(r->members, cap * sizeof(*m));
    if (m == NULL) {
      rc__conn_fail(c);
      return;
    }
    r->members = m;
    r->cap = cap;
  }
  if (c->caprooms == 0) {
    /* Most connections are in one room: it needs no array. */
    c->rooms = &c->first;
    c->caprooms = 1;
  } else if (c->nrooms == c->caprooms) {
    uint32_t cap = c->caprooms * 2;
    rc_membership *old = c->rooms == &c->first ? NULL : c->rooms;
    rc_membership *m = realloc(old, cap * sizeof(*m));
    if (m == NULL) {
      rc__conn_fail(c);
      return;
    }
    if (old == NULL)
      m[0] = c->first;
    c->rooms = m;
    c->caprooms = cap;
  }
  (void)s;
  r->members[r->n] = (struct rc_member){.conn = c, .index = c->nrooms};
  c->rooms[c->nrooms] = (rc_membership){.room = r, .index = r->n};
  r->n++;
  c->nrooms++;
  if (r->relay != RC_RELAY_NONE)
    c->nrelay++;
}

/* Removes membership i of c (both sides). */
static void unlink_membership(rc_conn *c, uint32_t i) {
  rc_room *r = c->rooms[i].room;
  uint32_t ri = c->rooms[i].index;
  if (r->relay != RC_RELAY_NONE)
    c->nrelay--;
  /* room side: move the last member into ri */
  r->n--;
  if (ri != r->n) {
    r->members[ri] = r->members[r->n];
    rc_conn *moved = r->members[ri].conn;
    moved->rooms[r->members[ri].index].index = ri;
  }
  /* conn side: move the last membership into i */
  c->nrooms--;
  if (i != c->nrooms) {
    c->rooms[i] = c->rooms[c->nrooms];
    rc_room *mr = c->rooms[i].room;
    mr->members[c->rooms[i].index].index = i;
  }
}

static void room_destroy_if_empty(rc_server *s, rc_room *r) {
  if (r->n != 0)
    return;
  uint64_t id = r->id;
  table_remove(s, r);
  free(r->members);
  free(r);
  if (s->room_hooks != NULL)
    s->room_hooks->gone(s->room_hooks->ctx, id);
}

/* A message from this process reached the local members of rooms: the
 * hook's owner sends it on (to the other servers). */
static void published(rc_server *s, const uint64_t *rooms, size_t n,
                      const rc_buf *b) {
  if (s->room_hooks != NULL)
    s->room_hooks->published(s->room_hooks->ctx, rooms, n, b);
}

void rc__room_leave(rc_server *s, rc_room *r, rc_conn *c) {
  for (uint32_t i = 0; i < c->nrooms; i++) {
    if (c->rooms[i].room == r) {
      unlink_membership(c, i);
      room_destroy_if_empty(s, r);
      return;
    }
  }
}

void rc__room_leave_all(rc_server *s, rc_conn *c) {
  while (c->nrooms > 0) {
    rc_room *r = c->rooms[c->nrooms - 1].room;
    unlink_membership(c, c->nrooms - 1);
    room_destroy_if_empty(s, r);
  }
}

void rc__room_free(rc_server *s, uint64_t id) {
  rc_room *r = rc__room_get(s, id, 0);
  if (r != NULL) {
    while (r->n > 0) {
      rc_conn *c = r->members[r->n - 1].conn;
      unlink_membership(c, r->members[r->n - 1].index);
    }
    room_destroy_if_empty(s, r);
  }
  if (s->room_hooks != NULL) /* with or without a local incarnation */
    s->room_hooks->freed(s->room_hooks->ctx, id);
}

void rc__room_publish(rc_server *s, uint64_t id, rc_buf *b, uint64_t exclude) {
  rc_room *r = rc__room_get(s, id, 0);
  uint64_t delivered = 0;
  /* Nothing in this loop leaves a room: a member that fails is only marked,
   * and is closed at the end of the turn. */
  for (uint32_t i = 0; r != NULL && i < r->n; i++) {
    rc_conn *c = r->members[i].conn;
    if (c->id != exclude)
      delivered += (uint64_t)rc__conn_enqueue_data(c, b);
  }
  atomic_fetch_add_explicit(&s->st_deliveries, delivered, memory_order_relaxed);
  published(s, &id, 1, b); /* members elsewhere too, local ones or not */
}

/* Each write is a system call whose kernel work evicts the members' lines
 * from the cache: the next members' are loaded while it runs, the hot
 * fields and the part of the libuv handle uv_try_write reads. */
#define RC__PREFETCH_AHEAD 2
static inline void prefetch_member(const rc_conn *c) {
  __builtin_prefetch(c);
  const char *h = (const char *)&c->tcp;
  for (size_t at = 0; at < sizeof(c->tcp); at += 64)
    __builtin_prefetch(h + at);
}

static int listed(uint64_t id, const uint64_t *ids, uint32_t n) {
  for (uint32_t k = 0; k < n; k++)
    if (ids[k] == id)
      return 1;
  return 0;
}

static void run_to_members(rc_server *s, rc_room *r, rc_buf *const *bufs,
                           const uint64_t *exclude, uint32_t n) {
  /* The iovec every member with nothing queued is written from, built once;
   * members left out of a message (exclude=) take the queued path. */
  uv_buf_t iov[RC__RUN_MAX];
  uint64_t distinct[RC__RUN_EXCLUDES];
  uint32_t ndistinct = 0;
  size_t total = 0;
  int many = 0;
  for (uint32_t j = 0; j < n; j++) {
    iov[j] = uv_buf_init((char *)bufs[j]->data, (unsigned)bufs[j]->len);
    total += bufs[j]->len;
    if (exclude[j] == 0 || many || listed(exclude[j], distinct, ndistinct))
      continue;
    if (ndistinct == RC__RUN_EXCLUDES)
      many = 1;
    else
      distinct[ndistinct++] = exclude[j];
  }
  /* The same for the members that negotiated deflate with a full window,
   * built at the first of them: each message's compressed frame, or the
   * plain one where compressing did not pay (rc__conn_frame_for). */
  rc_buf *zbufs[RC__RUN_MAX];
  uv_buf_t ziov[RC__RUN_MAX];
  size_t ztotal = 0;
  int zready = 0;
  uint64_t delivered = 0;
  /* As in rc__room_publish, nothing in this loop leaves the room. */
  for (uint32_t i = 0; i < r->n; i++) {
    rc_conn *c = r->members[i].conn;
    if (i + RC__PREFETCH_AHEAD < r->n)
      prefetch_member(r->members[i + RC__PREFETCH_AHEAD].conn);
    int full_window = c->pmd_tx == RC_PMD_MAX_WINDOW_BITS;
    if (!many && !listed(c->id, distinct, ndistinct) &&
        (c->pmd_tx == 0 || full_window)) {
      if (c->pmd_tx == 0) {
        delivered += rc__conn_deliver_now(c, bufs, iov, n, total);
        continue;
      }
      if (!zready) {
        for (uint32_t j = 0; j < n; j++) {
          zbufs[j] = rc__conn_frame_for(c, bufs[j]);
          ziov[j] =
              uv_buf_init((char *)zbufs[j]->data, (unsigned)zbufs[j]->len);
          ztotal += zbufs[j]->len;
        }
        zready = 1;
      }
      delivered += rc__conn_deliver_now(c, zbufs, ziov, n, ztotal);
      continue;
    }
    /* Left out of a message, or a smaller window: each message queued as
     * the member takes it (rc__conn_enqueue_data). */
    for (uint32_t j = 0; j < n; j++)
      if (c->id != exclude[j])
        delivered += (uint64_t)rc__conn_enqueue_data(c, bufs[j]);
  }
  atomic_fetch_add_explicit(&s->st_deliveries, delivered, memory_order_relaxed);
}

void rc__room_publish_run(rc_server *s, uint64_t id, rc_buf *const *bufs,
                          const uint64_t *exclude, uint32_t n) {
  rc_room *r = rc__room_get(s, id, 0);
  if (r != NULL && n > 0)
    run_to_members(s, r, bufs, exclude, n);
  for (uint32_t j = 0; j < n; j++)
    published(s, &id, 1, bufs[j]);
}

void rc__room_deliver_run(rc_server *s, uint64_t id, rc_buf *const *bufs,
                          const uint64_t *exclude, uint32_t n) {
  rc_room *r = rc__room_get(s, id, 0);
  if (r != NULL && n > 0)
    run_to_members(s, r, bufs, exclude, n);
}

/* Each member once, across rooms: a member is stamped with this fan-out's
 * mark when it gets the message. */
static uint64_t deliver_marked(rc_server *s, rc_room *r, rc_buf *b,
                               uint64_t mark, const rc_conn *skip) {
  uint64_t delivered = 0;
  for (uint32_t i = 0; i < r->n; i++) {
    rc_conn *c = r->members[i].conn;
    if (c == skip || c->mark == mark)
      continue;
    c->mark = mark;
    delivered += (uint64_t)rc__conn_enqueue_data(c, b);
  }
  (void)s;
  return delivered;
}

static void fan_out_marked(rc_server *s, const uint64_t *rooms, size_t nrooms,
                           rc_buf *b, uint64_t exclude) {
  uint64_t mark = ++s->mark, delivered = 0;
  rc_conn *skip = exclude != 0 ? rc__conn_find(s, exclude) : NULL;
  for (size_t k = 0; k < nrooms; k++) {
    rc_room *r = rc__room_get(s, rooms[k], 0);
    if (r != NULL)
      delivered += deliver_marked(s, r, b, mark, skip);
  }
  atomic_fetch_add_explicit(&s->st_deliveries, delivered, memory_order_relaxed);
}

void rc__room_broadcast(rc_server *s, const uint64_t *rooms, size_t nrooms,
                        rc_buf *b, uint64_t exclude) {
  fan_out_marked(s, rooms, nrooms, b, exclude);
  published(s, rooms, nrooms, b);
}

void rc__room_deliver(rc_server *s, const uint64_t *rooms, size_t nrooms,
                      rc_buf *b, uint64_t exclude) {
  fan_out_marked(s, rooms, nrooms, b, exclude); /* from the hook's owner */
}

void rc__room_deliver_after(rc_server *s, const uint64_t *before,
                            size_t nbefore, uint64_t room, rc_buf *b) {
  uint64_t mark = ++s->mark;
  for (size_t k = 0; k < nbefore; k++) {
    rc_room *r = rc__room_get(s, before[k], 0);
    for (uint32_t i = 0; r != NULL && i < r->n; i++)
      r->members[i].conn->mark = mark; /* had it with that room's copy */
  }
  rc_room *r = rc__room_get(s, room, 0);
  uint64_t delivered = r != NULL ? deliver_marked(s, r, b, mark, NULL) : 0;
  atomic_fetch_add_explicit(&s->st_deliveries, delivered, memory_order_relaxed);
}

/* A relayed message goes to the other servers too, once for all of the
 * sender's relay rooms (the hook's owner skips those it does not share). */
static void relay_out(rc_server *s, const rc_conn *from, const rc_buf *b) {
  uint64_t few[8];
  uint64_t *ids = from->nrooms <= 8 ? few : malloc(from->nrooms * sizeof(*ids));
  if (ids == NULL)
    return;
  size_t n = 0;
  for (uint32_t k = 0; k < from->nrooms; k++) {
    const rc_room *r = from->rooms[k].room;
    if (r->relay != RC_RELAY_NONE)
      ids[n++] = r->id;
  }
  if (n > 0)
    published(s, ids, n, b);
  if (ids != few)
    free(ids);
}

void rc__room_relay(rc_server *s, rc_conn *from, rc_buf *b) {
  uint64_t mark = ++s->mark, delivered = 0;
  /* Memberships may be added to while we deliver? No: delivering never
   * joins or leaves; a failing member is only marked. */
  for (uint32_t k = 0; k < from->nrooms; k++) {
    rc_room *r = from->rooms[k].room;
    if (r->relay == RC_RELAY_NONE)
      continue;
    delivered += deliver_marked(s, r, b, mark,
                                r->relay == RC_RELAY_OTHERS ? from : NULL);
  }
  atomic_fetch_add_explicit(&s->st_deliveries, delivered, memory_order_relaxed);
  if (s->room_hooks != NULL)
    relay_out(s, from, b);
}

void rc__rooms_destroy(rc_server *s) {
  for (uint32_t i = 0; i < s->rooms_cap; i++) {
    if (s->rooms[i] != NULL) {
      free(s->rooms[i]->members);
      free(s->rooms[i]);
    }
  }
  free(s->rooms);
  s->rooms = NULL;
  s->rooms_cap = s->rooms_n = 0;
  atomic_store_explicit(&s->st_rooms_open, 0, memory_order_relaxed);
}
