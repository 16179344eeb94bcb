/* rc_idmap.h - a table from 64-bit ids to pointers: open addressing with
 * linear probing, at most half full, deletion by moving back the entries
 * whose probe run crossed the hole (no tombstones). It holds the ids that
 * are drawn rather than slots: client connections' (rc_client.c) and
 * adopted ones' (rc_conn.c). Not thread-safe: its owner says who may touch
 * it. A zeroed rc__idmap is an empty one.
 */
#ifndef RC_IDMAP_H
#define RC_IDMAP_H

#include <stdint.h>

typedef struct rc__idmap_entry {
  uint64_t id;
  void *p; /* NULL: a free entry */
} rc__idmap_entry;

typedef struct rc__idmap {
  rc__idmap_entry *t;
  uint32_t cap, n; /* cap: 0 or a power of two */
} rc__idmap;

/* The pointer stored for id, or NULL. */
void *rc__idmap_get(const rc__idmap *m, uint64_t id);
/* Stores p (not NULL) for id, which must not be there yet; 0 or UV_ENOMEM. */
int rc__idmap_put(rc__idmap *m, uint64_t id, void *p);
/* Forgets id, if there. */
void rc__idmap_del(rc__idmap *m, uint64_t id);
/* Frees the table (not what it points to); m is empty again. */
void rc__idmap_free(rc__idmap *m);

#endif
