/* rc_redis.c - one connection to Redis on libuv, through hiredis's reply
 * reader only (the contract with its owner is in rc_redis.h).
 *
 * A link (rc_redis) lives as long as its owner; each attempt makes a
 * socket (rc__redis_sock) that holds the TCP handle, the reader and the
 * read buffer. When the link lets a socket go it clears the socket's back
 * pointer and closes the handle; callbacks that still arrive for it (a
 * connect cancelled, a write that ends) see link == NULL and do nothing,
 * and the socket is freed in the handle's close callback.
 *
 * With TLS, the socket's filter (rc_tls.h) sits between the stream and the
 * reader: what is read is fed to it and its plaintext to the reader; a
 * command is encrypted into it and its records written at once, one block
 * per command. Until its handshake is complete nothing can be sent
 * (rc__redis_send refuses) and setup has not run. */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include "loop/rc_redis.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/rc_bpwire.h"
#include "proto/rc_tls.h"

#define RC__RETRY_FIRST_MS 100
#define RC__RETRY_MAX_MS 5000

#define CONTAINER_OF(ptr, type, field)                                         \
  ((type *)((char *)(ptr)-offsetof(type, field)))

typedef struct rc__redis_sock {
  uv_tcp_t tcp;
  uv_connect_t connect;
  rc_redis *link; /* NULL once the link has let it go */
  rc_tls *tls;    /* NULL: plain TCP */
  redisReader *reader;
  /* hiredis's reply functions, but for arrays: their table is allocated
   * from the count Redis announces, before any element arrives. */
  redisReplyObjectFunctions fns;
  void *(*make_array)(const redisReadTask *task, int elements);
  size_t max_elements;
  size_t partial; /* bytes read since the last whole reply */
  char rbuf[65536];
} rc__redis_sock;

typedef struct rc__redis_wreq {
  uv_write_t req;
  char *data; /* a formatted command, freed once written */
} rc__redis_wreq;

static void link_lost(rc_redis *l);

/* --- the socket ----------------------------------------------------------- */

static void on_sock_closed(uv_handle_t *h) {
  rc__redis_sock *k = h->data;
  redisReaderFree(k->reader);
  rc_tls_free(k->tls);
  free(k);
}

/* The link lets its socket go: nothing reaches the link from it again. */
static void sock_release(rc_redis *l) {
  rc__redis_sock *k = l->sock;
  if (k == NULL)
    return;
  l->sock = NULL;
  k->link = NULL;
  uv_close((uv_handle_t *)&k->tcp, on_sock_closed);
}

static void *bounded_array(const redisReadTask *task, int elements) {
  rc__redis_sock *k = task->privdata;
  if ((size_t)elements > k->max_elements)
    return NULL; /* the reader fails ("Out of memory"): the link drops */
  return k->make_array(task, elements);
}

/* The reader of k: hiredis's, its arrays bounded. 0 or -1. */
static int sock_reader(rc__redis_sock *k, size_t max_elements) {
  k->reader = redisReaderCreate();
  if (k->reader == NULL)
    return -1;
  k->fns = *k->reader->fn;
  k->make_array = k->fns.createArray;
  k->fns.createArray = bounded_array;
  k->max_elements = max_elements;
  k->reader->fn = &k->fns;
  k->reader->privdata = k;
  return 0;
}

/* --- writing -------------------------------------------------------------- */

static void on_written(uv_write_t *req, int status) {
  rc__redis_wreq *w = CONTAINER_OF(req, rc__redis_wreq, req);
  rc__redis_sock *k = req->handle->data;
  free(w->data);
  free(w);
  if (status < 0 && k->link != NULL)
    rc__redis_drop(k->link, uv_strerror(status));
}

static int waiters_grow(rc_redis *l) {
  uint32_t cap = l->wcap ? l->wcap * 2 : 16;
  rc__redis_waiter *q = malloc(cap * sizeof(*q));
  if (q == NULL)
    return -1;
  for (uint32_t i = 0; i < l->wlen; i++)
    q[i] = l->wq[(l->whead + i) % l->wcap];
  free(l->wq);
  l->wq = q;
  l->whead = 0;
  l->wcap = cap;
  return 0;
}

