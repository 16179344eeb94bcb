/* rc_http.c - request-head parser, upgrade check and response builder for
 * the WebSocket opening handshake (RFC 7230 section 3, RFC 6455 section 4.2).
 *
 * The parser restarts from byte 0 on every call: a head is at most a few
 * kilobytes and arrives in one or two reads, so keeping resumable state would
 * cost more than it saves. Every byte access is guarded by the bound, so any
 * input is safe to feed. */
#include "proto/rc_http.h"
#include "proto/rc_token.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

/* Locale-independent: header names and tokens are ASCII by definition. */
static int ascii_case_equal(const char *a, const char *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
      return 0;
  }
  return 1;
}

/* Consumes a line end at b[*i]: 1 when consumed, RC_HTTP_INCOMPLETE when the
 * CR's partner has not arrived yet, RC_HTTP_E_BAD for anything else. */
static int eat_eol(const unsigned char *b, size_t n, size_t *i) {
  if (*i >= n)
    return RC_HTTP_INCOMPLETE;
  if (b[*i] == '\n') {
    *i += 1;
    return 1;
  }
  if (b[*i] != '\r')
    return RC_HTTP_E_BAD;
  if (*i + 1 >= n)
    return RC_HTTP_INCOMPLETE;
  if (b[*i + 1] != '\n')
    return RC_HTTP_E_BAD;
  *i += 2;
  return 1;
}

/* Consumes "HTTP/1.0" or "HTTP/1.1" at b[*i]; 1 when consumed. */
static int eat_version(const unsigned char *b, size_t n, size_t *pi,
                       int *minor) {
  static const char proto[] = "HTTP/1.";
  size_t i = *pi;
  for (size_t k = 0; k < sizeof proto - 1; k++, i++) {
    if (i == n)
      return RC_HTTP_INCOMPLETE;
    if (b[i] != (unsigned char)proto[k])
      return RC_HTTP_E_BAD;
  }
  if (i == n)
    return RC_HTTP_INCOMPLETE;
  if (b[i] != '0' && b[i] != '1')
    return RC_HTTP_E_BAD;
  *minor = b[i] - '0';
  *pi = i + 1;
  return 1;
}

static int parse_request_line(const unsigned char *b, size_t n, size_t *pi,
                              rc_http_request *req) {
  size_t i = 0;

  while (i < n && is_tchar(b[i]))
    i++;
  if (i == n)
    return RC_HTTP_INCOMPLETE;
  if (i == 0 || b[i] != ' ')
    return RC_HTTP_E_BAD;
  req->method = (const char *)b;
  req->method_len = i;
  i++;

  if (i == n)
    return RC_HTTP_INCOMPLETE;
  if (b[i] != '/')
    return RC_HTTP_E_BAD; /* only origin-form: no absolute-form, no '*' */
  size_t t0 = i;
  size_t q = SIZE_MAX;
  for (;;) {
    if (i == n)
      return RC_HTTP_INCOMPLETE;
    unsigned char c = b[i];
    if (c == ' ')
      break;
    if (c <= 0x20 || c >= 0x7F)
      return RC_HTTP_E_BAD;
    if (c == '?' && q == SIZE_MAX)
      q = i;
    i++;
  }
  if (q == SIZE_MAX) {
    req->path = (const char *)b + t0;
    req->path_len = i - t0;
    req->query = "";
    req->query_len = 0;
  } else {
    req->path = (const char *)b + t0;
    req->path_len = q - t0;
    req->query = (const char *)b + q + 1;
    req->query_len = i - q - 1;
  }
  i++;

  int r = eat_version(b, n, &i, &req->version_minor);
  if (r != 1)
    return r;
  r = eat_eol(b, n, &i);
  if (r != 1)
    return r;
  *pi = i;
  return 1;
}

/* Parses header lines from b[i] through the blank line that ends the head.
 * Returns the head's length, RC_HTTP_INCOMPLETE, RC_HTTP_E_BAD or
 * RC_HTTP_E_TOO_LARGE (more than max_headers lines). */
