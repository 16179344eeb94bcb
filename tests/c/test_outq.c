/* test_outq.c - the output queue, first alone (loop/rc_outq.c: the ring of
 * shared frames, with no loop and no socket), then the delivery paths
 * through the public API: an in-process server core on 127.0.0.1 and raw
 * client sockets that read (or do not read) its frames.
 *
 * What a member receives is the contract: frames to one connection leave in
 * the order their commands were made, whether they went through the queue
 * and the end-of-turn flush or were written at once by a publish run
 * (rc__conn_deliver_now); a full queue drops its oldest messages and keeps
 * the rest in order within max_queue_bytes (drop_oldest), or closes the
 * member with 1008 after an unbroken prefix of what it was sent.
 *
 * A member that "does not read" must back up into the core's queue, not
 * into the kernel: its receive buffer is set small before connect, and the
 * server's end of the socket (found in this process's descriptors by its
 * peer address) gets a small send buffer too. Without that, the kernel
 * would hold megabytes and the queue would never fill. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loop/rc_outq.h"
#include "rc_core.h"
#include "support/rc_events.h"
#include "support/rc_test.h"

#define WAIT_MS 30000 /* hang guard: valgrind and ASan are slow */
#define SMALL_BUF 4096
#define MAX_PAYLOAD 8192

/* --- the ring alone --------------------------------------------------------
 *
 * Frames are rc_bufs whose one data byte is their number, so the order is
 * readable from an iovec; each push hands the queue its own reference. */

static rc_buf *numbered(uint8_t n, size_t len, int is_message) {
  rc_buf *b = rc__buf_new(len);
  if (b != NULL) {
    memset(b->data, n, len);
    b->is_message = (uint8_t)is_message;
  }
  return b;
}

static int push_numbered(rc_outq *q, uint8_t n, size_t len, int is_message) {
  rc_buf *b = numbered(n, len, is_message);
  if (b == NULL)
    return -1;
  if (rc__outq_push(q, b) != 0) {
    rc__buf_unref(b);
    return -1;
  }
  return 0;
}

/* The first byte of each frame the iovec would write, as a string. */
static void order_of(const rc_outq *q, char *out, size_t cap) {
  uv_buf_t iov[64];
  unsigned n = rc__outq_fill_iov(q, iov, 64);
  size_t k = 0;
  for (unsigned i = 0; i < n && k + 1 < cap; i++)
    out[k++] = (char)('0' + (uint8_t)iov[i].base[0] % 10);
  out[k] = '\0';
}

RC_TEST(ring_grows_past_its_first_size_and_keeps_the_order) {
  rc_outq q;
  memset(&q, 0, sizeof q);
  RC_ASSERT_EQ_UINT(q.cap, 0); /* no ring until the first frame */
  for (uint8_t i = 0; i < 20; i++)
    RC_ASSERT_EQ_INT(push_numbered(&q, i, 10, 1), 0);
  RC_ASSERT_EQ_UINT(q.count, 20);
  RC_ASSERT_EQ_UINT(q.cap, 32);
  RC_ASSERT_EQ_UINT(q.bytes, 200);
  char order[64];
  order_of(&q, order, sizeof order);
  RC_ASSERT_EQ_STR(order, "01234567890123456789");
  rc__outq_free(&q);
  RC_ASSERT_EQ_UINT(q.count, 0);
  RC_ASSERT(q.ring == NULL);
}

RC_TEST(ring_consume_leaves_a_partly_written_head) {
  rc_outq q;
  memset(&q, 0, sizeof q);
  RC_ASSERT_EQ_INT(push_numbered(&q, 1, 10, 1), 0);
  RC_ASSERT_EQ_INT(push_numbered(&q, 2, 10, 1), 0);
  rc__outq_consume(&q, 13); /* the first and 3 bytes of the second */
  RC_ASSERT_EQ_UINT(q.count, 1);
  RC_ASSERT_EQ_UINT(q.head_off, 3);
  RC_ASSERT_EQ_UINT(q.bytes, 7);
  uv_buf_t iov[4];
  RC_ASSERT_EQ_UINT(rc__outq_fill_iov(&q, iov, 4), 1);
  RC_ASSERT_EQ_UINT(iov[0].len, 7);
  RC_ASSERT_EQ_INT(iov[0].base[0], 2);
  rc__outq_consume(&q, 7);
  RC_ASSERT_EQ_UINT(q.count, 0);
  RC_ASSERT_EQ_UINT(q.bytes, 0);
  RC_ASSERT_EQ_UINT(q.head_off, 0);
  rc__outq_free(&q);
}

