"""A shard worker process (the child's loop): runs handlers named ``module:function`` on JSON
arguments.

The gateway starts it as ``python -m shardshape.gateway.isolation.worker`` and talks to it over its
standard input and output in the JSON-lines protocol of :mod:`shardshape.gateway.isolation.protocol`
(never pickle): a ready line first, then one reply per task line, until end of input.

What a handler prints goes to standard error, because standard output carries the protocol.
The worker ignores Ctrl-C (the gateway decides when it stops) and exits when the gateway dies.

>>> reply = run_task({"id": 7, "handler": "math:hypot", "args": [3, 4], "kwargs": {}}, {})
>>> reply["id"], reply["ok"], reply["result"]
(7, True, 5.0)
>>> run_task({"id": 8, "handler": "math", "args": [], "kwargs": {}}, {})["message"]
"handler 'math' is not of the form 'module:function'"
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

from shardshape.gateway.isolation.protocol import read_line, ready_line, reply_line

MAX_TRACEBACK_CHARS = 8_192
_PARENT_POLL_S = 0.5


class HandlerPathError(ValueError):
    """A handler path that is not ``module:function`` or does not name a callable."""


def parse_handler(path: str) -> tuple[str, str]:
    """Split ``module:function``, or raise :class:`HandlerPathError` saying the expected form.

    >>> parse_handler("examples.app:export")
    ('examples.app', 'export')
    """
    module, sep, function = path.partition(":")
    if not sep or not module or not function.isidentifier():
        raise HandlerPathError(f"handler {path!r} is not of the form 'module:function'")
    return module, function


def load_handler(path: str, cache: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    """Import the function ``path`` names (once per worker)."""
    found = cache.get(path)
    if found is None:
        module, function = parse_handler(path)
        found = getattr(importlib.import_module(module), function, None)
        if not callable(found):
            raise HandlerPathError(f"handler {path!r}: {module} has no function {function!r}")
        cache[path] = found
    return found


def run_task(message: dict[str, Any], cache: dict[str, Callable[..., Any]]) -> dict[str, Any]:
    """Run one task message and build its reply (an error reply when the handler raises)."""
    task_id = message.get("id")
    try:
        handler = load_handler(message["handler"], cache)
        result = handler(*message.get("args", ()), **message.get("kwargs", {}))
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
    except (Exception, SystemExit) as exc:  # the reply carries the failure; the worker goes on
        return {
            "id": task_id,
            "ok": False,
            "error": type(exc).__name__,
            "message": str(exc),
            "traceback": traceback.format_exc()[-MAX_TRACEBACK_CHARS:],
        }
    return {"id": task_id, "ok": True, "result": result}


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """Answer task lines from ``requests`` on ``replies`` until end of input."""
    cache: dict[str, Callable[..., Any]] = {}
    replies.write(ready_line(os.getpid()))
    replies.flush()
    for line in requests:
        replies.write(reply_line(run_task(read_line(line), cache)))
        replies.flush()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    os._exit(1)


def main() -> None:
    # Keep the protocol on private copies of stdin/stdout; the handler's prints go to stderr.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    serve(requests, replies)


if __name__ == "__main__":
    main()
