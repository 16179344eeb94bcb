/* rc_tls.h - TLS as a filter between a socket and the WebSocket layer.
 *
 * Sans-I/O, on OpenSSL with two memory BIOs: the caller feeds the bytes it
 * read from the socket (rc_tls_feed), drives the handshake, reads the
 * plaintext out (rc_tls_read), encrypts what it wants to send
 * (rc_tls_write) and sends whatever ciphertext is pending (rc_tls_take).
 * Nothing here touches a socket or a loop, so the same filter serves either
 * role: the core's client connections use RC_TLS_CLIENT; a TLS server would
 * use RC_TLS_SERVER with a context holding its certificate.
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
void rc_tls_ctx_free(rc_tls_ctx *ctx);
int rc_tls_ctx_verifies(const rc_tls_ctx *ctx);

/* A filter for one connection. For RC_TLS_CLIENT, server_name is sent as
 * SNI (unless it is an address literal, RFC 6066 3) and, when the context
 * verifies, must match the certificate (a DNS name, or an IP address
 * against the certificate's IP entries). Returns NULL when memory runs
 * out, or for a verifying client without a server_name. */
rc_tls *rc_tls_new(rc_tls_ctx *ctx, int role, const char *server_name);
void rc_tls_free(rc_tls *t);

/* Ciphertext read from the socket. */
int rc_tls_feed(rc_tls *t, const void *data, size_t len);

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

/* Why the last call failed ("TLS: certificate verify failed: hostname
 * mismatch"), or "". */
const char *rc_tls_error(const rc_tls *t);

/* n bytes from OpenSSL's CSPRNG (masking keys, handshake keys). Returns 0,
 * or -1 when the generator is not seeded. Any thread. */
int rc_tls_random(void *buf, size_t n);

#endif
