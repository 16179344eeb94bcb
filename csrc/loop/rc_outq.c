/* rc_outq.c - the output queue: a ring of shared frames.
 *
 * What it owns: one reference to each queued rc_buf, and the ring. Frames
 * leave from the head in the order they were pushed; a partial write
 * leaves the head frame in place with head_off past its written bytes.
 * The frames of the one write in flight (inflight, from the head) must
 * stay where they are until the write's callback: libuv writes from their
 * memory. The drops below therefore never touch them, nor a head frame
 * that has started to leave (a frame cut in the middle would corrupt the
 * stream).
 *
 * Why a ring of references: a room's fan-out queues the same buffer on
 * every member, so a member's queue costs one pointer per frame, and the
 * ring is grown by doubling and given back when idle.
 */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include <stdlib.h>
#include <string.h>

#include "loop/rc_outq.h"

#define RC__OUTQ_FIRST 8

static int outq_grow(rc_outq *q) {
  uint32_t cap = q->cap ? q->cap * 2 : RC__OUTQ_FIRST;
  rc_buf **ring = malloc(cap * sizeof(*ring));
  if (ring == NULL)
    return UV_ENOMEM;
  for (uint32_t i = 0; i < q->count; i++)
    ring[i] = q->ring[(q->head + i) & (q->cap - 1)];
  free(q->ring);
  q->ring = ring;
  q->cap = cap;
  q->head = 0;
  return 0;
}

int rc__outq_push(rc_outq *q, rc_buf *b) {
  if (q->count == q->cap && outq_grow(q) != 0)
    return UV_ENOMEM;
  q->ring[(q->head + q->count) & (q->cap - 1)] = b;
  q->count++;
  q->bytes += b->len;
  return 0;
}

int rc__outq_push_front(rc_outq *q, rc_buf *b) {
  if (q->head_off != 0 || q->inflight != 0)
    return UV_EINVAL; /* the head has started to leave: nothing goes before */
  if (q->count == q->cap && outq_grow(q) != 0)
    return UV_ENOMEM;
  q->head = (q->head + q->cap - 1) & (q->cap - 1);
  q->ring[q->head] = b;
  q->count++;
  q->bytes += b->len;
  return 0;
}

void rc__outq_pop(rc_outq *q) {
  rc_buf *b = q->ring[q->head];
  q->bytes -= b->len - q->head_off;
  q->head_off = 0;
  q->head = (q->head + 1) & (q->cap - 1);
  q->count--;
  rc__buf_unref(b);
}

void rc__outq_consume(rc_outq *q, size_t n) {
  while (n > 0 && q->count > 0) {
    rc_buf *b = q->ring[q->head];
    size_t left = b->len - q->head_off;
    if (n < left) {
      q->head_off += n;
      q->bytes -= n;
      return;
    }
    n -= left;
    rc__outq_pop(q);
  }
}

void rc__outq_skip_head(rc_outq *q, size_t n) {
  if (q->count == 0)
    return;
  q->head_off = n;
  q->bytes -= n;
}

void rc__outq_shrink_if_idle(rc_outq *q) {
  /* An idle connection keeps no ring (80 bytes of heap each, against about
   * 500 for the rest of it). The sweep calls this, every 250 ms, not every
   * flush: a busy member would otherwise free and regrow its ring on every
   * loop turn. */
  if (q->count == 0 && q->cap > 0) {
    free(q->ring);
    q->ring = NULL;
    q->cap = 0;
    q->head = 0;
  }
}

/* How many frames from the head must stay: the write in flight, or a
 * head frame partly written. */
static uint32_t outq_started(const rc_outq *q) {
  if (q->inflight == 0 && q->head_off > 0)
    return 1;
  return q->inflight;
}

void rc__outq_drop_unsent(rc_outq *q) {
  uint32_t keep = outq_started(q);
  while (q->count > keep) {
    uint32_t last = (q->head + q->count - 1) & (q->cap - 1);
    q->bytes -= q->ring[last]->len;
    rc__buf_unref(q->ring[last]);
    q->count--;
  }
}

/* Keeps the order of the rest. Draining to a target below the limit keeps
 * the cost at one pass over the ring per many messages, not one per
 * message. */
uint32_t rc__outq_drop_oldest(rc_outq *q, size_t target) {
  uint32_t keep = outq_started(q);
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

unsigned rc__outq_fill_iov(const rc_outq *q, uv_buf_t *iov, unsigned max) {
  unsigned n = q->count < max ? q->count : max;
  for (unsigned i = 0; i < n; i++) {
    rc_buf *b = q->ring[(q->head + i) & (q->cap - 1)];
    size_t off = i == 0 ? q->head_off : 0;
    iov[i] = uv_buf_init((char *)b->data + off, (unsigned)(b->len - off));
  }
  return n;
}

void rc__outq_free(rc_outq *q) {
  while (q->count > 0)
    rc__outq_pop(q);
  free(q->ring);
  memset(q, 0, sizeof(*q));
}
