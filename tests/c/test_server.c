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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "rc_core.h"
#include "support/rc_events.h"
#include "support/rc_net.h"
#include "support/rc_test.h"

#define WAIT_MS 30000 /* hang guard only: valgrind is slow */

static rc_server *srv;
static int port;
static rc_event *pending;

/* The next server event (waiting for it), or NULL after WAIT_MS; free() it. */
static rc_event *next_event(void) {
  return rc_test_next_event(srv, &pending, WAIT_MS);
}

static uint64_t now_ms(void) { return rc_test_now_ms(); }

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

static int send_all(int fd, const void *data, size_t len) {
  return rc_test_send_all(fd, data, len);
}

static int read_exact(int fd, void *buf, size_t len) {
  return rc_test_read_exact(fd, buf, len, WAIT_MS);
}

static size_t read_to_eof(int fd, char *buf, size_t cap, int *eof) {
  return rc_test_read_to_eof(fd, buf, cap, eof, WAIT_MS);
}

#define client_frame rc_test_client_frame

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
  int fd = rc_test_connect(port);
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
  rc_stats st;
  rc_server_stats(srv, &st);
  RC_CHECK(st.refused_timeout == 1);
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

/* Opens a WebSocket (accepted by this embedder); returns the fd, the
 * server's id of it in *conn. */
static int open_ws(uint64_t *conn) {
  int fd = rc_test_connect(port);
  if (fd < 0 || send_all(fd, upgrade, sizeof upgrade - 1) != 0)
    return -1;
  rc_event *ev = next_event();
  if (ev == NULL || ev->type != RC_EV_OPEN) {
    free(ev);
    close(fd);
    return -1;
  }
  *conn = ev->conn;
  free(ev);
  if (rc_server_accept(srv, *conn, NULL, NULL) != 0) {
    close(fd);
    return -1;
  }
  char head[512];
  size_t n = 0;
  while (n < 4 || memcmp(head + n - 4, "\r\n\r\n", 4) != 0) {
    if (n == sizeof head || read_exact(fd, head + n, 1) != 0) {
      close(fd);
      return -1;
    }
    n++;
  }
  return fd;
}

/* The peer closes with code: the server's close frame and its RC_EV_CLOSE
 * carry the same code (want), or 1002 for a code no one may send. */
static void close_with(unsigned code, unsigned want) {
  uint64_t conn;
  int fd = open_ws(&conn);
  RC_ASSERT(fd >= 0);
  uint8_t payload[8] = {(uint8_t)(code >> 8), (uint8_t)code, 'b', 'y', 'e'};
  uint8_t frame[32];
  size_t flen = client_frame(frame, 0x8, payload, 5);
  RC_ASSERT_EQ_INT(send_all(fd, frame, flen), 0);
  uint8_t reply[2];
  RC_ASSERT_EQ_INT(read_exact(fd, reply, 2), 0);
  RC_CHECK_EQ_INT(reply[0], 0x88);
  uint8_t body[125];
  size_t blen = reply[1] & 0x7Fu;
  RC_ASSERT(blen >= 2 && blen <= 125);
  RC_ASSERT_EQ_INT(read_exact(fd, body, blen), 0);
  RC_CHECK_EQ_INT((body[0] << 8) | body[1], want);
  close(fd);
  rc_event *ev = next_event();
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->type, RC_EV_CLOSE);
  RC_CHECK(ev->conn == conn);
  RC_CHECK_EQ_INT(ev->code, want);
  if (want == code)
    RC_CHECK(ev->len == 3 && memcmp(ev->data, "bye", 3) == 0);
  free(ev);
}

RC_TEST(registered_close_codes_are_echoed_and_reported) {
  RC_ASSERT_EQ_INT(start(10.0, 0), 0);
  static const unsigned valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                   1010, 1011, 1012, 1013, 1014, 3000, 4999};
  for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++)
    close_with(valid[i], valid[i]);
  stop();
}

RC_TEST(close_codes_no_one_may_send_are_protocol_errors) {
  RC_ASSERT_EQ_INT(start(10.0, 0), 0);
  static const unsigned invalid[] = {0,    999,  1004, 1005, 1006,
                                     1015, 1016, 2999, 5000, 65535};
  for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++)
    close_with(invalid[i], 1002);
  stop();
}

