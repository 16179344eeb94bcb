"""What a client is told before it connects: the URL, the request headers,
the TLS settings (:class:`TLS`), the core's per-connection options and the
reconnection policy (:class:`Policy`).

Everything is checked here, on the thread that creates the client (the
``WebSocket`` constructor, the call to ``connect()``), so that a bad value
fails where it was written, with an error naming it; the values checked
here are then immutable. The one piece that runs later is
:meth:`Policy.delay`, on the ``"roomcast-client"`` thread, between
reconnection attempts.

(The rules for each option value are the package's own, shared with the
server: :mod:`roomcast._options`.)
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from .. import _options

__all__ = [
    "TLS",
    "Headers",
    "Policy",
    "TLSOption",
    "Target",
    "connection_settings",
    "receive_queue_limit",
    "reconnect_policy",
    "rejoin_option",
]

Headers = Mapping[str, str] | Iterable[tuple[str, str]]

# Headers the client writes itself (Host may be replaced).
_OWN_HEADERS = frozenset(
    {
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "content-length",
    }
)


@dataclass(frozen=True)
class TLS:
    """TLS settings of a ``wss://`` connection (the URL's scheme decides
    whether TLS is used at all).

    * ``verify`` (default ``True``): the server's certificate chain must
      lead to a trusted root and the certificate must name the server; off,
      anything is accepted (for tests against a self-made certificate,
      never in production);
    * ``cafile``: a PEM file of roots to trust instead of the system's
      (``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` are honoured when it is not
      given);
    * ``server_hostname``: the name to check the certificate against and
      to send as SNI, when it is not the URL's host. An empty name raises
      :class:`ValueError` (it would turn the name check off; use
      ``verify=False`` to turn every check off).

    A dict with the same keys is accepted too. An :class:`ssl.SSLContext`
    is not: the TLS runs in the C core, on OpenSSL, outside Python's
    ``ssl`` module.
    """

    verify: bool = True
    cafile: str | None = None
    server_hostname: str | None = None

    def __post_init__(self) -> None:
        name = self.server_hostname
        if name is not None:
            # An empty name would turn the host-name check off while the
            # chain is still verified (Python's ssl refuses it too).
            if not isinstance(name, str):
                raise TypeError(f"server_hostname must be a str or None, not {type(name).__name__}")
            if not name or "\0" in name or len(name.encode("utf-8", "surrogatepass")) > 253:
                raise ValueError(f"server_hostname must be a host name of 1 to 253 bytes without NUL, not {name!r}")
        if self.cafile is not None and not isinstance(self.cafile, (str, os.PathLike)):
            raise TypeError(f"cafile must be a path or None, not {type(self.cafile).__name__}")


TLSOption = TLS | Mapping[str, Any] | None


@dataclass(frozen=True)
class Target:
    """Where a connection goes: from the URL, once."""

    host: str
    port: int
    resource: str  # path and query
    tls: bool


@dataclass(frozen=True)
class Policy:
    """When a dropped or failed connection is tried again."""

    reconnect: bool
    min_delay: float
    max_delay: float
    max_attempts: int | None

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter: a random time in
        [min_delay, min(max_delay, min_delay * 2**attempt)]."""
        ceiling = min(self.max_delay, self.min_delay * float(2 ** min(attempt, 30)))
        return self.min_delay + random.random() * max(0.0, ceiling - self.min_delay)


def _parse_url(url: str) -> Target:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL", ...
        raise ValueError(f"{url!r}: not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss") and "://" not in url:
        raise ValueError(f"{url!r}: not a URL; a WebSocket URL looks like ws://host:port/path")
    if scheme not in ("ws", "wss"):
        raise ValueError(f"{url!r}: the scheme must be ws:// or wss://, not {scheme or 'none'!r}")
    if parts.fragment or url.endswith("#"):
        raise ValueError(f"{url!r}: a WebSocket URL has no fragment (RFC 6455 3)")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url!r}: credentials in the URL are not sent; pass headers={{'Authorization': ...}}")
    host = parts.hostname
    if not host:
        raise ValueError(f"{url!r}: no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number in 0-65535") from None
    tls = scheme == "wss"
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    query = quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
    return Target(host, port or (443 if tls else 80), path + ("?" + query if query else ""), tls)


def _header_pairs(headers: Headers | None) -> tuple[list[tuple[str, str]], str | None]:
    """The extra request headers and the Host that replaces ours, if any."""
    if headers is None:
        return [], None
    items = headers.items() if isinstance(headers, Mapping) else headers
    pairs, host = [], None
    for name, value in items:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"headers must be str pairs, not {name!r}: {value!r}")
        lower = name.lower()
        if lower in _OWN_HEADERS:
            what = "pass protocols=" if lower == "sec-websocket-protocol" else "the client sets it"
            raise ValueError(f"header {name!r} cannot be given: {what}")
        if lower == "host":
            host = value
        else:
            pairs.append((name, value))
    return pairs, host


def _tls_settings(tls: bool, option: TLSOption, url: str) -> dict[str, Any]:
    if option is None:
        option = TLS()
    elif isinstance(option, Mapping):
        unknown = set(option) - {"verify", "cafile", "server_hostname"}
        if unknown:
            raise TypeError(f"unknown ssl option(s) {sorted(unknown)}: use verify, cafile, server_hostname")
        option = TLS(**option)
    elif not isinstance(option, TLS):
        raise TypeError(
            "ssl must be roomcast.TLS(verify=..., cafile=..., server_hostname=...) or a dict "
            f"with those keys, not {type(option).__name__}: TLS runs in the C core, so an "
            "ssl.SSLContext cannot be used"
        )
    if not tls:
        if option != TLS():
            raise ValueError(f"{url!r}: TLS options for a ws:// URL; use wss:// for TLS")
        return {}
    return {
        "tls": True,
        "verify": bool(option.verify),
        "cafile": None if option.cafile is None else os.fspath(option.cafile),
        "server_name": option.server_hostname,
    }


def connection_settings(
    url: str,
    protocols: str | Iterable[str] | None,
    headers: Headers | None,
    ssl: TLSOption,
    open_timeout: float,
    ping_interval: float | None,
    ping_timeout: float | None,
    max_message_size: int,
    compression: str | None = "deflate",
) -> tuple[Target, dict[str, Any]]:
    """The target and the keyword arguments of the core's ``connect``."""
    target = _parse_url(url)
    if isinstance(protocols, str):
        protocols = [protocols]
    offered = list(protocols or ())
    pairs, host_header = _header_pairs(headers)
    rules = _options.CLIENT
    options: dict[str, Any] = {
        "host_header": host_header,
        "headers": pairs,
        "protocols": offered,
        "handshake_timeout": rules["open_timeout"]("open_timeout", open_timeout),
        "ping_interval": rules["ping_interval"]("ping_interval", ping_interval),
        "ping_timeout": rules["ping_timeout"]("ping_timeout", ping_timeout),
        "max_message_size": rules["max_message_size"]("max_message_size", max_message_size),
        "compression": rules["compression"]("compression", compression),
    }
    options.update(_tls_settings(target.tls, ssl, url))
    return target, options


def reconnect_policy(reconnect: bool, min_delay: float, max_delay: float, max_attempts: int | None) -> Policy:
    rules = _options.CLIENT
    low = rules["min_delay"]("min_delay", min_delay)
    high = rules["max_delay"]("max_delay", max_delay)
    if high < low:
        raise ValueError(f"max_delay must be at least min_delay ({min_delay!r}), not {max_delay!r}")
    return Policy(bool(reconnect), low, high, rules["max_attempts"]("max_attempts", max_attempts))


def receive_queue_limit(max_receive_queue: int) -> int:
    """``max_receive_queue``, checked."""
    limit: int = _options.CLIENT["max_receive_queue"]("max_receive_queue", max_receive_queue)
    return limit


def rejoin_option(rejoin: bool, reconnect: bool) -> bool:
    """``rejoin``, checked: it rejoins on reconnection, so it needs
    ``reconnect=True``."""
    if not isinstance(rejoin, bool):
        raise TypeError(f"rejoin must be True or False, not {rejoin!r}")
    if rejoin and not reconnect:
        raise ValueError("rejoin=True needs reconnect=True: it sends roomcast:rejoin each time the client reconnects")
    return rejoin
