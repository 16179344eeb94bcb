/* test_adopt.c - rc_server_adopt: a socket accepted by this file (as
 * uvicorn would, from a listener of its own) and the bytes it read from it
 * handed to a core started without a listener, which serves the connection
 * as one it accepted: the handshake, messages both ways, the close, the
 * answers it gives by itself, the errors and the fds it must close. The
 * peer is a raw TCP client in this process on 127.0.0.1. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "rc_core.h"
#include "support/rc_events.h"
#include "support/rc_net.h"
#include "support/rc_test.h"

#define WAIT_MS 30000 /* hang guard only: valgrind is slow */

static rc_server *srv;
static rc_event *pending;
static int lfd = -1; /* the listener "uvicorn" accepts from */
static int lport;

static rc_event *next_event(void) {
  return rc_test_next_event(srv, &pending, WAIT_MS);
}

static int start_with(const rc_config *cfg) {
  srv = rc_server_new(cfg);
  if (srv == NULL || rc_server_start(srv) != 0)
    return -1;
  lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
      listen(lfd, 64) != 0 || getsockname(lfd, (struct sockaddr *)&a, &al))
    return -1;
  lport = ntohs(a.sin_port);
  return 0;
}

static int start(void) {
  rc_config cfg;
  rc_config_default(&cfg);
  return start_with(&cfg);
}

static void stop(void) {
  rc_server_stop(srv, 1001, "going away");
  rc_events_free(pending);
  pending = NULL;
  rc_events_free(rc_server_poll(srv));
  rc_server_free(srv);
  srv = NULL;
  close(lfd);
  lfd = -1;
}

/* A client connected to the listener and the server side of it, accepted
 * here: 0, or -1. */
static int pair(int *client, int *server) {
  *client = rc_test_connect(lport);
  if (*client < 0)
    return -1;
  *server = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (*server < 0) {
    close(*client);
    return -1;
  }
  return 0;
}

