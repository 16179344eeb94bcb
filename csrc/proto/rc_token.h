/* rc_token.h - the bytes of HTTP tokens (RFC 7230 3.2.6), for the parsers
 * of header values in proto/ (rc_http.c, rc_pmd.c). Not installed.
 *
 * Static inline, so that a file that includes it needs nothing else at
 * link time (the fuzz targets build rc_http.c and rc_pmd.c alone). */
#ifndef RC_TOKEN_H
#define RC_TOKEN_H

#include <string.h>

/* RFC 7230 3.2.6 tchar. */
static inline int is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
      (c >= 'A' && c <= 'Z'))
    return 1;
  return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static inline unsigned char ascii_lower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

#endif
