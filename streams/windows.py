"""The worker's metrics tables: tumbling windows of Faust tables, one record per source
partition and window (:class:`~shardshape.core.metrics.WindowRecorder` folds batches in).

:class:`MetricWindows` holds the tables and their recorders; :func:`window_store` gives a
recorder its reads and writes of a table, :func:`window_slots` the views' reading of one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import faust

from shardshape.core.metrics import WindowRecorder, partition_key, partition_of, slots_of

METRIC_WINDOWS = {"10s": 10.0, "1m": 60.0}  # tumbling window sizes of the metrics tables
WINDOWS_KEPT = 30  # windows of each size a worker keeps

WindowTable = faust.types.tables.WindowWrapperT


class MetricWindows:
    """The metrics tables, by window name (:data:`METRIC_WINDOWS`), and their recorders.

    Parameters
    ----------
    tables
        The tumbling tables, one per window name.
    write_every_s
        How often a recorder writes a partition's totals (``metrics_write_interval_s``).
    """

    def __init__(self, tables: Mapping[str, WindowTable], write_every_s: float) -> None:
        self.tables = dict(tables)
        self.recorders = {
            name: WindowRecorder(*window_store(table), METRIC_WINDOWS[name], write_every_s)
            for name, table in self.tables.items()
        }

    def flush(self) -> None:
        """Write every window total not written yet.

        Before offsets are committed, every window total of the batches they cover must be in
        the changelog: a restart then skips those batches (offsets) and loses nothing.
        """
        for recorder in self.recorders.values():
            recorder.flush()

    def slots(self, name: str) -> list[dict]:
        """The slots of window ``name``'s table with what is not written yet
        (:func:`window_slots`)."""
        return window_slots(self.tables[name], self.recorders[name].unwritten())


def window_store(
    table: WindowTable,
) -> tuple[Callable[[int, float], bytes | None], Callable[[int, float, bytes], None]]:
    """``get(partition, window_start)`` and ``put(partition, window_start, data)`` of source
    partitions' window records on a tumbling table, addressing the window by its start,
    whatever event is being processed."""
    inner = table.table

    def key(partition: int, start: float) -> tuple[str, tuple[float, float]]:
        return partition_key(partition), inner.window.ranges(start)[0]

    def get(partition: int, start: float) -> bytes | None:
        return inner.data.get(key(partition, start))

    def put(partition: int, start: float, data: bytes) -> None:
        # To the source partition's changelog partition (the agent handles several messages'
        # events at once, outside any one event's context), as ``inner[key] = data`` in that
        # event's would.
        where = key(partition, start)
        inner.data[where] = data
        inner.send_changelog(partition, where, data)
        inner._maybe_set_key_ttl(where, partition)  # Faust expires old windows by these

    return get, put


def window_slots(
    table: WindowTable,
    unwritten: dict[tuple[str, float], bytes] | None = None,
) -> list[dict]:
    """Slots of a windowed table (each partition record's, see
    :func:`~shardshape.core.metrics.slots_of`), grouped by window, newest first
    (JSON-able); ``unwritten`` (from :meth:`WindowRecorder.unwritten`) overlays totals not
    yet written."""
    inner = table.table
    stored = {
        (slot, window): data
        for (key, window), record in list(inner.data.items())
        for slot, data in slots_of(partition_of(key), record).items()
    }
    for (slot, start), data in (unwritten or {}).items():
        stored[(slot, inner.window.ranges(start)[0])] = data
    windows: dict[tuple[float, float], dict[str, str]] = {}
    for (slot, (start, end)), data in stored.items():
        windows.setdefault((start, end), {})[slot] = data.decode()
    return [
        {"start": start, "end": end, "slots": slots}
        for (start, end), slots in sorted(windows.items(), reverse=True)
    ]