static int send_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Reads exactly len bytes (within WAIT_MS); 0 or -1. */
static int read_exact(int fd, void *buf, size_t len) {
  char *p = buf;
  uint64_t end = rc_test_now_ms() + WAIT_MS;
  while (len > 0) {
    uint64_t now = rc_test_now_ms();
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (now >= end || poll(&pf, 1, (int)(end - now)) <= 0)
      return -1;
    ssize_t n = recv(fd, p, len, 0);
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Reads until the peer ends the stream (or cap bytes, or WAIT_MS); the
 * bytes read, NUL-terminated in buf[cap]; *eof says whether it ended. */
static size_t read_to_eof(int fd, char *buf, size_t cap, int *eof) {
  size_t got = 0;
  uint64_t end = rc_test_now_ms() + WAIT_MS;
  *eof = 0;
  while (got < cap) {
    uint64_t now = rc_test_now_ms();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (now >= end || poll(&p, 1, (int)(end - now)) <= 0)
      break;
    ssize_t n = recv(fd, buf + got, cap - got, 0);
    if (n <= 0) {
      *eof = 1;
      break;
    }
    got += (size_t)n;
  }
  buf[got] = '\0';
  return got;
}

/* Reads a response head byte by byte (nothing past it); its length, or 0. */
static size_t read_head(int fd, char *buf, size_t cap) {
  size_t n = 0;
  while (n < 4 || memcmp(buf + n - 4, "\r\n\r\n", 4) != 0) {
    if (n + 1 >= cap || read_exact(fd, buf + n, 1) != 0)
      return 0;
    n++;
  }
  buf[n] = '\0';
  return n;
}

/* A masked client frame with FIN set and a payload under 126 bytes. */
static size_t client_frame(uint8_t *out, unsigned opcode, const void *data,
                           size_t len) {
  static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  const uint8_t *d = data;
  out[0] = (uint8_t)(0x80u | opcode);
  out[1] = (uint8_t)(0x80u | len);
  memcpy(out + 2, key, 4);
  for (size_t i = 0; i < len; i++)
    out[6 + i] = d[i] ^ key[i & 3];
  return 6 + len;
}

/* The i-th string of an RC_EV_OPEN (see rc_core.h); NULL past the end. */
static const char *ev_str(const rc_event *ev, uint32_t i, uint32_t *len) {
  const char *p = ev->data, *end = ev->data + ev->len;
  for (uint32_t k = 0; k < ev->nstr; k++) {
    uint32_t n;
    if (end - p < 4)
      return NULL;
    memcpy(&n, p, 4);
    if ((size_t)(end - p - 4) < n)
      return NULL;
    if (k == i) {
      *len = n;
      return p + 4;
    }
    p += 4 + n;
  }
  return NULL;
}

static int ev_str_is(const rc_event *ev, uint32_t i, const char *want) {
  uint32_t n = 0;
  const char *s = ev_str(ev, i, &n);
  return s != NULL && n == strlen(want) && memcmp(s, want, n) == 0;
}

/* The value of header name (lower case) in an RC_EV_OPEN. */
static int ev_header_is(const rc_event *ev, const char *name,
                        const char *want) {
  for (uint32_t i = 4; i + 1 < ev->nstr; i += 2)
    if (ev_str_is(ev, i, name))
      return ev_str_is(ev, i + 1, want);
  return 0;
}

static int ev_reason_is(const rc_event *ev, const char *want) {
  return ev->len == strlen(want) && memcmp(ev->data, want, ev->len) == 0;
}

/* The client's local port: what the core must report as the peer's. */
static int local_port(int fd) {
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  if (getsockname(fd, (struct sockaddr *)&a, &al) != 0)
    return -1;
  return ntohs(a.sin_port);
}

static int fd_is_closed(int fd) {
  return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

/* uvicorn's re-serialised head: request line, then name: value lines. */
static const char upgrade[] = "GET /chat?room=1 HTTP/1.1\r\n"
                              "host: 127.0.0.1\r\n"
                              "upgrade: websocket\r\n"
                              "connection: Upgrade\r\n"
                              "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "sec-websocket-version: 13\r\n"
                              "x-test: yes\r\n\r\n";
#define RFC_ACCEPT "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"

/* After RC_EV_OPEN of conn: accept it and read the 101 at the client. */
static int accept_ws(int cfd, uint64_t conn) {
  if (rc_server_accept(srv, conn, NULL, NULL) != 0)
    return -1;
  char head[512];
  if (read_head(cfd, head, sizeof head) == 0 ||
      strncmp(head, "HTTP/1.1 101", 12) != 0 || strstr(head, RFC_ACCEPT) == 0)
    return -1;
  return 0;
}

static void talk_and_close_(int cfd, uint64_t conn);

/* A text message each way and the client's close, on an open connection;
 * closes cfd. */
static void talk_and_close(int cfd, uint64_t conn) {
  talk_and_close_(cfd, conn);
  close(cfd);
}

static void talk_and_close_(int cfd, uint64_t conn) {
  uint8_t frame[64];
  size_t n = client_frame(frame, 0x1, "hello", 5);
  RC_ASSERT_EQ_INT(send_all(cfd, frame, n), 0);
  rc_event *ev = next_event();
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->type, RC_EV_MESSAGE);
  RC_CHECK(ev->conn == conn && ev->is_text);
  RC_CHECK(ev->len == 5 && memcmp(ev->data, "hello", 5) == 0);
  free(ev);
  RC_ASSERT_EQ_INT(rc_server_send(srv, conn, "world", 5, 1), 0);
  uint8_t got[7];
  RC_ASSERT_EQ_INT(read_exact(cfd, got, 7), 0);
  RC_ASSERT_EQ_MEM(got, "\x81\x05world", 7);
  uint8_t code[2] = {0x03, 0xe8}; /* 1000 */
  n = client_frame(frame, 0x8, code, 2);
  RC_ASSERT_EQ_INT(send_all(cfd, frame, n), 0);
  uint8_t reply[4];
  RC_ASSERT_EQ_INT(read_exact(cfd, reply, 4), 0);
  RC_ASSERT_EQ_MEM(reply, "\x88\x02\x03\xe8", 4);
  /* The core waits for the end of the stream (or close_timeout) before it
   * lets the connection go: the client's close ends it. */
  RC_ASSERT_EQ_INT(shutdown(cfd, SHUT_WR), 0);
  ev = next_event();
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->type, RC_EV_CLOSE);
  RC_CHECK(ev->conn == conn);
  RC_CHECK_EQ_INT(ev->code, 1000);
  free(ev);
}

/* The whole head, read by "uvicorn" before the core sees the socket; a
 * room joined with the id before the loop has run the adoption. */
RC_TEST(an_adopted_connection_is_served_like_an_accepted_one) {
  RC_ASSERT_EQ_INT(start(), 0);
  int cfd, sfd;
  RC_ASSERT_EQ_INT(pair(&cfd, &sfd), 0);
  RC_ASSERT_EQ_INT(send_all(cfd, upgrade, sizeof upgrade - 1), 0);
  char head[sizeof upgrade];
  RC_ASSERT_EQ_INT(read_exact(sfd, head, sizeof upgrade - 1), 0);
  uint64_t conn = 0;
  RC_ASSERT_EQ_INT(rc_server_adopt(srv, sfd, head, sizeof upgrade - 1, &conn),
                   0);
  RC_ASSERT(conn != 0);
  uint64_t room = rc_server_room_new(srv);
  RC_ASSERT_EQ_INT(rc_server_join(srv, conn, room, RC_RELAY_NONE), 0);
  rc_event *ev = next_event();
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->type, RC_EV_OPEN);
  RC_CHECK(ev->conn == conn);
  RC_CHECK(ev_str_is(ev, 0, "GET"));
  RC_CHECK(ev_str_is(ev, 1, "/chat"));
  RC_CHECK(ev_str_is(ev, 2, "room=1"));
  RC_CHECK(ev_str_is(ev, 3, "127.0.0.1"));
  RC_CHECK_EQ_INT(ev->port, local_port(cfd));
  RC_CHECK_EQ_INT(ev->nstr, 4 + 2 * 6);
  RC_CHECK(ev_header_is(ev, "x-test", "yes"));
  RC_CHECK(ev_header_is(ev, "sec-websocket-version", "13"));
  free(ev);
  RC_ASSERT_EQ_INT(accept_ws(cfd, conn), 0);
  RC_ASSERT_EQ_INT(rc_server_publish(srv, room, "to all", 6, 1, 0), 0);
  uint8_t got[8];
  RC_ASSERT_EQ_INT(read_exact(cfd, got, 8), 0);
  RC_CHECK(memcmp(got, "\x81\x06to all", 8) == 0);
  talk_and_close(cfd, conn);
  rc_stats st;
  rc_server_stats(srv, &st);
  RC_CHECK_EQ_INT(st.adopted_total, 1);
  RC_CHECK_EQ_INT(st.accepted_total, 1);
  stop();
}

