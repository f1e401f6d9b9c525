"""The one way tests wait: ask again until the condition holds, never sleep for a guessed time.

A test that needs something to have happened (a worker counted every event, a log line was
written, a process is gone) waits for exactly that, and fails naming what it waited for. A test
that needs something *not* to have happened waits for what shows it is over (offsets committed,
a count reached) and then checks the exact value.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Generic, NamedTuple, TypeVar

import pytest

T = TypeVar("T")

# A condition read over HTTP or from a file may fail while the other side starts.
TRANSIENT: tuple[type[Exception], ...] = (OSError, KeyError)


class Polled(NamedTuple, Generic[T]):
    """The last answer of a condition, and the transient error it raised instead, if any."""

    value: T | None
    error: Exception | None


def poll(
    check: Callable[[], T],
    timeout_s: float,
    *,
    every_s: float = 0.1,
    ignoring: tuple[type[Exception], ...] = TRANSIENT,
) -> Polled[T]:
    """Ask ``check`` every ``every_s`` until it answers something true or ``timeout_s`` passes
    (then once more); its last answer. An error of ``ignoring`` counts as a no."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            polled = Polled(check(), None)
        except ignoring as error:
            polled = Polled(None, error)
        if polled.value or time.monotonic() >= deadline:
            return polled
        time.sleep(every_s)


def wait_until(
    check: Callable[[], T],
    timeout_s: float,
    what: str,
    *,
    every_s: float = 0.1,
    ignoring: tuple[type[Exception], ...] = TRANSIENT,
    explain: Callable[[], str] | None = None,
) -> T:
    """The first true answer of ``check`` within ``timeout_s``; else fail naming ``what``, the
    last answer and ``explain()`` (a log tail, say)."""
    polled = poll(check, timeout_s, every_s=every_s, ignoring=ignoring)
    if not polled.value:
        _fail(what, timeout_s, polled, explain)
    return polled.value  # type: ignore[return-value]


async def until(
    check: Callable[[], T | Awaitable[T]],
    timeout_s: float,
    what: str,
    *,
    every_s: float = 0.05,
    ignoring: tuple[type[Exception], ...] = TRANSIENT,
    explain: Callable[[], str] | None = None,
) -> T:
    """:func:`wait_until` inside a coroutine: it sleeps with ``asyncio``, so an app served on
    the same event loop answers on while the test waits; ``check`` may return an awaitable."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            answer = check()
            polled = Polled(await answer if inspect.isawaitable(answer) else answer, None)
        except ignoring as error:
            polled = Polled(None, error)
        if polled.value:
            return polled.value
        if time.monotonic() >= deadline:
            _fail(what, timeout_s, polled, explain)
        await asyncio.sleep(every_s)


def _fail(what: str, timeout_s: float, polled: Polled, explain: Callable[[], str] | None) -> None:
    lines = [f"{what}: not within {timeout_s:g} s; last answer {polled.value!r}"]
    if polled.error is not None:
        lines.append(f"last error: {polled.error!r}")
    if explain is not None:
        lines.append(explain())
    pytest.fail("\n".join(lines))
