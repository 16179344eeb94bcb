/* fuzz_frames.c - libFuzzer target for the core's read path: the bytes a
 * client sends, through rc__conn_received into the HTTP buffer or wslay, with
 * the writes, closes and events that follow.
 *
 * Each input gets a fresh rc_server whose loop this thread drives (no loop
 * thread): the server's own uv_check handle ends each turn the way
 * rc_server.c's does (flush the dirty connections, hand the events over),
 * and UV_RUN_NOWAIT lets writes, shutdowns and closes complete. The
 * connection is real: a client connects to an abstract-namespace Unix socket
 * (no network), and rc__server_on_connection accepts it into the core's
 * uv_tcp_t. A valid upgrade request goes through rc__conn_received, then the
 * accept command the embedder sends, as rc_server_accept() would queue it.
 * The fuzz input then arrives in chunks, each from a heap copy of exactly
 * its length, only while the core is reading (a paused connection would get
 * nothing from the kernel either). Teardown closes the client, aborts what
 * is left the way the stop timer does, runs the loop until every handle has
 * closed and frees the server, so that nothing survives an input.
 *
 * Time: no timer is started. Sweeps are called directly with a loop time
 * that either stands still or jumps by a minute per chunk, so deadlines and
 * keepalive fire, or not, the same way on every run.
 *
 * Input: two control bytes, then the client's bytes.
 *   byte 0, bits 0-2  chunking: 0 all at once, 1-6: 2^(k-1) bytes,
 *                     7: 1, 3, 7, 13, 64, 1, 3, ...
 *           bit 3     two sweeps after every chunk (drops an idle parser);
 *                     then the same input runs again without them and must
 *                     give the same events and bytes
 *           bit 4     raw: the input starts with the request head itself
 *           bit 5     the embedder sends a text message after every chunk
 *                     (and a 2000-byte binary one to a slow client)
 *           bit 6     the embedder closes (1000) after the middle chunk;
 *                     raw: it refuses the upgrade (403) instead of accepting
 *           bit 7     moving time: ping every 20 s, sweeps a minute apart,
 *                     idle timeout after 50 minutes
 *   byte 1, bits 0-1  max_message_size: 1 MiB, 125, 1024, 65536
 *           bit 2     small limits: max_queue_bytes 256, max_header_bytes
 *                     512, max_headers 8
 *           bit 3     accept with a subprotocol and an extra header; the
 *                     request offers permessage-deflate
 *           bit 4     the embedder pauses reading after odd chunks and
 *                     resumes before the next one
 *           bit 5     slow client: small send buffer, reads only at the end
 *           bit 6     the server stops (1001) after the last chunk; raw:
 *                     after the first chunk, before answering the request
 *           bit 7     drop_oldest instead of closing a slow consumer
 * Frames pipelined behind the request (in the handshake's own read) are raw
 * inputs whose first chunk holds both.
 *
 * Beyond memory safety it checks: events come in order (OPEN, messages,
 * exactly one CLOSE), a text message is valid UTF-8 and within the size
 * limit, and what the client receives is an HTTP head followed by
 * well-formed server frames (unmasked, no RSV bits but RSV1 on the data
 * frames of a connection that agreed to permessage-deflate, each of which
 * inflates alone to a valid message; control frames short and final,
 * nothing after a close). A broken property aborts. */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/allocator_interface.h>
#define HEAP_IN_USE() __sanitizer_get_current_allocated_bytes()
#endif
#endif
#ifndef HEAP_IN_USE
#define HEAP_IN_USE() ((size_t)0) /* only known under ASan */
#endif

#include "loop/rc_internal.h"
#include "proto/rc_utf8.h"

#include "fuzz_core.h"

/* The longest message the embedder sends here (2000 bytes), rounded up. */
#define SENT_MAX 4096

/* Loop turns allowed for something that takes one or two. */
#define SPIN_LIMIT 64

/* The upgrade request's lines but its end. */
#define REQUEST_HEAD                                                           \
  "GET /fuzz?room=1 HTTP/1.1\r\n"                                              \
  "Host: localhost\r\n"                                                        \
  "Upgrade: websocket\r\n"                                                     \
  "Connection: Upgrade\r\n"                                                    \
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                            \
  "Sec-WebSocket-Version: 13\r\n"

