"""Typing stubs for ``roomcast._core``, the CPython binding of the C core.

The core runs its own libuv loop on a native thread. Python talks to it in
two directions:

* commands (``accept``, ``send``, ``publish``, ...) are queued and the loop
  is woken once per batch; they are carried out in the order they were made.
  A command on a connection that has already gone is ignored silently;
* events (open, message, close, HTTP request) are queued by the loop; the
  file descriptor returned by ``fileno()`` becomes readable when the queue
  goes from empty to non-empty, and ``poll()`` drains the whole batch.

Connection ids and room ids are positive ints, never reused while the
``Core`` lives. Client connections (``connect``) have ids of 2**63 and up;
``send``, ``close``, ``pause_reading`` and ``resume_reading`` take them like
any other, and their events are the same but for ``EV_CONNECTED``.

Once the loop has ended (``stop()`` has begun and the close handshakes are
over), every command raises ``RuntimeError("the server has stopped")``; a
command made before ``listen()`` raises ``RuntimeError`` too.
"""

from collections.abc import Callable, Sequence
from typing import Any, Final

EV_OPEN: Final[int]  # (EV_OPEN, conn, path, query, headers, host, port)
EV_MESSAGE: Final[int]  # (EV_MESSAGE, conn, data)  data: str (text) | bytes (binary)
EV_CLOSE: Final[int]  # (EV_CLOSE, conn, code, reason)  last event of a conn
EV_REQUEST: Final[int]  # (EV_REQUEST, conn, method, path, query, headers, host, port)
EV_CONNECTED: Final[int]  # (EV_CONNECTED, conn, subprotocol, headers)  a client conn is open;
# subprotocol "" when none; headers of the 101 answer, as below.
# A client conn that never opens gets EV_CLOSE alone (1006, reason).
# (EV_REDIS, token, value, error): the reply to redis(token, ...). value: bytes,
# str (status), int, None or a list of them (an error inside a list is a
# RuntimeError instance); error: the message of an error reply (value None),
# also when the backplane is down or the connection was lost, else None.
EV_REDIS: Final[int]
# (EV_BACKPLANE, code, text): the Redis connection's state changed. code 1:
# up (both connections ready, rooms resubscribed); 0: down; 2: an attempt to
# connect failed (text says why).
EV_BACKPLANE: Final[int]
BACKPLANE_DOWN: Final[int]  # EV_BACKPLANE codes: down (its connection lost)
BACKPLANE_UP: Final[int]  # up: both Redis connections ready, rooms resubscribed
BACKPLANE_RETRY: Final[int]  # an attempt to connect failed
# (EV_RECOVER, conn, code, room): recover_begin's answer: code 1, the room's
# channel is subscribed and its messages are kept for conn; 0, it cannot be.
EV_RECOVER: Final[int]
# Relay modes of room_new(relay): messages become EV_MESSAGE events (NONE)
# or the loop forwards each to every member (ALL) or all but the sender.
RELAY_NONE: Final[int]
RELAY_ALL: Final[int]
RELAY_OTHERS: Final[int]
# The longest room name room_name() takes, in bytes (RC_ROOM_NAME_MAX).
ROOM_NAME_MAX: Final[int]

def key_slot(key: bytes, /) -> int:
    """The Redis Cluster slot of key, 0 to 16383: CRC16 (XMODEM) of its hash
    tag (the bytes between the first ``{`` and the first ``}`` after it, when
    there are any) or else of the whole key, mod 16384; what ``CLUSTER
    KEYSLOT`` answers."""

def room_tag(channel: bytes, /) -> bytes:
    """The hash tag of the room whose channel is ``channel`` on a Redis
    Cluster: ``{``, 4 letters ``@`` to ``O``, ``}`` (csrc/proto/rc_slot.h).
    The room's sharded channel and its presence and history keys start with
    it, so they share a slot."""

# The request headers of EV_OPEN and EV_REQUEST: b"name:value\n" per header,
# in request order, names lower-cased, values as sent (decode as latin-1).
Headers = bytes
Event = tuple[Any, ...]