static int parse_header_lines(const unsigned char *b, size_t n, size_t i,
                              size_t max_headers, rc_http_header *headers,
                              size_t *num_headers) {
  size_t nh = 0;
  int r;
  for (;;) {
    if (i == n)
      return RC_HTTP_INCOMPLETE;
    unsigned char c = b[i];
    if (c == '\r' || c == '\n') {
      r = eat_eol(b, n, &i);
      if (r != 1)
        return r;
      *num_headers = nh;
      return (int)i;
    }
    /* A line that starts with whitespace is obs-fold (RFC 7230 3.2.4);
     * joining it would let two parsers disagree about a header's value. */
    if (c == ' ' || c == '\t')
      return RC_HTTP_E_BAD;
    if (nh == max_headers)
      return RC_HTTP_E_TOO_LARGE;

    size_t name0 = i;
    while (i < n && is_tchar(b[i]))
      i++;
    if (i == n)
      return RC_HTTP_INCOMPLETE;
    if (i == name0 || b[i] != ':')
      return RC_HTTP_E_BAD; /* includes whitespace before the colon */
    size_t name_len = i - name0;
    i++;

    while (i < n && (b[i] == ' ' || b[i] == '\t'))
      i++;
    size_t v0 = i;
    size_t vend = i;
    for (;;) {
      if (i == n)
        return RC_HTTP_INCOMPLETE;
      c = b[i];
      if (c == '\r' || c == '\n')
        break;
      i++;
      if (c == ' ' || c == '\t')
        continue;
      if (c < 0x20 || c == 0x7F)
        return RC_HTTP_E_BAD;
      vend = i;
    }
    r = eat_eol(b, n, &i);
    if (r != 1)
      return r;

    rc_http_header *h = &headers[nh++];
    h->name = (const char *)b + name0;
    h->name_len = name_len;
    h->value = (const char *)b + v0;
    h->value_len = vend - v0;
  }
}

static int parse_head(const unsigned char *b, size_t n, size_t max_headers,
                      rc_http_request *req) {
  size_t i = 0;
  int r = parse_request_line(b, n, &i, req);
  if (r != 1)
    return r;
  return parse_header_lines(b, n, i, max_headers, req->headers,
                            &req->num_headers);
}

/* "HTTP/1.x NNN reason" then a line end. The reason phrase may be empty,
 * and so may the space before it (RFC 7230 3.1.2 asks for the space, but
 * servers that omit it exist and nothing is ambiguous without it). */
static int parse_status_line(const unsigned char *b, size_t n, size_t *pi,
                             rc_http_response_head *resp) {
  size_t i = 0;
  int r = eat_version(b, n, &i, &resp->version_minor);
  if (r != 1)
    return r;
  if (i == n)
    return RC_HTTP_INCOMPLETE;
  if (b[i] != ' ')
    return RC_HTTP_E_BAD;
  i++;
  int status = 0;
  for (int k = 0; k < 3; k++, i++) {
    if (i == n)
      return RC_HTTP_INCOMPLETE;
    if (b[i] < '0' || b[i] > '9')
      return RC_HTTP_E_BAD;
    status = status * 10 + (b[i] - '0');
  }
  if (status < 100)
    return RC_HTTP_E_BAD;
  resp->status = status;
  if (i == n)
    return RC_HTTP_INCOMPLETE;
  if (b[i] == ' ')
    i++;
  else if (b[i] != '\r' && b[i] != '\n')
    return RC_HTTP_E_BAD;
  size_t r0 = i;
  for (;;) {
    if (i == n)
      return RC_HTTP_INCOMPLETE;
    unsigned char c = b[i];
    if (c == '\r' || c == '\n')
      break;
    if ((c < 0x20 && c != '\t') || c == 0x7F)
      return RC_HTTP_E_BAD;
    i++;
  }
  resp->reason = (const char *)b + r0;
  resp->reason_len = i - r0;
  r = eat_eol(b, n, &i);
  if (r != 1)
    return r;
  *pi = i;
  return 1;
}

/* Bounds a parse the same way for requests and responses: parsing only the
 * first max_bytes makes "complete but too long" and "still incomplete at
 * the limit" the same case. */
static size_t bound(size_t len, size_t *max_bytes, size_t *max_headers) {
  if (*max_headers > RC_HTTP_MAX_HEADERS_CAP)
    *max_headers = RC_HTTP_MAX_HEADERS_CAP;
  if (*max_bytes > (size_t)INT_MAX)
    *max_bytes = (size_t)INT_MAX; /* the head length must fit the return type */
  return len < *max_bytes ? len : *max_bytes;
}

