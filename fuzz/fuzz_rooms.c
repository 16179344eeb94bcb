/* fuzz_rooms.c - libFuzzer target for rooms and delivery: joins, leaves,
 * publishes, broadcasts, direct sends, relay rooms and closes on a set of
 * real connections inside one core, against a model of what each member
 * must receive.
 *
 * The harness is fuzz_frames.c's: a fresh rc_server per input whose loop
 * this thread drives with UV_RUN_NOWAIT (no loop thread, no timer), clients
 * on an abstract-namespace Unix socket accepted by rc__server_on_connection.
 * NCONN clients open first. Commands are made with rc__cmd_make as the
 * public API makes them and carried out a batch at a time the way the
 * loop's wake-up callback does (rc_server.c on_wake): in order, the
 * publishes that end the batch as runs through rc__room_publish_run (the
 * direct-write path), the others one by one. What a client sends arrives
 * through its socket and the loop's own read.
 *
 * Input: one control byte, then operations of two bytes (op, arg).
 *   control bit 0   max_queue_bytes 2048 and small kernel send buffers
 *           bit 1   drop_oldest instead of closing a slow consumer
 *           bits 2-7  the relay mode of rooms 0, 1 and 2, two bits each
 *                   (% 3); room 3 relays nothing. A room's id carries its
 *                   mode (rc_server_room_new_relay), as the API's do.
 *   op % 12: 0 join arg&3 to room (arg>>2)&3
 *            1 leave arg&3 from room (arg>>2)&3
 *            2 publish to room arg&3, excluding conn (arg>>2)%5 - 1 (none
 *              when 0), (arg>>4)*16 bytes of padding
 *            3 broadcast to the rooms of mask arg&15, excluding
 *              (arg>>4)%5 - 1
 *            4 send to conn arg&3, (arg>>2)*4 bytes of padding
 *            5 client arg&3 sends a text message (the batch runs first)
 *            6 the embedder closes conn arg&3 (1000)
 *            7 free room arg&3
 *            8 end of the batch: it runs, then loop turns and reads
 *            9 client arg&3 sends a close frame (the batch runs first)
 *           10 client arg&3 hangs up (shutdown of its side)
 *           11 client arg&3 stops or starts reading
 *
 * Properties checked (a broken one aborts): each member receives exactly
 * the messages the model says, in order (a prefix when it hung up or was
 * closed with 1008, an ordered subsequence under drop_oldest, the missing
 * ones counted in messages_dropped); a message a client sends is an event
 * when it is in no relay room, in order; after every batch each open
 * connection's rooms and each room's open members are those of the model,
 * with the relay mode its id was made with; frames are
 * well-formed (RSV1 only on the text frames of the even clients, which
 * negotiated permessage-deflate, each inflating alone to its message), each
 * message was compressed at most once, nothing follows a close; at the end
 * every connection has one RC_EV_CLOSE, no room is left, every handle and
 * descriptor is closed (and LeakSanitizer sees no leak). */
#define _GNU_SOURCE /* libuv's headers need POSIX thread types */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "loop/rc_internal.h"

#include "fuzz_core.h"

#define NCONN 4
#define NROOM 4
#define MAXTAGS 4096 /* messages one member may be expected to get */
#define SPIN_LIMIT 64
#define MAXTEXT 512 /* the longest text message made here, rounded up */

/* The upgrade request's lines but its end. */
#define REQUEST_HEAD                                                           \
  "GET /rooms HTTP/1.1\r\n"                                                    \
  "Host: localhost\r\n"                                                        \
  "Upgrade: websocket\r\n"                                                     \
  "Connection: Upgrade\r\n"                                                    \
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                            \
  "Sec-WebSocket-Version: 13\r\n"

static const char handshake[] = REQUEST_HEAD "\r\n";

/* The even clients offer permessage-deflate, as browsers do: the server
 * compresses a message once for both of them and gives the odd ones the
 * plain frame; a compressed message they send to a relay room goes on to
 * the other even one as it came. */
