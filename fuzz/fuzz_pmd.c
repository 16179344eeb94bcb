/* fuzz_pmd.c - libFuzzer target for the permessage-deflate negotiation
 * (csrc/proto/rc_pmd.c, no loop): the server's parse of offers and its
 * answer, the client's offer and its check of an answer.
 *
 * Input: three control bytes, then a Sec-WebSocket-Extensions value.
 *   byte 0, bit 0     policy: decline_small_server_window
 *           bit 1     policy: ask_client_no_context_takeover
 *           bits 2-4  the answer's buffer size: 160, 0, 1, 18, 19, 47, 76, 129
 *   byte 1            the client's offer: bit 0 server_no_context_takeover,
 *                     bit 1 client_no_context_takeover, bits 2-4
 *                     server_max_window_bits (0, 8, 9, 10, 12, 14, 15, 15),
 *                     bits 5-7 client_max_window_bits (0, 8, 10, 12, 15,
 *                     bare, 9, none offered at all: NULL)
 *   byte 2            where the value splits into two header lines:
 *                     byte2 * len / 255
 *
 * Properties, beyond memory safety (every value is read from a heap copy of
 * exactly its length): a parse succeeds or fails as a whole and a failure
 * leaves the list as it was; a valid offer's parameters are in range;
 * parsing two lines one after the other gives the offers of the two joined
 * with ","; the server accepts exactly the first valid offer its policy
 * allows, its answer fits the buffer, and both the client that made that
 * offer and the offer parser read the answer back as what the server says
 * it answered; the client's check gives a reason whenever it refuses, and
 * what it accepts is in range, within its offer, and reads back the same
 * once written; the client's offer reads back as its parameters. A broken
 * property aborts, which libFuzzer reports as a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/rc_pmd.h"

#include "fuzz_check.h"

static char *copy_exact(const void *data, size_t len) {
  char *b = malloc(len > 0 ? len : 1);
  FUZZ_CHECK(b != NULL);
  if (len > 0)
    memcpy(b, data, len);
  return b;
}

static int window_ok(unsigned bits) {
  return bits == 0 ||
         (bits >= RC_PMD_MIN_WINDOW_BITS && bits <= RC_PMD_MAX_WINDOW_BITS);
}

static int params_ok(const rc_pmd_params *p) {
  return p->server_no_context_takeover <= 1 &&
         p->client_no_context_takeover <= 1 &&
         p->client_max_window_bits_bare <= 1 &&
         window_ok(p->server_max_window_bits) &&
         window_ok(p->client_max_window_bits) &&
         (!p->client_max_window_bits_bare ||
          p->client_max_window_bits == RC_PMD_MAX_WINDOW_BITS);
}

static int params_eq(const rc_pmd_params *a, const rc_pmd_params *b) {
  return memcmp(a, b, sizeof *a) == 0;
}

static int parse_copy(const void *data, size_t len, rc_pmd_offers *o) {
  char *b = copy_exact(data, len);
  int r = rc_pmd_parse_offers(b, len, o);
  free(b);
  FUZZ_CHECK(r == 0 || r == RC_PMD_E_SYNTAX);
  return r;
}

static void check_offers(const rc_pmd_offers *o) {
  FUZZ_CHECK(o->count <= RC_PMD_MAX_OFFERS);
  FUZZ_CHECK(o->ignored == 0 || o->count == RC_PMD_MAX_OFFERS);
  for (size_t k = 0; k < o->count; k++) {
    const rc_pmd_offer *of = &o->offers[k];
    if (of->declined != NULL)
      FUZZ_CHECK(strlen(of->declined) > 0);
    else
      FUZZ_CHECK(params_ok(&of->params));
  }
}

static int offers_eq(const rc_pmd_offers *a, const rc_pmd_offers *b) {
  if (a->count != b->count || a->ignored != b->ignored)
    return 0;
  for (size_t k = 0; k < a->count; k++) {
    if ((a->offers[k].declined == NULL) != (b->offers[k].declined == NULL))
      return 0;
    if (a->offers[k].declined == NULL &&
        !params_eq(&a->offers[k].params, &b->offers[k].params))
      return 0;
  }
  return 1;
}

/* Index of the first offer the policy allows, or -1. */
static int first_acceptable(const rc_pmd_offers *o, const rc_pmd_policy *pol) {
  for (size_t k = 0; k < o->count; k++) {
    const rc_pmd_offer *of = &o->offers[k];
    unsigned s = of->params.server_max_window_bits;
    if (of->declined == NULL &&
        !(pol->decline_small_server_window && s != 0 && s < 15))
      return (int)k;
  }
  return -1;
}

