"""The worker's totals since start: logged on a timer, served at ``/shardshape/stats`` and fed
to the dashboard."""

from __future__ import annotations

import time


class PipelineCounters:
    """Totals the worker has seen since start, logged on a timer.

    >>> counters = PipelineCounters()
    >>> counters.record(events=500, dead_letters=0); counters.record(events=0, dead_letters=1)
    >>> {name: counters.as_dict()[name] for name in ("messages", "events", "dead_letters")}
    {'messages': 2, 'events': 500, 'dead_letters': 1}
    >>> counters.summary()
    '2 messages, 500 valid events (...), 1 sent to the DLQ'
    >>> counters.summary() is None  # nothing changed since
    True
    """

    def __init__(self) -> None:
        self.messages = 0
        self.events = 0
        self.dead_letters = 0
        self.profiler_calls = 0  # fewer than messages when queued messages are merged
        self.first_time = 0.0  # wall time of the first and last message handled
        self.last_time = 0.0
        self.first_cpu = 0.0  # the process's CPU seconds (all threads) at those moments
        self.last_cpu = 0.0
        self.first_loop_cpu = 0.0  # the event loop thread's (the agent's) CPU seconds
        self.last_loop_cpu = 0.0
        self._last_logged = (0, 0, 0)
        self._last_time = time.monotonic()

    def record(self, events: int, dead_letters: int) -> None:
        now, cpu, loop_cpu = time.time(), time.process_time(), time.thread_time()
        if not self.first_time:
            self.first_time, self.first_cpu, self.first_loop_cpu = now, cpu, loop_cpu
        self.last_time, self.last_cpu, self.last_loop_cpu = now, cpu, loop_cpu
        self.messages += 1
        self.events += events
        self.dead_letters += dead_letters

    def as_dict(self) -> dict[str, float]:
        return {
            "messages": self.messages,
            "events": self.events,
            "dead_letters": self.dead_letters,
            "profiler_calls": self.profiler_calls,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "cpu_seconds": self.last_cpu - self.first_cpu,
            "loop_cpu_seconds": self.last_loop_cpu - self.first_loop_cpu,
        }

    def summary(self) -> str | None:
        """A log line when something changed since the last one, else None."""
        now = time.monotonic()
        current = (self.messages, self.events, self.dead_letters)
        if current == self._last_logged:
            return None
        rate = (self.events - self._last_logged[1]) / max(now - self._last_time, 1e-9)
        self._last_logged, self._last_time = current, now
        return (
            f"{self.messages} messages, {self.events} valid events ({rate:,.0f}/s), "
            f"{self.dead_letters} sent to the DLQ"
        )
