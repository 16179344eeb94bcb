/*
 * loadgen: WebSocket fan-out load generator.
 *
 * Opens N client connections to one room, then the first of them (the
 * publisher) sends M text messages of S bytes with at most W of them
 * incomplete at a time; a message is complete once every connection,
 * the publisher included, has received it. Reports connection time,
 * deliveries per second, publish-to-delivery latency percentiles and,
 * given the server's pid, the server's CPU time per delivery.
 *
 * Several rooms (--rooms K): connection i joins room (i / P) mod K, P the
 * number of --ports (1 without), at PATH/<room> (PATH/0 .. PATH/K-1), so
 * that every room has members on every server. Message k goes to room
 * k mod K, sent by that room's publisher, connection r * P + r mod P for
 * room r (room r's first block of P connections, on server r mod P: the
 * publishers spread over the servers), and is complete once every member
 * of its room has received it; a connection expects its room's messages
 * in order (k, k + K, ...). The window counts messages of every room.
 * One room (the default) is all this with K = 1, PATH itself the path.
 *
 * Payload layout (text-safe, so that a server validating UTF-8 accepts it):
 * a 24-byte key at offset K, the sequence number (8 lowercase hex digits)
 * then the CLOCK_MONOTONIC send time in ns (16 lowercase hex digits); the
 * other S - 24 bytes come from a template.
 *   --payload x (default)  K = 0, the rest 'x': bytes 0..7 the sequence,
 *                          8..23 the time, 24..S-1 'x'
 *   --payload json         K = 7: one JSON object of exactly S bytes (S >=
 *                          256), {"id":"<key>","type":...}, a chat/ticker
 *                          update (quotes with prices and volumes, a user,
 *                          a line of chat text), one of PAYLOAD_POOL
 *                          templates drawn from a fixed seed (message k
 *                          uses template k mod PAYLOAD_POOL), so that it
 *                          compresses like real JSON (about 2.5-3x alone)
 *                          and not like a run of one byte
 * Warm-up messages, sent before the measured phase until every connection
 * has received one, have 'w' x 24 as their key (see PH_SYNC in main()).
 * The publisher always sends plain (uncompressed) frames.
 *
 * permessage-deflate (--deflate): the upgrade request offers
 * "permessage-deflate; client_max_window_bits" (rc_pmd_client_offer) and
 * the server's Sec-WebSocket-Extensions answer is checked
 * (rc_pmd_client_check_response; a bad answer fails the connection). A
 * message with RSV1 set is inflated, then checked like a plain one, and
 * its whole text is compared with what was sent:
 *   - the server answered server_no_context_takeover: each message stands
 *     alone and is inflated with one shared libdeflate inflater
 *     (rc_inflate_message). A server that compresses a message once for
 *     every member sends each member the same bytes, so once a message has
 *     been inflated and found right, a delivery with the same compressed
 *     bytes is that message: it is compared (memcmp) with them instead of
 *     being inflated again (--inflate-all turns this off). Different bytes
 *     are inflated.
 *   - it did not (the server keeps its context, like `websockets`): every
 *     message of that connection goes through its own zlib stream
 *     (rc_inflate_stream_*, window from server_max_window_bits).
 * wire_bytes_per_delivery in the JSON is the bytes received during the
 * publishing (frames with their headers, compressed or not) over the
 * deliveries.
 *
 * TLS (--tls): every connection makes a TLS client handshake (OpenSSL on
 * the socket, TLS 1.2 or later, ALPN "http/1.1" offered, no certificate
 * check: a load generator on loopback) before its upgrade request, and
 * everything after it is read and written through TLS. A connection with
 * TLS takes its own branch once per read or write call (on_readable_tls,
 * tls_write), so the plaintext path is what it was. Records are read with
 * read-ahead into a TLS_READ_BUF buffer (one recv() brings many records)
 * and decrypted into the shared read buffer until it is full or the socket
 * is empty; the frames are then parsed in place as for plaintext.
 * wire_bytes then counts the decrypted frame bytes. TLS 1.3 is what both
 * sides prefer; --tls-max 1.2 keeps it to TLS 1.2. Full handshakes by
 * default (no session cache): each connection costs the server a key
 * exchange and a signature. --tls-resume: every connection offers a
 * ticket (or TLS 1.2 session) the server gave and no connection has
 * offered yet, the latest first, so that once tickets flow the handshakes
 * are resumptions (TLS 1.3: PSK with an X25519 key exchange, no
 * certificate), each ticket used once as a browser does; tls_resumed
 * counts those the server accepted.
 *
 * Modes:
 *   window (default)  as fast as the window allows; --duration stops sending
 *                     new messages after that many seconds, so that a slow
 *                     server gets a short run instead of an endless one.
 *   --rate R          message k leaves at k/R seconds after the start, for
 *                     latency at a fixed load; --window still caps the
 *                     messages in flight, and a message that has to wait
 *                     for the window is counted in window_stalls (the run
 *                     is then saturated: the server cannot keep the rate).
 *   --idle-rss        no publishing: opens --rss-warm connections, lets the
 *                     server settle and reads its VmRSS, then opens the rest
 *                     and reads it again; the difference over the added
 *                     connections is the resident memory one idle member
 *                     costs, the process's fixed costs excluded.
 *   --handshakes N    no room, no publishing: N connections, --batch of
 *                     them in flight at a time, each one connect(), the
 *                     TLS handshake with --tls, the upgrade, then a close
 *                     frame and the server's answer to it. The first
 *                     HS_WARM of them warm the server up (those closed
 *                     when the clock starts: "warmup"); over the rest:
 *                     connections per second, the server's CPU time per
 *                     connection, this process's share of its core and
 *                     the time from connect() to the 101 (p50, p99).
 *                     --duration stops starting new ones after that long.
 *
 * Cost per delivery: the server, not this program, must set the pace, so a
 * delivery costs as little as it can. One thread (the benchmark gives it
 * one core), edge-triggered epoll, recv() of up to READ_BUF bytes into one
 * shared buffer, server frames parsed where they lie in it (an incomplete
 * frame start, at most CARRY_MAX bytes, waits in its connection for the
 * next read), and one check per delivery: memcmp() of the payload's first
 * PREFIX_LEN bytes with those sent as the message the connection expects
 * next; latency from the send time kept per message. The kernel's work per
 * recv() is what remains, so the cost falls as deliveries per read rise.
 * The JSON reports this process's share of its core over the publishing
 * time (loadgen_cpu_share): near 1, the figures are its, not the server's.
 *
 * Build: gcc -O2 -std=c11 -Wall -Wextra -Werror -Icsrc benchmarks/loadgen.c
 *        csrc/proto/rc_http.c csrc/proto/rc_pmd.c csrc/proto/rc_deflate.c
 *        -o build/loadgen -lssl -lcrypto -ldeflate -lz
 * Exit status: 0 on success, 1 on order errors, loss, dropped connections
 * or timeout, 2 on bad usage or set-up failure.
 */
#define _GNU_SOURCE
#include "proto/rc_deflate.h"
#include "proto/rc_http.h"
#include "proto/rc_pmd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PREFIX_LEN 24 /* sequence + timestamp, see the payload layout */
/* The key's offset in a JSON payload, after {"id":" */
#define JSON_KEY_OFF 7
/* Bytes of a message's start that hold its key, whatever the payload */
#define CHECK_MAX (JSON_KEY_OFF + PREFIX_LEN)
/* Distinct JSON templates; message k uses template k mod PAYLOAD_POOL */
#define PAYLOAD_POOL 256
#define JSON_MIN_SIZE 256
/* A compressed message larger than this is refused */
#define ZMSG_MAX (16u << 20)
#define HS_BUF 2048 /* a 101 response larger than this is refused */
#define READ_BUF (256 * 1024)
#define MAX_EVENTS 1024
/* OpenSSL's read buffer per TLS connection (read-ahead: one recv() brings
 * this much at most); released while the connection has nothing buffered */
#define TLS_READ_BUF (64 * 1024)
/* --handshakes: connections that warm the server up before measuring */
#define HS_WARM 50u
/* Above this many clients, source addresses are spread over 127.0.0.x:
 * one source address has about 28,000 ephemeral ports. */
#ifndef SPREAD_ABOVE
#define SPREAD_ABOVE 20000
#endif

/* Latency histogram: 1 us buckets up to 1 s, 1 ms buckets up to 60 s,
 * then one overflow bucket (the exact maximum is kept aside). */
#define FINE_BUCKETS 1000000u
#define COARSE_BUCKETS 59000u
#define HIST_BUCKETS (FINE_BUCKETS + COARSE_BUCKETS + 1u)

enum conn_state {
  ST_IDLE,
  ST_CONNECTING,
  ST_TLS, /* the TLS handshake, before the upgrade */
  ST_HANDSHAKE,
  ST_OPEN,
  ST_CLOSING,
  ST_DONE
};
enum phase { PH_CONNECT, PH_SYNC, PH_SETTLE, PH_PUBLISH, PH_CLOSE, PH_END };

struct handshake {
  size_t len;
  char accept[29];
  char buf[HS_BUF + 1];
};

struct outbuf {
  size_t off, len, cap;
  uint8_t data[];
};

/* The compressed payload of one message, gathered when it is not whole in
 * one read (split across reads, or fragmented); also a message kept in
 * memo[] */
struct zbuf {
  size_t len, cap;
  uint8_t data[];
};

/* Longest frame start that must be whole before it can be handled: a
 * server header (at most 10 bytes) and a control payload (at most 125).
 * A data frame needs less: its header and the CHECK_MAX bytes checked. */
#define CARRY_MAX (10 + 125)

struct conn {
  int fd;
  uint8_t state;
  uint8_t carry_len; /* bytes of an incomplete frame start kept in carry */
  uint8_t msg_op;    /* opcode of the data message being assembled, 0 if none */
  uint8_t msg_have;  /* prefix bytes of that message gathered so far */
  bool fin_pending;  /* the frame being skipped ends its message */
  bool ready;        /* has seen a warm-up message */
  bool out_armed;    /* EPOLLOUT is in the interest set */
  bool pmd;          /* permessage-deflate was negotiated */
  bool msg_z;        /* the message being assembled is compressed (RSV1) */
  /* SSL_read asked for the socket to be writable */
  bool tls_read_wants_write;
  uint32_t expect; /* next sequence number this connection should see */
  uint64_t skip;   /* payload bytes of the current frame not yet read */
  struct outbuf *out;
  struct handshake *hs;
  SSL *ssl;         /* NULL without --tls */
  uint64_t t_begin; /* --handshakes: when connect() was called */
  /* the server keeps its compression context: this connection's inflate
   * stream; NULL when its messages stand alone */
  rc_inflate_stream *zs;
  struct zbuf *zb; /* a compressed message being gathered */
  /* Only for a message whose prefix does not arrive in one piece with its
   * header (fragments, a payload split across reads); a whole frame in one
   * read is checked where it lies in the read buffer. */
  uint8_t prefix[CHECK_MAX];
  uint8_t carry[CARRY_MAX];
};

struct options {
  const char *host;
  int port;
  const char *path;
  uint32_t clients;
  uint32_t rooms; /* --rooms: rooms the connections spread over */
  uint32_t messages;
  uint32_t size;
  uint32_t window;
  uint32_t batch;
  int server_pid;
  double timeout;
  double rate;     /* messages per second, 0: as fast as the window allows */
  double duration; /* seconds of sending at most, 0: no limit */
  uint32_t rss_warm;
  double settle; /* seconds to wait before each VmRSS reading */
  bool idle_rss;
  bool json;
  bool payload_json; /* --payload json */
  bool deflate;      /* --deflate: offer permessage-deflate */
  bool inflate_all;  /* --inflate-all: no memo of checked compressed bytes */
  bool show_payload; /* --show-payload: print message 0 and exit */
  bool tls;          /* --tls */
  int tls_max;       /* --tls-max: 0 (no limit) or TLS1_2_VERSION */
  bool tls_resume;   /* --tls-resume */
  /* --handshakes N: the connection rate mode */
  uint32_t handshakes;
};

static struct options opt = {
    .host = "127.0.0.1",
    .port = 8000,
    .path = "/bench",
    .clients = 1000,
    .rooms = 1,
    .messages = 1000,
    .size = 64,
    .window = 64,
    .batch = 500,
    .server_pid = 0,
    .timeout = 60.0,
    .rate = 0,
    .duration = 0,
    .rss_warm = 100,
    .settle = 1.0,
    .idle_rss = false,
    .json = false,
};

static struct conn *conns;
static int epfd = -1;
static enum phase phase = PH_CONNECT;
static struct sockaddr_in server_addr;
/* --ports: connection i goes to ports[i % nports] (the publisher, 0, to the
 * first): subscribers spread over several servers sharing a room. */
#define MAX_PORTS 16
static int ports[MAX_PORTS];
static uint32_t nports;
static uint32_t spread; /* number of 127.0.0.x source addresses, 0 = none */
/* --rooms: the members of each room, those still connected */
static uint32_t *room_size, *room_alive;

static uint32_t next_to_open, handshaking, opened, ready_count, alive,
    closed_count;
