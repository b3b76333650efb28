"""Whether an upload is complete: a pure decision over what was seen of the file so far.

The watcher looks at a file repeatedly and records each look as an `Observation` (its size and
mtime, whether its writer had closed it — an inotify close event since it last changed — and,
after a probe, whether its content decodes). `readiness` turns that history into:

- `Wait(reason, recheck_at)`: look again at `recheck_at`. Reason `probe` asks the caller to
  decode and hash the file now and record the result.
- `Ready()`: publish it.
- `GiveUp(reason, corrupt)`: stop following it; `corrupt` ones (refused) are reported once.

Rules (a *run* is the trailing observations with the last size and mtime; it started at the
first of them, and `stable_for` = now − that time):

1. A vanished file (size None) is given up, not corrupt.
2. While `stable_for < stable_seconds` the upload may still be growing: wait — unless its
   writer closed it, which says the upload is done: a closed file within the size limits is
   probed at once, and ready if it decodes completely. Any other closed file waits as an open
   one does (an FTP upload may be closed and resumed later).
3. Above the maximum size for its kind: corrupt (`too_large`), never read.
4. Below the minimum size for its kind: wait; once `stable_for >= incomplete_timeout_seconds`
   it is corrupt (`too_small`).
5. Not probed during this run: probe now.
6. The run's last probe decoded the file: ready.
7. Else it is a half-written upload: wait for it to grow; once `stable_for >=
   incomplete_timeout_seconds` it never will — corrupt (`undecodable`).

Times are seconds on one monotonic clock, given as arguments; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from streams.detectors.base import MediaKind
from streams.watch.config import WatchConfig

WaitReason = Literal["settling", "too_small", "probe", "incomplete"]
GiveUpReason = Literal["vanished", "too_large", "too_small", "undecodable"]

# Never re-check more often than this, however small `stable_seconds` is.
MIN_RECHECK_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class Observation:
    """One look at a file at monotonic time `at`."""

    at: float
    size: int | None  # None: the file is gone
    mtime_ns: int = 0
    decodable: bool | None = None  # a probe of exactly this size and mtime; None: not probed
    closed: bool = False  # its writer had closed it, with this size and mtime


@dataclass(frozen=True, slots=True)
class Wait:
    reason: WaitReason
    recheck_at: float


@dataclass(frozen=True, slots=True)
class Ready:
    pass


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: GiveUpReason
    corrupt: bool


Decision = Wait | Ready | GiveUp


def stable_since(history: Sequence[Observation]) -> float:
    """When the trailing run of observations with the last size and mtime started."""
    last = history[-1]
    since = last.at
    for observation in reversed(history):
        if (observation.size, observation.mtime_ns) != (last.size, last.mtime_ns):
            break
        since = observation.at
    return since


def last_probe(history: Sequence[Observation], since: float) -> bool | None:
    """Whether the last probe of the run that started at `since` decoded (None: not probed)."""
    for observation in reversed(history):
        if observation.at < since:
            break
        if observation.decodable is not None:
            return observation.decodable
    return None


def min_bytes(kind: MediaKind, config: WatchConfig) -> int:
    return config.min_image_bytes if kind == "image" else config.min_video_bytes


def max_bytes(kind: MediaKind, config: WatchConfig) -> int:
    return config.max_image_bytes if kind == "image" else config.max_video_bytes


def readiness(
    history: Sequence[Observation], now: float, config: WatchConfig, kind: MediaKind
) -> Decision:
    """What to do next with a file whose observations so far are `history` (oldest first)."""
    if not history:
        return Wait("settling", now)
    last = history[-1]
    if last.size is None:
        return GiveUp("vanished", corrupt=False)
    since = stable_since(history)
    stable_for = now - since
    decodes = last_probe(history, since)
    if stable_for < config.stable_seconds:
        settling = Wait("settling", max(since + config.stable_seconds, now + MIN_RECHECK_SECONDS))
        if not last.closed or not min_bytes(kind, config) <= last.size <= max_bytes(kind, config):
            return settling
        if decodes is None:
            return Wait("probe", now)
        return Ready() if decodes else settling
    timed_out = stable_for >= config.incomplete_timeout_seconds
    next_look = max(
        min(now + config.stable_seconds, since + config.incomplete_timeout_seconds),
        now + MIN_RECHECK_SECONDS,
    )
    if last.size > max_bytes(kind, config):
        return GiveUp("too_large", corrupt=True)
    if last.size < min_bytes(kind, config):
        return GiveUp("too_small", corrupt=True) if timed_out else Wait("too_small", next_look)
    if decodes is None:
        return Wait("probe", now)
    if decodes:
        return Ready()
    return GiveUp("undecodable", corrupt=True) if timed_out else Wait("incomplete", next_look)


def record(history: Sequence[Observation], observation: Observation) -> list[Observation]:
    """`history` with `observation` appended, kept short: only the current run matters, and of
    it only its first look, its probes and the latest look."""
    if history and (history[-1].size, history[-1].mtime_ns) != (
        observation.size,
        observation.mtime_ns,
    ):
        return [observation]
    if len(history) >= 2 and history[-1].decodable is None:
        return [*history[:-1], observation]
    return [*history, observation]
