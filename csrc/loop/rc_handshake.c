/* rc_handshake.c - the server's side of a connection: the opening
 * handshake (RFC 6455 4.2) and the role table of accepted connections.
 *
 * A connection the server accepts starts in RC_CONN_HTTP: its request head
 * collects in c->hbuf (at most max_header_bytes plus RC__HBUF_SLACK for
 * frames pipelined behind it) and is parsed again from byte 0 on every
 * read (proto/rc_http.c). A valid upgrade becomes RC_EV_OPEN
 * (RC_CONN_PENDING), a plain request RC_EV_REQUEST when http_requests is
 * on (RC_CONN_REQUEST); reading then stops until the embedder answers:
 * rc__handshake_accept (101, RC_CONN_OPEN, hbuf freed) or a response
 * (rc__conn_respond), within handshake_timeout or the sweep answers 503.
 * Anything else gets its status answer here (400, 405, 426, 431, 503),
 * and the connection closes once it is written.
 *
 * An adopted connection (rc_server_adopt: accepted by another server, the
 * bytes it read fed in first) takes the same path; only its embedder has
 * its id from the start (c->known), so an end before RC_EV_OPEN is told
 * in an RC_EV_CLOSE whose reason says why (tell_why), and a close command
 * may name it while its head is still coming (403).
 *
 * The role (rc__server_role) is what rc_conn.c asks of the server's side:
 * the bytes of a read go to the handshake until it ends, a received
 * message goes to the rooms that relay it or to the embedder, and a
 * connection that ends leaves its rooms.
 */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "loop/rc_internal.h"
#include "proto/rc_frame.h"
#include "proto/rc_http.h"

/* Bytes past max_header_bytes kept for frames pipelined behind the head. */
#define RC__HBUF_SLACK 1024

/* An adopted connection's embedder holds its id before any event (c->known
 * in RC_CONN_HTTP): when it ends before RC_EV_OPEN, its RC_EV_CLOSE (code
 * 1006) says why. An accepted one is not known yet and is never told. */
static void tell_why(rc_conn *c, const char *why) {
  if (!c->known || c->state != RC_CONN_HTTP || c->close_reason != NULL)
    return;
  size_t n = strlen(why);
  c->close_reason = malloc(n + 1);
  if (c->close_reason == NULL)
    return; /* the close event comes without its reason */
  memcpy(c->close_reason, why, n + 1);
  c->close_reason_len = (uint32_t)n;
}

void rc__handshake_refuse(rc_conn *c, int status, const char *extra,
                          const char *reason) {
  char why[192];
  (void)snprintf(why, sizeof why, "HTTP %d: %s", status, reason);
  tell_why(c, why);
  size_t blen = strlen(reason);
  char body[160];
  if (blen > sizeof(body) - 2)
    blen = sizeof(body) - 2;
  memcpy(body, reason, blen);
  body[blen++] = '\n';
  rc_buf *b = rc__buf_http(status, extra, body, blen, 1, 0);
  if (b == NULL) {
    rc__conn_fail(c);
    return;
  }
  rc__conn_respond(c, b);
  rc__buf_unref(b);
}

/* Builds an RC_EV_OPEN / RC_EV_REQUEST carrying method, path, query, peer
 * host and the headers (names lower-cased). */
