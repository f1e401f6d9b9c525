"""Request types of requests outside an ASGI router: the sidecar's and WSGI apps'.

A request type is ``METHOD /template``. A framework's own router (``resolve``: Flask's URL
map, Django's resolver) answers first where there is one; templates given (a routes file,
``"GET /items/{id}"``) match next, segment by segment (``{name}`` is one segment,
``{name:path}`` the rest of the path, ``*`` as the method any method); a path no template
matches is normalised: segments that look like ids (numbers, UUIDs, long hex, long tokens
mixing letters and digits) become ``{id}``. Profiles need few, stable request types, so the
names made are bounded: past ``max_routes`` distinct ones, a new one is ``METHOD <other>``.

>>> names = RouteNames(["GET /items/{item}", "* /files/{rest:path}"])
>>> names("GET", "/items/42"), names("DELETE", "/files/a/b.txt")
('GET /items/{item}', 'DELETE /files/{rest:path}')
>>> names("POST", "/orders/9f1c2d3e4b5a69788796a5b4c3d2e1f0/lines/7")
'POST /orders/{id}/lines/{id}'
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path

OTHER = "<other>"
UNMATCHED = "<unmatched>"
_CACHE_SIZE = 4_096
_ID_SEGMENT = re.compile(
    r"""
    \d+                                                   # a number
    | [0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}  # a UUID
    | [0-9a-fA-F]{16,}                                    # long hex (hashes, object ids)
    | (?=[A-Za-z_-]*\d)(?=[\d_-]*[A-Za-z])[A-Za-z0-9_-]{20,}  # a long token of letters and digits
    """,
    re.VERBOSE,
)
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}$")


class RoutesFileError(ValueError):
    """A routes file that cannot be read; the message names the file and the fix."""


def normalise_path(path: str) -> str:
    """``path`` with each id-like segment replaced by ``{id}``.

    >>> normalise_path("/users/1234/avatar")
    '/users/{id}/avatar'
    >>> normalise_path("/keys/123e4567-e89b-12d3-a456-426614174000")
    '/keys/{id}'
    >>> normalise_path("/blobs/sha/4f3a9c0d2e1b7a6f")
    '/blobs/sha/{id}'
    >>> normalise_path("/sessions/aZ3kP9qL2mX8vB1nC7dR0e/v2/status")
    '/sessions/{id}/v2/status'
    """
    return "/".join(
        "{id}" if segment and _ID_SEGMENT.fullmatch(segment) else segment
        for segment in path.split("/")
    )


class _Template:
    __slots__ = ("method", "name", "segments", "tail")

    def __init__(self, spec: str) -> None:
        method, _, path = spec.strip().partition(" ")
        path = path.strip()
        if not method or not path.startswith("/"):
            raise ValueError(
                f"route {spec!r} is not 'METHOD /path' (e.g. \"GET /items/{{id}}\", '*' for any "
                "method)"
            )
        self.method = method.upper()
        self.segments: list[str | None] = []  # None: one segment of any value
        self.tail = False
        parts = path.strip("/").split("/") if path.strip("/") else []
        for i, part in enumerate(parts):
            param = _PARAM.match(part)
            if param and param.group(2):
                if i != len(parts) - 1:
                    raise ValueError(f"route {spec!r}: a {{name:path}} parameter must come last")
                self.tail = True
            else:
                self.segments.append(None if param else part)
        self.name = path

    def matches(self, method: str, parts: list[str]) -> bool:
        if self.method not in ("*", method):
            return False
        n = len(self.segments)
        if len(parts) < n or (len(parts) > n and not self.tail) or (self.tail and len(parts) == n):
            return False
        return all(s is None or s == p for s, p in zip(self.segments, parts, strict=False))


class RouteNames:
    """``names(method, path)``: the request type of a request (see the module docstring).

    Parameters
    ----------
    templates
        ``"METHOD /path/{param}"`` strings, tried in order.
    max_routes
        Most distinct request types made (``SHARDSHAPE_GATEWAY_MAX_ROUTES``).
    resolve
        ``resolve(method, path)``: the template of the framework route that matches, ``None``
        where there is none (the request type is then ``METHOD <unmatched>``), or raises
        ``LookupError`` to leave the path to the templates and normalisation.
    """

    def __init__(
        self,
        templates: Iterable[str] = (),
        max_routes: int = 1_000_000,
        resolve: Callable[[str, str], str | None] | None = None,
    ) -> None:
        if max_routes < 1:
            raise ValueError(f"max_routes must be at least 1, got {max_routes}")
        self.templates = [_Template(spec) for spec in templates]
        self.resolve = resolve
        self.max_routes = max_routes
        self._names: set[str] = set()
        self._cache: dict[tuple[str, str], str] = {}

    @classmethod
    def from_file(cls, path: str | Path, max_routes: int = 1_000_000) -> RouteNames:
        """Templates from a TOML file: ``routes = ["GET /items/{id}", ...]``."""
        try:
            data = tomllib.loads(Path(path).read_text())
            routes = data["routes"]
            if not isinstance(routes, list) or not all(isinstance(r, str) for r in routes):
                raise TypeError("routes must be a list of strings")
            return cls(routes, max_routes)
        except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            raise RoutesFileError(
                f"cannot read routes from {path}: {exc!s}; write a TOML file with one list, "
                'routes = ["GET /items/{id}", "POST /orders", "* /files/{rest:path}"]'
            ) from None

    def __call__(self, method: str, path: str) -> str:
        key = (method, path)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        name = f"{method} {self._template(method, path)}"
        if name not in self._names:
            if len(self._names) >= self.max_routes:
                name = f"{method} {OTHER}"
            else:
                self._names.add(name)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = name
        return name

    def _template(self, method: str, path: str) -> str:
        if self.resolve is not None:
            with contextlib.suppress(LookupError):
                return self.resolve(method, path) or UNMATCHED
        if self.templates:
            parts = path.strip("/").split("/") if path.strip("/") else []
            for template in self.templates:
                if template.matches(method, parts):
                    return template.name
        return normalise_path(path)