class Core:
    def __init__(
        self,
        *,
        max_message_size: int = 1 << 20,
        max_queue_bytes: int = 1 << 20,
        ping_interval: float = 20.0,  # 0 disables pings
        ping_timeout: float = 20.0,
        handshake_timeout: float = 10.0,
        close_timeout: float = 5.0,
        max_header_bytes: int = 8192,
        max_headers: int = 100,
        http_requests: bool = False,  # True: plain GET/HEAD requests become EV_REQUEST; False: 426
        max_connections: int = 0,  # 0: no limit; past it new connections get 503
        idle_timeout: float = 0.0,  # seconds without a client message before 1001; 0: never
        drop_oldest: bool = False,  # full queue: drop oldest messages instead of closing with 1008
        max_event_bytes: int = 64 << 20,  # unpolled events; past it, clients that send are not read
        backplane_host: str | None = None,  # Redis host: named rooms are shared through it
        backplane_port: int = 6379,
        backplane_db: int = 0,
        backplane_username: str | None = None,
        backplane_password: str | None = None,
        backplane_prefix: str | None = None,  # channel = prefix + room name; None: "roomcast:"
        backplane_buffer: int = 1 << 20,  # bytes of publishes kept while Redis is unreachable
        compression: bool = True,  # permessage-deflate with clients that offer it
        compression_threshold: int = 128,  # shorter messages go uncompressed
        backplane_tls: bool = False,  # TLS to Redis (rediss://)
        backplane_tls_checks: int = 0,  # 0: chain and name, 1: chain only, 2: none
        backplane_tls_ca: str | None = None,  # PEM roots; None: the system's
        backplane_tls_cert: str | None = None,  # client certificate chain (PEM)
        backplane_tls_key: str | None = None,  # its key; None: in the cert file
        backplane_cluster: bool = False,  # backplane_host lists a Redis Cluster's nodes, host:port,...
    ) -> None: ...
    def listen(self, host: str, port: int, backlog: int = 1024, reuse_port: bool = False) -> int:
        """Binds, listens and starts the loop thread; returns the bound port.
        Raises OSError on bind failure. Call once. ``reuse_port``: the
        listening socket has SO_REUSEPORT (several processes on one port)."""
    def set_tls(
        self, certfile: str, keyfile: str | None, password: str | None, ca_certs: str | None, cert_reqs: int
    ) -> None:
        """Serves TLS with this certificate on connections accepted from now
        on (before listen(), or to reload). ValueError naming the file and
        the problem; the certificate in use then stays."""
    @staticmethod
    def check_tls(
        certfile: str, keyfile: str | None, password: str | None, ca_certs: str | None, cert_reqs: int
    ) -> None:
        """Reads and checks the files; ValueError naming the file and the
        problem."""
    @staticmethod
    def check_backplane_tls(checks: int, ca_certs: str | None, certfile: str | None, keyfile: str | None) -> None:
        """Reads and checks the files of TLS to Redis; ValueError naming the
        file and the problem."""
    def start(self) -> None:
        """Starts the loop thread without listening, for client
        connections. Call once, instead of listen()."""
    def connect(
        self,
        host: str,
        port: int,
        target: str,
        *,
        host_header: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        protocols: Sequence[str] | None = (),
        tls: bool = False,
        verify: bool = True,
        cafile: str | None = None,
        server_name: str | None = None,
        handshake_timeout: float = 10.0,
        ping_interval: float = 0.0,
        ping_timeout: float = 0.0,
        max_message_size: int = 0,
        compression: str | None = "deflate",
    ) -> int:
        """Starts a client connection to host:port asking for target (path
        and query); returns its id at once. The loop resolves host (every
        address in turn), connects, does TLS when asked (verify: chain and
        host name, against cafile or the system's roots; server_name: the
        name to check and send as SNI) and the opening handshake of RFC
        6455 4.1 within handshake_timeout. Then EV_CONNECTED, or EV_CLOSE
        with code 1006 and a reason. host_header replaces "host[:port]";
        headers are extra request headers; protocols are offered, and the
        server may pick only one of them. max_message_size 0: the core's;
        it bounds compressed messages once inflated too (1009).
        compression "deflate" offers permessage-deflate (RFC 7692) and
        compresses the messages it shrinks once the server agrees; None
        offers nothing. ValueError for a bad argument (control characters, a target not
        starting with "/", a bad subprotocol token)."""
    def adopt(self, fd: int, head: bytes, /) -> int:
        """Serves a TCP connection accepted elsewhere (uvicorn's) as if this
        core had accepted it; returns its id at once, usable from any thread
        (commands made with it run after the adoption). fd is its socket (a
        dup: the core closes it), head the bytes already read from it, in
        order: the request head ("GET /path?q HTTP/1.1\\r\\nname: value
        \\r\\n...\\r\\n") and any frames the client sent behind it (at most
        1 MiB in all); they go in before anything is read from fd. Events:
        EV_OPEN first, then as for an accepted connection (accept, reject,
        respond; one EV_CLOSE at the end); or, when the core answers the
        request itself (400, 405, 426, 431, 503 at max_connections or while
        stopping) or cannot open the socket, EV_CLOSE alone, code 1006, the
        reason saying why ("HTTP 400: malformed HTTP request"). Counted in
        accepted_total and adopted_total.

        From the call on the core owns fd, whatever happens: it closes it
        when the connection ends, or at once when it cannot serve it,
        errors included (but fd < 0, or an fd that is not open). Never
        close or use fd afterwards. Raises OSError (errno and libuv's
        message): EINVAL (fd < 0, head over 1 MiB, a socket that is not a
        stream, a core not started), EBADF, ENOTSOCK, ENOMEM, ECANCELED
        (stopped)."""
    def buffered(self, conn: int, /) -> int:
        """Bytes of a client connection not yet handed to the kernel (in
        send commands and its queue, framing and TLS included); 0 once it
        has gone. Safe from any thread."""
    def set_batching(self, call_soon: Callable[..., Any] | None, /) -> None:
        """Batch wake-ups: commands made on the calling thread no longer wake
        the core one by one; the first of a batch schedules ``flush()`` with
        ``call_soon`` (an asyncio loop's), so the core wakes once per loop
        iteration. Commands from other threads still wake it at once.
        ``None`` turns batching off."""
    def flush(self) -> None:
        """Wakes the core for the commands queued so far."""
    def idle(self) -> None:
        """Says that the events polled so far have been handled (and their
        commands made): with a backplane, a loaded core then writes the
        messages of rooms with history it holds (backplane_coalesced)."""
    def fileno(self) -> int:
        """Readable while events wait in the queue; poll() resets it."""
    def poll(self) -> list[Event]:
        """Returns every queued event, oldest first (maybe an empty list).
        An event that cannot be converted (MemoryError) costs only itself:
        an EV_OPEN or EV_REQUEST is answered 500, an EV_MESSAGE or
        EV_CONNECTED closes its connection with 1011 (its EV_CLOSE follows),
        others are given in their smallest form (empty reason); counted in
        stats()["events_undelivered"]."""
    def accept(self, conn: int, subprotocol: str | None = None, headers: Sequence[tuple[str, str]] = ()) -> None:
        """Sends the 101 answer to an EV_OPEN conn; frames follow only after it."""
    def reject(self, conn: int, status: int = 403, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()) -> None:
        """Answers an EV_OPEN conn (before accept) or an EV_REQUEST conn with an HTTP
        response and closes it. No EV_CLOSE follows for a rejected EV_OPEN? It does:
        every conn that produced EV_OPEN or EV_REQUEST ends with exactly one EV_CLOSE
        (code 1006 for HTTP-only conns)."""
    def respond(
        self, conn: int, status: int, headers: Sequence[tuple[str, str]], body: bytes, head_only: bool = False
    ) -> None:
        """Answers an EV_REQUEST with status, headers (Content-Length is added)
        and body, then closes the connection."""
    def send(self, conn: int, data: str | bytes | bytearray | memoryview) -> None:
        """Frames data once (str: text frame, else binary) and queues it on conn."""
    def close(self, conn: int, code: int = 1000, reason: str = "") -> None:
        """Starts the close handshake (or aborts a conn not yet accepted with 403)."""
    def pause_reading(self, conn: int) -> None:
        """Backpressure: stop reading from conn until resume_reading(conn);
        its messages wait in the kernel and TCP slows the peer down."""
    def resume_reading(self, conn: int) -> None: ...
    def room_new(self, relay: int = 0, /) -> int:
        """A new room id; relay (0 none, 1 all, 2 others, else ValueError) is
        the room's mode, fixed for its whole life: the id carries it."""
    def room_free(self, room: int) -> None:
        """Removes every member from the room (they stay connected) and forgets it."""
    def join(self, conn: int, room: int, relay: int = 0, /) -> None:
        """Adds conn to room. relay must be the mode the room was made with
        (ValueError otherwise): 0 messages become events; 1 the core forwards
        each message of a member to every member (2: but the sender), and no
        event is made for it."""
    def broadcast(self, rooms: Sequence[int], data: str | bytes | bytearray | memoryview, exclude: int = 0) -> None:
        """Like publish, to the members of any of rooms: each once."""
    def leave(self, conn: int, room: int) -> None: ...
    def publish(self, room: int, data: str | bytes | bytearray | memoryview, exclude: int = 0) -> None:
        """Frames data once and queues the same buffer on every member of room
        except conn ``exclude``. A member whose queue would exceed
        max_queue_bytes is closed with 1008."""
    def stop(self, code: int = 1001, reason: str = "going away") -> None:
        """Stops listening, closes every connection with code, waits up to
        close_timeout for the close handshakes, then joins the loop thread.
        Events still queued can be read with poll() afterwards."""
    def server_id(self) -> int:
        """This server's random 64-bit id; the backplane skips the messages
        that carry it (its own)."""
    def room_name(self, room: int, name: str | bytes, /) -> None:
        """Names room (1 to 1056 bytes of UTF-8 without NUL, else ValueError),
        once. With a backplane, a push to it is also PUBLISHed to the channel
        prefix + name, and the channel is subscribed while the room has members
        here. A name held by another room of this core is ignored."""
    def recover_begin(self, conn: int, room: int, /) -> None:
        """Keeps room's messages for conn from the moment its channel is
        subscribed (a named room, with a backplane); (EV_RECOVER, conn, 1,
        room) says when, (EV_RECOVER, conn, 0, room) that it cannot."""
    def recover_end(
        self, conn: int, room: int, first: str | None, msgs: list[bytes], after: str | None, last: int, /
    ) -> None:
        """Sends conn first, the history messages msgs (version-2 envelopes
        as Redis keeps them), after, then the kept messages past offset
        last, and joins conn to room, in one step of the loop. ValueError if
        a message is not one."""
    def recover_cancel(self, conn: int, room: int, /) -> None:
        """Ends a recover_begin without joining."""
    def redis(self, token: int, /, *args: str | bytes | int) -> None:
        """Sends a command on the backplane's command connection (shared with
        the publishes: no blocking commands); the reply comes as (EV_REDIS,
        token, ...). RuntimeError without a backplane; ValueError for commands
        that would change the connection (SUBSCRIBE, SELECT, MULTI, ...)."""
    def stats(self) -> dict[str, int]:
        """Counters: connections (open now), accepted_total, rooms_created,
        messages_in, deliveries (frames queued by send and publish),
        slow_consumer_closes, parsers (frame parsers held now: a connection
        holds one only while bytes of a message are in flight, idle ones
        drop theirs within a second), writes (write system calls; one
        carries every frame queued for a connection in a loop turn),
        wakeups (times the core's loop was woken for commands),
        messages_dropped (by drop_oldest), connections_refused (503 at
        max_connections), idle_closes (1001 at idle_timeout),
        fragment_closes (messages cut into too many fragments, 1009),
        event_bytes (events waiting for poll() now), reads_held (times a
        sending client was not read because events waited past
        max_event_bytes), clients (client connections now, counted in
        connections too), client_connects (client connections started),
        adopted_total (connections adopt() handed over, in accepted_total
        too), deflate_connections (open with permessage-deflate now),
        messages_deflated (messages compressed, once each however many
        members got them), messages_inflated (compressed messages
        received); with
        a backplane: backplane_up (1 while both Redis
        connections are ready), backplane_published, backplane_received,
        backplane_reconnects, backplane_buffered (bytes waiting for Redis now),
        backplane_dropped (publishes that did not fit the buffer),
        backplane_channels (subscribed now), backplane_invalid,
        backplane_coalesced (messages of rooms with history held under load
        to share a flush),
        events_undelivered (events poll() answered itself because they did
        not convert). Safe to call
        from any thread."""
