/* rc_conn.c - one connection: accept, the opening handshake, reading frames
 * through wslay, the output queue and the close.
 *
 * Writing. rc__conn_enqueue appends a reference to a shared frame to the
 * connection's ring and puts the connection on the server's dirty list; at
 * the end of the loop turn (uv_check) rc__flush_dirty writes each dirty
 * connection's frames with one uv_try_write (writev) and, for what the
 * socket did not take, one uv_write. At most one uv_write is in flight per
 * connection, so frames never interleave, and everything queued in one turn
 * leaves in one system call. The one exception is the fan-out's common case
 * (rc__conn_deliver_now): publishes that end a wake-up's commands are
 * written at once to members with nothing queued, from one iovec shared by
 * the whole room, and only what a socket does not take is queued.
 *
 * Order. Frames to one connection leave in the order they were made, control
 * frames included. wslay makes pongs and close replies inside
 * wslay_event_recv; they are moved into the ring in the callback that
 * reports the frame (ws_on_msg) and after every recv (after_ws_io), so wslay
 * never holds a frame while our code runs and the direct path of
 * rc__conn_deliver_now, which writes only to an empty ring, cannot pass one.
 *
 * Bounds. Every frame in the ring counts against max_queue_bytes: data,
 * HTTP answers and the control frames wslay makes for the peer (a pong per
 * ping, RFC 6455 5.5.2). Data past the bound goes through slow_consumer
 * (close 1008, or drop the oldest messages). Control frames cannot be
 * dropped from the middle of the stream, and answering only the latest of
 * many pings (5.5.3) would still leave a peer that pings and never reads
 * costing us one pong per ping it sends: once the control frames a peer's
 * input made push its queue past the bound, the oldest messages are dropped
 * under slow_consumer="drop" and, if that does not make room, the peer is
 * closed with 1008 as a slow consumer (a client fails the connection).
 * Memory per connection stays within max_queue_bytes plus one read's worth
 * of pongs.
 *
 * Lifetime. A connection ends in rc__conn_abort, which reports RC_EV_CLOSE,
 * leaves its rooms, frees its id and calls uv_close; its memory is freed in
 * the close callback, after libuv has cancelled any pending write. Code that
 * runs inside a loop over a room's members never aborts: it marks the
 * connection doomed and the flush aborts it.
 */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "proto/rc_frame.h"
#include "proto/rc_http.h"
#include "loop/rc_internal.h"
#include "proto/rc_utf8.h"

#define RC__IOV_MAX 1024
#define RC__HBUF_FIRST 1024
#define RC__HBUF_SLACK 1024 /* bytes past max_header_bytes kept for pipelining */

static uint64_t now_ms(rc_server *s) { return uv_now(&s->loop); }

static uint64_t secs_ms(double secs) {
  return secs <= 0 ? 0 : (uint64_t)(secs * 1000.0 + 0.5);
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
  s->gens[slot]++;
  s->slots[slot] = c;
  c->slot = slot;
  c->id = ((uint64_t)s->gens[slot] << 32) | (uint64_t)(slot + 1);
  s->nconns++;
  return 0;
}

static void conn_unregister(rc_server *s, rc_conn *c) {
  s->slots[c->slot] = NULL;
  s->free_slots[s->nfree++] = c->slot;
  s->nconns--;
}

rc_conn *rc__conn_find(rc_server *s, uint64_t id) {
  if (id & RC__CLIENT_BIT)
    return rc__client_find(s, id);
  uint32_t lo = (uint32_t)(id & 0xffffffffu);
  if (lo == 0 || lo > s->nslots)
    return NULL;
  rc_conn *c = s->slots[lo - 1];
  return (c != NULL && c->id == id) ? c : NULL;
}

/* --- the output queue ---------------------------------------------------- */

static int outq_push(rc_outq *q, rc_buf *b) {
  if (q->count == q->cap) {
    uint32_t cap = q->cap ? q->cap * 2 : 8;
    rc_buf **ring = malloc(cap * sizeof(*ring));
    if (ring == NULL)
      return UV_ENOMEM;
    for (uint32_t i = 0; i < q->count; i++)
      ring[i] = q->ring[(q->head + i) & (q->cap - 1)];
    free(q->ring);
    q->ring = ring;
    q->cap = cap;
    q->head = 0;
  }
  q->ring[(q->head + q->count) & (q->cap - 1)] = b;
  q->count++;
  q->bytes += b->len;
  return 0;
}

static void outq_pop(rc_outq *q) {
  rc_buf *b = q->ring[q->head];
  q->bytes -= b->len - q->head_off;
  q->head_off = 0;
  q->head = (q->head + 1) & (q->cap - 1);
  q->count--;
  rc__buf_unref(b);
}

