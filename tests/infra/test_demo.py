"""`shardshape demo` as a user runs it: its own embedded broker, a worker, the example service
and its load, all real processes. While one demo runs: the worker's and the gateway's /metrics,
and the dashboard in headless Chromium; then its clean exit. Another demo is stopped with
Ctrl-C (SIGINT) halfway.

The browser test needs Debian's chromium (`make browser-deps` installs it); without it the test
skips, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.demo import Demo, demo, get
from tests.support.paths import REPO_ROOT
from tests.support.polling import wait_until
from tests.support.processes import wait_for_line, wait_gone
from tests.support.tools import required_tool

pytestmark = pytest.mark.slow

DURATION_S = 50  # enough for a plan and two closed windows on a busy 2-core machine
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHARD_LINE = re.compile(r"^\[(\d+):(\d\d)\] shop: new shard (\d+) \((.*)\)", re.M)


def series(text: str, name: str) -> dict[str, float]:
    """Samples of metric ``name`` summed by shard label (over status, arm...)."""
    pattern = re.compile(rf'^{name}\{{[^}}]*shard="(\d+)"[^}}]*\}} (\S+)$', re.M)
    sums: dict[str, float] = {}
    for shard, value in pattern.findall(text):
        sums[shard] = sums.get(shard, 0.0) + float(value)
    return sums


@pytest.fixture(scope="module")
def running_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    tmp_path = tmp_path_factory.mktemp("demo")
    with demo(tmp_path, "--duration", str(DURATION_S), SHARDSHAPE_LOG_FORMAT="json") as run:
        wait_for_line(run.output, "dashboard: ", run.process, 120)
        yield run


def test_metrics_show_per_shard_series_during_the_demo(running_demo: Demo) -> None:
    def worker_series() -> dict[str, float] | None:
        text = get(f"{running_demo.web}/metrics")
        requests = series(text, "shardshape_shard_requests_total")
        observed = series(text, "shardshape_shard_request_duration_seconds_count")
        busy = {s for s, n in requests.items() if n > 0 and observed.get(s, 0) > 0}
        return requests if len(busy) >= 2 else None

    requests = wait_until(
        worker_series, 60, "two shards with requests in the worker's /metrics", every_s=1
    )
    assert sum(requests.values()) > 0
    gateway = wait_until(
        lambda: get(f"{running_demo.service_url()}/metrics"), 10, "gateway /metrics", every_s=1
    )
    assert sum(series(gateway, "shardshape_shard_requests_total").values()) > 0
    slots = re.findall(r"^shardshape_gateway_pool_slots\{[^}]*\} (\S+)$", gateway, re.M)
    assert slots and all(float(n) >= 1 for n in slots)


def chromium() -> str:
    """Debian's chromium, or skip (fail in CI, which installs it with `make browser-deps`)."""
    return required_tool("chromium", "browser-deps", "the browser test", "chromium-browser")


def test_dashboard_shows_shards_plan_and_charts_in_a_browser(
    running_demo: Demo, tmp_path: Path
) -> None:
    executable = chromium()
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user-data-dir
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{running_demo.web}/dashboard")
            page.wait_for_function(
                """() => {
                    const rows = document.querySelectorAll('[data-testid=shard-row]');
                    const chart = document.querySelector('svg[data-testid^=chart-throughput]');
                    return rows.length >= 2 && document.querySelector('[data-testid=plan]')
                        && chart && Number(chart.dataset.points) >= 2;
                }""",
                timeout=(DURATION_S + 10) * 1000,
            )
            rows = page.locator("[data-testid=shard-row]")
            summaries = [rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())]
            plan = page.locator("[data-testid=plan]").first.inner_text()
            line = page.locator("svg[data-testid^=chart-throughput] polyline").first
            points = line.get_attribute("points").split()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert any("GET /items/{item_id}" in s for s in summaries), summaries
    assert re.search(r"shard \d+: forecast", plan), plan  # the rationale, shard by shard
    assert len(points) >= 2 and all("," in p for p in points)
    assert not errors, errors
    hosts = {url.split("/")[2] for url in requested}
    assert hosts == {running_demo.web.split("/")[2]}  # no CDN, nothing off this machine
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


def test_demo_shows_shards_within_a_minute_and_exits_cleanly(running_demo: Demo) -> None:
    code = running_demo.process.wait(DURATION_S + 90)
    text = running_demo.text()
    assert code == 0, text
    shards = [(int(m), int(s), summary) for m, s, _, summary in SHARD_LINE.findall(text)]
    assert len([1 for m, s, _ in shards if m * 60 + s < 60]) >= 2, text
    assert "demo summary after" in text and "plans published" in text
    started = running_demo.started_pids()
    assert {"broker", "worker", "service", "load"} <= started.keys(), text
    assert set(started.values()) <= running_demo.seen  # the watch saw them all
    assert wait_gone([*started.values(), *running_demo.seen]) == []
    lines = [
        json.loads(line)
        for line in (running_demo.data_dir / "demo" / "worker.log").read_text().splitlines()
        if line.startswith("{")
    ]
    events = [line for line in lines if line.get("event") == "shard"]
    assert events and all(isinstance(line["shard"], int) for line in events)
    assert any("snapshot" in line.get("versions", {}).get("shop", {}) for line in lines)


def test_ctrl_c_stops_the_demo_and_everything_it_started(tmp_path: Path) -> None:
    with demo(tmp_path) as run:
        wait_for_line(run.output, "shop: new shard", run.process, 120)
        started = run.started_pids()
        run.process.send_signal(signal.SIGINT)
        code = run.process.wait(90)
        text = run.text()
    assert code == 0, text
    assert "stopping (Ctrl-C)" in text and "demo summary after" in text
    assert {"broker", "worker", "service", "load"} <= started.keys(), text
    assert wait_gone([*started.values(), *run.seen]) == [], text
