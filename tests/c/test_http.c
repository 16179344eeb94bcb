/* test_http.c - request-head parser, upgrade check (RFC 6455 4.2.1), accept
 * value (RFC 6455 1.3) and response bytes.
 *
 * Inputs are copied into heap buffers of exactly their length, so a parser
 * that reads one byte too far is caught under AddressSanitizer or valgrind. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/rc_http.h"
#include "support/rc_test.h"

#define MAX_BYTES 8192
#define MAX_HEADERS 64

static const char upgrade_req[] =
    "GET /chat?room=lobby&x=1 HTTP/1.1\r\n"
    "Host: example.com:8080\r\n"
    "Upgrade: websocket\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Origin: http://example.com\r\n"
    "\r\n";

/* Owns an exact-size copy of the input; the parsed request points into it. */
typedef struct parsed {
  char *buf;
  size_t len;
  int rc;
  rc_http_request req;
} parsed;

static void parse_with(parsed *p, const char *s, size_t len, size_t max_bytes,
                       size_t max_headers) {
  p->buf = malloc(len > 0 ? len : 1);
  if (p->buf == NULL) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  memcpy(p->buf, s, len);
  p->len = len;
  p->rc = rc_http_parse_request(p->buf, len, max_bytes, max_headers, &p->req);
}

static void parse(parsed *p, const char *s) {
  parse_with(p, s, strlen(s), MAX_BYTES, MAX_HEADERS);
}

static void done(parsed *p) {
  free(p->buf);
  p->buf = NULL;
}

/* Parses s, which must be a complete valid head, and runs the upgrade check. */
static int check(const char *s, rc_http_upgrade_check *out) {
  parsed p;
  parse(&p, s);
  int rc = p.rc;
  if (rc > 0)
    rc_http_check_upgrade(&p.req, out);
  done(&p);
  return rc;
}

static int header_is(const rc_http_request *req, const char *name,
                     const char *value) {
  const rc_http_header *h = rc_http_find_header(req, name);
  return h != NULL && h->value_len == strlen(value) &&
         memcmp(h->value, value, h->value_len) == 0;
}

/* ---- parser ---- */

RC_TEST(parse_complete_upgrade_request) {
  static parsed p;
  parse(&p, upgrade_req);
  int rc = p.rc;
  rc_http_request *r = &p.req;
  int ok = rc == (int)strlen(upgrade_req) && r->method_len == 3 &&
           memcmp(r->method, "GET", 3) == 0 && r->path_len == 5 &&
           memcmp(r->path, "/chat", 5) == 0 && r->query_len == 14 &&
           memcmp(r->query, "room=lobby&x=1", 14) == 0 &&
           r->version_minor == 1 && r->num_headers == 6 &&
           r->headers[0].name_len == 4 &&
           memcmp(r->headers[0].name, "Host", 4) == 0 &&
           header_is(r, "Host", "example.com:8080") &&
           header_is(r, "Origin", "http://example.com") &&
           header_is(r, "Sec-WebSocket-Version", "13");
  RC_CHECK_EQ_INT(rc, (int)strlen(upgrade_req));
  RC_CHECK_EQ_INT(r->num_headers, 6);
  RC_CHECK(ok);
  done(&p);
}

/* The bytes after the head (e.g. a first frame sent eagerly) are not part of
 * it: the return value says where the head ends. */
RC_TEST(parse_stops_at_end_of_head) {
  static parsed p;
  char buf[sizeof upgrade_req + 8];
  memcpy(buf, upgrade_req, sizeof upgrade_req - 1);
  memcpy(buf + sizeof upgrade_req - 1, "\x81\x05hello", 7);
  parse_with(&p, buf, sizeof upgrade_req - 1 + 7, MAX_BYTES, MAX_HEADERS);
  int rc = p.rc;
  done(&p);
  RC_ASSERT_EQ_INT(rc, (int)(sizeof upgrade_req - 1));
}

RC_TEST(parse_incomplete_at_every_prefix) {
  size_t len = strlen(upgrade_req);
  for (size_t k = 0; k < len; k++) {
    static parsed p;
    parse_with(&p, upgrade_req, k, MAX_BYTES, MAX_HEADERS);
    int rc = p.rc;
    done(&p);
    if (rc != RC_HTTP_INCOMPLETE)
      fprintf(stderr, "  prefix length %zu\n", k);
    RC_ASSERT_EQ_INT(rc, RC_HTTP_INCOMPLETE);
  }
}

RC_TEST(parse_bare_lf_tolerated) {
  static parsed p;
  parse(&p, "GET / HTTP/1.1\nHost: a\nX: b\r\n\n");
  int rc = p.rc;
  int ok = rc > 0 && p.req.num_headers == 2 && header_is(&p.req, "host", "a") &&
           header_is(&p.req, "x", "b");
  done(&p);
  RC_ASSERT_EQ_INT(rc, 30);
  RC_ASSERT(ok);
}

RC_TEST(parse_http10_and_no_headers) {
  static parsed p;
  parse(&p, "HEAD /index.html HTTP/1.0\r\n\r\n");
  int rc = p.rc;
  int minor = p.req.version_minor;
  size_t nh = p.req.num_headers;
  int path_ok =
      p.req.path_len == 11 && memcmp(p.req.path, "/index.html", 11) == 0;
  int query_ok =
      p.req.query_len == 0 && p.req.query != NULL && p.req.query[0] == '\0';
  done(&p);
  RC_ASSERT_EQ_INT(rc, 29);
  RC_ASSERT_EQ_INT(minor, 0);
  RC_ASSERT_EQ_INT(nh, 0);
  RC_ASSERT(path_ok);
  RC_ASSERT(query_ok);
}

