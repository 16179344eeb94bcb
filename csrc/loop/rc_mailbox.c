/* rc_mailbox.c - the two queues between the loop thread and the embedder:
 * commands in (rc_cmd: made, queued, taken, freed here) and events out.
 *
 * Commands: any thread appends under cmd_lock and calls uv_async_send, which
 * libuv coalesces until the loop runs the callback. An embedder that knows
 * where its batches end (the binding: once per asyncio loop iteration) defers
 * the wake-up to rc_server_wake(), so that the loop sees a whole batch at
 * once instead of waking, on the same CPU, after the first command.
 *
 * Events: the loop collects a turn's events in a local
 * batch and hands the batch over under ev_lock at the end of the turn; the
 * eventfd is written only when the shared queue was empty, so the embedder
 * wakes once per batch however many events it holds.
 */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loop/rc_internal.h"
#include "proto/rc_frame.h"
#include "proto/rc_http.h"

/* --- events -------------------------------------------------------------- */

rc_event *rc__event_new(uint16_t type, uint64_t conn, size_t len) {
  if (len > UINT32_MAX)
    return NULL;
  rc_event *ev = malloc(sizeof(*ev) + len + 1);
  if (ev == NULL)
    return NULL;
  memset(ev, 0, sizeof(*ev));
  ev->type = type;
  ev->conn = conn;
  ev->len = (uint32_t)len;
  ev->data[len] = '\0';
  return ev;
}

char *rc__event_put(char *p, const void *str, size_t n) {
  uint32_t len32 = (uint32_t)n;
  memcpy(p, &len32, 4);
  if (len32 > 0)
    memcpy(p + 4, str, len32);
  return p + 4 + len32;
}

size_t rc__event_headers_size(const rc_http_header *h, size_t n) {
  size_t total = 8 * n;
  for (size_t i = 0; i < n; i++)
    total += h[i].name_len + h[i].value_len;
  return total;
}

char *rc__event_put_headers(char *p, const rc_http_header *h, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char *name = p + 4;
    p = rc__event_put(p, h[i].name, h[i].name_len);
    for (size_t k = 0; k < h[i].name_len; k++)
      if (name[k] >= 'A' && name[k] <= 'Z')
        name[k] = (char)(name[k] + 32);
    p = rc__event_put(p, h[i].value, h[i].value_len);
  }
  return p;
}

/* What an event costs while it waits, for max_event_bytes: the block
 * rc__event_new asked for (header, bytes, the NUL) as malloc hands it out,
 * with its size word and rounded up to the allocator's granule (glibc:
 * 8 bytes of header, 16-byte steps, 32 at least). An empty message is 48
 * bytes, not 0: a flood of them must use up the budget too. */
#define RC__MALLOC_HEAD sizeof(size_t)
#define RC__MALLOC_STEP 16
#define RC__MALLOC_MIN 32
static size_t event_cost(const rc_event *ev) {
  size_t n = sizeof(*ev) + (size_t)ev->len + 1 + RC__MALLOC_HEAD;
  n = (n + RC__MALLOC_STEP - 1) & ~(size_t)(RC__MALLOC_STEP - 1);
  return n < RC__MALLOC_MIN ? RC__MALLOC_MIN : n;
}

void rc__event_close(struct rc_server *s, uint64_t conn, unsigned code,
                     const char *reason, size_t len) {
  rc_event *ev = rc__event_new(RC_EV_CLOSE, conn, len);
  if (ev == NULL)
    return;
  ev->code = (uint16_t)code;
  if (len > 0)
    memcpy(ev->data, reason, len);
  rc__event_push(s, ev);
}

void rc__event_push(struct rc_server *s, rc_event *ev) {
  ev->next = NULL;
  atomic_fetch_add_explicit(&s->ev_bytes, event_cost(ev), memory_order_relaxed);
  if (s->batch_tail != NULL)
    s->batch_tail->next = ev;
  else
    s->batch_head = ev;
  s->batch_tail = ev;
  if (ev->type != RC_EV_REDIS)
    s->batch_busy = 1;
}

void rc__events_hand_over(struct rc_server *s) {
  if (s->batch_head == NULL)
    return;
  uv_mutex_lock(&s->ev_lock);
  int was_empty = s->ev_head == NULL;
  if (s->ev_tail != NULL)
    s->ev_tail->next = s->batch_head;
  else
    s->ev_head = s->batch_head;
  s->ev_tail = s->batch_tail;
  uv_mutex_unlock(&s->ev_lock);
  s->batch_head = s->batch_tail = NULL;
  if (s->batch_busy)
    atomic_store_explicit(&s->embedder_busy, 1, memory_order_relaxed);
  s->batch_busy = 0;
  if (was_empty) {
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: readable anyway. */
    ssize_t r;
    do
      r = write(s->ev_fd, &one, sizeof(one));
    while (r < 0 && errno == EINTR);
  }
}

