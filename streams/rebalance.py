"""What a worker forgets when the requests partitions it owns change (a rebalance).

Every partition resumes from its committed offset, and the state of a partition this worker
did not own throughout may be stale (another worker changed it meanwhile): such state is read
again from the tables, restored from their changelogs. See docs/reliability.md.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, MutableMapping

from shardshape.core.metrics import WindowRecorder, partition_of
from shardshape.core.partitioning import partition_for
from shardshape.streams.profiling import KeyCheckpoints, ProfilingWorker


def drop_keys(data: MutableMapping, gone: Callable[[Hashable], bool]) -> int:
    """Delete the keys of ``data`` that are ``gone``; return how many.

    >>> data = {"a": 1, "b": 2, "c": 3}
    >>> drop_keys(data, lambda key: key != "b"), data
    (2, {'b': 2})
    """
    keys = [key for key in data if gone(key)]
    for key in keys:
        del data[key]
    return len(keys)


def kept_partitions(owned: set[int], now: set[int], *, consecutive: bool) -> set[int]:
    """The partitions whose state here is current: owned in both assignments, when this one's
    generation directly follows that one's (nobody else owned them meanwhile).

    >>> sorted(kept_partitions({0, 1, 2}, {1, 2, 3}, consecutive=True))
    [1, 2]
    >>> kept_partitions({0, 1, 2}, {1, 2, 3}, consecutive=False)
    set()
    """
    return owned & now if consecutive else set()


def forget_moved_partitions(
    owned: set[int],
    now: set[int],
    partitions: int,
    *,
    consecutive: bool,
    recorders: Iterable[WindowRecorder],
    checkpoints: KeyCheckpoints,
    profiling: ProfilingWorker,
    metric_data: Iterable[MutableMapping],
    key_stats: MutableMapping,
) -> int:
    """Forget what may be stale now that this worker owns requests partitions ``now`` (it
    owned ``owned`` in the last assignment it saw); return how many profile keys were left
    for their new owners.

    ``consecutive``: this assignment's generation directly follows that one's, so nobody
    else owned the partitions in both meanwhile, and their state here is current. Otherwise
    (this worker missed a rebalance, for example after a session timeout) every partition's
    state is read again. ``metric_data`` are the metrics tables' stores (keys
    ``(slot, window)``) and ``key_stats`` the key-stats table's (keys: profile keys).
    """
    kept = kept_partitions(owned, now, consecutive=consecutive)
    for recorder in recorders:
        recorder.forget(keep=kept)  # elsewhere the slots' stored offsets skip replays
    checkpoints.forget_partitions(kept)
    dropped = profiling.forget_keys(lambda key: partition_for(key, partitions) not in kept)
    # Faust's memory store forgets the values it restored of partitions gone elsewhere, not
    # those written here: views would count them next to their new owner's.
    for data in metric_data:
        drop_keys(data, lambda key: partition_of(key[0]) not in now)
    drop_keys(key_stats, lambda key: partition_for(key, partitions) not in now)
    return dropped
