/* rc_client.c - client connections: rc_server_connect, DNS, TCP, TLS, the
 * opening handshake of RFC 6455 4.1, and what a client does differently
 * once open (masked frames, TLS records).
 *
 * A client connection is an rc_conn with an rc_client attached and
 * c->role = &rc__client_role (the table at the end of this file: rc_conn.c
 * reaches the client's side only through it). It lives in the server's
 * slot table like any other, so the sweep, the stop and the backpressure
 * treat it the same; its id is not its slot but one drawn by the
 * embedder's thread (RC__CLIENT_BIT set), found through srv->clients. From
 * RC_CONN_OPEN on, it reads frames through rc__conn_frames, with wslay in
 * client mode; what it sends goes through client_write, which encrypts when
 * the connection has TLS, so that its output queue holds bytes ready for
 * the socket either way and rc_conn.c's flush writes them unchanged.
 *
 * permessage-deflate (RFC 7692): offered in the request unless
 * opts->compression is 0; the server's answer is checked against the
 * offer (negotiated()) and sets c->pmd_rx and c->pmd_tx. The server's
 * compressed messages are inflated by rc_conn.c through client_inflate:
 * alone with the loop's inflater when the server answered
 * server_no_context_takeover (roomcast's does), else through the
 * connection's own zlib stream (cl->zin, freed with cl). Ours are
 * compressed on the sender's thread when the send command is built (see
 * "compressing" below).
 *
 * Lifetime. The tcp handle is initialised when the connect command runs
 * and closed by rc__conn_abort as for any connection (the role's closed
 * hook, client_closed, runs in its close callback). Two things may still
 * refer to the rc_client after that close callback: a uv_getaddrinfo in
 * flight (it cannot be cancelled once started), which then frees it; and a
 * connect attempt that failed with more addresses to try, whose handle is
 * closed and initialised again (retrying), during which rc__conn_abort
 * leaves the close to the retry's own callback.
 */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop/rc_internal.h"
#include "proto/rc_deflate.h"
#include "proto/rc_frame.h"
#include "proto/rc_http.h"
#include "proto/rc_pmd.h"
#include "proto/rc_tls.h"

/* --- id -> client (s->clients, under client_lock) ------------------------ */

static rc_client *map_get(rc_server *s, uint64_t id) {
  return rc__idmap_get(&s->clients, id);
}

static rc_client *client_take(rc_server *s, uint64_t id, int remove) {
  uv_mutex_lock(&s->client_lock);
  rc_client *cl = map_get(s, id);
  if (cl != NULL && remove)
    rc__idmap_del(&s->clients, cl->id);
  uv_mutex_unlock(&s->client_lock);
  return cl;
}

static void client_free(rc_client *cl) {
  if (cl->addrs != NULL)
    uv_freeaddrinfo(cl->addrs);
  rc_tls_free(cl->filter);
  rc_inflate_stream_free(cl->zin);
  free(cl->host);
  free(cl->request);
  free(cl->protocols);
  free(cl->cafile);
  free(cl->server_name);
  free(cl);
}

rc_conn *rc__client_find(rc_server *s, uint64_t id) {
  rc_client *cl = client_take(s, id, 0);
  rc_conn *c = cl != NULL ? cl->conn : NULL;
  return c != NULL && c->state != RC_CONN_GONE ? c : NULL;
}

/* --- the embedder's side ------------------------------------------------ */

void rc_connect_opts_default(rc_connect_opts *o) {
  memset(o, 0, sizeof(*o));
  o->port = 80;
  o->target = "/";
  o->tls_verify = 1;
  o->handshake_timeout = 10.0;
  o->compression = 1;
}

/* 1 when s may go into a request line or header: no CR, LF or NUL, no
 * other control characters. */
static int header_safe(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 && *s != '\t')
      return 0;
  return 1;
}