rc_event *rc_server_poll(rc_server *s) {
  uint64_t count;
  ssize_t r;
  /* Reset readiness first: an event queued after the swap below writes
   * the eventfd again because it finds the queue empty. */
  do
    r = read(s->ev_fd, &count, sizeof(count));
  while (r < 0 && errno == EINTR);
  uv_mutex_lock(&s->ev_lock);
  rc_event *head = s->ev_head;
  s->ev_head = s->ev_tail = NULL;
  uv_mutex_unlock(&s->ev_lock);
  size_t taken = 0;
  for (rc_event *ev = head; ev != NULL; ev = ev->next)
    taken += event_cost(ev);
  /* Sequentially consistent, paired with rc_conn.c's starve and
   * rc_server.c's recheck_starving: either this poll sees `starving` set,
   * or the loop sees the bytes taken here at the end of its turn. */
  size_t left = atomic_fetch_sub(&s->ev_bytes, taken) - taken;
  /* Readers held for lack of polling resume once half the budget is free;
   * the loop learns it through the command wake-up. */
  if (left <= s->cfg.max_event_bytes / 2 && atomic_exchange(&s->starving, 0)) {
    atomic_store(&s->resume_now, 1);
    uv_mutex_lock(&s->cmd_lock);
    int r = s->cmd_closed ? 0 : uv_async_send(&s->wake);
    uv_mutex_unlock(&s->cmd_lock);
    (void)r; /* only fails once the handle is closing: nothing to resume */
  }
  return head;
}

void rc_events_free(rc_event *ev) {
  while (ev != NULL) {
    rc_event *next = ev->next;
    free(ev);
    ev = next;
  }
}

/* --- commands ------------------------------------------------------------ */

rc_cmd *rc__cmd_make(int type, uint64_t conn) {
  rc_cmd *cmd = calloc(1, sizeof(*cmd));
  if (cmd != NULL) {
    cmd->type = type;
    cmd->conn = conn;
  }
  return cmd;
}

/* Queues a command of the public API; takes cmd (NULL: out of memory). */
int rc__cmd_queue(struct rc_server *s, rc_cmd *cmd) {
  if (cmd == NULL)
    return UV_ENOMEM;
  if (!s->started) {
    rc__cmd_free(cmd);
    return UV_EINVAL;
  }
  return rc__cmd_push(s, cmd, 0);
}

void rc__cmd_free(rc_cmd *cmd) {
  /* The socket of an adopt command that never ran is the core's: closed
   * with it, whatever stopped it (rc_server_adopt's contract). */
  if (cmd->type == RC_CMD_ADOPT && cmd->status >= 0)
    (void)close(cmd->status);
  rc__buf_unref(cmd->buf);
  free(cmd->text);
  free(cmd->rooms);
  for (size_t i = 0; i < cmd->nbufs; i++)
    rc__buf_unref(cmd->bufs[i]);
  free(cmd->bufs);
  free(cmd);
}

int rc__cmd_push(struct rc_server *s, rc_cmd *cmd, int force_wake) {
  cmd->next = NULL;
  uv_mutex_lock(&s->cmd_lock);
  if (s->cmd_closed) {
    uv_mutex_unlock(&s->cmd_lock);
    rc__cmd_free(cmd);
    return UV_ECANCELED;
  }
  if (s->cmd_tail != NULL)
    s->cmd_tail->next = cmd;
  else
    s->cmd_head = cmd;
  s->cmd_tail = cmd;
  /* Under the lock: the loop closes the async handle only after setting
   * cmd_closed under this same lock. */
  int r = 0;
  if (force_wake ||
      !atomic_load_explicit(&s->defer_wakeups, memory_order_relaxed))
    r = uv_async_send(&s->wake);
  uv_mutex_unlock(&s->cmd_lock);
  return r;
}

int rc_server_wake(rc_server *s) {
  uv_mutex_lock(&s->cmd_lock);
  int r = UV_ECANCELED;
  if (!s->cmd_closed)
    r = s->cmd_head != NULL ? uv_async_send(&s->wake) : 0;
  uv_mutex_unlock(&s->cmd_lock);
  return r;
}

void rc_server_idle(rc_server *s) {
  if (!atomic_exchange_explicit(&s->embedder_busy, 0, memory_order_relaxed) ||
      !atomic_load_explicit(&s->holding, memory_order_relaxed))
    return;
  uv_mutex_lock(&s->cmd_lock); /* see rc__cmd_push */
  if (!s->cmd_closed)
    (void)uv_async_send(&s->wake); /* fails only for a closing handle */
  uv_mutex_unlock(&s->cmd_lock);
}

void rc_server_defer_wakeups(rc_server *s, int on) {
  atomic_store(&s->defer_wakeups, on != 0);
}

rc_cmd *rc__cmd_take_all(struct rc_server *s) {
  uv_mutex_lock(&s->cmd_lock);
  rc_cmd *head = s->cmd_head;
  s->cmd_head = s->cmd_tail = NULL;
  uv_mutex_unlock(&s->cmd_lock);
  return head;
}

rc_cmd *rc__cmd_tail_run(rc_cmd *cmd) {
  rc_cmd *run = NULL;
  for (; cmd != NULL; cmd = cmd->next) {
    if (cmd->type != RC_CMD_PUBLISH)
      run = NULL;
    else if (run == NULL || run->room != cmd->room)
      run = cmd;
  }
  return run;
}
