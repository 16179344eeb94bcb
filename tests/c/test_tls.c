/* test_tls.c - the TLS filter (csrc/proto/rc_tls.c) alone: no socket, no
 * loop. Its peer is an OpenSSL server in this process whose records travel
 * through memory BIOs; the test carries the bytes between the two, so it
 * chooses how they are cut (whole flights, 1-byte pieces, several records
 * in one feed) and can put garbage in their place.
 *
 * Certificates are made here with OpenSSL's API (an EC P-256 key, a
 * self-signed X509 naming one host); the filter's context only takes trusted
 * roots from a PEM file (rc_tls_ctx_client's cafile), so the root is written
 * to a temporary directory that each case removes.
 *
 * The server role (rc_tls_ctx_server) is tested against the filter's own
 * client: two filters whose blocks of ciphertext the test carries.
 *
 * Every case owns its resources through one fixture and frees them at its
 * end, so it only uses RC_CHECK* (which go on after a failure) once the
 * fixture exists; valgrind (make memcheck) then sees a clean exit. */
#define _GNU_SOURCE /* mkdtemp */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "proto/rc_tls.h"
#include "support/rc_test.h"

/* --- certificates ----------------------------------------------------------
 */

typedef struct cert {
  EVP_PKEY *key;
  X509 *x509;
} cert;

static EVP_PKEY *make_key(void) {
  EVP_PKEY *key = NULL;
  EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, NULL);
  if (kc == NULL || EVP_PKEY_keygen_init(kc) != 1 ||
      EVP_PKEY_CTX_set_ec_paramgen_curve_nid(kc, NID_X9_62_prime256v1) != 1 ||
      EVP_PKEY_keygen(kc, &key) != 1)
    key = NULL;
  EVP_PKEY_CTX_free(kc);
  return key;
}