static const char handshake_deflate[] =
    REQUEST_HEAD "Sec-WebSocket-Extensions: permessage-deflate; "
                 "client_max_window_bits\r\n\r\n";

static fuzz_listener listener;
static rc_deflater *client_deflater; /* the clients' own */
static rc_inflater *client_inflater;

/* A list of message tags, in order. */
typedef struct tags {
  uint32_t n;
  uint32_t v[MAXTAGS];
} tags;

typedef struct member {
  int fd;      /* the client's socket; -1 once closed */
  uint64_t id; /* the server's id */
  int open;    /* the model: takes deliveries (state OPEN) */
  int gone;    /* RC_EV_CLOSE seen */
  int hung_up, reading, close_seen;
  int core_closed; /* closed by the core itself (a slow consumer) */
  unsigned close_code;
  uint8_t *in; /* bytes received, the 101 head stripped */
  size_t inlen, incap;
  int head_done;
  int deflate; /* the server's answer agreed to permessage-deflate */
  tags want, got, want_events, events;
} member;

typedef struct room_model {
  uint64_t id;
  unsigned members; /* bit i: conn i, open or not yet gone */
  int relay;
} room_model;

static struct {
  rc_server *s;
  uv_pipe_t listener;
  member m[NCONN];
  room_model r[NROOM];
  rc_cmd *batch, *batch_tail;
  uint32_t next_tag;
  int drop_oldest, small;
} h;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fuzz_process_init(&listener, "fuzz-rooms", NCONN);
  client_deflater = rc_deflater_new(6);
  client_inflater = rc_inflater_new();
  FUZZ_CHECK(client_deflater != NULL && client_inflater != NULL);
  return 0;
}

static void push_tag(tags *t, uint32_t tag) {
  FUZZ_CHECK(t->n < MAXTAGS);
  t->v[t->n++] = tag;
}

/* --- what the clients receive ------------------------------------------- */

static void drain(member *m) {
  if (m->fd < 0)
    return;
  for (;;) {
    if (m->incap - m->inlen < 4096) {
      size_t cap = m->incap ? m->incap * 2 : 16384;
      uint8_t *nb = realloc(m->in, cap);
      FUZZ_CHECK(nb != NULL);
      m->in = nb;
      m->incap = cap;
    }
    ssize_t r =
        recv(m->fd, m->in + m->inlen, m->incap - m->inlen, MSG_DONTWAIT);
    if (r > 0) {
      m->inlen += (size_t)r;
      continue;
    }
    if (r < 0 && errno == EINTR)
      continue;
    return;
  }
}

/* "t" and the decimal tag, then padding that is not a digit. */
static uint32_t tag_of(const uint8_t *p, size_t len) {
  FUZZ_CHECK(len >= 2 && p[0] == 't');
  uint32_t tag = 0;
  for (size_t k = 1; k < len && p[k] >= '0' && p[k] <= '9'; k++)
    tag = tag * 10 + (uint32_t)(p[k] - '0');
  return tag;
}

