/* test_pmd.c - permessage-deflate negotiation (csrc/proto/rc_pmd.c): the
 * server's parse of offers and its answer, the client's offer and its check
 * of the answer (RFC 7692 5, 7.1; RFC 6455 9.1).
 *
 * Every header value is copied into a heap buffer of exactly its length, so
 * a parser that reads one byte too far is caught under AddressSanitizer or
 * valgrind. */
#include <stdlib.h>
#include <string.h>

#include "proto/rc_pmd.h"
#include "support/rc_test.h"

static char *copy_exact(const char *s, size_t n) {
  char *b = malloc(n > 0 ? n : 1);
  if (b == NULL) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  memcpy(b, s, n);
  return b;
}

/* Parses one header line of n bytes, appended to offers. */
static int parse_n(rc_pmd_offers *offers, const char *s, size_t n) {
  char *b = copy_exact(s, n);
  int r = rc_pmd_parse_offers(b, n, offers);
  free(b);
  return r;
}

static int parse(rc_pmd_offers *offers, const char *s) {
  return parse_n(offers, s, strlen(s));
}

/* A fresh list from one header line. */
static int parse1(rc_pmd_offers *offers, const char *s) {
  rc_pmd_offers_init(offers);
  return parse(offers, s);
}

static int check_n(const char *s, size_t n, const rc_pmd_params *offered,
                   rc_pmd_params *out, const char **reason) {
  char *b = copy_exact(s, n);
  int r = rc_pmd_client_check_response(b, n, offered, out, reason);
  free(b);
  return r;
}

static int check(const char *s, const rc_pmd_params *offered,
                 rc_pmd_params *out, const char **reason) {
  return check_n(s, strlen(s), offered, out, reason);
}

static int params_eq(const rc_pmd_params *a, const rc_pmd_params *b) {
  return a->server_no_context_takeover == b->server_no_context_takeover &&
         a->client_no_context_takeover == b->client_no_context_takeover &&
         a->server_max_window_bits == b->server_max_window_bits &&
         a->client_max_window_bits == b->client_max_window_bits &&
         a->client_max_window_bits_bare == b->client_max_window_bits_bare;
}

static const char roomcast_answer[] =
    "permessage-deflate; server_no_context_takeover; "
    "client_no_context_takeover";

/* Parses offer, accepts with the default policy; the answer must be
 * expected and the client that sent offer must accept it. Returns the
 * accepted index, or the error. */
static int accept_default(const char *offer, char *resp, size_t cap) {
  rc_pmd_offers offers;
  if (parse1(&offers, offer) != 0)
    return -100;
  rc_pmd_params out;
  int k = rc_pmd_server_accept(&offers, NULL, &out, resp, cap);
  if (k < 0)
    return k;
  rc_pmd_params back;
  const char *why = "unset";
  int c = check(resp, &offers.offers[k].params, &back, &why);
  if (c != 1 || why != NULL || !params_eq(&back, &out)) {
    fprintf(stderr, "  the client refused %s: %s\n", resp,
            why ? why : "(no reason)");
    return -101;
  }
  return k;
}

/* ---- offers: browsers and libraries ---- */

RC_TEST(safari_offer) {
  rc_pmd_offers o;
  RC_ASSERT_EQ_INT(parse1(&o, "permessage-deflate"), 0);
  RC_ASSERT_EQ_UINT(o.count, 1);
  RC_ASSERT(o.offers[0].declined == NULL);
  rc_pmd_params zero;
  memset(&zero, 0, sizeof zero);
  RC_ASSERT(params_eq(&o.offers[0].params, &zero));
  char resp[RC_PMD_VALUE_MAX];
  RC_ASSERT_EQ_INT(accept_default("permessage-deflate", resp, sizeof resp), 0);
  RC_ASSERT_EQ_STR(resp, roomcast_answer);
}

/* Chrome, Firefox and the websockets library send the same offer. */
RC_TEST(chrome_firefox_websockets_offer) {
  rc_pmd_offers o;
  RC_ASSERT_EQ_INT(parse1(&o, "permessage-deflate; client_max_window_bits"), 0);
  RC_ASSERT_EQ_UINT(o.count, 1);
  RC_ASSERT(o.offers[0].declined == NULL);
  RC_ASSERT_EQ_INT(o.offers[0].params.client_max_window_bits, 15);
  RC_ASSERT_EQ_INT(o.offers[0].params.client_max_window_bits_bare, 1);
  RC_ASSERT_EQ_INT(o.offers[0].params.server_max_window_bits, 0);
  char resp[RC_PMD_VALUE_MAX];
  RC_ASSERT_EQ_INT(accept_default("permessage-deflate; client_max_window_bits",
                                  resp, sizeof resp),
                   0);
  /* The server inflates with 15 bits: it does not constrain the client. */
  RC_ASSERT_EQ_STR(resp, roomcast_answer);
}

/* RFC 7692 7.1.3: an offer with server_max_window_bits=10 and a fallback
 * without it. roomcast declines the first (one compressed frame for every
 * member) and takes the fallback. */
