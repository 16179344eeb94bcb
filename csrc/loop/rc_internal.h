/* rc_internal.h - structures shared by the core's loop files, and what
 * each file offers the others. Not installed.
 *
 * Everything below is touched by the loop thread only, except what is
 * marked "any thread" (the mailbox locks and the atomic counters).
 *
 * Who calls whom: a file calls only files listed below it (rc_room.c
 * and rc_backplane.c aside: the backplane's hook is its own seam).
 *   rc_server.c     the loop's turn, the loops over every connection,
 *                   the dispatch of commands
 *   rc_commands.c   the public calls that become commands
 *   rc_handshake.c  the server role    rc_client.c   the client role
 *   rc_room.c       membership and fan-out
 *   rc_conn.c       a connection's life; its side only through c->role
 *   rc_outq.c       the output ring    rc_mailbox.c  events, commands
 *   rc_buf.c        shared frames      proto/        sans-I/O
 */
#ifndef RC_INTERNAL_H
#define RC_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <uv.h>
#include <wslay/wslay.h>

#include "loop/rc_buf.h"
#include "loop/rc_idmap.h"
#include "loop/rc_outq.h"
#include "proto/rc_deflate.h"
#include "proto/rc_frame.h"
#include "proto/rc_http.h"
#include "proto/rc_pmd.h"
#include "proto/rc_tls.h"
#include "rc_core.h"

#define RC__CONTAINER_OF(ptr, type, field)                                     \
  ((type *)((char *)(ptr)-offsetof(type, field)))

/* Milliseconds of the loop's clock, and a configured duration in seconds
 * as milliseconds (0: none). */
static inline uint64_t rc__now_ms(const struct rc_server *s);
static inline uint64_t rc__secs_ms(double secs) {
  return secs <= 0 ? 0 : (uint64_t)(secs * 1000.0 + 0.5);
}

/* A copy of s, NULL for NULL; sets *failed when memory ran out, so that
 * several copies are checked once. */
static inline char *rc__dup_or_null(const char *s, int *failed) {
  if (s == NULL)
    return NULL;
  char *d = strdup(s);
  if (d == NULL)
    *failed = 1;
  return d;
}

/* What bounds one side of a connection: the server's settings for the
 * connections it accepted (srv->limits), a client's own for it. */
typedef struct rc__limits {
  size_t max_message; /* bytes of one received message */
  uint32_t max_frags; /* data frames it may be cut into (rc__max_frags) */
  uint64_t ping_ms;   /* keepalive ping after this much silence; 0: none */
  uint64_t pong_ms;   /* the pong's deadline; 0: none */
  uint64_t idle_ms;   /* close after this long without a message; 0: none */
} rc__limits;

enum rc_conn_state {
  RC_CONN_HTTP = 0, /* reading the request head */
  RC_CONN_PENDING,  /* RC_EV_OPEN sent, waiting for accept / respond */
  RC_CONN_REQUEST,  /* RC_EV_REQUEST sent, waiting for respond */
  RC_CONN_OPEN,     /* WebSocket open */
  RC_CONN_CLOSING,  /* our close frame queued; waiting for the peer's */
  RC_CONN_DRAINING, /* last bytes queued (HTTP answer, close reply); close */
  RC_CONN_GONE,     /* uv_close called */
  /* A client connection on its way to RC_CONN_OPEN (rc_client.c). Nothing
   * depends on the order of these values. */
  RC_CONN_RESOLVING,  /* uv_getaddrinfo in flight */
  RC_CONN_CONNECTING, /* uv_tcp_connect in flight */
  RC_CONN_TLS,        /* TLS handshake */
  RC_CONN_UPGRADING,  /* upgrade request sent, reading the response head */
};

/* Client connection ids have this bit set, adopted ones (rc_server_adopt)
 * RC__ADOPT_BIT; accepted ones neither: a slot of 32 bits and a generation
 * of 30 (RC__GEN_MASK) above it. The two drawn on the embedder's thread
 * count up from 1 under their bit and never reach bit 62. */
#define RC__CLIENT_BIT ((uint64_t)1 << 63)
#define RC__ADOPT_BIT ((uint64_t)1 << 62)
#define RC__GEN_MASK ((uint32_t)0x3fffffff)

/* What a client connection has beyond an rc_conn: made by
 * rc_server_connect() on the embedder's thread, found by id through
 * srv->clients (under client_lock), used by the loop thread from the
 * connect command on. Freed once its connection's handle has closed and
 * no uv_getaddrinfo is pending. */