/* The server's answer: the right offer, a value that fits, and one the
 * client that offered it, and the offer parser, read back. */
static void server_side(const rc_pmd_offers *o, const rc_pmd_policy *pol,
                        size_t cap) {
  char *resp = malloc(cap > 0 ? cap : 1);
  FUZZ_CHECK(resp != NULL);
  rc_pmd_params out;
  int k = rc_pmd_server_accept(o, pol, &out, resp, cap);
  int want = first_acceptable(o, pol);
  if (want < 0) {
    FUZZ_CHECK(k == RC_PMD_E_NONE);
    FUZZ_CHECK(cap == 0 || resp[0] == '\0');
    free(resp);
    return;
  }
  if (k == RC_PMD_E_SPACE) {
    FUZZ_CHECK(cap < RC_PMD_VALUE_MAX);
    FUZZ_CHECK(cap == 0 || resp[0] == '\0');
    free(resp);
    return;
  }
  FUZZ_CHECK(k == want);
  const char *nul = memchr(resp, '\0', cap);
  FUZZ_CHECK(nul != NULL);
  size_t n = (size_t)(nul - resp);
  FUZZ_CHECK(params_ok(&out) && out.client_max_window_bits == 0 &&
             !out.client_max_window_bits_bare);
  FUZZ_CHECK(out.server_no_context_takeover == 1);
  FUZZ_CHECK(out.client_no_context_takeover ==
             (pol->ask_client_no_context_takeover ? 1 : 0));
  FUZZ_CHECK(out.server_max_window_bits ==
             o->offers[k].params.server_max_window_bits);
  rc_pmd_params back;
  const char *why = "unset";
  char *exact = copy_exact(resp, n);
  int c =
      rc_pmd_client_check_response(exact, n, &o->offers[k].params, &back, &why);
  FUZZ_CHECK(c == 1 && why == NULL && params_eq(&back, &out));
  rc_pmd_offers again;
  rc_pmd_offers_init(&again);
  FUZZ_CHECK(rc_pmd_parse_offers(exact, n, &again) == 0);
  FUZZ_CHECK(again.count == 1 && again.offers[0].declined == NULL &&
             params_eq(&again.offers[0].params, &out));
  free(exact);
  free(resp);
}

/* The client's check of the input as an answer to offered. */
static void client_side(const uint8_t *data, size_t len,
                        const rc_pmd_params *offered) {
  char *b = copy_exact(data, len);
  rc_pmd_params out;
  const char *why = "unset";
  int r = rc_pmd_client_check_response(b, len, offered, &out, &why);
  free(b);
  FUZZ_CHECK(r == 1 || r == 0 || r == RC_PMD_E_FAIL);
  if (r == RC_PMD_E_FAIL) {
    FUZZ_CHECK(why != NULL && strlen(why) > 0);
    return;
  }
  FUZZ_CHECK(why == NULL);
  if (r == 0) {
    /* Nothing accepted: the value holds no element at all. */
    rc_pmd_offers o;
    rc_pmd_offers_init(&o);
    FUZZ_CHECK(parse_copy(data, len, &o) == 0 && o.count == 0);
    return;
  }
  FUZZ_CHECK(offered != NULL);
  FUZZ_CHECK(params_ok(&out) && !out.client_max_window_bits_bare);
  if (offered->client_max_window_bits == 0)
    FUZZ_CHECK(out.client_max_window_bits == 0);
  else
    FUZZ_CHECK(out.client_max_window_bits <= offered->client_max_window_bits);
  if (offered->server_no_context_takeover)
    FUZZ_CHECK(out.server_no_context_takeover);
  if (offered->server_max_window_bits != 0)
    FUZZ_CHECK(out.server_max_window_bits != 0 &&
               out.server_max_window_bits <= offered->server_max_window_bits);
  /* Written out again, it reads back the same. */
  char text[RC_PMD_VALUE_MAX];
  int n = rc_pmd_format(&out, text, sizeof text);
  FUZZ_CHECK(n > 0 && (size_t)n < sizeof text);
  rc_pmd_params back;
  FUZZ_CHECK(
      rc_pmd_client_check_response(text, (size_t)n, offered, &back, NULL) == 1);
  FUZZ_CHECK(params_eq(&back, &out));
}