RC_TEST(rfc7692_fallback_example) {
  /* The RFC prints it folded over lines; on the wire it is one line. */
  const char *folded = "permessage-deflate;\r\n"
                       " client_max_window_bits; server_max_window_bits=10, "
                       "permessage-deflate; client_max_window_bits";
  const char *unfolded = "permessage-deflate; client_max_window_bits; "
                         "server_max_window_bits=10, "
                         "permessage-deflate; client_max_window_bits";
  rc_pmd_offers o;
  RC_ASSERT_EQ_INT(parse1(&o, unfolded), 0);
  RC_ASSERT_EQ_UINT(o.count, 2);
  RC_ASSERT(o.offers[0].declined == NULL && o.offers[1].declined == NULL);
  RC_ASSERT_EQ_INT(o.offers[0].params.server_max_window_bits, 10);
  RC_ASSERT_EQ_INT(o.offers[1].params.server_max_window_bits, 0);
  char resp[RC_PMD_VALUE_MAX];
  RC_ASSERT_EQ_INT(accept_default(unfolded, resp, sizeof resp), 1);
  RC_ASSERT_EQ_STR(resp, roomcast_answer);
  /* A server that keeps a variant per window takes the first, and must
   * answer server_max_window_bits (7.1.2.1). */
  rc_pmd_policy pol;
  rc_pmd_policy_default(&pol);
  pol.decline_small_server_window = 0;
  rc_pmd_params out;
  RC_ASSERT_EQ_INT(rc_pmd_server_accept(&o, &pol, &out, resp, sizeof resp), 0);
  RC_ASSERT_EQ_STR(resp, "permessage-deflate; server_no_context_takeover; "
                         "client_no_context_takeover; "
                         "server_max_window_bits=10");
  RC_ASSERT_EQ_INT(out.server_max_window_bits, 10);
  const char *why = NULL;
  RC_ASSERT_EQ_INT(check(resp, &o.offers[0].params, NULL, &why), 1);
  /* A CR or LF inside a value is malformed (the HTTP parser unfolds
   * nothing: it refuses obsolete line folding). */
  RC_ASSERT_EQ_INT(parse1(&o, folded), RC_PMD_E_SYNTAX);
}

/* RFC 7692 7.1.3's other examples: the server's answer to an offer with
 * server_max_window_bits=10 (the client accepts 10 or less), and
 * server_no_context_takeover answered whether offered or not. */
RC_TEST(rfc7692_response_examples) {
  rc_pmd_offers o;
  RC_ASSERT_EQ_INT(parse1(&o, "permessage-deflate; client_max_window_bits; "
                              "server_max_window_bits=10"),
                   0);
  const rc_pmd_params *offered = &o.offers[0].params;
  rc_pmd_params out;
  const char *why = "unset";
  RC_ASSERT_EQ_INT(check("permessage-deflate; server_max_window_bits=10",
                         offered, &out, &why),
                   1);
  RC_ASSERT(why == NULL);
  RC_ASSERT_EQ_INT(out.server_max_window_bits, 10);
  RC_ASSERT_EQ_INT(check("permessage-deflate; server_max_window_bits=8; "
                         "client_max_window_bits=9",
                         offered, &out, &why),
                   1);
  RC_ASSERT_EQ_INT(out.client_max_window_bits, 9);
  RC_ASSERT_EQ_INT(out.client_max_window_bits_bare, 0);
  RC_ASSERT_EQ_INT(check("permessage-deflate; server_max_window_bits=11",
                         offered, &out, &why),
                   RC_PMD_E_FAIL);
  RC_ASSERT(why != NULL && strstr(why, "server_max_window_bits") != NULL);
  RC_ASSERT_EQ_INT(check("permessage-deflate", offered, &out, &why),
                   RC_PMD_E_FAIL);
  RC_ASSERT(strstr(why, "server_max_window_bits") != NULL);
}

RC_TEST(server_window_15_is_answered) {
  char resp[RC_PMD_VALUE_MAX];
  RC_ASSERT_EQ_INT(accept_default("permessage-deflate; server_max_window_bits="
                                  "15; client_max_window_bits=12",
                                  resp, sizeof resp),
                   0);
  RC_ASSERT_EQ_STR(resp, "permessage-deflate; server_no_context_takeover; "
                         "client_no_context_takeover; "
                         "server_max_window_bits=15");
}

RC_TEST(offered_context_takeover_flags) {
  rc_pmd_offers o;
  RC_ASSERT_EQ_INT(parse1(&o, "permessage-deflate; server_no_context_takeover;"
                              " client_no_context_takeover"),
                   0);
  RC_ASSERT(o.offers[0].declined == NULL);
  RC_ASSERT_EQ_INT(o.offers[0].params.server_no_context_takeover, 1);
  RC_ASSERT_EQ_INT(o.offers[0].params.client_no_context_takeover, 1);
  char resp[RC_PMD_VALUE_MAX];
  RC_ASSERT_EQ_INT(rc_pmd_server_accept(&o, NULL, NULL, resp, sizeof resp), 0);
  RC_ASSERT_EQ_STR(resp, roomcast_answer);
}

RC_TEST(policy_without_client_no_context_takeover) {
  rc_pmd_offers o;
  RC_ASSERT_EQ_INT(parse1(&o, "permessage-deflate; client_no_context_takeover"),
                   0);
  rc_pmd_policy pol;
  rc_pmd_policy_default(&pol);
  RC_ASSERT_EQ_INT(pol.decline_small_server_window, 1);
  RC_ASSERT_EQ_INT(pol.ask_client_no_context_takeover, 1);
  pol.ask_client_no_context_takeover = 0;
  rc_pmd_params out;
  char resp[RC_PMD_VALUE_MAX];
  RC_ASSERT_EQ_INT(rc_pmd_server_accept(&o, &pol, &out, resp, sizeof resp), 0);
  RC_ASSERT_EQ_STR(resp, "permessage-deflate; server_no_context_takeover");
  RC_ASSERT_EQ_INT(out.client_no_context_takeover, 0);
  RC_ASSERT_EQ_INT(out.server_no_context_takeover, 1);
}

