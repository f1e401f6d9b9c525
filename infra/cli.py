"""The ``shardshape`` command line: the root group and its commands (``infra/commands/``).

Every command reads its settings from ``SHARDSHAPE_*`` environment variables (see
``shardshape settings``); a bad value stops the command before it does anything.
"""

from __future__ import annotations

from importlib.metadata import version

import click

from shardshape.infra.commands.config import doctor, show_settings, signing_keys
from shardshape.infra.commands.evaluate import evaluate
from shardshape.infra.commands.experiments import experiments
from shardshape.infra.commands.gateway import gateway
from shardshape.infra.commands.plan import plan
from shardshape.infra.commands.replay import replay, schema
from shardshape.infra.commands.run import broker, demo, run, worker
from shardshape.infra.commands.shards import shards
from shardshape.infra.commands.simulate import simulate
from shardshape.infra.commands.topics import topics


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version("shardshape"), prog_name="shardshape")
def cli() -> None:
    """shardshape: learn request profiles online, predict each request's shard at arrival,
    and shape per-shard resources, over Kafka.

    Start with `shardshape run` (embedded broker, topics and a worker in one command).
    Settings come from SHARDSHAPE_* environment variables; `shardshape settings` lists them.
    """


# One module per command group; `--help` lists them by name.
cli.add_command(run)
cli.add_command(demo)
cli.add_command(broker)
cli.add_command(worker)
cli.add_command(shards)
cli.add_command(plan)
cli.add_command(experiments)
cli.add_command(topics)
cli.add_command(replay)
cli.add_command(schema)
cli.add_command(evaluate)
cli.add_command(doctor)
cli.add_command(show_settings)
cli.add_command(signing_keys)
cli.add_command(simulate)
cli.add_command(gateway)


def main() -> None:
    cli(prog_name="shardshape")


if __name__ == "__main__":
    main()
