/* rc_server.c - the server object: configuration, the loop thread and its
 * turn, the loops over every connection (accepting, the sweep, the stop,
 * resuming held readers), the dispatch of commands, and the orderly stop.
 * A socket accepted by another server (rc_server_adopt) becomes a
 * connection here too, through the same steps as one accepted from the
 * listener (server_conn_new, server_conn_admit), its first bytes fed in as
 * a read would feed them.
 *
 * Handles owned by the loop: the listener (when listening), the async
 * wake-up, the check handle that ends every turn (flush writes, hand over
 * events), the sweep timer (deadlines and pings) and the stop timer. The
 * loop ends when all of them and every connection have been closed.
 *
 * This file is the top of the loop's files: it calls the others (the
 * handshake, the client, rooms, connections, the mailbox, the backplane)
 * and none of them calls it. A command that names a connection is carried
 * out through the connection's role (c->role) where the two sides differ.
 */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netdb.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop/rc_internal.h"
#include "proto/rc_frame.h"
#include "proto/rc_http.h"

#define RC__SWEEP_MS 250

const char *rc_strerror(int err) { return uv_strerror(err); }

void rc_config_default(rc_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->max_message_size = 1u << 20;
  cfg->max_queue_bytes = 1u << 20;
  cfg->ping_interval = 20.0;
  cfg->ping_timeout = 20.0;
  cfg->handshake_timeout = 10.0;
  cfg->close_timeout = 5.0;
  cfg->max_header_bytes = 8192;
  cfg->max_headers = 100;
  cfg->http_requests = 0;
  cfg->backlog = 1024;
  cfg->max_event_bytes = (size_t)64 << 20;
  cfg->backplane_port = 6379;
  cfg->backplane_buffer = (size_t)1 << 20;
  cfg->compression = 1;
  cfg->compression_threshold = 128;
}

/* A random id; the clock and the address as a fallback. */
static uint64_t new_server_id(const rc_server *s) {
  uint64_t id = 0;
  if (uv_random(NULL, NULL, &id, sizeof(id), 0, NULL) != 0 || id == 0)
    id =
        uv_hrtime() ^ ((uint64_t)(uintptr_t)s << 16) ^ (uint64_t)uv_os_getpid();
  return id;
}

rc_server *rc_server_new(const rc_config *cfg) {
  rc_server *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return NULL;
  if (cfg != NULL)
    s->cfg = *cfg;
  else
    rc_config_default(&s->cfg);
  if (s->cfg.max_headers > RC_HTTP_MAX_HEADERS_CAP)
    s->cfg.max_headers = RC_HTTP_MAX_HEADERS_CAP;
  if (s->cfg.max_header_bytes > 60000)
    s->cfg.max_header_bytes = 60000; /* key offsets are 16-bit */
  s->limits.max_message = s->cfg.max_message_size;
  s->limits.max_frags = rc__max_frags(s->cfg.max_message_size);
  s->limits.ping_ms = rc__secs_ms(s->cfg.ping_interval);
  s->limits.pong_ms = rc__secs_ms(s->cfg.ping_timeout);
  s->limits.idle_ms = rc__secs_ms(s->cfg.idle_timeout);
  s->ev_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s->ev_fd < 0)
    goto fail_fd;
  if (uv_mutex_init(&s->cmd_lock) != 0)
    goto fail_cmd_lock;
  if (uv_mutex_init(&s->ev_lock) != 0)
    goto fail_ev_lock;
  if (uv_mutex_init(&s->client_lock) != 0)
    goto fail_client_lock;
  if (uv_mutex_init(&s->tls_lock) != 0)
    goto fail_tls_lock;
  atomic_init(&s->next_room, 0);
  s->id = new_server_id(s);
  if (rc__bp_create(s) != 0)
    goto fail_bp;
  return s;

fail_bp:
  rc__bp_free(s);
  uv_mutex_destroy(&s->tls_lock);
fail_tls_lock:
  uv_mutex_destroy(&s->client_lock);
fail_client_lock:
  uv_mutex_destroy(&s->ev_lock);
