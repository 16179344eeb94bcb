/* fuzz_core.h - a server core whose loop the fuzz target runs itself, on
 * its own thread (no loop thread is started): what every target that
 * drives a whole core shares. */
#ifndef FUZZ_CORE_H
#define FUZZ_CORE_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "loop/rc_internal.h"

#include "fuzz_check.h"

/* Where the target's clients connect: a Unix socket in the abstract
 * namespace (no file to clean up, nothing on the network), made once per
 * process. */
typedef struct fuzz_listener {
  int fd;
  struct sockaddr_un addr;
  socklen_t len;
} fuzz_listener;

/* For LLVMFuzzerInitialize: the listener (named after name and the pid),
 * SIGPIPE ignored as embedders do (the core writes to sockets the peer may
 * have closed), and libuv's one signal pipe per process opened before the
 * first input, so that it does not look like a descriptor that input
 * leaked. */
static inline void fuzz_process_init(fuzz_listener *l, const char *name,
                                     int backlog) {
  signal(SIGPIPE, SIG_IGN);
  l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(l->fd >= 0);
  memset(&l->addr, 0, sizeof(l->addr));
  l->addr.sun_family = AF_UNIX;
  int n = snprintf(l->addr.sun_path + 1, sizeof(l->addr.sun_path) - 1,
                   "roomcast-%s-%ld", name, (long)getpid());
  FUZZ_CHECK(n > 0 && (size_t)n < sizeof(l->addr.sun_path) - 1);
  l->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
  FUZZ_CHECK(bind(l->fd, (struct sockaddr *)&l->addr, l->len) == 0);
  FUZZ_CHECK(listen(l->fd, backlog) == 0);
  uv_loop_t warm;
  FUZZ_CHECK(uv_loop_init(&warm) == 0);
  FUZZ_CHECK(uv_loop_close(&warm) == 0);
}

/* The core accepts l's connections through pipe, a handle on a copy of
 * l's socket (closing the handle leaves l open for the next input). */
static inline void fuzz_listen(rc_server *s, uv_pipe_t *pipe,
                               const fuzz_listener *l, int backlog) {
  FUZZ_CHECK(uv_pipe_init(&s->loop, pipe, 0) == 0);
  int fd = dup(l->fd);
  FUZZ_CHECK(fd >= 0);
  FUZZ_CHECK(uv_pipe_open(pipe, fd) == 0);
  pipe->data = s;
  FUZZ_CHECK(
      uv_listen((uv_stream_t *)pipe, backlog, rc__server_on_connection) == 0);
}

/* A client of l. */
static inline int fuzz_connect(const fuzz_listener *l) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(fd >= 0);
  FUZZ_CHECK(connect(fd, (const struct sockaddr *)&l->addr, l->len) == 0);
  return fd;
}

/* A server with cfg, its loop initialised and on_turn_end run at the end
 * of each loop turn, where the loop thread would flush its writes and hand
 * its events over. */
static inline rc_server *fuzz_server_new(const rc_config *cfg,
                                         uv_check_cb on_turn_end) {
  rc_server *s = rc_server_new(cfg);
  FUZZ_CHECK(s != NULL);
  FUZZ_CHECK(uv_loop_init(&s->loop) == 0);
  s->loop.data = s;
  FUZZ_CHECK(uv_check_init(&s->loop, &s->flush) == 0);
  s->flush.data = s;
  FUZZ_CHECK(uv_check_start(&s->flush, on_turn_end) == 0);
  return s;
}

#endif
