/* rc_pmd.h - the negotiation of permessage-deflate (RFC 7692 sections 5 and
 * 7.1) on both sides of the opening handshake: the server parses the
 * client's Sec-WebSocket-Extensions offers and builds its answer, the client
 * builds its offer and checks the server's answer.
 *
 * Sans-I/O: pure functions over bytes; nothing here allocates. Header values
 * are read with explicit lengths (no NUL needed; a NUL byte is malformed).
 * The strings built here are written into the caller's buffer, always
 * NUL-terminated when they fit.
 *
 * Parameters use one struct for offers and responses, in wire form: what the
 * element says, not the window finally in use. An absent *_max_window_bits
 * is 0 and means 15 (RFC 7692 7.1.2.1, 7.1.2.2).
 *
 * Names are compared ASCII case-insensitively ("Permessage-Deflate",
 * "Client_Max_Window_Bits"): RFC 6455 9.1 and RFC 7692 do not say either
 * way; HTTP's own tokens in the same place (RFC 7231 3.1.1.1 parameter
 * names, RFC 7230 4 transfer codings) are case-insensitive, and what we
 * build is always in the RFC's lower case. */
#ifndef RC_PMD_H
#define RC_PMD_H

#include <stddef.h>

#define RC_PMD_MIN_WINDOW_BITS 8
#define RC_PMD_MAX_WINDOW_BITS 15

/* permessage-deflate offers one header parse keeps; further ones are
 * counted in rc_pmd_offers.ignored (browsers send one, RFC 7692 7.1.3's
 * fallback example two). */
#define RC_PMD_MAX_OFFERS 8

/* A buffer this size holds any offer or response built here (the longest,
 * every parameter with a two-digit value, is 128 bytes and a NUL). */
#define RC_PMD_VALUE_MAX 160

enum {
  RC_PMD_E_SYNTAX = -1,  /* the header breaks RFC 6455 9.1's grammar */
  RC_PMD_E_NONE = -2,    /* no offer the server may accept: no extension */
  RC_PMD_E_SPACE = -3,   /* the buffer is too small for the value */
  RC_PMD_E_INVALID = -4, /* parameters that cannot be sent (out of range) */
  RC_PMD_E_FAIL = -5,    /* the client must _Fail the WebSocket Connection_ */
};

typedef struct rc_pmd_params {
  unsigned char server_no_context_takeover; /* 0 or 1 (RFC 7692 7.1.1.1) */
  unsigned char client_no_context_takeover; /* 0 or 1 (7.1.1.2) */
  unsigned char server_max_window_bits;     /* 0 absent, else 8..15 (7.1.2.1) */
  unsigned char client_max_window_bits;     /* 0 absent, else 8..15 (7.1.2.2) */
  /* 1: client_max_window_bits present without a value (then
   * client_max_window_bits is 15): "I can use any window you name". Legal
   * only in an offer (7.1.2.2). */
  unsigned char client_max_window_bits_bare;
} rc_pmd_params;

typedef struct rc_pmd_offer {
  rc_pmd_params params; /* meaningful when declined is NULL */
  /* NULL: a valid offer per RFC 7692 7.1. Otherwise why the server MUST
   * decline it (5.1: an unknown parameter, a parameter twice, an invalid
   * value): a static string. Declining an offer is not an error of the
   * handshake; the server goes on to the next offer. */
  const char *declined;
} rc_pmd_offer;

typedef struct rc_pmd_offers {
  rc_pmd_offer offers[RC_PMD_MAX_OFFERS]; /* in the client's order (RFC 7692
                                             5: its preference) */
  size_t count;
  size_t ignored; /* permessage-deflate elements past RC_PMD_MAX_OFFERS */
} rc_pmd_offers;

/* Empties offers before the first rc_pmd_parse_offers(). */
void rc_pmd_offers_init(rc_pmd_offers *offers);

/* Parses one Sec-WebSocket-Extensions field value, value[0..len), and
 * appends its permessage-deflate elements to offers; other extensions are
 * skipped (their parameters are only checked for syntax). A request with
 * several Sec-WebSocket-Extensions lines is parsed with one call per line,
 * in order: the same as parsing the lines joined with "," (RFC 7230 3.2.2).
 *
 * Grammar (RFC 6455 9.1, with RFC 7230's OWS around ",", ";" and "="):
 * a comma-separated list of token *(";" token ["=" (token / quoted-string)]);
 * a quoted value must unescape to a token. Empty list elements are
 * ignored (RFC 7230 7), so an empty value holds no offer.
 *
 * Each permessage-deflate element is checked against RFC 7692 7.1; one that
 * fails gets a declined reason and stays in the list (see rc_pmd_offer).
 *
 * Returns 0, or RC_PMD_E_SYNTAX when the value breaks the grammar
 * (unterminated quoted string, ";" without a parameter, a control byte,
 * "=" without a value...): then offers is as it was before the call. RFC
 * 6455 4.2.1 says a server answers a handshake that breaks the grammar
 * with an error such as 400; the caller may instead ignore the line. */
int rc_pmd_parse_offers(const char *value, size_t len, rc_pmd_offers *offers);

