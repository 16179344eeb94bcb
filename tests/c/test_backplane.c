/* test_backplane.c - the core's Redis backplane from C, against a real
 * redis-server that this program starts on a free loopback port (and kills
 * at exit): connecting, commands and their encoded replies, publishes to a
 * named room, refusals, and a Redis that is not there; and a second
 * redis-server that serves TLS only, on a certificate made with the
 * openssl command (rediss://: trusted, untrusted, not TLS at all); and a
 * one-node Redis Cluster owning every slot (sharded channels, commands
 * routed by key, the seeds checked). Under
 * `make memcheck` it shows that the backplane frees what it allocates. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto/rc_slot.h"
#include "rc_core.h"
#include "support/rc_test.h"

static pid_t redis_pid;
static int redis_port_;

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  int port = 0;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0)
    close(fd);
  return port;
}

static int can_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
  if (fd >= 0)
    close(fd);
  return ok;
}

static void stop_redis(void) {
  if (redis_pid > 0) {
    kill(redis_pid, SIGTERM);
    (void)waitpid(redis_pid, NULL, 0);
    redis_pid = 0;
  }
}

/* Starts redis-server with args (NULL-terminated, at most 16) and the
 * options every test's Redis has; *pid is its process. Returns port once
 * it accepts connections there, or 0. */
static int spawn_redis(const char *const *args, int port, pid_t *pid) {
  const char *common[] = {"--bind",       "127.0.0.1", "--save",     "",
                          "--appendonly", "no",        "--dir",      "/tmp",
                          "--logfile",    "",          "--loglevel", "warning"};
  const char *argv[1 + 16 + sizeof(common) / sizeof(common[0]) + 1];
  size_t n = 0;
  argv[n++] = "redis-server";
  for (size_t i = 0; args[i] != NULL && i < 16; i++)
    argv[n++] = args[i];
  for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++)
    argv[n++] = common[i];
  argv[n] = NULL;
  *pid = fork();
  if (*pid == 0) {
    execvp("redis-server", (char *const *)argv);
    _exit(127);
  }
  if (*pid < 0) {
    *pid = 0;
    return 0;
  }
  for (int i = 0; i < 300 && !can_connect(port); i++)
    usleep(20000);
  return can_connect(port) ? port : 0;
}

