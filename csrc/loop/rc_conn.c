/* rc_conn.c - one connection's life, whatever its role: reading frames
 * through wslay, writing its output queue, the close and the abort.
 *
 * Role. What differs between a connection the server accepted and one this
 * process opened (reading the socket, writing through TLS, the handshake's
 * deadlines, a received message's way) is reached through c->role, a table
 * of operations (rc_internal.h): rc_handshake.c provides the server's,
 * rc_client.c the client's. This file calls neither by name.
 *
 * Writing. rc__conn_enqueue appends a reference to a shared frame to the
 * connection's output queue (rc_outq.c) and puts the connection on the
 * server's dirty list; at the end of the loop turn (uv_check)
 * rc__flush_dirty writes each dirty connection's frames with one
 * uv_try_write (writev) and, for what the socket did not take, one
 * uv_write. At most one uv_write is in flight per connection, so frames
 * never interleave, and everything queued in one turn leaves in one system
 * call. The one exception is a room's fan-out (rc__conn_deliver_now):
 * publishes that end a wake-up's commands are written at once to members
 * with nothing queued, from one iovec rc_room.c builds for the whole room,
 * and only what a socket does not take is queued.
 *
 * Order. Frames to one connection leave in the order they were made, control
 * frames included. wslay makes pongs and close replies inside
 * wslay_event_recv; they are moved into the queue in the callback that
 * reports the frame (ws_on_msg) and after every recv (after_ws_io), so wslay
 * never holds a frame while our code runs and the direct path of
 * rc__conn_deliver_now, which writes only to an empty queue, cannot pass
 * one.
 *
 * Bounds. Every frame in the queue counts against max_queue_bytes: data,
 * HTTP answers and the control frames wslay makes for the peer (a pong per
 * ping, RFC 6455 5.5.2). Data past the bound goes through slow_consumer
 * (close 1008, or drop the oldest messages). Control frames cannot be
 * dropped from the middle of the stream, and answering only the latest of
 * many pings (5.5.3) would still leave a peer that pings and never reads
 * costing us one pong per ping it sends: once the control frames a peer's
 * input made push its queue past the bound, the role's overflow runs: the
 * server's (rc__conn_over_bound) drops the oldest messages under
 * slow_consumer="drop" and, if that does not make room, closes the peer
 * with 1008 as a slow consumer; a client fails the connection. Memory per
 * connection stays within max_queue_bytes plus one read's worth of pongs.
 *
 * Lifetime. A connection ends in rc__conn_abort, which reports RC_EV_CLOSE,
 * lets its role leave what it joined, frees its id and calls uv_close; its
 * memory is freed in the close callback, after libuv has cancelled any
 * pending write. Code that runs inside a loop over a room's members never
 * aborts: it marks the connection doomed and the flush aborts it.
 */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "loop/rc_internal.h"
#include "loop/rc_outq.h"
#include "proto/rc_frame.h"
#include "proto/rc_utf8.h"

#define RC__IOV_MAX 1024
#define RC__HBUF_STEP ((size_t)256)

uint32_t rc__max_frags(size_t max_message_size) {
  /* wslay keeps every fragment in buffers of its own (about 96 bytes for
   * a 1-byte fragment, measured): a message may be cut into one fragment
   * per 128 bytes of the size limit, so that the parser's memory stays
   * under the limit however small the fragments. */
  size_t frags = max_message_size / 128 + 16;
  return frags > UINT32_MAX ? UINT32_MAX : (uint32_t)frags;
}

/* --- ids ----------------------------------------------------------------- */

int rc__conn_register(rc_server *s, rc_conn *c) {
  uint32_t slot;
  if (s->nfree > 0) {
    slot = s->free_slots[--s->nfree];
  } else {
    if (s->nslots == s->capslots) {
      uint32_t cap = s->capslots ? s->capslots * 2 : 256;
      rc_conn **slots = realloc(s->slots, cap * sizeof(*slots));
      if (slots == NULL)
        return UV_ENOMEM;
      s->slots = slots;
      uint32_t *gens = realloc(s->gens, cap * sizeof(*gens));
      if (gens == NULL)
        return UV_ENOMEM;
      s->gens = gens;
      uint32_t *fr = realloc(s->free_slots, cap * sizeof(*fr));
      if (fr == NULL)
        return UV_ENOMEM;
      s->free_slots = fr;
      s->capslots = cap;
    }
    slot = s->nslots++;
    s->gens[slot] = 0;
  }
  s->gens[slot] = (s->gens[slot] + 1) & RC__GEN_MASK;
  s->slots[slot] = c;
  c->slot = slot;
  c->id = ((uint64_t)s->gens[slot] << 32) | (uint64_t)(slot + 1);
  s->nconns++;
  return 0;
}

rc_conn *rc__conn_adopted_find(rc_server *s, uint64_t id) {
  return rc__idmap_get(&s->adopted, id);
}

static void conn_unregister(rc_server *s, rc_conn *c) {
  if (c->id & RC__ADOPT_BIT)
    rc__idmap_del(&s->adopted, c->id);
  s->slots[c->slot] = NULL;
  s->free_slots[s->nfree++] = c->slot;
  s->nconns--;
}

int rc__conn_register_adopted(rc_server *s, rc_conn *c, uint64_t id) {
  int r = rc__conn_register(s, c);
  if (r != 0)
    return r;
  c->id = id;
  if ((r = rc__idmap_put(&s->adopted, id, c)) != 0)
    conn_unregister(s, c);
  return r;
}

rc_conn *rc__conn_slot_find(rc_server *s, uint64_t id) {
  uint32_t lo = (uint32_t)(id & 0xffffffffu);
  if (lo == 0 || lo > s->nslots)
    return NULL;
  rc_conn *c = s->slots[lo - 1];
  return (c != NULL && c->id == id) ? c : NULL;
}

/* --- queueing ------------------------------------------------------------ */

void rc__conn_mark_dirty(rc_conn *c) {
  if (c->dirty || c->state == RC_CONN_GONE)
    return;
  c->dirty = 1;
  c->next_dirty = c->srv->dirty;
  c->srv->dirty = c;
}

