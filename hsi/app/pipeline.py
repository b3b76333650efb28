"""The write-side pipeline of one process: stages, reclaimers, batch timer, camera discovery.

`hsi worker --stage detect` runs one stage; `hsi up` runs them all (plus the watcher and the API).
A pipeline with the project stage also gives the watcher's dedupe markers back to a Redis that
lost them, at start and after `redis.data_lost` (`hsi.app.markers`).

Every process discovers cameras from the `camera-ids` set that the watcher fills, and subscribes
only to the cameras its `CameraSelection` owns, so workers scale per camera and per stage.

With `REDIS_CLUSTER` the same pipeline runs on Redis Cluster: the client is a `RedisCluster`
and the broker FastStream's `RedisClusterBroker` (same subscriber API; HSI never uses FastStream's
`pipeline=` publishing, which the cluster broker lacks).

Telemetry: the stages, reclaimers and batch timer record on `hsi.infra.telemetry`'s providers (spans
per entry, `hsi_*` metrics; see `streams.tracing`). FastStream's own telemetry and Prometheus
middlewares are not used: they would make one span per XREADGROUP batch in a trace of its own and
count the same messages again under other names. `StreamGauges` polls XINFO GROUPS, XLEN and
XPENDING of the streams this process consumes every few seconds into a `StreamSnapshot`, which
the `hsi_stream_*` and `hsi_projector_lag` gauges read at scrape time (no Redis I/O in a scrape).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from faststream.redis import RedisBroker, RedisClusterBroker

from hsi.api.queries.streams import stream_health
from hsi.app.markers import restore_lost_markers
from hsi.infra.db import create_engine
from hsi.infra.redis import DataLossMonitor, RedisClient, create_redis
from hsi.infra.stream_gauges import StreamReading, StreamSnapshot
from hsi.infra.telemetry import register_stream_gauges, stage_telemetry
from hsi.settings import components
from projections.projector import Projector, ProjectStage
from streams.alerts import NotifyConfig, RuleSet, load_rules
from streams.alerts.channels import build_channels
from streams.alerts.rules import check_channels
from streams.analyzers import build_analyzer
from streams.contract import HandlerResult, StreamEntry
from streams.detectors import build_detector
from streams.groups import GroupPositions
from streams.names import PROJECTED, SHARED, STAGE_INPUT, Group, StreamKind, StreamNames
from streams.reclaim import Reclaimer
from streams.stages.analyze import AnalyzeStage
from streams.stages.batch import BatchStage
from streams.stages.detect import DetectStage
from streams.stages.notify import NotifyStage
from streams.stages.runtime import CameraSelection, StageRunner
from streams.tracing import StageTelemetry
from streams.zones import NO_ZONES, load_zones

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from hsi.settings.model import Settings
    from streams.analyzers import Analyzer
    from streams.detectors import Detector

log = logging.getLogger("hsi.pipeline")

WRITE_STAGES: tuple[Group, ...] = (Group.DETECT, Group.BATCH, Group.ANALYZE)
# Every stage; a pipeline leaves notify out unless NOTIFICATION_ENABLED (`active_stages`).
ALL_STAGES: tuple[Group, ...] = (*WRITE_STAGES, Group.PROJECT, Group.NOTIFY)


class _Stage(Protocol):
    group: Group

    async def handle(self, stream: str, entries: list[StreamEntry]) -> HandlerResult: ...


@dataclass(frozen=True)
class PipelineOptions:
    stages: tuple[Group, ...] = WRITE_STAGES
    selection: CameraSelection = field(default_factory=CameraSelection)
    reclaim: bool = True
    discovery_interval_seconds: float = 2.0
    batch_tick_seconds: float = 1.0
    stream_gauges_interval_seconds: float = 5.0


class Pipeline:
    """Owns the Redis client, the FastStream broker and every stage of one process."""

    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        options: PipelineOptions,
        *,
        detector: Detector | None = None,
        analyzer: Analyzer | None = None,
        database_url: str | None = None,
    ) -> None:
        if Group.PROJECT in options.stages and database_url is None:
            raise ValueError("the project stage needs a database URL")
        options = replace(options, stages=active_stages(settings, options.stages))
        self._settings = settings
        self._redis_url = redis_url
        self._database_url = database_url
        self._engine: AsyncEngine | None = None
        self.options = options
        self.names: StreamNames = components.stream_names(settings)
        self.consumer = components.consumer_name()
        self._detector = detector
        self._analyzer = analyzer
        self._redis: RedisClient | None = None
        self._broker: RedisBroker | None = None
        self.runners: dict[tuple[Group, StreamKind], StageRunner] = {}
        self.reclaimers: dict[Group, Reclaimer] = {}
        self.batch_stage: BatchStage | None = None
        self.notify_stage: NotifyStage | None = None
        # Checked before anything starts: a bad rules file or channel setup stops HSI at once.
        self._notify: tuple[NotifyConfig, RuleSet] | None = None
        if Group.NOTIFY in options.stages:
            notify = components.notify_config(settings)
            rules = load_rules(notify.rules_path)
            check_channels(rules, notify.channel_names)
            self._notify = (notify, rules)
        # Read once at start (a changed file applies to files detected after a restart).
        self._zones = load_zones(settings.zones_path) if Group.DETECT in options.stages else None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._telemetry: StageTelemetry = stage_telemetry()
        self.gauges: StreamGauges | None = None
        self.data_loss: DataLossMonitor | None = None
        self._unregister_gauges: Callable[[], None] = lambda: None

    @property
    def redis(self) -> RedisClient:
        if self._redis is None:
            raise RuntimeError("the pipeline is not started")
        return self._redis

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self._settings
        config = components.redis_config(settings, self._redis_url)
        self._redis = create_redis(config)
        self._telemetry = stage_telemetry()
        # FastStream's own per-message logging is off: HSI logs stage events itself.
        broker_class = RedisClusterBroker if config.cluster else RedisBroker
        self._broker = broker_class(
            self._redis_url,
            logger=logging.getLogger("hsi.faststream"),
            log_level=logging.DEBUG,
            graceful_timeout=30.0,
            # Handlers take the batch alone (`streams.stages.runtime`): no injection.
            apply_types=False,
        )
        await self._broker.start()
        for group in self.options.stages:
            stage = self._build_stage(group)
            # One position tracker per group: whichever of the runner and the reclaimer meets
            # a lost group first recreates it at the freshest position either has seen.
            positions = GroupPositions(self._redis, group.value)
            reclaimer: Reclaimer | None = None
            if self.options.reclaim:
                reclaimer = Reclaimer(
                    self._redis,
                    self.names,
                    group=group.value,
                    streams=(),
                    config=components.reclaim_config(settings),
                    consumer=f"{self.consumer}-reclaim-{group.value}",
                    handler=stage.handle,
                    telemetry=self._telemetry,
                    positions=positions,
                )
                self.reclaimers[group] = reclaimer
            for kind in stage_inputs(group):
                self.runners[group, kind] = StageRunner(
                    broker=self._broker,
                    redis=self._redis,
                    names=self.names,
                    group=group,
                    kind=kind,
                    handler=_recording(stage.handle, reclaimer),
                    consumer=f"{self.consumer}-{group.value}",
                    config=components.consume_config(settings),
                    positions=positions,
                )
        self.data_loss = DataLossMonitor(self._redis, self.names.epoch)
        await self.data_loss.check()
        await self.restore_markers()
        await self.discover()
        self._tasks.append(asyncio.create_task(self._discovery_loop(), name="hsi-discovery"))
        self.gauges = StreamGauges(self._redis, self.names, self.owned_streams)
        self._unregister_gauges = register_stream_gauges(self.gauges.snapshot)
        self._tasks.append(
            asyncio.create_task(
                self.gauges.run(self._stop, self.options.stream_gauges_interval_seconds),
                name="hsi-stream-gauges",
            )
        )
        for group, reclaimer in self.reclaimers.items():
            self._tasks.append(
                asyncio.create_task(reclaimer.run(self._stop), name=f"hsi-reclaim-{group}")
            )
        if self.batch_stage is not None:
            self._tasks.append(asyncio.create_task(self._batch_timer(), name="hsi-batch-timer"))
        log.info(
            "pipeline.started",
            extra={
                "stages": ",".join(g.value for g in self.options.stages),
                "consumer": self.consumer,
            },
        )

    async def stop(self) -> None:
        """Finish the batches in hand, then close everything."""
        self._stop.set()
        for runner in self.runners.values():
            await runner.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._unregister_gauges()
        if self._broker is not None:
            await self._broker.stop()
        for closable in (self._detector, self._analyzer, self.notify_stage):
            if closable is not None:
                await closable.aclose()
        if self._engine is not None:
            await self._engine.dispose()
        if self._redis is not None:
            await self._redis.aclose()
        log.info("pipeline.stopped", extra={"consumer": self.consumer})

    def _build_stage(self, group: Group) -> _Stage:
        settings = self._settings
        redis = self.redis
        if group is Group.DETECT:
            if self._detector is None:
                self._detector = build_detector(components.detector_config(settings))
            return DetectStage(
                redis=redis,
                names=self.names,
                detector=self._detector,
                camera_root=settings.camera_root,
                concurrency=settings.detector_max_concurrency,
                telemetry=self._telemetry,
                zones=self._zones or NO_ZONES,
            )
        if group is Group.BATCH:
            self.batch_stage = BatchStage(
                redis=redis,
                names=self.names,
                config=components.batch_config(settings),
                telemetry=self._telemetry,
                confirmation=components.confirmation(settings),
            )
            return self.batch_stage
        if group is Group.ANALYZE:
            if self._analyzer is None:
                self._analyzer = build_analyzer(
                    settings.analyzer_backend.value,
                    thresholds=components.severity(settings),
                    llm=components.llm_config(settings),
                )
            return AnalyzeStage(
                redis=redis,
                names=self.names,
                analyzer=self._analyzer,
                timezone=components.local_zone(settings),
                telemetry=self._telemetry,
            )
        if group is Group.PROJECT:
            assert self._database_url is not None
            self._engine = create_engine(self._database_url, components.pool_config(settings))
            return ProjectStage(
                redis, self.names, Projector(self._engine, self.names), telemetry=self._telemetry
            )
        if group is Group.NOTIFY:
            assert self._notify is not None
            notify, rules = self._notify
            self.notify_stage = NotifyStage(
                redis=redis,
                names=self.names,
                rules=rules,
                channels=build_channels(notify),
                config=notify,
                consumer=f"{self.consumer}-{group.value}",
                telemetry=self._telemetry,
            )
            return self.notify_stage
        raise ValueError(f"{group.value} is not a stage HSI runs")

    async def restore_markers(self) -> None:
        """With PostgreSQL at hand (the project stage), give the watcher's dedupe markers back to
        a Redis data set that lacks them (`hsi.app.markers`)."""
        if self._engine is None:
            return
        await restore_lost_markers(
            self.redis,
            self.names,
            self._engine,
            ttl_seconds=components.watch_config(self._settings).dedupe_ttl,
        )

    # --- cameras --------------------------------------------------------------------------------

    async def discover(self) -> list[str]:
        """Subscribe every stage to the owned cameras it does not know yet."""
        members = await self.redis.smembers(self.names.camera_set)
        cameras = sorted(
            c
            for c in (m.decode() if isinstance(m, bytes) else m for m in members)
            if self.options.selection.owns(c)
        )
        return await self.add_cameras(cameras)

    async def add_cameras(self, cameras: Iterable[str]) -> list[str]:
        cameras = list(cameras)
        added: set[str] = set()
        for (group, kind), runner in self.runners.items():
            # The shared cameras stream has one "camera" of its own: the SHARED tag.
            wanted = [SHARED] if kind is StreamKind.CAMERAS else cameras
            new = await runner.add_cameras(wanted)
            added.update(c for c in new if c != SHARED)
            reclaimer = self.reclaimers.get(group)
            if reclaimer is not None:
                for camera in new:
                    reclaimer.add_stream(self.names.stream(camera, kind))
        return sorted(added)

    async def _discovery_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self.options.discovery_interval_seconds)
            try:
                if self.data_loss is not None:
                    await self.data_loss.check()
                # Each tick, not only on a reported loss: a failed restore is tried again.
                await self.restore_markers()
                for camera in await self.discover():
                    log.info("pipeline.camera_added", extra={"camera": camera})
            except Exception:
                log.exception("pipeline.discovery_failed")

    async def _batch_timer(self) -> None:
        assert self.batch_stage is not None
        runner = self.runners[Group.BATCH, STAGE_INPUT[Group.BATCH]]
        while not self._stop.is_set():
            await asyncio.sleep(self.options.batch_tick_seconds)
            for camera in sorted(runner.cameras):
                try:
                    await self.batch_stage.tick_camera(camera)
                except Exception:
                    log.exception("batch.tick_failed", extra={"camera": camera})

    def owned_streams(self) -> list[tuple[str, StreamKind, str]]:
        """(camera, stream kind, group) of every stream this process consumes; plus, per camera,
        its dead stream (group ""), whose length is the camera's dead letters."""
        owned: list[tuple[str, StreamKind, str]] = []
        cameras: set[str] = set()
        for (group, kind), runner in self.runners.items():
            for camera in sorted(runner.cameras):
                owned.append((camera, kind, group.value))
                cameras.add(camera)
        owned.extend((camera, StreamKind.DEAD, "") for camera in sorted(cameras))
        return owned

    # --- draining (tests, `hsi ingest`) ------------------------------------------------------

    async def backlog(self) -> int:
        """Entries not yet acknowledged by this process's stages, over the owned cameras."""
        total = 0
        for (group, _kind), runner in self.runners.items():
            for stream in runner.streams():
                for info in await self.redis.xinfo_groups(stream):
                    name = (
                        info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
                    )
                    if name == group.value:
                        total += int(info.get("lag") or 0) + int(info.get("pending") or 0)
        return total

    async def drain(self, within_seconds: float = 60.0, settle: float = 0.3) -> None:
        """Wait until every owned stream is fully processed (and stays so for `settle` s)."""
        async with asyncio.timeout(within_seconds):
            while True:
                if await self.backlog() == 0:
                    await asyncio.sleep(settle)
                    if await self.backlog() == 0:
                        return
                await asyncio.sleep(0.05)


