"""``shardshape topics``: create and inspect shardshape's topics."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from shardshape.infra.command_support import bootstrapped, print_topic_outcome, settings_of
from shardshape.infra.topics import create_topics, describe_topics


@click.group()
def topics() -> None:
    """Create and inspect shardshape's topics."""


@topics.command("create")
@click.pass_context
def topics_create(ctx: click.Context) -> None:
    """Create the requests, DLQ, routing (compacted) and plans (compacted) topics.

    Idempotent: topics that exist are left as they are. Partition counts come from
    SHARDSHAPE_REQUESTS_PARTITIONS, SHARDSHAPE_DLQ_PARTITIONS and so on.
    """
    print_topic_outcome(create_topics(bootstrapped(settings_of(ctx), "topics create")))


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
