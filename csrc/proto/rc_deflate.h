/* rc_deflate.h - the compression of permessage-deflate (RFC 7692 section
 * 7.2): whole messages compressed and inflated, and an inflate stream for
 * a peer that keeps its context. The negotiation is rc_pmd.c's.
 *
 * Sans-I/O: pure functions over caller buffers. Two libraries, chosen by
 * benchmarks/results/2026-12-06-deflate-choice.md:
 *
 * - libdeflate for the messages that stand alone (no context takeover):
 *   the server compresses a published message once for every member
 *   (rc_deflate_message) and inflates a client's message
 *   (rc_inflate_message). One rc_deflater and one rc_inflater per loop
 *   thread; no state per connection. libdeflate has no streaming, which
 *   standalone messages do not need, and is faster than zlib on them.
 * - zlib for a peer that keeps its context across messages (a client of a
 *   `websockets` server, which does not grant server_no_context_takeover):
 *   rc_inflate_stream_*, one per such connection; and for a compressor
 *   with a smaller window or the Z_SYNC_FLUSH shape (rc_deflater_new_zlib).
 *
 * Window: libdeflate's compressor always uses a 32 KiB window (window bits
 * 15). Its output is valid for a peer that accepts server_max_window_bits
 * 15 only; a smaller server_max_window_bits (9..14) needs a zlib deflater
 * with that window, one per distinct window in use.
 *
 * Fragments (RFC 7692 7.2.3.1, its second example): these functions take a
 * whole message, the payloads of its frames joined; splitting a compressed
 * message into frames, and joining them again before inflating, is the
 * caller's.
 *
 * Not thread-safe: an rc_deflater, rc_inflater or rc_inflate_stream is used
 * by one thread at a time. */
#ifndef RC_DEFLATE_H
#define RC_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

/* The 4 bytes a sender strips and a receiver appends (RFC 7692 7.2.1,
 * 7.2.2): LEN and NLEN of an empty stored block. */
#define RC_DEFLATE_TAIL_LEN 4

enum {
  RC_DEFLATE_OK = 0,
  RC_DEFLATE_NO_GAIN = 1, /* not smaller than the input: send it plain */
  RC_INFLATE_OK = 0,
  RC_INFLATE_TOO_BIG = -1,  /* would inflate past max: close with 1009 */
  RC_INFLATE_BAD_DATA = -2, /* not a valid compressed message: 1007 */
  RC_INFLATE_NOMEM = -3,    /* out of memory: 1011 */
};

/* --- compressing (libdeflate) --------------------------------------------- */

typedef struct rc_deflater rc_deflater;

/* A compressor at level 1..12 (libdeflate's levels; 6 is zlib's default
 * ratio); NULL when the level is out of range or memory is short. Its heap
 * is about 200 KiB at level 1 and 650 KiB at levels 4 and 6 (measured; see
 * the results file), held for its whole life: one per loop thread. */
rc_deflater *rc_deflater_new(int level);

/* A zlib compressor instead (level 1..9, window_bits 9..15), for what
 * libdeflate cannot do: a peer's server_max_window_bits below 15 (zlib's
 * raw deflate refuses 8: decline that offer), or output in the shape
 * browsers and `websockets` send, non-final blocks and the Z_SYNC_FLUSH
 * ending, for a receiver that mishandles a block with BFINAL set (some
 * did: see the results file). About 1.5x slower than libdeflate at the
 * same ratio; heap 262 KiB at 15 bits and memLevel 8 (measured).
 * NULL when out of range or short of memory. */
rc_deflater *rc_deflater_new_zlib(int level, int window_bits);
void rc_deflater_free(rc_deflater *d);

/* The most bytes rc_deflate_message writes for an input of len bytes: len
 * itself, since an output that would not be shorter than the input is not
 * produced (RC_DEFLATE_NO_GAIN). */
size_t rc_deflate_bound(size_t len);

/* Compresses the whole message in[0..len) into out[0..out_cap) as RFC 7692
 * 7.2.1 says for a sender without context takeover: raw DEFLATE (RFC 1951,
 * no zlib header), the blocks of the message, then an empty stored block
 * with BFINAL 0 whose LEN and NLEN (0x00 0x00 0xff 0xff) are left out.
 * libdeflate ends its data with a block with BFINAL set, which 7.2.3.4
 * allows (its example: f3 48 cd c9 c9 07 00 00, a final block then 0x00):
 * the empty stored block's header then stands in one 0x00 byte after it,
 * as there. A receiver appends the tail, inflates, and stops at the final
 * block. So libdeflate's output is for a receiver that agreed to no
 * context takeover in that direction (the server's messages under
 * server_no_context_takeover, a client's under client_no_context_takeover):
 * a receiver that keeps one inflate stream may not read a second message
 * after a final block (`websockets` with context takeover returns wrong
 * data). A zlib deflater (rc_deflater_new_zlib) writes non-final blocks
 * and Z_SYNC_FLUSH's empty stored block instead, its LEN and NLEN dropped:
 * valid for any receiver, with or without context takeover.
 *
 * Returns RC_DEFLATE_OK with *out_len, always < len; or RC_DEFLATE_NO_GAIN
 * (out unspecified) when the result would not be shorter than the input
 * or would not fit out_cap: the caller then sends the message plain (RSV1
 * is per message). out_cap >= rc_deflate_bound(len) never fails for
 * lack of room. */