fail_ev_lock:
  uv_mutex_destroy(&s->cmd_lock);
fail_cmd_lock:
  close(s->ev_fd);
fail_fd:
  free(s);
  return NULL;
}

int rc_server_fd(const rc_server *s) { return s->ev_fd; }

/* --- the loop thread ----------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  rc_server *s = h->loop->data;
  s->open_handles--;
}

static void close_loop_handles(rc_server *s) {
  if (s->handles_closed)
    return;
  s->handles_closed = 1;
  uv_mutex_lock(&s->cmd_lock);
  s->cmd_closed = 1;
  rc_cmd *left = s->cmd_head;
  s->cmd_head = s->cmd_tail = NULL;
  uv_close((uv_handle_t *)&s->wake, on_handle_closed);
  uv_mutex_unlock(&s->cmd_lock);
  while (left != NULL) {
    rc_cmd *next = left->next;
    if (left->type == RC_CMD_CONNECT) /* its embedder awaits an event */
      rc__client_unstarted(s, left->conn);
    else if (left->type == RC_CMD_ADOPT) /* the same; the fd closes below */
      rc__event_close(s, left->conn, 1006, "server shutting down",
                      strlen("server shutting down"));
    rc__cmd_free(left);
    left = next;
  }
  uv_close((uv_handle_t *)&s->flush, on_handle_closed);
  uv_close((uv_handle_t *)&s->sweep, on_handle_closed);
  uv_close((uv_handle_t *)&s->stop_timer, on_handle_closed);
  if (s->bp != NULL)
    rc__bp_close(s);
  rc__events_hand_over(s);
}

static void maybe_finish(rc_server *s) {
  if (s->stopping && s->nconns == 0)
    close_loop_handles(s);
}

/* Readers held this turn (rc_conn.c's starve) set `starving` before this
 * looks at the bytes: paired with rc_server_poll(), either the poll that
 * emptied the queue sees `starving`, or this sees its bytes. */
static void recheck_starving(rc_server *s) {
  if (atomic_load(&s->ev_bytes) <= s->cfg.max_event_bytes / 2 &&
      atomic_exchange(&s->starving, 0))
    rc__resume_starved(s);
}

void rc__note_writes(rc_server *s, uint64_t t0) {
  uint64_t took = uv_hrtime() - t0;
  if (took >= RC__LONG_FLUSH_NS) {
    s->long_flush_ns = took;
    s->long_flush_at = uv_now(&s->loop);
  }
}

static void on_check(uv_check_t *h) {
  rc_server *s = h->data;
  if (s->nstarved > 0)
    recheck_starving(s);
  if (s->bp != NULL)
    rc__bp_release(s, 0);
  /* The turn's events go first: the embedder handles them while the
   * writes go out. Then what the writes made (closes). */
  rc__events_hand_over(s);
  uint64_t t0 = uv_hrtime();
  rc__flush_dirty(s);
  rc__note_writes(s, t0);
  rc__events_hand_over(s);
  maybe_finish(s);
}

/* Parser contexts are 13 KiB each, and every handshake held its request
 * head and made its events: once many of these have been freed, hand the
 * free pages back to the system, or an idle server keeps the RSS of its
 * busiest moment (at 10,000 members, the handshakes' leftovers were 70 bytes
 * a member of the idle server's RSS). */
#define RC__TRIM_AFTER 512

static void on_sweep(uv_timer_t *t) {
  rc_server *s = t->data;
  rc__sweep(s, uv_now(&s->loop));
  /* Pings, closes and close events made by the sweep go now: the check
   * phase would run only after the next poll, which may sleep until the
   * next tick. */
  rc__flush_dirty(s);
  rc__events_hand_over(s);
#ifdef __GLIBC__
  if (s->transient_freed >= RC__TRIM_AFTER) {
    s->transient_freed = 0;
    (void)malloc_trim(0); /* returns 1 if memory was released: no error */
  }
#endif
}

