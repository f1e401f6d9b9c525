"""The request-shape memory: its running means, its export to snapshots and its merge."""

from __future__ import annotations

import numpy as np
import pytest

from shardshape.models.features import shape_id
from shardshape.models.shapes import ShapeTable


def _one_at_a_time(values: list[float], min_alpha: float) -> float:
    mean = 0.0
    for n, y in enumerate(values, start=1):
        mean += max(1.0 / n, min_alpha) * (y - mean)
    return mean


@pytest.mark.parametrize("batches", [[5], [2, 3], [1, 1, 1, 1, 1], [30], [7, 23], [25, 5]])
def test_a_batch_of_one_shape_folds_in_as_its_requests_would_one_at_a_time(
    batches: list[int],
) -> None:
    rng = np.random.default_rng(len(batches))
    values = rng.normal(5.0, 2.0, sum(batches))
    table = ShapeTable(prior=1.0, min_alpha=0.1)
    start = 0
    for size in batches:
        chunk = values[start : start + size]
        table.learn(np.full(size, 42), chunk, now=float(start))
        start += size
    n = len(values)
    w, wm = table.features(np.array([42]))[0]
    assert w == pytest.approx(n / (n + 1.0))
    if all(size == 1 for size in batches) or n <= 10:  # every step exact, or 1/n throughout
        assert wm / w == pytest.approx(_one_at_a_time(values.tolist(), 0.1))
    else:  # past 1/min_alpha a batch steps to its mean: close to one at a time
        assert wm / w == pytest.approx(_one_at_a_time(values.tolist(), 0.1), abs=0.5)


def test_a_callers_burst_counts_once_per_batch() -> None:
    table = ShapeTable(prior=1.0, min_alpha=0.05)
    shape = np.full(104, 7)
    callers = np.array([1] * 100 + [2, 3, 4, 5])  # caller 1 bursts, four others send one each
    latency = np.array([9.0] * 100 + [3.0] * 4)
    table.learn(shape, latency, now=1.0, callers=callers)
    w, wm = table.features(np.array([7]))[0]
    assert w == pytest.approx(5 / 6)  # five callers, five observations
    assert wm / w == pytest.approx((9.0 + 4 * 3.0) / 5)
    plain = ShapeTable(prior=1.0, min_alpha=0.05)
    plain.learn(shape, latency, now=1.0)
    assert plain.features(np.array([7]))[0, 1] / plain.features(np.array([7]))[0, 0] > 8.5


def test_the_exported_table_is_what_a_gateway_looks_up() -> None:
    table = ShapeTable(prior=2.0)
    ids = np.array([shape_id("GET /a", {"pages": p}) for p in (1, 2, 3, 3, 3, 2)])
    table.learn(ids, np.arange(6.0), now=5.0)
    exported = table.export(2)  # the two most used: pages 3 (3 requests), pages 2 (2)
    assert len(exported) == 2 and (np.diff(exported[:, 0]) > 0).all()
    probe = np.array([ids[0], ids[1], ids[2], 12345])
    looked_up = ShapeTable.lookup(exported, probe)
    own = table.features(probe)
    assert looked_up[0].tolist() == [0.0, 0.0]  # pages 1: not exported
    np.testing.assert_allclose(looked_up[1:3], own[1:3])
    assert looked_up[3].tolist() == [0.0, 0.0]


def test_workers_tables_merge_by_count_and_the_oldest_shapes_are_evicted() -> None:
    a, b = ShapeTable(), ShapeTable()
    a.learn(np.array([1, 1, 2]), np.array([2.0, 4.0, 6.0]), now=10.0)
    b.learn(np.array([1]), np.array([9.0]), now=20.0)
    merged = ShapeTable.merged([a.state(10), b.state(10)], prior=2.0)
    (row_1,) = [r for r in merged.state(10) if r[0] == 1]
    assert row_1[1:] == [3.0, pytest.approx(5.0), 20.0]  # (2 x 3 + 1 x 9) / 3, the latest
    small = ShapeTable(max_shapes=20)
    for t in range(25):
        small.learn(np.array([t]), np.array([1.0]), now=float(t))
    assert len(small) <= 20 and 24 in {int(r[0]) for r in small.state(100)}
    assert 0 not in {int(r[0]) for r in small.state(100)}  # completed longest ago: gone
