"""What the ``shardshape`` commands share: the console, the error that exits 2, settings
loaded on first use, the extra check, time parsing, the trace arguments and the plans topic."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from shardshape.core.logs import configure_logging
from shardshape.core.settings import ENV_PREFIX, Settings, SettingsError, load_settings
from shardshape.infra.extras import MissingExtra, require_extra

console = Console(stderr=True)


class CommandError(click.ClickException):
    """A failure the user can fix; printed without a traceback."""

    exit_code = 2


def settings_of(ctx: click.Context) -> Settings:
    """Settings for this invocation, loaded on first use (so `--help` works with bad ones)."""
    root = ctx.find_root()
    if root.obj is None:
        try:
            root.obj = load_settings()
        except SettingsError as exc:
            raise CommandError(str(exc)) from None
        configure_logging(root.obj.log_level, root.obj.log_format)
    return root.obj


def require(extra: str, what: str) -> None:
    """Stop (exit 2) naming the extra to install when ``what`` needs one that is missing; run
    first, before the command imports what the extra provides."""
    try:
        require_extra(extra, what)
    except MissingExtra as exc:
        raise CommandError(str(exc)) from None


def bootstrapped(settings: Settings, command: str) -> Settings:
    if not settings.kafka_bootstrap:
        raise CommandError(
            f"`shardshape {command}` needs a running broker: set {ENV_PREFIX}KAFKA_BOOTSTRAP="
            "host:port (for the embedded one, `shardshape broker` prints it), or use "
            "`shardshape run`, which starts an embedded broker itself"
        )
    return settings


def parse_time(text: str, tz, option: str = "--evaluate-after") -> float:
    """``text`` ('YYYY-MM-DD HH:MM:SS' in ``tz``, or Unix seconds) as Unix seconds; a
    :class:`CommandError` naming ``option`` when it is neither."""
    from datetime import datetime

    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(
            f"{option} {text!r}: expected 'YYYY-MM-DD HH:MM:SS' or Unix seconds"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=tz)).timestamp()


def latest_plans(ctx: click.Context, command: str, service: str | None) -> list:
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


# The arguments of the commands that read a trace (replay, evaluate).
TRACES = click.argument(
    "traces", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
MAPPING = click.option(
    "--mapping",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML column mapping from the CSV onto request events (see examples/traces/).",
)


def read_events(traces: tuple[Path, ...], mapping_path: Path) -> tuple[list, object]:
    """The request events of ``traces`` read through the mapping, and the mapping; says on
    stderr how many rows became events and why the others were skipped."""
    from shardshape.core.trace import MappingError, TraceReport, load_mapping, read_trace

    try:
        mapping = load_mapping(mapping_path)
    except MappingError as exc:
        raise CommandError(f"{mapping_path}: {exc}") from None
    report = TraceReport()
    events = list(read_trace(list(traces), mapping, report))
    skipped = ", ".join(f"{n} {why}" for why, n in report.skipped.most_common())
    unfinished = f", {report.unfinished:,} unfinished (no latency)" if report.unfinished else ""
    click.echo(
        f"read {report.events:,} events from {report.rows:,} rows{unfinished}"
        + (f" (skipped: {skipped})" if skipped else ""),
        err=True,
    )
    if not events:
        raise CommandError("the trace yielded no events: check the mapping's column names")
    return events, mapping


def print_topic_outcome(outcome: dict[str, str]) -> None:
    """What topic creation did, one topic a line on stderr."""
    for name, state in outcome.items():
        click.echo(f"topic {name}: {state}", err=True)