static rc_event *request_event(rc_conn *c, uint16_t type,
                               const rc_http_request *req) {
  struct sockaddr_storage ss;
  int sl = sizeof(ss);
  char host[64] = "";
  uint16_t port = 0;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET6) {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
      if (uv_ip6_name(a, host, sizeof(host)) != 0)
        host[0] = '\0';
      port = ntohs(a->sin6_port);
    } else if (ss.ss_family == AF_INET) {
      struct sockaddr_in *a = (struct sockaddr_in *)&ss;
      if (uv_ip4_name(a, host, sizeof(host)) != 0)
        host[0] = '\0';
      port = ntohs(a->sin_port);
    }
  }
  size_t nstr = 4 + 2 * req->num_headers;
  size_t total = req->method_len + req->path_len + req->query_len +
                 strlen(host) + 4 * 4 +
                 rc__event_headers_size(req->headers, req->num_headers);
  /* Over TLS: version, cipher suite, the client's subject and chain. */
  char version[12] = "", cipher[12] = "", subject[1024] = "";
  char *chain = NULL;
  size_t chain_len = 0, subject_len = 0;
  if (c->tls != NULL) {
    (void)snprintf(version, sizeof version, "%d", rc_tls_version(c->tls));
    (void)snprintf(cipher, sizeof cipher, "%d", rc_tls_cipher_suite(c->tls));
    subject_len = rc_tls_peer_subject(c->tls, subject, sizeof subject);
    if (subject_len >= sizeof subject)
      subject_len = sizeof subject - 1; /* a subject of over 1 KiB, cut */
    chain = rc_tls_peer_chain_pem(c->tls, &chain_len);
    nstr += 4;
    total += 4 * 4 + strlen(version) + strlen(cipher) + subject_len + chain_len;
  }
  rc_event *ev = rc__event_new(type, c->id, total);
  if (ev == NULL) {
    free(chain);
    return NULL;
  }
  ev->nstr = (uint32_t)nstr;
  ev->port = port;
  char *p = ev->data;
  p = rc__event_put(p, req->method, req->method_len);
  p = rc__event_put(p, req->path, req->path_len);
  p = rc__event_put(p, req->query, req->query_len);
  p = rc__event_put(p, host, strlen(host));
  p = rc__event_put_headers(p, req->headers, req->num_headers);
  if (c->tls != NULL) {
    ev->code = 1; /* over TLS: the four strings below follow */
    p = rc__event_put(p, version, strlen(version));
    p = rc__event_put(p, cipher, strlen(cipher));
    p = rc__event_put(p, subject, subject_len);
    (void)rc__event_put(p, chain != NULL ? chain : "", chain_len);
  }
  free(chain);
  return ev;
}

/* permessage-deflate (RFC 7692), decided with the request head and kept
 * in two bytes (c->pmd_tx, c->pmd_rx) until the answer: the first offer
 * the policy allows, the server's answer always server_no_context_takeover
 * and client_no_context_takeover (see rc_pmd.h), so nothing of deflate is
 * kept per connection. A Sec-WebSocket-Extensions line that breaks the
 * grammar, or no offer that can be accepted, leaves the extension out: the
 * handshake goes on uncompressed, as for a client that offered nothing. */
static void negotiate_deflate(rc_conn *c, const rc_http_request *req) {
  if (!c->srv->cfg.compression)
    return;
  rc_pmd_offers offers;
  rc_pmd_offers_init(&offers);
  const rc_http_header *ua = NULL;
  for (size_t i = 0; i < req->num_headers; i++) {
    const rc_http_header *h = &req->headers[i];
    if (h->name_len == 10 && strncasecmp(h->name, "user-agent", 10) == 0)
      ua = h;
    if (h->name_len == 24 &&
        strncasecmp(h->name, "sec-websocket-extensions", 24) == 0 &&
        rc_pmd_parse_offers(h->value, h->value_len, &offers) != 0)
      return;
  }
  if (offers.count == 0 ||
      (ua != NULL && rc_pmd_agent_mishandles(ua->value, ua->value_len)))
    return;
  rc_pmd_policy pol;
  rc_pmd_policy_default(&pol);
  pol.decline_small_server_window = 0;
  rc_pmd_params p;
  char answer[RC_PMD_VALUE_MAX];
  if (rc_pmd_server_accept(&offers, &pol, &p, answer, sizeof answer) < 0)
    return;
  c->pmd_tx = p.server_max_window_bits ? p.server_max_window_bits
                                       : RC_PMD_MAX_WINDOW_BITS;
  c->pmd_rx =
      RC__PMD_RX | (p.server_max_window_bits ? RC__PMD_ANSWER_WINDOW : 0);
}

