/* rc_commands.c - the public calls that ask the loop to act (rc_core.h):
 * each builds one command and queues it (rc_mailbox.c); the loop carries
 * it out in rc_server.c's on_wake.
 *
 * Called on any thread. What can be made here is made here, on the
 * caller's thread: a message is framed into its shared buffer (rc_buf.c)
 * once, before the loop sees it, so the loop thread only queues
 * references. A client connection's frames are masked, each with its own
 * key (rc__client_send_command). Each returns 0 or a negative errno: the
 * command could not be made (UV_ENOMEM), the server is not started
 * (UV_EINVAL) or has ended (UV_ECANCELED); what the loop then finds (an id
 * that has gone, a room that does not exist) is not reported.
 */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop/rc_internal.h"
#include "proto/rc_bpwire.h"

int rc_server_accept(rc_server *s, uint64_t conn, const char *subprotocol,
                     const char *extra_headers) {
  rc_cmd *cmd = rc__cmd_make(RC_CMD_ACCEPT, conn);
  if (cmd == NULL)
    return UV_ENOMEM;
  size_t pl = subprotocol ? strlen(subprotocol) : 0;
  size_t xl = extra_headers ? strlen(extra_headers) : 0;
  if (pl + xl > 0) {
    cmd->text = malloc(pl + xl + 40);
    if (cmd->text == NULL) {
      rc__cmd_free(cmd);
      return UV_ENOMEM;
    }
    int n = 0;
    if (pl > 0)
      n = snprintf(cmd->text, pl + 40, "Sec-WebSocket-Protocol: %s\r\n",
                   subprotocol);
    memcpy(cmd->text + n, extra_headers ? extra_headers : "", xl + 1);
    cmd->text_len = (size_t)n + xl;
  }
  return rc__cmd_queue(s, cmd);
}

int rc_server_respond(rc_server *s, uint64_t conn, int status,
                      const char *extra_headers, const void *body,
                      size_t body_len, int head_only) {
  rc_cmd *cmd = rc__cmd_make(RC_CMD_RESPOND, conn);
  if (cmd == NULL)
    return UV_ENOMEM;
  cmd->buf = rc__buf_http(status, extra_headers, body, body_len, 1, head_only);
  if (cmd->buf == NULL) {
    rc__cmd_free(cmd);
    return UV_ENOMEM;
  }
  return rc__cmd_queue(s, cmd);
}

int rc_server_send(rc_server *s, uint64_t conn, const void *data, size_t len,
                   int is_text) {
  rc_cmd *cmd = rc__cmd_make(RC_CMD_SEND, conn);
  if (cmd == NULL)
    return UV_ENOMEM;
  /* A client's frames are masked, each with its own key. */
  if (conn & RC__CLIENT_BIT)
    (void)rc__client_send_command(s, conn, cmd, data, len, is_text);
  else
    cmd->buf = rc__buf_message(is_text, data, len);
  if (cmd->buf == NULL) {
    rc__cmd_free(cmd);
    return UV_ENOMEM;
  }
  return rc__cmd_queue(s, cmd);
}

int rc_server_close(rc_server *s, uint64_t conn, unsigned code,
                    const char *reason, size_t reason_len) {
  rc_cmd *cmd = rc__cmd_make(RC_CMD_CLOSE, conn);
  if (cmd == NULL)
    return UV_ENOMEM;
  cmd->status = (int)code;
  if (reason_len > 0) {
    cmd->text = malloc(reason_len + 1);
    if (cmd->text == NULL) {
      rc__cmd_free(cmd);
      return UV_ENOMEM;
    }
    memcpy(cmd->text, reason, reason_len);
    cmd->text[reason_len] = '\0';
    cmd->text_len = reason_len;
  }
  return rc__cmd_queue(s, cmd);
}

int rc_server_pause_reading(rc_server *s, uint64_t conn) {
  return rc__cmd_queue(s, rc__cmd_make(RC_CMD_PAUSE, conn));
}

int rc_server_resume_reading(rc_server *s, uint64_t conn) {
  return rc__cmd_queue(s, rc__cmd_make(RC_CMD_RESUME, conn));
}

uint64_t rc_server_room_new(rc_server *s) {
  return rc_server_room_new_relay(s, RC_RELAY_NONE);
}

static int room_cmd(rc_server *s, int type, uint64_t conn, uint64_t room) {
  rc_cmd *cmd = rc__cmd_make(type, conn);
  if (cmd != NULL)
    cmd->room = room;
  return rc__cmd_queue(s, cmd);
}

int rc_server_room_free(rc_server *s, uint64_t room) {
  return room_cmd(s, RC_CMD_ROOM_FREE, 0, room);
}

int rc_server_join(rc_server *s, uint64_t conn, uint64_t room, int relay) {
  if (room == 0 || relay != rc__room_mode(room))
    return UV_EINVAL; /* a room's mode is its id's: see rc_server_room_new */
  rc_cmd *cmd = rc__cmd_make(RC_CMD_JOIN, conn);
  if (cmd != NULL) {
    cmd->room = room;
    cmd->status = relay;
  }
  return rc__cmd_queue(s, cmd);
}

int rc_server_leave(rc_server *s, uint64_t conn, uint64_t room) {
  return room_cmd(s, RC_CMD_LEAVE, conn, room);
}

int rc_server_publish(rc_server *s, uint64_t room, const void *data, size_t len,
                      int is_text, uint64_t exclude) {
  rc_cmd *cmd = rc__cmd_make(RC_CMD_PUBLISH, 0);
  if (cmd == NULL)
    return UV_ENOMEM;
  cmd->room = room;
  cmd->exclude = exclude;
  cmd->buf = rc__buf_message(is_text, data, len);
  if (cmd->buf == NULL) {
    rc__cmd_free(cmd);
    return UV_ENOMEM;
  }
  return rc__cmd_queue(s, cmd);
}