int rc_http_parse_response(const char *buf, size_t len, size_t max_bytes,
                           size_t max_headers, rc_http_response_head *resp) {
  size_t n = bound(len, &max_bytes, &max_headers);
  const unsigned char *b = (const unsigned char *)buf;
  size_t i = 0;
  resp->num_headers = 0;
  int r = parse_status_line(b, n, &i, resp);
  if (r == 1)
    r = parse_header_lines(b, n, i, max_headers, resp->headers,
                           &resp->num_headers);
  if (r == RC_HTTP_INCOMPLETE && len >= max_bytes)
    return RC_HTTP_E_TOO_LARGE;
  return r;
}

int rc_http_parse_request(const char *buf, size_t len, size_t max_bytes,
                          size_t max_headers, rc_http_request *req) {
  size_t n = bound(len, &max_bytes, &max_headers);
  req->num_headers = 0;
  int r = parse_head((const unsigned char *)buf, n, max_headers, req);
  if (r == RC_HTTP_INCOMPLETE && len >= max_bytes)
    return RC_HTTP_E_TOO_LARGE;
  return r;
}

static const rc_http_header *find_in(const rc_http_header *hs, size_t n,
                                     const char *name) {
  size_t len = strlen(name);
  for (size_t k = 0; k < n; k++) {
    if (hs[k].name_len == len && ascii_case_equal(hs[k].name, name, len))
      return &hs[k];
  }
  return NULL;
}

const rc_http_header *rc_http_find_header(const rc_http_request *req,
                                          const char *name) {
  return find_in(req->headers, req->num_headers, name);
}

const rc_http_header *
rc_http_response_find_header(const rc_http_response_head *resp,
                             const char *name) {
  return find_in(resp->headers, resp->num_headers, name);
}

/* The next item of a comma-separated list (RFC 7230 7: "#rule"), with the
 * whitespace around it trimmed and empty items skipped: its start and
 * length, or 0 when none is left. *i moves past it. One reader for every
 * list the handshake checks: Connection, Upgrade, the subprotocols. */
static int next_item(const char *v, size_t n, size_t *i, const char **item,
                     size_t *len) {
  size_t k = *i;
  while (k < n && (v[k] == ' ' || v[k] == '\t' || v[k] == ','))
    k++;
  if (k >= n) {
    *i = k;
    return 0;
  }
  size_t e0 = k;
  while (k < n && v[k] != ',')
    k++;
  size_t e1 = k;
  while (e1 > e0 && (v[e1 - 1] == ' ' || v[e1 - 1] == '\t'))
    e1--;
  *i = k;
  *item = v + e0;
  *len = e1 - e0;
  return 1;
}

int rc_http_header_has_token(const rc_http_header *h, const char *token) {
  if (h == NULL)
    return 0;
  size_t tlen = strlen(token), i = 0, len;
  const char *item;
  while (next_item(h->value, h->value_len, &i, &item, &len))
    if (len == tlen && tlen > 0 && ascii_case_equal(item, token, tlen))
      return 1;
  return 0;
}

/* Headers that may legally be split over several lines (Connection, Upgrade)
 * must be searched in every occurrence, not just the first. */
static int any_header_has_token(const rc_http_header *hs, size_t n,
                                const char *name, const char *token) {
  size_t len = strlen(name);
  for (size_t k = 0; k < n; k++) {
    const rc_http_header *h = &hs[k];
    if (h->name_len == len && ascii_case_equal(h->name, name, len) &&
        rc_http_header_has_token(h, token))
      return 1;
  }
  return 0;
}

static size_t count_headers(const rc_http_header *hs, size_t n,
                            const char *name, const rc_http_header **first) {
  size_t len = strlen(name);
  size_t count = 0;
  *first = NULL;
  for (size_t k = 0; k < n; k++) {
    const rc_http_header *h = &hs[k];
    if (h->name_len == len && ascii_case_equal(h->name, name, len)) {
      if (count == 0)
        *first = h;
      count++;
    }
  }
  return count;
}

static void fail(rc_http_upgrade_check *out, int status, const char *reason) {
  out->status = status;
  out->reason = reason;
}

/* The version is checked before the key on purpose: a client of another
 * protocol version may format its key differently, and the 426 with
 * "Sec-WebSocket-Version: 13" is the answer that lets it retry correctly
 * (RFC 6455 4.2.2 and 4.4). Duplicated Host, Sec-WebSocket-Key or
 * Sec-WebSocket-Version headers are 400 (RFC 7230 5.4, RFC 6455 11.3). */