/* The client's own offer reads back as its parameters. */
static void client_offer(const rc_pmd_params *p, size_t cap) {
  char *buf = malloc(cap > 0 ? cap : 1);
  FUZZ_CHECK(buf != NULL);
  int n = rc_pmd_client_offer(p, buf, cap);
  rc_pmd_params def;
  rc_pmd_client_default(&def);
  if (n == RC_PMD_E_SPACE) {
    FUZZ_CHECK(cap < RC_PMD_VALUE_MAX);
    free(buf);
    return;
  }
  FUZZ_CHECK(n > 0 && (size_t)n < cap && strlen(buf) == (size_t)n);
  rc_pmd_offers o;
  rc_pmd_offers_init(&o);
  FUZZ_CHECK(parse_copy(buf, (size_t)n, &o) == 0);
  FUZZ_CHECK(o.count == 1 && o.offers[0].declined == NULL);
  FUZZ_CHECK(params_eq(&o.offers[0].params, p != NULL ? p : &def));
  free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t caps[8] = {RC_PMD_VALUE_MAX, 0, 1, 18, 19, 47, 76, 129};
  static const unsigned char smwb[8] = {0, 8, 9, 10, 12, 14, 15, 15};
  static const unsigned char cmwb[8] = {0, 8, 10, 12, 15, 15, 9, 0};
  if (size < 3)
    return 0;
  rc_pmd_policy pol;
  pol.decline_small_server_window = data[0] & 1;
  pol.ask_client_no_context_takeover = (data[0] >> 1) & 1;
  size_t cap = caps[(data[0] >> 2) & 7];
  rc_pmd_params offered;
  memset(&offered, 0, sizeof offered);
  offered.server_no_context_takeover = data[1] & 1;
  offered.client_no_context_takeover = (data[1] >> 1) & 1;
  offered.server_max_window_bits = smwb[(data[1] >> 2) & 7];
  unsigned c = (data[1] >> 5) & 7;
  offered.client_max_window_bits = cmwb[c];
  offered.client_max_window_bits_bare = c == 5;
  const rc_pmd_params *offer = c == 7 ? NULL : &offered;
  unsigned split = data[2];
  data += 3;
  size_t len = size - 3;
  size_t first = (size_t)split * len / 255;

  /* The whole value as one line. */
  rc_pmd_offers whole;
  rc_pmd_offers_init(&whole);
  int rw = parse_copy(data, len, &whole);
  if (rw != 0)
    FUZZ_CHECK(whole.count == 0 && whole.ignored == 0);
  check_offers(&whole);

  /* Two lines, one call each, against the two joined with ",". */
  rc_pmd_offers two;
  rc_pmd_offers_init(&two);
  int r1 = parse_copy(data, first, &two);
  rc_pmd_offers after1 = two;
  int r2 = parse_copy(data + first, len - first, &two);
  check_offers(&two);
  if (r2 != 0)
    FUZZ_CHECK(offers_eq(&two, &after1));
  if (r1 == 0 && r2 == 0) {
    char *joined = malloc(len + 1);
    FUZZ_CHECK(joined != NULL);
    memcpy(joined, data, first);
    joined[first] = ',';
    memcpy(joined + first + 1, data + first, len - first);
    rc_pmd_offers j;
    rc_pmd_offers_init(&j);
    int rj = rc_pmd_parse_offers(joined, len + 1, &j);
    free(joined);
    FUZZ_CHECK(rj == 0 && offers_eq(&j, &two));
  }

  server_side(&whole, &pol, cap);
  server_side(&two, &pol, RC_PMD_VALUE_MAX);
  client_side(data, len, offer);
  client_offer(offer, cap);
  return 0;
}
