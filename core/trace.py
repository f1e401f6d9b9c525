"""Map CSV request traces onto :class:`~shardshape.core.contracts.RequestEvent` with a TOML
mapping.

A mapping file names, for each event field, the CSV column it comes from; nothing here knows
any trace's column names. Example (all keys but ``service``, ``time.column`` and
``request_type.column`` are optional)::

    service = "genai"                       # constant service name

    [time]
    column = "gmt_create"
    format = "%Y-%m-%d %H:%M:%S"            # strptime format, or "unix", "unix_ms", "iso"
    utc_offset_hours = 0                    # timezone of naive times

    [request_type]
    column = "predict_type"

    [user]
    column = "groupId"

    [request_id]
    column = "id"                           # default: "<file stem>-<row number>"

    [latency]
    column = "exec_time_seconds"
    unit = "s"                              # "us", "ms", "s" or "min"
    required = true                         # rows without a latency are skipped

    [status]
    column = "predict_status"
    error = ["FAILED"]                      # values meaning error; likewise timeout, rejected
    unfinished = ["PENDING"]                # not finished when the trace was written: no latency

    [payload]
    columns = ["prompt_length", "negative_prompt_length"]   # summed; empty cells count 0
    bytes_per_unit = 1.0

    [attributes.numeric]                    # attribute name = column
    images = "num_images_per_prompt"

    [attributes.categorical]
    model = "checkpoint_model_version_id"

A request the trace caught before it finished (a ``status.unfinished`` value) keeps its arrival
but has no latency: whatever its latency column holds is not a response time. A row whose
required fields cannot be parsed is skipped and counted by reason in a :class:`TraceReport`; a
bad mapping raises :class:`MappingError` naming the key. Events of several files are yielded
in time order.

>>> mapping = parse_mapping({"service": "api", "time": {"column": "t", "format": "unix"},
...                          "request_type": {"column": "op"},
...                          "latency": {"column": "ms", "unit": "ms"}})
>>> report = TraceReport()
>>> rows = [{"t": "5", "op": "GET", "ms": "12.5"}, {"t": "x", "op": "GET", "ms": "1"}]
>>> [(e.ts, e.latency_ms) for e in map_rows(rows, mapping, "demo", report)]
[(5.0, 12.5)]
>>> dict(report.skipped)
{'time: unparseable': 1}
"""

from __future__ import annotations

import csv
import heapq
import math
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shardshape.core.contracts import MAX_ATTRIBUTES, RequestEvent

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1_000.0, "min": 60_000.0}
_STATUSES = ("error", "timeout", "rejected")
_TOP_KEYS = {
    "service",
    "time",
    "request_type",
    "user",
    "request_id",
    "latency",
    "status",
    "payload",
    "attributes",
}


class MappingError(ValueError):
    """A mapping file that cannot be used; the message names the offending key."""


@dataclass
class TraceReport:
    """What a read did: rows read, events produced (``unfinished`` of them without a latency),
    rows skipped by reason."""

    rows: int = 0
    events: int = 0
    unfinished: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class TraceMapping:
    service: str
    time_column: str
    time_format: str
    tz: timezone
    request_type_column: str
    user_column: str | None = None
    request_id_column: str | None = None
    latency_column: str | None = None
    latency_ms_per_unit: float = 1.0
    latency_required: bool = True
    status_column: str | None = None
    status_values: dict[str, str] = field(default_factory=dict)
    unfinished_values: frozenset[str] = frozenset()
    payload_columns: tuple[str, ...] = ()
    bytes_per_unit: float = 1.0
    numeric: dict[str, str] = field(default_factory=dict)
    categorical: dict[str, str] = field(default_factory=dict)


def load_mapping(path: str | Path) -> TraceMapping:
    """Read and check a TOML mapping file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise MappingError(f"{path}: cannot read mapping: {exc}") from None
    try:
        return parse_mapping(data)
    except MappingError as exc:
        raise MappingError(f"{path}: {exc}") from None


def parse_mapping(data: Mapping[str, Any]) -> TraceMapping:
    """Check a mapping already parsed from TOML."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise MappingError(
            f"unknown key(s) {sorted(unknown)}; expected some of {sorted(_TOP_KEYS)}"
        )
    time = _table(data, "time", required=True)
    fmt = _str(time, "time.format", default="iso")
    offset = time.get("utc_offset_hours", 0)
    if not isinstance(offset, int | float) or isinstance(offset, bool):
        raise MappingError("time.utc_offset_hours: expected a number")
    latency = _table(data, "latency")
    unit = _str(latency, "latency.unit", default="ms")
    if unit not in _UNITS_MS:
        raise MappingError(f"latency.unit: {unit!r} is not one of {sorted(_UNITS_MS)}")
    status = _table(data, "status")
    status_values = {}
    for outcome in _STATUSES:
        for value in _str_list(status, f"status.{outcome}", outcome):
            status_values[value] = outcome
    payload = _table(data, "payload")
    attributes = _table(data, "attributes")
    numeric = _str_map(attributes, "attributes.numeric", "numeric")
    categorical = _str_map(attributes, "attributes.categorical", "categorical")
    if len(numeric) + len(categorical) > MAX_ATTRIBUTES:
        raise MappingError(f"attributes: more than {MAX_ATTRIBUTES} attributes")
    required = latency.get("required", True)
    if not isinstance(required, bool):
        raise MappingError("latency.required: expected true or false")
    bytes_per_unit = payload.get("bytes_per_unit", 1.0)
    if not isinstance(bytes_per_unit, int | float) or bytes_per_unit < 0:
        raise MappingError("payload.bytes_per_unit: expected a non-negative number")
    return TraceMapping(
        service=_str(data, "service", required=True),
        time_column=_str(time, "time.column", required=True),
        time_format=fmt,
        tz=timezone(timedelta(hours=offset)),
        request_type_column=_str(_table(data, "request_type", True), "request_type.column", True),
        user_column=_str(_table(data, "user"), "user.column"),
        request_id_column=_str(_table(data, "request_id"), "request_id.column"),
        latency_column=_str(latency, "latency.column"),
        latency_ms_per_unit=_UNITS_MS[unit],
        latency_required=required and "column" in latency,
        status_column=_str(status, "status.column"),
        status_values=status_values,
        unfinished_values=frozenset(_str_list(status, "status.unfinished", "unfinished")),
        payload_columns=tuple(_str_list(payload, "payload.columns", "columns")),
        bytes_per_unit=float(bytes_per_unit),
        numeric=numeric,
        categorical=categorical,
    )


