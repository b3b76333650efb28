"""What the CLI and the process wiring call for the read side: `hsi replay`, `hsi replay
--verify`, retention. Thin wrappers over `projections` (`replay` is `projections.replay.rebuild`,
`verify` is `projections.replay.verify`); the command owns the engine and the Redis client and
closes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from redis.asyncio import Redis, RedisCluster
from sqlalchemy.ext.asyncio import AsyncEngine

from projections import replay as replay_module
from projections.dead_letters import forget_dead_letter
from projections.replay import VerifyReport, rebuild
from projections.replay import verify as verify
from projections.retention import RetentionReport, run_retention
from projections.retention_rules import RetentionRules
from streams.names import StreamNames, is_camera_id

replay = rebuild  # `hsi replay`: rebuild the projection from the streams and swap it in


async def known_cameras(
    engine: AsyncEngine, redis: Redis | RedisCluster, names: StreamNames
) -> list[str]:
    """Cameras of the `camera-ids` set and of the `cameras` table."""
    async with engine.connect() as conn:
        cameras = await replay_module.known_cameras(redis, names, conn, (None,))
    return sorted(c for c in cameras if is_camera_id(c))


async def retention(
    engine: AsyncEngine,
    redis: Redis | RedisCluster,
    names: StreamNames,
    *,
    retention_days: int,
    delete_media: bool = False,
    camera_root: Path | None = None,
    now: datetime | None = None,
    cameras: Iterable[str] | None = None,
    rules: RetentionRules | None = None,
    dry_run: bool = False,
) -> RetentionReport:
    """One retention run over every known camera (or the given ones); with `dry_run`, the plan
    of what such a run would delete, changing nothing."""
    chosen = list(cameras) if cameras is not None else await known_cameras(engine, redis, names)
    return await run_retention(
        engine,
        redis,
        names,
        chosen,
        now or datetime.now(UTC),
        retention_days,
        delete_media,
        camera_root,
        rules=rules,
        dry_run=dry_run,
    )


def retention_lines(report: RetentionReport) -> list[str]:
    """A human summary of a retention run or plan: per camera its cutoff, then per camera and
    risk level the events, media files and bytes, then the totals."""
    verb = "to delete" if report.planned else "deleted"
    lines = [f"cutoff {report.cutoff.isoformat()}"]
    for camera, cutoff in sorted(report.cutoffs.items()):
        if cutoff != report.cutoff:
            lines.append(f"cutoff of {camera}: {cutoff.isoformat()}")
    trimmed = "stream entries to trim" if report.planned else "stream entries trimmed"
    lines.append(f"{trimmed}: {report.trimmed}")
    for table, count in sorted(report.rows.items()):
        lines.append(f"rows {verb} from {table}: {count}")
    for (camera, level), level_count in sorted(report.levels.items()):
        lines.append(
            f"{camera} {level}: {level_count.events} events, {level_count.media_files} media files "
            f"({level_count.media_bytes} bytes) {verb}"
        )
    lines.append(f"media files {verb}: {report.media_deleted} ({report.media_bytes} bytes)")
    lines.extend(
        f"refused to delete {path} (outside the camera root)" for path in report.media_refused
    )
    return lines


async def dead_letter_removed(
    engine: AsyncEngine, names: StreamNames, camera: str, dead_id: str
) -> bool:
    """Call after `hsi dlq retry` / `drop` deleted a dead letter from its stream."""
    return await forget_dead_letter(engine, names, camera, dead_id)


def eta_seconds(done: int, total: int, elapsed_seconds: float) -> float | None:
    """Seconds left at the rate so far; None before there is a rate."""
    if done <= 0 or elapsed_seconds <= 0:
        return None
    left = max(0, total - done)
    return math.ceil(left * elapsed_seconds / done * 10) / 10


def verify_lines(report: VerifyReport) -> list[str]:
    """A human summary of a verification, one line per table that differs."""
    if report.equal:
        return [f"projection equals a rebuild of {report.replay.entries} entries"]
    lines = []
    for diff in report.differences:
        line = f"{diff.table}: {diff.only_live} rows only live, {diff.only_rebuilt} only rebuilt"
        samples = [*diff.sample_only_live, *diff.sample_only_rebuilt]
        lines.append(line + (f" (e.g. {', '.join(samples[:5])})" if samples else ""))
    return lines