/* The port of our redis-server, started on first use; 0 if it cannot be. */
static int redis_port(void) {
  if (redis_port_ != 0)
    return redis_port_;
  int port = free_port();
  char portstr[16];
  snprintf(portstr, sizeof(portstr), "%d", port);
  const char *args[] = {"--port", portstr, NULL};
  atexit(stop_redis);
  redis_port_ = spawn_redis(args, port, &redis_pid);
  if (redis_port_ == 0)
    fprintf(stderr, "redis-server did not start (is it installed?)\n");
  return redis_port_;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Polls until an event of type (and conn, for RC_EV_REDIS) arrives; returns
 * a copy of it (free() it) or NULL after seconds. */
static rc_event *wait_event(rc_server *s, uint16_t type, uint64_t conn,
                            int code, double seconds) {
  double end = now() + seconds;
  while (now() < end) {
    rc_event *head = rc_server_poll(s);
    rc_event *found = NULL;
    for (rc_event *ev = head; ev != NULL && found == NULL; ev = ev->next) {
      if (ev->type == type && (type != RC_EV_REDIS || ev->conn == conn) &&
          (code < 0 || ev->code == code)) {
        found = malloc(sizeof(*ev) + ev->len + 1);
        if (found != NULL)
          memcpy(found, ev, sizeof(*ev) + ev->len + 1);
      }
    }
    rc_events_free(head);
    if (found != NULL)
      return found;
    usleep(10000);
  }
  return NULL;
}

/* A listening server whose backplane is 127.0.0.1:port, through TLS when
 * tls is set. */
static rc_server *server_tls(int port, const char *prefix,
                             const rc_backplane_tls *tls) {
  rc_config cfg;
  rc_config_default(&cfg);
  cfg.backplane_host = "127.0.0.1";
  cfg.backplane_port = port;
  cfg.backplane_prefix = prefix;
  rc_server *s = rc_server_new(&cfg);
  char err[256];
  int bound = 0;
  if (s != NULL && tls != NULL &&
      rc_server_backplane_tls(s, tls, err, sizeof(err)) != 0) {
    fprintf(stderr, "  %s\n", err);
    rc_server_free(s);
    return NULL;
  }
  if (s != NULL && rc_server_listen(s, "127.0.0.1", 0, 0, &bound) != 0) {
    rc_server_free(s);
    return NULL;
  }
  return s;
}

static rc_server *server_with(int port, const char *prefix) {
  return server_tls(port, prefix, NULL);
}

static rc_server *server_on(int port) { return server_with(port, "ctest:"); }

static int redis_cmd(rc_server *s, uint64_t token, int argc,
                     const char **argv) {
  size_t lens[8];
  for (int i = 0; i < argc; i++)
    lens[i] = strlen(argv[i]);
  return rc_server_redis(s, token, argc, argv, lens);
}

RC_TEST(connects_and_answers_commands) {
  int port = redis_port();
  RC_ASSERT(port != 0);
  rc_server *s = server_on(port);
  RC_ASSERT(s != NULL);
  rc_event *up = wait_event(s, RC_EV_BACKPLANE, 0, 1, 10);
  RC_CHECK(up != NULL);
  free(up);

  const char *set[] = {"SET", "ctest:k", "v"};
  RC_CHECK_EQ_INT(redis_cmd(s, 7, 3, set), 0);
  rc_event *ev = wait_event(s, RC_EV_REDIS, 7, -1, 10);
  RC_CHECK(ev != NULL);
  if (ev != NULL) /* status "OK": 't', length 2, the bytes */
    RC_CHECK(ev->len == 7 && ev->data[0] == RC_REPLY_STATUS &&
             memcmp(ev->data + 5, "OK", 2) == 0);
  free(ev);

  const char *get[] = {"GET", "ctest:k"};
  RC_CHECK_EQ_INT(redis_cmd(s, 8, 2, get), 0);
  ev = wait_event(s, RC_EV_REDIS, 8, -1, 10);
  RC_CHECK(ev != NULL && ev->data[0] == RC_REPLY_STRING && ev->data[5] == 'v');
  free(ev);

  const char *bad[] = {"HGET", "ctest:k", "f"};
  RC_CHECK_EQ_INT(redis_cmd(s, 9, 3, bad), 0);
  ev = wait_event(s, RC_EV_REDIS, 9, -1, 10);
  RC_CHECK(ev != NULL && ev->data[0] == RC_REPLY_ERROR);
  free(ev);

  const char *sub[] = {"subscribe", "x"};
  RC_CHECK_EQ_INT(redis_cmd(s, 10, 2, sub), -EINVAL);
  const char *waitaof[] = {"WAITAOF", "0", "0", "0"};
  RC_CHECK_EQ_INT(redis_cmd(s, 11, 4, waitaof), -EINVAL);
  const char *debug[] = {"debug", "sleep", "10"};
  RC_CHECK_EQ_INT(redis_cmd(s, 12, 3, debug), -EINVAL);
  rc_server_stop(s, 1001, "bye");
  rc_server_free(s);
}

RC_TEST(publishes_to_a_named_room_without_members) {
  int port = redis_port();
  RC_ASSERT(port != 0);
  rc_server *s = server_on(port);
  RC_ASSERT(s != NULL);
  free(wait_event(s, RC_EV_BACKPLANE, 0, 1, 10));
  uint64_t room = rc_server_room_new(s);
  RC_CHECK_EQ_INT(rc_server_room_name(s, room, "lobby", 5), 0);
  RC_CHECK_EQ_INT(rc_server_room_name(s, room, "", 0), -EINVAL);
  RC_CHECK_EQ_INT(rc_server_room_name(s, room, "a\0b", 3), -EINVAL);
  uint64_t other = rc_server_room_new(s);
  RC_CHECK_EQ_INT(rc_server_room_name(s, other, "hall", 4), 0);
  RC_CHECK_EQ_INT(rc_server_publish(s, room, "hello", 5, 1, 0), 0);
  uint64_t both[2] = {room, other};
  RC_CHECK_EQ_INT(rc_server_broadcast(s, both, 2, "x", 1, 0, 0), 0);
  uint64_t unnamed = rc_server_room_new(s);
  RC_CHECK_EQ_INT(rc_server_publish(s, unnamed, "local", 5, 1, 0), 0);
  rc_stats st = {0};
  double end = now() + 10;
  while (now() < end) {
    rc_server_stats(s, &st);
    if (st.backplane_published >= 3)
      break;
    usleep(10000);
  }
  /* one for the room, one per room of the broadcast, none for unnamed */
  RC_CHECK_EQ_INT((long)st.backplane_published, 3);
  RC_CHECK_EQ_INT((long)st.backplane_dropped, 0);
  RC_CHECK_EQ_INT((long)st.backplane_up, 1);
  RC_CHECK_EQ_INT(rc_server_room_free(s, other), 0);
  rc_server_stop(s, 1001, "bye");
  rc_server_free(s);
}

/* 1 if the encoded array reply of ev holds a string of n bytes equal to p. */
static int reply_holds(const rc_event *ev, const char *p, size_t n) {
  if (ev == NULL || ev->len < 5 || ev->data[0] != RC_REPLY_ARRAY)
    return 0;
  uint32_t count;
  memcpy(&count, ev->data + 1, 4);
  size_t at = 5;
  for (uint32_t i = 0; i < count && at + 5 <= ev->len; i++) {
    uint32_t len;
    memcpy(&len, ev->data + at + 1, 4);
    if (ev->data[at] == RC_REPLY_STRING && len == n &&
        memcmp(ev->data + at + 5, p, n) == 0)
      return 1;
    at += 5 + len;
  }
  return 0;
}

/* The sentinel channel of a server is its prefix escaped ('|' and '\\'
 * take a '\\'), a NUL, "server:" and its id: sized from the prefix, up to
 * 200 bytes (a 64-byte array once took them all). */
RC_TEST(prefixes_up_to_200_bytes_name_the_sentinel_exactly) {
  int port = redis_port();
  RC_ASSERT(port != 0);
  static const size_t sizes[] = {41, 60, 100, 150, 200};
  for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
    char prefix[201], want[420];
    size_t w = 0;
    for (size_t i = 0; i < sizes[k]; i++) {
      prefix[i] = "ab|c\\:"[i % 6];
      if (prefix[i] == '|' || prefix[i] == '\\')
        want[w++] = '\\';
      want[w++] = prefix[i];
    }
    prefix[sizes[k]] = '\0';
    rc_server *s = server_with(port, prefix);
    RC_ASSERT(s != NULL);
    w += 1 + (size_t)snprintf(want + w + 1, sizeof(want) - w - 1,
                              "server:%016llx",
                              (unsigned long long)rc_server_id(s));
    want[w - 24] = '\0'; /* before "server:" and the 16 digits */
    free(wait_event(s, RC_EV_BACKPLANE, 0, 1, 10));
    const char *channels[] = {"PUBSUB", "CHANNELS", "*"};
    RC_CHECK_EQ_INT(redis_cmd(s, 1, 3, channels), 0);
    rc_event *ev = wait_event(s, RC_EV_REDIS, 1, -1, 10);
    RC_CHECK(reply_holds(ev, want, w));
    free(ev);
    rc_server_stop(s, 1001, "bye");
    rc_server_free(s);
  }
  char longer[202];
  memset(longer, 'x', 201);
  longer[201] = '\0';
  RC_CHECK(server_with(port, longer) == NULL); /* past the bound: refused */
}

