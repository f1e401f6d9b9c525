"""The long-running commands: ``run`` (everything in one), ``demo``, ``broker`` and ``worker``."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import click
from rich.console import Console

from shardshape.core.net import PortInUseError
from shardshape.core.settings import ENV_PREFIX, SettingsError
from shardshape.infra.broker import BrokerError, EmbeddedBroker, kafka_bootstrap
from shardshape.infra.command_support import (
    CommandError,
    bootstrapped,
    print_topic_outcome,
    require,
    settings_of,
)
from shardshape.infra.topics import create_topics


@click.command()
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
            print_topic_outcome(create_topics(settings))
            run_worker(settings)
    except (BrokerError, PortInUseError) as exc:
        raise CommandError(str(exc)) from None
    except PoolsConfigError as exc:
        raise CommandError(f"SHARDSHAPE_POOLS_CONFIG: {exc}") from None
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("shardshape stopped", err=True)


@click.command()
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


@click.command()
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


@click.command()
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
