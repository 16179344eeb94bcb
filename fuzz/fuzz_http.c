/* fuzz_http.c - libFuzzer target for the opening handshake: the request-head
 * parser, the upgrade check, the accept value and the response builder
 * (csrc/proto/rc_http.c; SHA-1 and base64 from OpenSSL, so it links
 * -lcrypto), and on the client's side the response-head parser and its
 * upgrade check, fed the same bytes as a server's answer.
 *
 * Input: two control bytes, then the bytes a client sent.
 *   byte 0, bits 0-1  max_bytes:   8192 (the default), 64, 512, 60000
 *           bits 2-3  max_headers: 100 (the default), 0, 3, 128
 *   byte 1            where the first read ends: byte1 * len / 255
 *
 * The core re-parses its whole buffer each time a read adds bytes, so the
 * target parses the first read's bytes, then all of them, each time from a
 * heap copy of exactly that length (an over-read is caught by ASan). Beyond
 * memory safety it checks what callers rely on: a parsed head points only
 * into the buffer and satisfies the grammar, a prefix never disagrees with
 * the whole input, and every response is well-formed HTTP. A broken
 * property aborts, which libFuzzer reports as a crash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/rc_http.h"

#include "fuzz_check.h"

/* Slack the core keeps past max_header_bytes for pipelined frames
 * (RC__HBUF_SLACK in rc_handshake.c). */
#define HBUF_SLACK 1024

static rc_http_request req_prefix, req_full;

