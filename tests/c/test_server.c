/* test_server.c - the core's server side against a raw TCP peer in this
 * process, on 127.0.0.1: what the core answers by itself when the embedder
 * does not (the deadline of a request nobody answers) and the close
 * handshake with every registered close code. The embedder is this file:
 * it polls the core's events and answers, or does not. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rc_core.h"
#include "rc_test.h"

#define WAIT_MS 30000 /* hang guard only: valgrind is slow */

static rc_server *srv;
static int port;
static rc_event *pending;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The next event (waiting for it), or NULL after WAIT_MS; free() it. */
static rc_event *next_event(void) {
  uint64_t end = now_ms() + WAIT_MS;
  while (pending == NULL) {
    uint64_t now = now_ms();
    if (now >= end)
      return NULL;
    struct pollfd p = {.fd = rc_server_fd(srv), .events = POLLIN};
    (void)poll(&p, 1, (int)(end - now));
    pending = rc_server_poll(srv);
  }
  rc_event *ev = pending;
  pending = ev->next;
  ev->next = NULL;
  return ev;
}

static int start(double handshake_timeout, int http_requests) {
  rc_config cfg;
  rc_config_default(&cfg);
  cfg.handshake_timeout = handshake_timeout;
  cfg.http_requests = http_requests;
  srv = rc_server_new(&cfg);
  if (srv == NULL)
    return -1;
  return rc_server_listen(srv, "127.0.0.1", 0, 0, &port);
}

static void stop(void) {
  rc_server_stop(srv, 1001, "going away");
  rc_events_free(pending);
  pending = NULL;
  rc_events_free(rc_server_poll(srv));
  rc_server_free(srv);
  srv = NULL;
}

/* A blocking TCP connection to the server, or -1. */
static int raw_connect(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
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

/* Reads until the peer ends the stream, cap bytes or WAIT_MS; returns the
 * bytes read (NUL-terminated in buf[cap]) and sets *eof when it ended. */
static size_t read_to_eof(int fd, char *buf, size_t cap, int *eof) {
  size_t got = 0;
  uint64_t end = now_ms() + WAIT_MS;
  *eof = 0;
  while (got < cap) {
    uint64_t now = now_ms();
    if (now >= end)
      break;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)(end - now)) <= 0)
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

static const char upgrade[] = "GET /chat HTTP/1.1\r\n"
                              "Host: 127.0.0.1\r\n"
                              "Upgrade: websocket\r\n"
                              "Connection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n\r\n";

/* An upgrade request (or a plain GET) the embedder sees and never answers:
 * past handshake_timeout the core answers 503 itself and closes, and the
 * embedder gets the connection's RC_EV_CLOSE. */
static void unanswered(const char *request, int event_type) {
  RC_ASSERT_EQ_INT(start(0.3, 1), 0);
  int fd = raw_connect();
  RC_ASSERT(fd >= 0);
  uint64_t t0 = now_ms();
  RC_ASSERT_EQ_INT(send_all(fd, request, strlen(request)), 0);
  rc_event *ev = next_event();
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->type, event_type);
  uint64_t conn = ev->conn;
  free(ev);
  char buf[2048];
  int eof;
  size_t n = read_to_eof(fd, buf, sizeof buf - 1, &eof);
  uint64_t waited = now_ms() - t0;
  close(fd);
  RC_CHECK(eof);
  RC_CHECK(n > 12 && memcmp(buf, "HTTP/1.1 503", 12) == 0);
  RC_CHECK(strstr(buf, "the application did not answer in time") != NULL);
  /* Not before the deadline: 300 ms, swept every 100 ms or so. */
  RC_CHECK(waited >= 290);
  ev = next_event();
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->type, RC_EV_CLOSE);
  RC_CHECK(ev->conn == conn);
  free(ev);
  /* A late answer names a connection that has gone: ignored. */
  RC_CHECK_EQ_INT(rc_server_accept(srv, conn, NULL, NULL), 0);
  stop();
}

RC_TEST(an_upgrade_nobody_answers_gets_503_after_the_deadline) {
  unanswered(upgrade, RC_EV_OPEN);
}

RC_TEST(a_plain_request_nobody_answers_gets_503_after_the_deadline) {
  unanswered("GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
             RC_EV_REQUEST);
}

RC_TEST_MAIN(RC_CASE(an_upgrade_nobody_answers_gets_503_after_the_deadline),
             RC_CASE(a_plain_request_nobody_answers_gets_503_after_the_deadline))