RC_TEST(parse_query_split_at_first_question_mark) {
  static parsed p;
  parse(&p, "GET /a/b?c=1?d=2 HTTP/1.1\r\n\r\n");
  int ok = p.rc > 0 && p.req.path_len == 4 &&
           memcmp(p.req.path, "/a/b", 4) == 0 && p.req.query_len == 7 &&
           memcmp(p.req.query, "c=1?d=2", 7) == 0;
  done(&p);
  RC_ASSERT(ok);

  parse(&p, "GET /? HTTP/1.1\r\n\r\n");
  ok = p.rc > 0 && p.req.path_len == 1 && p.req.query_len == 0;
  done(&p);
  RC_ASSERT(ok);
}

RC_TEST(parse_trims_value_whitespace) {
  static parsed p;
  parse(&p, "GET / HTTP/1.1\r\nA:   x  y \t\r\nB:\r\nC: \t \r\nD:\tz\r\n\r\n");
  int rc = p.rc;
  int ok = header_is(&p.req, "A", "x  y") && header_is(&p.req, "B", "") &&
           header_is(&p.req, "C", "") && header_is(&p.req, "D", "z");
  done(&p);
  RC_ASSERT(rc > 0);
  RC_ASSERT(ok);
}

RC_TEST(parse_accepts_every_token_char) {
  static parsed p;
  parse(&p, "M-SEARCH_1.x~ / HTTP/1.1\r\nA!#$%&'*+-.^_`|~Z9: v\r\n\r\n");
  int rc = p.rc;
  int ok = rc > 0 && p.req.method_len == 13 &&
           header_is(&p.req, "a!#$%&'*+-.^_`|~z9", "v");
  done(&p);
  RC_ASSERT(rc > 0);
  RC_ASSERT(ok);
}

RC_TEST(parse_obs_text_allowed_in_values) {
  static parsed p;
  parse(&p, "GET / HTTP/1.1\r\nX-Name: caf\xc3\xa9\r\nX-Raw: \xff\x80\r\n\r\n");
  int rc = p.rc;
  int ok = header_is(&p.req, "x-name", "caf\xc3\xa9");
  done(&p);
  RC_ASSERT(rc > 0);
  RC_ASSERT(ok);
}

RC_TEST(parse_rejects_obs_fold) {
  static parsed p;
  parse(&p, "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n");
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_BAD);
  done(&p);
  parse(&p, "GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n");
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_BAD);
  done(&p);
  /* Whitespace before the first header line is the same hazard. */
  parse(&p, "GET / HTTP/1.1\r\n Host: a\r\n\r\n");
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_BAD);
  done(&p);
}

RC_TEST(parse_rejects_bad_header_names) {
  static const char *const bad[] = {
      "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
      "GET / HTTP/1.1\r\nName : x\r\n\r\n",
      "GET / HTTP/1.1\r\nName\t: x\r\n\r\n",
      "GET / HTTP/1.1\r\nNa\"me: x\r\n\r\n",
      "GET / HTTP/1.1\r\nNa(me): x\r\n\r\n",
      "GET / HTTP/1.1\r\nNa/me: x\r\n\r\n",
      "GET / HTTP/1.1\r\nNa,me: x\r\n\r\n",
      "GET / HTTP/1.1\r\nNa@me: x\r\n\r\n",
      "GET / HTTP/1.1\r\nNa{me}: x\r\n\r\n",
      "GET / HTTP/1.1\r\nNa=me: x\r\n\r\n",
      "GET / HTTP/1.1\r\n: x\r\n\r\n",
      "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
      "GET / HTTP/1.1\r\nN\x01: x\r\n\r\n",
      "GET / HTTP/1.1\r\nN\xc3\xa9: x\r\n\r\n",
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    static parsed p;
    parse(&p, bad[k]);
    if (p.rc != RC_HTTP_E_BAD)
      fprintf(stderr, "  case %zu\n", k);
    RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_BAD);
    done(&p);
  }
}

RC_TEST(parse_rejects_control_chars_in_values) {
  static const char *const bad[] = {
      "GET / HTTP/1.1\r\nX: a\x01"
      "b\r\n\r\n",
      "GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n",
      "GET / HTTP/1.1\r\nX: a\x1b[0m\r\n\r\n",
      "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", /* bare CR */
      "GET / HTTP/1.1\r\nX: a\r\r\n\r\n",
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    static parsed p;
    parse(&p, bad[k]);
    if (p.rc != RC_HTTP_E_BAD)
      fprintf(stderr, "  case %zu\n", k);
    RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_BAD);
    done(&p);
  }
  /* NUL cannot go through strlen. */
  static const char nul[] = "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n";
  static parsed p;
  parse_with(&p, nul, sizeof nul - 1, MAX_BYTES, MAX_HEADERS);
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_BAD);
  done(&p);
  static const char nul_name[] = "GET / HTTP/1.1\r\nX\0: a\r\n\r\n";
  parse_with(&p, nul_name, sizeof nul_name - 1, MAX_BYTES, MAX_HEADERS);
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_BAD);
  done(&p);
  static const char nul_method[] = "G\0T / HTTP/1.1\r\n\r\n";
  parse_with(&p, nul_method, sizeof nul_method - 1, MAX_BYTES, MAX_HEADERS);
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_BAD);
  done(&p);
}

