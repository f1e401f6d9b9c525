"""The gateway's one-request predict (plain floats, cached request shapes) against the
vectorised batch predict, on seeded models and requests: the same shard for every request."""

from __future__ import annotations

import random

import numpy as np
import pytest

import shardshape.models.predictor as predictor_module
from shardshape.core.contracts import ShardSnapshot, decode, encode
from shardshape.models.features import N_BEHAVIOUR, FeatureSpace, shape_id
from shardshape.models.predictor import Request, Route, ShardPredictor
from shardshape.models.profiler import Profiler
from shardshape.models.synthetic import SyntheticStream

# Request shapes the random requests often take, for the shape memory of a random predictor.
_KNOWN_SHAPES = [
    ("GET /a", {}),
    ("POST /b", {}),
    ("GET /c/{id}", {"region": "eu"}),
    ("GET /a", {"pages": 3.0}),
    ("POST /b", {"pages": 40.0, "region": "us"}),
    ("GET /c/{id}", {"fast": True}),
]


def _random_predictor(seed: int) -> ShardPredictor:
    rng = np.random.default_rng(seed)
    space = FeatureSpace(n_buckets=16)
    ids = [3, 0, 7, 1, 12]
    shapes = np.array(
        [
            [shape_id(t, a), w, w * rng.normal(3.0, 2.0)]
            for (t, a), w in zip(
                _KNOWN_SHAPES, rng.uniform(0.2, 1.0, len(_KNOWN_SHAPES)), strict=True
            )
        ]
    )
    return ShardPredictor(
        space,
        rng.normal(size=(space.n_features, N_BEHAVIOUR)),
        rng.normal(size=(len(ids), N_BEHAVIOUR)) * 3,
        ids,
        rng.uniform(0.1, 2.0, N_BEHAVIOUR),
        quarantine_shard=20,
        lookup_confidence=0.9,
        key_power=2.0,
        shapes=shapes,
    )


def _random_requests(seed: int, n: int) -> tuple[list[Request], list[Route | None]]:
    """Requests of a few shapes with numeric, boolean and text attributes, and routes of every
    kind: none, weak, confident, anomalous, and to a shard the model does not know."""
    rng = random.Random(seed)
    requests, routes = [], []
    for _ in range(n):
        attributes: dict[str, float | bool | str] = {}
        if rng.random() < 0.5:
            attributes["pages"] = float(rng.choice([1, 2, 3, 40, 55, rng.uniform(0, 1e4)]))
        if rng.random() < 0.2:  # a shape of the model's shape memory, attributes in any order
            request_type, known = rng.choice(_KNOWN_SHAPES)
            items = list(known.items())
            rng.shuffle(items)
            requests.append(Request(request_type, rng.uniform(0, 1e4), dict(items)))
            kind = rng.random()
            routes.append(None if kind < 0.5 else Route(rng.choice([3, 0, 7]), rng.uniform(0, 1)))
            continue
        if rng.random() < 0.3:
            attributes["region"] = rng.choice(["eu", "us", "ap"])
        if rng.random() < 0.3:
            attributes["fast"] = rng.random() < 0.5
        payload = rng.choice([0.0, 300.0, rng.uniform(0, 1e6)])
        requests.append(
            Request(rng.choice(["GET /a", "POST /b", "GET /c/{id}"]), payload, attributes)
        )
        kind = rng.random()
        if kind < 0.3:
            routes.append(None)
        else:
            shard = rng.choice([3, 0, 7, 1, 12, 99])
            routes.append(Route(shard, rng.uniform(0, 1), rng.random() < 0.05))
    return requests, routes


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_request_predicts_the_batch_shard_on_a_seeded_model(seed: int) -> None:
    predictor = _random_predictor(seed)
    requests, routes = _random_requests(seed, 3_000)
    many = predictor.predict_many(requests, routes).tolist()
    assert len(set(many)) >= 4  # the seeded set reaches most shards, quarantine included
    for attempt in range(2):  # the second pass reads the cached request shapes
        one = [
            predictor.predict_one(r.request_type, r.payload_bytes, r.attributes, route)
            for r, route in zip(requests, routes, strict=True)
        ]
        assert one == many, f"pass {attempt}"


def test_one_request_predicts_the_batch_shard_when_shapes_are_evicted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(predictor_module, "_SHAPE_CACHE_LIMIT", 3)
    predictor = _random_predictor(4)
    requests, routes = _random_requests(4, 1_000)
    one = [
        predictor.predict_one(r.request_type, r.payload_bytes, r.attributes, route)
        for r, route in zip(requests, routes, strict=True)
    ]
    assert len(predictor._shape_preds) <= 3
    assert one == predictor.predict_many(requests, routes).tolist()


def test_a_gateway_snapshot_predicts_one_request_like_the_profilers_batch() -> None:
    profiler = Profiler("shop")
    events = list(SyntheticStream(seed=11).events(6_000))
    for i in range(0, len(events), 500):
        profiler.process_batch(events[i : i + 500])
    gateway = ShardPredictor.from_snapshot(decode(ShardSnapshot, encode(profiler.snapshot())))
    sample = list(SyntheticStream(seed=12).events(2_000))
    rng = random.Random(12)
    routes = []
    for e in sample:  # known keys with their weak routes too, not only confident ones
        route = profiler.route_of(f"shop|{e.request_type}|{e.user_id}")
        if route is not None and rng.random() < 0.5:
            route = Route(route.shard_id, rng.uniform(0, 0.9), route.anomalous)
        routes.append(route)
    one = [
        gateway.predict_one(e.request_type, e.payload_bytes, e.attributes, r)
        for e, r in zip(sample, routes, strict=True)
    ]
    assert one == profiler.predictor.predict_many(sample, routes).tolist()


def test_the_profiler_predicts_a_batch_as_its_snapshot_does() -> None:
    """The profiler's batch path builds the arrival vectors itself (cached request shapes,
    the shape memory, the key block): the same shards as its predictor from plain inputs."""
    profiler = Profiler("shop")
    events = list(SyntheticStream(seed=13).events(6_000))
    for i in range(0, len(events), 500):
        profiler.process_batch(events[i : i + 500])
    assert len(profiler.predictor.shapes) > 0
    sample = list(SyntheticStream(seed=14).events(2_000))
    routes = [profiler.route_of(f"shop|{e.request_type}|{e.user_id}") for e in sample]
    assert profiler.predict_many(sample) == profiler.predictor.predict_many(sample, routes).tolist()
