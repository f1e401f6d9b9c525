"""The ``shardshape`` command line.

Every command reads its settings from ``SHARDSHAPE_*`` environment variables (see
``shardshape settings``); a bad value stops the command before it does anything.
"""

from __future__ import annotations

import json
import sys
import threading
from importlib.metadata import version
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from shardshape.core.net import PortInUseError
from shardshape.core.settings import ENV_PREFIX, Settings, SettingsError
from shardshape.infra.broker import BrokerError, EmbeddedBroker, kafka_bootstrap
from shardshape.infra.command_support import (
    CommandError,
    bootstrapped,
    console,
    parse_time,
    require,
    settings_of,
)
from shardshape.infra.gateway_command import gateway
from shardshape.infra.simulate_command import simulate
from shardshape.infra.topics import create_topics, describe_topics


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version("shardshape"), prog_name="shardshape")
def cli() -> None:
    """shardshape: learn request profiles online, predict each request's shard at arrival,
    and shape per-shard resources, over Kafka.

    Start with `shardshape run` (embedded broker, topics and a worker in one command).
    Settings come from SHARDSHAPE_* environment variables; `shardshape settings` lists them.
    """


cli.add_command(simulate)
cli.add_command(gateway)


@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the main job: a broker, the topics and a worker, until Ctrl-C.

    Uses the embedded broker unless SHARDSHAPE_KAFKA_BOOTSTRAP names a cluster. Everything
    started here is stopped on Ctrl-C or SIGTERM; the broker log is kept in the data directory.
    """
    require("worker", "`shardshape run`")
    from shardshape.allocator.pools_config import PoolsConfigError
    from shardshape.streams.app import run_worker

    settings = settings_of(ctx)
    try:
        with kafka_bootstrap(settings) as bootstrap:
            click.echo(f"broker: {bootstrap} ({settings.resolved_broker_mode})", err=True)
            settings = settings.with_bootstrap(bootstrap)
            _print_topic_outcome(create_topics(settings))
            run_worker(settings)
    except (BrokerError, PortInUseError) as exc:
        raise CommandError(str(exc)) from None
    except PoolsConfigError as exc:
        raise CommandError(f"SHARDSHAPE_POOLS_CONFIG: {exc}") from None
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("shardshape stopped", err=True)


@cli.command()
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop by itself after this many seconds [default: run until Ctrl-C].",
)
@click.option(
    "--trace",
    "traces",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Replay this CSV request trace instead of running the example service and its "
    "load (repeatable; needs --mapping).",
)
@click.option(
    "--mapping",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML column mapping of --trace (see examples/traces/).",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    help="Replay --trace at X times its own pace.",
)
@click.option(
    "--max-rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Replay --trace at most N events per second.",
)
@click.pass_context
def demo(
    ctx: click.Context,
    duration: float | None,
    traces: tuple[Path, ...],
    mapping: Path | None,
    speed: float | None,
    max_rate: float | None,
) -> None:
    """Watch shardshape learn: broker, topics, a worker with the example pools, the example
    service behind the shaping middleware and its tenants' load (one of them a scraper), or
    a replayed trace.

    A live view shows shards appearing with their profiles, plans moving blocks, each
    shard's p99 against its SLO and quarantined keys; the dashboard is on the worker's web
    port (SHARDSHAPE_WEB_PORT), /metrics beside it. Ctrl-C stops everything, then a summary
    is printed. Logs of each part go to $SHARDSHAPE_DATA_DIR/demo/.
    """
    require("demo", "the demo")
    from shardshape.allocator.pools_config import PoolsConfigError
    from shardshape.infra.demo.examples import ExampleMissing
    from shardshape.infra.demo.run import DemoError, DemoOptions, demo_settings, run_demo

    if traces and mapping is None:
        raise click.UsageError("--trace needs --mapping (e.g. examples/traces/genai.toml)")
    if (speed or max_rate or mapping) and not traces:
        raise click.UsageError("--mapping, --speed and --max-rate go with --trace")
    try:
        settings = demo_settings(settings_of(ctx))
        options = DemoOptions(duration, traces, mapping, speed, max_rate)
        code = run_demo(settings, options, Console(highlight=False, soft_wrap=True))
    except (BrokerError, PortInUseError, DemoError, ExampleMissing, SettingsError) as exc:
        raise CommandError(str(exc)) from None
    except PoolsConfigError as exc:
        raise CommandError(f"SHARDSHAPE_POOLS_CONFIG: {exc}") from None
    ctx.exit(code)


@cli.command()
@click.pass_context
def broker(ctx: click.Context) -> None:
    """Run the embedded Tansu broker in the foreground and print its bootstrap address.

    Port from SHARDSHAPE_BROKER_PORT (0, the default, picks a free one); memory storage,
    loopback only. Ctrl-C stops it.
    """
    settings = settings_of(ctx)
    try:
        with EmbeddedBroker(settings) as embedded:
            click.echo(embedded.bootstrap)
            click.echo(
                f"embedded broker ready; use it with {ENV_PREFIX}KAFKA_BOOTSTRAP="
                f"{embedded.bootstrap} (log: {embedded.log_path}); Ctrl-C stops it",
                err=True,
            )
            sys.stdout.flush()
            threading.Event().wait()
    except (BrokerError, PortInUseError) as exc:
        raise CommandError(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("embedded broker stopped", err=True)


@cli.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a stream worker against the broker at SHARDSHAPE_KAFKA_BOOTSTRAP.

    It consumes the requests topic, validates every message and sends what is invalid to the
    DLQ topic with the reason. Start several for more throughput; they share the partitions.
    """
    require("worker", "the worker")
    from shardshape.allocator.pools_config import PoolsConfigError
    from shardshape.streams.app import run_worker

    try:
        run_worker(bootstrapped(settings_of(ctx), "worker"))
    except PoolsConfigError as exc:
        raise CommandError(f"SHARDSHAPE_POOLS_CONFIG: {exc}") from None


