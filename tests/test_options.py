"""Options are checked when they are written (issue 12, items 13 and 14).

Every constructor that takes options refuses a bad value at once, with an
error that names the option and shows the value: ``Server`` (and ``App``
and the compat servers, which pass their options on), ``roomcast.connect``
(when called, not when awaited), ``roomcast.WebSocket`` and ``TLS``.
``None`` means "off" wherever 0 does.
"""

import re

import pytest

import roomcast
from roomcast import App, Server
from roomcast.compat import nwebsocket, pyn
from support import wsraw

NAN = float("nan")
INF = float("inf")

# (options, exception, the message's start). The message names the option
# and ends with the value as written.
SERVER_BAD = [
    ({"max_message_size": -1}, ValueError, "max_message_size must be a positive integer, not -1"),
    ({"max_message_size": 0}, ValueError, "max_message_size must be a positive integer, not 0"),
    ({"max_message_size": 1.5}, TypeError, "max_message_size must be a positive integer, not 1.5"),
    ({"max_message_size": True}, TypeError, "max_message_size must be a positive integer, not True"),
    ({"max_message_size": "1M"}, TypeError, "max_message_size must be a positive integer, not '1M'"),
    ({"max_queue_bytes": 0}, ValueError, "max_queue_bytes must be a positive integer, not 0"),
    ({"max_queue_bytes": None}, TypeError, "max_queue_bytes must be a positive integer, not None"),
    ({"ping_interval": -5}, ValueError, "ping_interval must be a number of seconds >= 0"),
    ({"ping_interval": NAN}, ValueError, "ping_interval must be a number of seconds >= 0"),
    ({"ping_interval": INF}, ValueError, "ping_interval must be a number of seconds >= 0"),
    ({"ping_interval": 1e12}, ValueError, "ping_interval must be a number of seconds >= 0"),
    ({"ping_interval": "20"}, TypeError, "ping_interval must be a number of seconds >= 0"),
    ({"ping_timeout": -1}, ValueError, "ping_timeout must be a number of seconds >= 0"),
    ({"handshake_timeout": 0}, ValueError, "handshake_timeout must be a number of seconds > 0"),
    ({"handshake_timeout": None}, TypeError, "handshake_timeout must be a number of seconds > 0"),
    ({"close_timeout": -0.5}, ValueError, "close_timeout must be a number of seconds >= 0"),
    ({"max_header_bytes": 63}, ValueError, "max_header_bytes must be an integer from 64 to 60000, not 63"),
    ({"max_header_bytes": 60001}, ValueError, "max_header_bytes must be an integer from 64 to 60000, not 60001"),
    ({"max_headers": 0}, ValueError, "max_headers must be an integer from 1 to 128, not 0"),
    ({"max_headers": 129}, ValueError, "max_headers must be an integer from 1 to 128, not 129"),
    ({"idle_timeout": -1}, ValueError, "idle_timeout must be a number of seconds >= 0"),
    ({"max_connections": 0}, ValueError, "max_connections must be a positive integer or None, not 0"),
    ({"max_connections": -3}, ValueError, "max_connections must be a positive integer or None, not -3"),
    ({"slow_consumer": "block"}, ValueError, "slow_consumer must be 'close' or 'drop', not 'block'"),
    ({"origins": "https://a.example"}, TypeError, "origins must be a list of str"),
    ({"origins": [b"https://a.example"]}, TypeError, "origins must be a list of str"),
    ({"subprotocols": "chat"}, TypeError, "subprotocols must be a list of str"),
    ({"subprotocols": [1]}, TypeError, "subprotocols must be a list of str"),
    ({"backlog": 0}, ValueError, "backlog must be an integer from 1 to 2147483647, not 0"),
    ({"backlog": 2**31}, ValueError, "backlog must be an integer from 1 to 2147483647, not 2147483648"),
    ({"max_receive_queue": 0}, ValueError, "max_receive_queue must be a positive integer, not 0"),
    ({"max_pending_bytes": -1}, ValueError, "max_pending_bytes must be a positive integer, not -1"),
    ({"backplane": 6379}, TypeError, "backplane must be a URL str or None, not int"),
    ({"backplane_prefix": "a\0b"}, ValueError, "backplane_prefix must be a str without NUL"),
    ({"backplane_prefix": "p" * 201}, ValueError, "backplane_prefix must be a str without NUL of at most 200 bytes"),
    ({"backplane_prefix": None}, TypeError, "backplane_prefix must be a str"),
    ({"backplane_buffer": -1}, ValueError, "backplane_buffer must be a non-negative integer, not -1"),
    ({"presence_ttl": 0}, ValueError, "presence_ttl must be a number of seconds > 0"),
]