typedef struct rc_client {
  uint64_t id;
  struct rc_conn *conn; /* NULL before the command runs and once freed */
  char *host;           /* to resolve */
  char port[8];
  char *request; /* the whole upgrade request */
  size_t request_len;
  char *protocols; /* offered, comma-separated, or NULL */
  char accept[29]; /* the Sec-WebSocket-Accept the key calls for */
  uint8_t tls, verify, resolving, retrying;
  char *cafile;      /* NULL: the system's trust store */
  char *server_name; /* checked against the certificate; SNI */
  uint64_t handshake_ms;
  rc__limits limits; /* its own: max_message_size, keepalive; no idle */
  struct addrinfo *addrs, *next_addr; /* addresses left to try */
  int last_error;                     /* of the last failed attempt */
  uv_getaddrinfo_t gai;
  uv_connect_t creq;
  rc_tls *filter;
  /* permessage-deflate (rc_client.c): offered in the request; once open,
   * the server's inflate stream when it keeps its context
   * (RC__PMD_RX_STREAM; made at its first compressed message, freed with
   * cl) */
  uint8_t offer_pmd;
  uint8_t zin_bits; /* the stream's window bits (9..15) */
  rc_inflate_stream *zin;
  /* any thread: the window bits the server inflates our messages with,
   * set before RC_EV_CONNECTED (0: send plain) */
  atomic_uchar tx_window;
  /* any thread: bufferedAmount */
  atomic_size_t cmd_bytes;   /* frames in send commands not yet run */
  atomic_size_t queue_bytes; /* bytes in the connection's queue */
} rc_client;

struct rc_room;

typedef struct rc_membership {
  struct rc_room *room;
  uint32_t index; /* position of this conn in room->members */
} rc_membership;

/* A connection's role: what differs between a connection the server
 * accepted (rc__server_role, rc_handshake.c) and one this process opened
 * (rc__client_role, rc_client.c). rc_conn.c reaches the side through these
 * and never by name, the way wslay reaches I/O through its callbacks.
 * Every pointer is set. */
typedef struct rc__role {
  /* Bytes read from the socket (rc_conn.c's read callback). */
  void (*received)(struct rc_conn *c, const char *data, size_t len);
  /* The read failed, or the peer ended its stream (UV_EOF). */
  void (*lost)(struct rc_conn *c, int status);
  /* Bytes the connection makes itself (wslay's pongs and closes): queued
   * as they are, or as TLS records. */
  void (*write)(struct rc_conn *c, const void *data, size_t len);
  /* The frame of a send command (the role framed it). */
  void (*send)(struct rc_conn *c, rc_buf *b);
  /* A keepalive ping is due: 0, or -1 when none could be made. */
  int (*ping)(struct rc_conn *c);
  /* A whole message from the peer (text already checked as UTF-8), inflated
   * when it came compressed; z[0..zlen) is then its compressed payload as
   * it came (RSV1 set, RFC 7692 7.2.2's tail not appended) when it may be
   * forwarded so (the inflate hook's *as_sent), else NULL. */
  void (*message)(struct rc_conn *c, int is_text, const uint8_t *msg,
                  size_t len, const uint8_t *z, size_t zlen);
  /* A compressed message from the peer (RSV1, c->pmd_rx), in[0..len): its
   * inflated bytes into out[0..max), with rc_inflate_message's results and
   * bounds; *as_sent is set to 1 when in may be forwarded as it came (it
   * stands alone and is well formed: rc_inflater_well_formed), else 0. The
   * server inflates each message alone (rc__conn_inflate); a client whose
   * server keeps its context keeps a stream. */
  int (*inflate)(struct rc_conn *c, const uint8_t *in, size_t len, uint8_t *out,
                 size_t max, size_t *out_len, int *as_sent);
  /* The control frames answering the peer pushed the queue past
   * max_queue_bytes (see "Bounds" in rc_conn.c); maybe inside wslay. */
  void (*overflow)(struct rc_conn *c);
  /* The last bytes are queued: the connection drains, then closes. */
  void (*draining)(struct rc_conn *c);
  /* c->deadline has passed before the connection opened. */
  void (*deadline)(struct rc_conn *c);
  /* The embedder closes a connection that is not open. */
  void (*cancel)(struct rc_conn *c);
  /* The server stops: a connection that is not open yet ends. */
  void (*stop)(struct rc_conn *c);
  /* rc__conn_abort: the connection is over (it leaves what it joined). */
  void (*gone)(struct rc_conn *c);
  /* 1 when the tcp handle is closing already for the role's own reason
   * (a client between two connect attempts). */
  int (*handle_closing)(const struct rc_conn *c);
  /* The tcp handle's close callback: free what the role holds. */
  void (*closed)(struct rc_conn *c);
  /* The queue's byte count changed (a client's bufferedAmount). */
  void (*queue_changed)(struct rc_conn *c);
  const rc__limits *(*limits)(const struct rc_conn *c);
  /* wslay_event_context_server_init or _client_init. */
  int (*ws_init)(wslay_event_context_ptr *ctx,
                 const struct wslay_event_callbacks *callbacks,
                 void *user_data);
  wslay_event_genmask_callback genmask; /* NULL: frames are not masked */
  uint8_t peer_masks;  /* the peer's frames are masked: it is a client */
  uint8_t joins_rooms; /* JOIN commands apply */
} rc__role;