@cli.command()
@click.option(
    "--worker",
    "workers",
    multiple=True,
    metavar="URL",
    help="A worker's web address; repeat for several workers "
    "[default: http://127.0.0.1:$SHARDSHAPE_WEB_PORT].",
)
@click.option(
    "--window", type=click.Choice(["10s", "1m"]), default="10s", show_default=True,
    help="Which tumbling window to show.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def shards(ctx: click.Context, workers: tuple[str, ...], window: str, as_json: bool) -> None:
    """Per-shard request metrics: rate, errors and latency quantiles per service, shard and
    A/B arm, from the workers' windowed tables (the latest complete window).
    """
    require("worker", "`shardshape shards`")
    import time
    import urllib.error
    import urllib.request

    from shardshape.core.metrics import latest_window, split_metric_key

    urls = workers or (f"http://127.0.0.1:{settings_of(ctx).web_port}",)
    views = []
    for url in urls:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/shardshape/shards", timeout=5) as r:
                views.append(json.loads(r.read())[window])
        except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
            raise CommandError(
                f"no shardshape worker answered at {url} ({exc}): start one with "
                "`shardshape run` or `shardshape worker`, or pass --worker URL"
            ) from None
    found = latest_window(views, time.time())
    if found is None:
        click.echo("no requests seen yet", err=True)
        return
    start, end, series = found
    rows = []
    for key in sorted(series, key=lambda k: split_metric_key(k)[:2]):
        service, shard, arm = split_metric_key(key)
        summary = series[key].summary(end - start)
        rows.append({"service": service, "shard": shard, "arm": arm, **summary})
    if as_json:
        click.echo(json.dumps({"start": start, "end": end, "shards": rows}, indent=2))
        return
    began = time.strftime("%H:%M:%S", time.localtime(start))
    Console().print(_shards_table(rows, title=f"{window} window from {began}"))


def _shards_table(rows: list[dict], title: str) -> Table:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    table = Table("service", "shard", "arm", "requests", "req/s", "errors", "p50 ms", "p95 ms",
                  "p99 ms", title=title)  # fmt: skip
    for row in rows:
        table.add_row(
            row["service"],
            str(row["shard"]),
            row["arm"] or "-",
            f"{row['count']:,}",
            f"{row['rps']:,.1f}",
            f"{row['error_rate']:.1%}",
            ms(row["p50_ms"]),
            ms(row["p95_ms"]),
            ms(row["p99_ms"]),
        )
    return table


@cli.group()
def plan() -> None:
    """Inspect the allocation plans on the plans topic."""


@plan.command("show")
@click.option("--service", help="Only this service's plan.")
@click.option("--json", "as_json", is_flag=True, help="Print the plans as JSON.")
@click.pass_context
def plan_show(ctx: click.Context, service: str | None, as_json: bool) -> None:
    """Print the plan in force for each service: blocks, resources and the rationale."""
    plans = _latest_plans(ctx, "plan show", service)
    if as_json:
        click.echo(json.dumps([p.model_dump(mode="json") for p in plans], indent=2))
        return
    if not plans:
        click.echo("no plan yet" + (f" for {service}" if service else ""), err=True)
        return
    for found in plans:
        title = f"{found.service} plan v{found.version} (pool {found.pool_id})"
        table = Table("shard", "blocks", "cpu m", "memory MiB", "concurrency", "forecast rps",
                      title=title)  # fmt: skip
        for spec in found.shards:
            blocks = ", ".join(f"{n} x {t}" for t, n in spec.blocks.items()) or "-"
            table.add_row(
                str(spec.shard_id), blocks, str(spec.resources.cpu_millicores),
                str(spec.resources.memory_mib), str(spec.resources.concurrency),
                "-" if spec.forecast_rps is None else f"{spec.forecast_rps:,.1f}",
            )  # fmt: skip
        Console().print(table)
        click.echo(found.rationale)


def _latest_plans(ctx: click.Context, command: str, service: str | None) -> list:
    """The newest plan of each service (or of ``service``) on the plans topic, by name."""
    from shardshape.core.contracts import AllocationPlan, ContractError, decode
    from shardshape.core.follower import TopicFollower
    from shardshape.core.signing import checker_from

    settings = bootstrapped(settings_of(ctx), command)
    latest: dict[str, AllocationPlan] = {}

    def keep(key: bytes | None, value: bytes | None) -> None:
        try:
            found = decode(AllocationPlan, value)
        except ContractError:
            return
        held = latest.get(found.service)
        if held is None or found.version > held.version:
            latest[found.service] = found

    follower = TopicFollower(
        settings.confluent_config(), settings.topic_plans, keep, signer=checker_from(settings)
    ).start()
    caught_up = follower.caught_up.wait(15)
    follower.stop()
    if not caught_up:
        raise CommandError(f"could not read {settings.topic_plans} within 15 s")
    return [p for name, p in sorted(latest.items()) if service in (None, name)]


@cli.group()
def experiments() -> None:
    """Inspect the A/B experiments the plans carry: state, arms, evidence and decisions."""


@experiments.command("list")
@click.option("--service", help="Only this service's experiments.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def experiments_list(ctx: click.Context, service: str | None, as_json: bool) -> None:
    """Every experiment listed in the plan in force of each service, running ones first."""
    found = [
        (plan, e)
        for plan in _latest_plans(ctx, "experiments list", service)
        for e in plan.experiments
    ]
    found.sort(key=lambda pe: (pe[1].status != "running", -pe[1].started_ts))
    if as_json:
        click.echo(json.dumps([_experiment_json(plan, e) for plan, e in found], indent=2))
        return
    if not found:
        click.echo("no experiments in the plans" + (f" of {service}" if service else ""), err=True)
        return
    table = Table("experiment", "service", "shard", "status", "arms", "requests",
                  "primary: variant - control", title="experiments (details: show ID)")  # fmt: skip
    for plan, e in found:
        table.add_row(
            e.experiment_id, plan.service, str(e.shard_id), e.status,
            ", ".join(f"{a.name} {a.weight:.0%}" for a in e.arms),
            f"{sum(x.requests for x in e.evidence):,}", f"{e.primary_metric} {_interval(e)}",
        )  # fmt: skip
    Console().print(table)


@experiments.command("show")
@click.argument("experiment_id")
@click.option("--json", "as_json", is_flag=True, help="Print the experiment as JSON.")
@click.pass_context
def experiments_show(ctx: click.Context, experiment_id: str, as_json: bool) -> None:
    """One experiment: why it started, its arms and overrides, each arm's evidence and the
    decision (what was adopted when a variant was promoted)."""
    import time

    matches = [
        (plan, e)
        for plan in _latest_plans(ctx, "experiments show", None)
        for e in plan.experiments
        if e.experiment_id == experiment_id
    ]
    if not matches:
        raise CommandError(
            f"no experiment {experiment_id!r} in the plans in force: "
            "`shardshape experiments list` shows the ones there are"
        )
    plan, e = matches[0]
    if as_json:
        click.echo(json.dumps(_experiment_json(plan, e), indent=2))
        return
    out = Console()
    out.print(f"experiment {e.experiment_id}: {plan.service} shard {e.shard_id}, {e.status}")
    began = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.started_ts))
    out.print(f"started {began}, at most {e.max_duration_s:.0f} s; "
              f"primary metric {e.primary_metric}; {e.reason or 'started by request'}")  # fmt: skip
    arms = Table("arm", "weight", "overrides", "requests", title="arms")
    evidence = {x.arm: x for x in e.evidence}
    for arm in e.arms:
        overrides = arm.overrides.model_dump(exclude_none=True, exclude={"v"})
        held = evidence.get(arm.name)
        arms.add_row(arm.name, f"{arm.weight:.0%}", json.dumps(overrides) if overrides else "-",
                     f"{held.requests:,}" if held else "0")  # fmt: skip
    out.print(arms)
    figures = Table("arm", "figure", "value", title="evidence (variant - control for tests)")
    for held in e.evidence:
        for name, value in held.figures.items():
            figures.add_row(held.arm, name, f"{value:.4g}")
    out.print(figures)
    if e.decision is not None:
        d = e.decision
        adopted = d.adopted.model_dump(exclude_none=True, exclude={"v"}) if d.adopted else None
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.ts))
        out.print(f"decision: {d.outcome}{' ' + d.arm if d.arm else ''} at {when}: {d.reason}")
        if adopted:
            out.print(f"adopted as the shard's definition: {json.dumps(adopted)}")