def ids(case):
    return "-".join(f"{k}={v!r}"[:40] for k, v in case[0].items())


@pytest.mark.parametrize("options, exc, message", SERVER_BAD, ids=[ids(c) for c in SERVER_BAD])
@pytest.mark.parametrize("make", [Server, App, lambda **o: pyn.WebSocket(**o)], ids=["Server", "App", "pyn"])
def test_bad_server_option_is_refused_at_construction(make, options, exc, message):
    """Before, most of these constructed and run() failed with "sizes must
    be positive (...)", naming neither the option nor the value."""
    with pytest.raises(exc) as info:
        make(**options)
    assert str(info.value).startswith(message)
    value = next(iter(options.values()))
    if not isinstance(value, str) and "backplane" not in str(info.value):
        assert str(info.value).endswith(repr(value)[:77])


def test_backplane_url_is_not_shown_in_a_type_error():
    with pytest.raises(TypeError) as info:
        Server(backplane=b"redis://:hunter2@host")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("port", [-1, 65536, "8000", 80.0])
async def test_bad_port_is_refused_by_serve(port):
    with pytest.raises(
        (ValueError, TypeError), match=re.escape(f"port must be an integer from 0 to 65535, not {port!r}")
    ):
        async with Server().serve("127.0.0.1", port):
            pass


@pytest.mark.parametrize("interval, pinged", [(0.3, True), (None, False), (0, False)])
def test_none_or_zero_ping_interval_sends_no_ping(interval, pinged):
    """ping_interval=None raised a float() TypeError while the clients
    take None for "no pings"; now None and 0 both mean no pings. The core
    looks every 250 ms, so with 0.3 s a silent client is pinged within
    0.55 s (the control case); 1.5 s of silence without a ping is three
    times that."""
    server = wsraw.echo_server(ping_interval=interval, idle_timeout=None)
    with wsraw.ServerThread(server) as running:
        with wsraw.WSClient.connect(running.port, "/echo") as client:
            client.sock.settimeout(1.5)
            try:
                got = client.recv_frame().opcode == wsraw.OP_PING
            except TimeoutError:
                got = False
            client.sock.settimeout(wsraw.TIMEOUT)
            client.send_text("still open")
            while (frame := client.recv_frame()).opcode == wsraw.OP_PING:
                pass
            assert frame.payload == b"still open"
    assert got == pinged


# -- the clients ---------------------------------------------------------------

CLIENT_BAD = [
    ({"open_timeout": 0}, ValueError, "open_timeout must be a number of seconds > 0"),
    ({"open_timeout": None}, TypeError, "open_timeout must be a number of seconds > 0"),
    ({"open_timeout": NAN}, ValueError, "open_timeout must be a number of seconds > 0"),
    ({"ping_interval": -1}, ValueError, "ping_interval must be a number of seconds >= 0"),
    ({"ping_timeout": "5"}, TypeError, "ping_timeout must be a number of seconds >= 0"),
    ({"max_message_size": 0}, ValueError, "max_message_size must be a positive integer, not 0"),
    ({"max_message_size": 2.0}, TypeError, "max_message_size must be a positive integer, not 2.0"),
    ({"max_receive_queue": -1}, ValueError, "max_receive_queue must be a positive integer, not -1"),
    ({"max_receive_queue": "big"}, TypeError, "max_receive_queue must be a positive integer, not 'big'"),
    ({"min_delay": 0}, ValueError, "min_delay must be a number of seconds > 0"),
    ({"max_delay": INF}, ValueError, "max_delay must be a number of seconds > 0"),
    ({"min_delay": 2, "max_delay": 1}, ValueError, "max_delay must be at least min_delay (2), not 1"),
    ({"max_attempts": 0}, ValueError, "max_attempts must be a positive integer or None, not 0"),
    ({"ssl": {"server_hostname": ""}}, ValueError, "server_hostname must be a host name"),
    ({"ssl": {"server_hostname": 1}}, TypeError, "server_hostname must be a str or None, not int"),
    ({"ssl": {"cafile": 1}}, TypeError, "cafile must be a path or None, not int"),
]


