/* rc_tls.c - the TLS filter (see rc_tls.h) on OpenSSL 1.1.1 or 3.x.
 *
 * Each filter is an SSL object whose one BIO (read and write side) is ours
 * (filter_bio): what the socket gave is copied into t->in and read from
 * there, and the records OpenSSL produces are appended to t->out, one
 * block the caller takes whole. A memory BIO would keep the largest size
 * it ever held for the connection's life; these buffers go as soon as
 * they are empty, so thousands of idle connections hold none. OpenSSL's
 * error queue is per thread; every operation clears it first, so a reason
 * always belongs to the call that failed.
 */
#define _GNU_SOURCE /* inet_pton */
#include "proto/rc_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#define peer_certificate SSL_get1_peer_certificate
#else
#define peer_certificate SSL_get_peer_certificate
#endif

struct rc_tls_ctx {
  SSL_CTX *ctx;
  int verify;
  int check_name; /* a client's: the certificate must name the server */
};

struct rc_tls {
  SSL *ssl; /* owns the BIO */
  int role;
  int verify; /* the context checks certificates */
  /* ciphertext fed, read from in[in_off..in_len); freed once read */
  uint8_t *in;
  size_t in_off, in_len;
  /* ciphertext made: out[headroom..headroom + out_len) of out_cap */
  uint8_t *out;
  size_t out_len, out_cap, headroom;
  char err[192];
};

/* --- the filter's BIO: t->in and t->out ------------------------------------
 */

static int out_grow(rc_tls *t, size_t need) {
  if (t->out != NULL && t->out_cap - t->out_len >= need)
    return 0;
  size_t cap = t->out_cap * 2;
  if (cap < t->out_len + need)
    cap = t->out_len + need;
  if (cap < 1024)
    cap = 1024;
  uint8_t *o = realloc(t->out, t->headroom + cap);
  if (o == NULL)
    return -1;
  t->out = o;
  t->out_cap = cap;
  return 0;
}

static int bio_write(BIO *b, const char *data, int len) {
  rc_tls *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (len <= 0)
    return 0;
  if (out_grow(t, (size_t)len) != 0)
    return -1;
  memcpy(t->out + t->headroom + t->out_len, data, (size_t)len);
  t->out_len += (size_t)len;
  return len;
}

static int bio_read(BIO *b, char *buf, int cap) {
  rc_tls *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  size_t left = t->in_len - t->in_off;
  if (left == 0) {
    BIO_set_retry_read(b); /* more later, not the end of the stream */
    return -1;
  }
  size_t n = cap > 0 && (size_t)cap < left ? (size_t)cap : left;
  if (cap <= 0)
    return 0;
  memcpy(buf, t->in + t->in_off, n);
  t->in_off += n;
  if (t->in_off == t->in_len) {
    free(t->in);
    t->in = NULL;
    t->in_off = t->in_len = 0;
  }
  return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)num;
  (void)ptr;
  rc_tls *t = BIO_get_data(b);
  switch (cmd) {
  case BIO_CTRL_FLUSH:
    return 1;
  case BIO_CTRL_PENDING:
    return (long)(t->in_len - t->in_off);
  case BIO_CTRL_WPENDING:
    return (long)t->out_len;
  default:
    return 0;
  }
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static BIO_METHOD *filter_method;
static void make_filter_method(void) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                               "roomcast filter");
  if (m == NULL || BIO_meth_set_write(m, bio_write) != 1 ||
      BIO_meth_set_read(m, bio_read) != 1 ||
      BIO_meth_set_ctrl(m, bio_ctrl) != 1 ||
      BIO_meth_set_create(m, bio_create) != 1) {
    BIO_meth_free(m);
    return;
  }
  filter_method = m;
}

static BIO *filter_bio(rc_tls *t) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  if (pthread_once(&once, make_filter_method) != 0 || filter_method == NULL)
    return NULL;
  BIO *b = BIO_new(filter_method);
  if (b != NULL)
    BIO_set_data(b, t);
  return b;
}

/* The reason of the newest error on this thread's queue, or fallback. */
static void queue_reason(char *out, size_t cap, const char *fallback) {
  unsigned long e, last = 0;
  while ((e = ERR_get_error()) != 0)
    last = e;
  const char *r = last != 0 ? ERR_reason_error_string(last) : NULL;
  (void)snprintf(out, cap, "TLS: %s", r != NULL ? r : fallback);
}

/* An encrypted key without a password must fail, not prompt on the
 * terminal: OpenSSL's default callback reads one from the tty. */
static int password_cb(char *buf, int size, int rwflag, void *userdata) {
  (void)rwflag;
  const char *pw = userdata;
  if (pw == NULL || size <= 0)
    return 0;
  size_t n = strlen(pw);
  if (n > (size_t)size)
    return -1;
  memcpy(buf, pw, n);
  return (int)n;
}

