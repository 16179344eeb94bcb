/* rc_outq.h - a connection's output queue (rc_outq.c). Not installed.
 *
 * A ring of references to shared frames (rc_buf), oldest first. It knows
 * nothing of sockets or connections: the connection fills an iovec from
 * it, writes, and tells it how many bytes left (tests/c/test_outq.c drives
 * it alone). Loop thread only.
 */
#ifndef RC_OUTQ_H
#define RC_OUTQ_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "loop/rc_buf.h"

/* Bytes of the head frame already written are skipped with head_off. The
 * ring is allocated on the first push and freed when the queue is idle
 * (rc__outq_shrink_if_idle), so an idle connection holds none. */
typedef struct rc_outq {
  rc_buf **ring;
  uint32_t cap; /* power of two, or 0 */
  uint32_t head;
  uint32_t count;
  uint32_t inflight; /* frames from head that belong to the pending write */
  size_t head_off;
  size_t bytes; /* unwritten bytes in the queue */
} rc_outq;

/* Appends b; the queue takes over the caller's reference. 0, or
 * UV_ENOMEM (b is then still the caller's). */
int rc__outq_push(rc_outq *q, rc_buf *b);
/* Puts b before every frame (the queue takes the caller's reference): 0,
 * UV_ENOMEM, or UV_EINVAL when the head has started to leave. */
int rc__outq_push_front(rc_outq *q, rc_buf *b);
/* The i-th frame from the head (i < count); rc__outq_head is the 0th. */
static inline rc_buf *rc__outq_at(const rc_outq *q, uint32_t i) {
  return q->ring[(q->head + i) & (q->cap - 1)];
}
static inline rc_buf *rc__outq_head(const rc_outq *q) {
  return rc__outq_at(q, 0);
}
/* Drops the head frame (written, or the queue is being emptied). */
void rc__outq_pop(rc_outq *q);
/* Marks n written bytes as gone, from the head. */
void rc__outq_consume(rc_outq *q, size_t n);
/* The first n bytes of the head frame were written elsewhere. */
void rc__outq_skip_head(rc_outq *q, size_t n);
/* Frees the ring of an empty queue (see rc_outq.c for when to call it). */
void rc__outq_shrink_if_idle(rc_outq *q);
/* Drops the frames that have not started to leave. */
void rc__outq_drop_unsent(rc_outq *q);
/* Drops the oldest whole messages that have not started to leave until at
 * most target bytes wait; returns how many it dropped. */
uint32_t rc__outq_drop_oldest(rc_outq *q, size_t target);
/* Points iov[0..] at the unwritten bytes, at most max frames; returns how
 * many entries it filled. */
unsigned rc__outq_fill_iov(const rc_outq *q, uv_buf_t *iov, unsigned max);
/* Drops every frame and the ring: the queue is as new. */
void rc__outq_free(rc_outq *q);

#endif
