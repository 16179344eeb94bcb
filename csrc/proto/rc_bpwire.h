/* rc_bpwire.h - the backplane's wire, sans I/O: what roomcast writes to and
 * reads from Redis, with no socket, loop or server in sight.
 *
 * It owns four things, each a pure function of its arguments:
 *   - names: a room's channel is the prefix escaped ('\\' and '|' take a
 *     '\\' before them), '|', then the room's name; the first unescaped '|'
 *     ends the prefix, so apps with nested prefixes ("a:" and "a:b:") never
 *     share a channel (python/roomcast/backplane.py builds its presence keys
 *     on the same head). A server's sentinel channel is the escaped prefix,
 *     a NUL, "server:" and its id in 16 hex digits: no room's channel.
 *   - the envelope of a roomcast message on a channel: "\0rc", a flags byte
 *     (bit 0 text, bit 1 several rooms, bits 4-7 the version, 1), the
 *     publisher's id and a sequence number (64-bit big-endian each), then
 *     for several rooms a 16-bit count and each room's name (16-bit
 *     length, bytes), then the payload. A message without "\0rc" was
 *     PUBLISHed by another program and is its own payload.
 *     Version 2 is a message of a room with history, published through
 *     Redis's script (python/roomcast/_redis_history.py) and delivered by
 *     every server, its publisher's too: flags bit 2 (always set) says
 *     a position follows the header, bit 3 that an excluded connection
 *     does. After the header: with bit 3 the connection's id (64-bit
 *     big-endian; excluded by the publisher's server only), then the
 *     room's epoch (16 characters) and the message's offset (20 decimal
 *     digits), then the payload. The sequence number is unused (0).
 *   - commands, in RESP (an array of bulk strings), exactly sized.
 *   - the checks of what Redis sends (hiredis's redisReply, as its reader
 *     parsed it): the pushes a subscriber may receive, error replies, and
 *     the encoding of a reply for the embedder (enum rc_reply_type).
 * Only hiredis's reply type is used (not its connections nor its async
 * layer); the loop side is csrc/loop/rc_redis.c and rc_backplane.c. */
#ifndef RC_BPWIRE_H
#define RC_BPWIRE_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#define RC_BPWIRE_PREFIX_MAX 200 /* bytes; the binding says so too */
#define RC_BPWIRE_HEADER 20      /* "\0rc", flags, id, sequence */
#define RC_BPWIRE_VERSION 0x10
#define RC_BPWIRE_VERSION_HISTORY 0x20
#define RC_BPWIRE_F_TEXT 0x01
#define RC_BPWIRE_F_MULTI 0x02
#define RC_BPWIRE_F_HISTORY 0x04
#define RC_BPWIRE_F_EXCLUDE 0x08
#define RC_BPWIRE_EPOCH_LEN 16
#define RC_BPWIRE_OFFSET_LEN 20
#define RC_BPWIRE_ROOMS_MAX 0xffff /* rooms one envelope may list */

/* --- names ---------------------------------------------------------------- */

/* Writes the head of every channel of prefix (n bytes) to out, when out is
 * not NULL: the prefix escaped, then '|'. Returns its length (at most
 * 2 * n + 1). */
size_t rc_bpwire_chan_head(const char *prefix, size_t n, char *out);

/* Length of the sentinel of a head of head_len (>= 1) bytes: the escaped
 * prefix (head_len - 1), a NUL, "server:" (7), 16 hex digits. */
#define RC_BPWIRE_SENTINEL_LEN(head_len) ((head_len) + 7 + 16)
/* Writes the sentinel of server id for head (as rc_bpwire_chan_head wrote
 * it, head_len >= 1) to out, RC_BPWIRE_SENTINEL_LEN(head_len) bytes, and
 * returns that length. */
size_t rc_bpwire_sentinel(const char *head, size_t head_len, uint64_t id,
                          char *out);

