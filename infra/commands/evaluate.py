"""``shardshape evaluate``: the models scored offline on a trace."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from shardshape.infra.command_support import (
    MAPPING,
    TRACES,
    CommandError,
    parse_time,
    read_events,
    require,
)


@click.group()
def evaluate() -> None:
    """Score the models offline on a trace, with the same code the workers run."""


@evaluate.command("profiles")
@TRACES
@MAPPING
@click.option(
    "--evaluate-after",
    required=True,
    help="Score only events at or after this time ('YYYY-MM-DD HH:MM:SS' in the trace's "
    "time zone, or Unix seconds); earlier events only train.",
)
@click.option("--max-shards", default=8, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--rolling",
    is_flag=True,
    help="Also score every whole day from --evaluate-after on by itself (each predicted by "
    "the profiler that has seen only what completed before it): eta2 per day, the median "
    "and the worst day.",
)
@click.option(
    "--reference",
    type=click.Choice(["gbr"]),
    help="Also fit scikit-learn's HistGradientBoostingRegressor on the events before "
    "--evaluate-after (with --rolling, per day on the days before it) and report its eta2, "
    "unbinned and cut into as many groups as there are shards (needs the report extra).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate_profiles_command(
    traces: tuple[Path, ...],
    mapping: Path,
    evaluate_after: str,
    max_shards: int,
    rolling: bool,
    reference: str | None,
    as_json: bool,
) -> None:
    """Prequential evaluation of profiling: predict each request's shard at arrival, learn
    from it once it has completed, over the whole trace in time order.

    Reports how much of the variance of log response time the shard predicted at arrival
    explains (eta squared), next to grouping by request type, the naive baseline, and how
    many shards were born and retired per hour of the scored period.
    """
    require("worker", "`shardshape evaluate`")
    from shardshape.models.evaluate import evaluate_profiles

    events, trace_mapping = read_events(traces, mapping)
    after = parse_time(evaluate_after, trace_mapping.tz)
    try:
        result = evaluate_profiles(
            events,
            after,
            max_shards=max_shards,
            rolling=rolling,
            tz=trace_mapping.tz,
            reference=reference,
        )
    except (ImportError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    _print_result(result, as_json)


@evaluate.command("forecast")
@TRACES
@MAPPING
@click.option(
    "--evaluate-after",
    required=True,
    help="Score only bins starting at or after this time ('YYYY-MM-DD HH:MM:SS' in the "
    "trace's time zone, or Unix seconds); earlier bins only train.",
)
@click.option(
    "--bin", "bin_width", default="1h", show_default=True, help="Bin width: 15min, 1h, 1d..."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate_forecast_command(
    traces: tuple[Path, ...], mapping: Path, evaluate_after: str, bin_width: str, as_json: bool
) -> None:
    """Prequential one-step-ahead forecasts of the request count per bin, scored with MASE
    against the seasonal-naive (one day) and last-value baselines (below 1 beats them).
    """
    require("worker", "`shardshape evaluate`")
    from shardshape.models.forecast_eval import evaluate_forecast, parse_duration

    try:
        bin_s = parse_duration(bin_width)
    except ValueError as exc:
        raise CommandError(f"--bin {bin_width!r}: {exc}") from None
    events, trace_mapping = read_events(traces, mapping)
    after = parse_time(evaluate_after, trace_mapping.tz)
    _print_result(evaluate_forecast(events, after, bin_s), as_json)


def _print_result(result: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    table = Table("metric", "value")
    for name, value in _flat(result):
        shown = (
            f"{value:.4f}" if isinstance(value, float) else "n/a" if value is None else str(value)
        )
        table.add_row(name, shown)
    Console().print(table)


def _flat(result: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested results as ``(dotted.name, value)`` rows."""
    rows: list[tuple[str, object]] = []
    for name, value in result.items():
        if isinstance(value, dict):
            rows += _flat(value, f"{prefix}{name}.")
        else:
            rows.append((f"{prefix}{name}", value))
    return rows
