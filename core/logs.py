"""Log output: plain text, or one JSON object a line with what is known of the system's state.

A JSON line holds the time, level, logger and message; the fields a log call passes in
``extra`` (``service``, ``shard``, ``key``, ``plan_version``, ``snapshot_version``...); the
fields of the innermost :func:`log_context`; and ``versions``, the shard snapshot and plan
version in force per service as last noted with :func:`note_versions` (a worker notes them as
it sees them on the routing and plans topics).

>>> import io
>>> stream = io.StringIO()
>>> handler = logging.StreamHandler(stream)
>>> handler.setFormatter(JsonFormatter(KnownVersions()))
>>> log = logging.getLogger("shardshape.doctest")
>>> log.addHandler(handler)
>>> log.propagate = False
>>> handler.formatter.versions.note("shop", snapshot=7, plan=3)
>>> with log_context(shard=2):
...     log.warning("shard %d is over its SLO", 2, extra={"plan_version": 3})
>>> line = json.loads(stream.getvalue())
>>> line["message"], line["shard"], line["plan_version"], line["versions"]
('shard 2 is over its SLO', 2, 3, {'shop': {'snapshot': 7, 'plan': 3}})
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any, Literal

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# What every LogRecord has; anything else on a record came from a call's ``extra``.
_STANDARD = {
    *logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
    "message",
    "asctime",
    "taskName",
}
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "shardshape_log_context", default=None
)


class KnownVersions:
    """The shard snapshot and plan version in force per service, as far as this process knows.

    >>> versions = KnownVersions()
    >>> versions.note("shop", snapshot=4)
    >>> versions.note("shop", plan=2)
    >>> versions.note("shop", snapshot=3)  # older than what is known: ignored
    >>> versions.as_dict()
    {'shop': {'snapshot': 4, 'plan': 2}}
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, dict[str, int]] = {}

    def note(self, service: str, *, snapshot: int | None = None, plan: int | None = None) -> None:
        with self._lock:
            known = self._versions.setdefault(service, {})
            for name, version in (("snapshot", snapshot), ("plan", plan)):
                if version is not None and version > known.get(name, -1):
                    known[name] = version

    def as_dict(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {service: dict(known) for service, known in self._versions.items()}


VERSIONS = KnownVersions()  # this process's


def note_versions(service: str, *, snapshot: int | None = None, plan: int | None = None) -> None:
    """Record the versions in force for ``service``; JSON log lines carry them from now on."""
    VERSIONS.note(service, snapshot=snapshot, plan=plan)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every JSON line logged inside the block (this thread or task only)."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object a line; see the module docstring for the fields."""

    def __init__(self, versions: KnownVersions = VERSIONS) -> None:
        super().__init__()
        self.versions = versions

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_context.get() or {})
        line.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD)
        versions = self.versions.as_dict()
        if versions:
            line["versions"] = versions
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter of ``log_format`` (``SHARDSHAPE_LOG_FORMAT``)."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str, log_format: LogFormat, stream: IO[str] = sys.stderr) -> None:
    """Set up the root logger of a process that Faust does not set up (CLI, gateway)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=LEVELS[level], handlers=[handler], force=True)


def use_log_format(logger: logging.Logger, log_format: LogFormat) -> None:
    """Give every handler of ``logger`` (a root logger set up by Faust) the JSON formatter."""
    if log_format == "json":
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())
