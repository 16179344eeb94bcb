/*
 * floor_server: the least work a WebSocket server must do to fan a message
 * out; the reference ("the floor") of the fan-out benchmark.
 *
 *   floor_server PORT --mode write|writev
 *
 * One thread, one epoll loop (level-triggered), one room that every
 * connection joins once its handshake is done, whatever the path. Every
 * complete text message received is framed once, as an unmasked server
 * frame in one reference-counted buffer, and sent to every member, the
 * sender included:
 *
 *   --mode write   one write() per member per message: the cost of a
 *                  delivery when nothing is batched;
 *   --mode writev  the frames of one epoll turn are collected, and at the
 *                  end of the turn each member gets all of them with one
 *                  writev() (IOV_MAX at a time): the batching floor.
 *
 * Members never copy a frame: what a socket does not take at once is kept
 * as references to the shared frames (plus an offset into the first), in
 * order, and flushed on EPOLLOUT. A member more than MAX_QUEUE_BYTES behind
 * is dropped.
 *
 * A reference, not a product: no UTF-8 validation, binary messages are
 * read and dropped, the only limits are the buffer caps below. Pings get a
 * pong, a close gets a close reply and then the socket is closed.
 *
 * Prints "listening on ws://127.0.0.1:PORT/" once it accepts connections;
 * stops on SIGINT or SIGTERM.
 *
 * Build: gcc -O2 -std=c11 -Wall -Wextra -Werror -Icsrc/include -Icsrc
 *        benchmarks/floor_server.c csrc/proto/rc_http.c
 *        csrc/proto/rc_utf8.c csrc/proto/rc_frame.c -o build/floor_server
 *        -lcrypto
 */
#define _GNU_SOURCE
#include "proto/rc_frame.h"
#include "proto/rc_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

#define MAX_EVENTS 1024
#define READ_BUF (256 * 1024)
#define MAX_HANDSHAKE 8192
#define MAX_HEADERS 64
#define MAX_MESSAGE (1u << 20)      /* larger messages close with 1009 */
#define MAX_QUEUE_BYTES (16u << 20) /* a member further behind is dropped */

enum mode { MODE_WRITE, MODE_WRITEV };
enum mstate { M_HANDSHAKE, M_OPEN, M_CLOSING, M_DEAD };

/* One pre-framed message (or control frame, or 101 response), shared by
 * every member that still has to send it. */
struct frame {
  uint32_t refs;
  size_t len;
  uint8_t data[];
};

struct member {
  int fd;
  uint8_t state;
  bool out_armed;     /* EPOLLOUT is in the interest set */
  bool close_pending; /* answer with a close frame at the end of the turn */
  uint8_t msg_op;     /* opcode of the fragmented message being read, or 0 */
  uint16_t close_code;
  uint32_t room_idx; /* position in room[], UINT32_MAX when not in it */
  uint32_t join_at;  /* writev: first frame of the current turn it is owed */
  /* bytes read but not yet parsed: part of a head or of a frame */
  uint8_t *in;
  size_t in_len, in_cap;
  /* the fragments of an unfinished message */
  uint8_t *msg;
  size_t msg_len, msg_cap;
  /* unsent output: a ring of frame references; q_off bytes of the first are
   * already written */
  struct frame **q;
  uint32_t q_head, q_count, q_cap;
  size_t q_off, q_bytes;
  struct member *prev, *next; /* every live connection */
  struct member *next_closing, *next_dead;
};

static enum mode mode;
static int epfd = -1, lfd = -1;
static bool accept_paused;
static volatile sig_atomic_t stop_requested;

static struct member *all;
static struct member *closing_list, *dead_list;
static struct member **room;
static uint32_t room_n, room_cap;

/* writev mode: this turn's frames and, in step with them, the iovecs that
 * every member's writev() points at */
static struct frame **turn;
static struct iovec *turn_iov;
static uint32_t turn_n, turn_cap;

/* printed on exit: how much batching the run got */
static uint64_t stat_messages, stat_turns, stat_calls;

static uint8_t rbuf[READ_BUF];
static rc_http_request req; /* ~4 KB: kept off the stack */

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void oom(void) {
  fputs("floor_server: out of memory\n", stderr);
  exit(1);
}

/* ---------------------------------------------------------------- frames */

