"""`hsi doctor`: what is and is not there, one verdict per check, each with a fix.

The checks look and never start or change anything: on a fresh checkout they say that the
embedded servers are not running and how to start them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import httpx

from hsi.app.services import running_services
from hsi.infra.db import create_engine, pending_migrations, server_version
from hsi.infra.redis import RedisConfig, RedisUnavailableError, check_server, create_redis
from hsi.settings.masking import mask_url_password
from hsi.settings.model import AnalyzerBackend, DetectorBackend

if TYPE_CHECKING:
    from hsi.settings.model import Settings


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Verdict:
    check: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{self.status.value:>4}] {self.check}: {self.detail}"
        return f"{text}\n       fix: {self.fix}" if self.fix else text


def _not_running(check: str, server: str) -> Verdict:
    """The verdict on an embedded server that is not running."""
    return Verdict(
        check,
        Status.FAIL,
        f"embedded {server} is not running",
        "run `hsi services start` (or `hsi up`, which starts it)",
    )


async def check_redis(settings: Settings, url: str | None) -> Verdict:
    if url is None:
        return _not_running("redis", "Redis")
    client = create_redis(RedisConfig(url=url, retry_attempts=1, connect_timeout=2.0))
    try:
        health = await check_server(client)
    except RedisUnavailableError as exc:
        return Verdict(
            "redis", Status.FAIL, str(exc).split(". ")[0], "start the server or correct REDIS_URL"
        )
    finally:
        await client.aclose()
    where = "embedded" if settings.redis_url is None else mask_url_password(url)
    detail = f"{health.server} {health.version} ({where}, {health.mode})"
    if not health.append_only:
        return Verdict(
            "redis",
            Status.WARN,
            detail + ", append-only persistence off",
            "enable appendonly so that a restart cannot lose entries",
        )
    return Verdict("redis", Status.OK, detail)


async def check_postgres(settings: Settings, url: str | None) -> Verdict:
    if url is None:
        return _not_running("postgres", "PostgreSQL")
    engine = create_engine(url)
    try:
        version = await server_version(engine)
        pending = await pending_migrations(engine)
    except Exception as exc:
        reason = getattr(exc, "orig", exc)
        return Verdict(
            "postgres",
            Status.FAIL,
            f"unreachable: {str(reason).splitlines()[0]}",
            "start the server or correct DATABASE_URL",
        )
    finally:
        await engine.dispose()
    where = "embedded" if settings.database_url is None else mask_url_password(url)
    detail = f"PostgreSQL {version} ({where})"
    if pending:
        return Verdict(
            "postgres",
            Status.WARN,
            f"{detail}, {len(pending)} migration(s) pending",
            "run `hsi migrate`",
        )
    return Verdict("postgres", Status.OK, detail + ", migrations current")


async def _http_reachable(url: str, wait_seconds: float) -> str | None:
    """None when the server answers HTTP at all; else the reason it does not."""
    try:
        async with httpx.AsyncClient(timeout=wait_seconds) as client:
            await client.get(url)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return None


async def check_detector(settings: Settings) -> Verdict:
    if settings.detector_backend is DetectorBackend.EMBEDDED:
        from importlib.util import find_spec

        if find_spec("onnxruntime") is None:
            return Verdict(
                "detector", Status.FAIL, "onnxruntime is not installed", "pip install onnxruntime"
            )
        return Verdict("detector", Status.OK, "embedded CPU detector (NanoDet-g 416, onnxruntime)")
    failure = await _http_reachable(settings.rtdetr_url, settings.detector_connect_timeout_seconds)
    if failure:
        return Verdict(
            "detector",
            Status.FAIL,
            f"RT-DETR at {settings.rtdetr_url}: {failure}",
            "start the detector service, correct RTDETR_URL, or set DETECTOR_BACKEND=embedded",
        )
    return Verdict("detector", Status.OK, f"RT-DETR at {settings.rtdetr_url} answers")


async def check_analyzer(settings: Settings) -> Verdict:
    if settings.analyzer_backend is AnalyzerBackend.RULES:
        return Verdict("analyzer", Status.OK, "rule-based scorer (no LLM configured)")
    url = settings.llm_url.rstrip("/") + "/v1/models"
    failure = await _http_reachable(url, settings.llm_connect_timeout_seconds)
    if failure:
        return Verdict(
            "analyzer",
            Status.FAIL,
            f"LLM at {settings.llm_url}: {failure}",
            "start the OpenAI-compatible server, correct LLM_URL, or set ANALYZER_BACKEND=rules",
        )
    return Verdict(
        "analyzer", Status.OK, f"LLM at {settings.llm_url} answers (model {settings.llm_model})"
    )


def check_camera_root(settings: Settings) -> Verdict:
    root = settings.camera_root
    if not root.exists():
        return Verdict(
            "cameras",
            Status.WARN,
            f"camera root {root} does not exist yet",
            f"create it (`mkdir -p {root}`) or set FOSCAM_BASE_PATH; `hsi up` creates it",
        )
    if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
        return Verdict(
            "cameras",
            Status.FAIL,
            f"camera root {root} is not a readable folder",
            "fix its permissions or point FOSCAM_BASE_PATH elsewhere",
        )
    cameras = sorted(p.name for p in root.iterdir() if p.is_dir())
    return Verdict("cameras", Status.OK, f"camera root {root}: {len(cameras)} camera folder(s)")


async def run_checks(settings: Settings) -> list[Verdict]:
    database_url, redis_url = running_services(settings)
    return [
        await check_redis(settings, redis_url),
        await check_postgres(settings, database_url),
        await check_detector(settings),
        await check_analyzer(settings),
        check_camera_root(settings),
    ]