RC_TEST(a_redis_that_is_not_there_is_retried_and_stop_does_not_hang) {
  rc_server *s = server_on(free_port());
  RC_ASSERT(s != NULL);
  rc_event *retry = wait_event(s, RC_EV_BACKPLANE, 0, 2, 10);
  RC_CHECK(retry != NULL);
  free(retry);
  const char *ping[] = {"PING"};
  RC_CHECK_EQ_INT(redis_cmd(s, 1, 1, ping), 0);
  rc_event *ev = wait_event(s, RC_EV_REDIS, 1, -1, 10);
  RC_CHECK(ev != NULL && ev->data[0] == RC_REPLY_ERROR); /* not connected */
  free(ev);
  uint64_t room = rc_server_room_new(s);
  RC_CHECK_EQ_INT(rc_server_room_name(s, room, "r", 1), 0);
  RC_CHECK_EQ_INT(rc_server_publish(s, room, "kept", 4, 1, 0), 0);
  double end = now() + 10;
  rc_stats st = {0};
  while (now() < end && st.backplane_buffered == 0) {
    rc_server_stats(s, &st);
    usleep(10000);
  }
  RC_CHECK(st.backplane_buffered > 0);
  RC_CHECK_EQ_INT((long)st.backplane_up, 0);
  rc_server_stop(s, 1001, "bye");
  rc_server_free(s);
}