static uint32_t sent, completed;
/* messages this run will send: --messages, or fewer once --duration is up */
static uint32_t target;
static uint64_t t_pub0, t_last_send;
static uint64_t send_lag_max_ns, window_stalls;
/* when a warm-up message last arrived anywhere, and when one last left */
static uint64_t warmup_rx, warmup_tx;
static uint32_t last_stalled = UINT32_MAX;
/* per message: the connections that have still to receive it */
static uint32_t *pending;
/* per message: its payload's first PREFIX_LEN bytes and its send time, so
 * that a delivery is checked with one comparison against what was sent
 * instead of parsing 24 hex digits, and its latency needs no parsing */
static uint8_t (*sent_prefix)[PREFIX_LEN];
static uint64_t *send_ns;
/* recv() calls that returned data: deliveries per read says how well the
 * reads are amortised */
static uint64_t reads;
static uint64_t deliveries, order_errors, protocol_errors, dropped,
    warmups_sent;
static uint64_t *hist;
static uint64_t lat_max_ns;
static bool timed_out, fatal;

static uint64_t rng_state;
static int8_t hexval[256];
static uint8_t readbuf[READ_BUF];
static uint8_t *frame; /* one message frame, rebuilt for each send */
static size_t frame_len, frame_hdr_len;

/* The payload: where the key lies in a message (check_off..check_end), and
 * the templates (pool_count of them, opt.size bytes each) of the rest */
static size_t check_off, check_end = PREFIX_LEN;
static uint8_t *payload_pool;
static uint32_t pool_count = 1;

/* permessage-deflate */
static char pmd_offer[RC_PMD_VALUE_MAX];
static rc_pmd_params pmd_offered;
static char pmd_answer[RC_PMD_VALUE_MAX]; /* the first connection's answer */
static uint32_t pmd_conns, takeover_conns;
static rc_inflater *inflater; /* for the messages that stand alone */
static uint8_t *inflbuf;      /* opt.size bytes: one inflated message */
/* per message: its compressed bytes once a delivery of them has been
 * inflated and found right (freed when the message is complete) */
static struct zbuf **memo;
static uint64_t compressed_rx, inflations, memo_hits, content_errors;
/* bytes received (wire bytes: frames with headers), for the publishing */
static uint64_t rx_bytes;

/* TLS (--tls): one client context for every connection; what the first
 * connection to finish its handshake negotiated; why the last TLS call
 * failed */
static SSL_CTX *tls_ctx;
static uint32_t tls_done;
static char tls_version[16], tls_cipher[64], tls_alpn[32];
static char tls_why[200];
/* --tls-resume: the sessions (tickets) the server gave and no connection
 * has offered yet, the latest last; how many handshakes resumed one */
#define TLS_SESSIONS 256
static SSL_SESSION *tls_sessions[TLS_SESSIONS];
static uint32_t tls_session_count, tls_resumed;
/* --tls-resume: tickets received, and sessions offered */
static uint32_t tls_tickets, tls_offered;

/* ---------------------------------------------------------------- utils */

static uint64_t now_ns(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
    perror("clock_gettime");
    exit(2);
  }
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(void) {
  /* xorshift64*: handshake keys and mask keys need to vary, not to be secret */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}

