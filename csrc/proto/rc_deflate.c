/* rc_deflate.c - permessage-deflate's compression (RFC 7692 7.2): whole
 * messages with libdeflate, a context-takeover inflate stream with zlib.
 * The contract of each function is in rc_deflate.h. */
#include "proto/rc_deflate.h"

#include <libdeflate.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* What a receiver appends (RFC 7692 7.2.2), then, for libdeflate only, an
 * empty fixed-Huffman block with BFINAL set (bits 1, 01, then the 7-bit
 * end-of-block code 0): libdeflate stops with an error at the end of its
 * input unless a final block ends the data, and a peer that flushed with
 * Z_SYNC_FLUSH never sends one. It produces no byte. */
static const uint8_t tail_and_final[] = {0x00, 0x00, 0xff, 0xff, 0x03, 0x00};

#define SCRATCH_KEEP (64 * 1024)

struct rc_deflater {
  struct libdeflate_compressor *c; /* NULL for a zlib deflater */
  z_stream z;
};

struct rc_inflater {
  struct libdeflate_decompressor *d;
  uint8_t *scratch; /* input + tail_and_final, at most SCRATCH_KEEP */
  size_t scratch_cap;
  int well_formed; /* of the last message (rc_inflater_well_formed) */
};

struct rc_inflate_stream {
  z_stream z;
  int broken; /* after TOO_BIG or BAD_DATA, until reset */
};

/* --- compressing -----------------------------------------------------------
 */

rc_deflater *rc_deflater_new(int level) {
  if (level < 1 || level > 12)
    return NULL;
  rc_deflater *d = calloc(1, sizeof *d);
  if (d == NULL)
    return NULL;
  d->c = libdeflate_alloc_compressor(level);
  if (d->c == NULL) {
    free(d);
    return NULL;
  }
  return d;
}

rc_deflater *rc_deflater_new_zlib(int level, int window_bits) {
  if (level < 1 || level > 9 || window_bits < 9 || window_bits > 15)
    return NULL;
  rc_deflater *d = calloc(1, sizeof *d);
  if (d == NULL)
    return NULL;
  /* Negative: raw DEFLATE. memLevel 8 is zlib's default. */
  if (deflateInit2(&d->z, level, Z_DEFLATED, -window_bits, 8,
                   Z_DEFAULT_STRATEGY) != Z_OK) {
    free(d);
    return NULL;
  }
  return d;
}

void rc_deflater_free(rc_deflater *d) {
  if (d == NULL)
    return;
  if (d->c != NULL)
    libdeflate_free_compressor(d->c);
  else
    (void)deflateEnd(&d->z);
  free(d);
}

/* zlib: the message, then Z_SYNC_FLUSH's empty stored block, whose LEN and
 * NLEN are dropped (RFC 7692 7.2.1 to the letter). Output that fills out
 * (zlib cannot tell whether more is pending) counts as no gain. */
static int deflate_zlib(rc_deflater *d, const uint8_t *in, size_t len,
                        uint8_t *out, size_t out_cap, size_t *out_len) {
  static const uint8_t tail[RC_DEFLATE_TAIL_LEN] = {0x00, 0x00, 0xff, 0xff};
  if (len > UINT_MAX || deflateReset(&d->z) != Z_OK)
    return RC_DEFLATE_NO_GAIN;
  size_t cap =
      out_cap < len + RC_DEFLATE_TAIL_LEN ? out_cap : len + RC_DEFLATE_TAIL_LEN;
  d->z.next_in = (Bytef *)in;
  d->z.avail_in = (uInt)len;
  d->z.next_out = out;
  d->z.avail_out = cap > UINT_MAX ? UINT_MAX : (uInt)cap;
  uInt room = d->z.avail_out;
  int rc = deflate(&d->z, Z_SYNC_FLUSH);
  if (rc != Z_OK || d->z.avail_in != 0 || d->z.avail_out == 0)
    return RC_DEFLATE_NO_GAIN;
  size_t n = room - d->z.avail_out;
  if (n < RC_DEFLATE_TAIL_LEN ||
      memcmp(out + n - RC_DEFLATE_TAIL_LEN, tail, RC_DEFLATE_TAIL_LEN) != 0 ||
      n - RC_DEFLATE_TAIL_LEN >= len)
    return RC_DEFLATE_NO_GAIN;
  *out_len = n - RC_DEFLATE_TAIL_LEN;
  return RC_DEFLATE_OK;
}