RC_TEST(ring_wraps_around) {
  rc_outq q;
  memset(&q, 0, sizeof q);
  for (uint8_t i = 0; i < 6; i++)
    RC_ASSERT_EQ_INT(push_numbered(&q, i, 1, 1), 0);
  for (int i = 0; i < 5; i++)
    rc__outq_pop(&q);
  for (uint8_t i = 6; i < 13; i++) /* head at 5 of 8: these wrap */
    RC_ASSERT_EQ_INT(push_numbered(&q, i, 1, 1), 0);
  RC_ASSERT_EQ_UINT(q.cap, 8);
  char order[64];
  order_of(&q, order, sizeof order);
  RC_ASSERT_EQ_STR(order, "56789012");
  rc__outq_free(&q);
}

RC_TEST(ring_drop_oldest_spares_started_frames_and_control) {
  rc_outq q;
  memset(&q, 0, sizeof q);
  RC_ASSERT_EQ_INT(push_numbered(&q, 1, 10, 1), 0); /* partly written */
  RC_ASSERT_EQ_INT(push_numbered(&q, 2, 10, 1), 0);
  RC_ASSERT_EQ_INT(push_numbered(&q, 3, 10, 0), 0); /* a control frame */
  RC_ASSERT_EQ_INT(push_numbered(&q, 4, 10, 1), 0);
  RC_ASSERT_EQ_INT(push_numbered(&q, 5, 10, 1), 0);
  rc__outq_consume(&q, 4);
  RC_ASSERT_EQ_UINT(q.bytes, 46);
  /* Down to 26 bytes: messages 2 and 4 go, the head and the control stay. */
  RC_ASSERT_EQ_UINT(rc__outq_drop_oldest(&q, 26), 2);
  RC_ASSERT_EQ_UINT(q.bytes, 26);
  char order[64];
  order_of(&q, order, sizeof order);
  RC_ASSERT_EQ_STR(order, "135");
  rc__outq_free(&q);
}

RC_TEST(ring_drop_unsent_keeps_the_write_in_flight) {
  rc_outq q;
  memset(&q, 0, sizeof q);
  for (uint8_t i = 1; i <= 4; i++)
    RC_ASSERT_EQ_INT(push_numbered(&q, i, 10, 1), 0);
  q.inflight = 2; /* a uv_write holds the first two */
  rc__outq_drop_unsent(&q);
  RC_ASSERT_EQ_UINT(q.count, 2);
  RC_ASSERT_EQ_UINT(q.bytes, 20);
  q.inflight = 0;
  rc__outq_drop_unsent(&q); /* nothing started: everything goes */
  RC_ASSERT_EQ_UINT(q.count, 0);
  RC_ASSERT_EQ_UINT(q.bytes, 0);
  rc__outq_free(&q);
}

RC_TEST(ring_shared_frame_lives_until_its_last_queue_lets_go) {
  rc_outq a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  rc_buf *f = numbered(7, 5, 1);
  RC_ASSERT(f != NULL);
  rc__buf_ref(f);
  RC_ASSERT_EQ_INT(rc__outq_push(&a, f), 0);
  RC_ASSERT_EQ_INT(rc__outq_push(&b, f), 0); /* two queues, one buffer */
  RC_ASSERT_EQ_UINT(f->refs, 2);
  rc__outq_pop(&a);
  RC_ASSERT_EQ_UINT(f->refs, 1); /* still b's: freed only by b */
  rc__outq_free(&b);
  rc__outq_free(&a);
}

