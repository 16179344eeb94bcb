/* rc_http.h - HTTP/1.1 head parsing and the messages of the WebSocket
 * opening handshake: the server's side (RFC 6455 section 4.2: parse the
 * request, check it, build the response) and the client's (section 4.1:
 * build the request, parse the response, check it).
 *
 * Sans-I/O: the parser reads a buffer and points into it; nothing here
 * allocates except rc_http_response(), which returns malloc'd bytes.
 */
#ifndef RC_HTTP_H
#define RC_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define RC_HTTP_MAX_HEADERS_CAP                                                \
  128 /* hard array bound; callers pass a lower limit */

typedef struct rc_http_header {
  const char *name; /* points into the parsed buffer, not NUL-terminated */
  size_t name_len;
  const char *value; /* surrounding spaces/tabs trimmed */
  size_t value_len;
} rc_http_header;

typedef struct rc_http_request {
  const char *method;
  size_t method_len;
  const char
      *path; /* request target up to '?' (origin-form, starts with '/') */
  size_t path_len;
  const char *query; /* after '?', without it; "" (len 0) when absent */
  size_t query_len;
  int version_minor; /* 1 for HTTP/1.1, 0 for HTTP/1.0 */
  rc_http_header headers[RC_HTTP_MAX_HEADERS_CAP];
  size_t num_headers;
} rc_http_request;

enum {
  RC_HTTP_INCOMPLETE = 0,
  RC_HTTP_E_BAD = -1, /* malformed: answer 400 */
  RC_HTTP_E_TOO_LARGE =
      -2, /* head longer than max_bytes or more than max_headers: answer 431 */
};

/* Parses the request head at buf[0..len).
 * Returns the number of bytes of the head (through the blank line) when it is
 * complete, RC_HTTP_INCOMPLETE (0) when more bytes are needed (and len does not
 * exceed max_bytes yet), RC_HTTP_E_BAD or RC_HTTP_E_TOO_LARGE.
 * max_headers must be <= RC_HTTP_MAX_HEADERS_CAP.
 * Accepts CRLF line ends (a bare LF is tolerated); rejects obsolete line
 * folding, control characters, a header name with spaces or non-token
 * characters, a target that is not origin-form, and versions other than
 * HTTP/1.0 and 1.1. */
int rc_http_parse_request(const char *buf, size_t len, size_t max_bytes,
                          size_t max_headers, rc_http_request *req);

/* A response head: status line and headers, pointing into the buffer. */
typedef struct rc_http_response_head {
  int version_minor;  /* 1 for HTTP/1.1, 0 for HTTP/1.0 */
  int status;         /* 100-999 */
  const char *reason; /* reason phrase, may be empty */
  size_t reason_len;
  rc_http_header headers[RC_HTTP_MAX_HEADERS_CAP];
  size_t num_headers;
} rc_http_response_head;

/* Parses a response head at buf[0..len) with the same return values and
 * bounds as rc_http_parse_request (RC_HTTP_E_TOO_LARGE past max_bytes or
 * max_headers). Status line: "HTTP/1.0" or "HTTP/1.1", a space, three
 * digits, then an optional space and reason phrase. Header lines follow the
 * request parser's rules. */
int rc_http_parse_response(const char *buf, size_t len, size_t max_bytes,
                           size_t max_headers, rc_http_response_head *resp);

/* Case-insensitive header lookup; returns the first match or NULL. */
const rc_http_header *rc_http_find_header(const rc_http_request *req,
                                          const char *name);

const rc_http_header *
rc_http_response_find_header(const rc_http_response_head *resp,
                             const char *name);

/* 1 when the comma-separated header value contains token (case-insensitive). */
int rc_http_header_has_token(const rc_http_header *h, const char *token);

/* Result of checking a parsed request as a WebSocket upgrade. */
typedef struct rc_http_upgrade_check {
  int status;         /* 0: a valid upgrade, 101 may follow; 1: not an upgrade
                         request at all (plain HTTP); otherwise the HTTP error
                         status to answer: 400, 405 or 426 */
  const char *reason; /* static text for the error body, e.g.
                         "missing Sec-WebSocket-Key" */
  const char *key;    /* Sec-WebSocket-Key when status == 0 */
  size_t key_len;
} rc_http_upgrade_check;

/* Checks an upgrade per RFC 6455 4.2.1: GET (405 otherwise, when it asks to
 * upgrade), HTTP/1.1, Host present, Upgrade has token "websocket",
 * Connection has token "upgrade", Sec-WebSocket-Key present and base64 of 16
 * bytes (400 otherwise), Sec-WebSocket-Version 13 (426 otherwise; the 426
 * response must carry "Sec-WebSocket-Version: 13").
 * A request without "Upgrade: websocket" is status 1 (plain HTTP). */
