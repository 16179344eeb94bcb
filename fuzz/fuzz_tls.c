/* fuzz_tls.c - libFuzzer target for the TLS filter alone
 * (csrc/proto/rc_tls.c), in either role, fed by a hostile peer: the client
 * side of a wss:// connection (rc_tls_ctx_client), or the server side of
 * an accepted one (rc_tls_ctx_server). No socket, no loop: the bytes travel
 * through memory.
 *
 * Input: one control byte, then the rest.
 *   byte 0, bit 5    the filter's role: 0 client, 1 server
 *           bit 0    client: it verifies certificates (the system's roots,
 *                    name "localhost": the peer's self-signed one fails);
 *                    server: its context requires a client certificate
 *                    (ssl_ca_certs holding the peer's own, CERT_REQUIRED),
 *                    which the real peer sends
 *           bits 1-2 pieces the filter is fed in: 1, 5, 300 bytes or whole
 *           bit 3    0: no peer; the rest is what "the peer" sends (raw
 *                       records): answers to the client's ClientHello, or
 *                       what reaches a server first
 *                    1: a real OpenSSL peer in this process (a server with
 *                       an EC certificate made once in memory, or a client
 *                       offering ALPN "http/1.1" with a certificate of its
 *                       own) and the rest is operations of two bytes, op
 *                       and arg:
 *                         0 carry the bytes both ways
 *                         1 inject arg raw bytes (taken from the input)
 *                         2 flip a bit of the peer's pending output
 *                         3 drop arg bytes of it
 *                         4 the peer writes arg+1 bytes
 *                         5 odd arg: the peer writes, after a key update
 *                           when TLS 1.3; even: it sends close_notify
 *                         6 the filter writes arg+1 bytes
 *                         7 the filter queues close_notify
 *                       Every operation but 4 and 5 ends with a carry
 *                       (their output waits, to be tampered with).
 *           bit 4    the peer is held to TLS 1.2 (else 1.3 is allowed)
 *           bit 6    the filter's ciphertext is taken with
 *                    rc_tls_take_block (headroom set, room reserved before
 *                    each write), else with rc_tls_take
 *           bit 7    server, real peer: a first untampered connection on
 *                    the same context runs, and then the input's client
 *                    offers the session it kept (a TLS 1.3 ticket, a TLS
 *                    1.2 ticket), to be resumed
 * The server contexts read their certificate (and the client CA) from
 * files written once at start in $TMPDIR and removed at once.
 * Beyond memory safety and leaks it checks:
 *   - each call returns one of its documented values, and a negative one
 *     comes with a reason "TLS: ..." in rc_tls_error();
 *   - taking hands out exactly what rc_tls_pending reported, and
 *     rc_tls_unread never exceeds what was fed;
 *   - whatever plaintext the filter reads is a prefix of what the peer
 *     wrote, whatever was injected, flipped or dropped (records are
 *     authenticated), and what the peer reads is a prefix of what the
 *     filter wrote; with no real peer (raw bytes), a server filter reads
 *     no plaintext at all, as no handshake can complete;
 *   - rc_tls_ready is 1 from a completed handshake on;
 *   - with a real peer and nothing tampered with: a non-verifying client
 *     completes the handshake and receives every byte (and the peer every
 *     byte of the filter); a verifying one fails with a certificate verify
 *     reason. A server completes the handshake, at TLS 1.2 when the peer is
 *     held to it and else 1.3, with a cipher suite, ALPN "http/1.1", and
 *     the client's certificate (subject and PEM chain) exactly when its
 *     context asked for one; every byte arrives both ways; a kept session
 *     offered again is resumed.
 * Once the filter reported an error it is fed nothing more (as the core
 * closes the connection then). A broken property aborts. */
#define _GNU_SOURCE /* mkstemp */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "proto/rc_tls.h"

#include "fuzz_check.h"

#define CAP 65536   /* plaintext recorded each way */
#define HEADROOM 14 /* rc_tls_take_block's, as a WebSocket header's */
#define CLIENT_CN "roomcast-fuzz-client"