/* Writes data (malloc'ed) on the socket; it is freed once written. 0, or
 * -1 when the write cannot be queued (data is still the caller's). */
static int sock_write(rc__redis_sock *k, char *data, size_t len) {
  if (len > UINT_MAX)
    return -1;
  rc__redis_wreq *w = malloc(sizeof(*w));
  if (w == NULL)
    return -1;
  w->data = data;
  uv_buf_t buf = uv_buf_init(data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&k->tcp, &buf, 1, on_written) != 0) {
    free(w);
    return -1;
  }
  return 0;
}

/* Writes the records the filter of k has made. 0 or -1 (they are lost:
 * the connection cannot go on). */
static int tls_flush(rc__redis_sock *k) {
  size_t len;
  char *block = rc_tls_take_block(k->tls, &len); /* no headroom */
  if (block == NULL)
    return 0;
  if (sock_write(k, block, len) != 0) {
    free(block);
    return -1;
  }
  return 0;
}

static void on_timer(uv_timer_t *t);

/* The connection cannot go on, but the caller must not see it end (its
 * state would change under it): it ends at the next turn, by the timer
 * (which only the connect deadline uses until then). */
static void link_break(rc_redis *l, const char *why) {
  if (l->broken)
    return;
  l->broken = 1;
  snprintf(l->why, sizeof(l->why), "%s", why);
  (void)uv_timer_start(&l->timer, on_timer, 0, 0); /* fails only closing */
}

int rc__redis_send(rc_redis *l, char *data, size_t len, rc__redis_reply_cb *fn,
                   void *priv) {
  rc__redis_sock *k = l->sock;
  if (k == NULL || l->broken || len > UINT_MAX ||
      (k->tls != NULL && !rc_tls_ready(k->tls)))
    return -1;
  if (fn != NULL && l->wlen == l->wcap && waiters_grow(l) != 0)
    return -1;
  if (k->tls == NULL) {
    if (sock_write(k, data, len) != 0)
      return -1;
  } else {
    if (rc_tls_write(k->tls, data, len) != 0) {
      link_break(l, rc_tls_error(k->tls));
      return -1;
    }
    free(data); /* it is in the filter's records now */
    if (tls_flush(k) != 0)
      link_break(l, "cannot write to Redis");
  }
  if (fn != NULL)
    l->wq[(l->whead + l->wlen++) % l->wcap] = (rc__redis_waiter){fn, priv};
  return 0;
}

int rc__redis_command(rc_redis *l, int argc, const char **argv,
                      const size_t *lens, rc__redis_reply_cb *fn, void *priv) {
  size_t len;
  char *cmd = rc_bpwire_command(&len, argc, argv, lens);
  if (cmd == NULL)
    return -1;
  if (rc__redis_send(l, cmd, len, fn, priv) != 0) {
    free(cmd);
    return -1;
  }
  return 0;
}

/* The connection is gone: every command still waiting gets NULL. */
static void waiters_fail(rc_redis *l) {
  while (l->wlen > 0) {
    rc__redis_waiter w = l->wq[l->whead];
    l->whead = (l->whead + 1) % l->wcap;
    l->wlen--;
    w.fn(l, NULL, w.priv);
  }
}

/* --- reading -------------------------------------------------------------- */

/* One whole reply: the answer to the oldest command waiting, else a push. */
static void link_reply(rc_redis *l, redisReply *r) {
  if (l->wlen > 0) {
    rc__redis_waiter w = l->wq[l->whead];
    l->whead = (l->whead + 1) % l->wcap;
    l->wlen--;
    w.fn(l, r, w.priv);
    if (l->draining && l->wlen == 0 && l->sock != NULL)
      rc__redis_drop(l, "stopping");
  } else if (l->ops->push != NULL) {
    l->ops->push(l, r);
  } else {
    rc__redis_drop_bad(l, "Redis sent a reply to no command");
  }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  rc__redis_sock *k = h->data;
  *buf = uv_buf_init(k->rbuf, sizeof(k->rbuf));
}

