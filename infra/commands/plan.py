"""``shardshape plan``: the allocation plans on the plans topic."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from shardshape.infra.command_support import latest_plans


@click.group()
def plan() -> None:
    """Inspect the allocation plans on the plans topic."""


@plan.command("show")
@click.option("--service", help="Only this service's plan.")
@click.option("--json", "as_json", is_flag=True, help="Print the plans as JSON.")
@click.pass_context
def plan_show(ctx: click.Context, service: str | None, as_json: bool) -> None:
    """Print the plan in force for each service: blocks, resources and the rationale."""
    plans = latest_plans(ctx, "plan show", service)
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
