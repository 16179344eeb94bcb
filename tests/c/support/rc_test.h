/* rc_test.h - a minimal table-driven test runner for the C core.
 *
 * Usage, in one test_*.c file:
 *
 *   RC_TEST(parses_get) { RC_ASSERT_EQ_INT(f(1), 2); }
 *   RC_TEST_MAIN(RC_CASE(parses_get), ...)
 *
 * A failed assertion prints both values and file:line and ends the case (it
 * returns from the case function, so a case must not own resources across an
 * assertion that it would leak; RC_CHECK and RC_CHECK_EQ_INT record a failure
 * and keep going).
 * The runner prints one line per case, then "N passed, N failed" alone on the
 * last line, and exits non-zero when any case failed. Passing a case name as
 * the first argument runs only that case.
 */
#ifndef RC_TEST_H
#define RC_TEST_H

#include <stddef.h>
#include <stdio.h>
#include <string.h>

typedef struct rc_test_case {
  const char *name;
  void (*fn)(void);
} rc_test_case;

/* Set by a failing assertion; reset by the runner before each case. */
static int rc_test_failed_;

#define RC_TEST(name) static void rc_test_##name(void)
#define RC_CASE(name)                                                          \
  { #name, rc_test_##name }

static inline void rc_test_print_str_(const char *s) {
  if (s == NULL) {
    fputs("(null)", stderr);
    return;
  }
  fputc('"', stderr);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '\\' || c == '"')
      fprintf(stderr, "\\%c", c);
    else if (c >= 0x20 && c < 0x7F)
      fputc(c, stderr);
    else
      fprintf(stderr, "\\x%02x", c);
  }
  fputc('"', stderr);
}

static inline int rc_test_str_eq_(const char *a, const char *b) {
  if (a == NULL || b == NULL)
    return a == b;
  return strcmp(a, b) == 0;
}

static inline void rc_test_fail_str_(const char *file, int line, const char *ea,
                                     const char *eb, const char *a,
                                     const char *b) {
  fprintf(stderr, "  %s:%d: expected %s == %s\n    left:  ", file, line, ea,
          eb);
  rc_test_print_str_(a);
  fputs("\n    right: ", stderr);
  rc_test_print_str_(b);
  fputc('\n', stderr);
}

/* Prints a window of both buffers around the first difference in hex. */
static inline void rc_test_fail_mem_(const char *file, int line, const char *ea,
                                     const char *eb, const void *a,
                                     const void *b, size_t n) {
  const unsigned char *pa = a, *pb = b;
  size_t at = 0;
  while (at < n && pa[at] == pb[at])
    at++;
  size_t from = at >= 8 ? at - 8 : 0;
  size_t to = at + 24 < n ? at + 24 : n;
  fprintf(stderr,
          "  %s:%d: expected %s == %s (%zu bytes), first difference at %zu\n",
          file, line, ea, eb, n, at);
  fprintf(stderr, "    left  [%zu..%zu):", from, to);
  for (size_t i = from; i < to; i++)
    fprintf(stderr, " %02x", pa[i]);
  fprintf(stderr, "\n    right [%zu..%zu):", from, to);
  for (size_t i = from; i < to; i++)
    fprintf(stderr, " %02x", pb[i]);
  fputc('\n', stderr);
}

/* The RC_CHECK_* forms record a failure and go on; RC_ASSERT_* also end the
 * case. Each operand is evaluated exactly once. */
#define RC_CHECK_(cond_ok, report)                                             \
  ((cond_ok) ? 1 : (rc_test_failed_ = 1, (report), 0))

