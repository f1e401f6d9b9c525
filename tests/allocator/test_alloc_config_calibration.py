"""Pools config (validation that teaches) and calibration (learning capacity per block)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardshape.allocator.blocks import BlockType
from shardshape.allocator.calibration import Calibrator, ShardWindow
from shardshape.allocator.pools_config import (
    PoolsConfigError,
    load_pools_config,
    parse_pools_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pools.toml"
SMALL = BlockType(name="small", cpu_millicores=250, memory_mib=256, concurrency=4, cost=1)
LARGE = BlockType(name="large", cpu_millicores=1000, memory_mib=1024, concurrency=16, cost=3.5)


def test_example_config_loads() -> None:
    config = load_pools_config(EXAMPLE)
    assert config.services_of("main") == ["exports", "genai", "shop"]
    assert config.shard_settings("shop", 0).priority == 500
    assert config.shard_settings("shop", 3).block_types == ("small", "large")
    assert config.shard_settings("exports", 1).target_utilisation == 0.85


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[services.shop]\npool = "mian"', "services.shop.pool = 'mian': no pool of that name"),
        ("[pools.main]\nblocks = { huge = 1 }", "define [block_types.huge]"),
        (
            "[block_types.small]\ncpu_millicores = 250\nmemory_mib = 1\ncost = 1\ncpus = 2",
            "block_types.small.cpus: unknown key. Fix: remove it or correct its spelling; "
            "allowed here: cpu_millicores, memory_mib",
        ),
        ("[block_types.small]\nmemory_mib = 1\ncost = 1", "add `cpu_millicores = ...`"),
        (
            "[block_types.small]\ncpu_millicores = -5\nmemory_mib = 1\ncost = 1",
            "block_types.small.cpu_millicores = -5: Input should be greater than or equal to 0",
        ),
        (
            "[planning]\ntarget_utilisation = 0.5\nrelease_below_utilisation = 0.6",
            "must be below target_utilisation",
        ),
        ("[pools.main\n", "not valid TOML"),
    ],
)
def test_config_errors_name_the_key_and_the_fix(toml: str, expected: str) -> None:
    with pytest.raises(PoolsConfigError) as info:
        parse_pools_config(toml, source="pools.toml")
    assert expected in str(info.value)
    assert str(info.value).startswith("pools.toml: ")


def test_service_block_types_must_be_in_its_pool() -> None:
    text = EXAMPLE.read_text().replace('block_types = ["small", "large"]', 'block_types = ["gpu"]')
    with pytest.raises(PoolsConfigError, match="'gpu' is not held by pool 'main'"):
        parse_pools_config(text)


def _window(shard: int = 1, **kw) -> ShardWindow:
    base = {"window_s": 10.0, "completions": 1000, "blocks": {"small": 2}}
    return ShardWindow("shop", shard, **{**base, **kw})


def test_calibration_learns_from_busy_time_and_confidence_grows() -> None:
    cal = Calibrator({"small": SMALL, "large": LARGE}, rps_per_core=100)
    prior = cal.estimate("shop", 1, "small")
    assert prior.mean_rps == pytest.approx(25) and prior.confidence == 0
    confidences = []
    for _ in range(15):  # 20 ms per request per slot: 4 slots -> 200 rps per small block
        assert cal.observe(_window(busy_ms=20_000)) is None
        confidences.append(cal.estimate("shop", 1, "small").confidence)
    assert cal.estimate("shop", 1, "small").mean_rps == pytest.approx(200, rel=0.05)
    assert confidences == sorted(confidences) and confidences[-1] > 0.8
    # Correlated prior: large blocks moved too, though the shard never held one.
    assert cal.estimate("shop", 1, "large").mean_rps > 4 * 25 * 2


def test_calibration_separates_block_types_from_mixed_windows() -> None:
    cal = Calibrator({"small": SMALL, "large": LARGE})
    truth = {"small": 40.0, "large": 200.0}
    for i in range(60):
        mix = {"small": 1 + i % 4, "large": (i // 4) % 3}
        capacity = sum(truth[t] * n for t, n in mix.items())
        slots = 4 * mix["small"] + 16 * mix["large"]
        busy_ms = 1000 * 2000 * slots / capacity  # K = N S / B
        cal.observe(ShardWindow("shop", 2, 10.0, 2000, busy_ms=busy_ms, blocks=mix))
    for t, c in truth.items():
        assert cal.estimate("shop", 2, t).mean_rps == pytest.approx(c, rel=0.1)


def test_calibration_fallbacks_and_skips() -> None:
    by_latency, by_little = Calibrator({"small": SMALL}), Calibrator({"small": SMALL})
    for _ in range(20):
        by_latency.observe(_window(latency_ms_sum=20_000))
        by_little.observe(_window(mean_in_flight=2.0))  # 2 x 10 s = 20 s busy
    for cal in (by_latency, by_little):
        assert cal.estimate("shop", 1, "small").mean_rps == pytest.approx(200, rel=0.05)
    cal = Calibrator({"small": SMALL})
    assert "no completions" in cal.observe(_window(completions=0, busy_ms=1))
    assert "utilisation unknown" in cal.observe(_window())
    assert "no blocks" in cal.observe(_window(busy_ms=5, blocks={}))
    assert "unknown block type" in cal.observe(_window(busy_ms=5, blocks={"gpu": 1}))


def test_new_shards_start_from_their_siblings_and_capacity_is_conservative() -> None:
    cal = Calibrator({"small": SMALL}, rps_per_core=100)
    for _ in range(20):
        cal.observe(_window(busy_ms=20_000))
    newcomer = cal.estimate("shop", 9, "small")
    assert newcomer.mean_rps == pytest.approx(200, rel=0.05) and newcomer.confidence == 0
    assert newcomer.conservative_rps < newcomer.mean_rps
    assert cal.estimate("other", 9, "small").mean_rps == pytest.approx(25)


def test_calibration_follows_a_shard_that_changes() -> None:
    cal = Calibrator({"small": SMALL})
    for _ in range(30):
        cal.observe(_window(busy_ms=20_000))  # 200 rps/block
    for _ in range(150):
        cal.observe(_window(busy_ms=40_000))  # now 100 rps/block
    assert cal.estimate("shop", 1, "small").mean_rps == pytest.approx(100, rel=0.1)
