/* rc_core.h - the public interface of the roomcast core.
 *
 * The core owns a libuv loop that runs on its own native thread: sockets,
 * the HTTP/1.1 upgrade, RFC 6455 framing (wslay reads, the core frames),
 * per-connection output queues, rooms and fan-out. It never touches a Python
 * object and can be linked into a plain C program.
 *
 * Two one-way channels connect it to the embedding program:
 *
 *   commands  any thread -> loop. rc_server_accept(), rc_server_send(), ...
 *             append to a queue and wake the loop; libuv coalesces the
 *             wake-ups, so a burst of commands costs one loop wake-up. The
 *             loop carries them out in the order they were made. A command
 *             that names a connection that has gone is ignored.
 *   events    loop -> embedder. Opens, messages, closes and plain HTTP
 *             requests are batched per loop turn; rc_server_fd() becomes
 *             readable when the queue goes from empty to non-empty, and
 *             rc_server_poll() takes the whole batch.
 *
 * The same loop also makes client connections (rc_server_connect): start it
 * with rc_server_start() when it should not listen. A client connection
 * takes the same commands (rc_server_send, rc_server_close) and gives the
 * same events (RC_EV_MESSAGE, RC_EV_CLOSE) as a server one, plus
 * RC_EV_CONNECTED once its handshake is done. A connection another server
 * accepted (uvicorn's, say) can be handed over with the bytes read from it
 * already (rc_server_adopt) and is served as one this core accepted.
 *
 * Functions return 0 or a negative errno-style code (libuv's UV_E*).
 */
#ifndef RC_CORE_H
#define RC_CORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct rc_server rc_server;

typedef struct rc_config {
  size_t max_message_size;  /* bytes; a larger message is closed with 1009 */
  size_t max_queue_bytes;   /* per-connection unsent bytes, control frames
                               included, before 1008 (a client fails) */
  double ping_interval;     /* seconds of silence before a ping; 0: never */
  double ping_timeout;      /* seconds to wait for the pong, then 1011 */
  double handshake_timeout; /* seconds to receive the request head; then
                               as long again for the embedder to accept
                               or answer it, else the core answers 503 */
  double close_timeout;     /* seconds to wait for the peer's close frame */
  size_t max_header_bytes;  /* request line + headers; more: 431 */
  size_t max_headers;       /* header count; more: 431 */
  int http_requests;        /* 1: plain GET/HEAD become RC_EV_REQUEST */
  int backlog;
  size_t max_connections; /* 0: no limit; past it new ones get 503 */
  double idle_timeout;    /* seconds without a message from the client
                             before close 1001; 0: never */
  int drop_oldest;        /* a full output queue drops its oldest
                             messages (1) or closes with 1008 (0) */
  size_t max_event_bytes; /* events not yet polled, each counted as
                             the block it takes (an empty message: 48
                             bytes); past it the core stops reading from
                             clients that send until the embedder polls
                             (64 MiB) */
  /* The Redis backplane (rc_backplane.c): rooms named with
   * rc_server_room_name() are shared with every server on the same Redis
   * and prefix. The strings are copied by rc_server_new(). */
  const char *backplane_host;     /* Redis host name or address; NULL: none,
                                     every room is local */
  int backplane_port;             /* 6379 */
  int backplane_db;               /* SELECTed for rc_server_redis(); 0 */
  const char *backplane_username; /* AUTH username (Redis 6 ACL) or NULL */
  const char *backplane_password; /* AUTH password or NULL */
  const char *backplane_prefix;   /* at most 200 bytes; channel = prefix
                                     escaped + "|" + room name (see
                                     rc_backplane.c); NULL: "roomcast:" */
  size_t backplane_buffer;        /* bytes of publishes kept while Redis
                                     cannot take them; more are dropped and
                                     counted (1 MiB) */
  int backplane_cluster;          /* 1: a Redis Cluster, whose seed nodes
                                     backplane_host lists as "host:port[,
                                     host:port...]" (backplane_port and
                                     backplane_db unused, db 0): each room
                                     is on its channel's shard (SPUBLISH,
                                     SSUBSCRIBE; rc_backplane.c) */
  /* permessage-deflate (RFC 7692; rc_handshake.c, rc_deflate.c): 1 (the
   * default) negotiates it with clients that offer it, always answering
   * server_no_context_takeover and client_no_context_takeover, so each
   * compressed message stands alone: a message is compressed at most once
   * however many members get it, and no deflate state is kept per
   * connection. 0: never negotiated. */
  int compression;
  /* messages shorter than this many bytes go uncompressed (128); so does
   * any message that would not shrink */
  size_t compression_threshold;
} rc_config;