RC_TEST(without_a_backplane_names_are_accepted_and_commands_refused) {
  rc_server *s = rc_server_new(NULL);
  RC_ASSERT(s != NULL);
  int bound;
  RC_CHECK_EQ_INT(rc_server_listen(s, "127.0.0.1", 0, 0, &bound), 0);
  RC_CHECK_EQ_INT(rc_server_room_name(s, 1, "x", 1), 0);
  const char *ping[] = {"PING"};
  RC_CHECK_EQ_INT(redis_cmd(s, 1, 1, ping), -EINVAL);
  RC_CHECK(rc_server_id(s) != 0);
  RC_CHECK_EQ_INT(rc_server_recover_begin(s, 5, 1), 0);
  rc_event *ev = wait_event(s, RC_EV_RECOVER, 0, 0, 10);
  RC_CHECK(ev != NULL && ev->conn == 5); /* no backplane: cannot */
  free(ev);
  rc_server_stop(s, 1001, "bye");
  rc_server_free(s);
}

/* The number of subscribers of channel, or -1. */
static long subscribers(rc_server *s, uint64_t token, const char *channel) {
  const char *numsub[] = {"PUBSUB", "NUMSUB", channel};
  if (redis_cmd(s, token, 3, numsub) != 0)
    return -1;
  rc_event *ev = wait_event(s, RC_EV_REDIS, token, -1, 10);
  long n = -1; /* array of 2: the channel (string), the count (integer) */
  if (ev != NULL && ev->data[0] == RC_REPLY_ARRAY) {
    uint32_t len;
    memcpy(&len, ev->data + 6, 4);
    int64_t v;
    if (ev->data[5 + 5 + len] == RC_REPLY_INTEGER) {
      memcpy(&v, ev->data + 5 + 5 + len + 1, 8);
      n = (long)v;
    }
  }
  free(ev);
  return n;
}

/* A join into a room whose history Redis keeps: the room's channel is
 * subscribed for it with no member here, the event says when, a cancel
 * lets the channel go, and a message that is not a history message is
 * refused before it reaches the loop. */
