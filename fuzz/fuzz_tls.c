/* fuzz_tls.c - libFuzzer target for the TLS filter alone
 * (csrc/proto/rc_tls.c): the client side of a wss:// connection fed by a
 * hostile peer. No socket, no loop: the bytes travel through memory.
 *
 * Input: one control byte, then the rest.
 *   byte 0, bit 0    the client verifies certificates (the system's roots,
 *                    name "localhost": the server's self-signed one fails)
 *           bits 1-2 pieces the client is fed in: 1, 5, 300 bytes or whole
 *           bit 3    0: no server; the rest is what "the server" sends in
 *                       answer to the ClientHello (raw records)
 *                    1: a real OpenSSL server in this process (its EC
 *                       certificate made once, in memory) and the rest is
 *                       operations of two bytes, op and arg:
 *                         0 carry the bytes both ways
 *                         1 inject arg raw bytes (taken from the input)
 *                         2 flip a bit of the server's pending output
 *                         3 drop arg bytes of it
 *                         4 the server writes arg+1 bytes
 *                         5 odd arg: the server writes, after a key update
 *                           when TLS 1.3; even: it sends close_notify
 *                         6 the client writes arg+1 bytes
 *                         7 the client queues close_notify
 *                       Every operation but 4 and 5 ends with a carry
 *                       (their output waits, to be tampered with).
 *           bit 4    the server is held to TLS 1.2 (else 1.3 is allowed)
 * Beyond memory safety and leaks it checks:
 *   - each call returns one of its documented values, and a negative one
 *     comes with a reason "TLS: ..." in rc_tls_error();
 *   - rc_tls_take never hands out more than rc_tls_pending reported;
 *   - whatever plaintext the client reads is a prefix of what the server
 *     wrote, whatever was injected, flipped or dropped (records are
 *     authenticated), and what the server reads is a prefix of what the
 *     client wrote;
 *   - with a real server and nothing tampered with: a non-verifying client
 *     completes the handshake and receives every byte (and the server every
 *     byte of the client); a verifying one fails with a certificate verify
 *     reason.
 * Once the client reported an error it is fed nothing more (as the core
 * closes the connection then). A broken property aborts. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "proto/rc_tls.h"

#include "fuzz_check.h"

#define CAP 65536 /* plaintext recorded each way */

static SSL_CTX *server_ctx;
static rc_tls_ctx *client_ctx[2]; /* [verify] */

typedef struct run {
  rc_tls *c;
  SSL *s;
  BIO *s_in, *s_out; /* the server's memory BIOs, owned by s */
  size_t piece;
  int hs;       /* the client's last rc_tls_handshake: 0 or 1 */
  int dead;     /* the client reported an error: fed nothing more */
  int closed;   /* ... and it was RC_TLS_E_CLOSED */
  int s_ready;  /* the server's handshake completed */
  int s_dead;   /* the server failed */
  int s_shut;   /* the server sent close_notify */
  int c_shut;   /* the client queued close_notify */
  int tampered; /* bytes injected, flipped or dropped */
  size_t nsent, ngot, ncsent, nsgot;
  uint8_t sent[CAP], got[CAP];   /* server to client */
  uint8_t csent[CAP], sgot[CAP]; /* client to server */
} run;

static run R;

/* --- the server's certificate, once ----------------------------------------
 */

static EVP_PKEY *make_key(void) {
  EVP_PKEY *key = NULL;
  EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, NULL);
  FUZZ_CHECK(kc != NULL && EVP_PKEY_keygen_init(kc) == 1);
  FUZZ_CHECK(EVP_PKEY_CTX_set_ec_paramgen_curve_nid(kc, NID_X9_62_prime256v1) ==
             1);
  FUZZ_CHECK(EVP_PKEY_keygen(kc, &key) == 1);
  EVP_PKEY_CTX_free(kc);
  return key;
}

static void make_server_ctx(void) {
  EVP_PKEY *key = make_key();
  X509 *x = X509_new();
  FUZZ_CHECK(x != NULL);
  X509_NAME *name = X509_get_subject_name(x);
  FUZZ_CHECK(X509_set_version(x, 2) == 1 &&
             ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1 &&
             X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
             X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365) != NULL);
  FUZZ_CHECK(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                        (const unsigned char *)"localhost", -1,
                                        -1, 0) == 1 &&
             X509_set_issuer_name(x, name) == 1 &&
             X509_set_pubkey(x, key) == 1 &&
             X509_sign(x, key, EVP_sha256()) > 0);
  server_ctx = SSL_CTX_new(TLS_server_method());
  FUZZ_CHECK(server_ctx != NULL &&
             SSL_CTX_use_certificate(server_ctx, x) == 1 &&
             SSL_CTX_use_PrivateKey(server_ctx, key) == 1);
  X509_free(x);
  EVP_PKEY_free(key);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  make_server_ctx();
  char err[256];
  client_ctx[0] = rc_tls_ctx_client(0, NULL, err, sizeof err);
  client_ctx[1] = rc_tls_ctx_client(1, NULL, err, sizeof err);
  FUZZ_CHECK(client_ctx[0] != NULL && client_ctx[1] != NULL);
  return 0;
}

