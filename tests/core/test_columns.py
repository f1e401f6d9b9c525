"""The fast batch decoder never accepts what the schema rejects, and agrees with it on values."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shardshape.core.columns import columns_of, decode_columns
from shardshape.core.contracts import RequestBatch, encode
from shardshape.models.synthetic import SyntheticStream
from shardshape.streams.validation import MessageOrigin, validate_message

VALID_EVENT = {
    "v": 1,
    "request_id": "r1",
    "ts": 1_700_000_000.5,
    "service": "shop",
    "request_type": "GET /item",
    "user_id": "u1",
    "payload_bytes": 120,
    "response_bytes": None,
    "latency_ms": 31.5,
    "status": "ok",
    "shard_id": None,
    "arm": None,
    "attributes": {"region": "eu", "items": 3, "cached": True},
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([-0.0, 1e308, 1.7976931348623157e308, -1.0, 0, 1, 1.0, 2**63])
    | st.text(max_size=300)
    | st.sampled_from(["ok", "error", "timeout", "rejected", "", "x" * 129, "\ud800"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=70), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def mutated_events(draw: st.DrawFn) -> dict:
    event = dict(VALID_EVENT, attributes=dict(VALID_EVENT["attributes"]))
    for _ in range(draw(st.sampled_from([0] * 8 + [1, 1, 2, 3]))):
        action = draw(st.sampled_from(["set", "delete", "add", "attribute"]))
        field = draw(st.sampled_from(sorted(VALID_EVENT)))
        if action == "set":
            event[field] = draw(json_values)
        elif action == "delete":
            event.pop(field, None)
        elif action == "add":
            event[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
        elif isinstance(event.get("attributes"), dict):
            event["attributes"][draw(st.text(max_size=70))] = draw(json_values)
    return event


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    batch: dict = {"v": 1, "gateway_id": "g1", "sent_ts": 0.0}
    batch["events"] = draw(st.lists(mutated_events(), min_size=0, max_size=3))
    if draw(st.integers(0, 7)) == 0:
        batch[draw(st.sampled_from(["v", "gateway_id", "sent_ts", "events", "extra"]))] = draw(
            json_values
        )
    return json.dumps(batch).encode()


def test_fast_path_accepts_only_what_the_schema_accepts_with_the_same_values() -> None:
    accepted = []

    @settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(messages())
    def check(data: bytes) -> None:
        fast = decode_columns(data)
        if fast is None:
            return
        try:
            batch = RequestBatch.model_validate_json(data, strict=True)
        except ValidationError as error:
            raise AssertionError(f"fast path accepted what the schema rejects: {error}") from None
        gateway_id, columns = fast
        assert gateway_id == batch.gateway_id
        assert columns == columns_of(batch.events)
        accepted.append(data)

    check()
    # Not vacuous: the generator must also produce messages that both accept.
    assert len(accepted) >= 200


def test_fast_path_takes_every_well_formed_batch() -> None:
    events = list(SyntheticStream(seed=3).events(2_000))
    for start in range(0, 2_000, 500):
        data = encode(RequestBatch(gateway_id="g", events=events[start : start + 500]))
        decoded = decode_columns(data)
        assert decoded is not None
        assert decoded[1] == columns_of(events[start : start + 500])


def test_batches_the_fast_path_refuses_still_keep_their_good_events() -> None:
    bad = dict(VALID_EVENT, request_id="bad", ts=-1)
    data = json.dumps({"gateway_id": "g", "events": [VALID_EVENT, bad]}).encode()
    assert decode_columns(data) is None
    result = validate_message(data, MessageOrigin("requests", 0, 7))
    assert result.batch.request_id == ("r1",)
    assert [letter.offset for letter in result.dead_letters] == [7]
    assert "ts" in result.dead_letters[0].reason
