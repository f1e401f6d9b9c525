"""Prequential evaluation: predict each event's shard at arrival, then learn from it.

Events are replayed in time order through a :class:`~shardshape.models.profiler.Profiler`
(:func:`replay`): each is predicted at arrival with the model as it stands, as a gateway would,
and learned from once it has completed (at ``ts + latency``), as the profile agent does. Scores
cover the events with ``ts >= evaluate_after_ts``.

* ``eta2_*``: share of the variance of ``log(latency)`` explained by a grouping
  (between-group / total sum of squares), for the predicted shard and, as a baseline, the
  request type;
* :func:`adjusted_rand_index` scores predicted shards against planted profiles
  (:func:`evaluate_synthetic`).

>>> adjusted_rand_index([0, 0, 1, 1], [5, 5, 7, 7])
1.0
>>> round(adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]), 4)
0.2424
>>> round(eta2([1.0, 1.0, 3.0, 3.0], ["a", "a", "b", "b"]), 3)
1.0
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, tzinfo

import numpy as np

from shardshape.core.contracts import RequestEvent
from shardshape.models.churn import ShardChurn
from shardshape.models.profiler import Profiler, ProfilerConfig
from shardshape.models.reference import cut_edges, fit_reference
from shardshape.models.synthetic import SyntheticStream


def adjusted_rand_index(labels_true: Sequence[Hashable], labels_pred: Sequence[Hashable]) -> float:
    """Adjusted Rand index of two labelings (1 = identical up to renaming, ~0 = chance)."""
    _, t = np.unique(np.asarray(labels_true, dtype=object).astype(str), return_inverse=True)
    _, p = np.unique(np.asarray(labels_pred, dtype=object).astype(str), return_inverse=True)
    table = np.zeros((t.max() + 1, p.max() + 1))
    np.add.at(table, (t, p), 1)

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    index = pairs(table)
    rows, cols = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = rows * cols / pairs(np.array([len(t)]))
    maximum = (rows + cols) / 2
    return 1.0 if maximum == expected else (index - expected) / (maximum - expected)


def eta2(values: Sequence[float], groups: Sequence[Hashable]) -> float:
    """Between-group sum of squares over total sum of squares of ``values``."""
    y = np.asarray(values, dtype=float)
    _, g = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    total = ((y - y.mean()) ** 2).sum()
    if total == 0:
        return 0.0
    counts = np.bincount(g)
    means = np.bincount(g, weights=y) / counts
    return float((counts * (means - y.mean()) ** 2).sum() / total)


def replay(
    events: Sequence[RequestEvent], profiler: Profiler
) -> Iterator[tuple[int, RequestEvent, int]]:
    """Replay ``events`` (sorted by ``ts``) as production sees them: yield
    ``(index, event, shard predicted at arrival)`` in arrival order, and let the profiler learn
    from each event only once it has completed (at ``ts + latency``), before any later arrival.

    So no event is learned from before it is predicted, nor before its outcome would be known.
    """
    pending: list[tuple[float, int]] = []
    for i, event in enumerate(events):
        _learn_done(events, profiler, pending, event.ts)
        (shard,) = profiler.predict_many([event])
        yield i, event, shard
        if event.latency_ms is not None:
            heapq.heappush(pending, (event.ts + event.latency_ms / 1000.0, i))
    _learn_done(events, profiler, pending, math.inf)


def _learn_done(
    events: Sequence[RequestEvent], profiler: Profiler, pending: list, now: float
) -> None:
    done = []
    while pending and pending[0][0] <= now:
        done.append(events[heapq.heappop(pending)[1]])
    if done:
        profiler.process_batch(done)


def evaluate_profiles(
    events: Iterable[RequestEvent],
    evaluate_after_ts: float,
    max_shards: int = 8,
    config: ProfilerConfig | None = None,
    *,
    rolling: bool = False,
    tz: tzinfo = UTC,
    reference: str | None = None,
) -> dict:
    """Replay ``events`` (sorted by ``ts`` here, see :func:`replay`) and score the later ones.

    Returns ``events``, ``evaluated_events``, ``shards`` (distinct predicted shards among the
    evaluated), ``eta2_predicted_shard``, ``eta2_request_type``, ``unseen_users_share``,
    ``snapshot_version``, ``shard_churn`` (births and retirements of shards over the scored
    period, per hour) and ``seconds``.

    ``rolling``: also ``rolling``, the eta2 of every whole day (in ``tz``) starting at or after
    ``evaluate_after_ts``, each predicted by the profiler that has seen only what completed
    before each of its requests, with the median and the worst day. ``reference``: ``"gbr"``
    adds ``reference`` (see :func:`shardshape.models.reference.reference_eta2`), fitted on
    the events before ``evaluate_after_ts`` (with ``rolling``, per day on the days before it).
    """
    import time

    cfg = config or ProfilerConfig(max_shards=max_shards)
    profiler = Profiler(config=cfg)
    ordered = sorted(events, key=lambda e: e.ts)
    churn = ShardChurn(from_ts=evaluate_after_ts)
    seen_users: set[str] = set()
    scored: list[int] = []
    log_latency: list[float] = []
    predicted: list[int] = []
    types: list[str] = []
    unseen = 0
    version = -1
    started = time.perf_counter()
    for i, event, shard in replay(ordered, profiler):
        if profiler.version != version:
            version = profiler.version
            churn.note(event.ts, profiler.shards.ids)
        if event.ts >= evaluate_after_ts and event.latency_ms is not None:
            scored.append(i)
            log_latency.append(log_latency_of(event))
            predicted.append(shard)
            types.append(event.request_type)
            unseen += event.user_id not in seen_users
        seen_users.add(event.user_id)
    evaluated = len(predicted)
    span = ordered[-1].ts - evaluate_after_ts if evaluated else 0.0
    out: dict = {
        "events": len(ordered),
        "evaluated_events": evaluated,
        "shards": len(set(predicted)),
        "eta2_predicted_shard": eta2(log_latency, predicted) if evaluated else 0.0,
        "eta2_request_type": eta2(log_latency, types) if evaluated else 0.0,
        "unseen_users_share": unseen / evaluated if evaluated else 0.0,
        "snapshot_version": profiler.version,
        "shard_churn": churn.as_json(span),
    }
    groups = max(len(set(predicted)), 1)
    if reference is not None and evaluated:
        train = [e for e in ordered if e.ts < evaluate_after_ts and e.latency_ms is not None]
        out["reference"] = reference_eta2(reference, train, [ordered[i] for i in scored], groups)
    if rolling:
        out["rolling"] = _rolling(ordered, scored, predicted, evaluate_after_ts, tz, reference)
    out["seconds"] = time.perf_counter() - started
    return out


def reference_eta2(
    kind: str, train: Sequence[RequestEvent], test: Sequence[RequestEvent], groups: int
) -> dict:
    """The reference ``kind`` (:mod:`shardshape.models.reference`) fitted on ``train``:
    on ``test``, its eta2 unbinned (``1 - SSE / SST``) and cut into ``groups`` groups."""
    predict = fit_reference(kind, train)
    y = np.array([log_latency_of(e) for e in test])
    guess = predict(test)
    total = float(((y - y.mean()) ** 2).sum())
    unbinned = 1.0 - float(((y - guess) ** 2).sum()) / total if total > 0 else 0.0
    edges = cut_edges(predict(train), groups)
    group = np.searchsorted(edges, guess, side="right")
    return {
        "model": kind,
        "train_events": len(train),
        "eta2_unbinned": unbinned,
        "groups": groups,
        "eta2_groups": eta2(y.tolist(), group.tolist()),
    }


def log_latency_of(event: RequestEvent) -> float:
    """The quantity the eta2 figures explain: ``log`` of the latency in ms."""
    return math.log(max(event.latency_ms or 0.0, 1e-3))


def _rolling(
    ordered: list[RequestEvent],
    scored: list[int],
    predicted: list[int],
    after: float,
    tz: tzinfo,
    reference: str | None,
) -> dict:
    """Per whole day from ``after`` on: eta2 of the shards predicted at arrival (and of the
    reference fitted on the days before), with the median and the worst day."""
    first = datetime.fromtimestamp(after, tz)
    start = first.replace(hour=0, minute=0, second=0, microsecond=0)
    if start.timestamp() < after:
        start += timedelta(days=1)
    by_day: dict[str, list[int]] = {}
    for row, i in enumerate(scored):
        moment = datetime.fromtimestamp(ordered[i].ts, tz)
        if moment >= start:
            by_day.setdefault(moment.date().isoformat(), []).append(row)
    days: dict[str, dict] = {}
    for day, rows in by_day.items():
        y = [log_latency_of(ordered[scored[r]]) for r in rows]
        shards = [predicted[r] for r in rows]
        figures: dict = {
            "events": len(rows),
            "shards": len(set(shards)),
            "eta2_predicted_shard": eta2(y, shards),
        }
        if reference is not None:
            begins = datetime.fromisoformat(day).replace(tzinfo=tz).timestamp()
            train = [e for e in ordered if e.ts < begins and e.latency_ms is not None]
            test = [ordered[scored[r]] for r in rows]
            figures["reference"] = reference_eta2(reference, train, test, len(set(shards)))
        days[day] = figures
    values = [d["eta2_predicted_shard"] for d in days.values()]
    worst = min(days, key=lambda d: days[d]["eta2_predicted_shard"]) if days else None
    return {
        "days": days,
        "median_eta2_predicted_shard": float(np.median(values)) if values else 0.0,
        "worst_day": worst,
        "worst_eta2_predicted_shard": min(values) if values else 0.0,
    }


def evaluate_synthetic(
    n_events: int,
    windows: Sequence[tuple[int, int]],
    *,
    seed: int = 0,
    drift_at: int | None = None,
    batch_size: int = 1,
    config: ProfilerConfig | None = None,
) -> dict:
    """ARI of the predicted-at-arrival shard vs the planted profile, per event window.

    The stream is replayed in batches of ``batch_size`` (predict, then learn). For each
    ``(start, stop)`` window of event indices the result holds ``ari[(start, stop)]``.
    ``flips`` is the share of events in the last window whose predicted shard differs from
    the one predicted for the previous event of the same key and planted profile.
    """
    profiler = Profiler("shop", config or ProfilerConfig())
    stream = SyntheticStream(seed=seed, drift_at=drift_at)
    labels: list[int] = []
    predicted: list[int] = []
    keys: list[str] = []
    batch: list[RequestEvent] = []
    for event, label in stream.labelled(n_events):
        labels.append(label)
        batch.append(event)
        if len(batch) == batch_size:
            for a in profiler.process_batch(batch):
                predicted.append(a.predicted)
                keys.append(a.key)
            batch = []
    for a in profiler.process_batch(batch):
        predicted.append(a.predicted)
        keys.append(a.key)
    ari = {(s, e): adjusted_rand_index(labels[s:e], predicted[s:e]) for s, e in windows}
    start, stop = windows[-1]
    last: dict[tuple[str, int], int] = {}
    flips = 0
    for i in range(stop):
        ident = (keys[i], labels[i])
        if i >= start and ident in last and last[ident] != predicted[i]:
            flips += 1
        last[ident] = predicted[i]
    return {"ari": ari, "flips": flips / max(stop - start, 1), "shards": profiler.snapshot()}