/* Takes the whole frames out of m->in: text frames become tags. */
static void parse(member *m) {
  size_t i = 0;
  if (!m->head_done) {
    uint8_t *end = memmem(m->in, m->inlen, "\r\n\r\n", 4);
    if (end == NULL)
      return;
    FUZZ_CHECK(memcmp(m->in, "HTTP/1.1 101 ", 13) == 0);
    i = (size_t)(end - m->in) + 4;
    m->head_done = 1;
    m->deflate = memmem(m->in, i, "permessage-deflate", 18) != NULL;
    FUZZ_CHECK(m->deflate == ((m - h.m) % 2 == 0));
  }
  while (m->inlen - i >= 2) {
    uint8_t b0 = m->in[i], b1 = m->in[i + 1];
    FUZZ_CHECK((b0 & 0xB0u) == 0x80u && (b1 & 0x80u) == 0);
    int compressed = (b0 & 0x40u) != 0; /* RSV1 */
    FUZZ_CHECK(!compressed || (m->deflate && (b0 & 0x0Fu) == 0x1));
    size_t len = b1 & 0x7Fu, hl = 2;
    FUZZ_CHECK(len != 127);
    if (len == 126) {
      if (m->inlen - i < 4)
        break;
      len = (size_t)m->in[i + 2] << 8 | m->in[i + 3];
      hl = 4;
    }
    if (m->inlen - i - hl < len)
      break;
    const uint8_t *p = m->in + i + hl;
    FUZZ_CHECK(!m->close_seen); /* nothing after a close frame */
    switch (b0 & 0x0Fu) {
    case 0x1:
      if (compressed) { /* stands alone, and shrank */
        uint8_t plain[MAXTEXT];
        size_t got;
        FUZZ_CHECK(rc_inflate_message(client_inflater, p, len, plain,
                                      sizeof plain, &got) == RC_INFLATE_OK);
        FUZZ_CHECK(got > len);
        push_tag(&m->got, tag_of(plain, got));
      } else {
        push_tag(&m->got, tag_of(p, len));
      }
      break;
    case 0x8:
      m->close_seen = 1;
      m->close_code = len >= 2 ? ((unsigned)p[0] << 8 | p[1]) : 1005;
      break;
    default:
      FUZZ_CHECK(!"a frame no operation makes");
    }
    i += hl + len;
  }
  memmove(m->in, m->in + i, m->inlen - i);
  m->inlen -= i;
}

/* --- events --------------------------------------------------------------- */

static member *member_of(uint64_t id) {
  for (int i = 0; i < NCONN; i++)
    if (h.m[i].id == id)
      return &h.m[i];
  return NULL;
}

static void take_events(void) {
  rc_event *head = rc_server_poll(h.s);
  for (rc_event *ev = head; ev != NULL; ev = ev->next) {
    member *m = member_of(ev->conn);
    if (ev->type == RC_EV_OPEN) {
      FUZZ_CHECK(m != NULL && !m->open); /* setup accepts it */
      continue;
    }
    FUZZ_CHECK(m != NULL && !m->gone);
    if (ev->type == RC_EV_MESSAGE) {
      FUZZ_CHECK(ev->is_text);
      push_tag(&m->events, tag_of((const uint8_t *)ev->data, ev->len));
    } else {
      FUZZ_CHECK(ev->type == RC_EV_CLOSE);
      m->gone = 1;
      m->open = 0;
      /* Gone: out of every room, and a room left empty is no more. */
      for (int r = 0; r < NROOM; r++)
        h.r[r].members &= ~(1u << (m - h.m));
    }
  }
  rc_events_free(head);
}

/* --- the loop ------------------------------------------------------------- */

static void on_turn_end(uv_check_t *chk) {
  rc_server *s = chk->data;
  rc__flush_dirty(s);
  rc__events_hand_over(s);
}

static void turn(void) {
  (void)uv_run(&h.s->loop, UV_RUN_NOWAIT);
  for (int i = 0; i < NCONN; i++) {
    if (h.m[i].reading) {
      drain(&h.m[i]);
      parse(&h.m[i]);
    }
  }
  take_events();
}

static rc_conn *conn_of(int i) { return rc__conn_find(h.s, h.m[i].id); }

/* --- the model ------------------------------------------------------------ */

static void deliver(unsigned who, uint32_t tag) {
  for (int i = 0; i < NCONN; i++)
    if ((who >> i & 1u) && h.m[i].open)
      push_tag(&h.m[i].want, tag);
}

static unsigned room_members(int r) { return h.r[r].members; }

static void model_join(int i, int r) {
  if (!h.m[i].open)
    return; /* a closing connection joins nothing (the core: state) */
  h.r[r].members |= 1u << i;
}