static void on_stop_timer(uv_timer_t *t) {
  rc_server *s = t->data;
  /* The close handshakes had their time: cut what is left. */
  for (uint32_t i = 0; i < s->nslots; i++)
    if (s->slots[i] != NULL)
      rc__conn_abort(s->slots[i]);
}

static void on_listener_closed(uv_handle_t *h) {
  rc_server *s = h->data;
  s->open_handles--;
}

static void stop_begin(rc_server *s, rc_cmd *cmd) {
  if (s->stopping)
    return;
  s->stopping = 1;
  s->stop_code = (unsigned)cmd->status;
  snprintf(s->stop_reason, sizeof(s->stop_reason), "%s",
           cmd->text ? cmd->text : "");
  if (s->has_listener)
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
  rc__stop_begin(s);
  uint64_t ms = (uint64_t)(s->cfg.close_timeout * 1000.0) + 1;
  if (uv_timer_start(&s->stop_timer, on_stop_timer, ms, 0) != 0)
    on_stop_timer(&s->stop_timer);
}

/* Publishes a tail run (see rc__room_publish_run) and frees its commands. */
static void publish_run(rc_server *s, rc_cmd *cmd) {
  rc_buf *bufs[RC__RUN_MAX];
  uint64_t exclude[RC__RUN_MAX];
  while (cmd != NULL) {
    uint64_t room = cmd->room;
    uint32_t n = 0;
    rc_cmd *first = cmd;
    for (; cmd != NULL && n < RC__RUN_MAX; cmd = cmd->next, n++) {
      bufs[n] = cmd->buf;
      exclude[n] = cmd->exclude;
    }
    rc__room_publish_run(s, room, bufs, exclude, n);
    while (first != cmd) {
      rc_cmd *next = first->next;
      rc__cmd_free(first);
      first = next;
    }
  }
}

static void on_wake(uv_async_t *h) {
  rc_server *s = h->data;
  atomic_fetch_add_explicit(&s->st_wakes, 1, memory_order_relaxed);
  if (atomic_exchange(&s->resume_now, 0))
    rc__resume_starved(s);
  rc_cmd *cmd = rc__cmd_take_all(s);
  if (s->bp != NULL)
    rc__bp_before_commands(s, cmd);
  /* Publishes that end the batch are written to idle members at once:
   * nothing else queued in this turn would share their system call. */
  rc_cmd *run = rc__cmd_tail_run(cmd);
  while (cmd != run) {
    rc_cmd *next = cmd->next;
    switch (cmd->type) {
    case RC_CMD_PUBLISH:
      rc__room_publish(s, cmd->room, cmd->buf, cmd->exclude);
      break;
    case RC_CMD_BROADCAST:
      rc__room_broadcast(s, cmd->rooms, cmd->nrooms, cmd->buf, cmd->exclude);
      break;
    case RC_CMD_ROOM_FREE:
      rc__room_free(s, cmd->room);
      break;
    case RC_CMD_ROOM_NAME:
    case RC_CMD_REDIS:
    case RC_CMD_RECOVER_BEGIN:
    case RC_CMD_RECOVER_END:
      rc__bp_command(s, cmd); /* answers a recovery without a backplane */
      break;
    case RC_CMD_STOP:
      stop_begin(s, cmd);
      break;
    case RC_CMD_CONNECT:
      rc__client_start(s, cmd->conn);
      break;
    case RC_CMD_ADOPT:
      rc__server_adopt(s, cmd);
      break;
    default:
      rc__conn_command(s, cmd);
      break;
    }
    rc__cmd_free(cmd);
    cmd = next;
  }
  publish_run(s, run);
}

static void loop_main(void *arg) {
  rc_server *s = arg;
  /* Returns when every handle has been closed (see close_loop_handles). */
  (void)uv_run(&s->loop, UV_RUN_DEFAULT);
  s->stopped = 1;
}

/* An address literal, or a name resolved before the loop thread exists
 * (uv_getaddrinfo without a callback runs synchronously). */