static struct frame *frame_raw(const void *bytes, size_t len) {
  struct frame *f = malloc(sizeof *f + len);
  if (f == NULL)
    oom();
  f->refs = 1;
  f->len = len;
  memcpy(f->data, bytes, len);
  return f;
}

static struct frame *frame_ws(unsigned opcode, const uint8_t *payload,
                              size_t len) {
  uint8_t hdr[RC_FRAME_MAX_HEADER];
  size_t hl = rc_frame_header(hdr, opcode, 1, len);
  struct frame *f = malloc(sizeof *f + hl + len);
  if (f == NULL)
    oom();
  f->refs = 1;
  f->len = hl + len;
  memcpy(f->data, hdr, hl);
  if (len > 0)
    memcpy(f->data + hl, payload, len);
  return f;
}

static void frame_unref(struct frame *f) {
  if (--f->refs == 0)
    free(f);
}

/* --------------------------------------------------------------- members */

static void set_out(struct member *m, bool want) {
  if (m->out_armed == want)
    return;
  struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0u),
                           .data.ptr = m};
  if (epoll_ctl(epfd, EPOLL_CTL_MOD, m->fd, &ev) != 0)
    die("epoll_ctl(MOD)");
  m->out_armed = want;
}

/* Marks the member for freeing at the end of the turn: pointers to it may
 * still sit in this turn's event array or be walked over in room[]. */
static void kill_member(struct member *m) {
  if (m->state == M_DEAD)
    return;
  m->state = M_DEAD;
  m->next_dead = dead_list;
  dead_list = m;
}

static void room_remove(struct member *m) {
  if (m->room_idx == UINT32_MAX)
    return;
  struct member *last = room[--room_n];
  room[m->room_idx] = last;
  last->room_idx = m->room_idx;
  m->room_idx = UINT32_MAX;
}

static void room_add(struct member *m) {
  if (room_n == room_cap) {
    uint32_t cap = room_cap ? room_cap * 2 : 1024;
    struct member **r = realloc(room, cap * sizeof *r);
    if (r == NULL)
      oom();
    room = r;
    room_cap = cap;
  }
  m->room_idx = room_n;
  room[room_n++] = m;
  m->join_at = turn_n;
}

static void free_member(struct member *m) {
  room_remove(m);
  if (m->fd >= 0 && close(m->fd) != 0 && errno != EINTR)
    perror("close");
  for (uint32_t i = 0; i < m->q_count; i++)
    frame_unref(m->q[(m->q_head + i) & (m->q_cap - 1)]);
  free(m->q);
  free(m->in);
  free(m->msg);
  if (m->prev)
    m->prev->next = m->next;
  else
    all = m->next;
  if (m->next)
    m->next->prev = m->prev;
  free(m);
}

/* Appends a reference to f to the member's output queue. Returns false
 * (and drops the member) when it is too far behind. */
static bool queue_push(struct member *m, struct frame *f) {
  if (m->q_count == m->q_cap) {
    uint32_t cap = m->q_cap ? m->q_cap * 2 : 16;
    struct frame **q = malloc(cap * sizeof *q);
    if (q == NULL)
      oom();
    for (uint32_t i = 0; i < m->q_count; i++)
      q[i] = m->q[(m->q_head + i) & (m->q_cap - 1)];
    free(m->q);
    m->q = q;
    m->q_head = 0;
    m->q_cap = cap;
  }
  m->q[(m->q_head + m->q_count) & (m->q_cap - 1)] = f;
  m->q_count++;
  f->refs++;
  m->q_bytes += f->len;
  if (m->q_bytes > MAX_QUEUE_BYTES) {
    kill_member(m);
    return false;
  }
  set_out(m, true);
  return true;
}

/* Writes as much of the queue as the socket takes, IOV_MAX frames per
 * writev(). */