/* The Sec-WebSocket-Extensions line of the answer, from what
 * negotiate_deflate kept; empty without deflate. */
static void deflate_answer(const rc_conn *c, char *out, size_t cap) {
  out[0] = '\0';
  if (c->pmd_rx == 0)
    return;
  rc_pmd_params p = {.server_no_context_takeover = 1,
                     .client_no_context_takeover = 1};
  if (c->pmd_rx & RC__PMD_ANSWER_WINDOW)
    p.server_max_window_bits = c->pmd_tx;
  char value[RC_PMD_VALUE_MAX];
  if (rc_pmd_format(&p, value, sizeof value) < 0)
    return; /* cannot happen: the values came from rc_pmd_server_accept */
  (void)snprintf(out, cap, "Sec-WebSocket-Extensions: %s\r\n", value);
}

static void on_request_head(rc_conn *c, const rc_http_request *req) {
  rc_server *s = c->srv;
  rc_http_upgrade_check chk;
  rc_http_check_upgrade(req, &chk);
  if (chk.status == 0 || chk.status == 1) {
    int is_get = req->method_len == 3 && memcmp(req->method, "GET", 3) == 0;
    int is_head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
    if (chk.status == 1 && !(s->cfg.http_requests && (is_get || is_head))) {
      rc__refused(s, !is_get && !is_head ? RC__REFUSE_METHOD
                                         : RC__REFUSE_NOT_WEBSOCKET);
      if (!is_get && !is_head)
        rc__handshake_refuse(c, 405, "Allow: GET\r\n", "method not allowed");
      else
        rc__handshake_refuse(c, 426,
                             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                             "Sec-WebSocket-Version: 13\r\n",
                             "this is a WebSocket server: upgrade required");
      return;
    }
    if (s->stopping) {
      rc__refused(s, RC__REFUSE_SHUTTING_DOWN);
      rc__handshake_refuse(c, 503, NULL, "server shutting down");
      return;
    }
    rc_event *ev =
        request_event(c, chk.status == 0 ? RC_EV_OPEN : RC_EV_REQUEST, req);
    if (ev == NULL) {
      rc__conn_fail(c);
      return;
    }
    if (chk.status == 0) {
      c->key_off = (uint16_t)(chk.key - c->hbuf);
      c->key_len = (uint16_t)chk.key_len;
      negotiate_deflate(c, req);
    }
    c->state = chk.status == 0 ? RC_CONN_PENDING : RC_CONN_REQUEST;
    c->known = 1;
    /* The embedder answers within handshake_timeout, or the sweep does
     * (503): a handler that never answers must not hold the fd for ever. */
    c->deadline = rc__now_ms(s) + rc__secs_ms(s->cfg.handshake_timeout) + 1;
    rc__conn_pause_read(c);
    rc__event_push(s, ev);
    return;
  }
  rc__refused(s, chk.status == 426   ? RC__REFUSE_VERSION
                 : chk.status == 405 ? RC__REFUSE_METHOD
                                     : RC__REFUSE_BAD_REQUEST);
  if (chk.status == 426)
    rc__handshake_refuse(c, 426,
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Version: 13\r\n",
                         chk.reason);
  else if (chk.status == 405)
    rc__handshake_refuse(c, 405, "Allow: GET\r\n", chk.reason);
  else
    rc__handshake_refuse(c, chk.status, NULL, chk.reason);
}