size_t rc_deflate_bound(size_t len) { return len; }

int rc_deflate_message(rc_deflater *d, const uint8_t *in, size_t len,
                       uint8_t *out, size_t out_cap, size_t *out_len) {
  /* The DEFLATE data plus the 0x00 after it must be shorter than len and
   * fit out_cap: at most len - 2 and out_cap - 1 bytes of DEFLATE data. */
  if (len < 2 || out_cap < 2)
    return RC_DEFLATE_NO_GAIN;
  if (d->c == NULL)
    return deflate_zlib(d, in, len, out, out_cap, out_len);
  size_t avail = len - 2 < out_cap - 1 ? len - 2 : out_cap - 1;
  size_t n = libdeflate_deflate_compress(d->c, in, len, out, avail);
  if (n == 0) /* libdeflate's "did not fit in avail" */
    return RC_DEFLATE_NO_GAIN;
  /* The header of the empty stored block with BFINAL 0 (RFC 7692 7.2.1),
   * its LEN and NLEN left out: BFINAL 0, BTYPE 00, the padding to the byte
   * boundary. libdeflate padded its own last byte, so it starts a new one,
   * as in 7.2.3.4's example. */
  out[n] = 0x00;
  *out_len = n + 1;
  return RC_DEFLATE_OK;
}

/* --- inflating a message that stands alone ------------------------------ */

rc_inflater *rc_inflater_new(void) {
  rc_inflater *inf = calloc(1, sizeof *inf);
  if (inf == NULL)
    return NULL;
  inf->d = libdeflate_alloc_decompressor();
  if (inf->d == NULL) {
    free(inf);
    return NULL;
  }
  return inf;
}

int rc_inflater_well_formed(const rc_inflater *inf) { return inf->well_formed; }

void rc_inflater_free(rc_inflater *inf) {
  if (inf == NULL)
    return;
  libdeflate_free_decompressor(inf->d);
  free(inf->scratch);
  free(inf);
}

int rc_inflate_message(rc_inflater *inf, const uint8_t *in, size_t len,
                       uint8_t *out, size_t max, size_t *out_len) {
  if (len > SIZE_MAX - sizeof tail_and_final)
    return RC_INFLATE_NOMEM;
  size_t need = len + sizeof tail_and_final;
  uint8_t *buf;
  if (need <= inf->scratch_cap) {
    buf = inf->scratch;
  } else if (need <= SCRATCH_KEEP) {
    buf = realloc(inf->scratch, need);
    if (buf == NULL)
      return RC_INFLATE_NOMEM;
    inf->scratch = buf;
    inf->scratch_cap = need;
  } else {
    buf = malloc(need);
    if (buf == NULL)
      return RC_INFLATE_NOMEM;
  }
  if (len > 0)
    memcpy(buf, in, len);
  memcpy(buf + len, tail_and_final, sizeof tail_and_final);
  uint8_t none;
  size_t used_in, got = 0;
  /* libdeflate never writes past out + max: a message that needs more
   * stops there with LIBDEFLATE_INSUFFICIENT_SPACE. */
  enum libdeflate_result r = libdeflate_deflate_decompress_ex(
      inf->d, buf, need, max > 0 ? out : &none, max, &used_in, &got);
  if (buf != inf->scratch)
    free(buf);
  inf->well_formed = 0;
  switch (r) {
  case LIBDEFLATE_SUCCESS:
    *out_len = got;
    /* Everything read, the final block appended here included (the sender
     * ended with 7.2.1's empty stored block and sent no final block), or
     * the sender's final block then one 0x00, the start of that empty
     * block, as in 7.2.3.4's example. */
    inf->well_formed = used_in == need ||
                       (len > 0 && used_in == len - 1 && in[len - 1] == 0x00);
    return RC_INFLATE_OK;
  case LIBDEFLATE_INSUFFICIENT_SPACE:
    return RC_INFLATE_TOO_BIG;
  default:
    return RC_INFLATE_BAD_DATA;
  }
}

