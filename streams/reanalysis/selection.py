"""Which past batches a re-analysis run covers (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from streams.ids import event_id
from streams.schemas import BatchClosed, ReanalysisStarted

LEVELS = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class Selection:
    """Batches of `cameras` (empty: every camera) whose window starts in [since, until) in
    capture time, whose current level is one of `levels` (empty: any, not analyzed included),
    and whose event id is one of `event_ids` (empty: any)."""

    cameras: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    levels: frozenset[str] = frozenset()
    event_ids: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        unknown = self.levels - set(LEVELS)
        if unknown:
            raise ValueError(f"unknown level(s) {sorted(unknown)}; use {', '.join(LEVELS)}")
        if self.since and self.until and self.until <= self.since:
            raise ValueError("the selection's end must come after its start")

    @classmethod
    def of_run(cls, started: ReanalysisStarted) -> Selection:
        """The selection a run recorded on a camera (that camera's batches)."""
        return cls(
            since=started.since,
            until=started.until,
            levels=frozenset(started.levels),
            event_ids=frozenset(started.event_ids),
        )

    def matches(self, camera: str, batch: BatchClosed, current_level: str | None) -> bool:
        if self.cameras and camera not in self.cameras:
            return False
        start = batch.window_start
        if self.since is not None and start < self.since:
            return False
        if self.until is not None and start >= self.until:
            return False
        if self.levels and current_level not in self.levels:
            return False
        return not self.event_ids or str(event_id(camera, batch.batch_id)) in self.event_ids

    def describe(self) -> str:
        """The selection in words, for the run's record."""
        parts = [f"cameras {','.join(self.cameras)}" if self.cameras else "every camera"]
        if self.since is not None:
            parts.append(f"since {_iso(self.since)}")
        if self.until is not None:
            parts.append(f"until {_iso(self.until)}")
        if self.levels:
            parts.append("levels " + ",".join(lv for lv in LEVELS if lv in self.levels))
        if self.event_ids:
            parts.append(f"{len(self.event_ids)} events")
        return ", ".join(parts)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