def _experiment_json(plan, experiment) -> dict:  # type: ignore[no-untyped-def]
    return {"service": plan.service, "plan_version": plan.version,
            **experiment.model_dump(mode="json")}  # fmt: skip


def _interval(experiment) -> str:  # type: ignore[no-untyped-def]
    """The primary metric's estimate and interval of the first variant with evidence."""
    for held in experiment.evidence[1:]:
        f = held.figures
        if "primary.estimate" in f:
            low, high = f["primary.low"], f["primary.high"]
            return f"{f['primary.estimate']:+.3f} [{low:+.3f}, {high:+.3f}]"
    return "-"


@cli.group()
def topics() -> None:
    """Create and inspect shardshape's topics."""


@topics.command("create")
@click.pass_context
def topics_create(ctx: click.Context) -> None:
    """Create the requests, DLQ, routing (compacted) and plans (compacted) topics.

    Idempotent: topics that exist are left as they are. Partition counts come from
    SHARDSHAPE_REQUESTS_PARTITIONS, SHARDSHAPE_DLQ_PARTITIONS and so on.
    """
    _print_topic_outcome(create_topics(bootstrapped(settings_of(ctx), "topics create")))


@topics.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def topics_list(ctx: click.Context, as_json: bool) -> None:
    """Show shardshape's topics with their partitions and configs."""
    infos = describe_topics(bootstrapped(settings_of(ctx), "topics list"))
    if as_json:
        click.echo(json.dumps([info.__dict__ for info in infos], indent=2))
        return
    table = Table("topic", "partitions", "config")
    for info in infos:
        config = ", ".join(f"{k}={v}" for k, v in info.config.items())
        table.add_row(info.name, str(info.partitions), config)
    Console().print(table)


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one <Contract>.schema.json file per contract into this directory.",
)
def schema(out: Path | None) -> None:
    """Print the JSON Schemas of the wire contracts, for gateways in other languages."""
    from shardshape.core.contracts import json_schemas

    schemas = json_schemas()
    if out is None:
        click.echo(json.dumps(schemas, indent=2))
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, body in schemas.items():
        (out / f"{name}.schema.json").write_text(json.dumps(body, indent=2) + "\n")
    click.echo(f"wrote {len(schemas)} schemas to {out}", err=True)