def read_trace(
    paths: str | Path | Sequence[str | Path],
    mapping: TraceMapping,
    report: TraceReport | None = None,
) -> Iterator[RequestEvent]:
    """Events of one or several CSV files, in time order (each file is sorted in memory)."""
    report = report if report is not None else TraceReport()
    files = [paths] if isinstance(paths, str | Path) else list(paths)
    per_file = []
    for path in files:
        with open(path, newline="", encoding="utf-8") as f:
            events = list(map_rows(csv.DictReader(f), mapping, Path(path).stem, report))
        events.sort(key=lambda e: e.ts)
        per_file.append(events)
    yield from heapq.merge(*per_file, key=lambda e: e.ts)


def map_rows(
    rows: Iterable[Mapping[str, str | None]],
    mapping: TraceMapping,
    source: str,
    report: TraceReport,
) -> Iterator[RequestEvent]:
    """Map CSV rows (dicts by column) to events, counting skipped rows in ``report``."""
    for number, row in enumerate(rows, start=1):
        report.rows += 1
        try:
            event = _event(row, mapping, f"{source}-{number}")
        except _Skip as skip:
            report.skipped[str(skip)] += 1
            continue
        report.events += 1
        report.unfinished += _unfinished(row, mapping)
        yield event


class _Skip(Exception):
    pass


def _event(row: Mapping[str, str | None], m: TraceMapping, default_id: str) -> RequestEvent:
    ts = _parse_time(_cell(row, m.time_column), m)
    request_type = _cell(row, m.request_type_column)
    if not request_type:
        raise _Skip("request_type: missing")
    latency_ms = None
    if m.latency_column and not _unfinished(row, m):
        latency = _number(_cell(row, m.latency_column))
        if latency is None or latency < 0:
            if m.latency_required:
                raise _Skip("latency: missing or unparseable")
        else:
            latency_ms = latency * m.latency_ms_per_unit
    status = m.status_values.get(_cell(row, m.status_column), "ok") if m.status_column else "ok"
    payload = 0.0
    for column in m.payload_columns:
        value = _number(_cell(row, column))
        if value is not None and value > 0:
            payload += value
    attributes: dict[str, float | str] = {}
    for name, column in m.numeric.items():
        value = _number(_cell(row, column))
        if value is not None:
            attributes[name] = value
    for name, column in m.categorical.items():
        value = _cell(row, column)
        if value:
            attributes[name] = value
    try:
        return RequestEvent(
            request_id=(_cell(row, m.request_id_column) if m.request_id_column else "")
            or default_id,
            ts=ts,
            service=m.service,
            request_type=request_type,
            user_id=_cell(row, m.user_column) if m.user_column else "",
            payload_bytes=payload * m.bytes_per_unit,
            latency_ms=latency_ms,
            status=status,
            attributes=attributes,
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise _Skip(f"invalid event: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def _unfinished(row: Mapping[str, str | None], m: TraceMapping) -> bool:
    return m.status_column is not None and _cell(row, m.status_column) in m.unfinished_values


def _parse_time(text: str, m: TraceMapping) -> float:
    try:
        if m.time_format == "unix":
            ts = float(text)
        elif m.time_format == "unix_ms":
            ts = float(text) / 1_000
        else:
            if m.time_format == "iso":
                when = datetime.fromisoformat(text)
            else:
                when = datetime.strptime(text, m.time_format)
            ts = (when if when.tzinfo else when.replace(tzinfo=m.tz)).astimezone(UTC).timestamp()
    except ValueError:
        raise _Skip("time: unparseable") from None
    if not math.isfinite(ts) or ts < 0:
        raise _Skip("time: out of range")
    return ts


def _cell(row: Mapping[str, str | None], column: str) -> str:
    return (row.get(column) or "").strip()


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _table(data: Mapping[str, Any], key: str, required: bool = False) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        if required:
            raise MappingError(f"{key}: required table is missing")
        return {}
    if not isinstance(value, dict):
        raise MappingError(f"{key}: expected a table")
    return value


def _str(data: Mapping[str, Any], name: str, required: bool = False, default: Any = None) -> Any:
    key = name.rsplit(".", 1)[-1]
    value = data.get(key, default)
    if value is None and required:
        raise MappingError(f"{name}: required key is missing")
    if value is not None and (not isinstance(value, str) or not value):
        raise MappingError(f"{name}: expected a non-empty string")
    return value


def _str_list(data: Mapping[str, Any], name: str, key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise MappingError(f"{name}: expected a list of non-empty strings")
    return value


def _str_map(data: Mapping[str, Any], name: str, key: str) -> dict[str, str]:
    value = data.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise MappingError(f'{name}: expected a table of attribute = "column"')
    return dict(value)