/* Why the core refused a handshake: the index of its counter in
 * s->st_refusals (rc_stats' refused_* fields, in this order). */
enum rc__refusal {
  RC__REFUSE_BAD_REQUEST,
  RC__REFUSE_METHOD,
  RC__REFUSE_VERSION,
  RC__REFUSE_NOT_WEBSOCKET,
  RC__REFUSE_TOO_LARGE,
  RC__REFUSE_SHUTTING_DOWN,
  RC__REFUSE_TIMEOUT,
  RC__REFUSE_N
};

/* Field order follows use: what the fan-out touches for every delivery
 * (state, the queue, the dirty link) comes first, in one cache line, then the
 * libuv handle, then what only the handshake, the close or the sweep read. */
typedef struct rc_conn {
  /* hot: every delivery */
  uint8_t state;
  uint8_t writing; /* a uv_write is in flight (its request is malloc'd) */
  uint8_t dirty;   /* on srv->dirty, to be flushed at the end of the turn */
  uint8_t doomed;  /* failed inside a loop over members: aborted at flush */
  uint8_t known;   /* the embedder has seen an event for it: owes RC_EV_CLOSE */
  uint8_t ping_out;
  uint8_t read_paused;
  uint8_t held; /* the embedder asked us to stop reading (backpressure) */
  struct rc_conn *next_dirty;
  struct rc_server *srv;
  const rc__role *role; /* the server's or the client's side */
  rc_outq q;
  uint64_t id;
  uv_tcp_t tcp;
  /* warm: reading */
  wslay_event_context_ptr ws; /* NULL while idle between messages */
  rc_frame_scan scan;         /* where the client's stream stands */
  uint64_t last_rx;           /* loop ms */
  uint8_t rx_recent;          /* read since the last sweep tick */
  uint8_t shut;               /* uv_shutdown issued */
  uint8_t admitted;           /* counts against max_connections */
  uint8_t starved;     /* reading held: the embedder is behind on events */
  uint16_t close_code; /* code to report in RC_EV_CLOSE */
  uint16_t close_rcvd; /* code of the peer's close frame (1005: none); 0:
                          none received */
  uint32_t nrooms, caprooms;
  rc_membership *rooms; /* &first while caprooms is 1, else malloc'd */
  rc_membership first;  /* most connections are in one room: no array */
  uint32_t nrelay;      /* rooms among them that relay in the loop */
  /* cold: handshake, close, sweep */
  uint16_t key_off, key_len;  /* Sec-WebSocket-Key inside hbuf */
  uint32_t hlen, hhead, hcap; /* bytes in hbuf, parsed head, capacity */
  /* permessage-deflate, as negotiated (RFC 7692): pmd_tx is the window the
   * peer inflates our messages with (8..15 bits; 0: send everything
   * plain); pmd_rx is RC__PMD_RX when the peer may send compressed
   * messages, with RC__PMD_ANSWER_WINDOW when the server's answer names
   * server_max_window_bits (the offer did) and RC__PMD_RX_STREAM when
   * they may refer to earlier ones. Both 0 without deflate. */
  uint8_t pmd_tx, pmd_rx;
  uint8_t tls_flags;  /* RC__TLS_*, with tls */
  char *hbuf;         /* request head until the handshake ends; then the peer's
                         close frame while it arrives (rc_conn.c) */
  char *close_reason; /* reason received with the peer's close */
  uint32_t close_reason_len;
  uint32_t slot;     /* index in srv->slots */
  uint64_t deadline; /* loop ms; handshake or close deadline, 0: none */
  uint64_t ping_at;
  uint64_t last_msg; /* loop ms of the client's last message (idle_timeout) */
  uint64_t mark; /* s->mark of the last multi-room fan-out that reached it */
  rc_client *cl; /* client connections only (rc_client.c's) */
  /* an accepted connection's TLS (the server's certificate); NULL: plain.
   * A client's is cl->filter. */
  rc_tls *tls;
} rc_conn;

