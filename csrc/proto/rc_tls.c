/* rc_tls.c - the TLS filter (see rc_tls.h) on OpenSSL 1.1.1 or 3.x.
 *
 * Each filter is an SSL object whose read and write BIOs are memory BIOs:
 * the socket's bytes are written into the read BIO, and the records OpenSSL
 * produces collect in the write BIO until the caller takes them. OpenSSL's
 * error queue is per thread; every operation clears it first, so a reason
 * always belongs to the call that failed.
 */
#define _GNU_SOURCE /* inet_pton */
#include "proto/rc_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct rc_tls_ctx {
  SSL_CTX *ctx;
  int verify;
};

struct rc_tls {
  SSL *ssl;
  BIO *rbio; /* ciphertext in: owned by ssl */
  BIO *wbio; /* ciphertext out: owned by ssl */
  int role;
  int verify; /* the context checks certificates */
  char err[192];
};

/* The reason of the newest error on this thread's queue, or fallback. */
static void queue_reason(char *out, size_t cap, const char *fallback) {
  unsigned long e, last = 0;
  while ((e = ERR_get_error()) != 0)
    last = e;
  const char *r = last != 0 ? ERR_reason_error_string(last) : NULL;
  (void)snprintf(out, cap, "TLS: %s", r != NULL ? r : fallback);
}

rc_tls_ctx *rc_tls_ctx_client(int verify, const char *cafile, char *err,
                              size_t errlen) {
  ERR_clear_error();
  rc_tls_ctx *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    (void)snprintf(err, errlen, "TLS: out of memory");
    return NULL;
  }
  c->verify = verify != 0;
  c->ctx = SSL_CTX_new(TLS_client_method());
  if (c->ctx == NULL ||
      SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION) != 1) {
    queue_reason(err, errlen, "cannot make a context");
    rc_tls_ctx_free(c);
    return NULL;
  }
  SSL_CTX_set_verify(c->ctx, c->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                     NULL);
  if (cafile != NULL) {
    /* OpenSSL's own reason for a missing file is "system lib". */
    FILE *f = fopen(cafile, "r");
    if (f == NULL) {
      (void)snprintf(err, errlen, "TLS: cannot load CA file %s (%s)", cafile,
                     strerror(errno));
      rc_tls_ctx_free(c);
      return NULL;
    }
    (void)fclose(f);
  }
  if (c->verify || cafile != NULL) {
    int ok = cafile != NULL
                 ? SSL_CTX_load_verify_locations(c->ctx, cafile, NULL)
                 : SSL_CTX_set_default_verify_paths(c->ctx);
    if (ok != 1) {
      char why[128];
      queue_reason(why, sizeof why, "unreadable");
      (void)snprintf(err, errlen, "TLS: cannot load CA file %s (%s)",
                     cafile != NULL ? cafile : "(system default)", why + 5);
      rc_tls_ctx_free(c);
      return NULL;
    }
  }
  /* Writes of any size into the memory BIO complete at once; a buffer that
   * moves between retries is then never an issue. */
  (void)SSL_CTX_set_mode(c->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  return c;
}

void rc_tls_ctx_free(rc_tls_ctx *c) {
  if (c == NULL)
    return;
  SSL_CTX_free(c->ctx);
  free(c);
}

int rc_tls_ctx_verifies(const rc_tls_ctx *c) { return c->verify; }

static int is_address(const char *name) {
  unsigned char buf[16];
  return inet_pton(AF_INET, name, buf) == 1 ||
         inet_pton(AF_INET6, name, buf) == 1;
}