void rc__conn_fail(rc_conn *c) {
  c->doomed = 1;
  rc__conn_mark_dirty(c);
}

void rc__conn_enqueue(rc_conn *c, rc_buf *b) {
  if (c->state == RC_CONN_GONE)
    return;
  rc__buf_ref(b);
  if (rc__outq_push(&c->q, b) != 0) {
    rc__buf_unref(b);
    rc__conn_fail(c);
    return;
  }
  rc__conn_mark_dirty(c);
}

/* --- closing ------------------------------------------------------------- */

static void ws_free(rc_conn *c);

void rc__conn_closed(uv_handle_t *h) {
  rc_conn *c = RC__CONTAINER_OF(h, rc_conn, tcp);
  rc_server *s = c->srv;
  c->role->closed(c);
  rc_tls_free(c->tls);
  rc__outq_free(&c->q);
  ws_free(c);
  free(c->hbuf);
  free(c->close_reason);
  if (c->rooms != &c->first)
    free(c->rooms);
  free(c);
  s->open_handles--;
}

static uint16_t final_code(const rc_conn *c) {
  if (c->close_rcvd != 0) /* the peer's close frame, read by on_close_frame */
    return c->close_rcvd;
  if (c->ws == NULL)
    return c->close_code ? c->close_code : 1006;
  if (wslay_event_get_close_sent(c->ws)) {
    uint16_t code = wslay_event_get_status_code_sent(c->ws);
    return code ? code : 1005;
  }
  return 1006;
}

void rc__conn_abort(rc_conn *c) {
  if (c->state == RC_CONN_GONE)
    return;
  rc_server *s = c->srv;
  if (c->known) {
    rc__event_close(s, c->id, final_code(c), c->close_reason,
                    c->close_reason ? c->close_reason_len : 0);
  }
  c->role->gone(c);
  conn_unregister(s, c);
  if (c->admitted)
    s->admitted--;
  if (c->starved)
    s->nstarved--;
  c->state = RC_CONN_GONE;
  atomic_fetch_sub_explicit(&s->st_connections, 1, memory_order_relaxed);
  /* A client between two connect attempts: its handle is closing already,
   * and that close callback sees the connection has gone. */
  if (!c->role->handle_closing(c))
    uv_close((uv_handle_t *)&c->tcp, rc__conn_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  rc_conn *c = req->data;
  free(req);
  if (status < 0)
    rc__conn_abort(c);
}

static void start_read(rc_conn *c);

/* Everything is written: half-close and wait for the peer's EOF so that it
 * reads our last bytes instead of a reset. */
static void on_drained(rc_conn *c) {
  if (c->state != RC_CONN_DRAINING || c->shut)
    return;
  c->shut = 1;
  uv_shutdown_t *req = malloc(sizeof(*req));
  if (req == NULL) {
    rc__conn_abort(c);
    return;
  }
  req->data = c;
  int r = uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown);
  if (r < 0) {
    free(req);
    rc__conn_abort(c);
    return;
  }
  c->deadline = rc__now_ms(c->srv) + rc__secs_ms(c->srv->cfg.close_timeout) + 1;
  start_read(c);
}

static void enter_draining(rc_conn *c) {
  c->role->draining(c);
  c->state = RC_CONN_DRAINING;
  c->deadline = rc__now_ms(c->srv) + rc__secs_ms(c->srv->cfg.close_timeout) + 1;
  rc__conn_mark_dirty(c);
}

void rc__conn_drain(rc_conn *c) {
  if (c->state == RC_CONN_GONE || c->state == RC_CONN_DRAINING)
    return;
  enter_draining(c);
}

void rc__conn_respond(rc_conn *c, rc_buf *b) {
  if (c->state == RC_CONN_GONE || c->state == RC_CONN_DRAINING)
    return;
  rc__conn_enqueue(c, b);
  enter_draining(c);
}

static int ws_ensure(rc_conn *c);
static int ws_push_frames(rc_conn *c);

/* wslay has queued frames (pong, close): move them into our queue, then see
 * whether the close handshake is complete. */
static void after_ws_io(rc_conn *c) {
  if (c->state == RC_CONN_GONE || c->ws == NULL)
    return;
  if (ws_push_frames(c) != 0)
    return;
  if (c->state == RC_CONN_DRAINING)
    return;
  if (wslay_event_get_close_sent(c->ws) &&
      (wslay_event_get_close_received(c->ws) ||
       !wslay_event_get_read_enabled(c->ws)))
    enter_draining(c);
}

void rc__conn_close_ws(rc_conn *c, unsigned code, const char *reason,
                       size_t reason_len) {
  if (c->state != RC_CONN_OPEN)
    return;
  if (ws_ensure(c) != 0) {
    rc__conn_fail(c);
    return;
  }
  if (reason_len > 123) {
    /* A close frame's payload is at most 125 bytes; cut on a character. */
    reason_len = 123;
    while (reason_len > 0 && ((uint8_t)reason[reason_len] & 0xC0) == 0x80)
      reason_len--;
  }
  if (!rc_close_code_valid(code))
    code = 1011;
  int r = wslay_event_queue_close(c->ws, (uint16_t)code,
                                  (const uint8_t *)reason, reason_len);
  if (r != 0) {
    rc__conn_fail(c);
    return;
  }
  c->state = RC_CONN_CLOSING;
  c->deadline = rc__now_ms(c->srv) + rc__secs_ms(c->srv->cfg.close_timeout) + 1;
  after_ws_io(c);
}

void rc__conn_slow_consumer(rc_conn *c) {
  /* Policy: every member gets every message in order, or is disconnected.
   * What has not started to leave is dropped, so the close frame goes next
   * and the queue stops growing. */
  rc__outq_drop_unsent(&c->q);
  atomic_fetch_add_explicit(&c->srv->st_slow, 1, memory_order_relaxed);
  static const char reason[] = "message queue full (client too slow)";
  rc__conn_close_ws(c, 1008, reason, sizeof(reason) - 1);
}

/* The control frames wslay made for the peer's input have pushed the queue
 * past max_queue_bytes (see "Bounds" at the top): the server role's policy. */