void rc_http_check_upgrade(const rc_http_request *req,
                           rc_http_upgrade_check *out) {
  const rc_http_header *h;
  size_t count;

  out->status = 0;
  out->reason = "valid WebSocket upgrade";
  out->key = NULL;
  out->key_len = 0;

  if (!any_header_has_token(req->headers, req->num_headers, "Upgrade",
                            "websocket")) {
    fail(out, 1, "not a WebSocket upgrade request");
    return;
  }
  if (req->method_len != 3 || memcmp(req->method, "GET", 3) != 0) {
    fail(out, 405, "WebSocket upgrade requires GET");
    return;
  }
  if (req->version_minor != 1) {
    fail(out, 400, "WebSocket upgrade requires HTTP/1.1");
    return;
  }
  count = count_headers(req->headers, req->num_headers, "Host", &h);
  if (count == 0) {
    fail(out, 400, "missing Host");
    return;
  }
  if (count > 1) {
    fail(out, 400, "duplicate Host");
    return;
  }
  if (!any_header_has_token(req->headers, req->num_headers, "Connection",
                            "upgrade")) {
    fail(out, 400, "Connection header lacks \"upgrade\"");
    return;
  }
  count = count_headers(req->headers, req->num_headers, "Sec-WebSocket-Version",
                        &h);
  if (count == 0) {
    fail(out, 426, "missing Sec-WebSocket-Version");
    return;
  }
  if (count > 1) {
    fail(out, 400, "duplicate Sec-WebSocket-Version");
    return;
  }
  if (h->value_len != 2 || memcmp(h->value, "13", 2) != 0) {
    fail(out, 426, "unsupported Sec-WebSocket-Version");
    return;
  }
  count =
      count_headers(req->headers, req->num_headers, "Sec-WebSocket-Key", &h);
  if (count == 0) {
    fail(out, 400, "missing Sec-WebSocket-Key");
    return;
  }
  if (count > 1) {
    fail(out, 400, "duplicate Sec-WebSocket-Key");
    return;
  }
  if (rc_base64_decoded_len(h->value, h->value_len) != 16) {
    fail(out, 400, "invalid Sec-WebSocket-Key");
    return;
  }
  out->key = h->value;
  out->key_len = h->value_len;
}

/* SHA-1 and base64 come from OpenSSL, which the core links anyway (the
 * client's TLS): no hand-written digest to keep correct. SHA-1 is used here
 * only because RFC 6455 4.2.2 names it; nothing relies on its strength. */
int rc_ws_accept_value(const char *key, size_t key_len, char out[29]) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned dlen = 0;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
           EVP_DigestUpdate(ctx, key, key_len) == 1 &&
           EVP_DigestUpdate(ctx, guid, sizeof guid - 1) == 1 &&
           EVP_DigestFinal_ex(ctx, digest, &dlen) == 1 && dlen == 20;
  EVP_MD_CTX_free(ctx); /* NULL-safe */
  if (!ok) {
    out[0] = '\0';
    return -1;
  }
  (void)rc_base64_encode(digest, 20, out);
  return 0;
}

size_t rc_base64_encode(const uint8_t *in, size_t len, char *out) {
  /* EVP_EncodeBlock takes an int length; callers encode a key or a digest. */
  if (len > INT_MAX / 4 * 3) {
    out[0] = '\0';
    return 0;
  }
  int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
  return n < 0 ? 0 : (size_t)n; /* it writes the NUL too */
}

