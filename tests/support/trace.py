"""Where tests find the shared request trace; tests that need it skip, saying so, without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

TRACE_DIR = Path(os.environ.get("SHARDSHAPE_TRACE_DIR", REPO_ROOT.parent / "shared" / "data"))
GENAI_TRACE = TRACE_DIR / "genai-requests-2024-11-15_to_26.csv"
GENAI_MAPPING = REPO_ROOT / "examples" / "traces" / "genai.toml"

needs_genai_trace = pytest.mark.skipif(
    not GENAI_TRACE.exists(),
    reason=f"request trace {GENAI_TRACE.name} not found in {TRACE_DIR} "
    "(set SHARDSHAPE_TRACE_DIR to the folder holding it)",
)