/* Every whole reply in the reader, while k is still l's. */
static void read_replies(rc_redis *l, rc__redis_sock *k) {
  while (k->link == l) { /* a reply may end the connection */
    void *reply = NULL;
    if (redisReaderGetReply(k->reader, &reply) != REDIS_OK) {
      char why[RC_BPWIRE_WHY_MAX];
      snprintf(why, sizeof(why), "protocol error from Redis: %s",
               k->reader->errstr);
      rc__redis_drop_bad(l, why);
      return;
    }
    if (reply == NULL)
      break;
    k->partial = k->reader->len - k->reader->pos;
    link_reply(l, reply);
    freeReplyObject(reply);
  }
  if (k->link == l && k->partial > l->reply_max)
    rc__redis_drop_bad(l, "a reply from Redis is larger than the bound");
}

/* The setup's commands; 0, or -1 when the connection has ended. */
static int link_setup(rc_redis *l, rc__redis_sock *k) {
  if (l->ops->setup(l) != 0)
    rc__redis_drop(l, "cannot queue the first commands");
  return k->link == l ? 0 : -1;
}

/* Ciphertext read from Redis: the handshake, then plaintext to the reader,
 * while k is still l's. */
static void tls_read(rc_redis *l, rc__redis_sock *k, const char *data,
                     size_t n) {
  if (rc_tls_feed(k->tls, data, n) != 0) {
    rc__redis_drop(l, "out of memory");
    return;
  }
  if (!rc_tls_ready(k->tls)) {
    int r = rc_tls_handshake(k->tls);
    if (r < 0) {
      rc__redis_drop_bad(l, rc_tls_error(k->tls));
      return;
    }
    if (tls_flush(k) != 0) {
      rc__redis_drop(l, "cannot write to Redis");
      return;
    }
    if (r == 0 || link_setup(l, k) != 0)
      return;
  }
  for (;;) {
    long m = rc_tls_read(k->tls, k->rbuf, sizeof(k->rbuf));
    if (m == 0)
      break;
    if (m < 0) {
      if (m == RC_TLS_E_CLOSED)
        rc__redis_drop(l, "Redis closed the TLS connection");
      else
        rc__redis_drop_bad(l, rc_tls_error(k->tls));
      return;
    }
    if (redisReaderFeed(k->reader, k->rbuf, (size_t)m) != REDIS_OK) {
      rc__redis_drop(l, "out of memory");
      return;
    }
    k->partial += (size_t)m;
    read_replies(l, k);
    if (k->link != l)
      return;
  }
  /* What reading made (a TLS 1.3 key update's answer, an alert). */
  if (tls_flush(k) != 0)
    rc__redis_drop(l, "cannot write to Redis");
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  rc__redis_sock *k = st->data;
  rc_redis *l = k->link;
  if (l == NULL || n == 0)
    return;
  if (n < 0) {
    rc__redis_drop(l, n == UV_EOF ? "Redis closed the connection"
                                  : uv_strerror((int)n));
    return;
  }
  if (k->tls != NULL) {
    tls_read(l, k, buf->base, (size_t)n);
    return;
  }
  if (redisReaderFeed(k->reader, buf->base, (size_t)n) != REDIS_OK) {
    rc__redis_drop(l, "out of memory");
    return;
  }
  k->partial += (size_t)n;
  read_replies(l, k);
}

/* --- connecting ----------------------------------------------------------- */

static void timer_in(rc_redis *l, uint64_t ms) {
  /* Fails only for a closing handle, when no timer is wanted anyway. */
  (void)uv_timer_start(&l->timer, on_timer, ms, 0);
}

static uint64_t backoff_ms(rc_redis *l) {
  uint64_t d = RC__RETRY_FIRST_MS;
  for (unsigned i = 0; i < l->attempt && d < RC__RETRY_MAX_MS; i++)
    d *= 2;
  if (d > RC__RETRY_MAX_MS)
    d = RC__RETRY_MAX_MS;
  l->rng ^= l->rng << 13; /* jitter in [d/2, d] */
  l->rng ^= l->rng >> 7;
  l->rng ^= l->rng << 17;
  return d / 2 + l->rng % (d / 2 + 1);
}

