/* test_room.c - rooms driven directly through the core's API: membership,
 * publish (one at a time and in runs, with exclusions on both sides of the
 * RC__RUN_EXCLUDES threshold), broadcast across rooms, relay, and a room's
 * mode, fixed when its id is made.
 *
 * A room's members are real connections: a server core listens on
 * 127.0.0.1 and a second core in this process opens client connections to
 * it, whose RC_EV_MESSAGE events are what each member received. A burst of
 * commands is made with wake-ups deferred, so that the loop takes it in one
 * turn (the path a run of publishes takes depends on that). Every case
 * stops and frees both cores, so ASan (make sanitize) checks the rooms'
 * memory too. */
#define _GNU_SOURCE
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "rc_core.h"
#include "support/rc_events.h"
#include "support/rc_test.h"

#define WAIT_MS 30000 /* a hang guard; valgrind is slow */
#define MAX_MEMBERS 8

static rc_server *srv, *cli;
static int port;
/* Member i: its connection on the server (sconn) and on the client core. */
static uint64_t sconn[MAX_MEMBERS], cconn[MAX_MEMBERS];
static int nmembers;
/* Events taken from a core but not yet claimed, oldest first, per core. */
static rc_event *pending[2];

static int idx(rc_server *s) { return s == cli; }

static uint64_t now_ms(void) { return rc_test_now_ms(); }

static void take_more(rc_server *s, uint64_t end) {
  rc_test_take_events(s, &pending[idx(s)], end);
}

/* The next event of s for conn (any conn when 0), waiting for it; NULL
 * after WAIT_MS. Events of one connection come in order, so the first one
 * listed for it is its next. The caller frees it with free(). */
static rc_event *next_for(rc_server *s, uint64_t conn) {
  uint64_t end = now_ms() + WAIT_MS;
  for (;;) {
    for (rc_event **pp = &pending[idx(s)]; *pp != NULL; pp = &(*pp)->next) {
      if (conn == 0 || (*pp)->conn == conn) {
        rc_event *ev = *pp;
        *pp = ev->next;
        ev->next = NULL;
        return ev;
      }
    }
    if (now_ms() >= end)
      return NULL;
    take_more(s, end);
  }
}

/* Whether member i's next message is the text want. */
static int got_text(int i, const char *want) {
  rc_event *ev = next_for(cli, cconn[i]);
  int ok = ev != NULL && ev->type == RC_EV_MESSAGE && ev->is_text &&
           ev->len == strlen(want) && memcmp(ev->data, want, ev->len) == 0;
  if (!ok)
    fprintf(stderr, "  member %d: wanted \"%s\", got %s%.*s\n", i, want,
            ev == NULL                  ? "nothing"
            : ev->type == RC_EV_MESSAGE ? ""
                                        : "event ",
            ev != NULL && ev->type == RC_EV_MESSAGE ? (int)ev->len : 0,
            ev != NULL ? ev->data : "");
  free(ev);
  return ok;
}

/* Opens one member: a client connection the server accepts. */
static int add_member(void) {
  rc_connect_opts o;
  rc_connect_opts_default(&o);
  o.host = "127.0.0.1";
  o.port = port;
  o.target = "/";
  int i = nmembers;
  if (rc_server_connect(cli, &o, &cconn[i]) != 0)
    return -1;
  rc_event *open = next_for(srv, 0);
  if (open == NULL || open->type != RC_EV_OPEN) {
    free(open);
    return -1;
  }
  sconn[i] = open->conn;
  free(open);
  if (rc_server_accept(srv, sconn[i], NULL, NULL) != 0)
    return -1;
  rc_event *up = next_for(cli, cconn[i]);
  int ok = up != NULL && up->type == RC_EV_CONNECTED;
  free(up);
  if (!ok)
    return -1;
  nmembers++;
  return 0;
}

static int start(int members) {
  srv = rc_server_new(NULL);
  cli = rc_server_new(NULL);
  nmembers = 0;
  if (srv == NULL || cli == NULL ||
      rc_server_listen(srv, "127.0.0.1", 0, 0, &port) != 0 ||
      rc_server_start(cli) != 0)
    return -1;
  for (int i = 0; i < members; i++)
    if (add_member() != 0)
      return -1;
  return 0;
}

