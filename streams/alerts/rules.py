"""Alert rules: what they say, and reading them from a TOML file (`ALERT_RULES_PATH`).

    timezone = "Europe/Berlin"          # optional; default TIMEZONE (else this machine's zone)

    [[rules]]
    name = "front-door-nights"          # a-z, 0-9, _ and -; unique
    min_level = "high"                  # low | medium | high | critical
    min_score = 70                      # 0–100 (with min_level: both must hold)
    cameras = ["front_door"]            # camera ids; default every camera
    object_types = ["person", "car"]    # any of them in the event; default any event
    zones = ["porch", "drive"]          # an object standing in any of them (ZONES_PATH)
    required_zones = ["drive", "porch"] # objects standing in each of them, in the one event
    channels = ["webhook", "mqtt"]      # webhook | email | mqtt; default every configured one
    cooldown_seconds = 300              # per camera and rule; default 0 (none)
    skip_late = true                    # no alert for a late event (default false: "late")
    [rules.schedule]                    # optional; local wall-clock time in the zone above
    windows = ["22:00-06:00"]           # HH:MM-HH:MM, may cross midnight; "24:00" ends a day
    days = ["fri", "sat"]               # the day a window starts on; default every day

An event is late when its pictures reached HSI more than `ALERT_LATE_AFTER_SECONDS` after they
were taken (an outage's backlog, a backfill): its alerts say so and when the pictures were taken,
and a rule with `skip_late = true` does not alert for it. A rule without `min_level` and
`min_score` matches every level. Without a file there is one rule,
`default`: high and critical events, every camera, every configured channel, no cooldown.

A file that cannot be used stops HSI with a message naming the file, the rule, the field, the
value and what is accepted (`AlertRulesError`).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.alerts.errors import AlertConfigError, AlertRulesError
from streams.alerts.kinds import CHANNELS
from streams.names import CameraIdError, camera_id, is_camera_id
from streams.severity import RiskLevel

LEVEL_RANK: Final[Mapping[str, int]] = {level.value: rank for rank, level in enumerate(RiskLevel)}
DAYS: Final[tuple[str, ...]] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_RULE_NAME: Final = "default"

_RULE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ZONE_NAME = _RULE_NAME  # as `streams.zones` names them
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_RULE_FIELDS: Final = (
    "name",
    "min_level",
    "min_score",
    "cameras",
    "object_types",
    "zones",
    "required_zones",
    "channels",
    "cooldown_seconds",
    "skip_late",
    "schedule",
)
_SCHEDULE_FIELDS: Final = ("windows", "days")
_FILE_FIELDS: Final = ("rules", "timezone")


@dataclass(frozen=True)
class TimeWindow:
    """From `start` (inclusive) to `end` (exclusive) local time; `end` ≤ `start` crosses
    midnight, and `end` None is the end of the day (written "24:00")."""

    start: time
    end: time | None

    @property
    def crosses_midnight(self) -> bool:
        return self.end is not None and self.end <= self.start

    def __str__(self) -> str:
        end = "24:00" if self.end is None else self.end.strftime("%H:%M")
        return f"{self.start.strftime('%H:%M')}-{end}"


@dataclass(frozen=True)
class Schedule:
    """When a rule is active: any of its windows, on the given days (0 = Monday; empty: every
    day). A window belongs to the day it starts on: Friday's 22:00-06:00 covers Saturday 03:00."""

    windows: tuple[TimeWindow, ...]
    days: frozenset[int] = frozenset()

    def _on(self, day: int) -> bool:
        return not self.days or day in self.days

    def contains(self, local: datetime) -> bool:
        """Whether the wall-clock time `local` (in the rules' zone) is inside the schedule."""
        clock = local.time().replace(tzinfo=None)
        today = local.weekday()
        yesterday = (today - 1) % 7
        for window in self.windows:
            if window.crosses_midnight:
                assert window.end is not None
                if (clock >= window.start and self._on(today)) or (
                    clock < window.end and self._on(yesterday)
                ):
                    return True
            elif (
                window.start <= clock and (window.end is None or clock < window.end)
            ) and self._on(today):
                return True
        return False


@dataclass(frozen=True)
class AlertRule:
    """One rule; empty `cameras`, `object_types` or `channels` mean any (every configured
    channel for `channels`)."""

    name: str
    min_level: str | None = None
    min_score: int | None = None
    cameras: frozenset[str] = frozenset()
    object_types: frozenset[str] = frozenset()
    channels: tuple[str, ...] = ()
    cooldown_seconds: float = 0.0
    schedule: Schedule | None = None
    skip_late: bool = False
    zones: frozenset[str] = frozenset()
    required_zones: frozenset[str] = frozenset()

    @property
    def cooldown(self) -> timedelta:
        return timedelta(seconds=self.cooldown_seconds)

    def channels_of(self, configured: Sequence[str]) -> tuple[str, ...]:
        """The channels this rule alerts on, given the configured ones."""
        if not self.channels:
            return tuple(configured)
        return tuple(c for c in self.channels if c in configured)