static int resolve(uv_loop_t *loop, const char *host, int port,
                   struct sockaddr_storage *ss) {
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
    return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
    return 0;
  uv_getaddrinfo_t req;
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  int r = uv_getaddrinfo(loop, &req, NULL, host, NULL, &hints);
  if (r != 0)
    return r;
  r = UV_EAI_NONAME;
  for (struct addrinfo *ai = req.addrinfo; ai != NULL; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6) {
      memcpy(ss, ai->ai_addr, ai->ai_addrlen);
      if (ai->ai_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
      else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
      r = 0;
      break;
    }
  }
  uv_freeaddrinfo(req.addrinfo);
  return r;
}

/* Initialises the loop's own handles and starts the thread, on a loop that
 * uv_loop_init has made (with the listener already bound, if any). On
 * failure closes every handle, the listener too, and the loop. */
static int start_loop(rc_server *s) {
  int r = uv_async_init(&s->loop, &s->wake, on_wake);
  if (r != 0)
    goto fail_loop;
  s->wake.data = s;
  s->open_handles++;
  /* From here on the handles cannot fail to initialise. */
  (void)uv_check_init(&s->loop, &s->flush);
  s->flush.data = s;
  s->open_handles++;
  (void)uv_timer_init(&s->loop, &s->sweep);
  s->sweep.data = s;
  s->open_handles++;
  (void)uv_timer_init(&s->loop, &s->stop_timer);
  s->stop_timer.data = s;
  s->open_handles++;
  if ((r = uv_check_start(&s->flush, on_check)) != 0 ||
      (r = uv_timer_start(&s->sweep, on_sweep, RC__SWEEP_MS, RC__SWEEP_MS)) !=
          0)
    goto fail_all;
  /* The stop timer must not keep the loop alive on its own. */
  uv_unref((uv_handle_t *)&s->stop_timer);
  if (s->bp != NULL)
    rc__bp_start(s);
  if ((r = uv_thread_create(&s->thread, loop_main, s)) != 0)
    goto fail_all;
  s->started = 1;
  return 0;

fail_all:
  uv_close((uv_handle_t *)&s->wake, NULL);
  uv_close((uv_handle_t *)&s->flush, NULL);
  uv_close((uv_handle_t *)&s->sweep, NULL);
  uv_close((uv_handle_t *)&s->stop_timer, NULL);
fail_loop:
  if (s->has_listener)
    uv_close((uv_handle_t *)&s->listener, NULL);
  s->has_listener = 0;
  (void)uv_run(&s->loop, UV_RUN_DEFAULT);
  (void)uv_loop_close(&s->loop);
  s->open_handles = 0;
  return r;
}

int rc_server_start(rc_server *s) {
  if (s->started)
    return UV_EALREADY;
  int r = uv_loop_init(&s->loop);
  if (r != 0)
    return r;
  s->loop.data = s;
  return start_loop(s);
}

int rc_server_listen(rc_server *s, const char *host, int port, int backlog,
                     int *bound_port) {
  return rc_server_listen_flags(s, host, port, backlog, 0, bound_port);
}

/* The listener's own socket with SO_REUSEPORT set, opened into the handle
 * before uv_tcp_bind (libuv 1.44 has no UV_TCP_REUSEPORT). Returns 0 or a
 * negative libuv error; on failure the descriptor is closed. */
static int open_reuseport(uv_tcp_t *listener, int family) {
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int on = 1;
  int r = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0)
    r = -errno;
  else
    r = uv_tcp_open(listener, (uv_os_sock_t)fd);
  if (r != 0)
    (void)close(fd);
  return r;
}

