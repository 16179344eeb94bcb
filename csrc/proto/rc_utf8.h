/* rc_utf8.h - UTF-8 validation for text frames and close reasons
 * (RFC 6455 5.6, 8.1; RFC 3629: no overlongs, no surrogates, <= U+10FFFF). */
#ifndef RC_UTF8_H
#define RC_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* 1 when s[0..n) is valid UTF-8, else 0. Fast path for ASCII runs. */
int rc_utf8_valid(const uint8_t *s, size_t n);

#endif