@dataclass(frozen=True)
class RuleSet:
    """The rules in force, where they came from, and the zone of their schedules (None: the
    zone from settings)."""

    rules: tuple[AlertRule, ...]
    source: str
    timezone: str | None = None


def default_rules() -> RuleSet:
    """High and critical events, every camera, every configured channel, no cooldown."""
    return RuleSet((AlertRule(DEFAULT_RULE_NAME, min_level=RiskLevel.HIGH.value),), "default")


# --- reading ------------------------------------------------------------------------------------


def load_rules(path: Path | None) -> RuleSet:
    """The rules of the TOML file at `path`, or the default rule when `path` is None."""
    if path is None:
        return default_rules()
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AlertRulesError(
            f"{source}: cannot read the alert rules file ({exc.strerror or exc}); fix "
            "ALERT_RULES_PATH or unset it to use the default rule"
        ) from exc
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AlertRulesError(f"{source}: not a valid TOML file: {exc}") from exc
    return parse_rules(document, source)


def parse_rules(document: Mapping[str, Any], source: str = "<rules>") -> RuleSet:
    """Validate a parsed rules document (see the module doc for the format)."""
    unknown = sorted(set(document) - set(_FILE_FIELDS))
    if unknown:
        raise AlertRulesError(
            f"{source}: unknown top-level field {unknown[0]!r}; accepted: "
            f"{', '.join(_FILE_FIELDS)} (each rule is a [[rules]] table)"
        )
    zone = document.get("timezone")
    if zone is not None:
        if not isinstance(zone, str):
            raise AlertRulesError(f"{source}: field 'timezone' must be a string, got {zone!r}")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise AlertRulesError(
                f"{source}: field 'timezone': {zone!r} is not an IANA time zone; use e.g. "
                "Europe/Berlin or UTC"
            ) from None
    tables = document.get("rules", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise AlertRulesError(
            f"{source}: 'rules' must be an array of tables: write each rule as [[rules]]"
        )
    rules: list[AlertRule] = []
    seen: set[str] = set()
    for index, table in enumerate(tables):
        rule = _rule(table, f"{source}: rules[{index}]")
        if rule.name in seen:
            raise AlertRulesError(
                f"{source}: rules[{index}]: rule name {rule.name!r} is used twice; names must "
                "be unique (they key the cooldowns)"
            )
        seen.add(rule.name)
        rules.append(rule)
    return RuleSet(tuple(rules), source, zone)


def check_channels(rules: RuleSet, configured: Sequence[str]) -> None:
    """Refuse a rule that names a channel without settings; and refuse having no channel."""
    hints = {
        "webhook": "set DEFAULT_WEBHOOK_URL",
        "email": "set SMTP_HOST, SMTP_FROM_ADDRESS and DEFAULT_EMAIL_RECIPIENTS",
        "mqtt": "set MQTT_URL",
    }
    if not configured:
        raise AlertConfigError(
            "NOTIFICATION_ENABLED is set but no channel is configured: "
            + "; ".join(f"for {name}, {hint}" for name, hint in hints.items())
        )
    for rule in rules.rules:
        for channel in rule.channels:
            if channel not in configured:
                raise AlertConfigError(
                    f"{rules.source}: rule {rule.name!r} uses channel {channel!r}, which is not "
                    f"configured: {hints[channel]}, or remove it from the rule's channels "
                    f"(configured: {', '.join(configured)})"
                )


class _Fields:
    """Reads the fields of one table, naming the table and field in every error."""

    def __init__(self, table: Mapping[str, Any], where: str, accepted: Sequence[str]) -> None:
        unknown = sorted(set(table) - set(accepted))
        if unknown:
            raise AlertRulesError(
                f"{where}: unknown field {unknown[0]!r}; accepted: {', '.join(accepted)}"
            )
        self.table = table
        self.where = where

    def error(self, name: str, value: Any, accepted: str) -> AlertRulesError:
        return AlertRulesError(
            f"{self.where}: field {name!r}: {value!r} is not accepted; {accepted}"
        )

    def strings(self, name: str) -> list[str] | None:
        value = self.table.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(name, value, 'use a list of strings, e.g. ["a", "b"]')
        return list(value)


def _rule(table: Mapping[str, Any], where: str) -> AlertRule:
    name = table.get("name")
    if not isinstance(name, str) or not _RULE_NAME.match(name):
        fields = _Fields(table, where, _RULE_FIELDS)
        raise fields.error(
            "name", name, "every rule needs a name of a-z, 0-9, _ and - (at most 64)"
        )
    fields = _Fields(table, f"{where} (rule {name!r})", _RULE_FIELDS)
    min_level = table.get("min_level")
    if min_level is not None and min_level not in LEVEL_RANK:
        raise fields.error("min_level", min_level, f"use one of {', '.join(LEVEL_RANK)}")
    min_score = table.get("min_score")
    if min_score is not None and (
        isinstance(min_score, bool) or not isinstance(min_score, int) or not 0 <= min_score <= 100
    ):
        raise fields.error("min_score", min_score, "use an integer from 0 to 100")
    cameras = fields.strings("cameras") or []
    for camera in cameras:
        if not is_camera_id(camera):
            raise fields.error("cameras", camera, _camera_hint(camera))
    object_types = [t.strip().lower() for t in fields.strings("object_types") or []]
    channels = fields.strings("channels")
    if channels is not None:
        if not channels:
            raise fields.error("channels", channels, "name at least one channel, or leave it out")
        for channel in channels:
            if channel not in CHANNELS:
                raise fields.error("channels", channel, f"use {', '.join(CHANNELS)}")
    cooldown = table.get("cooldown_seconds", 0)
    if (
        isinstance(cooldown, bool)
        or not isinstance(cooldown, int | float)
        or math.isnan(cooldown)
        or not 0 <= cooldown <= 30 * 24 * 3600
    ):
        raise fields.error("cooldown_seconds", cooldown, "use seconds from 0 to 2592000 (30 days)")
    zones = fields.strings("zones") or []
    required_zones = fields.strings("required_zones") or []
    for field_name, names in (("zones", zones), ("required_zones", required_zones)):
        for zone in names:
            if not _ZONE_NAME.match(zone):
                raise fields.error(field_name, zone, "use zone names of a-z, 0-9, _ and -")
    skip_late = table.get("skip_late", False)
    if not isinstance(skip_late, bool):
        raise fields.error("skip_late", skip_late, "use true or false")
    schedule = table.get("schedule")
    return AlertRule(
        name=name,
        min_level=min_level,
        min_score=min_score,
        cameras=frozenset(cameras),
        object_types=frozenset(object_types),
        channels=tuple(dict.fromkeys(channels or ())),
        cooldown_seconds=float(cooldown),
        schedule=None if schedule is None else _schedule(schedule, fields.where),
        skip_late=skip_late,
        zones=frozenset(zones),
        required_zones=frozenset(required_zones),
    )


def _camera_hint(value: str) -> str:
    try:
        suggestion = camera_id(value)
    except CameraIdError:
        return "use camera ids: lower case, digits and _, e.g. front_door"
    return f"use camera ids (lower case, digits, _): {suggestion!r} for this folder name"


def _schedule(value: Any, where: str) -> Schedule:
    if not isinstance(value, dict):
        raise AlertRulesError(
            f"{where}: field 'schedule': {value!r} is not accepted; write it as a table, e.g. "
            'schedule = { windows = ["22:00-06:00"] }'
        )
    fields = _Fields(value, f"{where} schedule", _SCHEDULE_FIELDS)
    texts = fields.strings("windows")
    if not texts:
        raise fields.error(
            "windows", value.get("windows"), 'give at least one window, e.g. ["22:00-06:00"]'
        )
    windows = tuple(_window(text, fields) for text in texts)
    days = fields.strings("days") or []
    numbers = set()
    for day in days:
        if day.lower() not in DAYS:
            raise fields.error("days", day, f"use {', '.join(DAYS)}")
        numbers.add(DAYS.index(day.lower()))
    return Schedule(windows, frozenset(numbers))


def _window(text: str, fields: _Fields) -> TimeWindow:
    accepted = 'use "HH:MM-HH:MM" from 00:00 to 24:00, e.g. "22:00-06:00" (crossing midnight)'
    match = _WINDOW.match(text)
    if match is None:
        raise fields.error("windows", text, accepted)
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise fields.error("windows", text, accepted)
    start = time(h1, m1)
    end = None if h2 == 24 else time(h2, m2)
    if end == start:
        raise fields.error("windows", text, 'an empty window; use "00:00-24:00" for all day')
    return TimeWindow(start, end)