int rc_server_listen_flags(rc_server *s, const char *host, int port,
                           int backlog, unsigned flags, int *bound_port) {
  if (s->started)
    return UV_EALREADY;
  if (backlog > 0)
    s->cfg.backlog = backlog;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  int r = uv_loop_init(&s->loop);
  if (r != 0)
    return r;
  s->loop.data = s;
  if ((r = resolve(&s->loop, host, port, &ss)) != 0)
    goto fail_loop;
  /* Handles are initialised here, before the loop thread exists. */
  if ((r = uv_tcp_init(&s->loop, &s->listener)) != 0)
    goto fail_loop;
  s->listener.data = s;
  s->has_listener = 1;
  s->open_handles++;
  if ((flags & RC_LISTEN_REUSEPORT) != 0 &&
      (r = open_reuseport(&s->listener, ss.ss_family)) != 0)
    goto fail_listener;
  if ((r = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0)) != 0 ||
      (r = uv_listen((uv_stream_t *)&s->listener,
                     s->cfg.backlog > 0 ? s->cfg.backlog : 1024,
                     rc__server_on_connection)) != 0)
    goto fail_listener;
  struct sockaddr_storage bound;
  int blen = sizeof(bound);
  if ((r = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound,
                              &blen)) != 0)
    goto fail_listener;
  *bound_port = ntohs(bound.ss_family == AF_INET6
                          ? ((struct sockaddr_in6 *)&bound)->sin6_port
                          : ((struct sockaddr_in *)&bound)->sin_port);
  return start_loop(s);

fail_listener:
  uv_close((uv_handle_t *)&s->listener, NULL);
  s->has_listener = 0;
  (void)uv_run(&s->loop, UV_RUN_DEFAULT);
fail_loop:
  (void)uv_loop_close(&s->loop);
  s->open_handles = 0;
  return r;
}

void rc_server_stop(rc_server *s, unsigned code, const char *reason) {
  if (!s->started || s->joined)
    return;
  rc_cmd *cmd = calloc(1, sizeof(*cmd));
  if (cmd != NULL) {
    cmd->type = RC_CMD_STOP;
    cmd->status = (int)code;
    cmd->text = strdup(reason ? reason : "");
    (void)rc__cmd_push(s, cmd, 1); /* refused only when the loop is over */
  }
  (void)uv_thread_join(&s->thread);
  s->joined = 1;
  (void)uv_loop_close(&s->loop);
}

void rc_server_free(rc_server *s) {
  if (s == NULL)
    return;
  if (s->started && !s->joined)
    rc_server_stop(s, 1001, "going away");
  rc_cmd *cmd = s->cmd_head;
  while (cmd != NULL) {
    rc_cmd *next = cmd->next;
    rc__cmd_free(cmd);
    cmd = next;
  }
  rc_events_free(s->ev_head);
  rc_events_free(s->batch_head);
  rc__rooms_destroy(s);
  rc__clients_destroy(s);
  rc__bp_free(s);
  rc__idmap_free(&s->adopted);
  rc_deflater_free(s->deflater);
  rc_inflater_free(s->inflater);
  free(s->zbuf);
  free(s->slots);
  free(s->gens);
  free(s->free_slots);
  uv_mutex_destroy(&s->cmd_lock);
  uv_mutex_destroy(&s->ev_lock);
  uv_mutex_destroy(&s->client_lock);
  uv_mutex_destroy(&s->tls_lock);
  rc_tls_ctx_free(s->tls_server);
  close(s->ev_fd);
  free(s);
}

/* --- TLS ----------------------------------------------------------------- */

static rc_tls_ctx *tls_ctx_of(const rc_server_tls *tls, char *err,
                              size_t errlen) {
  rc_tls_server_opts o = {
      .certfile = tls->certfile,
      .keyfile = tls->keyfile,
      .password = tls->password,
      .ca_certs = tls->ca_certs,
      .cert_reqs = tls->cert_reqs == RC_CERT_REQUIRED   ? RC_TLS_CERT_REQUIRED
                   : tls->cert_reqs == RC_CERT_OPTIONAL ? RC_TLS_CERT_OPTIONAL
                                                        : RC_TLS_CERT_NONE,
  };
  return rc_tls_ctx_server(&o, err, errlen);
}

int rc_tls_check(const rc_server_tls *tls, char *err, size_t errlen) {
  rc_tls_ctx *ctx = tls_ctx_of(tls, err, errlen);
  if (ctx == NULL)
    return -1;
  rc_tls_ctx_free(ctx);
  return 0;
}

/* The context is swapped under tls_lock, which the accept takes to make a
 * filter with it; a filter keeps its context's certificate alive, so the
 * old one can go at once. */
