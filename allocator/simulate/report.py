"""``--report DIR``: a Markdown report with PNG plots (matplotlib, Agg backend).

Files written: ``report.md`` (the results tables and the plots), ``latency.png`` (latency
distribution per profile, one line per strategy, equal budget), ``blocks.png`` (blocks per
shard or queue over time, one panel per strategy, equal budget), ``forecast.png``
(``shardshape``'s measured demand against the forecast its plans provisioned, per shard) and
``results.json`` (what ``--json`` prints).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shardshape.allocator.simulate.compare import Comparison
from shardshape.allocator.simulate.engine import RunResult
from shardshape.allocator.simulate.results import OVERALL


def write_report(out: dict[str, object], directory: Path, command: str) -> Path:
    """Write the report of :func:`~shardshape.allocator.simulate.scenarios.evaluate`'s ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    directory.mkdir(parents=True, exist_ok=True)
    runs: dict[str, Comparison] = out["_runs"]  # type: ignore[assignment]
    shown = runs.get("equal_budget") or next(iter(runs.values()), None)
    plots = []
    if shown is not None and shown.outcomes:
        results = {name: o.result for name, o in shown.outcomes.items()}
        plots.append(("latency.png", "Latency per profile", _latency(results, directory)))
        plots.append(("blocks.png", "Blocks per queue over time", _blocks(results, directory)))
        if "shardshape" in results:
            plots.append(
                (
                    "forecast.png",
                    "shardshape: demand against forecast",
                    _forecast(results["shardshape"], directory),
                )
            )
    public = {k: v for k, v in out.items() if not k.startswith("_")}
    (directory / "results.json").write_text(json.dumps(public, indent=2) + "\n")
    lines = [
        f"# Simulation: {out['scenario']}",
        "",
        f"{out['requests']:,} scored requests over {out['hours']} h, seed {out['seed']}.",
        "",
        "```",
        command,
        "```",
        "",
    ]
    for comparison in runs.values():
        lines += _table(comparison)
    for name, title, ok in plots:
        if ok:
            lines += [f"## {title}", "", f"![{title}]({name})", ""]
    path = directory / "report.md"
    path.write_text("\n".join(lines))
    return path


def _table(comparison: Comparison) -> list[str]:
    head = f"## {comparison.name.capitalize()}"
    if comparison.budget_block_hours is not None:
        head += f" ({comparison.budget_block_hours:,.1f} block-hours)"
    if comparison.target is not None:
        head += f" (target: every SLO met by {comparison.target:.1%} of its requests)"
    profiles: list[str] = []
    for o in comparison.outcomes.values():
        for name in o.summary["p99_ms"]:  # type: ignore[union-attr]
            if name != OVERALL and name not in profiles:
                profiles.append(name)
    with_slo = [
        p
        for p in profiles
        if any(p in o.summary["slo_attainment"] for o in comparison.outcomes.values())  # type: ignore[operator]
    ]
    columns = ["strategy", "knob", "block-hours", "rejected", "SLO overall"]
    columns += [f"SLO {p}" for p in with_slo] + [f"p99 {p} ms" for p in profiles]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, o in comparison.outcomes.items():
        s = o.summary
        att, p99 = s["slo_attainment"], s["p99_ms"]
        knob = ", ".join(f"{k} {v:g}" for k, v in o.knobs.items())
        knob += " (target not met)" if o.meets_target is False else ""
        cells = [
            name,
            knob,
            f"{s['block_hours']:,.1f}",
            f"{s['rejected']:,}",
            _pct(att.get(OVERALL)),
        ]  # type: ignore[union-attr]
        cells += [_pct(att.get(p)) for p in with_slo]  # type: ignore[union-attr]
        cells += [f"{p99.get(p, float('nan')):,.0f}" for p in profiles]  # type: ignore[union-attr]
        rows.append("| " + " | ".join(cells) + " |")
    return [head, "", *rows, ""]


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.2%}"


def _latency(results: dict[str, RunResult], directory: Path) -> bool:
    import matplotlib.pyplot as plt

    any_result = next(iter(results.values()))
    w = any_result.workload
    profiles = [p for i, p in enumerate(w.profiles) if (w.profile == i).any()]
    fig, axes = plt.subplots(1, len(profiles), figsize=(4 * len(profiles), 3.4), squeeze=False)
    for ax, profile in zip(axes[0], profiles, strict=True):
        p = w.profiles.index(profile)
        for name, result in results.items():
            mine = w.scored & (w.profile == p) & ~np.isnan(result.latency_s)
            latency = np.sort(result.latency_s[mine] * 1000.0)
            if len(latency):
                share = np.arange(1, len(latency) + 1) / len(latency)
                ax.plot(np.maximum(latency, 1e-1), 1 - share, label=name, lw=1.2)
        if profile.slo_ms is not None:
            ax.axvline(profile.slo_ms, color="k", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(1e-5, 1.2)
        ax.set_title(profile.name)
        ax.set_xlabel("latency (ms)")
    axes[0][0].set_ylabel("share of requests slower")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(directory / "latency.png", dpi=110)
    plt.close(fig)
    return True


def _blocks(results: dict[str, RunResult], directory: Path) -> bool:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(10, 2.4 * len(results)), squeeze=False)
    for ax, (name, result) in zip(axes[:, 0], results.items(), strict=True):
        hours = result.timeline_s / 3600.0
        keep = (result.timeline_s >= result.workload.score_from) & (
            result.timeline_s <= result.workload.end
        )
        series = {k: v[keep] for k, v in result.timeline.items() if v[keep].any()}
        if series:
            ax.stackplot(hours[keep], *series.values(), labels=list(series), step="post")
        ax.set_title(f"{name}: {result.block_hours:,.1f} block-hours", fontsize=9)
        ax.set_ylabel("blocks")
        ax.legend(fontsize=6, ncol=6, loc="upper left")
    axes[-1, 0].set_xlabel("hour")
    fig.tight_layout()
    fig.savefig(directory / "blocks.png", dpi=110)
    plt.close(fig)
    return True


def _forecast(result: RunResult, directory: Path) -> bool:
    import matplotlib.pyplot as plt

    demand = result.extras.get("demand") or []
    plans = result.extras.get("plans") or []
    shards = sorted({s for _, rates in demand for s in rates} | {s for _, p in plans for s in p})
    if not shards:
        return False
    fig, axes = plt.subplots(len(shards), 1, figsize=(10, 1.8 * len(shards)), squeeze=False)
    for ax, shard in zip(axes[:, 0], shards, strict=True):
        t = np.array([t for t, _ in demand]) / 3600.0
        ax.plot(t, [rates.get(shard, 0.0) for _, rates in demand], lw=0.8, label="demand (req/s)")
        tp = np.array([t for t, _ in plans]) / 3600.0
        forecast = [p[shard][0] if shard in p else np.nan for _, p in plans]
        ax.step(tp, forecast, where="post", lw=0.9, label="forecast in the plan (req/s)")
        ax.set_ylabel(f"shard {shard}", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    axes[-1, 0].set_xlabel("hour")
    fig.tight_layout()
    fig.savefig(directory / "forecast.png", dpi=110)
    plt.close(fig)
    return True
