"""Route patterns (``/chat/{room}``, ``/user/{id:int}``) and the filling of
a callable's extra parameters from a connection's path parameters."""

from __future__ import annotations

import inspect
import re
import typing
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

# name -> (regex, converter); the same convertors as Starlette's routes.
_CONVERTORS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "str": (r"[^/]+", str),
    "path": (r".*", str),
    "int": (r"[0-9]+", int),
    "float": (r"[0-9]+(?:\.[0-9]+)?", float),
    "uuid": (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", uuid.UUID),
}
_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?}")


class ParamError(ValueError):
    """A path parameter that matches its pattern but does not convert (an
    ``{id:int}`` of more digits than ``int()`` takes): the request is
    answered HTTP 400."""


class Route:
    """A path pattern compiled to a regex; ``match`` takes the raw request
    path and returns the converted parameters, or None."""

    def __init__(self, pattern: str) -> None:
        if callable(pattern):
            raise TypeError('@server.websocket needs the path in parentheses: @server.websocket("/chat")')
        if not isinstance(pattern, str):
            raise TypeError(f"a route path is a str such as '/chat', not {type(pattern).__name__}")
        if not pattern.startswith("/"):
            raise ValueError(f"route path must start with '/': {pattern!r}")
        self.pattern = pattern
        self.converters: dict[str, Callable[[str], Any]] = {}
        regex, pos = "^", 0
        for m in _PARAM.finditer(pattern):
            name, conv = m.group(1), m.group(2) or "str"
            if conv not in _CONVERTORS:
                raise ValueError(f"unknown convertor {conv!r} in {pattern!r}")
            if name in self.converters:
                raise ValueError(f"duplicate parameter {name!r} in {pattern!r}")
            part, self.converters[name] = _CONVERTORS[conv]
            regex += re.escape(pattern[pos : m.start()]) + f"(?P<{name}>{part})"
            pos = m.end()
        self.regex = re.compile(regex + re.escape(pattern[pos:]) + "$")

    def match(self, raw_path: str) -> dict[str, Any] | None:
        """The converted parameters, None when the path does not match;
        raises :class:`ParamError` when it matches but a value does not
        convert."""
        m = self.regex.match(unquote(raw_path))
        if m is None:
            return None
        out = {}
        for k, v in m.groupdict().items():
            try:
                out[k] = self.converters[k](v)
            except (ValueError, OverflowError) as exc:
                raise ParamError(f"path parameter {k!r} of {self.pattern!r} does not convert ({exc})") from None
        return out


_SIMPLE_TYPES: dict[Any, Callable[[Any], Any]] = {int: int, float: float, str: str}
_SIMPLE_NAMES = {"int": int, "float": float, "str": str}


class Binder:
    """Fills the parameters of ``func`` that come after its first
    ``positional`` ones, by name, from a dict of path parameters, converting
    str values by the parameter's annotation when it is int, float or str.

    Built once per callable; ``bind`` runs per call and raises
    :class:`TypeError` for a required parameter that has no value and
    :class:`ValueError` for a value that does not convert."""

    __slots__ = ("names", "takes_all")

    def __init__(self, func: Callable[..., Any], positional: int) -> None:
        # (name, converter or None, required)
        self.names: list[tuple[str, Callable[[Any], Any] | None, bool]] = []
        self.takes_all = False
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):
            return
        hints = _annotations(func)
        skipped = 0
        for p in sig.parameters.values():
            if p.kind is p.VAR_POSITIONAL:
                return
            if p.kind is p.VAR_KEYWORD:
                self.takes_all = True
                continue
            if skipped < positional and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                skipped += 1
                continue
            conv = _SIMPLE_TYPES.get(hints.get(p.name))
            self.names.append((p.name, conv, p.default is p.empty))

    def __bool__(self) -> bool:
        return bool(self.names) or self.takes_all

    def required(self) -> list[str]:
        return [name for name, _, required in self.names if required]

    def bind(self, params: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = dict(params) if self.takes_all else {}
        for name, conv, required in self.names:
            if name in params:
                value = params[name]
                out[name] = conv(value) if conv is not None and isinstance(value, str) else value
            elif required:
                raise TypeError(f"no path parameter named {name!r}")
        return out


def _annotations(func: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations; string annotations that cannot be resolved
    still count when they name int, float or str."""
    try:
        return typing.get_type_hints(func)
    except Exception:
        raw = getattr(inspect.unwrap(func), "__annotations__", {}) or {}
        return {k: _SIMPLE_NAMES.get(v, v) if isinstance(v, str) else v for k, v in raw.items()}