#define RC__TLS_COUNTED 1u /* handshake done: counted in tls_connections */
#define RC__TLS_SHUT 2u    /* close_notify made */
#define RC__TLS_STARTED 4u /* the client has sent a byte of its handshake */
#define RC__TLS_FAILED 8u  /* counted in tls_handshake_failures */

#define RC__PMD_RX 1u
#define RC__PMD_ANSWER_WINDOW 2u
#define RC__PMD_RX_STREAM 4u /* a client's: its server keeps its context */
#define RC__PMD_COUNTED 8u   /* opened: counted in deflate_connections */

typedef struct rc_room {
  uint64_t id;
  uint32_t n, cap;
  int relay; /* enum rc_relay */
  struct rc_member {
    rc_conn *conn;
    uint32_t index; /* position of this room in conn->rooms */
  } * members;
} rc_room;

enum rc_cmd_type {
  RC_CMD_ACCEPT = 1,
  RC_CMD_RESPOND,
  RC_CMD_SEND,
  RC_CMD_CLOSE,
  RC_CMD_JOIN,
  RC_CMD_LEAVE,
  RC_CMD_PUBLISH,
  RC_CMD_ROOM_FREE,
  RC_CMD_STOP,
  RC_CMD_PAUSE,
  RC_CMD_RESUME,
  RC_CMD_BROADCAST,
  RC_CMD_CONNECT,
  RC_CMD_ROOM_NAME,     /* room, text: the name */
  RC_CMD_REDIS,         /* conn: the token, text: the formatted command */
  RC_CMD_ADOPT,         /* conn: the id, status: the fd (-1 once taken), text:
                           the bytes read already */
  RC_CMD_RECOVER_BEGIN, /* conn, room (rc_server_recover_begin) */
  RC_CMD_RECOVER_END,   /* conn, room, status 1: bufs, then the kept
                           messages past offset, then join; 0: cancel */
};

typedef struct rc_cmd {
  struct rc_cmd *next;
  int type;
  int status; /* RESPOND status, CLOSE code, ADOPT fd */
  uint64_t conn;
  uint64_t room;
  uint64_t exclude;
  rc_buf *buf; /* SEND/PUBLISH: the frame; RESPOND/ACCEPT: the bytes to send */
  char *text;  /* ACCEPT: subprotocol and headers; CLOSE: reason; ADOPT:
                  the bytes read (NULL for none) */
  size_t text_len;
  uint64_t *rooms; /* BROADCAST */
  size_t nrooms;
  rc_buf **bufs; /* RECOVER_END: the frames to send first, in order */
  size_t nbufs;
  uint64_t offset; /* RECOVER_END: the last offset the frames cover */
} rc_cmd;

struct rc_server {
  rc_config cfg;
  uv_loop_t loop;
  uv_thread_t thread;
  uv_tcp_t listener;
  uv_async_t wake;
  uv_check_t flush; /* end of a loop turn: writes and the event batch */
  uv_timer_t sweep; /* handshake, ping and close deadlines */
  uv_timer_t stop_timer;
  int started, stopping, stopped, joined, handles_closed, open_handles;
  int has_listener;
  unsigned stop_code;
  char stop_reason[64];

  /* any thread: commands */
  uv_mutex_t cmd_lock;
  rc_cmd *cmd_head, *cmd_tail;
  int cmd_closed;           /* the loop has ended: commands are refused */
  atomic_int defer_wakeups; /* commands wait for rc_server_wake() */
  /* The embedder took events other than Redis replies (those that may
   * lead to pushes) and has not said it is done with them
   * (rc_server_idle); `holding`: the backplane holds deliveries for that
   * (rc__bp_release), so the end of it must wake the loop. */
  atomic_int embedder_busy, holding;