static void note(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("loadgen: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* Reports the first few of a kind of failure; a thousand identical lines
 * would hide the summary. */
static void note_limited(const char *fmt, ...) {
  static unsigned count;
  if (++count > 10) {
    if (count == 11)
      note("(further connection errors not shown)");
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  fputs("loadgen: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* ------------------------------------------------------ SHA-1 and base64 */

/* The core's accept value and base64 (csrc/proto/rc_http.c, on OpenSSL)
 * are linked in: the accept value a server must answer to `key`. */
static void accept_for(const char *key, char out[29]) {
  if (rc_ws_accept_value(key, strlen(key), out) != 0)
    out[0] = '\0'; /* no server's answer matches: the run reports it */
}

static void base64(const uint8_t *in, size_t len, char *out) {
  (void)rc_base64_encode(in, len, out);
}

/* The example of RFC 6455 section 1.3, so that a broken SHA-1 shows up as
 * such and not as "the server sent a wrong accept". */
static void self_test(void) {
  char acc[29];
  accept_for("dGhlIHNhbXBsZSBub25jZQ==", acc);
  if (strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != 0) {
    note("internal SHA-1 self-test failed");
    exit(2);
  }
}

/* ------------------------------------------------------------- writing */

static void set_interest(struct conn *c, bool want_out) {
  struct epoll_event ev = {.events =
                               EPOLLIN | EPOLLET | (want_out ? EPOLLOUT : 0u),
                           .data.u32 = (uint32_t)(c - conns)};
  if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
    perror("epoll_ctl(MOD)");
    exit(2);
  }
  c->out_armed = want_out;
}

static void conn_lost(struct conn *c, const char *why);

/* Why TLS call `what` failed with SSL_get_error() code e, in tls_why;
 * clears OpenSSL's error queue. */
static const char *tls_reason(const char *what, int e) {
  unsigned long code = ERR_get_error();
  if (code != 0) {
    const char *r = ERR_reason_error_string(code);
    snprintf(tls_why, sizeof tls_why, "TLS: %s: %s", what,
             r ? r : "unknown error");
  } else if (e == SSL_ERROR_SYSCALL) {
    snprintf(tls_why, sizeof tls_why, "TLS: %s: %s", what,
             errno ? strerror(errno) : "connection closed");
  } else {
    snprintf(tls_why, sizeof tls_why, "TLS: %s: error %d", what, e);
  }
  ERR_clear_error();
  return tls_why;
}

/* send() for a TLS connection: the bytes written (> 0), or -1 with errno
 * EAGAIN (try again when the socket allows) or EIO (tls_why says why).
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER and SSL_MODE_ENABLE_PARTIAL_WRITE:
 * a retry may come from the out buffer, with more bytes after the same
 * ones. */
static ssize_t tls_write(struct conn *c, const void *p, size_t len) {
  int n = SSL_write(c->ssl, p, len > INT32_MAX ? INT32_MAX : (int)len);
  if (n > 0)
    return n;
  int e = SSL_get_error(c->ssl, n);
  if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
    errno = EAGAIN;
    return -1;
  }
  tls_reason("SSL_write", e);
  errno = EIO;
  return -1;
}

/* What went wrong with the last write or read of connection c. */
static const char *io_error(const struct conn *c) {
  return c->ssl != NULL && errno == EIO ? tls_why : strerror(errno);
}

/* Writes now what the socket takes and keeps the rest for EPOLLOUT; bytes of
 * one frame are never reordered with another's. Returns false if the
 * connection was lost. */
static bool conn_send(struct conn *c, const void *data, size_t len) {
  const uint8_t *p = data;
  if (c->out == NULL || c->out->len == c->out->off) {
    while (len > 0) {
      ssize_t n = c->ssl != NULL ? tls_write(c, p, len)
                                 : send(c->fd, p, len, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          break;
        conn_lost(c, io_error(c));
        return false;
      }
      p += n;
      len -= (size_t)n;
    }
    if (len == 0)
      return true;
  }
  struct outbuf *o = c->out;
  if (o != NULL && o->off > 0) {
    memmove(o->data, o->data + o->off, o->len - o->off);
    o->len -= o->off;
    o->off = 0;
  }
  size_t need = (o ? o->len : 0) + len;
  if (o == NULL || need > o->cap) {
    size_t cap = o ? o->cap : 0;
    if (cap < 4096)
      cap = 4096;
    while (cap < need)
      cap *= 2;
    struct outbuf *grown = realloc(o, sizeof *o + cap);
    if (grown == NULL) {
      note("out of memory");
      exit(2);
    }
    if (o == NULL)
      grown->off = grown->len = 0;
    grown->cap = cap;
    c->out = o = grown;
  }
  memcpy(o->data + o->len, p, len);
  o->len += len;
  if (!c->out_armed)
    set_interest(c, true);
  return true;
}

static void conn_flush(struct conn *c) {
  struct outbuf *o = c->out;
  while (o != NULL && o->off < o->len) {
    const uint8_t *p = o->data + o->off;
    size_t len = o->len - o->off;
    ssize_t n = c->ssl != NULL ? tls_write(c, p, len)
                               : send(c->fd, p, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return;
      conn_lost(c, io_error(c));
      return;
    }
    o->off += (size_t)n;
  }
  if (c->out_armed && !c->tls_read_wants_write)
    set_interest(c, false);
}

/* A client frame: masked, as RFC 6455 section 5.3 requires. */
static size_t build_header(uint8_t *h, uint8_t opcode, uint64_t len,
                           uint8_t mask[4]) {
  size_t n = 0;
  h[n++] = (uint8_t)(0x80 | opcode);
  if (len < 126) {
    h[n++] = (uint8_t)(0x80 | len);
  } else if (len < 65536) {
    h[n++] = 0x80 | 126;
    h[n++] = (uint8_t)(len >> 8);
    h[n++] = (uint8_t)len;
  } else {
    h[n++] = 0x80 | 127;
    for (int i = 7; i >= 0; i--)
      h[n++] = (uint8_t)(len >> (8 * i));
  }
  uint32_t key = (uint32_t)rng_next();
  memcpy(mask, &key, 4);
  memcpy(h + n, mask, 4);
  return n + 4;
}

static void mask_bytes(uint8_t *p, size_t len, const uint8_t mask[4]) {
  for (size_t i = 0; i < len; i++)
    p[i] ^= mask[i & 3];
}

static bool send_control(struct conn *c, uint8_t opcode, const uint8_t *payload,
                         size_t len) {
  uint8_t f[14 + 125];
  uint8_t mask[4];
  size_t h = build_header(f, opcode, len, mask);
  memcpy(f + h, payload, len);
  mask_bytes(f + h, len, mask);
  return conn_send(c, f, h + len);
}

static void put_hex(uint8_t *p, uint64_t v, int digits) {
  static const char hex[] = "0123456789abcdef";
  for (int i = digits - 1; i >= 0; i--) {
    p[i] = (uint8_t)hex[v & 15];
    v >>= 4;
  }
}

/* The template of message seq: opt.size bytes, its key left to fill. */
static const uint8_t *template_for(uint32_t seq) {
  return payload_pool + (size_t)(seq % pool_count) * opt.size;
}

/* Fills the frame's payload for message `seq` (or a warm-up message) and
 * masks it with a fresh key. */
static void make_message(bool warmup, uint32_t seq, uint64_t t) {
  uint8_t mask[4];
  uint8_t *payload = frame + frame_hdr_len;
  uint8_t *key = payload + check_off;
  /* the header length only depends on the size, so rebuilding it in place
   * just changes the key */
  build_header(frame, 0x1, opt.size, mask);
  memcpy(payload, template_for(warmup ? 0 : seq), opt.size);
  if (warmup) {
    memset(key, 'w', PREFIX_LEN);
  } else {
    put_hex(key, seq, 8);
    put_hex(key + 8, t, 16);
    memcpy(sent_prefix[seq], key, PREFIX_LEN);
    send_ns[seq] = t;
  }
  mask_bytes(payload, opt.size, mask);
}

/* ------------------------------------------------------------- payloads */

static uint64_t gen_state = 0x9E3779B97F4A7C15ULL; /* the fixed seed */

static uint32_t gen_below(uint32_t n) {
  gen_state ^= gen_state >> 12;
  gen_state ^= gen_state << 25;
  gen_state ^= gen_state >> 27;
  return (uint32_t)((gen_state * 0x2545F4914F6CDD1DULL >> 32) % n);
}

static const char *const chat_phrases[] = {
    "buy the dip",
    "funding rate went up again",
    "anyone seen this chart?",
    "support holds for now",
    "whale alert on the order book",
    "take profit at the next level",
    "volume is low today",
    "I think we retest the high",
    "stop loss hit, out of my long",
    "gm everyone",
    "news coming soon",
    "fees on spot vs perp?",
    "nice entry",
    "short squeeze incoming lol",
    "thanks for the heads up",
    "waiting for a break above",
};
static const char *const user_names[] = {
    "fox_lantern",  "quietriver",  "m.tanaka",   "bytebandit",
    "olga_k",       "satoshi_fan", "trader_joe", "lunarmoth",
    "pkowalski",    "n3on",        "greenbar",   "redcandle",
    "deltaneutral", "amira.s",     "kestrel",    "hodl4ever"};
static const char *const symbols[] = {
    "BTC-USD", "ETH-USD", "SOL-USD",  "XRP-EUR",  "ADA-USD",   "DOGE-USD",
    "LTC-EUR", "DOT-USD", "AVAX-USD", "LINK-USD", "MATIC-USD", "ATOM-EUR"};
/* each symbol's price in cents, around which its quotes move */
static const uint32_t base_cents[] = {4312500, 229050, 10415, 57,   59, 9,
                                      7120,    712,    3890,  1475, 85, 961};
static const char *const roles[] = {"member", "moderator", "vip", "bot"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

struct text {
  char *p;
  size_t len, cap;
};

static void text_add(struct text *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= t->cap - t->len) {
    note("internal error: JSON template overflow");
    exit(2);
  }
  t->len += (size_t)n;
}

/* One JSON template of exactly opt.size bytes into out: a chat/ticker
 * update with varied values, its key ('0' x 24) at JSON_KEY_OFF. */
static void json_template(uint8_t *out) {
  size_t size = opt.size;
  struct text t = {malloc(size + 256), 0, size + 256};
  if (t.p == NULL) {
    note("out of memory");
    exit(2);
  }
  text_add(&t,
           "{\"id\":\"000000000000000000000000\",\"type\":\"update\","
           "\"room\":\"market.%s\",\"ts\":%" PRIu64 ",",
           symbols[gen_below(COUNT(symbols))],
           1733480000000ULL + gen_below(86400000));
  text_add(&t,
           "\"from\":{\"user\":%" PRIu32 ",\"name\":\"%s\",\"role\":"
           "\"%s\"},\"quotes\":[",
           10000 + gen_below(90000), user_names[gen_below(COUNT(user_names))],
           roles[gen_below(COUNT(roles))]);
  /* quotes while a longest one (under 170 bytes) and some text still fit,
   * then a line of chat: about 2.5-3x with a standalone deflate at 1 KiB,
   * like real JSON */
  for (bool first = true; t.len + 170 + 60 < size; first = false) {
    uint32_t sym = gen_below(COUNT(symbols));
    uint32_t base = base_cents[sym];
    uint32_t px = base - base / 50 + gen_below(base / 25 + 1);
    uint32_t spread = 1 + gen_below(base / 1000 + 1);
    text_add(&t,
             "%s{\"sym\":\"%s\",\"bid\":\"%" PRIu32 ".%02" PRIu32
             "\",\"ask\":\"%" PRIu32 ".%02" PRIu32 "\",\"vol\":%" PRIu32
             ",\"chg\":\"%c%" PRIu32 ".%02" PRIu32
             "\",\"side\":\"%s\",\"venue\":\"spot-eu1\",\"status\":\"open\"}",
             first ? "" : ",", symbols[sym], px / 100, px % 100,
             (px + spread) / 100, (px + spread) % 100, gen_below(50000),
             gen_below(2) ? '+' : '-', gen_below(12), gen_below(100),
             gen_below(2) ? "buy" : "sell");
  }
  text_add(&t, "],\"text\":\"");
  /* phrases up to exactly size bytes with the closing "}; the last one is
   * cut to fit */
  while (t.len + 2 < size) {
    const char *w = chat_phrases[gen_below(COUNT(chat_phrases))];
    size_t left = size - 2 - t.len, wl = strlen(w);
    if (wl >= left) {
      memcpy(t.p + t.len, w, left);
      t.len += left;
      break;
    }
    memcpy(t.p + t.len, w, wl);
    t.p[t.len + wl] = ' ';
    t.len += wl + 1;
  }
  memcpy(out, t.p, size - 2);
  out[size - 2] = '"';
  out[size - 1] = '}';
  free(t.p);
}

/* The templates of --payload: every message's bytes but its key. */
static void make_payloads(void) {
  if (opt.payload_json) {
    check_off = JSON_KEY_OFF;
    pool_count = PAYLOAD_POOL;
  }
  check_end = check_off + PREFIX_LEN;
  payload_pool = malloc((size_t)pool_count * opt.size);
  if (payload_pool == NULL) {
    note("out of memory");
    exit(2);
  }
  if (!opt.payload_json) {
    memset(payload_pool, 'x', opt.size);
    return;
  }
  for (uint32_t k = 0; k < pool_count; k++)
    json_template(payload_pool + (size_t)k * opt.size);
}

/* ----------------------------------------------------------- accounting */

static void hist_add(uint64_t ns) {
  uint64_t us = ns / 1000;
  uint32_t b;
  if (us < FINE_BUCKETS)
    b = (uint32_t)us;
  else if (us / 1000 < 60000)
    b = FINE_BUCKETS + (uint32_t)(us / 1000 - 1000);
  else
    b = HIST_BUCKETS - 1;
  hist[b]++;
  if (ns > lat_max_ns)
    lat_max_ns = ns;
}

static double bucket_us(uint32_t i) {
  if (i < FINE_BUCKETS)
    return i;
  if (i < HIST_BUCKETS - 1)
    return (double)(i - FINE_BUCKETS + 1000) * 1000.0;
  return (double)lat_max_ns / 1000.0;
}

/* Latency in us at each quantile of qs (ascending), in one pass over the
 * histogram: the bucket's lower bound, so within 1 us below a second. */
static void hist_quantiles(const double *qs, size_t nq, double *out) {
  uint64_t total = 0;
  for (uint32_t i = 0; i < HIST_BUCKETS; i++)
    total += hist[i];
  size_t k = 0;
  if (total == 0) {
    for (; k < nq; k++)
      out[k] = 0;
    return;
  }
  uint64_t seen = 0;
  for (uint32_t i = 0; i < HIST_BUCKETS && k < nq; i++) {
    seen += hist[i];
    while (k < nq) {
      uint64_t rank = (uint64_t)(qs[k] * (double)total);
      if (rank >= total)
        rank = total - 1;
      if (seen <= rank)
        break;
      out[k++] = bucket_us(i);
    }
  }
  for (; k < nq; k++)
    out[k] = (double)lat_max_ns / 1000.0;
}

/* The room of connection i, and the connection that publishes to room r
 * (see --rooms in the design note at the top). */
static uint32_t room_of(uint32_t i) {
  return i / (nports > 0 ? nports : 1) % opt.rooms;
}

static uint32_t publisher_of(uint32_t r) {
  uint32_t p = nports > 0 ? nports : 1;
  return r * p + r % p;
}

static bool is_publisher(uint32_t i) { return publisher_of(room_of(i)) == i; }

static void message_settled(uint32_t seq) {
  if (--pending[seq] == 0) {
    completed++;
    if (memo != NULL && memo[seq] != NULL) {
      free(memo[seq]);
      memo[seq] = NULL;
    }
  }
}

static void message_deliver(struct conn *c, uint32_t seq, uint64_t t) {
  c->expect = seq + opt.rooms; /* its room's next message */
  deliveries++;
  uint64_t ts = send_ns[seq];
  hist_add(t > ts ? t - ts : 0);
  message_settled(seq);
}

/* Not the message this connection expected next: a warm-up, a gap (the
 * skipped ones are settled now instead of stalling the window), a
 * duplicate, a reordering or garbage. */
static void message_unexpected(struct conn *c, const uint8_t *p, uint64_t t) {
  if (p[0] == 'w') {
    warmup_rx = t;
    if (!c->ready) {
      c->ready = true;
      ready_count++;
    }
    return;
  }
  uint64_t seq = 0;
  int bad = 0;
  for (int i = 0; i < 8; i++) {
    int v = hexval[p[i]];
    bad |= v;
    seq = seq << 4 | (uint64_t)(v & 15);
  }
  if (bad < 0 || phase != PH_PUBLISH || seq >= sent || seq < c->expect ||
      (seq - c->expect) % opt.rooms != 0 ||
      memcmp(p, sent_prefix[seq], PREFIX_LEN) != 0) {
    /* garbage, a duplicate, out of order, or another room's */
    order_errors++;
    return;
  }
  order_errors++;
  for (uint32_t s = c->expect; s < seq; s += opt.rooms)
    message_settled(s);
  message_deliver(c, (uint32_t)seq, t);
}

/* One data message has been fully read; p holds its first `have` bytes
 * (at most check_end matter). The per-delivery check is one comparison
 * of its key with what was sent as the message this connection expects
 * next. */
static void message_done(struct conn *c, const uint8_t *p, size_t have,
                         uint64_t t) {
  if (have < check_end) {
    order_errors++;
    return;
  }
  p += check_off;
  uint32_t e = c->expect;
  if (e < sent && phase == PH_PUBLISH &&
      memcmp(p, sent_prefix[e], PREFIX_LEN) == 0) {
    message_deliver(c, e, t);
    return;
  }
  message_unexpected(c, p, t);
}

static void protocol_error(struct conn *c, const char *why);

/* A message inflated to p[0..len) is message seq's whole text: its
 * template around the key, which was compared already. */
static bool body_matches(uint32_t seq, const uint8_t *p, size_t len) {
  const uint8_t *tpl = template_for(seq);
  return len == opt.size && memcmp(p, tpl, check_off) == 0 &&
         memcmp(p + check_end, tpl + check_end, opt.size - check_end) == 0;
}

static void memo_keep(uint32_t seq, const uint8_t *z, size_t len) {
  struct zbuf *m = malloc(sizeof *m + len);
  if (m == NULL) {
    note("out of memory");
    exit(2);
  }
  m->len = m->cap = len;
  memcpy(m->data, z, len);
  memo[seq] = m;
}

/* A whole compressed message z[0..len) (RSV1 set, the payloads of its
 * frames joined). Inflated and checked whole, unless it is byte for byte
 * a delivery of the expected message already inflated and found right. */
static void compressed_message(struct conn *c, const uint8_t *z, size_t len,
                               uint64_t t) {
  compressed_rx++;
  uint32_t e = c->expect;
  bool measured = e < sent && phase == PH_PUBLISH;
  if (measured && c->zs == NULL && memo[e] != NULL && memo[e]->len == len &&
      memcmp(memo[e]->data, z, len) == 0) {
    memo_hits++;
    message_deliver(c, e, t);
    return;
  }
  inflations++;
  size_t out_len = 0;
  int rc =
      c->zs != NULL
          ? rc_inflate_stream_feed(c->zs, z, len, inflbuf, opt.size, &out_len)
          : rc_inflate_message(inflater, z, len, inflbuf, opt.size, &out_len);
  if (rc != RC_INFLATE_OK) {
    protocol_error(c, rc == RC_INFLATE_TOO_BIG
                          ? "a compressed message inflates past --size"
                      : rc == RC_INFLATE_NOMEM
                          ? "out of memory inflating a message"
                          : "a compressed message does not inflate");
    return;
  }
  if (measured && out_len >= check_end &&
      memcmp(inflbuf + check_off, sent_prefix[e], PREFIX_LEN) == 0) {
    if (!body_matches(e, inflbuf, out_len)) {
      /* counted, and the message settled so that the run ends */
      content_errors++;
    } else if (c->zs == NULL && memo[e] == NULL && !opt.inflate_all) {
      memo_keep(e, z, len);
    }
    message_deliver(c, e, t);
    return;
  }
  message_done(c, inflbuf, out_len, t);
}

/* --------------------------------------------------------- connections */

static void conn_close_fd(struct conn *c) {
  if (c->ssl != NULL) {
    /* No close_notify: the WebSocket closing handshake ended the session.
     * Marked as shut down all the same: SSL_free() of a connection that
     * was not makes its session, a ticket --tls-resume may have kept,
     * not resumable. */
    SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c->ssl);
    c->ssl = NULL;
  }
  if (c->fd >= 0) {
    if (close(c->fd) != 0 && errno != EINTR)
      perror("close");
    c->fd = -1;
  }
  free(c->out);
  c->out = NULL;
  free(c->hs);
  c->hs = NULL;
  free(c->zb);
  c->zb = NULL;
  if (c->zs != NULL) {
    rc_inflate_stream_free(c->zs);
    c->zs = NULL;
  }
}

static void conn_lost(struct conn *c, const char *why) {
  if (c->state == ST_DONE)
    return;
  uint32_t idx = (uint32_t)(c - conns);
  enum conn_state was = c->state;
  conn_close_fd(c);
  c->state = ST_DONE;
  closed_count++;
  if (phase == PH_CLOSE || was == ST_CLOSING)
    return;
  dropped++;
  if (was == ST_CONNECTING || was == ST_TLS || was == ST_HANDSHAKE) {
    note_limited("connection %" PRIu32 " could not be opened: %s", idx, why);
    handshaking--;
    fatal = true;
    return;
  }
  note_limited("connection %" PRIu32 " lost: %s", idx, why);
  alive--;
  room_alive[room_of(idx)]--;
  if (phase != PH_PUBLISH) {
    /* the measured phase needs every connection in the room */
    fatal = true;
    return;
  }
  if (c->ready)
    ready_count--;
  if (is_publisher(idx)) {
    note("a publisher's connection is gone; stopping");
    fatal = true;
    return;
  }
  /* What this connection still owed will not arrive: settle it so that
   * the others can finish; it is counted as lost at the end. */
  for (uint32_t s = c->expect; s < sent; s += opt.rooms)
    message_settled(s);
}

static void start_connect(uint32_t i) {
  struct conn *c = &conns[i];
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    note("socket() for connection %" PRIu32 ": %s", i, strerror(errno));
    if (errno == EMFILE || errno == ENFILE)
      note("raise the open files limit (ulimit -n), or use fewer --clients");
    exit(2);
  }
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
    perror("setsockopt(TCP_NODELAY)");
    exit(2);
  }
  if (spread > 0) {
    /* With the port chosen at connect() time (not at bind()), each source
     * address has its own set of ephemeral ports toward the server. */
#ifdef IP_BIND_ADDRESS_NO_PORT
    if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) !=
        0) {
      perror("setsockopt(IP_BIND_ADDRESS_NO_PORT)");
      exit(2);
    }
#endif
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = 0};
    src.sin_addr.s_addr = htonl(0x7F000001u + i % spread);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
      note("bind() for connection %" PRIu32 ": %s", i, strerror(errno));
      exit(2);
    }
  }
  c->fd = fd;
  c->state = ST_CONNECTING;
  c->t_begin = opt.handshakes ? now_ns() : 0;
  handshaking++;
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLET, .data.u32 = i};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
    perror("epoll_ctl(ADD)");
    exit(2);
  }
  c->out_armed = true;
  struct sockaddr_in to = server_addr;
  if (nports > 0)
    to.sin_port = htons((uint16_t)ports[i % nports]);
  if (connect(fd, (struct sockaddr *)&to, sizeof to) != 0 &&
      errno != EINPROGRESS)
    conn_lost(c, strerror(errno));
}

