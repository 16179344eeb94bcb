/* rc_tls.h - TLS as a filter between a socket and the WebSocket layer.
 *
 * Sans-I/O, on OpenSSL with a BIO of our own on each side: the caller feeds
 * the bytes it read from the socket (rc_tls_feed), drives the handshake,
 * reads the plaintext out (rc_tls_read), encrypts what it wants to send
 * (rc_tls_write) and sends whatever ciphertext is pending (rc_tls_take, or
 * rc_tls_take_block without a copy). Nothing here touches a socket or a
 * loop, so the same filter serves either role: the core's client
 * connections use RC_TLS_CLIENT with a client context, the server's
 * accepted connections RC_TLS_SERVER with a server context (its
 * certificate, rc_tls_ctx_server).
 *
 * An idle filter holds no buffer: what was fed is freed once read, the
 * ciphertext block once taken, and OpenSSL's own record buffers are
 * released between records (SSL_MODE_RELEASE_BUFFERS).
 *
 * A context (certificate checks, trust store) is shared by the connections
 * made with it; a filter belongs to one connection and one thread at a
 * time. Functions return 0 or a negative RC_TLS_E_* code; rc_tls_error()
 * then says why, prefixed with "TLS: ".
 */
#ifndef RC_TLS_H
#define RC_TLS_H

#include <stddef.h>

typedef struct rc_tls_ctx rc_tls_ctx;
typedef struct rc_tls rc_tls;

enum rc_tls_role { RC_TLS_CLIENT = 0, RC_TLS_SERVER = 1 };

enum {
  RC_TLS_E_FAILED = -1, /* handshake or record error: see rc_tls_error() */
  RC_TLS_E_CLOSED = -2, /* the peer sent close_notify */
  RC_TLS_E_NOMEM = -3,
};

/* A client context. verify != 0: the server's certificate chain must lead
 * to a trusted root and name the server (checked per filter, see
 * rc_tls_new). cafile: a PEM file of trusted roots, or NULL for the
 * system's default paths (which honour SSL_CERT_FILE and SSL_CERT_DIR).
 * TLS 1.2 or later. Returns NULL and a reason in err when the context
 * cannot be made (for example an unreadable cafile). */
rc_tls_ctx *rc_tls_ctx_client(int verify, const char *cafile, char *err,
                              size_t errlen);
/* The same with each check chosen, and a certificate of the client's own
 * (a Redis that asks for one: rc_redis.c). */
typedef struct rc_tls_client_opts {
  int verify;           /* the server's chain must lead to a trusted root */
  int check_name;       /* and the certificate must name the server (only
                           with verify; rc_tls_new's server_name) */
  const char *cafile;   /* PEM roots, or NULL: the system's */
  const char *certfile; /* the client's PEM certificate chain, or NULL */
  const char *keyfile;  /* its unencrypted PEM key; NULL: in certfile */
} rc_tls_client_opts;
/* NULL and the reason in err, naming the file: "ssl_keyfile k.pem does not
 * match ssl_certfile c.pem". */
rc_tls_ctx *rc_tls_ctx_client_opts(const rc_tls_client_opts *o, char *err,
                                   size_t errlen);
/* What a server context is made of: uvicorn's ssl_* options. */
enum {
  RC_TLS_CERT_NONE = 0,     /* no client certificate asked for */
  RC_TLS_CERT_OPTIONAL = 1, /* asked for; one sent must be valid */
  RC_TLS_CERT_REQUIRED = 2, /* a client without a valid one is refused */
};

typedef struct rc_tls_server_opts {
  const char *certfile; /* PEM: the certificate, then its chain */
  const char *keyfile;  /* PEM private key; NULL: it is in certfile */
  const char *password; /* of an encrypted key, or NULL */
  const char *ca_certs; /* PEM roots client certificates must lead to */
  int cert_reqs;        /* RC_TLS_CERT_*; needs ca_certs unless NONE */
} rc_tls_server_opts;