  /* any thread: events */
  uv_mutex_t ev_lock;
  rc_event *ev_head, *ev_tail;
  int ev_fd;              /* eventfd */
  atomic_size_t ev_bytes; /* queued and not yet polled, batch included */
  atomic_int starving;    /* the loop has held readers for lack of polls */
  atomic_int resume_now;  /* set by a poll that caught up: resume them */
  /* loop-local batch of events, handed over once per turn */
  rc_event *batch_head, *batch_tail;
  int batch_busy; /* the batch has events other than Redis replies */

  /* connections: slot table with generation-tagged ids */
  rc_conn **slots;
  uint32_t *gens;
  uint32_t nslots, capslots;
  uint32_t *free_slots;
  uint32_t nfree;
  uint64_t nconns;
  uint64_t admitted; /* connections not refused for max_connections */
  /* adopted connections: id -> conn, open addressing (rc_conn.c); loop
   * thread only, since the adopt command comes before any other that
   * names the id */
  rc__idmap adopted;
  atomic_uint_fast64_t next_adopt;
  rc__limits limits; /* of the connections it accepts (rc_server_new) */
  uint32_t nstarved; /* connections with starved set */
  uint64_t mark;     /* one per multi-room fan-out: each member once */

  rc_conn *dirty;

  /* rooms: open addressing, id -> room */
  rc_room **rooms;
  uint32_t rooms_cap, rooms_n;

  atomic_uint_fast64_t next_room;
  atomic_uint_fast64_t st_connections, st_accepted, st_messages_in,
      st_deliveries, st_slow, st_parsers, st_writes, st_wakes, st_dropped,
      st_refused, st_idle, st_frag, st_starved, st_adopted, st_pmd_conns,
      st_deflated, st_inflated;
  uint32_t transient_freed; /* parsers and request heads freed since the
                              last heap trim */

  uint64_t id;                             /* rc_server_id() */
  struct rc_backplane *bp;                 /* NULL without cfg.backplane_host */
  const struct rc__room_hooks *room_hooks; /* the backplane's, else NULL */
  atomic_uint_fast64_t st_bp_up, st_bp_published, st_bp_received,
      st_bp_reconnects, st_bp_buffered, st_bp_dropped, st_bp_channels,
      st_bp_invalid, st_bp_coalesced;
  /* The last writes to members (an end-of-turn flush, or a run of held
   * messages) that took RC__LONG_FLUSH_NS or more: how long, and when
   * they ended (loop time, ms). See rc__note_writes. */
  uint64_t long_flush_ns, long_flush_at;

  rc_http_request req;        /* parse space for the loop thread (4 KiB) */
  rc_http_response_head resp; /* the same for client handshakes */

  /* client connections: id -> rc_client, open addressing (rc_client.c) */
  uv_mutex_t client_lock; /* any thread: guards the table */
  rc__idmap clients;
  atomic_uint_fast64_t next_client;
  atomic_uint_fast64_t st_clients, st_client_connects;
  struct rc__tls_ctx_entry *tls_ctxs; /* loop thread: contexts by settings */

  /* permessage-deflate, loop thread, made at first use (rc_conn.c): one
   * compressor for the messages of every connection, one decompressor, and
   * where a message is inflated (grown to the message, at most its
   * max_message; past 64 KiB let go once the message is taken) */
  rc_deflater *deflater;
  rc_inflater *inflater;
  uint8_t *zbuf;
  size_t zbuf_cap;

  /* TLS for accepted connections (rc_server_set_tls): the context new
   * connections take, swapped under tls_lock by any thread */
  uv_mutex_t tls_lock;
  struct rc_tls_ctx *tls_server;
  atomic_uint_fast64_t st_tls_conns, st_tls_handshakes, st_tls_failures;
  /* bytes the sockets took (rc_conn.c's writes); rooms with members now
   * (rc_room.c: rooms_n as other threads may read it); handshakes the core
   * refused, by reason (rc_handshake.c, rc_server.c) */
  atomic_uint_fast64_t st_bytes_out, st_rooms_open;
  atomic_uint_fast64_t st_refusals[RC__REFUSE_N];
  /* where a TLS connection's queued frames are gathered into records of
   * the largest size (rc_conn.c's tls_seal) */
  uint8_t seal[16384];

  /* one read buffer for every connection: data is handed on at once */
  char readbuf[65536];
};

static inline uint64_t rc__now_ms(const struct rc_server *s) {
  return uv_now(&s->loop);
}

/* A handshake the core refused, counted by reason (rc_stats' refused_*). */
static inline void rc__refused(struct rc_server *s, enum rc__refusal why) {
  atomic_fetch_add_explicit(&s->st_refusals[why], 1, memory_order_relaxed);
}

