"""Prequential evaluation: predict each event's shard at arrival, then learn from it.

Events are replayed in time order through a :class:`~shardshape.models.profiler.Profiler` one at a
time (a batch of one), so each prediction uses only arrival features and the key history of
earlier events, as a gateway would. Scores cover the events with ``ts >= evaluate_after_ts``.

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

import math
from collections.abc import Hashable, Iterable, Sequence

import numpy as np

from shardshape.models.profiler import Profiler, ProfilerConfig
from shardshape.models.synthetic import SyntheticStream
from shardshape.streams.contracts import RequestEvent


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


def evaluate_profiles(
    events: Iterable[RequestEvent],
    evaluate_after_ts: float,
    max_shards: int = 8,
    config: ProfilerConfig | None = None,
) -> dict:
    """Replay ``events`` (sorted by ``ts`` here) prequentially and score the later ones.

    Returns ``events``, ``evaluated_events``, ``shards`` (distinct predicted shards among the
    evaluated), ``eta2_predicted_shard``, ``eta2_request_type``, ``unseen_users_share``,
    ``snapshot_version`` and ``seconds``.
    """
    import time

    cfg = config or ProfilerConfig(max_shards=max_shards)
    profiler = Profiler(config=cfg)
    seen_users: set[str] = set()
    log_latency: list[float] = []
    predicted: list[int] = []
    types: list[str] = []
    unseen = 0
    n = 0
    started = time.perf_counter()
    for event in sorted(events, key=lambda e: e.ts):
        n += 1
        (assignment,) = profiler.process_batch([event])
        if event.ts >= evaluate_after_ts and event.latency_ms is not None:
            log_latency.append(math.log(max(event.latency_ms, 1e-3)))
            predicted.append(assignment.predicted)
            types.append(event.request_type)
            unseen += event.user_id not in seen_users
        seen_users.add(event.user_id)
    evaluated = len(predicted)
    return {
        "events": n,
        "evaluated_events": evaluated,
        "shards": len(set(predicted)),
        "eta2_predicted_shard": eta2(log_latency, predicted) if evaluated else 0.0,
        "eta2_request_type": eta2(log_latency, types) if evaluated else 0.0,
        "unseen_users_share": unseen / evaluated if evaluated else 0.0,
        "snapshot_version": profiler.version,
        "seconds": time.perf_counter() - started,
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