static void queue_flush(struct member *m) {
  struct iovec iov[IOV_MAX];
  while (m->q_count > 0) {
    uint32_t cnt = m->q_count < IOV_MAX ? m->q_count : IOV_MAX;
    size_t total = 0;
    for (uint32_t i = 0; i < cnt; i++) {
      struct frame *f = m->q[(m->q_head + i) & (m->q_cap - 1)];
      size_t off = i == 0 ? m->q_off : 0;
      iov[i].iov_base = f->data + off;
      iov[i].iov_len = f->len - off;
      total += f->len - off;
    }
    ssize_t n = writev(m->fd, iov, (int)cnt);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return;
      kill_member(m);
      return;
    }
    size_t left = (size_t)n;
    while (m->q_count > 0) {
      struct frame *f = m->q[m->q_head];
      size_t rest = f->len - m->q_off;
      if (left < rest) {
        m->q_off += left;
        break;
      }
      left -= rest;
      m->q_off = 0;
      m->q_head = (m->q_head + 1) & (m->q_cap - 1);
      m->q_count--;
      m->q_bytes -= f->len;
      frame_unref(f);
    }
    if ((size_t)n < total)
      return; /* the socket is full: wait for EPOLLOUT */
  }
  set_out(m, false);
  if (m->state == M_CLOSING)
    kill_member(m); /* the close reply is out */
}

/* Sends a frame of this member's own (101, pong, close) after whatever it
 * has queued. Consumes the caller's reference. */
static void send_own(struct member *m, struct frame *f) {
  bool was_empty = m->q_count == 0;
  if (queue_push(m, f) && was_empty)
    queue_flush(m);
  frame_unref(f);
}

/* Answers with a close frame at the end of the turn, after the frames the
 * member is owed from this turn. */
static void request_close(struct member *m, uint16_t code) {
  if (m->close_pending || m->state != M_OPEN)
    return;
  m->close_pending = true;
  m->close_code = code;
  m->next_closing = closing_list;
  closing_list = m;
}

/* ----------------------------------------------------------------- fan-out */

/* write mode: one write() per member, the rest queued by reference. */
static void broadcast_now(struct frame *f) {
  for (uint32_t i = 0; i < room_n; i++) {
    struct member *m = room[i];
    if (m->state != M_OPEN)
      continue;
    if (m->q_count > 0) {
      (void)queue_push(m, f);
      continue;
    }
    ssize_t n;
    do {
      n = write(m->fd, f->data, f->len);
      stat_calls++;
    } while (n < 0 && errno == EINTR);
    if (n == (ssize_t)f->len)
      continue;
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        kill_member(m);
        continue;
      }
      n = 0;
    }
    if (queue_push(m, f))
      m->q_off = (size_t)n;
  }
}

static void broadcast(const uint8_t *payload, size_t len) {
  struct frame *f = frame_ws(RC_OP_TEXT, payload, len);
  stat_messages++;
  if (mode == MODE_WRITE) {
    broadcast_now(f);
    frame_unref(f);
    return;
  }
  if (turn_n == turn_cap) {
    uint32_t cap = turn_cap ? turn_cap * 2 : 256;
    struct frame **t = realloc(turn, cap * sizeof *t);
    if (t == NULL)
      oom();
    turn = t;
    struct iovec *v = realloc(turn_iov, cap * sizeof *v);
    if (v == NULL)
      oom();
    turn_iov = v;
    turn_cap = cap;
  }
  turn[turn_n] = f; /* the turn keeps the reference */
  turn_iov[turn_n].iov_base = f->data;
  turn_iov[turn_n].iov_len = f->len;
  turn_n++;
}

/* writev mode: the member's share of this turn, turn[join_at..turn_n), in
 * one writev() of the shared iovecs (one per IOV_MAX frames). */
static void deliver_turn(struct member *m) {
  uint32_t i = m->join_at;
  m->join_at = 0;
  if (m->state != M_OPEN || i >= turn_n)
    return;
  if (m->q_count > 0)
    goto queue_rest;
  while (i < turn_n) {
    uint32_t end = turn_n - i < IOV_MAX ? turn_n : i + IOV_MAX;
    ssize_t n = writev(m->fd, turn_iov + i, (int)(end - i));
    stat_calls++;
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        kill_member(m);
        return;
      }
      n = 0;
    }
    size_t left = (size_t)n;
    while (i < end && left >= turn_iov[i].iov_len)
      left -= turn_iov[i++].iov_len;
    if (i < end) {
      if (!queue_push(m, turn[i]))
        return;
      m->q_off = left;
      i++;
      goto queue_rest;
    }
  }
  return;
queue_rest:
  for (; i < turn_n; i++)
    if (!queue_push(m, turn[i]))
      return;
}

/* ------------------------------------------------------------- reading */