static int b64_is_alpha(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* Strict about the alphabet, the length and where '=' may stand; lenient
 * about nonzero bits in the last symbol before the padding (RFC 4648 3.5
 * lets a decoder choose), as most servers are, so that no client gets a
 * needless 400. OpenSSL's decoder is not used: it skips whitespace and
 * reports the length before the padding is taken off. */
long rc_base64_decoded_len(const char *in, size_t len) {
  if (len % 4 != 0)
    return -1;
  if (len == 0)
    return 0;
  size_t pad = 0;
  if (in[len - 1] == '=') {
    pad = 1;
    if (in[len - 2] == '=')
      pad = 2;
  }
  for (size_t i = 0; i < len - pad; i++) {
    if (!b64_is_alpha(in[i]))
      return -1;
  }
  return (long)(len / 4 * 3 - pad);
}

/* 1 when the comma-separated list (a C string, may be NULL) holds token,
 * compared exactly: subprotocol names are case-sensitive (RFC 6455 4.1). */
static int list_has(const char *list, const char *token, size_t tlen) {
  size_t n = list != NULL ? strlen(list) : 0, i = 0, len;
  const char *item;
  while (next_item(list, n, &i, &item, &len))
    if (len == tlen && tlen > 0 && memcmp(item, token, tlen) == 0)
      return 1;
  return 0;
}

static void client_fail(rc_http_client_check *out, const char *reason) {
  out->ok = 0;
  out->reason = reason;
}

/* A reason that names what the server sent: printable ASCII only, cut. */
static void client_fail_fmt(rc_http_client_check *out, const char *what,
                            const char *value, size_t value_len) {
  size_t n = (size_t)snprintf(out->text, sizeof out->text, "%s", what);
  if (n >= sizeof out->text)
    n = sizeof out->text - 1;
  for (size_t i = 0; i < value_len && n + 2 < sizeof out->text; i++) {
    unsigned char c = (unsigned char)value[i];
    out->text[n++] = (c >= 0x20 && c < 0x7F) ? (char)c : '?';
  }
  out->text[n] = '\0';
  client_fail(out, out->text);
}

void rc_http_check_upgrade_response(const rc_http_response_head *resp,
                                    const char *accept, const char *offered,
                                    rc_http_client_check *out) {
  rc_http_check_upgrade_response_ext(resp, accept, offered, 0, out);
}

long rc_http_join_headers(const rc_http_header *hs, size_t n, const char *name,
                          char *out, size_t cap) {
  size_t len = strlen(name), used = 0;
  if (cap == 0)
    return -1;
  for (size_t k = 0; k < n; k++) {
    if (hs[k].name_len != len || !ascii_case_equal(hs[k].name, name, len) ||
        hs[k].value_len == 0)
      continue;
    size_t sep = used > 0 ? 2 : 0;
    if (hs[k].value_len + sep >= cap - used)
      return -1;
    if (sep)
      memcpy(out + used, ", ", 2);
    memcpy(out + used + sep, hs[k].value, hs[k].value_len);
    used += sep + hs[k].value_len;
  }
  out[used] = '\0';
  return (long)used;
}

void rc_http_check_upgrade_response_ext(const rc_http_response_head *resp,
                                        const char *accept, const char *offered,
                                        int extensions_offered,
                                        rc_http_client_check *out) {
  const rc_http_header *hs = resp->headers, *h;
  size_t n = resp->num_headers;
  out->ok = 1;
  out->reason = "valid WebSocket upgrade response";
  out->protocol = NULL;
  out->protocol_len = 0;
  out->text[0] = '\0';

  if (resp->status != 101) {
    char what[32];
    (void)snprintf(what, sizeof what, "HTTP %d in handshake%s", resp->status,
                   resp->reason_len > 0 ? ": " : "");
    client_fail_fmt(out, what, resp->reason,
                    resp->reason_len > 48 ? 48 : resp->reason_len);
    return;
  }
  if (!any_header_has_token(hs, n, "Upgrade", "websocket")) {
    client_fail(out, "handshake: response lacks \"Upgrade: websocket\"");
    return;
  }
  if (!any_header_has_token(hs, n, "Connection", "upgrade")) {
    client_fail(out, "handshake: response lacks \"Connection: Upgrade\"");
    return;
  }
  if (count_headers(hs, n, "Sec-WebSocket-Accept", &h) != 1) {
    client_fail(out, h == NULL ? "handshake: missing Sec-WebSocket-Accept"
                               : "handshake: duplicate Sec-WebSocket-Accept");
    return;
  }
  if (h->value_len != 28 || memcmp(h->value, accept, 28) != 0) {
    client_fail(out, "handshake: wrong Sec-WebSocket-Accept");
    return;
  }
  /* No extension was offered, so none may be accepted (RFC 6455 4.1).
   * When some were, the caller checks the answer against its offer. */
  if (!extensions_offered &&
      find_in(hs, n, "Sec-WebSocket-Extensions") != NULL) {
    client_fail(out, "handshake: the server accepted an extension that was "
                     "not offered");
    return;
  }
  size_t count = count_headers(hs, n, "Sec-WebSocket-Protocol", &h);
  if (count > 1) {
    client_fail(out, "handshake: duplicate Sec-WebSocket-Protocol");
    return;
  }
  if (count == 1) {
    if (offered == NULL || !list_has(offered, h->value, h->value_len)) {
      client_fail_fmt(out, "handshake: the server chose subprotocol ", h->value,
                      h->value_len > 40 ? 40 : h->value_len);
      size_t used = strlen(out->text);
      (void)snprintf(out->text + used, sizeof out->text - used,
                     ", which was not offered");
      return;
    }
    out->protocol = h->value;
    out->protocol_len = h->value_len;
  }
}

char *rc_http_client_request(const char *target, const char *host,
                             const char *key, const char *protocols,
                             const char *extra_headers, size_t *out_len) {
  static const char fmt[] = "GET %s HTTP/1.1\r\n"
                            "Host: %s\r\n"
                            "Upgrade: websocket\r\n"
                            "Connection: Upgrade\r\n"
                            "Sec-WebSocket-Key: %s\r\n"
                            "Sec-WebSocket-Version: 13\r\n"
                            "%s%s%s"
                            "%s\r\n";
  int has_proto = protocols != NULL && protocols[0] != '\0';
  const char *extra = extra_headers != NULL ? extra_headers : "";
  size_t cap = sizeof fmt + strlen(target) + strlen(host) + strlen(key) +
               (has_proto ? strlen(protocols) + 32 : 0) + strlen(extra);
  char *out = malloc(cap);
  if (out == NULL)
    return NULL;
  int n = snprintf(out, cap, fmt, target, host, key,
                   has_proto ? "Sec-WebSocket-Protocol: " : "",
                   has_proto ? protocols : "", has_proto ? "\r\n" : "", extra);
  if (n < 0 || (size_t)n >= cap) {
    free(out);
    return NULL;
  }
  if (out_len != NULL)
    *out_len = (size_t)n;
  return out;
}

const char *rc_http_reason_phrase(int status) {
  switch (status) {
  case 100:
    return "Continue";
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 204:
    return "No Content";
  case 206:
    return "Partial Content";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 303:
    return "See Other";
  case 304:
    return "Not Modified";
  case 307:
    return "Temporary Redirect";
  case 308:
    return "Permanent Redirect";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 406:
    return "Not Acceptable";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 410:
    return "Gone";
  case 411:
    return "Length Required";
  case 413:
    return "Content Too Large";
  case 414:
    return "URI Too Long";
  case 415:
    return "Unsupported Media Type";
  case 426:
    return "Upgrade Required";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 505:
    return "HTTP Version Not Supported";
  default:
    return "Unknown";
  }
}

char *rc_http_response(int status, const char *extra_headers, const char *body,
                       size_t body_len, int close_after, size_t *out_len) {
  /* Longest: "HTTP/1.1 -2147483648 Request Header Fields Too Large\r\n". */
  char line[96];
  char clen[48];
  static const char conn[] = "Connection: close\r\n";
  int is_101 = status == 101;

  if (out_len != NULL)
    *out_len = 0;
  if (body == NULL)
    body_len = 0;

  int ln = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", status,
                    rc_http_reason_phrase(status));
  if (ln < 0 || (size_t)ln >= sizeof line)
    return NULL;
  int cl = 0;
  if (!is_101) {
    cl = snprintf(clen, sizeof clen, "Content-Length: %zu\r\n", body_len);
    if (cl < 0 || (size_t)cl >= sizeof clen)
      return NULL;
  }
  size_t extra_len = extra_headers != NULL ? strlen(extra_headers) : 0;
  size_t conn_len = (!is_101 && close_after) ? sizeof conn - 1 : 0;
  size_t head = (size_t)ln + extra_len + (size_t)cl + conn_len + 2;
  if (head < extra_len || body_len > SIZE_MAX - 1 - head)
    return NULL;
  size_t total = head + body_len;

  /* One spare byte for a NUL, so a body-less response prints as a string. */
  char *out = malloc(total + 1);
  if (out == NULL)
    return NULL;
  char *p = out;
  memcpy(p, line, (size_t)ln);
  p += ln;
  if (extra_len > 0) {
    memcpy(p, extra_headers, extra_len);
    p += extra_len;
  }
  if (cl > 0) {
    memcpy(p, clen, (size_t)cl);
    p += cl;
  }
  if (conn_len > 0) {
    memcpy(p, conn, conn_len);
    p += conn_len;
  }
  *p++ = '\r';
  *p++ = '\n';
  if (body_len > 0) {
    memcpy(p, body, body_len);
    p += body_len;
  }
  *p = '\0';
  if (out_len != NULL)
    *out_len = total;
  return out;
}