/* --- commands ------------------------------------------------------------- */

static uint64_t conn_id(int i) { return i < 0 ? 0 : h.m[i].id; }

static void queue(rc_cmd *cmd) {
  if (h.batch_tail != NULL)
    h.batch_tail->next = cmd;
  else
    h.batch = cmd;
  h.batch_tail = cmd;
}

static rc_cmd *make(int type, uint64_t conn) {
  rc_cmd *cmd = rc__cmd_make(type, conn);
  FUZZ_CHECK(cmd != NULL);
  return cmd;
}

static rc_buf *message(uint32_t tag, size_t pad) {
  char text[16 + 256];
  int n = snprintf(text, 16, "t%u", tag);
  FUZZ_CHECK(n > 0 && n < 16);
  memset(text + n, 'x', pad);
  rc_buf *b = rc__buf_message(1, text, (size_t)n + pad);
  FUZZ_CHECK(b != NULL);
  return b;
}

/* A member the model has open but the core has closed: only a slow
 * consumer (1008), and never under drop_oldest. */
static void sync_open(void) {
  for (int i = 0; i < NCONN; i++) {
    member *m = &h.m[i];
    rc_conn *c = conn_of(i);
    if (m->open && (c == NULL || c->state != RC_CONN_OPEN)) {
      FUZZ_CHECK(!h.drop_oldest);
      m->open = 0;
      m->core_closed = 1;
    }
  }
}

static int index_of(uint64_t id) {
  member *m = member_of(id);
  return m != NULL ? (int)(m - h.m) : -1;
}

static int room_index(uint64_t id) {
  return (int)(id >> RC__ROOM_MODE_BITS) - 1;
}

static unsigned excluded(uint64_t id) {
  int i = index_of(id);
  return i >= 0 ? 1u << i : 0u;
}

/* What cmd does by the model, applied just before the core carries it
 * out, with the members' states as they are then. The tag of a message is
 * in cmd->status. */
static void model_apply(const rc_cmd *cmd) {
  sync_open();
  int i = index_of(cmd->conn);
  uint32_t tag = (uint32_t)cmd->status;
  switch (cmd->type) {
  case RC_CMD_JOIN:
    model_join(i, room_index(cmd->room));
    break;
  case RC_CMD_LEAVE:
    h.r[room_index(cmd->room)].members &= ~(1u << i);
    break;
  case RC_CMD_PUBLISH:
    deliver(room_members(room_index(cmd->room)) & ~excluded(cmd->exclude), tag);
    break;
  case RC_CMD_BROADCAST: {
    unsigned to = 0;
    for (size_t k = 0; k < cmd->nrooms; k++)
      to |= room_members(room_index(cmd->rooms[k]));
    deliver(to & ~excluded(cmd->exclude), tag);
    break;
  }
  case RC_CMD_SEND:
    deliver(1u << i, tag);
    break;
  case RC_CMD_CLOSE:
    h.m[i].open = 0;
    break;
  case RC_CMD_ROOM_FREE:
    h.r[room_index(cmd->room)].members = 0;
    break;
  default:
    FUZZ_CHECK(!"a command no operation makes");
  }
}

