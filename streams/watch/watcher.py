"""The watch stage: camera uploads become `file.observed` entries, each complete file once.

Every path — from a file-system event, the start-up scan or `ingest` — takes one route:

1. `classify` it (camera, media kind, or why it is ignored);
2. follow it: look at it (stat) after a short debounce (`close_debounce_seconds` after inotify
   says its writer closed it) and then at the times `readiness` names, probing it (full decode +
   SHA-256, in a thread) once its size has settled — or at once when its writer closed it —
   until it is ready, corrupt (also: too small, too large) or gone; the probe reads only a file
   that is the camera root's own (`streams.watch.probe.open_confined`: no symlink out, no hard
   link);
3. when ready: register its camera if new, then publish it once per camera and content hash
   (`Ledger.publish_once`, one atomic Lua script: see `streams.watch.ledger`), in a root span
   `watch` that starts the file's trace (`streams.watch.publisher`). `telemetry` names the tracer
   and instruments; without it the OpenTelemetry API's global providers are used.

Events arrive on watchdog's thread and are handed to the loop (`streams.watch.events`); a
second event for a path already followed only moves its next look (the debounce). Errors are
contained per path (`watch.path_failed`); Redis errors retry that file with backoff, so an
outage delays uploads but loses none.

Moves: a file renamed from a temporary or hidden name (`.part`, `.pureftpd-upload.*`) is new;
a file still being followed is followed at its new path. A media file that was already handled
and is only renamed (or whose camera folder is renamed) is not published again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter, OrderedDict
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from redis.asyncio import Redis, RedisCluster
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from streams.names import StreamNames
from streams.tracing import StageTelemetry
from streams.watch.candidates import REFUSALS, Ignored, admitted_by_scan, classify, is_hidden
from streams.watch.config import WatchConfig, WatchError
from streams.watch.events import INOTIFY_EVENTS, POLLING_EVENTS, Handoff, PathEvent
from streams.watch.ledger import Ledger
from streams.watch.outcomes import Outcome, OutcomeKind, WatchCounts
from streams.watch.publisher import HeadersFactory, ObservedHook, Publisher
from streams.watch.tracking import Follower, Track

logger = logging.getLogger("hsi.watch")

_V = TypeVar("_V")

_MEMO_SIZE = 10_000  # paths remembered as settled or ignored, so repeated events stay quiet

# Outcomes remembered with the file's size and mtime: an event for the unchanged file is quiet.
_SETTLED = frozenset(
    {OutcomeKind.OBSERVED, OutcomeKind.DUPLICATE, OutcomeKind.CORRUPT, OutcomeKind.IGNORED}
)

_COUNTED: dict[OutcomeKind, str] = {
    OutcomeKind.OBSERVED: "observed",
    OutcomeKind.DUPLICATE: "duplicates",
    OutcomeKind.CORRUPT: "corrupt",
    OutcomeKind.IGNORED: "ignored",
    OutcomeKind.VANISHED: "vanished",
    OutcomeKind.FAILED: "failed",
}


class Watcher:
    """Watches the camera root and publishes each complete, new upload once.

    Lifecycle: `await start()` … `await stop()`, or `await run(stop_event)`, or
    `async with Watcher(...)`. `ingest()` works with or without the watcher started.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        names: StreamNames,
        camera_root: str | os.PathLike[str],
        config: WatchConfig,
        *,
        headers_factory: HeadersFactory | None = None,
        on_observed: ObservedHook | None = None,
        telemetry: StageTelemetry | None = None,
    ) -> None:
        self._root = _absolute(camera_root)
        self._config = config
        self._publisher = Publisher(
            Ledger(client, names, config.dedupe_ttl),
            config.timezone,
            headers_factory=headers_factory,
            on_observed=on_observed,
            telemetry=telemetry,
            names=names,
        )
        self._settled: OrderedDict[Path, tuple[int, int]] = OrderedDict()
        self._follower = Follower(config, self._publisher, self._settled, self._root)
        self._counts: Counter[str] = Counter()
        self._pending: dict[Path, Track] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ignored: OrderedDict[Path, None] = OrderedDict()
        self._scan_slots = asyncio.Semaphore(config.scan_concurrency)
        self._observer: BaseObserver | None = None
        self._scan_task: asyncio.Task[None] | None = None

    # --- public -----------------------------------------------------------------------------
    @property
    def camera_root(self) -> Path:
        return self._root

    @property
    def counts(self) -> WatchCounts:
        """A snapshot of the totals (for metrics and tests)."""
        counts = {name: self._counts[name] for name in WatchCounts.__slots__}
        counts["cameras_registered"] = self._publisher.cameras_registered
        return WatchCounts(**counts)

    @property
    def pending(self) -> int:
        """Files being followed right now."""
        return len(self._pending)

    @property
    def scanning(self) -> bool:
        """Whether the start-up scan is still listing or feeding files."""
        return self._scan_task is not None and not self._scan_task.done()

    async def start(self) -> None:
        """Start watching (inotify, or polling when configured) and scan what is there."""
        if self._observer is not None:
            raise WatchError("the watcher is already started; call stop() before starting again")
        if not await asyncio.to_thread(self._root.is_dir):
            raise WatchError(
                f"camera root {str(self._root)!r} is not a folder; it may be unmounted or "
                "misspelt. Fix: create it or correct the camera root setting"
            )
        loop = asyncio.get_running_loop()
        observer = self._make_observer()
        observer.schedule(
            Handoff(loop, self._on_event),
            str(self._root),
            recursive=True,
            event_filter=POLLING_EVENTS if self._config.polling else INOTIFY_EVENTS,
        )
        try:
            await asyncio.to_thread(observer.start)
        except OSError as exc:
            raise WatchError(
                f"cannot watch {str(self._root)!r}: {exc}. With many folders the inotify limits "
                "may be reached. Fix: raise fs.inotify.max_user_watches / max_user_instances, "
                "or enable polling"
            ) from exc
        self._observer = observer
        self._scan_task = loop.create_task(self._scan())
        logger.info(
            "watch.started", extra={"root": str(self._root), "polling": self._config.polling}
        )

    async def stop(self) -> None:
        """Stop watching; files still being followed are dropped (the next start scans them)."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            await asyncio.to_thread(observer.join)
        tasks: list[asyncio.Task[None]] = [*self._tasks]
        if self._scan_task is not None:
            tasks.append(self._scan_task)
            self._scan_task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()
        if observer is not None:
            logger.info("watch.stopped", extra={"root": str(self._root)})

    async def run(self, stop_event: asyncio.Event) -> None:
        """Watch until `stop_event` is set."""
        await self.start()
        try:
            await stop_event.wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> Watcher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def ingest(self, path: str | os.PathLike[str]) -> list[Outcome]:
        """Take a file, or every file under a folder, through the watcher's route (backfill).

        Paths must lie under the camera root (others come back ignored, `outside_root`).
        Returns one outcome per file, in walk order.
        """
        target = _absolute(path)
        if not await asyncio.to_thread(target.exists):
            raise WatchError(f"{str(target)!r} does not exist; check the path to ingest")
        if await asyncio.to_thread(target.is_dir):
            files = [found for found, _ in await asyncio.to_thread(_walk, target)]
        else:
            files = [target]
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Outcome]] = []
        for file in files:
            await self._scan_slots.acquire()
            future: asyncio.Future[Outcome] = loop.create_future()
            future.add_done_callback(lambda _: self._scan_slots.release())
            followed = self._follow(file, from_event=False)
            if isinstance(followed, Outcome):
                future.set_result(followed)
            else:
                followed.waiters.append(future)
            futures.append(future)
        return list(await asyncio.gather(*futures))

    # --- events and scan --------------------------------------------------------------------
    def _make_observer(self) -> BaseObserver:
        if self._config.polling:
            return PollingObserver(timeout=self._config.poll_interval)
        try:
            return Observer()
        except OSError as exc:
            raise WatchError(
                f"cannot start inotify ({exc}); the per-user inotify instances may be used up. "
                "Fix: raise fs.inotify.max_user_instances, or enable polling"
            ) from exc

    def _on_event(self, event: PathEvent) -> None:
        """A file-system event, on the loop."""
        if self._observer is None:
            return  # delivered while stopping
        try:
            if event.kind == "moved" and event.source is not None:
                source = _absolute(event.source)
                moving = self._pending.get(source)
                if moving is not None:
                    moving.moved = True
                elif not isinstance(classify(source, self._root), Ignored):
                    return  # a handled media file renamed, or its folder: already published
            self._follow(event.path, from_event=True, closed=event.kind == "closed")
        except Exception as exc:
            logger.exception(
                "watch.path_failed", extra={"path": str(event.path), "error": repr(exc)}
            )
            self._counts["failed"] += 1

    async def _scan(self) -> None:
        """Follow every recent file already under the root."""
        started = time.time()
        files = await asyncio.to_thread(_walk, self._root)
        followed = too_old = 0
        for path, mtime in files:
            if not admitted_by_scan(mtime, started, self._config.scan_max_age):
                too_old += 1
                continue
            await self._scan_slots.acquire()
            try:
                track = self._follow(path, from_event=False)
            except BaseException:
                self._scan_slots.release()
                raise
            if isinstance(track, Outcome):
                self._scan_slots.release()
                continue
            followed += 1
            done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            done.add_done_callback(lambda _: self._scan_slots.release())
            track.waiters.append(done)
        logger.info(
            "watch.scan_completed",
            extra={"files": len(files), "followed": followed, "too_old": too_old},
        )

    def _follow(self, path: Path, *, from_event: bool, closed: bool = False) -> Track | Outcome:
        """Start following `path` (or move the next look if it is followed already): a debounce
        after an event, the close debounce after its writer closed it."""
        path = _absolute(path)
        loop = asyncio.get_running_loop()
        debounce = self._config.close_debounce if closed else self._config.debounce_seconds
        track = self._pending.get(path)
        if track is not None:
            if from_event:
                track.closed = closed
                if not closed:  # created or moved in again: whatever was closed is gone
                    track.closed_as = None
                track.look_at(loop.time() + debounce)
            return track
        verdict = classify(path, self._root)
        if isinstance(verdict, Ignored):
            return self._ignore(verdict)
        track = Track(
            candidate=verdict, due=loop.time() + debounce, from_event=from_event, closed=closed
        )
        self._pending[path] = track
        task = loop.create_task(self._run(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return track

    def _ignore(self, verdict: Ignored) -> Outcome:
        if verdict.path not in self._ignored:
            self._counts["ignored"] += 1
            _remember(self._ignored, verdict.path, None)
            logger.log(
                logging.WARNING if verdict.reason in REFUSALS else logging.DEBUG,
                "file.ignored",
                extra={"path": _printable(verdict.path), "reason": verdict.reason.value},
            )
        return Outcome(verdict.path, OutcomeKind.IGNORED, reason=verdict.reason.value)

    # --- following one file -----------------------------------------------------------------
    async def _run(self, track: Track) -> None:
        candidate = track.candidate
        try:
            outcome = await self._follower.settle(track)
        except asyncio.CancelledError:
            self._release(track)
            for waiter in track.waiters:
                waiter.cancel()
            raise
        except Exception as exc:
            logger.exception(
                "watch.path_failed",
                extra={
                    "camera": candidate.camera_id,
                    "path": candidate.relative,
                    "error": repr(exc),
                },
            )
            outcome = Outcome(
                candidate.path,
                OutcomeKind.FAILED,
                reason=repr(exc),
                camera_id=candidate.camera_id,
            )
        self._release(track)
        counter = _COUNTED.get(outcome.kind)
        if counter is not None and not (outcome.kind is OutcomeKind.VANISHED and track.moved):
            self._counts[counter] += 1
        if outcome.kind in _SETTLED:
            last = track.history[-1] if track.history else None
            if last is not None and last.size is not None:
                _remember(self._settled, candidate.path, (last.size, last.mtime_ns))
        for waiter in track.waiters:
            if not waiter.done():
                waiter.set_result(outcome)

    def _release(self, track: Track) -> None:
        if self._pending.get(track.candidate.path) is track:
            del self._pending[track.candidate.path]


def _remember(memo: OrderedDict[Path, _V], key: Path, value: _V) -> None:
    """Put `key` into a bounded LRU memo."""
    memo[key] = value
    memo.move_to_end(key)
    while len(memo) > _MEMO_SIZE:
        memo.popitem(last=False)


def _printable(path: Path) -> str:
    """`path` for a log line: bytes that are not UTF-8 shown as `\\xe9` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _absolute(path: str | os.PathLike[str]) -> Path:
    """`path` made absolute without resolving symlinks (classification needs the link)."""
    return Path(os.path.abspath(path))


def _walk(folder: Path) -> list[tuple[Path, float]]:
    """Every file under `folder` with its mtime, hidden folders skipped, sorted by path.

    Symlinked folders are not entered but listed like files, so that classification reports
    those that lead out of the camera root. Folders that vanish or cannot be read during the
    walk are skipped.
    """
    found: list[tuple[Path, float]] = []
    for directory, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not is_hidden(name))
        linked = [name for name in folders if os.path.islink(os.path.join(directory, name))]
        for name in sorted([*files, *linked]):
            path = Path(directory) / name
            try:
                found.append((path, path.stat().st_mtime))
            except OSError:
                continue  # gone already, or a broken symlink
    return found
