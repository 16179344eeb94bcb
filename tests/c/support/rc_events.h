/* rc_events.h - how the C tests wait for a core's events: a core hands
 * them over in batches (rc_server_poll), so a test keeps the ones it has
 * not looked at yet in a list of its own and takes them one at a time. */
#ifndef RC_EVENTS_H
#define RC_EVENTS_H

#include <poll.h>
#include <stdint.h>
#include <time.h>

#include "rc_core.h"

static inline uint64_t rc_test_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits for s's next batch until end (rc_test_now_ms() time) and appends
 * it to *pending. */
static inline void rc_test_take_events(rc_server *s, rc_event **pending,
                                       uint64_t end) {
  uint64_t now = rc_test_now_ms();
  if (now >= end)
    return;
  struct pollfd p = {.fd = rc_server_fd(s), .events = POLLIN};
  (void)poll(&p, 1, (int)(end - now));
  rc_event *got = rc_server_poll(s);
  while (*pending != NULL)
    pending = &(*pending)->next;
  *pending = got;
}

/* s's next event, first from *pending, else waiting for it up to wait_ms;
 * NULL then. The caller frees it with free(). */
static inline rc_event *rc_test_next_event(rc_server *s, rc_event **pending,
                                           uint64_t wait_ms) {
  uint64_t end = rc_test_now_ms() + wait_ms;
  while (*pending == NULL && rc_test_now_ms() < end)
    rc_test_take_events(s, pending, end);
  rc_event *ev = *pending;
  if (ev != NULL) {
    *pending = ev->next;
    ev->next = NULL;
  }
  return ev;
}

#endif