static void on_http_bytes(rc_conn *c, const char *data, size_t len) {
  rc_server *s = c->srv;
  size_t cap = s->cfg.max_header_bytes + RC__HBUF_SLACK;
  const char *rest = NULL; /* bytes of this read past the cap */
  size_t rest_len = 0;
  if (c->hlen + len > cap) {
    if (c->hlen >= s->cfg.max_header_bytes) {
      rc__refused(s, RC__REFUSE_TOO_LARGE);
      rc__handshake_refuse(c, 431, NULL, "request header fields too large");
      return;
    }
    rest = data + (cap - c->hlen);
    rest_len = c->hlen + len - cap;
    len = cap - c->hlen;
  }
  if (rc__conn_head_append(c, data, len, cap) != 0)
    return;

  int r = rc_http_parse_request(c->hbuf, c->hlen, s->cfg.max_header_bytes,
                                s->cfg.max_headers, &s->req);
  if (r == RC_HTTP_INCOMPLETE && rest_len == 0)
    return;
  if (r == RC_HTTP_E_TOO_LARGE || r == RC_HTTP_INCOMPLETE) {
    rc__refused(s, RC__REFUSE_TOO_LARGE);
    rc__handshake_refuse(c, 431, NULL, "request header fields too large");
    return;
  }
  if (r < 0) {
    rc__refused(s, RC__REFUSE_BAD_REQUEST);
    rc__handshake_refuse(c, 400, NULL, "malformed HTTP request");
    return;
  }
  c->hhead = (uint32_t)r;
  on_request_head(c, &s->req);
  /* After it: s->req points into hbuf, which may move now. */
  if (rest_len > 0 && c->state == RC_CONN_PENDING) {
    /* Frames followed the head in the same read: keep them for after the
     * handshake. One read at most, so still bounded. */
    char *nb = realloc(c->hbuf, c->hlen + rest_len);
    if (nb == NULL) {
      rc__conn_fail(c);
      return;
    }
    memcpy(nb + c->hlen, rest, rest_len);
    c->hbuf = nb;
    c->hlen += (uint32_t)rest_len;
    c->hcap = c->hlen;
  }
}

static void tls_pump(rc_conn *c);

void rc__handshake_accept(rc_conn *c, const char *text, size_t text_len) {
  rc_server *s = c->srv;
  char accept[29];
  if (rc_ws_accept_value(c->hbuf + c->key_off, c->key_len, accept) != 0) {
    rc__conn_fail(c);
    return;
  }
  char ext[RC_PMD_VALUE_MAX + 32];
  deflate_answer(c, ext, sizeof ext);
  size_t tlen = text != NULL ? text_len : 0;
  size_t xlen = 96 + strlen(ext) + tlen;
  char *extra = malloc(xlen);
  if (extra == NULL) {
    rc__conn_fail(c);
    return;
  }
  int n = snprintf(extra, xlen,
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: %s\r\n%s",
                   accept, ext);
  if (tlen)
    memcpy(extra + n, text, tlen);
  extra[n + tlen] = '\0';
  rc_buf *b = rc__buf_http(101, extra, NULL, 0, 0, 0);
  free(extra);
  if (b == NULL) {
    rc__conn_fail(c);
    return;
  }
  rc__conn_enqueue(c, b);
  rc__buf_unref(b);

  c->state = RC_CONN_OPEN;
  if (c->pmd_rx) {
    c->pmd_rx |= RC__PMD_COUNTED;
    atomic_fetch_add_explicit(&s->st_pmd_conns, 1, memory_order_relaxed);
  }
  c->last_rx = c->last_msg = rc__now_ms(s);
  c->deadline = 0;
  char *hbuf = c->hbuf;
  uint32_t leftover = c->hlen - c->hhead;
  c->hbuf = NULL;
  c->hlen = c->hcap = 0;
  if (!c->held && !c->starved)
    rc__conn_start_read(c);
  if (leftover > 0)
    rc__conn_frames(c, hbuf + c->hhead, leftover);
  free(hbuf);
  s->transient_freed++; /* see RC__TRIM_AFTER */
  if (c->tls != NULL && c->state != RC_CONN_GONE && !c->doomed)
    tls_pump(c); /* records that came behind the request head */
}

/* --- the server role ------------------------------------------------------ */

