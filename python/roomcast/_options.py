"""The checking of option values, one table per constructor.

Every constructor that takes options (:class:`~roomcast.Server`, and
through it :class:`~roomcast.App` and the compat servers; the clients)
checks them all when it is called, so that a bad value fails where it was
written, with an error that names the option and the value:
``ValueError: max_message_size must be a positive integer, not -1``. A
value of the wrong type raises :class:`TypeError`, one out of range
:class:`ValueError`. ``bool`` is refused where a number is asked for
(``True`` bytes is a typo, not a size).

Wherever 0 turns a feature off (pings, the ping timeout, the idle timeout),
``None`` does too: the checked value is then 0.
"""

from __future__ import annotations

import math
import operator
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# Seconds the core can turn into milliseconds and add to a clock without
# overflow (about 31 years): a larger timeout is a mistake, not a wish.
MAX_SECONDS = 1e9

Rule = Callable[[str, Any], Any]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(kind: type[Exception], name: str, what: str, value: Any) -> Exception:
    return kind(f"{name} must be {what}, not {_shown(value)}")


def integer(minimum: int = 1, maximum: int = sys.maxsize, *, optional: bool = False) -> Rule:
    """An int in [minimum, maximum]; with optional, None too."""
    if maximum < sys.maxsize:
        what = f"an integer from {minimum} to {maximum}"
    else:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
    if optional:
        what += " or None"

    def check(name: str, value: Any) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool):
            raise _fail(TypeError, name, what, value)
        try:
            number = operator.index(value)
        except TypeError:
            raise _fail(TypeError, name, what, value) from None
        if not minimum <= number <= maximum:
            raise _fail(ValueError, name, what, value)
        return number

    return check


def seconds(*, off: bool = False, zero: bool = False) -> Rule:
    """A finite number of seconds, > 0; with zero, 0 too; with off, 0 and
    None (both mean off, and give 0.0)."""
    if off:
        what = "a number of seconds >= 0 (0 or None: off)"
    elif zero:
        what = "a number of seconds >= 0"
    else:
        what = "a number of seconds > 0"

    def check(name: str, value: Any) -> float:
        if value is None and off:
            return 0.0
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(TypeError, name, what, value)
        number = float(value)
        low_ok = number >= 0 if (off or zero) else number > 0
        if not (low_ok and math.isfinite(number)) or number > MAX_SECONDS:
            raise _fail(ValueError, name, what + f" and at most {MAX_SECONDS:,.0f}", value)
        return number

    return check


def choice(*choices: str, optional: bool = False) -> Rule:
    what = " or ".join(repr(c) for c in choices) + (" or None" if optional else "")

    def check(name: str, value: Any) -> str | None:
        if value is None and optional:
            return None
        if value not in choices or not isinstance(value, str):
            raise _fail(ValueError, name, what, value)
        return value

    return check


def names(*, allow_none: bool = False, optional: bool = False) -> Rule:
    """A collection of str (and None when allow_none) but not one str; with
    optional, None for the whole. Gives a tuple."""
    what = "a list of str" + (" or None items" if allow_none else "") + (", or None" if optional else "")

    def check(name: str, value: Any) -> tuple[Any, ...] | None:
        if value is None and optional:
            return None
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise _fail(TypeError, name, what + " (not one string)", value)
        items = tuple(value)
        for item in items:
            if not (isinstance(item, str) or (item is None and allow_none)):
                raise _fail(TypeError, name, what, value)
        return items

    return check


def text(max_bytes: int, *, optional: bool = False) -> Rule:
    """A str without NUL of at most max_bytes bytes in UTF-8."""
    what = f"a str without NUL of at most {max_bytes} bytes" + (" or None" if optional else "")

    def check(name: str, value: Any) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise _fail(TypeError, name, what, value)
        if "\0" in value or len(value.encode("utf-8", "surrogatepass")) > max_bytes:
            raise _fail(ValueError, name, what, value)
        return value

    return check


def secret_url(name: str, value: Any) -> str | None:
    """None or a str; its value is never shown (it may hold a password)."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a URL str or None, not {type(value).__name__}")
    return value


def path(name: str, value: Any) -> str | None:
    """None, or a file's path (str or os.PathLike) as a str."""
    if value is None:
        return None
    try:
        text: str = os.fsdecode(os.fspath(value))
    except TypeError:
        raise _fail(TypeError, name, "a path (str or os.PathLike) or None", value) from None
    if not text or "\0" in text:
        raise _fail(ValueError, name, "a path to a file", value)
    return text


def secret(name: str, value: Any) -> str | None:
    """None or a str (or bytes, decoded as UTF-8); never shown."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if not isinstance(value, str) or "\0" in value:
        raise TypeError(f"{name} must be a str without NUL or None, not {type(value).__name__}")
    return value


def url_path(name: str, value: Any) -> str | None:
    """None, or a URL path: starts with "/", no query, fragment or space."""
    what = "a URL path starting with '/' (no query, fragment or space) or None"
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(TypeError, name, what, value)
    if not value.startswith("/") or any(ch in value for ch in "?# \t\r\n\0"):
        raise _fail(ValueError, name, what, value)
    return value


def check_all(rules: Mapping[str, Rule], values: Mapping[str, Any]) -> dict[str, Any]:
    """Every value checked by the rule of its name; the checked values."""
    return {name: rule(name, values[name]) for name, rule in rules.items()}


PORT = integer(0, 65535)

# Server (App and the compat servers pass their options on to it). The
# bounds of the handshake's limits are the core's.
SERVER: dict[str, Rule] = {
    "max_message_size": integer(1),
    "max_queue_bytes": integer(1),
    "ping_interval": seconds(off=True),
    "ping_timeout": seconds(off=True),
    "handshake_timeout": seconds(),
    "close_timeout": seconds(zero=True),
    "max_header_bytes": integer(64, 60000),
    "max_headers": integer(1, 128),
    "idle_timeout": seconds(off=True),
    "max_connections": integer(1, optional=True),
    "slow_consumer": choice("close", "drop"),
    "origins": names(allow_none=True, optional=True),
    "subprotocols": names(),
    "backlog": integer(1, 2**31 - 1),
    "max_receive_queue": integer(1),
    "max_pending_bytes": integer(1),
    "backplane": secret_url,
    "backplane_prefix": text(200),
    "backplane_buffer": integer(0),
    "presence_ttl": seconds(),
    "compression": choice("deflate", optional=True),
    "compression_threshold": integer(0),
    # TLS, under uvicorn's names; the files are read by the core
    # (check_tls), which names the file in its errors.
    "ssl_certfile": path,
    "ssl_keyfile": path,
    "ssl_keyfile_password": secret,
    "ssl_ca_certs": path,
    "ssl_cert_reqs": integer(0, 2),
    # Prometheus' scrapes (roomcast._metrics), answered by the server itself.
    "metrics_path": url_path,
}

# The clients (roomcast.connect, roomcast.WebSocket).
CLIENT: dict[str, Rule] = {
    "open_timeout": seconds(),
    "ping_interval": seconds(off=True),
    "ping_timeout": seconds(off=True),
    "max_message_size": integer(1),
    "max_receive_queue": integer(1),
    "min_delay": seconds(),
    "max_delay": seconds(),
    "max_attempts": integer(1, optional=True),
    "compression": choice("deflate", optional=True),
}
