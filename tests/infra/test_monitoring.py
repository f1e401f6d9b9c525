"""The monitoring shipped with shardshape, on the real tools: the alert rules pass
`promtool check rules` and their unit tests (`promtool test rules`); a real Prometheus server
scrapes a running worker and the example service (`shardshape demo`) and PromQL over what it
scraped gives the per-shard request rate, p99 and the pool's blocks; every query of the Grafana
dashboard names only metric families the running system exposes, and Prometheus evaluates each.

promtool and prometheus are Debian's (`make prometheus-deps`); without them the tests skip,
except under CI (CI=true), where they fail.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import pytest

from shardshape.allocator.pools_config import load_pools_config
from shardshape.core.net import free_port
from tests.support.demo import Demo, demo, get
from tests.support.paths import REPO_ROOT
from tests.support.polling import wait_until
from tests.support.processes import running, wait_for_line
from tests.support.tools import required_tool

MONITORING = Path(str(files("shardshape.infra") / "monitoring"))  # as packaged
ALERTS = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULE_TESTS = REPO_ROOT / "tests" / "infra" / "monitoring" / "alerts_test.yml"
WORKER_JOB, GATEWAY_JOB = "shardshape-worker", "shardshape-gateway"
METRIC_NAME = re.compile(r"\b((?:shardshape|process|python)_[a-z0-9_]+)\b")
DEMO_S = 100  # the demo's duration: Prometheus needs a few scrapes of live traffic and a plan


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = required_tool("promtool", "prometheus-deps", "the alert rule checks")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)


def test_the_alert_rules_pass_promtool_check() -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    alerts = re.findall(r"^\s*- alert: (\w+)$", ALERTS.read_text(), re.M)
    assert f"SUCCESS: {len(alerts)} rules found" in checked.stdout
    assert {
        "ShardshapeShardSLOBurn",
        "ShardshapeConsumerLag",
        "ShardshapeDLQGrowing",
        "ShardshapePlannerSilent",
        "ShardshapeGatewayReporterDropping",
        "ShardshapeKafkaUnreachable",
    } == set(alerts)


def test_every_alert_fires_on_its_unit_test_and_not_on_healthy_series() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", ALERTS.read_text(), re.M))
    cases = RULE_TESTS.read_text()
    fired = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", cases))
    quiet = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", cases))
    assert fired == alerts, f"alerts never shown to fire: {alerts - fired}"
    assert quiet == alerts, f"alerts never shown to stay quiet: {alerts - quiet}"


def dashboard_queries() -> list[str]:
    document = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in document["panels"] for target in panel["targets"]]


def exposed_names(text: str) -> set[str]:
    """Every metric name a query may use against an exposition: its samples' names, and for
    the families declared with no sample yet (a counter nothing has counted), the names their
    samples will have."""
    names = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("",)}
        names |= {family + suffix for suffix in suffixes.get(kind, ("",))}
    return names


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One demo (broker, worker, example service and load) for the tests that need it running."""
    tmp_path = tmp_path_factory.mktemp("monitored-demo")
    with demo(tmp_path, "--duration", str(DEMO_S)) as run:
        wait_for_line(run.output, "dashboard: ", run.process, 120)
        yield run


@pytest.mark.slow
def test_dashboard_queries_name_only_families_the_system_exposes(live: Demo) -> None:
    def both() -> tuple[str, str] | None:
        worker, gateway = get(f"{live.web}/metrics"), get(f"{live.service_url()}/metrics")
        ready = "shardshape_pool_allocated_blocks{" in worker  # a plan is in force
        return (worker, gateway) if ready else None

    worker, gateway = wait_until(both, 90, "a plan in the worker's /metrics", every_s=1)
    exposed = exposed_names(worker) | exposed_names(gateway)
    used = {name for query in dashboard_queries() for name in METRIC_NAME.findall(query)}
    assert used, "the dashboard has queries"
    assert used <= exposed, f"the dashboard queries families nobody exposes: {used - exposed}"