#define RC_CHECK_COND_(cond)                                                   \
  RC_CHECK_((cond), fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__,   \
                            __LINE__, #cond))

#define RC_CHECK(cond) ((void)RC_CHECK_COND_(cond))

#define RC_CHECK_EQ_INT(a, b)                                                  \
  do {                                                                         \
    long long rc_a_ = (long long)(a), rc_b_ = (long long)(b);                  \
    (void)RC_CHECK_(rc_a_ == rc_b_,                                            \
                    fprintf(stderr,                                            \
                            "  %s:%d: expected %s == %s\n    left:  %lld\n"    \
                            "    right: %lld\n",                               \
                            __FILE__, __LINE__, #a, #b, rc_a_, rc_b_));        \
  } while (0)

#define RC_ASSERT(cond)                                                        \
  do {                                                                         \
    if (!RC_CHECK_COND_(cond))                                                 \
      return;                                                                  \
  } while (0)

#define RC_ASSERT_EQ_INT(a, b)                                                 \
  do {                                                                         \
    long long rc_a_ = (long long)(a), rc_b_ = (long long)(b);                  \
    if (!RC_CHECK_(rc_a_ == rc_b_,                                             \
                   fprintf(stderr,                                             \
                           "  %s:%d: expected %s == %s\n    left:  %lld\n"     \
                           "    right: %lld\n",                                \
                           __FILE__, __LINE__, #a, #b, rc_a_, rc_b_)))         \
      return;                                                                  \
  } while (0)

/* For sizes and 64-bit lengths that do not fit a long long. */
#define RC_ASSERT_EQ_UINT(a, b)                                                \
  do {                                                                         \
    unsigned long long rc_a_ = (unsigned long long)(a);                        \
    unsigned long long rc_b_ = (unsigned long long)(b);                        \
    if (!RC_CHECK_(rc_a_ == rc_b_,                                             \
                   fprintf(stderr,                                             \
                           "  %s:%d: expected %s == %s\n    left:  %llu\n"     \
                           "    right: %llu\n",                                \
                           __FILE__, __LINE__, #a, #b, rc_a_, rc_b_)))         \
      return;                                                                  \
  } while (0)

#define RC_ASSERT_EQ_STR(a, b)                                                 \
  do {                                                                         \
    const char *rc_a_ = (a), *rc_b_ = (b);                                     \
    if (!RC_CHECK_(                                                            \
            rc_test_str_eq_(rc_a_, rc_b_),                                     \
            rc_test_fail_str_(__FILE__, __LINE__, #a, #b, rc_a_, rc_b_)))      \
      return;                                                                  \
  } while (0)

#define RC_ASSERT_EQ_MEM(a, b, n)                                              \
  do {                                                                         \
    const void *rc_a_ = (a), *rc_b_ = (b);                                     \
    size_t rc_n_ = (n);                                                        \
    if (!RC_CHECK_(memcmp(rc_a_, rc_b_, rc_n_) == 0,                           \
                   rc_test_fail_mem_(__FILE__, __LINE__, #a, #b, rc_a_, rc_b_, \
                                     rc_n_)))                                  \
      return;                                                                  \
  } while (0)

/* A buffer of known length against a C string literal: compares lengths
 * first, then bytes, so a short result never reads past its end. */
#define RC_ASSERT_EQ_BYTES(buf, len, lit)                                      \
  do {                                                                         \
    RC_ASSERT_EQ_UINT((len), sizeof(lit) - 1);                                 \
    RC_ASSERT_EQ_MEM((buf), (lit), sizeof(lit) - 1);                           \
  } while (0)

static inline int rc_test_run_(const rc_test_case *cases, size_t n, int argc,
                               char **argv) {
  const char *only = argc > 1 ? argv[1] : NULL;
  int passed = 0, failed = 0;
  for (size_t i = 0; i < n; i++) {
    if (only != NULL && strcmp(only, cases[i].name) != 0)
      continue;
    rc_test_failed_ = 0;
    cases[i].fn();
    if (rc_test_failed_) {
      failed++;
      printf("FAIL %s\n", cases[i].name);
    } else {
      passed++;
      printf("ok   %s\n", cases[i].name);
    }
    /* Keep stdout and stderr lines in order when both go to one pipe. */
    fflush(stdout);
    fflush(stderr);
  }
  if (only != NULL && passed + failed == 0) {
    fprintf(stderr, "no case named %s\n", only);
    failed = 1;
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

#define RC_TEST_MAIN(...)                                                      \
  int main(int argc, char **argv) {                                            \
    static const rc_test_case rc_cases_[] = {__VA_ARGS__};                     \
    return rc_test_run_(rc_cases_, sizeof rc_cases_ / sizeof rc_cases_[0],     \
                        argc, argv);                                           \
  }

#endif