static void plain_bytes(rc_conn *c, const char *data, size_t len) {
  if (c->state != RC_CONN_HTTP) {
    rc__conn_frames(c, data, len);
    return;
  }
  c->last_rx = rc__now_ms(c->srv);
  c->rx_recent = 1;
  on_http_bytes(c, data, len);
}

static void server_lost(rc_conn *c, int status) {
  (void)status; /* the peer went: nothing to tell it */
  tell_why(c, "connection lost before the request head");
  rc__conn_abort(c);
}

/* TLS on an accepted connection: the handshake runs in RC_CONN_HTTP,
 * under the deadline handshake_timeout set at the accept (a client that
 * dribbles its ClientHello gains nothing). A failed handshake (garbage,
 * plain HTTP, no valid client certificate) is counted and the connection
 * closes once OpenSSL's alert is written. The plaintext is handed on as a
 * plain connection's reads are, until the request head has been taken:
 * while the embedder decides, what follows waits in the filter
 * (rc_tls_read is not called; the socket is not read either), and the
 * accept takes it up (tls_pump again). */
static void tls_pump(rc_conn *c) {
  rc_server *s = c->srv;
  rc_tls *t = c->tls;
  if (!rc_tls_ready(t)) {
    int r = rc_tls_handshake(t);
    rc__conn_mark_dirty(c); /* its records, or the alert */
    if (r < 0) {
      c->tls_flags |= RC__TLS_FAILED;
      atomic_fetch_add_explicit(&s->st_tls_failures, 1, memory_order_relaxed);
      tell_why(c, rc_tls_error(t));
      rc__conn_pause_read(c);
      rc__conn_drain(c);
      return;
    }
    if (r == 0)
      return;
    c->tls_flags |= RC__TLS_COUNTED;
    atomic_fetch_add_explicit(&s->st_tls_handshakes, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->st_tls_conns, 1, memory_order_relaxed);
  }
  /* The read buffer is free: the filter copied the ciphertext. */
  while (c->state != RC_CONN_PENDING && c->state != RC_CONN_REQUEST &&
         c->state != RC_CONN_GONE && !c->doomed) {
    long n = rc_tls_read(t, s->readbuf, sizeof s->readbuf);
    if (n == 0)
      break;
    if (n == RC_TLS_E_CLOSED) {
      c->role->lost(c, UV_EOF);
      return;
    }
    if (n < 0) {
      tell_why(c, rc_tls_error(t));
      rc__conn_fail(c);
      return;
    }
    plain_bytes(c, s->readbuf, (size_t)n);
  }
  if (rc_tls_pending(t) > 0)
    rc__conn_mark_dirty(c);
}

static void server_received(rc_conn *c, const char *data, size_t len) {
  if (c->tls == NULL) {
    plain_bytes(c, data, len);
    return;
  }
  if (c->state == RC_CONN_DRAINING && !rc_tls_ready(c->tls))
    return; /* its handshake failed: read only to see the end */
  if (rc_tls_feed(c->tls, data, len) != 0) {
    rc__conn_fail(c);
    return;
  }
  c->tls_flags |= RC__TLS_STARTED;
  tls_pump(c);
}

static void server_write(rc_conn *c, const void *data, size_t len) {
  rc_buf *b = rc__buf_new(len);
  if (b == NULL) {
    rc__conn_fail(c); /* maybe inside wslay: at the end of the turn */
    return;
  }
  memcpy(b->data, data, len);
  rc__conn_enqueue(c, b);
  rc__buf_unref(b);
}

static void server_send(rc_conn *c, rc_buf *b) {
  if (rc__conn_enqueue_data(c, b))
    atomic_fetch_add_explicit(&c->srv->st_deliveries, 1, memory_order_relaxed);
}

static int server_ping(rc_conn *c) {
  static const char payload[] = "rc";
  rc_buf *b = rc__buf_frame(RC_OP_PING, payload, sizeof(payload) - 1);
  if (b == NULL)
    return -1;
  rc__conn_enqueue(c, b);
  rc__buf_unref(b);
  return 0;
}