_TRACES = click.argument(
    "traces", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
_MAPPING = click.option(
    "--mapping",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML column mapping from the CSV onto request events (see examples/traces/).",
)


def _read_events(traces: tuple[Path, ...], mapping_path: Path) -> tuple[list, object]:
    from shardshape.core.trace import MappingError, TraceReport, load_mapping, read_trace

    try:
        mapping = load_mapping(mapping_path)
    except MappingError as exc:
        raise CommandError(f"{mapping_path}: {exc}") from None
    report = TraceReport()
    events = list(read_trace(list(traces), mapping, report))
    skipped = ", ".join(f"{n} {why}" for why, n in report.skipped.most_common())
    click.echo(
        f"read {report.events:,} events from {report.rows:,} rows"
        + (f" (skipped: {skipped})" if skipped else ""),
        err=True,
    )
    if not events:
        raise CommandError("the trace yielded no events: check the mapping's column names")
    return events, mapping


@cli.command()
@_TRACES
@_MAPPING
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    help="Replay at X times the trace's own pace.",
)
@click.option(
    "--max-rate", type=click.FloatRange(min=0, min_open=True), help="At most N events per second."
)
@click.option(
    "--batch-size",
    default=500,
    show_default=True,
    type=click.IntRange(1, 5_000),
    help="Events per RequestBatch message.",
)
@click.pass_context
def replay(
    ctx: click.Context,
    traces: tuple[Path, ...],
    mapping: Path,
    speed: float | None,
    max_rate: float | None,
    batch_size: int,
) -> None:
    """Send request traces (CSV) through Kafka to running workers, in batches.

    Rows become request events through the --mapping file; events go out in time order,
    batched by the partition of their profile key. Without --speed or --max-rate, as fast as
    the broker takes them.
    """
    from rich.progress import Progress

    from shardshape.streams.replay import replay as run_replay

    settings = bootstrapped(settings_of(ctx), "replay")
    events, _ = _read_events(traces, mapping)
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("replaying", total=len(events))
        report = run_replay(
            events,
            settings.confluent_config(),
            settings.topic_requests,
            settings.requests_partitions,
            batch_size=batch_size,
            speed=speed,
            max_rate=max_rate,
            on_progress=lambda n: progress.advance(task, n),
        )
    click.echo(
        f"sent {report.events:,} events in {report.batches:,} batches to "
        f"{settings.topic_requests} in {report.seconds:.1f}s ({report.events_per_s:,.0f} events/s)",
        err=True,
    )