static void send_upgrade(struct conn *c) {
  uint8_t raw[16];
  uint64_t a = rng_next(), b = rng_next();
  memcpy(raw, &a, 8);
  memcpy(raw + 8, &b, 8);
  char key[25];
  base64(raw, sizeof raw, key);
  c->hs = malloc(sizeof *c->hs);
  if (c->hs == NULL) {
    note("out of memory");
    exit(2);
  }
  c->hs->len = 0;
  accept_for(key, c->hs->accept);
  char req[1024], room[16] = "";
  if (opt.rooms > 1)
    snprintf(room, sizeof room, "/%" PRIu32, room_of((uint32_t)(c - conns)));
  int n = snprintf(req, sizeof req,
                   "GET %s%s HTTP/1.1\r\n"
                   "Host: %s:%d\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   "%s%s%s"
                   "\r\n",
                   opt.path, room, opt.host, opt.port, key,
                   opt.deflate ? "Sec-WebSocket-Extensions: " : "",
                   opt.deflate ? pmd_offer : "", opt.deflate ? "\r\n" : "");
  if (n < 0 || (size_t)n >= sizeof req) {
    note("--path or --host too long");
    exit(2);
  }
  c->state = ST_HANDSHAKE;
  set_interest(c, false);
  (void)conn_send(c, req, (size_t)n);
}

static void feed_frames(struct conn *c, const uint8_t *p, size_t n, uint64_t t);

/* Advances connection c's TLS handshake; once it is done, sends the
 * upgrade request through TLS. */
static void tls_step(struct conn *c) {
  int r = SSL_do_handshake(c->ssl);
  if (r == 1) {
    if (SSL_session_reused(c->ssl))
      tls_resumed++;
    if (tls_done++ == 0) {
      const unsigned char *alpn = NULL;
      unsigned alpn_len = 0;
      SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
      snprintf(tls_version, sizeof tls_version, "%s", SSL_get_version(c->ssl));
      snprintf(tls_cipher, sizeof tls_cipher, "%s",
               SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl)));
      snprintf(tls_alpn, sizeof tls_alpn, "%.*s", (int)alpn_len,
               alpn ? (const char *)alpn : "");
    }
    send_upgrade(c);
    return;
  }
  int e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ) {
    if (c->out_armed)
      set_interest(c, false);
  } else if (e == SSL_ERROR_WANT_WRITE) {
    if (!c->out_armed)
      set_interest(c, true);
  } else {
    conn_lost(c, tls_reason("handshake", e));
  }
}

/* The TCP connection is up: the TLS handshake starts. */
static void tls_begin(struct conn *c) {
  c->ssl = SSL_new(tls_ctx);
  if (c->ssl == NULL) {
    note("SSL_new: %s", tls_reason("SSL_new", SSL_ERROR_SSL));
    exit(2);
  }
  if (SSL_set_fd(c->ssl, c->fd) != 1) {
    note("SSL_set_fd: %s", tls_reason("SSL_set_fd", SSL_ERROR_SSL));
    exit(2);
  }
  if (tls_session_count > 0) {
    /* each ticket offered once (RFC 8446 C.4), the latest first */
    SSL_SESSION *session = tls_sessions[--tls_session_count];
    tls_offered++;
    int set = SSL_set_session(c->ssl, session);
    SSL_SESSION_free(session); /* the connection holds its own reference */
    if (set != 1) {
      note("SSL_set_session: %s", tls_reason("SSL_set_session", SSL_ERROR_SSL));
      exit(2);
    }
  }
  SSL_set_connect_state(c->ssl);
  c->state = ST_TLS;
  tls_step(c);
}

static void handshake_done(struct conn *c, uint64_t t);

/* Looks for the end of the 101 response; frames may follow it in the same
 * read. Returns false if the connection was lost. */
static bool read_handshake(struct conn *c, const uint8_t *p, size_t n,
                           uint64_t t) {
  struct handshake *h = c->hs;
  size_t take = HS_BUF - h->len;
  if (take > n)
    take = n;
  memcpy(h->buf + h->len, p, take);
  size_t scan_from = h->len >= 3 ? h->len - 3 : 0;
  h->len += take;
  h->buf[h->len] = '\0';
  char *end = strstr(h->buf + scan_from, "\r\n\r\n");
  if (end == NULL) {
    if (h->len == HS_BUF) {
      conn_lost(c, "handshake response too large");
      return false;
    }
    return true;
  }
  size_t head_len = (size_t)(end - h->buf) + 4;
  *end = '\0';
  if (strncmp(h->buf, "HTTP/1.1 101", 12) != 0) {
    char *eol = strstr(h->buf, "\r\n");
    if (eol)
      *eol = '\0';
    char why[160];
    snprintf(why, sizeof why, "server answered \"%.120s\"", h->buf);
    conn_lost(c, why);
    return false;
  }
  bool accept_ok = false;
  /* Sec-WebSocket-Extensions lines, joined with ", " (RFC 7230 3.2.2) */
  char ext[HS_BUF];
  size_t ext_len = 0;
  for (char *line = strstr(h->buf, "\r\n"); line != NULL;
       line = strstr(line, "\r\n")) {
    line += 2;
    static const char name[] = "sec-websocket-accept:";
    static const char ext_name[] = "sec-websocket-extensions:";
    bool is_accept = strncasecmp(line, name, sizeof name - 1) == 0;
    bool is_ext =
        opt.deflate && strncasecmp(line, ext_name, sizeof ext_name - 1) == 0;
    if (!is_accept && !is_ext)
      continue;
    char *v = line + (is_accept ? sizeof name : sizeof ext_name) - 1;
    while (*v == ' ' || *v == '\t')
      v++;
    size_t vlen = strcspn(v, "\r");
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
      vlen--;
    if (is_accept) {
      accept_ok = vlen == 28 && memcmp(v, h->accept, 28) == 0;
    } else if (ext_len + 2 + vlen < sizeof ext) {
      /* the head is at most HS_BUF bytes, so this always fits */
      if (ext_len > 0) {
        memcpy(ext + ext_len, ", ", 2);
        ext_len += 2;
      }
      memcpy(ext + ext_len, v, vlen);
      ext_len += vlen;
    }
  }
  if (!accept_ok) {
    conn_lost(c, "missing or wrong Sec-WebSocket-Accept");
    return false;
  }
  if (opt.deflate) {
    rc_pmd_params got;
    const char *reason = NULL;
    int r = rc_pmd_client_check_response(ext_len > 0 ? ext : NULL, ext_len,
                                         &pmd_offered, &got, &reason);
    if (r == RC_PMD_E_FAIL) {
      char why[200];
      snprintf(
          why, sizeof why, "bad Sec-WebSocket-Extensions answer \"%.*s\": %s",
          (int)(ext_len < 100 ? ext_len : 100), ext, reason ? reason : "?");
      protocol_errors++;
      conn_lost(c, why);
      return false;
    }
    if (r == 1) {
      c->pmd = true;
      pmd_conns++;
      if (pmd_answer[0] == '\0') {
        size_t k =
            ext_len < sizeof pmd_answer - 1 ? ext_len : sizeof pmd_answer - 1;
        /* a quoted parameter value would break the JSON line */
        for (size_t q = 0; q < k; q++)
          pmd_answer[q] = ext[q] == '"' || ext[q] == '\\' ? '\'' : ext[q];
        pmd_answer[k] = '\0';
      }
      if (!got.server_no_context_takeover) {
        int bits = got.server_max_window_bits ? got.server_max_window_bits
                                              : RC_PMD_MAX_WINDOW_BITS;
        c->zs = rc_inflate_stream_init(bits);
        if (c->zs == NULL) {
          note("out of memory (inflate stream)");
          exit(2);
        }
        takeover_conns++;
      }
    }
  }
  /* bytes of this read past the head are frames */
  size_t before = h->len - take;
  size_t rest_off = head_len - before;
  free(c->hs);
  c->hs = NULL;
  c->state = ST_OPEN;
  handshaking--;
  opened++;
  alive++;
  room_alive[room_of((uint32_t)(c - conns))]++;
  if (opt.handshakes) {
    handshake_done(c, t);
    return c->state != ST_DONE;
  }
  if (rest_off < n)
    feed_frames(c, p + rest_off, n - rest_off, t);
  return c->state != ST_DONE;
}

static void protocol_error(struct conn *c, const char *why) {
  protocol_errors++;
  conn_lost(c, why);
}

/* A whole control frame: a ping is answered, a close ends the connection
 * (answered first unless we started the closing). */
static void control_frame(struct conn *c, uint8_t op, const uint8_t *pl,
                          size_t len) {
  if (op == 0x9) {
    (void)send_control(c, 0xA, pl, len);
  } else if (op == 0x8) {
    if (c->state == ST_CLOSING || phase == PH_CLOSE) {
      conn_lost(c, "closed");
      return;
    }
    char why[64];
    unsigned code = len >= 2 ? (unsigned)pl[0] << 8 | pl[1] : 1005;
    snprintf(why, sizeof why, "server closed it with code %u", code);
    (void)send_control(c, 0x8, pl, len >= 2 ? 2 : 0);
    conn_lost(c, why);
  }
}

/* Why a frame with this first byte and length is refused, or NULL. */
static const char *check_header(const struct conn *c, uint8_t b0,
                                uint64_t len) {
  uint8_t op = b0 & 0x0F;
  if (b0 & 0x30)
    return "reserved bits set";
  if (b0 & 0x40) {
    /* RSV1: a compressed message, on its first frame only (RFC 7692 6) */
    if (!c->pmd)
      return "reserved bits set";
    if (op != 0x1 && op != 0x2)
      return "RSV1 on a frame that does not start a data message";
  }
  if (op & 0x8) {
    if (len > 125 || !(b0 & 0x80))
      return "bad control frame";
    if (op != 0x8 && op != 0x9 && op != 0xA)
      return "unknown control opcode";
  } else if (op == 0x1 || op == 0x2) {
    if (c->msg_op != 0)
      return "new message inside a fragmented one";
  } else if (op == 0x0) {
    if (c->msg_op == 0)
      return "continuation without a message";
  } else {
    return "unknown opcode";
  }
  return NULL;
}

/* Appends n bytes of a compressed message's payload to c->zb. Returns
 * false if the connection was lost (too large). */
static bool zappend(struct conn *c, const uint8_t *p, size_t n) {
  struct zbuf *z = c->zb;
  size_t len = z ? z->len : 0;
  if (len + n > ZMSG_MAX) {
    protocol_error(c, "compressed message too large");
    return false;
  }
  if (z == NULL || len + n > z->cap) {
    size_t cap = z ? z->cap : 0;
    if (cap < 4096)
      cap = 4096;
    while (cap < len + n)
      cap *= 2;
    z = realloc(z, sizeof *z + cap);
    if (z == NULL) {
      note("out of memory");
      exit(2);
    }
    z->len = len;
    z->cap = cap;
    c->zb = z;
  }
  memcpy(z->data + z->len, p, n);
  z->len += n;
  return true;
}

/* The last frame of a message assembled in c->prefix, or of a compressed
 * one gathered in c->zb, has been read. */
static void finish_message(struct conn *c, uint64_t t) {
  bool z = c->msg_z;
  c->msg_op = 0;
  c->msg_z = false;
  if (z) {
    c->msg_have = 0;
    struct zbuf *zb = c->zb;
    compressed_message(c, zb->data, zb->len, t);
    if (c->zb != NULL) {
      if (c->zb->cap > 65536) {
        free(c->zb);
        c->zb = NULL;
      } else {
        c->zb->len = 0;
      }
    }
    return;
  }
  message_done(c, c->prefix, c->msg_have, t);
  c->msg_have = 0;
}

/* The end of a data frame that began in this read: the message is
 * finished when the frame is whole and final; a payload that goes on past
 * the read is skipped as it comes, and counted when its last byte arrives,
 * as a client would see it. Returns the bytes of the read it used. */
static size_t frame_end(struct conn *c, uint8_t b0, size_t hl, uint64_t len,
                        size_t avail, uint64_t t) {
  bool fin = (b0 & 0x80) != 0;
  if (len <= avail) {
    if (fin)
      finish_message(c, t);
    return hl + (size_t)len;
  }
  c->skip = len - avail;
  c->fin_pending = fin;
  return hl + avail;
}

/* A frame of a compressed message that is not whole in this read: its
 * payload is gathered in c->zb. Same contract as frame_at(). */
static size_t zframe_slow(struct conn *c, uint8_t b0, size_t hl, uint64_t len,
                          size_t avail, const uint8_t *pl, uint64_t t) {
  uint8_t op = b0 & 0x0F;
  if (op != 0) {
    c->msg_op = op;
    c->msg_z = true;
    if (c->zb != NULL)
      c->zb->len = 0;
  }
  size_t take = len <= avail ? (size_t)len : avail;
  if (!zappend(c, pl, take))
    return hl + avail;
  return frame_end(c, b0, hl, len, avail, t);
}