RC_TEST(ring_idle_shrink_frees_only_an_empty_ring) {
  rc_outq q;
  memset(&q, 0, sizeof q);
  rc__outq_shrink_if_idle(&q); /* no ring: nothing to do */
  RC_ASSERT(q.ring == NULL);
  for (uint8_t i = 0; i < 17; i++)
    RC_ASSERT_EQ_INT(push_numbered(&q, i, 1, 1), 0);
  rc__outq_shrink_if_idle(&q);
  RC_ASSERT_EQ_UINT(q.cap, 32); /* not empty: kept */
  rc__outq_consume(&q, 17);
  rc__outq_shrink_if_idle(&q);
  RC_ASSERT_EQ_UINT(q.cap, 0);
  RC_ASSERT(q.ring == NULL);
  rc__outq_free(&q);
}

/* --- through a server ----------------------------------------------------- */

static rc_server *srv;
static int port;
static rc_event *pending; /* events polled but not yet looked at */

typedef struct peer {
  int fd;
  uint64_t id;   /* the server's id for this connection */
  int server_fd; /* the server's end, once shrink_server_sndbuf found it */
  uint8_t buf[2 * MAX_PAYLOAD];
  size_t len;
} peer;

typedef struct frame {
  unsigned op;
  size_t len;
  uint8_t data[MAX_PAYLOAD];
} frame;

/* The next server event (waiting for it), or NULL after WAIT_MS; free() it. */
static rc_event *next_event(void) {
  return rc_test_next_event(srv, &pending, WAIT_MS);
}

static uint64_t now_ms(void) { return rc_test_now_ms(); }

static int start(const rc_config *cfg) {
  srv = rc_server_new(cfg);
  if (srv == NULL)
    return -1;
  return rc_server_listen(srv, "127.0.0.1", 0, 0, &port);
}

static void stop(peer *peers, int n) {
  for (int i = 0; i < n; i++)
    if (peers[i].fd >= 0)
      close(peers[i].fd);
  rc_server_stop(srv, 1001, "going away");
  rc_events_free(pending);
  pending = NULL;
  rc_events_free(rc_server_poll(srv));
  rc_server_free(srv);
  srv = NULL;
}

/* Reads more bytes into p->buf within the deadline; 0, or -1 on EOF, error
 * or timeout. */
static int peer_fill(peer *p, uint64_t end) {
  for (;;) {
    uint64_t now = now_ms();
    if (now >= end || p->len == sizeof(p->buf))
      return -1;
    struct pollfd pf = {.fd = p->fd, .events = POLLIN};
    if (poll(&pf, 1, (int)(end - now)) <= 0)
      continue;
    ssize_t r = recv(p->fd, p->buf + p->len, sizeof(p->buf) - p->len, 0);
    if (r > 0) {
      p->len += (size_t)r;
      return 0;
    }
    if (r < 0 && errno == EINTR)
      continue;
    return -1;
  }
}

static void peer_consume(peer *p, size_t n) {
  memmove(p->buf, p->buf + n, p->len - n);
  p->len -= n;
}

/* Connects, sends the upgrade, accepts it on the server (nothing else may
 * be opening meanwhile) and reads the 101. rcvbuf > 0: the receive buffer,
 * set before connect so that the kernel keeps it. */
static int peer_open(peer *p, int rcvbuf) {
  static const char req[] = "GET /outq HTTP/1.1\r\n"
                            "Host: 127.0.0.1\r\n"
                            "Upgrade: websocket\r\n"
                            "Connection: Upgrade\r\n"
                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n";
  memset(p, 0, sizeof(*p));
  p->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (p->fd < 0)
    return -1;
  if (rcvbuf > 0 &&
      setsockopt(p->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) != 0)
    return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(p->fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
      send(p->fd, req, sizeof(req) - 1, 0) != (ssize_t)(sizeof(req) - 1))
    return -1;
  rc_event *open = next_event();
  if (open == NULL || open->type != RC_EV_OPEN) {
    free(open);
    return -1;
  }
  p->id = open->conn;
  free(open);
  if (rc_server_accept(srv, p->id, NULL, NULL) != 0)
    return -1;
  uint64_t end = now_ms() + WAIT_MS;
  uint8_t *head_end;
  while ((head_end = memmem(p->buf, p->len, "\r\n\r\n", 4)) == NULL)
    if (peer_fill(p, end) != 0)
      return -1;
  if (p->len < 13 || memcmp(p->buf, "HTTP/1.1 101 ", 13) != 0)
    return -1;
  peer_consume(p, (size_t)(head_end + 4 - p->buf));
  return 0;
}