/* A frame the client sent right behind its head, read in the same buffer:
 * it is the first message once the connection is accepted. */
RC_TEST(a_frame_read_with_the_head_is_not_lost) {
  RC_ASSERT_EQ_INT(start(), 0);
  int cfd, sfd;
  RC_ASSERT_EQ_INT(pair(&cfd, &sfd), 0);
  uint8_t buf[sizeof upgrade + 32];
  memcpy(buf, upgrade, sizeof upgrade - 1);
  size_t n = sizeof upgrade - 1 +
             client_frame(buf + sizeof upgrade - 1, 1, "early", 5);
  RC_ASSERT_EQ_INT(send_all(cfd, buf, n), 0);
  uint8_t read[sizeof buf];
  RC_ASSERT_EQ_INT(read_exact(sfd, read, n), 0);
  uint64_t conn = 0;
  RC_ASSERT_EQ_INT(rc_server_adopt(srv, sfd, read, n, &conn), 0);
  rc_event *ev = next_event();
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->type, RC_EV_OPEN);
  RC_CHECK(ev->conn == conn);
  free(ev);
  RC_ASSERT_EQ_INT(accept_ws(cfd, conn), 0);
  ev = next_event();
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->type, RC_EV_MESSAGE);
  RC_CHECK(ev->conn == conn);
  RC_CHECK(ev->len == 5 && memcmp(ev->data, "early", 5) == 0);
  free(ev);
  talk_and_close(cfd, conn);
  stop();
}