static const char handshake[] = REQUEST_HEAD "\r\n";

/* The same, offering permessage-deflate as browsers do. */
static const char handshake_deflate[] =
    REQUEST_HEAD "Sec-WebSocket-Extensions: permessage-deflate; "
                 "client_max_window_bits\r\n\r\n";

static fuzz_listener listener;
static int fd_baseline;

/* The client's view of the stream: an HTTP head, then server frames. */
typedef struct client_view {
  uint8_t *buf;
  size_t len, cap;
} client_view;

typedef struct harness {
  rc_server *s;
  uv_pipe_t listener;
  int client;
  uint64_t id;
  int raw;
  int slow;
  int opened, closed; /* events seen */
  size_t max_message;
  client_view out;
  uint64_t digest; /* of the events and of what the client received */
} harness;

static harness h;

static uint64_t fnv(uint64_t hsh, const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++)
    hsh = (hsh ^ b[i]) * 0x100000001b3ull;
  return hsh;
}
static int trace; /* ROOMCAST_FUZZ_TRACE set: print events and frames */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  trace = getenv("ROOMCAST_FUZZ_TRACE") != NULL;
  fuzz_process_init(&listener, "fuzz-frames", 16);
  return 0;
}

/* --- what the client receives --------------------------------------------- */

static void drain_client(void) {
  if (h.client < 0)
    return;
  for (;;) {
    if (h.out.cap - h.out.len < 4096) {
      size_t cap = h.out.cap ? h.out.cap * 2 : 16384;
      uint8_t *nb = realloc(h.out.buf, cap);
      FUZZ_CHECK(nb != NULL);
      h.out.buf = nb;
      h.out.cap = cap;
    }
    ssize_t r = recv(h.client, h.out.buf + h.out.len, h.out.cap - h.out.len,
                     MSG_DONTWAIT);
    if (r > 0) {
      h.out.len += (size_t)r;
      continue;
    }
    if (r < 0 && errno == EINTR)
      continue;
    return; /* EAGAIN, EOF or reset */
  }
}

static int utf8_reference(const uint8_t *s, size_t n) {
  /* Decode each sequence to its code point, the slow and obvious way, as a
   * second opinion on rc_utf8_valid. */
  size_t i = 0;
  while (i < n) {
    uint32_t cp;
    size_t need;
    uint8_t c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      cp = c & 0x1Fu;
      need = 1;
    } else if ((c & 0xF0) == 0xE0) {
      cp = c & 0x0Fu;
      need = 2;
    } else if ((c & 0xF8) == 0xF0) {
      cp = c & 0x07u;
      need = 3;
    } else {
      return 0;
    }
    if (n - i - 1 < need)
      return 0;
    for (size_t k = 1; k <= need; k++) {
      if ((s[i + k] & 0xC0) != 0x80)
        return 0;
      cp = (cp << 6) | (s[i + k] & 0x3Fu);
    }
    static const uint32_t min_for[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_for[need] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return 0;
    i += need + 1;
  }
  return 1;
}