/* The next whole server frame; 0, or -1 on EOF, timeout or a frame this
 * test never expects (masked, fragmented, too long). */
static int peer_frame(peer *p, frame *f) {
  uint64_t end = now_ms() + WAIT_MS;
  for (;;) {
    if (p->len >= 2) {
      uint8_t b0 = p->buf[0], b1 = p->buf[1];
      size_t hl = 2, n = b1 & 0x7F;
      if (!(b0 & 0x80) || (b1 & 0x80) || n == 127) {
        fprintf(stderr,
                "  not a whole server frame: %02x %02x %02x %02x"
                " %.8s (%zu bytes buffered)\n",
                b0, b1, p->buf[2], p->buf[3], (const char *)p->buf + 4, p->len);
        return -1;
      }
      if (n == 126) {
        hl = 4;
        n = p->len >= 4 ? ((size_t)p->buf[2] << 8 | p->buf[3]) : SIZE_MAX;
      }
      if (n != SIZE_MAX && n > MAX_PAYLOAD)
        return -1;
      if (n != SIZE_MAX && p->len >= hl + n) {
        f->op = b0 & 0x0F;
        f->len = n;
        memcpy(f->data, p->buf + hl, n);
        peer_consume(p, hl + n);
        return 0;
      }
    }
    if (peer_fill(p, end) != 0)
      return -1;
  }
}

/* Reads one text frame and compares it with want. */
static int peer_expect(peer *p, const char *want) {
  static frame f;
  if (peer_frame(p, &f) != 0) {
    fprintf(stderr, "  no frame where %s was expected\n", want);
    return 0;
  }
  if (f.op != 1 || f.len != strlen(want) || memcmp(f.data, want, f.len) != 0) {
    fprintf(stderr, "  got opcode %u \"%.*s\" where \"%s\" was expected\n",
            f.op, (int)(f.len > 40 ? 40 : f.len), (const char *)f.data, want);
    return 0;
  }
  return 1;
}

/* A masked close frame (the answer to the server's close). */
static int peer_send_close(peer *p, unsigned code) {
  uint8_t fr[8] = {0x88, 0x82, 1, 2, 3, 4, (uint8_t)(code >> 8), (uint8_t)code};
  fr[6] ^= 1;
  fr[7] ^= 2;
  return send(p->fd, fr, sizeof(fr), 0) == (ssize_t)sizeof(fr) ? 0 : -1;
}

static uint16_t sock_port(const struct sockaddr_storage *ss) {
  return ss->ss_family == AF_INET
             ? ntohs(((const struct sockaddr_in *)ss)->sin_port)
             : 0;
}

/* Gives the server's end of p's connection a small send buffer: the
 * descriptor in this process whose peer is p's own address. Returns that
 * descriptor, or -1. */
static int shrink_server_sndbuf(const peer *p) {
  struct sockaddr_storage mine;
  socklen_t len = sizeof(mine);
  if (getsockname(p->fd, (struct sockaddr *)&mine, &len) != 0)
    return -1;
  for (int fd = 3; fd < 65536; fd++) {
    struct sockaddr_storage ss;
    len = sizeof(ss);
    if (fd == p->fd || getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
      continue;
    if (sock_port(&ss) != sock_port(&mine))
      continue;
    int sz = SMALL_BUF;
    return setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)) == 0 ? fd
                                                                       : -1;
  }
  return -1;
}

/* --- a direct send and a publish in one wake-up ------------------------- */

static int send_text(uint64_t conn, const char *text) {
  return rc_server_send(srv, conn, text, strlen(text), 1);
}

static int publish_text(uint64_t room, const char *text, uint64_t exclude) {
  return rc_server_publish(srv, room, text, strlen(text), 1, exclude);
}