/* A data frame that is not a whole message in this read (a fragment, or a
 * payload that goes on past the read): its prefix bytes are gathered in
 * c->prefix. Same contract as frame_at(). */
static size_t data_frame_slow(struct conn *c, uint8_t b0, size_t hl,
                              uint64_t len, size_t avail, const uint8_t *pl,
                              uint64_t t) {
  uint8_t op = b0 & 0x0F;
  size_t have = op != 0 ? 0 : c->msg_have;
  size_t want = have < check_end ? check_end - have : 0;
  if (want > len)
    want = (size_t)len;
  if (avail < want)
    return 0; /* nothing changed yet: retried whole with the next read */
  if (op != 0)
    c->msg_op = op;
  memcpy(c->prefix + have, pl, want);
  c->msg_have = (uint8_t)(have + want);
  return frame_end(c, b0, hl, len, avail, t);
}

/* Handles the frame that starts at p, n bytes of this read from there, in
 * place. Returns the bytes used: 0 when the frame's start (header, and the
 * prefix or the control payload) is not all there yet, which the caller
 * keeps for the next read; at most n, the rest of the payload then being
 * in c->skip. */
static size_t frame_at(struct conn *c, const uint8_t *p, size_t n, uint64_t t) {
  if (n < 2)
    return 0;
  uint8_t b0 = p[0], b1 = p[1];
  if (b1 & 0x80) {
    protocol_error(c, "masked frame from the server");
    return n;
  }
  size_t hl = 2;
  uint64_t len = b1 & 0x7F;
  if (len == 126) {
    hl = 4;
    if (n < hl)
      return 0;
    len = (uint64_t)p[2] << 8 | p[3];
  } else if (len == 127) {
    hl = 10;
    if (n < hl)
      return 0;
    len = 0;
    for (size_t i = 2; i < 10; i++)
      len = len << 8 | p[i];
  }
  size_t avail = n - hl;
  /* The per-delivery path: a whole one-frame message in this read, checked
   * where it lies; its payload is never copied. */
  if ((b0 == 0x81 || b0 == 0x82) && c->msg_op == 0 && len <= avail) {
    message_done(c, p + hl, (size_t)len, t);
    return hl + (size_t)len;
  }
  /* a whole compressed one-frame message: inflated from where it lies */
  if ((b0 == 0xC1 || b0 == 0xC2) && c->pmd && c->msg_op == 0 && len <= avail) {
    compressed_message(c, p + hl, (size_t)len, t);
    return hl + (size_t)len;
  }
  const char *why = check_header(c, b0, len);
  if (why != NULL) {
    protocol_error(c, why);
    return n;
  }
  if (b0 & 0x08) {
    if (avail < len)
      return 0;
    control_frame(c, b0 & 0x0F, p + hl, (size_t)len);
    return hl + (size_t)len;
  }
  if (c->msg_z || (b0 & 0x40))
    return zframe_slow(c, b0, hl, len, avail, p + hl, t);
  return data_frame_slow(c, b0, hl, len, avail, p + hl, t);
}

/* The frames of one read (after what the previous read left in carry). */
static void feed_frames(struct conn *c, const uint8_t *p, size_t n,
                        uint64_t t) {
  if (c->skip > 0) {
    size_t take = c->skip < n ? (size_t)c->skip : n;
    if (c->msg_z && !zappend(c, p, take))
      return;
    c->skip -= take;
    p += take;
    n -= take;
    if (c->skip > 0)
      return;
    if (c->fin_pending)
      finish_message(c, t);
    c->fin_pending = false;
  }
  while (n > 0 && c->state != ST_DONE) {
    size_t used = frame_at(c, p, n, t);
    if (used == 0) {
      /* frame_at() asks for more only below CARRY_MAX bytes */
      memcpy(c->carry, p, n);
      c->carry_len = (uint8_t)n;
      return;
    }
    p += used;
    n -= used;
  }
}

static void on_readable(struct conn *c) {
  for (;;) {
    /* an incomplete frame start of the last read goes first, so that
     * every frame is parsed from one contiguous buffer */
    size_t keep = c->carry_len;
    if (keep > 0)
      memcpy(readbuf, c->carry, keep);
    ssize_t n = recv(c->fd, readbuf + keep, sizeof readbuf - keep, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return;
      conn_lost(c, strerror(errno));
      return;
    }
    if (n == 0) {
      conn_lost(c, c->state == ST_CLOSING ? "closed"
                                          : "connection closed by the server");
      return;
    }
    reads++;
    rx_bytes += (uint64_t)n;
    c->carry_len = 0;
    /* one clock read per read(): every frame in it arrived together */
    uint64_t t = now_ns();
    if (c->state == ST_HANDSHAKE) {
      if (!read_handshake(c, readbuf, (size_t)n, t))
        return;
    } else {
      feed_frames(c, readbuf, keep + (size_t)n, t);
    }
    /* A short read emptied the socket: edge-triggered epoll reports it
     * again when more arrives, so no read() has to say EAGAIN. */
    if ((size_t)n < sizeof readbuf - keep || c->state == ST_DONE)
      return;
  }
}

/* on_readable() for a TLS connection: records decrypted into the shared
 * read buffer (after what the last read left in carry) until it is full
 * or nothing more can be had now, then the frames parsed in place. */
static void on_readable_tls(struct conn *c) {
  enum { MORE, EMPTY, EOF_SEEN, FAILED } end = MORE;
  c->tls_read_wants_write = false;
  while (end == MORE) {
    size_t keep = c->carry_len;
    if (keep > 0)
      memcpy(readbuf, c->carry, keep);
    size_t got = 0;
    while (keep + got < sizeof readbuf) {
      int r = SSL_read(c->ssl, readbuf + keep + got,
                       (int)(sizeof readbuf - keep - got));
      if (r > 0) {
        got += (size_t)r;
        continue;
      }
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ) {
        end = EMPTY;
      } else if (e == SSL_ERROR_WANT_WRITE) {
        /* retried once the socket is writable (on_event) */
        end = EMPTY;
        c->tls_read_wants_write = true;
        if (!c->out_armed)
          set_interest(c, true);
      } else if (e == SSL_ERROR_ZERO_RETURN) {
        end = EOF_SEEN;
      } else {
        tls_reason("SSL_read", e);
        end = FAILED;
      }
      break;
    }
    if (got > 0) {
      reads++;
      rx_bytes += got;
      c->carry_len = 0;
      uint64_t t = now_ns();
      if (c->state == ST_HANDSHAKE) {
        if (!read_handshake(c, readbuf, got, t))
          return;
      } else {
        feed_frames(c, readbuf, keep + got, t);
      }
      if (c->state == ST_DONE)
        return;
    }
  }
  if (end == EOF_SEEN)
    conn_lost(c, c->state == ST_CLOSING ? "closed"
                                        : "connection closed by the server");
  else if (end == FAILED)
    conn_lost(c, tls_why);
}

static void on_event(uint32_t idx, uint32_t events) {
  struct conn *c = &conns[idx];
  if (c->state == ST_DONE)
    return;
  if (c->state == ST_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
      err = errno;
    if (err != 0) {
      conn_lost(c, strerror(err));
      return;
    }
    if (opt.tls)
      tls_begin(c);
    else
      send_upgrade(c);
    return;
  }
  if (c->ssl != NULL) {
    if (c->state == ST_TLS) {
      tls_step(c);
      return;
    }
    /* a write may wait on a read and a read on a write: both are tried */
    if (c->out != NULL && c->out->off < c->out->len)
      conn_flush(c);
    if (c->state != ST_DONE &&
        ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || c->tls_read_wants_write))
      on_readable_tls(c);
    return;
  }
  if (events & EPOLLOUT) {
    conn_flush(c);
    if (c->state == ST_DONE)
      return;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
    on_readable(c);
}

/* --------------------------------------------------------------- phases */

static bool read_cpu_ticks(int pid, uint64_t *ticks) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return false;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  if (fclose(f) != 0 || n == 0)
    return false;
  buf[n] = '\0';
  /* the command name may hold spaces and parentheses: skip to the last ')' */
  char *p = strrchr(buf, ')');
  if (p == NULL)
    return false;
  p++;
  unsigned long long utime = 0, stime = 0;
  /* fields 3..13 are skipped, 14 and 15 are utime and stime */
  if (sscanf(p, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
             &utime, &stime) != 2)
    return false;
  *ticks = utime + stime;
  return true;
}

/* VmRSS of `pid` in bytes, from /proc/<pid>/status. */
static bool read_rss(int pid, uint64_t *bytes) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return false;
  bool found = false;
  while (!found && fgets(line, sizeof line, f) != NULL) {
    unsigned long long kb;
    if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) {
      *bytes = (uint64_t)kb * 1024u;
      found = true;
    }
  }
  if (fclose(f) != 0)
    return false;
  return found;
}

/* Rate mode: message `seq` is due this long after the start of publishing.
 * Computed from the start, not from the previous send, so that a late send
 * does not shift every later one. */
static uint64_t due_time(uint32_t seq) {
  return t_pub0 + (uint64_t)((double)seq * 1e9 / opt.rate);
}

static void publish_some(void) {
  while (sent < target && !fatal) {
    uint64_t t = now_ns();
    if (opt.rate > 0) {
      uint64_t due = due_time(sent);
      if (t < due)
        return;
      if (sent - completed >= opt.window) {
        if (last_stalled != sent) {
          last_stalled = sent;
          window_stalls++;
        }
        return;
      }
      if (t - due > send_lag_max_ns)
        send_lag_max_ns = t - due;
    } else if (sent - completed >= opt.window) {
      return;
    }
    uint32_t seq = sent, r = seq % opt.rooms;
    make_message(false, seq, t);
    pending[seq] = room_alive[r];
    sent++;
    t_last_send = t;
    if (!conn_send(&conns[publisher_of(r)], frame, frame_len))
      return;
  }
}

/* One warm-up message to every room, each from its publisher. */
static void send_warmup(uint64_t t) {
  warmup_tx = t;
  for (uint32_t r = 0; r < opt.rooms; r++) {
    make_message(true, 0, 0);
    warmups_sent++;
    (void)conn_send(&conns[publisher_of(r)], frame, frame_len);
  }
}

/* --handshakes: connections that warm the server up, not measured */
static uint32_t hs_warm;

/* --handshakes: the upgrade of connection c is done; its time from
 * connect() is kept and the closing handshake starts. */
static void handshake_done(struct conn *c, uint64_t t) {
  static const uint8_t normal[2] = {0x03, 0xE8}; /* 1000 */
  if ((uint32_t)(c - conns) >= hs_warm)
    hist_add(t > c->t_begin ? t - c->t_begin : 0);
  c->state = ST_CLOSING;
  (void)send_control(c, 0x8, normal, sizeof normal);
}

static void begin_close(void) {
  static const uint8_t normal[2] = {0x03, 0xE8}; /* 1000 */
  for (uint32_t i = 0; i < opt.clients; i++) {
    struct conn *c = &conns[i];
    if (c->state != ST_OPEN)
      continue;
    c->state = ST_CLOSING;
    (void)send_control(c, 0x8, normal, sizeof normal);
  }
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: loadgen [options]\n"
      "  --host ADDR        server IPv4 address (default 127.0.0.1)\n"
      "  --port P           server port (default 8000)\n"
      "  --ports P1,P2,...  servers sharing the room (up to 16): connection i\n"
      "                     goes to the (i mod count)-th, the publisher to P1\n"
      "  --path PATH        request path (default /bench)\n"
      "  --clients N        connections, publisher included (default 1000)\n"
      "  --rooms K          spread the connections over K rooms at\n"
      "                     PATH/0 .. PATH/K-1, one publisher each, on\n"
      "                     every server of --ports (default 1: PATH)\n"
      "  --messages M       messages to publish at most (default 1000)\n"
      "  --size S           payload bytes per message, >= %d (default 64)\n"
      "  --window W         messages incomplete at a time (default 64)\n"
      "  --duration SECONDS stop sending new messages after this long\n"
      "                     (default: no limit); the run ends once the\n"
      "                     messages sent are all delivered\n"
      "  --rate R           send R messages per second instead of as fast\n"
      "                     as the window allows (the window still caps them)\n"
      "  --idle-rss         measure the server's resident memory per idle\n"
      "                     connection instead of publishing (needs\n"
      "                     --server-pid)\n"
      "  --rss-warm K       connections open for the first reading (default "
      "100)\n"
      "  --settle SECONDS   wait before each reading (default 1)\n"
      "  --batch B          handshakes in flight at once (default 500)\n"
      "  --server-pid PID   measure this process's CPU time while publishing\n"
      "  --timeout SECONDS  stop with an error after this long (default 60)\n"
      "  --payload x|json   message text: the key then 'x' (default), or a\n"
      "                     JSON chat/ticker update of exactly --size bytes\n"
      "                     (>= %d), varied from a fixed seed\n"
      "  --deflate          offer permessage-deflate and inflate what comes\n"
      "                     compressed (the publisher sends plain frames)\n"
      "  --inflate-all      inflate every compressed delivery, even one whose\n"
      "                     bytes equal a delivery of that message already\n"
      "                     inflated and checked\n"
      "  --show-payload     print message 0 as sent and exit\n"
      "  --tls              TLS on every connection (no certificate check,\n"
      "                     ALPN http/1.1 offered, TLS 1.2 or later)\n"
      "  --tls-max 1.2|1.3  the highest TLS version offered (default 1.3)\n"
      "  --tls-resume       offer the session of the server's latest ticket\n"
      "                     (default: every handshake a full one)\n"
      "  --handshakes N     measure new connections per second instead:\n"
      "                     N connections, --batch at a time, each connect,\n"
      "                     TLS handshake (--tls), upgrade, close\n"
      "  --json             one JSON line on stdout, the summary on stderr\n",
      PREFIX_LEN, JSON_MIN_SIZE);
}

