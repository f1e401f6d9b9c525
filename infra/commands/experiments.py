"""``shardshape experiments``: the A/B experiments the plans in force carry."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from shardshape.infra.command_support import CommandError, latest_plans


@click.group()
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
        for plan in latest_plans(ctx, "experiments list", service)
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
        for plan in latest_plans(ctx, "experiments show", None)
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
