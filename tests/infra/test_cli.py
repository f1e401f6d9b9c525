"""The command line as a user meets it: help, schema, settings errors and the main job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from shardshape.core.contracts import CONTRACTS
from shardshape.infra.cli import cli
from shardshape.infra.extras import EXTRAS
from tests.support.processes import pid_alive, running, shardshape_command, wait_for_line


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("path", _commands(cli), ids=lambda p: " ".join(p) or "shardshape")
def test_every_command_explains_itself(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    summary = result.output.split("\n\n")[1].strip()
    assert len(summary) > 20, f"`{' '.join(path)} --help` needs a real description"


def test_help_works_even_with_bad_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDSHAPE_BROKER_MODE", "sideways")
    assert CliRunner().invoke(cli, ["topics", "list", "--help"]).exit_code == 0


def test_bad_setting_fails_fast_naming_it_and_the_accepted_values() -> None:
    env = {**os.environ, "SHARDSHAPE_BROKER_MODE": "sideways"}
    done = subprocess.run(
        shardshape_command("topics", "list"), env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "SHARDSHAPE_BROKER_MODE=sideways" in done.stderr
    assert "'embedded' or 'external'" in done.stderr
    assert "Traceback" not in done.stderr


def test_commands_that_need_a_broker_say_how_to_get_one() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDSHAPE_")}
    done = subprocess.run(shardshape_command("worker"), env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "SHARDSHAPE_KAFKA_BOOTSTRAP" in done.stderr and "shardshape run" in done.stderr


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["worker"], "worker"),
        (["run"], "worker"),
        (["demo"], "demo"),
        (["shards"], "worker"),
        (["simulate", "--report", "out"], "report"),
        (["gateway", "--service", "s", "--upstream", "http://127.0.0.1:9"], "sidecar"),
    ],
)
def test_a_command_whose_extra_is_missing_names_it_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, args: list[str], extra: str
) -> None:
    # As in a base install: the extra's modules cannot be found (the real case, a fresh
    # environment with only the wheel, is tests/system/test_base_install.py).
    monkeypatch.setitem(EXTRAS, extra, ("shardshape_absent_module",))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert f"needs the \"{extra}\" extra: pip install 'shardshape[{extra}]'" in result.output


def test_schema_prints_and_writes_one_file_per_contract(tmp_path: Path) -> None:
    printed = CliRunner().invoke(cli, ["schema"])
    assert printed.exit_code == 0
    schemas = json.loads(printed.output)
    assert set(schemas) == {model.__name__ for model in CONTRACTS}
    written = CliRunner().invoke(cli, ["schema", "--out", str(tmp_path / "schemas")])
    assert written.exit_code == 0
    files = sorted(p.name for p in (tmp_path / "schemas").iterdir())
    assert files == sorted(f"{model.__name__}.schema.json" for model in CONTRACTS)
    event_schema = json.loads((tmp_path / "schemas" / "RequestEvent.schema.json").read_text())
    assert event_schema["properties"]["request_id"]["maxLength"] == 128


def test_run_reaches_ready_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDSHAPE_")}
    env.update(SHARDSHAPE_DATA_DIR=str(tmp_path), SHARDSHAPE_WEB_ENABLED="false")
    log = tmp_path / "run.log"
    with running(shardshape_command("run"), env, log) as process:
        text = wait_for_line(log, "shardshape worker ready", process, 90)
        broker_pid = int(text.split("embedded broker pid ")[1].split()[0])
        assert "topic shardshape.requests: created" in text
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0, log.read_text()
    assert "shardshape stopped" in log.read_text()
    assert not pid_alive(broker_pid), "no broker process may be left behind"