/* What the server accepts. */
typedef struct rc_pmd_policy {
  /* 1 (the default): decline an offer with server_max_window_bits below 15.
   * roomcast compresses a published message once with a 32 KiB window
   * (15 bits) and writes the same frame to every member; RFC 7692 7.1.2.1
   * lets the server answer only with the same or a smaller window than
   * offered, so such a member would need a variant of its own. 0: accept
   * it and answer server_max_window_bits with the offered value; the caller
   * must then compress that member's messages with that window. */
  int decline_small_server_window;
  /* 1 (the default): answer client_no_context_takeover (RFC 7692 7.1.1.2
   * lets the server include it whether or not it was offered), so the
   * server inflates each message alone and keeps no window per idle
   * connection. 0: leave it out, even when offered (7.1.1.2 lets the
   * server ignore the offer's, which is only a hint), e.g. for a client
   * known to mishandle it (Safari 15.0-15.3); the server must then keep an
   * inflate window for that connection. */
  int ask_client_no_context_takeover;
} rc_pmd_policy;

/* The defaults above: 1 and 1. (roomcast's server sets
 * decline_small_server_window to 0: a member with a smaller window gets
 * the shared compressed frame of a message that fits its window, and the
 * plain frame of a longer one, so no second compressed variant is made.) */
void rc_pmd_policy_default(rc_pmd_policy *policy);

/* The server's choice (RFC 7692 5: it accepts at most one offer): the first
 * offer, in order, that is valid and that policy allows. Writes the
 * response's parameters to *out (may be NULL) and the Sec-WebSocket-Extensions
 * value to response[0..cap), e.g. "permessage-deflate;
 * server_no_context_takeover; client_no_context_takeover":
 * - server_no_context_takeover always (7.1.1.1: required when offered,
 *   allowed otherwise): each compressed message stands alone, so one frame
 *   serves every member;
 * - client_no_context_takeover when policy asks it (7.1.1.2);
 * - server_max_window_bits when the offer had it, with the offered value
 *   (7.1.2.1: accepting such an offer means answering it; with the default
 *   policy the value is 15);
 * - never client_max_window_bits: the server inflates with a 15-bit window,
 *   which reads any window the client uses, and leaving it out lets the
 *   client use up to 15 (7.1.2.2 allows either).
 * policy may be NULL (the defaults).
 * Returns the index of the accepted offer in offers->offers, RC_PMD_E_NONE
 * when none can be accepted (answer without the extension), or
 * RC_PMD_E_SPACE when cap is too small (RC_PMD_VALUE_MAX always suffices). */
int rc_pmd_server_accept(const rc_pmd_offers *offers,
                         const rc_pmd_policy *policy, rc_pmd_params *out,
                         char *response, size_t cap);

/* 1 when the User-Agent value ua[0..len) is Safari 15.0 to 15.3 (macOS and
 * iOS: "Version/15.N" with N 0..3 and "Safari/", without the tokens of the
 * browsers that borrow Safari's), whose permessage-deflate mishandled
 * client_no_context_takeover: a server that inflates each message alone
 * fails on its messages. The server does not negotiate deflate with it
 * (uWebSockets turns compression off for Safari 15 likewise). */
int rc_pmd_agent_mishandles(const char *ua, size_t len);

/* roomcast's clients' offer: client_max_window_bits without a value (the
 * client can deflate with any window the server names, RFC 7692 7.1.2.2),
 * nothing else: "permessage-deflate; client_max_window_bits", what Chrome,
 * Firefox and the websockets library send. */
void rc_pmd_client_default(rc_pmd_params *offer);

/* Writes the Sec-WebSocket-Extensions value offering params (NULL: the
 * default above) to out[0..cap), NUL-terminated, e.g.
 * "permessage-deflate; client_max_window_bits". Returns its length,
 * RC_PMD_E_INVALID when a window is neither 0 nor 8..15 or a flag is not 0
 * or 1 (bare needs client_max_window_bits 15), or RC_PMD_E_SPACE. */
int rc_pmd_client_offer(const rc_pmd_params *offer, char *out, size_t cap);

/* Writes any params (offer or response form) as one permessage-deflate
 * element, parameters in the RFC's order; same returns as
 * rc_pmd_client_offer. */
int rc_pmd_format(const rc_pmd_params *params, char *out, size_t cap);

/* Checks the server's Sec-WebSocket-Extensions value, value[0..len) (NULL or
 * len 0 when the response had none; several lines joined with ", " by the
 * caller, RFC 7230 3.2.2), against the one offer the client sent (offered;
 * NULL: none was sent). Returns:
 * - 1: the server accepted permessage-deflate; *out (may be NULL) holds the
 *   response's parameters (client_max_window_bits_bare is 0);
 * - 0: no extension accepted (the value holds no element);
 * - RC_PMD_E_FAIL: the client must fail the connection (RFC 6455 4.1,
 *   RFC 7692 5.1); *reason (may be NULL) is a static text saying why:
 *   malformed value, an extension that was not offered (any other, or
 *   permessage-deflate when nothing was offered), permessage-deflate twice,
 *   an unknown or repeated parameter or a bad value (8..15, no leading
 *   zero; the *_no_context_takeover ones take none), client_max_window_bits
 *   without a value, or when it was not offered, or above the offered value
 *   (7.1.2.2), server_max_window_bits missing or above the offered value
 *   when the offer had it (7.1.2.1), server_no_context_takeover missing
 *   when the offer had it (7.1.1.1: accepting such an offer means answering
 *   it). server_no_context_takeover and client_no_context_takeover are
 *   accepted whether offered or not (7.1.1.1, 7.1.1.2). */
int rc_pmd_client_check_response(const char *value, size_t len,
                                 const rc_pmd_params *offered,
                                 rc_pmd_params *out, const char **reason);

#endif
