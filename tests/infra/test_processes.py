"""Child processes of ``shardshape demo`` never outlive it: own process groups, stopped whole
(grandchildren too), killed when they ignore SIGTERM, and ended by the kernel when the parent
is killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from shardshape.infra.processes import ChildProcesses, wait_for_text
from tests.support.processes import child_pids, wait_gone

SLEEP = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(300)"]


def test_children_lead_their_own_groups_and_stop_with_their_grandchildren(tmp_path: Path) -> None:
    with ChildProcesses(tmp_path) as children:
        shell = children.start("shell", ["sh", "-c", "sleep 300 & echo up; wait"])
        assert wait_for_text(children.log_path("shell"), "up", shell, 10)
        grandchildren = child_pids(shell.pid)
        assert grandchildren, "the shell should have started a sleep"
        assert os.getpgid(shell.pid) == shell.pid != os.getpgid(0)  # Ctrl-C stays with us
        assert all(os.getpgid(pid) == shell.pid for pid in grandchildren)
    assert wait_gone([shell.pid, *grandchildren]) == []


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    stubborn = textwrap.dedent(
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("up", flush=True)
        time.sleep(300)
        """
    )
    children = ChildProcesses(tmp_path, grace_s=1.0)
    child = children.start("stubborn", [sys.executable, "-c", stubborn])
    assert wait_for_text(children.log_path("stubborn"), "up", child, 10)
    started = time.monotonic()
    assert children.stop() == {"stubborn": -signal.SIGKILL}
    assert 1.0 <= time.monotonic() - started < 10


def test_children_die_with_a_parent_killed_outright(tmp_path: Path) -> None:
    parent_code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from shardshape.infra.processes import ChildProcesses
        children = ChildProcesses(Path({str(tmp_path)!r}))
        child = children.start("sleeper", {SLEEP!r})
        print(child.pid, flush=True)
        time.sleep(300)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE)
    try:
        child_pid = int(parent.stdout.readline())
        assert wait_for_text(tmp_path / "sleeper.log", "up", parent, 10)
        parent.kill()  # no cleanup code runs in the parent
        parent.wait()
        assert wait_gone([child_pid]) == []
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.stdout.close()
