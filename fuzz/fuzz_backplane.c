/* fuzz_backplane.c - libFuzzer target for the backplane's reply and message
 * path: what a Redis server sends, through the reply reader of rc_redis.c
 * and the checks of rc_bpwire.c and rc_backplane.c, into the rooms; and
 * the encoders on a live connection (channel names, the sentinel, the
 * message header). fuzz_bpwire.c fuzzes the codec alone.
 *
 * Each input gets a fresh rc_server whose loop this thread drives (no loop
 * thread, as in fuzz_frames.c). The harness is the Redis: it listens on a
 * loopback port (one for the process), accepts the core's two
 * connections, tells them apart by their first command (the subscriber
 * SUBSCRIBEs its sentinel, the command connection PINGs), answers both as
 * Redis would, then writes the fuzz input to them in chunks. Teardown hangs up,
 * stops the backplane, runs the loop until every handle has closed and frees
 * the server.
 *
 * Input: two control bytes, then Redis's bytes.
 *   byte 0, bits 0-1  max_message_size: 1 MiB, 16, 1024, 65536
 *           bits 2-4  the prefix: "roomcast:", "", "a|b\c:", then 41, 60,
 *                     100, 150 and 200 bytes holding '|' and '\'
 *           bit 5     the room "lobby" is named and has a (memberless)
 *                     local room: its channel is subscribed
 *           bit 6     the embedder sends a command first (a reply waits)
 *           bit 7     the bytes go one by one, else in chunks of 64
 *   byte 1            the share of the bytes for the subscriber connection
 *                     (n * byte1 / 255, first); the rest to the other
 * Beyond memory safety it checks: the sentinel and the channel of "lobby"
 * are the escaped prefix and what follows, as documented; a publish is
 * one PUBLISH on that channel with the header and payload; every command
 * of the embedder gets exactly one reply event; state events carry known
 * codes. A broken property aborts. */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "loop/rc_internal.h"

#include "fuzz_core.h"

#define SPIN_LIMIT 64
#define ROOM 7

typedef struct harness {
  rc_server *s;
  int sub, cmd; /* the fake Redis's connections, -1 when none */
  char prefix[256];
  char expect_head[520]; /* the escaped prefix, then '|' */
  size_t head_len;
  unsigned commands, replies;
} harness;

static harness h;
static int listener = -1; /* the fake Redis's port, one for every input */
static uint16_t listen_port;

static void listen_loopback(void);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  signal(SIGPIPE, SIG_IGN);
  uv_loop_t warm; /* libuv's per-process descriptors, opened once here */
  FUZZ_CHECK(uv_loop_init(&warm) == 0);
  FUZZ_CHECK(uv_loop_close(&warm) == 0);
  listen_loopback();
  return 0;
}

/* --- the fake Redis's side ------------------------------------------------ */

static void nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  FUZZ_CHECK(fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0);
}

static void listen_loopback(void) {
  listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(listener >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  FUZZ_CHECK(bind(listener, (struct sockaddr *)&a, sizeof(a)) == 0);
  socklen_t alen = sizeof(a);
  FUZZ_CHECK(getsockname(listener, (struct sockaddr *)&a, &alen) == 0);
  listen_port = ntohs(a.sin_port);
  FUZZ_CHECK(listen(listener, 64) == 0);
  nonblocking(listener);
}

/* Closes with a reset: no TIME_WAIT left behind by a million inputs. */
static void hang_up(int fd) {
  if (fd < 0)
    return;
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  close(fd);
}

/* Connections the core made after the ones of the handshake (it
 * reconnects when Redis misbehaves): refused, so none waits for the next
 * input. */
static void refuse_pending(void) {
  int fd;
  while ((fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC)) >= 0)
    hang_up(fd);
}

/* Everything fd has to read now, up to cap bytes. */
static size_t slurp(int fd, char *buf, size_t cap) {
  size_t n = 0;
  while (n < cap) {
    ssize_t r = recv(fd, buf + n, cap - n, MSG_DONTWAIT);
    if (r > 0)
      n += (size_t)r;
    else if (r < 0 && errno == EINTR)
      continue;
    else
      break;
  }
  return n;
}

static void put_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return; /* the core hung up: the rest is not for it */
    c += w;
    n -= (size_t)w;
  }
}

/* The first command of a request in RESP, parsed with hiredis's reader (a
 * command is an array of bulk strings, as a reply is). */
static redisReply *parse_command(const char *buf, size_t n) {
  redisReader *r = redisReaderCreate();
  FUZZ_CHECK(r != NULL);
  void *reply = NULL;
  FUZZ_CHECK(redisReaderFeed(r, buf, n) == REDIS_OK);
  FUZZ_CHECK(redisReaderGetReply(r, &reply) == REDIS_OK && reply != NULL);
  redisReaderFree(r);
  redisReply *c = reply;
  FUZZ_CHECK(c->type == REDIS_REPLY_ARRAY && c->elements >= 1);
  for (size_t i = 0; i < c->elements; i++)
    FUZZ_CHECK(c->element[i]->type == REDIS_REPLY_STRING);
  return c;
}

