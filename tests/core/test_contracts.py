"""Wire contracts: round trips, hostile input, salvage, dead letters and exported schemas.

Every rejection must be a :class:`ContractError` with a readable reason and an error class;
any other exception type (TypeError, RecursionError, UnicodeError, ...) fails the test.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shardshape.core.contracts import (
    CONTRACTS,
    MAX_ATTRIBUTES,
    MAX_BATCH_EVENTS,
    MAX_ID_CHARS,
    MAX_LABEL_CHARS,
    MAX_MESSAGE_BYTES,
    MAX_TEXT_CHARS,
    AllocationPlan,
    Arm,
    ArmOverrides,
    CachePolicy,
    Contract,
    ContractError,
    DeadLetter,
    Experiment,
    RequestBatch,
    RequestEvent,
    ResourceSpec,
    RoutingEntry,
    ShardProfile,
    ShardSnapshot,
    ShardSpec,
    dead_letter,
    decode,
    decode_requests,
    encode,
    json_schemas,
    salvage_requests,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
THOROUGH = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A minimal valid event as a plain JSON object; tests break one thing about it at a time.
BASE_EVENT: dict[str, Any] = {
    "v": 1,
    "request_id": "r-1",
    "ts": 1_700_000_000.25,
    "service": "api",
    "request_type": "GET /items",
}
STRING_FIELDS = ("request_id", "service", "request_type", "user_id", "arm")
NUMBER_FIELDS = ("ts", "payload_bytes", "response_bytes", "latency_ms", "shard_id")
SIZE_FIELDS = ("ts", "payload_bytes", "response_bytes", "latency_ms")


# --------------------------------------------------------------------------------------------
# helpers


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def batch_bytes(events: list[Any], **envelope: Any) -> bytes:
    return dumps({"v": 1, "gateway_id": "gw-1", "sent_ts": 2.0, **envelope, "events": events})


def assert_readable(err: ContractError) -> ContractError:
    assert isinstance(err, ContractError)
    assert isinstance(err, ValueError)
    assert isinstance(err.reason, str)
    assert err.reason.strip(), "reason must not be empty"
    assert str(err) == err.reason
    assert isinstance(err.error_class, str)
    assert err.error_class.strip(), "error_class must not be empty"
    return err


def rejected(func: Callable[..., Any], *args: Any) -> ContractError:
    """Call ``func``; it must raise ContractError (any other exception propagates and fails)."""
    with pytest.raises(ContractError) as info:
        func(*args)
    return assert_readable(info.value)


def rejected_everywhere(data: Any, *, salvage: bool = True) -> list[ContractError]:
    """``data`` is no contract at all: decode of every contract, decode_requests, salvage."""
    errors = [rejected(decode, model, data) for model in CONTRACTS]
    errors.append(rejected(decode_requests, data))
    if salvage:
        errors.append(rejected(salvage_requests, data))
    return errors


def rejected_as_event(event: dict[str, Any]) -> ContractError:
    """An otherwise good event that is bad must be rejected alone, in a batch, and by salvage."""
    raw = dumps(event)
    err = rejected(decode, RequestEvent, raw)
    assert rejected(decode_requests, raw).reason == err.reason
    rejected(decode_requests, batch_bytes([BASE_EVENT, event]))
    rejected(decode, RequestBatch, batch_bytes([event]))
    good, bad = salvage_requests(batch_bytes([BASE_EVENT, event, BASE_EVENT]))
    assert good == [decode(RequestEvent, dumps(BASE_EVENT))] * 2
    assert len(bad) == 1
    assert orjson.loads(bad[0][0]) == event
    assert assert_readable(bad[0][1]).reason == err.reason
    return err


def expect_error_in_salvage(data: bytes) -> None:
    """A batch-shaped message with one bad event: salvage rejects it whole or isolates it."""
    try:
        good, bad = salvage_requests(data)
    except ContractError as err:
        assert_readable(err)
        return
    assert len(bad) == 1
    assert_readable(bad[0][1])
    assert len(good) == 1


# --------------------------------------------------------------------------------------------
# strategies

ids = st.text(min_size=1, max_size=MAX_ID_CHARS)
optional_ids = st.text(max_size=MAX_ID_CHARS)
labels = st.text(max_size=MAX_LABEL_CHARS)
finite = st.floats(allow_nan=False, allow_infinity=False)
non_negative = st.floats(min_value=0, allow_nan=False, allow_infinity=False)
counts = st.integers(min_value=0, max_value=2**63 - 1)
attribute_values = st.one_of(finite, st.booleans(), labels)
attributes = st.dictionaries(
    st.text(min_size=1, max_size=64), attribute_values, max_size=MAX_ATTRIBUTES
)

valid_events = st.builds(
    RequestEvent,
    request_id=ids,
    ts=non_negative,
    service=ids,
    request_type=ids,
    user_id=optional_ids,
    payload_bytes=non_negative,
    response_bytes=st.none() | non_negative,
    latency_ms=st.none() | non_negative,
    status=st.sampled_from(["ok", "error", "timeout", "rejected"]),
    shard_id=st.none() | counts,
    arm=st.none() | optional_ids,
    attributes=attributes,
)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), finite, st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

# Byte sequences that are never valid UTF-8: stray continuation, truncated sequences,
# overlong encodings, encoded surrogates, code points above U+10FFFF, bytes 0xF5-0xFF.
INVALID_UTF8 = [
    b"\x80",
    b"\xbf",
    b"\xc3",
    b"\xc3\x28",
    b"\xe2\x82",
    b"\xe2\x28\xa1",
    b"\xf0\x9f\x98",
    b"\xc0\xaf",
    b"\xc1\xbf",
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xfe",
    b"\xff",
]


# --------------------------------------------------------------------------------------------
# round trips


def full_event(**overrides: Any) -> RequestEvent:
    fields: dict[str, Any] = {
        "request_id": "req-42",
        "ts": 1_700_000_123.456,
        "service": "checkout",
        "request_type": "POST /orders",
        "user_id": "tenant-7/user-3",
        "payload_bytes": 2048.0,
        "response_bytes": 512.5,
        "latency_ms": 12.75,
        "status": "timeout",
        "shard_id": 3,
        "arm": "B",
        "attributes": {"region": "eu-west", "retries": 2.0, "cached": True, "ratio": 0.125},
    }
    fields.update(overrides)
    return RequestEvent(**fields)


def full_plan() -> AllocationPlan:
    spec = ShardSpec(
        shard_id=1,
        priority=10,
        slo_p99_ms=250.0,
        blocks={"small": 3, "io-heavy": 1},
        resources=ResourceSpec(
            cpu_millicores=3000,
            memory_mib=4096,
            io_weight=500,
            net_mbit=100.0,
            concurrency=48,
            queue_size=200,
            queue_timeout_ms=1500.0,
        ),
        per_replica=ResourceSpec(cpu_millicores=1000, memory_mib=1365, concurrency=16),
        cache=CachePolicy(policy="lru", size=10_000, ttl_s=30.0),
        forecast_rps=1234.5,
    )
    experiment = Experiment(
        experiment_id="exp-1",
        shard_id=1,
        arms=[
            Arm(name="A", weight=0.5),
            Arm(
                name="B",
                weight=0.5,
                overrides=ArmOverrides(
                    cache=CachePolicy(policy="ttl", size=500, ttl_s=5.0),
                    block_type="io-heavy",
                    concurrency=8,
                    queue_timeout_ms=250.0,
                ),
            ),
        ],
        primary_metric="cost_per_request",
        started_ts=1_700_000_000.0,
        max_duration_s=900.0,
        status="running",
    )
    return AllocationPlan(
        plan_id="plan-9",
        version=9,
        service="checkout",
        pool_id="pool-eu",
        created_ts=1_700_000_100.0,
        snapshot_version=4,
        replicas=["gw-a", "gw-b", "gw-c"],
        shards=[spec, ShardSpec(shard_id=0)],
        experiments=[experiment],
        rationale="forecast +20% on shard 1; experiment B trades cache for concurrency",
    )


def full_snapshot() -> ShardSnapshot:
    return ShardSnapshot(
        service="checkout",
        version=4,
        created_ts=1_700_000_050.0,
        feature_names=["log_payload", "hour_sin", "is_write"],
        shards=[
            ShardProfile(
                shard_id=0,
                summary="cheap reads",
                centroid=[0.1, 0.2, 0.0],
                weight=0.9,
                latency_ms_p50=3.5,
                error_rate=0.001,
            ),
            ShardProfile(shard_id=7, summary="scraper", centroid=[9.0, -1.0, 1.0], quarantine=True),
        ],
        default_shard=0,
        quarantine_shard=7,
        model={
            "weights": [[0.5, -0.25, 1.0], [1.5, 0.0, -2.0]],
            "bias": [0.1, -0.1],
            "temperature": 1.5,
            "kind": "nearest-centroid",
        },
    )


ROUND_TRIP_EXAMPLES: list[Contract] = [
    RequestEvent(request_id="r1", ts=0.0, service="s", request_type="t"),
    full_event(),
    full_event(attributes={}, shard_id=None, arm=None, response_bytes=None, latency_ms=None),
    RequestBatch(gateway_id="gw-1", sent_ts=1.5, events=[full_event(), full_event(request_id="x")]),
    RoutingEntry(service="checkout", key="tenant-7|POST /orders", shard_id=3, snapshot_version=4),
    RoutingEntry(
        service="checkout",
        key="k",
        shard_id=0,
        snapshot_version=1,
        confidence=0.75,
        anomalous=True,
        updated_ts=5.0,
    ),
    ShardSnapshot(service="s", version=0),
    full_snapshot(),
    AllocationPlan(plan_id="p", version=0, service="s", pool_id="pool"),
    full_plan(),
    dead_letter(
        b"\xff\x00not json",
        ContractError("not JSON: bad", "json_invalid"),
        source_topic="shardshape.requests",
        partition=2,
        offset=99,
        key=b"\x00key",
        worker="w-1",
        ts=3.0,
    ),
]


@pytest.mark.parametrize(
    "message",
    ROUND_TRIP_EXAMPLES,
    ids=lambda m: type(m).__name__ if isinstance(m, Contract) else "",
)
def test_each_contract_round_trips(message: Contract) -> None:
    data = encode(message)
    assert isinstance(data, bytes)
    assert orjson.loads(data)["v"] == 1
    decoded = decode(type(message), data)
    assert decoded == message
    assert type(decoded) is type(message)
    assert encode(decoded) == data
    # the same bytes as str and bytearray are accepted too
    assert decode(type(message), data.decode()) == message
    assert decode(type(message), bytearray(data)) == message


def test_plan_round_trip_keeps_nested_specs_and_experiments() -> None:
    plan = decode(AllocationPlan, encode(full_plan()))
    assert plan.shards[0].resources.concurrency == 48
    assert plan.shards[0].per_replica.memory_mib == 1365
    assert plan.shards[0].cache.policy == "lru"
    assert plan.shards[0].blocks == {"small": 3, "io-heavy": 1}
    assert plan.experiments[0].arms[1].overrides.block_type == "io-heavy"
    assert plan.experiments[0].arms[1].overrides.cache == CachePolicy(
        policy="ttl", size=500, ttl_s=5.0
    )


def test_decoding_as_the_wrong_contract_is_rejected() -> None:
    for message in ROUND_TRIP_EXAMPLES:
        data = encode(message)
        for model in CONTRACTS:
            if model is not type(message):
                rejected(decode, model, data)


@THOROUGH
@given(event=valid_events)
def test_valid_events_round_trip(event: RequestEvent) -> None:
    data = encode(event)
    decoded = decode(RequestEvent, data)
    assert decoded == event
    # attribute types survive: a bool stays a bool, a numeric-looking string stays a string
    assert {k: type(v) for k, v in decoded.attributes.items()} == {
        k: type(v) for k, v in event.attributes.items()
    }
    assert decode_requests(data) == [event]
    assert decode_requests(data.decode()) == [event]


@FAST
@given(events=st.lists(valid_events, min_size=1, max_size=20), gateway=ids)
def test_valid_batches_round_trip(events: list[RequestEvent], gateway: str) -> None:
    batch = RequestBatch(gateway_id=gateway, sent_ts=1.0, events=events)
    data = encode(batch)
    assert decode(RequestBatch, data) == batch
    assert decode_requests(data) == events
    assert salvage_requests(data) == (events, [])


@pytest.mark.parametrize(
    "event",
    [
        full_event(service="events"),
        full_event(request_type="events"),
        full_event(user_id="events", arm="events"),
        full_event(attributes={"events": 1.0}),
        full_event(attributes={"kind": "events"}),
    ],
)
def test_event_mentioning_events_is_not_mistaken_for_a_batch(event: RequestEvent) -> None:
    assert decode_requests(encode(event)) == [event]
    assert decode_requests(encode(event).decode()) == [event]


def test_single_event_bad_and_mentioning_events_reports_the_event_problem() -> None:
    err = rejected(decode_requests, dumps({**BASE_EVENT, "service": "events", "ts": -1}))
    assert err.reason.startswith("RequestEvent:")
    assert "ts" in err.reason


# --------------------------------------------------------------------------------------------
# hostile input: bytes, encodings, JSON syntax


@THOROUGH
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_are_rejected(data: bytes) -> None:
    rejected_everywhere(data)


@FAST
@given(
    bad=st.sampled_from(INVALID_UTF8),
    prefix=st.text(alphabet="abcxyz-", max_size=10),
    suffix=st.text(alphabet="abcxyz-", max_size=10),
    field=st.sampled_from(["request_id", "service", "request_type", "user_id", "attr"]),
)
def test_invalid_utf8_is_rejected(bad: bytes, prefix: str, suffix: str, field: str) -> None:
    value = prefix.encode() + bad + suffix.encode()
    fields = {k: dumps(v) for k, v in BASE_EVENT.items()}
    if field == "attr":
        fields["attributes"] = b'{"k":"' + value + b'"}'
    else:
        fields[field] = b'"' + value + b'"'
    event = b"{" + b",".join(dumps(k) + b":" + v for k, v in fields.items()) + b"}"
    batch = b'{"v":1,"gateway_id":"g","events":[' + dumps(BASE_EVENT) + b"," + event + b"]}"
    for data in (event, batch, bad, value):
        rejected_everywhere(data)
    assert "unicode" in rejected(decode, RequestEvent, event).reason.lower()
    assert "utf-8" in rejected(salvage_requests, batch).reason.lower()


@FAST
@given(text=st.text(max_size=200))
def test_text_that_is_not_json_is_rejected(text: str) -> None:
    # Python's parser is the oracle: like pydantic's, it reads NaN and Infinity tokens (those
    # are rejected as non-finite or as not an object, tested elsewhere), which orjson refuses.
    try:
        json.loads(text)
    except ValueError:
        pass
    else:
        assume(False)
    for data in (text, text.encode()):
        for err in rejected_everywhere(data):
            assert "JSON" in err.reason
            assert err.error_class == "json_invalid"


@FAST
@given(event=valid_events, data=st.data())
def test_truncated_json_is_rejected(event: RequestEvent, data: st.DataObject) -> None:
    for whole in (encode(event), encode(RequestBatch(gateway_id="g", events=[event]))):
        cut = data.draw(st.integers(min_value=0, max_value=len(whole) - 1))
        truncated = whole[:cut]
        for err in rejected_everywhere(truncated):
            assert "JSON" in err.reason


@pytest.mark.parametrize(
    "data",
    [
        b"{'request_id': 'r'}",  # Python, not JSON
        b'{"request_id": "r",}',  # trailing comma
        b'{"request_id": "r"} {"request_id": "s"}',  # two documents
        b"/* comment */ {}",
        b'{"request_id": "r\x01"}',  # raw control character inside a string
        b'\xef\xbb\xbf{"v": 1}',  # byte order mark
        b"",
        b"   ",
    ],
)
def test_json_syntax_errors_are_rejected(data: bytes) -> None:
    rejected_everywhere(data)


# --------------------------------------------------------------------------------------------
# hostile input: JSON of the wrong shape or types


@THOROUGH
@given(value=json_values)
def test_arbitrary_json_is_rejected(value: Any) -> None:
    # Random JSON is never a complete contract (it lacks the required ids).
    rejected_everywhere(dumps(value))


@THOROUGH
@given(
    fields=st.dictionaries(
        st.sampled_from(
            [*STRING_FIELDS, *NUMBER_FIELDS, "status", "attributes", "v", "extra", "events"]
        ),
        json_values,
        max_size=6,
    )
)
def test_events_with_arbitrary_field_values_decode_consistently(fields: dict[str, Any]) -> None:
    """Whatever the values, decode either yields an event that round-trips or a ContractError."""
    raw = dumps({**BASE_EVENT, **fields})
    try:
        event = decode(RequestEvent, raw)
    except ContractError as err:
        assert_readable(err)
        rejected(decode_requests, raw)
        return
    assert decode(RequestEvent, encode(event)) == event
    assert decode_requests(raw) == [event]


wrong_for_string = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    finite,
    st.booleans(),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
wrong_for_number = st.one_of(
    st.text(max_size=20),
    st.from_regex(r"\A-?[0-9]{1,6}(\.[0-9]{1,3})?\Z"),  # numeric-looking strings too
    st.booleans(),
    st.lists(finite, max_size=3),
    st.dictionaries(st.text(max_size=5), finite, max_size=3),
)
wrong_for_object = st.one_of(
    st.lists(json_scalars, max_size=4), st.text(max_size=20), finite, st.booleans()
)


@FAST
@given(field=st.sampled_from(STRING_FIELDS), value=wrong_for_string)
def test_numbers_and_others_for_strings_are_rejected(field: str, value: Any) -> None:
    err = rejected_as_event({**BASE_EVENT, field: value})
    assert field in err.reason


@FAST
@given(field=st.sampled_from(NUMBER_FIELDS), value=wrong_for_number)
def test_strings_and_others_for_numbers_are_rejected(field: str, value: Any) -> None:
    err = rejected_as_event({**BASE_EVENT, field: value})
    assert field in err.reason


@FAST
@given(value=wrong_for_object)
def test_non_objects_for_attributes_are_rejected(value: Any) -> None:
    err = rejected_as_event({**BASE_EVENT, "attributes": value})
    assert "attributes" in err.reason


@FAST
@given(
    value=st.one_of(
        st.none(),
        st.lists(json_scalars, max_size=3),
        st.dictionaries(st.text(max_size=4), json_scalars, max_size=3),
    )
)
def test_wrong_attribute_values_are_rejected(value: Any) -> None:
    err = rejected_as_event({**BASE_EVENT, "attributes": {"k": value}})
    assert "attributes.k" in err.reason


@pytest.mark.parametrize("status", ["OK", "fail", "", 1, None, True])
def test_unknown_status_is_rejected(status: Any) -> None:
    assert "status" in rejected_as_event({**BASE_EVENT, "status": status}).reason


@pytest.mark.parametrize("field", ["request_id", "ts", "service", "request_type"])
def test_missing_required_fields_are_rejected(field: str) -> None:
    event = {k: v for k, v in BASE_EVENT.items() if k != field}
    err = rejected_as_event(event)
    assert field in err.reason
    assert "required" in err.reason


def test_unknown_fields_are_rejected() -> None:
    err = rejected_as_event({**BASE_EVENT, "surprise": 1})
    assert "surprise" in err.reason


@FAST
@given(wrapper=wrong_for_object)
def test_non_object_messages_are_rejected(wrapper: Any) -> None:
    rejected_everywhere(dumps(wrapper))
    rejected_everywhere(dumps([BASE_EVENT]))


@FAST
@given(events=st.one_of(wrong_for_object.filter(lambda v: not isinstance(v, list)), st.none()))
def test_batch_whose_events_is_not_a_list_is_rejected(events: Any) -> None:
    data = dumps({"v": 1, "gateway_id": "g", "events": events})
    rejected(decode, RequestBatch, data)
    rejected(decode_requests, data)
    assert rejected(salvage_requests, data).error_class == "shape"


def test_batch_envelope_errors_are_rejected() -> None:
    for envelope in ({"gateway_id": ""}, {"gateway_id": 7}, {"sent_ts": -1}, {"extra": 1}):
        data = batch_bytes([BASE_EVENT], **envelope)
        rejected(decode, RequestBatch, data)
        rejected(decode_requests, data)
    rejected(decode_requests, dumps({"v": 1, "events": [BASE_EVENT]}))


# --------------------------------------------------------------------------------------------
# versions


@FAST
@given(
    version=st.one_of(
        st.integers(-(2**63), 2**63 - 1).filter(lambda v: v != 1),
        st.text(max_size=5),
        st.none(),
        st.lists(st.integers(-5, 5), max_size=2),
    )
)
def test_unknown_version_is_rejected_with_a_version_reason(version: Any) -> None:
    for message in ROUND_TRIP_EXAMPLES:
        body = orjson.loads(encode(message))
        body["v"] = version
        err = rejected(decode, type(message), dumps(body))
        assert "version" in err.reason
        assert err.error_class == "version"

    event = {**BASE_EVENT, "v": version}
    err = rejected_as_event(event)
    assert "version" in err.reason

    batch = batch_bytes([BASE_EVENT], v=version)
    assert "version" in rejected(decode_requests, batch).reason
    # salvage must not read the events of another version's batch as v1 events
    err = rejected(salvage_requests, batch)
    assert "version" in err.reason
    assert err.error_class == "version"


def test_version_reason_names_the_supported_version() -> None:
    err = rejected(decode, RequestEvent, dumps({**BASE_EVENT, "v": 2}))
    assert "v1" in err.reason
    assert err.reason.startswith("RequestEvent:")


# --------------------------------------------------------------------------------------------
# numbers: NaN, infinity, negatives


NON_FINITE_TOKENS = [b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"9" * 400]


def with_raw_value(event: dict[str, Any], field: str, token: bytes) -> bytes:
    """Event JSON with ``field`` set to the raw JSON token (which orjson would not write)."""
    placeholder = "__PLACEHOLDER__"
    if field.startswith("attributes."):
        body = {**event, "attributes": {field.split(".", 1)[1]: placeholder}}
    else:
        body = {**event, field: placeholder}
    return dumps(body).replace(b'"' + placeholder.encode() + b'"', token)


@pytest.mark.parametrize(
    ("field", "token"),
    [
        (field, token)
        for field in (*SIZE_FIELDS, "shard_id", "attributes.load")
        for token in NON_FINITE_TOKENS
        # 400 nines is a finite (if absurd) integer, which shard_id accepts
        if not (field == "shard_id" and token.isdigit())
    ],
)
def test_non_finite_numbers_are_rejected(field: str, token: bytes) -> None:
    event = with_raw_value(BASE_EVENT, field, token)
    reason = rejected(decode, RequestEvent, event).reason
    assert field.split(".")[0] in reason or "JSON" in reason
    rejected(decode_requests, event)
    batch = b'{"v":1,"gateway_id":"g","events":[' + dumps(BASE_EVENT) + b"," + event + b"]}"
    rejected(decode, RequestBatch, batch)
    rejected(decode_requests, batch)
    expect_error_in_salvage(batch)


@pytest.mark.parametrize("token", NON_FINITE_TOKENS)
def test_non_finite_numbers_in_other_contracts_are_rejected(token: bytes) -> None:
    cases: list[tuple[type[Contract], Contract, str]] = [
        (RoutingEntry, ROUND_TRIP_EXAMPLES[4], "confidence"),
        (RoutingEntry, ROUND_TRIP_EXAMPLES[4], "updated_ts"),
        (ShardSnapshot, full_snapshot(), "created_ts"),
        (AllocationPlan, full_plan(), "created_ts"),
        (DeadLetter, ROUND_TRIP_EXAMPLES[-1], "ts"),
    ]
    for model, message, field in cases:
        rejected(decode, model, with_raw_value(orjson.loads(encode(message)), field, token))
    # nested: a centroid coordinate and a forecast
    snapshot = encode(full_snapshot()).replace(b"[0.1,0.2,0.0]", b"[0.1," + token + b",0.0]")
    rejected(decode, ShardSnapshot, snapshot)
    plan = encode(full_plan()).replace(b'"forecast_rps":1234.5', b'"forecast_rps":' + token)
    rejected(decode, AllocationPlan, plan)


@FAST
@given(
    field=st.sampled_from(SIZE_FIELDS),
    value=st.one_of(
        st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=False),
        st.integers(max_value=-1, min_value=-(2**63)),
    ),
)
def test_negative_times_sizes_and_latencies_are_rejected(field: str, value: float) -> None:
    err = rejected_as_event({**BASE_EVENT, field: value})
    assert field in err.reason
    assert "greater than or equal to 0" in err.reason


@FAST
@given(value=st.integers(max_value=-1, min_value=-(2**63)))
def test_negative_counts_are_rejected(value: int) -> None:
    assert "shard_id" in rejected_as_event({**BASE_EVENT, "shard_id": value}).reason
    entry = orjson.loads(encode(ROUND_TRIP_EXAMPLES[4]))
    for field in ("shard_id", "snapshot_version"):
        rejected(decode, RoutingEntry, dumps({**entry, field: value}))


@pytest.mark.parametrize("value", [1.5, 2.0000001, -0.5])
def test_fractional_shard_ids_are_rejected(value: float) -> None:
    assert "shard_id" in rejected_as_event({**BASE_EVENT, "shard_id": value}).reason


@pytest.mark.parametrize("confidence", [-0.01, 1.01, 100])
def test_fractions_out_of_range_are_rejected(confidence: float) -> None:
    entry = orjson.loads(encode(ROUND_TRIP_EXAMPLES[4]))
    err = rejected(decode, RoutingEntry, dumps({**entry, "confidence": confidence}))
    assert "confidence" in err.reason


# --------------------------------------------------------------------------------------------
# limits: strings, attributes, batches, nesting, message size


LIMITED_STRINGS = [
    ("request_id", MAX_ID_CHARS),
    ("service", MAX_ID_CHARS),
    ("request_type", MAX_ID_CHARS),
    ("user_id", MAX_ID_CHARS),
    ("arm", MAX_ID_CHARS),
]


@FAST
@given(
    spec=st.sampled_from(LIMITED_STRINGS),
    extra=st.integers(min_value=1, max_value=300),
    char=st.characters(exclude_categories=["Cs"]),
)
def test_over_long_strings_are_rejected(spec: tuple[str, int], extra: int, char: str) -> None:
    field, limit = spec
    err = rejected_as_event({**BASE_EVENT, field: char * (limit + extra)})
    assert field in err.reason
    assert str(limit) in err.reason
    # exactly at the limit is fine
    assert getattr(decode(RequestEvent, dumps({**BASE_EVENT, field: char * limit})), field)


@FAST
@given(extra=st.integers(min_value=1, max_value=300))
def test_over_long_attribute_names_and_values_are_rejected(extra: int) -> None:
    err = rejected_as_event({**BASE_EVENT, "attributes": {"k" * (64 + extra): 1.0}})
    assert "attributes" in err.reason
    err = rejected_as_event({**BASE_EVENT, "attributes": {"k": "x" * (MAX_LABEL_CHARS + extra)}})
    assert "attributes.k" in err.reason
    rejected(
        decode, RequestBatch, batch_bytes([BASE_EVENT], gateway_id="g" * (MAX_ID_CHARS + extra))
    )


@pytest.mark.parametrize("field", ["request_id", "service", "request_type"])
def test_empty_ids_are_rejected(field: str) -> None:
    assert field in rejected_as_event({**BASE_EVENT, field: ""}).reason


def test_empty_attribute_name_is_rejected() -> None:
    rejected_as_event({**BASE_EVENT, "attributes": {"": 1.0}})


@FAST
@given(extra=st.integers(min_value=1, max_value=100))
def test_too_many_attributes_are_rejected(extra: int) -> None:
    attrs = {f"a{i}": float(i) for i in range(MAX_ATTRIBUTES + extra)}
    err = rejected_as_event({**BASE_EVENT, "attributes": attrs})
    assert "attributes" in err.reason
    ok = {f"a{i}": float(i) for i in range(MAX_ATTRIBUTES)}
    assert decode(RequestEvent, dumps({**BASE_EVENT, "attributes": ok})).attributes == ok


@pytest.mark.parametrize("count", [MAX_BATCH_EVENTS + 1, MAX_BATCH_EVENTS + 250])
def test_batches_over_the_event_limit_are_rejected(count: int) -> None:
    data = batch_bytes([BASE_EVENT] * count)
    assert len(data) < MAX_MESSAGE_BYTES
    err = rejected(decode, RequestBatch, data)
    assert "events" in err.reason
    rejected(decode_requests, data)
    err = rejected(salvage_requests, data)
    assert str(MAX_BATCH_EVENTS) in err.reason
    # the limit itself is fine
    assert len(decode_requests(batch_bytes([BASE_EVENT] * MAX_BATCH_EVENTS))) == MAX_BATCH_EVENTS


def test_empty_batches_are_rejected_and_salvage_nothing() -> None:
    data = batch_bytes([])
    assert "events" in rejected(decode, RequestBatch, data).reason
    assert "events" in rejected(decode_requests, data).reason
    assert salvage_requests(data) == ([], [])


def nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth  # unterminated


@pytest.mark.parametrize("kind", ["array", "object", "open"])
@pytest.mark.parametrize("depth", [150, 300, 1_100, 100_000])
def test_deeply_nested_json_is_rejected_without_crashing(depth: int, kind: str) -> None:
    deep = nested(depth, kind)
    rejected_everywhere(deep)
    head = dumps(BASE_EVENT)[:-1]
    in_attribute = head + b',"attributes":{"k":' + deep + b"}}"
    for data in (in_attribute, head + b',"extra":' + deep + b"}"):
        rejected(decode, RequestEvent, data)
        rejected(decode_requests, data)
    in_batch = b'{"v":1,"gateway_id":"g","events":[' + dumps(BASE_EVENT) + b"," + deep + b"]}"
    rejected(decode, RequestBatch, in_batch)
    rejected(decode_requests, in_batch)
    expect_error_in_salvage(in_batch)
    expect_error_in_salvage(in_batch.replace(deep, in_attribute))


@FAST
@given(depth=st.integers(min_value=1, max_value=5_000), kind=st.sampled_from(["array", "object"]))
def test_nesting_at_any_depth_never_crashes(depth: int, kind: str) -> None:
    rejected_everywhere(nested(depth, kind))


def test_messages_over_the_size_limit_are_rejected() -> None:
    padding = b" " * (MAX_MESSAGE_BYTES + 1 - len(dumps(BASE_EVENT)))
    event = dumps(BASE_EVENT)[:-1] + padding + b"}"
    assert len(event) == MAX_MESSAGE_BYTES + 1
    # it is otherwise valid: a trimmed copy decodes
    assert decode(RequestEvent, event.replace(padding, b""))
    for data in (event, event.decode(), bytearray(event)):
        errors = [rejected(decode, model, data) for model in CONTRACTS if model is not DeadLetter]
        errors += [rejected(decode_requests, data), rejected(salvage_requests, data)]
        for err in errors:
            assert err.error_class == "too_large"
            assert str(MAX_MESSAGE_BYTES) in err.reason
    huge = b"x" * (4 * MAX_MESSAGE_BYTES)
    assert rejected(decode, DeadLetter, huge).error_class == "too_large"
    assert rejected(decode_requests, batch_bytes([BASE_EVENT]) + huge).error_class == "too_large"


@pytest.mark.parametrize("value", [None, 0, 1, 1.5, True, [], {}, ["x"], object(), RequestEvent])
def test_non_bytes_input_is_rejected(value: Any) -> None:
    for err in rejected_everywhere(value):
        assert err.error_class == "type"
        assert "expected bytes" in err.reason


def test_memoryview_input_never_raises_anything_else() -> None:
    event = decode(RequestEvent, dumps(BASE_EVENT))
    view = memoryview(dumps(BASE_EVENT))
    # decode may or may not accept a memoryview, but only ever as the event or a ContractError
    try:
        assert decode(RequestEvent, view) == event
    except ContractError as err:
        assert_readable(err)
    try:
        assert decode_requests(view) == [event]
    except ContractError as err:
        assert_readable(err)
    assert salvage_requests(memoryview(batch_bytes([BASE_EVENT])))[0] == decode_requests(
        batch_bytes([BASE_EVENT])
    )


# --------------------------------------------------------------------------------------------
# salvage


bad_event_items = st.one_of(
    st.sampled_from(
        [
            {**BASE_EVENT, "ts": -1},
            {**BASE_EVENT, "v": 2},
            {**BASE_EVENT, "service": ""},
            {**BASE_EVENT, "request_id": 7},
            {**BASE_EVENT, "payload_bytes": "12"},
            {**BASE_EVENT, "status": "boom"},
            {**BASE_EVENT, "attributes": [1, 2]},
            {**BASE_EVENT, "unknown": True},
            {k: v for k, v in BASE_EVENT.items() if k != "ts"},
            {},
        ]
    ),
    json_scalars,
    st.lists(json_scalars, max_size=3),
)


@THOROUGH
@given(
    items=st.lists(
        st.one_of(
            valid_events.map(lambda e: ("good", e)), bad_event_items.map(lambda b: ("bad", b))
        ),
        min_size=1,
        max_size=25,
    )
)
def test_salvage_keeps_good_events_and_reports_each_bad_one(items: list[tuple[str, Any]]) -> None:
    raw_items = [orjson.loads(encode(x)) if kind == "good" else x for kind, x in items]
    data = batch_bytes(raw_items)
    good, bad = salvage_requests(data)
    assert good == [x for kind, x in items if kind == "good"]
    expected_bad = [x for kind, x in items if kind == "bad"]
    assert len(bad) == len(expected_bad)
    for (raw, err), original in zip(bad, expected_bad, strict=True):
        assert isinstance(raw, bytes)
        assert orjson.loads(raw) == original
        assert assert_readable(err).reason.startswith("RequestEvent:")
        # the reported raw bytes are enough to reproduce the same rejection
        assert rejected(decode, RequestEvent, raw).reason == err.reason
    if expected_bad:
        rejected(decode_requests, data)
    else:
        assert decode_requests(data) == good


def test_salvage_reasons_name_the_problem() -> None:
    data = batch_bytes(
        [BASE_EVENT, {**BASE_EVENT, "ts": -5}, {**BASE_EVENT, "v": 3}, "oops", BASE_EVENT]
    )
    good, bad = salvage_requests(data)
    assert len(good) == 2
    reasons = [err.reason for _, err in bad]
    assert "ts" in reasons[0]
    assert "version" in reasons[1]
    assert bad[1][1].error_class == "version"
    assert "object" in reasons[2]


@pytest.mark.parametrize(
    "data",
    [
        dumps(BASE_EVENT),
        dumps([BASE_EVENT]),
        dumps({"events": {"0": BASE_EVENT}}),
        dumps({"events": None}),
        dumps({"events": "[]"}),
        dumps({"gateway_id": "g"}),
        dumps("events"),
        dumps(5),
        b"null",
        b"not json",
        b'{"events": [',
        b"\x00\x01\x02",
    ],
)
def test_salvage_rejects_non_batch_input(data: bytes) -> None:
    rejected(salvage_requests, data)


def test_salvage_bad_events_become_dead_letters_that_round_trip() -> None:
    _, bad = salvage_requests(batch_bytes([BASE_EVENT, {**BASE_EVENT, "latency_ms": -1}]))
    ((raw, err),) = bad
    letter = dead_letter(raw, err, source_topic="shardshape.requests", partition=0, offset=5)
    assert letter.original() == raw
    again = decode(DeadLetter, encode(letter))
    assert again == letter
    assert again.reason == err.reason
    assert again.error_class == err.error_class


# --------------------------------------------------------------------------------------------
# dead letters


@THOROUGH
@given(
    data=st.one_of(st.binary(max_size=2_000), st.sampled_from(INVALID_UTF8)),
    key=st.none() | st.binary(max_size=64),
    reason=st.text(min_size=1, max_size=300),
    error_class=st.text(min_size=1, max_size=40),
    partition=st.integers(-1, 1_000),
    offset=st.integers(-1, 2**62),
    worker=st.text(max_size=40),
    ts=non_negative,
)
def test_dead_letter_keeps_the_original_bytes_exactly(
    data: bytes,
    key: bytes | None,
    reason: str,
    error_class: str,
    partition: int,
    offset: int,
    worker: str,
    ts: float,
) -> None:
    letter = dead_letter(
        data,
        ContractError(reason, error_class),
        source_topic="shardshape.requests",
        partition=partition,
        offset=offset,
        key=key,
        worker=worker,
        ts=ts,
    )
    assert letter.original() == data
    assert letter.reason == reason
    assert letter.error_class == error_class
    assert (base64.b64decode(letter.key_b64) if letter.key_b64 is not None else None) == key
    again = decode(DeadLetter, encode(letter))
    assert again == letter
    assert again.original() == data
    assert (again.partition, again.offset, again.worker, again.ts) == (
        partition,
        offset,
        worker,
        ts,
    )


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff", b"\xed\xa0\x80", b"\x00" * 100, bytes(range(256)), b"\xc3(" + b"x" * 10],
)
def test_dead_letter_of_rejected_message_round_trips(data: bytes) -> None:
    err = rejected(decode_requests, data)
    letter = dead_letter(data, err, source_topic="shardshape.requests", key=b"\xfe\xff")
    again = decode(DeadLetter, encode(letter))
    assert again.original() == data
    assert again.reason == err.reason
    assert again.error_class == err.error_class
    assert base64.b64decode(again.key_b64 or "") == b"\xfe\xff"


def test_dead_letter_bounds_reason_and_error_class() -> None:
    long_reason = "r" * (MAX_TEXT_CHARS * 3)
    letter = dead_letter(b"x", ContractError(long_reason, "c" * 1000), source_topic="t")
    assert long_reason.startswith(letter.reason)
    assert 0 < len(letter.reason) <= MAX_TEXT_CHARS
    assert 0 < len(letter.error_class) <= MAX_ID_CHARS
    assert decode(DeadLetter, encode(letter)) == letter
    unnamed = dead_letter(b"x", ContractError("why", ""), source_topic="t")
    assert unnamed.error_class == "invalid"
    assert decode(DeadLetter, encode(unnamed)) == unnamed


def test_dead_letter_of_a_maximal_message_round_trips() -> None:
    data = bytes(range(256)) * (MAX_MESSAGE_BYTES // 256)
    assert len(data) == MAX_MESSAGE_BYTES
    letter = dead_letter(data, ContractError("too big to think about", "x"), source_topic="t")
    encoded = encode(letter)
    assert len(encoded) > MAX_MESSAGE_BYTES  # base64 grows it, yet it must still decode
    assert decode(DeadLetter, encoded).original() == data


def test_dead_letter_of_an_over_limit_message_keeps_the_first_limit_bytes() -> None:
    data = b"\xff" * (MAX_MESSAGE_BYTES + 10)
    err = rejected(decode_requests, data)
    assert err.error_class == "too_large"
    letter = dead_letter(data, err, source_topic="t")
    assert letter.original() == data[:MAX_MESSAGE_BYTES]
    assert decode(DeadLetter, encode(letter)).original() == data[:MAX_MESSAGE_BYTES]


def test_dead_letter_contract_rejects_bad_fields() -> None:
    body = orjson.loads(encode(ROUND_TRIP_EXAMPLES[-1]))
    for field, value in (("source_topic", ""), ("reason", None), ("error_class", 3), ("ts", -1)):
        err = rejected(decode, DeadLetter, dumps({**body, field: value}))
        assert field in err.reason
    for field in ("source_topic", "original_b64", "reason", "error_class"):
        rejected(decode, DeadLetter, dumps({k: v for k, v in body.items() if k != field}))


# --------------------------------------------------------------------------------------------
# JSON Schemas


def test_json_schemas_cover_every_contract() -> None:
    schemas = json_schemas()
    names = {
        "RequestEvent",
        "RequestBatch",
        "RoutingEntry",
        "ShardSnapshot",
        "AllocationPlan",
        "DeadLetter",
    }
    assert names <= set(schemas)
    assert set(schemas) == {model.__name__ for model in CONTRACTS}
    for name, schema in schemas.items():
        assert isinstance(schema, dict)
        assert isinstance(schema.get("properties"), dict) and schema["properties"], name
        assert "v" in schema["properties"], name
        assert schema.get("additionalProperties") is False, name
        assert schema.get("type") == "object", name
        # serialisable by both the fast and the standard encoder, and stable through JSON
        assert orjson.loads(orjson.dumps(schema)) == schema
        assert json.loads(json.dumps(schema)) == schema


def test_json_schemas_state_the_limits() -> None:
    schemas = json_schemas()
    event = schemas["RequestEvent"]
    assert set(event["required"]) == {"request_id", "ts", "service", "request_type"}
    assert event["properties"]["request_id"]["maxLength"] == MAX_ID_CHARS
    assert event["properties"]["ts"]["minimum"] == 0
    assert event["properties"]["attributes"]["maxProperties"] == MAX_ATTRIBUTES
    assert event["properties"]["v"]["const"] == 1
    batch = schemas["RequestBatch"]
    assert batch["properties"]["events"]["maxItems"] == MAX_BATCH_EVENTS
    assert batch["properties"]["events"]["minItems"] == 1
    plan = schemas["AllocationPlan"]
    assert {"ShardSpec", "Experiment", "ResourceSpec", "CachePolicy"} <= set(plan["$defs"])
