/* test_client.c - the core's client connections against the core's own
 * server, both in this process on 127.0.0.1: the round trip, and each way
 * an attempt fails, with the reason its RC_EV_CLOSE carries, and
 * permessage-deflate between the two. Under valgrind
 * (make memcheck) and ASan (make sanitize) this is where the client path's
 * memory is checked: every case stops and frees both cores. */
#define _GNU_SOURCE
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "rc_core.h"
#include "support/rc_events.h"
#include "support/rc_test.h"

#define WAIT_MS 30000 /* generous: valgrind is slow */

static rc_server *srv, *cli;
static int port;

/* Events taken from a core but not yet looked at, per core. */
static rc_event *pending[2];

static int idx(rc_server *s) { return s == cli; }

/* The next event of s (waiting for it), or NULL after WAIT_MS. The caller
 * frees it with free(). */
static rc_event *next_event(rc_server *s) {
  return rc_test_next_event(s, &pending[idx(s)], WAIT_MS);
}

static int start_both(void) {
  srv = rc_server_new(NULL);
  cli = rc_server_new(NULL);
  if (srv == NULL || cli == NULL)
    return -1;
  if (rc_server_listen(srv, "127.0.0.1", 0, 0, &port) != 0)
    return -1;
  return rc_server_start(cli);
}

static void stop_both(void) {
  rc_server_stop(cli, 1001, "going away");
  rc_server_stop(srv, 1001, "going away");
  for (int i = 0; i < 2; i++) {
    rc_events_free(pending[i]);
    pending[i] = NULL;
  }
  rc_events_free(rc_server_poll(cli));
  rc_events_free(rc_server_poll(srv));
  rc_server_free(cli);
  rc_server_free(srv);
  srv = cli = NULL;
}

/* Connects with o (host and port filled in when unset) and returns the
 * close event of an attempt that must fail. */
static rc_event *failed_attempt(rc_connect_opts *o) {
  uint64_t conn = 0;
  if (o->host == NULL)
    o->host = "127.0.0.1";
  if (rc_server_connect(cli, o, &conn) != 0)
    return NULL;
  rc_event *ev = next_event(cli);
  if (ev != NULL && (ev->conn != conn || ev->type != RC_EV_CLOSE)) {
    free(ev);
    return NULL;
  }
  return ev;
}

static int reason_is(const rc_event *ev, const char *want) {
  return ev->len == strlen(want) && memcmp(ev->data, want, ev->len) == 0;
}

RC_TEST(round_trip_with_the_cores_own_server) {
  RC_ASSERT_EQ_INT(start_both(), 0);
  rc_connect_opts o;
  rc_connect_opts_default(&o);
  o.host = "localhost"; /* ::1 may come first and be refused: tried in turn */
  o.port = port;
  o.target = "/chat?room=1";
  o.protocols = "chat";
  uint64_t conn = 0;
  RC_ASSERT_EQ_INT(rc_server_connect(cli, &o, &conn), 0);
  RC_ASSERT(conn >> 63);

  rc_event *open = next_event(srv);
  RC_ASSERT(open != NULL);
  RC_CHECK_EQ_INT(open->type, RC_EV_OPEN);
  uint64_t sconn = open->conn;
  free(open);
  RC_ASSERT_EQ_INT(rc_server_accept(srv, sconn, "chat", NULL), 0);
  rc_event *up = next_event(cli);
  RC_ASSERT(up != NULL);
  int connected = up->type == RC_EV_CONNECTED && up->code == 101 &&
                  up->len >= 8 && memcmp(up->data + 4, "chat", 4) == 0;
  free(up);
  RC_ASSERT(connected);

  RC_ASSERT_EQ_INT(rc_server_send(cli, conn, "hi", 2, 1), 0);
  rc_event *msg = next_event(srv);
  RC_ASSERT(msg != NULL);
  int got = msg->type == RC_EV_MESSAGE && msg->is_text && msg->len == 2 &&
            memcmp(msg->data, "hi", 2) == 0;
  free(msg);
  RC_ASSERT(got);
  RC_ASSERT_EQ_INT(rc_server_send(srv, sconn, "\x00\x01\x02", 3, 0), 0);
  msg = next_event(cli);
  RC_ASSERT(msg != NULL);
  got = msg->type == RC_EV_MESSAGE && !msg->is_text && msg->len == 3;
  free(msg);
  RC_ASSERT(got);

  RC_ASSERT_EQ_INT(rc_server_close(cli, conn, 4000, "bye", 3), 0);
  rc_event *c1 = next_event(cli), *c2 = next_event(srv);
  RC_ASSERT(c1 != NULL && c2 != NULL);
  RC_CHECK_EQ_INT(c1->type, RC_EV_CLOSE);
  RC_CHECK_EQ_INT(c1->code, 4000);
  RC_CHECK_EQ_INT(c2->type, RC_EV_CLOSE);
  RC_CHECK_EQ_INT(c2->code, 4000);
  RC_CHECK(reason_is(c2, "bye"));
  free(c1);
  free(c2);
  rc_stats st;
  rc_server_stats(cli, &st);
  RC_CHECK_EQ_INT(st.client_connects, 1);
  stop_both();
}