@pytest.mark.slow
def test_prometheus_scrapes_the_worker_and_the_gateway(live: Demo, tmp_path: Path) -> None:
    with prometheus(tmp_path, worker=live.web, gateway=live.service_url()) as server:
        rate = wait_until(
            lambda: positive(
                server.query(
                    f"sum by (service, shard) (rate(shardshape_shard_requests_total"
                    f'{{job="{WORKER_JOB}"}}[15s]))'
                )
            ),
            90,
            "a per-shard request rate from the worker's scrapes",
            every_s=1,
        )
        p99 = wait_until(
            lambda: positive(
                server.query(
                    "histogram_quantile(0.99, sum by (service, shard, le) (rate("
                    f'shardshape_shard_request_duration_seconds_bucket{{job="{GATEWAY_JOB}"}}'
                    "[15s])))"
                )
            ),
            60,
            "a per-shard p99 from the gateway's scrapes",
            every_s=1,
        )
        capacity = server.query(f'shardshape_pool_capacity_blocks{{job="{WORKER_JOB}"}}')
        allocated = wait_until(
            lambda: server.query(f'shardshape_pool_allocated_blocks{{job="{WORKER_JOB}"}}'),
            60,
            "the pool's allocated blocks",
            every_s=1,
        )
        evaluated = [server.query(dashboard_query(q)) for q in dashboard_queries()]
    assert {labels["shard"] for labels in rate} and all(v > 0 for v in rate.values())
    assert all(0 < v < 300 for v in p99.values())  # seconds, inside the histogram
    pools = load_pools_config(REPO_ROOT / "examples" / "pools.toml").pools  # the demo's
    expected = {
        (pool, kind): float(n) for pool, held in pools.items() for kind, n in held.blocks.items()
    }
    found = {(labels["pool"], labels["block_type"]): v for labels, v in capacity.items()}
    assert found == expected
    assert all(0 <= v <= expected[(labels["pool"], labels["block_type"])]
               for labels, v in allocated.items())  # fmt: skip
    assert len(evaluated) == len(dashboard_queries())  # every query ran without error


class Labels(dict):
    """A series' labels, hashable so results can be keyed by them."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))


@dataclass
class Prometheus:
    url: str

    def query(self, promql: str) -> dict[Labels, float]:
        """An instant query's vector, labels -> value; fails on a query Prometheus refuses."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        answer = json.loads(get(url))
        assert answer["status"] == "success", (promql, answer)
        return {Labels(s["metric"]): float(s["value"][1]) for s in answer["data"]["result"]}


def positive(result: dict[Labels, float]) -> dict[Labels, float] | None:
    """The result when it has series and all are finite and above zero."""
    good = result and all(math.isfinite(v) and v > 0 for v in result.values())
    return result if good else None


def dashboard_query(expr: str) -> str:
    """A dashboard query with Grafana's variables as this test's scrape config sets them."""
    return (
        expr.replace("$__rate_interval", "15s")
        .replace("$worker_job", WORKER_JOB)
        .replace("$gateway_job", GATEWAY_JOB)
    )


@contextlib.contextmanager
def prometheus(tmp_path: Path, *, worker: str, gateway: str) -> Iterator[Prometheus]:
    """Debian's Prometheus server on loopback, scraping ``worker`` and ``gateway`` every second
    and loading the shipped alert rules."""
    binary = required_tool("prometheus", "prometheus-deps", "the test on a real Prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {"job_name": job, "static_configs": [{"targets": [target.split("//")[1]]}]}
                    for job, target in ((WORKER_JOB, worker), (GATEWAY_JOB, gateway))
                ],
            }
        )
    )
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with running(command, {}, tmp_path / "prometheus.log") as process:
        server = Prometheus(f"http://127.0.0.1:{port}")
        wait_until(
            lambda: process.poll() is None and get(f"{server.url}/-/ready"),
            30,
            "Prometheus",
            every_s=1,
        )
        targets = wait_until(lambda: up_targets(server), 30, "both targets up", every_s=1)
        assert targets == {WORKER_JOB, GATEWAY_JOB}
        yield server


def up_targets(server: Prometheus) -> set[str] | None:
    up = {labels["job"] for labels, v in server.query("up").items() if v == 1}
    return up if len(up) == 2 else None