static void run_batch(void) {
  rc_cmd *cmd = h.batch, *run = rc__cmd_tail_run(cmd);
  h.batch = h.batch_tail = NULL;
  while (cmd != run) {
    rc_cmd *next = cmd->next;
    model_apply(cmd);
    if (cmd->type == RC_CMD_PUBLISH)
      rc__room_publish(h.s, cmd->room, cmd->buf, cmd->exclude);
    else if (cmd->type == RC_CMD_BROADCAST)
      rc__room_broadcast(h.s, cmd->rooms, cmd->nrooms, cmd->buf, cmd->exclude);
    else if (cmd->type == RC_CMD_ROOM_FREE)
      rc__room_free(h.s, cmd->room);
    else
      rc__conn_command(h.s, cmd);
    rc__cmd_free(cmd);
    cmd = next;
  }
  while (run != NULL) { /* in pieces of RC__RUN_MAX, as publish_run does */
    rc_buf *bufs[RC__RUN_MAX];
    uint64_t exclude[RC__RUN_MAX];
    uint32_t n = 0;
    uint64_t room = run->room;
    rc_cmd *first = run;
    for (; run != NULL && n < RC__RUN_MAX; run = run->next, n++) {
      model_apply(run); /* a member closed inside the run gets a prefix */
      bufs[n] = run->buf;
      exclude[n] = run->exclude;
    }
    rc__room_publish_run(h.s, room, bufs, exclude, n);
    while (first != run) {
      rc_cmd *next = first->next;
      rc__cmd_free(first);
      first = next;
    }
  }
}

/* Runs the batch, then turns until what it wrote has been read. */
static void end_batch(void) {
  run_batch();
  for (int k = 0; k < 4; k++)
    turn();
}

/* Checks the core's rooms against the model: the open members of each
 * room, the rooms of each open connection, the relay mode. */
static void check_rooms(void) {
  sync_open();
  for (int r = 0; r < NROOM; r++) {
    rc_room *room = rc__room_get(h.s, h.r[r].id, 0);
    FUZZ_CHECK((room != NULL) == (h.r[r].members != 0));
    if (room == NULL)
      continue;
    FUZZ_CHECK(room->relay == h.r[r].relay);
    unsigned seen = 0;
    for (uint32_t k = 0; k < room->n; k++) {
      member *m = member_of(room->members[k].conn->id);
      FUZZ_CHECK(m != NULL);
      seen |= 1u << (m - h.m);
    }
    FUZZ_CHECK(seen == h.r[r].members);
    FUZZ_CHECK(__builtin_popcount(seen) == (int)room->n);
  }
  for (int i = 0; i < NCONN; i++) {
    rc_conn *c = conn_of(i);
    if (c == NULL)
      continue;
    unsigned want = 0;
    for (int r = 0; r < NROOM; r++)
      want += (h.r[r].members >> i) & 1u;
    FUZZ_CHECK(c->nrooms == want);
  }
}

/* --- the operations ------------------------------------------------------- */

/* The relay or event a message from client i becomes, by the model. */
static void model_client_message(int i, uint32_t tag) {
  unsigned to = 0;
  int relays = 0;
  for (int r = 0; r < NROOM; r++) {
    if (!(h.r[r].members >> i & 1u) || h.r[r].relay == RC_RELAY_NONE)
      continue;
    relays = 1;
    to |= room_members(r) & ~(h.r[r].relay == RC_RELAY_OTHERS ? 1u << i : 0u);
  }
  if (relays)
    deliver(to, tag);
  else
    push_tag(&h.m[i].want_events, tag);
}

/* A masked text frame from client i, read by the loop before we go on. */
static void client_message(int i, size_t pad) {
  member *m = &h.m[i];
  if (!m->open || m->fd < 0)
    return;
  end_batch();
  sync_open();
  if (!m->open)
    return;
  uint32_t tag = h.next_tag++;
  uint8_t frame[8 + 16 + 60];
  char text[16 + 60];
  int n = snprintf(text, 16, "t%u", tag);
  memset(text + n, 'y', pad);
  size_t len = (size_t)n + pad;
  FUZZ_CHECK(len <= 125);
  frame[0] = 0x81;
  const uint8_t *payload = (const uint8_t *)text;
  uint8_t z[16 + 60];
  size_t zlen;
  if (m->deflate && pad >= 16 &&
      rc_deflate_message(client_deflater, payload, len, z, sizeof z, &zlen) ==
          RC_DEFLATE_OK) {
    frame[0] |= 0x40u; /* RSV1: compressed alone */
    payload = z;
    len = zlen;
  }
  frame[1] = (uint8_t)(0x80u | len);
  memcpy(frame + 2, "\x11\x22\x33\x44", 4);
  for (size_t k = 0; k < len; k++)
    frame[6 + k] = payload[k] ^ frame[2 + k % 4];
  FUZZ_CHECK(send(m->fd, frame, 6 + len, 0) == (ssize_t)(6 + len));
  model_client_message(i, tag);
  rc_stats before, now;
  rc_server_stats(h.s, &before);
  for (int k = 0; k < SPIN_LIMIT; k++) {
    turn();
    rc_server_stats(h.s, &now);
    if (now.messages_in > before.messages_in)
      break;
  }
  FUZZ_CHECK(now.messages_in == before.messages_in + 1);
}

