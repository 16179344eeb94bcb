/* rc_pmd.c - permessage-deflate negotiation (RFC 7692 5 and 7.1) over
 * Sec-WebSocket-Extensions values (RFC 6455 9.1).
 *
 * One lexer reads a value element by element (next_element); each
 * permessage-deflate element's parameters are checked against 7.1 as they
 * are read (apply_param), the same way for offers and responses. What
 * differs between the sides is what a valid element may say, checked after:
 * the server by its policy (rc_pmd_server_accept), the client against its
 * offer (rc_pmd_client_check_response).
 *
 * Every byte access is guarded by the length; values are never copied
 * except the first bytes of a parameter value, which is all a window needs
 * ("8" to "15"), so any input is safe to feed and costs time linear in its
 * length. */
#include "proto/rc_pmd.h"
#include "proto/rc_token.h"

#include <stdio.h>
#include <string.h>

static const char pmd_name[] = "permessage-deflate";

/* s[0..n) equals the lower-case literal lit, ignoring ASCII case. */
static int name_is(const char *s, size_t n, const char *lit) {
  if (strlen(lit) != n)
    return 0;
  for (size_t i = 0; i < n; i++) {
    if (ascii_lower((unsigned char)s[i]) != (unsigned char)lit[i])
      return 0;
  }
  return 1;
}

/* ---- the lexer ---------------------------------------------------------- */

typedef struct lexer {
  const char *s;
  size_t n;
  size_t i;
} lexer;

/* One list element as read: for permessage-deflate, its parameters. */
typedef struct element {
  int is_pmd;
  rc_pmd_params params;
  unsigned seen;       /* bit per known parameter, to find repeats */
  const char *invalid; /* the first RFC 7692 7.1 problem, or NULL */
} element;

/* A parameter value after quoted-string unescaping: its first bytes and its
 * length (the rest is never needed). */
typedef struct pvalue {
  int present; /* "=" was given */
  char head[3];
  size_t len;
} pvalue;

static void skip_ows(lexer *lx) {
  while (lx->i < lx->n && (lx->s[lx->i] == ' ' || lx->s[lx->i] == '\t'))
    lx->i++;
}

/* Reads 1*tchar; returns its length (0: none there). */
static size_t read_token(lexer *lx) {
  size_t start = lx->i;
  while (lx->i < lx->n && is_tchar((unsigned char)lx->s[lx->i]))
    lx->i++;
  return lx->i - start;
}

static void value_add(pvalue *v, char c) {
  if (v->len < sizeof v->head)
    v->head[v->len] = c;
  v->len++;
}

/* Reads a token or a quoted-string (RFC 7230 3.2.6) whose unescaped text is
 * a token (RFC 6455 9.1). 0, or -1 when malformed. */
static int read_value(lexer *lx, pvalue *v) {
  v->present = 1;
  v->len = 0;
  if (lx->i < lx->n && lx->s[lx->i] != '"') {
    size_t start = lx->i, n = read_token(lx);
    for (size_t k = 0; k < n; k++)
      value_add(v, lx->s[start + k]);
    return n > 0 ? 0 : -1;
  }
  lx->i++; /* the opening quote (or the end: then the loop fails) */
  for (;;) {
    if (lx->i >= lx->n)
      return -1; /* unterminated */
    unsigned char c = (unsigned char)lx->s[lx->i++];
    if (c == '"')
      return v->len > 0 ? 0 : -1;
    if (c == '\\') {
      if (lx->i >= lx->n)
        return -1;
      c = (unsigned char)lx->s[lx->i++];
    }
    if (!is_tchar(c))
      return -1; /* not a token once unescaped (or not quotable at all) */
    value_add(v, (char)c);
  }
}

/* A window value: "8" to "15", no leading zero, no sign (7.1.2.1). Returns
 * the bits, or 0. */
static int window_bits(const pvalue *v) {
  if (v->len == 1 && v->head[0] >= '8' && v->head[0] <= '9')
    return v->head[0] - '0';
  if (v->len == 2 && v->head[0] == '1' && v->head[1] >= '0' &&
      v->head[1] <= '5')
    return 10 + (v->head[1] - '0');
  return 0;
}

enum {
  P_SERVER_NCT = 1u << 0,
  P_CLIENT_NCT = 1u << 1,
  P_SERVER_MWB = 1u << 2,
  P_CLIENT_MWB = 1u << 3,
};