static void stop(void) {
  if (cli != NULL)
    rc_server_stop(cli, 1001, "going away");
  if (srv != NULL)
    rc_server_stop(srv, 1001, "going away");
  for (int i = 0; i < 2; i++) {
    rc_events_free(pending[i]);
    pending[i] = NULL;
  }
  if (cli != NULL) {
    rc_events_free(rc_server_poll(cli));
    rc_server_free(cli);
  }
  if (srv != NULL) {
    rc_events_free(rc_server_poll(srv));
    rc_server_free(srv);
  }
  srv = cli = NULL;
}

static int publish(uint64_t room, const char *text, uint64_t exclude) {
  return rc_server_publish(srv, room, text, strlen(text), 1, exclude);
}

/* Members [0, n) join room with its mode. */
static int join_all(uint64_t room, int n, int relay) {
  for (int i = 0; i < n; i++)
    if (rc_server_join(srv, sconn[i], room, relay) != 0)
      return -1;
  return 0;
}

/* A marker published to room reaches members [0, n) next: nothing else
 * was waiting for them before it (each connection's frames stay in
 * order). */
static int nothing_else(uint64_t room, int n) {
  if (publish(room, "marker", 0) != 0)
    return 0;
  int ok = 1;
  for (int i = 0; i < n; i++)
    ok &= got_text(i, "marker");
  return ok;
}

RC_TEST(publish_reaches_each_member_once_in_order) {
  RC_ASSERT_EQ_INT(start(3), 0);
  uint64_t room = rc_server_room_new(srv);
  RC_ASSERT(room != 0);
  RC_ASSERT_EQ_INT(join_all(room, 3, RC_RELAY_NONE), 0);
  RC_ASSERT_EQ_INT(join_all(room, 3, RC_RELAY_NONE), 0); /* twice: once */
  char text[16];
  for (int k = 0; k < 5; k++) { /* one wake-up each, or a few */
    snprintf(text, sizeof(text), "m%d", k);
    RC_ASSERT_EQ_INT(publish(room, text, 0), 0);
  }
  for (int i = 0; i < 3; i++) {
    for (int k = 0; k < 5; k++) {
      snprintf(text, sizeof(text), "m%d", k);
      RC_CHECK(got_text(i, text));
    }
  }
  RC_CHECK(nothing_else(room, 3));
  stop();
}

/* Member i is excluded from the messages k with k % nexcl == i (for
 * i < nexcl), all made in one wake-up: a run. */
static void run_with_excludes(int members, int nexcl, int count) {
  RC_ASSERT_EQ_INT(start(members), 0);
  uint64_t room = rc_server_room_new(srv);
  RC_ASSERT_EQ_INT(join_all(room, members, RC_RELAY_NONE), 0);
  RC_ASSERT(nothing_else(room, members)); /* the joins are done */
  rc_server_defer_wakeups(srv, 1);
  char text[16];
  for (int k = 0; k < count; k++) {
    snprintf(text, sizeof(text), "r%d", k);
    RC_ASSERT_EQ_INT(publish(room, text, sconn[k % nexcl]), 0);
  }
  RC_ASSERT_EQ_INT(rc_server_wake(srv), 0);
  rc_server_defer_wakeups(srv, 0);
  for (int i = 0; i < members; i++) {
    for (int k = 0; k < count; k++) {
      if (i < nexcl && k % nexcl == i)
        continue;
      snprintf(text, sizeof(text), "r%d", k);
      RC_CHECK(got_text(i, text));
    }
  }
  RC_CHECK(nothing_else(room, members));
  stop();
}

RC_TEST(run_with_few_excluded_members) { run_with_excludes(6, 3, 12); }

/* More distinct exclusions than RC__RUN_EXCLUDES (4): every member takes
 * the per-message path. */
RC_TEST(run_with_more_excluded_members_than_the_threshold) {
  run_with_excludes(7, 6, 18);
}

/* A run longer than RC__RUN_MAX (256) is cut into pieces, in order. */
RC_TEST(run_longer_than_its_maximum_stays_in_order) {
  run_with_excludes(3, 1, 600);
}