RC_TEST(refused_unresolvable_and_forbidden) {
  RC_ASSERT_EQ_INT(start_both(), 0);
  rc_connect_opts o;
  rc_connect_opts_default(&o);
  o.port = 1;
  rc_event *ev = failed_attempt(&o);
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->code, 1006);
  RC_CHECK(reason_is(ev, "connection refused"));
  free(ev);

  rc_connect_opts_default(&o);
  o.host = "no-such-host.invalid";
  ev = failed_attempt(&o);
  RC_ASSERT(ev != NULL);
  RC_CHECK(ev->len > 24 &&
           memcmp(ev->data, "cannot resolve no-such-host.invalid", 24) == 0);
  free(ev);

  /* The server refuses the upgrade: 403 and its reason phrase. */
  rc_connect_opts_default(&o);
  o.port = port;
  uint64_t conn;
  o.host = "127.0.0.1";
  RC_ASSERT_EQ_INT(rc_server_connect(cli, &o, &conn), 0);
  rc_event *open = next_event(srv);
  RC_ASSERT(open != NULL);
  RC_CHECK_EQ_INT(rc_server_close(srv, open->conn, 1000, NULL, 0), 0);
  free(open);
  ev = next_event(cli);
  RC_ASSERT(ev != NULL);
  RC_CHECK(reason_is(ev, "HTTP 403 in handshake: Forbidden"));
  free(ev);
  free(next_event(srv)); /* its RC_EV_CLOSE */
  stop_both();
}

RC_TEST(tls_to_a_plain_server_fails_in_the_tls_handshake) {
  RC_ASSERT_EQ_INT(start_both(), 0);
  rc_connect_opts o;
  rc_connect_opts_default(&o);
  o.port = port;
  o.tls = 1;
  o.tls_verify = 0;
  rc_event *ev = failed_attempt(&o);
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->code, 1006);
  RC_CHECK(memmem(ev->data, ev->len, "TLS", 3) != NULL);
  free(ev);
  stop_both();
}

RC_TEST(a_closed_attempt_and_bad_options) {
  RC_ASSERT_EQ_INT(start_both(), 0);
  rc_connect_opts o;
  rc_connect_opts_default(&o);
  o.host = "127.0.0.1";
  o.port = port;
  uint64_t conn = 0;
  RC_ASSERT_EQ_INT(rc_server_connect(cli, &o, &conn), 0);
  RC_ASSERT_EQ_INT(rc_server_close(cli, conn, 1000, NULL, 0), 0);
  rc_event *ev = next_event(cli);
  RC_ASSERT(ev != NULL);
  RC_CHECK_EQ_INT(ev->type, RC_EV_CLOSE);
  free(ev);
  o.target = "no-slash";
  RC_CHECK_EQ_INT(rc_server_connect(cli, &o, &conn), UV_EINVAL);
  o.target = "/a\r\nInjected: 1";
  RC_CHECK_EQ_INT(rc_server_connect(cli, &o, &conn), UV_EINVAL);
  o.target = "/";
  o.port = 0;
  RC_CHECK_EQ_INT(rc_server_connect(cli, &o, &conn), UV_EINVAL);
  size_t n;
  RC_CHECK_EQ_INT(rc_server_buffered(cli, 42, &n), UV_ENOENT);
  stop_both();
  /* A core that was never started takes no connection. */
  rc_server *idle = rc_server_new(NULL);
  RC_ASSERT(idle != NULL);
  rc_connect_opts_default(&o);
  o.host = "127.0.0.1";
  RC_CHECK_EQ_INT(rc_server_connect(idle, &o, &conn), UV_EINVAL);
  rc_server_free(idle);
}

/* IANA's 1012-1014 (service restart, try again later, bad gateway), which
 * wslay 1.1.1 answers with 1002: the client reports the server's code and
 * echoes it, and the server reports the echo. */
RC_TEST(a_registered_close_code_reaches_the_client_and_comes_back) {
  RC_ASSERT_EQ_INT(start_both(), 0);
  static const unsigned codes[] = {1012, 1013, 1014};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    rc_connect_opts o;
    rc_connect_opts_default(&o);
    o.host = "127.0.0.1";
    o.port = port;
    uint64_t conn = 0;
    RC_ASSERT_EQ_INT(rc_server_connect(cli, &o, &conn), 0);
    rc_event *open = next_event(srv);
    RC_ASSERT(open != NULL);
    uint64_t sconn = open->conn;
    free(open);
    RC_ASSERT_EQ_INT(rc_server_accept(srv, sconn, NULL, NULL), 0);
    rc_event *up = next_event(cli);
    RC_ASSERT(up != NULL);
    RC_CHECK_EQ_INT(up->type, RC_EV_CONNECTED);
    free(up);
    RC_ASSERT_EQ_INT(rc_server_close(srv, sconn, codes[i], "later", 5), 0);
    rc_event *c1 = next_event(cli), *c2 = next_event(srv);
    RC_ASSERT(c1 != NULL && c2 != NULL);
    RC_CHECK_EQ_INT(c1->type, RC_EV_CLOSE);
    RC_CHECK_EQ_INT(c1->code, codes[i]);
    RC_CHECK(reason_is(c1, "later"));
    RC_CHECK_EQ_INT(c2->type, RC_EV_CLOSE);
    RC_CHECK_EQ_INT(c2->code, codes[i]);
    free(c1);
    free(c2);
  }
  stop_both();
}