/* Which known parameter name[0..n) is, or 0. */
static unsigned param_bit(const char *name, size_t n) {
  if (name_is(name, n, "server_no_context_takeover"))
    return P_SERVER_NCT;
  if (name_is(name, n, "client_no_context_takeover"))
    return P_CLIENT_NCT;
  if (name_is(name, n, "server_max_window_bits"))
    return P_SERVER_MWB;
  if (name_is(name, n, "client_max_window_bits"))
    return P_CLIENT_MWB;
  return 0;
}

/* Checks one parameter of a permessage-deflate element against RFC 7692
 * 7.1 and records it; the first problem found is the element's. */
static void apply_param(element *e, const char *name, size_t n,
                        const pvalue *v) {
  if (!e->is_pmd || e->invalid != NULL)
    return;
  unsigned bit = param_bit(name, n);
  if (bit == 0) {
    e->invalid = "permessage-deflate: unknown parameter";
    return;
  }
  if (e->seen & bit) {
    e->invalid = "permessage-deflate: a parameter given twice";
    return;
  }
  e->seen |= bit;
  rc_pmd_params *p = &e->params;
  switch (bit) {
  case P_SERVER_NCT:
  case P_CLIENT_NCT: /* 7.1.1.1, 7.1.1.2: "has no value" */
    if (v->present)
      e->invalid = "permessage-deflate: a *_no_context_takeover with a value";
    else if (bit == P_SERVER_NCT)
      p->server_no_context_takeover = 1;
    else
      p->client_no_context_takeover = 1;
    return;
  case P_SERVER_MWB: /* 7.1.2.1: a value is required */
    p->server_max_window_bits = (unsigned char)window_bits(v);
    if (!v->present || p->server_max_window_bits == 0)
      e->invalid = "permessage-deflate: bad server_max_window_bits";
    return;
  default: /* P_CLIENT_MWB, 7.1.2.2: no value, or one */
    if (!v->present) {
      p->client_max_window_bits = RC_PMD_MAX_WINDOW_BITS;
      p->client_max_window_bits_bare = 1;
      return;
    }
    p->client_max_window_bits = (unsigned char)window_bits(v);
    if (p->client_max_window_bits == 0)
      e->invalid = "permessage-deflate: bad client_max_window_bits";
    return;
  }
}

/* Reads the next non-empty element: 1 (in *e), 0 at the end, or -1 when the
 * value breaks the grammar. */
static int next_element(lexer *lx, element *e) {
  for (;;) {
    skip_ows(lx);
    if (lx->i >= lx->n)
      return 0;
    if (lx->s[lx->i] != ',')
      break;
    lx->i++; /* an empty element (RFC 7230 7) */
  }
  memset(e, 0, sizeof *e);
  const char *name = lx->s + lx->i;
  size_t name_len = read_token(lx);
  if (name_len == 0)
    return -1;
  e->is_pmd = name_is(name, name_len, pmd_name);
  skip_ows(lx);
  while (lx->i < lx->n && lx->s[lx->i] == ';') {
    lx->i++;
    skip_ows(lx);
    const char *pname = lx->s + lx->i;
    size_t plen = read_token(lx);
    if (plen == 0)
      return -1;
    skip_ows(lx);
    pvalue v;
    memset(&v, 0, sizeof v);
    if (lx->i < lx->n && lx->s[lx->i] == '=') {
      lx->i++;
      skip_ows(lx);
      if (read_value(lx, &v) != 0)
        return -1;
      skip_ows(lx);
    }
    apply_param(e, pname, plen, &v);
  }
  if (lx->i < lx->n) {
    if (lx->s[lx->i] != ',')
      return -1;
    lx->i++;
  }
  return 1;
}

/* ---- the server's side ------------------------------------------------- */

void rc_pmd_offers_init(rc_pmd_offers *offers) {
  memset(offers, 0, sizeof *offers);
}