/* rc_conn.c: a connection's life, whatever its role */
/* The data frames one message of at most max_message_size bytes may be cut
 * into (rc_frame_scan_feed's max_frags). */
uint32_t rc__max_frags(size_t max_message_size);
int rc__conn_register(struct rc_server *s, rc_conn *c); /* gives it an id */
/* Registers c under id, an adopted connection's (RC__ADOPT_BIT): a slot for
 * the loops over every connection, and the id in srv->adopted. */
int rc__conn_register_adopted(struct rc_server *s, rc_conn *c, uint64_t id);
/* A connection the server accepted, by id (clients: rc__conn_find). */
rc_conn *rc__conn_slot_find(struct rc_server *s, uint64_t id);
rc_conn *rc__conn_adopted_find(struct rc_server *s, uint64_t id);
void rc__conn_closed(uv_handle_t *h); /* the tcp handle's close callback */
void rc__conn_start_read(rc_conn *c);
void rc__conn_pause_read(rc_conn *c);
/* The embedder holds reading (on) or lets it go (RC_CMD_PAUSE/RESUME). */
void rc__conn_hold(rc_conn *c, int on);
/* 1 in the states where the connection reads from its socket. */
int rc__conn_reading_state(const rc_conn *c);
/* Appends to c->hbuf, growing it up to cap bytes; -1 when memory ran out
 * (the connection is failed). */
int rc__conn_head_append(rc_conn *c, const char *data, size_t len, size_t cap);
void rc__conn_enqueue(rc_conn *c, rc_buf *b); /* takes a new reference */
/* A data message under the queue's bound: 1 when queued (or dropped as
 * the oldest), 0 when refused. */
int rc__conn_enqueue_data(rc_conn *c, rc_buf *b);
uint32_t rc__conn_deliver_now(rc_conn *c, rc_buf *const *bufs,
                              const uv_buf_t *iov, uint32_t n, size_t total);
void rc__conn_mark_dirty(rc_conn *c);
void rc__conn_close_ws(rc_conn *c, unsigned code, const char *reason,
                       size_t reason_len);
void rc__conn_abort(rc_conn *c);
void rc__conn_fail(rc_conn *c); /* aborted at the end of the turn */
/* Queues bytes (an HTTP answer) and closes once they are written. */
void rc__conn_respond(rc_conn *c, rc_buf *b);
/* Closes once what is queued (and a TLS alert) is written. */
void rc__conn_drain(rc_conn *c);
/* Bytes from the socket, through the role, and the hold on a reader the
 * embedder is behind on: the read callback, the bytes an adopted
 * connection came with, the fuzz targets. */
void rc__conn_received(rc_conn *c, const char *data, size_t len);
/* WebSocket bytes from the peer (open or closing; else ignored). */
void rc__conn_frames(rc_conn *c, const char *data, size_t len);
/* What a data message b goes to c as: b, or its compressed twin when c
 * negotiated permessage-deflate and the message is compressed (once, at
 * the first member that can take it; see rc__buf_deflated). */
rc_buf *rc__conn_frame_for(rc_conn *c, rc_buf *b);
/* The role's inflate for a message that stands alone (the server's, and a
 * client's whose server agreed to no context takeover): the loop's
 * rc_inflater. */
int rc__conn_inflate(rc_conn *c, const uint8_t *in, size_t len, uint8_t *out,
                     size_t max, size_t *out_len, int *as_sent);
/* The loop's compressor, made at first use; NULL when memory is short. */
rc_deflater *rc__server_deflater(struct rc_server *s);
/* A message for the embedder (RC_EV_MESSAGE). */
void rc__conn_message_event(rc_conn *c, int is_text, const uint8_t *msg,
                            size_t len, const uint8_t *z, size_t zlen);
/* The server side's policy when control frames overflow the queue. */
void rc__conn_over_bound(rc_conn *c);
/* One sweep tick: deadlines, keepalive, releasing idle memory. */
void rc__conn_sweep(rc_conn *c, uint64_t now);
/* Reading held for lack of polls may go on (rc__resume_starved). */
void rc__conn_unstarve(rc_conn *c, uint64_t now);
void rc__flush_dirty(struct rc_server *s); /* the end of a loop turn */

/* rc_handshake.c: the server's side of a connection */
extern const rc__role rc__server_role;
/* RC_CMD_ACCEPT: answers 101 with text (subprotocol, headers). */
void rc__handshake_accept(rc_conn *c, const char *text, size_t text_len);
/* Answers status with a short text body, then closes. */
void rc__handshake_refuse(rc_conn *c, int status, const char *extra_headers,
                          const char *reason);