/* Marks n written bytes as gone, from the head. */
static void outq_consume(rc_outq *q, size_t n) {
  while (n > 0 && q->count > 0) {
    rc_buf *b = q->ring[q->head];
    size_t left = b->len - q->head_off;
    if (n < left) {
      q->head_off += n;
      q->bytes -= n;
      return;
    }
    n -= left;
    outq_pop(q);
  }
}

static void outq_shrink_if_idle(rc_outq *q) {
  /* An idle connection keeps at most a small ring. Called by the sweep, not
   * after every flush: a busy member would otherwise free and regrow its
   * ring on every loop turn. */
  if (q->count == 0 && q->cap > 16) {
    free(q->ring);
    q->ring = NULL;
    q->cap = 0;
    q->head = 0;
  }
}

/* Drops queued frames that have not started to leave: the ones after the
 * in-flight write and after a partly written head frame. */
static void outq_drop_unsent(rc_outq *q) {
  uint32_t keep = q->inflight;
  if (keep == 0 && q->head_off > 0)
    keep = 1;
  while (q->count > keep) {
    uint32_t last = (q->head + q->count - 1) & (q->cap - 1);
    q->bytes -= q->ring[last]->len;
    rc__buf_unref(q->ring[last]);
    q->count--;
  }
}

/* Drops the oldest whole messages that have not started to leave until at
 * most target bytes wait, keeping the order of the rest. Returns how many
 * it dropped. Draining to a target below the limit keeps the cost at one
 * pass over the ring per many messages, not one per message. */
static uint32_t outq_drop_oldest(rc_outq *q, size_t target) {
  uint32_t keep = q->inflight;
  if (keep == 0 && q->head_off > 0)
    keep = 1;
  uint32_t mask = q->cap - 1, w = keep, dropped = 0;
  for (uint32_t i = keep; i < q->count; i++) {
    rc_buf *b = q->ring[(q->head + i) & mask];
    if (q->bytes > target && b->is_message) {
      q->bytes -= b->len;
      rc__buf_unref(b);
      dropped++;
      continue;
    }
    q->ring[(q->head + w) & mask] = b;
    w++;
  }
  q->count = w;
  return dropped;
}

static void outq_free(rc_outq *q) {
  while (q->count > 0)
    outq_pop(q);
  free(q->ring);
  memset(q, 0, sizeof(*q));
}

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
  if (outq_push(&c->q, b) != 0) {
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
  if (c->cl != NULL)
    rc__client_release(c->cl);
  outq_free(&c->q);
  ws_free(c);
  free(c->hbuf);
  free(c->close_reason);
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
    const char *reason = c->close_reason ? c->close_reason : "";
    size_t rlen = c->close_reason ? c->close_reason_len : 0;
    rc_event *ev = rc__event_new(RC_EV_CLOSE, c->id, rlen);
    if (ev != NULL) {
      ev->code = final_code(c);
      memcpy(ev->data, reason, rlen);
      rc__event_push(s, ev);
    }
  }
  rc__room_leave_all(s, c);
  conn_unregister(s, c);
  if (c->admitted)
    s->admitted--;
  if (c->starved)
    s->nstarved--;
  c->state = RC_CONN_GONE;
  atomic_fetch_sub_explicit(&s->st_connections, 1, memory_order_relaxed);
  /* A client between two connect attempts: its handle is closing already,
   * and that close callback sees the connection has gone. */
  if (c->cl == NULL || !c->cl->retrying)
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
  c->deadline = now_ms(c->srv) + secs_ms(c->srv->cfg.close_timeout) + 1;
  start_read(c);
}

static void enter_draining(rc_conn *c) {
  if (c->cl != NULL)
    rc__client_draining(c);
  c->state = RC_CONN_DRAINING;
  c->deadline = now_ms(c->srv) + secs_ms(c->srv->cfg.close_timeout) + 1;
  rc__conn_mark_dirty(c);
}

/* Queues bytes (an HTTP answer) and closes once they are written. */
void rc__respond(rc_conn *c, rc_buf *b) {
  if (c->state == RC_CONN_GONE || c->state == RC_CONN_DRAINING)
    return;
  rc__conn_enqueue(c, b);
  enter_draining(c);
}

static void respond_status(rc_conn *c, int status, const char *extra,
                           const char *reason) {
  size_t blen = strlen(reason);
  char body[160];
  if (blen > sizeof(body) - 2)
    blen = sizeof(body) - 2;
  memcpy(body, reason, blen);
  body[blen++] = '\n';
  rc_buf *b = rc__buf_http(status, extra, body, blen, 1, 0);
  if (b == NULL) {
    rc__conn_fail(c);
    return;
  }
  rc__respond(c, b);
  rc__buf_unref(b);
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
  c->deadline = now_ms(c->srv) + secs_ms(c->srv->cfg.close_timeout) + 1;
  after_ws_io(c);
}