static void buf_append(uint8_t **buf, size_t *len, size_t *cap,
                       const uint8_t *p, size_t n) {
  if (*len + n > *cap) {
    size_t c = *cap ? *cap : 4096;
    while (c < *len + n)
      c *= 2;
    uint8_t *b = realloc(*buf, c);
    if (b == NULL)
      oom();
    *buf = b;
    *cap = c;
  }
  memcpy(*buf + *len, p, n);
  *len += n;
}

static void unmask(uint8_t *p, size_t len, const uint8_t key[4]) {
  uint64_t k;
  memcpy(&k, key, 4);
  memcpy((uint8_t *)&k + 4, key, 4);
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    w ^= k;
    memcpy(p + i, &w, 8);
  }
  for (; i < len; i++)
    p[i] ^= key[i & 3];
}

static void on_message(struct member *m, unsigned op, const uint8_t *p,
                       size_t len) {
  (void)m;
  if (op == RC_OP_TEXT)
    broadcast(p, len);
}

/* Parses the complete frames in buf[0..len) and returns the bytes used. */
static size_t parse_frames(struct member *m, uint8_t *buf, size_t len) {
  size_t off = 0;
  while (!m->close_pending && m->state == M_OPEN && len - off >= 2) {
    uint8_t *h = buf + off;
    size_t avail = len - off;
    uint64_t plen = h[1] & 0x7Fu;
    size_t hl = 2;
    if (plen == 126)
      hl = 4;
    else if (plen == 127)
      hl = 10;
    if (!(h[1] & 0x80) || (h[0] & 0x70)) {
      request_close(m, 1002); /* unmasked client frame, or reserved bits */
      break;
    }
    if (avail < hl + 4)
      break;
    if (hl == 4) {
      plen = (uint64_t)h[2] << 8 | h[3];
    } else if (hl == 10) {
      plen = 0;
      for (int i = 2; i < 10; i++)
        plen = plen << 8 | h[i];
    }
    if (plen > MAX_MESSAGE) {
      request_close(m, 1009);
      break;
    }
    if (avail - hl - 4 < plen)
      break;
    unsigned op = h[0] & 0x0Fu;
    bool fin = (h[0] & 0x80) != 0;
    uint8_t *payload = h + hl + 4;
    unmask(payload, (size_t)plen, h + hl);
    off += hl + 4 + (size_t)plen;

    if (op & 0x8) {
      if (!fin || plen > 125) {
        request_close(m, 1002);
        break;
      }
      if (op == RC_OP_PING) {
        send_own(m, frame_ws(RC_OP_PONG, payload, (size_t)plen));
      } else if (op == RC_OP_CLOSE) {
        /* echo the peer's code, as RFC 6455 5.5.1 suggests, unless it is
         * one that must not appear on the wire */
        unsigned code =
            plen >= 2 ? (unsigned)(payload[0] << 8 | payload[1]) : 0;
        request_close(
            m,
            (uint16_t)(code == 0 || rc_close_code_valid(code) ? code : 1002));
      } else if (op != RC_OP_PONG) {
        request_close(m, 1002);
      }
      continue;
    }
    if (op == RC_OP_CONT) {
      if (m->msg_op == 0 || m->msg_len + plen > MAX_MESSAGE) {
        request_close(m, m->msg_op == 0 ? 1002 : 1009);
        break;
      }
      buf_append(&m->msg, &m->msg_len, &m->msg_cap, payload, (size_t)plen);
      if (fin) {
        on_message(m, m->msg_op, m->msg, m->msg_len);
        m->msg_op = 0;
        m->msg_len = 0;
      }
    } else if (op == RC_OP_TEXT || op == RC_OP_BINARY) {
      if (m->msg_op != 0) {
        request_close(m, 1002);
        break;
      }
      if (fin) {
        on_message(m, op, payload, (size_t)plen);
      } else {
        m->msg_op = (uint8_t)op;
        buf_append(&m->msg, &m->msg_len, &m->msg_cap, payload, (size_t)plen);
      }
    } else {
      request_close(m, 1002);
      break;
    }
  }
  return off;
}

/* Frames are parsed straight from the shared read buffer; only the tail of
 * an incomplete frame is kept in the member's own buffer. */
