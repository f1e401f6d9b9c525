"""``shardshape shards``: the per-shard request metrics of the running workers."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from shardshape.infra.command_support import CommandError, require, settings_of


@click.command()
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
