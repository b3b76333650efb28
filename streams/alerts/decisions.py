"""The notify stage's decisions, as pure functions of data and time (STYLE rule 5).

- `matches`: does a rule fire for an analysis (level, score, camera, object types, zones,
  schedule, lateness)?
- `late_by`: how late an event reached HSI, if later than the lateness bound;
- `too_old`: how old an event is, if older than the age bound (then it is not alerted at all);
- `cooldown_allows`: is a rule outside its cooldown on a camera?
- `plan_alerts`: which channel alerts under which rule, for one event;
- `claim_decision`: given the delivery state of (event, channel), send now, or not (done, in
  flight elsewhere, or abandoned mid-send).

Time: rules are judged at the event's own time (`event_time`: the start of its batch window,
else when it was analyzed), in the rules' zone. So a redelivered or re-published analysis gets
the same decision, and a backlog processed late is judged by when things happened, not when
HSI caught up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from enum import StrEnum
from zoneinfo import ZoneInfo

import orjson

from streams.alerts.rules import LEVEL_RANK, AlertRule
from streams.replies import reply_text
from streams.schemas import AnalysisCompleted, BatchClosed


def zone_of(zone: str | tzinfo) -> tzinfo:
    return ZoneInfo(zone) if isinstance(zone, str) else zone


def event_time(analysis: AnalysisCompleted, batch: BatchClosed | None) -> datetime:
    """When the event happened: its batch window's start, else its analysis time."""
    return batch.window_start if batch is not None else analysis.analyzed_at


def late_by(batch: BatchClosed | None, late_after_seconds: float) -> float | None:
    """Seconds between the event's pictures being taken and HSI seeing them, when more than
    `late_after_seconds` (the event is late: a backlog or a backfill), else None."""
    if batch is None or batch.arrival_delay_seconds is None:
        return None
    return batch.arrival_delay_seconds if batch.arrival_delay_seconds > late_after_seconds else None


def too_old(
    analysis: AnalysisCompleted, batch: BatchClosed | None, now: datetime, max_age_seconds: float
) -> float | None:
    """The event's age in seconds when it is more than `max_age_seconds` (0: no bound), else None.

    Age: `now` minus when the event's newest picture was taken (its batch window's end), else
    minus when it was analyzed. A backlog, a replay of old entries or files that a Redis without
    its data saw again are that old; a live event is seconds old. Measured from the pictures'
    time, as lateness is (`late_by`), so an event late by more than the bound is never alerted.
    """
    if max_age_seconds <= 0:
        return None
    newest = batch.window_end if batch is not None else analysis.analyzed_at
    age = (now - newest).total_seconds()
    return age if age > max_age_seconds else None


def zones_of(batch: BatchClosed) -> set[str]:
    """The zones objects of the event stood in (as the detect stage tagged them)."""
    return {zone for d in batch.detections for found in d.objects for zone in found.zones}


def matches(
    rule: AlertRule,
    analysis: AnalysisCompleted,
    batch: BatchClosed | None,
    now_local: datetime,
    late: bool = False,
) -> bool:
    """Whether `rule` fires for `analysis` at the local time `now_local`; `late`: the event
    reached HSI late (`late_by`).

    Object types and zones need the batch (`batch.closed` carries them): without it a rule that
    names object types or zones does not fire.
    """
    if late and rule.skip_late:
        return False
    if rule.cameras and analysis.camera_id not in rule.cameras:
        return False
    if rule.min_level is not None and LEVEL_RANK[analysis.risk_level] < LEVEL_RANK[rule.min_level]:
        return False
    if rule.min_score is not None and analysis.risk_score < rule.min_score:
        return False
    if rule.object_types:
        seen = set() if batch is None else {t.lower() for t in batch.object_types}
        if not seen & rule.object_types:
            return False
    if rule.zones or rule.required_zones:
        stood = set() if batch is None else zones_of(batch)
        if rule.zones and not stood & rule.zones:
            return False
        if not rule.required_zones <= stood:
            return False
    return rule.schedule is None or rule.schedule.contains(now_local)


# --- cooldown -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CooldownMark:
    """The alert that started a rule's cooldown on a camera: its event and time."""

    event_id: str
    at: datetime

    def encode(self) -> str:
        return f"{self.event_id}|{self.at.isoformat()}"

    @classmethod
    def parse(cls, value: bytes | str | None) -> CooldownMark | None:
        if value is None:
            return None
        text = reply_text(value)
        event_id, _, at = text.partition("|")
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            return None  # unreadable: as if there were no cooldown
        return cls(event_id, moment) if moment.tzinfo is not None else None


def cooldown_allows(
    rule: AlertRule, mark: CooldownMark | None, event_id: str, at: datetime
) -> bool:
    """Whether `rule` may alert for event `event_id` at `at`, after the alert in `mark`.

    Events closer than the cooldown to the last alert (before or after it: a backlog may come
    out of order) are held back; the event that started the cooldown itself is never.
    """
    if rule.cooldown_seconds <= 0 or mark is None or mark.event_id == event_id:
        return True
    return abs(at - mark.at) >= rule.cooldown