/* A message for an error code returned by these functions. */
const char *rc_strerror(int err);

/* TLS for the connections a server accepts (rc_server_set_tls), under
 * uvicorn's names. The strings are read when the call is made. */
enum { RC_CERT_NONE = 0, RC_CERT_OPTIONAL = 1, RC_CERT_REQUIRED = 2 };
typedef struct rc_server_tls {
  const char *certfile; /* PEM: the certificate, then its chain */
  const char *keyfile;  /* PEM private key; NULL: in certfile */
  const char *password; /* of an encrypted key, or NULL */
  const char *ca_certs; /* PEM roots that client certificates must lead
                           to, or NULL */
  int cert_reqs;        /* RC_CERT_*: ask for a client certificate */
} rc_server_tls;

/* Reads the files of tls and checks them (the key matches the certificate,
 * the password opens it): 0, or -1 with a reason that names the file in
 * err ("ssl_keyfile /x/k.pem does not match ssl_certfile /x/c.pem"). Any
 * thread; nothing is kept. */
int rc_tls_check(const rc_server_tls *tls, char *err, size_t errlen);

/* Fills cfg with the documented defaults (1 MiB, 1 MiB, 20 s, 20 s, 10 s,
 * 5 s, 8 KiB, 100, 0, 1024, no connection limit, no idle timeout, close
 * slow consumers, permessage-deflate on above 128 bytes). */
void rc_config_default(rc_config *cfg);

enum rc_event_type {
  RC_EV_OPEN = 1,      /* an upgrade request awaits rc_server_accept/respond */
  RC_EV_MESSAGE = 2,   /* a complete text or binary message */
  RC_EV_CLOSE = 3,     /* the connection is gone; its last event */
  RC_EV_REQUEST = 4,   /* a plain HTTP request awaits rc_server_respond */
  RC_EV_CONNECTED = 5, /* a client connection is open (code: 101) */
  RC_EV_REDIS = 8,     /* the reply to rc_server_redis(): conn is its token */
  RC_EV_BACKPLANE = 9, /* the backplane's state changed: code is an enum
                          rc_backplane_state; data says why or where */
  RC_EV_RECOVER = 10,  /* rc_server_recover_begin's answer: code 1 ready, 0
                          cannot; data: the room id (8 bytes, host order) */
};

/* The code of an RC_EV_BACKPLANE event. */
enum rc_backplane_state {
  RC_BACKPLANE_DOWN = 0,  /* a Redis connection was lost */
  RC_BACKPLANE_UP = 1,    /* both Redis connections ready, rooms resubscribed */
  RC_BACKPLANE_RETRY = 2, /* an attempt to connect failed */
};

/* Types of the nodes of an RC_EV_REDIS reply, one byte each, then:
 * string, status and error: a uint32_t length and the bytes; integer: an
 * int64_t; nil: nothing; array: a uint32_t count and as many nodes (all
 * native byte order, unaligned). An error node alone is also the answer
 * when the command could not be sent (the backplane is down) or its
 * connection was lost before the reply. */
