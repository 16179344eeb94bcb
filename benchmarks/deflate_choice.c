/* deflate_choice.c - zlib against libdeflate for permessage-deflate
 * (RFC 7692) as roomcast uses it: one whole message at a time, no context
 * takeover.
 *
 *   gcc -O2 benchmarks/deflate_choice.c -o build/deflate_choice \
 *       $(pkg-config --cflags --libs libdeflate zlib)
 *   build/deflate_choice [seconds per round, default 0.3]
 *
 * The payloads are JSON messages like a chat, a ticker and a presence
 * room's (64 B, 256 B, 1 KiB and 16 KiB; generated from a fixed seed, so
 * every run compresses the same bytes). For each library and level it
 * prints: compress MB/s and inflate MB/s (MB of uncompressed JSON per
 * second, one thread, the best of 5 rounds), the ratio (uncompressed /
 * compressed) and the heap one compressor and one decompressor hold (counted
 * through each library's allocator hook).
 *
 * zlib compresses as a sender without context takeover does: raw deflate,
 * deflateReset per message, Z_SYNC_FLUSH, the 4-byte tail stripped; it
 * inflates with inflateReset per message and the tail appended. libdeflate
 * compresses and decompresses the whole buffer in one call. */
#include <libdeflate.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define MSGS 64  /* distinct messages per size */
#define ROUNDS 5 /* best of */

/* --- deterministic JSON ---------------------------------------------------*/

static uint32_t seed_state = 12345;
static uint32_t next_rand(void) {
  seed_state = seed_state * 1103515245u + 12345u;
  return seed_state >> 8;
}

static const char *const words[] = {
    "hello",  "the",    "meeting", "is",   "at",       "noon",  "see",
    "you",    "there",  "thanks",  "for",  "update",   "room",  "lobby",
    "deploy", "done",   "ok",      "good", "morning",  "price", "looks",
    "fine",   "merged", "review",  "ship", "tomorrow", "lunch", "anyone"};
static const char *const symbols[] = {"AAPL", "MSFT", "GOOG", "AMZN",
                                      "TSLA", "NVDA", "META", "ORCL"};
static const char *const statuses[] = {"online", "away", "busy", "offline"};

typedef struct sbuf {
  char *p;
  size_t len, cap;
} sbuf;

static void put(sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void put(sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= b->cap - b->len) {
    fprintf(stderr, "deflate_choice: message buffer too small\n");
    exit(2);
  }
  b->len += (size_t)n;
}

/* One object of kind k (0 chat, 1 ticker, 2 presence) into b; compact keys
 * (as a 64-byte message has) when short is set. */
static void one_object(sbuf *b, int k, size_t text_words, int short_keys) {
  uint32_t r = next_rand();
  if (k == 0) {
    put(b,
        short_keys
            ? "{\"u\":\"u%04u\",\"t\":%llu,\"m\":\""
            : "{\"type\":\"chat\",\"room\":\"lobby\",\"user\":\"user%04u\","
              "\"ts\":%llu,\"text\":\"",
        r % 10000, 1765000000000ull + r % 100000);
    for (size_t i = 0; i < text_words; i++)
      put(b, "%s%s", i ? " " : "",
          words[next_rand() % (sizeof words / sizeof *words)]);
    put(b, "\"}");
  } else if (k == 1) {
    put(b,
        short_keys ? "{\"s\":\"%s\",\"b\":%u.%02u,\"a\":%u.%02u,\"v\":%u}"
                   : "{\"type\":\"tick\",\"sym\":\"%s\",\"bid\":%u.%02u,"
                     "\"ask\":%u.%02u,\"vol\":%u}",
        symbols[r % 8], 100 + r % 400, r % 100, 100 + r % 400, (r / 7) % 100,
        r % 100000);
  } else {
    put(b,
        short_keys ? "{\"u\":\"u%04u\",\"st\":\"%s\",\"t\":%llu}"
                   : "{\"type\":\"presence\",\"user\":\"user%04u\","
                     "\"status\":\"%s\",\"since\":%llu}",
        r % 10000, statuses[(r >> 4) % 4], 1765000000000ull + r % 100000);
  }
}

/* A message of at most about target bytes: one compact object for the
 * smallest size (a chat line's text fills it), else a batch
 * {"type":"batch","items":[...]} of full objects. */