RC_TEST(a_recovering_join_subscribes_the_room_and_is_told_when) {
  int port = redis_port();
  RC_ASSERT(port != 0);
  rc_server *s = server_on(port);
  RC_ASSERT(s != NULL);
  free(wait_event(s, RC_EV_BACKPLANE, 0, 1, 10));
  uint64_t room = rc_server_room_new(s);
  RC_CHECK_EQ_INT(rc_server_room_name(s, room, "hist", 4), 0);
  RC_CHECK_EQ_INT(rc_server_recover_begin(s, 77, room), 0);
  rc_event *ev = wait_event(s, RC_EV_RECOVER, 0, 1, 10);
  RC_CHECK(ev != NULL && ev->conn == 77 && ev->len == 8 &&
           memcmp(ev->data, &room, 8) == 0);
  free(ev);
  RC_CHECK_EQ_INT((int)subscribers(s, 1, "ctest:|hist"), 1);
  const char *bad = "not a history message";
  const void *msgs[1] = {bad};
  size_t lens[1] = {strlen(bad)};
  RC_CHECK_EQ_INT(
      rc_server_recover_end(s, 77, room, NULL, 0, msgs, lens, 1, "after", 5, 0),
      -EINVAL);
  RC_CHECK_EQ_INT(rc_server_recover_cancel(s, 77, room), 0);
  double end = now() + 10;
  long n = 1;
  for (uint64_t t = 2; now() < end && n != 0; t++)
    n = subscribers(s, t, "ctest:|hist");
  RC_CHECK_EQ_INT((int)n, 0);
  /* A room without a name cannot: code 0. */
  uint64_t unnamed = rc_server_room_new(s);
  RC_CHECK_EQ_INT(rc_server_recover_begin(s, 78, unnamed), 0);
  ev = wait_event(s, RC_EV_RECOVER, 0, 0, 10);
  RC_CHECK(ev != NULL && ev->conn == 78);
  free(ev);
  /* A pending join still there at the end is freed with the server. */
  RC_CHECK_EQ_INT(rc_server_recover_begin(s, 79, room), 0);
  free(wait_event(s, RC_EV_RECOVER, 0, 1, 10));
  rc_server_stop(s, 1001, "bye");
  rc_server_free(s);
}

/* --- through TLS ------------------------------------------------------------
 */

static pid_t tls_pid;
static char tls_dir[64];
static char tls_cert[128], tls_other[128], tls_key[128], tls_other_key[128];

static void stop_tls_redis(void) {
  if (tls_pid > 0) {
    kill(tls_pid, SIGTERM);
    (void)waitpid(tls_pid, NULL, 0);
    tls_pid = 0;
  }
  const char *files[] = {tls_cert, tls_other, tls_key, tls_other_key};
  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
    if (files[i][0] != '\0')
      (void)unlink(files[i]);
  if (tls_dir[0] != '\0')
    (void)rmdir(tls_dir);
}

/* A self-signed certificate for IP:127.0.0.1 (its own root) and its key. */
static int make_cert(const char *cert, const char *key) {
  char cmd[512];
  int n = snprintf(cmd, sizeof(cmd),
                   "openssl req -x509 -newkey ec -pkeyopt "
                   "ec_paramgen_curve:P-256 -nodes -keyout %s -out %s -days 1 "
                   "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 "
                   ">/dev/null 2>&1",
                   key, cert);
  return n > 0 && (size_t)n < sizeof(cmd) && system(cmd) == 0;
}

/* The TLS port of a redis-server serving TLS only on tls_cert, started on
 * first use; 0 if it cannot be. tls_other is a root it does not lead to. */