/* 1 when channel ch (chlen bytes) starts with head: *name and *name_len are
 * the rest. 0 otherwise (another prefix's channel). */
int rc_bpwire_chan_name(const char *head, size_t head_len, const char *ch,
                        size_t chlen, const char **name, size_t *name_len);

/* --- the envelope --------------------------------------------------------- */

typedef struct rc_bpwire_room {
  const char *name;
  size_t len;      /* at most 0xffff */
  const char *tag; /* NULL, or a cluster's room tag (rc_slot.h,
                      RC_SLOT_TAG_LEN bytes): its channel starts with it */
} rc_bpwire_room;

/* Size of the envelope of a payload of len bytes for n rooms (n >= 1; the
 * names are written only when n > 1). */
size_t rc_bpwire_envelope_size(const rc_bpwire_room *rooms, size_t n,
                               size_t len);
/* Writes it to out (rc_bpwire_envelope_size bytes) and returns the size.
 * n at most RC_BPWIRE_ROOMS_MAX. */
size_t rc_bpwire_envelope(uint8_t *out, int is_text, uint64_t from,
                          uint64_t seq, const rc_bpwire_room *rooms, size_t n,
                          const void *payload, size_t len);

typedef struct rc_bpwire_msg {
  int enveloped; /* 0: another program's message, its own payload */
  int is_text;   /* enveloped: the flag; else the payload is UTF-8 */
  int multi;     /* the rooms are listed (else: the channel's room) */
  uint64_t from; /* enveloped: the publisher's id and sequence */
  uint64_t seq;
  size_t nrooms; /* multi: how many, at rooms (see rc_bpwire_next_room) */
  const uint8_t *rooms;
  int history;       /* version 2: epoch and offset are set */
  const char *epoch; /* RC_BPWIRE_EPOCH_LEN characters */
  uint64_t offset;
  uint64_t exclude; /* version 2 with F_EXCLUDE: a connection id, else 0 */
  const uint8_t *payload;
  size_t len;
} rc_bpwire_msg;

enum rc_bpwire_verdict {
  RC_BPWIRE_OK = 0,
  RC_BPWIRE_OTHER_VERSION, /* "\0rc" and a version we do not know:
                              nothing else is read */
  RC_BPWIRE_MALFORMED,     /* enveloped, from and seq read, then a list of
                              rooms cut short or text not UTF-8, or a
                              position cut short or not in digits; or any
                              payload over max_payload bytes */
};

/* Reads the message p (len bytes) received on a channel into m. Returns an
 * enum rc_bpwire_verdict; on RC_BPWIRE_MALFORMED m->enveloped, m->from and
 * m->seq are still set (a publisher's own message is skipped whatever its
 * body: it never counts as invalid). */
int rc_bpwire_parse(const uint8_t *p, size_t len, size_t max_payload,
                    rc_bpwire_msg *m);

/* The room listed at q (inside a list rc_bpwire_parse checked): its name;
 * returns where the next one starts. */
const uint8_t *rc_bpwire_next_room(const uint8_t *q, const char **name,
                                   size_t *len);

/* --- commands ------------------------------------------------------------- */

/* A command of argc (>= 1) arguments in RESP (lens NULL: C strings), in
 * malloc'ed memory of *len bytes (freed with free); NULL when memory ran
 * out. */
char *rc_bpwire_command(size_t *len, int argc, const char **argv,
                        const size_t *lens);

/* verb (SUBSCRIBE or UNSUBSCRIBE; SSUBSCRIBE or SUNSUBSCRIBE on a
 * cluster) of the channels of n (>= 1) rooms: each room's tag when it has
 * one, head, then its name. As rc_bpwire_command. */
char *rc_bpwire_subscribe(size_t *len, const char *verb, const char *head,
                          size_t head_len, const rc_bpwire_room *rooms,
                          size_t n);

