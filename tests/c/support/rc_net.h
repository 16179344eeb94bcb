/* rc_net.h - plain sockets for the C tests that play a peer by hand. */
#ifndef RC_NET_H
#define RC_NET_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rc_events.h" /* rc_test_now_ms */

/* A blocking TCP connection to port on 127.0.0.1, or -1. */
static inline int rc_test_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Writes all of data; 0 or -1. */
static inline int rc_test_send_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Reads exactly len bytes within wait_ms; 0 or -1. */
static inline int rc_test_read_exact(int fd, void *buf, size_t len,
                                     uint64_t wait_ms) {
  char *p = buf;
  uint64_t end = rc_test_now_ms() + wait_ms;
  while (len > 0) {
    uint64_t now = rc_test_now_ms();
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (now >= end || poll(&pf, 1, (int)(end - now)) <= 0)
      return -1;
    ssize_t n = recv(fd, p, len, 0);
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Reads until the peer ends the stream, cap bytes or wait_ms; returns the
 * bytes read (NUL-terminated in buf[cap]) and sets *eof when it ended. */
static inline size_t rc_test_read_to_eof(int fd, char *buf, size_t cap,
                                         int *eof, uint64_t wait_ms) {
  size_t got = 0;
  uint64_t end = rc_test_now_ms() + wait_ms;
  *eof = 0;
  while (got < cap) {
    uint64_t now = rc_test_now_ms();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (now >= end || poll(&p, 1, (int)(end - now)) <= 0)
      break;
    ssize_t n = recv(fd, buf + got, cap - got, 0);
    if (n <= 0) {
      *eof = 1;
      break;
    }
    got += (size_t)n;
  }
  buf[got] = '\0';
  return got;
}

/* A masked client frame with FIN set and a payload under 126 bytes; its
 * length (out holds 6 + len bytes). */
static inline size_t rc_test_client_frame(uint8_t *out, unsigned opcode,
                                          const void *data, size_t len) {
  static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  const uint8_t *d = data;
  out[0] = (uint8_t)(0x80u | opcode);
  out[1] = (uint8_t)(0x80u | len);
  memcpy(out + 2, key, 4);
  for (size_t i = 0; i < len; i++)
    out[6 + i] = d[i] ^ key[i & 3];
  return 6 + len;
}

#endif