static int tls_redis_port(void) {
  static int port;
  if (port != 0)
    return port;
  (void)snprintf(tls_dir, sizeof(tls_dir), "/tmp/rc_test_bp_tls.XXXXXX");
  if (mkdtemp(tls_dir) == NULL) {
    tls_dir[0] = '\0';
    return 0;
  }
  atexit(stop_tls_redis);
  (void)snprintf(tls_cert, sizeof(tls_cert), "%s/redis.pem", tls_dir);
  (void)snprintf(tls_key, sizeof(tls_key), "%s/redis.key", tls_dir);
  (void)snprintf(tls_other, sizeof(tls_other), "%s/other.pem", tls_dir);
  (void)snprintf(tls_other_key, sizeof(tls_other_key), "%s/other.key", tls_dir);
  if (!make_cert(tls_cert, tls_key) || !make_cert(tls_other, tls_other_key)) {
    fprintf(stderr, "openssl could not make a certificate\n");
    return 0;
  }
  int p = free_port();
  char portstr[16];
  snprintf(portstr, sizeof(portstr), "%d", p);
  const char *args[] = {"--port",
                        "0",
                        "--tls-port",
                        portstr,
                        "--tls-cert-file",
                        tls_cert,
                        "--tls-key-file",
                        tls_key,
                        "--tls-ca-cert-file",
                        tls_cert,
                        "--tls-auth-clients",
                        "no",
                        NULL};
  port = spawn_redis(args, p, &tls_pid);
  if (port == 0)
    fprintf(stderr, "redis-server did not serve TLS\n");
  return port;
}

/* Whether ev's text holds what. */
static int says(const rc_event *ev, const char *what) {
  return ev != NULL && memmem(ev->data, ev->len, what, strlen(what)) != NULL;
}

RC_TEST(through_tls_with_the_right_root_and_refused_with_another) {
  int port = tls_redis_port();
  RC_ASSERT(port != 0);
  rc_backplane_tls tls = {RC_BP_TLS_VERIFY, tls_cert, NULL, NULL};
  rc_server *s = server_tls(port, "ctest:", &tls);
  RC_ASSERT(s != NULL);
  rc_event *up = wait_event(s, RC_EV_BACKPLANE, 0, RC_BACKPLANE_UP, 30);
  RC_CHECK(up != NULL);
  free(up);
  const char *ping[] = {"PING"};
  RC_CHECK_EQ_INT(redis_cmd(s, 1, 1, ping), 0);
  rc_event *ev = wait_event(s, RC_EV_REDIS, 1, -1, 30);
  RC_CHECK(ev != NULL && ev->data[0] == RC_REPLY_STATUS &&
           memcmp(ev->data + 5, "PONG", 4) == 0);
  free(ev);
  rc_server_stop(s, 1001, "bye");
  rc_server_free(s);

  /* A root Redis's certificate does not lead to: each attempt fails in
   * the handshake and says why; stopping does not wait for Redis. */
  tls.ca_certs = tls_other;
  s = server_tls(port, "ctest:", &tls);
  RC_ASSERT(s != NULL);
  ev = wait_event(s, RC_EV_BACKPLANE, 0, RC_BACKPLANE_RETRY, 30);
  RC_CHECK(says(ev, "certificate verify failed"));
  free(ev);
  rc_server_stop(s, 1001, "bye");
  rc_server_free(s);

  /* TLS to a Redis that does not speak it: refused too. */
  int plain = redis_port();
  RC_ASSERT(plain != 0);
  tls = (rc_backplane_tls){RC_BP_TLS_NO_CHECK, NULL, NULL, NULL};
  s = server_tls(plain, "ctest:", &tls);
  RC_ASSERT(s != NULL);
  ev = wait_event(s, RC_EV_BACKPLANE, 0, RC_BACKPLANE_RETRY, 30);
  RC_CHECK(ev != NULL);
  free(ev);
  rc_server_stop(s, 1001, "bye");
  rc_server_free(s);
}

RC_TEST(backplane_tls_options_are_checked) {
  char err[256];
  rc_backplane_tls tls = {RC_BP_TLS_VERIFY, "/nonexistent/ca.pem", NULL, NULL};
  RC_CHECK_EQ_INT(rc_backplane_tls_check(&tls, err, sizeof(err)), -1);
  RC_CHECK(strstr(err, "/nonexistent/ca.pem") != NULL);
  rc_server *s = rc_server_new(NULL); /* no backplane */
  RC_ASSERT(s != NULL);
  tls.ca_certs = NULL;
  RC_CHECK_EQ_INT(rc_server_backplane_tls(s, &tls, err, sizeof(err)), -1);
  RC_CHECK(strstr(err, "no backplane") != NULL);
  rc_server_free(s);
}

