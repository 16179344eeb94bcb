/* rc_idmap.c - ids to pointers (see rc_idmap.h). */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include "loop/rc_idmap.h"

#include <stdlib.h>
#include <uv.h>

static uint32_t home_of(uint64_t id, uint32_t cap) {
  return (uint32_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

void *rc__idmap_get(const rc__idmap *m, uint64_t id) {
  if (m->cap == 0)
    return NULL;
  uint32_t mask = m->cap - 1;
  for (uint32_t j = home_of(id, m->cap); m->t[j].p != NULL; j = (j + 1) & mask)
    if (m->t[j].id == id)
      return m->t[j].p;
  return NULL;
}

static void place(rc__idmap_entry *t, uint32_t cap, rc__idmap_entry e) {
  uint32_t j = home_of(e.id, cap);
  while (t[j].p != NULL)
    j = (j + 1) & (cap - 1);
  t[j] = e;
}

int rc__idmap_put(rc__idmap *m, uint64_t id, void *p) {
  if ((m->n + 1) * 2 > m->cap) {
    uint32_t cap = m->cap ? m->cap * 2 : 16;
    rc__idmap_entry *t = calloc(cap, sizeof(*t));
    if (t == NULL)
      return UV_ENOMEM;
    for (uint32_t i = 0; i < m->cap; i++)
      if (m->t[i].p != NULL)
        place(t, cap, m->t[i]);
    free(m->t);
    m->t = t;
    m->cap = cap;
  }
  place(m->t, m->cap, (rc__idmap_entry){id, p});
  m->n++;
  return 0;
}

void rc__idmap_del(rc__idmap *m, uint64_t id) {
  if (m->cap == 0)
    return;
  uint32_t mask = m->cap - 1;
  uint32_t j = home_of(id, m->cap);
  while (m->t[j].id != id || m->t[j].p == NULL) {
    if (m->t[j].p == NULL)
      return;
    j = (j + 1) & mask;
  }
  m->t[j].p = NULL;
  m->n--;
  /* Move back the entries whose probe run crossed the hole. */
  for (uint32_t k = (j + 1) & mask; m->t[k].p != NULL; k = (k + 1) & mask) {
    uint32_t home = home_of(m->t[k].id, m->cap);
    if (((k - home) & mask) >= ((k - j) & mask)) {
      m->t[j] = m->t[k];
      m->t[k].p = NULL;
      j = k;
    }
  }
}

void rc__idmap_free(rc__idmap *m) {
  free(m->t);
  m->t = NULL;
  m->cap = m->n = 0;
}