void rc__conn_over_bound(rc_conn *c) {
  rc_server *s = c->srv;
  if (c->state != RC_CONN_OPEN)
    return; /* a close reply: wslay makes one, and nothing after it */
  size_t max = s->cfg.max_queue_bytes;
  if (s->cfg.drop_oldest) {
    uint32_t n = rc__outq_drop_oldest(&c->q, max / 2);
    if (n > 0)
      atomic_fetch_add_explicit(&s->st_dropped, n, memory_order_relaxed);
    if (c->q.bytes <= max)
      return;
  }
  rc__conn_slow_consumer(c);
}

/* Moves the frames wslay has made into the ring, in the order it made them,
 * and holds the connection to its bound. 0, or -1 when it has failed. */
static int ws_push_frames(rc_conn *c) {
  if (!wslay_event_want_write(c->ws))
    return 0;
  if (wslay_event_send(c->ws) != 0) {
    rc__conn_fail(c);
    return -1;
  }
  if (c->q.bytes > c->srv->cfg.max_queue_bytes)
    c->role->overflow(c);
  return c->state == RC_CONN_GONE || c->doomed ? -1 : 0;
}

/* --- permessage-deflate ---------------------------------------------------
 *
 * The server compresses a message for the first member that negotiated
 * deflate and keeps the result with the message (rc__buf_deflated): every
 * later member takes the same compressed frame, whatever room, run or
 * backplane message it came through. The answer always carried
 * server_no_context_takeover, so the frame stands alone for every member.
 * A member whose server_max_window_bits is below 15 takes it only when the
 * whole message fits its window (a back-reference never reaches further
 * back than the message's start); a longer one goes to it plain, so no
 * second variant is ever made. */

rc_deflater *rc__server_deflater(rc_server *s) {
  if (s->deflater == NULL)
    s->deflater = rc_deflater_new(6); /* see the deflate-choice results */
  return s->deflater;
}

rc_buf *rc__conn_frame_for(rc_conn *c, rc_buf *b) {
  if (c->pmd_tx == 0 || b->zstate == RC__BUF_Z_PLAIN || !b->is_message ||
      !c->role->peer_masks)
    return b;
  if (c->pmd_tx < RC_PMD_MAX_WINDOW_BITS &&
      rc__buf_payload_len(b) > ((size_t)1 << c->pmd_tx))
    return b;
  rc_server *s = c->srv;
  int fresh = b->zstate == RC__BUF_Z_UNTRIED;
  rc_buf *z =
      rc__buf_deflated(b, rc__server_deflater(s), s->cfg.compression_threshold);
  if (z == NULL)
    return b;
  if (fresh)
    atomic_fetch_add_explicit(&s->st_deflated, 1, memory_order_relaxed);
  return z;
}

int rc__conn_inflate(rc_conn *c, const uint8_t *in, size_t len, uint8_t *out,
                     size_t max, size_t *out_len, int *as_sent) {
  rc_server *s = c->srv;
  *as_sent = 0;
  if (s->inflater == NULL && (s->inflater = rc_inflater_new()) == NULL)
    return RC_INFLATE_NOMEM;
  int r = rc_inflate_message(s->inflater, in, len, out, max, out_len);
  *as_sent = rc_inflater_well_formed(s->inflater);
  return r;
}

/* Inflates a compressed message into s->zbuf, which grows with the
 * message it holds up to max bytes (and is let go once the message is
 * taken, when it grew past RC__ZBUF_MIN: see ws_on_msg): a message that would
 * inflate past max is refused after max bytes of output (RC_INFLATE_TOO_BIG). A
 * message that outgrows the buffer is inflated again into a larger one, except
 * on a stream that keeps its context (RC__PMD_RX_STREAM), which cannot be fed
 * twice: its buffer is max at once. */
#define RC__ZBUF_MIN 65536
static int inflate_message(rc_conn *c, const uint8_t *in, size_t len,
                           size_t max, size_t *out_len, int *as_sent) {
  rc_server *s = c->srv;
  size_t want = len < RC__ZBUF_MIN / 4 ? RC__ZBUF_MIN : len * 4;
  if (c->pmd_rx & RC__PMD_RX_STREAM || want > max)
    want = max;
  for (;;) {
    if (want > s->zbuf_cap) {
      uint8_t *nb = realloc(s->zbuf, want);
      if (nb == NULL)
        return RC_INFLATE_NOMEM;
      s->zbuf = nb;
      s->zbuf_cap = want;
    }
    size_t room = s->zbuf_cap < max ? s->zbuf_cap : max;
    int r = c->role->inflate(c, in, len, s->zbuf, room, out_len, as_sent);
    if (r != RC_INFLATE_TOO_BIG || room >= max)
      return r;
    want = room > max / 4 ? max : room * 4;
  }
}

int rc__conn_enqueue_data(rc_conn *c, rc_buf *b) {
  if (c->state != RC_CONN_OPEN)
    return 0;
  b = rc__conn_frame_for(c, b);
  size_t max = c->srv->cfg.max_queue_bytes;
  if (c->q.bytes > 0 && c->q.bytes + b->len > max) {
    if (!c->srv->cfg.drop_oldest) {
      rc__conn_slow_consumer(c);
      return 0;
    }
    uint32_t n = rc__outq_drop_oldest(&c->q, max / 2);
    if (c->q.bytes > 0 && c->q.bytes + b->len > max)
      n++; /* what is left cannot go: the new message is the one dropped */
    if (n > 0)
      atomic_fetch_add_explicit(&c->srv->st_dropped, n, memory_order_relaxed);
    if (c->q.bytes > 0 && c->q.bytes + b->len > max)
      return 0;
  }
  rc__conn_enqueue(c, b);
  return 1;
}

/* --- writing ------------------------------------------------------------- */

/* Adds to a counter only the loop thread writes (others only read it): a
 * plain load and store, no locked read-modify-write per member write. */