static SSL_CTX *peer_server_ctx;  /* the peer of a client filter */
static SSL_CTX *peer_client_ctx;  /* the peer of a server filter */
static rc_tls_ctx *client_ctx[2]; /* [verify] */
static rc_tls_ctx *server_ctx[2]; /* [client certificate required] */
static SSL_SESSION *kept;         /* the peer client's last session */

typedef struct run {
  rc_tls *t;         /* the filter under test */
  SSL *p;            /* the real peer, or NULL */
  BIO *p_in, *p_out; /* the peer's memory BIOs, owned by p */
  int server;        /* the filter's role is RC_TLS_SERVER */
  int block;         /* take with rc_tls_take_block */
  size_t piece;
  size_t fed;   /* bytes fed to the filter in all */
  int hs;       /* the filter's last rc_tls_handshake: 0 or 1 */
  int dead;     /* the filter reported an error: fed nothing more */
  int closed;   /* ... and it was RC_TLS_E_CLOSED */
  int p_ready;  /* the peer's handshake completed */
  int p_dead;   /* the peer failed */
  int p_shut;   /* the peer sent close_notify */
  int t_shut;   /* the filter queued close_notify */
  int tampered; /* bytes injected, flipped or dropped */
  int resume;   /* the peer client offered a kept session */
  size_t npsent, ntgot, ntsent, npgot;
  uint8_t psent[CAP]; /* peer to filter */
  uint8_t tsent[CAP]; /* filter to peer */
} run;

static run R;

/* --- certificates, once ----------------------------------------------------
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

/* A self-signed certificate for cn, and its key. */
static X509 *make_cert(const char *cn, EVP_PKEY **key) {
  *key = make_key();
  X509 *x = X509_new();
  FUZZ_CHECK(x != NULL);
  X509_NAME *name = X509_get_subject_name(x);
  FUZZ_CHECK(X509_set_version(x, 2) == 1 &&
             ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1 &&
             X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
             X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365) != NULL);
  FUZZ_CHECK(
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 (const unsigned char *)cn, -1, -1, 0) == 1 &&
      X509_set_issuer_name(x, name) == 1 && X509_set_pubkey(x, *key) == 1 &&
      X509_sign(x, *key, EVP_sha256()) > 0);
  return x;
}

/* x (and key, if any) as PEM in a new file under $TMPDIR; its path in
 * path. */
static void pem_file(char *path, size_t cap, X509 *x, EVP_PKEY *key) {
  const char *dir = getenv("TMPDIR");
  int n = snprintf(path, cap, "%s/roomcast-fuzz-tls-XXXXXX",
                   dir != NULL && dir[0] != '\0' ? dir : "/tmp");
  FUZZ_CHECK(n > 0 && (size_t)n < cap);
  int fd = mkstemp(path);
  FUZZ_CHECK(fd >= 0);
  FILE *f = fdopen(fd, "w");
  FUZZ_CHECK(f != NULL);
  FUZZ_CHECK(PEM_write_X509(f, x) == 1);
  if (key != NULL)
    FUZZ_CHECK(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1);
  FUZZ_CHECK(fclose(f) == 0);
}