/* Fills the parts of cl that opts decide. */
static int client_setup(rc_client *cl, const rc_connect_opts *o) {
  uint8_t key_raw[16];
  char key[25];
  if (rc_tls_random(key_raw, sizeof key_raw) != 0)
    return UV_EIO;
  if (rc_base64_encode(key_raw, sizeof key_raw, key) != 24 ||
      rc_ws_accept_value(key, 24, cl->accept) != 0)
    return UV_EIO;
  int default_port = o->port == (o->tls ? 443 : 80);
  char host_header[300];
  const char *hh = o->host_header;
  if (hh == NULL) {
    int v6 = strchr(o->host, ':') != NULL;
    int n = snprintf(host_header, sizeof host_header, "%s%s%s", v6 ? "[" : "",
                     o->host, v6 ? "]" : "");
    if (n > 0 && !default_port)
      n += snprintf(host_header + n, sizeof host_header - (size_t)n, ":%d",
                    o->port);
    if (n < 0 || (size_t)n >= sizeof host_header)
      return UV_EINVAL;
    hh = host_header;
  }
  if (!header_safe(hh))
    return UV_EINVAL;
  /* The offer goes first among the extra headers. */
  char *extra = NULL;
  if (o->compression) {
    char offer[RC_PMD_VALUE_MAX];
    if (rc_pmd_client_offer(NULL, offer, sizeof offer) < 0)
      return UV_EINVAL;
    const char *rest = o->extra_headers != NULL ? o->extra_headers : "";
    static const char name[] = "Sec-WebSocket-Extensions: ";
    size_t cap = sizeof name + strlen(offer) + 2 + strlen(rest);
    if ((extra = malloc(cap)) == NULL)
      return UV_ENOMEM;
    int n = snprintf(extra, cap, "%s%s\r\n%s", name, offer, rest);
    if (n < 0 || (size_t)n >= cap) {
      free(extra);
      return UV_EINVAL;
    }
    cl->offer_pmd = 1;
  }
  cl->request = rc_http_client_request(o->target, hh, key, o->protocols,
                                       extra != NULL ? extra : o->extra_headers,
                                       &cl->request_len);
  free(extra);
  int failed = cl->request == NULL;
  cl->host = rc__dup_or_null(o->host, &failed);
  cl->protocols = rc__dup_or_null(o->protocols, &failed);
  cl->cafile = rc__dup_or_null(o->tls_cafile, &failed);
  cl->server_name = rc__dup_or_null(
      o->tls_server_name ? o->tls_server_name : o->host, &failed);
  if (failed)
    return UV_ENOMEM;
  (void)snprintf(cl->port, sizeof cl->port, "%d", o->port);
  cl->tls = o->tls != 0;
  cl->verify = o->tls_verify != 0;
  cl->handshake_ms =
      rc__secs_ms(o->handshake_timeout > 0 ? o->handshake_timeout : 10.0);
  cl->limits.ping_ms = rc__secs_ms(o->ping_interval);
  cl->limits.pong_ms = rc__secs_ms(o->ping_timeout);
  cl->limits.max_message = o->max_message_size; /* 0: the server's */
  return 0;
}

int rc_server_connect(rc_server *s, const rc_connect_opts *o, uint64_t *conn) {
  if (!s->started)
    return UV_EINVAL;
  if (o->host == NULL || o->host[0] == '\0' || o->port < 1 || o->port > 65535 ||
      o->target == NULL || o->target[0] != '/' || !header_safe(o->host) ||
      !header_safe(o->target) || strpbrk(o->target, " \t") != NULL ||
      (o->protocols != NULL && !header_safe(o->protocols)) ||
      (o->tls_server_name != NULL && !header_safe(o->tls_server_name)) ||
      strlen(o->host) > 255)
    return UV_EINVAL;
  rc_client *cl = calloc(1, sizeof(*cl));
  if (cl == NULL)
    return UV_ENOMEM;
  int r = client_setup(cl, o);
  if (r != 0) {
    client_free(cl);
    return r;
  }
  /* The fragment bound follows the size this client accepts, not the
   * server side's: a 64 MiB message in 64-byte fragments is within it. */
  if (cl->limits.max_message == 0)
    cl->limits.max_message = s->cfg.max_message_size;
  cl->limits.max_frags = rc__max_frags(cl->limits.max_message);
  cl->id = RC__CLIENT_BIT | (atomic_fetch_add(&s->next_client, 1) + 1);
  rc_cmd *cmd = calloc(1, sizeof(*cmd));
  if (cmd == NULL) {
    client_free(cl);
    return UV_ENOMEM;
  }
  cmd->type = RC_CMD_CONNECT;
  cmd->conn = cl->id;
  uv_mutex_lock(&s->client_lock);
  r = rc__idmap_put(&s->clients, cl->id, cl);
  uv_mutex_unlock(&s->client_lock);
  if (r != 0) {
    free(cmd);
    client_free(cl);
    return r;
  }
  uint64_t id = cl->id;
  /* From here the loop may run the command, and free cl, at any time. */
  r = rc__cmd_push(s, cmd, 0);
  if (r == UV_ECANCELED) {
    if (client_take(s, id, 1) != NULL)
      client_free(cl);
    return r;
  }
  *conn = id;
  return r;
}

int rc_server_buffered(rc_server *s, uint64_t conn, size_t *out) {
  int r = UV_ENOENT;
  uv_mutex_lock(&s->client_lock);
  rc_client *cl = (conn & RC__CLIENT_BIT) ? map_get(s, conn) : NULL;
  if (cl != NULL) {
    *out = atomic_load(&cl->cmd_bytes) + atomic_load(&cl->queue_bytes);
    r = 0;
  }
  uv_mutex_unlock(&s->client_lock);
  return r;
}

/* A send command for a client connection is about to be queued: count its
 * frame until the loop runs it. */