enum rc_reply_type {
  RC_REPLY_STRING = 's',
  RC_REPLY_STATUS = 't',
  RC_REPLY_ERROR = 'e',
  RC_REPLY_INTEGER = 'i',
  RC_REPLY_NIL = 'n',
  RC_REPLY_ARRAY = 'a',
};

/* One event. For RC_EV_OPEN and RC_EV_REQUEST, data holds nstr strings,
 * each a uint32_t length (native byte order) followed by its bytes:
 * method, path, query, peer host, then name/value pairs of the headers in
 * request order (names lower-cased); over TLS (code = 1) four more follow:
 * the protocol version and the cipher suite's IANA number as decimal text
 * ("772", "4865"), the client certificate's subject as RFC 4514 text and
 * its chain as PEM, leaf first ("" and "" without one). For RC_EV_MESSAGE it
 * holds the payload (is_text says which kind; text has been checked to be valid
 * UTF-8). For RC_EV_CLOSE it holds the reason; code is the close code (1006
 * when no close frame was exchanged). For RC_EV_CONNECTED, data holds nstr
 * strings in the same form: the subprotocol the server chose ("" for none),
 * then name/value pairs of the response headers (names lower-cased). A client
 * connection that never opened gets RC_EV_CLOSE alone, code 1006, with a
 * reason such as "connection refused", "TLS: certificate verify failed:
 * self-signed certificate" or "HTTP 404 in handshake: Not Found". Free the
 * list with rc_events_free(). */
typedef struct rc_event {
  struct rc_event *next;
  uint64_t conn;
  uint32_t len;
  uint32_t nstr;
  uint16_t type;
  uint16_t code;
  uint16_t port;
  uint8_t is_text;
  char data[];
} rc_event;

/* Allocates a server; nothing runs until rc_server_listen(). Returns NULL
 * when memory runs out. */
rc_server *rc_server_new(const rc_config *cfg);

/* Binds host:port (port 0: ephemeral), listens with the given backlog
 * (<= 0: the configured one) and starts the loop thread. On success stores
 * the bound port in *bound_port and returns 0; otherwise returns a negative
 * libuv error (UV_EADDRINUSE, UV_EINVAL, ...). */
int rc_server_listen(rc_server *s, const char *host, int port, int backlog,
                     int *bound_port);

/* rc_server_listen() with flags. RC_LISTEN_REUSEPORT: the listening socket
 * has SO_REUSEPORT, so that several processes (of the same user) listen on
 * one address and the kernel spreads new connections between them; a
 * socket bound there without it still makes the bind fail (UV_EADDRINUSE). */
#define RC_LISTEN_REUSEPORT 1u
int rc_server_listen_flags(rc_server *s, const char *host, int port,
                           int backlog, unsigned flags, int *bound_port);

/* Starts the loop thread without a listener, for client connections.
 * Returns 0, UV_EALREADY if started or listening already, or a libuv
 * error. rc_server_listen() and rc_server_start() are alternatives: a
 * listening server makes client connections too. */
int rc_server_start(rc_server *s);

/* Stops accepting, sends close (code, reason) to every open connection,
 * answers 503 to pending ones, waits up to close_timeout for the handshakes
 * and then for the loop thread to end. Blocks; call without holding locks
 * the loop might need. Idempotent. */
void rc_server_stop(rc_server *s, unsigned code, const char *reason);

/* Serves TLS on the connections accepted from now on, with the
 * certificate of tls read now: before rc_server_listen(), or while
 * serving to load new certificates (open connections keep theirs).
 * Returns 0, or -1 with the reason in err (see rc_tls_check); the
 * server's certificate is then unchanged. Any thread. Adopted connections
 * are never TLS (their TLS, if any, is their embedder's). */
int rc_server_set_tls(rc_server *s, const rc_server_tls *tls, char *err,
                      size_t errlen);

/* Frees a server that was never started or has been stopped. */
void rc_server_free(rc_server *s);

/* File descriptor that is readable while events are queued. */
int rc_server_fd(const rc_server *s);

