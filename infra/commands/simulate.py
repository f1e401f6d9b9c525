"""``shardshape simulate``: the evaluation of issue 7 from the command line."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from shardshape.allocator.simulate.names import BLOCK_START_S
from shardshape.allocator.simulate.names import STRATEGIES as _STRATEGIES
from shardshape.infra.command_support import CommandError, console, parse_time, require, settings_of


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
    "--score-after",
    metavar="TIME",
    help="trace: score the requests at or after TIME ('YYYY-MM-DD HH:MM:SS' in the trace's "
    "time zone, or Unix seconds); everything before it only warms up (replaces "
    "--warmup-share). A rolling origin: nothing scored was seen before.",
)
@click.option(
    "--score-until",
    metavar="TIME",
    help="trace: end the run at TIME (later requests are not replayed).",
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
@click.option(
    "--block-start-s",
    default=BLOCK_START_S,
    show_default=True,
    type=click.FloatRange(0, 3_600),
    help="shardshape, its ablations and oracle: a block they add serves after this many "
    "seconds, as shared-reactive's do after 30 s (a replica starting); 0: at once.",
)
@click.option(
    "--grid",
    is_flag=True,
    help="trace: the protocol's grid, the equal-budget comparison at the default budget in "
    "every cell of --grid-days x --grid-speeds, each scoring its days after warming up on "
    "everything before them (ignores --speed, --score-*, --comparison and --budget).",
)
@click.option(
    "--grid-days",
    default="5-8,9-12",
    show_default=True,
    help="--grid: scoring periods, as days of the trace (1 is its first day).",
)
@click.option(
    "--grid-speeds",
    default="8,10,12",
    show_default=True,
    help="--grid: replay speeds.",
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
    score_after: str | None,
    score_until: str | None,
    pools: Path | None,
    strategies: str,
    comparison: str,
    budget: float | None,
    target: float,
    lending: bool,
    block_start_s: float,
    grid: bool,
    grid_days: str,
    grid_speeds: str,
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
      true-profiles    ablation: shardshape's planning on the oracle's profiles
      perfect-forecast ablation: shardshape's profiles, planned on the oracle's demand

    \b
    Comparisons:
      budget  every strategy tuned to hold the same block-hours; compare SLO attainment, p99
              (a strategy that cannot hold the budget within 2% says so and why)
      target  every strategy given the fewest blocks that meet --target on every SLO;
              compare block-hours

    \b
    The protocol (docs/simulator.md): --grid runs the equal-budget comparison on each
    scoring period of a trace (--grid-days) at each speed (--grid-speeds), with nothing
    scored seen before, and says in how many cells shardshape beats shared-reactive.

    Uses SHARDSHAPE_MAX_SHARDS, SHARDSHAPE_PLAN_WINDOW, SHARDSHAPE_PLAN_HORIZON_S,
    SHARDSHAPE_GATEWAY_DEFAULT_CONCURRENCY (without lending),
    SHARDSHAPE_GATEWAY_LENDING_RESERVE and SHARDSHAPE_GATEWAY_LENDING_TO_LOWER as a
    deployment would. Deterministic for a seed.
    A simulated day of the mixed scenario takes about half a minute per shardshape run; both
    comparisons need about 30 runs (a few minutes). See docs/simulator.md.
    """
    require("worker", "the simulator")
    if report_dir is not None:
        require("report", "`shardshape simulate --report`")
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from shardshape.allocator.lending import LendingPolicy
    from shardshape.allocator.pools_config import PoolsConfigError, load_pools_config
    from shardshape.allocator.simulate.report import write_report
    from shardshape.allocator.simulate.scenarios import evaluate, mixed_setup, trace_setup
    from shardshape.core.trace import MappingError

    settings = settings_of(ctx)
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
        "block_start_s": block_start_s,
    }
    try:
        config = load_pools_config(pools) if pools else None
        if scenario == "trace" or grid:
            if not traces or mapping is None:
                raise CommandError(
                    "--scenario trace needs --trace FILE (one or more) and --mapping M, e.g. "
                    f"--trace {settings.trace_dir}/genai-requests-2024-11-15_to_26.csv "
                    "--mapping examples/traces/genai.toml"
                )
            if grid:
                _grid(traces, mapping, grid_days, grid_speeds, chosen, config, common, as_json)
                return
            setup = trace_setup(
                traces,
                mapping,
                speed=speed,
                warmup=warmup_share,
                config=config,
                score_after=_trace_time(score_after, "--score-after", mapping),
                score_until=_trace_time(score_until, "--score-until", mapping),
                **common,
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


def _grid(
    traces: tuple[Path, ...],
    mapping: Path,
    days: str,
    speeds: str,
    strategies: tuple[str, ...],
    config: object,
    common: dict,
    as_json: bool,
) -> None:
    """``--grid``: every cell's equal-budget comparison, as JSON or one table."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from shardshape.allocator.simulate.grid import parse_days, parse_speeds, run_grid, trace_cells

    cells = trace_cells(traces, mapping, parse_days(days), parse_speeds(speeds))
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("simulating", total=1.0)
        out = run_grid(
            traces,
            mapping,
            cells,
            strategies=strategies,
            progress=lambda label, f: progress.update(task, description=label, completed=f),
            config=config,
            **common,
        )
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    title = (
        f"equal budget per cell: shardshape beats shared-reactive in {out['cells_won']} of "
        f"{out['cells_compared']}"
    )
    if out["block_start_s"]:
        title += f" (planned blocks start after {out['block_start_s']:g} s)"
    table = Table("cell", "strategy", "knob", "block-hours", "SLO", "p50 s", "p99 s", title=title)
    for cell in out["cells"]:
        label = f"{cell['cell']} ({cell['budget_block_hours']:,.1f} bh)"
        for name, s in cell["strategies"].items():
            knob = ", ".join(f"{k} {v:g}" for k, v in s["knob"].items())
            held = f"{s['block_hours']:,.1f}" + ("" if s.get("budget_reached", True) else " (!)")
            table.add_row(
                label,
                name,
                knob,
                held,
                f"{s['slo_attainment']['overall']:.1%}",
                f"{s['p50_ms']['overall'] / 1000:,.0f}",
                f"{s['p99_ms']['overall'] / 1000:,.0f}",
            )
            label = ""
    Console().print(table)
    notes = [
        f"{c['cell']} {name}: {s['budget_note']}"
        for c in out["cells"]
        for name, s in c["strategies"].items()
        if s.get("budget_note")
    ]
    for note in notes:
        click.echo(f"(!) {note}", err=True)


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


def _trace_time(text: str | None, option: str, mapping: Path) -> float | None:
    """``text`` as Unix seconds, a local time read in the trace mapping's time zone."""
    if text is None:
        return None
    from shardshape.core.trace import load_mapping

    return parse_time(text, load_mapping(mapping).tz, option)
