"""Plain HTTP answers: a directory of static files, 404 and 426.

Enough to serve a demo page and a JavaScript client, not a web server:
GET and HEAD only, whole files in one response, no ranges, no caching
headers beyond the content type."""

from __future__ import annotations

import mimetypes
import os
from urllib.parse import quote, unquote

Response = tuple[int, list[tuple[str, str]], bytes]
# Files up to this size are read on the event loop; larger ones in a thread.
SMALL_FILE = 256 * 1024


def is_small(real: str) -> bool:
    """Whether a file is small enough to read on the event loop (one that
    cannot be measured too: file_response answers 404 at once)."""
    try:
        return os.path.getsize(real) <= SMALL_FILE
    except OSError:
        return True


def text_response(status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return status, [("Content-Type", "text/plain; charset=utf-8"), *(headers or [])], text.encode()


class StaticFiles:
    """Files under ``directory`` served at ``url_prefix``."""

    def __init__(self, url_prefix: str, directory: str | os.PathLike[str]) -> None:
        if not url_prefix.startswith("/"):
            raise ValueError(f"url_prefix must start with '/': {url_prefix!r}")
        self.prefix = url_prefix.rstrip("/")
        self.root = os.path.realpath(directory)
        if not os.path.isdir(self.root):
            raise ValueError(f"not a directory: {directory!r}")

    def lookup(self, raw_path: str) -> None | Response | str:
        """None if the path is outside the prefix; a ready response (a 404
        or a redirect); else the real path of the file to send."""
        if raw_path != self.prefix and not raw_path.startswith(self.prefix + "/"):
            return None
        rel = raw_path[len(self.prefix) :]
        parts = []
        # Decode per segment so that an encoded "/" cannot build a path,
        # and refuse anything that could climb out of the directory.
        for segment in rel.split("/"):
            try:
                name = unquote(segment, errors="strict")
            except UnicodeDecodeError:
                return text_response(404, "Not Found")
            if name in ("", "."):
                continue
            if name == ".." or "/" in name or "\\" in name or "\0" in name:
                return text_response(404, "Not Found")
            parts.append(name)
        real = os.path.realpath(os.path.join(self.root, *parts))
        if real != self.root and not real.startswith(self.root + os.sep):
            return text_response(404, "Not Found")  # a symlink that leads out
        if os.path.isdir(real):
            if not raw_path.endswith("/"):
                return 301, [("Location", self._canonical(parts))], b""
            real = os.path.join(real, "index.html")
        if not os.path.isfile(real):
            return text_response(404, "Not Found")
        return real

    def _canonical(self, parts: list[str]) -> str:
        """The directory's own path, with a final "/", built from its
        decoded segments: never the request's path, in which "//host"
        would make a browser go to another host (a protocol-relative
        reference, RFC 3986 4.2), nor with empty or dot segments."""
        return self.prefix + "/" + "".join(quote(name, safe="") + "/" for name in parts)


def file_response(real: str) -> Response:
    """Reads the file (blocking) and builds its response; 404 if it has
    gone or cannot be read."""
    try:
        with open(real, "rb") as f:
            body = f.read()
    except OSError:
        return text_response(404, "Not Found")
    ctype, encoding = mimetypes.guess_type(real)
    if ctype is None or encoding is not None:
        ctype = "application/octet-stream"
    elif ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
        ctype += "; charset=utf-8"
    return 200, [("Content-Type", ctype), ("X-Content-Type-Options", "nosniff")], body
