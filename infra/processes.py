"""Child processes that never outlive their parent: each in its own process group, stopped
together (SIGTERM to the group, SIGKILL after a grace period), in reverse start order.

Own process groups keep a terminal's Ctrl-C away from the children, so the parent stops them in
order (the load before the service before the worker before the broker); on Linux each child
also gets SIGTERM from the kernel if the parent is killed outright.

>>> import sys
>>> with ChildProcesses() as children:
...     child = children.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
...     children.running("sleeper")
True
>>> child.poll() is not None
True
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from shardshape.infra.broker import _die_with_parent

log = logging.getLogger("shardshape.processes")


class ChildProcesses:
    """Start named children (output to ``<log_dir>/<name>.log``, else discarded); stop them all.

    Parameters
    ----------
    log_dir
        Where each child's output goes; None discards it.
    grace_s
        How long a child's group has after SIGTERM before it is killed.
    """

    def __init__(self, log_dir: Path | None = None, grace_s: float = 20.0) -> None:
        self.log_dir = log_dir
        self.grace_s = grace_s
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, name: str, command: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` as child ``name`` in a new process group (and session)."""
        if name in self._children:
            raise ValueError(f"a child named {name!r} was started already")
        output = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = open(self.log_path(name), "wb")  # noqa: SIM115 - the child holds it
        try:
            process = subprocess.Popen(
                list(command),
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            if output is not subprocess.DEVNULL:
                output.close()
        self._children[name] = process
        log.debug("started %s (pid %d)", name, process.pid)
        return process

    def log_path(self, name: str) -> Path:
        if self.log_dir is None:
            raise ValueError("no log_dir: the children's output is discarded")
        return self.log_dir / f"{name}.log"

    def running(self, name: str) -> bool:
        return self._children[name].poll() is None

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self._children.items()}

    def stop(self) -> dict[str, int]:
        """Stop every child, the last started first; return their exit codes by name.

        Ctrl-C is ignored meanwhile, so an impatient second one cannot leave orphans.
        """
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            codes = {}
            for name in reversed(list(self._children)):
                codes[name] = self._stop_one(name, self._children[name])
            return codes
        finally:
            signal.signal(signal.SIGINT, previous)

    def _stop_one(self, name: str, process: subprocess.Popen[bytes]) -> int:
        group = process.pid  # the child leads its own group
        if process.poll() is None:
            _signal_group(group, signal.SIGTERM)
            try:
                process.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) still running %.0f s after SIGTERM: killing it",
                            name, process.pid, self.grace_s)  # fmt: skip
                _signal_group(group, signal.SIGKILL)
                process.wait()
        # Whatever the child left behind in its group (it exited, they may not have).
        _signal_group(group, signal.SIGKILL)
        return process.returncode

    def __enter__(self) -> ChildProcesses:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def wait_for_text(path: Path, text: str, alive: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait until ``text`` is in the file at ``path``; False when ``alive`` exits or time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if text in path.read_text(errors="replace"):
                return True
        if alive.poll() is not None:
            return False
        time.sleep(0.2)
    return False