/* --- a Redis Cluster ---------------------------------------------------------
 */

static pid_t cluster_pid;
static char cluster_conf[64];

static void stop_cluster(void) {
  if (cluster_pid > 0) {
    kill(cluster_pid, SIGTERM);
    (void)waitpid(cluster_pid, NULL, 0);
    cluster_pid = 0;
  }
  (void)unlink(cluster_conf);
}

/* Sends one inline command to port and returns whether the first reply
 * holds want. */
static int ask_redis(int port, const char *cmd, const char *want) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  char buf[4096];
  ssize_t n = -1;
  if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
      write(fd, cmd, strlen(cmd)) == (ssize_t)strlen(cmd)) {
    usleep(50000);
    n = read(fd, buf, sizeof(buf) - 1);
  }
  if (fd >= 0)
    close(fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  return strstr(buf, want) != NULL;
}

/* A one-node Redis Cluster owning every slot; its port, or 0. */
static int cluster_port(void) {
  int port = free_port(), bus = free_port();
  char portstr[16], busstr[16];
  snprintf(portstr, sizeof(portstr), "%d", port);
  /* Its bus on a port of its own: the default, port + 10000, does not
   * exist above 55535. */
  snprintf(busstr, sizeof(busstr), "%d", bus == port ? free_port() : bus);
  /* In --dir /tmp, where stop_cluster removes it. */
  snprintf(cluster_conf, sizeof(cluster_conf), "/tmp/rc-ctest-nodes-%d.conf",
           port);
  const char *args[] = {"--port",
                        portstr,
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        cluster_conf,
                        "--cluster-port",
                        busstr,
                        NULL};
  atexit(stop_cluster);
  if (spawn_redis(args, port, &cluster_pid) == 0 ||
      !ask_redis(port, "CLUSTER ADDSLOTSRANGE 0 16383\r\n", "+OK"))
    return 0;
  for (int i = 0; i < 200; i++) {
    if (ask_redis(port, "CLUSTER INFO\r\n", "cluster_state:ok"))
      return port;
    usleep(50000);
  }
  return 0;
}

static rc_server *cluster_server(const char *seeds, int db) {
  rc_config cfg;
  rc_config_default(&cfg);
  cfg.backplane_host = seeds;
  cfg.backplane_cluster = 1;
  cfg.backplane_db = db;
  cfg.backplane_prefix = "ctest:";
  return rc_server_new(&cfg);
}

/* The map from the seeds (one of them not there), a room's channel with
 * its tag SSUBSCRIBEd on its shard, commands routed by their key; a stop
 * that frees every shard (make memcheck). */