/* --- the client ------------------------------------------------------------
 */

static void client_failed(long code) {
  FUZZ_CHECK(code == RC_TLS_E_FAILED || code == RC_TLS_E_CLOSED);
  const char *e = rc_tls_error(R.c);
  FUZZ_CHECK(strncmp(e, "TLS: ", 5) == 0 && e[5] != '\0');
  R.dead = 1;
  R.closed = code == RC_TLS_E_CLOSED;
}

/* The handshake while it lasts, then every plaintext byte there is. */
static void client_advance(void) {
  if (R.dead)
    return;
  if (R.hs == 0) {
    int h = rc_tls_handshake(R.c);
    if (h < 0) {
      FUZZ_CHECK(h == RC_TLS_E_FAILED);
      client_failed(h);
      return;
    }
    FUZZ_CHECK(h == 0 || h == 1);
    R.hs = h;
  }
  while (R.hs == 1) {
    uint8_t buf[4096];
    long r = rc_tls_read(R.c, buf, sizeof buf);
    if (r < 0) {
      client_failed(r);
      return;
    }
    if (r == 0)
      return;
    FUZZ_CHECK((size_t)r <= sizeof buf && R.ngot + (size_t)r <= R.nsent);
    FUZZ_CHECK(memcmp(buf, R.sent + R.ngot, (size_t)r) == 0);
    R.ngot += (size_t)r;
  }
}

static void client_feed(const uint8_t *p, size_t n) {
  for (size_t at = 0; at < n && !R.dead; at += R.piece) {
    size_t len = n - at < R.piece ? n - at : R.piece;
    FUZZ_CHECK(rc_tls_feed(R.c, p + at, len) == 0);
    client_advance();
  }
}

/* Everything the client has to send, or NULL; *n its length. */
static uint8_t *client_take(size_t *n) {
  size_t pending = rc_tls_pending(R.c);
  *n = 0;
  if (pending == 0)
    return NULL;
  uint8_t *out = malloc(pending);
  FUZZ_CHECK(out != NULL);
  size_t got;
  while ((got = rc_tls_take(R.c, out + *n, pending - *n)) > 0)
    *n += got;
  FUZZ_CHECK(*n == pending && rc_tls_pending(R.c) == 0);
  return out;
}

/* --- the server ------------------------------------------------------------
 */

static void server_advance(void) {
  if (R.s_dead)
    return;
  /* Not SSL_is_init_finished: a key update puts the server back "in
   * init" until its next write. */
  if (!R.s_ready) {
    int r = SSL_do_handshake(R.s);
    if (r != 1) {
      if (SSL_get_error(R.s, r) != SSL_ERROR_WANT_READ)
        R.s_dead = 1;
      ERR_clear_error();
      return;
    }
    R.s_ready = 1;
  }
  for (;;) {
    uint8_t buf[4096];
    int r = SSL_read(R.s, buf, (int)sizeof buf);
    if (r <= 0) {
      if (SSL_get_error(R.s, r) != SSL_ERROR_WANT_READ)
        R.s_dead = 1;
      ERR_clear_error();
      return;
    }
    FUZZ_CHECK(R.nsgot + (size_t)r <= R.ncsent);
    FUZZ_CHECK(memcmp(buf, R.csent + R.nsgot, (size_t)r) == 0);
    R.nsgot += (size_t)r;
  }
}

static void to_server(void) {
  size_t n;
  uint8_t *p = client_take(&n);
  if (p == NULL)
    return;
  FUZZ_CHECK(BIO_write(R.s_in, p, (int)n) == (int)n);
  free(p);
  server_advance();
}

/* The server's pending output, taken out of its BIO; *n its length. */
static uint8_t *server_take(size_t *n) {
  size_t pending = BIO_ctrl_pending(R.s_out);
  *n = pending;
  if (pending == 0)
    return NULL;
  uint8_t *out = malloc(pending);
  FUZZ_CHECK(out != NULL);
  FUZZ_CHECK(BIO_read(R.s_out, out, (int)pending) == (int)pending);
  return out;
}

/* Both ways until neither side has anything to send. */
static void carry(void) {
  for (int round = 0; round < 16; round++) {
    to_server();
    size_t n;
    uint8_t *p = server_take(&n);
    if (p == NULL && rc_tls_pending(R.c) == 0)
      return;
    if (!R.dead)
      client_feed(p, n);
    free(p);
  }
}

/* --- operations ------------------------------------------------------------
 */

static void pattern(uint8_t *p, size_t n, size_t from) {
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)((from + i) * 167u >> 3);
}

static void tamper(unsigned op, unsigned arg) {
  size_t n;
  uint8_t *p = server_take(&n);
  if (p == NULL)
    return;
  R.tampered = 1;
  if (op == 2) {
    p[(arg * 37u) % n] ^= (uint8_t)(1u << (arg & 7));
  } else {
    size_t drop = arg < n ? arg : n;
    memmove(p, p + drop, n - drop);
    n -= drop;
  }
  if (!R.dead)
    client_feed(p, n);
  free(p);
}

