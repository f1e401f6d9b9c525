"""Settings grouped per component keep one flat model: the same fields, names and order."""

from __future__ import annotations

import inspect

import pytest

from shardshape.core.settings import (
    ENV_PREFIX,
    GROUPS,
    GatewaySettings,
    IsolationSettings,
    ReporterSettings,
    Settings,
    SettingsError,
    known_variables,
    load_settings,
)


def _fields(group: type) -> list[str]:
    return list(inspect.get_annotations(group))


def test_settings_lists_every_groups_fields_in_the_groups_order() -> None:
    # `shardshape settings` lists Settings.model_fields: the order is what operators read.
    grouped = [name for group in GROUPS for name in _fields(group)]
    assert list(Settings.model_fields) == [*grouped, "trace_dir"]
    assert len(set(grouped)) == len(grouped)  # no field in two groups


def test_each_field_keeps_its_flat_name_and_variable() -> None:
    settings = Settings(gateway_queue_size=7, isolation_mode="rlimit")
    assert settings.gateway_queue_size == 7 and settings.isolation_mode == "rlimit"
    assert f"{ENV_PREFIX}GATEWAY_QUEUE_SIZE" in known_variables()
    assert all(isinstance(settings, group) for group in GROUPS)
    assert isinstance(settings, GatewaySettings) and isinstance(settings, IsolationSettings)


def test_a_groups_check_runs_when_the_environment_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "_check_reporter" in ReporterSettings.__dict__  # the check lives with its group
    monkeypatch.setenv(f"{ENV_PREFIX}REPORTER_STALL_MS", "20000")
    with pytest.raises(SettingsError, match="REPORTER_STALL_MS=20000 must be below"):
        load_settings()