/* Client i closes (frame) or hangs up; the loop sees it before we go on. */
static void client_leaves(int i, int hang_up) {
  member *m = &h.m[i];
  if (m->fd < 0 || m->hung_up || !m->open)
    return;
  end_batch();
  sync_open();
  if (!m->open)
    return;
  if (hang_up) {
    FUZZ_CHECK(shutdown(m->fd, SHUT_WR) == 0);
    m->hung_up = 1;
  } else {
    static const uint8_t close_frame[] = {0x88, 0x82, 1,        2,
                                          3,    4,    0x03 ^ 1, 0xE8 ^ 2};
    FUZZ_CHECK(send(m->fd, close_frame, sizeof(close_frame), 0) ==
               (ssize_t)sizeof(close_frame));
  }
  for (int k = 0; k < SPIN_LIMIT; k++) {
    turn();
    rc_conn *c = conn_of(i);
    if (c == NULL || c->state != RC_CONN_OPEN)
      break;
  }
  rc_conn *c = conn_of(i);
  FUZZ_CHECK(c == NULL || c->state != RC_CONN_OPEN);
  m->open = 0;
}

static void operate(unsigned op, unsigned arg) {
  int i = (int)(arg & 3u);
  rc_cmd *cmd = NULL;
  switch (op % 12u) {
  case 0:
    cmd = make(RC_CMD_JOIN, h.m[i].id);
    cmd->room = h.r[arg >> 2 & 3u].id;
    cmd->status = h.r[arg >> 2 & 3u].relay;
    break;
  case 1:
    cmd = make(RC_CMD_LEAVE, h.m[i].id);
    cmd->room = h.r[arg >> 2 & 3u].id;
    break;
  case 2:
    cmd = make(RC_CMD_PUBLISH, 0);
    cmd->room = h.r[i].id;
    cmd->exclude = conn_id((int)((arg >> 2 & 3u) % 5u) - 1);
    cmd->status = (int)h.next_tag++;
    cmd->buf = message((uint32_t)cmd->status, (arg >> 4) * 16u);
    break;
  case 3:
    cmd = make(RC_CMD_BROADCAST, 0);
    cmd->rooms = calloc(NROOM, sizeof(*cmd->rooms));
    FUZZ_CHECK(cmd->rooms != NULL);
    for (int r = 0; r < NROOM; r++)
      if (arg >> r & 1u)
        cmd->rooms[cmd->nrooms++] = h.r[r].id;
    cmd->exclude = conn_id((int)((arg >> 4) % 5u) - 1);
    cmd->status = (int)h.next_tag++;
    cmd->buf = message((uint32_t)cmd->status, 8);
    break;
  case 4:
    cmd = make(RC_CMD_SEND, h.m[i].id);
    cmd->status = (int)h.next_tag++;
    cmd->buf = message((uint32_t)cmd->status, (arg >> 2) * 4u);
    break;
  case 5:
    client_message(i, (arg >> 2) % 60u);
    break;
  case 6:
    cmd = make(RC_CMD_CLOSE, h.m[i].id);
    cmd->status = 1000;
    break;
  case 7:
    cmd = make(RC_CMD_ROOM_FREE, 0);
    cmd->room = h.r[i].id;
    break;
  case 8:
    end_batch();
    check_rooms();
    break;
  case 9:
  case 10:
    client_leaves(i, op % 12u == 10);
    break;
  default:
    h.m[i].reading = !h.m[i].reading;
    break;
  }
  if (cmd != NULL)
    queue(cmd);
}

