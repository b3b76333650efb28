"""The notify stage's pure decisions: rule matrix, schedules (midnight, DST), cooldown, plans,
claims; no Redis."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from streams.alerts.config import NotifyConfig
from streams.alerts.decisions import (
    CooldownMark,
    DeliveryState,
    DeliveryStatus,
    Verdict,
    claim_decision,
    cooldown_allows,
    event_time,
    late_by,
    matches,
    plan_alerts,
    too_old,
)
from streams.alerts.message import build_alert, idempotency_key
from streams.alerts.rules import AlertRule, Schedule, TimeWindow
from streams.ids import detection_id
from streams.ids import detection_id as projected_detection_id
from tests.alerts.support import analysis, batch

BERLIN = ZoneInfo("Europe/Berlin")
NIGHT = Schedule((TimeWindow(time(22, 0), time(6, 0)),))
NOON = datetime(2026, 1, 15, 12, 0, tzinfo=BERLIN)  # a Thursday
MIDNIGHT_PAST = datetime(2026, 1, 16, 0, 30, tzinfo=BERLIN)


def _event(
    *,
    camera: str = "front_door",
    score: int = 75,
    level: str = "high",
    labels: tuple[str, ...] = ("person",),
) -> tuple[Any, Any]:
    closed = batch(camera, labels=labels)
    return analysis(closed, "2-0", score=score, level=level), closed


# --- the rule matrix ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "event", "when", "expected"),
    [
        # levels
        (AlertRule("r", min_level="high"), {"level": "high"}, NOON, True),
        (AlertRule("r", min_level="high"), {"level": "critical", "score": 90}, NOON, True),
        (AlertRule("r", min_level="high"), {"level": "medium", "score": 40}, NOON, False),
        (AlertRule("r", min_level="critical"), {"level": "high"}, NOON, False),
        (AlertRule("r"), {"level": "low", "score": 5}, NOON, True),
        # scores, alone and with a level
        (AlertRule("r", min_score=70), {"score": 70}, NOON, True),
        (AlertRule("r", min_score=71), {"score": 70}, NOON, False),
        (AlertRule("r", min_level="medium", min_score=80), {"score": 75}, NOON, False),
        (AlertRule("r", min_level="medium", min_score=70), {"score": 75}, NOON, True),
        # cameras
        (AlertRule("r", cameras=frozenset({"front_door"})), {}, NOON, True),
        (AlertRule("r", cameras=frozenset({"garage"})), {}, NOON, False),
        (AlertRule("r", cameras=frozenset({"garage"})), {"camera": "garage"}, NOON, True),
        # object types: any of them
        (AlertRule("r", object_types=frozenset({"person"})), {}, NOON, True),
        (AlertRule("r", object_types=frozenset({"car", "person"})), {}, NOON, True),
        (AlertRule("r", object_types=frozenset({"car"})), {}, NOON, False),
        (AlertRule("r", object_types=frozenset({"car"})), {"labels": ("car", "dog")}, NOON, True),
        (AlertRule("r", object_types=frozenset({"person"})), {"labels": ()}, NOON, False),
        # schedule
        (AlertRule("r", schedule=NIGHT), {}, NOON, False),
        (AlertRule("r", schedule=NIGHT), {}, MIDNIGHT_PAST, True),
        # everything at once
        (
            AlertRule(
                "r",
                min_level="high",
                cameras=frozenset({"front_door"}),
                object_types=frozenset({"person"}),
                schedule=NIGHT,
            ),
            {},
            MIDNIGHT_PAST,
            True,
        ),
    ],
)
def test_rule_matrix(
    rule: AlertRule, event: dict[str, Any], when: datetime, expected: bool
) -> None:
    """A rule fires when level, score, camera, object types and schedule all agree."""
    assessed, closed = _event(**event)
    assert matches(rule, assessed, closed, when) is expected


def test_object_type_rule_needs_the_batch() -> None:
    """Without its batch (trimmed) an event has no object types: such rules do not fire."""
    assessed, _ = _event()
    assert not matches(AlertRule("r", object_types=frozenset({"person"})), assessed, None, NOON)
    assert matches(AlertRule("r", min_level="high"), assessed, None, NOON)


# --- schedules ----------------------------------------------------------------------------------


def _at(day: int, hour: int, minute: int = 0) -> datetime:
    """January 2026: the 12th is a Monday."""
    return datetime(2026, 1, day, hour, minute, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("schedule", "when", "inside"),
    [
        (NIGHT, _at(15, 21, 59), False),
        (NIGHT, _at(15, 22, 0), True),
        (NIGHT, _at(15, 23, 59), True),
        (NIGHT, _at(16, 0, 0), True),
        (NIGHT, _at(16, 5, 59), True),
        (NIGHT, _at(16, 6, 0), False),
        (Schedule((TimeWindow(time(8), time(17)),)), _at(15, 8), True),
        (Schedule((TimeWindow(time(8), time(17)),)), _at(15, 17), False),
        (Schedule((TimeWindow(time(18), None),)), _at(15, 23, 59), True),  # 18:00-24:00
        (Schedule((TimeWindow(time(0), None),)), _at(15, 0), True),  # all day
        (
            Schedule((TimeWindow(time(1), time(2)), TimeWindow(time(13), time(14)))),
            _at(15, 13, 30),
            True,
        ),
        # Friday's night covers early Saturday, not early Friday (Thursday's night)
        (Schedule(NIGHT.windows, frozenset({4})), _at(17, 3), True),  # Saturday 03:00
        (Schedule(NIGHT.windows, frozenset({4})), _at(16, 3), False),  # Friday 03:00
        (Schedule(NIGHT.windows, frozenset({4})), _at(16, 23), True),  # Friday 23:00
        (Schedule(NIGHT.windows, frozenset({5, 6})), _at(12, 2), True),  # Monday 02:00
    ],
)
def test_schedule_windows_and_days(schedule: Schedule, when: datetime, inside: bool) -> None:
    """Windows are [start, end) in local time; a window crossing midnight belongs to the day it
    starts on."""
    assert schedule.contains(when) is inside


@pytest.mark.parametrize(
    ("utc", "inside"),
    [
        # spring forward, night of 28→29 March 2026: 02:00 CET → 03:00 CEST
        (datetime(2026, 3, 29, 0, 30, tzinfo=UTC), True),  # 01:30 CET
        (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), True),  # 03:30 CEST
        (datetime(2026, 3, 29, 3, 59, tzinfo=UTC), True),  # 05:59 CEST
        (datetime(2026, 3, 29, 4, 30, tzinfo=UTC), False),  # 06:30 CEST
        (datetime(2026, 3, 28, 4, 30, tzinfo=UTC), True),  # the night before: 05:30 CET
        # fall back, night of 24→25 October 2026: 03:00 CEST → 02:00 CET (02:xx twice)
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), True),  # 02:30 CEST
        (datetime(2026, 10, 25, 1, 30, tzinfo=UTC), True),  # 02:30 CET
        (datetime(2026, 10, 25, 4, 59, tzinfo=UTC), True),  # 05:59 CET
        (datetime(2026, 10, 25, 5, 0, tzinfo=UTC), False),  # 06:00 CET
        (datetime(2026, 10, 24, 4, 0, tzinfo=UTC), False),  # the morning before: 06:00 CEST
        (datetime(2026, 10, 24, 19, 59, tzinfo=UTC), False),  # 21:59 CEST
        (datetime(2026, 10, 24, 20, 0, tzinfo=UTC), True),  # 22:00 CEST
    ],
)
def test_schedule_follows_wall_clock_across_dst(utc: datetime, inside: bool) -> None:
    """22:00–06:00 is local wall-clock time: the night is an hour shorter or longer in UTC
    when the clocks change."""
    assert NIGHT.contains(utc.astimezone(BERLIN)) is inside


def test_rules_are_judged_at_the_event_time_in_the_zone() -> None:
    """The event's time (its window start) in the rules' zone decides, not the processing
    time."""
    closed = batch(at=datetime(2026, 1, 15, 23, 30, tzinfo=UTC))  # 00:30 in Berlin
    assessed = analysis(closed, "2-0", analyzed_at=datetime(2026, 1, 16, 9, 0, tzinfo=UTC))
    rule = AlertRule("night", schedule=NIGHT)
    assert matches(rule, assessed, closed, event_time(assessed, closed).astimezone(BERLIN))
    assert not matches(rule, assessed, None, event_time(assessed, None).astimezone(BERLIN))


# --- cooldown -----------------------------------------------------------------------------------

T = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cooldown", "mark", "event", "at", "allowed"),
    [
        (0, CooldownMark("e1", T), "e2", T, True),  # no cooldown
        (300, None, "e2", T, True),  # nothing sent yet
        (300, CooldownMark("e1", T), "e2", T + timedelta(seconds=299), False),
        (300, CooldownMark("e1", T), "e2", T + timedelta(seconds=300), True),
        (300, CooldownMark("e1", T), "e2", T - timedelta(seconds=100), False),  # out of order
        (300, CooldownMark("e1", T), "e1", T + timedelta(seconds=10), True),  # its own event
    ],
)
def test_cooldown(
    cooldown: float, mark: CooldownMark | None, event: str, at: datetime, allowed: bool
) -> None:
    """Alerts of one rule and camera closer than the cooldown are held back, except the one
    that started it."""
    rule = AlertRule("r", cooldown_seconds=cooldown)
    assert cooldown_allows(rule, mark, event, at) is allowed


def test_cooldown_mark_round_trips() -> None:
    """A mark is stored as text and read back; an unreadable one counts as none."""
    mark = CooldownMark("e1", T)
    assert CooldownMark.parse(mark.encode().encode()) == mark
    assert CooldownMark.parse("e1|yesterday") is None
    assert CooldownMark.parse(None) is None


# --- plans --------------------------------------------------------------------------------------


def test_plan_gives_each_channel_the_first_firing_rule() -> None:
    """Every firing rule adds its channels; a channel alerts once, under the first rule."""
    assessed, closed = _event()
    rules = [
        AlertRule("never", min_level="critical"),
        AlertRule("doors", channels=("webhook",)),
        AlertRule("all", min_level="high"),
        AlertRule("held", min_level="high", cooldown_seconds=60, channels=("email",)),
    ]
    marks = {"held": CooldownMark("other", NOON - timedelta(seconds=10))}
    plan = plan_alerts(rules, ("webhook", "mqtt"), assessed, closed, NOON, marks)
    assert dict(plan.channels) == {"webhook": "doors", "mqtt": "all"}
    assert plan.fired == ("doors", "all")
    assert plan.cooled == ("held",)


def test_plan_without_a_configured_channel_of_the_rule_is_empty() -> None:
    """A rule whose channels are none of the configured ones alerts nowhere."""
    assessed, closed = _event()
    plan = plan_alerts(
        [AlertRule("r", channels=("email",))], ("webhook",), assessed, closed, NOON, {}
    )
    assert not plan.channels
    assert not plan.fired


# --- claims -------------------------------------------------------------------------------------

LEASE = 60_000


def _state(status: DeliveryStatus, attempt: int = 1, at_ms: int = 0) -> DeliveryState:
    return DeliveryState(status, attempt, at_ms, "other")


@pytest.mark.parametrize(
    ("current", "now_ms", "verdict", "attempt", "new_status"),
    [
        (None, 1000, Verdict.SEND, 1, DeliveryStatus.CLAIMED),
        (_state(DeliveryStatus.FAILED, 2), 1000, Verdict.SEND, 3, DeliveryStatus.CLAIMED),
        (_state(DeliveryStatus.SENT, 2), 1000, Verdict.SENT, 2, None),
        (_state(DeliveryStatus.UNKNOWN), 1000, Verdict.UNKNOWN, 1, None),
        (_state(DeliveryStatus.SKIPPED, 0), 1000, Verdict.SKIPPED, 0, None),
        (_state(DeliveryStatus.CLAIMED, 1, 1000), 1000 + LEASE - 1, Verdict.BUSY, 1, None),
        (
            _state(DeliveryStatus.CLAIMED, 1, 1000),
            1000 + LEASE,
            Verdict.ABANDONED,
            1,
            DeliveryStatus.UNKNOWN,
        ),
    ],
)
def test_claim_decision(
    current: DeliveryState | None,
    now_ms: int,
    verdict: Verdict,
    attempt: int,
    new_status: DeliveryStatus | None,
) -> None:
    """Send when nothing or a recorded failure is there; never again once sent or maybe sent;
    wait for a live claim; a claim older than the lease was abandoned mid-send."""
    claim = claim_decision(current, now_ms, LEASE, "me")
    assert claim.verdict is verdict
    assert claim.attempt == attempt
    assert (claim.new_state.status if claim.new_state else None) is new_status
    if claim.verdict is Verdict.SEND:
        assert claim.new_state is not None
        assert claim.new_state.owner == "me"
        assert claim.new_state.at_ms == now_ms


def test_delivery_state_round_trips() -> None:
    """A state is stored as text; an unreadable one reads as a claim long abandoned."""
    state = DeliveryState(DeliveryStatus.SENT, 3, 1234, "host-1-abc-notify")
    assert DeliveryState.parse(state.encode().encode()) == state
    broken = DeliveryState.parse("garbage")
    assert broken is not None
    assert claim_decision(broken, 10**13, LEASE, "me").verdict is Verdict.ABANDONED


# --- the message --------------------------------------------------------------------------------


def test_alert_links_match_the_api_ids() -> None:
    """The thumbnail link names the detection id the read side derives; the event link the
    batch id."""
    assert detection_id("front_door", "5-0", 0) == projected_detection_id("front_door", "5-0", 0)
    assessed, closed = _event()
    alert = build_alert(assessed, closed, "r", "https://hsi.example/", NOON)
    assert alert.event_url == f"https://hsi.example/api/events/{closed.batch_id}"
    thumb = projected_detection_id("front_door", closed.detections[0].entry_id, 0)
    assert alert.thumbnail_url == f"https://hsi.example/api/detections/{thumb}/thumbnail"
    body = alert.payload(idempotency_key("front_door", closed.batch_id, "webhook"))
    assert body["idempotency_key"] == f"front_door:{closed.batch_id}:webhook"
    assert body["risk_level"] == "high"
    assert body["object_types"] == ["person"]
    assert body["time"].endswith("Z")


@pytest.mark.parametrize(
    ("delay", "late"),
    [(None, None), (3.0, None), (600.0, None), (600.5, 600.5), (86_400.0, 86_400.0)],
)
def test_late_by(delay: float | None, late: float | None) -> None:
    """Late: the pictures reached HSI more than the bound after they were taken."""
    assert late_by(batch(arrival_delay=delay), 600.0) == late
    assert late_by(None, 600.0) is None


def test_a_rule_that_skips_late_events_does_not_fire_for_them() -> None:
    assessed, closed = _event()
    skipping = AlertRule("r", skip_late=True)
    assert matches(skipping, assessed, closed, NOON, late=False)
    assert not matches(skipping, assessed, closed, NOON, late=True)
    assert matches(AlertRule("r"), assessed, closed, NOON, late=True)


@pytest.mark.parametrize(
    ("late", "words"),
    [(700.0, "12 min"), (5400.0, "2 h"), (26 * 3600.0, "26 h"), (3 * 86_400.0, "3 days")],
)
def test_a_late_alert_says_it_is_not_happening_now(late: float, words: str) -> None:
    assessed, closed = _event()
    alert = build_alert(assessed, closed, "r", "http://hsi.test", NOON, late)
    assert alert.subject.startswith("[HSI] (late) HIGH risk")
    assert alert.late_note is not None
    assert f"reached HSI {words} after they were taken" in alert.late_note
    assert "not happening now" in alert.late_note
    on_time = build_alert(assessed, closed, "r", "http://hsi.test", NOON)
    assert on_time.late_note is None
    assert on_time.subject.startswith("[HSI] HIGH risk")


def test_people_read_the_camera_by_its_folder_and_the_time_in_local_time() -> None:
    """The subject, mail and MQTT/webhook texts name the camera as its folder does and give the
    local time with the zone's name; the JSON keeps the id and ISO 8601."""
    closed = batch("front_door", path="Front Door/FI9821P_C4D655300BB8/snap/a.jpg")
    alert = build_alert(analysis(closed, "2-0"), closed, "r", "http://hsi.test", NOON)
    assert alert.subject == "[HSI] HIGH risk (75) at Front Door"
    assert alert.local_time == "2026-01-15 12:00 CET"
    body = alert.payload("k")
    assert (body["camera_id"], body["camera_name"]) == ("front_door", "Front Door")
    assert (body["time"], body["local_time"]) == ("2026-01-15T11:00:00Z", "2026-01-15 12:00 CET")
    summer = build_alert(
        analysis(closed, "2-0"),
        closed,
        "r",
        "http://hsi.test",
        datetime(2026, 7, 1, 9, 5, tzinfo=BERLIN),
    )
    assert summer.local_time == "2026-07-01 09:05 CEST"
    without_batch = build_alert(analysis(closed, "2-0"), None, "r", "http://hsi.test", NOON)
    assert without_batch.camera_name == "front_door"  # no file to name it by: its id