/* Sends request on a new connection and reads the core's answer to EOF;
 * adds the answer's length to *sent (its status line checked against
 * want). */
static void refused_with(const char *request, const char *want, size_t *sent) {
  int fd = rc_test_connect(port);
  RC_ASSERT(fd >= 0);
  RC_ASSERT_EQ_INT(send_all(fd, request, strlen(request)), 0);
  char buf[4096];
  int eof;
  size_t n = read_to_eof(fd, buf, sizeof buf - 1, &eof);
  close(fd);
  buf[n] = '\0';
  RC_CHECK(eof);
  RC_CHECK(strncmp(buf, want, strlen(want)) == 0);
  *sent += n;
}

/* Every handshake the core refuses is counted under its reason, once, and
 * bytes_out is what the peers read, byte for byte. */
RC_TEST(refusals_are_counted_by_reason_and_bytes_out_by_what_was_sent) {
  RC_ASSERT_EQ_INT(start(10, 0), 0);
  size_t sent = 0;
  refused_with("NOT HTTP AT ALL\r\n\r\n", "HTTP/1.1 400", &sent);
  refused_with("POST /chat HTTP/1.1\r\nHost: x\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n",
               "HTTP/1.1 405", &sent);
  refused_with("GET /chat HTTP/1.1\r\nHost: x\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 8\r\n\r\n",
               "HTTP/1.1 426", &sent);
  refused_with("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 426", &sent);
  size_t big_len = 16384;
  char *big = malloc(big_len + 1);
  RC_ASSERT(big != NULL);
  int head = snprintf(big, big_len, "GET /chat HTTP/1.1\r\nX-Big: ");
  memset(big + head, 'a', big_len - (size_t)head);
  big[big_len] = '\0';
  refused_with(big, "HTTP/1.1 431", &sent);
  free(big);
  rc_stats st;
  rc_server_stats(srv, &st);
  RC_CHECK(st.refused_bad_request == 1);
  RC_CHECK(st.refused_method == 1);
  RC_CHECK(st.refused_version == 1);
  RC_CHECK(st.refused_not_websocket == 1);
  RC_CHECK(st.refused_too_large == 1);
  RC_CHECK(st.refused_shutting_down == 0 && st.refused_timeout == 0);
  RC_CHECK(st.bytes_out == sent);
  RC_CHECK(st.rooms_open == 0);
  stop();
}

/* RC_LISTEN_REUSEPORT: a second server listens on the same port (as the
 * workers of `roomcast --workers` do); without it the bind is refused. */
RC_TEST(reuse_port_lets_two_servers_listen_on_one_port) {
  rc_config cfg;
  rc_config_default(&cfg);
  rc_server *a = rc_server_new(&cfg), *b = rc_server_new(&cfg),
            *c = rc_server_new(&cfg);
  RC_ASSERT(a != NULL && b != NULL && c != NULL);
  int pa = 0, pb = 0, pc = 0;
  RC_ASSERT_EQ_INT(
      rc_server_listen_flags(a, "127.0.0.1", 0, 0, RC_LISTEN_REUSEPORT, &pa),
      0);
  RC_CHECK_EQ_INT(
      rc_server_listen_flags(b, "127.0.0.1", pa, 0, RC_LISTEN_REUSEPORT, &pb),
      0);
  RC_CHECK_EQ_INT(pb, pa);
  RC_CHECK_EQ_INT(rc_server_listen(c, "127.0.0.1", pa, 0, &pc), UV_EADDRINUSE);
  rc_server_stop(a, 1001, "going away");
  rc_server_stop(b, 1001, "going away");
  rc_events_free(rc_server_poll(a));
  rc_events_free(rc_server_poll(b));
  rc_server_free(a);
  rc_server_free(b);
  rc_server_free(c);
}

RC_TEST_MAIN(
    RC_CASE(refusals_are_counted_by_reason_and_bytes_out_by_what_was_sent),
    RC_CASE(reuse_port_lets_two_servers_listen_on_one_port),
    RC_CASE(an_upgrade_nobody_answers_gets_503_after_the_deadline),
    RC_CASE(a_plain_request_nobody_answers_gets_503_after_the_deadline),
    RC_CASE(registered_close_codes_are_echoed_and_reported),
    RC_CASE(close_codes_no_one_may_send_are_protocol_errors))
