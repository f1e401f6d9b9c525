"""A synthetic request stream with planted profiles, for tests and benchmarks.

Five planted profiles (median latency, spread as the sigma of log latency, error rate):

====  ==============  ===============  ====================  ===========  =====  ======
 id   name            request type     who / what            latency      sigma  errors
====  ==============  ===============  ====================  ===========  =====  ======
 0    browse          ``GET /item``    any user              12 ms        0.25   0.2%
 1    search          ``GET /search``  any user              150 ms       0.25   1%
 2    render-small    ``POST /render`` ``pages`` 1 to 3      1.2 s        0.2    0.5%
 3    render-large    ``POST /render`` ``pages`` 40 to 60    15 s         0.2    2%
 4    bulk-tenant     ``GET /search``  users ``bulk-0..19``  3 s          0.25   5%
====  ==============  ===============  ====================  ===========  =====  ======

Profiles 2 and 3 share a request type and differ by a numeric attribute; profile 4 shares
profile 1's request type and differs only by who calls, so it is found through key history.
With ``drift_at=n``, from event ``n`` on ``browse`` slows to 400 ms (a new behaviour, its
requests unchanged). With ``scraper_share > 0``, a key ``scraper`` (profile 5) calls
``GET /item`` that often and fails 80% of the time.

>>> stream = SyntheticStream(seed=7)
>>> [(e.request_type, label) for e, label in stream.labelled(3)]
[('POST /render', 2), ('GET /item', 0), ('GET /search', 4)]
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from shardshape.core.contracts import RequestEvent


@dataclass(frozen=True)
class PlantedProfile:
    name: str
    request_type: str
    share: float
    latency_ms: float
    sigma: float
    error_rate: float
    payload_bytes: float


PROFILES: tuple[PlantedProfile, ...] = (
    PlantedProfile("browse", "GET /item", 0.35, 12.0, 0.25, 0.002, 300.0),
    PlantedProfile("search", "GET /search", 0.25, 150.0, 0.25, 0.01, 1_200.0),
    PlantedProfile("render-small", "POST /render", 0.15, 1_200.0, 0.2, 0.005, 20_000.0),
    PlantedProfile("render-large", "POST /render", 0.10, 15_000.0, 0.2, 0.02, 20_000.0),
    PlantedProfile("bulk-tenant", "GET /search", 0.15, 3_000.0, 0.25, 0.05, 2_000.0),
)
SCRAPER = 5
DRIFTED_BROWSE_MS = 400.0


class SyntheticStream:
    """Seedable generator of labelled :class:`RequestEvent` s.

    Parameters
    ----------
    seed
        Random seed; equal seeds give equal streams.
    drift_at
        Event index from which ``browse`` slows down (None: no drift).
    users
        Size of the general user population.
    rate_per_s
        Mean arrival rate of the whole stream.
    scraper_share
        Share of events from the misbehaving ``scraper`` key.
    """

    def __init__(
        self,
        seed: int = 0,
        drift_at: int | None = None,
        users: int = 500,
        rate_per_s: float = 200.0,
        scraper_share: float = 0.0,
        start_ts: float = 1_700_000_000.0,
    ) -> None:
        self.seed = seed
        self.drift_at = drift_at
        self.users = users
        self.rate_per_s = rate_per_s
        self.scraper_share = scraper_share
        self.start_ts = start_ts

    def labelled(self, n: int) -> Iterator[tuple[RequestEvent, int]]:
        """``n`` events with their planted profile id."""
        rng = random.Random(self.seed)
        ts = self.start_ts
        weights = [p.share for p in PROFILES]
        for i in range(n):
            ts += rng.expovariate(self.rate_per_s)
            if rng.random() < self.scraper_share:
                yield self._scraper(rng, i, ts), SCRAPER
                continue
            label = rng.choices(range(len(PROFILES)), weights)[0]
            p = PROFILES[label]
            median = p.latency_ms
            if label == 0 and self.drift_at is not None and i >= self.drift_at:
                median = DRIFTED_BROWSE_MS
            attributes: dict[str, float | bool | str] = {"region": rng.choice(("eu", "us"))}
            if label in (2, 3):
                attributes["pages"] = float(
                    rng.randint(1, 3) if label == 2 else rng.randint(40, 60)
                )
            user = f"bulk-{rng.randrange(20)}" if label == 4 else f"u{rng.randrange(self.users)}"
            yield (
                RequestEvent(
                    request_id=f"s{self.seed}-{i}",
                    ts=ts,
                    service="shop",
                    request_type=p.request_type,
                    user_id=user,
                    payload_bytes=round(p.payload_bytes * math.exp(rng.gauss(0, 0.3))),
                    response_bytes=None,
                    latency_ms=median * math.exp(rng.gauss(0, p.sigma)),
                    status="error" if rng.random() < p.error_rate else "ok",
                    attributes=attributes,
                ),
                label,
            )

    def events(self, n: int) -> Iterator[RequestEvent]:
        """``n`` events without labels."""
        for event, _ in self.labelled(n):
            yield event

    def _scraper(self, rng: random.Random, i: int, ts: float) -> RequestEvent:
        return RequestEvent(
            request_id=f"s{self.seed}-{i}",
            ts=ts,
            service="shop",
            request_type="GET /item",
            user_id="scraper",
            payload_bytes=300,
            latency_ms=12.0 * math.exp(rng.gauss(0, 0.25)),
            status="error" if rng.random() < 0.8 else "ok",
            attributes={"region": "eu"},
        )


def distinct_users(n: int, start: int = 0, seed: int = 0) -> Iterator[RequestEvent]:
    """``n`` events of the synthetic profiles, each from a user never seen before: user ids
    ``user-<start>`` on, and times after those of any call with a smaller ``start``.

    A stream of ever new profile keys, for memory bounds.

    >>> [e.user_id for e in distinct_users(3, start=10)]
    ['user-10', 'user-11', 'user-12']
    """
    stream = SyntheticStream(seed=seed, rate_per_s=1_000.0, start_ts=1_700_000_000.0 + start)
    for i, event in enumerate(stream.events(n)):
        yield event.model_copy(update={"user_id": f"user-{start + i}"})