/* Takes every queued event, oldest first, or NULL. */
rc_event *rc_server_poll(rc_server *s);
void rc_events_free(rc_event *ev);

/* The embedder has handled the events it polled, and made the commands
 * they lead to: a pause in its work. Any thread. Optional; with a
 * backplane, a loaded server writes the messages of rooms with history
 * from Redis in fewer, larger writes when the embedder says so (see
 * backplane_coalesced): without it, they wait up to a few milliseconds
 * more. */
void rc_server_idle(rc_server *s);

/* --- commands (any thread) ---------------------------------------------- */

/* With on != 0, commands no longer wake the loop by themselves: the
 * embedder calls rc_server_wake() at the end of each batch of commands (and
 * after every command made from a thread that does not batch). Default off:
 * every command wakes the loop (libuv coalesces wake-ups still pending). */
void rc_server_defer_wakeups(rc_server *s, int on);

/* Wakes the loop if commands are waiting. Returns 0, or UV_ECANCELED once
 * the loop has ended. */
int rc_server_wake(rc_server *s);

/* Answers RC_EV_OPEN with 101. subprotocol may be NULL. extra_headers: zero
 * or more "Name: value\r\n" lines, or NULL. */
int rc_server_accept(rc_server *s, uint64_t conn, const char *subprotocol,
                     const char *extra_headers);

/* Answers an RC_EV_OPEN that was not accepted, or an RC_EV_REQUEST, with an
 * HTTP response, then closes the connection. head_only omits the body
 * (HEAD) but keeps its Content-Length. */
int rc_server_respond(rc_server *s, uint64_t conn, int status,
                      const char *extra_headers, const void *body,
                      size_t body_len, int head_only);

/* Frames data (text when is_text) once and queues it on conn. */
int rc_server_send(rc_server *s, uint64_t conn, const void *data, size_t len,
                   int is_text);

/* Starts the close handshake with code and reason (reason truncated to fit
 * a control frame). A connection not yet accepted gets HTTP 403. */
int rc_server_close(rc_server *s, uint64_t conn, unsigned code,
                    const char *reason, size_t reason_len);

/* Backpressure from the embedder: stop reading from conn (its messages
 * wait in the kernel, and TCP slows the peer down) until resumed. */
int rc_server_pause_reading(rc_server *s, uint64_t conn);
int rc_server_resume_reading(rc_server *s, uint64_t conn);

/* A client connection's settings. Strings are copied by rc_server_connect;
 * none may hold CR, LF or NUL. */
typedef struct rc_connect_opts {
  const char *host;            /* name or address literal to connect to */
  int port;                    /* 1-65535 */
  const char *target;          /* path and query, "/chat?room=1"; starts '/' */
  const char *host_header;     /* the Host header; NULL: host, and :port when
                                  it is not the scheme's default */
  const char *extra_headers;   /* "Name: value\r\n" lines, or NULL */
  const char *protocols;       /* offered subprotocols "a, b", or NULL */
  int tls;                     /* 1: TLS (wss) */
  int tls_verify;              /* 1 (default): the certificate chain must
                                  lead to a trusted root and name the server */
  const char *tls_cafile;      /* PEM roots to trust; NULL: the system's */
  const char *tls_server_name; /* name to verify and send as SNI; NULL:
                                  host */
  double handshake_timeout;    /* seconds from connect to 101; 0: 10 */
  double ping_interval;        /* seconds of silence before a ping; 0: never */
  double ping_timeout;         /* seconds to wait for its pong, then 1011 */
  size_t max_message_size;     /* 0: the server's max_message_size, which
                                  bounds compressed messages once inflated
                                  too (1009 past it) */
  int compression;             /* 1 (default): offer permessage-deflate
                                  (RFC 7692; "permessage-deflate;
                                  client_max_window_bits") and, once the
                                  server accepts it, compress messages of
                                  the config's compression_threshold bytes
                                  or more that shrink; 0: offer nothing */
} rc_connect_opts;