/* Only part of the head had been read: the rest comes from the socket,
 * after the part, in order. */
RC_TEST(a_head_read_in_part_is_completed_from_the_socket) {
  RC_ASSERT_EQ_INT(start(), 0);
  int cfd, sfd;
  RC_ASSERT_EQ_INT(pair(&cfd, &sfd), 0);
  size_t part = 40; /* inside the host header */
  RC_ASSERT_EQ_INT(send_all(cfd, upgrade, part), 0);
  char head[64];
  RC_ASSERT_EQ_INT(read_exact(sfd, head, part), 0);
  uint64_t conn = 0;
  RC_ASSERT_EQ_INT(rc_server_adopt(srv, sfd, head, part, &conn), 0);
  RC_ASSERT_EQ_INT(send_all(cfd, upgrade + part, sizeof upgrade - 1 - part), 0);
  rc_event *ev = next_event();
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->type, RC_EV_OPEN);
  RC_CHECK(ev->conn == conn);
  RC_CHECK(ev_str_is(ev, 1, "/chat"));
  RC_CHECK(ev_header_is(ev, "x-test", "yes"));
  free(ev);
  RC_ASSERT_EQ_INT(accept_ws(cfd, conn), 0);
  talk_and_close(cfd, conn);
  stop();
}

/* A head the core answers itself: the client gets the status, the
 * embedder (which knows the id) an RC_EV_CLOSE 1006 that says why. */
static void refused(const char *request, const char *status, const char *why) {
  int cfd, sfd;
  RC_ASSERT_EQ_INT(pair(&cfd, &sfd), 0);
  uint64_t conn = 0;
  RC_ASSERT_EQ_INT(rc_server_adopt(srv, sfd, request, strlen(request), &conn),
                   0);
  char buf[1024];
  int eof;
  size_t n = read_to_eof(cfd, buf, sizeof buf - 1, &eof);
  close(cfd);
  RC_CHECK(eof);
  RC_CHECK(n > 12 && memcmp(buf, status, 12) == 0);
  rc_event *ev = next_event();
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->type, RC_EV_CLOSE);
  RC_CHECK(ev->conn == conn);
  RC_CHECK_EQ_INT(ev->code, 1006);
  if (!ev_reason_is(ev, why))
    fprintf(stderr, "  reason: %.*s\n", (int)ev->len, ev->data);
  RC_CHECK(ev_reason_is(ev, why));
  free(ev);
}

RC_TEST(a_head_the_core_refuses_ends_in_a_close_event) {
  RC_ASSERT_EQ_INT(start(), 0);
  refused("GET /chat HTTP/1.1\r\nhost: x\r\nbroken header\r\n\r\n",
          "HTTP/1.1 400", "HTTP 400: malformed HTTP request");
  refused("GET /chat HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n"
          "connection: upgrade\r\n"
          "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          "sec-websocket-version: 8\r\n\r\n",
          "HTTP/1.1 426", "HTTP 426: unsupported Sec-WebSocket-Version");
  refused("GET /plain HTTP/1.1\r\nhost: x\r\n\r\n", "HTTP/1.1 426",
          "HTTP 426: this is a WebSocket server: upgrade required");
  rc_stats st;
  rc_server_stats(srv, &st);
  RC_CHECK_EQ_INT(st.connections, 0);
  stop();
}

/* The embedder refuses after RC_EV_OPEN (403) or answers with a response:
 * one RC_EV_CLOSE, as for an accepted connection. */
