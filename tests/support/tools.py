"""The Debian tools some tests drive (chromium, prometheus, promtool): found, or the test skips
naming the make target that installs them."""

from __future__ import annotations

import os
import shutil

import pytest


def required_tool(name: str, make_target: str, what: str, *aliases: str) -> str:
    """The path of Debian's ``name`` (or an alias), or skip naming the make target that installs
    it; under CI (``CI`` set), which runs that target, fail instead."""
    for candidate in (name, *aliases):
        found = shutil.which(candidate)
        if found:
            return found
    why = f"no {name} binary on PATH: `make {make_target}` installs Debian's {name}"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run {what}: {why}")
    pytest.skip(why)
