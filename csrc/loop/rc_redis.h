/* rc_redis.h - one connection to Redis on the core's libuv loop: the seam
 * between hiredis's reply reader and libuv's streams.
 *
 * What it owns: the TCP stream (a new one per attempt), the name lookup,
 * the reader, the ring of commands waiting for their replies, the connect
 * deadline and the reconnection with backoff. What it does not know: what
 * the commands mean (csrc/proto/rc_bpwire.c writes them, the owner sends
 * them) nor what a push says (the owner's push callback reads it).
 *
 * Only hiredis's redisReader is used, not its async layer: that layer
 * (0.14) asserts on a reply it did not expect (an extra reply, a short
 * subscribe array, a non-string first element), which took the whole
 * process down with a broken or hostile Redis. Here replies answer the
 * commands in the order they were sent; a reply when none waits goes to
 * the push callback (the subscriber's messages), or, without one, ends the
 * connection. So do a reader error, an array longer than the bound (checked
 * before hiredis allocates its table: '*2147483647' would take 2 GB+ at
 * once) and a reply longer than reply_max: a bad Redis costs the
 * connection, never the process.
 *
 * The contract with the owner (ops):
 *   - setup(l) runs once the TCP connection is made and queues the first
 *     commands (AUTH, SELECT, SUBSCRIBE, PING...). The owner calls
 *     rc__redis_ready(l) when their answers say the connection is usable;
 *     until then a deadline (RC__REDIS_CONNECT_MS) runs. Returns 0 or -1
 *     (the connection ends).
 *   - ready(l, again) follows rc__redis_ready; again: not the first time.
 *   - push(l, r) gets each reply no command waits for; r is freed when it
 *     returns. NULL push: such a reply ends the connection.
 *   - lost(l, was_ready) runs once per connection that ends, after every
 *     waiting command's callback had NULL; l->why says why. The next
 *     attempt is already decided: at once after a healthy connection
 *     (was_ready), after a backoff (100 ms doubling to 5 s, jittered)
 *     after a failure or a protocol violation; none once stopped.
 *   Every callback may call rc__redis_drop (the seam checks, after each
 *   callback, whether the connection it was reading is still the link's).
 *
 * TLS (rediss://): with l->tls set (a client context of rc_tls.h, the
 * owner's, set before rc__redis_start) each connection goes through a
 * filter of its own over the TCP stream; setup runs once the handshake is
 * complete, and a handshake that fails (an untrusted certificate, the
 * wrong name, a peer that does not speak TLS) costs the connection and a
 * backoff, as a protocol violation does. The server's name checked is
 * host, as given.
 *
 * Lifetime: the rc_redis is embedded in its owner, which calls
 * rc__redis_init, rc__redis_start (on the loop, before it runs),
 * rc__redis_stop (no further attempt: closes the timer) and, after the loop
 * has ended, rc__redis_free. A connection's memory is freed in its stream's
 * close callback: the link may have a new one by then. Loop thread only. */
#ifndef RC_REDIS_H
#define RC_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#define RC__REDIS_CONNECT_MS 5000 /* connect, setup and its answer */

struct rc_redis;
struct rc__redis_sock;

/* What a command's reply goes to; reply is NULL when the connection ended
 * before it came. */
typedef void rc__redis_reply_cb(struct rc_redis *l, redisReply *reply,
                                void *priv);

typedef struct rc__redis_ops {
  int (*setup)(struct rc_redis *l);
  void (*ready)(struct rc_redis *l, int again);
  void (*push)(struct rc_redis *l, redisReply *r);
  void (*lost)(struct rc_redis *l, int was_ready);
} rc__redis_ops;

typedef struct rc__redis_waiter {
  rc__redis_reply_cb *fn;
  void *priv;
} rc__redis_waiter;

enum {
  RC__REDIS_DOWN,
  RC__REDIS_RESOLVING,
  RC__REDIS_CONNECTING,
  RC__REDIS_READY
};

typedef struct rc_redis {
  void *data; /* the owner's */
  /* set by rc__redis_init, read only */
  uv_loop_t *loop;
  const char *host; /* the owner's, outlives the link */
  int port;
  const rc__redis_ops *ops;
  struct rc_tls_ctx *tls; /* NULL: plain TCP; else the owner's, set before
                             rc__redis_start */
  size_t max_elements;    /* of an array in a reply */
  size_t reply_max;       /* bytes; a longer reply ends the connection */
  /* state */
  struct rc__redis_sock *sock; /* NULL while down or resolving */
  uv_timer_t timer;            /* the next attempt, or the connect deadline */
  uv_getaddrinfo_t gai;
  uint8_t state; /* RC__REDIS_* */
  uint8_t ever_ready;
  uint8_t draining; /* disconnect once nothing waits */
  uint8_t bad;      /* the connection ends for a protocol violation */
  uint8_t stopped;
  uint8_t broken;       /* a TLS record could not be written: the connection
                           ends at the next turn (rc__redis_send cannot end it) */
  unsigned attempt;     /* failures since the last success */
  uint64_t rng;         /* xorshift64: the backoff's jitter */
  rc__redis_waiter *wq; /* a ring: the commands waiting for replies */
  uint32_t whead, wlen, wcap;
  char why[160]; /* what made the last connection end */
} rc_redis;

void rc__redis_init(rc_redis *l, uv_loop_t *loop, const char *host, int port,
                    const rc__redis_ops *ops, size_t max_elements,
                    size_t reply_max, uint64_t seed);
void rc__redis_start(rc_redis *l); /* the first attempt, at once */
/* No further attempt: closes the timer, cancels a lookup. The connection,
 * if any, stays until rc__redis_drop or rc__redis_drain ends it. */
void rc__redis_stop(rc_redis *l);
void rc__redis_free(rc_redis *l); /* after the loop has ended */

static inline int rc__redis_is_ready(const rc_redis *l) {
  return l->state == RC__REDIS_READY;
}
static inline int rc__redis_connected(const rc_redis *l) {
  return l->sock != NULL;
}

/* Writes data (malloc'ed, len bytes) and, when fn is set, waits for its
 * reply in order. 0: data is the link's now; -1: the caller keeps it
 * (not connected, or out of memory). */
int rc__redis_send(rc_redis *l, char *data, size_t len, rc__redis_reply_cb *fn,
                   void *priv);
/* rc__redis_send of a command given as arguments (lens NULL: C strings).
 * 0 or -1. */
int rc__redis_command(rc_redis *l, int argc, const char **argv,
                      const size_t *lens, rc__redis_reply_cb *fn, void *priv);
/* The setup is answered: the connection is ready (ops->ready follows). */
void rc__redis_ready(rc_redis *l);
/* Ends the connection with reason why; ops->lost follows at once. No-op
 * when not connected. */
void rc__redis_drop(rc_redis *l, const char *why);
/* The same for a Redis that broke the protocol: the next attempt waits its
 * backoff, as after a failed connection. */
void rc__redis_drop_bad(rc_redis *l, const char *why);
/* Ends the connection once no command waits for a reply (at once when none
 * does). */
void rc__redis_drain(rc_redis *l);

#endif