static void make_contexts(void) {
  EVP_PKEY *skey, *ckey;
  X509 *scert = make_cert("localhost", &skey);
  X509 *ccert = make_cert(CLIENT_CN, &ckey);

  /* The OpenSSL peers. */
  peer_server_ctx = SSL_CTX_new(TLS_server_method());
  FUZZ_CHECK(peer_server_ctx != NULL &&
             SSL_CTX_use_certificate(peer_server_ctx, scert) == 1 &&
             SSL_CTX_use_PrivateKey(peer_server_ctx, skey) == 1);
  peer_client_ctx = SSL_CTX_new(TLS_client_method());
  FUZZ_CHECK(peer_client_ctx != NULL &&
             SSL_CTX_use_certificate(peer_client_ctx, ccert) == 1 &&
             SSL_CTX_use_PrivateKey(peer_client_ctx, ckey) == 1);
  SSL_CTX_set_verify(peer_client_ctx, SSL_VERIFY_NONE, NULL);

  /* The filter's: the client's, and the server's from files. */
  char err[256];
  client_ctx[0] = rc_tls_ctx_client(0, NULL, err, sizeof err);
  client_ctx[1] = rc_tls_ctx_client(1, NULL, err, sizeof err);
  FUZZ_CHECK(client_ctx[0] != NULL && client_ctx[1] != NULL);
  char certfile[4096], cafile[4096];
  pem_file(certfile, sizeof certfile, scert, skey); /* key in the same file */
  pem_file(cafile, sizeof cafile, ccert, NULL);
  rc_tls_server_opts plain = {certfile, NULL, NULL, NULL, RC_TLS_CERT_NONE};
  rc_tls_server_opts mutual = {certfile, NULL, NULL, cafile,
                               RC_TLS_CERT_REQUIRED};
  server_ctx[0] = rc_tls_ctx_server(&plain, err, sizeof err);
  if (server_ctx[0] == NULL)
    fprintf(stderr, "fuzz_tls: %s\n", err);
  server_ctx[1] = rc_tls_ctx_server(&mutual, err, sizeof err);
  if (server_ctx[1] == NULL)
    fprintf(stderr, "fuzz_tls: %s\n", err);
  FUZZ_CHECK(server_ctx[0] != NULL && server_ctx[1] != NULL);
  FUZZ_CHECK(!rc_tls_ctx_verifies(server_ctx[0]) &&
             rc_tls_ctx_verifies(server_ctx[1]));
  FUZZ_CHECK(unlink(certfile) == 0 && unlink(cafile) == 0);

  X509_free(scert);
  X509_free(ccert);
  EVP_PKEY_free(skey);
  EVP_PKEY_free(ckey);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  make_contexts();
  return 0;
}

/* --- the filter ------------------------------------------------------------
 */

static void filter_failed(long code) {
  FUZZ_CHECK(code == RC_TLS_E_FAILED || code == RC_TLS_E_CLOSED);
  const char *e = rc_tls_error(R.t);
  FUZZ_CHECK(strncmp(e, "TLS: ", 5) == 0 && e[5] != '\0');
  R.dead = 1;
  R.closed = code == RC_TLS_E_CLOSED;
}

/* The handshake while it lasts, then every plaintext byte there is. */
static void filter_advance(void) {
  if (R.dead)
    return;
  if (R.hs == 0) {
    int h = rc_tls_handshake(R.t);
    if (h < 0) {
      FUZZ_CHECK(h == RC_TLS_E_FAILED);
      filter_failed(h);
      return;
    }
    FUZZ_CHECK(h == 0 || h == 1);
    R.hs = h;
  }
  while (R.hs == 1) {
    FUZZ_CHECK(rc_tls_ready(R.t) == 1);
    uint8_t buf[4096];
    long r = rc_tls_read(R.t, buf, sizeof buf);
    if (r < 0) {
      filter_failed(r);
      return;
    }
    if (r == 0)
      return;
    FUZZ_CHECK((size_t)r <= sizeof buf && R.ntgot + (size_t)r <= R.npsent);
    FUZZ_CHECK(memcmp(buf, R.psent + R.ntgot, (size_t)r) == 0);
    R.ntgot += (size_t)r;
  }
}

/* Everything the filter has to send, or NULL; *n its length, *data where
 * it starts (free() the returned pointer). */
static uint8_t *filter_take(size_t *n, uint8_t **data) {
  size_t pending = rc_tls_pending(R.t);
  *n = 0;
  *data = NULL;
  if (R.block) {
    uint8_t *b = rc_tls_take_block(R.t, n);
    FUZZ_CHECK(*n == pending && (b != NULL) == (pending > 0));
    FUZZ_CHECK(rc_tls_pending(R.t) == 0);
    if (b != NULL) {
      memset(b, 0xa5, HEADROOM); /* the caller's to write */
      *data = b + HEADROOM;
    }
    return b;
  }
  if (pending == 0)
    return NULL;
  uint8_t *out = malloc(pending);
  FUZZ_CHECK(out != NULL);
  size_t got;
  while ((got = rc_tls_take(R.t, out + *n, pending - *n)) > 0)
    *n += got;
  FUZZ_CHECK(*n == pending && rc_tls_pending(R.t) == 0);
  *data = out;
  return out;
}

