/* rc_slot.h - the Redis Cluster key slot of a key, sans I/O: which of the
 * cluster's 16384 slots (and so which shard) owns a key or a sharded
 * pub/sub channel. A cluster backplane (issue 19) sends a room's SPUBLISH
 * and SSUBSCRIBE to the shard that owns its channel's slot (its master or,
 * in Redis 7, one of its replicas: each serves the shard's channels); any
 * other node answers -MOVED <slot> <host:port>.
 *
 * The rule is the cluster specification's ("Keys distribution model" and
 * "Hash tags"), the one CLUSTER KEYSLOT applies:
 *   - slot = CRC16(k) mod 16384, with CRC16 the XMODEM variant: polynomial
 *     0x1021, initial value 0, no reflection of input or output, no final
 *     xor (CRC16("123456789") = 0x31C3);
 *   - k is the whole key, unless the key has a hash tag: a '{', then a '}'
 *     after it with at least one byte between them; then k is the bytes
 *     between the first '{' and the first '}' that follows it. An empty tag
 *     ("{}") means no tag: the whole key is hashed.
 * Keys are bytes (Redis keys are binary safe): no NUL ends them, and no
 * encoding is assumed. */
#ifndef RC_SLOT_H
#define RC_SLOT_H

#include <stddef.h>
#include <stdint.h>

#define RC_SLOT_COUNT 16384 /* slots of a Redis Cluster, fixed by Redis */

/* CRC16 (XMODEM) of len bytes at p, all of them (no hash tag rule). */
uint16_t rc_slot_crc16(const void *p, size_t len);

/* The part of key (len bytes) that decides its slot: its hash tag when it
 * has one (see above), else the whole key. Sets *off to where that part
 * starts in key and returns its length (len when there is no tag). */
size_t rc_slot_hashed(const void *key, size_t len, size_t *off);

/* The slot of key (len bytes; len 0 is the empty key, slot 0): CRC16 of
 * what rc_slot_hashed picks, mod RC_SLOT_COUNT. Always < RC_SLOT_COUNT. */
uint16_t rc_slot_of(const void *key, size_t len);

/* --- a room's tag ------------------------------------------------------- */

/* roomcast's names for a room in a cluster (its sharded channel, and the
 * keys that presence and history keep for it) must all be on one slot, so
 * that one script may touch them and SPUBLISH on the channel. Each such
 * name starts with the room's tag: '{', 4 characters, '}'. The characters
 * are the 16 bits of the CRC16 of the room's channel (as rc_bpwire.h names
 * it, the whole of it, braces and all), 4 bits each, high first, each
 * 0x40 | bits ('@', 'A' to 'O'). A tag holds no brace, so Redis hashes
 * exactly its 4 characters, whatever the room's name holds; and the 65536
 * tags fall on the 16384 slots 4 each (CRC16 is linear, and over these
 * characters reaches every slot), so rooms spread over the slots as
 * evenly as their channels' CRC16 do. */
#define RC_SLOT_TAG_LEN 6

/* Writes the tag of the room whose channel is channel (len bytes) to out
 * (RC_SLOT_TAG_LEN bytes, no NUL) and returns its slot, the slot of every
 * name that starts with it. */
uint16_t rc_slot_tag(const void *channel, size_t len, char *out);

#endif