int rc_server_set_tls(rc_server *s, const rc_server_tls *tls, char *err,
                      size_t errlen) {
  rc_tls_ctx *ctx = tls_ctx_of(tls, err, errlen);
  if (ctx == NULL)
    return -1;
  uv_mutex_lock(&s->tls_lock);
  rc_tls_ctx *old = s->tls_server;
  s->tls_server = ctx;
  uv_mutex_unlock(&s->tls_lock);
  rc_tls_ctx_free(old);
  return 0;
}

/* A filter for a connection just accepted (NULL: plain, or no memory:
 * *failed is then set). */
static rc_tls *tls_filter(rc_server *s, int *failed) {
  *failed = 0;
  uv_mutex_lock(&s->tls_lock);
  rc_tls *t = s->tls_server != NULL
                  ? rc_tls_new(s->tls_server, RC_TLS_SERVER, NULL)
                  : NULL;
  *failed = s->tls_server != NULL && t == NULL;
  uv_mutex_unlock(&s->tls_lock);
  if (t != NULL)
    rc_tls_set_headroom(t, RC__BUF_HEADROOM);
  return t;
}

void rc_server_stats(rc_server *s, rc_stats *out) {
  out->connections = atomic_load(&s->st_connections);
  out->accepted_total = atomic_load(&s->st_accepted);
  out->rooms = atomic_load(&s->next_room);
  out->messages_in = atomic_load(&s->st_messages_in);
  out->deliveries = atomic_load(&s->st_deliveries);
  out->slow_consumer_closes = atomic_load(&s->st_slow);
  out->parsers = atomic_load(&s->st_parsers);
  out->writes = atomic_load(&s->st_writes);
  out->wakeups = atomic_load(&s->st_wakes);
  out->messages_dropped = atomic_load(&s->st_dropped);
  out->connections_refused = atomic_load(&s->st_refused);
  out->idle_closes = atomic_load(&s->st_idle);
  out->fragment_closes = atomic_load(&s->st_frag);
  out->event_bytes = atomic_load(&s->ev_bytes);
  out->reads_held = atomic_load(&s->st_starved);
  out->clients = atomic_load(&s->st_clients);
  out->client_connects = atomic_load(&s->st_client_connects);
  out->backplane_up = atomic_load(&s->st_bp_up);
  out->backplane_published = atomic_load(&s->st_bp_published);
  out->backplane_received = atomic_load(&s->st_bp_received);
  out->backplane_reconnects = atomic_load(&s->st_bp_reconnects);
  out->backplane_buffered = atomic_load(&s->st_bp_buffered);
  out->backplane_dropped = atomic_load(&s->st_bp_dropped);
  out->backplane_channels = atomic_load(&s->st_bp_channels);
  out->backplane_invalid = atomic_load(&s->st_bp_invalid);
  out->backplane_coalesced = atomic_load(&s->st_bp_coalesced);
  out->adopted_total = atomic_load(&s->st_adopted);
  out->deflate_connections = atomic_load(&s->st_pmd_conns);
  out->messages_deflated = atomic_load(&s->st_deflated);
  out->messages_inflated = atomic_load(&s->st_inflated);
  out->tls_connections = atomic_load(&s->st_tls_conns);
  out->tls_handshakes = atomic_load(&s->st_tls_handshakes);
  out->tls_handshake_failures = atomic_load(&s->st_tls_failures);
  out->bytes_out = atomic_load(&s->st_bytes_out);
  out->rooms_open = atomic_load(&s->st_rooms_open);
  out->refused_bad_request =
      atomic_load(&s->st_refusals[RC__REFUSE_BAD_REQUEST]);
  out->refused_method = atomic_load(&s->st_refusals[RC__REFUSE_METHOD]);
  out->refused_version = atomic_load(&s->st_refusals[RC__REFUSE_VERSION]);
  out->refused_not_websocket =
      atomic_load(&s->st_refusals[RC__REFUSE_NOT_WEBSOCKET]);
  out->refused_too_large = atomic_load(&s->st_refusals[RC__REFUSE_TOO_LARGE]);
  out->refused_shutting_down =
      atomic_load(&s->st_refusals[RC__REFUSE_SHUTTING_DOWN]);
  out->refused_timeout = atomic_load(&s->st_refusals[RC__REFUSE_TIMEOUT]);
}

