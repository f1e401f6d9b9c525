"""``shardshape doctor``: the host's isolation as detected here, and a running gateway's status
read over HTTP from a real (tiny) server."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from shardshape.core.contracts import ResourceSpec
from shardshape.core.settings import Settings
from shardshape.gateway.isolation import detect_capabilities
from shardshape.gateway.pools import ShardPools
from shardshape.gateway.status import STATUS_PATH, GatewayStatus, ShardPoolStatus, gateway_status
from shardshape.infra.cli import cli
from tests.gateway.isolation_support import isolation_settings, parent_dirs
from tests.support.plans import plan, shard
from tests.support.processes import shardshape_command

STATUS = GatewayStatus(
    service="shop",
    gateway_id="gw-7",
    routing_entries=1234,
    snapshot_versions={"shop": 17},
    plan_version=42,
    pools=[
        ShardPoolStatus(
            shard_id=3,
            mode="cgroup1",
            limits=ResourceSpec(cpu_millicores=750, memory_mib=512, concurrency=4),
            in_flight=2,
            queued=5,
            rejected=9,
            workers=4,
            failures=1,
        ),
        ShardPoolStatus(
            shard_id=None, mode="in-process", limits=ResourceSpec(concurrency=16), name="default"
        ),
    ],
)


@contextlib.contextmanager
def serving_status(body: bytes, path: str = STATUS_PATH) -> Iterator[str]:
    """A real HTTP server answering ``body`` at ``path`` (404 elsewhere); yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == path
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if found else b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Doctor's probe groups under a parent of this test alone; none may be left behind."""
    settings = isolation_settings()
    monkeypatch.setenv("SHARDSHAPE_ISOLATION_CGROUP_PARENT", settings.isolation_cgroup_parent)
    yield settings
    assert not [path for path in parent_dirs(settings) if path.exists()]


def test_doctor_explains_itself() -> None:
    result = CliRunner().invoke(cli, ["doctor", "--help"])
    assert result.exit_code == 0
    assert "--gateway-url" in result.output and "--json" in result.output
    assert "cgroup v2, cgroup v1, rlimits" in " ".join(result.output.split())


def test_the_host_report_shows_the_detected_mode_and_every_controller(isolated: Settings) -> None:
    expected = detect_capabilities(isolated)
    result = CliRunner().invoke(cli, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["gateway"] is None
    isolation = report["isolation"]
    assert isolation["mode"] == expected.mode and isolation["requested"] == "auto"
    assert set(isolation["enforcement"]) == {"cpu", "memory", "io"}
    for via in isolation["enforcement"].values():
        assert via["via"] and via["detail"] and via["fallback"]
    probed = {(p["version"], p["resource"]): p for p in isolation["probes"]}
    for probe in expected.probes:  # each controller: writable or not, and why
        found = probed[(probe.version, probe.resource)]
        assert found["writable"] == probe.writable and found["reason"]

    table = CliRunner().invoke(cli, ["doctor"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert f"isolation mode: {expected.mode}" in table.output
    for probe in expected.probes:
        assert probe.reason.split(" (")[0] in table.output


def test_a_mode_the_host_lacks_is_reported_and_fails(
    isolated: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    available = {p.version for p in detect_capabilities(isolated).probes if p.writable}
    missing = next((v for v in (2, 1) if v not in available), None)
    if missing is None:
        pytest.skip("this host allows both cgroup versions")
    monkeypatch.setenv("SHARDSHAPE_ISOLATION_MODE", f"cgroup{missing}")
    result = CliRunner().invoke(cli, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert f"SHARDSHAPE_ISOLATION_MODE=cgroup{missing} but this host does not allow it" in (
        result.output
    )


def test_a_running_gateways_routing_plan_and_pools(isolated: Settings) -> None:
    with serving_status(STATUS.to_json()) as url:
        as_json = CliRunner().invoke(cli, ["doctor", "--gateway-url", url, "--json"])
        shown = CliRunner().invoke(cli, ["doctor", "--gateway-url", url], env={"COLUMNS": "200"})
    assert as_json.exit_code == 0, as_json.output
    assert GatewayStatus.model_validate(json.loads(as_json.output)["gateway"]) == STATUS
    assert shown.exit_code == 0, shown.output
    text = shown.output
    assert "gateway shop (gw-7): 1,234 routing entries, snapshot shop v17, plan v42" in text
    shard_row = next(line for line in text.splitlines() if "shard 3" in line)
    cells = [cell.strip() for cell in shard_row.strip("│ ").split("│")]
    assert cells == ["shard 3", "cgroup1", "4", "750", "512", "100", "2", "5", "9", "4", "1"]
    assert any("default" in line and "in-process" in line for line in text.splitlines())


def test_a_status_endpoint_at_another_path_is_read_when_named_in_full(isolated: Settings) -> None:
    with serving_status(STATUS.to_json(), path="/gateway/status") as url:
        base = CliRunner().invoke(cli, ["doctor", "--gateway-url", url])
        full = CliRunner().invoke(cli, ["doctor", "--gateway-url", f"{url}/gateway/status"])
    assert base.exit_code == 2 and STATUS_PATH in base.output and "404" in base.output
    assert full.exit_code == 0 and "1,234 routing entries" in full.output


def test_no_gateway_at_the_address_says_what_to_check(isolated: Settings) -> None:
    with serving_status(b'{"routing_entries": -1}') as url:
        invalid = CliRunner().invoke(cli, ["doctor", "--gateway-url", url])
    assert invalid.exit_code == 2 and "not a gateway status" in invalid.output
    gone = CliRunner().invoke(cli, ["doctor", "--gateway-url", url])  # the server has stopped
    assert gone.exit_code == 2
    assert f"no shardshape gateway status at {url}{STATUS_PATH}" in gone.output
    assert "check that the gateway runs" in gone.output


def test_the_real_command_runs(isolated: Settings) -> None:
    env = {**os.environ, "SHARDSHAPE_ISOLATION_CGROUP_PARENT": isolated.isolation_cgroup_parent}
    done = subprocess.run(
        shardshape_command("doctor", "--json"), env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["isolation"]["mode"] == detect_capabilities(isolated).mode


def test_the_status_of_in_process_pools_under_a_plan_reads_back() -> None:
    pools = ShardPools()
    pools.apply(plan(4, shard(1, 8, memory_mib=256, net_mbit=8), shard(2, 2)))
    status = GatewayStatus.model_validate(gateway_status("shop", pools, None, None))
    assert status.plan_version == 4 and status.service == "shop"
    by_shard = {p.shard_id: p for p in status.pools}
    assert set(by_shard) == {1, 2, None}  # the plan's shards and the default pool
    assert by_shard[1].mode == "in-process"
    assert (by_shard[1].limits.concurrency, by_shard[1].limits.memory_mib) == (8, 256)
    assert by_shard[1].limits.net_mbit == 8