static void filter_feed(const uint8_t *p, size_t n) {
  for (size_t at = 0; at < n && !R.dead; at += R.piece) {
    size_t len = n - at < R.piece ? n - at : R.piece;
    FUZZ_CHECK(rc_tls_feed(R.t, p + at, len) == 0);
    R.fed += len;
    FUZZ_CHECK(rc_tls_unread(R.t) <= R.fed);
    filter_advance();
    if (R.p == NULL) { /* nobody to answer: what it sends goes nowhere */
      size_t k;
      uint8_t *data;
      free(filter_take(&k, &data));
    }
  }
}

/* --- the peer --------------------------------------------------------------
 */

static void peer_advance(void) {
  if (R.p_dead)
    return;
  /* Not SSL_is_init_finished: a key update puts the peer back "in init"
   * until its next write. */
  if (!R.p_ready) {
    int r = SSL_do_handshake(R.p);
    if (r != 1) {
      if (SSL_get_error(R.p, r) != SSL_ERROR_WANT_READ)
        R.p_dead = 1;
      ERR_clear_error();
      return;
    }
    R.p_ready = 1;
  }
  for (;;) {
    uint8_t buf[4096];
    int r = SSL_read(R.p, buf, (int)sizeof buf);
    if (r <= 0) {
      if (SSL_get_error(R.p, r) != SSL_ERROR_WANT_READ)
        R.p_dead = 1;
      ERR_clear_error();
      return;
    }
    FUZZ_CHECK(R.npgot + (size_t)r <= R.ntsent);
    FUZZ_CHECK(memcmp(buf, R.tsent + R.npgot, (size_t)r) == 0);
    R.npgot += (size_t)r;
  }
}

static void to_peer(void) {
  size_t n;
  uint8_t *data;
  uint8_t *p = filter_take(&n, &data);
  if (p == NULL)
    return;
  FUZZ_CHECK(BIO_write(R.p_in, data, (int)n) == (int)n);
  free(p);
  peer_advance();
}

/* The peer's pending output, taken out of its BIO; *n its length. */
static uint8_t *peer_take(size_t *n) {
  size_t pending = BIO_ctrl_pending(R.p_out);
  *n = pending;
  if (pending == 0)
    return NULL;
  uint8_t *out = malloc(pending);
  FUZZ_CHECK(out != NULL);
  FUZZ_CHECK(BIO_read(R.p_out, out, (int)pending) == (int)pending);
  return out;
}