@pytest.mark.parametrize(
    ("rule", "stood", "fires"),
    [
        (AlertRule("r", zones=frozenset({"porch"})), ("porch",), True),
        (AlertRule("r", zones=frozenset({"porch", "drive"})), ("drive",), True),
        (AlertRule("r", zones=frozenset({"porch"})), ("lawn",), False),
        (AlertRule("r", zones=frozenset({"porch"})), (), False),
        (AlertRule("r", required_zones=frozenset({"drive", "porch"})), ("drive", "porch"), True),
        (AlertRule("r", required_zones=frozenset({"drive", "porch"})), ("porch",), False),
        (
            AlertRule("r", zones=frozenset({"porch"}), required_zones=frozenset({"drive"})),
            ("drive", "porch"),
            True,
        ),
        (AlertRule("r"), (), True),  # no zones named: any event
    ],
)
def test_a_rule_with_zones_needs_an_object_standing_in_them(
    rule: AlertRule, stood: tuple[str, ...], fires: bool
) -> None:
    closed = batch(zones=stood)
    assert matches(rule, analysis(closed, "2-0"), closed, NOON) is fires
    assert not matches(
        AlertRule("r", zones=frozenset({"porch"})), analysis(closed, "2-0"), None, NOON
    )


# The newest picture of `batch(at=T)` was taken at T + 5 s (its window's end).
NEWEST = datetime(2026, 1, 15, 23, 30, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "max_age", "with_batch", "age"),
    [
        (NEWEST + timedelta(seconds=3), 900.0, True, None),  # live
        (NEWEST + timedelta(seconds=900), 900.0, True, None),  # exactly the bound: alerted
        (NEWEST + timedelta(seconds=901), 900.0, True, 901.0),
        (NEWEST + timedelta(days=30), 900.0, True, 30 * 86_400.0),  # a month's replay
        (NEWEST + timedelta(days=30), 0.0, True, None),  # 0: no bound
        (NEWEST - timedelta(seconds=60), 900.0, True, None),  # a camera clock running fast
        # Without the batch the analysis time counts (`analysis()` is 36 s after the window).
        (NEWEST + timedelta(seconds=31 + 900), 900.0, False, None),
        (NEWEST + timedelta(seconds=31 + 902), 900.0, False, 902.0),
    ],
)
def test_too_old(now: datetime, max_age: float, with_batch: bool, age: float | None) -> None:
    """Too old: now minus when the event's newest picture was taken is above the bound."""
    closed = batch(at=datetime(2026, 1, 15, 23, 30, tzinfo=UTC))
    assessed = analysis(closed, "1-0")
    assert too_old(assessed, closed if with_batch else None, now, max_age) == age


@pytest.mark.parametrize(
    ("late_after", "max_age", "valid"),
    [(600.0, 900.0, True), (600.0, 600.0, True), (600.0, 0.0, True), (600.0, 599.0, False)],
)
def test_the_age_bound_is_not_below_the_lateness_bound(
    late_after: float, max_age: float, valid: bool
) -> None:
    """A bound below the lateness bound would skip every late event: refused, unless 0 (off)."""
    if valid:
        NotifyConfig(late_after_seconds=late_after, max_age_seconds=max_age)
    else:
        with pytest.raises(ValueError, match="late_after_seconds"):
            NotifyConfig(late_after_seconds=late_after, max_age_seconds=max_age)