/* A server context: the certificate chain and key read now (an error
 * names the file and what is wrong with it: "ssl_keyfile k.pem does not
 * match ssl_certfile c.pem"), TLS 1.2 or later with OpenSSL's default
 * ciphers, ALPN answering "http/1.1" when the client offers it, session
 * resumption (a server cache for TLS 1.2, tickets). Returns NULL and the
 * reason in err. Any thread; a filter made with it keeps what it needs
 * when the context is freed (a reload frees the old one at once). */
rc_tls_ctx *rc_tls_ctx_server(const rc_tls_server_opts *o, char *err,
                              size_t errlen);
void rc_tls_ctx_free(rc_tls_ctx *ctx);
int rc_tls_ctx_verifies(const rc_tls_ctx *ctx);

/* A filter for one connection. For RC_TLS_CLIENT, server_name is sent as
 * SNI (unless it is an address literal, RFC 6066 3) and, when the context
 * checks names, must match the certificate (a DNS name, or an IP address
 * against the certificate's IP entries). Returns NULL when memory runs
 * out, or for a name-checking client without a server_name. */
rc_tls *rc_tls_new(rc_tls_ctx *ctx, int role, const char *server_name);
void rc_tls_free(rc_tls *t);

/* Ciphertext read from the socket: copied, and freed once read. */
int rc_tls_feed(rc_tls *t, const void *data, size_t len);

/* Bytes fed and not read yet (a partial record, or records behind the
 * ones the caller has read so far). */
size_t rc_tls_unread(const rc_tls *t);

/* Advances the handshake: 1 once it is complete, 0 while it needs more
 * input (send what rc_tls_pending() reports first), or RC_TLS_E_FAILED. */
int rc_tls_handshake(rc_tls *t);

/* Decrypted bytes into buf: how many (> 0), 0 when none can be had until
 * more is fed, RC_TLS_E_CLOSED or RC_TLS_E_FAILED. */
long rc_tls_read(rc_tls *t, void *buf, size_t cap);

/* Encrypts len bytes (after the handshake); the records wait in
 * rc_tls_pending(). */
int rc_tls_write(rc_tls *t, const void *data, size_t len);

/* Queues close_notify. */
int rc_tls_shutdown(rc_tls *t);

/* Ciphertext waiting to be sent, and taking up to cap bytes of it. */
size_t rc_tls_pending(const rc_tls *t);
size_t rc_tls_take(rc_tls *t, void *buf, size_t cap);

/* The ciphertext is collected in one malloc'd block with headroom bytes
 * before it (set once, before any output: room for the caller's header,
 * so the block can become the caller's buffer without a copy).
 * rc_tls_reserve makes room for n more bytes at once (the caller knows
 * what it is about to encrypt); rc_tls_take_block hands the whole block
 * over (*len bytes of ciphertext after the headroom, shrunk to fit; the
 * caller frees it with free()), or NULL when nothing is pending. */
void rc_tls_set_headroom(rc_tls *t, size_t headroom);
int rc_tls_reserve(rc_tls *t, size_t n);
void *rc_tls_take_block(rc_tls *t, size_t *len);

/* 1 once the handshake is complete. */
int rc_tls_ready(const rc_tls *t);

/* After the handshake, what ASGI's TLS extension reports: the protocol
 * version (0x0303 TLS 1.2, 0x0304 TLS 1.3), the cipher suite's IANA
 * number, and the peer's certificate: its subject as RFC 4514 text and
 * the chain it sent, leaf first, as PEM. rc_tls_peer_subject writes at
 * most cap bytes with a NUL and returns the length (0: no certificate).
 * rc_tls_peer_chain_pem returns a malloc'd string (*len bytes; NULL and 0
 * without a certificate, or when memory is short). */
int rc_tls_version(const rc_tls *t);
int rc_tls_cipher_suite(const rc_tls *t);
size_t rc_tls_peer_subject(const rc_tls *t, char *buf, size_t cap);
char *rc_tls_peer_chain_pem(const rc_tls *t, size_t *len);

/* Why the last call failed ("TLS: certificate verify failed: hostname
 * mismatch"), or "". */
const char *rc_tls_error(const rc_tls *t);

/* n bytes from OpenSSL's CSPRNG (masking keys, handshake keys). Returns 0,
 * or -1 when the generator is not seeded. Any thread. */
int rc_tls_random(void *buf, size_t n);

#endif