static size_t make_message(char *out, size_t cap, size_t target, int kind) {
  sbuf b = {out, 0, cap};
  char tmp[1024];
  if (target <= 100) {
    for (size_t w = 8;; w--) {
      sbuf t = {tmp, 0, sizeof tmp};
      uint32_t saved = seed_state;
      one_object(&t, kind, w, 1);
      if (t.len <= target || w == 1) {
        memcpy(out, tmp, t.len);
        return t.len;
      }
      seed_state = saved;
    }
  }
  put(&b, "{\"type\":\"batch\",\"items\":[");
  for (int i = 0;; i++) {
    sbuf t = {tmp, 0, sizeof tmp};
    one_object(&t, (kind + i) % 3, 2 + next_rand() % 8, 0);
    if (b.len + t.len + 3 > target)
      break;
    if (i)
      put(&b, ",");
    memcpy(b.p + b.len, tmp, t.len);
    b.len += t.len;
  }
  put(&b, "]}");
  return b.len;
}

/* --- allocation counting ------------------------------------------------- */

static size_t heap_now;

static void *count_malloc(size_t n) {
  size_t *p = malloc(n + sizeof(size_t));
  if (p == NULL)
    return NULL;
  *p = n;
  heap_now += n;
  return p + 1;
}
static void count_free(void *q) {
  if (q == NULL)
    return;
  size_t *p = (size_t *)q - 1;
  heap_now -= *p;
  free(p);
}
static voidpf z_alloc(voidpf op, uInt items, uInt size) {
  (void)op;
  return count_malloc((size_t)items * size);
}
static void z_free(voidpf op, voidpf p) {
  (void)op;
  count_free(p);
}

/* --- the two libraries --------------------------------------------------- */

static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};

typedef struct codec {
  int lib; /* 0 zlib, 1 libdeflate */
  int level;
  z_stream zd, zi;
  struct libdeflate_compressor *lc;
  struct libdeflate_decompressor *ld;
  size_t comp_mem, decomp_mem;
} codec;