/* Commands made while wake-ups are deferred reach the loop in one wake-up:
 * direct sends (queued, flushed at the end of the turn) and publishes
 * (those that end the batch are a run written at once to members with
 * nothing queued). Each member's frames must keep the commands' order. */
RC_TEST(a_send_and_a_publish_in_one_wakeup_keep_their_order) {
  static peer peers[2];
  peer *a = &peers[0], *b = &peers[1];
  a->fd = b->fd = -1;
  RC_ASSERT_EQ_INT(start(NULL), 0);
  RC_ASSERT_EQ_INT(peer_open(a, 0), 0);
  RC_ASSERT_EQ_INT(peer_open(b, 0), 0);
  uint64_t room = rc_server_room_new(srv);
  RC_ASSERT_EQ_INT(rc_server_join(srv, a->id, room, RC_RELAY_NONE), 0);
  RC_ASSERT_EQ_INT(rc_server_join(srv, b->id, room, RC_RELAY_NONE), 0);
  rc_server_defer_wakeups(srv, 1);

  /* 1: a has a frame queued when the run comes; b has none (written at
   * once). */
  RC_CHECK_EQ_INT(send_text(a->id, "a1"), 0);
  RC_CHECK_EQ_INT(publish_text(room, "r1", 0), 0);
  RC_CHECK_EQ_INT(rc_server_wake(srv), 0);
  /* Read before the next batch, so that it has a wake-up of its own. */
  RC_CHECK(peer_expect(a, "a1") && peer_expect(a, "r1"));
  RC_CHECK(peer_expect(b, "r1"));

  /* 2: a publish queued for everyone, a send between two runs' worth. */
  RC_CHECK_EQ_INT(publish_text(room, "r2", 0), 0);
  RC_CHECK_EQ_INT(send_text(b->id, "b1"), 0);
  RC_CHECK_EQ_INT(publish_text(room, "r3", 0), 0);
  RC_CHECK_EQ_INT(publish_text(room, "r4", 0), 0);
  RC_CHECK_EQ_INT(rc_server_wake(srv), 0);
  RC_CHECK(peer_expect(a, "r2") && peer_expect(a, "r3") &&
           peer_expect(a, "r4"));
  RC_CHECK(peer_expect(b, "r2") && peer_expect(b, "b1") &&
           peer_expect(b, "r3") && peer_expect(b, "r4"));

  /* 3: a run with an exclusion (a takes the queued path and gets
   * nothing), after sends to both. */
  RC_CHECK_EQ_INT(send_text(a->id, "a2"), 0);
  RC_CHECK_EQ_INT(send_text(b->id, "b2"), 0);
  RC_CHECK_EQ_INT(publish_text(room, "r5", a->id), 0);
  RC_CHECK_EQ_INT(send_text(a->id, "a3"), 0);
  RC_CHECK_EQ_INT(publish_text(room, "r6", 0), 0);
  RC_CHECK_EQ_INT(rc_server_wake(srv), 0);
  RC_CHECK(peer_expect(a, "a2") && peer_expect(a, "a3") &&
           peer_expect(a, "r6"));
  RC_CHECK(peer_expect(b, "b2") && peer_expect(b, "r5") &&
           peer_expect(b, "r6"));

  rc_stats st;
  rc_server_stats(srv, &st);
  RC_CHECK_EQ_INT(st.deliveries, 5 + 11); /* 5 sends, 11 publish deliveries */
  stop(peers, 2);
}

/* --- a member that does not read ----------------------------------------- */

#define FLOOD 400
#define FLOOD_LEN 1000 /* text bytes; 1004 on the wire */

/* Publishes n numbered messages to room in one wake-up, then a "done"
 * straight to witness: once it arrives, the loop has carried out every
 * publish (the commands run in order).
 *
 * One wake-up, so that no write of this flood is in flight while the queue
 * drops: frames in a uv_write cannot be dropped, and a queue that is all
 * in flight can only refuse the newest message (the member then misses
 * every newer one until that write ends). */
