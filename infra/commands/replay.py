"""What goes on the wire from outside: ``replay`` (a trace's requests onto the requests
topic) and ``schema`` (the contracts' JSON Schemas, for gateways in other languages)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from shardshape.infra.command_support import (
    MAPPING,
    TRACES,
    bootstrapped,
    console,
    read_events,
    settings_of,
)


@click.command()
@TRACES
@MAPPING
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
    events, _ = read_events(traces, mapping)
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


@click.command()
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