static void count_command(rc_server *s, uint64_t conn, size_t len) {
  uv_mutex_lock(&s->client_lock);
  rc_client *cl = map_get(s, conn);
  if (cl != NULL)
    atomic_fetch_add(&cl->cmd_bytes, len);
  uv_mutex_unlock(&s->client_lock);
}

/* The window bits the server inflates conn's messages with; 0: plain (no
 * deflate agreed, not open yet, or gone). */
static unsigned tx_window(rc_server *s, uint64_t conn) {
  uv_mutex_lock(&s->client_lock);
  rc_client *cl = map_get(s, conn);
  unsigned bits = cl != NULL ? atomic_load(&cl->tx_window) : 0;
  uv_mutex_unlock(&s->client_lock);
  return bits;
}

/* --- compressing, on the sender's thread ------------------------------- */

/* A client's message is compressed where its send command is built, on
 * the embedder's thread (the asyncio loop's for connect(), the caller's
 * for WebSocket.send), so the loop thread never compresses and threads
 * sending at once do not wait for each other. Compressors are not
 * thread-safe, so each sending thread has its own: a zlib deflater per
 * window size in use (one, 15 bits, against most servers; about 262 KiB at
 * 15 bits, 140 KiB at websockets' 12), made at its first compressed
 * message and freed when the thread ends (a thread-specific key's
 * destructor). Nothing is kept per connection, so an idle connection
 * costs nothing here, whichever server it talks to.
 *
 * zlib, not libdeflate: its output ends with Z_SYNC_FLUSH's empty stored
 * block and no final block, valid for a server that inflates each message
 * alone (roomcast's) and for one that keeps its context across messages
 * (websockets', unless it agreed to client_no_context_takeover), which
 * libdeflate's final block is not (rc_deflate.h). Each message is
 * compressed alone (deflateReset), so this side keeps no context either,
 * whatever the server answered: RFC 7692 7.1.1.2 lets it.
 *
 * The window: the deflater's window is the server's client_max_window_bits
 * (RFC 7692 7.1.2.2), so messages of any length are compressed. zlib's raw
 * deflate cannot use 8 bits (it takes 9), so with 8 only messages of at
 * most 256 bytes are compressed (no back-reference in them can reach
 * further) and longer ones go plain. */

#define RC__CLIENT_ZLEVEL 6 /* zlib's default; what browsers send */

typedef struct zset {
  rc_deflater *by_bits[RC_PMD_MAX_WINDOW_BITS + 1];
} zset;

static pthread_key_t z_key;
static int z_key_ok;
static pthread_once_t z_once = PTHREAD_ONCE_INIT;

static void zset_free(void *p) {
  zset *z = p;
  for (size_t i = 0; i < sizeof z->by_bits / sizeof z->by_bits[0]; i++)
    rc_deflater_free(z->by_bits[i]);
  free(z);
}

static void z_key_make(void) {
  z_key_ok = pthread_key_create(&z_key, zset_free) == 0;
}

/* This thread's compressor for a window of bits (9..15); NULL when memory
 * is short (the message then goes plain). */
static rc_deflater *thread_deflater(unsigned bits) {
  if (pthread_once(&z_once, z_key_make) != 0 || !z_key_ok)
    return NULL;
  zset *z = pthread_getspecific(z_key);
  if (z == NULL) {
    if ((z = calloc(1, sizeof *z)) == NULL)
      return NULL;
    if (pthread_setspecific(z_key, z) != 0) {
      free(z);
      return NULL;
    }
  }
  if (z->by_bits[bits] == NULL)
    z->by_bits[bits] = rc_deflater_new_zlib(RC__CLIENT_ZLEVEL, (int)bits);
  return z->by_bits[bits];
}

/* The compressed frame of message data[0..len), masked, RSV1 set on its
 * one frame (RFC 7692 6); NULL when it would not shrink or memory is
 * short: the message then goes plain. */
static rc_buf *deflated_frame(unsigned opcode, const uint8_t *data, size_t len,
                              unsigned bits) {
  if (bits < RC_PMD_MIN_WINDOW_BITS + 1) {
    if (len > ((size_t)1 << bits))
      return NULL;
    bits = RC_PMD_MIN_WINDOW_BITS + 1;
  }
  rc_deflater *d = thread_deflater(bits);
  if (d == NULL)
    return NULL;
  /* Compressed after the longest header, then moved up behind its own. */
  size_t room = RC_FRAME_MAX_CLIENT_HEADER;
  rc_buf *b = rc__buf_new(room + len);
  if (b == NULL)
    return NULL;
  size_t zlen;
  uint8_t key[4];
  if (rc_deflate_message(d, data, len, b->data + room, len, &zlen) !=
          RC_DEFLATE_OK ||
      rc_tls_random(key, sizeof key) != 0) {
    rc__buf_unref(b);
    return NULL;
  }
  uint8_t head[RC_FRAME_MAX_CLIENT_HEADER];
  size_t hl = rc_frame_client_header(head, opcode, zlen, key);
  head[0] |= 0x40u; /* RSV1: "Per-Message Compressed" */
  memmove(b->data + hl, b->data + room, zlen);
  memcpy(b->data, head, hl);
  rc_frame_mask(b->data + hl, b->data + hl, zlen, key);
  b->len = hl + zlen;
  b->is_message = 1;
  b->zstate = RC__BUF_Z_PLAIN; /* never compressed again */
  return b;
}