/* --- driving the loop ----------------------------------------------------- */

static void on_turn_end(uv_check_t *chk) { rc__events_hand_over(chk->data); }

static void take_events(void) {
  rc_event *head = rc_server_poll(h.s);
  for (rc_event *ev = head; ev != NULL; ev = ev->next) {
    if (ev->type == RC_EV_REDIS) {
      FUZZ_CHECK(ev->conn >= 1 && ev->conn <= h.commands);
      h.replies++;
    } else {
      FUZZ_CHECK(ev->type == RC_EV_BACKPLANE && ev->code <= 2);
    }
  }
  rc_events_free(head);
}

static void turn(void) {
  (void)uv_run(&h.s->loop, UV_RUN_NOWAIT);
  take_events();
}

/* Accepts the core's two connections and answers their first commands. */
static void handshake(void) {
  char buf[4096];
  for (int i = 0; i < SPIN_LIMIT && (h.sub < 0 || h.cmd < 0); i++) {
    turn();
    int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
      continue;
    size_t n = 0;
    for (int k = 0; k < SPIN_LIMIT && n == 0; k++) {
      turn();
      n = slurp(fd, buf, sizeof(buf));
    }
    redisReply *c = parse_command(buf, n);
    if (strcasecmp(c->element[0]->str, "SUBSCRIBE") == 0) {
      /* The sentinel: the escaped prefix, a NUL, "server:", the id. */
      FUZZ_CHECK(c->elements == 2);
      const redisReply *ch = c->element[1];
      FUZZ_CHECK(ch->len == h.head_len - 1 + 1 + 7 + 16);
      FUZZ_CHECK(memcmp(ch->str, h.expect_head, h.head_len - 1) == 0);
      FUZZ_CHECK(memcmp(ch->str + h.head_len - 1, "\0server:", 8) == 0);
      char answer[600];
      int len = snprintf(answer, sizeof(answer),
                         "*3\r\n$9\r\nsubscribe\r\n$%zu\r\n", ch->len);
      FUZZ_CHECK(len > 0 && (size_t)len < sizeof(answer));
      put_all(fd, answer, (size_t)len);
      put_all(fd, ch->str, ch->len);
      put_all(fd, "\r\n:1\r\n", 6);
      h.sub = fd;
    } else {
      FUZZ_CHECK(strcasecmp(c->element[0]->str, "PING") == 0);
      put_all(fd, "+PONG\r\n", 7);
      h.cmd = fd;
    }
    freeReplyObject(c);
  }
  FUZZ_CHECK(h.sub >= 0 && h.cmd >= 0);
  for (int i = 0; i < SPIN_LIMIT && atomic_load(&h.s->st_bp_up) == 0; i++)
    turn();
  FUZZ_CHECK(atomic_load(&h.s->st_bp_up) == 1);
}

/* --- the embedder's side -------------------------------------------------- */

static void name_and_make_room(void) {
  rc_cmd *cmd = calloc(1, sizeof(*cmd));
  FUZZ_CHECK(cmd != NULL);
  cmd->type = RC_CMD_ROOM_NAME;
  cmd->room = ROOM;
  cmd->text = strdup("lobby");
  FUZZ_CHECK(cmd->text != NULL);
  cmd->text_len = 5;
  rc__bp_command(h.s, cmd);
  rc__cmd_free(cmd);
  FUZZ_CHECK(rc__room_get(h.s, ROOM, 1) != NULL);
  /* Its SUBSCRIBE names the channel: the escaped prefix, '|', "lobby". */
  char buf[4096];
  size_t n = 0;
  for (int i = 0; i < SPIN_LIMIT && n == 0; i++) {
    turn();
    n = slurp(h.sub, buf, sizeof(buf));
  }
  redisReply *c = parse_command(buf, n);
  FUZZ_CHECK(c->elements == 2);
  FUZZ_CHECK(c->element[1]->len == h.head_len + 5);
  FUZZ_CHECK(memcmp(c->element[1]->str, h.expect_head, h.head_len) == 0);
  FUZZ_CHECK(memcmp(c->element[1]->str + h.head_len, "lobby", 5) == 0);
  freeReplyObject(c);
}

/* A publish to the room (through the room API and its hook): one PUBLISH
 * on its channel, header then payload. */