/* Both ways until neither side has anything to send. */
static void carry(void) {
  for (int round = 0; round < 16; round++) {
    to_peer();
    size_t n;
    uint8_t *p = peer_take(&n);
    if (p == NULL && rc_tls_pending(R.t) == 0)
      return;
    if (!R.dead)
      filter_feed(p, n);
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
  uint8_t *p = peer_take(&n);
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
    filter_feed(p, n);
  free(p);
}

static void peer_write(unsigned arg) {
  size_t len = arg + 1u;
  if (R.p_dead || R.p_shut || !R.p_ready || R.npsent + len > CAP)
    return;
  pattern(R.psent + R.npsent, len, R.npsent);
  if (SSL_write(R.p, R.psent + R.npsent, (int)len) == (int)len)
    R.npsent += len;
  else
    R.p_dead = 1;
  ERR_clear_error();
}

static void peer_control(unsigned arg, int tls13) {
  if (R.p_dead || R.p_shut || !R.p_ready)
    return;
  if (arg & 1) {
    if (tls13 && SSL_version(R.p) == TLS1_3_VERSION)
      (void)SSL_key_update(R.p, (arg & 2) ? SSL_KEY_UPDATE_REQUESTED
                                          : SSL_KEY_UPDATE_NOT_REQUESTED);
    /* The update goes out with the next write. */
    peer_write(arg >> 2);
  } else {
    (void)SSL_shutdown(R.p);
    R.p_shut = 1;
  }
  ERR_clear_error();
}

static void filter_write(unsigned arg) {
  size_t len = arg + 1u;
  if (R.dead || R.hs != 1 || R.t_shut || R.ntsent + len > CAP)
    return;
  pattern(R.tsent + R.ntsent, len, R.ntsent + 11);
  if (R.block) /* as the core does before encrypting a batch */
    FUZZ_CHECK(rc_tls_reserve(R.t, len + 64) == 0);
  int r = rc_tls_write(R.t, R.tsent + R.ntsent, len);
  if (r == 0) {
    R.ntsent += len;
    return;
  }
  /* A write only fails once the peer broke the session. */
  FUZZ_CHECK(R.tampered);
  filter_failed(r);
}

static void filter_shutdown(void) {
  if (R.dead || R.hs != 1 || R.t_shut)
    return;
  int r = rc_tls_shutdown(R.t);
  if (r != 0) {
    FUZZ_CHECK(R.tampered);
    filter_failed(r);
  }
  R.t_shut = 1;
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
        filter_feed(p + i, len);
      i += len;
      break;
    }
    case 2:
    case 3:
      tamper(op, arg);
      break;
    case 4:
      peer_write(arg);
      break;
    case 5:
      peer_control(arg, tls13);
      break;
    case 6:
      filter_write(arg);
      break;
    default:
      filter_shutdown();
      break;
    }
    /* What the peer writes waits for a carry, so that the next operation
     * can tamper with it. */
    if (op != 4 && op != 5)
      carry();
  }
}

/* What a server filter reports of an untampered session. */
static void server_session(int certs, int tls12) {
  FUZZ_CHECK(rc_tls_version(R.t) == (tls12 ? 0x0303 : 0x0304));
  FUZZ_CHECK(rc_tls_cipher_suite(R.t) != 0);
  const unsigned char *alpn;
  unsigned alpn_len;
  SSL_get0_alpn_selected(R.p, &alpn, &alpn_len);
  FUZZ_CHECK(alpn_len == 8 && memcmp(alpn, "http/1.1", 8) == 0);
  char subject[128];
  size_t n = rc_tls_peer_subject(R.t, subject, sizeof subject);
  size_t pem_len;
  char *pem = rc_tls_peer_chain_pem(R.t, &pem_len);
  if (certs) {
    FUZZ_CHECK(n == strlen("CN=" CLIENT_CN) &&
               strcmp(subject, "CN=" CLIENT_CN) == 0);
    FUZZ_CHECK(pem != NULL && pem_len == strlen(pem) &&
               strncmp(pem, "-----BEGIN CERTIFICATE-----", 27) == 0);
  } else {
    FUZZ_CHECK(n == 0 && subject[0] == '\0' && pem == NULL && pem_len == 0);
  }
  free(pem);
}

/* With nothing tampered with, the session works (or the certificate is
 * refused, when a client verifies). */
static void untampered(int verify, int tls12) {
  if (R.tampered)
    return;
  if (verify && !R.server) {
    FUZZ_CHECK(R.dead && !R.closed);
    FUZZ_CHECK(strncmp(rc_tls_error(R.t),
                       "TLS: certificate verify failed: ", 32) == 0);
    return;
  }
  FUZZ_CHECK(R.hs == 1 && (!R.dead || R.closed));
  FUZZ_CHECK(R.ntgot == R.npsent);
  FUZZ_CHECK(R.p_dead || R.npgot == R.ntsent);
  if (R.server) {
    server_session(verify, tls12);
    /* An untampered offer of a session of this context is taken. */
    FUZZ_CHECK(!R.resume || SSL_session_reused(R.p) == 1);
    SSL_SESSION *s = SSL_get1_session(R.p);
    if (s != NULL) {
      SSL_SESSION_free(kept);
      kept = s;
    }
  }
}