RC_TEST(other_extensions_are_skipped) {
  rc_pmd_offers o;
  RC_ASSERT_EQ_INT(parse1(&o, "x-webkit-deflate-frame, permessage-foo; x=10; "
                              "use_y, permessage-deflate; "
                              "client_max_window_bits=10, "
                              "permessage-bar; quoted=\"a\\b\""),
                   0);
  RC_ASSERT_EQ_UINT(o.count, 1);
  RC_ASSERT(o.offers[0].declined == NULL);
  RC_ASSERT_EQ_INT(o.offers[0].params.client_max_window_bits, 10);
  RC_ASSERT_EQ_INT(o.offers[0].params.client_max_window_bits_bare, 0);
  /* Only unknown extensions: none to accept. */
  RC_ASSERT_EQ_INT(parse1(&o, "permessage-foo, x-webkit-deflate-frame"), 0);
  RC_ASSERT_EQ_UINT(o.count, 0);
  char resp[RC_PMD_VALUE_MAX];
  memset(resp, 'x', sizeof resp);
  RC_ASSERT_EQ_INT(rc_pmd_server_accept(&o, NULL, NULL, resp, sizeof resp),
                   RC_PMD_E_NONE);
  RC_ASSERT_EQ_STR(resp, "");
}

/* Several Sec-WebSocket-Extensions lines: one call each, in order. */
RC_TEST(several_header_lines) {
  rc_pmd_offers o;
  rc_pmd_offers_init(&o);
  RC_ASSERT_EQ_INT(parse(&o, "x-webkit-deflate-frame"), 0);
  RC_ASSERT_EQ_INT(parse(&o, "permessage-deflate; server_max_window_bits=9"),
                   0);
  RC_ASSERT_EQ_INT(parse(&o, ""), 0);
  RC_ASSERT_EQ_INT(parse(&o, "permessage-deflate; unknown_thing"), 0);
  RC_ASSERT_EQ_INT(parse(&o, "permessage-deflate; client_no_context_takeover"),
                   0);
  RC_ASSERT_EQ_UINT(o.count, 3);
  RC_ASSERT(o.offers[1].declined != NULL);
  rc_pmd_params out;
  char resp[RC_PMD_VALUE_MAX];
  RC_ASSERT_EQ_INT(rc_pmd_server_accept(&o, NULL, &out, resp, sizeof resp), 2);
  RC_ASSERT_EQ_STR(resp, roomcast_answer);
  /* The same lines joined with "," give the same offers. */
  rc_pmd_offers j;
  RC_ASSERT_EQ_INT(parse1(&j, "x-webkit-deflate-frame,permessage-deflate; "
                              "server_max_window_bits=9,,permessage-deflate; "
                              "unknown_thing, permessage-deflate; "
                              "client_no_context_takeover"),
                   0);
  RC_ASSERT_EQ_UINT(j.count, 3);
  for (size_t k = 0; k < 3; k++) {
    RC_ASSERT(params_eq(&j.offers[k].params, &o.offers[k].params));
    RC_ASSERT((j.offers[k].declined == NULL) == (o.offers[k].declined == NULL));
  }
}

/* ---- offers the server must decline (RFC 7692 5.1) ---- */

/* Each bad offer is kept, declined, and the fallback after it accepted. */
static int declined_then_fallback(const char *bad) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s, permessage-deflate", bad);
  rc_pmd_offers o;
  if (parse1(&o, buf) != 0 || o.count != 2 || o.offers[0].declined == NULL ||
      o.offers[1].declined != NULL) {
    fprintf(stderr, "  not declined: %s\n", bad);
    return 0;
  }
  char resp[RC_PMD_VALUE_MAX];
  return rc_pmd_server_accept(&o, NULL, NULL, resp, sizeof resp) == 1 &&
         strcmp(resp, roomcast_answer) == 0;
}

RC_TEST(unknown_and_duplicate_params_are_declined) {
  RC_CHECK(declined_then_fallback("permessage-deflate; foo"));
  RC_CHECK(declined_then_fallback("permessage-deflate; foo=1"));
  RC_CHECK(declined_then_fallback("permessage-deflate; client_max_window_bits;"
                                  " client_max_window_bits=10"));
  RC_CHECK(declined_then_fallback("permessage-deflate; "
                                  "server_no_context_takeover; "
                                  "Server_No_Context_Takeover"));
  RC_CHECK(declined_then_fallback("permessage-deflate; server_max_window_bits="
                                  "10; server_max_window_bits=10"));
  RC_CHECK(
      declined_then_fallback("permessage-deflate; client_max_window_bitsx"));
  rc_pmd_offers o;
  RC_ASSERT_EQ_INT(parse1(&o, "permessage-deflate; x"), 0);
  RC_ASSERT(strstr(o.offers[0].declined, "unknown") != NULL);
  RC_ASSERT_EQ_INT(parse1(&o, "permessage-deflate; client_no_context_takeover;"
                              " client_no_context_takeover"),
                   0);
  RC_ASSERT(strstr(o.offers[0].declined, "twice") != NULL);
}

