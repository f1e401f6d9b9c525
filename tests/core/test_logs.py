"""JSON logs (SHARDSHAPE_LOG_FORMAT=json): one object a line with the call's fields, the
context's and the versions in force, from a real ``shardshape`` process too."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest

from shardshape.core.logs import JsonFormatter, KnownVersions, formatter, log_context
from shardshape.core.settings import SettingsError, load_settings
from tests.support.processes import ctrl_c_as_in_a_terminal, shardshape_command, wait_for_line


def test_json_lines_carry_fields_context_versions_and_the_exception() -> None:
    stream = io.StringIO()
    versions = KnownVersions()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(versions))
    log = logging.getLogger("shardshape.test-json-logs")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        versions.note("shop", snapshot=12, plan=4)
        with log_context(service="shop", shard=3):
            log.info("moved %d blocks", 2, extra={"plan_version": 4})
            try:
                raise ValueError("planted")
            except ValueError:
                log.exception("plan failed")
        log.warning("outside")
    finally:
        log.removeHandler(handler)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "moved 2 blocks" and first["level"] == "info"
    assert (first["service"], first["shard"], first["plan_version"]) == ("shop", 3, 4)
    assert first["versions"] == {"shop": {"snapshot": 12, "plan": 4}}
    assert first["logger"] == "shardshape.test-json-logs" and first["ts"].endswith("Z")
    assert "ValueError: planted" in second["exception"] and second["shard"] == 3
    assert "shard" not in third  # the context ended with its block


def test_text_stays_the_default_and_a_bad_format_names_the_setting() -> None:
    record = logging.LogRecord("shardshape.x", logging.INFO, __file__, 1, "plain", (), None)
    assert formatter("text").format(record).endswith("INFO shardshape.x: plain")
    with pytest.raises(SettingsError, match="SHARDSHAPE_LOG_FORMAT=yaml"):
        load_settings(log_format="yaml")


def test_a_command_logs_json_when_asked(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDSHAPE_")}
    env.update(SHARDSHAPE_LOG_FORMAT="json", SHARDSHAPE_DATA_DIR=str(tmp_path))
    log = tmp_path / "broker.out"
    with open(log, "wb") as out:
        broker = subprocess.Popen(
            shardshape_command("broker"),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=ctrl_c_as_in_a_terminal,
        )
    try:
        wait_for_line(log, "embedded broker ready", broker, 60)
    finally:
        broker.send_signal(signal.SIGINT)
        broker.wait(20)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    started = [line for line in lines if line["message"].startswith("embedded broker pid")]
    assert started and started[0]["logger"] == "shardshape.broker"
    assert started[0]["level"] == "info"