static void codec_init(codec *c, int lib, int level) {
  memset(c, 0, sizeof *c);
  c->lib = lib;
  c->level = level;
  if (lib == 0) {
    size_t before = heap_now;
    c->zd.zalloc = z_alloc;
    c->zd.zfree = z_free;
    if (deflateInit2(&c->zd, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK)
      exit(2);
    c->comp_mem = heap_now - before;
    before = heap_now;
    c->zi.zalloc = z_alloc;
    c->zi.zfree = z_free;
    if (inflateInit2(&c->zi, -15) != Z_OK)
      exit(2);
    /* zlib allocates its 32 KiB window at the first inflate: counted by
     * inflating one message before the figure is taken (main does). */
    c->decomp_mem = before;
  } else {
    size_t before = heap_now;
    c->lc = libdeflate_alloc_compressor(level);
    c->comp_mem = heap_now - before;
    before = heap_now;
    c->ld = libdeflate_alloc_decompressor();
    c->decomp_mem = heap_now - before;
    if (c->lc == NULL || c->ld == NULL)
      exit(2);
  }
}

static void codec_free(codec *c) {
  if (c->lib == 0) {
    deflateEnd(&c->zd);
    inflateEnd(&c->zi);
  } else {
    libdeflate_free_compressor(c->lc);
    libdeflate_free_decompressor(c->ld);
  }
}

static size_t compress_one(codec *c, const uint8_t *in, size_t n, uint8_t *out,
                           size_t cap) {
  if (c->lib == 1) {
    size_t r = libdeflate_deflate_compress(c->lc, in, n, out, cap - 1);
    out[r] = 0x00; /* RFC 7692 7.2.3.3: the empty stored block's header */
    return r + 1;
  }
  deflateReset(&c->zd);
  c->zd.next_in = (Bytef *)in;
  c->zd.avail_in = (uInt)n;
  c->zd.next_out = out;
  c->zd.avail_out = (uInt)cap;
  if (deflate(&c->zd, Z_SYNC_FLUSH) != Z_OK || c->zd.avail_in != 0)
    exit(3);
  return cap - c->zd.avail_out - 4;
}

/* in has 6 spare bytes after n (the tail, and libdeflate's final block). */
static size_t inflate_one(codec *c, uint8_t *in, size_t n, uint8_t *out,
                          size_t cap) {
  memcpy(in + n, tail, 4);
  if (c->lib == 1) {
    size_t used_in, got;
    in[n + 4] = 0x03; /* an empty final block, for libdeflate */
    in[n + 5] = 0x00;
    if (libdeflate_deflate_decompress_ex(c->ld, in, n + 6, out, cap, &used_in,
                                         &got) != LIBDEFLATE_SUCCESS)
      exit(4);
    return got;
  }
  inflateReset(&c->zi);
  c->zi.next_in = in;
  c->zi.avail_in = (uInt)(n + 4);
  c->zi.next_out = out;
  c->zi.avail_out = (uInt)cap;
  int rc = inflate(&c->zi, Z_SYNC_FLUSH);
  if (rc != Z_OK && rc != Z_STREAM_END)
    exit(4);
  return cap - c->zi.avail_out;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 0.3;
  libdeflate_set_memory_allocator(count_malloc, count_free);
  static const size_t sizes[] = {64, 256, 1024, 16384};
  static const struct {
    int lib, level;
    const char *name;
  } cfgs[] = {{0, 1, "zlib 1"},
              {0, 6, "zlib 6"},
              {1, 1, "libdeflate 1"},
              {1, 4, "libdeflate 4"},
              {1, 6, "libdeflate 6"}};
  size_t cap = 32768;
  uint8_t *msgs[MSGS], *comp[MSGS], *out = malloc(cap);
  size_t mlen[MSGS], clen[MSGS];
  for (int i = 0; i < MSGS; i++) {
    msgs[i] = malloc(cap);
    comp[i] = malloc(cap + 8);
  }
  printf("| size | library level | compress MB/s | ratio | inflate MB/s | "
         "compressor heap | decompressor heap |\n");
  printf("| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n");
  for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
    seed_state = 12345 + (uint32_t)s;
    size_t total = 0;
    for (int i = 0; i < MSGS; i++) {
      mlen[i] = make_message((char *)msgs[i], cap, sizes[s], i % 3);
      total += mlen[i];
    }
    if (s == 0 && argc > 2)
      fwrite(msgs[0], 1, mlen[0], stderr);
    for (size_t k = 0; k < sizeof cfgs / sizeof *cfgs; k++) {
      codec c;
      codec_init(&c, cfgs[k].lib, cfgs[k].level);
      size_t ctotal = 0;
      for (int i = 0; i < MSGS; i++) {
        clen[i] = compress_one(&c, msgs[i], mlen[i], comp[i], cap);
        ctotal += clen[i];
        size_t got = inflate_one(&c, comp[i], clen[i], out, cap);
        if (got != mlen[i] || memcmp(out, msgs[i], got) != 0) {
          fprintf(stderr, "deflate_choice: %s round trip failed\n",
                  cfgs[k].name);
          return 1;
        }
      }
      if (c.lib == 0)
        c.decomp_mem = heap_now - c.decomp_mem;
      /* Each figure is the best of ROUNDS rounds of secs each: the
       * machine is shared, and the best round is the least disturbed. */
      double cmbs = 0, imbs = 0;
      for (int round = 0; round < ROUNDS; round++) {
        size_t done = 0;
        double t0 = now(), t1;
        do {
          for (int i = 0; i < MSGS; i++)
            clen[i] = compress_one(&c, msgs[i], mlen[i], comp[i], cap);
          done += total;
        } while ((t1 = now()) - t0 < secs);
        if (done / (t1 - t0) / 1e6 > cmbs)
          cmbs = done / (t1 - t0) / 1e6;
        done = 0;
        t0 = now();
        do {
          for (int i = 0; i < MSGS; i++)
            inflate_one(&c, comp[i], clen[i], out, cap);
          done += total;
        } while ((t1 = now()) - t0 < secs);
        if (done / (t1 - t0) / 1e6 > imbs)
          imbs = done / (t1 - t0) / 1e6;
      }
      printf("| %zu | %s | %.0f | %.2f | %.0f | %.1f KiB | %.1f KiB |\n",
             total / MSGS, cfgs[k].name, cmbs, (double)total / ctotal, imbs,
             c.comp_mem / 1024.0, c.decomp_mem / 1024.0);
      codec_free(&c);
    }
  }
  for (int i = 0; i < MSGS; i++) {
    free(msgs[i]);
    free(comp[i]);
  }
  free(out);
  return 0;
}