RC_TEST(bad_window_values_are_declined) {
  static const char *const bad[] = {
      "7",   "16",  "08",  "15x", "0",
      "-9",  "+9",  "1",   "99",  "150",
      "9.0", "0x9", "015", "1e1", "999999999999999999999999"};
  char buf[128];
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    snprintf(buf, sizeof buf, "permessage-deflate; server_max_window_bits=%s",
             bad[k]);
    RC_CHECK(declined_then_fallback(buf));
    snprintf(buf, sizeof buf, "permessage-deflate; client_max_window_bits=%s",
             bad[k]);
    RC_CHECK(declined_then_fallback(buf));
    snprintf(buf, sizeof buf,
             "permessage-deflate; server_max_window_bits=\"%s\"", bad[k]);
    RC_CHECK(declined_then_fallback(buf));
  }
  /* server_max_window_bits needs a value; the takeover flags take none. */
  RC_CHECK(
      declined_then_fallback("permessage-deflate; server_max_window_bits"));
  RC_CHECK(declined_then_fallback(
      "permessage-deflate; server_no_context_takeover=1"));
  RC_CHECK(declined_then_fallback(
      "permessage-deflate; client_no_context_takeover=\"x\""));
}

RC_TEST(every_valid_window_value) {
  char buf[128];
  for (int bits = 8; bits <= 15; bits++) {
    rc_pmd_offers o;
    snprintf(buf, sizeof buf,
             "permessage-deflate; server_max_window_bits=%d; "
             "client_max_window_bits=\"%d\"",
             bits, bits);
    RC_ASSERT_EQ_INT(parse1(&o, buf), 0);
    RC_ASSERT(o.offers[0].declined == NULL);
    RC_ASSERT_EQ_INT(o.offers[0].params.server_max_window_bits, bits);
    RC_ASSERT_EQ_INT(o.offers[0].params.client_max_window_bits, bits);
    char resp[RC_PMD_VALUE_MAX];
    int k = rc_pmd_server_accept(&o, NULL, NULL, resp, sizeof resp);
    RC_ASSERT_EQ_INT(k, bits == 15 ? 0 : RC_PMD_E_NONE);
  }
}

RC_TEST(quoted_values) {
  rc_pmd_offers o;
  RC_ASSERT_EQ_INT(
      parse1(&o, "permessage-deflate; server_max_window_bits=\"10\""), 0);
  RC_ASSERT(o.offers[0].declined == NULL);
  RC_ASSERT_EQ_INT(o.offers[0].params.server_max_window_bits, 10);
  /* A quoted-pair unescapes to the character. */
  RC_ASSERT_EQ_INT(
      parse1(&o, "permessage-deflate; client_max_window_bits=\"1\\5\""), 0);
  RC_ASSERT(o.offers[0].declined == NULL);
  RC_ASSERT_EQ_INT(o.offers[0].params.client_max_window_bits, 15);
  /* After unescaping the value must be a token (RFC 6455 9.1). */
  RC_ASSERT_EQ_INT(
      parse1(&o, "permessage-deflate; client_max_window_bits=\"\""),
      RC_PMD_E_SYNTAX);
  RC_ASSERT_EQ_INT(
      parse1(&o, "permessage-deflate; client_max_window_bits=\"1 5\""),
      RC_PMD_E_SYNTAX);
  RC_ASSERT_EQ_INT(parse1(&o, "permessage-foo; x=\"a,b\", permessage-deflate"),
                   RC_PMD_E_SYNTAX);
  RC_ASSERT_EQ_INT(parse1(&o, "permessage-foo; x=\"a\\\"\""), RC_PMD_E_SYNTAX);
}

/* ---- syntax (RFC 6455 9.1) ---- */

RC_TEST(malformed_headers) {
  static const char *const bad[] = {
      "permessage-deflate; x=\"abc",   /* unterminated quoted string */
      "permessage-deflate; x=\"abc\\", /* ... ending in a backslash */
      "permessage-deflate; x=\"",      /* ... empty */
      "permessage-deflate;",           /* ";" without a parameter */
      "permessage-deflate; ",          /* the same, then a space */
      "permessage-deflate;;client_max_window_bits",
      "permessage-deflate; ,permessage-deflate",
      "; permessage-deflate",                        /* no extension name */
      "permessage-deflate client_max_window_bits",   /* no ";" */
      "permessage-deflate; client_max_window_bits=", /* "=" without value */
      "permessage-deflate; client_max_window_bits= ,x",
      "permessage-deflate; =10",
      "permessage-deflate; a=b=c",
      "permessage-deflate; a=\"b\"c",
      "permessage-deflate, \"x\"",
      "=",
      "permessage-deflate\r\n",
      "permessage-deflate\x7f",
      "permessage-deflate; x=\xc3\xa9", /* a non-ASCII byte */
      "permessage-deflate/1",
      "permessage-deflate(x)",
      "permessage-deflate; client_max_window_bits=10;",
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    rc_pmd_offers o;
    int r = parse1(&o, bad[k]);
    if (r != RC_PMD_E_SYNTAX)
      fprintf(stderr, "  accepted: %s\n", bad[k]);
    RC_CHECK_EQ_INT(r, RC_PMD_E_SYNTAX);
    RC_CHECK_EQ_INT(o.count, 0);
    const char *why = NULL;
    RC_CHECK_EQ_INT(check(bad[k], NULL, NULL, &why), RC_PMD_E_FAIL);
    RC_CHECK(why != NULL);
  }
}