static void server_write(unsigned arg) {
  size_t len = arg + 1u;
  if (R.s_dead || R.s_shut || !R.s_ready || R.nsent + len > CAP)
    return;
  pattern(R.sent + R.nsent, len, R.nsent);
  if (SSL_write(R.s, R.sent + R.nsent, (int)len) == (int)len)
    R.nsent += len;
  else
    R.s_dead = 1;
  ERR_clear_error();
}

static void server_control(unsigned arg, int tls13) {
  if (R.s_dead || R.s_shut || !R.s_ready)
    return;
  if (arg & 1) {
    if (tls13 && SSL_version(R.s) == TLS1_3_VERSION)
      (void)SSL_key_update(R.s, (arg & 2) ? SSL_KEY_UPDATE_REQUESTED
                                          : SSL_KEY_UPDATE_NOT_REQUESTED);
    /* The update goes out with the next write. */
    server_write(arg >> 2);
  } else {
    (void)SSL_shutdown(R.s);
    R.s_shut = 1;
  }
  ERR_clear_error();
}

static void client_write(unsigned arg) {
  size_t len = arg + 1u;
  if (R.dead || R.hs != 1 || R.c_shut || R.ncsent + len > CAP)
    return;
  pattern(R.csent + R.ncsent, len, R.ncsent + 11);
  int r = rc_tls_write(R.c, R.csent + R.ncsent, len);
  if (r == 0) {
    R.ncsent += len;
    return;
  }
  /* A write only fails once the peer broke the session. */
  FUZZ_CHECK(R.tampered);
  client_failed(r);
}

static void client_shutdown(void) {
  if (R.dead || R.hs != 1 || R.c_shut)
    return;
  int r = rc_tls_shutdown(R.c);
  if (r != 0) {
    FUZZ_CHECK(R.tampered);
    client_failed(r);
  }
  R.c_shut = 1;
}

static void operations(const uint8_t *p, size_t n, int tls13) {
  size_t i = 0;
  while (i + 2 <= n) {
    unsigned op = p[i] & 7, arg = p[i + 1];
    i += 2;
    switch (op) {
    case 0:
      break;
    case 1: {
      size_t len = arg < n - i ? arg : n - i;
      R.tampered = 1;
      if (!R.dead)
        client_feed(p + i, len);
      i += len;
      break;
    }
    case 2:
    case 3:
      tamper(op, arg);
      break;
    case 4:
      server_write(arg);
      break;
    case 5:
      server_control(arg, tls13);
      break;
    case 6:
      client_write(arg);
      break;
    default:
      client_shutdown();
      break;
    }
    /* What the server writes waits for a carry, so that the next
     * operation can tamper with it. */
    if (op != 4 && op != 5)
      carry();
  }
}

/* With nothing tampered with, the session works (or the certificate is
 * refused, when verifying). */
static void untampered(int verify) {
  if (R.tampered)
    return;
  if (verify) {
    FUZZ_CHECK(R.dead && !R.closed);
    FUZZ_CHECK(strncmp(rc_tls_error(R.c),
                       "TLS: certificate verify failed: ", 32) == 0);
    return;
  }
  FUZZ_CHECK(R.hs == 1 && (!R.dead || R.closed));
  FUZZ_CHECK(R.ngot == R.nsent);
  FUZZ_CHECK(R.s_dead || R.nsgot == R.ncsent);
}

static void with_server(const uint8_t *p, size_t n, int verify, int tls12) {
  R.s = SSL_new(server_ctx);
  R.s_in = BIO_new(BIO_s_mem());
  R.s_out = BIO_new(BIO_s_mem());
  FUZZ_CHECK(R.s != NULL && R.s_in != NULL && R.s_out != NULL);
  BIO_set_mem_eof_return(R.s_in, -1);
  SSL_set_bio(R.s, R.s_in, R.s_out);
  SSL_set_accept_state(R.s);
  if (tls12)
    FUZZ_CHECK(SSL_set_max_proto_version(R.s, TLS1_2_VERSION) == 1);
  client_advance(); /* the ClientHello */
  carry();
  operations(p, n, !tls12);
  carry();
  untampered(verify);
  SSL_free(R.s);
  ERR_clear_error();
}

static void no_server(const uint8_t *p, size_t n) {
  client_advance();
  size_t len;
  free(client_take(&len)); /* the ClientHello, to nobody */
  FUZZ_CHECK(len > 0);
  client_feed(p, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  static const size_t pieces[4] = {1, 5, 300, SIZE_MAX};
  unsigned ctl = data[0];
  int verify = ctl & 1;
  memset(&R, 0, offsetof(run, sent));
  R.piece = pieces[(ctl >> 1) & 3];
  R.c = rc_tls_new(client_ctx[verify], RC_TLS_CLIENT, "localhost");
  FUZZ_CHECK(R.c != NULL);
  if (ctl & 8)
    with_server(data + 1, size - 1, verify, (ctl >> 4) & 1);
  else
    no_server(data + 1, size - 1);
  rc_tls_free(R.c);
  return 0;
}