static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  (void)ssl;
  (void)arg;
  static const unsigned char ours[] = "\x08http/1.1";
  unsigned char *sel;
  if (SSL_select_next_proto(&sel, outlen, ours, sizeof ours - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK; /* h2 only: the upgrade still needs 1.1 */
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

/* 0 when path can be opened for reading, else the reason in err. */
static int readable(const char *what, const char *path, char *err,
                    size_t errlen) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    (void)snprintf(err, errlen, "%s %s: %s", what, path,
                   errno == ENOENT ? "no such file" : strerror(errno));
    return -1;
  }
  (void)fclose(f);
  return 0;
}

/* err = "<what> <path>: <problem> (<OpenSSL's reason>)". */
static void file_problem(char *err, size_t errlen, const char *what,
                         const char *path, const char *problem) {
  char why[160];
  queue_reason(why, sizeof why, "unknown");
  (void)snprintf(err, errlen, "%s %s: %s (%s)", what, path, problem, why + 5);
}

/* Writes of any size into the filter's BIO complete at once, so a buffer
 * that moves between retries is never an issue; OpenSSL's record buffers
 * go between records. */
static void filter_modes(SSL_CTX *ctx) {
  (void)SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS);
}

/* The certificate chain of certfile and the key of keyfile (or certfile)
 * into ctx, checked against each other; 0, or -1 with the reason in err.
 * locked: what to say of a key that cannot be read (it may be encrypted). */
static int use_cert_key(SSL_CTX *ctx, const char *certfile, const char *keyfile,
                        const char *password, const char *locked, char *err,
                        size_t errlen) {
  if (readable("ssl_certfile", certfile, err, errlen) != 0 ||
      readable("ssl_keyfile", keyfile, err, errlen) != 0)
    return -1;
  if (SSL_CTX_use_certificate_chain_file(ctx, certfile) != 1) {
    file_problem(err, errlen, "ssl_certfile", certfile,
                 "not a PEM certificate chain");
    return -1;
  }
  SSL_CTX_set_default_passwd_cb(ctx, password_cb);
  SSL_CTX_set_default_passwd_cb_userdata(ctx, (void *)password);
  int key_ok = SSL_CTX_use_PrivateKey_file(ctx, keyfile, SSL_FILETYPE_PEM);
  /* The password is needed only while the key is read. */
  SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
  unsigned long why = ERR_peek_last_error();
  if (key_ok != 1 && ERR_GET_LIB(why) == ERR_LIB_X509 &&
      ERR_GET_REASON(why) == X509_R_KEY_VALUES_MISMATCH) {
    ERR_clear_error(); /* the key was read: it is another certificate's */
    key_ok = 1;
  }
  if (key_ok != 1) {
    file_problem(err, errlen, "ssl_keyfile", keyfile, locked);
    return -1;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    (void)snprintf(err, errlen, "ssl_keyfile %s does not match ssl_certfile %s",
                   keyfile, certfile);
    return -1;
  }
  return 0;
}

rc_tls_ctx *rc_tls_ctx_client_opts(const rc_tls_client_opts *o, char *err,
                                   size_t errlen) {
  ERR_clear_error();
  rc_tls_ctx *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    (void)snprintf(err, errlen, "TLS: out of memory");
    return NULL;
  }
  c->verify = o->verify != 0;
  c->check_name = c->verify && o->check_name != 0;
  c->ctx = SSL_CTX_new(TLS_client_method());
  if (c->ctx == NULL ||
      SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION) != 1) {
    queue_reason(err, errlen, "cannot make a context");
    goto fail;
  }
  SSL_CTX_set_verify(c->ctx, c->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                     NULL);
  const char *cafile = o->cafile;
  if (cafile != NULL) {
    /* OpenSSL's own reason for a missing file is "system lib". */
    FILE *f = fopen(cafile, "r");
    if (f == NULL) {
      (void)snprintf(err, errlen, "TLS: cannot load CA file %s (%s)", cafile,
                     strerror(errno));
      goto fail;
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
      goto fail;
    }
  }
  if (o->certfile != NULL &&
      use_cert_key(c->ctx, o->certfile,
                   o->keyfile != NULL ? o->keyfile : o->certfile, NULL,
                   "not an unencrypted PEM private key", err, errlen) != 0)
    goto fail;
  if (o->certfile == NULL && o->keyfile != NULL) {
    (void)snprintf(err, errlen, "ssl_keyfile needs ssl_certfile");
    goto fail;
  }
  filter_modes(c->ctx);
  return c;
fail:
  rc_tls_ctx_free(c);
  return NULL;
}

rc_tls_ctx *rc_tls_ctx_client(int verify, const char *cafile, char *err,
                              size_t errlen) {
  rc_tls_client_opts o = {
      .verify = verify, .check_name = verify, .cafile = cafile};
  return rc_tls_ctx_client_opts(&o, err, errlen);
}