int rc_deflate_message(rc_deflater *d, const uint8_t *in, size_t len,
                       uint8_t *out, size_t out_cap, size_t *out_len);

/* --- inflating a message that stands alone (libdeflate) ------------------ */

typedef struct rc_inflater rc_inflater;

/* A decompressor (about 11 KiB of heap, measured) with a scratch buffer
 * for the input and its appended tail, kept up to 64 KiB between calls
 * (a larger message's copy is freed after its call). One per loop thread.
 * NULL when memory is short. */
rc_inflater *rc_inflater_new(void);
void rc_inflater_free(rc_inflater *inf);

/* Inflates one whole compressed message in[0..len) (RFC 7692 7.2.2: the
 * tail 0x00 0x00 0xff 0xff appended) into out[0..max), with no window from
 * any earlier message (the sender agreed to no context takeover).
 * Returns RC_INFLATE_OK with *out_len <= max; RC_INFLATE_TOO_BIG when it
 * would inflate past max bytes, after producing at most max (a deflate
 * bomb costs no more than max bytes of output); RC_INFLATE_BAD_DATA for
 * input that is not a compressed message (a truncated one included, as
 * far as its bits show); RC_INFLATE_NOMEM. Only RC_INFLATE_OK sets
 * *out_len. Bytes after a block with BFINAL set (7.2.3.4) are ignored. */
int rc_inflate_message(rc_inflater *inf, const uint8_t *in, size_t len,
                       uint8_t *out, size_t max, size_t *out_len);

/* 1 when the message the last rc_inflate_message call inflated (with
 * RC_INFLATE_OK) ended exactly as RFC 7692 7.2.1 has a sender end it: with
 * the empty stored block whose LEN and NLEN were left out, and nothing
 * after a block with BFINAL set but that block's first byte (0x00, as in
 * 7.2.3.4's example). rc_inflate_message accepts more (it stops at a final
 * block and ignores what follows, and needs no empty block after one); an
 * inflater that goes on after a final block, as Chromium's does, fails on
 * the rest. So compressed bytes are forwarded as they came (a relay) only
 * when this says 1. 0 after any other result. */
int rc_inflater_well_formed(const rc_inflater *inf);

/* --- inflating with context takeover (zlib) ------------------------------ */

typedef struct rc_inflate_stream rc_inflate_stream;

/* A stream for a peer that keeps its context: each message may refer back
 * into the window of the ones before. window_bits (8..15) is the peer's
 * max_window_bits from the negotiation (a larger one also inflates a
 * smaller window's data). Memory: about 7 KiB of zlib state plus a window
 * of 2^window_bits bytes (32 KiB at 15), allocated at the first message,
 * held until rc_inflate_stream_free. NULL when out of range or short of
 * memory. */
rc_inflate_stream *rc_inflate_stream_init(int window_bits);

/* Inflates the next whole message in[0..len) of the stream (the tail
 * appended) into out[0..max), with the same results and bounds as
 * rc_inflate_message. After RC_INFLATE_TOO_BIG or RC_INFLATE_BAD_DATA the
 * stream is broken (every later call returns RC_INFLATE_BAD_DATA) until
 * rc_inflate_stream_reset: the caller closes the connection. A message
 * ending with a block with BFINAL set (7.2.3.4) ends the peer's DEFLATE
 * stream: the rest of it is ignored and the next message starts a new
 * one, which may still refer back into the window (kept across the final
 * block: a peer that starts afresh does not refer back, one that keeps its
 * dictionary does). */
int rc_inflate_stream_feed(rc_inflate_stream *s, const uint8_t *in, size_t len,
                           uint8_t *out, size_t max, size_t *out_len);

/* Forgets the window (as for a peer's no-context-takeover message) and
 * any broken state; keeps the memory. */
void rc_inflate_stream_reset(rc_inflate_stream *s);
void rc_inflate_stream_free(rc_inflate_stream *s);

#endif