static void frames_input(struct member *m, uint8_t *p, size_t n) {
  if (m->in_len > 0) {
    buf_append(&m->in, &m->in_len, &m->in_cap, p, n);
    size_t used = parse_frames(m, m->in, m->in_len);
    memmove(m->in, m->in + used, m->in_len - used);
    m->in_len -= used;
  } else {
    size_t used = parse_frames(m, p, n);
    if (used < n)
      buf_append(&m->in, &m->in_len, &m->in_cap, p + used, n - used);
  }
  if (m->close_pending)
    m->in_len = 0;
}

static void refuse(struct member *m, const char *response) {
  /* best effort: the connection is closed right after */
  ssize_t n = write(m->fd, response, strlen(response));
  (void)n;
  kill_member(m);
}

static void handshake_input(struct member *m, const uint8_t *p, size_t n) {
  if (m->in_len + n > MAX_HANDSHAKE) {
    refuse(m, "HTTP/1.1 431 Request Header Fields Too Large\r\n"
              "Content-Length: 0\r\nConnection: close\r\n\r\n");
    return;
  }
  buf_append(&m->in, &m->in_len, &m->in_cap, p, n);
  int r = rc_http_parse_request((const char *)m->in, m->in_len, MAX_HANDSHAKE,
                                MAX_HEADERS, &req);
  if (r == RC_HTTP_INCOMPLETE)
    return;
  rc_http_upgrade_check chk = {.status = 400};
  if (r > 0)
    rc_http_check_upgrade(&req, &chk);
  if (chk.status != 0) {
    refuse(m, "HTTP/1.1 400 Bad Request\r\n"
              "Content-Length: 0\r\nConnection: close\r\n\r\n");
    return;
  }
  char accept[29];
  if (rc_ws_accept_value(chk.key, chk.key_len, accept) != 0) {
    kill_member(m);
    return;
  }
  char resp[256];
  int len = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
  if (len < 0 || (size_t)len >= sizeof resp) {
    kill_member(m);
    return;
  }
  m->state = M_OPEN;
  send_own(m, frame_raw(resp, (size_t)len));
  if (m->state != M_OPEN)
    return;
  room_add(m);
  /* a client may send frames right behind its head */
  size_t rest = m->in_len - (size_t)r;
  memmove(m->in, m->in + r, rest);
  m->in_len = 0;
  if (rest > 0) {
    size_t used = parse_frames(m, m->in, rest);
    memmove(m->in, m->in + used, rest - used);
    m->in_len = m->close_pending ? 0 : rest - used;
  }
}

static void on_readable(struct member *m) {
  ssize_t n = read(m->fd, rbuf, sizeof rbuf);
  if (n < 0) {
    if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
      kill_member(m);
    return;
  }
  if (n == 0) {
    kill_member(m);
    return;
  }
  /* one read per event: level-triggered epoll reports the rest */
  if (m->state == M_HANDSHAKE)
    handshake_input(m, rbuf, (size_t)n);
  else if (m->state == M_OPEN && !m->close_pending)
    frames_input(m, rbuf, (size_t)n);
  /* M_CLOSING: input is dropped until the close reply is out */
}

/* ----------------------------------------------------------- the loop */

static void pause_accept(bool pause) {
  struct epoll_event ev = {.events = pause ? 0u : EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(epfd, EPOLL_CTL_MOD, lfd, &ev) != 0)
    die("epoll_ctl(listener)");
  accept_paused = pause;
}

static void accept_all(void) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        /* level-triggered: listening on would spin; resume once a
         * connection is gone */
        perror("accept4");
        pause_accept(true);
        return;
      }
      die("accept4");
    }
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
      perror("setsockopt(TCP_NODELAY)");
    struct member *m = calloc(1, sizeof *m);
    if (m == NULL)
      oom();
    m->fd = fd;
    m->state = M_HANDSHAKE;
    m->room_idx = UINT32_MAX;
    m->next = all;
    if (all)
      all->prev = m;
    all = m;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = m};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
      die("epoll_ctl(ADD)");
  }
}