RC_TEST(nul_bytes) {
  rc_pmd_offers o;
  rc_pmd_offers_init(&o);
  static const char a[] = "permessage-deflate\0, permessage-deflate";
  RC_ASSERT_EQ_INT(parse_n(&o, a, sizeof a - 1), RC_PMD_E_SYNTAX);
  static const char b[] = "permessage-deflate; client_max_window_bits=1\0005";
  RC_ASSERT_EQ_INT(parse_n(&o, b, sizeof b - 1), RC_PMD_E_SYNTAX);
  static const char c[] = "\0";
  RC_ASSERT_EQ_INT(parse_n(&o, c, 1), RC_PMD_E_SYNTAX);
  /* Only the given length is read: the NUL past it is not part of it. */
  RC_ASSERT_EQ_INT(parse_n(&o, a, strlen(a)), 0);
  RC_ASSERT_EQ_UINT(o.count, 1);
}

RC_TEST(syntax_error_leaves_offers_unchanged) {
  rc_pmd_offers o;
  rc_pmd_offers_init(&o);
  RC_ASSERT_EQ_INT(parse(&o, "permessage-deflate; client_max_window_bits"), 0);
  RC_ASSERT_EQ_INT(parse(&o, "permessage-deflate, permessage-deflate; x=\""),
                   RC_PMD_E_SYNTAX);
  RC_ASSERT_EQ_UINT(o.count, 1);
  RC_ASSERT_EQ_INT(o.offers[0].params.client_max_window_bits_bare, 1);
}

RC_TEST(empty_elements_and_whitespace) {
  rc_pmd_offers o;
  RC_ASSERT_EQ_INT(parse1(&o, ""), 0);
  RC_ASSERT_EQ_UINT(o.count, 0);
  RC_ASSERT_EQ_INT(parse1(&o, " , ,\t,"), 0);
  RC_ASSERT_EQ_UINT(o.count, 0);
  RC_ASSERT_EQ_INT(rc_pmd_parse_offers(NULL, 0, &o), 0);
  RC_ASSERT_EQ_INT(parse1(&o, ", permessage-deflate ,, permessage-deflate,"),
                   0);
  RC_ASSERT_EQ_UINT(o.count, 2);
  RC_ASSERT_EQ_INT(parse1(&o, "\tpermessage-deflate ;client_max_window_bits "
                              "= 10\t;  server_no_context_takeover "),
                   0);
  RC_ASSERT_EQ_UINT(o.count, 1);
  RC_ASSERT(o.offers[0].declined == NULL);
  RC_ASSERT_EQ_INT(o.offers[0].params.client_max_window_bits, 10);
  RC_ASSERT_EQ_INT(o.offers[0].params.server_no_context_takeover, 1);
}

RC_TEST(names_ignore_case) {
  rc_pmd_offers o;
  RC_ASSERT_EQ_INT(parse1(&o, "PerMessage-Deflate; Client_Max_Window_Bits; "
                              "SERVER_NO_CONTEXT_TAKEOVER; "
                              "server_MAX_window_bits=15"),
                   0);
  RC_ASSERT_EQ_UINT(o.count, 1);
  RC_ASSERT(o.offers[0].declined == NULL);
  RC_ASSERT_EQ_INT(o.offers[0].params.client_max_window_bits_bare, 1);
  RC_ASSERT_EQ_INT(o.offers[0].params.server_no_context_takeover, 1);
  RC_ASSERT_EQ_INT(o.offers[0].params.server_max_window_bits, 15);
  /* Near misses are other extensions or unknown parameters. */
  RC_ASSERT_EQ_INT(parse1(&o, "permessage-deflatex, permessage_deflate"), 0);
  RC_ASSERT_EQ_UINT(o.count, 0);
  rc_pmd_params offered, out;
  rc_pmd_client_default(&offered);
  RC_ASSERT_EQ_INT(check("PERMESSAGE-DEFLATE; Server_No_Context_Takeover",
                         &offered, &out, NULL),
                   1);
  RC_ASSERT_EQ_INT(out.server_no_context_takeover, 1);
}

RC_TEST(many_offers_and_huge_values) {
  char buf[400];
  buf[0] = '\0';
  for (int k = 0; k < 12; k++)
    strcat(buf, k ? ", permessage-deflate; foo" : "permessage-deflate; foo");
  rc_pmd_offers o;
  RC_ASSERT_EQ_INT(parse1(&o, buf), 0);
  RC_ASSERT_EQ_UINT(o.count, RC_PMD_MAX_OFFERS);
  RC_ASSERT_EQ_UINT(o.ignored, 12 - RC_PMD_MAX_OFFERS);
  char resp[RC_PMD_VALUE_MAX];
  RC_ASSERT_EQ_INT(rc_pmd_server_accept(&o, NULL, NULL, resp, sizeof resp),
                   RC_PMD_E_NONE);

  /* A 100,000-digit window and a 100,000-character parameter name. */
  size_t n = 100000;
  const char *head = "permessage-deflate; server_max_window_bits=";
  size_t hl = strlen(head);
  char *big = malloc(hl + n + 40);
  RC_ASSERT(big != NULL);
  memcpy(big, head, hl);
  memset(big + hl, '1', n);
  memcpy(big + hl + n, ", permessage-deflate", 21);
  int r = parse1(&o, big);
  size_t cnt = o.count;
  int declined = o.offers[0].declined != NULL;
  memcpy(big, "permessage-deflate; ", 20);
  memset(big + 20, 'a', n);
  memcpy(big + 20 + n, "=1", 3);
  int r2 = parse1(&o, big);
  int declined2 = o.offers[0].declined != NULL;
  free(big);
  RC_ASSERT_EQ_INT(r, 0);
  RC_ASSERT_EQ_UINT(cnt, 2);
  RC_ASSERT(declined);
  RC_ASSERT_EQ_INT(r2, 0);
  RC_ASSERT(declined2);
}