/* verb (PUBLISH, or SPUBLISH on a cluster) on the channel of room (its tag,
 * head, its name) of message msg (mlen bytes, an envelope). As
 * rc_bpwire_command. */
char *rc_bpwire_publish(size_t *len, const char *verb, const char *head,
                        size_t head_len, const rc_bpwire_room *room,
                        const uint8_t *msg, size_t mlen);

/* 0 when the embedder may send command name (len bytes, any case) on the
 * shared command connection; 1 for those that would change what that
 * connection is or hold it (subscriptions, AUTH, SELECT, MULTI, blocking
 * reads, WAITAOF, DEBUG, ...). */
int rc_bpwire_forbidden(const char *name, size_t len);

/* --- replies -------------------------------------------------------------- */

/* The bounds of the reader's arrays: a push to the subscriber has 3
 * elements; a reply to the embedder at most 2^20. */
#define RC_BPWIRE_SUB_ELEMENTS 3
#define RC_BPWIRE_CMD_ELEMENTS ((size_t)1 << 20)

/* Room for the texts below, their NUL included. */
#define RC_BPWIRE_WHY_MAX 160

/* 1 when r is an error reply: writes "what: " and its first 120 bytes to
 * why (RC_BPWIRE_WHY_MAX bytes). 0 otherwise. */
int rc_bpwire_error(const redisReply *r, const char *what, char *why);

enum rc_bpwire_push_kind {
  RC_BPWIRE_BAD = -1,
  RC_BPWIRE_MESSAGE,      /* ["message", channel, payload] */
  RC_BPWIRE_SUBSCRIBED,   /* ["subscribe", channel, count] */
  RC_BPWIRE_UNSUBSCRIBED, /* ["unsubscribe", channel, count] */
  /* A cluster's sharded pub/sub sends the same three as "smessage",
   * "ssubscribe" and "sunsubscribe": the same kinds. */
};

typedef struct rc_bpwire_push {
  const char *channel; /* inside the reply */
  size_t channel_len;
  const uint8_t *payload; /* RC_BPWIRE_MESSAGE */
  size_t len;
} rc_bpwire_push;

/* Checks a reply received on the subscriber connection (once its setup is
 * answered, each is a push) and returns its enum rc_bpwire_push_kind,
 * filling out. RC_BPWIRE_BAD for anything else, an error reply included
 * (Redis never sends them there): why (RC_BPWIRE_WHY_MAX bytes) says
 * what it was. */
int rc_bpwire_push_parse(const redisReply *r, rc_bpwire_push *out, char *why);

/* A cluster's map: CLUSTER SLOTS's answer, [[first, last, [host, port,
 * ...], replicas...], ...] with first <= last < 16384 and the port in
 * 1..65535 (an empty host, or "?", is a node that does not know its
 * address: the one asked). Calls range(arg, first, last, host, host_len,
 * port) for each range's master, in order, host inside r; a non-zero
 * return stops it and is returned. -1 for an answer of another shape (an
 * error reply included), why (RC_BPWIRE_WHY_MAX bytes) saying what; then
 * the ranges before the bad one have been given. 0 otherwise. */
typedef int rc_bpwire_range_cb(void *arg, unsigned first, unsigned last,
                               const char *host, size_t host_len, int port);
int rc_bpwire_slots_parse(const redisReply *r, rc_bpwire_range_cb *range,
                          void *arg, char *why);

/* Size of the encoding of r for the embedder (rc_core.h's enum
 * rc_reply_type: a type byte, then a 32-bit length or count, or a 64-bit
 * integer, in the host's byte order). */
size_t rc_bpwire_reply_size(const redisReply *r);
/* Writes it at p; returns the end. */
char *rc_bpwire_reply_put(const redisReply *r, char *p);
/* An error reply of text (len bytes) in the same encoding, 5 + len bytes at
 * p, for a command that got no answer; returns the end. */
char *rc_bpwire_error_put(char *p, const char *text, size_t len);

#endif