/* Defaults: port 80, target "/", verification on, 10 s handshake, no
 * pings, permessage-deflate offered. */
void rc_connect_opts_default(rc_connect_opts *o);

/* Starts a client connection: DNS (uv_getaddrinfo; each address is tried
 * in turn), TCP, TLS when asked, then the upgrade request with a random
 * Sec-WebSocket-Key and the checks of RFC 6455 4.1 on the response, all on
 * the loop thread within handshake_timeout. Stores the connection's id in
 * *conn (any thread may use it at once; its events are RC_EV_CONNECTED or
 * RC_EV_CLOSE first). Frames it sends are masked with a fresh key each.
 * Returns 0, UV_EINVAL for bad options or a server not started, UV_ENOMEM,
 * UV_EIO when no random key could be made, or UV_ECANCELED once stopped.
 * A client connection cannot join rooms (its frames are masked, so they
 * are its own). */
int rc_server_connect(rc_server *s, const rc_connect_opts *opts,
                      uint64_t *conn);

/* Serves a TCP connection accepted elsewhere (by uvicorn, say) as if this
 * core had accepted it: fd is its socket (a dup() of it is enough), head
 * the bytes already read from it, in order: the request head, re-serialised
 * or as received ("GET /path?q HTTP/1.1\r\nName: value\r\n...\r\n"),
 * and any frames the client sent behind it. The loop opens the socket
 * (uv_tcp_open, TCP_NODELAY when it can), feeds head in as if read from
 * the socket before anything is read from it, and from then on serves the
 * connection like an accepted one: the request is checked (400, 405, 426,
 * 431 as for any; 503 at max_connections or when stopping), the handshake
 * deadline runs from the adoption, and it counts in connections,
 * accepted_total and adopted_total. Any thread.
 *
 * The id is stored in *conn at once (0 on failure) and any thread may use
 * it: commands made with it run after the adoption. It never equals an
 * accepted or a client connection's id. Events: RC_EV_OPEN first (as for
 * an accepted connection), then exactly as an accepted connection's; or,
 * when the core ends it before RC_EV_OPEN, an RC_EV_CLOSE alone, code
 * 1006, whose reason says why: "HTTP 400: malformed HTTP request" (the
 * core's answer to the client, status and body text), "server shutting
 * down" (the core stopped before the adoption ran), "cannot adopt the
 * socket: ...", "connection lost before the request head", "no request
 * head in time". Every adopted connection gets exactly one RC_EV_CLOSE.
 *
 * fd belongs to the core from the call on, whatever the result: the core
 * closes it when the connection ends, or at once when it cannot serve it
 * (a failed call included; the one exception is an fd the loop serves
 * already, adopted twice, which it leaves to its connection). Returns 0;
 * UV_EINVAL for fd < 0 (nothing to close), len > RC_ADOPT_MAX_HEAD, a
 * socket that is not a stream, or a server not started; UV_EBADF when fd
 * is not open; UV_ENOTSOCK; UV_ENOMEM; UV_ECANCELED once stopped. */
#define RC_ADOPT_MAX_HEAD ((size_t)1 << 20)
int rc_server_adopt(rc_server *s, int fd, const void *head, size_t len,
                    uint64_t *conn);

/* A client connection's bytes not yet handed to the kernel: frames still
 * in send commands plus its output queue (framing and TLS records
 * included). UV_ENOENT once the connection has gone. Any thread. */
int rc_server_buffered(rc_server *s, uint64_t conn, size_t *out);

/* How a room treats its members' messages. */
enum rc_relay {
  RC_RELAY_NONE = 0,   /* they become RC_EV_MESSAGE events */
  RC_RELAY_ALL = 1,    /* the loop forwards each to every member, no event */
  RC_RELAY_OTHERS = 2, /* the same, to every member but the sender */
};

