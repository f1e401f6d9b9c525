"""One worker process of a process-mode pool, seen from the gateway: spawn, feed, read, stop.

A worker is ``python -m shardshape.gateway.isolation.worker`` (the child's loop, see
:mod:`shardshape.gateway.isolation.worker`) with this interpreter's import path, so handlers
import in it as they do here. Task lines go in on its standard input; a thread of its own reads
its ready line and replies (:mod:`shardshape.gateway.isolation.protocol`) and, once the worker
exits, its return code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from shardshape.gateway.isolation.protocol import ProtocolError, is_ready, read_line

log = logging.getLogger("shardshape.gateway.isolation")

WORKER_MODULE = "shardshape.gateway.isolation.worker"


def worker_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """``environment`` with ``PYTHONPATH`` set to this interpreter's import path.

    >>> worker_environment({"HOME": "/home/a"})["PYTHONPATH"] == os.pathsep.join(
    ...     p for p in sys.path if p)
    True
    """
    return {**environment, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


class WorkerProcess:
    """A started worker: its pipes and the thread that reads it.

    Use :meth:`spawn`, then :meth:`listen` once.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.pid = process.pid
        self.input_closed = False
        self.thread: threading.Thread | None = None

    @classmethod
    def spawn(cls, environment: Mapping[str, str]) -> WorkerProcess:
        """Start a worker with ``environment`` (:func:`worker_environment`); raises OSError."""
        process = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=environment,
        )
        return cls(process)

    def listen(
        self,
        name: str,
        *,
        on_ready: Callable[[], None],
        on_reply: Callable[[dict[str, Any]], None],
        on_exit: Callable[[int], None],
        service: str,
    ) -> None:
        """Read the worker on a thread called ``name``: ``on_ready`` for its ready line,
        ``on_reply`` for each reply, then ``on_exit`` with its return code. A line outside the
        protocol kills the worker (``service`` names it in the log)."""
        self.thread = threading.Thread(
            target=self._read, args=(on_ready, on_reply, on_exit, service), name=name, daemon=True
        )
        self.thread.start()

    def _read(
        self,
        on_ready: Callable[[], None],
        on_reply: Callable[[dict[str, Any]], None],
        on_exit: Callable[[int], None],
        service: str,
    ) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                message = read_line(line)
            except ProtocolError:
                log.error("%s: worker %d wrote a non-protocol line", service, self.pid)
                self.process.kill()
                break
            if is_ready(message):
                on_ready()
            else:
                on_reply(message)
        on_exit(self.process.wait())

    def send(self, line: bytes) -> None:
        """Write a task line; a dead worker's failure is reported by its reader thread."""
        assert self.process.stdin is not None
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.write(line)
            self.process.stdin.flush()

    def close_input(self) -> None:
        """End of input: the worker exits after its current task."""
        if not self.input_closed:
            self.input_closed = True
            with contextlib.suppress(OSError, ValueError):
                self.process.stdin.close()  # type: ignore[union-attr]

    def stop(self, deadline: float) -> None:
        """Wait for the worker to exit, killing it at ``deadline`` (monotonic), and for its
        reader thread to report the exit."""
        try:
            self.process.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            self.process.kill()  # its reader thread fails the request it ran
            self.process.wait()
        if self.thread is not None:
            self.thread.join(5)