/* --- one input ------------------------------------------------------------ */

static void setup(void) {
  rc_config cfg;
  rc_config_default(&cfg);
  cfg.ping_interval = 0;
  if (h.small)
    cfg.max_queue_bytes = 2048;
  cfg.drop_oldest = h.drop_oldest;
  rc_server *s = h.s = fuzz_server_new(&cfg, on_turn_end);
  fuzz_listen(s, &h.listener, &listener, NCONN);
  for (int i = 0; i < NCONN; i++) {
    member *m = &h.m[i];
    m->fd = fuzz_connect(&listener);
    for (int k = 0; k < SPIN_LIMIT && s->nconns == (uint64_t)i; k++)
      turn();
    FUZZ_CHECK(s->nconns == (uint64_t)i + 1);
    for (uint32_t k = 0; k < s->nslots; k++)
      if (s->slots[k] != NULL && member_of(s->slots[k]->id) == NULL)
        m->id = s->slots[k]->id;
    if (h.small) {
      uv_os_fd_t fd;
      rc_conn *c = rc__conn_find(s, m->id);
      FUZZ_CHECK(c != NULL && uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0);
      int sz = 4096;
      FUZZ_CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)) == 0);
    }
    const char *hs = i % 2 == 0 ? handshake_deflate : handshake;
    size_t hslen = strlen(hs);
    FUZZ_CHECK(send(m->fd, hs, hslen, 0) == (ssize_t)hslen);
    for (int k = 0; k < SPIN_LIMIT && conn_of(i)->state != RC_CONN_PENDING; k++)
      turn();
    FUZZ_CHECK(conn_of(i)->state == RC_CONN_PENDING);
    rc_cmd *cmd = make(RC_CMD_ACCEPT, m->id);
    rc__conn_command(s, cmd);
    rc__cmd_free(cmd);
    m->open = 1;
    m->reading = 1;
  }
  uv_close((uv_handle_t *)&h.listener, NULL);
  for (int r = 0; r < NROOM; r++)
    h.r[r].id =
        ((uint64_t)r + 1) << RC__ROOM_MODE_BITS | (uint64_t)h.r[r].relay;
  for (int k = 0; k < 4; k++)
    turn();
}

static int is_subsequence(const tags *sub, const tags *of) {
  uint32_t j = 0;
  for (uint32_t k = 0; k < sub->n; k++) {
    while (j < of->n && of->v[j] != sub->v[k])
      j++;
    if (j == of->n)
      return 0;
    j++;
  }
  return 1;
}

static int is_prefix(const tags *pre, const tags *of) {
  return pre->n <= of->n &&
         memcmp(pre->v, of->v, pre->n * sizeof(pre->v[0])) == 0;
}

/* ROOMCAST_FUZZ_TRACE=1: what each member was to get and got. */
static void dump_tags(const char *what, const tags *t) {
  fprintf(stderr, "  %s (%u):", what, t->n);
  for (uint32_t k = 0; k < t->n; k++)
    fprintf(stderr, " %u", t->v[k]);
  fputc('\n', stderr);
}

static void dump(void) {
  for (int i = 0; i < NCONN; i++) {
    const member *m = &h.m[i];
    fprintf(stderr,
            "member %d: open %d hung_up %d core_closed %d close %u "
            "(seen %d)\n",
            i, m->open, m->hung_up, m->core_closed, m->close_code,
            m->close_seen);
    dump_tags("want", &m->want);
    dump_tags("got", &m->got);
  }
}