static void publish_and_check(const uint8_t *payload, size_t len) {
  rc_buf *b = rc__buf_frame(RC_OP_BINARY, payload, len);
  FUZZ_CHECK(b != NULL);
  rc__room_publish(h.s, ROOM, b, 0);
  rc__buf_unref(b);
  static char buf[16384];
  size_t n = 0;
  for (int i = 0; i < SPIN_LIMIT && n == 0; i++) {
    turn();
    n = slurp(h.cmd, buf, sizeof(buf));
  }
  redisReply *c = parse_command(buf, n);
  FUZZ_CHECK(c->elements == 3 && strcmp(c->element[0]->str, "PUBLISH") == 0);
  FUZZ_CHECK(c->element[1]->len == h.head_len + 5);
  FUZZ_CHECK(memcmp(c->element[1]->str, h.expect_head, h.head_len) == 0);
  const redisReply *m = c->element[2];
  FUZZ_CHECK(m->len == 20 + len && memcmp(m->str, "\0rc\x10", 4) == 0);
  FUZZ_CHECK(len == 0 || memcmp(m->str + 20, payload, len) == 0);
  freeReplyObject(c);
  put_all(h.cmd, ":1\r\n", 4);
}

static void embedder_command(void) {
  const char *argv[2] = {"GET", "k"};
  rc_cmd *cmd = calloc(1, sizeof(*cmd));
  FUZZ_CHECK(cmd != NULL);
  cmd->type = RC_CMD_REDIS;
  cmd->conn = ++h.commands;
  int len = redisFormatCommandArgv(&cmd->text, 2, argv, NULL);
  FUZZ_CHECK(len > 0);
  cmd->text_len = (size_t)len;
  rc__bp_command(h.s, cmd);
  rc__cmd_free(cmd);
}

/* --- one input ------------------------------------------------------------ */

static void choose_prefix(unsigned k) {
  static const size_t sizes[5] = {41, 60, 100, 150, 200};
  if (k == 0)
    strcpy(h.prefix, "roomcast:");
  else if (k == 1)
    h.prefix[0] = '\0';
  else if (k == 2)
    strcpy(h.prefix, "a|b\\c:");
  else {
    size_t n = sizes[k - 3];
    for (size_t i = 0; i < n; i++)
      h.prefix[i] = "x|y\\z:"[i % 6];
    h.prefix[n] = '\0';
  }
  /* The escaping, the slow and obvious way, as a second opinion. */
  size_t j = 0;
  for (const char *p = h.prefix; *p; p++) {
    if (*p == '|' || *p == '\\')
      h.expect_head[j++] = '\\';
    h.expect_head[j++] = *p;
  }
  h.expect_head[j++] = '|';
  h.head_len = j;
}

static void feed(int fd, const uint8_t *data, size_t n, int bytewise) {
  size_t step = bytewise ? 1 : 64;
  for (size_t off = 0; off < n && fd >= 0; off += step) {
    put_all(fd, data + off, n - off < step ? n - off : step);
    turn();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t max_msg[4] = {1u << 20, 16, 1024, 65536};
  if (size < 2)
    return 0;
  unsigned c0 = data[0], c1 = data[1];
  data += 2;
  size -= 2;
  memset(&h, 0, sizeof(h));
  h.sub = h.cmd = -1;
  choose_prefix((c0 >> 2) & 7u);

  rc_config cfg;
  rc_config_default(&cfg);
  cfg.max_message_size = max_msg[c0 & 3u];
  cfg.backplane_host = "127.0.0.1";
  cfg.backplane_port = listen_port;
  cfg.backplane_prefix = h.prefix;
  rc_server *s = h.s = fuzz_server_new(&cfg, on_turn_end);
  rc__bp_start(s);
  handshake();

  if ((c0 >> 5) & 1) {
    name_and_make_room();
    publish_and_check(data, size < 64 ? size : 64);
  }
  if ((c0 >> 6) & 1)
    embedder_command();
  size_t to_sub = size * c1 / 255;
  feed(h.sub, data, to_sub, (c0 >> 7) & 1);
  feed(h.cmd, data + to_sub, size - to_sub, (c0 >> 7) & 1);
  for (int i = 0; i < 4; i++)
    turn();

  /* Redis goes away, then the backplane stops. */
  hang_up(h.sub);
  hang_up(h.cmd);
  for (int i = 0; i < 8; i++)
    turn();
  rc__bp_close(s);
  uv_close((uv_handle_t *)&s->flush, NULL);
  (void)uv_run(&s->loop, UV_RUN_DEFAULT);
  FUZZ_CHECK(uv_loop_close(&s->loop) == 0);
  refuse_pending();
  rc__events_hand_over(s);
  take_events();
  FUZZ_CHECK(h.replies == h.commands); /* each answered once, or failed */
  if (getenv("ROOMCAST_FUZZ_TRACE") != NULL)
    fprintf(stderr, "received %llu invalid %llu reconnects %llu\n",
            (unsigned long long)atomic_load(&s->st_bp_received),
            (unsigned long long)atomic_load(&s->st_bp_invalid),
            (unsigned long long)atomic_load(&s->st_bp_reconnects));
  rc_server_free(s);
  return 0;
}