RC_TEST(direct_send_then_a_run_in_one_wake_up_stay_in_order) {
  RC_ASSERT_EQ_INT(start(3), 0);
  uint64_t room = rc_server_room_new(srv);
  RC_ASSERT_EQ_INT(join_all(room, 3, RC_RELAY_NONE), 0);
  RC_ASSERT(nothing_else(room, 3));
  rc_server_defer_wakeups(srv, 1);
  RC_ASSERT_EQ_INT(rc_server_send(srv, sconn[1], "direct", 6, 1), 0);
  RC_ASSERT_EQ_INT(publish(room, "p0", 0), 0);
  RC_ASSERT_EQ_INT(publish(room, "p1", sconn[2]), 0);
  RC_ASSERT_EQ_INT(rc_server_wake(srv), 0);
  rc_server_defer_wakeups(srv, 0);
  RC_CHECK(got_text(1, "direct"));
  RC_CHECK(got_text(1, "p0"));
  RC_CHECK(got_text(1, "p1"));
  RC_CHECK(got_text(0, "p0"));
  RC_CHECK(got_text(0, "p1"));
  RC_CHECK(got_text(2, "p0"));
  RC_CHECK(nothing_else(room, 3));
  stop();
}

RC_TEST(broadcast_reaches_a_member_of_several_rooms_once) {
  RC_ASSERT_EQ_INT(start(4), 0);
  uint64_t red = rc_server_room_new(srv), blue = rc_server_room_new(srv);
  uint64_t empty = rc_server_room_new(srv); /* never joined: skipped */
  RC_ASSERT_EQ_INT(join_all(red, 2, RC_RELAY_NONE), 0);        /* 0, 1 */
  RC_ASSERT_EQ_INT(rc_server_join(srv, sconn[1], blue, 0), 0); /* 1 in both */
  RC_ASSERT_EQ_INT(rc_server_join(srv, sconn[2], blue, 0), 0);
  uint64_t rooms[3] = {red, blue, empty};
  RC_ASSERT_EQ_INT(rc_server_broadcast(srv, rooms, 3, "all", 3, 1, 0), 0);
  RC_ASSERT_EQ_INT(rc_server_broadcast(srv, rooms, 2, "not 2", 5, 1, sconn[2]),
                   0);
  RC_ASSERT_EQ_INT(rc_server_broadcast(srv, rooms, 3, "end", 3, 1, 0), 0);
  for (int i = 0; i < 3; i++) {
    RC_CHECK(got_text(i, "all"));
    if (i != 2)
      RC_CHECK(got_text(i, "not 2"));
    RC_CHECK(got_text(i, "end"));
  }
  /* Member 3 is in no room: the first thing it gets is a direct send. */
  RC_ASSERT_EQ_INT(rc_server_send(srv, sconn[3], "only", 4, 1), 0);
  RC_CHECK(got_text(3, "only"));
  stop();
}

RC_TEST(leave_and_room_free_stop_deliveries_and_keep_the_connections) {
  RC_ASSERT_EQ_INT(start(3), 0);
  uint64_t room = rc_server_room_new(srv), other = rc_server_room_new(srv);
  RC_ASSERT_EQ_INT(join_all(room, 3, RC_RELAY_NONE), 0);
  RC_ASSERT_EQ_INT(join_all(other, 3, RC_RELAY_NONE), 0);
  RC_ASSERT_EQ_INT(rc_server_leave(srv, sconn[0], room), 0);
  RC_ASSERT_EQ_INT(rc_server_leave(srv, sconn[0], room), 0); /* not in it */
  RC_ASSERT_EQ_INT(publish(room, "without 0", 0), 0);
  RC_ASSERT_EQ_INT(publish(other, "other", 0), 0);
  RC_CHECK(got_text(0, "other"));
  for (int i = 1; i < 3; i++) {
    RC_CHECK(got_text(i, "without 0"));
    RC_CHECK(got_text(i, "other"));
  }
  /* Freed: its members stay connected and in their other rooms. */
  RC_ASSERT_EQ_INT(rc_server_room_free(srv, room), 0);
  RC_ASSERT_EQ_INT(publish(room, "to nobody", 0), 0);
  RC_CHECK(nothing_else(other, 3));
  /* A member that closes leaves every room: the others carry on. */
  RC_ASSERT_EQ_INT(rc_server_close(cli, cconn[2], 1000, "bye", 3), 0);
  rc_event *gone = next_for(srv, sconn[2]);
  RC_ASSERT(gone != NULL);
  RC_CHECK_EQ_INT(gone->type, RC_EV_CLOSE);
  free(gone);
  RC_CHECK(nothing_else(other, 2));
  stop();
}

/* Member 0 sends text through the client core; the server relays it. */
static int member_sends(int i, const char *text) {
  return rc_server_send(cli, cconn[i], text, strlen(text), 1);
}