/* A new room id (never 0, never reused) whose mode (enum rc_relay) is fixed
 * here, for its whole life: the id carries it (its low 2 bits), so the loop
 * gives every incarnation of the room (it exists from its first member on
 * and goes when the last leaves) the same mode, whoever joins first.
 * rc_server_room_new() is rc_server_room_new_relay(s, RC_RELAY_NONE).
 * Returns 0 for a relay that is not an enum rc_relay. */
uint64_t rc_server_room_new(rc_server *s);
uint64_t rc_server_room_new_relay(rc_server *s, int relay);
int rc_server_room_free(rc_server *s, uint64_t room);

/* Adds conn to room. relay must be the room's mode (the one it was made
 * with); a join that asks for another mode is refused with UV_EINVAL. A
 * member of several relay rooms gets each forwarded message once. */
int rc_server_join(rc_server *s, uint64_t conn, uint64_t room, int relay);
int rc_server_leave(rc_server *s, uint64_t conn, uint64_t room);

/* Frames data once into one reference-counted buffer for every open member
 * of room except conn `exclude` (0: none). Publishes that end a wake-up's
 * commands are written at once, with one writev() per member from one
 * iovec shared by the room, to members with nothing queued; the others
 * (and what a socket does not take) queue a reference to the same buffer,
 * written at the end of the loop turn. Either way a member gets its
 * frames in the order they were made. */
int rc_server_publish(rc_server *s, uint64_t room, const void *data, size_t len,
                      int is_text, uint64_t exclude);

/* The same for the members of any of nrooms rooms: a connection in several
 * of them gets the message once. */
int rc_server_broadcast(rc_server *s, const uint64_t *rooms, size_t nrooms,
                        const void *data, size_t len, int is_text,
                        uint64_t exclude);

typedef struct rc_stats {
  uint64_t connections; /* open TCP connections now */
  uint64_t accepted_total;
  uint64_t rooms;
  uint64_t messages_in;
  uint64_t deliveries; /* frames queued to members by publish */
  uint64_t slow_consumer_closes;
  uint64_t parsers; /* frame parsers held now: busy connections only */
  uint64_t writes;  /* write system calls (one may carry many frames) */
  uint64_t wakeups; /* times the loop was woken for commands */
  uint64_t messages_dropped;     /* by drop_oldest, from full queues */
  uint64_t connections_refused;  /* answered 503 at max_connections */
  uint64_t idle_closes;          /* closed with 1001 at idle_timeout */
  uint64_t fragment_closes;      /* messages in too many fragments (1009) */
  uint64_t event_bytes;          /* events waiting for rc_server_poll now */
  uint64_t reads_held;           /* times a client's reading was held because
                                    the events waited past max_event_bytes */
  uint64_t clients;              /* client connections now (counted in
                                    connections too) */
  uint64_t client_connects;      /* client connections started in total */
  uint64_t backplane_up;         /* 1 while both Redis connections are ready */
  uint64_t backplane_published;  /* messages handed to Redis (one per room) */
  uint64_t backplane_received;   /* messages from other servers (or other
                                    programs) taken from subscribed channels */
  uint64_t backplane_reconnects; /* Redis connections re-established */
  uint64_t backplane_buffered;   /* bytes of publishes waiting for Redis now */
  uint64_t backplane_dropped;    /* publishes dropped: the buffer was full */
  uint64_t backplane_channels;   /* room channels subscribed now */
  uint64_t backplane_invalid;    /* messages from Redis that were dropped:
                                    unknown format or invalid UTF-8 text */
  uint64_t backplane_coalesced;  /* messages of rooms with history from
                                    Redis held for a moment, under load, to
                                    share their members' writes with the
                                    next ones */
  uint64_t adopted_total;        /* connections rc_server_adopt() handed over
                                    (counted in accepted_total too) */
  uint64_t deflate_connections;  /* open connections that negotiated
                                    permessage-deflate now */
  uint64_t messages_deflated;    /* messages compressed (once each, however
                                    many members got the compressed frame) */
  uint64_t messages_inflated;    /* compressed messages received */
  uint64_t tls_connections;      /* accepted connections past their TLS
                                    handshake, open now */
  uint64_t tls_handshakes;       /* TLS handshakes completed in total */
  uint64_t tls_handshake_failures; /* TLS handshakes begun that did not
                                    complete: refused (no certificate,
                                    garbage, plain HTTP), abandoned by the
                                    client, or past handshake_timeout */
  uint64_t bytes_out;              /* bytes the sockets took, counted per write
                                      (frames, HTTP answers, TLS records) */
  uint64_t rooms_open;             /* rooms with members on this server now */
  /* Handshakes the core refused, by reason (those the embedder refuses
   * with rc_server_respond are the embedder's to count). */
  uint64_t refused_bad_request;   /* 400: malformed head or upgrade */
  uint64_t refused_method;        /* 405: an upgrade not asked with GET */
  uint64_t refused_version;       /* 426: Sec-WebSocket-Version not 13 */
  uint64_t refused_not_websocket; /* 426: plain HTTP without http_requests */
  uint64_t refused_too_large;     /* 431: past max_header_bytes/headers */
  uint64_t refused_shutting_down; /* 503 or closed: the server was stopping */
  uint64_t refused_timeout;       /* no head within handshake_timeout
                                     (closed), or the embedder did not
                                     answer within it (503) */
} rc_stats;