/* --- connections: by id, accepting --------------------------------------- */

rc_conn *rc__conn_find(rc_server *s, uint64_t id) {
  if (id & RC__CLIENT_BIT)
    return rc__client_find(s, id);
  if (id & RC__ADOPT_BIT)
    return rc__conn_adopted_find(s, id);
  return rc__conn_slot_find(s, id);
}

/* A server-side connection's memory and tcp handle, or NULL. */
static rc_conn *server_conn_new(rc_server *s) {
  rc_conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return NULL;
  c->srv = s;
  c->role = &rc__server_role;
  if (uv_tcp_init(&s->loop, &c->tcp) != 0) {
    free(c);
    return NULL;
  }
  s->open_handles++;
  c->state = RC_CONN_HTTP;
  c->read_paused = 1;
  return c;
}

/* A connection whose socket is open and which has its id: counted, given
 * the handshake's deadline, then refused (stopping, max_connections) or
 * read. 1 when it reads. */
static int server_conn_admit(rc_server *s, rc_conn *c) {
  atomic_fetch_add_explicit(&s->st_connections, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->st_accepted, 1, memory_order_relaxed);
  (void)uv_tcp_nodelay(&c->tcp, 1); /* best effort */
  c->last_rx = rc__now_ms(s);
  c->deadline = rc__now_ms(s) + rc__secs_ms(s->cfg.handshake_timeout) + 1;
  if (s->stopping) {
    rc__refused(s, RC__REFUSE_SHUTTING_DOWN);
    /* An adopted connection (known) came with a request: it is answered. */
    if (c->known)
      rc__handshake_refuse(c, 503, NULL, "server shutting down");
    else
      rc__conn_abort(c);
    return 0;
  }
  if (s->cfg.max_connections != 0 && s->admitted >= s->cfg.max_connections) {
    /* Answered at once, without reading the request: a refused client
     * costs one small write, and the ones already served are untouched. */
    atomic_fetch_add_explicit(&s->st_refused, 1, memory_order_relaxed);
    rc__handshake_refuse(c, 503, "Retry-After: 1\r\n", "too many connections");
    return 0;
  }
  c->admitted = 1;
  s->admitted++;
  rc__conn_start_read(c);
  return 1;
}

void rc__server_on_connection(uv_stream_t *listener, int status) {
  rc_server *s = listener->data;
  if (status < 0)
    return; /* e.g. EMFILE: the loop retries when a descriptor frees up */
  rc_conn *c = server_conn_new(s);
  if (c == NULL)
    return;
  int no_tls = 0;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 ||
      (c->tls = tls_filter(s, &no_tls), no_tls) ||
      rc__conn_register(s, c) != 0) {
    c->state = RC_CONN_GONE;
    uv_close((uv_handle_t *)&c->tcp, rc__conn_closed);
    return;
  }
  (void)server_conn_admit(s, c);
}

/* RC_CMD_ADOPT: a socket accepted elsewhere becomes a connection like an
 * accepted one, and the bytes read from it already go in first, as a read
 * would hand them over (rc__conn_received), before the socket's own. Its
 * embedder holds the id: every way out ends in RC_EV_CLOSE (c->known). */