/* subjectAltName = san (e.g. "DNS:localhost"), issued by the cert itself. */
static int add_san(X509 *x, const char *san) {
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
  X509_EXTENSION *ext =
      X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
  if (ext == NULL)
    return 0;
  int ok = X509_add_ext(x, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

/* A self-signed certificate for host (CN and subjectAltName), valid from
 * an hour ago for a day. Returns 0 on failure. */
static int make_cert(cert *c, const char *host, const char *san) {
  c->key = make_key();
  c->x509 = X509_new();
  if (c->key == NULL || c->x509 == NULL)
    return 0;
  X509_NAME *name = X509_get_subject_name(c->x509);
  return X509_set_version(c->x509, 2) == 1 &&
         ASN1_INTEGER_set(X509_get_serialNumber(c->x509), 1) == 1 &&
         X509_gmtime_adj(X509_getm_notBefore(c->x509), -3600) != NULL &&
         X509_gmtime_adj(X509_getm_notAfter(c->x509), 86400) != NULL &&
         X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                    (const unsigned char *)host, -1, -1,
                                    0) == 1 &&
         X509_set_issuer_name(c->x509, name) == 1 &&
         X509_set_pubkey(c->x509, c->key) == 1 && add_san(c->x509, san) &&
         X509_sign(c->x509, c->key, EVP_sha256()) > 0;
}

static void cert_free(cert *c) {
  EVP_PKEY_free(c->key);
  X509_free(c->x509);
}

/* --- the fixture -----------------------------------------------------------
 */

typedef struct fixture {
  char dir[64];
  char cafile[96];
  cert served;  /* the server's certificate */
  cert trusted; /* written to cafile */
  SSL_CTX *sctx;
  SSL *server;
  BIO *s_in, *s_out; /* the server's memory BIOs, owned by server */
  rc_tls_ctx *ctx;
  rc_tls *client;
} fixture;

static int write_pem(const char *path, X509 *x) {
  FILE *f = fopen(path, "w");
  if (f == NULL)
    return 0;
  int ok = PEM_write_X509(f, x) == 1;
  return fclose(f) == 0 && ok;
}

typedef struct setup_opts {
  const char *cert_host; /* the name the server's certificate carries */
  const char *cert_san;
  int trust_it; /* cafile holds the server's own certificate, else another */
  int verify;
  const char *server_name; /* what the client asks for */
  int chain_only;          /* verify the chain but not the name */
} setup_opts;

static int server_new(fixture *f) {
  f->sctx = SSL_CTX_new(TLS_server_method());
  if (f->sctx == NULL ||
      SSL_CTX_use_certificate(f->sctx, f->served.x509) != 1 ||
      SSL_CTX_use_PrivateKey(f->sctx, f->served.key) != 1)
    return 0;
  f->server = SSL_new(f->sctx);
  f->s_in = BIO_new(BIO_s_mem());
  f->s_out = BIO_new(BIO_s_mem());
  if (f->server == NULL || f->s_in == NULL || f->s_out == NULL) {
    BIO_free(f->s_in);
    BIO_free(f->s_out);
    f->s_in = f->s_out = NULL;
    return 0;
  }
  BIO_set_mem_eof_return(f->s_in, -1);
  SSL_set_bio(f->server, f->s_in, f->s_out);
  SSL_set_accept_state(f->server);
  return 1;
}

static int setup(fixture *f, const setup_opts *o) {
  memset(f, 0, sizeof(*f));
  (void)snprintf(f->dir, sizeof f->dir, "/tmp/rc_test_tls.XXXXXX");
  if (mkdtemp(f->dir) == NULL) {
    f->dir[0] = '\0';
    return 0;
  }
  (void)snprintf(f->cafile, sizeof f->cafile, "%s/ca.pem", f->dir);
  if (!make_cert(&f->served, o->cert_host, o->cert_san))
    return 0;
  X509 *root = f->served.x509;
  if (!o->trust_it) {
    if (!make_cert(&f->trusted, o->cert_host, o->cert_san))
      return 0;
    root = f->trusted.x509;
  }
  if (!write_pem(f->cafile, root) || !server_new(f))
    return 0;
  char err[256];
  rc_tls_client_opts co = {.verify = o->verify,
                           .check_name = o->verify && !o->chain_only,
                           .cafile = f->cafile};
  f->ctx = rc_tls_ctx_client_opts(&co, err, sizeof err);
  if (f->ctx == NULL) {
    fprintf(stderr, "  %s\n", err);
    return 0;
  }
  f->client = rc_tls_new(f->ctx, RC_TLS_CLIENT, o->server_name);
  return f->client != NULL;
}

static void teardown(fixture *f) {
  rc_tls_free(f->client);
  rc_tls_ctx_free(f->ctx);
  SSL_free(f->server); /* and its BIOs */
  SSL_CTX_free(f->sctx);
  cert_free(&f->served);
  cert_free(&f->trusted);
  if (f->cafile[0] != '\0')
    (void)unlink(f->cafile);
  if (f->dir[0] != '\0')
    (void)rmdir(f->dir);
  ERR_clear_error();
}

static const setup_opts good = {"localhost", "DNS:localhost", 1,
                                1,           "localhost",     0};

/* --- carrying bytes --------------------------------------------------------
 */

/* Client to server: everything the filter has pending. */
static int to_server(fixture *f) {
  uint8_t buf[4096];
  size_t n;
  while ((n = rc_tls_take(f->client, buf, sizeof buf)) > 0) {
    if (BIO_write(f->s_in, buf, (int)n) != (int)n)
      return 0;
  }
  return rc_tls_pending(f->client) == 0;
}

/* Server to client, fed in pieces of at most piece bytes; after each
 * piece the client's handshake is advanced when *hs is 0. Returns how many
 * bytes were moved, or -1 when a feed failed. */
static long to_client(fixture *f, size_t piece, int *hs) {
  uint8_t buf[4096];
  long moved = 0;
  int n;
  while ((n = BIO_read(f->s_out, buf, (int)sizeof buf)) > 0) {
    for (size_t at = 0; at < (size_t)n; at += piece) {
      size_t len = (size_t)n - at < piece ? (size_t)n - at : piece;
      if (rc_tls_feed(f->client, buf + at, len) != 0)
        return -1;
      if (hs != NULL && *hs == 0)
        *hs = rc_tls_handshake(f->client);
    }
    moved += n;
  }
  return moved;
}

/* Both handshakes, the server's bytes fed to the client in pieces of piece
 * bytes. Returns the client's last rc_tls_handshake result: 1 when both
 * sides completed. */
static int handshake(fixture *f, size_t piece) {
  int hs = rc_tls_handshake(f->client);
  for (int round = 0; round < 20 && hs == 0; round++) {
    if (!to_server(f))
      return -100;
    int s = SSL_do_handshake(f->server);
    if (s != 1 && SSL_get_error(f->server, s) != SSL_ERROR_WANT_READ) {
      ERR_clear_error();
      /* The server gave up (an alert may wait for the client). */
      if (to_client(f, piece, &hs) < 0)
        return -100;
      return hs == 0 ? rc_tls_handshake(f->client) : hs;
    }
    if (to_client(f, piece, &hs) < 0)
      return -100;
    if (hs == 0)
      hs = rc_tls_handshake(f->client);
  }
  if (hs != 1)
    return hs;
  /* TLS 1.3: the client's Finished completes the server's side. */
  if (!to_server(f) || SSL_do_handshake(f->server) != 1)
    return -101;
  return 1;
}

/* Reads every plaintext byte the client has into out (at most cap);
 * returns the count, or the filter's negative code. */
static long client_read_all(fixture *f, uint8_t *out, size_t cap) {
  size_t got = 0;
  for (;;) {
    long r = rc_tls_read(f->client, out + got, cap - got);
    if (r < 0)
      return r;
    if (r == 0 || got + (size_t)r == cap)
      return (long)(got + (size_t)r);
    got += (size_t)r;
  }
}

/* The server's plaintext, as many bytes as there are (at most cap). */
static size_t server_read_all(fixture *f, uint8_t *out, size_t cap) {
  size_t got = 0;
  while (got < cap) {
    int r = SSL_read(f->server, out + got, (int)(cap - got));
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  ERR_clear_error();
  return got;
}

static void fill(uint8_t *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)((i * 131u + seed) ^ (i >> 8));
}

/* --- cases -----------------------------------------------------------------
 */

RC_TEST(handshake_completes) {
  fixture f;
  if (setup(&f, &good)) {
    RC_CHECK_EQ_INT(handshake(&f, 1u << 20), 1);
    RC_CHECK(strcmp(rc_tls_error(f.client), "") == 0);
    RC_CHECK(rc_tls_ctx_verifies(f.ctx) == 1);
  } else {
    RC_CHECK(!"setup");
  }
  teardown(&f);
}

RC_TEST(handshake_in_one_byte_pieces) {
  fixture f;
  if (setup(&f, &good))
    RC_CHECK_EQ_INT(handshake(&f, 1), 1);
  else
    RC_CHECK(!"setup");
  teardown(&f);
}

RC_TEST(data_both_ways) {
  fixture f;
  uint8_t in[64];
  if (setup(&f, &good) && handshake(&f, 1u << 20) == 1) {
    RC_CHECK_EQ_INT(rc_tls_write(f.client, "hello, server", 13), 0);
    RC_CHECK(rc_tls_pending(f.client) > 13); /* a record, not plaintext */
    RC_CHECK(to_server(&f));
    RC_CHECK_EQ_INT(server_read_all(&f, in, sizeof in), 13);
    RC_CHECK(memcmp(in, "hello, server", 13) == 0);
    RC_CHECK_EQ_INT(SSL_write(f.server, "hello, client", 13), 13);
    RC_CHECK(to_client(&f, 1u << 20, NULL) > 13);
    RC_CHECK_EQ_INT(client_read_all(&f, in, sizeof in), 13);
    RC_CHECK(memcmp(in, "hello, client", 13) == 0);
    /* Nothing more: 0 means "feed me", not an error. */
    RC_CHECK_EQ_INT(rc_tls_read(f.client, in, sizeof in), 0);
  } else {
    RC_CHECK(!"setup and handshake");
  }
  teardown(&f);
}

RC_TEST(records_in_one_byte_pieces) {
  fixture f;
  static uint8_t sent[3000], got[3000];
  fill(sent, sizeof sent, 7);
  if (setup(&f, &good) && handshake(&f, 1u << 20) == 1) {
    RC_CHECK_EQ_INT(SSL_write(f.server, sent, (int)sizeof sent),
                    (int)sizeof sent);
    uint8_t rec[8192];
    int n = BIO_read(f.s_out, rec, (int)sizeof rec);
    RC_CHECK(n > (int)sizeof sent);
    size_t have = 0;
    for (int i = 0; i < n; i++) {
      RC_CHECK_EQ_INT(rc_tls_feed(f.client, rec + i, 1), 0);
      long r = rc_tls_read(f.client, got + have, sizeof got - have);
      RC_CHECK(r >= 0);
      if (r > 0)
        have += (size_t)r;
      /* The record is only readable once its last byte is in. */
      RC_CHECK(i == n - 1 || have == 0);
    }
    RC_CHECK_EQ_INT(have, sizeof sent);
    RC_CHECK(memcmp(got, sent, sizeof sent) == 0);
  } else {
    RC_CHECK(!"setup and handshake");
  }
  teardown(&f);
}

RC_TEST(several_records_in_one_feed) {
  fixture f;
  static uint8_t sent[40000], got[40000];
  fill(sent, sizeof sent, 3);
  if (setup(&f, &good) && handshake(&f, 1u << 20) == 1) {
    /* Three writes, the last over the 16 KiB record limit: four or more
     * records, then all of them in one feed. */
    RC_CHECK_EQ_INT(SSL_write(f.server, sent, 5), 5);
    RC_CHECK_EQ_INT(SSL_write(f.server, sent + 5, 995), 995);
    RC_CHECK_EQ_INT(SSL_write(f.server, sent + 1000, 39000), 39000);
    size_t n = BIO_ctrl_pending(f.s_out);
    uint8_t *all = malloc(n);
    RC_CHECK(all != NULL);
    if (all != NULL) {
      RC_CHECK_EQ_INT(BIO_read(f.s_out, all, (int)n), (int)n);
      RC_CHECK_EQ_INT(rc_tls_feed(f.client, all, n), 0);
      free(all);
      RC_CHECK_EQ_INT(client_read_all(&f, got, sizeof got), sizeof got);
      RC_CHECK(memcmp(got, sent, sizeof sent) == 0);
    }
    /* And the other way: one large write is several records too. */
    RC_CHECK_EQ_INT(rc_tls_write(f.client, sent, sizeof sent), 0);
    RC_CHECK(to_server(&f));
    memset(got, 0, sizeof got);
    RC_CHECK_EQ_INT(server_read_all(&f, got, sizeof got), sizeof got);
    RC_CHECK(memcmp(got, sent, sizeof sent) == 0);
  } else {
    RC_CHECK(!"setup and handshake");
  }
  teardown(&f);
}

static const char *verify_error(long code) {
  static char want[192];
  (void)snprintf(want, sizeof want, "TLS: certificate verify failed: %s",
                 X509_verify_cert_error_string(code));
  return want;
}

RC_TEST(wrong_name_refused_when_verifying) {
  fixture f;
  setup_opts o = good;
  o.cert_host = "other.example";
  o.cert_san = "DNS:other.example";
  if (setup(&f, &o)) {
    RC_CHECK_EQ_INT(handshake(&f, 1u << 20), RC_TLS_E_FAILED);
    RC_CHECK(strcmp(rc_tls_error(f.client),
                    verify_error(X509_V_ERR_HOSTNAME_MISMATCH)) == 0);
    fprintf(stderr, "  (%s)\n", rc_tls_error(f.client));
  } else {
    RC_CHECK(!"setup");
  }
  teardown(&f);
}

RC_TEST(untrusted_refused_when_verifying) {
  fixture f;
  setup_opts o = good;
  o.trust_it = 0; /* cafile: another certificate of the same name */
  if (setup(&f, &o)) {
    RC_CHECK_EQ_INT(handshake(&f, 1u << 20), RC_TLS_E_FAILED);
    RC_CHECK(strcmp(rc_tls_error(f.client),
                    verify_error(X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT)) == 0);
    fprintf(stderr, "  (%s)\n", rc_tls_error(f.client));
  } else {
    RC_CHECK(!"setup");
  }
  teardown(&f);
}

RC_TEST(wrong_name_and_untrusted_accepted_without_verify) {
  fixture f;
  setup_opts o = {"other.example", "DNS:other.example", 0, 0, "localhost", 0};
  uint8_t in[8];
  if (setup(&f, &o)) {
    RC_CHECK(rc_tls_ctx_verifies(f.ctx) == 0);
    RC_CHECK_EQ_INT(handshake(&f, 1u << 20), 1);
    RC_CHECK(strcmp(rc_tls_error(f.client), "") == 0);
    RC_CHECK_EQ_INT(SSL_write(f.server, "ok", 2), 2);
    RC_CHECK(to_client(&f, 1u << 20, NULL) > 0);
    RC_CHECK_EQ_INT(client_read_all(&f, in, sizeof in), 2);
  } else {
    RC_CHECK(!"setup");
  }
  teardown(&f);
}

RC_TEST(chain_only_accepts_another_name_but_not_another_root) {
  fixture f;
  setup_opts o = {"other.example", "DNS:other.example", 1, 1, "localhost", 1};
  if (setup(&f, &o)) {
    RC_CHECK(rc_tls_ctx_verifies(f.ctx) == 1);
    RC_CHECK_EQ_INT(handshake(&f, 1u << 20), 1);
  } else {
    RC_CHECK(!"setup");
  }
  teardown(&f);
  o.trust_it = 0; /* the chain is still checked */
  if (setup(&f, &o)) {
    RC_CHECK_EQ_INT(handshake(&f, 1u << 20), RC_TLS_E_FAILED);
    RC_CHECK(strncmp(rc_tls_error(f.client), "TLS: certificate verify failed",
                     30) == 0);
  } else {
    RC_CHECK(!"setup");
  }
  teardown(&f);
}

RC_TEST(ip_address_name) {
  fixture f;
  setup_opts o = {"127.0.0.1", "IP:127.0.0.1", 1, 1, "127.0.0.1", 0};
  if (setup(&f, &o))
    RC_CHECK_EQ_INT(handshake(&f, 1u << 20), 1);
  else
    RC_CHECK(!"setup");
  teardown(&f);
  /* A DNS entry does not vouch for an address. */
  o.cert_san = "DNS:127.0.0.1";
  if (setup(&f, &o)) {
    RC_CHECK_EQ_INT(handshake(&f, 1u << 20), RC_TLS_E_FAILED);
    RC_CHECK(strcmp(rc_tls_error(f.client),
                    verify_error(X509_V_ERR_IP_ADDRESS_MISMATCH)) == 0);
  } else {
    RC_CHECK(!"setup");
  }
  teardown(&f);
}

static const uint8_t junk[] = "HTTP/1.1 400 Bad Request\r\n\r\n"
                              "\x16\x03\x03\x00\x05\x00\x01\x02\x03\x04";

RC_TEST(garbage_during_handshake) {
  fixture f;
  if (setup(&f, &good)) {
    RC_CHECK_EQ_INT(rc_tls_handshake(f.client), 0);
    RC_CHECK(rc_tls_pending(f.client) > 0); /* the ClientHello */
    RC_CHECK_EQ_INT(rc_tls_feed(f.client, junk, sizeof junk - 1), 0);
    RC_CHECK_EQ_INT(rc_tls_handshake(f.client), RC_TLS_E_FAILED);
    const char *e = rc_tls_error(f.client);
    RC_CHECK(strncmp(e, "TLS: ", 5) == 0 && strlen(e) > 5);
    fprintf(stderr, "  (%s)\n", e);
    /* Asked again, still an error rather than a crash. */
    RC_CHECK(rc_tls_handshake(f.client) < 0);
  } else {
    RC_CHECK(!"setup");
  }
  teardown(&f);
}

/* A close_notify alert where the ServerHello should be: the handshake
 * failed (no session was made), not an orderly end of one. */
RC_TEST(close_notify_during_handshake_is_a_failed_handshake) {
  static const uint8_t alert[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00};
  fixture f;
  if (setup(&f, &good)) {
    RC_CHECK_EQ_INT(rc_tls_handshake(f.client), 0);
    RC_CHECK_EQ_INT(rc_tls_feed(f.client, alert, sizeof alert), 0);
    RC_CHECK_EQ_INT(rc_tls_handshake(f.client), RC_TLS_E_FAILED);
    RC_CHECK(strcmp(rc_tls_error(f.client),
                    "TLS: closed by the peer before the handshake "
                    "completed") == 0);
  } else {
    RC_CHECK(!"setup");
  }
  teardown(&f);
}

RC_TEST(garbage_after_handshake) {
  fixture f;
  uint8_t in[64];
  if (setup(&f, &good) && handshake(&f, 1u << 20) == 1) {
    /* An application-data record whose bytes are not what was sealed. */
    uint8_t rec[5 + 40] = {0x17, 0x03, 0x03, 0x00, 40};
    fill(rec + 5, 40, 9);
    RC_CHECK_EQ_INT(rc_tls_feed(f.client, rec, sizeof rec), 0);
    RC_CHECK_EQ_INT(rc_tls_read(f.client, in, sizeof in), RC_TLS_E_FAILED);
    const char *e = rc_tls_error(f.client);
    RC_CHECK(strncmp(e, "TLS: ", 5) == 0 && strlen(e) > 5);
    fprintf(stderr, "  (%s)\n", e);
  } else {
    RC_CHECK(!"setup and handshake");
  }
  teardown(&f);
}

RC_TEST(close_notify_both_ways) {
  fixture f;
  uint8_t in[8];
  if (setup(&f, &good) && handshake(&f, 1u << 20) == 1) {
    RC_CHECK(SSL_shutdown(f.server) >= 0);
    RC_CHECK(to_client(&f, 1u << 20, NULL) > 0);
    RC_CHECK_EQ_INT(rc_tls_read(f.client, in, sizeof in), RC_TLS_E_CLOSED);
    RC_CHECK(strcmp(rc_tls_error(f.client), "TLS: closed by the peer") == 0);
    RC_CHECK_EQ_INT(rc_tls_shutdown(f.client), 0);
    RC_CHECK(to_server(&f));
    int r = SSL_read(f.server, in, (int)sizeof in);
    RC_CHECK(r <= 0 && SSL_get_error(f.server, r) == SSL_ERROR_ZERO_RETURN);
  } else {
    RC_CHECK(!"setup and handshake");
  }
  teardown(&f);
}

RC_TEST(contract_refusals) {
  char err[256] = "";
  /* A verifying client needs a name to check. */
  rc_tls_ctx *ctx = rc_tls_ctx_client(0, NULL, err, sizeof err);
  RC_ASSERT(ctx != NULL);
  rc_tls *t = rc_tls_new(ctx, RC_TLS_CLIENT, NULL);
  RC_CHECK(t != NULL); /* without verification a name is optional */
  rc_tls_free(t);
  rc_tls_ctx_free(ctx);
  fixture f;
  setup_opts o = good;
  if (setup(&f, &o)) {
    RC_CHECK(rc_tls_new(f.ctx, RC_TLS_CLIENT, NULL) == NULL);
    RC_CHECK(rc_tls_new(f.ctx, RC_TLS_CLIENT, "") == NULL);
  } else {
    RC_CHECK(!"setup");
  }
  teardown(&f);
  ctx = rc_tls_ctx_client(1, "/nonexistent/ca.pem", err, sizeof err);
  RC_CHECK(ctx == NULL);
  RC_CHECK(strncmp(err, "TLS: cannot load CA file /nonexistent/ca.pem", 44) ==
           0);
  rc_tls_ctx_free(ctx);
  rc_tls_free(NULL);
  rc_tls_ctx_free(NULL);
  uint8_t r[32] = {0}, zero[32] = {0};
  RC_CHECK_EQ_INT(rc_tls_random(r, sizeof r), 0);
  RC_CHECK(memcmp(r, zero, sizeof r) != 0);
}

/* --- the server role -------------------------------------------------------
 */

typedef struct pair {
  char dir[64], certfile[96], keyfile[96], lockedkey[96];
  cert c;
  rc_tls_ctx *sctx, *cctx;
  rc_tls *server, *client;
} pair;

static int write_key(const char *path, EVP_PKEY *k, const char *password) {
  FILE *f = fopen(path, "w");
  if (f == NULL)
    return 0;
  int ok = PEM_write_PrivateKey(
               f, k, password != NULL ? EVP_aes_128_cbc() : NULL,
               (unsigned char *)password,
               password != NULL ? (int)strlen(password) : 0, NULL, NULL) == 1;
  return fclose(f) == 0 && ok;
}

static int pair_files(pair *p) {
  memset(p, 0, sizeof *p);
  (void)snprintf(p->dir, sizeof p->dir, "/tmp/rc_test_tls.XXXXXX");
  if (mkdtemp(p->dir) == NULL) {
    p->dir[0] = '\0';
    return 0;
  }
  (void)snprintf(p->certfile, sizeof p->certfile, "%s/cert.pem", p->dir);
  (void)snprintf(p->keyfile, sizeof p->keyfile, "%s/key.pem", p->dir);
  (void)snprintf(p->lockedkey, sizeof p->lockedkey, "%s/locked.pem", p->dir);
  return make_cert(&p->c, "localhost", "DNS:localhost") &&
         write_pem(p->certfile, p->c.x509) &&
         write_key(p->keyfile, p->c.key, NULL) &&
         write_key(p->lockedkey, p->c.key, "sesame");
}

static void pair_free(pair *p) {
  rc_tls_free(p->server);
  rc_tls_free(p->client);
  rc_tls_ctx_free(p->sctx);
  rc_tls_ctx_free(p->cctx);
  cert_free(&p->c);
  if (p->dir[0] != '\0') {
    (void)unlink(p->certfile);
    (void)unlink(p->keyfile);
    (void)unlink(p->lockedkey);
    (void)rmdir(p->dir);
  }
  ERR_clear_error();
}

/* Moves from's pending ciphertext to to, as a block with headroom. */
static int carry(rc_tls *from, rc_tls *to) {
  size_t len;
  uint8_t *block = rc_tls_take_block(from, &len);
  if (block == NULL)
    return 1;
  int ok = rc_tls_feed(to, block + 16, len) == 0;
  free(block);
  return ok;
}

/* Both filters' handshakes: 1 when both completed, else the first
 * negative result. */
static int pair_handshake(pair *p) {
  int c = 0, s = 0;
  for (int round = 0; round < 10 && (c != 1 || s != 1); round++) {
    if (c != 1 && (c = rc_tls_handshake(p->client)) < 0)
      return c;
    if (!carry(p->client, p->server))
      return -100;
    if (s != 1 && (s = rc_tls_handshake(p->server)) < 0) {
      (void)carry(p->server, p->client); /* the alert */
      return s;
    }
    if (!carry(p->server, p->client))
      return -100;
  }
  return c == 1 && s == 1 ? 1 : 0;
}

static int pair_setup(pair *p, const rc_tls_server_opts *o) {
  char err[256];
  p->sctx = rc_tls_ctx_server(o, err, sizeof err);
  p->cctx = rc_tls_ctx_client(0, NULL, err, sizeof err);
  if (p->sctx == NULL || p->cctx == NULL)
    return 0;
  p->server = rc_tls_new(p->sctx, RC_TLS_SERVER, NULL);
  p->client = rc_tls_new(p->cctx, RC_TLS_CLIENT, "localhost");
  if (p->server == NULL || p->client == NULL)
    return 0;
  rc_tls_set_headroom(p->server, 16);
  rc_tls_set_headroom(p->client, 16);
  return 1;
}

RC_TEST(server_serves_the_filter_client) {
  pair p;
  if (pair_files(&p)) {
    rc_tls_server_opts o = {.certfile = p.certfile, .keyfile = p.keyfile};
    RC_ASSERT(pair_setup(&p, &o));
    RC_CHECK_EQ_INT(pair_handshake(&p), 1);
    RC_CHECK(rc_tls_ready(p.server) && rc_tls_ready(p.client));
    RC_CHECK_EQ_INT(rc_tls_version(p.server), 0x0304);
    RC_CHECK(rc_tls_cipher_suite(p.server) != 0);
    char subject[64];
    RC_CHECK_EQ_INT((int)rc_tls_peer_subject(p.server, subject, sizeof subject),
                    0); /* no client certificate */
    size_t pem_len;
    RC_CHECK(rc_tls_peer_chain_pem(p.server, &pem_len) == NULL);
    /* the client sees the server's certificate */
    RC_CHECK(rc_tls_peer_subject(p.client, subject, sizeof subject) > 0);
    RC_CHECK(strcmp(subject, "CN=localhost") == 0);
    /* 40 KiB from the server in one write: records the client reads back */
    static uint8_t big[40960], back[40960];
    fill(big, sizeof big, 7);
    RC_CHECK_EQ_INT(rc_tls_reserve(p.server, sizeof big + 256), 0);
    RC_CHECK_EQ_INT(rc_tls_write(p.server, big, sizeof big), 0);
    RC_CHECK(rc_tls_pending(p.server) > sizeof big);
    RC_CHECK(carry(p.server, p.client));
    RC_CHECK_EQ_INT((int)rc_tls_pending(p.server), 0);
    size_t got = 0;
    long r;
    while ((r = rc_tls_read(p.client, back + got, sizeof back - got)) > 0)
      got += (size_t)r;
    RC_CHECK_EQ_INT((int)got, (int)sizeof big);
    RC_CHECK(memcmp(big, back, sizeof big) == 0);
    RC_CHECK_EQ_INT((int)rc_tls_unread(p.client), 0);
  }
  pair_free(&p);
}

RC_TEST(server_context_errors_name_the_file) {
  pair p;
  char err[512];
  if (pair_files(&p)) {
    rc_tls_server_opts o = {.certfile = "/nonexistent/c.pem"};
    RC_CHECK(rc_tls_ctx_server(&o, err, sizeof err) == NULL);
    RC_CHECK(strcmp(err, "ssl_certfile /nonexistent/c.pem: no such file") == 0);
    o.certfile = p.keyfile; /* a key where the certificate should be */
    RC_CHECK(rc_tls_ctx_server(&o, err, sizeof err) == NULL);
    RC_CHECK(strstr(err, "not a PEM certificate") != NULL);
    RC_CHECK(strstr(err, p.keyfile) != NULL);
    o.certfile = p.certfile; /* no key in the certificate's file */
    RC_CHECK(rc_tls_ctx_server(&o, err, sizeof err) == NULL);
    RC_CHECK(strstr(err, "not a PEM private key") != NULL);
    o.keyfile = p.lockedkey; /* encrypted, no password: no prompt */
    RC_CHECK(rc_tls_ctx_server(&o, err, sizeof err) == NULL);
    RC_CHECK(strstr(err, "ssl_keyfile_password") != NULL);
    o.password = "wrong";
    RC_CHECK(rc_tls_ctx_server(&o, err, sizeof err) == NULL);
    RC_CHECK(strstr(err, "wrong password") != NULL);
    o.password = "sesame";
    rc_tls_ctx *ok = rc_tls_ctx_server(&o, err, sizeof err);
    RC_CHECK(ok != NULL);
    rc_tls_ctx_free(ok);
    /* another key than the certificate's */
    cert other;
    char otherkey[128];
    (void)snprintf(otherkey, sizeof otherkey, "%s/other.pem", p.dir);
    if (make_cert(&other, "localhost", "DNS:localhost") &&
        write_key(otherkey, other.key, NULL)) {
      rc_tls_server_opts m = {.certfile = p.certfile, .keyfile = otherkey};
      RC_CHECK(rc_tls_ctx_server(&m, err, sizeof err) == NULL);
      RC_CHECK(strstr(err, "does not match ssl_certfile") != NULL);
    }
    cert_free(&other);
    (void)unlink(otherkey);
  }
  pair_free(&p);
}

RC_TEST(server_requires_a_client_certificate) {
  pair p;
  if (pair_files(&p)) {
    rc_tls_server_opts o = {.certfile = p.certfile,
                            .keyfile = p.keyfile,
                            .ca_certs = p.certfile,
                            .cert_reqs = RC_TLS_CERT_REQUIRED};
    RC_ASSERT(pair_setup(&p, &o));
    int r = pair_handshake(&p);
    RC_CHECK(r < 0);
    /* TLS 1.3: the client may finish first; its next read gets the alert */
    if (r < 0 && rc_tls_ready(p.client)) {
      uint8_t buf[64];
      RC_CHECK(rc_tls_read(p.client, buf, sizeof buf) < 0);
    }
    RC_CHECK(!rc_tls_ready(p.server));
    RC_CHECK(strstr(rc_tls_error(p.server), "certificate") != NULL);
  }
  pair_free(&p);
}

RC_TEST_MAIN(RC_CASE(handshake_completes),
             RC_CASE(handshake_in_one_byte_pieces), RC_CASE(data_both_ways),
             RC_CASE(records_in_one_byte_pieces),
             RC_CASE(several_records_in_one_feed),
             RC_CASE(wrong_name_refused_when_verifying),
             RC_CASE(untrusted_refused_when_verifying),
             RC_CASE(wrong_name_and_untrusted_accepted_without_verify),
             RC_CASE(chain_only_accepts_another_name_but_not_another_root),
             RC_CASE(ip_address_name), RC_CASE(garbage_during_handshake),
             RC_CASE(close_notify_during_handshake_is_a_failed_handshake),
             RC_CASE(garbage_after_handshake), RC_CASE(close_notify_both_ways),
             RC_CASE(contract_refusals),
             RC_CASE(server_serves_the_filter_client),
             RC_CASE(server_context_errors_name_the_file),
             RC_CASE(server_requires_a_client_certificate))
