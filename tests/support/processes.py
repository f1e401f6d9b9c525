"""Real processes for tests: the ``shardshape`` command on given settings, run in the background
and stopped on the way out, their logs waited on, their descendants found and outlived."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from shardshape.core.settings import Settings
from tests.support.polling import poll, wait_until


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a ``shardshape`` subprocess use ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDSHAPE_")}
    return {**env, **settings.as_environment()}


def shardshape_command(*args: str) -> list[str]:
    """The real console script of this environment."""
    return [str(Path(sys.executable).with_name("shardshape")), *args]


def ctrl_c_as_in_a_terminal() -> None:
    """In a child before exec: Ctrl-C (SIGINT) at its default, as a terminal gives it.

    A test suite started in the background of a non-interactive shell (``pytest ... &``) has
    SIGINT ignored, and children inherit that; the tests that press Ctrl-C must not depend on
    how the suite was started.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """Run ``command`` in the background, stopping it (SIGINT, then SIGKILL) on the way out."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=ctrl_c_as_in_a_terminal,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(2)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_line(log_path: Path, needle: str, process: subprocess.Popen, timeout_s: float) -> str:
    """Wait until ``needle`` appears in the log; fail with the log when the process dies first."""

    def seen() -> str | None:
        text = log_path.read_text(errors="replace")
        if needle in text:
            return text
        if process.poll() is not None:
            pytest.fail(f"process exited with {process.returncode} before {needle!r}:\n{text}")
        return None

    return wait_until(seen, timeout_s, f"{needle!r} in {log_path.name}", every_s=0.2,
                      explain=lambda: log_path.read_text(errors="replace"))  # fmt: skip


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(") ", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def descendant_pids(pid: int) -> set[int]:
    """Children, grandchildren and so on of ``pid``, as they are now."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in child_pids(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def wait_gone(pids: Iterable[int], timeout_s: float = 10.0) -> list[int]:
    """Wait until none of ``pids`` runs; return those still running when time is up."""
    pids = list(pids)
    alive: list[int] = []

    def none_alive() -> bool:
        alive[:] = sorted(pid for pid in pids if pid_alive(pid))
        return not alive

    poll(none_alive, timeout_s)
    return alive