static inline void bump(atomic_uint_fast64_t *counter, uint64_t n) {
  atomic_store_explicit(counter,
                        atomic_load_explicit(counter, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

/* Every write: one call counted in writes, what the socket took in
 * bytes_out (a uv_write's bytes when it is asked: it writes them all or the
 * connection ends). */
static void count_write(rc_conn *c, int r, size_t asked) {
  bump(&c->srv->st_writes, 1);
  size_t took = r > 0 ? (size_t)r : asked;
  if (took > 0)
    bump(&c->srv->st_bytes_out, took);
}

/* Frames for a member with nothing queued are written at once, the way a
 * plain server would, with one writev() of the caller's iovec (built once
 * for the whole room, see rc__room_publish_run): no trip through the queue,
 * the reference counts and the end-of-turn flush. What the socket does not
 * take is queued behind. bufs[i] is the frame iov[i] points at; total is
 * their length. Returns how many frames were written or queued. */
uint32_t rc__conn_deliver_now(rc_conn *c, rc_buf *const *bufs,
                              const uv_buf_t *iov, uint32_t n, size_t total) {
  uint32_t done = 0, i = 0; /* bufs[i..] are queued below */
  if (c->state == RC_CONN_OPEN && c->q.count == 0 && !c->writing &&
      !c->doomed && c->tls == NULL && total <= INT_MAX) {
    int r = uv_try_write((uv_stream_t *)&c->tcp, iov, n);
    count_write(c, r, 0);
    if (r == (int)total)
      return n;
    if (r == UV_EAGAIN || r == UV_ENOSYS)
      r = 0;
    if (r < 0) {
      rc__conn_fail(c);
      return 0;
    }
    size_t left = (size_t)r;
    while (left >= bufs[i]->len) { /* r < total: stops before i == n */
      left -= bufs[i]->len;
      i++;
    }
    done = i;
    if (left > 0) { /* queued partly written: the rest leaves at the flush */
      rc__conn_enqueue(c, bufs[i++]);
      done++;
      if (c->q.count == 1)
        rc__outq_skip_head(&c->q, left);
    }
  }
  for (; i < n; i++)
    done += (uint32_t)rc__conn_enqueue_data(c, bufs[i]);
  return done;
}

static void flush(rc_conn *c);

/* libuv runs a write's callback, cancelled or not, before the handle's
 * close callback: c is still there. */
static void on_write(uv_write_t *req, int status) {
  rc_conn *c = req->data;
  free(req);
  uint32_t n = c->q.inflight;
  c->writing = 0;
  c->q.inflight = 0;
  if (c->state == RC_CONN_GONE)
    return; /* cancelled by uv_close; the close callback frees the ring */
  if (status < 0) {
    rc__conn_abort(c);
    return;
  }
  while (n-- > 0)
    rc__outq_pop(&c->q);
  c->role->queue_changed(c);
  flush(c); /* what came meanwhile, or the end of a draining connection */
}

/* The socket is full: a request for the rest of the queue's first max
 * frames, made only now (192 bytes that an idle connection need not
 * carry); on_write takes it up. */
static void write_rest(rc_conn *c, unsigned max) {
  uv_write_t *req = malloc(sizeof(*req));
  if (req == NULL) {
    rc__conn_abort(c);
    return;
  }
  req->data = c;
  uv_buf_t bufs[RC__IOV_MAX];
  unsigned n = rc__outq_fill_iov(&c->q, bufs, max);
  int r = uv_write(req, (uv_stream_t *)&c->tcp, bufs, n, on_write);
  if (r < 0) {
    count_write(c, r, 0);
    free(req);
    rc__conn_abort(c);
    return;
  }
  size_t asked = 0;
  for (unsigned i = 0; i < n; i++)
    asked += bufs[i].len;
  count_write(c, 0, asked);
  c->writing = 1;
  c->q.inflight = n;
}

/* A TLS connection's queue holds its frames as every connection's does,
 * shared with the other members up to here: records differ per member, so
 * encryption is the first copy a member gets, and it is made only when the
 * socket can take it. At the flush, with no write in flight (so every
 * frame queued is plaintext), the frames from the head are encrypted in
 * one pass, up to RC__TLS_SEAL bytes of them (at least one whole frame:
 * a frame is never cut, so the drop policies may still take any frame
 * behind), gathered into records of up to 16 KiB (s->seal; a frame that
 * fills whole records is encrypted where it is). The ciphertext, one block
 * with an rc_buf's header in front, takes their place at the head of the
 * queue and is written; while the socket takes everything, the next
 * frames follow. A member's ciphertext is thus bounded by RC__TLS_SEAL
 * and one frame, however much is queued for it, and max_queue_bytes
 * counts plaintext and ciphertext alike. Nothing can be encrypted before
 * the handshake: what is queued then (a refusal's HTTP answer) is
 * dropped. */
#define RC__TLS_RECORD sizeof(((rc_server *)0)->seal)
#define RC__TLS_SEAL ((size_t)64 * 1024)

/* Encrypts b's bytes into t, through s->seal (*staged bytes in it). */
static int seal_frame(rc_server *s, rc_tls *t, const rc_buf *b,
                      size_t *staged) {
  const uint8_t *p = b->data;
  size_t n = b->len;
  while (n > 0) {
    if (*staged == 0 && n >= RC__TLS_RECORD) {
      size_t k = n - n % RC__TLS_RECORD;
      if (rc_tls_write(t, p, k) != 0)
        return -1;
      p += k;
      n -= k;
      continue;
    }
    size_t k = RC__TLS_RECORD - *staged < n ? RC__TLS_RECORD - *staged : n;
    memcpy(s->seal + *staged, p, k);
    *staged += k;
    p += k;
    n -= k;
    if (*staged == RC__TLS_RECORD) {
      if (rc_tls_write(t, s->seal, *staged) != 0)
        return -1;
      *staged = 0;
    }
  }
  return 0;
}

/* The next block of ciphertext at the head of c's queue (*sealed), or
 * NULL when there is nothing to write; -1 when encryption failed. */
static int tls_seal(rc_conn *c, rc_buf **sealed) {
  rc_tls *t = c->tls;
  rc_server *s = c->srv;
  *sealed = NULL;
  int ready = rc_tls_ready(t);
  if (!ready) {
    rc__outq_drop_unsent(&c->q);
  } else if (c->q.count > 0) {
    size_t plain = 0;
    uint32_t k = 0;
    while (k < c->q.count && plain < RC__TLS_SEAL)
      plain += rc__outq_at(&c->q, k++)->len;
    /* a record's header, type byte and tag: under 64 bytes */
    if (rc_tls_reserve(t, plain + (plain / RC__TLS_RECORD + 1) * 64) != 0)
      return -1;
    size_t staged = 0;
    while (k-- > 0) {
      if (seal_frame(s, t, rc__outq_head(&c->q), &staged) != 0)
        return -1;
      rc__outq_pop(&c->q);
    }
    if (staged > 0 && rc_tls_write(t, s->seal, staged) != 0)
      return -1;
  }
  /* close_notify after the last record: the stream ends on purpose */
  if (c->state == RC_CONN_DRAINING && ready && c->q.count == 0 &&
      !(c->tls_flags & RC__TLS_SHUT)) {
    c->tls_flags |= RC__TLS_SHUT;
    if (rc_tls_shutdown(t) != 0)
      return -1;
  }
  size_t len;
  void *block = rc_tls_take_block(t, &len);
  if (block == NULL)
    return 0;
  rc_buf *b = rc__buf_from_block(block, len);
  if (rc__outq_push_front(&c->q, b) != 0) {
    rc__buf_unref(b);
    return -1;
  }
  *sealed = b;
  return 0;
}

/* flush() for a TLS connection: seal, write, and again while the socket
 * takes it all; the rest of a block leaves with uv_write. */
static void tls_flush(rc_conn *c) {
  for (;;) {
    rc_buf *b;
    if (tls_seal(c, &b) != 0) {
      rc__conn_abort(c);
      return;
    }
    if (b == NULL) {
      c->role->queue_changed(c);
      if (c->q.count == 0)
        on_drained(c);
      return;
    }
    uv_buf_t buf = uv_buf_init((char *)b->data, (unsigned)b->len);
    int r = b->len <= INT_MAX ? uv_try_write((uv_stream_t *)&c->tcp, &buf, 1)
                              : UV_EAGAIN;
    count_write(c, r, 0);
    if (r == UV_EAGAIN || r == UV_ENOSYS)
      r = 0;
    if (r < 0) {
      rc__conn_abort(c);
      return;
    }
    if ((size_t)r == b->len) {
      rc__outq_pop(&c->q);
      continue;
    }
    rc__outq_skip_head(&c->q, (size_t)r);
    write_rest(c, 1); /* the block alone: what follows is not sealed */
    c->role->queue_changed(c);
    return;
  }
}

static void flush(rc_conn *c) {
  if (c->writing || c->state == RC_CONN_GONE)
    return;
  if (c->tls != NULL) {
    tls_flush(c);
    return;
  }
  if (c->q.count == 0) {
    on_drained(c);
    return;
  }
  uv_buf_t bufs[RC__IOV_MAX];
  unsigned n = rc__outq_fill_iov(&c->q, bufs, RC__IOV_MAX);
  int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
  count_write(c, r, 0);
  if (r == UV_EAGAIN || r == UV_ENOSYS)
    r = 0;
  if (r < 0) {
    rc__conn_abort(c);
    return;
  }
  rc__outq_consume(&c->q, (size_t)r);
  c->role->queue_changed(c);
  if (c->q.count == 0) {
    on_drained(c);
    return;
  }
  write_rest(c, RC__IOV_MAX);
}

void rc__flush_dirty(rc_server *s) {
  while (s->dirty != NULL) {
    rc_conn *c = s->dirty;
    s->dirty = c->next_dirty;
    c->next_dirty = NULL;
    c->dirty = 0;
    if (c->doomed)
      rc__conn_abort(c);
    else
      flush(c);
  }
}

/* --- wslay --------------------------------------------------------------- */

/* The bytes wslay_event_recv may read, set around the call by feed_ws:
 * they live only during it, so they are the loop thread's, not every
 * connection's. */
static _Thread_local struct {
  const uint8_t *rd;
  size_t rdlen;
} ws_input;

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                       int flags, void *user_data) {
  (void)flags;
  (void)user_data;
  if (ws_input.rdlen == 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = len < ws_input.rdlen ? len : ws_input.rdlen;
  memcpy(buf, ws_input.rd, n);
  ws_input.rd += n;
  ws_input.rdlen -= n;
  return (ssize_t)n;
}

/* wslay hands a frame over in two writes, the header (flagged
 * WSLAY_MSG_MORE) then the payload, made back to back by one
 * wslay_frame_send. Written apart, a pong would cost two allocations (about
 * 190 bytes for the 127 it counts) or two TLS records; the header waits
 * here to be joined to its payload. One per loop thread: a server and the
 * client core may run in one process. */
#define RC__WS_HEAD_MAX 14 /* the longest frame header */
#define RC__WS_CTRL_MAX 125
static _Thread_local struct {
  uint8_t data[RC__WS_HEAD_MAX];
  size_t len;
} ws_head;

/* 1 when data (a header) was kept for the next write. */
static int ws_hold_head(const uint8_t *data, size_t len, int flags) {
  if (!(flags & WSLAY_MSG_MORE) || ws_head.len + len > sizeof ws_head.data)
    return 0;
  memcpy(ws_head.data + ws_head.len, data, len);
  ws_head.len += len;
  return 1;
}

/* wslay writes only control frames here (pong, close): small, so a copy,
 * through the role (a client's goes out as TLS records when it has TLS). */
static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data,
                       size_t len, int flags, void *user_data) {
  (void)ctx;
  rc_conn *c = user_data;
  if (ws_hold_head(data, len, flags))
    return (ssize_t)len;
  uint8_t frame[RC__WS_HEAD_MAX + RC__WS_CTRL_MAX];
  if (len <= RC__WS_CTRL_MAX) {
    memcpy(frame, ws_head.data, ws_head.len);
    memcpy(frame + ws_head.len, data, len);
    c->role->write(c, frame, ws_head.len + len);
  } else { /* not a control frame: never made, but not lost either */
    c->role->write(c, ws_head.data, ws_head.len);
    c->role->write(c, data, len);
  }
  ws_head.len = 0;
  return (ssize_t)len;
}

/* A compressed message inflated into s->zbuf (*len bytes): 0, or -1 after
 * closing the connection as RFC 7692 8 and RFC 6455 7.4.1 say: 1009 for a
 * message that inflates past max_message_size (after at most that many
 * bytes of output), 1007 for data that is not a compressed message. */
/* A buffer a large message or a bomb grew is not kept for the loop's
 * life: past RC__ZBUF_MIN it goes once its message is taken or refused. */
static void zbuf_release(rc_server *s) {
  if (s->zbuf_cap <= RC__ZBUF_MIN)
    return;
  free(s->zbuf);
  s->zbuf = NULL;
  s->zbuf_cap = 0;
}

static int inflated(rc_conn *c, const uint8_t *z, size_t zlen, size_t *len,
                    int *as_sent) {
  int r = inflate_message(c, z, zlen, c->role->limits(c)->max_message, len,
                          as_sent);
  if (r == RC_INFLATE_OK) {
    atomic_fetch_add_explicit(&c->srv->st_inflated, 1, memory_order_relaxed);
    return 0;
  }
  zbuf_release(c->srv);
  static const char big[] = "message too big once inflated";
  static const char bad[] = "invalid compressed message";
  static const char mem[] = "out of memory";
  if (r == RC_INFLATE_TOO_BIG)
    rc__conn_close_ws(c, 1009, big, sizeof(big) - 1);
  else if (r == RC_INFLATE_BAD_DATA)
    rc__conn_close_ws(c, 1007, bad, sizeof(bad) - 1);
  else
    rc__conn_close_ws(c, 1011, mem, sizeof(mem) - 1);
  if (c->ws != NULL)
    wslay_event_shutdown_read(c->ws);
  return -1;
}

static void ws_on_msg(wslay_event_context_ptr ctx,
                      const struct wslay_event_on_msg_recv_arg *arg,
                      void *user_data) {
  (void)ctx;
  rc_conn *c = user_data;
  rc_server *s = c->srv;
  /* A pong or close reply wslay queued for this frame, or for a ping
   * between the fragments of this message, goes before anything this
   * message makes (a relay may write to this very connection). */
  if (ws_push_frames(c) != 0)
    return;
  switch (arg->opcode) {
  case WSLAY_TEXT_FRAME:
  case WSLAY_BINARY_FRAME: {
    if (c->state != RC_CONN_OPEN)
      return; /* we are closing: RFC 6455 7.1.1 lets us discard */
    const uint8_t *msg = arg->msg, *z = NULL;
    size_t len = arg->msg_length, zlen = 0;
    /* wslay lets RSV1 through only when deflate was negotiated (ws_ensure)
     * and only on a message's first frame. */
    if (arg->rsv & WSLAY_RSV1_BIT) {
      int as_sent;
      if (inflated(c, msg, len, &len, &as_sent) != 0)
        return;
      if (as_sent) { /* may go on as it came */
        z = arg->msg;
        zlen = arg->msg_length;
      }
      msg = s->zbuf;
    }
    if (arg->opcode == WSLAY_TEXT_FRAME && !rc_utf8_valid(msg, len)) {
      static const char reason[] = "invalid UTF-8 in text message";
      rc__conn_close_ws(c, 1007, reason, sizeof(reason) - 1);
      wslay_event_shutdown_read(c->ws);
      return;
    }
    c->last_msg = rc__now_ms(s);
    atomic_fetch_add_explicit(&s->st_messages_in, 1, memory_order_relaxed);
    c->role->message(c, arg->opcode == WSLAY_TEXT_FRAME, msg, len, z, zlen);
    if (msg == s->zbuf) /* taken: copied into an event or a frame */
      zbuf_release(s);
    return;
  }
  case WSLAY_PONG:
    c->ping_out = 0;
    return;
  default:
    /* ping: wslay queues the pong itself. Close frames never reach wslay:
     * see on_close_frame. */
    return;
  }
}

void rc__conn_message_event(rc_conn *c, int is_text, const uint8_t *msg,
                            size_t len, const uint8_t *z, size_t zlen) {
  (void)z; /* the embedder takes the inflated bytes */
  (void)zlen;
  rc_event *ev = rc__event_new(RC_EV_MESSAGE, c->id, len);
  if (ev == NULL) {
    rc__conn_fail(c);
    return;
  }
  ev->is_text = is_text != 0;
  if (len > 0)
    memcpy(ev->data, msg, len);
  rc__event_push(c->srv, ev);
}

/* wslay's context costs about 13 KiB: a connection holds one only while it
 * is busy. The sweep drops it when the client's stream is at rest (see
 * rc_frame_scan) and nothing is waiting inside wslay; it is made again here
 * when the next byte arrives. */
static int ws_ensure(rc_conn *c) {
  if (c->ws != NULL)
    return 0;
  /* wslay copies the callbacks: the role's genmask joins ours here. */
  struct wslay_event_callbacks cb = {
      .recv_callback = ws_recv,
      .send_callback = ws_send,
      .genmask_callback = c->role->genmask,
      .on_msg_recv_callback = ws_on_msg,
  };
  if (c->role->ws_init(&c->ws, &cb, c) != 0) {
    c->ws = NULL;
    return -1;
  }
  /* wslay allocates a message's declared length before its payload
   * arrives: the limit must be set before the first byte is read. */
  wslay_event_config_set_max_recv_msg_length(c->ws,
                                             c->role->limits(c)->max_message);
  /* RSV1 marks a compressed message (RFC 7692 6) once deflate is agreed;
   * wslay refuses it on control and continuation frames itself, and any
   * RSV bit it was not allowed with 1002. */
  if (c->pmd_rx)
    wslay_event_config_set_allowed_rsv_bits(c->ws, WSLAY_RSV1_BIT);
  atomic_fetch_add_explicit(&c->srv->st_parsers, 1, memory_order_relaxed);
  return 0;
}

static void ws_free(rc_conn *c) {
  if (c->ws == NULL)
    return;
  wslay_event_context_free(c->ws);
  c->ws = NULL;
  atomic_fetch_sub_explicit(&c->srv->st_parsers, 1, memory_order_relaxed);
  c->srv->transient_freed++;
}

static void ws_release_if_idle(rc_conn *c) {
  if (c->ws == NULL || c->state != RC_CONN_OPEN || c->rx_recent ||
      !rc_frame_scan_at_rest(&c->scan) || wslay_event_want_write(c->ws) ||
      wslay_event_get_close_sent(c->ws) ||
      wslay_event_get_close_received(c->ws))
    return;
  ws_free(c);
}

/* The peer's close frame is read here, whole, and never by wslay: wslay
 * 1.1.1 checks a received code against RFC 6455's list only
 * (wslay_event_is_valid_status_code: 1000-1011 but 1004-1006, 3000-4999)
 * and answers the codes IANA registered since (1012 service restart, 1013
 * try again later, 1014 bad gateway) with 1002, and the wslay in use is
 * the system's. The scanner stops at the frame's first byte; its bytes,
 * at most RC_FRAME_MAX_CLOSE, wait in hbuf (free since the handshake)
 * until the frame is whole. Then its close is echoed through wslay's queue
 * (wslay_event_queue_close takes any code), reading stops, and after_ws_io
 * sends the echo and drains, as wslay would have done. */
static void on_close_frame(rc_conn *c) {
  rc_frame_close fc;
  unsigned err = rc_frame_close_parse((uint8_t *)c->hbuf, c->hlen,
                                      c->role->peer_masks, &fc);
  if (err != 0) {
    static const char utf8[] = "invalid UTF-8 in close reason";
    static const char bad[] = "invalid close frame";
    if (err == 1007)
      rc__conn_close_ws(c, err, utf8, sizeof(utf8) - 1);
    else
      rc__conn_close_ws(c, err, bad, sizeof(bad) - 1);
  } else {
    c->close_rcvd = fc.code != 0 ? (uint16_t)fc.code : 1005;
    if (fc.reason_len > 0 && c->close_reason == NULL) {
      c->close_reason = malloc(fc.reason_len + 1);
      if (c->close_reason != NULL) {
        c->close_reason_len = (uint32_t)fc.reason_len;
        memcpy(c->close_reason, fc.reason, fc.reason_len);
        c->close_reason[fc.reason_len] = '\0';
      }
    }
    /* After our own close (RC_CONN_CLOSING) this is the reply: nothing to
     * echo, and wslay says so with WSLAY_ERR_NO_MORE_MSG. */
    int r = wslay_event_queue_close(c->ws, (uint16_t)fc.code, fc.reason,
                                    fc.reason_len);
    if (r != 0 && r != WSLAY_ERR_NO_MORE_MSG)
      rc__conn_fail(c);
  }
  if (c->ws != NULL)
    wslay_event_shutdown_read(c->ws);
  free(c->hbuf);
  c->hbuf = NULL;
  c->hlen = c->hcap = 0;
}

/* Bytes from the first byte of the peer's close frame on; what follows
 * the frame is never read (RFC 6455 5.5.1). */
static void close_frame_bytes(rc_conn *c, const char *data, size_t len) {
  if (c->ws == NULL || !wslay_event_get_read_enabled(c->ws))
    return; /* wslay failed the connection on an earlier frame */
  size_t need;
  while (c->hlen < (need = rc_frame_close_size((uint8_t *)c->hbuf, c->hlen))) {
    if (len == 0)
      return; /* the rest comes with a later read */
    size_t take = need - c->hlen < len ? need - c->hlen : len;
    if (rc__conn_head_append(c, data, take, RC_FRAME_MAX_CLOSE) != 0)
      return;
    data += take;
    len -= take;
  }
  on_close_frame(c);
}

static void feed_ws(rc_conn *c, const char *data, size_t len) {
  if (ws_ensure(c) != 0) {
    rc__conn_fail(c);
    return;
  }
  /* The scanner passes on the bytes before the first header it refuses:
   * wslay would drop such a connection without a close frame, or (for
   * tiny fragments) buffer each fragment at several times its size. */
  int refused = c->scan.error != 0;
  uint32_t max_frags = c->role->limits(c)->max_frags;
  size_t ok =
      rc_frame_scan_feed(&c->scan, (const uint8_t *)data, len, max_frags);
  if (ok > 0) {
    /* Saved and restored: nothing inside feeds another connection today,
     * but a relay that did must not see this one's bytes. */
    const uint8_t *rd = ws_input.rd;
    size_t rdlen = ws_input.rdlen;
    ws_input.rd = (const uint8_t *)data;
    ws_input.rdlen = ok;
    int r = wslay_event_recv(c->ws);
    ws_input.rd = rd;
    ws_input.rdlen = rdlen;
    if (r != 0) {
      rc__conn_fail(c);
      return;
    }
  }
  if (!refused && c->scan.error != 0) {
    /* wslay may have failed the connection itself on an earlier frame of
     * this read: its close goes out first, and then it is the only one. */
    after_ws_io(c);
    if (c->state != RC_CONN_OPEN || c->ws == NULL ||
        wslay_event_get_close_sent(c->ws))
      return;
    static const char frags[] = "message in too many fragments";
    static const char header[] = "invalid frame header";
    if (c->scan.error == 1009) {
      atomic_fetch_add_explicit(&c->srv->st_frag, 1, memory_order_relaxed);
      rc__conn_close_ws(c, 1009, frags, sizeof(frags) - 1);
    } else {
      rc__conn_close_ws(c, c->scan.error, header, sizeof(header) - 1);
    }
    if (c->ws != NULL)
      wslay_event_shutdown_read(c->ws);
  } else if (c->scan.closing && c->state != RC_CONN_GONE) {
    close_frame_bytes(c, data + ok, len - ok);
  }
  after_ws_io(c);
}

/* --- reading ------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  rc_conn *c = RC__CONTAINER_OF(h, rc_conn, tcp);
  /* One buffer for all: libuv reads one socket at a time and every read is
   * consumed before on_read returns. */
  *buf = uv_buf_init(c->srv->readbuf, sizeof(c->srv->readbuf));
}

static void pause_read(rc_conn *c);

/* The embedder has not polled the events already queued (a handler that
 * blocks its loop, say): stop reading from this client, which is sending,
 * until a poll frees half of max_event_bytes. Memory stays bounded and the
 * clients that send nothing are not affected. */
static void starve(rc_conn *c) {
  rc_server *s = c->srv;
  if (c->starved || c->state == RC_CONN_GONE || c->state == RC_CONN_DRAINING)
    return;
  c->starved = 1;
  s->nstarved++;
  atomic_fetch_add_explicit(&s->st_starved, 1, memory_order_relaxed);
  pause_read(c);
  /* Paired with rc_server_poll(): if the poll that emptied the queue ran
   * before `starving` was set, it could not see it; the end of this loop
   * turn (rc_server.c's on_check) looks at the bytes instead. */
  atomic_store(&s->starving, 1);
}

void rc__conn_unstarve(rc_conn *c, uint64_t now) {
  c->starved = 0;
  c->srv->nstarved--;
  /* Silence while held was not the peer's doing. */
  c->last_rx = c->ping_at = now;
  if (!c->held && rc__conn_reading_state(c))
    start_read(c);
}

int rc__conn_reading_state(const rc_conn *c) {
  switch (c->state) {
  case RC_CONN_HTTP:
  case RC_CONN_OPEN:
  case RC_CONN_CLOSING:
  case RC_CONN_TLS:
  case RC_CONN_UPGRADING:
    return 1;
  default:
    return 0;
  }
}

void rc__conn_received(rc_conn *c, const char *data, size_t len) {
  c->role->received(c, data, len);
  if (atomic_load_explicit(&c->srv->ev_bytes, memory_order_relaxed) >
      c->srv->cfg.max_event_bytes)
    starve(c);
}

void rc__conn_frames(rc_conn *c, const char *data, size_t len) {
  c->last_rx = rc__now_ms(c->srv);
  c->rx_recent = 1;
  if (c->state == RC_CONN_OPEN || c->state == RC_CONN_CLOSING)
    feed_ws(c, data, len);
  /* else draining: the peer's last bytes are of no interest */
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  rc_conn *c = RC__CONTAINER_OF(stream, rc_conn, tcp);
  if (nread == 0)
    return;
  if (nread < 0) {
    c->role->lost(c, (int)nread);
    return;
  }
  rc__conn_received(c, buf->base, (size_t)nread);
}

void rc__conn_start_read(rc_conn *c) { start_read(c); }

void rc__conn_pause_read(rc_conn *c) { pause_read(c); }

static void start_read(rc_conn *c) {
  if (!c->read_paused)
    return;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
    rc__conn_fail(c);
    return;
  }
  c->read_paused = 0;
}

