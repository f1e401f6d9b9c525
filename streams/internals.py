"""The private Faust and aiokafka attributes shardshape patches or relies on, checked at start.

:mod:`~shardshape.streams.fetch_wait`, :mod:`~shardshape.streams.highwater` and
:mod:`~shardshape.streams.seek_back` replace methods of Faust's aiokafka driver,
:mod:`~shardshape.streams.gaps` works around what ``Consumer._add_gap`` does, and the window
store writes TTL keys as Faust's own ``__setitem__`` does. pyproject pins faust-streaming and
aiokafka to the minor versions these were written against; :func:`check_internals` (run when a
worker starts, and by the test suite) fails with the attribute's name and its user if an
upgrade removed one, rather than letting a patch silently stop applying.

>>> check_internals()  # the installed versions have every attribute
>>> missing_internals([Internal("faust.app.base", "App", "no_such_thing", "a doctest")])
['faust.app.base.App.no_such_thing (used by a doctest) no longer exists']
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import version


@dataclass(frozen=True, slots=True)
class Internal:
    """A private attribute of a class: ``module.owner.name``, used by ``user``.

    ``in_init``: an instance attribute, checked as an assignment in ``owner.__init__``'s source.
    """

    module: str
    owner: str
    name: str
    user: str
    in_init: bool = False

    def exists(self) -> bool:
        try:
            owner = getattr(importlib.import_module(self.module), self.owner)
        except (ImportError, AttributeError):
            return False
        if self.in_init:
            return f"self.{self.name} =" in inspect.getsource(owner.__init__)
        return hasattr(owner, self.name)


_DRIVER = "faust.transport.drivers.aiokafka"
INTERNALS = (
    Internal(_DRIVER, "AIOKafkaConsumerThread", "_create_worker_consumer", "streams/fetch_wait.py"),
    Internal("aiokafka", "AIOKafkaConsumer", "_fetch_max_wait_ms", "streams/fetch_wait.py", True),
    Internal(_DRIVER, "AIOKafkaConsumerThread", "_highwaters", "streams/highwater.py"),
    Internal(_DRIVER, "AIOKafkaConsumerThread", "seek_to_committed", "streams/seek_back.py"),
    Internal(
        "faust.transport.consumer", "Consumer", "in_transaction", "streams/highwater.py", True
    ),
    Internal("faust.transport.consumer", "Consumer", "_add_gap", "streams/gaps.py"),
    Internal("faust.tables.base", "Collection", "_maybe_set_key_ttl", "streams/windows.py"),
)


def missing_internals(internals: Iterable[Internal] = INTERNALS) -> list[str]:
    """One line per attribute of ``internals`` that no longer exists."""
    return [
        f"{i.module}.{i.owner}.{i.name} (used by {i.user}) no longer exists"
        for i in internals
        if not i.exists()
    ]


def check_internals() -> None:
    """Raise ``RuntimeError`` naming every missing attribute and the installed versions."""
    missing = missing_internals()
    if missing:
        installed = ", ".join(f"{p} {version(p)}" for p in ("faust-streaming", "aiokafka"))
        raise RuntimeError(
            "shardshape patches private attributes that this install lacks:\n  "
            + "\n  ".join(missing)
            + f"\n({installed}); install the versions pyproject.toml pins, or port the patch"
        )
