"""The core's HTTP header blocks, read the same way on both sides.

The C core hands Python the headers of a request (server side) or of the
``101`` answer (client side) as one compact block, ``b"name:value\\n"`` per
header, names lower-cased and values trimmed by the core. This module is
the one reader of that block: :mod:`roomcast.websocket` (the server's
connections) and :mod:`roomcast.client` (the clients) both import it, so
neither side imports the other.

Pure functions, no state: they run on whichever thread calls them (the
server's asyncio loop, the clients' ``"roomcast-client"`` thread).
"""

from __future__ import annotations

__all__ = ["header_values", "parse_raw_headers"]


def parse_raw_headers(raw: bytes) -> list[tuple[str, str]]:
    """The core's compact header block (``b"name:value\\n"`` per header,
    names lower-cased) as (name, value) pairs, values latin-1 decoded."""
    pairs = []
    for line in raw.decode("latin-1").split("\n"):
        if line:
            name, _, value = line.partition(":")
            pairs.append((name, value))
    return pairs


def header_values(raw: bytes, name: str) -> list[str]:
    """Every value of header ``name`` (lower case) in the core's header
    block, in order, without parsing the other headers."""
    key = b"\n" + name.encode("latin-1") + b":"
    block = b"\n" + raw
    values = []
    at = block.find(key)
    while at >= 0:
        start = at + len(key)
        end = block.find(b"\n", start)
        if end < 0:
            end = len(block)
        values.append(block[start:end].decode("latin-1").strip())
        at = block.find(key, end)
    return values
