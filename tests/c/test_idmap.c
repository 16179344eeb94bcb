/* test_idmap.c - the table of drawn ids (loop/rc_idmap.c) against a plain
 * array: puts, gets and deletes in a random order, the table growing and
 * its probe runs crossing the holes that deletes leave. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>

#include "loop/rc_idmap.h"
#include "support/rc_test.h"

#define N 2000

RC_TEST(random_puts_and_deletes_agree_with_an_array) {
  static char vals[N]; /* the pointers stored: &vals[i] for id key(i) */
  static int in[N];    /* the reference: whether key(i) is in the table */
  rc__idmap m = {0};
  uint64_t x = 88172645463325252ull; /* xorshift64 */
  for (int step = 0; step < 50000 && !rc_test_failed_; step++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    int i = (int)(x % N);
    /* Ids as the core draws them: a flag bit and a counter. */
    uint64_t id = ((uint64_t)1 << 62) | (uint64_t)(i + 1);
    if (in[i]) {
      RC_CHECK(rc__idmap_get(&m, id) == &vals[i]);
      rc__idmap_del(&m, id);
      in[i] = 0;
    } else {
      RC_CHECK(rc__idmap_get(&m, id) == NULL);
      RC_ASSERT_EQ_INT(rc__idmap_put(&m, id, &vals[i]), 0);
      in[i] = 1;
    }
    if (step % 997 == 0) { /* now and then, everything */
      uint32_t n = 0;
      for (int k = 0; k < N; k++) {
        uint64_t kid = ((uint64_t)1 << 62) | (uint64_t)(k + 1);
        RC_CHECK(rc__idmap_get(&m, kid) == (in[k] ? &vals[k] : NULL));
        n += (uint32_t)in[k];
      }
      RC_CHECK_EQ_INT(m.n, n);
      RC_CHECK(m.n * 2 <= m.cap);
    }
  }
  rc__idmap_del(&m, 12345); /* absent: nothing happens */
  rc__idmap_free(&m);
  RC_CHECK(m.t == NULL && m.cap == 0 && m.n == 0);
  RC_CHECK(rc__idmap_get(&m, 1) == NULL);
}

RC_TEST_MAIN(RC_CASE(random_puts_and_deletes_agree_with_an_array))
