"""The protocol's grid: equal-budget comparisons on scoring periods of a trace x replay speeds.

A result that holds in one cell and fails in the next is not a result. Each cell scores one
period of the trace (its days ``first..last``, counted from the trace's first day in the
mapping's time zone) after warming up on everything before it (a rolling origin: nothing
scored was seen, by the strategies or by whoever chose their settings), at one ``--speed``,
at the default budget (what ``shared-reactive`` holds at utilisation 0.85). A cell is won when
``shardshape``'s SLO attainment is at least ``shared-reactive``'s, its p99 at most, and the
budget was reached within the comparison's tolerance.

>>> parse_days("5-8,9-12")
((5, 8), (9, 12))
>>> parse_speeds("8,10,12")
(8.0, 10.0, 12.0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from shardshape.allocator.simulate.names import BLOCK_START_S, STRATEGIES
from shardshape.allocator.simulate.scenarios import evaluate, trace_setup
from shardshape.core.trace import load_mapping, read_trace

DAYS = ((5, 8), (9, 12))
SPEEDS = (8.0, 10.0, 12.0)


@dataclass(frozen=True)
class Cell:
    """One scoring period at one speed: score ``[score_after, score_until)`` (Unix seconds;
    ``score_until`` None: to the trace's end)."""

    days: tuple[int, int]
    score_after: float
    score_until: float | None
    speed: float

    @property
    def label(self) -> str:
        return f"days {self.days[0]}-{self.days[1]} x{self.speed:g}"


def parse_days(text: str) -> tuple[tuple[int, int], ...]:
    """``"5-8,9-12"`` as day ranges (1 is the trace's first day); a ValueError says why not."""
    periods = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        first, sep, last = part.partition("-")
        try:
            lo, hi = int(first), int(last if sep else first)
        except ValueError:
            raise ValueError(f"days {part!r}: expected FIRST-LAST, e.g. 5-8") from None
        if not 2 <= lo <= hi:
            raise ValueError(
                f"days {part!r}: the first scored day must be 2 or later (day 1 only warms "
                "up) and not after the last"
            )
        periods.append((lo, hi))
    if not periods:
        raise ValueError("no scoring periods: give e.g. 5-8,9-12")
    return tuple(periods)


def parse_speeds(text: str) -> tuple[float, ...]:
    """``"8,10,12"`` as replay speeds; a ValueError says why not."""
    try:
        speeds = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"speeds {text!r}: expected numbers, e.g. 8,10,12") from None
    if not speeds or min(speeds) <= 0:
        raise ValueError(f"speeds {text!r}: expected positive numbers, e.g. 8,10,12")
    return speeds


def trace_cells(
    traces: Sequence[str | Path],
    mapping: str | Path,
    days: Sequence[tuple[int, int]] = DAYS,
    speeds: Sequence[float] = SPEEDS,
) -> list[Cell]:
    """The grid's cells for the traces: every period of ``days`` at every speed."""
    trace_mapping = load_mapping(mapping)
    times = [e.ts for e in read_trace(list(traces), trace_mapping)]
    first, last = min(times), max(times)
    tz = trace_mapping.tz
    midnight = datetime.fromtimestamp(first, tz).replace(hour=0, minute=0, second=0)

    def day_start(day: int) -> float:
        return (midnight + timedelta(days=day - 1)).timestamp()

    n_days = int((last - midnight.timestamp()) // 86_400) + 1
    beyond = [f"{lo}-{hi}" for lo, hi in days if day_start(lo) > last]
    if beyond:
        raise ValueError(
            f"--grid-days {','.join(beyond)}: the trace has {n_days} days "
            f"({midnight:%Y-%m-%d} to {datetime.fromtimestamp(last, tz):%Y-%m-%d}); "
            f"score days from 2 to {n_days}, e.g. --grid-days {_halves(n_days)}"
        )
    return [
        Cell((lo, hi), day_start(lo), day_start(hi + 1), speed)
        for lo, hi in days
        for speed in speeds
    ]


def _halves(n_days: int) -> str:
    """Two scoring periods splitting days 2..n (one when there are fewer than 3 days).

    >>> _halves(12), _halves(7), _halves(2)
    ('2-7,8-12', '2-4,5-7', '2-2')
    """
    if n_days < 3:
        return "2-2"
    mid = (n_days + 2) // 2
    return f"2-{mid},{mid + 1}-{n_days}"


Progress = Callable[[str, float], None]


def run_grid(
    traces: Sequence[str | Path],
    mapping: str | Path,
    cells: Sequence[Cell],
    *,
    strategies: Sequence[str] = STRATEGIES,
    progress: Progress | None = None,
    **setup: object,
) -> dict[str, object]:
    """The equal-budget comparison in every cell (``setup``: :func:`trace_setup`'s settings)."""
    out = []
    for i, cell in enumerate(cells):
        trace = trace_setup(
            traces,
            mapping,
            speed=cell.speed,
            score_after=cell.score_after,
            score_until=cell.score_until,
            **setup,  # type: ignore[arg-type]
        )
        report = None
        if progress is not None:

            def report(label: str, f: float, i: int = i, cell: Cell = cell) -> None:
                progress(f"{cell.label}: {label}", (i + f) / len(cells))

        result = evaluate(trace, strategies=strategies, comparisons=("budget",), progress=report)
        budget = result["comparisons"]["equal_budget"]  # type: ignore[index]
        out.append(
            {
                "cell": cell.label,
                "days": list(cell.days),
                "speed": cell.speed,
                "score_after": cell.score_after,
                "score_until": cell.score_until,
                "requests": result["requests"],
                "hours": result["hours"],
                **budget,
                "shardshape_wins": wins(budget),
            }
        )
    won = [c["shardshape_wins"] for c in out if c["shardshape_wins"] is not None]
    return {
        "cells": out,
        "cells_won": sum(won),
        "cells_compared": len(won),
        "block_start_s": float(setup.get("block_start_s", BLOCK_START_S)),  # type: ignore[arg-type]
    }


def wins(comparison: dict) -> bool | None:
    """Whether ``shardshape`` beats ``shared-reactive`` in an equal-budget comparison's JSON:
    attainment at least, p99 at most, the budget reached (None: either is missing).

    >>> s = {"slo_attainment": {"overall": 0.9}, "p99_ms": {"overall": 100.0}}
    >>> wins({"strategies": {"shared-reactive": s, "shardshape": {**s, "budget_reached": True}}})
    True
    """
    runs = comparison["strategies"]
    if "shardshape" not in runs or "shared-reactive" not in runs:
        return None
    ours, theirs = runs["shardshape"], runs["shared-reactive"]
    return bool(
        ours["slo_attainment"]["overall"] >= theirs["slo_attainment"]["overall"]
        and ours["p99_ms"]["overall"] <= theirs["p99_ms"]["overall"]
        and ours.get("budget_reached", True)
    )