void rc_http_check_upgrade(const rc_http_request *req,
                           rc_http_upgrade_check *out);

/* Writes the 28-character Sec-WebSocket-Accept value plus a NUL into out:
 * base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")), with
 * OpenSSL (link -lcrypto). 0, or -1 when OpenSSL failed (out is ""). */
int rc_ws_accept_value(const char *key, size_t key_len, char out[29]);

/* Standard base64 with '=' padding (RFC 4648 4); writes 4*ceil(len/3)
 * chars and a NUL. Returns the number of chars written, without the NUL. */
size_t rc_base64_encode(const uint8_t *in, size_t len, char *out);

/* Decoded length of a valid standard padded base64 string, or -1. Checks
 * Sec-WebSocket-Key (it must decode to 16 bytes). */
long rc_base64_decoded_len(const char *in, size_t len);

/* Result of checking a response to the client's opening handshake. */
typedef struct rc_http_client_check {
  int ok;               /* 1: the connection is open */
  const char *reason;   /* when !ok: why, e.g. "HTTP 404 in handshake: Not
                           Found" (static, or points into text) */
  const char *protocol; /* the subprotocol the server chose, or NULL */
  size_t protocol_len;
  char text[112]; /* room for reasons that quote the response */
} rc_http_client_check;

/* Checks a parsed response per RFC 6455 4.1: status 101 (else "HTTP <n> in
 * handshake: <reason phrase>"), Upgrade has "websocket", Connection has
 * "upgrade", exactly one Sec-WebSocket-Accept equal to accept (the 28
 * characters rc_ws_accept_value gives for the key that was sent), no
 * Sec-WebSocket-Extensions (none is offered), and at most one
 * Sec-WebSocket-Protocol, which must be one of offered (comma-separated,
 * may be NULL: then none may be chosen). */
void rc_http_check_upgrade_response(const rc_http_response_head *resp,
                                    const char *accept, const char *offered,
                                    rc_http_client_check *out);

/* The same checks for a client that offered extensions (extensions_offered
 * 1): Sec-WebSocket-Extensions is then left to the caller, which checks
 * the lines against its offer (rc_http_join_headers, then
 * rc_pmd_client_check_response) and fails the connection itself when
 * they do not match. With extensions_offered 0, exactly
 * rc_http_check_upgrade_response. */
void rc_http_check_upgrade_response_ext(const rc_http_response_head *resp,
                                        const char *accept, const char *offered,
                                        int extensions_offered,
                                        rc_http_client_check *out);

/* Joins the values of every header named name (ASCII case-insensitive) in
 * hs[0..n) with ", ", in order (RFC 7230 3.2.2: the same as one line with
 * the values joined), into out[0..cap), NUL-terminated. Returns the length
 * (0 when there is no such header, or only empty ones), or -1 when the
 * result and its NUL do not fit in cap bytes. */
long rc_http_join_headers(const rc_http_header *hs, size_t n, const char *name,
                          char *out, size_t cap);

/* Builds the opening handshake request in one malloc'd NUL-terminated
 * string: GET target (path and query, as given), Host, Upgrade,
 * Connection, Sec-WebSocket-Key key, Sec-WebSocket-Version 13, the
 * Sec-WebSocket-Protocol list when protocols is neither NULL nor empty,
 * then extra_headers ("Name: value\r\n" lines, may be NULL). The caller
 * has checked that no argument holds CR, LF or NUL. Returns NULL when
 * memory runs out; *out_len (may be NULL) receives the length. */
char *rc_http_client_request(const char *target, const char *host,
                             const char *key, const char *protocols,
                             const char *extra_headers, size_t *out_len);

/* Builds a complete HTTP/1.1 response head and body in one malloc'd buffer.
 * status: e.g. 101, 400, 403, 404, 426, 431, 503. The reason phrase comes
 * from the status. extra_headers: zero or more complete "Name: value\r\n"
 * lines (may be NULL). body may be NULL (then body_len is 0); for a status
 * other than 101, Content-Length is always sent, and "Connection: close" when
 * close_after is nonzero. A 101 carries no Content-Length.
 * Returns NULL on allocation failure; *out_len receives the length. */
char *rc_http_response(int status, const char *extra_headers, const char *body,
                       size_t body_len, int close_after, size_t *out_len);

/* The reason phrase of a status ("Bad Request"), "Unknown" if not known. */
const char *rc_http_reason_phrase(int status);

#endif
