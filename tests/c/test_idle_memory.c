/* test_idle_memory.c - what the core holds per idle open connection.
 *
 * An in-process server on 127.0.0.1 accepts N raw client sockets of this
 * process into one room (the shape of server.route(path, room)); once they
 * are idle (two sweeps have passed), the heap bytes the core added are
 * divided by N. The heap is read with mallinfo2(), which sums every arena
 * (the loop thread allocates in its own) and counts malloc's chunk headers
 * and rounding, so the figure is what the connections cost in malloc, not
 * what sizeof says. The clients' sockets cost kernel memory, not heap.
 *
 * Per connection that is the rc_conn (with its uv_tcp_t), its rooms array,
 * its room's member entry, its slot in the id tables and, while anything
 * waits, its output ring. Fixed costs are kept out by measuring from a
 * warm server (a first batch already connected).
 *
 * N is 1000 by default (RC_IDLE_N overrides it: 10000 for the issue's
 * figure, with ulimit -n above 2 N). The bound is checked only where
 * mallinfo2 sees the allocations: ASan and valgrind bring their own
 * malloc, and the test then only prints what it can. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rc_core.h"
#include "support/rc_events.h"
#include "support/rc_net.h"
#include "support/rc_test.h"

#define WAIT_MS 60000 /* hang guard only: valgrind is slow */
#define WARM 256
/* The core's share of the 1,024 bytes an idle member may cost the whole
 * server process (Python's objects for it take the rest): about 600 are
 * used today. */
#define BOUND 768
#if defined(__SANITIZE_ADDRESS__)
#define HEAP_SEEN 0
#else
#define HEAP_SEEN 1
#endif

static rc_server *srv;
static int port;
static rc_event *pending;
static uint64_t room;

/* A connection that has sent its upgrade request, or -1. */
static int raw_connect(void) {
  int fd = rc_test_connect(port);
  if (fd < 0)
    return -1;
  static const char req[] = "GET /idle HTTP/1.1\r\nHost: x\r\n"
                            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n";
  if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Connects n clients into fds, joins and accepts each as its RC_EV_OPEN
 * arrives, and reads each 101. The number opened. */
static int open_batch(int *fds, int n) {
  int opened = 0;
  for (int i = 0; i < n; i++) {
    fds[i] = raw_connect();
    if (fds[i] < 0)
      return opened;
  }
  while (opened < n) {
    rc_event *ev = rc_test_next_event(srv, &pending, WAIT_MS);
    if (ev == NULL)
      return opened;
    if (ev->type == RC_EV_OPEN) {
      if (rc_server_join(srv, ev->conn, room, RC_RELAY_NONE) != 0 ||
          rc_server_accept(srv, ev->conn, NULL, NULL) != 0) {
        free(ev);
        return opened;
      }
      opened++;
    }
    free(ev);
  }
  for (int i = 0; i < n; i++) {
    char buf[512];
    if (read(fds[i], buf, sizeof buf) <= 0) /* the 101, in one segment */
      return i;
  }
  return opened;
}

static size_t heap_bytes(void) {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, res = 0;
  if (f == NULL)
    return 0;
  if (fscanf(f, "%ld %ld", &pages, &res) != 2)
    res = 0;
  fclose(f);
  return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Two sweeps (250 ms each): the first clears the read mark, the second
 * releases what an idle connection does not need. */
static void let_sweeps_pass(void) {
  uint64_t end = rc_test_now_ms() + 700;
  while (rc_test_now_ms() < end)
    rc_test_take_events(srv, &pending, end);
}

RC_TEST(an_idle_member_costs_less_than_the_bound) {
  const char *env = getenv("RC_IDLE_N");
  int n = env != NULL ? atoi(env) : 1000;
  RC_ASSERT(n > 0);
  rc_config cfg;
  rc_config_default(&cfg);
  srv = rc_server_new(&cfg);
  RC_ASSERT(srv != NULL);
  RC_ASSERT_EQ_INT(rc_server_listen(srv, "127.0.0.1", 0, 4096, &port), 0);
  room = rc_server_room_new(srv);
  int *fds = calloc((size_t)(WARM + n), sizeof(*fds));
  RC_ASSERT(fds != NULL);
  RC_ASSERT_EQ_INT(open_batch(fds, WARM), WARM);
  let_sweeps_pass();
  size_t heap0 = heap_bytes();
  long rss0 = rss_kib();
  RC_ASSERT_EQ_INT(open_batch(fds + WARM, n), n);
  let_sweeps_pass();
  size_t heap1 = heap_bytes();
  long rss1 = rss_kib();
  double per = ((double)heap1 - (double)heap0) / n;
  printf("  idle members: %d; heap %.0f bytes each (mallinfo2), "
         "RSS %.0f bytes each\n",
         n, per, (double)(rss1 - rss0) * 1024.0 / n);
  if (HEAP_SEEN && heap1 > heap0)
    RC_CHECK(per <= BOUND);
  for (int i = 0; i < WARM + n; i++)
    close(fds[i]);
  free(fds);
  rc_server_stop(srv, 1001, "going away");
  rc_events_free(pending);
  pending = NULL;
  rc_events_free(rc_server_poll(srv));
  rc_server_free(srv);
  srv = NULL;
}

RC_TEST_MAIN(RC_CASE(an_idle_member_costs_less_than_the_bound))
