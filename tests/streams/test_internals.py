"""The private Faust and aiokafka attributes that shardshape patches still exist in the installed
versions (pyproject pins them); a missing one fails naming it."""

from __future__ import annotations

import pytest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from shardshape.streams.internals import INTERNALS, check_internals, missing_internals


def test_every_patched_attribute_exists() -> None:
    missing = missing_internals()
    assert not missing, "an upgrade removed what shardshape patches:\n" + "\n".join(missing)
    users = {internal.user for internal in INTERNALS}
    assert {"streams/fetch_wait.py", "streams/highwater.py", "streams/gaps.py"} <= users


def test_a_removed_attribute_fails_the_start_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(AIOKafkaConsumerThread, "_highwaters")
    with pytest.raises(RuntimeError) as failure:
        check_internals()
    message = str(failure.value)
    assert "AIOKafkaConsumerThread._highwaters (used by streams/highwater.py)" in message
    assert "faust-streaming 0.15" in message and "pins" in message