static int is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
      (c >= 'A' && c <= 'Z'))
    return 1;
  return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int within(const char *p, size_t n, const char *buf, size_t len) {
  return p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

static char *copy_exact(const uint8_t *data, size_t len) {
  char *b = malloc(len > 0 ? len : 1);
  FUZZ_CHECK(b != NULL);
  if (len > 0)
    memcpy(b, data, len);
  return b;
}

/* What a successful parse promises about the head at buf[0..r). */
static void check_head(const char *buf, size_t len, int r, size_t max_bytes,
                       size_t max_headers, const rc_http_request *req) {
  FUZZ_CHECK((size_t)r <= len && (size_t)r <= max_bytes);
  FUZZ_CHECK(buf[r - 1] == '\n');
  FUZZ_CHECK(req->num_headers <= max_headers);
  FUZZ_CHECK(req->method_len > 0 &&
             within(req->method, req->method_len, buf, (size_t)r));
  for (size_t i = 0; i < req->method_len; i++)
    FUZZ_CHECK(is_tchar((unsigned char)req->method[i]));
  FUZZ_CHECK(req->path_len > 0 &&
             within(req->path, req->path_len, buf, (size_t)r));
  FUZZ_CHECK(req->path[0] == '/');
  FUZZ_CHECK(memchr(req->path, '?', req->path_len) == NULL);
  FUZZ_CHECK(req->query_len == 0 ||
             within(req->query, req->query_len, buf, (size_t)r));
  FUZZ_CHECK(req->version_minor == 0 || req->version_minor == 1);
  for (size_t i = 0; i < req->num_headers; i++) {
    const rc_http_header *h = &req->headers[i];
    FUZZ_CHECK(h->name_len > 0 && within(h->name, h->name_len, buf, (size_t)r));
    for (size_t k = 0; k < h->name_len; k++)
      FUZZ_CHECK(is_tchar((unsigned char)h->name[k]));
    FUZZ_CHECK(within(h->value, h->value_len, buf, (size_t)r));
    if (h->value_len > 0) {
      char first = h->value[0], last = h->value[h->value_len - 1];
      FUZZ_CHECK(first != ' ' && first != '\t');
      FUZZ_CHECK(last != ' ' && last != '\t');
    }
    for (size_t k = 0; k < h->value_len; k++) {
      unsigned char c = (unsigned char)h->value[k];
      FUZZ_CHECK(c == '\t' || (c >= 0x20 && c != 0x7F));
    }
    /* Lookups by a parsed name find a header of that name. */
    char name[64];
    if (h->name_len < sizeof(name)) {
      memcpy(name, h->name, h->name_len);
      name[h->name_len] = '\0';
      const rc_http_header *f = rc_http_find_header(req, name);
      FUZZ_CHECK(f != NULL && f <= h && f->name_len == h->name_len);
    }
    (void)rc_http_header_has_token(h, "upgrade");
    (void)rc_http_header_has_token(h, "websocket");
  }
}

/* A response head ends with one blank line, then exactly body_len bytes;
 * every status but 101 says so in Content-Length. */
static void check_response(const char *rsp, size_t n, int status,
                           const char *body, size_t body_len) {
  FUZZ_CHECK(rsp != NULL);
  FUZZ_CHECK(rsp[n] == '\0');
  FUZZ_CHECK(n >= 9 && memcmp(rsp, "HTTP/1.1 ", 9) == 0);
  FUZZ_CHECK(n >= body_len + 4);
  size_t head = n - body_len;
  FUZZ_CHECK(memcmp(rsp + head - 4, "\r\n\r\n", 4) == 0);
  FUZZ_CHECK(body_len == 0 || memcmp(rsp + head, body, body_len) == 0);
  char want[64];
  int wl = snprintf(want, sizeof want, "\r\nContent-Length: %zu\r\n", body_len);
  FUZZ_CHECK(wl > 0 && (size_t)wl < sizeof want);
  int has_cl = 0;
  for (size_t i = 0; i + (size_t)wl <= head; i++) {
    if (memcmp(rsp + i, want, (size_t)wl) == 0) {
      has_cl = 1;
      break;
    }
  }
  FUZZ_CHECK(has_cl == (status != 101));
}

static int is_b64(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* What the core does with a complete head: check the upgrade, then build the
 * 101 (with the accept value) or the error answer. */
static void answer(const rc_http_request *req, const char *buf, size_t r) {
  rc_http_upgrade_check chk;
  rc_http_check_upgrade(req, &chk);
  FUZZ_CHECK(chk.reason != NULL);
  size_t n;
  char *rsp;
  if (chk.status == 0) {
    FUZZ_CHECK(chk.key != NULL && within(chk.key, chk.key_len, buf, r));
    FUZZ_CHECK(chk.key_len == 24);
    FUZZ_CHECK(rc_base64_decoded_len(chk.key, chk.key_len) == 16);
    char accept[29];
    memset(accept, 'x', sizeof accept);
    FUZZ_CHECK(rc_ws_accept_value(chk.key, chk.key_len, accept) == 0);
    FUZZ_CHECK(accept[28] == '\0' && accept[27] == '=');
    for (int i = 0; i < 27; i++)
      FUZZ_CHECK(is_b64(accept[i]));
    char extra[128];
    int xl = snprintf(extra, sizeof extra,
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n",
                      accept);
    FUZZ_CHECK(xl > 0 && (size_t)xl < sizeof extra);
    rsp = rc_http_response(101, extra, NULL, 0, 0, &n);
    check_response(rsp, n, 101, NULL, 0);
    FUZZ_CHECK(memcmp(rsp, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
    free(rsp);
    return;
  }
  FUZZ_CHECK(chk.status == 1 || chk.status == 400 || chk.status == 405 ||
             chk.status == 426);
  int status = chk.status == 1 ? 426 : chk.status;
  size_t blen = strlen(chk.reason);
  rsp = rc_http_response(status, NULL, chk.reason, blen, 1, &n);
  check_response(rsp, n, status, chk.reason, blen);
  free(rsp);
}

static rc_http_response_head resp_prefix, resp_full;

/* The same bytes as a server's answer to the client: the head points into
 * the buffer, a prefix agrees with the whole, and the check gives a reason
 * whenever it refuses. */
static void as_response(const char *b1, size_t first, const char *b2,
                        size_t len, size_t max_bytes, size_t max_headers) {
  int r1 =
      rc_http_parse_response(b1, first, max_bytes, max_headers, &resp_prefix);
  int r2 = rc_http_parse_response(b2, len, max_bytes, max_headers, &resp_full);
  FUZZ_CHECK(r1 >= RC_HTTP_E_TOO_LARGE && r2 >= RC_HTTP_E_TOO_LARGE);
  if (r1 != RC_HTTP_INCOMPLETE)
    FUZZ_CHECK(r2 == r1);
  if (r2 <= 0)
    return;
  FUZZ_CHECK((size_t)r2 <= len && (size_t)r2 <= max_bytes);
  FUZZ_CHECK(resp_full.status >= 100 && resp_full.status <= 999);
  FUZZ_CHECK(resp_full.num_headers <= max_headers);
  FUZZ_CHECK(within(resp_full.reason, resp_full.reason_len, b2, len));
  for (size_t i = 0; i < resp_full.num_headers; i++) {
    const rc_http_header *h = &resp_full.headers[i];
    FUZZ_CHECK(h->name_len > 0 && within(h->name, h->name_len, b2, len));
    FUZZ_CHECK(within(h->value, h->value_len, b2, len));
  }
  rc_http_client_check chk;
  rc_http_check_upgrade_response(
      &resp_full, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "chat, superchat", &chk);
  FUZZ_CHECK(chk.reason != NULL && strlen(chk.reason) > 0);
  FUZZ_CHECK(chk.ok || strlen(chk.reason) < sizeof chk.text);
  if (chk.ok && chk.protocol != NULL)
    FUZZ_CHECK(within(chk.protocol, chk.protocol_len, b2, len));
  /* A client that offered permessage-deflate: the same verdicts, but
   * Sec-WebSocket-Extensions is left to it; its lines joined as it joins
   * them, into a buffer of each size (fits, or says it does not). */
  rc_http_client_check ext;
  rc_http_check_upgrade_response_ext(
      &resp_full, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "chat, superchat", 1, &ext);
  FUZZ_CHECK(ext.reason != NULL && strlen(ext.reason) > 0);
  if (chk.ok)
    FUZZ_CHECK(ext.ok);
  char joined[64];
  for (size_t cap = 0; cap <= sizeof joined; cap += 16) {
    long n = rc_http_join_headers(resp_full.headers, resp_full.num_headers,
                                  "sec-websocket-extensions", joined, cap);
    FUZZ_CHECK(n >= -1 && (n == -1 || (size_t)n < cap || cap == 0));
    if (n >= 0 && cap > 0)
      FUZZ_CHECK(strlen(joined) == (size_t)n);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t max_bytes_choice[4] = {8192, 64, 512, 60000};
  static const size_t max_headers_choice[4] = {100, 0, 3, 128};
  if (size < 2)
    return 0;
  size_t max_bytes = max_bytes_choice[data[0] & 3];
  size_t max_headers = max_headers_choice[(data[0] >> 2) & 3];
  unsigned split_at = data[1];
  data += 2;
  size_t len = size - 2;
  /* The core stops buffering at max_bytes + slack; bytes past it never
   * reach the parser. */
  if (len > max_bytes + HBUF_SLACK)
    len = max_bytes + HBUF_SLACK;
  size_t first = (size_t)split_at * len / 255;

  char *b1 = copy_exact(data, first);
  int r1 =
      rc_http_parse_request(b1, first, max_bytes, max_headers, &req_prefix);
  FUZZ_CHECK(r1 >= RC_HTTP_E_TOO_LARGE);
  if (r1 > 0)
    check_head(b1, first, r1, max_bytes, max_headers, &req_prefix);

  char *b2 = copy_exact(data, len);
  int r2 = rc_http_parse_request(b2, len, max_bytes, max_headers, &req_full);
  FUZZ_CHECK(r2 >= RC_HTTP_E_TOO_LARGE);
  if (r2 > 0) {
    check_head(b2, len, r2, max_bytes, max_headers, &req_full);
    answer(&req_full, b2, (size_t)r2);
  }

  /* More bytes never change a verdict already reached. */
  if (r1 != RC_HTTP_INCOMPLETE)
    FUZZ_CHECK(r2 == r1);
  if (r2 > 0 && (size_t)r2 <= first)
    FUZZ_CHECK(r1 == r2);
  if (r2 > 0 && r1 > 0) {
    FUZZ_CHECK(req_full.num_headers == req_prefix.num_headers);
    FUZZ_CHECK(req_full.path_len == req_prefix.path_len);
  }

  as_response(b1, first, b2, len, max_bytes, max_headers);

  /* The response builder with any status, extra headers and body. */
  int status = (int)((unsigned)split_at * 7u) - 600 + (int)(len % 1000);
  size_t xlen = len / 3;
  char *extra = malloc(xlen + 1);
  FUZZ_CHECK(extra != NULL);
  memcpy(extra, data, xlen);
  extra[xlen] = '\0';
  size_t body_len = len - xlen;
  size_t n;
  char *rsp = rc_http_response(status, extra, (const char *)data + xlen,
                               body_len, split_at & 1, &n);
  FUZZ_CHECK(rsp != NULL);
  FUZZ_CHECK(n >= body_len &&
             memcmp(rsp + n - body_len, data + xlen, body_len) == 0);
  FUZZ_CHECK(strlen(rc_http_reason_phrase(status)) > 0);
  free(rsp);
  free(extra);
  free(b1);
  free(b2);
  return 0;
}