/* ---- the server's answer ---- */

RC_TEST(answer_needs_room) {
  rc_pmd_offers o;
  RC_ASSERT_EQ_INT(parse1(&o, "permessage-deflate"), 0);
  size_t need = strlen(roomcast_answer) + 1;
  char *exact = malloc(need);
  RC_ASSERT(exact != NULL);
  int k = rc_pmd_server_accept(&o, NULL, NULL, exact, need);
  int same = k == 0 && strcmp(exact, roomcast_answer) == 0;
  int k2 = rc_pmd_server_accept(&o, NULL, NULL, exact, need - 1);
  int empty = exact[0] == '\0';
  int k3 = rc_pmd_server_accept(&o, NULL, NULL, exact, 0);
  free(exact);
  RC_ASSERT(same);
  RC_ASSERT_EQ_INT(k2, RC_PMD_E_SPACE);
  RC_ASSERT(empty);
  RC_ASSERT_EQ_INT(k3, RC_PMD_E_SPACE);
}

RC_TEST(no_offer_no_answer) {
  rc_pmd_offers o;
  rc_pmd_offers_init(&o);
  char resp[8] = "junk";
  rc_pmd_params out;
  memset(&out, 7, sizeof out);
  RC_ASSERT_EQ_INT(rc_pmd_server_accept(&o, NULL, &out, resp, sizeof resp),
                   RC_PMD_E_NONE);
  RC_ASSERT_EQ_STR(resp, "");
  RC_ASSERT_EQ_INT(out.server_max_window_bits, 7); /* untouched */
}

/* ---- the client's offer ---- */

RC_TEST(client_offer) {
  char buf[RC_PMD_VALUE_MAX];
  RC_ASSERT_EQ_INT(rc_pmd_client_offer(NULL, buf, sizeof buf),
                   (int)strlen("permessage-deflate; client_max_window_bits"));
  RC_ASSERT_EQ_STR(buf, "permessage-deflate; client_max_window_bits");
  rc_pmd_params p;
  memset(&p, 0, sizeof p);
  p.server_no_context_takeover = 1;
  p.client_no_context_takeover = 1;
  p.server_max_window_bits = 15;
  p.client_max_window_bits = 15;
  int n = rc_pmd_client_offer(&p, buf, sizeof buf);
  RC_ASSERT_EQ_STR(buf, "permessage-deflate; server_no_context_takeover; "
                        "client_no_context_takeover; "
                        "server_max_window_bits=15; client_max_window_bits=15");
  RC_ASSERT_EQ_INT(n, 128);
  /* The offer reads back as the same parameters. */
  rc_pmd_offers o;
  RC_ASSERT_EQ_INT(parse1(&o, buf), 0);
  RC_ASSERT(o.offers[0].declined == NULL && params_eq(&o.offers[0].params, &p));
  RC_ASSERT_EQ_INT(rc_pmd_client_offer(&p, buf, 128), RC_PMD_E_SPACE);
  RC_ASSERT_EQ_STR(buf, "");
  RC_ASSERT_EQ_INT(rc_pmd_client_offer(&p, buf, 129), 128);
  /* Out of range. */
  p.server_max_window_bits = 7;
  RC_ASSERT_EQ_INT(rc_pmd_client_offer(&p, buf, sizeof buf), RC_PMD_E_INVALID);
  p.server_max_window_bits = 16;
  RC_ASSERT_EQ_INT(rc_pmd_client_offer(&p, buf, sizeof buf), RC_PMD_E_INVALID);
  p.server_max_window_bits = 0;
  p.client_max_window_bits = 12;
  p.client_max_window_bits_bare = 1;
  RC_ASSERT_EQ_INT(rc_pmd_client_offer(&p, buf, sizeof buf), RC_PMD_E_INVALID);
  p.client_max_window_bits_bare = 0;
  p.server_no_context_takeover = 2;
  RC_ASSERT_EQ_INT(rc_pmd_client_offer(&p, buf, sizeof buf), RC_PMD_E_INVALID);
}

/* ---- the client's check of the answer ---- */

RC_TEST(client_accepts_valid_answers) {
  rc_pmd_params offered, out;
  rc_pmd_client_default(&offered);
  const char *why = "unset";
  RC_ASSERT_EQ_INT(check(roomcast_answer, &offered, &out, &why), 1);
  RC_ASSERT(why == NULL);
  RC_ASSERT_EQ_INT(out.server_no_context_takeover, 1);
  RC_ASSERT_EQ_INT(out.client_no_context_takeover, 1);
  RC_ASSERT_EQ_INT(out.client_max_window_bits, 0);
  /* The websockets server's default answer. */
  RC_ASSERT_EQ_INT(check("permessage-deflate; server_max_window_bits=12; "
                         "client_max_window_bits=12",
                         &offered, &out, &why),
                   1);
  RC_ASSERT_EQ_INT(out.server_max_window_bits, 12);
  RC_ASSERT_EQ_INT(out.client_max_window_bits, 12);
  RC_ASSERT_EQ_INT(check("permessage-deflate", &offered, &out, &why), 1);
  /* The server may send server_max_window_bits unasked (7.1.2.1). */
  RC_ASSERT_EQ_INT(check("permessage-deflate; server_max_window_bits=8",
                         &offered, &out, &why),
                   1);
  /* No extension in the answer: not negotiated, not an error. */
  RC_ASSERT_EQ_INT(check("", &offered, &out, &why), 0);
  RC_ASSERT_EQ_INT(rc_pmd_client_check_response(NULL, 0, &offered, &out, &why),
                   0);
  RC_ASSERT(why == NULL);
  RC_ASSERT_EQ_INT(check(" , ", NULL, &out, &why), 0);
}