void rc_server_stats(rc_server *s, rc_stats *out);

/* --- the Redis backplane (rc_backplane.c) --------------------------------
 *
 * With cfg.backplane_host set, the loop keeps two connections to Redis
 * (one subscribed, one for PUBLISH and rc_server_redis) and reconnects
 * them with backoff when they fail. A named room's channel is the prefix
 * (escaped), "|" and the name: the loop SUBSCRIBEs it when the room's first
 * local member joins and UNSUBSCRIBEs when the last one leaves.
 * rc_server_publish(), rc_server_broadcast() and relay rooms deliver to the
 * local members at once and PUBLISH the message once, tagged with this server's
 * id and a sequence number; a server skips its own messages and delivers the
 * others' to its local members, each member once. While either connection
 * is down (backplane_up is 0), publishes wait in a buffer of
 * cfg.backplane_buffer bytes; what does not fit is dropped and counted.
 *
 * On a Redis Cluster (cfg.backplane_cluster) the same runs per shard: the
 * loop learns the map from the seed nodes, keeps two connections to each
 * master that owns slots, and SSUBSCRIBEs and SPUBLISHes each room on the
 * shard that owns its channel's slot (the channel starts with the room's
 * tag, rc_slot.h), following slot moves and failovers; backplane_up is 1
 * while every such shard is reachable. A copy of a message for several
 * rooms goes to each room's shard, and order holds per publisher and
 * room. rc_server_redis sends a command to the shard of its first key (a
 * script's first KEYS, else its first argument), or, without one, to any
 * shard. */

/* 0 when seeds is a cluster's list as cfg.backplane_host takes it with
 * backplane_cluster ("host:port[,host:port...]", "[v6]:port", each port
 * in 1..65535), else UV_EINVAL: rc_server_new() refuses it. */
int rc_backplane_seeds_check(const char *seeds);

/* This server's id: random, made by rc_server_new(). */
uint64_t rc_server_id(const rc_server *s);

/* TLS to Redis (rediss://), under redis-py's names: both connections go
 * through TLS 1.2 or later (csrc/loop/rc_redis.c). By default Redis's
 * certificate must lead to a root of ca_certs (or of the system's store)
 * and name backplane_host; a handshake that fails costs the connection
 * and a backoff, and the RC_EV_BACKPLANE event says why. */