static void with_peer(const uint8_t *p, size_t n, int verify, int tls12,
                      int resume) {
  R.p = SSL_new(R.server ? peer_client_ctx : peer_server_ctx);
  R.p_in = BIO_new(BIO_s_mem());
  R.p_out = BIO_new(BIO_s_mem());
  FUZZ_CHECK(R.p != NULL && R.p_in != NULL && R.p_out != NULL);
  BIO_set_mem_eof_return(R.p_in, -1);
  SSL_set_bio(R.p, R.p_in, R.p_out);
  if (tls12)
    FUZZ_CHECK(SSL_set_max_proto_version(R.p, TLS1_2_VERSION) == 1);
  if (R.server) {
    static const unsigned char alpn[] = "\x02h2\x08http/1.1";
    SSL_set_connect_state(R.p);
    FUZZ_CHECK(SSL_set_tlsext_host_name(R.p, "localhost") == 1);
    FUZZ_CHECK(SSL_set_alpn_protos(R.p, alpn, sizeof alpn - 1) == 0);
    if (resume) {
      FUZZ_CHECK(SSL_set_session(R.p, kept) == 1);
      R.resume = 1;
    }
    peer_advance(); /* the ClientHello */
  } else {
    SSL_set_accept_state(R.p);
    filter_advance(); /* the ClientHello */
  }
  carry();
  operations(p, n, !tls12);
  carry();
  untampered(verify, tls12);
  SSL_free(R.p);
  ERR_clear_error();
}

static void no_peer(const uint8_t *p, size_t n) {
  if (!R.server) {
    filter_advance();
    size_t len;
    uint8_t *data;
    free(filter_take(&len, &data)); /* the ClientHello, to nobody */
    FUZZ_CHECK(len > 0);
  }
  filter_feed(p, n);
  /* No handshake can complete against raw bytes: the filter's peer never
   * wrote a byte (R.npsent is 0), so none was read. */
  FUZZ_CHECK(R.ntgot == 0);
}

/* One connection: the filter made as ctl says, against raw bytes or a
 * real peer driven by p. */
static void connection(unsigned ctl, const uint8_t *p, size_t n, int resume) {
  static const size_t pieces[4] = {1, 5, 300, SIZE_MAX};
  int verify = ctl & 1;
  memset(&R, 0, offsetof(run, psent));
  R.piece = pieces[(ctl >> 1) & 3];
  R.server = (ctl >> 5) & 1;
  R.block = (ctl >> 6) & 1;
  if (R.server)
    R.t = rc_tls_new(server_ctx[verify], RC_TLS_SERVER, NULL);
  else
    R.t = rc_tls_new(client_ctx[verify], RC_TLS_CLIENT, "localhost");
  FUZZ_CHECK(R.t != NULL);
  if (R.block)
    rc_tls_set_headroom(R.t, HEADROOM);
  if (ctl & 8)
    with_peer(p, n, verify, (ctl >> 4) & 1, resume);
  else
    no_peer(p, n);
  FUZZ_CHECK(rc_tls_ready(R.t) == R.hs || R.dead);
  rc_tls_free(R.t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  unsigned ctl = data[0];
  int resume = (ctl & 0xa8) == 0xa8; /* server, real peer, bit 7 */
  if (resume) {
    /* A first session on the same context, untampered, whose ticket the
     * client keeps: the input's connection offers it. It ends with the
     * client's close_notify (op 5, even arg): OpenSSL marks the session of
     * a connection freed without one not resumable. */
    static const uint8_t bye[2] = {5, 0};
    SSL_SESSION_free(kept);
    kept = NULL;
    connection(ctl, bye, sizeof bye, 0);
    FUZZ_CHECK(kept != NULL);
  }
  connection(ctl, data + 1, size - 1, resume);
  return 0;
}