static void pause_read(rc_conn *c) {
  if (c->read_paused)
    return;
  (void)uv_read_stop((uv_stream_t *)&c->tcp); /* always returns 0 */
  c->read_paused = 1;
}

void rc__conn_hold(rc_conn *c, int on) {
  int reads = c->state == RC_CONN_OPEN || c->state == RC_CONN_CLOSING;
  c->held = on != 0;
  if (on) {
    if (reads)
      pause_read(c);
    return;
  }
  c->last_rx = c->ping_at = rc__now_ms(c->srv);
  if (!c->starved && reads)
    start_read(c);
}

int rc__conn_head_append(rc_conn *c, const char *data, size_t len, size_t cap) {
  size_t want = c->hlen + len;
  if (want > c->hcap) {
    /* The first block fits the first read (most heads come whole), in
     * steps of RC__HBUF_STEP: a burst of handshakes holds no more. */
    size_t ncap =
        c->hcap ? c->hcap : (want + RC__HBUF_STEP - 1) & ~(RC__HBUF_STEP - 1);
    while (ncap < want)
      ncap *= 2;
    if (ncap > cap)
      ncap = cap;
    char *nb = realloc(c->hbuf, ncap);
    if (nb == NULL) {
      rc__conn_fail(c);
      return -1;
    }
    c->hbuf = nb;
    c->hcap = (uint32_t)ncap;
  }
  memcpy(c->hbuf + c->hlen, data, len);
  c->hlen += (uint32_t)len;
  return 0;
}

