"""Health endpoints as orchestrators read them: ``/healthz`` (alive) and ``/readyz`` (ready).

``/healthz`` answers 200 whenever the process serves HTTP at all: the handler runs on the event
loop, so an answer means the loop turns. ``/readyz`` answers 200 only when every readiness
check of the component passes, else 503 naming what it still waits for. Both bodies are JSON.

>>> status, body = readiness({"joined": (True, "not joined"), "recovered": (False, "recovering")})
>>> status, body["ready"], body["reason"], body["checks"]
(503, False, 'recovering', {'joined': True, 'recovered': False})
>>> readiness({"joined": (True, "not joined")})[1]["reason"]
'ready'
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
_STARTED = time.monotonic()

# check name -> (passes, what it waits for when it does not)
Checks = Mapping[str, tuple[bool, str]]


def liveness() -> tuple[int, dict[str, Any]]:
    """Status and body of ``/healthz``."""
    return 200, {
        "alive": True,
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - _STARTED, 3),
    }


def readiness(checks: Checks) -> tuple[int, dict[str, Any]]:
    """Status (200 or 503) and body of ``/readyz`` for ``checks``."""
    waiting = [why for ok, why in checks.values() if not ok]
    return (503 if waiting else 200), {
        "ready": not waiting,
        "reason": "; ".join(waiting) if waiting else "ready",
        "checks": {name: ok for name, (ok, _) in checks.items()},
    }