RC_TEST(parse_rejects_bad_request_lines) {
  static const char *const bad[] = {
      "GET  / HTTP/1.1\r\n\r\n", /* two spaces */
      "GET /  HTTP/1.1\r\n\r\n",
      "GET http://x/ HTTP/1.1\r\n\r\n", /* absolute-form */
      "OPTIONS * HTTP/1.1\r\n\r\n",     /* asterisk-form */
      "GET / HTTP/2.0\r\n\r\n",
      "GET / HTTP/1.2\r\n\r\n",
      "GET / http/1.1\r\n\r\n",
      "GET / HTTP/1.1 \r\n\r\n",
      "GET /a b HTTP/1.1\r\n\r\n",
      "GET /a\tb HTTP/1.1\r\n\r\n",
      "GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
      "G@T / HTTP/1.1\r\n\r\n",
      " GET / HTTP/1.1\r\n\r\n",
      " / HTTP/1.1\r\n\r\n", /* empty method */
      "\r\nGET / HTTP/1.1\r\n\r\n",
      "GET /\r\n\r\n", /* HTTP/0.9 */
      "GET / HTTP/1.1\rX\r\n\r\n",
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    static parsed p;
    parse(&p, bad[k]);
    if (p.rc != RC_HTTP_E_BAD)
      fprintf(stderr, "  case %zu\n", k);
    RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_BAD);
    done(&p);
  }
}

/* Garbage is rejected as soon as it is seen, without waiting for a blank
 * line that may never come (a TLS ClientHello on a plain port, say). */
RC_TEST(parse_rejects_garbage_early) {
  static parsed p;
  parse_with(&p, "\x16\x03\x01\x02\x00\x01", 6, MAX_BYTES, MAX_HEADERS);
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_BAD);
  done(&p);
  parse(&p, "GET / HTTP/1.1\r\nBad Name");
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_BAD);
  done(&p);
}

RC_TEST(parse_too_many_headers) {
  static const char s[] =
      "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
  static parsed p;
  parse_with(&p, s, sizeof s - 1, MAX_BYTES, 4);
  RC_CHECK_EQ_INT(p.rc, (int)(sizeof s - 1));
  RC_CHECK_EQ_INT(p.req.num_headers, 4);
  done(&p);
  parse_with(&p, s, sizeof s - 1, MAX_BYTES, 3);
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_TOO_LARGE);
  done(&p);
  /* Known as soon as the extra header line starts. */
  parse_with(&p, s, 35, MAX_BYTES, 3);
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_TOO_LARGE);
  done(&p);
  parse_with(&p, s, 34, MAX_BYTES, 3);
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_INCOMPLETE);
  done(&p);
}

RC_TEST(parse_max_headers_is_capped) {
  char buf[4096];
  size_t n = (size_t)snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\n");
  for (int i = 0; i < RC_HTTP_MAX_HEADERS_CAP + 1; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "H%d: v\r\n", i);
  n += (size_t)snprintf(buf + n, sizeof buf - n, "\r\n");
  RC_ASSERT(n < sizeof buf);
  static parsed p;
  parse_with(&p, buf, n, sizeof buf, 100000);
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_TOO_LARGE);
  done(&p);
}

RC_TEST(parse_too_large) {
  size_t len = strlen(upgrade_req);
  static parsed p;
  parse_with(&p, upgrade_req, len, len, MAX_HEADERS);
  RC_CHECK_EQ_INT(p.rc, (int)len); /* exactly at the limit is fine */
  done(&p);
  parse_with(&p, upgrade_req, len, len - 1, MAX_HEADERS);
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_TOO_LARGE);
  done(&p);
  /* Incomplete: too large once len reaches max_bytes, waiting before. */
  parse_with(&p, upgrade_req, 40, 40, MAX_HEADERS);
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_TOO_LARGE);
  done(&p);
  parse_with(&p, upgrade_req, 39, 40, MAX_HEADERS);
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_INCOMPLETE);
  done(&p);
  /* One endless header line. */
  char big[600];
  memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
  memset(big + 19, 'a', sizeof big - 19);
  parse_with(&p, big, sizeof big, 512, MAX_HEADERS);
  RC_CHECK_EQ_INT(p.rc, RC_HTTP_E_TOO_LARGE);
  done(&p);
}

RC_TEST(find_header_is_case_insensitive) {
  static parsed p;
  parse(&p,
        "GET / HTTP/1.1\r\nHost: one\r\nX-Dup: first\r\nx-dup: second\r\n\r\n");
  int ok = header_is(&p.req, "host", "one") &&
           header_is(&p.req, "HOST", "one") &&
           header_is(&p.req, "X-DUP", "first") &&
           rc_http_find_header(&p.req, "Hos") == NULL &&
           rc_http_find_header(&p.req, "Hostx") == NULL &&
           rc_http_find_header(&p.req, "Missing") == NULL;
  done(&p);
  RC_ASSERT(ok);
}

static int has_token(const char *value, const char *token) {
  rc_http_header h = {"X", 1, value, strlen(value)};
  return rc_http_header_has_token(&h, token);
}