static const char *fails(const char *resp, const rc_pmd_params *offered) {
  const char *why = NULL;
  rc_pmd_params out;
  int r = check(resp, offered, &out, &why);
  if (r != RC_PMD_E_FAIL || why == NULL) {
    fprintf(stderr, "  not refused (%d): %s\n", r, resp);
    return NULL;
  }
  return why;
}

RC_TEST(client_refuses_bad_answers) {
  rc_pmd_params def, plain, with10;
  rc_pmd_client_default(&def);
  memset(&plain, 0, sizeof plain);
  memset(&with10, 0, sizeof with10);
  with10.client_max_window_bits = 10;
  const char *w;
  /* 7.1.2.2: bare client_max_window_bits is for offers only. */
  RC_ASSERT((w = fails("permessage-deflate; client_max_window_bits", &def)));
  RC_ASSERT(strstr(w, "without a value") != NULL);
  /* 7.1.2.2: MUST NOT answer it when it was not offered. */
  RC_ASSERT(
      (w = fails("permessage-deflate; client_max_window_bits=10", &plain)));
  RC_ASSERT(strstr(w, "not offered") != NULL);
  /* ... nor above the offered value. */
  RC_ASSERT(fails("permessage-deflate; client_max_window_bits=11", &with10));
  RC_ASSERT_EQ_INT(check("permessage-deflate; client_max_window_bits=10",
                         &with10, NULL, NULL),
                   1);
  /* 7.1.1.1: an offered server_no_context_takeover must be answered;
   * client_no_context_takeover may be ignored. */
  rc_pmd_params nct;
  memset(&nct, 0, sizeof nct);
  nct.server_no_context_takeover = 1;
  nct.client_no_context_takeover = 1;
  RC_ASSERT((w = fails("permessage-deflate", &nct)));
  RC_ASSERT(strstr(w, "server_no_context_takeover") != NULL);
  RC_ASSERT_EQ_INT(
      check("permessage-deflate; server_no_context_takeover", &nct, NULL, NULL),
      1);
  /* 5.1: unknown, repeated, invalid. */
  RC_ASSERT((w = fails("permessage-deflate; foo", &def)));
  RC_ASSERT(strstr(w, "unknown") != NULL);
  RC_ASSERT(fails("permessage-deflate; server_no_context_takeover; "
                  "server_no_context_takeover",
                  &def));
  RC_ASSERT(fails("permessage-deflate; server_max_window_bits=16", &def));
  RC_ASSERT(fails("permessage-deflate; server_max_window_bits=7", &def));
  RC_ASSERT(fails("permessage-deflate; server_max_window_bits=08", &def));
  RC_ASSERT(fails("permessage-deflate; server_max_window_bits=15x", &def));
  RC_ASSERT(fails("permessage-deflate; server_max_window_bits", &def));
  RC_ASSERT(fails("permessage-deflate; client_max_window_bits=16", &def));
  RC_ASSERT(fails("permessage-deflate; client_no_context_takeover=1", &def));
  /* One extension offered, one may be accepted. */
  RC_ASSERT((w = fails("permessage-deflate, permessage-deflate", &def)));
  RC_ASSERT(strstr(w, "twice") != NULL);
  RC_ASSERT((w = fails("x-webkit-deflate-frame", &def)));
  RC_ASSERT(strstr(w, "not offered") != NULL);
  RC_ASSERT(fails("permessage-deflate, permessage-foo", &def));
  RC_ASSERT(fails("permessage-deflate", NULL));
  /* Malformed. */
  RC_ASSERT((w = fails("permessage-deflate;", &def)));
  RC_ASSERT(strstr(w, "malformed") != NULL);
  RC_ASSERT(fails("permessage-deflate; x=\"", &def));
  static const char nul[] = "permessage-deflate\0";
  RC_ASSERT_EQ_INT(check_n(nul, sizeof nul - 1, &def, NULL, NULL),
                   RC_PMD_E_FAIL);
}

/* Every answer the server can give, under both policies, to every valid
 * offer of one element, reads back at the client as what was answered. */