void rc__server_adopt(rc_server *s, rc_cmd *cmd) {
  int fd = cmd->status;
  char why[96];
  rc_conn *c = server_conn_new(s);
  if (c == NULL) {
    static const char oom[] = "out of memory";
    rc__event_close(s, cmd->conn, 1006, oom, sizeof oom - 1);
    return; /* cmd keeps the fd: rc__cmd_free closes it */
  }
  int r = uv_tcp_open(&c->tcp, fd);
  if (r == 0) {
    cmd->status = -1; /* the handle owns the fd now: uv_close closes it */
    r = rc__conn_register_adopted(s, c, cmd->conn);
  }
  if (r != 0) {
    /* UV_EEXIST: the loop serves that fd already (adopted twice): it is
     * not ours to close. */
    if (r == UV_EEXIST)
      cmd->status = -1;
    c->state = RC_CONN_GONE;
    uv_close((uv_handle_t *)&c->tcp, rc__conn_closed);
    (void)snprintf(why, sizeof why, "cannot adopt the socket: %s",
                   uv_strerror(r));
    rc__event_close(s, cmd->conn, 1006, why, strlen(why));
    return;
  }
  c->known = 1;
  atomic_fetch_add_explicit(&s->st_adopted, 1, memory_order_relaxed);
  if (server_conn_admit(s, c) && cmd->text_len > 0)
    rc__conn_received(c, cmd->text, cmd->text_len);
}

/* --- loops over every connection ------------------------------------------ */

void rc__sweep(rc_server *s, uint64_t now) {
  for (uint32_t i = 0; i < s->nslots; i++)
    if (s->slots[i] != NULL)
      rc__conn_sweep(s->slots[i], now);
}

void rc__stop_begin(rc_server *s) {
  for (uint32_t i = 0; i < s->nslots; i++) {
    rc_conn *c = s->slots[i];
    if (c == NULL)
      continue;
    if (c->state == RC_CONN_OPEN)
      rc__conn_close_ws(c, s->stop_code, s->stop_reason,
                        strlen(s->stop_reason));
    else
      c->role->stop(c);
  }
}

void rc__resume_starved(rc_server *s) {
  uint64_t now = rc__now_ms(s);
  for (uint32_t i = 0; i < s->nslots && s->nstarved > 0; i++) {
    rc_conn *c = s->slots[i];
    if (c != NULL && c->starved)
      rc__conn_unstarve(c, now);
  }
}

/* --- commands that name a connection -------------------------------------- */

/* Joins are for the server's side, from the handshake to the open state
 * (a member chosen while the embedder decides whether to accept it). */
static int may_join(const rc_conn *c) {
  if (!c->role->joins_rooms)
    return 0;
  switch (c->state) {
  case RC_CONN_HTTP:
  case RC_CONN_PENDING:
  case RC_CONN_REQUEST:
  case RC_CONN_OPEN:
    return 1;
  default:
    return 0;
  }
}

void rc__server_join(rc_server *s, rc_conn *c, uint64_t room) {
  if (!may_join(c))
    return;
  rc_room *r = rc__room_get(s, room, 1);
  if (r == NULL) {
    rc__conn_fail(c);
    return;
  }
  rc__room_join(s, r, c); /* its mode came with its id */
}

void rc__conn_command(rc_server *s, rc_cmd *cmd) {
  rc_conn *c = rc__conn_find(s, cmd->conn);
  if (c == NULL)
    return;
  switch (cmd->type) {
  case RC_CMD_ACCEPT:
    if (c->state == RC_CONN_PENDING)
      rc__handshake_accept(c, cmd->text, cmd->text_len);
    break;
  case RC_CMD_RESPOND:
    if (c->state == RC_CONN_PENDING || c->state == RC_CONN_REQUEST)
      rc__conn_respond(c, cmd->buf);
    break;
  case RC_CMD_SEND:
    c->role->send(c, cmd->buf);
    break;
  case RC_CMD_CLOSE:
    if (c->state == RC_CONN_OPEN)
      rc__conn_close_ws(c, (unsigned)cmd->status, cmd->text, cmd->text_len);
    else
      c->role->cancel(c);
    break;
  case RC_CMD_JOIN:
    rc__server_join(s, c, cmd->room);
    break;
  case RC_CMD_PAUSE:
    rc__conn_hold(c, 1);
    break;
  case RC_CMD_RESUME:
    rc__conn_hold(c, 0);
    break;
  case RC_CMD_LEAVE: {
    rc_room *r = rc__room_get(s, cmd->room, 0);
    if (r != NULL)
      rc__room_leave(s, r, c);
    break;
  }
  default:
    break;
  }
}
