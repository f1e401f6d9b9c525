"""The spool survives a crash in the middle of compaction: a process killed between writing the
compacted lines and renaming them over the spool (or just after) loses no unread line."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shardshape.gateway.spool import Spool

# Fills a 1,000-byte spool, reads the first 30 lines, then appends until compaction runs, with
# os.replace made to kill the process (SIGKILL: nothing is flushed or closed) before or after
# the rename.
_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from shardshape.gateway.spool import Spool

    path, when = Path(sys.argv[1]), sys.argv[2]
    rename = os.replace

    def crash(src, dst):
        if when == "after":
            rename(src, dst)
        os.kill(os.getpid(), signal.SIGKILL)

    spool = Spool(path, max_bytes=1_000)
    line = 0
    while spool.append(b"line-%04d" % line):
        line += 1
    for _ in range(30):
        spool.peek()
        spool.advance()
    os.replace = crash
    spool.append(b"line-%04d" % line)  # needs room: compacts
    print("compaction did not run", flush=True)
    """
)


def _lines(spool: Spool) -> list[bytes]:
    lines = []
    while (line := spool.peek()) is not None:
        lines.append(line)
        spool.advance()
    return lines


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_crash_mid_compaction_loses_no_unread_line(tmp_path: Path, when: str) -> None:
    path = tmp_path / "spool.jsonl"
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), when], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == -signal.SIGKILL, (child.returncode, child.stdout, child.stderr)

    spool = Spool(path, max_bytes=1_000)
    lines = _lines(spool)
    spool.close()
    # 100 lines of 10 bytes filled the spool; 30 were read before the crash. Killed before the
    # rename, the old spool is whole (the read lines come again: at least once); after it,
    # the compacted one holds exactly the unread lines.
    unread = [b"line-%04d" % i for i in range(30, 100)]
    expected = [b"line-%04d" % i for i in range(30)] + unread if when == "before" else unread
    assert lines == expected
    assert not path.with_name(path.name + ".compacting").exists(), "the temporary file is cleared"


def test_compaction_keeps_the_unread_lines_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.jsonl", max_bytes=100)
    for i in range(10):
        assert spool.append(b"line-%04d" % i)
    for _ in range(4):
        spool.peek()
        spool.advance()
    assert spool.append(b"line-0010") and spool.append(b"line-0011")  # compacted to make room
    assert (tmp_path / "spool.jsonl").stat().st_size == 80
    assert _lines(spool) == [b"line-%04d" % i for i in range(4, 12)]
    spool.close()
