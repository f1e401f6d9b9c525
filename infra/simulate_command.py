"""``shardshape simulate``: the evaluation of issue 7 from the command line."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

_STRATEGIES = ("shared-reactive", "static-by-type", "shardshape", "oracle")


@click.command()
@click.option(
    "--scenario",
    type=click.Choice(["mixed", "trace"]),
    default="mixed",
    show_default=True,
    help="mixed: five synthetic profiles over a day (ramp, drift, bursts, a scraper); "
    "trace: arrivals and service times from --trace files.",
)
@click.option(
    "--hours",
    default=24.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="mixed: hours scored (from --start-hour).",
)
@click.option(
    "--start-hour",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 24),
    help="mixed: hour of the day the scored period starts.",
)
@click.option(
    "--warmup-hours",
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="mixed: hours simulated before the scored day (not scored).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option(
    "--trace",
    "traces",
    multiple=True,
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="trace: a CSV request trace; repeat for several.",
)
@click.option(
    "--mapping",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="trace: TOML column mapping (see examples/traces/).",
)
@click.option(
    "--speed",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="trace: replay X times faster (service times are not scaled).",
)
@click.option(
    "--warmup-share",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="trace: share of the requests that warm up (and are the static sizing's "
    "history), not scored.",
)
@click.option(
    "--pools",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Pools TOML for the simulated service (default: the scenario's own).",
)
@click.option(
    "--strategies",
    default=",".join(_STRATEGIES),
    show_default=True,
    help="Comma-separated strategies to compare.",
)
@click.option(
    "--comparison",
    type=click.Choice(["both", "budget", "target"]),
    default="both",
    show_default=True,
    help="Which comparison(s) to run.",
)
@click.option(
    "--budget",
    type=click.FloatRange(min=0, min_open=True),
    help="Equal budget in block-hours [default: what shared-reactive holds at utilisation "
    "target 0.85]; shardshape and oracle get a pool cap when their own target holds more.",
)
@click.option(
    "--target",
    default=0.99,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="Equal target: share of requests of every profile with an SLO that must meet it.",
)
@click.option(
    "--lending/--no-lending",
    default=True,
    show_default=True,
    help="shardshape and oracle: a shard whose slots are all busy borrows idle slots of "
    "others by the gateway's rule (SHARDSHAPE_GATEWAY_LENDING_RESERVE and "
    "SHARDSHAPE_GATEWAY_LENDING_TO_LOWER); the default pool is then one block. Without "
    'it, plans round blocks per shard even where the pools say block_rounding = "pool".',
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write report.md with PNG plots (and results.json) into this directory.",
)
@click.pass_context
def simulate(
    ctx: click.Context,
    scenario: str,
    hours: float,
    start_hour: float,
    warmup_hours: float,
    seed: int,
    traces: tuple[Path, ...],
    mapping: Path | None,
    speed: float,
    warmup_share: float,
    pools: Path | None,
    strategies: str,
    comparison: str,
    budget: float | None,
    target: float,
    lending: bool,
    as_json: bool,
    report_dir: Path | None,
) -> None:
    """Does shaping beat scaling? Simulate one service on a pool of resource blocks under four
    strategies, with the project's own profiler, forecasts, calibration and optimiser running
    in-process, and compare them.

    \b
    Strategies:
      shared-reactive  one FIFO pool, autoscaled on utilisation like a horizontal autoscaler
      static-by-type   fixed partitions per request type, sized from the previous day's logs
      shardshape       the full system: shards predicted at arrival, planned per window
      oracle           true profiles and perfect demand foresight, same planner (upper bound)

    \b
    Comparisons:
      budget  every strategy tuned to hold the same block-hours; compare SLO attainment, p99
      target  every strategy given the fewest blocks that meet --target on every SLO;
              compare block-hours

    Uses SHARDSHAPE_MAX_SHARDS, SHARDSHAPE_PLAN_WINDOW, SHARDSHAPE_PLAN_HORIZON_S,
    SHARDSHAPE_GATEWAY_DEFAULT_CONCURRENCY (without lending),
    SHARDSHAPE_GATEWAY_LENDING_RESERVE and SHARDSHAPE_GATEWAY_LENDING_TO_LOWER as a
    deployment would. Deterministic for a seed.
    A simulated day of the mixed scenario takes about half a minute per shardshape run; both
    comparisons need about 30 runs (a few minutes). See docs/simulator.md.
    """
    from shardshape.infra.cli import CommandError, _require, _settings, console

    _require("worker", "the simulator")
    if report_dir is not None:
        _require("report", "`shardshape simulate --report`")
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from shardshape.allocator.pools_config import PoolsConfigError, load_pools_config
    from shardshape.allocator.simulate.report import write_report
    from shardshape.allocator.simulate.scenarios import evaluate, mixed_setup, trace_setup
    from shardshape.gateway.lending import LendingPolicy
    from shardshape.streams.trace import MappingError

    settings = _settings(ctx)
    chosen = tuple(s.strip() for s in strategies.split(",") if s.strip())
    unknown = [s for s in chosen if s not in _STRATEGIES]
    if unknown or not chosen:
        raise CommandError(
            f"--strategies {strategies!r}: unknown {unknown or 'empty'}; choose from "
            f"{', '.join(_STRATEGIES)}"
        )
    common = {
        "seed": seed,
        "max_shards": settings.max_shards,
        "window_s": 10.0 if settings.plan_window == "10s" else 60.0,
        "horizon_s": settings.plan_horizon_s,
        "default_slots": settings.gateway_default_concurrency,
        "lending": (
            LendingPolicy(settings.gateway_lending_reserve, settings.gateway_lending_to_lower)
            if lending
            else None
        ),
    }
    try:
        config = load_pools_config(pools) if pools else None
        if scenario == "trace":
            if not traces or mapping is None:
                raise CommandError(
                    "--scenario trace needs --trace FILE (one or more) and --mapping M, e.g. "
                    f"--trace {settings.trace_dir}/genai-requests-2024-11-15_to_26.csv "
                    "--mapping examples/traces/genai.toml"
                )
            setup = trace_setup(
                traces, mapping, speed=speed, warmup=warmup_share, config=config, **common
            )
        else:
            setup = mixed_setup(
                hours=hours, warmup_h=warmup_hours, start_h=start_hour, config=config, **common
            )
    except (PoolsConfigError, MappingError) as exc:
        raise CommandError(str(exc)) from None
    except (ValueError, KeyError) as exc:
        raise CommandError(str(exc).strip("'\"")) from None

    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("simulating", total=1.0)

        def on_progress(label: str, fraction: float) -> None:
            progress.update(task, description=label, completed=fraction)

        out = evaluate(
            setup,
            strategies=chosen,
            comparisons=("budget", "target") if comparison == "both" else (comparison,),
            budget=budget,
            target=target,
            progress=on_progress,
        )
    public = {k: v for k, v in out.items() if not k.startswith("_")}
    if report_dir is not None:
        command = "shardshape " + shlex.join(sys.argv[1:])
        path = write_report(out, report_dir, command)
        click.echo(f"report written to {path}", err=True)
    if as_json:
        click.echo(json.dumps(public, indent=2))
        return
    _print_tables(public)


def _print_tables(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    for name, comparison in out["comparisons"].items():
        title = name.replace("_", " ")
        if "budget_block_hours" in comparison:
            title += f" ({comparison['budget_block_hours']:,.1f} block-hours)"
        if "target" in comparison:
            title += f" (target {comparison['target']:.1%} on every SLO)"
        table = Table(
            "strategy", "knob", "block-hours", "rejected", "SLO attainment", "p99 ms", title=title
        )
        for strategy, s in comparison["strategies"].items():
            knob = ", ".join(f"{k} {v:g}" for k, v in s["knob"].items())
            if s.get("meets_target") is False:
                knob += " (not met)"
            shares = ", ".join(f"{p} {v:.2%}" for p, v in s["slo_attainment"].items())
            p99 = ", ".join(f"{p} {v:,.0f}" for p, v in s["p99_ms"].items())
            table.add_row(
                strategy, knob, f"{s['block_hours']:,.1f}", f"{s['rejected']:,}", shares, p99
            )
        Console().print(table)