RC_TEST(every_answer_round_trips) {
  static const unsigned char windows[] = {0, 8, 9, 12, 15};
  int accepted = 0;
  for (int flags = 0; flags < 4; flags++)
    for (size_t s = 0; s < sizeof windows; s++)
      for (size_t c = 0; c < sizeof windows + 1; c++)
        for (int pol_small = 0; pol_small < 2; pol_small++)
          for (int pol_ask = 0; pol_ask < 2; pol_ask++) {
            rc_pmd_params p;
            memset(&p, 0, sizeof p);
            p.server_no_context_takeover = flags & 1;
            p.client_no_context_takeover = (flags >> 1) & 1;
            p.server_max_window_bits = windows[s];
            if (c == sizeof windows) {
              p.client_max_window_bits = 15;
              p.client_max_window_bits_bare = 1;
            } else {
              p.client_max_window_bits = windows[c];
            }
            char offer[RC_PMD_VALUE_MAX], resp[RC_PMD_VALUE_MAX];
            RC_ASSERT(rc_pmd_client_offer(&p, offer, sizeof offer) > 0);
            rc_pmd_offers o;
            RC_ASSERT_EQ_INT(parse1(&o, offer), 0);
            RC_ASSERT(o.offers[0].declined == NULL &&
                      params_eq(&o.offers[0].params, &p));
            rc_pmd_policy pol = {pol_small, pol_ask};
            rc_pmd_params out, back;
            int k = rc_pmd_server_accept(&o, &pol, &out, resp, sizeof resp);
            int small =
                p.server_max_window_bits != 0 && p.server_max_window_bits < 15;
            if (pol_small && small) {
              RC_ASSERT_EQ_INT(k, RC_PMD_E_NONE);
              continue;
            }
            RC_ASSERT_EQ_INT(k, 0);
            accepted++;
            RC_ASSERT_EQ_INT(out.server_no_context_takeover, 1);
            RC_ASSERT_EQ_INT(out.client_no_context_takeover, pol_ask);
            RC_ASSERT_EQ_INT(out.server_max_window_bits,
                             p.server_max_window_bits);
            RC_ASSERT_EQ_INT(out.client_max_window_bits, 0);
            const char *why = "unset";
            RC_ASSERT_EQ_INT(check(resp, &p, &back, &why), 1);
            RC_ASSERT(why == NULL && params_eq(&back, &out));
          }
  RC_ASSERT(accepted > 100);
}

/* Safari 15.0-15.3 (macOS and iOS) is told apart from later Safaris and
 * from the browsers whose agents also name Safari. */
static int mishandles(const char *ua) {
  return rc_pmd_agent_mishandles(ua, strlen(ua));
}

RC_TEST(safari_15_early_agents) {
  RC_ASSERT(mishandles("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) "
                       "AppleWebKit/605.1.15 (KHTML, like Gecko) "
                       "Version/15.1 Safari/605.1.15"));
  RC_ASSERT(mishandles("Mozilla/5.0 (iPhone; CPU iPhone OS 15_3 like Mac OS "
                       "X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                       "Version/15.3 Mobile/15E148 Safari/604.1"));
  RC_ASSERT(mishandles("AppleWebKit/605.1.15 Version/15.0 Safari/605.1.15"));
  /* 15.4 fixed it; 16 and 17 too; 15.10 is not 15.1. */
  RC_ASSERT(!mishandles("AppleWebKit/605.1.15 Version/15.4 Safari/605.1.15"));
  RC_ASSERT(!mishandles("AppleWebKit/605.1.15 Version/16.0 Safari/605.1.15"));
  RC_ASSERT(!mishandles("AppleWebKit/605.1.15 Version/15.10 Safari/60"));
  RC_ASSERT(!mishandles("Version/5.1 Safari/534.57.2"));
  /* Chrome, Chrome and Firefox on iOS, Edge on iOS: not Safari. */
  RC_ASSERT(!mishandles("Mozilla/5.0 (Windows NT 10.0; Win64; x64) "
                        "AppleWebKit/537.36 (KHTML, like Gecko) "
                        "Chrome/120.0.0.0 Safari/537.36"));
  RC_ASSERT(!mishandles("Mozilla/5.0 (iPhone; CPU iPhone OS 15_2 like Mac OS "
                        "X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                        "CriOS/98.0 Mobile/15E148 Version/15.2 Safari/604.1"));
  RC_ASSERT(!mishandles("Version/15.2 Mobile/15E148 FxiOS/40 Safari/605"));
  RC_ASSERT(!mishandles("Python/3.11 websockets/15.0"));
  RC_ASSERT(!mishandles(""));
  /* The version at the very end, and cut right after "15.". */
  RC_ASSERT(mishandles("Safari/605 Version/15.2"));
  RC_ASSERT(!mishandles("Safari/605 Version/15."));
  RC_ASSERT(!rc_pmd_agent_mishandles(NULL, 0));
}

RC_TEST_MAIN(
    RC_CASE(safari_offer), RC_CASE(chrome_firefox_websockets_offer),
    RC_CASE(rfc7692_fallback_example), RC_CASE(rfc7692_response_examples),
    RC_CASE(server_window_15_is_answered),
    RC_CASE(offered_context_takeover_flags),
    RC_CASE(policy_without_client_no_context_takeover),
    RC_CASE(other_extensions_are_skipped), RC_CASE(several_header_lines),
    RC_CASE(unknown_and_duplicate_params_are_declined),
    RC_CASE(bad_window_values_are_declined), RC_CASE(every_valid_window_value),
    RC_CASE(quoted_values), RC_CASE(malformed_headers), RC_CASE(nul_bytes),
    RC_CASE(syntax_error_leaves_offers_unchanged),
    RC_CASE(empty_elements_and_whitespace), RC_CASE(names_ignore_case),
    RC_CASE(many_offers_and_huge_values), RC_CASE(answer_needs_room),
    RC_CASE(no_offer_no_answer), RC_CASE(client_offer),
    RC_CASE(client_accepts_valid_answers), RC_CASE(client_refuses_bad_answers),
    RC_CASE(every_answer_round_trips), RC_CASE(safari_15_early_agents))