int rc_server_broadcast(rc_server *s, const uint64_t *rooms, size_t nrooms,
                        const void *data, size_t len, int is_text,
                        uint64_t exclude) {
  rc_cmd *cmd = rc__cmd_make(RC_CMD_BROADCAST, 0);
  if (cmd == NULL)
    return UV_ENOMEM;
  cmd->exclude = exclude;
  cmd->nrooms = nrooms;
  cmd->rooms = malloc((nrooms ? nrooms : 1) * sizeof(*rooms));
  cmd->buf = rc__buf_message(is_text, data, len);
  if (cmd->rooms == NULL || cmd->buf == NULL) {
    rc__cmd_free(cmd);
    return UV_ENOMEM;
  }
  if (nrooms > 0)
    memcpy(cmd->rooms, rooms, nrooms * sizeof(*rooms));
  return rc__cmd_queue(s, cmd);
}

/* 0 when fd is a stream socket libuv can watch; a regular file would make
 * epoll refuse it, and libuv aborts on that. */
static int adoptable(int fd) {
  int type = 0;
  socklen_t tl = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0)
    return -errno; /* UV_EBADF, UV_ENOTSOCK: libuv's codes are -errno */
  return type == SOCK_STREAM ? 0 : UV_EINVAL;
}

int rc_server_adopt(rc_server *s, int fd, const void *head, size_t len,
                    uint64_t *conn) {
  *conn = 0;
  if (fd < 0)
    return UV_EINVAL;
  int r = len > RC_ADOPT_MAX_HEAD || !s->started ? UV_EINVAL : adoptable(fd);
  if (r == UV_EBADF)
    return r; /* no descriptor: nothing to close */
  rc_cmd *cmd = NULL;
  if (r == 0 && (cmd = rc__cmd_make(RC_CMD_ADOPT, 0)) == NULL)
    r = UV_ENOMEM;
  if (r != 0) {
    (void)close(fd);
    return r;
  }
  cmd->status = fd; /* from here the command owns it (rc__cmd_free) */
  if (len > 0) {
    if ((cmd->text = malloc(len)) == NULL) {
      rc__cmd_free(cmd);
      return UV_ENOMEM;
    }
    memcpy(cmd->text, head, len);
    cmd->text_len = len;
  }
  cmd->conn = RC__ADOPT_BIT | (atomic_fetch_add(&s->next_adopt, 1) + 1);
  uint64_t id = cmd->conn;
  r = rc__cmd_push(s, cmd, 0); /* frees cmd, and so closes fd, if refused */
  if (r == UV_ECANCELED)
    return r;
  *conn = id; /* queued: a failed wake-up is retried by the next command */
  return 0;
}

/* --- joining a room whose history Redis keeps ----------------------------- */

int rc_server_recover_begin(rc_server *s, uint64_t conn, uint64_t room) {
  return room_cmd(s, RC_CMD_RECOVER_BEGIN, conn, room);
}

int rc_server_recover_cancel(rc_server *s, uint64_t conn, uint64_t room) {
  return room_cmd(s, RC_CMD_RECOVER_END, conn, room); /* status 0 */
}

/* The frame of one message read from the history; NULL and *err set when
 * it is not a version-2 envelope within max_message_size. */
static rc_buf *history_frame(const rc_server *s, const void *msg, size_t len,
                             int *err) {
  rc_bpwire_msg m;
  if (rc_bpwire_parse(msg, len, s->cfg.max_message_size, &m) != RC_BPWIRE_OK ||
      !m.history) {
    *err = UV_EINVAL;
    return NULL;
  }
  rc_buf *b = rc__buf_message(m.is_text, m.payload, m.len);
  if (b == NULL)
    *err = UV_ENOMEM;
  return b;
}

/* Appends b (NULL: ran out of memory) to cmd's frames. 0 or UV_ENOMEM. */
static int add_frame(rc_cmd *cmd, rc_buf *b) {
  if (b == NULL)
    return UV_ENOMEM;
  cmd->bufs[cmd->nbufs++] = b;
  return 0;
}

int rc_server_recover_end(rc_server *s, uint64_t conn, uint64_t room,
                          const char *first, size_t first_len,
                          const void *const *msgs, const size_t *lens, size_t n,
                          const char *after, size_t after_len, uint64_t last) {
  if (n > SIZE_MAX / sizeof(rc_buf *) - 2)
    return UV_EINVAL;
  rc_cmd *cmd = rc__cmd_make(RC_CMD_RECOVER_END, conn);
  if (cmd == NULL)
    return UV_ENOMEM;
  cmd->room = room;
  cmd->status = 1;
  cmd->offset = last;
  cmd->bufs = malloc((n + 2) * sizeof(*cmd->bufs));
  int err = cmd->bufs == NULL ? UV_ENOMEM : 0;
  if (err == 0 && first != NULL)
    err = add_frame(cmd, rc__buf_message(1, first, first_len));
  for (size_t i = 0; err == 0 && i < n; i++) {
    rc_buf *b = history_frame(s, msgs[i], lens[i], &err);
    if (b != NULL)
      err = add_frame(cmd, b);
  }
  if (err == 0 && after != NULL)
    err = add_frame(cmd, rc__buf_message(1, after, after_len));
  if (err != 0) {
    rc__cmd_free(cmd);
    return err;
  }
  return rc__cmd_queue(s, cmd);
}
