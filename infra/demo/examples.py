"""The example service's modules (``examples/service/``), imported from their files: the demo
runs from a source checkout, where ``examples/`` sits beside the packages."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
POOLS_EXAMPLE = EXAMPLES_DIR / "pools.toml"


class ExampleMissing(RuntimeError):
    """The examples directory is not where a source checkout has it."""


def example_module(name: str) -> ModuleType:
    """``examples/service/<name>.py`` as a module (``app`` or ``loadgen``).

    >>> example_module("loadgen").Workload("w", "/", "u").clients
    1
    """
    module_name = f"shardshape_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = EXAMPLES_DIR / "service" / f"{name}.py"
    if not path.is_file():
        raise ExampleMissing(
            f"{path} not found: `shardshape demo` runs the example service of a source "
            "checkout; run it from a clone of the repository (`make run`)"
        )
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