RC_TEST(on_a_cluster_rooms_are_sharded_and_commands_routed) {
  int port = cluster_port();
  RC_ASSERT(port != 0);
  char seeds[64];
  snprintf(seeds, sizeof(seeds), "127.0.0.1:%d,127.0.0.1:%d", free_port(),
           port);
  rc_server *s = cluster_server(seeds, 0);
  RC_ASSERT(s != NULL);
  int bound = 0;
  RC_ASSERT(rc_server_listen(s, "127.0.0.1", 0, 0, &bound) == 0);
  rc_event *up = wait_event(s, RC_EV_BACKPLANE, 0, RC_BACKPLANE_UP, 10);
  RC_CHECK(up != NULL &&
           strstr((const char *)up->data, "Redis Cluster of 1 shards"));
  free(up);

  const char *set[] = {"SET", "ctest:{k}", "v"};
  RC_CHECK_EQ_INT(redis_cmd(s, 7, 3, set), 0);
  rc_event *ev = wait_event(s, RC_EV_REDIS, 7, -1, 10);
  RC_CHECK(ev != NULL && ev->data[0] == RC_REPLY_STATUS);
  free(ev);
  const char *eval[] = {"EVAL", "return redis.call('GET', KEYS[1])", "1",
                        "ctest:{k}"};
  RC_CHECK_EQ_INT(redis_cmd(s, 8, 4, eval), 0);
  ev = wait_event(s, RC_EV_REDIS, 8, -1, 10);
  RC_CHECK(ev != NULL && ev->data[0] == RC_REPLY_STRING && ev->data[5] == 'v');
  free(ev);

  uint64_t room = rc_server_room_new(s);
  RC_CHECK_EQ_INT(rc_server_room_name(s, room, "hist", 4), 0);
  RC_CHECK_EQ_INT(rc_server_recover_begin(s, 77, room), 0);
  ev = wait_event(s, RC_EV_RECOVER, 0, 1, 10);
  RC_CHECK(ev != NULL && ev->conn == 77);
  free(ev);
  char channel[32] = {0};
  (void)rc_slot_tag("ctest:|hist", 11, channel);
  memcpy(channel + RC_SLOT_TAG_LEN, "ctest:|hist", 11);
  const char *numsub[] = {"PUBSUB", "SHARDNUMSUB", channel};
  RC_CHECK_EQ_INT(redis_cmd(s, 9, 3, numsub), 0);
  ev = wait_event(s, RC_EV_REDIS, 9, -1, 10);
  RC_CHECK(ev != NULL && ev->data[0] == RC_REPLY_ARRAY &&
           ev->data[ev->len - 9] == RC_REPLY_INTEGER &&
           ev->data[ev->len - 8] == 1); /* the count, little-endian: 1 */
  free(ev);
  rc_server_stop(s, 1001, "bye");
  rc_server_free(s);
}

RC_TEST(cluster_seeds_are_checked) {
  RC_CHECK_EQ_INT(rc_backplane_seeds_check("a:1,[::1]:65535"), 0);
  RC_CHECK_EQ_INT(rc_backplane_seeds_check("a:1,b:"), -EINVAL);
  RC_CHECK_EQ_INT(rc_backplane_seeds_check("a:0"), -EINVAL);
  RC_CHECK_EQ_INT(rc_backplane_seeds_check("[::1:7000"), -EINVAL);
  RC_CHECK_EQ_INT(rc_backplane_seeds_check("a:+7"), -EINVAL);
  RC_CHECK(cluster_server("127.0.0.1", 0) == NULL);       /* no port */
  RC_CHECK(cluster_server("127.0.0.1:1,:2", 0) == NULL);  /* no host */
  RC_CHECK(cluster_server("127.0.0.1:70000", 0) == NULL); /* a bad port */
  RC_CHECK(cluster_server("[::1]:7000,a:1", 1) == NULL);  /* db 1 */
  rc_server *s = cluster_server("[::1]:7000,a:1", 0);
  RC_CHECK(s != NULL);
  rc_server_free(s);
}

RC_TEST_MAIN(
    RC_CASE(a_recovering_join_subscribes_the_room_and_is_told_when),
    RC_CASE(connects_and_answers_commands),
    RC_CASE(prefixes_up_to_200_bytes_name_the_sentinel_exactly),
    RC_CASE(publishes_to_a_named_room_without_members),
    RC_CASE(a_redis_that_is_not_there_is_retried_and_stop_does_not_hang),
    RC_CASE(without_a_backplane_names_are_accepted_and_commands_refused),
    RC_CASE(through_tls_with_the_right_root_and_refused_with_another),
    RC_CASE(backplane_tls_options_are_checked),
    RC_CASE(on_a_cluster_rooms_are_sharded_and_commands_routed),
    RC_CASE(cluster_seeds_are_checked))