@cli.group()
def evaluate() -> None:
    """Score the models offline on a trace, with the same code the workers run."""


@evaluate.command("profiles")
@_TRACES
@_MAPPING
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

    events, trace_mapping = _read_events(traces, mapping)
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
@_TRACES
@_MAPPING
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
    events, trace_mapping = _read_events(traces, mapping)
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


@cli.command()
@click.option(
    "--gateway-url",
    metavar="URL",
    help="A running gateway (http://host:port, or its status endpoint's full URL): also show "
    "its routing table, snapshot and plan versions and pool states.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def doctor(ctx: click.Context, gateway_url: str | None, as_json: bool) -> None:
    """Show what this host allows for isolating shard workers: cgroup v2, cgroup v1, rlimits
    or nothing, each controller, whether it is writable, why not, and the fallback.

    The check creates and removes one probe group under SHARDSHAPE_ISOLATION_CGROUP_PARENT and
    changes nothing else. Exits with 2 when SHARDSHAPE_ISOLATION_MODE names a mode the host
    does not allow. See docs/isolation.md.
    """
    from shardshape.gateway.isolation.detect import detect_capabilities
    from shardshape.gateway.isolation.report import capabilities_report
    from shardshape.gateway.status import StatusUnavailable, fetch_status, status_report

    caps = detect_capabilities(settings_of(ctx))
    try:
        status = fetch_status(gateway_url) if gateway_url else None
    except StatusUnavailable as exc:
        raise CommandError(str(exc)) from None
    if as_json:
        body = {
            "isolation": caps.model_dump(mode="json"),
            "gateway": status.model_dump(mode="json") if status else None,
        }
        click.echo(json.dumps(body, indent=2))
    else:
        out = Console()
        for part in [*capabilities_report(caps), *(status_report(status) if status else [])]:
            out.print(part)
    if caps.error:
        raise CommandError(caps.error)


@cli.command("signing-keys")
def signing_keys() -> None:
    """Make a new Ed25519 key pair for signing routing entries, snapshots and plans.

    Prints SHARDSHAPE_SIGNING_PRIVATE_KEY (workers only; keep it secret, e.g. in a file named by
    SHARDSHAPE_SIGNING_PRIVATE_KEY_FILE) and SHARDSHAPE_SIGNING_PUBLIC_KEY (gateways; to rotate,
    give them the old and the new public key, comma-separated, then move the workers to the new
    private key). See docs/security.md.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shardshape.core.signing import private_key_text, public_key_text

    key = Ed25519PrivateKey.generate()
    click.echo(f"{ENV_PREFIX}SIGNING_PRIVATE_KEY={private_key_text(key)}")
    click.echo(f"{ENV_PREFIX}SIGNING_PUBLIC_KEY={public_key_text(key.public_key())}")


@cli.command("settings")
@click.pass_context
def show_settings(ctx: click.Context) -> None:
    """List every setting with its environment variable and current value."""
    current = settings_of(ctx)
    table = Table("environment variable", "value", "description")
    for name, field in Settings.model_fields.items():
        value = getattr(current, name)
        shown = "********" if "password" in name and value else str(value)
        table.add_row(f"{ENV_PREFIX}{name.upper()}", shown, field.description or "")
    Console().print(table)


def _print_topic_outcome(outcome: dict[str, str]) -> None:
    for name, state in outcome.items():
        click.echo(f"topic {name}: {state}", err=True)


def main() -> None:
    cli(prog_name="shardshape")


if __name__ == "__main__":
    main()
