"""Time to import the gateway in a fresh interpreter, beside an interpreter that imports nothing.

Run: ``python benchmarks/bench_import.py [runs]``. Prints figures; asserts nothing (target:
``shardshape.gateway`` and ``install`` importable within 150 ms). Each sample is a whole fresh
``python -c ...`` process: its wall time, and its CPU time (user + system), which a machine
shared with other work inflates far less. The snippets alternate within each round, so drift
in the machine's load hits them alike; the medians of ``runs`` rounds are printed with the
difference to ``pass``, which is what importing costs. Last, what importing ``install`` adds
to a service that has already imported its framework (Starlette and pydantic; a FastAPI app has
more), timed inside that interpreter.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from typing import NamedTuple

BARE = "python -c pass"
SNIPPETS = {
    BARE: "pass",
    "import shardshape.gateway": "import shardshape.gateway",
    "from shardshape.gateway import install": "from shardshape.gateway import install",
    "import numpy (a base dependency)": "import numpy",
}
WORKER_ONLY = ("faust", "river", "scipy", "matplotlib", "aiokafka")
# What a Starlette or FastAPI service has imported before it imports the gateway.
FRAMEWORK = "import asyncio, pydantic, starlette.applications, starlette.routing"


class Sample(NamedTuple):
    wall_s: float
    cpu_s: float


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(code: str) -> Sample:
    """Wall and CPU seconds of ``python -c code``, from its start to its exit."""
    cpu, started = _children_cpu_s(), time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return Sample(time.perf_counter() - started, _children_cpu_s() - cpu)


def import_after_framework_s(target: str = "from shardshape.gateway import install") -> float:
    """Seconds ``target`` takes in a fresh interpreter that has imported :data:`FRAMEWORK`:
    what adopting the gateway adds to a service's start."""
    code = (
        f"{FRAMEWORK}; import time; started = time.perf_counter(); {target}; "
        "print(time.perf_counter() - started)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout)


def loaded_worker_modules() -> list[str]:
    """Modules of the worker stack that importing ``install`` loads (should be none)."""
    check = (
        "import sys; from shardshape.gateway import install; "
        f"print(','.join(m for m in {WORKER_ONLY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", check], check=True, capture_output=True, text=True)
    return [name for name in out.stdout.strip().split(",") if name]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    for code in SNIPPETS.values():  # compile and cache bytecode before timing
        run_once(code)
    samples: dict[str, list[Sample]] = {name: [] for name in SNIPPETS}
    after_framework: list[float] = []
    for _ in range(runs):
        for name, code in SNIPPETS.items():
            samples[name].append(run_once(code))
        after_framework.append(import_after_framework_s())

    def median_ms(name: str, field: str) -> float:
        return statistics.median(getattr(s, field) for s in samples[name]) * 1000

    print(f"fresh interpreters, median of {runs} runs each ({sys.executable})")
    print(f"  {'':40s} {'wall ms':>8s} {'over pass':>10s} {'CPU ms':>8s} {'over pass':>10s}")
    for name in SNIPPETS:
        wall, cpu = median_ms(name, "wall_s"), median_ms(name, "cpu_s")
        bare_wall, bare_cpu = median_ms(BARE, "wall_s"), median_ms(BARE, "cpu_s")
        print(
            f"  {name:40s} {wall:8.1f} {wall - bare_wall:+10.1f} {cpu:8.1f} {cpu - bare_cpu:+10.1f}"
        )
    added = statistics.median(after_framework) * 1000
    print(f"install imported after the service's framework ({FRAMEWORK}): {added:.1f} ms")
    print(f"worker-stack modules loaded by install: {loaded_worker_modules() or 'none'}")


if __name__ == "__main__":
    main()