/* A message for the deflate case: 4 KiB of JSON-like text, which shrinks. */
static char zmsg[4096];

struct sender {
  uint64_t conn;
  int rc;
};

/* Sends zmsg from a thread of its own, which then ends: its compressor is
 * freed with it (memcheck would see it lost otherwise). */
static void send_from_thread(void *arg) {
  struct sender *sd = arg;
  sd->rc = rc_server_send(cli, sd->conn, zmsg, sizeof zmsg, 1);
}

/* One connection with permessage-deflate (the default) and one without:
 * the same messages both ways; the counters show which were compressed. */
RC_TEST(permessage_deflate_or_not) {
  for (size_t i = 0; i < sizeof zmsg; i++)
    zmsg[i] = "{\"user\": \"ada\", \"n\": 12}, "[i % 26];
  RC_ASSERT_EQ_INT(start_both(), 0);
  for (int compression = 1; compression >= 0; compression--) {
    rc_connect_opts o;
    rc_connect_opts_default(&o);
    RC_CHECK_EQ_INT(o.compression, 1);
    o.host = "127.0.0.1";
    o.port = port;
    o.compression = compression;
    uint64_t conn = 0;
    RC_ASSERT_EQ_INT(rc_server_connect(cli, &o, &conn), 0);
    rc_event *open = next_event(srv);
    RC_ASSERT(open != NULL && open->type == RC_EV_OPEN);
    uint64_t sconn = open->conn;
    free(open);
    RC_ASSERT_EQ_INT(rc_server_accept(srv, sconn, NULL, NULL), 0);
    rc_event *up = next_event(cli);
    RC_ASSERT(up != NULL);
    RC_CHECK_EQ_INT(up->type, RC_EV_CONNECTED);
    free(up);

    struct sender sd = {conn, -1};
    uv_thread_t t;
    RC_ASSERT_EQ_INT(uv_thread_create(&t, send_from_thread, &sd), 0);
    RC_ASSERT_EQ_INT(uv_thread_join(&t), 0);
    RC_ASSERT_EQ_INT(sd.rc, 0);
    RC_ASSERT_EQ_INT(rc_server_send(cli, conn, zmsg, sizeof zmsg, 1), 0);
    RC_ASSERT_EQ_INT(rc_server_send(cli, conn, zmsg, 100, 1), 0);
    RC_ASSERT_EQ_INT(rc_server_send(srv, sconn, zmsg, sizeof zmsg, 0), 0);
    size_t lens[4] = {sizeof zmsg, sizeof zmsg, 100, sizeof zmsg};
    for (int k = 0; k < 4; k++) {
      rc_event *m = next_event(k < 3 ? srv : cli);
      RC_ASSERT(m != NULL);
      int same = m->type == RC_EV_MESSAGE && m->len == lens[k] &&
                 memcmp(m->data, zmsg, lens[k]) == 0;
      free(m);
      RC_ASSERT(same);
    }
    rc_stats ss, cs;
    rc_server_stats(srv, &ss);
    rc_server_stats(cli, &cs);
    /* 4 KiB went compressed each way (from both threads), 100 bytes plain
     * (the threshold) */
    RC_CHECK_EQ_INT(ss.messages_inflated, 2);
    RC_CHECK_EQ_INT(cs.messages_inflated, 1);
    RC_CHECK_EQ_INT(ss.messages_deflated, 1);
    RC_ASSERT_EQ_INT(rc_server_close(cli, conn, 1000, "", 0), 0);
    rc_event *c1 = next_event(cli), *c2 = next_event(srv);
    RC_ASSERT(c1 != NULL && c2 != NULL);
    RC_CHECK_EQ_INT(c1->code, 1000);
    RC_CHECK_EQ_INT(c2->code, 1000);
    free(c1);
    free(c2);
  }
  stop_both();
}

RC_TEST_MAIN(RC_CASE(round_trip_with_the_cores_own_server),
             RC_CASE(permessage_deflate_or_not),
             RC_CASE(a_registered_close_code_reaches_the_client_and_comes_back),
             RC_CASE(refused_unresolvable_and_forbidden),
             RC_CASE(tls_to_a_plain_server_fails_in_the_tls_handshake),
             RC_CASE(a_closed_attempt_and_bad_options))