/* rc_client.c: connections this process opens */
extern const rc__role rc__client_role;
rc_conn *rc__client_find(struct rc_server *s, uint64_t id);
void rc__client_start(struct rc_server *s, uint64_t id);
void rc__client_unstarted(struct rc_server *s, uint64_t id);
void rc__clients_destroy(struct rc_server *s);
/* Frames a send command's message for client connection conn (masked)
 * and counts it in its bufferedAmount. 0 or UV_ENOMEM (cmd->buf NULL). */
int rc__client_send_command(struct rc_server *s, uint64_t conn,
                            struct rc_cmd *cmd, const void *data, size_t len,
                            int is_text);

/* rc_room.c */
/* A room id's low 2 bits are its mode (enum rc_relay), fixed when the id
 * is made (rc_server_room_new_relay). */
#define RC__ROOM_MODE_BITS 2
static inline int rc__room_mode(uint64_t id) {
  return (int)(id & ((1u << RC__ROOM_MODE_BITS) - 1));
}
rc_room *rc__room_get(struct rc_server *s, uint64_t id, int create);
void rc__room_join(struct rc_server *s, rc_room *r, rc_conn *c);
void rc__room_broadcast(struct rc_server *s, const uint64_t *rooms,
                        size_t nrooms, rc_buf *b, uint64_t exclude);
void rc__room_relay(struct rc_server *s, rc_conn *from, rc_buf *b);
void rc__room_leave(struct rc_server *s, rc_room *r, rc_conn *c);
void rc__room_leave_all(struct rc_server *s, rc_conn *c);
void rc__room_free(struct rc_server *s, uint64_t id);
void rc__room_publish(struct rc_server *s, uint64_t id, rc_buf *b,
                      uint64_t exclude);
/* A message from another server (through the hook's owner): to the local
 * members of rooms, each once; the hooks are not told. */
void rc__room_deliver(struct rc_server *s, const uint64_t *rooms, size_t nrooms,
                      rc_buf *b, uint64_t exclude);
/* A message listed for several rooms, as a cluster's backplane gets it: one
 * copy per room, each on its room's shard. This copy, for room, goes to
 * its local members but those of the rooms before it in the list (they
 * have it, or will have it, from their own room's copy). */
void rc__room_deliver_after(struct rc_server *s, const uint64_t *before,
                            size_t nbefore, uint64_t room, rc_buf *b);
/* n messages (at most RC__RUN_MAX) to the local members of room id, as
 * rc__room_publish_run writes them, and no further (no hook). */
void rc__room_deliver_run(struct rc_server *s, uint64_t id, rc_buf *const *bufs,
                          const uint64_t *exclude, uint32_t n);
/* RC_CMD_JOIN's work: conn c into room id (made if need be). */
void rc__server_join(struct rc_server *s, rc_conn *c, uint64_t room);
/* The slow-consumer policy's close (1008), counted. */
void rc__conn_slow_consumer(rc_conn *c);
/* n (at most RC__RUN_MAX) publishes to one room that end a wake-up's
 * commands (nothing else is queued behind them in this turn): members with
 * nothing queued get them all at once in one writev(), the others queue
 * them. */
#define RC__RUN_MAX 256
#define RC__RUN_EXCLUDES 4
void rc__room_publish_run(struct rc_server *s, uint64_t id, rc_buf *const *bufs,
                          const uint64_t *exclude, uint32_t n);
void rc__rooms_destroy(struct rc_server *s);

/* rc_server.c: the loop's turn and the loops over every connection */
/* Any connection by id: accepted or opened by this process. */
rc_conn *rc__conn_find(struct rc_server *s, uint64_t id);
void rc__conn_command(struct rc_server *s, rc_cmd *cmd);
void rc__server_on_connection(uv_stream_t *listener, int status);
void rc__server_adopt(struct rc_server *s, rc_cmd *cmd); /* RC_CMD_ADOPT */
void rc__sweep(struct rc_server *s, uint64_t now);
void rc__stop_begin(struct rc_server *s);
void rc__resume_starved(struct rc_server *s);

/* rc_mailbox.c: the command API's helpers, for rc_backplane.c too */
rc_cmd *rc__cmd_make(int type, uint64_t conn);
int rc__cmd_queue(struct rc_server *s, rc_cmd *cmd); /* takes cmd */