RC_TEST(header_token_lists) {
  RC_ASSERT_EQ_INT(has_token("keep-alive, Upgrade", "upgrade"), 1);
  RC_ASSERT_EQ_INT(has_token("Upgrade", "upgrade"), 1);
  RC_ASSERT_EQ_INT(has_token("keep-alive,Upgrade", "upgrade"), 1);
  RC_ASSERT_EQ_INT(has_token("UPGRADE , keep-alive", "upgrade"), 1);
  RC_ASSERT_EQ_INT(has_token(", ,\tupgrade\t,", "upgrade"), 1);
  RC_ASSERT_EQ_INT(has_token("WebSocket", "websocket"), 1);
  RC_ASSERT_EQ_INT(has_token("keep-alive", "upgrade"), 0);
  RC_ASSERT_EQ_INT(has_token("upgraded", "upgrade"), 0);
  RC_ASSERT_EQ_INT(has_token("x-upgrade", "upgrade"), 0);
  RC_ASSERT_EQ_INT(has_token("upgrad", "upgrade"), 0);
  RC_ASSERT_EQ_INT(has_token("", "upgrade"), 0);
  RC_ASSERT_EQ_INT(has_token(",,", "upgrade"), 0);
  RC_ASSERT_EQ_INT(rc_http_header_has_token(NULL, "upgrade"), 0);
}

/* ---- upgrade check ---- */

RC_TEST(upgrade_valid) {
  static parsed p;
  parse(&p, upgrade_req);
  RC_ASSERT(p.rc > 0);
  rc_http_upgrade_check c;
  rc_http_check_upgrade(&p.req, &c);
  int key_ok = c.key != NULL && c.key_len == 24 &&
               memcmp(c.key, "dGhlIHNhbXBsZSBub25jZQ==", 24) == 0;
  done(&p);
  RC_ASSERT_EQ_INT(c.status, 0);
  RC_ASSERT(key_ok);
}

RC_TEST(upgrade_split_and_mixed_case_headers) {
  rc_http_upgrade_check c;
  int rc = check(
      "GET / HTTP/1.1\r\nhost: h\r\nupgrade: h2c\r\nUPGRADE: WebSocket\r\n"
      "connection: keep-alive\r\nCONNECTION: UPGRADE\r\n"
      "sec-websocket-key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"
      "sec-websocket-version: 13\r\n\r\n",
      &c);
  RC_ASSERT(rc > 0);
  RC_ASSERT_EQ_INT(c.status, 0);
  RC_ASSERT_EQ_INT(c.key_len, 24);
}

RC_TEST(upgrade_plain_http_is_status_1) {
  rc_http_upgrade_check c;
  RC_ASSERT(check("GET /index.html HTTP/1.1\r\nHost: h\r\n\r\n", &c) > 0);
  RC_ASSERT_EQ_INT(c.status, 1);
  RC_ASSERT(check("POST /x HTTP/1.0\r\nHost: h\r\nConnection: Upgrade\r\n\r\n",
                  &c) > 0);
  RC_ASSERT_EQ_INT(c.status, 1);
  RC_ASSERT(check("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n"
                  "Connection: Upgrade\r\n\r\n",
                  &c) > 0);
  RC_ASSERT_EQ_INT(c.status, 1);
  RC_ASSERT(check("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websockets\r\n\r\n",
                  &c) > 0);
  RC_ASSERT_EQ_INT(c.status, 1);
}

#define KEY "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
#define VER "Sec-WebSocket-Version: 13\r\n"
#define UPG "Upgrade: websocket\r\nConnection: Upgrade\r\n"

RC_TEST(upgrade_errors) {
  static const struct {
    const char *req;
    int status;
    const char *reason;
  } v[] = {
      {"POST / HTTP/1.1\r\nHost: h\r\n" UPG KEY VER "\r\n", 405,
       "WebSocket upgrade requires GET"},
      {"get / HTTP/1.1\r\nHost: h\r\n" UPG KEY VER "\r\n", 405,
       "WebSocket upgrade requires GET"},
      {"GET / HTTP/1.0\r\nHost: h\r\n" UPG KEY VER "\r\n", 400,
       "WebSocket upgrade requires HTTP/1.1"},
      {"GET / HTTP/1.1\r\n" UPG KEY VER "\r\n", 400, "missing Host"},
      {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n" UPG KEY VER "\r\n", 400,
       "duplicate Host"},
      {"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n" KEY VER "\r\n",
       400, "Connection header lacks \"upgrade\""},
      {"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
       "Connection: keep-alive\r\n" KEY VER "\r\n",
       400, "Connection header lacks \"upgrade\""},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG VER "\r\n", 400,
       "missing Sec-WebSocket-Key"},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG "Sec-WebSocket-Key: abc\r\n" VER
       "\r\n",
       400, "invalid Sec-WebSocket-Key"},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG "Sec-WebSocket-Key:\r\n" VER "\r\n",
       400, "invalid Sec-WebSocket-Key"},
      /* Valid base64, but 18 bytes. */
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQAA\r\n" VER "\r\n",
       400, "invalid Sec-WebSocket-Key"},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=!\r\n" VER "\r\n",
       400, "invalid Sec-WebSocket-Key"},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG KEY KEY VER "\r\n", 400,
       "duplicate Sec-WebSocket-Key"},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG KEY "\r\n", 426,
       "missing Sec-WebSocket-Version"},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG KEY
       "Sec-WebSocket-Version: 8\r\n\r\n",
       426, "unsupported Sec-WebSocket-Version"},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG KEY
       "Sec-WebSocket-Version: 013\r\n\r\n",
       426, "unsupported Sec-WebSocket-Version"},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG KEY
       "Sec-WebSocket-Version: 13, 8\r\n\r\n",
       426, "unsupported Sec-WebSocket-Version"},
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG KEY VER VER "\r\n", 400,
       "duplicate Sec-WebSocket-Version"},
      /* Another version with a key we would not accept: 426 tells the client
       * which version to speak, which is the more useful answer. */
      {"GET / HTTP/1.1\r\nHost: h\r\n" UPG "Sec-WebSocket-Version: 8\r\n\r\n",
       426, "unsupported Sec-WebSocket-Version"},
  };
  for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
    rc_http_upgrade_check c;
    int rc = check(v[k].req, &c);
    if (rc <= 0) {
      fprintf(stderr, "  case %zu did not parse: %d\n", k, rc);
      RC_CHECK(rc > 0);
      continue;
    }
    if (c.status != v[k].status || c.reason == NULL ||
        strcmp(c.reason, v[k].reason) != 0)
      fprintf(stderr, "  case %zu\n", k);
    RC_CHECK_EQ_INT(c.status, v[k].status);
    RC_ASSERT_EQ_STR(c.reason, v[k].reason);
  }
}