static void end_turn(void) {
  if (turn_n > 0) {
    stat_turns++;
    for (uint32_t i = 0; i < room_n; i++)
      deliver_turn(room[i]);
    for (uint32_t i = 0; i < turn_n; i++)
      frame_unref(turn[i]);
    turn_n = 0;
  }
  while (closing_list) {
    struct member *m = closing_list;
    closing_list = m->next_closing;
    if (m->state != M_OPEN)
      continue;
    room_remove(m);
    m->state = M_CLOSING;
    uint8_t payload[2] = {(uint8_t)(m->close_code >> 8),
                          (uint8_t)m->close_code};
    send_own(m, frame_ws(RC_OP_CLOSE, payload, m->close_code ? 2 : 0));
    if (m->q_count == 0)
      kill_member(m);
  }
  bool freed = dead_list != NULL;
  while (dead_list) {
    struct member *m = dead_list;
    dead_list = m->next_dead;
    free_member(m);
  }
  if (freed && accept_paused)
    pause_accept(false);
}

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void usage(void) {
  fputs("usage: floor_server PORT --mode write|writev\n", stderr);
  exit(2);
}

int main(int argc, char **argv) {
  if (argc != 4 || strcmp(argv[2], "--mode") != 0)
    usage();
  char *end;
  long port = strtol(argv[1], &end, 10);
  if (*end != '\0' || end == argv[1] || port < 0 || port > 65535)
    usage();
  if (strcmp(argv[3], "write") == 0)
    mode = MODE_WRITE;
  else if (strcmp(argv[3], "writev") == 0)
    mode = MODE_WRITEV;
  else
    usage();

  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    die("getrlimit");
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      perror("setrlimit");
  }

  /* The stop signals are blocked except inside epoll_pwait(), so that one
   * arriving between the check and the wait is not missed. */
  struct sigaction sa = {.sa_handler = on_signal};
  if (sigemptyset(&sa.sa_mask) != 0 || sigaction(SIGTERM, &sa, NULL) != 0 ||
      sigaction(SIGINT, &sa, NULL) != 0)
    die("sigaction");
  struct sigaction ign = {.sa_handler = SIG_IGN};
  if (sigemptyset(&ign.sa_mask) != 0 || sigaction(SIGPIPE, &ign, NULL) != 0)
    die("sigaction(SIGPIPE)");
  sigset_t block, waitmask;
  if (sigemptyset(&block) != 0 || sigaddset(&block, SIGTERM) != 0 ||
      sigaddset(&block, SIGINT) != 0 ||
      sigprocmask(SIG_BLOCK, &block, &waitmask) != 0)
    die("sigprocmask");
  if (sigdelset(&waitmask, SIGTERM) != 0 || sigdelset(&waitmask, SIGINT) != 0)
    die("sigdelset");

  lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0)
    die("socket");
  int one = 1;
  if (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
    die("setsockopt(SO_REUSEADDR)");
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0)
    die("bind");
  if (listen(lfd, 4096) != 0)
    die("listen");
  socklen_t alen = sizeof addr;
  if (getsockname(lfd, (struct sockaddr *)&addr, &alen) != 0)
    die("getsockname");

  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0)
    die("epoll_create1");
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) != 0)
    die("epoll_ctl(listener)");

  printf("listening on ws://127.0.0.1:%u/\n", (unsigned)ntohs(addr.sin_port));
  if (fflush(stdout) != 0)
    die("fflush");

  static struct epoll_event evs[MAX_EVENTS];
  while (!stop_requested) {
    int n = epoll_pwait(epfd, evs, MAX_EVENTS, -1, &waitmask);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      die("epoll_pwait");
    }
    for (int i = 0; i < n; i++) {
      struct member *m = evs[i].data.ptr;
      if (m == NULL) {
        accept_all();
        continue;
      }
      if (m->state == M_DEAD)
        continue;
      if (evs[i].events & EPOLLOUT)
        queue_flush(m);
      if (m->state != M_DEAD &&
          (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        on_readable(m);
    }
    end_turn();
  }

  fprintf(stderr,
          "floor_server: %llu messages broadcast, %llu fan-out system calls"
          " (write/writev; flushes of queued output not counted)",
          (unsigned long long)stat_messages, (unsigned long long)stat_calls);
  if (mode == MODE_WRITEV)
    fprintf(stderr, ", %llu turns with messages (%.1f messages per turn)",
            (unsigned long long)stat_turns,
            stat_turns ? (double)stat_messages / (double)stat_turns : 0.0);
  fputc('\n', stderr);
  while (all)
    free_member(all);
  free(room);
  free(turn);
  free(turn_iov);
  if (close(epfd) != 0 || close(lfd) != 0)
    perror("close");
  return 0;
}