/* Rooms' one hook: how rooms tell whoever shares them with other servers
 * (the backplane) of their life and of the messages published to them,
 * knowing nothing of who listens (as uWebSockets' TopicTree drains through
 * a callback). s->room_hooks is set by the backplane when it is created
 * (rc__bp_create) and NULL otherwise; rc_room.c calls it, nothing else.
 *
 * The contract. Each runs on the loop thread, synchronously, inside the
 * room operation that caused it; ctx is the hooks' own. A hook must not
 * join, leave, free or publish (it may read rooms with rc__room_get(...,
 * 0) and fan out with rc__room_deliver, which calls no hook).
 *   made(id)       a room with this id now exists locally: its first member
 *                  is joining (rc__room_get with create).
 *   gone(id)       its last member left: the room is no longer in the table.
 *   freed(id)      the embedder freed the id (RC_CMD_ROOM_FREE), after any
 *                  local incarnation is gone; called whether or not one
 *                  existed. The id is never made again.
 *   published(rooms, n, b)  a message of this process (a publish, a run of
 *                  publishes, a broadcast or a relay, b the server frame)
 *                  was fanned out to the local members of rooms, or to
 *                  nobody when a room has none here; ids may repeat and
 *                  need not be shared. Not called for rc__room_deliver. */
struct rc__room_hooks {
  void (*made)(void *ctx, uint64_t id);
  void (*gone)(void *ctx, uint64_t id);
  void (*freed)(void *ctx, uint64_t id);
  void (*published)(void *ctx, const uint64_t *rooms, size_t n,
                    const rc_buf *b);
  void *ctx;
};

/* rc_backplane.c: the server's only calls into it; every function but
 * rc__bp_create and rc__bp_free expects s->bp != NULL. Rooms reach it
 * through s->room_hooks only. */
int rc__bp_create(struct rc_server *s); /* copies the strings of s->cfg */
void rc__bp_start(struct rc_server *s); /* before the loop thread starts */
void rc__bp_close(struct rc_server *s); /* the loop is ending */
void rc__bp_free(struct rc_server *s);  /* after it has ended; NULL-safe */
/* RC_CMD_ROOM_NAME and RC_CMD_REDIS; cmd->text may be taken (set NULL). */
void rc__bp_command(struct rc_server *s, rc_cmd *cmd);

/* rc_mailbox.c: the queues between the loop and the embedder */
void rc__event_push(struct rc_server *s, rc_event *ev);
void rc__events_hand_over(struct rc_server *s);
rc_event *rc__event_new(uint16_t type, uint64_t conn, size_t len);
/* Queues conn's RC_EV_CLOSE with code and reason (len bytes); an event
 * that cannot be made is lost with the memory. */
void rc__event_close(struct rc_server *s, uint64_t conn, unsigned code,
                     const char *reason, size_t len);
/* Event payload strings (see rc_core.h): a uint32_t length then the bytes;
 * headers as name (lower-cased) and value pairs. Each returns the end. */
char *rc__event_put(char *p, const void *str, size_t n);
size_t rc__event_headers_size(const rc_http_header *h, size_t n);
char *rc__event_put_headers(char *p, const rc_http_header *h, size_t n);
int rc__cmd_push(struct rc_server *s, rc_cmd *cmd, int force_wake);
rc_cmd *rc__cmd_take_all(struct rc_server *s);
void rc__cmd_free(rc_cmd *cmd);
/* The publishes to one room that end a batch of commands (from cmd on): the
 * first of them, or NULL. The loop hands them to the room as one run
 * (rc__room_publish_run). */
rc_cmd *rc__cmd_tail_run(rc_cmd *cmd);

/* Backplane deliveries of rooms with history held to share a flush (see
 * rc_backplane.c, "Coalescing"): written once nothing is left to wait for
 * (and one more turn has passed), or at once with force. Before any
 * command but a Redis one, the loop releases them with force
 * (rc__bp_before_commands): a join, leave or recovery must come after the
 * messages that were published before it. */
void rc__bp_release(struct rc_server *s, int force);
void rc__bp_before_commands(struct rc_server *s, const rc_cmd *cmd);

/* Writes to members that began at uv_hrtime() t0 have ended: one that took
 * RC__LONG_FLUSH_NS or more says that the server is loaded (long_flush_*). */
#define RC__LONG_FLUSH_NS 2000000u
void rc__note_writes(struct rc_server *s, uint64_t t0);

#endif