RC_TEST(upgrade_version_trimmed) {
  rc_http_upgrade_check c;
  RC_ASSERT(check("GET / HTTP/1.1\r\nHost: h\r\n" UPG KEY
                  "Sec-WebSocket-Version:   13  \r\n\r\n",
                  &c) > 0);
  RC_ASSERT_EQ_INT(c.status, 0);
}

/* ---- accept value ---- */

RC_TEST(accept_value_rfc6455_example) {
  char out[29];
  memset(out, 'X', sizeof out);
  rc_ws_accept_value("dGhlIHNhbXBsZSBub25jZQ==", 24, out);
  RC_ASSERT_EQ_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

RC_TEST(accept_value_uses_key_len) {
  char out[29];
  rc_ws_accept_value("dGhlIHNhbXBsZSBub25jZQ==garbage", 24, out);
  RC_ASSERT_EQ_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

/* ---- responses ---- */

static char *resp;
static size_t resp_len;

static void free_resp(void) {
  free(resp);
  resp = NULL;
}

RC_TEST(response_101) {
  resp =
      rc_http_response(101,
                       "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n",
                       NULL, 0, 0, &resp_len);
  RC_ASSERT(resp != NULL);
  static const char want[] =
      "HTTP/1.1 101 Switching Protocols\r\n"
      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
      "\r\n";
  char copy[sizeof want];
  size_t n = resp_len < sizeof copy ? resp_len : sizeof copy;
  memcpy(copy, resp, n);
  free_resp();
  RC_ASSERT_EQ_BYTES(copy, n, want);
}

RC_TEST(response_400_with_body_and_close) {
  resp = rc_http_response(400, NULL, "missing Host", 12, 1, &resp_len);
  RC_ASSERT(resp != NULL);
  static const char want[] = "HTTP/1.1 400 Bad Request\r\n"
                             "Content-Length: 12\r\n"
                             "Connection: close\r\n"
                             "\r\n"
                             "missing Host";
  char copy[sizeof want];
  size_t n = resp_len < sizeof copy ? resp_len : sizeof copy;
  memcpy(copy, resp, n);
  free_resp();
  RC_ASSERT_EQ_BYTES(copy, n, want);
}

RC_TEST(response_426_without_body) {
  resp = rc_http_response(426,
                          "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n",
                          NULL, 0, 0, &resp_len);
  RC_ASSERT(resp != NULL);
  static const char want[] = "HTTP/1.1 426 Upgrade Required\r\n"
                             "Sec-WebSocket-Version: 13\r\n"
                             "Upgrade: websocket\r\n"
                             "Content-Length: 0\r\n"
                             "\r\n";
  char copy[sizeof want];
  size_t n = resp_len < sizeof copy ? resp_len : sizeof copy;
  memcpy(copy, resp, n);
  free_resp();
  RC_ASSERT_EQ_BYTES(copy, n, want);
}

RC_TEST(response_binary_body) {
  static const char body[] = "a\0b\r\n";
  resp = rc_http_response(200, "Content-Type: application/octet-stream\r\n",
                          body, sizeof body - 1, 0, &resp_len);
  RC_ASSERT(resp != NULL);
  static const char want[] = "HTTP/1.1 200 OK\r\n"
                             "Content-Type: application/octet-stream\r\n"
                             "Content-Length: 5\r\n"
                             "\r\n"
                             "a\0b\r\n";
  char copy[sizeof want];
  size_t n = resp_len < sizeof copy ? resp_len : sizeof copy;
  memcpy(copy, resp, n);
  free_resp();
  RC_ASSERT_EQ_BYTES(copy, n, want);
}

/* close_after only speaks of non-101 responses: a 101 never says close. */
RC_TEST(response_101_ignores_close_after) {
  resp = rc_http_response(101, NULL, NULL, 0, 1, &resp_len);
  RC_ASSERT(resp != NULL);
  static const char want[] = "HTTP/1.1 101 Switching Protocols\r\n\r\n";
  char copy[sizeof want];
  size_t n = resp_len < sizeof copy ? resp_len : sizeof copy;
  memcpy(copy, resp, n);
  free_resp();
  RC_ASSERT_EQ_BYTES(copy, n, want);
}

RC_TEST(response_unknown_status) {
  resp = rc_http_response(599, NULL, NULL, 0, 1, &resp_len);
  RC_ASSERT(resp != NULL);
  static const char want[] = "HTTP/1.1 599 Unknown\r\n"
                             "Content-Length: 0\r\n"
                             "Connection: close\r\n"
                             "\r\n";
  char copy[sizeof want];
  size_t n = resp_len < sizeof copy ? resp_len : sizeof copy;
  memcpy(copy, resp, n);
  free_resp();
  RC_ASSERT_EQ_BYTES(copy, n, want);
}

RC_TEST(reason_phrases) {
  static const struct {
    int status;
    const char *phrase;
  } v[] = {
      {101, "Switching Protocols"},
      {200, "OK"},
      {204, "No Content"},
      {301, "Moved Permanently"},
      {304, "Not Modified"},
      {400, "Bad Request"},
      {403, "Forbidden"},
      {404, "Not Found"},
      {405, "Method Not Allowed"},
      {408, "Request Timeout"},
      {413, "Content Too Large"},
      {426, "Upgrade Required"},
      {429, "Too Many Requests"},
      {431, "Request Header Fields Too Large"},
      {500, "Internal Server Error"},
      {501, "Not Implemented"},
      {503, "Service Unavailable"},
      {0, "Unknown"},
      {-1, "Unknown"},
      {1000, "Unknown"},
  };
  for (size_t k = 0; k < sizeof v / sizeof v[0]; k++)
    RC_ASSERT_EQ_STR(rc_http_reason_phrase(v[k].status), v[k].phrase);
}

/* ---- robustness ---- */

static uint32_t rng_state = 12345;
static uint32_t rng(void) {
  /* xorshift32: deterministic, so a failure reproduces. */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

/* Mutated and random heads: whatever the answer, it is one of the documented
 * ones and every pointer stays inside the input. */
RC_TEST(parse_survives_mutations) {
  static const char alphabet[] = "GET /?:\r\n \tHTTP/1.0aZ,=\x7f\x80\xff";
  size_t base = strlen(upgrade_req);
  for (int iter = 0; iter < 20000; iter++) {
    char tmp[512];
    size_t len;
    if (iter % 4 == 0) {
      len = rng() % 200;
      for (size_t i = 0; i < len; i++)
        tmp[i] = alphabet[rng() % (sizeof alphabet - 1)];
    } else {
      len = base;
      memcpy(tmp, upgrade_req, len);
      int edits = 1 + (int)(rng() % 4);
      for (int e = 0; e < edits; e++)
        tmp[rng() % len] = (char)(rng() & 0xFF);
      len = rng() % (len + 1);
    }
    static parsed p;
    parse_with(&p, tmp, len, 1 + rng() % 300, rng() % 10);
    int rc = p.rc;
    int ok = rc >= RC_HTTP_E_TOO_LARGE && rc <= (int)len;
    if (ok && rc > 0) {
      const char *lo = p.buf, *hi = p.buf + rc;
      ok = p.req.method >= lo && p.req.method + p.req.method_len <= hi &&
           p.req.path >= lo && p.req.path + p.req.path_len <= hi;
      for (size_t i = 0; ok && i < p.req.num_headers; i++) {
        const rc_http_header *h = &p.req.headers[i];
        ok = h->name >= lo && h->name + h->name_len <= hi && h->value >= lo &&
             h->value + h->value_len <= hi;
      }
      if (ok) {
        rc_http_upgrade_check c;
        rc_http_check_upgrade(&p.req, &c);
        ok = c.reason != NULL &&
             (c.status == 0 || c.status == 1 || c.status == 400 ||
              c.status == 405 || c.status == 426);
      }
    }
    done(&p);
    if (!ok)
      fprintf(stderr, "  iteration %d, rc %d\n", iter, rc);
    RC_ASSERT(ok);
  }
}

/* --- the client's side: response head, upgrade check, request -------- */

typedef struct parsed_resp {
  char *buf;
  int rc;
  rc_http_response_head resp;
} parsed_resp;

static void parse_resp_with(parsed_resp *p, const char *s, size_t max_bytes,
                            size_t max_headers) {
  size_t len = strlen(s);
  p->buf = malloc(len > 0 ? len : 1);
  if (p->buf == NULL) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  memcpy(p->buf, s, len);
  p->rc = rc_http_parse_response(p->buf, len, max_bytes, max_headers, &p->resp);
}

static const char ok_resp[] = "HTTP/1.1 101 Switching Protocols\r\n"
                              "Upgrade: websocket\r\n"
                              "Connection: Upgrade\r\n"
                              "Sec-WebSocket-Accept: "
                              "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                              "Sec-WebSocket-Protocol: chat\r\n"
                              "\r\n";
/* The RFC's example key gives this accept value (RFC 6455 1.3). */
static const char ok_accept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

RC_TEST(response_head_parses) {
  parsed_resp p;
  parse_resp_with(&p, ok_resp, MAX_BYTES, MAX_HEADERS);
  int rc = p.rc, status = p.resp.status, minor = p.resp.version_minor;
  size_t nh = p.resp.num_headers;
  int reason_ok = p.resp.reason_len == 19 &&
                  memcmp(p.resp.reason, "Switching Protocols", 19) == 0;
  const rc_http_header *h =
      rc_http_response_find_header(&p.resp, "sec-websocket-protocol");
  int proto_ok =
      h != NULL && h->value_len == 4 && memcmp(h->value, "chat", 4) == 0;
  free(p.buf);
  RC_ASSERT_EQ_INT(rc, (int)strlen(ok_resp));
  RC_ASSERT_EQ_INT(status, 101);
  RC_ASSERT_EQ_INT(minor, 1);
  RC_ASSERT_EQ_INT(nh, 4);
  RC_ASSERT(reason_ok);
  RC_ASSERT(proto_ok);
}

RC_TEST(response_head_incomplete_at_every_prefix) {
  size_t len = strlen(ok_resp);
  for (size_t cut = 0; cut < len; cut++) {
    char *b = malloc(cut > 0 ? cut : 1);
    RC_ASSERT(b != NULL);
    memcpy(b, ok_resp, cut);
    rc_http_response_head resp;
    int rc = rc_http_parse_response(b, cut, MAX_BYTES, MAX_HEADERS, &resp);
    free(b);
    if (rc != RC_HTTP_INCOMPLETE)
      fprintf(stderr, "  prefix of %zu bytes\n", cut);
    RC_ASSERT_EQ_INT(rc, RC_HTTP_INCOMPLETE);
  }
}

RC_TEST(response_head_status_line_forms) {
  static const struct {
    const char *head;
    int rc_positive; /* 1: parses, else the error */
    int status;
  } cases[] = {
      {"HTTP/1.1 101\r\n\r\n", 1, 101},  /* no reason, no space */
      {"HTTP/1.1 101 \r\n\r\n", 1, 101}, /* empty reason */
      {"HTTP/1.0 404 Not Found\r\n\r\n", 1, 404},
      {"HTTP/1.1 200 OK\nServer: x\n\n", 1, 200}, /* bare LF */
      {"HTTP/2 101 x\r\n\r\n", RC_HTTP_E_BAD, 0},
      {"HTTP/1.1 10 x\r\n\r\n", RC_HTTP_E_BAD, 0},
      {"HTTP/1.1 1011 x\r\n\r\n", RC_HTTP_E_BAD, 0},
      {"HTTP/1.1 099 x\r\n\r\n", RC_HTTP_E_BAD, 0},
      {"HTTP/1.1 101 a\x01z\r\n\r\n", RC_HTTP_E_BAD, 0},
      {"SSH-2.0-OpenSSH\r\n\r\n", RC_HTTP_E_BAD, 0},
      {"HTTP/1.1 101 ok\r\nBad Name: x\r\n\r\n", RC_HTTP_E_BAD, 0},
      {"HTTP/1.1 101 ok\r\n folded\r\n\r\n", RC_HTTP_E_BAD, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    parsed_resp p;
    parse_resp_with(&p, cases[i].head, MAX_BYTES, MAX_HEADERS);
    int rc = p.rc, status = p.resp.status;
    free(p.buf);
    if (cases[i].rc_positive == 1) {
      RC_CHECK(rc > 0);
      if (rc > 0)
        RC_CHECK_EQ_INT(status, cases[i].status);
    } else {
      RC_CHECK_EQ_INT(rc, cases[i].rc_positive);
    }
    if (rc_test_failed_) {
      fprintf(stderr, "  case %zu: %s\n", i, cases[i].head);
      return;
    }
  }
}

RC_TEST(response_head_bounds) {
  parsed_resp p;
  /* too many headers */
  parse_resp_with(&p, "HTTP/1.1 101 x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
                  MAX_BYTES, 3);
  int many = p.rc;
  free(p.buf);
  RC_ASSERT_EQ_INT(many, RC_HTTP_E_TOO_LARGE);
  /* longer than max_bytes, complete or not */
  parse_resp_with(&p, ok_resp, 64, MAX_HEADERS);
  int big = p.rc;
  free(p.buf);
  RC_ASSERT_EQ_INT(big, RC_HTTP_E_TOO_LARGE);
  parse_resp_with(&p, "HTTP/1.1 101 x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                  32, MAX_HEADERS);
  int cut = p.rc;
  free(p.buf);
  RC_ASSERT_EQ_INT(cut, RC_HTTP_E_TOO_LARGE);
}

static void client_check(const char *head, const char *offered,
                         rc_http_client_check *out) {
  parsed_resp p;
  parse_resp_with(&p, head, MAX_BYTES, MAX_HEADERS);
  if (p.rc <= 0) {
    out->ok = -1;
    out->reason = "did not parse";
  } else {
    rc_http_check_upgrade_response(&p.resp, ok_accept, offered, out);
  }
  /* reason may point into out->text, never into the buffer */
  free(p.buf);
}

RC_TEST(client_check_valid) {
  rc_http_client_check chk;
  client_check(ok_resp, "superchat, chat", &chk);
  RC_ASSERT_EQ_INT(chk.ok, 1);
  RC_ASSERT_EQ_INT(chk.protocol_len, 4);
  client_check("HTTP/1.1 101 x\r\nupgrade: WebSocket\r\n"
               "connection: keep-alive, upgrade\r\n"
               "sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
               NULL, &chk);
  RC_ASSERT_EQ_INT(chk.ok, 1);
  RC_ASSERT(chk.protocol == NULL);
}

RC_TEST(client_check_errors) {
#define ACC "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
#define UPC "Upgrade: websocket\r\nConnection: Upgrade\r\n"
  static const struct {
    const char *head;
    const char *offered;
    const char *reason;
  } cases[] = {
      {"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", NULL,
       "HTTP 404 in handshake: Not Found"},
      {"HTTP/1.1 200\r\n\r\n", NULL, "HTTP 200 in handshake"},
      {"HTTP/1.1 101 x\r\nConnection: Upgrade\r\n" ACC "\r\n", NULL,
       "handshake: response lacks \"Upgrade: websocket\""},
      {"HTTP/1.1 101 x\r\nUpgrade: websocket\r\n" ACC "\r\n", NULL,
       "handshake: response lacks \"Connection: Upgrade\""},
      {"HTTP/1.1 101 x\r\n" UPC "\r\n", NULL,
       "handshake: missing Sec-WebSocket-Accept"},
      {"HTTP/1.1 101 x\r\n" UPC ACC ACC "\r\n", NULL,
       "handshake: duplicate Sec-WebSocket-Accept"},
      {"HTTP/1.1 101 x\r\n" UPC
       "Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
       NULL, "handshake: wrong Sec-WebSocket-Accept"},
      {"HTTP/1.1 101 x\r\n" UPC ACC "Sec-WebSocket-Extensions: x\r\n\r\n", NULL,
       "handshake: the server accepted an extension that was not offered"},
      {"HTTP/1.1 101 x\r\n" UPC ACC "Sec-WebSocket-Protocol: chat\r\n\r\n",
       NULL,
       "handshake: the server chose subprotocol chat, which was not offered"},
      {"HTTP/1.1 101 x\r\n" UPC ACC "Sec-WebSocket-Protocol: Chat\r\n\r\n",
       "chat",
       "handshake: the server chose subprotocol Chat, which was not offered"},
      {"HTTP/1.1 101 x\r\n" UPC ACC "Sec-WebSocket-Protocol: cha\r\n\r\n",
       "chat",
       "handshake: the server chose subprotocol cha, which was not offered"},
      {"HTTP/1.1 101 x\r\n" UPC ACC "Sec-WebSocket-Protocol: a\r\n"
       "Sec-WebSocket-Protocol: a\r\n\r\n",
       "a", "handshake: duplicate Sec-WebSocket-Protocol"},
      {"HTTP/1.1 503 \x80\xff\r\n\r\n", NULL, "HTTP 503 in handshake: ??"},
  };
#undef ACC
#undef UPC
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    rc_http_client_check chk;
    client_check(cases[i].head, cases[i].offered, &chk);
    RC_CHECK_EQ_INT(chk.ok, 0);
    RC_CHECK(rc_test_str_eq_(chk.reason, cases[i].reason));
    if (rc_test_failed_) {
      fprintf(stderr, "  case %zu: got ", i);
      rc_test_print_str_(chk.reason);
      fputc('\n', stderr);
      return;
    }
  }
}

RC_TEST(client_request_bytes) {
  size_t n = 0;
  char *r = rc_http_client_request("/chat?room=1", "example.com:8080",
                                   "dGhlIHNhbXBsZSBub25jZQ==", "chat, v2",
                                   "Origin: http://example.com\r\n", &n);
  RC_ASSERT(r != NULL);
  static const char want[] = "GET /chat?room=1 HTTP/1.1\r\n"
                             "Host: example.com:8080\r\n"
                             "Upgrade: websocket\r\n"
                             "Connection: Upgrade\r\n"
                             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                             "Sec-WebSocket-Version: 13\r\n"
                             "Sec-WebSocket-Protocol: chat, v2\r\n"
                             "Origin: http://example.com\r\n"
                             "\r\n";
  int same = n == sizeof want - 1 && memcmp(r, want, n) == 0;
  if (!same)
    rc_test_print_str_(r);
  free(r);
  RC_ASSERT(same);
}

RC_TEST(client_request_is_a_valid_upgrade) {
  /* What the client sends passes the server's own check. */
  char *r = rc_http_client_request("/", "h", "dGhlIHNhbXBsZSBub25jZQ==", NULL,
                                   NULL, NULL);
  RC_ASSERT(r != NULL);
  rc_http_upgrade_check chk;
  int rc = check(r, &chk);
  free(r);
  RC_ASSERT(rc > 0);
  RC_ASSERT_EQ_INT(chk.status, 0);
}

RC_TEST_MAIN(
    RC_CASE(response_head_parses),
    RC_CASE(response_head_incomplete_at_every_prefix),
    RC_CASE(response_head_status_line_forms), RC_CASE(response_head_bounds),
    RC_CASE(client_check_valid), RC_CASE(client_check_errors),
    RC_CASE(client_request_bytes), RC_CASE(client_request_is_a_valid_upgrade),
    RC_CASE(parse_complete_upgrade_request),
    RC_CASE(parse_stops_at_end_of_head),
    RC_CASE(parse_incomplete_at_every_prefix), RC_CASE(parse_bare_lf_tolerated),
    RC_CASE(parse_http10_and_no_headers),
    RC_CASE(parse_query_split_at_first_question_mark),
    RC_CASE(parse_trims_value_whitespace),
    RC_CASE(parse_accepts_every_token_char),
    RC_CASE(parse_obs_text_allowed_in_values), RC_CASE(parse_rejects_obs_fold),
    RC_CASE(parse_rejects_bad_header_names),
    RC_CASE(parse_rejects_control_chars_in_values),
    RC_CASE(parse_rejects_bad_request_lines),
    RC_CASE(parse_rejects_garbage_early), RC_CASE(parse_too_many_headers),
    RC_CASE(parse_max_headers_is_capped), RC_CASE(parse_too_large),
    RC_CASE(find_header_is_case_insensitive), RC_CASE(header_token_lists),
    RC_CASE(upgrade_valid), RC_CASE(upgrade_split_and_mixed_case_headers),
    RC_CASE(upgrade_plain_http_is_status_1), RC_CASE(upgrade_errors),
    RC_CASE(upgrade_version_trimmed), RC_CASE(accept_value_rfc6455_example),
    RC_CASE(accept_value_uses_key_len), RC_CASE(response_101),
    RC_CASE(response_400_with_body_and_close),
    RC_CASE(response_426_without_body), RC_CASE(response_binary_body),
    RC_CASE(response_101_ignores_close_after), RC_CASE(response_unknown_status),
    RC_CASE(reason_phrases), RC_CASE(parse_survives_mutations))