int rc__client_send_command(rc_server *s, uint64_t conn, rc_cmd *cmd,
                            const void *data, size_t len, int is_text) {
  unsigned opcode = is_text ? RC_OP_TEXT : RC_OP_BINARY;
  unsigned bits = tx_window(s, conn);
  cmd->buf = NULL;
  if (bits != 0 && len >= s->cfg.compression_threshold && len >= 2)
    cmd->buf = deflated_frame(opcode, data, len, bits);
  if (cmd->buf == NULL)
    cmd->buf = rc__buf_client_frame(opcode, data, len);
  if (cmd->buf == NULL)
    return UV_ENOMEM;
  count_command(s, conn, cmd->buf->len);
  return 0;
}

/* --- failing ------------------------------------------------------------ */

static void set_reason(rc_conn *c, const char *reason) {
  if (c->close_reason == NULL && reason != NULL) {
    size_t n = strlen(reason);
    c->close_reason = malloc(n + 1);
    if (c->close_reason != NULL) {
      memcpy(c->close_reason, reason, n + 1);
      c->close_reason_len = (uint32_t)n;
    }
  }
  c->close_code = 1006;
}

static void client_fail(rc_conn *c, const char *reason) {
  if (c->state == RC_CONN_GONE)
    return;
  set_reason(c, reason);
  rc__conn_abort(c);
}

static void client_overflow(rc_conn *c) {
  /* Maybe inside wslay: failed at the end of the turn, not here. */
  set_reason(c, "send queue full: the server does not read");
  rc__conn_fail(c);
}

static const char *state_words(const rc_conn *c) {
  switch (c->state) {
  case RC_CONN_RESOLVING:
    return "resolving the host name";
  case RC_CONN_CONNECTING:
    return "connecting";
  case RC_CONN_TLS:
    return "in the TLS handshake";
  default:
    return "waiting for the HTTP 101 response";
  }
}

static void client_deadline(rc_conn *c) {
  char reason[96];
  (void)snprintf(reason, sizeof reason, "handshake timeout (%s)",
                 state_words(c));
  client_fail(c, reason);
}

static void client_lost(rc_conn *c, int status) {
  char reason[128];
  switch (c->state) {
  case RC_CONN_DRAINING:
    reason[0] = '\0'; /* the close handshake is over: nothing was lost */
    break;
  case RC_CONN_OPEN:
  case RC_CONN_CLOSING:
    if (status == UV_EOF)
      (void)snprintf(reason, sizeof reason,
                     "connection closed by the server without a close frame");
    else
      (void)snprintf(reason, sizeof reason, "connection lost: %s",
                     uv_strerror(status));
    break;
  default:
    if (status == UV_EOF)
      (void)snprintf(reason, sizeof reason,
                     "the server closed the connection %s", state_words(c));
    else
      (void)snprintf(reason, sizeof reason, "%s %s", uv_strerror(status),
                     state_words(c));
    break;
  }
  client_fail(c, reason[0] ? reason : NULL);
}

/* --- writing ----------------------------------------------------------- */

/* The queue's bytes, for bufferedAmount on the embedder's thread. */
static void note_queue(rc_conn *c) {
  atomic_store_explicit(&c->cl->queue_bytes, c->q.bytes, memory_order_relaxed);
}

/* Moves the TLS records waiting in the filter into the output queue. */
static void tls_out(rc_conn *c) {
  rc_tls *t = c->cl->filter;
  size_t n = rc_tls_pending(t);
  if (n == 0)
    return;
  rc_buf *b = rc__buf_new(n);
  if (b == NULL) {
    rc__conn_fail(c);
    return;
  }
  b->len = rc_tls_take(t, b->data, n);
  rc__conn_enqueue(c, b);
  rc__buf_unref(b);
}

static void client_write(rc_conn *c, const void *data, size_t len) {
  if (c->state == RC_CONN_GONE || len == 0)
    return;
  rc_client *cl = c->cl;
  if (cl->filter != NULL) {
    if (rc_tls_write(cl->filter, data, len) != 0) {
      /* maybe inside wslay: the connection ends at the end of the turn */
      set_reason(c, rc_tls_error(cl->filter));
      rc__conn_fail(c);
      return;
    }
    tls_out(c);
  } else {
    rc_buf *b = rc__buf_new(len);
    if (b == NULL) {
      rc__conn_fail(c);
      return;
    }
    memcpy(b->data, data, len);
    rc__conn_enqueue(c, b);
    rc__buf_unref(b);
  }
  note_queue(c);
}