static int close_code_ok(unsigned code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

/* Checks everything the client received once the connection is over. */
static void check_client_view(void) {
  const uint8_t *p = h.out.buf;
  size_t n = h.out.len;
  if (n == 0)
    return;
  FUZZ_CHECK(n >= 12 && memcmp(p, "HTTP/1.1 ", 9) == 0);
  const uint8_t *end = memmem(p, n, "\r\n\r\n", 4);
  FUZZ_CHECK(end != NULL);
  size_t head = (size_t)(end - p) + 4;
  if (trace) {
    fprintf(stderr, "client got %zu bytes: %.12s...\n", n, (const char *)p);
    for (size_t k = head; k < n; k++)
      fprintf(stderr, "%02x%s", p[k], (k - head) % 32 == 31 ? "\n" : " ");
    fputc('\n', stderr);
  }
  if (memcmp(p, "HTTP/1.1 101 ", 13) != 0) {
    /* An HTTP answer: its body, then nothing. */
    const uint8_t *cl = memmem(p, head, "\r\nContent-Length: ", 18);
    FUZZ_CHECK(cl != NULL);
    size_t body = strtoul((const char *)cl + 18, NULL, 10);
    FUZZ_CHECK(n <= head + body);
    FUZZ_CHECK(h.raw); /* the fixed handshake is always accepted */
    return;
  }
  /* RSV1 is allowed once the answer agreed to permessage-deflate. */
  int deflate = memmem(p, head, "permessage-deflate", 18) != NULL;
  size_t i = head;
  int closed = 0;
  while (i < n) {
    FUZZ_CHECK(!closed); /* nothing after a close frame */
    /* A connection aborted in the middle of a write leaves its last frame
     * cut short; anything else out of step fails the checks below. */
    if (n - i < 2)
      break;
    uint8_t b0 = p[i], b1 = p[i + 1];
    unsigned op = b0 & 0x0Fu;
    int compressed = (b0 & 0x40u) != 0;
    FUZZ_CHECK((b0 & 0x30u) == 0);
    FUZZ_CHECK(!compressed || (deflate && (op == 0x1 || op == 0x2)));
    FUZZ_CHECK((b1 & 0x80u) == 0); /* servers never mask */
    uint64_t len = b1 & 0x7Fu;
    size_t hl = 2;
    if (len == 126) {
      if (n - i < 4)
        break;
      len = ((uint64_t)p[i + 2] << 8) | p[i + 3];
      FUZZ_CHECK(len >= 126); /* shortest form */
      hl = 4;
    } else if (len == 127) {
      if (n - i < 10)
        break;
      len = 0;
      for (int k = 0; k < 8; k++)
        len = (len << 8) | p[i + 2 + k];
      FUZZ_CHECK(len > 0xFFFF);
      hl = 10;
    }
    if (len > n - i - hl)
      break;
    size_t frame_len = (size_t)len;
    const uint8_t *pl = p + i + hl;
    if (trace)
      fprintf(stderr, "frame from server: fin %u opcode %u len %llu\n", b0 >> 7,
              op, (unsigned long long)len);
    uint8_t *plain = NULL;
    if (compressed) {
      /* Stands alone (server_no_context_takeover): inflates by itself. */
      rc_inflater *inf = rc_inflater_new();
      FUZZ_CHECK(inf != NULL);
      /* The embedder's messages here are at most SENT_MAX bytes. */
      plain = malloc(SENT_MAX);
      FUZZ_CHECK(plain != NULL);
      size_t got;
      FUZZ_CHECK(rc_inflate_message(inf, pl, (size_t)len, plain, SENT_MAX,
                                    &got) == RC_INFLATE_OK);
      FUZZ_CHECK(got > len); /* compressed only when it shrank */
      rc_inflater_free(inf);
      pl = plain;
      len = got;
    }
    switch (op) {
    case 0x1:
      FUZZ_CHECK(b0 & 0x80u);
      FUZZ_CHECK(rc_utf8_valid(pl, (size_t)len));
      break;
    case 0x2:
      FUZZ_CHECK(b0 & 0x80u);
      break;
    case 0x8:
      FUZZ_CHECK(len == 0 || len >= 2);
      if (len >= 2)
        FUZZ_CHECK(close_code_ok(((unsigned)pl[0] << 8) | pl[1]));
      /* falls through */
    case 0x9:
    case 0xA:
      FUZZ_CHECK((b0 & 0x80u) && len <= 125);
      closed = op == 0x8;
      break;
    default:
      FUZZ_CHECK(!"unexpected opcode from the server");
    }
    free(plain);
    i += hl + frame_len;
  }
}

/* --- events --------------------------------------------------------------- */

static void take_events(void) {
  rc_event *head = rc_server_poll(h.s);
  for (rc_event *ev = head; ev != NULL; ev = ev->next) {
    FUZZ_CHECK(ev->conn == h.id);
    if (trace)
      fprintf(stderr, "event %u len %u code %u text %u\n", ev->type, ev->len,
              ev->code, ev->is_text);
    uint32_t sum[4] = {ev->type, ev->len, ev->code, ev->is_text};
    h.digest = fnv(h.digest, sum, sizeof(sum));
    if (ev->type != RC_EV_OPEN) /* OPEN carries the peer's address */
      h.digest = fnv(h.digest, ev->data, ev->len);
    FUZZ_CHECK(!h.closed); /* RC_EV_CLOSE is the last event */
    switch (ev->type) {
    case RC_EV_OPEN:
    case RC_EV_REQUEST:
      FUZZ_CHECK(!h.opened);
      h.opened = 1;
      FUZZ_CHECK(ev->nstr >= 4);
      break;
    case RC_EV_MESSAGE:
      FUZZ_CHECK(h.opened);
      FUZZ_CHECK(ev->len <= h.max_message);
      FUZZ_CHECK(ev->data[ev->len] == '\0');
      if (ev->is_text) {
        FUZZ_CHECK(rc_utf8_valid((const uint8_t *)ev->data, ev->len));
        FUZZ_CHECK(utf8_reference((const uint8_t *)ev->data, ev->len));
      }
      break;
    case RC_EV_CLOSE:
      FUZZ_CHECK(h.opened);
      h.closed = 1;
      FUZZ_CHECK(ev->code == 1005 || ev->code == 1006 ||
                 close_code_ok(ev->code));
      break;
    default:
      FUZZ_CHECK(!"unknown event type");
    }
  }
  rc_events_free(head);
}

/* --- driving the loop ----------------------------------------------------- */

/* The end of a loop turn, as rc_server.c's check handle does it. */
static void on_turn_end(uv_check_t *chk) {
  rc_server *s = chk->data;
  rc__flush_dirty(s);
  rc__events_hand_over(s);
}

static void turn(int drain) {
  (void)uv_run(&h.s->loop, UV_RUN_NOWAIT);
  if (drain)
    drain_client();
  take_events();
  if (trace) {
    rc_conn *c = rc__conn_find(h.s, h.id);
    fprintf(stderr, "turn: heap %zu bytes, state %d, parser %s\n",
            HEAP_IN_USE(), c ? c->state : -1, c && c->ws ? "held" : "none");
  }
}

static rc_conn *conn(void) { return rc__conn_find(h.s, h.id); }

/* A command as the embedder's API would queue it, carried out the way the
 * loop's wake-up callback does. */
static void command(int type, int status, const char *text) {
  rc_cmd *cmd = calloc(1, sizeof(*cmd));
  FUZZ_CHECK(cmd != NULL);
  cmd->type = type;
  cmd->conn = h.id;
  cmd->status = status;
  if (text != NULL) {
    cmd->text = strdup(text);
    FUZZ_CHECK(cmd->text != NULL);
    cmd->text_len = strlen(text);
  }
  rc__conn_command(h.s, cmd);
  rc__cmd_free(cmd);
}

static void send_message(unsigned opcode, const void *msg, size_t len) {
  rc_cmd *cmd = calloc(1, sizeof(*cmd));
  FUZZ_CHECK(cmd != NULL);
  cmd->type = RC_CMD_SEND;
  cmd->conn = h.id;
  cmd->buf =
      rc__buf_message(opcode == RC_OP_TEXT, msg, len); /* as rc_server_send */
  FUZZ_CHECK(cmd->buf != NULL);
  rc__conn_command(h.s, cmd);
  rc__cmd_free(cmd);
}

/* Bytes from the client, from an exact-size heap copy: a read past the end
 * or a pointer kept after the call shows up under ASan. */
static void receive(const uint8_t *data, size_t len) {
  rc_conn *c = conn();
  if (c == NULL || len == 0)
    return;
  char *copy = malloc(len);
  FUZZ_CHECK(copy != NULL);
  memcpy(copy, data, len);
  rc__conn_received(c, copy, len);
  free(copy);
}

/* The embedder's answer to RC_EV_OPEN: accept, or refuse with a close. */
static void answer_pending(int with_extra, int refuse) {
  rc_conn *c = conn();
  if (c == NULL || c->state != RC_CONN_PENDING)
    return;
  if (refuse)
    command(RC_CMD_CLOSE, 1000, NULL);
  else
    command(RC_CMD_ACCEPT, 0,
            with_extra ? "Sec-WebSocket-Protocol: chat\r\nX-Fuzz: 1\r\n"
                       : NULL);
}

static void stop_server(void) {
  rc_server *s = h.s;
  if (s->stopping)
    return;
  s->stopping = 1;
  s->stop_code = 1001;
  snprintf(s->stop_reason, sizeof(s->stop_reason), "going away");
  rc__stop_begin(s);
}

static int lowest_free_fd(void) {
  int probe = dup(0);
  FUZZ_CHECK(probe >= 0);
  close(probe);
  return probe;
}

static int setup(const rc_config *cfg) {
  fd_baseline = lowest_free_fd();
  memset(&h, 0, sizeof(h));
  h.client = -1;
  h.digest = 0xcbf29ce484222325ull;
  h.max_message = cfg->max_message_size;
  rc_server *s = h.s = fuzz_server_new(cfg, on_turn_end);

  fuzz_listen(s, &h.listener, &listener, 16);
  h.client = fuzz_connect(&listener);
  for (int i = 0; i < SPIN_LIMIT && s->nconns == 0; i++)
    turn(1);
  FUZZ_CHECK(s->nconns == 1);
  uv_close((uv_handle_t *)&h.listener, NULL);
  for (uint32_t i = 0; i < s->nslots; i++)
    if (s->slots[i] != NULL)
      h.id = s->slots[i]->id;
  return 0;
}

static uint64_t teardown(void) {
  rc_server *s = h.s;
  /* Let the client read everything the server still has to write. */
  for (int i = 0; i < SPIN_LIMIT; i++) {
    size_t before = h.out.len;
    turn(1);
    rc_conn *c = conn();
    if (h.out.len == before && (c == NULL || (!c->writing && c->q.count == 0)))
      break;
  }
  /* The client hangs up; a connection still reading sees EOF. */
  if (h.client >= 0) {
    close(h.client);
    h.client = -1;
  }
  for (int i = 0; i < 4 && conn() != NULL; i++)
    turn(0);
  rc_conn *c = conn();
  if (c != NULL)
    rc__conn_abort(c); /* as the stop timer does */
  for (int i = 0; i < SPIN_LIMIT && (s->nconns > 0 || s->open_handles > 0); i++)
    turn(0);
  FUZZ_CHECK(s->nconns == 0 && s->open_handles == 0);
  take_events();
  /* A connection the embedder has heard of always ends with RC_EV_CLOSE. */
  FUZZ_CHECK(h.opened == h.closed);
  check_client_view();
  h.digest = fnv(h.digest, h.out.buf, h.out.len);
  uint64_t digest = h.digest;

  uv_close((uv_handle_t *)&s->flush, NULL);
  (void)uv_run(&s->loop, UV_RUN_DEFAULT);
  FUZZ_CHECK(uv_loop_close(&s->loop) == 0);
  rc_server_free(s);
  free(h.out.buf);
  memset(&h, 0, sizeof(h));

  /* Every descriptor of the run is closed: the lowest free one is where it
   * was when the run began. */
  FUZZ_CHECK(lowest_free_fd() == fd_baseline);
  return digest;
}

static size_t chunk_len(unsigned mode, size_t i) {
  static const size_t cycle[5] = {1, 3, 7, 13, 64};
  if (mode == 0)
    return SIZE_MAX;
  if (mode == 7)
    return cycle[i % 5];
  return (size_t)1 << (mode - 1);
}

/* One connection's life with this input; returns the digest of what the
 * embedder and the client saw. */
static uint64_t run(unsigned c0, unsigned c1, const uint8_t *data,
                    size_t size) {
  static const size_t max_msg_choice[4] = {1u << 20, 125, 1024, 65536};
  unsigned chunking = c0 & 7u;
  int sweep = (c0 >> 3) & 1;
  int raw = (c0 >> 4) & 1;
  int sends = (c0 >> 5) & 1;
  int closes = (c0 >> 6) & 1;
  int moving = (c0 >> 7) & 1;
  int extra = (c1 >> 3) & 1;
  int pauses = (c1 >> 4) & 1;
  int slow = (c1 >> 5) & 1;
  int stops = (c1 >> 6) & 1;

  rc_config cfg;
  rc_config_default(&cfg);
  cfg.max_message_size = max_msg_choice[c1 & 3u];
  if ((c1 >> 2) & 1) {
    cfg.max_queue_bytes = 256;
    cfg.max_header_bytes = 512;
    cfg.max_headers = 8;
  }
  cfg.drop_oldest = (c1 >> 7) & 1;
  if (moving)
    cfg.idle_timeout = 3000;
  else
    cfg.ping_interval = 0; /* a standing clock must not ping by accident */

  setup(&cfg);
  h.raw = raw;
  h.slow = slow;
  rc_server *s = h.s;
  uint64_t now = uv_now(&s->loop);
  if (slow) {
    rc_conn *c = conn();
    uv_os_fd_t fd;
    FUZZ_CHECK(uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0);
    int sz = 4096;
    FUZZ_CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)) == 0);
  }

  size_t off = 0;
  if (!raw) {
    if (extra)
      receive((const uint8_t *)handshake_deflate,
              sizeof(handshake_deflate) - 1);
    else
      receive((const uint8_t *)handshake, sizeof(handshake) - 1);
    turn(1);
    rc_conn *c = conn();
    FUZZ_CHECK(c != NULL && c->state == RC_CONN_PENDING);
    answer_pending(extra, 0);
    turn(1);
  }

  size_t nchunks = 0;
  for (size_t at = off, i = 0; at < size; i++) {
    size_t want = chunk_len(chunking, i);
    at += want < size - at ? want : size - at;
    nchunks++;
  }

  for (size_t i = 0; off < size; i++) {
    if (conn() == NULL)
      break;
    if (pauses && (i & 1))
      command(RC_CMD_RESUME, 0, NULL);
    size_t want = chunk_len(chunking, i);
    size_t n = want < size - off ? want : size - off;
    rc_conn *c = conn();
    if (c != NULL && !c->read_paused) {
      receive(data + off, n);
      off += n;
    } else if (c != NULL && c->state != RC_CONN_PENDING) {
      break; /* not reading and never will again: the rest stays unread */
    }
    if (raw && stops && i == 0)
      stop_server(); /* a request head still pending gets 503 */
    if (raw)
      answer_pending(extra, closes);
    if (sends) {
      static const char text[] = "hello";
      static const uint8_t blob[2000];
      send_message(RC_OP_TEXT, text, sizeof(text) - 1);
      if (slow)
        send_message(RC_OP_BINARY, blob, sizeof(blob));
    }
    if (closes && i == nchunks / 2)
      command(RC_CMD_CLOSE, 1000, "bye");
    if (pauses && !(i & 1))
      command(RC_CMD_PAUSE, 0, NULL);
    if (moving) {
      now += 60000;
      rc__sweep(s, now);
    } else if (sweep) {
      /* Two ticks without a read between them: the client paused for a
       * while, so an idle parser goes. */
      rc__sweep(s, uv_now(&s->loop));
      rc__sweep(s, uv_now(&s->loop));
    }
    turn(!slow);
  }
  if (pauses)
    command(RC_CMD_RESUME, 0, NULL);
  turn(!slow);

  if (stops) {
    stop_server();
    turn(1);
  }
  if (moving) {
    /* Long after the last byte: every deadline has passed. */
    for (int k = 0; k < 3; k++) {
      now += 3600000;
      rc__sweep(s, now);
      turn(1);
    }
  }
  for (int i = 0; i < 8; i++)
    turn(1);
  return teardown();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  unsigned c0 = data[0], c1 = data[1];
  uint64_t digest = run(c0, c1, data + 2, size - 2);
  /* Dropping an idle parser must change nothing anybody can see: the same
   * input without the sweeps gives the same events and the same bytes. */
  if ((c0 & 0x88u) == 0x08u)
    FUZZ_CHECK(run(c0 & ~0x08u, c1, data + 2, size - 2) == digest);
  return 0;
}
