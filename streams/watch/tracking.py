"""Following one file until it is ready (then published), corrupt or gone.

The `Follower` looks at a file (stat, in a thread) when its `Track` is due, asks `readiness` what to
do, probes it (decode + hash, in a thread, at most `workers` at once) when asked, and hands a ready
file to the `Publisher`. A track learns from inotify when the file's writer closes it: the look
after that is due after `close_debounce_seconds` (an event may wake a waiting track) and probes in
the same thread hop, so a complete upload is published a few milliseconds after its close. A file
the probe refuses to read (not the camera root's own, see `probe.open_confined`) ends ignored at
once. Redis errors while publishing retry the file with capped exponential backoff, so an outage
delays files but loses none.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from redis.exceptions import RedisError

from streams.resilience import backoff_delay
from streams.watch.candidates import Candidate, IgnoreReason
from streams.watch.capture import capture_time
from streams.watch.config import WatchConfig
from streams.watch.outcomes import Outcome, OutcomeKind
from streams.watch.probe import FileRefusedError, Probe, open_confined, probe_open
from streams.watch.publisher import Captured, Publisher
from streams.watch.readiness import (
    GiveUp,
    Observation,
    Ready,
    Wait,
    max_bytes,
    min_bytes,
    readiness,
    record,
)

logger = logging.getLogger("hsi.watch")

_RETRY_BASE_SECONDS = 0.5
_RETRY_CAP_SECONDS = 30.0


@dataclass(eq=False)
class Track:
    """A file being followed until it is ready, corrupt or gone."""

    candidate: Candidate
    due: float  # loop time of the next look
    from_event: bool  # started by a file-system event (not the scan or ingest)
    history: list[Observation] = field(default_factory=list)
    probe: Probe | None = None  # the current run's last probe
    captured: Captured | None = None  # the capture time read with `probe`, when it decoded
    mtime: float = 0.0  # epoch seconds, from the last look
    retries: int = 0  # Redis failures in a row
    moved: bool = False  # renamed while followed; followed at its new path
    closed: bool = False  # its writer closed it since the last event (the next look notes it)
    closed_as: tuple[int, int] | None = None  # size and mtime the first look after the close saw
    waiters: list[asyncio.Future[Outcome]] = field(default_factory=list)
    wake: asyncio.Future[None] | None = None  # resolved to look before `due` after all

    def look_at(self, due: float) -> None:
        """Look next at loop time `due`, earlier or later than planned."""
        earlier = due < self.due
        self.due = due
        if earlier and self.wake is not None and not self.wake.done():
            self.wake.set_result(None)


class Follower:
    """Settles tracks: looks, probes and publishes per `readiness`."""

    def __init__(
        self,
        config: WatchConfig,
        publisher: Publisher,
        settled: Mapping[Path, tuple[int, int]],
        root: Path,
        rand: Callable[[], float] = random.random,
    ) -> None:
        """`settled`: size and mtime of files already settled, by path: an event for a file that
        still has them ends at once (`unchanged`) instead of reporting it again. `root`: the
        camera root, which every file read must belong to."""
        self._config = config
        self._root = root
        self._publisher = publisher
        self._settled = settled
        self._rand = rand  # backoff jitter
        self._probe_slots = asyncio.Semaphore(config.workers)

    async def settle(self, track: Track) -> Outcome:
        """Look at the file until it is ready (then publish), corrupt or gone."""
        loop = asyncio.get_running_loop()
        while True:
            delay = track.due - loop.time()
            if delay > 0:
                track.wake = loop.create_future()
                timer = loop.call_later(delay, _resolve, track.wake)
                try:
                    await track.wake
                finally:
                    timer.cancel()
                    track.wake = None
                continue  # an event may have moved the look meanwhile
            try:
                outcome = await self._step(track)
            except RedisError as exc:
                retry_in = backoff_delay(
                    track.retries, _RETRY_BASE_SECONDS, _RETRY_CAP_SECONDS, self._rand()
                )
                track.retries += 1
                track.history.clear()
                track.probe, track.captured = None, None
                track.due = loop.time() + retry_in
                logger.warning(
                    "watch.redis_failed",
                    extra={
                        "camera": track.candidate.camera_id,
                        "path": track.candidate.relative,
                        "attempt": track.retries,
                        "retry_in": round(retry_in, 3),
                        "error": repr(exc),
                    },
                )
                continue
            if outcome is not None:
                return outcome

    async def _step(self, track: Track) -> Outcome | None:
        """One look; the outcome when following ends, else None (next look at `track.due`).

        The first look after a close probes the file in the same thread hop when readiness will
        ask for it (`_examine`): the close says the upload is done, so its latency counts.
        """
        candidate = track.candidate
        loop = asyncio.get_running_loop()
        if track.closed:
            async with self._probe_slots:
                found, probed = await asyncio.to_thread(self._examine, candidate, True)
        else:
            found, probed = await asyncio.to_thread(self._examine, candidate, False)
        observation = self._observe(track, found)
        if observation is None:  # a FIFO, socket, device or folder under a media name
            return self._refuse(track, IgnoreReason.NOT_A_FILE, "is not a regular file")
        if track.from_event and not track.history and observation.size is not None:
            signature = (observation.size, observation.mtime_ns)
            if self._settled.get(candidate.path) == signature:
                return Outcome(candidate.path, OutcomeKind.UNCHANGED, camera_id=candidate.camera_id)
        track.history = record(track.history, observation)
        kind = candidate.media_kind
        decision = readiness(track.history, loop.time(), self._config, kind)
        if isinstance(decision, Wait) and decision.reason == "probe":
            if probed is None:
                async with self._probe_slots:
                    probed = await asyncio.to_thread(self._probe_blocking, candidate)
            if probed.refused is not None:
                return self._refuse(track, probed.refused.reason, str(probed.refused))
            self._record_probe(track, observation, probed)
            decision = readiness(track.history, loop.time(), self._config, kind)
        if isinstance(decision, Wait):
            floor = loop.time() + (self._config.stable_seconds if decision.reason == "probe" else 0)
            due = max(decision.recheck_at, floor)
            # A close during this step (not yet looked at) keeps the look it asked for.
            track.due = min(due, track.due) if track.closed else due
            return None
        if isinstance(decision, Ready):
            if track.probe is None:  # readiness said ready: a decodable probe was recorded
                raise RuntimeError(f"{candidate.relative}: ready without a probe")
            return await self._publisher.publish(
                candidate, track.probe, track.mtime, captured=track.captured
            )
        return self._give_up(track, decision)

    def _examine(
        self, candidate: Candidate, closed: bool
    ) -> tuple[os.stat_result | None, _Probed | None]:
        """Blocking: stat the file (None: gone); probe it too when its writer has just closed it
        and readiness will ask for a probe (a regular file within the size limits)."""
        found = _stat(candidate.path)
        if not closed or found is None or not stat.S_ISREG(found.st_mode):
            return found, None
        kind = candidate.media_kind
        if not min_bytes(kind, self._config) <= found.st_size <= max_bytes(kind, self._config):
            return found, None
        return found, self._probe_blocking(candidate)

    def _observe(self, track: Track, found: os.stat_result | None) -> Observation | None:
        """A look's observation (size None when gone), or None if not a regular file."""
        now = asyncio.get_running_loop().time()
        if found is None:
            return Observation(now, None)
        if not stat.S_ISREG(found.st_mode):
            return None
        track.mtime = found.st_mtime
        signature = (found.st_size, found.st_mtime_ns)
        if track.closed:  # the first look since the close: the content the writer left
            track.closed, track.closed_as = False, signature
        return Observation(
            now, found.st_size, found.st_mtime_ns, closed=signature == track.closed_as
        )

    def _probe_blocking(self, candidate: Candidate) -> _Probed:
        """Blocking: decode and hash the file, stat it again, and read its capture time if it
        decoded (what publishing it needs, in the same thread hop)."""
        try:
            probe: Probe | None = self._probe_file(candidate)
            error = ""
        except FileRefusedError as exc:
            return _Probed(None, "", None, refused=exc)
        except OSError as exc:  # vanished (the next look tells) or unreadable (corrupt)
            probe = None
            error = f"{type(exc).__name__}: {exc}"
        after = _stat(candidate.path)
        captured = None
        if probe is not None and probe.decodable and after is not None:
            captured = capture_time(
                candidate.path,
                candidate.path.name,
                self._config.timezone,
                after.st_mtime,
                read_exif=candidate.media_kind == "image",
            )
        return _Probed(probe, error, after, captured=captured)

    def _record_probe(self, track: Track, before: Observation, probed: _Probed) -> None:
        """Record a probe's result if the file did not change between `before` and the probe."""
        after = self._observe(track, probed.after)
        if after is None:
            return
        size, probe = after.size, probed.probe
        if size is not None and (size, after.mtime_ns) == (before.size, before.mtime_ns):
            if probe is None:
                after = replace(after, decodable=False)
                track.probe = Probe(size, "", decodable=False, error=probed.error)
                track.captured = None
            elif probe.size == size:
                after = replace(after, decodable=probe.decodable)
                track.probe, track.captured = probe, probed.captured
        track.history = record(track.history, after)

    def _probe_file(self, candidate: Candidate) -> Probe:
        """Blocking: open the file confined to the camera root and probe it."""
        with open_confined(candidate.path, self._root) as handle:
            return probe_open(
                handle,
                candidate.path,
                candidate.media_kind,
                self._config.max_image_pixels,
                self._config.max_image_bytes,
            )

    def _refuse(self, track: Track, reason: IgnoreReason, error: str) -> Outcome:
        candidate = track.candidate
        logger.warning(
            "file.ignored",
            extra={
                "camera": candidate.camera_id,
                "path": candidate.relative,
                "reason": reason.value,
                "error": error,
            },
        )
        return Outcome(
            candidate.path, OutcomeKind.IGNORED, reason=reason.value, camera_id=candidate.camera_id
        )

    def _give_up(self, track: Track, decision: GiveUp) -> Outcome:
        candidate = track.candidate
        if not decision.corrupt:
            logger.info(
                "file.vanished",
                extra={
                    "camera": candidate.camera_id,
                    "path": candidate.relative,
                    "moved": track.moved,
                },
            )
            return Outcome(
                candidate.path,
                OutcomeKind.VANISHED,
                reason="moved" if track.moved else decision.reason,
                camera_id=candidate.camera_id,
            )
        last = track.history[-1]
        error = track.probe.error if track.probe is not None else None
        logger.warning(
            "file.corrupt",
            extra={
                "camera": candidate.camera_id,
                "path": candidate.relative,
                "reason": decision.reason,
                "size": last.size,
                "error": error,
            },
        )
        return Outcome(
            candidate.path,
            OutcomeKind.CORRUPT,
            reason=decision.reason,
            camera_id=candidate.camera_id,
            sha256=(track.probe.sha256 or None) if track.probe is not None else None,
        )


@dataclass(frozen=True, slots=True)
class _Probed:
    """A probe (None: the file could not be read, `error` says why) and the stat after it."""

    probe: Probe | None
    error: str
    after: os.stat_result | None  # None: gone
    refused: FileRefusedError | None = None  # not the camera root's own: nothing was read
    captured: Captured | None = None  # when it decoded: its capture time, read after the stat


def _stat(path: Path) -> os.stat_result | None:
    """Blocking: the file's stat, None when it is gone."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
