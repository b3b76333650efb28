"""The `hsi_stream_*` gauges and `hsi_projector_lag`: the health of the streams as metrics.

A poller (with its own Redis connection and schedule) keeps a `StreamSnapshot` of
`StreamReading`s; the gauges read every registered snapshot at each metrics collection, so a
scrape never waits on Redis.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from streams.names import Group


@dataclass(frozen=True)
class StreamReading:
    """The state of one stream (and consumer group) at the last poll; None means unknown."""

    stream: str
    group: str | None = None
    camera: str | None = None
    length: int | None = None
    lag: int | None = None
    pending: int | None = None
    oldest_pending_age_seconds: float | None = None
    dead_letters: int | None = None

    def attributes(self) -> dict[str, str]:
        attrs = {"stream": self.stream}
        if self.group is not None:
            attrs["group"] = self.group
        if self.camera is not None:
            attrs["camera"] = self.camera
        return attrs


StreamCallback = Callable[[], Iterable[StreamReading]]


class StreamSnapshot:
    """The readings a poller last took; register it as the gauges' callback.

    The poller (with its own Redis connection and schedule) calls `update()`; the gauges only read
    the snapshot, so a metrics scrape never waits on Redis.
    """

    def __init__(self, readings: Iterable[StreamReading] = ()) -> None:
        self._readings: tuple[StreamReading, ...] = tuple(readings)

    def update(self, readings: Iterable[StreamReading]) -> None:
        self._readings = tuple(readings)  # one atomic swap; readers see old or new

    def __call__(self) -> tuple[StreamReading, ...]:
        return self._readings


_STREAM_GAUGES: tuple[tuple[str, str, str, str], ...] = (
    ("hsi_stream_length", "length", "", "Entries in the stream."),
    ("hsi_stream_group_lag", "lag", "", "Entries the consumer group has not read yet."),
    ("hsi_stream_pending", "pending", "", "Entries read but not acknowledged."),
    (
        "hsi_stream_oldest_pending_age_seconds",
        "oldest_pending_age_seconds",
        "s",
        "Idle time of the oldest unacknowledged entry.",
    ),
    ("hsi_stream_dead_letters", "dead_letters", "", "Entries moved to the dead-letter stream."),
)


class StreamGauges:
    """The gauges of one meter provider and the callbacks they read at every collection."""

    def __init__(self) -> None:
        self._callbacks: list[StreamCallback] = []
        self._lock = threading.Lock()

    def register(self, callback: StreamCallback) -> Callable[[], None]:
        """Report `callback()`'s readings at every collection; returns the unregister function.

        The callback runs inside the metrics collection: it must only read memory (see
        `StreamSnapshot`).
        """
        with self._lock:
            self._callbacks.append(callback)

        def unregister() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unregister

    def _readings(self) -> list[StreamReading]:
        with self._lock:
            callbacks = list(self._callbacks)
        readings: list[StreamReading] = []
        for callback in callbacks:
            try:
                readings.extend(callback())
            except Exception:  # noqa: S112 - one broken source must not hide the others
                continue
        return readings

    def _observer(self, attribute: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            observations = []
            for reading in self._readings():
                value = getattr(reading, attribute)
                if value is not None:
                    observations.append(Observation(value, reading.attributes()))
            return observations

        return observe

    def _observe_projector_lag(self, _options: CallbackOptions) -> Iterable[Observation]:
        behind = [
            (reading.lag or 0) + (reading.pending or 0)
            for reading in self._readings()
            if reading.group == Group.PROJECT.value
            and (reading.lag is not None or reading.pending is not None)
        ]
        return [Observation(sum(behind))] if behind else []

    def create(self, meter: Meter) -> None:
        """Create the observable gauges on `meter`."""
        for name, attribute, unit, description in _STREAM_GAUGES:
            meter.create_observable_gauge(
                name, callbacks=[self._observer(attribute)], unit=unit, description=description
            )
        meter.create_observable_gauge(
            "hsi_projector_lag",
            callbacks=[self._observe_projector_lag],
            description="Entries group `project` has not yet read or acknowledged (lag + "
            "pending) over the streams this process reports.",
        )