/* --- inflating with context takeover ------------------------------------- */

rc_inflate_stream *rc_inflate_stream_init(int window_bits) {
  if (window_bits < 8 || window_bits > 15)
    return NULL;
  rc_inflate_stream *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  /* Negative: raw DEFLATE, no zlib header. */
  if (inflateInit2(&s->z, -window_bits) != Z_OK) {
    free(s);
    return NULL;
  }
  return s;
}

void rc_inflate_stream_reset(rc_inflate_stream *s) {
  (void)inflateReset(&s->z); /* Z_OK on an initialised stream */
  s->broken = 0;
}

void rc_inflate_stream_free(rc_inflate_stream *s) {
  if (s == NULL)
    return;
  (void)inflateEnd(&s->z);
  free(s);
}

/* inflateReset, the window carried over as a preset dictionary (which a
 * raw inflate takes right after a reset). */
static int restart_keeping_window(z_stream *z) {
  uint8_t window[32768];
  uInt n = 0;
  if (inflateGetDictionary(z, window, &n) != Z_OK || inflateReset(z) != Z_OK)
    return -1;
  if (n > 0 && inflateSetDictionary(z, window, n) != Z_OK)
    return -1;
  return 0;
}

static int stream_fail(rc_inflate_stream *s, int rc) {
  s->broken = 1;
  return rc;
}

int rc_inflate_stream_feed(rc_inflate_stream *s, const uint8_t *in, size_t len,
                           uint8_t *out, size_t max, size_t *out_len) {
  static const uint8_t tail[RC_DEFLATE_TAIL_LEN] = {0x00, 0x00, 0xff, 0xff};
  if (s->broken)
    return RC_INFLATE_BAD_DATA;
  z_stream *z = &s->z;
  const uint8_t *src = in;
  size_t left = len, produced = 0;
  int tail_fed = 0;
  uint8_t spill; /* one byte past max: inflating into it means TOO_BIG */
  z->avail_in = 0;
  for (;;) {
    if (z->avail_in == 0) {
      if (left > 0) {
        uInt chunk = left > UINT_MAX ? UINT_MAX : (uInt)left;
        z->next_in = (Bytef *)src;
        z->avail_in = chunk;
        src += chunk;
        left -= chunk;
      } else if (!tail_fed) {
        z->next_in = (Bytef *)tail;
        z->avail_in = sizeof tail;
        tail_fed = 1;
      }
    }
    int to_spill = produced == max;
    if (to_spill) {
      z->next_out = &spill;
      z->avail_out = 1;
    } else {
      size_t room = max - produced;
      z->next_out = out + produced;
      z->avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
    }
    uInt out_before = z->avail_out, in_before = z->avail_in;
    int rc = inflate(z, Z_SYNC_FLUSH);
    size_t got = out_before - z->avail_out;
    if (to_spill && got > 0)
      return stream_fail(s, RC_INFLATE_TOO_BIG);
    produced += to_spill ? 0 : got;
    if (rc == Z_STREAM_END) {
      /* The peer's final block (7.2.3.4): its DEFLATE stream ends here;
       * the next message starts a new one, with the window kept. */
      if (restart_keeping_window(z) != 0)
        return stream_fail(s, RC_INFLATE_BAD_DATA);
      break;
    }
    if (rc == Z_MEM_ERROR)
      return stream_fail(s, RC_INFLATE_NOMEM);
    if (rc != Z_OK && rc != Z_BUF_ERROR)
      return stream_fail(s, RC_INFLATE_BAD_DATA);
    int all_in = z->avail_in == 0 && left == 0 && tail_fed;
    if (all_in && z->avail_out > 0) {
      /* Everything consumed and inflate had room for more: the message is
       * complete only if it ends on a block boundary, as the empty stored
       * block of the tail leaves it (zlib sets 128 in data_type there).
       */
      if (!(z->data_type & 128))
        return stream_fail(s, RC_INFLATE_BAD_DATA);
      break;
    }
    if (rc == Z_BUF_ERROR && got == 0 && z->avail_in == in_before)
      return stream_fail(s, RC_INFLATE_BAD_DATA); /* no progress possible */
  }
  *out_len = produced;
  return RC_INFLATE_OK;
}