/* --- the sweep ----------------------------------------------------------- */

/* Keepalive and idle closes of an open connection. */
static void sweep_open(rc_conn *c, uint64_t now) {
  const rc__limits *lim = c->role->limits(c);
  if (!c->rx_recent && !c->writing)
    rc__outq_shrink_if_idle(&c->q);
  ws_release_if_idle(c);
  c->rx_recent = 0;
  if (lim->idle_ms != 0 && !c->held && !c->starved &&
      now - c->last_msg >= lim->idle_ms) {
    static const char reason[] = "idle timeout";
    atomic_fetch_add_explicit(&c->srv->st_idle, 1, memory_order_relaxed);
    rc__conn_close_ws(c, 1001, reason, sizeof(reason) - 1);
    return;
  }
  /* While the embedder holds reading, an unread pong is not the peer's
   * fault: keepalive waits until reading resumes. */
  if (lim->ping_ms == 0 || c->held || c->starved)
    return;
  if (c->ping_out) {
    if (lim->pong_ms != 0 && now - c->ping_at >= lim->pong_ms) {
      static const char reason[] = "keepalive ping timeout";
      rc__conn_close_ws(c, 1011, reason, sizeof(reason) - 1);
    }
  } else if (now - c->last_rx >= lim->ping_ms) {
    if (c->role->ping(c) != 0)
      return;
    c->ping_out = 1;
    c->ping_at = now;
  }
}

void rc__conn_sweep(rc_conn *c, uint64_t now) {
  switch (c->state) {
  case RC_CONN_OPEN:
    sweep_open(c, now);
    break;
  case RC_CONN_CLOSING:
  case RC_CONN_DRAINING:
    if (c->deadline != 0 && now >= c->deadline)
      rc__conn_abort(c);
    break;
  case RC_CONN_GONE:
    break;
  default: /* opening: the handshake's deadline is the role's */
    if (c->deadline != 0 && now >= c->deadline)
      c->role->deadline(c);
    break;
  }
}