enum {
  RC_BP_TLS_VERIFY = 0,  /* the chain and the name (the default) */
  RC_BP_TLS_NO_NAME = 1, /* the chain only (ssl_check_hostname=false) */
  RC_BP_TLS_NO_CHECK = 2 /* nothing: encrypted, but anyone on the path can
                            pose as Redis (ssl_cert_reqs=none) */
};
typedef struct rc_backplane_tls {
  int checks;           /* RC_BP_TLS_* */
  const char *ca_certs; /* PEM roots, or NULL: the system's */
  const char *certfile; /* the client's certificate chain (PEM), for a
                           Redis that asks for one; or NULL */
  const char *keyfile;  /* its unencrypted PEM key; NULL: in certfile */
} rc_backplane_tls;

/* Reads and checks the files of tls: 0, or -1 with a reason naming the
 * file in err. Any thread; nothing is kept. */
int rc_backplane_tls_check(const rc_backplane_tls *tls, char *err,
                           size_t errlen);
/* The backplane of s connects through TLS with tls (read now): after
 * rc_server_new(), before rc_server_start(). 0, or -1 with the reason in
 * err (no backplane, already started, a file as rc_backplane_tls_check). */
int rc_server_backplane_tls(rc_server *s, const rc_backplane_tls *tls,
                            char *err, size_t errlen);

/* Names room (a name is 1 to RC_ROOM_NAME_MAX bytes without NUL). A room
 * is named once; a name held by another room of this server is ignored.
 * Without a backplane names are accepted and unused. The bound leaves an
 * embedder room for a namespace in front of the 1024 bytes its users may
 * pick (roomcast's Python layer keeps App rooms and Room(name=...) apart
 * that way). */
#define RC_ROOM_NAME_MAX (1024 + 32)
int rc_server_room_name(rc_server *s, uint64_t room, const char *name,
                        size_t len);

/* Sends a command (argc arguments) on the backplane's command connection;
 * the reply comes back as an RC_EV_REDIS event whose conn is token.
 * UV_EINVAL without a backplane or for a command that would change the
 * connection's state (SUBSCRIBE, MONITOR, SELECT, AUTH, QUIT, ...). */
int rc_server_redis(rc_server *s, uint64_t token, int argc, const char **argv,
                    const size_t *argvlen);

/* --- joining a room whose history Redis keeps (rc_backplane.c) ----------
 *
 * Messages of such a room are published by a Redis script (version 2 of
 * rc_bpwire.h: each carries its offset) and reach every server, the
 * publisher's too, in offset order. A connection that joins it after a
 * disconnection must get what it missed from the history, then the live
 * messages, with neither a gap nor a duplicate between them:
 *
 *   rc_server_recover_begin(conn, room): the room (named) is subscribed
 *     even with no member here, and from the moment the subscription is
 *     active every message of the room is kept for conn. An RC_EV_RECOVER
 *     event (conn; code 1; data: room) says it is active: the history may
 *     be read now (rc_server_redis), and whatever it lacks will be kept.
 *     Code 0: there is no backplane or the room has no name.
 *   rc_server_recover_end(conn, room, ...): sends conn `first` (if not
 *     NULL), the n messages read (as Redis holds them: version-2
 *     envelopes, in order), `after`, then the kept messages past offset
 *     `last` (the last offset the history covered), and joins conn to
 *     room: all in one step of the loop. The kept messages count against
 *     max_queue_bytes: past it the connection is closed as a slow
 *     consumer. UV_EINVAL if a message is not a version-2 envelope or is
 *     over max_message_size (nothing is done).
 *   rc_server_recover_cancel(conn, room): ends it without joining.
 * Every begin must be followed by an end or a cancel. */
int rc_server_recover_begin(rc_server *s, uint64_t conn, uint64_t room);
int rc_server_recover_end(rc_server *s, uint64_t conn, uint64_t room,
                          const char *first, size_t first_len,
                          const void *const *msgs, const size_t *lens, size_t n,
                          const char *after, size_t after_len, uint64_t last);
int rc_server_recover_cancel(rc_server *s, uint64_t conn, uint64_t room);

#endif