static int flood(uint64_t room, peer *witness, int n) {
  static char msg[FLOOD_LEN];
  memset(msg, 'x', sizeof(msg));
  rc_server_defer_wakeups(srv, 1);
  for (int k = 0; k < n; k++) {
    char num[12];
    snprintf(num, sizeof(num), "%06d", k);
    memcpy(msg, num, 6);
    if (rc_server_publish(srv, room, msg, sizeof(msg), 1, 0) != 0)
      return -1;
  }
  rc_server_defer_wakeups(srv, 0);
  if (rc_server_wake(srv) != 0)
    return -1;
  return send_text(witness->id, "done") == 0 && peer_expect(witness, "done")
             ? 0
             : -1;
}

static int flood_seq(const frame *f) {
  if (f->op != 1 || f->len != FLOOD_LEN)
    return -1;
  return atoi((const char *)f->data); /* six digits, then 'x' */
}

static void config_small_queue(rc_config *cfg) {
  rc_config_default(cfg);
  cfg->max_queue_bytes = 65536; /* several times what the kernel holds */
  cfg->ping_interval = 0;       /* nothing but the flood on the wire */
}

/* Opens the slow member (small buffers on both sides, in room) and the
 * witness (not in it). */
static int open_slow_and_witness(peer *slow, peer *witness, uint64_t room) {
  if (peer_open(slow, SMALL_BUF) != 0 || peer_open(witness, 0) != 0 ||
      (slow->server_fd = shrink_server_sndbuf(slow)) < 0)
    return -1;
  return rc_server_join(srv, slow->id, room, RC_RELAY_NONE);
}

/* Bytes of the flood the kernel holds for p: not yet sent or acknowledged
 * on the server's end, unread on the client's, read but unparsed here. */
static size_t kernel_held(const peer *p) {
  int out = 0, in = 0;
  if (ioctl(p->server_fd, SIOCOUTQ, &out) != 0 ||
      ioctl(p->fd, FIONREAD, &in) != 0)
    return SIZE_MAX;
  return (size_t)out + (size_t)in + p->len;
}

/* What the slow member reads after a flood of n with drop_oldest: numbers
 * rising, the newest kept, and no more after the last gap than the queue
 * may hold. Drops happen only in the queue, so at the end every byte after
 * the last gap is in the kernel (the first `held` bytes still to be read)
 * or in the queue. Returns the bytes the queue held, or 0 on a failed
 * check. */
static size_t read_dropped_flood(peer *slow, int n, size_t max) {
  size_t held = kernel_held(slow), at = 0, gap_pos = 0;
  static frame f;
  int got = 0, last = -1, gap_at = -1, in_order = 1;
  while (last != n - 1 && peer_frame(slow, &f) == 0) {
    int seq = flood_seq(&f);
    in_order &= seq > last;
    if (seq != last + 1) {
      gap_at = seq;
      gap_pos = at;
    }
    at += f.len + 4;
    last = seq;
    got++;
  }
  size_t after_gap = at - gap_pos;
  size_t in_kernel = held > gap_pos ? held - gap_pos : 0;
  size_t queued = after_gap > in_kernel ? after_gap - in_kernel : 0;
  rc_stats st;
  rc_server_stats(srv, &st);
  static uint64_t dropped_before;
  uint64_t dropped = st.messages_dropped - dropped_before;
  dropped_before = st.messages_dropped;
  if (in_order && last == n - 1 && gap_at > 0 && queued <= max &&
      dropped == (uint64_t)(n - got) && st.slow_consumer_closes == 0)
    return queued > 0 ? queued : 1;
  fprintf(stderr,
          "  flood of %d: got %d in order %d, last %d, %zu bytes after the "
          "gap at %d, %zu of them in the kernel, %llu counted dropped\n",
          n, got, in_order, last, after_gap, gap_at, in_kernel,
          (unsigned long long)dropped);
  return 0;
}

/* Floods of 100 to 131 messages: each ends at another point of the queue's
 * cycle (it fills to max_queue_bytes, then drops to half: 32 messages), so
 * some end with the queue near its bound, where a queue that overshot
 * would show. */