def active_stages(settings: Settings, stages: tuple[Group, ...]) -> tuple[Group, ...]:
    """The stages a pipeline runs: `stages`, without notify unless NOTIFICATION_ENABLED."""
    if settings.notification_enabled or Group.NOTIFY not in stages:
        return stages
    log.info("pipeline.notify_off", extra={"reason": "NOTIFICATION_ENABLED is false"})
    return tuple(group for group in stages if group is not Group.NOTIFY)


def stage_inputs(group: Group) -> tuple[StreamKind, ...]:
    """The streams a group consumes: one per write-side stage, all of them for the projector."""
    if group is Group.PROJECT:
        return (*PROJECTED, StreamKind.CAMERAS)
    return (STAGE_INPUT[group],)


def _recording(
    handle: Callable[[str, list[StreamEntry]], Awaitable[HandlerResult]],
    reclaimer: Reclaimer | None,
) -> Callable[[str, list[StreamEntry]], Awaitable[HandlerResult]]:
    """Pass the errors of fresh deliveries to the reclaimer, so dead letters can name them."""

    async def handle_and_record(stream: str, entries: list[StreamEntry]) -> HandlerResult:
        result = await handle(stream, entries)
        if reclaimer is not None and result.failed:
            reclaimer.record_failures(stream, result.failed)
        return result

    return handle_and_record


