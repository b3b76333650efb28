"""Following one file until it is ready (then published), corrupt or gone.

The `Follower` looks at a file (stat, in a thread) when its `Track` is due, asks `readiness` what
to do, probes it (decode + hash, in a thread, at most `workers` at once) when asked, and hands a
ready file to the `Publisher`. A file the probe refuses to read (not the camera root's own, see
`probe.open_confined`) ends ignored at once. Redis errors while publishing retry the file with
capped exponential backoff, so an outage delays files but loses none.
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
from streams.watch.config import WatchConfig
from streams.watch.outcomes import Outcome, OutcomeKind
from streams.watch.probe import FileRefusedError, Probe, open_confined, probe_open
from streams.watch.publisher import Publisher
from streams.watch.readiness import GiveUp, Observation, Ready, Wait, readiness, record

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
    mtime: float = 0.0  # epoch seconds, from the last look
    retries: int = 0  # Redis failures in a row
    moved: bool = False  # renamed while followed; followed at its new path
    waiters: list[asyncio.Future[Outcome]] = field(default_factory=list)


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
                await asyncio.sleep(delay)
                continue  # an event may have postponed the look meanwhile
            try:
                outcome = await self._step(track)
            except RedisError as exc:
                retry_in = backoff_delay(
                    track.retries, _RETRY_BASE_SECONDS, _RETRY_CAP_SECONDS, self._rand()
                )
                track.retries += 1
                track.history.clear()
                track.probe = None
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
        """One look; the outcome when following ends, else None (next look at `track.due`)."""
        candidate = track.candidate
        loop = asyncio.get_running_loop()
        observation = await self._look(track)
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
            refused = await self._probe(track, observation)
            if refused is not None:
                return self._refuse(track, refused.reason, str(refused))
            decision = readiness(track.history, loop.time(), self._config, kind)
        if isinstance(decision, Wait):
            floor = loop.time() + (self._config.stable_seconds if decision.reason == "probe" else 0)
            track.due = max(decision.recheck_at, floor)
            return None
        if isinstance(decision, Ready):
            if track.probe is None:  # readiness said ready: a decodable probe was recorded
                raise RuntimeError(f"{candidate.relative}: ready without a probe")
            return await self._publisher.publish(candidate, track.probe, track.mtime)
        return self._give_up(track, decision)

    async def _look(self, track: Track) -> Observation | None:
        """Stat the file: an observation (size None when gone), or None if not a regular file."""
        try:
            found = await asyncio.to_thread(os.stat, track.candidate.path)
        except (FileNotFoundError, NotADirectoryError):
            return Observation(asyncio.get_running_loop().time(), None)
        if not stat.S_ISREG(found.st_mode):
            return None
        track.mtime = found.st_mtime
        return Observation(asyncio.get_running_loop().time(), found.st_size, found.st_mtime_ns)

    async def _probe(self, track: Track, before: Observation) -> FileRefusedError | None:
        """Decode and hash the file; record the result if the file did not change meanwhile.

        Returns the refusal when the file opened is not the camera root's own (nothing read).
        """
        candidate = track.candidate
        probe: Probe | None
        error = ""
        async with self._probe_slots:
            try:
                probe = await asyncio.to_thread(self._probe_file, candidate)
            except FileRefusedError as exc:
                return exc
            except OSError as exc:  # vanished (the next look tells) or unreadable (corrupt)
                probe = None
                error = f"{type(exc).__name__}: {exc}"
        after = await self._look(track)
        if after is None:
            return None
        size = after.size
        if size is not None and (size, after.mtime_ns) == (before.size, before.mtime_ns):
            if probe is None:
                after = replace(after, decodable=False)
                track.probe = Probe(size, "", decodable=False, error=error)
            elif probe.size == size:
                after = replace(after, decodable=probe.decodable)
                track.probe = probe
        track.history = record(track.history, after)
        return None

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