int rc_pmd_parse_offers(const char *value, size_t len, rc_pmd_offers *offers) {
  size_t count0 = offers->count, ignored0 = offers->ignored;
  lexer lx = {value, value != NULL ? len : 0, 0};
  element e;
  int r;
  while ((r = next_element(&lx, &e)) == 1) {
    if (!e.is_pmd)
      continue;
    if (offers->count == RC_PMD_MAX_OFFERS) {
      offers->ignored++;
      continue;
    }
    rc_pmd_offer *o = &offers->offers[offers->count++];
    memset(o, 0, sizeof *o);
    o->declined = e.invalid;
    if (e.invalid == NULL)
      o->params = e.params;
  }
  if (r < 0) {
    offers->count = count0;
    offers->ignored = ignored0;
    return RC_PMD_E_SYNTAX;
  }
  return 0;
}

void rc_pmd_policy_default(rc_pmd_policy *policy) {
  policy->decline_small_server_window = 1;
  policy->ask_client_no_context_takeover = 1;
}

static int window_ok(unsigned bits) {
  return bits == 0 ||
         (bits >= RC_PMD_MIN_WINDOW_BITS && bits <= RC_PMD_MAX_WINDOW_BITS);
}

static int params_ok(const rc_pmd_params *p) {
  if (p->server_no_context_takeover > 1 || p->client_no_context_takeover > 1 ||
      p->client_max_window_bits_bare > 1)
    return 0;
  if (!window_ok(p->server_max_window_bits) ||
      !window_ok(p->client_max_window_bits))
    return 0;
  return !p->client_max_window_bits_bare ||
         p->client_max_window_bits == RC_PMD_MAX_WINDOW_BITS;
}

/* Appends s to out[*at..cap); -1 when it does not fit with a NUL. */
static int put(char *out, size_t cap, size_t *at, const char *s) {
  size_t n = strlen(s);
  if (n >= cap - *at)
    return -1;
  memcpy(out + *at, s, n + 1);
  *at += n;
  return 0;
}

static int put_bits(char *out, size_t cap, size_t *at, const char *name,
                    unsigned bits) {
  char buf[40];
  int n = snprintf(buf, sizeof buf, "; %s=%u", name, bits);
  if (n < 0 || (size_t)n >= sizeof buf)
    return -1;
  return put(out, cap, at, buf);
}

int rc_pmd_format(const rc_pmd_params *p, char *out, size_t cap) {
  if (!params_ok(p))
    return RC_PMD_E_INVALID;
  if (out == NULL || cap == 0)
    return RC_PMD_E_SPACE;
  size_t at = 0;
  out[0] = '\0';
  int bad = put(out, cap, &at, pmd_name);
  if (!bad && p->server_no_context_takeover)
    bad = put(out, cap, &at, "; server_no_context_takeover");
  if (!bad && p->client_no_context_takeover)
    bad = put(out, cap, &at, "; client_no_context_takeover");
  if (!bad && p->server_max_window_bits)
    bad = put_bits(out, cap, &at, "server_max_window_bits",
                   p->server_max_window_bits);
  if (!bad && p->client_max_window_bits_bare)
    bad = put(out, cap, &at, "; client_max_window_bits");
  else if (!bad && p->client_max_window_bits)
    bad = put_bits(out, cap, &at, "client_max_window_bits",
                   p->client_max_window_bits);
  if (bad) {
    out[0] = '\0';
    return RC_PMD_E_SPACE;
  }
  return (int)at;
}

int rc_pmd_server_accept(const rc_pmd_offers *offers,
                         const rc_pmd_policy *policy, rc_pmd_params *out,
                         char *response, size_t cap) {
  rc_pmd_policy defaults;
  if (policy == NULL) {
    rc_pmd_policy_default(&defaults);
    policy = &defaults;
  }
  for (size_t k = 0; k < offers->count; k++) {
    const rc_pmd_offer *o = &offers->offers[k];
    if (o->declined != NULL)
      continue; /* RFC 7692 5.1: MUST decline; try the next */
    unsigned smwb = o->params.server_max_window_bits;
    if (smwb != 0 && smwb < RC_PMD_MAX_WINDOW_BITS &&
        policy->decline_small_server_window)
      continue; /* 7.1.2.1: "declines ... if the server doesn't support it" */
    rc_pmd_params r;
    memset(&r, 0, sizeof r);
    r.server_no_context_takeover = 1; /* 7.1.1.1 */
    r.client_no_context_takeover =    /* 7.1.1.2 */
        policy->ask_client_no_context_takeover ? 1 : 0;
    r.server_max_window_bits = (unsigned char)smwb; /* 7.1.2.1: echo it */
    if (rc_pmd_format(&r, response, cap) < 0)
      return RC_PMD_E_SPACE;
    if (out != NULL)
      *out = r;
    return (int)k;
  }
  if (response != NULL && cap > 0)
    response[0] = '\0';
  return RC_PMD_E_NONE;
}

