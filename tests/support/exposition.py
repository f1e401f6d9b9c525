"""Reading a Prometheus text exposition (a /metrics page) as a flat table of samples."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, :func:`labelled`) -> value of a text exposition."""
    return {
        (s.name, labelled(**s.labels)): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def labelled(**labels: str) -> tuple:
    """A sample's labels as a key of :func:`samples`."""
    return tuple(sorted(labels.items()))