rc_tls *rc_tls_new(rc_tls_ctx *ctx, int role, const char *server_name) {
  ERR_clear_error();
  rc_tls *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return NULL;
  t->role = role;
  t->verify = ctx->verify;
  t->ssl = SSL_new(ctx->ctx);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    SSL_free(t->ssl);
    free(t);
    return NULL;
  }
  /* An empty read BIO means "more later", not end of file. */
  BIO_set_mem_eof_return(t->rbio, -1);
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  if (role == RC_TLS_SERVER) {
    SSL_set_accept_state(t->ssl);
    return t;
  }
  SSL_set_connect_state(t->ssl);
  /* Verifying a chain without a name to check would accept any host's
   * certificate: refused, whatever the caller let through. */
  if (ctx->verify && (server_name == NULL || server_name[0] == '\0')) {
    rc_tls_free(t);
    return NULL;
  }
  if (server_name != NULL && server_name[0] != '\0') {
    int literal = is_address(server_name);
    int ok = 1;
    if (!literal)
      ok = SSL_set_tlsext_host_name(t->ssl, server_name) == 1;
    if (ok && ctx->verify) {
      if (literal)
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl),
                                           server_name) == 1;
      else
        ok = SSL_set1_host(t->ssl, server_name) == 1;
    }
    if (!ok) {
      rc_tls_free(t);
      return NULL;
    }
  }
  return t;
}

void rc_tls_free(rc_tls *t) {
  if (t == NULL)
    return;
  SSL_free(t->ssl); /* frees both BIOs */
  free(t);
}

int rc_tls_feed(rc_tls *t, const void *data, size_t len) {
  ERR_clear_error();
  while (len > 0) {
    int chunk = len > (1u << 30) ? 1 << 30 : (int)len;
    int n = BIO_write(t->rbio, data, chunk);
    if (n <= 0)
      return RC_TLS_E_NOMEM;
    data = (const char *)data + n;
    len -= (size_t)n;
  }
  return 0;
}

/* Fills t->err for a failed SSL_* call whose result was r. */
static int failed(rc_tls *t, int r) {
  int e = SSL_get_error(t->ssl, r);
  /* Without verification OpenSSL still records what it found wrong with
   * the chain; that is not why anything failed then. */
  long v = t->verify ? SSL_get_verify_result(t->ssl) : X509_V_OK;
  if (v != X509_V_OK) {
    (void)snprintf(t->err, sizeof t->err, "TLS: certificate verify failed: %s",
                   X509_verify_cert_error_string(v));
    ERR_clear_error();
    return RC_TLS_E_FAILED;
  }
  if (e == SSL_ERROR_ZERO_RETURN) {
    (void)snprintf(t->err, sizeof t->err, "TLS: closed by the peer");
    return RC_TLS_E_CLOSED;
  }
  queue_reason(t->err, sizeof t->err,
               e == SSL_ERROR_SYSCALL ? "unexpected end of the stream"
                                      : "protocol error");
  return RC_TLS_E_FAILED;
}

int rc_tls_handshake(rc_tls *t) {
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  if (r == 1)
    return 1;
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return 0;
  return failed(t, r);
}

long rc_tls_read(rc_tls *t, void *buf, size_t cap) {
  ERR_clear_error();
  int want = cap > (1u << 30) ? 1 << 30 : (int)cap;
  int r = SSL_read(t->ssl, buf, want);
  if (r > 0)
    return r;
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return 0;
  return failed(t, r);
}

int rc_tls_write(rc_tls *t, const void *data, size_t len) {
  ERR_clear_error();
  while (len > 0) {
    int chunk = len > (1u << 30) ? 1 << 30 : (int)len;
    int r = SSL_write(t->ssl, data, chunk);
    if (r <= 0)
      return failed(t, r);
    data = (const char *)data + r;
    len -= (size_t)r;
  }
  return 0;
}

int rc_tls_shutdown(rc_tls *t) {
  ERR_clear_error();
  /* 0: our close_notify is queued and the peer's not seen yet, which is
   * all that is wanted here; the TCP half-close follows. */
  int r = SSL_shutdown(t->ssl);
  return r >= 0 ? 0 : failed(t, r);
}

size_t rc_tls_pending(const rc_tls *t) { return BIO_ctrl_pending(t->wbio); }

size_t rc_tls_take(rc_tls *t, void *buf, size_t cap) {
  int want = cap > (1u << 30) ? 1 << 30 : (int)cap;
  int n = BIO_read(t->wbio, buf, want);
  return n > 0 ? (size_t)n : 0;
}

const char *rc_tls_error(const rc_tls *t) { return t->err; }

int rc_tls_random(void *buf, size_t n) {
  return RAND_bytes(buf, (int)n) == 1 ? 0 : -1;
}
