"""Running `shardshape demo` from tests (a broker, a worker, the example service and its load,
all real processes) and reading its pages."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shardshape.core.net import free_port
from tests.support.processes import (
    ctrl_c_as_in_a_terminal,
    descendant_pids,
    shardshape_command,
    wait_gone,
)


@dataclass
class Demo:
    process: subprocess.Popen[bytes]
    output: Path
    data_dir: Path
    web: str
    seen: set[int] = field(default_factory=set)  # every descendant seen while it ran

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def started_pids(self) -> dict[str, int]:
        """The pids the demo printed: its children's and the embedded broker's."""
        text = self.text()
        pids = {m[1]: int(m[2]) for m in re.finditer(r"started (\w+) \(pid (\d+)", text)}
        broker = re.search(r"embedded broker pid (\d+)", text)
        if broker:
            pids["broker"] = int(broker[1])
        return pids

    def service_url(self) -> str:
        found = re.search(r"started service \(pid \d+, (http://[\d.:]+)", self.text())
        assert found, self.text()
        return found[1]


@contextlib.contextmanager
def demo(tmp_path: Path, *args: str, **env_vars: str) -> Iterator[Demo]:
    """Run ``shardshape demo *args`` on its own ports and data dir, noting its descendants."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDSHAPE_")}
    web_port = free_port()
    env.update(SHARDSHAPE_DATA_DIR=str(tmp_path / "data"), SHARDSHAPE_WEB_PORT=str(web_port),
               **env_vars)  # fmt: skip
    output = tmp_path / "demo.out"
    with open(output, "wb") as out:
        process = subprocess.Popen(
            shardshape_command("demo", *args),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=ctrl_c_as_in_a_terminal,
        )
    run = Demo(process, output, tmp_path / "data", f"http://127.0.0.1:{web_port}")
    watching = threading.Event()

    def watch() -> None:
        while process.poll() is None and not watching.is_set():
            run.seen |= descendant_pids(process.pid)
            time.sleep(0.5)  # how often the process tree is sampled

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield run
    finally:
        watching.set()
        watcher.join()
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in wait_gone(run.seen, timeout_s=1):
            os.kill(pid, signal.SIGKILL)  # never leave them behind, even on a failure


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()