class StreamGauges:
    """Polls the health of a set of streams into a `StreamSnapshot` (for the stream gauges).

    `streams()` names (camera, kind, group) triples: a reading per stream and group with the
    stream's length, the group's lag, pending count and the idle time of its oldest pending
    entry; group "" reports the stream's length as dead letters (for dead streams).
    """

    def __init__(
        self,
        redis: RedisClient,
        names: StreamNames,
        streams: Callable[[], Iterable[tuple[str, StreamKind, str]]],
    ) -> None:
        self._redis = redis
        self._names = names
        self._streams = streams
        self.snapshot = StreamSnapshot()

    async def refresh(self) -> tuple[StreamReading, ...]:
        wanted = list(dict.fromkeys(self._streams()))
        by_kind: dict[StreamKind, list[str]] = {}
        for camera, kind, _ in wanted:
            cameras = by_kind.setdefault(kind, [])
            if camera not in cameras:
                cameras.append(camera)
        health = {}
        for kind, cameras in by_kind.items():
            for stream in await stream_health(self._redis, self._names, cameras, (kind,)):
                health[stream.camera_id, kind] = stream
        readings = []
        for camera, kind, group in wanted:
            found = health.get((camera, kind))
            if found is None:
                continue
            if not group:
                readings.append(
                    StreamReading(
                        found.key, camera=camera, length=found.length, dead_letters=found.length
                    )
                )
                continue
            info = found.group(group)
            if info is None:
                continue  # the group is not there yet: nothing to say about it
            idle_ms = info.oldest_pending_idle_ms if info.pending else 0
            readings.append(
                StreamReading(
                    found.key,
                    group=group,
                    camera=camera,
                    length=found.length,
                    lag=info.lag,
                    pending=info.pending,
                    oldest_pending_age_seconds=None if idle_ms is None else idle_ms / 1000,
                )
            )
        self.snapshot.update(readings)
        return tuple(readings)

    async def run(self, stop: asyncio.Event, interval_seconds: float) -> None:
        """Refresh every `interval_seconds` until `stop` is set; errors are logged and retried."""
        while not stop.is_set():
            try:
                await self.refresh()
            except Exception:
                log.warning("pipeline.stream_gauges_failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