RC_TEST(relay_all_and_others_forward_without_an_event) {
  RC_ASSERT_EQ_INT(start(4), 0);
  uint64_t all = rc_server_room_new_relay(srv, RC_RELAY_ALL);
  uint64_t others = rc_server_room_new_relay(srv, RC_RELAY_OTHERS);
  RC_ASSERT(all != 0 && others != 0);
  RC_ASSERT_EQ_INT(join_all(all, 2, RC_RELAY_ALL), 0); /* 0, 1 */
  RC_ASSERT_EQ_INT(rc_server_join(srv, sconn[0], others, RC_RELAY_OTHERS), 0);
  RC_ASSERT_EQ_INT(rc_server_join(srv, sconn[1], others, RC_RELAY_OTHERS), 0);
  RC_ASSERT_EQ_INT(rc_server_join(srv, sconn[2], others, RC_RELAY_OTHERS), 0);
  RC_ASSERT(nothing_else(all, 2)); /* the joins are done */
  RC_ASSERT_EQ_INT(member_sends(0, "from 0"), 0);
  /* 0 gets its own copy through "all"; 1 is in both rooms: once. */
  RC_CHECK(got_text(0, "from 0"));
  RC_CHECK(got_text(1, "from 0"));
  RC_CHECK(got_text(2, "from 0"));
  RC_ASSERT_EQ_INT(member_sends(2, "from 2"), 0);
  RC_CHECK(got_text(0, "from 2"));
  RC_CHECK(got_text(1, "from 2"));
  /* Member 3 is in no relay room: its message is an event, not relayed. */
  RC_ASSERT_EQ_INT(member_sends(3, "to the server"), 0);
  rc_event *ev = next_for(srv, 0);
  RC_ASSERT(ev != NULL);
  int is_event = ev->type == RC_EV_MESSAGE && ev->conn == sconn[3] &&
                 ev->len == 13 && memcmp(ev->data, "to the server", 13) == 0;
  free(ev);
  RC_CHECK(is_event); /* the first server event: the relayed ones made none */
  RC_CHECK(nothing_else(others, 3));
  stop();
}

RC_TEST(a_rooms_mode_is_fixed_when_its_id_is_made) {
  RC_ASSERT_EQ_INT(start(3), 0);
  uint64_t lobby = rc_server_room_new_relay(srv, RC_RELAY_ALL);
  RC_CHECK_EQ_INT(rc_server_room_new_relay(srv, 3), 0);
  RC_CHECK_EQ_INT(rc_server_room_new_relay(srv, -1), 0);
  /* Asking for another mode is refused, first join or not. */
  RC_CHECK_EQ_INT(rc_server_join(srv, sconn[0], lobby, RC_RELAY_NONE),
                  UV_EINVAL);
  RC_CHECK_EQ_INT(rc_server_join(srv, sconn[0], 0, RC_RELAY_NONE), UV_EINVAL);
  for (int round = 0; round < 2; round++) {
    /* Joined, emptied (the loop frees it), joined again: still relaying. */
    RC_ASSERT_EQ_INT(join_all(lobby, 2, RC_RELAY_ALL), 0);
    RC_CHECK_EQ_INT(rc_server_join(srv, sconn[2], lobby, RC_RELAY_OTHERS),
                    UV_EINVAL);
    RC_ASSERT_EQ_INT(member_sends(0, "relayed"), 0);
    RC_CHECK(got_text(0, "relayed"));
    RC_CHECK(got_text(1, "relayed"));
    RC_ASSERT_EQ_INT(rc_server_leave(srv, sconn[0], lobby), 0);
    RC_ASSERT_EQ_INT(rc_server_leave(srv, sconn[1], lobby), 0);
  }
  /* Member 2 never got in: its next message is a direct send. */
  RC_ASSERT_EQ_INT(rc_server_send(srv, sconn[2], "only", 4, 1), 0);
  RC_CHECK(got_text(2, "only"));
  stop();
}

RC_TEST_MAIN(
    RC_CASE(publish_reaches_each_member_once_in_order),
    RC_CASE(run_with_few_excluded_members),
    RC_CASE(run_with_more_excluded_members_than_the_threshold),
    RC_CASE(run_longer_than_its_maximum_stays_in_order),
    RC_CASE(direct_send_then_a_run_in_one_wake_up_stay_in_order),
    RC_CASE(broadcast_reaches_a_member_of_several_rooms_once),
    RC_CASE(leave_and_room_free_stop_deliveries_and_keep_the_connections),
    RC_CASE(relay_all_and_others_forward_without_an_event),
    RC_CASE(a_rooms_mode_is_fixed_when_its_id_is_made))