static uint32_t parse_u32(const char *name, const char *s, uint32_t min) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || end == s || v < min || v > UINT32_MAX / 2) {
    note("bad value for --%s: %s", name, s);
    exit(2);
  }
  return (uint32_t)v;
}

static double parse_positive(const char *name, const char *s) {
  char *end;
  double v = strtod(s, &end);
  if (*end != '\0' || end == s || !(v > 0) || v > 1e9) {
    note("bad value for --%s: %s", name, s);
    exit(2);
  }
  return v;
}

static void parse_args(int argc, char **argv) {
  static const struct option longopts[] = {
      {"host", required_argument, NULL, 'H'},
      {"port", required_argument, NULL, 'p'},
      {"ports", required_argument, NULL, 'o'},
      {"path", required_argument, NULL, 'P'},
      {"clients", required_argument, NULL, 'n'},
      {"rooms", required_argument, NULL, 'g'},
      {"messages", required_argument, NULL, 'm'},
      {"size", required_argument, NULL, 's'},
      {"window", required_argument, NULL, 'w'},
      {"duration", required_argument, NULL, 'd'},
      {"rate", required_argument, NULL, 'r'},
      {"idle-rss", no_argument, NULL, 'i'},
      {"rss-warm", required_argument, NULL, 'k'},
      {"settle", required_argument, NULL, 'e'},
      {"batch", required_argument, NULL, 'b'},
      {"server-pid", required_argument, NULL, 'S'},
      {"timeout", required_argument, NULL, 't'},
      {"json", no_argument, NULL, 'j'},
      {"payload", required_argument, NULL, 'y'},
      {"deflate", no_argument, NULL, 'z'},
      {"inflate-all", no_argument, NULL, 'a'},
      {"show-payload", no_argument, NULL, 'v'},
      {"tls", no_argument, NULL, 'T'},
      {"tls-max", required_argument, NULL, 'X'},
      {"tls-resume", no_argument, NULL, 'R'},
      {"handshakes", required_argument, NULL, 'K'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  int ch;
  while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (ch) {
    case 'H':
      opt.host = optarg;
      break;
    case 'p':
      opt.port = (int)parse_u32("port", optarg, 1);
      break;
    case 'o': {
      char *list = strdup(optarg), *save = NULL;
      if (list == NULL) {
        note("out of memory");
        exit(2);
      }
      nports = 0;
      for (char *t = strtok_r(list, ",", &save); t != NULL;
           t = strtok_r(NULL, ",", &save)) {
        uint32_t v = parse_u32("ports", t, 1);
        if (nports == MAX_PORTS || v > 65535) {
          note("--ports takes up to %d ports of 1..65535", MAX_PORTS);
          exit(2);
        }
        ports[nports++] = (int)v;
      }
      free(list);
      if (nports == 0) {
        note("--ports needs at least one port");
        exit(2);
      }
      opt.port = ports[0];
      break;
    }
    case 'P':
      opt.path = optarg;
      break;
    case 'n':
      opt.clients = parse_u32("clients", optarg, 1);
      break;
    case 'g':
      opt.rooms = parse_u32("rooms", optarg, 1);
      break;
    case 'm':
      opt.messages = parse_u32("messages", optarg, 1);
      break;
    case 's':
      opt.size = parse_u32("size", optarg, PREFIX_LEN);
      break;
    case 'w':
      opt.window = parse_u32("window", optarg, 1);
      break;
    case 'd':
      opt.duration = parse_positive("duration", optarg);
      break;
    case 'r':
      opt.rate = parse_positive("rate", optarg);
      break;
    case 'i':
      opt.idle_rss = true;
      break;
    case 'k':
      opt.rss_warm = parse_u32("rss-warm", optarg, 1);
      break;
    case 'e':
      opt.settle = parse_positive("settle", optarg);
      break;
    case 'b':
      opt.batch = parse_u32("batch", optarg, 1);
      break;
    case 'S':
      opt.server_pid = (int)parse_u32("server-pid", optarg, 1);
      break;
    case 't':
      opt.timeout = parse_positive("timeout", optarg);
      break;
    case 'j':
      opt.json = true;
      break;
    case 'y':
      if (strcmp(optarg, "json") == 0) {
        opt.payload_json = true;
      } else if (strcmp(optarg, "x") == 0) {
        opt.payload_json = false;
      } else {
        note("--payload takes x or json: %s", optarg);
        exit(2);
      }
      break;
    case 'z':
      opt.deflate = true;
      break;
    case 'a':
      opt.inflate_all = true;
      break;
    case 'v':
      opt.show_payload = true;
      break;
    case 'T':
      opt.tls = true;
      break;
    case 'X':
      if (strcmp(optarg, "1.2") == 0) {
        opt.tls_max = TLS1_2_VERSION;
      } else if (strcmp(optarg, "1.3") == 0) {
        opt.tls_max = 0;
      } else {
        note("--tls-max takes 1.2 or 1.3: %s", optarg);
        exit(2);
      }
      break;
    case 'R':
      opt.tls_resume = true;
      break;
    case 'K':
      opt.handshakes = parse_u32("handshakes", optarg, 1);
      break;
    case 'h':
      usage(stdout);
      exit(0);
    default:
      usage(stderr);
      exit(2);
    }
  }
  if (optind != argc || opt.port > 65535) {
    usage(stderr);
    exit(2);
  }
  if (opt.idle_rss && (opt.server_pid == 0 || opt.rss_warm >= opt.clients)) {
    note("--idle-rss needs --server-pid and more --clients than --rss-warm");
    exit(2);
  }
  if (opt.tls_resume && !opt.tls) {
    note("--tls-resume needs --tls");
    exit(2);
  }
  if (opt.handshakes && (opt.idle_rss || opt.rate > 0 || nports > 0)) {
    note("--handshakes goes without --idle-rss, --rate and --ports");
    exit(2);
  }
  if (opt.rooms > 1 && (opt.handshakes || opt.idle_rss)) {
    note("--rooms goes without --handshakes and --idle-rss");
    exit(2);
  }
  if (opt.rooms > 1 && opt.clients / (nports > 0 ? nports : 1) < opt.rooms) {
    /* every room a member on every server, and its publisher */
    note("--rooms K needs --clients of at least K times the --ports");
    exit(2);
  }
  if (opt.handshakes)
    opt.clients = opt.handshakes; /* one connection each, never reused */
  if (opt.payload_json && opt.size < JSON_MIN_SIZE) {
    note("--payload json needs --size >= %d", JSON_MIN_SIZE);
    exit(2);
  }
  if (inet_pton(AF_INET, opt.host, &server_addr.sin_addr) != 1) {
    note("--host must be an IPv4 address: %s", opt.host);
    exit(2);
  }
  server_addr.sin_family = AF_INET;
  server_addr.sin_port = htons((uint16_t)opt.port);
  if (opt.path[0] != '/' || strpbrk(opt.path, " \r\n") != NULL) {
    note("--path must start with / and hold no spaces");
    exit(2);
  }
}

static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    perror("getrlimit");
    exit(2);
  }
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      perror("setrlimit");
  }
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)opt.clients + 16)
    note("warning: open files limit %llu is below --clients %" PRIu32 " + 16",
         (unsigned long long)rl.rlim_cur, opt.clients);
}

/* This process's CPU time (user + system, every thread) in ns: precise,
 * unlike the 10 ms ticks of /proc/<pid>/stat. */
static uint64_t cpu_ns(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0)
    return 0;
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Quantiles of the latency CDF in the JSON output: every percent, then
 * finer in the tail, where the servers differ most. */
static const double cdf_q[] = {
    0.00,  0.01,  0.02,  0.03,  0.04,  0.05,  0.06,  0.07,  0.08,  0.09,
    0.10,  0.11,  0.12,  0.13,  0.14,  0.15,  0.16,  0.17,  0.18,  0.19,
    0.20,  0.21,  0.22,  0.23,  0.24,  0.25,  0.26,  0.27,  0.28,  0.29,
    0.30,  0.31,  0.32,  0.33,  0.34,  0.35,  0.36,  0.37,  0.38,  0.39,
    0.40,  0.41,  0.42,  0.43,  0.44,  0.45,  0.46,  0.47,  0.48,  0.49,
    0.50,  0.51,  0.52,  0.53,  0.54,  0.55,  0.56,  0.57,  0.58,  0.59,
    0.60,  0.61,  0.62,  0.63,  0.64,  0.65,  0.66,  0.67,  0.68,  0.69,
    0.70,  0.71,  0.72,  0.73,  0.74,  0.75,  0.76,  0.77,  0.78,  0.79,
    0.80,  0.81,  0.82,  0.83,  0.84,  0.85,  0.86,  0.87,  0.88,  0.89,
    0.90,  0.91,  0.92,  0.93,  0.94,  0.95,  0.96,  0.97,  0.98,  0.99,
    0.991, 0.992, 0.993, 0.994, 0.995, 0.996, 0.997, 0.998, 0.999, 0.9995,
    0.9999};
#define CDF_POINTS (sizeof cdf_q / sizeof cdf_q[0])

/* --tls-resume: a session (ticket) the server gave, kept for a new
 * connection to offer; when TLS_SESSIONS wait already, the oldest goes.
 * Returns 1: the reference is ours. */
static int tls_new_session(SSL *ssl, SSL_SESSION *session) {
  (void)ssl;
  tls_tickets++;
  if (tls_session_count == TLS_SESSIONS) {
    SSL_SESSION_free(tls_sessions[0]);
    memmove(tls_sessions, tls_sessions + 1,
            (TLS_SESSIONS - 1) * sizeof tls_sessions[0]);
    tls_session_count--;
  }
  tls_sessions[tls_session_count++] = session;
  return 1;
}

/* No certificate check at all: the chain is not even built (with
 * SSL_VERIFY_NONE alone OpenSSL still verifies it and keeps the result). */
static int tls_accept_any(X509_STORE_CTX *store, void *arg) {
  (void)store;
  (void)arg;
  return 1;
}

/* The client context of --tls: TLS 1.2 or later (up to --tls-max), ALPN
 * "http/1.1", no certificate check, no session cache (every handshake is
 * a full one) unless --tls-resume, read-ahead into TLS_READ_BUF, buffers
 * released while idle, and an EOF without close_notify taken as an EOF (the
 * WebSocket close says whether the connection ended well). */
static bool tls_setup(void) {
  static const unsigned char alpn[] = "\x08http/1.1";
  tls_ctx = SSL_CTX_new(TLS_client_method());
  if (tls_ctx == NULL) {
    note("%s", tls_reason("SSL_CTX_new", SSL_ERROR_SSL));
    return false;
  }
  if (SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION) != 1 ||
      (opt.tls_max != 0 &&
       SSL_CTX_set_max_proto_version(tls_ctx, opt.tls_max) != 1)) {
    note("%s", tls_reason("TLS versions", SSL_ERROR_SSL));
    return false;
  }
  /* 0 is success here */
  if (SSL_CTX_set_alpn_protos(tls_ctx, alpn, sizeof alpn - 1) != 0) {
    note("%s", tls_reason("ALPN", SSL_ERROR_SSL));
    return false;
  }
  SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_cert_verify_callback(tls_ctx, tls_accept_any, NULL);
  if (opt.tls_resume) {
    SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_CLIENT |
                                                SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(tls_ctx, tls_new_session);
  } else {
    SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
  }
  SSL_CTX_set_read_ahead(tls_ctx, 1);
  SSL_CTX_set_default_read_buffer_len(tls_ctx, TLS_READ_BUF);
  SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_options(tls_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  return true;
}

/* The TLS fields of the JSON line (empty strings without --tls). */
static void print_tls_json(void) {
  printf(",\"tls\":%s,\"tls_version\":\"%s\",\"tls_cipher\":\"%s\""
         ",\"tls_alpn\":\"%s\",\"tls_handshakes\":%" PRIu32
         ",\"tls_resume\":%s,\"tls_resumed\":%" PRIu32
         ",\"tls_tickets\":%" PRIu32 ",\"tls_offered\":%" PRIu32,
         opt.tls ? "true" : "false", tls_version, tls_cipher, tls_alpn,
         tls_done, opt.tls_resume ? "true" : "false", tls_resumed, tls_tickets,
         tls_offered);
}

/* --handshakes: opens opt.handshakes connections, opt.batch in flight at
 * a time, each closed as soon as its upgrade is done (handshake_done). The
 * first hs_warm are the warm-up; the clocks (this process's CPU, the
 * server's, the wall) run from when they have all closed until the last
 * connection has. */