/* The connection ended (or an attempt failed): tell the owner, then
 * schedule the next attempt. */
static void link_lost(rc_redis *l) {
  int was_ready = l->state == RC__REDIS_READY && !l->bad;
  l->bad = 0;
  l->broken = 0;
  sock_release(l);
  l->state = RC__REDIS_DOWN;
  l->draining = 0;
  waiters_fail(l);
  l->ops->lost(l, was_ready);
  if (l->stopped)
    return;
  /* A healthy connection that ends is tried again at once; one that broke
   * the protocol keeps backing off, however often it got ready. */
  if (was_ready)
    l->attempt = 0;
  uint64_t ms = was_ready ? 0 : backoff_ms(l);
  l->attempt++;
  timer_in(l, ms);
}

static void fail_attempt(rc_redis *l, const char *why) {
  snprintf(l->why, sizeof(l->why), "%s", why);
  link_lost(l);
}

void rc__redis_drop(rc_redis *l, const char *why) {
  if (l->sock == NULL)
    return;
  snprintf(l->why, sizeof(l->why), "%s", why);
  sock_release(l);
  link_lost(l);
}

void rc__redis_drop_bad(rc_redis *l, const char *why) {
  l->bad = 1;
  rc__redis_drop(l, why);
}

void rc__redis_drain(rc_redis *l) {
  if (l->wlen == 0)
    rc__redis_drop(l, "stopping");
  else
    l->draining = 1;
}

void rc__redis_ready(rc_redis *l) {
  if (l->state != RC__REDIS_CONNECTING || l->broken)
    return; /* a broken one ends at the next turn */
  l->state = RC__REDIS_READY;
  (void)uv_timer_stop(&l->timer); /* the deadline; always returns 0 */
  int again = l->ever_ready;
  l->ever_ready = 1;
  l->ops->ready(l, again);
}

static void on_tcp_connect(uv_connect_t *req, int status) {
  rc__redis_sock *k = CONTAINER_OF(req, rc__redis_sock, connect);
  rc_redis *l = k->link;
  if (l == NULL)
    return; /* let go meanwhile (status is UV_ECANCELED) */
  if (status < 0) {
    char why[RC_BPWIRE_WHY_MAX];
    snprintf(why, sizeof(why), "cannot connect: %s", uv_strerror(status));
    rc__redis_drop(l, why);
    return;
  }
  (void)uv_tcp_nodelay(&k->tcp, 1); /* an optimisation: failure is harmless */
  int r = uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
  if (r != 0) {
    rc__redis_drop(l, uv_strerror(r));
    return;
  }
  if (l->tls == NULL) {
    (void)link_setup(l, k);
    return;
  }
  /* The ClientHello; setup follows the handshake (tls_read). */
  k->tls = rc_tls_new(l->tls, RC_TLS_CLIENT, l->host);
  if (k->tls == NULL) {
    rc__redis_drop(l, "TLS: out of memory");
    return;
  }
  if (rc_tls_handshake(k->tls) < 0)
    rc__redis_drop_bad(l, rc_tls_error(k->tls));
  else if (tls_flush(k) != 0)
    rc__redis_drop(l, "cannot write to Redis");
}

/* A socket with its reader, or NULL (out of memory). */
static rc__redis_sock *sock_new(rc_redis *l) {
  rc__redis_sock *k = calloc(1, sizeof(*k));
  if (k != NULL && sock_reader(k, l->max_elements) != 0) {
    free(k);
    k = NULL;
  }
  return k;
}