rc_tls_ctx *rc_tls_ctx_server(const rc_tls_server_opts *o, char *err,
                              size_t errlen) {
  ERR_clear_error();
  const char *keyfile = o->keyfile != NULL ? o->keyfile : o->certfile;
  if (o->certfile == NULL) {
    (void)snprintf(err, errlen, "ssl_certfile is needed to serve TLS");
    return NULL;
  }
  if (readable("ssl_certfile", o->certfile, err, errlen) != 0 ||
      readable("ssl_keyfile", keyfile, err, errlen) != 0 ||
      (o->ca_certs != NULL &&
       readable("ssl_ca_certs", o->ca_certs, err, errlen) != 0))
    return NULL;
  rc_tls_ctx *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    (void)snprintf(err, errlen, "TLS: out of memory");
    return NULL;
  }
  c->verify = o->cert_reqs != RC_TLS_CERT_NONE;
  c->ctx = SSL_CTX_new(TLS_server_method());
  if (c->ctx == NULL ||
      SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION) != 1) {
    queue_reason(err, errlen, "cannot make a context");
    goto fail;
  }
  if (use_cert_key(c->ctx, o->certfile, keyfile, o->password,
                   o->password != NULL
                       ? "not a PEM private key, or the wrong password"
                       : "not a PEM private key, or encrypted (give "
                         "ssl_keyfile_password)",
                   err, errlen) != 0)
    goto fail;
  if (o->ca_certs != NULL) {
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_certs);
    if (SSL_CTX_load_verify_locations(c->ctx, o->ca_certs, NULL) != 1 ||
        names == NULL) {
      sk_X509_NAME_pop_free(names, X509_NAME_free);
      file_problem(err, errlen, "ssl_ca_certs", o->ca_certs,
                   "no PEM certificate in it");
      goto fail;
    }
    SSL_CTX_set_client_CA_list(c->ctx, names); /* takes names */
  } else if (c->verify && SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
    queue_reason(err, errlen, "cannot load the system's roots");
    goto fail;
  }
  int mode = SSL_VERIFY_NONE;
  if (o->cert_reqs == RC_TLS_CERT_OPTIONAL)
    mode = SSL_VERIFY_PEER;
  else if (o->cert_reqs == RC_TLS_CERT_REQUIRED)
    mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  SSL_CTX_set_verify(c->ctx, mode, NULL);
  /* Resumption: TLS 1.2's cache and tickets, one TLS 1.3 ticket per
   * handshake (a browser uses one); the id context is required once
   * client certificates are checked. */
  static const unsigned char sid[] = "roomcast";
  if (SSL_CTX_set_session_id_context(c->ctx, sid, sizeof sid - 1) != 1 ||
      SSL_CTX_set_num_tickets(c->ctx, 1) != 1) {
    queue_reason(err, errlen, "cannot set up session resumption");
    goto fail;
  }
  (void)SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_SERVER);
  SSL_CTX_set_alpn_select_cb(c->ctx, alpn_select, NULL);
  /* Renegotiation asked by a client costs the server a handshake each. */
  (void)SSL_CTX_set_options(c->ctx, SSL_OP_NO_RENEGOTIATION);
  filter_modes(c->ctx);
  return c;