RC_TEST(an_open_the_embedder_refuses_ends_in_one_close_event) {
  RC_ASSERT_EQ_INT(start(), 0);
  for (int k = 0; k < 2; k++) {
    int cfd, sfd;
    RC_ASSERT_EQ_INT(pair(&cfd, &sfd), 0);
    uint64_t conn = 0;
    RC_ASSERT_EQ_INT(
        rc_server_adopt(srv, sfd, upgrade, sizeof upgrade - 1, &conn), 0);
    rc_event *ev = next_event();
    RC_ASSERT(ev != NULL);
    RC_CHECK_EQ_INT(ev->type, RC_EV_OPEN);
    free(ev);
    if (k == 0)
      RC_ASSERT_EQ_INT(rc_server_close(srv, conn, 1000, NULL, 0), 0);
    else
      RC_ASSERT_EQ_INT(rc_server_respond(srv, conn, 404, NULL, "no", 2, 0), 0);
    char buf[1024];
    int eof;
    size_t n = read_to_eof(cfd, buf, sizeof buf - 1, &eof);
    close(cfd);
    RC_CHECK(eof);
    RC_CHECK(n > 12 &&
             memcmp(buf, k == 0 ? "HTTP/1.1 403" : "HTTP/1.1 404", 12) == 0);
    ev = next_event();
    RC_ASSERT(ev != NULL);
    RC_CHECK_EQ_INT(ev->type, RC_EV_CLOSE);
    RC_CHECK(ev->conn == conn);
    RC_CHECK_EQ_INT(ev->code, 1006);
    free(ev);
  }
  /* Nothing more: a second close event would be here by now, since the
   * connection's fd is closed before its event is handed over. */
  rc_test_take_events(srv, &pending, rc_test_now_ms() + 200);
  RC_CHECK(pending == NULL);
  stop();
}

/* At max_connections an adopted connection gets 503 like an accepted one. */
RC_TEST(an_adoption_past_max_connections_gets_503) {
  rc_config cfg;
  rc_config_default(&cfg);
  cfg.max_connections = 1;
  RC_ASSERT_EQ_INT(start_with(&cfg), 0);
  int cfd, sfd;
  RC_ASSERT_EQ_INT(pair(&cfd, &sfd), 0);
  uint64_t conn = 0;
  RC_ASSERT_EQ_INT(
      rc_server_adopt(srv, sfd, upgrade, sizeof upgrade - 1, &conn), 0);
  rc_event *ev = next_event();
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->type, RC_EV_OPEN);
  free(ev);
  refused(upgrade, "HTTP/1.1 503", "HTTP 503: too many connections");
  rc_stats st;
  rc_server_stats(srv, &st);
  RC_CHECK_EQ_INT(st.connections_refused, 1);
  RC_CHECK_EQ_INT(st.adopted_total, 2);
  RC_ASSERT_EQ_INT(accept_ws(cfd, conn), 0);
  talk_and_close(cfd, conn);
  stop();
}

/* Descriptors the core cannot serve: an error at once (and closed), or an
 * RC_EV_CLOSE; never a crash. */