static int run_handshakes(void) {
  static struct epoll_event evs[MAX_EVENTS];
  uint32_t n = opt.handshakes;
  hs_warm = n / 10 < HS_WARM ? n / 10 : HS_WARM;
  uint32_t limit = n; /* connections to start: fewer once --duration is up */
  uint64_t t_start = now_ns();
  uint64_t deadline = t_start + (uint64_t)(opt.timeout * 1e9);
  uint64_t t0 = 0, t1 = 0, lg0 = 0, lg1 = 0, cpu0 = 0, cpu1 = 0;
  uint32_t closed0 = 0;
  bool measuring = false, cpu_ok = false;
  while (!fatal) {
    uint64_t t = now_ns();
    if (!measuring && closed_count >= hs_warm) {
      measuring = true;
      t0 = t;
      lg0 = cpu_ns();
      closed0 = closed_count;
      if (opt.server_pid > 0)
        cpu_ok = read_cpu_ticks(opt.server_pid, &cpu0);
    }
    if (measuring && opt.duration > 0 && limit > next_to_open &&
        t - t0 >= (uint64_t)(opt.duration * 1e9))
      limit = next_to_open;
    while (next_to_open < limit && next_to_open - closed_count < opt.batch &&
           !fatal)
      start_connect(next_to_open++);
    if (measuring && closed_count == next_to_open && next_to_open == limit) {
      t1 = now_ns();
      lg1 = cpu_ns();
      if (cpu_ok)
        cpu_ok = read_cpu_ticks(opt.server_pid, &cpu1);
      break;
    }
    if (t >= deadline) {
      timed_out = true;
      note("timed out after %.0f s: %" PRIu32 " connections started, %" PRIu32
           " upgraded, %" PRIu32 " closed",
           opt.timeout, next_to_open, opened, closed_count);
      break;
    }
    int k = epoll_wait(epfd, evs, MAX_EVENTS, 100);
    if (k < 0) {
      if (errno == EINTR)
        continue;
      perror("epoll_wait");
      return 2;
    }
    for (int i = 0; i < k; i++)
      on_event(evs[i].data.u32, evs[i].events);
  }
  for (uint32_t i = 0; i < opt.clients; i++)
    conn_close_fd(&conns[i]);

  bool done = t1 != 0;
  uint32_t count = done ? closed_count - closed0 : 0;
  double secs = done ? (double)(t1 - t0) / 1e9 : 0;
  double rate = secs > 0 ? count / secs : 0;
  double tick = (double)sysconf(_SC_CLK_TCK);
  double server_cpu = cpu_ok && done ? (double)(cpu1 - cpu0) / tick : -1;
  double server_per =
      server_cpu >= 0 && count > 0 ? server_cpu * 1e6 / count : -1;
  double client_cpu = done ? (double)(lg1 - lg0) / 1e9 : 0;
  double share = secs > 0 ? client_cpu / secs : 0;
  double qs[3] = {0.5, 0.99, 1.0}, lat[3];
  hist_quantiles(qs, 2, lat);
  lat[2] = (double)lat_max_ns / 1000.0;
  bool ok = done && !timed_out && !fatal && dropped == 0 &&
            protocol_errors == 0 && opened == closed_count;

  FILE *h = opt.json ? stderr : stdout;
  fprintf(h,
          "handshakes %" PRIu32 " (%" PRIu32 " warm-up, %" PRIu32
          " at a time)%s\n",
          next_to_open, hs_warm, opt.batch, opt.tls ? " with TLS" : "");
  fprintf(h, "rate      %.0f connections/s (%" PRIu32 " in %.3f s)\n", rate,
          count, secs);
  if (server_per >= 0)
    fprintf(h, "server    %.2f s CPU, %.1f us per connection\n", server_cpu,
            server_per);
  fprintf(h,
          "loadgen   %.2f s CPU (%.0f%% of its core), %.1f us per "
          "connection\n",
          client_cpu, 100 * share, count ? client_cpu * 1e6 / count : 0.0);
  fprintf(h, "connect   to the 101: p50 %.0f us  p99 %.0f us  max %.0f us\n",
          lat[0], lat[1], lat[2]);
  if (opt.tls)
    fprintf(h,
            "tls       %s %s, ALPN \"%s\", %" PRIu32 " of %" PRIu32
            " resumed (%" PRIu32 " offered a session, %" PRIu32
            " tickets received)\n",
            tls_version, tls_cipher, tls_alpn, tls_resumed, tls_done,
            tls_offered, tls_tickets);
  fprintf(h,
          "errors    dropped connections %" PRIu64 "  protocol %" PRIu64 "%s\n",
          dropped, protocol_errors, timed_out ? "  TIMED OUT" : "");
  if (opt.json) {
    printf("{\"mode\":\"handshakes\",\"started\":%" PRIu32
           ",\"warmup\":%" PRIu32 ",\"batch\":%" PRIu32
           ",\"handshakes\":%" PRIu32 ",\"handshake_seconds\":%.6f"
           ",\"handshakes_per_sec\":%.1f",
           next_to_open, closed0, opt.batch, count, secs, rate);
    if (server_per >= 0)
      printf(",\"server_cpu_seconds\":%.3f"
             ",\"server_cpu_us_per_handshake\":%.2f",
             server_cpu, server_per);
    else
      printf(",\"server_cpu_seconds\":null"
             ",\"server_cpu_us_per_handshake\":null");
    printf(",\"client_cpu_seconds\":%.3f,\"loadgen_cpu_share\":%.4f"
           ",\"loadgen_cores\":1,\"loadgen_cpu_us_per_handshake\":%.2f",
           client_cpu, share, count ? client_cpu * 1e6 / count : 0.0);
    print_tls_json();
    printf(",\"handshake_latency_us\":{\"p50\":%.0f,\"p99\":%.0f"
           ",\"max\":%.0f}",
           lat[0], lat[1], lat[2]);
    printf(",\"dropped\":%" PRIu64 ",\"protocol_errors\":%" PRIu64
           ",\"timed_out\":%s,\"ok\":%s}\n",
           dropped, protocol_errors, timed_out ? "true" : "false",
           ok ? "true" : "false");
  }
  if (fflush(stdout) != 0)
    return 2;
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  self_test();
  raise_nofile();

  if (getrandom(&rng_state, sizeof rng_state, 0) != (ssize_t)sizeof rng_state)
    rng_state = now_ns() ^ (uint64_t)getpid() << 32;
  rng_state |= 1;
  memset(hexval, -1, sizeof hexval);
  for (int i = 0; i < 10; i++)
    hexval['0' + i] = (int8_t)i;
  for (int i = 0; i < 6; i++)
    hexval['a' + i] = (int8_t)(10 + i);
  make_payloads();
  if (opt.show_payload) {
    uint8_t *msg = malloc(opt.size);
    if (msg == NULL)
      return 2;
    memcpy(msg, template_for(0), opt.size);
    put_hex(msg + check_off, 0, 8);
    put_hex(msg + check_off + 8, now_ns(), 16);
    fwrite(msg, 1, opt.size, stdout);
    fputc('\n', stdout);
    free(msg);
    return fflush(stdout) == 0 ? 0 : 2;
  }
  if (opt.deflate) {
    rc_pmd_client_default(&pmd_offered);
    if (rc_pmd_client_offer(&pmd_offered, pmd_offer, sizeof pmd_offer) < 0) {
      note("internal error: permessage-deflate offer");
      return 2;
    }
    inflater = rc_inflater_new();
    inflbuf = malloc(opt.size);
    memo = calloc(opt.messages, sizeof *memo);
    if (inflater == NULL || inflbuf == NULL || memo == NULL) {
      note("out of memory");
      return 2;
    }
  }

  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
    /* OpenSSL writes with write(), not send(MSG_NOSIGNAL) */
    perror("signal(SIGPIPE)");
    return 2;
  }
  if (opt.tls && !tls_setup())
    return 2;

  conns = calloc(opt.clients, sizeof *conns);
  pending = calloc(opt.messages, sizeof *pending);
  sent_prefix = calloc(opt.messages, sizeof *sent_prefix);
  send_ns = calloc(opt.messages, sizeof *send_ns);
  hist = calloc(HIST_BUCKETS, sizeof *hist);
  frame = malloc(14 + (size_t)opt.size);
  room_size = calloc(opt.rooms, sizeof *room_size);
  room_alive = calloc(opt.rooms, sizeof *room_alive);
  if (!conns || !pending || !sent_prefix || !send_ns || !hist || !frame ||
      !room_size || !room_alive) {
    note("out of memory");
    return 2;
  }
  for (uint32_t i = 0; i < opt.clients; i++) {
    conns[i].fd = -1;
    conns[i].expect = room_of(i); /* its room's first message */
    room_size[room_of(i)]++;
  }
  {
    uint8_t mask[4];
    frame_hdr_len = build_header(frame, 0x1, opt.size, mask);
    frame_len = frame_hdr_len + opt.size;
  }
  if (opt.clients > SPREAD_ABOVE &&
      (ntohl(server_addr.sin_addr.s_addr) >> 24) == 127)
    spread = (opt.clients + SPREAD_ABOVE - 1) / SPREAD_ABOVE;
  target = opt.messages;

  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) {
    perror("epoll_create1");
    return 2;
  }

  if (opt.handshakes)
    return run_handshakes();

  double tick = (double)sysconf(_SC_CLK_TCK);
  uint64_t cpu0 = 0, cpu1 = 0;
  bool cpu_ok = false;
  /* CPU time and reads at the start and end of publishing */
  uint64_t lg_cpu0 = 0, lg_cpu1 = 0, reads0 = 0, reads1 = 0;
  uint64_t rx0 = 0, rx1 = 0, zrx0 = 0, zrx1 = 0;
  uint64_t lg_cpu_start = cpu_ns();
  uint64_t t_start = now_ns();
  uint64_t deadline = t_start + (uint64_t)(opt.timeout * 1e9);
  uint64_t t_connect0 = t_start, t_open = 0, t_synced = 0, t_pub1 = 0,
           t_close = 0;
  /* --idle-rss: the warm connections first, then all of them */
  uint32_t open_target = opt.idle_rss ? opt.rss_warm : opt.clients;
  uint32_t rss_conns[2] = {0, 0};
  uint64_t rss[2] = {0, 0};
  int rss_stage = 0;
  uint64_t settle_check = 0, settle_give_up = 0, settle_ticks = 0;
  bool settle_have_ticks = false, rss_quiet = true;
  static struct epoll_event evs[MAX_EVENTS];

  while (phase != PH_END) {
    if (phase == PH_CONNECT) {
      while (next_to_open < open_target && handshaking < opt.batch && !fatal)
        start_connect(next_to_open++);
      if (opened == open_target) {
        t_open = now_ns();
        phase = PH_SYNC;
      }
    }
    uint64_t t = now_ns();
    if (phase == PH_SYNC) {
      /* A warm-up fan-out has ended once no copy has arrived for 50 ms.
       * Waiting for that before the next warm-up, and before measuring,
       * keeps a slow server from carrying a backlog of warm-ups (each one
       * a fan-out to every connection) into the measured phase. */
      bool warm_quiet = warmup_rx <= t && t - warmup_rx >= 50000000u;
      bool all_in = ready_count == alive && alive == open_target;
      if (all_in && warm_quiet) {
        t_synced = t;
        if (opt.idle_rss) {
          phase = PH_SETTLE;
          settle_check = t + (uint64_t)(opt.settle * 1e9);
          settle_give_up = settle_check + 5000000000u;
          settle_have_ticks = false;
        } else {
          phase = PH_PUBLISH;
          if (opt.server_pid > 0)
            cpu_ok = read_cpu_ticks(opt.server_pid, &cpu0);
          lg_cpu0 = cpu_ns();
          reads0 = reads;
          rx0 = rx_bytes;
          zrx0 = compressed_rx;
          t_pub0 = now_ns();
        }
      } else if (!all_in && t - warmup_tx >= 20000000u &&
                 ((warmup_rx > warmup_tx && warm_quiet) ||
                  (warmup_rx <= warmup_tx && t - warmup_tx >= 500000000u))) {
        /* A 101 may reach us before the server has added the
         * connection to the room; repeating the warm-up until all
         * have seen one makes every measured message count. One that
         * nobody received (no member yet) is repeated after 500 ms. */
        send_warmup(t);
      }
    }
    if (phase == PH_SETTLE && t >= settle_check) {
      /* Quiet: no CPU tick of the server's in the last 200 ms, so that
       * buffers of the warm-up and the handshakes have been released. */
      uint64_t ticks = 0;
      bool have = read_cpu_ticks(opt.server_pid, &ticks);
      bool quiet = have && settle_have_ticks && ticks == settle_ticks;
      settle_ticks = ticks;
      settle_have_ticks = have;
      if (quiet || t >= settle_give_up) {
        if (!quiet)
          rss_quiet = false;
        if (!read_rss(opt.server_pid, &rss[rss_stage])) {
          note("cannot read VmRSS of process %d", opt.server_pid);
          fatal = true;
        } else {
          rss_conns[rss_stage] = alive;
          if (rss_stage == 0) {
            rss_stage = 1;
            open_target = opt.clients;
            t_connect0 = now_ns();
            phase = PH_CONNECT;
            continue;
          }
          phase = PH_CLOSE;
          t_close = t;
          begin_close();
        }
      } else {
        settle_check = t + 200000000u;
      }
    }
    if (phase == PH_PUBLISH) {
      if (opt.duration > 0 && target > sent && t > t_pub0 &&
          t - t_pub0 >= (uint64_t)(opt.duration * 1e9))
        target = sent;
      publish_some();
      if (sent == target && completed == target) {
        t_pub1 = now_ns();
        if (cpu_ok)
          cpu_ok = read_cpu_ticks(opt.server_pid, &cpu1);
        lg_cpu1 = cpu_ns();
        reads1 = reads;
        rx1 = rx_bytes;
        zrx1 = compressed_rx;
        phase = PH_CLOSE;
        t_close = t_pub1;
        begin_close();
      }
    }
    if (phase == PH_CLOSE &&
        (closed_count == opt.clients || now_ns() - t_close > 3000000000u)) {
      phase = PH_END;
      break;
    }
    if (fatal) {
      phase = PH_END;
      break;
    }
    t = now_ns();
    if (t >= deadline && phase != PH_CLOSE) {
      static const char *const names[] = {"connect", "sync",  "settle",
                                          "publish", "close", "end"};
      timed_out = true;
      note("timed out after %.0f s in the %s phase: %" PRIu32
           " connections open of %" PRIu32 ", %" PRIu32
           " have seen a warm-up message, %" PRIu32 " messages sent, %" PRIu32
           " delivered to all",
           opt.timeout, names[phase], opened, open_target, ready_count, sent,
           completed);
      if (phase == PH_PUBLISH) {
        t_pub1 = t;
        if (cpu_ok)
          cpu_ok = read_cpu_ticks(opt.server_pid, &cpu1);
        lg_cpu1 = cpu_ns();
        reads1 = reads;
        rx1 = rx_bytes;
        zrx1 = compressed_rx;
      }
      break;
    }
    int wait_ms = 100;
    if (phase == PH_SYNC) {
      wait_ms = 5;
    } else if (phase == PH_SETTLE) {
      wait_ms = 20;
    } else if (phase == PH_PUBLISH && opt.rate > 0 && sent < target &&
               sent - completed < opt.window) {
      /* wake for the next due message; a millisecond late at most, and
       * its time stamp is taken when it really leaves */
      uint64_t due = due_time(sent), now = now_ns();
      uint64_t ms = due > now ? (due - now + 999999u) / 1000000u : 0;
      wait_ms = ms < 100 ? (int)ms : 100;
    }
    int n = epoll_wait(epfd, evs, MAX_EVENTS, wait_ms);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      perror("epoll_wait");
      return 2;
    }
    for (int i = 0; i < n; i++)
      on_event(evs[i].data.u32, evs[i].events);
  }
  for (uint32_t i = 0; i < opt.clients; i++)
    conn_close_fd(&conns[i]);

  /* -------------------------------------------------------- report */
  bool published = t_pub0 != 0 && t_pub1 != 0;
  uint32_t connect_count = open_target - (opt.idle_rss ? opt.rss_warm : 0);
  double connect_s = t_open ? (double)(t_open - t_connect0) / 1e9 : 0;
  double sync_s = t_synced ? (double)(t_synced - t_open) / 1e9 : 0;
  double publish_s = published ? (double)(t_pub1 - t_pub0) / 1e9 : 0;
  double dps = publish_s > 0 ? (double)deliveries / publish_s : 0;
  double server_cpu = cpu_ok && published ? (double)(cpu1 - cpu0) / tick : -1;
  double cpu_per = server_cpu >= 0 && deliveries > 0
                       ? server_cpu * 1e6 / (double)deliveries
                       : -1;
  double client_cpu = published ? (double)(lg_cpu1 - lg_cpu0) / 1e9 : -1;
  /* The load generator's share of its one core (one thread): over the
   * publishing time, or over the whole run when nothing was published (the
   * idle scenario). Near 1, the generator, not the server, may set the
   * pace. */
  double wall_s = (double)(now_ns() - t_start) / 1e9;
  double lg_share = publish_s > 0 ? client_cpu / publish_s
                    : wall_s > 0
                        ? (double)(cpu_ns() - lg_cpu_start) / 1e9 / wall_s
                        : 0;
  uint64_t pub_reads = published ? reads1 - reads0 : 0;
  double per_read = pub_reads > 0 ? (double)deliveries / (double)pub_reads : 0;
  double rate_achieved =
      sent > 1 && t_last_send > t_pub0
          ? (double)(sent - 1) * 1e9 / (double)(t_last_send - t_pub0)
          : 0;
  /* every member of a room gets each of its room's messages */
  uint64_t expected = 0;
  for (uint32_t r = 0; r < opt.rooms; r++)
    expected += (uint64_t)room_size[r] *
                (sent / opt.rooms + (r < sent % opt.rooms ? 1 : 0));
  uint64_t lost = expected > deliveries ? expected - deliveries : 0;
  double cdf[CDF_POINTS];
  hist_quantiles(cdf_q, CDF_POINTS, cdf);
  double p50 = cdf[50], p99 = cdf[99], p999 = cdf[108];
  double pmax = (double)lat_max_ns / 1000.0;
  bool rss_ok = opt.idle_rss && rss_stage == 1 && rss[1] != 0 &&
                rss_conns[1] > rss_conns[0];
  double rss_per = rss_ok ? ((double)rss[1] - (double)rss[0]) /
                                (double)(rss_conns[1] - rss_conns[0])
                          : 0;
  bool ok = !timed_out && !fatal && order_errors == 0 && lost == 0 &&
            dropped == 0 && protocol_errors == 0 && content_errors == 0 &&
            (!opt.idle_rss || rss_ok);
  uint64_t wire = published ? rx1 - rx0 : 0;
  double wire_per = deliveries > 0 ? (double)wire / (double)deliveries : 0;
  uint64_t zdeliv = published ? zrx1 - zrx0 : 0;
  /* every connection that completed its handshake negotiated it */
  bool pmd_all = pmd_conns > 0 && pmd_conns == opened;

  FILE *h = opt.json ? stderr : stdout;
  fprintf(h,
          "clients %" PRIu32 "  rooms %" PRIu32 "  messages %" PRIu32
          " (sent %" PRIu32 ")  size %" PRIu32 "  window %" PRIu32 "\n",
          opt.clients, opt.rooms, opt.messages, sent, opt.size, opt.window);
  fprintf(h,
          "connect   %.3f s for %" PRIu32 " connections (sync %.3f s, %" PRIu64
          " warm-up messages)\n",
          connect_s, connect_count, sync_s, warmups_sent);
  if (opt.idle_rss) {
    fprintf(h,
            "idle rss  %" PRIu64 " bytes with %" PRIu32 " connections, %" PRIu64
            " with %" PRIu32 ": %.0f bytes per connection%s\n",
            rss[0], rss_conns[0], rss[1], rss_conns[1], rss_per,
            rss_quiet ? "" : " (server never went quiet)");
  } else {
    fprintf(h, "publish   %.3f s, %" PRIu64 " deliveries, %.0f deliveries/s\n",
            publish_s, deliveries, dps);
    if (opt.rate > 0)
      fprintf(h,
              "rate      %.1f msg/s asked, %.1f sent; latest send %.0f us "
              "late; %" PRIu64 " waited for the window\n",
              opt.rate, rate_achieved, (double)send_lag_max_ns / 1000.0,
              window_stalls);
  }
  if (server_cpu >= 0)
    fprintf(h, "server    %.2f s CPU, %.3f us per delivery\n", server_cpu,
            cpu_per);
  if (client_cpu >= 0)
    fprintf(h,
            "loadgen   %.2f s CPU (%.0f%% of its core over the publish time),"
            " %" PRIu64 " reads, %.1f deliveries per read\n",
            client_cpu, 100 * lg_share, pub_reads, per_read);
  else
    fprintf(h, "loadgen   %.0f%% of its core over the run\n", 100 * lg_share);
  if (!opt.idle_rss)
    fprintf(h,
            "latency   p50 %.0f us  p99 %.0f us  p99.9 %.0f us  max %.0f us\n",
            p50, p99, p999, pmax);
  if (!opt.idle_rss)
    fprintf(h, "wire      %.1f bytes per delivery (%" PRIu32 " of text)\n",
            wire_per, opt.size);
  if (opt.tls)
    fprintf(h, "tls       %s %s, ALPN \"%s\", %" PRIu32 " handshakes\n",
            tls_version, tls_cipher, tls_alpn, tls_done);
  if (opt.deflate)
    fprintf(h,
            "deflate   negotiated on %" PRIu32 " of %" PRIu32
            " connections (\"%s\"), %" PRIu32 " keeping context; %" PRIu64
            " compressed deliveries, %" PRIu64 " inflated, %" PRIu64
            " equal to one checked\n",
            pmd_conns, opened, pmd_answer, takeover_conns, compressed_rx,
            inflations, memo_hits);
  fprintf(h,
          "errors    order %" PRIu64 "  lost %" PRIu64
          "  dropped connections %" PRIu64 "  protocol %" PRIu64
          "  content %" PRIu64 "%s\n",
          order_errors, lost, dropped, protocol_errors, content_errors,
          timed_out ? "  TIMED OUT" : "");
  if (opt.json) {
    const char *mode = opt.idle_rss   ? "idle_rss"
                       : opt.rate > 0 ? "rate"
                                      : "window";
    printf("{\"mode\":\"%s\",\"clients\":%" PRIu32 ",\"rooms\":%" PRIu32
           ",\"messages\":%" PRIu32 ",\"sent\":%" PRIu32 ",\"size\":%" PRIu32
           ",\"window\":%" PRIu32
           ",\"connect_seconds\":%.6f,\"connect_count\":%" PRIu32
           ",\"publish_seconds\":%.6f"
           ",\"deliveries\":%" PRIu64 ",\"deliveries_per_sec\":%.1f",
           mode, opt.clients, opt.rooms, opt.messages, sent, opt.size,
           opt.window, connect_s, connect_count, publish_s, deliveries, dps);
    if (server_cpu >= 0)
      printf(",\"server_cpu_seconds\":%.3f,\"server_cpu_us_per_delivery\":%.4f",
             server_cpu, cpu_per);
    else
      printf(
          ",\"server_cpu_seconds\":null,\"server_cpu_us_per_delivery\":null");
    printf(",\"client_cpu_seconds\":%.3f", client_cpu >= 0 ? client_cpu : 0.0);
    printf(",\"loadgen_cpu_share\":%.4f,\"loadgen_cores\":1"
           ",\"reads\":%" PRIu64 ",\"deliveries_per_read\":%.2f",
           lg_share, pub_reads, per_read);
    if (opt.rate > 0)
      printf(",\"rate\":%.3f,\"rate_achieved\":%.3f,\"send_lag_max_us\":%.0f"
             ",\"window_stalls\":%" PRIu64,
             opt.rate, rate_achieved, (double)send_lag_max_ns / 1000.0,
             window_stalls);
    else
      printf(",\"rate\":null");
    if (opt.idle_rss)
      printf(",\"rss_before_bytes\":%" PRIu64 ",\"rss_after_bytes\":%" PRIu64
             ",\"rss_before_connections\":%" PRIu32
             ",\"rss_after_connections\":%" PRIu32
             ",\"rss_per_idle_conn_bytes\":%.1f,\"rss_quiet\":%s",
             rss[0], rss[1], rss_conns[0], rss_conns[1], rss_per,
             rss_quiet ? "true" : "false");
    printf(",\"payload\":\"%s\",\"wire_bytes\":%" PRIu64
           ",\"wire_bytes_per_delivery\":%.2f",
           opt.payload_json ? "json" : "x", wire, wire_per);
    /* the answer passed rc_pmd_client_check_response and its quotes were
     * replaced: no JSON escaping needed */
    printf(
        ",\"deflate_offered\":%s,\"deflate_negotiated\":%s"
        ",\"deflate_connections\":%" PRIu32 ",\"connections_opened\":%" PRIu32
        ",\"deflate_context_takeover_connections\":%" PRIu32
        ",\"deflate_answer\":\"%s\",\"compressed_deliveries\":%" PRIu64
        ",\"compressed_messages_received\":%" PRIu64 ",\"inflations\":%" PRIu64
        ",\"inflate_skipped_equal\":%" PRIu64 ",\"content_errors\":%" PRIu64,
        opt.deflate ? "true" : "false", pmd_all ? "true" : "false", pmd_conns,
        opened, takeover_conns, pmd_answer, zdeliv, compressed_rx, inflations,
        memo_hits, content_errors);
    print_tls_json();
    printf(",\"latency_us\":{\"p50\":%.0f,\"p99\":%.0f,\"p999\":%.0f"
           ",\"max\":%.0f}",
           p50, p99, p999, pmax);
    printf(",\"latency_cdf_us\":[");
    for (size_t i = 0; i < CDF_POINTS; i++)
      printf("%s[%g,%.0f]", i ? "," : "", cdf_q[i], cdf[i]);
    printf(",[1,%.0f]]", pmax);
    printf(",\"order_errors\":%" PRIu64 ",\"lost\":%" PRIu64
           ",\"dropped\":%" PRIu64 ",\"protocol_errors\":%" PRIu64
           ",\"timed_out\":%s,\"ok\":%s}\n",
           order_errors, lost, dropped, protocol_errors,
           timed_out ? "true" : "false", ok ? "true" : "false");
  }
  if (fflush(stdout) != 0)
    return 2;
  return ok ? 0 : 1;
}
