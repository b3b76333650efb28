"""`hsi reanalyze`: the candidate analyzer from the command's options, and the run's calls.

The work itself is `streams.reanalysis.runner`; this module builds the candidate (the rules with
weights and thresholds from a TOML file, or an LLM with another URL, model or prompt file) and
connects to Redis the way every command does.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hsi.infra.redis import create_redis
from hsi.settings import components
from hsi.settings.model import Settings
from streams.analyzers import AnalyzerConfigError, LLMAnalyzer, RulesAnalyzer
from streams.analyzers.rules import RulesConfig, parse_rules_config
from streams.names import StreamNames
from streams.reanalysis.report import Report, build_report
from streams.reanalysis.runner import (
    Candidate,
    Progress,
    RunError,
    RunWorker,
    adopt,
    cancel_run,
    run_cameras,
    run_results,
    start_run,
    stream_entries,
)
from streams.reanalysis.selection import Selection
from streams.schemas import ReanalysisStarted

_RELATIVE = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


class ReanalysisError(ValueError):
    """The command cannot run as asked; the message says what to change."""


def parse_moment(text: str | None, now: datetime) -> datetime | None:
    """`7d`, `12h`, `30m` (that long before `now`) or an ISO 8601 time (UTC without offset)."""
    if text is None:
        return None
    match = _RELATIVE.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReanalysisError(
            f"{text!r} is neither a duration (7d, 12h, 30m) nor an ISO time (2026-12-01T00:00Z)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@dataclass(frozen=True)
class CandidateOptions:
    analyzer: str  # rules | llm
    config: Path | None = None  # rules: TOML of weights and thresholds
    llm_url: str | None = None
    model: str | None = None
    prompt_file: Path | None = None


def build_candidate(settings: Settings, options: CandidateOptions) -> Candidate:
    thresholds = components.severity(settings)
    if options.analyzer == "rules":
        if options.llm_url or options.model or options.prompt_file:
            raise ReanalysisError("--llm-url, --model and --prompt-file go with --analyzer llm")
        config = RulesConfig(thresholds=thresholds)
        if options.config is not None:
            try:
                raw = tomllib.loads(options.config.read_text(encoding="utf-8"))
                config = parse_rules_config(raw, config)
            except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
                raise ReanalysisError(f"{options.config}: {exc}") from None
        analyzer = RulesAnalyzer(config.thresholds, categories=config.categories)
        return Candidate(analyzer, "rules", None, config.describe())
    if options.analyzer != "llm":
        raise ReanalysisError(f"--analyzer {options.analyzer!r}: use rules or llm")
    if options.config is not None:
        raise ReanalysisError("--config (weights and thresholds) goes with --analyzer rules")
    llm = components.llm_config(settings)
    changes: dict[str, Any] = {}
    if options.llm_url:
        changes["base_url"] = options.llm_url
    if options.model:
        changes["model"] = options.model
    if options.prompt_file is not None:
        try:
            changes["system_prompt"] = options.prompt_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ReanalysisError(f"--prompt-file: {exc}") from None
    try:
        llm = replace(llm, **changes)
    except AnalyzerConfigError as exc:
        raise ReanalysisError(str(exc)) from None
    description = f"llm[{llm.completions_url}][{llm.model}][{llm.system_prompt}]"
    return Candidate(LLMAnalyzer(llm, thresholds), "llm", llm.model, description)


def selection_of(
    *,
    cameras: tuple[str, ...],
    since: str | None,
    until: str | None,
    levels: tuple[str, ...],
    events: tuple[str, ...],
    now: datetime,
) -> Selection:
    try:
        return Selection(
            cameras=tuple(sorted(set(cameras))),
            since=parse_moment(since, now),
            until=parse_moment(until, now),
            levels=frozenset(levels),
            event_ids=frozenset(e.lower() for e in events),
        )
    except ValueError as exc:
        raise ReanalysisError(str(exc)) from None


class Session:
    """Redis for one command, with the names and cameras of the installation."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self.settings = settings
        self.redis = create_redis(components.redis_config(settings, redis_url))
        self.names: StreamNames = components.stream_names(settings)

    async def cameras(self) -> list[str]:
        members: Any = await self.redis.smembers(self.names.camera_set)
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def start(
        self, candidate: Candidate, selection: Selection, max_tokens: int | None
    ) -> str:
        cameras = await self.cameras()
        unknown = sorted(set(selection.cameras) - set(cameras))
        if unknown:
            raise ReanalysisError(f"no camera {', '.join(unknown)}; known: {', '.join(cameras)}")
        return await start_run(
            self.redis, self.names, cameras, candidate, selection, max_tokens=max_tokens
        )

    async def work(
        self,
        run_id: str,
        candidate: Candidate,
        concurrency: int,
        on_progress: Callable[[Progress], None] | None,
    ) -> dict[str, str]:
        worker = RunWorker(
            self.redis,
            self.names,
            candidate,
            run_id,
            timezone=components.local_zone(self.settings),
            concurrency=concurrency,
            on_progress=on_progress,
        )
        try:
            return await worker.run(await self.cameras())
        finally:
            await candidate.analyzer.aclose()

    async def report(self, run_id: str, alert_from: str = "high") -> Report:
        items = await run_results(self.redis, self.names, await self.cameras(), run_id)
        return build_report(items, alert_from)

    async def describe(self, run_id: str) -> dict[str, Any]:
        """The run as recorded: candidate, selection, per camera its end."""
        states = await run_cameras(self.redis, self.names, await self.cameras(), run_id)
        if not states:
            raise RunError(f"no run {run_id!r}")
        first = next(iter(states.values())).started
        assert first is not None
        return {
            "run": run_id,
            "analyzer": first.analyzer,
            "model": first.model,
            "selection": first.selection,
            "started_at": first.started_at,
            "cameras": {
                camera: (state.ended.reason if state.ended else "running")
                + (" (adopted)" if state.adopted else "")
                for camera, state in states.items()
            },
        }

    async def runs(self) -> list[dict[str, Any]]:
        """Every run on the streams, newest first."""
        seen: dict[str, dict[str, Any]] = {}
        for camera in await self.cameras():
            for _, entry in await stream_entries(self.redis, self.names.reanalyses(camera)):
                if isinstance(entry, ReanalysisStarted):
                    run = seen.setdefault(
                        entry.run_id,
                        {
                            "run": entry.run_id,
                            "analyzer": entry.analyzer,
                            "model": entry.model,
                            "selection": entry.selection,
                            "started_at": entry.started_at,
                            "cameras": 0,
                        },
                    )
                    run["cameras"] += 1
        return sorted(seen.values(), key=lambda r: r["run"], reverse=True)

    async def cancel(self, run_id: str) -> int:
        return await cancel_run(self.redis, self.names, await self.cameras(), run_id)

    async def adopt(self, run_id: str, alerts: bool) -> dict[str, int]:
        return await adopt(self.redis, self.names, await self.cameras(), run_id, alerts=alerts)