static void link_open(rc_redis *l, const char *ip) {
  struct sockaddr_storage addr;
  int r = uv_ip4_addr(ip, l->port, (struct sockaddr_in *)&addr);
  if (r != 0)
    r = uv_ip6_addr(ip, l->port, (struct sockaddr_in6 *)&addr);
  rc__redis_sock *k = r == 0 ? sock_new(l) : NULL;
  if (k == NULL) {
    fail_attempt(l, r != 0 ? uv_strerror(r) : "out of memory");
    return;
  }
  r = uv_tcp_init(l->loop, &k->tcp);
  if (r != 0) {
    redisReaderFree(k->reader);
    free(k);
    fail_attempt(l, uv_strerror(r));
    return;
  }
  k->tcp.data = k;
  k->link = l;
  l->sock = k;
  l->state = RC__REDIS_CONNECTING;
  r = uv_tcp_connect(&k->connect, &k->tcp, (struct sockaddr *)&addr,
                     on_tcp_connect);
  if (r != 0) {
    char why[RC_BPWIRE_WHY_MAX];
    snprintf(why, sizeof(why), "cannot connect: %s", uv_strerror(r));
    rc__redis_drop(l, why);
    return;
  }
  timer_in(l, RC__REDIS_CONNECT_MS);
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  rc_redis *l = CONTAINER_OF(req, rc_redis, gai);
  char ip[64] = "";
  for (struct addrinfo *ai = res; status == 0 && ai != NULL && !ip[0];
       ai = ai->ai_next) {
    if (ai->ai_family == AF_INET &&
        uv_ip4_name((struct sockaddr_in *)ai->ai_addr, ip, sizeof(ip)) != 0)
      ip[0] = '\0';
    else if (ai->ai_family == AF_INET6 &&
             uv_ip6_name((struct sockaddr_in6 *)ai->ai_addr, ip, sizeof(ip)) !=
                 0)
      ip[0] = '\0';
  }
  uv_freeaddrinfo(res);
  l->state = RC__REDIS_DOWN;
  if (l->stopped)
    return;
  if (ip[0] == '\0') {
    snprintf(l->why, sizeof(l->why), "cannot resolve %s: %s", l->host,
             status != 0 ? uv_strerror(status) : "no address");
    link_lost(l);
    return;
  }
  link_open(l, ip);
}

static void link_connect(rc_redis *l) {
  struct sockaddr_in a4;
  struct sockaddr_in6 a6;
  if (uv_ip4_addr(l->host, l->port, &a4) == 0 ||
      uv_ip6_addr(l->host, l->port, &a6) == 0) {
    link_open(l, l->host);
    return;
  }
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int r = uv_getaddrinfo(l->loop, &l->gai, on_resolved, l->host, NULL, &hints);
  if (r != 0) {
    snprintf(l->why, sizeof(l->why), "cannot resolve %s: %s", l->host,
             uv_strerror(r));
    link_lost(l);
    return;
  }
  l->state = RC__REDIS_RESOLVING;
}

static void on_timer(uv_timer_t *t) {
  rc_redis *l = CONTAINER_OF(t, rc_redis, timer);
  if (l->stopped)
    return;
  if (l->broken) {
    char why[sizeof(l->why)];
    memcpy(why, l->why, sizeof(why));
    rc__redis_drop(l, why);
  } else if (l->state == RC__REDIS_DOWN)
    link_connect(l);
  else if (l->state == RC__REDIS_CONNECTING)
    rc__redis_drop(l, "no answer in time");
}

/* --- life ----------------------------------------------------------------- */

void rc__redis_init(rc_redis *l, uv_loop_t *loop, const char *host, int port,
                    const rc__redis_ops *ops, size_t max_elements,
                    size_t reply_max, uint64_t seed) {
  l->loop = loop;
  l->host = host;
  l->port = port;
  l->ops = ops;
  l->max_elements = max_elements;
  l->reply_max = reply_max;
  l->rng = seed | 1; /* xorshift's state must not be 0 */
}

void rc__redis_start(rc_redis *l) {
  /* A timer on an initialised loop cannot fail to initialise. */
  (void)uv_timer_init(l->loop, &l->timer);
  timer_in(l, 0);
}

void rc__redis_stop(rc_redis *l) {
  l->stopped = 1;
  uv_close((uv_handle_t *)&l->timer, NULL);
  if (l->state == RC__REDIS_RESOLVING)
    (void)uv_cancel((uv_req_t *)&l->gai); /* its callback runs anyway */
}

void rc__redis_free(rc_redis *l) {
  free(l->wq);
  l->wq = NULL;
  l->wcap = l->wlen = 0;
}