/* A frame for the connection: as it is, or as TLS records. */
static void write_buf(rc_conn *c, rc_buf *b) {
  if (c->cl->filter != NULL) {
    client_write(c, b->data, b->len);
    return;
  }
  rc__conn_enqueue(c, b);
  note_queue(c);
}

static void client_send(rc_conn *c, rc_buf *b) {
  rc_client *cl = c->cl;
  atomic_fetch_sub(&cl->cmd_bytes, b->len);
  if (c->state != RC_CONN_OPEN)
    return; /* closing: RFC 6455 5.5.1, nothing follows our close */
  /* Records cannot be dropped from the middle of a TLS stream, and the
   * server is not reading: the connection cannot go on. */
  if (c->q.bytes > 0 && c->q.bytes + b->len > c->srv->cfg.max_queue_bytes) {
    client_fail(c, "send queue full: the server does not read");
    return;
  }
  write_buf(c, b);
  atomic_fetch_add_explicit(&c->srv->st_deliveries, 1, memory_order_relaxed);
}

static int client_ping(rc_conn *c) {
  static const char payload[] = "rc";
  rc_buf *b = rc__buf_client_frame(RC_OP_PING, payload, sizeof payload - 1);
  if (b == NULL)
    return 0; /* as if sent: the pong's deadline ends a connection that
                 cannot even make a ping */
  write_buf(c, b);
  rc__buf_unref(b);
  return 0;
}

static void client_draining(rc_conn *c) {
  rc_client *cl = c->cl;
  if (cl->filter == NULL)
    return;
  /* close_notify after our last record: the stream ended on purpose. */
  if (rc_tls_shutdown(cl->filter) == 0)
    tls_out(c);
}

/* --- TLS contexts, one per (verify, cafile), kept for the server's life -- */

struct rc__tls_ctx_entry {
  struct rc__tls_ctx_entry *next;
  int verify;
  char *cafile;
  rc_tls_ctx *ctx;
};

static rc_tls_ctx *tls_ctx(rc_server *s, const rc_client *cl, char *err,
                           size_t errlen) {
  for (struct rc__tls_ctx_entry *e = s->tls_ctxs; e != NULL; e = e->next)
    if (e->verify == cl->verify && ((e->cafile == NULL && cl->cafile == NULL) ||
                                    (e->cafile != NULL && cl->cafile != NULL &&
                                     strcmp(e->cafile, cl->cafile) == 0)))
      return e->ctx;
  rc_tls_ctx *ctx = rc_tls_ctx_client(cl->verify, cl->cafile, err, errlen);
  if (ctx == NULL)
    return NULL;
  struct rc__tls_ctx_entry *e = calloc(1, sizeof(*e));
  int failed = e == NULL;
  if (e != NULL)
    e->cafile = rc__dup_or_null(cl->cafile, &failed);
  if (failed) {
    free(e);
    rc_tls_ctx_free(ctx);
    (void)snprintf(err, errlen, "TLS: out of memory");
    return NULL;
  }
  e->verify = cl->verify;
  e->ctx = ctx;
  e->next = s->tls_ctxs;
  s->tls_ctxs = e;
  return ctx;
}

/* --- connecting -------------------------------------------------------- */

static void try_next(rc_conn *c);

static void on_retry_closed(uv_handle_t *h) {
  rc_conn *c = RC__CONTAINER_OF(h, rc_conn, tcp);
  c->cl->retrying = 0;
  if (c->state == RC_CONN_GONE || uv_tcp_init(&c->srv->loop, &c->tcp) != 0) {
    /* aborted meanwhile (or no handle to be had): this was its close */
    if (c->state != RC_CONN_GONE)
      client_fail(c, "cannot make a socket");
    rc__conn_closed(h);
    return;
  }
  try_next(c);
}

/* One address did not work; the next one may. */
static void attempt_failed(rc_conn *c, int status) {
  rc_client *cl = c->cl;
  cl->last_error = status;
  if (cl->next_addr != NULL) {
    cl->retrying = 1;
    uv_close((uv_handle_t *)&c->tcp, on_retry_closed);
    return;
  }
  client_fail(c, uv_strerror(status));
}

static void send_request(rc_conn *c) {
  c->state = RC_CONN_UPGRADING;
  client_write(c, c->cl->request, c->cl->request_len);
}