fail:
  rc_tls_ctx_free(c);
  return NULL;
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
  BIO *b = t->ssl != NULL ? filter_bio(t) : NULL;
  if (b == NULL) {
    SSL_free(t->ssl);
    free(t);
    return NULL;
  }
  SSL_set_bio(t->ssl, b, b); /* one reference, taken by ssl */
  if (role == RC_TLS_SERVER) {
    SSL_set_accept_state(t->ssl);
    return t;
  }
  SSL_set_connect_state(t->ssl);
  /* Verifying a chain without a name to check would accept any host's
   * certificate: refused, whatever the caller let through. */
  if (ctx->check_name && (server_name == NULL || server_name[0] == '\0')) {
    rc_tls_free(t);
    return NULL;
  }
  if (server_name != NULL && server_name[0] != '\0') {
    int literal = is_address(server_name);
    int ok = 1;
    if (!literal)
      ok = SSL_set_tlsext_host_name(t->ssl, server_name) == 1;
    if (ok && ctx->check_name) {
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
  SSL_free(t->ssl); /* frees the BIO */
  free(t->in);
  free(t->out);
  free(t);
}

int rc_tls_feed(rc_tls *t, const void *data, size_t len) {
  if (len == 0)
    return 0;
  size_t left = t->in_len - t->in_off;
  if (left + len < left)
    return RC_TLS_E_NOMEM;
  if (t->in_off > 0) { /* what was read goes first */
    memmove(t->in, t->in + t->in_off, left);
    t->in_off = 0;
    t->in_len = left;
  }
  uint8_t *in = realloc(t->in, left + len);
  if (in == NULL)
    return RC_TLS_E_NOMEM;
  memcpy(in + left, data, len);
  t->in = in;
  t->in_len = left + len;
  return 0;
}

size_t rc_tls_unread(const rc_tls *t) { return t->in_len - t->in_off; }

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
  if (failed(t, r) == RC_TLS_E_CLOSED) {
    /* A close_notify before the handshake completed (OpenSSL answers
     * SSL_ERROR_ZERO_RETURN): no session was made, so the handshake
     * failed; RC_TLS_E_CLOSED is the end of an established session. */
    (void)snprintf(t->err, sizeof t->err,
                   "TLS: closed by the peer before the handshake completed");
  }
  return RC_TLS_E_FAILED;
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

size_t rc_tls_pending(const rc_tls *t) { return t->out_len; }

size_t rc_tls_take(rc_tls *t, void *buf, size_t cap) {
  size_t n = cap < t->out_len ? cap : t->out_len;
  if (n == 0)
    return 0;
  uint8_t *o = t->out + t->headroom;
  memcpy(buf, o, n);
  t->out_len -= n;
  if (t->out_len > 0) {
    memmove(o, o + n, t->out_len);
  } else {
    free(t->out);
    t->out = NULL;
    t->out_cap = 0;
  }
  return n;
}

void rc_tls_set_headroom(rc_tls *t, size_t headroom) {
  if (t->out == NULL)
    t->headroom = headroom;
}

int rc_tls_reserve(rc_tls *t, size_t n) {
  return out_grow(t, n) == 0 ? 0 : RC_TLS_E_NOMEM;
}

void *rc_tls_take_block(rc_tls *t, size_t *len) {
  *len = t->out_len;
  if (t->out_len == 0)
    return NULL;
  uint8_t *o = t->out;
  if (t->out_cap > t->out_len) { /* sized to what it holds */
    uint8_t *fit = realloc(o, t->headroom + t->out_len);
    if (fit != NULL)
      o = fit;
  }
  t->out = NULL;
  t->out_len = t->out_cap = 0;
  return o;
}

int rc_tls_ready(const rc_tls *t) { return SSL_is_init_finished(t->ssl); }

int rc_tls_version(const rc_tls *t) { return SSL_version(t->ssl); }

int rc_tls_cipher_suite(const rc_tls *t) {
  const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);
  return c != NULL ? (int)SSL_CIPHER_get_protocol_id(c) : 0;
}

size_t rc_tls_peer_subject(const rc_tls *t, char *buf, size_t cap) {
  if (cap > 0)
    buf[0] = '\0';
  X509 *x = peer_certificate(t->ssl);
  if (x == NULL)
    return 0;
  BIO *m = BIO_new(BIO_s_mem());
  size_t n = 0;
  if (m != NULL && X509_NAME_print_ex(m, X509_get_subject_name(x), 0,
                                      XN_FLAG_RFC2253) >= 0) {
    char *p;
    long have = BIO_get_mem_data(m, &p);
    n = have > 0 ? (size_t)have : 0;
    if (cap > 0) {
      size_t k = n < cap - 1 ? n : cap - 1;
      memcpy(buf, p, k);
      buf[k] = '\0';
    }
  }
  BIO_free(m);
  X509_free(x);
  ERR_clear_error();
  return n;
}

char *rc_tls_peer_chain_pem(const rc_tls *t, size_t *len) {
  *len = 0;
  /* A server's SSL_get_peer_cert_chain leaves the leaf out. */
  X509 *leaf = peer_certificate(t->ssl);
  if (leaf == NULL)
    return NULL;
  STACK_OF(X509) *chain = SSL_get_peer_cert_chain(t->ssl);
  BIO *m = BIO_new(BIO_s_mem());
  char *out = NULL;
  int ok = m != NULL && PEM_write_bio_X509(m, leaf) == 1;
  int start = t->role == RC_TLS_SERVER ? 0 : 1;
  for (int i = start; ok && chain != NULL && i < sk_X509_num(chain); i++)
    ok = PEM_write_bio_X509(m, sk_X509_value(chain, i)) == 1;
  if (ok) {
    char *p;
    long have = BIO_get_mem_data(m, &p);
    if (have > 0 && (out = malloc((size_t)have + 1)) != NULL) {
      memcpy(out, p, (size_t)have);
      out[have] = '\0';
      *len = (size_t)have;
    }
  }
  BIO_free(m);
  X509_free(leaf);
  ERR_clear_error();
  return out;
}

const char *rc_tls_error(const rc_tls *t) { return t->err; }

int rc_tls_random(void *buf, size_t n) {
  return RAND_bytes(buf, (int)n) == 1 ? 0 : -1;
}