static void slow_consumer(rc_conn *c) {
  /* Policy: every member gets every message in order, or is disconnected.
   * What has not started to leave is dropped, so the close frame goes next
   * and the queue stops growing. */
  outq_drop_unsent(&c->q);
  atomic_fetch_add_explicit(&c->srv->st_slow, 1, memory_order_relaxed);
  static const char reason[] = "message queue full (client too slow)";
  rc__conn_close_ws(c, 1008, reason, sizeof(reason) - 1);
}

/* The control frames wslay made for the peer's input have pushed the queue
 * past max_queue_bytes (see "Bounds" at the top). */
static void control_over_bound(rc_conn *c) {
  rc_server *s = c->srv;
  if (c->cl != NULL) {
    rc__client_overflow(c);
    return;
  }
  if (c->state != RC_CONN_OPEN)
    return; /* a close reply: wslay makes one, and nothing after it */
  size_t max = s->cfg.max_queue_bytes;
  if (s->cfg.drop_oldest) {
    uint32_t n = outq_drop_oldest(&c->q, max / 2);
    if (n > 0)
      atomic_fetch_add_explicit(&s->st_dropped, n, memory_order_relaxed);
    if (c->q.bytes <= max)
      return;
  }
  slow_consumer(c);
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
    control_over_bound(c);
  return c->state == RC_CONN_GONE || c->doomed ? -1 : 0;
}

int rc__conn_enqueue_data(rc_conn *c, rc_buf *b) {
  if (c->state != RC_CONN_OPEN)
    return 0;
  size_t max = c->srv->cfg.max_queue_bytes;
  if (c->q.bytes > 0 && c->q.bytes + b->len > max) {
    if (!c->srv->cfg.drop_oldest) {
      slow_consumer(c);
      return 0;
    }
    uint32_t n = outq_drop_oldest(&c->q, max / 2);
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
      !c->doomed && total <= INT_MAX) {
    int r = uv_try_write((uv_stream_t *)&c->tcp, iov, n);
    atomic_fetch_add_explicit(&c->srv->st_writes, 1, memory_order_relaxed);
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
      if (c->q.count == 1) {
        c->q.head_off = left;
        c->q.bytes -= left;
      }
    }
  }
  for (; i < n; i++)
    done += (uint32_t)rc__conn_enqueue_data(c, bufs[i]);
  return done;
}

static unsigned fill_iov(rc_conn *c, uv_buf_t *bufs) {
  rc_outq *q = &c->q;
  unsigned n = q->count < RC__IOV_MAX ? q->count : RC__IOV_MAX;
  for (unsigned i = 0; i < n; i++) {
    rc_buf *b = q->ring[(q->head + i) & (q->cap - 1)];
    size_t off = i == 0 ? q->head_off : 0;
    bufs[i] = uv_buf_init((char *)b->data + off, (unsigned)(b->len - off));
  }
  return n;
}

static void flush(rc_conn *c);

static void on_write(uv_write_t *req, int status) {
  rc_conn *c = RC__CONTAINER_OF(req, rc_conn, wreq);
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
    outq_pop(&c->q);
  rc__client_note_queue(c);
  if (c->q.count > 0)
    flush(c);
  else
    on_drained(c);
}