static void on_connected(uv_connect_t *req, int status) {
  rc_client *cl = RC__CONTAINER_OF(req, rc_client, creq);
  rc_conn *c = cl->conn;
  if (c == NULL || c->state != RC_CONN_CONNECTING)
    return; /* aborted: the close cancelled this request */
  if (status < 0) {
    attempt_failed(c, status);
    return;
  }
  uv_freeaddrinfo(cl->addrs);
  cl->addrs = cl->next_addr = NULL;
  (void)uv_tcp_nodelay(&c->tcp, 1); /* best effort */
  rc__conn_start_read(c);
  if (!cl->tls) {
    send_request(c);
    return;
  }
  char err[256];
  rc_tls_ctx *ctx = tls_ctx(c->srv, cl, err, sizeof err);
  if (ctx == NULL) {
    client_fail(c, err);
    return;
  }
  cl->filter = rc_tls_new(ctx, RC_TLS_CLIENT, cl->server_name);
  if (cl->filter == NULL) {
    client_fail(c, "TLS: cannot set up the connection");
    return;
  }
  c->state = RC_CONN_TLS;
  if (rc_tls_handshake(cl->filter) < 0) {
    client_fail(c, rc_tls_error(cl->filter));
    return;
  }
  tls_out(c);
}

static void try_next(rc_conn *c) {
  rc_client *cl = c->cl;
  struct addrinfo *ai = cl->next_addr;
  while (ai != NULL && ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
    ai = ai->ai_next;
  if (ai == NULL) {
    client_fail(c,
                uv_strerror(cl->last_error ? cl->last_error : UV_EAI_NONAME));
    return;
  }
  cl->next_addr = ai->ai_next;
  c->state = RC_CONN_CONNECTING;
  int r = uv_tcp_connect(&cl->creq, &c->tcp, ai->ai_addr, on_connected);
  if (r < 0)
    attempt_failed(c, r);
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  rc_client *cl = RC__CONTAINER_OF(req, rc_client, gai);
  cl->resolving = 0;
  rc_conn *c = cl->conn;
  if (c == NULL) { /* its handle closed while this ran: the last owner */
    if (res != NULL)
      uv_freeaddrinfo(res);
    client_free(cl);
    return;
  }
  cl->addrs = cl->next_addr = res; /* freed with cl if it goes now */
  if (c->state != RC_CONN_RESOLVING)
    return;
  if (status < 0) {
    char reason[160];
    (void)snprintf(reason, sizeof reason, "cannot resolve %s: %s", cl->host,
                   uv_strerror(status));
    client_fail(c, reason);
    return;
  }
  try_next(c);
}

void rc__client_unstarted(rc_server *s, uint64_t id) {
  rc_client *cl = client_take(s, id, 1);
  if (cl == NULL)
    return;
  static const char reason[] = "the client stopped";
  rc__event_close(s, id, 1006, reason, sizeof reason - 1);
  client_free(cl);
}

void rc__client_start(rc_server *s, uint64_t id) {
  rc_client *cl = client_take(s, id, 0);
  if (cl == NULL || cl->conn != NULL)
    return;
  rc_conn *c = calloc(1, sizeof(*c));
  if (c == NULL || uv_tcp_init(&s->loop, &c->tcp) != 0) {
    free(c);
    rc__client_unstarted(s, id);
    return;
  }
  c->srv = s;
  c->role = &rc__client_role;
  s->open_handles++;
  if (rc__conn_register(s, c) != 0) {
    c->state = RC_CONN_GONE;
    uv_close((uv_handle_t *)&c->tcp, rc__conn_closed);
    rc__client_unstarted(s, id);
    return;
  }
  c->cl = cl;
  cl->conn = c;
  c->state = RC_CONN_RESOLVING;
  c->read_paused = 1;
  c->known = 1; /* the embedder has the id: it is owed an RC_EV_CLOSE */
  c->id = id;
  atomic_fetch_add_explicit(&s->st_connections, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->st_clients, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->st_client_connects, 1, memory_order_relaxed);
  c->last_rx = rc__now_ms(s);
  c->deadline = rc__now_ms(s) + cl->handshake_ms + 1;
  if (s->stopping) {
    client_fail(c, "the client stopped");
    return;
  }
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int r = uv_getaddrinfo(&s->loop, &cl->gai, on_resolved, cl->host, cl->port,
                         &hints);
  if (r != 0) {
    char reason[160];
    (void)snprintf(reason, sizeof reason, "cannot resolve %s: %s", cl->host,
                   uv_strerror(r));
    client_fail(c, reason);
    return;
  }
  cl->resolving = 1;
}

/* The tcp handle has closed: the connection is over. */
static void client_closed(rc_conn *c) {
  rc_client *cl = c->cl;
  if (cl == NULL)
    return; /* failed before it was attached (rc__client_start) */
  rc_server *s = c->srv;
  atomic_fetch_sub_explicit(&s->st_clients, 1, memory_order_relaxed);
  (void)client_take(s, cl->id, 1);
  cl->conn = NULL;
  if (cl->resolving) {
    (void)uv_cancel((uv_req_t *)&cl->gai); /* else on_resolved frees it */
    return;
  }
  client_free(cl);
}

/* --- the upgrade response ---------------------------------------------- */

static void opened(rc_conn *c, const rc_http_response_head *resp,
                   const rc_http_client_check *chk) {
  rc_server *s = c->srv;
  size_t plen = chk->protocol_len;
  size_t total =
      4 + plen + rc__event_headers_size(resp->headers, resp->num_headers);
  rc_event *ev = rc__event_new(RC_EV_CONNECTED, c->id, total);
  if (ev == NULL) {
    rc__conn_fail(c);
    return;
  }
  ev->code = 101;
  ev->nstr = (uint32_t)(1 + 2 * resp->num_headers);
  char *p = rc__event_put(ev->data, chk->protocol, plen);
  (void)rc__event_put_headers(p, resp->headers, resp->num_headers);
  rc__event_push(s, ev);
  c->state = RC_CONN_OPEN;
  c->deadline = 0;
  c->last_rx = c->last_msg = c->ping_at = rc__now_ms(s);
}

/* The server's Sec-WebSocket-Extensions against the offer (RFC 7692 5,
 * 7.1): what it agreed to goes into c->pmd_rx and c->pmd_tx. 0, or -1
 * after failing the connection. */
static int negotiated(rc_conn *c, const rc_http_response_head *resp) {
  rc_client *cl = c->cl;
  if (!cl->offer_pmd)
    return 0;
  char value[1024];
  long n =
      rc_http_join_headers(resp->headers, resp->num_headers,
                           "Sec-WebSocket-Extensions", value, sizeof value);
  if (n < 0) {
    client_fail(c, "handshake: Sec-WebSocket-Extensions is too long");
    return -1;
  }
  rc_pmd_params offer, got;
  const char *why = NULL;
  rc_pmd_client_default(&offer);
  int r = rc_pmd_client_check_response(value, (size_t)n, &offer, &got, &why);
  if (r < 0) {
    char reason[160];
    (void)snprintf(reason, sizeof reason, "handshake: %s",
                   why != NULL ? why : "bad Sec-WebSocket-Extensions");
    client_fail(c, reason);
    return -1;
  }
  if (r == 0)
    return 0; /* the server sends and takes plain messages */
  c->pmd_rx = RC__PMD_RX;
  if (!got.server_no_context_takeover) {
    /* The server's messages may refer back into the ones before: one
     * stream for the connection's life (made at the first compressed
     * message: nothing for a connection that never gets one), with the
     * window the server compresses with (9 bits at least: zlib's deflate
     * turns 8 into 9). */
    unsigned bits = got.server_max_window_bits ? got.server_max_window_bits
                                               : RC_PMD_MAX_WINDOW_BITS;
    cl->zin_bits =
        (uint8_t)(bits < RC_PMD_MIN_WINDOW_BITS + 1 ? RC_PMD_MIN_WINDOW_BITS + 1
                                                    : bits);
    c->pmd_rx |= RC__PMD_RX_STREAM;
  }
  c->pmd_tx = got.client_max_window_bits ? got.client_max_window_bits
                                         : RC_PMD_MAX_WINDOW_BITS;
  atomic_store(&cl->tx_window, c->pmd_tx);
  return 0;
}

static void head_bytes(rc_conn *c, const char *data, size_t len) {
  rc_server *s = c->srv;
  size_t cap = s->cfg.max_header_bytes;
  size_t take = len < cap - c->hlen ? len : cap - c->hlen;
  if (rc__conn_head_append(c, data, take, cap) != 0)
    return;
  int r = rc_http_parse_response(c->hbuf, c->hlen, cap, s->cfg.max_headers,
                                 &s->resp);
  if (r == RC_HTTP_INCOMPLETE)
    return;
  if (r < 0) {
    client_fail(c, r == RC_HTTP_E_TOO_LARGE
                       ? "handshake: the response head is too large"
                       : "handshake: malformed HTTP response");
    return;
  }
  rc_http_client_check chk;
  rc_http_check_upgrade_response_ext(&s->resp, c->cl->accept, c->cl->protocols,
                                     c->cl->offer_pmd, &chk);
  if (!chk.ok) {
    client_fail(c, chk.reason);
    return;
  }
  if (negotiated(c, &s->resp) != 0)
    return;
  opened(c, &s->resp, &chk);
  if (c->state != RC_CONN_OPEN)
    return;
  /* Frames may have come with the head: they are the first to read. */
  char *hbuf = c->hbuf;
  size_t hlen = c->hlen;
  c->hbuf = NULL;
  c->hlen = c->hcap = 0;
  if (hlen > (size_t)r)
    rc__conn_frames(c, hbuf + r, hlen - (size_t)r);
  free(hbuf);
  if (take < len && c->state != RC_CONN_GONE)
    rc__conn_frames(c, data + take, len - take);
}

static void plain_bytes(rc_conn *c, const char *data, size_t len) {
  if (c->state == RC_CONN_UPGRADING) {
    c->last_rx = rc__now_ms(c->srv);
    head_bytes(c, data, len);
    return;
  }
  rc__conn_frames(c, data, len);
}

/* The alert OpenSSL made for a failed handshake (a certificate refused:
 * bad_certificate, unknown_ca), so that the server sees why rather than an
 * end of stream: written if the socket takes it at once, since the
 * connection ends now. */
static void tls_alert(rc_conn *c) {
  char alert[64]; /* an alert record: 7 bytes, 24 when encrypted */
  size_t n = rc_tls_take(c->cl->filter, alert, sizeof alert);
  if (n == 0)
    return;
  uv_buf_t b = uv_buf_init(alert, (unsigned)n);
  (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1); /* best effort */
}

static void client_received(rc_conn *c, const char *data, size_t len) {
  rc_client *cl = c->cl;
  if (cl->filter == NULL) {
    plain_bytes(c, data, len);
    return;
  }
  if (rc_tls_feed(cl->filter, data, len) != 0) {
    rc__conn_fail(c);
    return;
  }
  if (c->state == RC_CONN_TLS) {
    int r = rc_tls_handshake(cl->filter);
    if (r < 0) {
      tls_alert(c);
      client_fail(c, rc_tls_error(cl->filter));
      return;
    }
    tls_out(c);
    if (r == 0)
      return;
    send_request(c);
  }
  /* The read buffer is free again: the filter copied the ciphertext. */
  char *buf = c->srv->readbuf;
  for (;;) {
    long n = rc_tls_read(cl->filter, buf, sizeof c->srv->readbuf);
    if (n == 0)
      break;
    if (n == RC_TLS_E_CLOSED) {
      client_lost(c, UV_EOF);
      return;
    }
    if (n < 0) {
      client_fail(c, rc_tls_error(cl->filter));
      return;
    }
    plain_bytes(c, buf, (size_t)n);
    if (c->state == RC_CONN_GONE || c->doomed)
      return;
  }
  tls_out(c);
}

void rc__clients_destroy(rc_server *s) {
  for (uint32_t i = 0; i < s->clients.cap; i++)
    if (s->clients.t[i].p != NULL)
      client_free(s->clients.t[i].p); /* never started: the loop had ended */
  rc__idmap_free(&s->clients);
  while (s->tls_ctxs != NULL) {
    struct rc__tls_ctx_entry *e = s->tls_ctxs;
    s->tls_ctxs = e->next;
    rc_tls_ctx_free(e->ctx);
    free(e->cafile);
    free(e);
  }
}

/* --- the client role ------------------------------------------------------ */

/* 1 on the way to RC_CONN_OPEN: resolving, connecting, TLS, upgrading. */
static int opening(const rc_conn *c) {
  switch (c->state) {
  case RC_CONN_RESOLVING:
  case RC_CONN_CONNECTING:
  case RC_CONN_TLS:
  case RC_CONN_UPGRADING:
    return 1;
  default:
    return 0;
  }
}

static void client_cancel(rc_conn *c) {
  if (opening(c))
    client_fail(c, "closed by the client before the connection opened");
}

static void client_stop(rc_conn *c) {
  if (opening(c))
    client_fail(c, "the client stopped");
}

static void client_nothing(rc_conn *c) { (void)c; /* a client is in no room */ }

static int client_handle_closing(const rc_conn *c) {
  return c->cl != NULL && c->cl->retrying;
}

/* A compressed message from the server: through the connection's stream
 * when the server keeps its context, else alone with the loop's inflater
 * (roomcast's server answers server_no_context_takeover). */
static int client_inflate(rc_conn *c, const uint8_t *in, size_t len,
                          uint8_t *out, size_t max, size_t *out_len,
                          int *as_sent) {
  rc_client *cl = c->cl;
  if (c->pmd_rx & RC__PMD_RX_STREAM) {
    if (cl->zin == NULL &&
        (cl->zin = rc_inflate_stream_init(cl->zin_bits)) == NULL)
      return RC_INFLATE_NOMEM;
    *as_sent = 0; /* a client forwards nothing */
    return rc_inflate_stream_feed(cl->zin, in, len, out, max, out_len);
  }
  return rc__conn_inflate(c, in, len, out, max, out_len, as_sent);
}

static const rc__limits *client_limits(const rc_conn *c) {
  return &c->cl->limits;
}

/* A client's frames are masked (RFC 6455 5.3), with keys from here. */
static int ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                      void *user_data) {
  (void)user_data;
  if (rc_tls_random(buf, len) != 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return 0;
}

const rc__role rc__client_role = {
    .received = client_received,
    .lost = client_lost,
    .write = client_write,
    .send = client_send,
    .ping = client_ping,
    .message = rc__conn_message_event,
    .inflate = client_inflate,
    .overflow = client_overflow,
    .draining = client_draining,
    .deadline = client_deadline,
    .cancel = client_cancel,
    .stop = client_stop,
    .gone = client_nothing,
    .handle_closing = client_handle_closing,
    .closed = client_closed,
    .queue_changed = note_queue,
    .limits = client_limits,
    .ws_init = wslay_event_context_client_init,
    .genmask = ws_genmask,
    .peer_masks = 0,
    .joins_rooms = 0,
};