/* ---- the client's side ------------------------------------------------- */

void rc_pmd_client_default(rc_pmd_params *offer) {
  memset(offer, 0, sizeof *offer);
  offer->client_max_window_bits = RC_PMD_MAX_WINDOW_BITS;
  offer->client_max_window_bits_bare = 1;
}

int rc_pmd_client_offer(const rc_pmd_params *offer, char *out, size_t cap) {
  rc_pmd_params def;
  if (offer == NULL) {
    rc_pmd_client_default(&def);
    offer = &def;
  }
  return rc_pmd_format(offer, out, cap);
}

/* The client's checks of a valid element against what it offered; NULL
 * when it can use it. */
static const char *response_problem(const rc_pmd_params *r,
                                    const rc_pmd_params *offered) {
  if (offered->server_no_context_takeover && !r->server_no_context_takeover)
    return "permessage-deflate: server_no_context_takeover offered, not "
           "answered"; /* 7.1.1.1: MUST include it */
  if (r->client_max_window_bits_bare)
    return "permessage-deflate: client_max_window_bits without a value in "
           "the response";
  if (r->client_max_window_bits != 0) {
    if (offered->client_max_window_bits == 0) /* 7.1.2.2: MUST NOT */
      return "permessage-deflate: client_max_window_bits was not offered";
    if (r->client_max_window_bits > offered->client_max_window_bits)
      return "permessage-deflate: client_max_window_bits above the offer";
  }
  if (offered->server_max_window_bits != 0) { /* 7.1.2.1 */
    if (r->server_max_window_bits == 0)
      return "permessage-deflate: server_max_window_bits offered, not "
             "answered";
    if (r->server_max_window_bits > offered->server_max_window_bits)
      return "permessage-deflate: server_max_window_bits above the offer";
  }
  return NULL;
}

int rc_pmd_client_check_response(const char *value, size_t len,
                                 const rc_pmd_params *offered,
                                 rc_pmd_params *out, const char **reason) {
  const char *why = NULL;
  lexer lx = {value, value != NULL ? len : 0, 0};
  element e, got;
  int r, found = 0;
  while (why == NULL && (r = next_element(&lx, &e)) != 0) {
    if (r < 0)
      why = "Sec-WebSocket-Extensions: malformed value";
    else if (!e.is_pmd || offered == NULL)
      why = "Sec-WebSocket-Extensions: an extension that was not offered";
    else if (found)
      why = "permessage-deflate: accepted twice";
    else if (e.invalid != NULL)
      why = e.invalid; /* 5.1: the client MUST fail */
    else
      why = response_problem(&e.params, offered);
    found = 1;
    got = e;
  }
  if (why != NULL) {
    if (reason != NULL)
      *reason = why;
    return RC_PMD_E_FAIL;
  }
  if (reason != NULL)
    *reason = NULL;
  if (!found)
    return 0;
  if (out != NULL)
    *out = got.params;
  return 1;
}

/* --- user agents ---------------------------------------------------------- */

static const char *find(const char *hay, size_t len, const char *needle) {
  size_t n = strlen(needle);
  for (size_t i = 0; n <= len && i <= len - n; i++)
    if (memcmp(hay + i, needle, n) == 0)
      return hay + i;
  return NULL;
}

int rc_pmd_agent_mishandles(const char *ua, size_t len) {
  static const char version[] = "Version/15.";
  if (ua == NULL || find(ua, len, "Safari/") == NULL)
    return 0;
  /* Browsers built on WebKit that name themselves after "Safari/". */
  static const char *const others[] = {"Chrome/", "Chromium/", "CriOS/",
                                       "FxiOS/",  "EdgiOS/",   "OPR/"};
  for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
    if (find(ua, len, others[i]) != NULL)
      return 0;
  const char *v = find(ua, len, version);
  if (v == NULL)
    return 0;
  size_t at = (size_t)(v - ua) + sizeof version - 1;
  if (at >= len || ua[at] < '0' || ua[at] > '3')
    return 0;
  return at + 1 == len || ua[at + 1] < '0' || ua[at + 1] > '9';
}