static void flush(rc_conn *c) {
  if (c->writing || c->state == RC_CONN_GONE)
    return;
  if (c->q.count == 0) {
    on_drained(c);
    return;
  }
  uv_buf_t bufs[RC__IOV_MAX];
  unsigned n = fill_iov(c, bufs);
  int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
  atomic_fetch_add_explicit(&c->srv->st_writes, 1, memory_order_relaxed);
  if (r == UV_EAGAIN || r == UV_ENOSYS)
    r = 0;
  if (r < 0) {
    rc__conn_abort(c);
    return;
  }
  outq_consume(&c->q, (size_t)r);
  rc__client_note_queue(c);
  if (c->q.count == 0) {
    on_drained(c);
    return;
  }
  n = fill_iov(c, bufs);
  r = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, bufs, n, on_write);
  atomic_fetch_add_explicit(&c->srv->st_writes, 1, memory_order_relaxed);
  if (r < 0) {
    rc__conn_abort(c);
    return;
  }
  c->writing = 1;
  c->q.inflight = n;
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

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                       int flags, void *user_data) {
  (void)flags;
  rc_conn *c = user_data;
  if (c->rdlen == 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = len < c->rdlen ? len : c->rdlen;
  memcpy(buf, c->rd, n);
  c->rd += n;
  c->rdlen -= n;
  return (ssize_t)n;
}

/* wslay hands a frame over in two writes, the header (flagged
 * WSLAY_MSG_MORE) then the payload, made back to back by one
 * wslay_frame_send. Queued apart, a pong would cost two allocations (about
 * 190 bytes for the 127 it counts); the header waits here to be joined to
 * its payload. One per loop thread: a server and the client core may run
 * in one process. */
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

/* wslay writes only control frames here (pong, close): small, so a copy. */
static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data,
                       size_t len, int flags, void *user_data) {
  rc_conn *c = user_data;
  if (ws_hold_head(data, len, flags))
    return (ssize_t)len;
  rc_buf *b = rc__buf_new(ws_head.len + len);
  if (b == NULL) {
    ws_head.len = 0;
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  memcpy(b->data, ws_head.data, ws_head.len);
  memcpy(b->data + ws_head.len, data, len);
  ws_head.len = 0;
  rc__conn_enqueue(c, b);
  rc__buf_unref(b);
  return (ssize_t)len;
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
    if (!rc_utf8_valid(arg->msg, arg->msg_length)) {
      static const char reason[] = "invalid UTF-8 in text message";
      rc__conn_close_ws(c, 1007, reason, sizeof(reason) - 1);
      wslay_event_shutdown_read(c->ws);
      return;
    }
    /* fall through */
  case WSLAY_BINARY_FRAME: {
    if (c->state != RC_CONN_OPEN)
      return; /* we are closing: RFC 6455 7.1.1 lets us discard */
    c->last_msg = now_ms(s);
    atomic_fetch_add_explicit(&s->st_messages_in, 1, memory_order_relaxed);
    if (c->nrelay > 0) { /* forwarded here; Python never sees it */
      rc_buf *b = rc__buf_message(arg->opcode == WSLAY_TEXT_FRAME, arg->msg,
                                  arg->msg_length);
      if (b == NULL) {
        rc__conn_fail(c);
        return;
      }
      rc__room_relay(s, c, b);
      rc__buf_unref(b);
      return;
    }
    rc_event *ev = rc__event_new(RC_EV_MESSAGE, c->id, arg->msg_length);
    if (ev == NULL) {
      rc__conn_fail(c);
      return;
    }
    ev->is_text = arg->opcode == WSLAY_TEXT_FRAME;
    if (arg->msg_length > 0)
      memcpy(ev->data, arg->msg, arg->msg_length);
    rc__event_push(s, ev);
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

static const struct wslay_event_callbacks ws_callbacks = {
    .recv_callback = ws_recv,
    .send_callback = ws_send,
    .on_msg_recv_callback = ws_on_msg,
};

/* A client's control frames (pong, close) come out of wslay masked, with a
 * key from genmask; they go out through the client's TLS filter if any. */
static ssize_t ws_client_send(wslay_event_context_ptr ctx, const uint8_t *data,
                              size_t len, int flags, void *user_data) {
  (void)ctx;
  if (ws_hold_head(data, len, flags))
    return (ssize_t)len;
  uint8_t frame[RC__WS_HEAD_MAX + RC__WS_CTRL_MAX];
  if (ws_head.len > 0 && len <= RC__WS_CTRL_MAX) {
    memcpy(frame, ws_head.data, ws_head.len);
    memcpy(frame + ws_head.len, data, len);
    rc__client_write(user_data, frame, ws_head.len + len);
  } else {
    rc__client_write(user_data, ws_head.data, ws_head.len);
    rc__client_write(user_data, data, len);
  }
  ws_head.len = 0;
  return (ssize_t)len;
}

static int ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                      void *user_data) {
  (void)user_data;
  if (rc_tls_random(buf, len) != 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return 0;
}

static const struct wslay_event_callbacks ws_client_callbacks = {
    .recv_callback = ws_recv,
    .send_callback = ws_client_send,
    .genmask_callback = ws_genmask,
    .on_msg_recv_callback = ws_on_msg,
};

/* wslay's context costs about 13 KiB: a connection holds one only while it
 * is busy. The sweep drops it when the client's stream is at rest (see
 * rc_frame_scan) and nothing is waiting inside wslay; it is made again here
 * when the next byte arrives. */
static int ws_ensure(rc_conn *c) {
  if (c->ws != NULL)
    return 0;
  size_t max = c->srv->cfg.max_message_size;
  int r;
  if (c->cl != NULL) {
    r = wslay_event_context_client_init(&c->ws, &ws_client_callbacks, c);
    if (c->cl->max_message_size != 0)
      max = c->cl->max_message_size;
  } else {
    r = wslay_event_context_server_init(&c->ws, &ws_callbacks, c);
  }
  if (r != 0) {
    c->ws = NULL;
    return -1;
  }
  /* wslay allocates a message's declared length before its payload
   * arrives: the limit must be set before the first byte is read. */
  wslay_event_config_set_max_recv_msg_length(c->ws, max);
  atomic_fetch_add_explicit(&c->srv->st_parsers, 1, memory_order_relaxed);
  return 0;
}

static void ws_free(rc_conn *c) {
  if (c->ws == NULL)
    return;
  wslay_event_context_free(c->ws);
  c->ws = NULL;
  atomic_fetch_sub_explicit(&c->srv->st_parsers, 1, memory_order_relaxed);
  c->srv->parsers_freed++;
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
                                      c->cl == NULL, &fc);
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
  uint32_t max_frags = c->cl != NULL ? c->cl->max_frags : c->srv->max_frags;
  size_t ok =
      rc_frame_scan_feed(&c->scan, (const uint8_t *)data, len, max_frags);
  if (ok > 0) {
    c->rd = (const uint8_t *)data;
    c->rdlen = ok;
    int r = wslay_event_recv(c->ws);
    c->rd = NULL;
    c->rdlen = 0;
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

static void on_http_bytes(rc_conn *c, const char *data, size_t len);
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
  atomic_store(&s->starving, 1);
  /* Paired with rc_server_poll(): if the poll that emptied the queue ran
   * before `starving` was set, it could not see it; its bytes are seen
   * here instead. */
  if (atomic_load(&s->ev_bytes) <= s->cfg.max_event_bytes / 2 &&
      atomic_exchange(&s->starving, 0))
    rc__resume_starved(s);
}

void rc__resume_starved(rc_server *s) {
  uint64_t now = now_ms(s);
  for (uint32_t i = 0; i < s->nslots && s->nstarved > 0; i++) {
    rc_conn *c = s->slots[i];
    if (c == NULL || !c->starved)
      continue;
    c->starved = 0;
    s->nstarved--;
    /* Silence while held was not the peer's doing. */
    c->last_rx = c->ping_at = now;
    if (c->held)
      continue;
    if (c->state == RC_CONN_HTTP || c->state == RC_CONN_OPEN ||
        c->state == RC_CONN_CLOSING || c->state == RC_CONN_TLS ||
        c->state == RC_CONN_UPGRADING)
      start_read(c);
  }
}

/* Everything a read delivers goes through here; the fuzz targets call it
 * directly with their input. */
void rc__conn_received(rc_conn *c, const char *data, size_t len) {
  c->last_rx = now_ms(c->srv);
  c->rx_recent = 1;
  switch (c->state) {
  case RC_CONN_HTTP:
    on_http_bytes(c, data, len);
    break;
  case RC_CONN_OPEN:
  case RC_CONN_CLOSING:
    feed_ws(c, data, len);
    break;
  default:
    break; /* draining: the peer's last bytes are of no interest */
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  rc_conn *c = RC__CONTAINER_OF(stream, rc_conn, tcp);
  if (nread == 0)
    return;
  if (nread < 0) {
    if (c->cl != NULL)
      rc__client_lost(c, (int)nread);
    else
      rc__conn_abort(c);
    return;
  }
  if (c->cl != NULL)
    rc__client_received(c, buf->base, (size_t)nread);
  else
    rc__conn_received(c, buf->base, (size_t)nread);
  if (atomic_load_explicit(&c->srv->ev_bytes, memory_order_relaxed) >
      c->srv->cfg.max_event_bytes)
    starve(c);
}

void rc__conn_start_read(rc_conn *c) { start_read(c); }

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

/* --- the opening handshake ----------------------------------------------- */

/* Builds an RC_EV_OPEN / RC_EV_REQUEST carrying method, path, query, peer
 * host and the headers (names lower-cased). */
static rc_event *request_event(rc_conn *c, uint16_t type,
                               const rc_http_request *req) {
  struct sockaddr_storage ss;
  int sl = sizeof(ss);
  char host[64] = "";
  uint16_t port = 0;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET6) {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
      if (uv_ip6_name(a, host, sizeof(host)) != 0)
        host[0] = '\0';
      port = ntohs(a->sin6_port);
    } else if (ss.ss_family == AF_INET) {
      struct sockaddr_in *a = (struct sockaddr_in *)&ss;
      if (uv_ip4_name(a, host, sizeof(host)) != 0)
        host[0] = '\0';
      port = ntohs(a->sin_port);
    }
  }
  size_t nstr = 4 + 2 * req->num_headers;
  size_t total = req->method_len + req->path_len + req->query_len +
                 strlen(host) + 4 * 4 +
                 rc__event_headers_size(req->headers, req->num_headers);
  rc_event *ev = rc__event_new(type, c->id, total);
  if (ev == NULL)
    return NULL;
  ev->nstr = (uint32_t)nstr;
  ev->port = port;
  char *p = ev->data;
  p = rc__event_put(p, req->method, req->method_len);
  p = rc__event_put(p, req->path, req->path_len);
  p = rc__event_put(p, req->query, req->query_len);
  p = rc__event_put(p, host, strlen(host));
  (void)rc__event_put_headers(p, req->headers, req->num_headers);
  return ev;
}

static void on_request_head(rc_conn *c, const rc_http_request *req) {
  rc_server *s = c->srv;
  rc_http_upgrade_check chk;
  rc_http_check_upgrade(req, &chk);
  if (chk.status == 0 || chk.status == 1) {
    int is_get = req->method_len == 3 && memcmp(req->method, "GET", 3) == 0;
    int is_head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
    if (chk.status == 1 && !(s->cfg.http_requests && (is_get || is_head))) {
      if (!is_get && !is_head)
        respond_status(c, 405, "Allow: GET\r\n", "method not allowed");
      else
        respond_status(c, 426,
                       "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Version: 13\r\n",
                       "this is a WebSocket server: upgrade required");
      return;
    }
    if (s->stopping) {
      respond_status(c, 503, NULL, "server shutting down");
      return;
    }
    rc_event *ev =
        request_event(c, chk.status == 0 ? RC_EV_OPEN : RC_EV_REQUEST, req);
    if (ev == NULL) {
      rc__conn_fail(c);
      return;
    }
    if (chk.status == 0) {
      c->key_off = (uint16_t)(chk.key - c->hbuf);
      c->key_len = (uint16_t)chk.key_len;
    }
    c->state = chk.status == 0 ? RC_CONN_PENDING : RC_CONN_REQUEST;
    c->known = 1;
    /* The embedder answers within handshake_timeout, or the sweep does
     * (503): a handler that never answers must not hold the fd for ever. */
    c->deadline = now_ms(s) + secs_ms(s->cfg.handshake_timeout) + 1;
    pause_read(c);
    rc__event_push(s, ev);
    return;
  }
  if (chk.status == 426)
    respond_status(c, 426,
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Version: 13\r\n",
                   chk.reason);
  else if (chk.status == 405)
    respond_status(c, 405, "Allow: GET\r\n", chk.reason);
  else
    respond_status(c, chk.status, NULL, chk.reason);
}

int rc__conn_head_append(rc_conn *c, const char *data, size_t len,
                         size_t cap) {
  size_t want = c->hlen + len;
  if (want > c->hcap) {
    size_t ncap = c->hcap ? c->hcap : RC__HBUF_FIRST;
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

static void on_http_bytes(rc_conn *c, const char *data, size_t len) {
  rc_server *s = c->srv;
  size_t cap = s->cfg.max_header_bytes + RC__HBUF_SLACK;
  const char *rest = NULL; /* bytes of this read past the cap */
  size_t rest_len = 0;
  if (c->hlen + len > cap) {
    if (c->hlen >= s->cfg.max_header_bytes) {
      respond_status(c, 431, NULL, "request header fields too large");
      return;
    }
    rest = data + (cap - c->hlen);
    rest_len = c->hlen + len - cap;
    len = cap - c->hlen;
  }
  if (rc__conn_head_append(c, data, len, cap) != 0)
    return;

  int r = rc_http_parse_request(c->hbuf, c->hlen, s->cfg.max_header_bytes,
                                s->cfg.max_headers, &s->req);
  if (r == RC_HTTP_INCOMPLETE && rest_len == 0)
    return;
  if (r == RC_HTTP_E_TOO_LARGE || r == RC_HTTP_INCOMPLETE) {
    respond_status(c, 431, NULL, "request header fields too large");
    return;
  }
  if (r < 0) {
    respond_status(c, 400, NULL, "malformed HTTP request");
    return;
  }
  c->hhead = (uint32_t)r;
  on_request_head(c, &s->req);
  /* After it: s->req points into hbuf, which may move now. */
  if (rest_len > 0 && c->state == RC_CONN_PENDING) {
    /* Frames followed the head in the same read: keep them for after the
     * handshake. One read at most, so still bounded. */
    char *nb = realloc(c->hbuf, c->hlen + rest_len);
    if (nb == NULL) {
      rc__conn_fail(c);
      return;
    }
    memcpy(nb + c->hlen, rest, rest_len);
    c->hbuf = nb;
    c->hlen += (uint32_t)rest_len;
    c->hcap = c->hlen;
  }
}

void rc__accept_ws(rc_conn *c, const rc_cmd *cmd) {
  rc_server *s = c->srv;
  char accept[29];
  if (rc_ws_accept_value(c->hbuf + c->key_off, c->key_len, accept) != 0) {
    rc__conn_fail(c);
    return;
  }
  size_t tlen = cmd->text ? cmd->text_len : 0;
  size_t xlen = 96 + tlen;
  char *extra = malloc(xlen);
  if (extra == NULL) {
    rc__conn_fail(c);
    return;
  }
  int n = snprintf(extra, xlen,
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: %s\r\n",
                   accept);
  if (tlen)
    memcpy(extra + n, cmd->text, tlen);
  extra[n + tlen] = '\0';
  rc_buf *b = rc__buf_http(101, extra, NULL, 0, 0, 0);
  free(extra);
  if (b == NULL) {
    rc__conn_fail(c);
    return;
  }
  rc__conn_enqueue(c, b);
  rc__buf_unref(b);

  c->state = RC_CONN_OPEN;
  c->last_rx = c->last_msg = now_ms(s);
  c->deadline = 0;
  char *hbuf = c->hbuf;
  uint32_t leftover = c->hlen - c->hhead;
  c->hbuf = NULL;
  c->hlen = c->hcap = 0;
  if (!c->held && !c->starved)
    start_read(c);
  if (leftover > 0)
    feed_ws(c, hbuf + c->hhead, leftover);
  free(hbuf);
}

/* --- accepting ----------------------------------------------------------- */

void rc__server_on_connection(uv_stream_t *listener, int status) {
  rc_server *s = listener->data;
  if (status < 0)
    return; /* e.g. EMFILE: the loop retries when a descriptor frees up */
  rc_conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return;
  c->srv = s;
  if (uv_tcp_init(&s->loop, &c->tcp) != 0) {
    free(c);
    return;
  }
  s->open_handles++;
  c->state = RC_CONN_HTTP;
  c->read_paused = 1;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 ||
      rc__conn_register(s, c) != 0) {
    c->state = RC_CONN_GONE;
    uv_close((uv_handle_t *)&c->tcp, rc__conn_closed);
    return;
  }
  atomic_fetch_add_explicit(&s->st_connections, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->st_accepted, 1, memory_order_relaxed);
  (void)uv_tcp_nodelay(&c->tcp, 1); /* best effort */
  c->last_rx = now_ms(s);
  c->deadline = now_ms(s) + secs_ms(s->cfg.handshake_timeout) + 1;
  if (s->stopping) {
    rc__conn_abort(c);
    return;
  }
  if (s->cfg.max_connections != 0 && s->admitted >= s->cfg.max_connections) {
    /* Answered at once, without reading the request: a refused client
     * costs one small write, and the ones already served are untouched. */
    atomic_fetch_add_explicit(&s->st_refused, 1, memory_order_relaxed);
    respond_status(c, 503, "Retry-After: 1\r\n", "too many connections");
    return;
  }
  c->admitted = 1;
  s->admitted++;
  start_read(c);
}

/* --- deadlines ----------------------------------------------------------- */

static rc_buf *ping_frame(void) {
  static const char payload[] = "rc";
  return rc__buf_frame(RC_OP_PING, payload, sizeof(payload) - 1);
}

void rc__sweep(rc_server *s, uint64_t now) {
  uint64_t interval = secs_ms(s->cfg.ping_interval);
  uint64_t timeout = secs_ms(s->cfg.ping_timeout);
  uint64_t idle = secs_ms(s->cfg.idle_timeout);
  for (uint32_t i = 0; i < s->nslots; i++) {
    rc_conn *c = s->slots[i];
    if (c == NULL)
      continue;
    uint64_t ping_every = interval, pong_within = timeout;
    if (c->cl != NULL) { /* a client's keepalive is its own */
      ping_every = c->cl->ping_interval_ms;
      pong_within = c->cl->ping_timeout_ms;
    }
    switch (c->state) {
    case RC_CONN_RESOLVING:
    case RC_CONN_CONNECTING:
    case RC_CONN_TLS:
    case RC_CONN_UPGRADING:
      if (now >= c->deadline)
        rc__client_deadline(c);
      break;
    case RC_CONN_HTTP:
    case RC_CONN_CLOSING:
    case RC_CONN_DRAINING:
      if (c->deadline != 0 && now >= c->deadline)
        rc__conn_abort(c);
      break;
    case RC_CONN_PENDING:
    case RC_CONN_REQUEST:
      if (c->deadline != 0 && now >= c->deadline)
        respond_status(c, 503, "Retry-After: 1\r\n",
                       "the application did not answer in time");
      break;
    case RC_CONN_OPEN:
      if (!c->rx_recent && !c->writing)
        outq_shrink_if_idle(&c->q);
      ws_release_if_idle(c);
      c->rx_recent = 0;
      if (idle != 0 && c->cl == NULL && !c->held && !c->starved &&
          now - c->last_msg >= idle) {
        static const char reason[] = "idle timeout";
        atomic_fetch_add_explicit(&s->st_idle, 1, memory_order_relaxed);
        rc__conn_close_ws(c, 1001, reason, sizeof(reason) - 1);
        break;
      }
      /* While the embedder holds reading, an unread pong is not the
       * peer's fault: keepalive waits until reading resumes. */
      if (ping_every == 0 || c->held || c->starved)
        break;
      if (c->ping_out) {
        if (pong_within != 0 && now - c->ping_at >= pong_within) {
          static const char reason[] = "keepalive ping timeout";
          rc__conn_close_ws(c, 1011, reason, sizeof(reason) - 1);
        }
      } else if (now - c->last_rx >= ping_every) {
        if (c->cl != NULL) {
          rc__client_ping(c);
        } else {
          rc_buf *b = ping_frame();
          if (b == NULL)
            break;
          rc__conn_enqueue(c, b);
          rc__buf_unref(b);
        }
        c->ping_out = 1;
        c->ping_at = now;
      }
      break;
    default:
      break;
    }
  }
}

/* --- commands that name a connection -------------------------------------- */

void rc__conn_command(rc_server *s, rc_cmd *cmd) {
  rc_conn *c = rc__conn_find(s, cmd->conn);
  if (c == NULL)
    return;
  switch (cmd->type) {
  case RC_CMD_ACCEPT:
    if (c->state == RC_CONN_PENDING)
      rc__accept_ws(c, cmd);
    break;
  case RC_CMD_RESPOND:
    if (c->state == RC_CONN_PENDING || c->state == RC_CONN_REQUEST)
      rc__respond(c, cmd->buf);
    break;
  case RC_CMD_SEND:
    if (c->cl != NULL)
      rc__client_send(c, cmd->buf);
    else if (rc__conn_enqueue_data(c, cmd->buf))
      atomic_fetch_add_explicit(&s->st_deliveries, 1, memory_order_relaxed);
    break;
  case RC_CMD_CLOSE:
    if (c->state > RC_CONN_GONE)
      rc__client_fail(c, "closed by the client before the connection opened");
    else if (c->state == RC_CONN_PENDING || c->state == RC_CONN_REQUEST)
      respond_status(c, 403, NULL, "forbidden");
    else
      rc__conn_close_ws(c, (unsigned)cmd->status, cmd->text, cmd->text_len);
    break;
  case RC_CMD_JOIN:
    if (c->state <= RC_CONN_OPEN && c->cl == NULL) {
      rc_room *r = rc__room_get(s, cmd->room, 1);
      if (r == NULL) {
        rc__conn_fail(c);
        break;
      }
      rc__room_join(s, r, c); /* its mode came with its id */
    }
    break;
  case RC_CMD_PAUSE:
    c->held = 1;
    if (c->state == RC_CONN_OPEN || c->state == RC_CONN_CLOSING)
      pause_read(c);
    break;
  case RC_CMD_RESUME:
    c->held = 0;
    c->last_rx = now_ms(s);
    c->ping_at = now_ms(s);
    if (!c->starved &&
        (c->state == RC_CONN_OPEN || c->state == RC_CONN_CLOSING))
      start_read(c);
    break;
  case RC_CMD_LEAVE: {
    rc_room *r = rc__room_get(s, cmd->room, 0);
    if (r != NULL)
      rc__room_leave(s, r, c);
    break;
  }
  default:
    break;
  }
}

void rc__stop_begin(rc_server *s) {
  for (uint32_t i = 0; i < s->nslots; i++) {
    rc_conn *c = s->slots[i];
    if (c == NULL)
      continue;
    switch (c->state) {
    case RC_CONN_HTTP:
      rc__conn_abort(c);
      break;
    case RC_CONN_PENDING:
    case RC_CONN_REQUEST:
      respond_status(c, 503, NULL, "server shutting down");
      break;
    case RC_CONN_OPEN:
      rc__conn_close_ws(c, s->stop_code, s->stop_reason,
                        strlen(s->stop_reason));
      break;
    case RC_CONN_RESOLVING:
    case RC_CONN_CONNECTING:
    case RC_CONN_TLS:
    case RC_CONN_UPGRADING:
      rc__client_fail(c, "the client stopped");
      break;
    default:
      break;
    }
  }
}
