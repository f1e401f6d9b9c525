"""The demo's terminal view: the worker's dashboard document (``/dashboard/api/state``) as rich
tables, a one-line status for logs, and the summary printed at the end.

>>> doc = {"services": [{"service": "shop", "snapshot_version": 3, "plan": {"version": 2},
...         "quarantined_keys": ["shop|GET /items/{item_id}|scraper-bot"], "shards": [
...         {"shard": 0, "summary": "GET /items 97%, ~20 ms", "quarantine": False,
...          "latest": {"rps": 120.0, "p99_ms": 35.0}, "slo_p99_ms": 100.0}]}],
...        "pipeline": {"events": 5000, "events_per_s": 250.0, "dead_letters": 0, "lag": 0}}
>>> status_line(doc)
'5,000 events (250/s), DLQ 0, lag 0 | shop: 1 shard, snapshot v3, plan v2, 1 quarantined'
>>> p99_verdict({"latest": {"p99_ms": 35.0}, "slo_p99_ms": 100.0})
'35 ms ✓ (SLO 100 ms)'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from shardshape.models.describe import format_ms

Doc = Mapping[str, Any]


def _ms(value: float | None) -> str:
    return "-" if value is None else format_ms(value).lstrip("~")


def p99_verdict(shard: Mapping[str, Any]) -> str:
    """The shard's latest p99 against its SLO, e.g. ``"35 ms ✓ (SLO 100 ms)"``."""
    p99 = (shard.get("latest") or {}).get("p99_ms")
    slo = shard.get("slo_p99_ms")
    if p99 is None:
        return "-"
    if slo is None:
        return _ms(p99)
    return f"{_ms(p99)} {'✓' if p99 <= slo else '✗'} (SLO {_ms(slo)})"


def _blocks(held: Mapping[str, int]) -> str:
    return ", ".join(f"{n} x {kind}" for kind, n in held.items() if n) or "-"


def _profile(shard: Mapping[str, Any], keys: int) -> str:
    if shard["quarantine"]:
        return f"quarantine ({keys} key{'s' if keys != 1 else ''})"
    return shard["summary"] or "(not in the snapshot)"


def shards_table(service: Mapping[str, Any]) -> Table:
    plan = service.get("plan")
    title = f"{service['service']}: snapshot v{service.get('snapshot_version') or '-'}, " + (
        f"plan v{plan['version']}" if plan else "no plan yet"
    )
    table = Table("shard", "profile", "req/s", "p99 vs SLO", "blocks", title=title,
                  title_justify="left")  # fmt: skip
    keys = len(service.get("quarantined_keys", []))
    for shard in service["shards"]:
        latest = shard.get("latest") or {}
        rps = latest.get("rps")
        table.add_row(
            str(shard["shard"]),
            _profile(shard, keys),
            "-" if rps is None else f"{rps:,.1f}",
            Text(p99_verdict(shard), style="red" if "✗" in p99_verdict(shard) else ""),
            _blocks(shard.get("blocks") or {}),
        )
    return table


def status_line(doc: Doc) -> str:
    """One line: pipeline totals and each service's shards, versions and quarantine."""
    p = doc["pipeline"]
    parts = [
        f"{p.get('events', 0):,.0f} events ({p.get('events_per_s', 0):,.0f}/s), "
        f"DLQ {p.get('dead_letters', 0):,.0f}, lag {p.get('lag', 0):,.0f}"
    ]
    for s in doc["services"]:
        n = sum(not shard["quarantine"] for shard in s["shards"])
        plan = s.get("plan")
        parts.append(
            f"{s['service']}: {n} shard{'s' if n != 1 else ''}, "
            f"snapshot v{s.get('snapshot_version') or '-'}, "
            + (f"plan v{plan['version']}" if plan else "no plan yet")
            + (f", {len(s['quarantined_keys'])} quarantined" if s.get("quarantined_keys") else "")
        )
    return " | ".join(parts)


def live_view(doc: Doc | None, header: str) -> RenderableType:
    """What the terminal shows while the demo runs."""
    if doc is None:
        return Group(Text(header), Text("waiting for the worker's first answer…"))
    parts: list[RenderableType] = [Text(header), Text(status_line(doc), style="dim")]
    parts += [shards_table(service) for service in doc["services"]]
    if not doc["services"]:
        parts.append(Text("no shards yet: the first snapshot follows the first requests"))
    return Group(*parts)


def summary(doc: Doc | None, events: Iterable[Mapping[str, Any]], elapsed_s: float) -> Group:
    """What the demo showed, for the end."""
    seen = list(events)
    kinds = {kind: [e for e in seen if e["kind"] == kind] for kind in ("shard", "plan")}
    moves = sum(e.get("moves", 0) for e in kinds["plan"])
    quarantined = sorted({e["key"] for e in seen if e["text"].startswith("quarantined")})
    lines = [
        Text(f"demo summary after {elapsed_s:.0f} s", style="bold"),
        Text(
            f"{len(kinds['shard'])} shards appeared, {len(kinds['plan'])} plans published "
            f"({moves} block moves), {len(quarantined)} key{'s' if len(quarantined) != 1 else ''} "
            "quarantined" + (f": {', '.join(quarantined)}" if quarantined else "")
        ),
    ]
    if doc is None:
        return Group(*lines, Text("the worker never answered; see its log"))
    lines.append(Text(status_line(doc)))
    lines += [shards_table(service) for service in doc["services"]]
    return Group(*lines)