RC_TEST(fds_that_are_not_connections_are_refused) {
  uint64_t conn = 1;
  rc_server *idle = rc_server_new(NULL);
  RC_ASSERT(idle != NULL);
  int p[2];
  RC_ASSERT_EQ_INT(pipe2(p, O_CLOEXEC), 0);
  /* Not started: refused, and the fd is the core's, so closed. */
  RC_CHECK_EQ_INT(rc_server_adopt(idle, p[0], NULL, 0, &conn), UV_EINVAL);
  RC_CHECK(conn == 0);
  RC_CHECK(fd_is_closed(p[0]));
  rc_server_free(idle);

  RC_ASSERT_EQ_INT(start(), 0);
  RC_CHECK_EQ_INT(rc_server_adopt(srv, -1, NULL, 0, &conn), UV_EINVAL);
  /* A pipe: not a socket. */
  RC_CHECK_EQ_INT(rc_server_adopt(srv, p[1], "x", 1, &conn), UV_ENOTSOCK);
  RC_CHECK(fd_is_closed(p[1]));
  /* A datagram socket. */
  int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  RC_ASSERT(u >= 0);
  RC_CHECK_EQ_INT(rc_server_adopt(srv, u, NULL, 0, &conn), UV_EINVAL);
  RC_CHECK(fd_is_closed(u));
  /* A descriptor that is not open. */
  int unused = 1000;
  while (!fd_is_closed(unused))
    unused++;
  RC_CHECK_EQ_INT(rc_server_adopt(srv, unused, NULL, 0, &conn), UV_EBADF);
  /* A head over the bound. */
  int cfd, sfd;
  RC_ASSERT_EQ_INT(pair(&cfd, &sfd), 0);
  RC_CHECK_EQ_INT(
      rc_server_adopt(srv, sfd, upgrade, RC_ADOPT_MAX_HEAD + 1, &conn),
      UV_EINVAL);
  RC_CHECK(fd_is_closed(sfd));
  char buf[64];
  int eof;
  (void)read_to_eof(cfd, buf, sizeof buf - 1, &eof);
  RC_CHECK(eof);
  close(cfd);
  /* A stream socket that was never connected: opened, then lost. */
  int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  RC_ASSERT(t >= 0);
  RC_ASSERT_EQ_INT(rc_server_adopt(srv, t, NULL, 0, &conn), 0);
  rc_event *ev = next_event();
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->type, RC_EV_CLOSE);
  RC_CHECK(ev->conn == conn);
  RC_CHECK_EQ_INT(ev->code, 1006);
  RC_CHECK(ev_reason_is(ev, "connection lost before the request head"));
  free(ev);
  rc_stats st;
  rc_server_stats(srv, &st);
  RC_CHECK_EQ_INT(st.connections, 0);
  stop();
}

RC_TEST(an_adoption_after_the_stop_is_cancelled_and_closes_the_fd) {
  RC_ASSERT_EQ_INT(start(), 0);
  int cfd, sfd;
  RC_ASSERT_EQ_INT(pair(&cfd, &sfd), 0);
  rc_server_stop(srv, 1001, "going away");
  /* The loop thread has ended: nothing else in this process opens a
   * descriptor, so sfd's number cannot be reused before the check. */
  uint64_t conn = 1;
  RC_CHECK_EQ_INT(rc_server_adopt(srv, sfd, upgrade, sizeof upgrade - 1, &conn),
                  UV_ECANCELED);
  RC_CHECK(conn == 0);
  RC_CHECK(fd_is_closed(sfd));
  char buf[64];
  int eof;
  (void)read_to_eof(cfd, buf, sizeof buf - 1, &eof);
  RC_CHECK(eof);
  close(cfd);
  stop();
}

/* The stop has begun (an open connection waits for its close reply): an
 * adoption then is answered 503 and ends in its close event. */
static void *stopper(void *arg) {
  (void)arg;
  rc_server_stop(srv, 1001, "going away");
  return NULL;
}

RC_TEST(an_adoption_while_stopping_gets_503_and_a_close_event) {
  rc_config cfg;
  rc_config_default(&cfg);
  cfg.close_timeout = 20.0;
  RC_ASSERT_EQ_INT(start_with(&cfg), 0);
  int cfd, sfd;
  RC_ASSERT_EQ_INT(pair(&cfd, &sfd), 0);
  uint64_t conn = 0;
  RC_ASSERT_EQ_INT(
      rc_server_adopt(srv, sfd, upgrade, sizeof upgrade - 1, &conn), 0);
  rc_event *ev = next_event();
  RC_ASSERT(ev != NULL && ev->type == RC_EV_OPEN);
  free(ev);
  RC_ASSERT_EQ_INT(accept_ws(cfd, conn), 0);
  pthread_t th;
  RC_ASSERT_EQ_INT(pthread_create(&th, NULL, stopper, NULL), 0);
  uint8_t got[4];
  int ok = read_exact(cfd, got, 4) == 0 &&
           memcmp(got, "\x88\x0c\x03\xe9", 4) == 0; /* 1001 "going away" */
  RC_CHECK(ok);
  if (ok) {
    char reason[10];
    RC_CHECK_EQ_INT(read_exact(cfd, reason, 10), 0);
    refused(upgrade, "HTTP/1.1 503", "HTTP 503: server shutting down");
  }
  uint8_t frame[16];
  size_t n = client_frame(frame, 0x8, "\x03\xe9", 2);
  RC_CHECK_EQ_INT(send_all(cfd, frame, n), 0);
  RC_CHECK_EQ_INT(shutdown(cfd, SHUT_WR), 0); /* the stop ends here */
  RC_CHECK_EQ_INT(pthread_join(th, NULL), 0);
  close(cfd);
  stop();
}