static void server_message(rc_conn *c, int is_text, const uint8_t *msg,
                           size_t len, const uint8_t *z, size_t zlen) {
  if (c->nrelay == 0) {
    rc__conn_message_event(c, is_text, msg, len, z, zlen);
    return;
  }
  /* A member of a relaying room: forwarded here, the embedder never sees
   * it. A compressed message goes on to the members with deflate as the
   * sender compressed it: it stands alone (the sender agreed to
   * client_no_context_takeover), so it is valid for every such member, and
   * it is not compressed again. */
  rc_buf *b = rc__buf_message(is_text, msg, len);
  if (b == NULL) {
    rc__conn_fail(c);
    return;
  }
  if (z != NULL)
    rc__buf_take_deflated(b, z, zlen);
  rc__room_relay(c->srv, c, b);
  rc__buf_unref(b);
}

static int awaits_answer(const rc_conn *c) {
  return c->state == RC_CONN_PENDING || c->state == RC_CONN_REQUEST;
}

static void server_deadline(rc_conn *c) {
  rc__refused(c->srv, RC__REFUSE_TIMEOUT);
  if (awaits_answer(c))
    rc__handshake_refuse(c, 503, "Retry-After: 1\r\n",
                         "the application did not answer in time");
  else {
    tell_why(c, "no request head in time");
    rc__conn_abort(c); /* the request head did not come in time */
  }
}

static void server_cancel(rc_conn *c) {
  /* Before the request head only an adopted connection can be named. */
  if (awaits_answer(c) || c->state == RC_CONN_HTTP)
    rc__handshake_refuse(c, 403, NULL, "forbidden");
}

static void server_stop(rc_conn *c) {
  if (c->state == RC_CONN_HTTP || awaits_answer(c))
    rc__refused(c->srv, RC__REFUSE_SHUTTING_DOWN);
  if (c->state == RC_CONN_HTTP) {
    tell_why(c, "server shutting down");
    rc__conn_abort(c);
  } else if (awaits_answer(c))
    rc__handshake_refuse(c, 503, NULL, "server shutting down");
}

static void server_gone(rc_conn *c) {
  if (c->tls_flags & RC__TLS_COUNTED)
    atomic_fetch_sub_explicit(&c->srv->st_tls_conns, 1, memory_order_relaxed);
  /* A handshake begun and never finished failed too, however it ended: a
   * client that rejected the certificate and closed without an alert (as
   * asyncio's does), one that ran out of handshake_timeout, a stop. */
  else if ((c->tls_flags & (RC__TLS_STARTED | RC__TLS_FAILED)) ==
           RC__TLS_STARTED)
    atomic_fetch_add_explicit(&c->srv->st_tls_failures, 1,
                              memory_order_relaxed);
  if (c->pmd_rx & RC__PMD_COUNTED)
    atomic_fetch_sub_explicit(&c->srv->st_pmd_conns, 1, memory_order_relaxed);
  rc__room_leave_all(c->srv, c);
}

static int server_handle_closing(const rc_conn *c) {
  (void)c;
  return 0;
}

static void server_nothing(rc_conn *c) { (void)c; }

static const rc__limits *server_limits(const rc_conn *c) {
  return &c->srv->limits;
}

const rc__role rc__server_role = {
    .received = server_received,
    .lost = server_lost,
    .write = server_write,
    .send = server_send,
    .ping = server_ping,
    .message = server_message,
    .overflow = rc__conn_over_bound,
    .draining = server_nothing,
    .deadline = server_deadline,
    .cancel = server_cancel,
    .stop = server_stop,
    .gone = server_gone,
    .handle_closing = server_handle_closing,
    .closed = server_nothing,
    .queue_changed = server_nothing,
    .limits = server_limits,
    .inflate = rc__conn_inflate,
    .ws_init = wslay_event_context_server_init,
    .genmask = NULL,
    .peer_masks = 1,
    .joins_rooms = 1,
};