# --- the plan of one event ----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """For one event: channel → the rule it alerts under (the first firing rule, in file order,
    that uses the channel); the rules that fired (their cooldowns start now) and those that
    matched but were held back by their cooldown."""

    channels: Mapping[str, str] = field(default_factory=dict)
    fired: tuple[str, ...] = ()
    cooled: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return orjson.dumps({"channels": dict(self.channels), "fired": list(self.fired)})

    @classmethod
    def parse(cls, value: bytes | str) -> Plan:
        raw = orjson.loads(value)
        return cls(dict(raw["channels"]), tuple(raw["fired"]))


def plan_alerts(
    rules: Sequence[AlertRule],
    configured: Sequence[str],
    analysis: AnalysisCompleted,
    batch: BatchClosed | None,
    now_local: datetime,
    cooldowns: Mapping[str, CooldownMark | None],
    late: bool = False,
) -> Plan:
    """Every rule that matches and is outside its cooldown fires; each configured channel of a
    fired rule alerts once for the event."""
    channels: dict[str, str] = {}
    fired: list[str] = []
    cooled: list[str] = []
    for rule in rules:
        if not matches(rule, analysis, batch, now_local, late):
            continue
        if not cooldown_allows(rule, cooldowns.get(rule.name), analysis.batch_id, now_local):
            cooled.append(rule.name)
            continue
        wanted = rule.channels_of(configured)
        if not wanted:
            continue
        fired.append(rule.name)
        for channel in wanted:
            channels.setdefault(channel, rule.name)
    return Plan(channels, tuple(fired), tuple(cooled))


# --- delivery state and claims ------------------------------------------------------------------


class DeliveryStatus(StrEnum):
    CLAIMED = "claimed"  # a consumer is sending (or stopped while sending)
    SENT = "sent"  # delivered and recorded (`alert.sent`)
    FAILED = "failed"  # the last attempt failed and was recorded; may be claimed again
    UNKNOWN = "unknown"  # a claim was abandoned mid-send: maybe delivered, never sent again
    SKIPPED = "skipped"  # not sent: the event was too old (`alert.skipped`); never sent


@dataclass(frozen=True)
class DeliveryState:
    """The state of (event, channel), kept in Redis as `status|attempt|at_ms|owner`."""

    status: DeliveryStatus
    attempt: int
    at_ms: int
    owner: str = ""

    def encode(self) -> str:
        return f"{self.status.value}|{self.attempt}|{self.at_ms}|{self.owner}"

    @classmethod
    def parse(cls, value: bytes | str | None) -> DeliveryState | None:
        """The state, or None when there is none; an unreadable value reads as abandoned."""
        if value is None:
            return None
        text = reply_text(value)
        parts = text.split("|", 3)
        try:
            return cls(DeliveryStatus(parts[0]), int(parts[1]), int(parts[2]), parts[3])
        except (ValueError, IndexError):
            return cls(DeliveryStatus.CLAIMED, 1, 0, "unreadable")


class Verdict(StrEnum):
    SEND = "send"  # claimed: deliver now as attempt `attempt`
    SENT = "sent"  # delivered before: nothing to do
    UNKNOWN = "unknown"  # recorded as outcome unknown before: nothing to do
    SKIPPED = "skipped"  # recorded as skipped (too old) before: nothing to do
    BUSY = "busy"  # another consumer holds a live claim: try later
    ABANDONED = "abandoned"  # a claim outlived its lease unrecorded: record it unknown, no send


@dataclass(frozen=True)
class Claim:
    """What to do about (event, channel), and the state to write first (None: write nothing)."""

    verdict: Verdict
    attempt: int
    new_state: DeliveryState | None = None


def claim_decision(current: DeliveryState | None, now_ms: int, lease_ms: int, owner: str) -> Claim:
    """Claim a delivery before sending it (at-most-once for a claim whose owner vanished).

    No state or a recorded failure: claim attempt n+1 and send. Sent, unknown or skipped: done.
    A claim younger than the lease: another consumer is sending, try later. A claim older than
    the lease that was never recorded: its process stopped between claiming and recording, maybe
    after the channel had the alert, so it is marked unknown and never sent again.
    """
    if current is None:
        return Claim(Verdict.SEND, 1, DeliveryState(DeliveryStatus.CLAIMED, 1, now_ms, owner))
    if current.status is DeliveryStatus.SENT:
        return Claim(Verdict.SENT, current.attempt)
    if current.status is DeliveryStatus.UNKNOWN:
        return Claim(Verdict.UNKNOWN, current.attempt)
    if current.status is DeliveryStatus.SKIPPED:
        return Claim(Verdict.SKIPPED, current.attempt)
    if current.status is DeliveryStatus.FAILED:
        attempt = current.attempt + 1
        return Claim(
            Verdict.SEND, attempt, DeliveryState(DeliveryStatus.CLAIMED, attempt, now_ms, owner)
        )
    if now_ms - current.at_ms < lease_ms:
        return Claim(Verdict.BUSY, current.attempt)
    return Claim(
        Verdict.ABANDONED,
        current.attempt,
        DeliveryState(DeliveryStatus.UNKNOWN, current.attempt, now_ms, current.owner),
    )
