"""The pipe protocol between a process-mode pool and its workers: JSON lines, never pickle.

A worker talks over its standard input and output, one JSON object per line:

- the worker first writes ``{"ready": <pid>}``;
- the pool sends ``{"id": 1, "handler": "pkg.mod:func", "args": [...], "kwargs": {...}}``;
- the worker answers ``{"id": 1, "ok": true, "result": ...}`` or ``{"id": 1, "ok": false,
  "error": "ValueError", "message": "...", "traceback": "..."}``;
- end of input makes it exit, after the task it is running.

Both sides build and read their lines here; only orjson is imported, so a worker stays light.

>>> task_line(1, "math:hypot", (3, 4), {})
b'{"id":1,"handler":"math:hypot","args":[3,4],"kwargs":{}}\\n'
>>> reply_line({"id": 1, "ok": True, "result": 5.0})
b'{"id":1,"ok":true,"result":5.0}\\n'
>>> is_ready(read_line(ready_line(42)))
True
"""

from __future__ import annotations

from typing import Any

import orjson

ProtocolError = orjson.JSONDecodeError


def ready_line(pid: int) -> bytes:
    """The worker's first line: it has started and takes tasks."""
    return orjson.dumps({"ready": pid}) + b"\n"


def task_line(task_id: int, handler: str, args: Any, kwargs: Any) -> bytes:
    """One task for a worker; raises :class:`TypeError` saying so when an argument is not JSON.

    >>> task_line(2, "math:hypot", (b"raw",), {})
    Traceback (most recent call last):
    ...
    TypeError: arguments of math:hypot must be JSON: Type is not JSON serializable: bytes
    """
    try:
        line = orjson.dumps({"id": task_id, "handler": handler, "args": args, "kwargs": kwargs})
    except TypeError as exc:
        raise TypeError(f"arguments of {handler} must be JSON: {exc}") from None
    return line + b"\n"


def reply_line(reply: dict[str, Any]) -> bytes:
    """A worker's answer; a result that is not JSON becomes an error reply naming its type.

    >>> reply_line({"id": 3, "ok": True, "result": {1, 2}})
    b'{"id":3,"ok":false,"error":"TypeError","message":"the handler returned a set, ...}\\n'
    """
    try:
        return orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
    except TypeError as exc:
        kind = type(reply.get("result")).__name__
        return (
            orjson.dumps(
                {
                    "id": reply.get("id"),
                    "ok": False,
                    "error": "TypeError",
                    "message": f"the handler returned a {kind}, which is not JSON: {exc}",
                }
            )
            + b"\n"
        )


def read_line(line: bytes) -> dict[str, Any]:
    """One line of either side; raises :data:`ProtocolError` when it is not JSON."""
    return orjson.loads(line)


def is_ready(message: dict[str, Any]) -> bool:
    """Whether a worker's message is its ready line (else it is a reply)."""
    return "ready" in message
