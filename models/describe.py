"""Human-readable shard summaries, e.g. ``"TXT_2_IMG 91%, images~8, steps~30, ~45 s"``.

Learns, from sampled events already assigned to a shard, decayed counts of request types and
decayed means of numeric attributes; the typical latency comes from the shard's centroid.

>>> describer = ShardDescriber(top_attributes=1)
>>> for _ in range(9):
...     describer.learn_one(2, "TXT_2_IMG", {"images": 8, "model": "M1"})
>>> describer.learn_one(2, "IMG_2_IMG", {"images": 8})
>>> describer.summary(2, log_latency_ms=10.7, error_rate=0.02)
'TXT_2_IMG 90%, images~8, ~44 s, 2% errors'
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping


def format_ms(ms: float) -> str:
    """Round a duration for people: ``"~12 ms"``, ``"~1.5 s"``, ``"~45 s"``, ``"~3 min"``."""
    if ms < 1_000:
        return f"~{ms:.0f} ms"
    if ms < 10_000:
        return f"~{ms / 1000:.1f} s"
    if ms < 120_000:
        return f"~{ms / 1000:.0f} s"
    return f"~{ms / 60_000:.0f} min"


class ShardDescriber:
    """Per-shard request-type shares and numeric attribute means, decayed.

    Parameters
    ----------
    decay
        Weight kept by older observations at each new one of the same shard.
    top_attributes
        Numeric attributes shown in a summary (those with the largest means first).
    """

    def __init__(self, decay: float = 0.999, top_attributes: int = 2) -> None:
        self.decay = decay
        self.top_attributes = top_attributes
        self._types: dict[int, dict[str, float]] = defaultdict(dict)
        self._attrs: dict[int, dict[str, list[float]]] = defaultdict(dict)

    def learn_one(self, shard: int, request_type: str, attributes: Mapping) -> None:
        types = self._types[shard]
        for name in types:
            types[name] *= self.decay
        types[request_type] = types.get(request_type, 0.0) + 1.0
        attrs = self._attrs[shard]
        for name, value in attributes.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                mean_weight = attrs.setdefault(name, [0.0, 0.0])
                mean_weight[1] = mean_weight[1] * self.decay + 1.0
                mean_weight[0] += (value - mean_weight[0]) / mean_weight[1]

    def state(self) -> dict[str, dict[str, dict]]:
        """Plain-JSON state, for merging the describers of several workers."""
        return {
            "types": {str(shard): dict(types) for shard, types in self._types.items()},
            "attrs": {str(shard): dict(attrs) for shard, attrs in self._attrs.items()},
        }

    @classmethod
    def from_states(cls, states: list[dict[str, dict]], **kwargs: float) -> ShardDescriber:
        """One describer from several states (:meth:`state`): counts add, means weigh by counts."""
        merged = cls(**kwargs)
        for state in states:
            for shard, types in state["types"].items():
                into = merged._types[int(shard)]
                for name, weight in types.items():
                    into[name] = into.get(name, 0.0) + float(weight)
            for shard, attrs in state["attrs"].items():
                into_attrs = merged._attrs[int(shard)]
                for name, (mean, weight) in attrs.items():
                    total = into_attrs.setdefault(name, [0.0, 0.0])
                    combined = total[1] + float(weight)
                    if combined > 0:
                        total[0] += (float(mean) - total[0]) * float(weight) / combined
                    total[1] = combined
        return merged

    def summary(self, shard: int, log_latency_ms: float, error_rate: float) -> str:
        parts = []
        types = self._types.get(shard)
        if types:
            top = max(types, key=types.__getitem__)
            parts.append(f"{top} {types[top] / sum(types.values()):.0%}")
        attrs = self._attrs.get(shard, {})
        ranked = sorted(attrs.items(), key=lambda item: -abs(item[1][0]))
        parts += [f"{name}~{mean:.3g}" for name, (mean, _) in ranked[: self.top_attributes]]
        parts.append(format_ms(math.expm1(log_latency_ms)))
        if error_rate >= 0.005:
            parts.append(f"{error_rate:.0%} errors")
        return ", ".join(parts)
