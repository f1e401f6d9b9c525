"""Settings refused from the environment: the error names the variable, its value and what is
accepted."""

from __future__ import annotations

import pytest

from shardshape.core.settings import SettingsError, load_settings


def assert_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    """Loading the settings with ``variable=value`` set fails naming both, and ``expected``."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert f"{variable}={value}" in str(info.value)
    assert expected in str(info.value)