static void teardown(void) {
  rc_server *s = h.s;
  run_batch();
  /* Everyone reads what is left. */
  for (int i = 0; i < NCONN; i++)
    h.m[i].reading = 1;
  for (int k = 0; k < SPIN_LIMIT; k++) {
    int busy = 0;
    turn();
    for (int i = 0; i < NCONN; i++) {
      rc_conn *c = conn_of(i);
      busy |= c != NULL && (c->writing || c->q.count > 0);
    }
    if (!busy)
      break;
  }
  for (int k = 0; k < 4; k++)
    turn();
  sync_open();
  rc_stats st;
  rc_server_stats(s, &st);
  uint64_t missing = 0;
  int hung_up = 0;
  if (getenv("ROOMCAST_FUZZ_TRACE") != NULL) {
    dump();
    fprintf(stderr, "messages compressed: %llu\n",
            (unsigned long long)st.messages_deflated);
  }
  for (int i = 0; i < NCONN; i++) {
    member *m = &h.m[i];
    FUZZ_CHECK(m->events.n == m->want_events.n &&
               memcmp(m->events.v, m->want_events.v,
                      m->events.n * sizeof(m->events.v[0])) == 0);
    if (m->core_closed) /* the client was told why */
      FUZZ_CHECK(m->hung_up || (m->close_seen && m->close_code == 1008));
    if (h.drop_oldest) {
      FUZZ_CHECK(is_subsequence(&m->got, &m->want));
      if (!m->hung_up)
        missing += m->want.n - m->got.n;
      hung_up |= m->hung_up;
    } else if (m->hung_up || m->core_closed) {
      FUZZ_CHECK(is_prefix(&m->got, &m->want));
    } else {
      FUZZ_CHECK(m->got.n == m->want.n && is_prefix(&m->got, &m->want));
    }
  }
  /* Each message was compressed at most once, however many got it. */
  FUZZ_CHECK(st.messages_deflated <= h.next_tag);
  if (h.drop_oldest) /* each missing message was dropped, and counted */
    FUZZ_CHECK(hung_up ? missing <= st.messages_dropped
                       : missing == st.messages_dropped);
  else
    FUZZ_CHECK(st.messages_dropped == 0);
  /* The clients hang up; every connection ends with one RC_EV_CLOSE. */
  for (int i = 0; i < NCONN; i++) {
    if (h.m[i].fd >= 0)
      close(h.m[i].fd);
    h.m[i].fd = -1;
  }
  for (int k = 0; k < SPIN_LIMIT && (s->nconns > 0 || s->open_handles > 0); k++)
    turn();
  FUZZ_CHECK(s->nconns == 0 && s->open_handles == 0);
  for (int i = 0; i < NCONN; i++)
    FUZZ_CHECK(h.m[i].gone);
  FUZZ_CHECK(s->rooms_n == 0); /* no room outlives its members */
  uv_close((uv_handle_t *)&s->flush, NULL);
  (void)uv_run(&s->loop, UV_RUN_DEFAULT);
  FUZZ_CHECK(uv_loop_close(&s->loop) == 0);
  rc_server_free(s);
  for (int i = 0; i < NCONN; i++)
    free(h.m[i].in);
}

static int lowest_free_fd(void) {
  int probe = dup(0);
  FUZZ_CHECK(probe >= 0);
  close(probe);
  return probe;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  int fd_baseline = lowest_free_fd();
  memset(&h, 0, sizeof(h));
  h.small = data[0] & 1u;
  h.drop_oldest = data[0] >> 1 & 1u;
  for (int r = 0; r < 3; r++)
    h.r[r].relay = (int)((data[0] >> (2 + 2 * r) & 3u) % 3u);
  setup();
  for (size_t at = 1; at + 1 < size; at += 2)
    operate(data[at], data[at + 1]);
  teardown();
  memset(&h, 0, sizeof(h));
  FUZZ_CHECK(lowest_free_fd() == fd_baseline);
  return 0;
}