/* One adoption ended one of four ways (kind): the embedder refuses it
 * (403), the client goes after the 101, a message each way and a close,
 * or the core refuses a malformed head (400). */
static void adopt_and_end(int kind) {
  int cfd, sfd;
  RC_ASSERT_EQ_INT(pair(&cfd, &sfd), 0);
  uint64_t conn = 0;
  const char *head = kind == 3 ? "NOT HTTP\r\n\r\n" : upgrade;
  RC_ASSERT_EQ_INT(rc_server_adopt(srv, sfd, head, strlen(head), &conn), 0);
  rc_event *ev;
  if (kind != 3) {
    ev = next_event();
    RC_ASSERT(ev != NULL);
    RC_CHECK_EQ_INT(ev->type, RC_EV_OPEN);
    free(ev);
  }
  if (kind == 0)
    RC_ASSERT_EQ_INT(rc_server_close(srv, conn, 1000, NULL, 0), 0);
  if (kind == 1 || kind == 2)
    RC_ASSERT_EQ_INT(accept_ws(cfd, conn), 0);
  if (kind == 2) {
    talk_and_close(cfd, conn);
    return;
  }
  if (kind != 1) { /* read the answer to its end */
    char buf[512];
    int eof;
    (void)read_to_eof(cfd, buf, sizeof buf - 1, &eof);
    RC_CHECK(eof);
  }
  close(cfd);
  ev = next_event();
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->type, RC_EV_CLOSE);
  RC_CHECK(ev->conn == conn);
  RC_CHECK_EQ_INT(ev->code, 1006);
  free(ev);
}

/* Descriptors this process has open now. */
static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    return -1;
  int n = 0;
  while (readdir(d) != NULL)
    n++;
  closedir(d);
  return n;
}

RC_TEST(many_adoptions_leak_no_descriptor) {
  RC_ASSERT_EQ_INT(start(), 0);
  /* libuv keeps a descriptor in reserve (for EMFILE) from a loop's first
   * stream on: opened by a first adoption, before counting. */
  adopt_and_end(2);
  int before = count_fds();
  RC_ASSERT(before > 0);
  for (int i = 0; i < 200 && !rc_test_failed_; i++)
    adopt_and_end(i % 4);
  rc_stats st;
  rc_server_stats(srv, &st);
  RC_CHECK_EQ_INT(st.connections, 0);
  RC_CHECK_EQ_INT(st.adopted_total, 201);
  RC_CHECK_EQ_INT(count_fds(), before);
  stop();
}

RC_TEST_MAIN(RC_CASE(an_adopted_connection_is_served_like_an_accepted_one),
             RC_CASE(a_frame_read_with_the_head_is_not_lost),
             RC_CASE(a_head_read_in_part_is_completed_from_the_socket),
             RC_CASE(a_head_the_core_refuses_ends_in_a_close_event),
             RC_CASE(an_open_the_embedder_refuses_ends_in_one_close_event),
             RC_CASE(an_adoption_past_max_connections_gets_503),
             RC_CASE(fds_that_are_not_connections_are_refused),
             RC_CASE(an_adoption_after_the_stop_is_cancelled_and_closes_the_fd),
             RC_CASE(an_adoption_while_stopping_gets_503_and_a_close_event),
             RC_CASE(many_adoptions_leak_no_descriptor))