RC_TEST(drop_oldest_keeps_the_order_and_the_byte_bound) {
  static peer peers[2];
  peer *slow = &peers[0], *witness = &peers[1];
  slow->fd = witness->fd = -1;
  rc_config cfg;
  config_small_queue(&cfg);
  cfg.drop_oldest = 1;
  RC_ASSERT_EQ_INT(start(&cfg), 0);
  uint64_t room = rc_server_room_new(srv);
  RC_ASSERT_EQ_INT(open_slow_and_witness(slow, witness, room), 0);
  size_t most = 0;
  for (int n = 100; n < 132; n++) {
    RC_ASSERT_EQ_INT(flood(room, witness, n), 0);
    size_t queued = read_dropped_flood(slow, n, cfg.max_queue_bytes);
    RC_ASSERT(queued > 0);
    most = queued > most ? queued : most;
  }
  /* The floods did reach the bound (else the check above proves little). */
  RC_CHECK(most > cfg.max_queue_bytes / 2);
  /* Still open, and in order: a message sent now comes next. */
  RC_CHECK_EQ_INT(send_text(slow->id, "still open"), 0);
  RC_CHECK(peer_expect(slow, "still open"));
  stop(peers, 2);
}

RC_TEST(a_slow_consumer_gets_a_prefix_then_1008) {
  static peer peers[2];
  peer *slow = &peers[0], *witness = &peers[1];
  slow->fd = witness->fd = -1;
  rc_config cfg;
  config_small_queue(&cfg);
  RC_ASSERT_EQ_INT(start(&cfg), 0);
  uint64_t room = rc_server_room_new(srv);
  RC_ASSERT_EQ_INT(open_slow_and_witness(slow, witness, room), 0);
  RC_ASSERT_EQ_INT(flood(room, witness, FLOOD), 0);

  /* Every message up to some point, none missing, then the close. */
  static frame f;
  int next = 0;
  while (peer_frame(slow, &f) == 0 && f.op == 1) {
    RC_CHECK_EQ_INT(flood_seq(&f), next);
    next++;
  }
  RC_CHECK_EQ_INT(f.op, 8);
  RC_CHECK(f.len >= 2 && ((unsigned)f.data[0] << 8 | f.data[1]) == 1008);
  static const char reason[] = "message queue full (client too slow)";
  RC_CHECK(f.len == 2 + sizeof(reason) - 1 &&
           memcmp(f.data + 2, reason, sizeof(reason) - 1) == 0);
  /* Possibly none: the kernel may take nothing of a write once its
   * buffers are this small. */
  RC_CHECK(next < FLOOD);
  /* The answer, then the TCP close a client makes after the handshake
   * (the server waits for it, up to close_timeout). */
  RC_CHECK_EQ_INT(peer_send_close(slow, 1008), 0);
  RC_CHECK_EQ_INT(shutdown(slow->fd, SHUT_WR), 0);
  rc_event *ev = next_event();
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->type, RC_EV_CLOSE);
  RC_CHECK(ev->conn == slow->id);
  RC_CHECK_EQ_INT(ev->code, 1008);
  free(ev);
  rc_stats st;
  rc_server_stats(srv, &st);
  RC_CHECK_EQ_INT(st.slow_consumer_closes, 1);
  RC_CHECK_EQ_INT(st.messages_dropped, 0);
  /* The other connection goes on. */
  RC_CHECK_EQ_INT(send_text(witness->id, "still here"), 0);
  RC_CHECK(peer_expect(witness, "still here"));
  stop(peers, 2);
}

RC_TEST_MAIN(RC_CASE(ring_grows_past_its_first_size_and_keeps_the_order),
             RC_CASE(ring_consume_leaves_a_partly_written_head),
             RC_CASE(ring_wraps_around),
             RC_CASE(ring_drop_oldest_spares_started_frames_and_control),
             RC_CASE(ring_drop_unsent_keeps_the_write_in_flight),
             RC_CASE(ring_shared_frame_lives_until_its_last_queue_lets_go),
             RC_CASE(ring_idle_shrink_frees_only_an_empty_ring),
             RC_CASE(a_send_and_a_publish_in_one_wakeup_keep_their_order),
             RC_CASE(drop_oldest_keeps_the_order_and_the_byte_bound),
             RC_CASE(a_slow_consumer_gets_a_prefix_then_1008))