@pytest.mark.parametrize("options, exc, message", CLIENT_BAD, ids=[ids(c) for c in CLIENT_BAD])
async def test_bad_client_option_is_refused_when_connect_is_called(options, exc, message):
    """connect() checks when it is called: before, several options were
    checked only when the result was awaited, and max_receive_queue or
    the delays' types not at all."""
    with pytest.raises(exc) as info:
        roomcast.connect("wss://127.0.0.1:9/", **options)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("options, exc, message", CLIENT_BAD, ids=[ids(c) for c in CLIENT_BAD])
def test_bad_client_option_is_refused_by_websocket(options, exc, message):
    with pytest.raises(exc) as info:
        roomcast.WebSocket("wss://127.0.0.1:9/", **options)
    assert str(info.value).startswith(message)


def test_nwebsocket_names_max_payload():
    with pytest.raises(ValueError, match=r"^maxPayload must be a positive integer, not -1$"):
        nwebsocket.WebSocket("ws://127.0.0.1:9/", {"maxPayload": -1})
    with pytest.raises(TypeError, match=r"^maxPayload must be a positive integer, not 'x'$"):
        nwebsocket.WebSocket("ws://127.0.0.1:9/", {"maxPayload": "x"})


# -- TLS -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: roomcast.TLS(server_hostname=""),
        lambda: roomcast.TLS(verify=True, cafile=None, server_hostname=""),
        lambda: roomcast.connect("wss://127.0.0.1:9/", ssl={"server_hostname": ""}),
        lambda: roomcast.WebSocket("wss://127.0.0.1:9/", ssl={"server_hostname": ""}),
    ],
    ids=["TLS", "TLS-all", "connect-dict", "WebSocket-dict"],
)
def test_empty_server_hostname_is_refused(make):
    """Issue 12, item 14: an empty server_hostname turned the host-name
    check off while the chain was still verified, so any certificate from
    a trusted CA passed for any host. Python's ssl refuses an empty name;
    so does TLS."""
    with pytest.raises(ValueError, match="server_hostname must be a host name of 1 to 253 bytes"):
        make()


def test_server_hostname_accepts_a_name():
    assert roomcast.TLS(server_hostname="example.com").server_hostname == "example.com"


def test_core_refuses_an_empty_server_name_too():
    """The binding does not rely on TLS's check: an empty name would leave
    the certificate's name unchecked, whoever passes it."""
    from roomcast import _core

    core = _core.Core()
    with pytest.raises(ValueError, match="server_name must not be empty"):
        core.connect("127.0.0.1", 443, "/", tls=True, verify=True, server_name="")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_message_size": -1}, "max_message_size must be in 1..9223372036854775807, not -1"),
        ({"max_headers": 500}, "max_headers must be in 1..128, not 500"),
        ({"ping_interval": NAN}, "ping_interval must be a number of seconds in 0..1e9, not nan"),
        ({"idle_timeout": INF}, "idle_timeout must be a number of seconds in 0..1e9, not inf"),
    ],
)
def test_core_names_a_bad_option(options, message):
    """The binding's own check, for a caller that skips the package's: it
    said "sizes must be positive (...)" and let NaN through, which the
    core turned into milliseconds (undefined behaviour in C)."""
    from roomcast import _core

    with pytest.raises(ValueError, match=re.escape(message)):
        _core.Core(**options)
