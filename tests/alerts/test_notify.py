"""The notify stage on a real Redis and a real webhook receiver: once per event and channel,
through crashes, retries, dead letters and cooldowns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from redis.asyncio import Redis

from streams.alerts import NotifyConfig, RuleSet, WebhookConfig, load_rules
from streams.alerts.channels import build_channels
from streams.alerts.channels.base import Channel
from streams.alerts.message import Alert
from streams.alerts.rules import AlertRule, parse_rules
from streams.envelope import entry_fields
from streams.metrics import Instruments
from streams.names import Group, StreamNames
from streams.reclaim import ReclaimConfig, Reclaimer
from streams.schemas import AlertFailed, AlertSent, AlertSkipped, EntryDead
from streams.stages import notify as notify_module
from streams.stages.notify import NotifyStage
from streams.tracing import StageTelemetry
from tests.alerts.support import (
    CAMERA,
    T0,
    Receiver,
    drain,
    entries,
    pending,
    publish_event,
    wait_until,
    webhook_receiver,
)


class Killed(BaseException):
    """Stands for the process being killed: nothing after it runs (not an `Exception`)."""


async def _no_sleep(_: float) -> None:
    return None


def _config(receiver: Receiver, **overrides: Any) -> NotifyConfig:
    values: dict[str, Any] = {
        "webhook": WebhookConfig(receiver.url, timeout_seconds=5, secret=receiver.secret),
        "public_base_url": "http://hsi.test",
        "send_attempts": 2,
        "backoff_base_seconds": 0.01,
        "claim_lease_seconds": 60,
        "max_age_seconds": 0,  # events of a fixed past time (`T0`); the bound's tests set it
    }
    values.update(overrides)
    return NotifyConfig(**values)


MakeStage = Callable[..., NotifyStage]


@pytest.fixture
async def make_stage(redis_client: Redis, names: StreamNames) -> AsyncIterator[MakeStage]:
    """Notify stages on the test's Redis and names; their channels are closed afterwards."""
    made: list[NotifyStage] = []

    def make(
        config: NotifyConfig,
        *,
        rules: RuleSet | None = None,
        channels: dict[str, Channel] | None = None,
        consumer: str = "c1",
        clock: Callable[[], datetime] | None = None,
        telemetry: StageTelemetry | None = None,
    ) -> NotifyStage:
        extra: dict[str, Any] = {} if clock is None else {"clock": clock}
        stage = NotifyStage(
            redis=redis_client,
            names=names,
            rules=rules or load_rules(None),
            channels=channels if channels is not None else build_channels(config),
            config=config,
            consumer=consumer,
            sleep=_no_sleep,
            telemetry=telemetry,
            **extra,
        )
        made.append(stage)
        return stage

    yield make
    for stage in made:
        await stage.aclose()


def _reclaimer(
    redis: Redis, names: StreamNames, stage: NotifyStage, max_deliveries: int = 5
) -> Reclaimer:
    return Reclaimer(
        redis,
        names,
        group=Group.NOTIFY.value,
        streams=[names.analyses(CAMERA)],
        config=ReclaimConfig(idle_ms=1, max_deliveries=max_deliveries),
        consumer=f"reclaim-{id(stage)}",
        handler=stage.handle,
    )


async def _facts(redis: Redis, names: StreamNames) -> list[AlertSent | AlertFailed]:
    found = [e for _, e in await entries(redis, names.alerts(CAMERA))]
    assert all(isinstance(e, AlertSent | AlertFailed) for e in found)
    return found  # type: ignore[return-value]  # checked just above


@pytest.fixture
def failing_receiver() -> Iterator[Receiver]:
    with webhook_receiver(Receiver(secret="s3cret")) as running:
        yield running


async def test_high_risk_event_alerts_once(
    redis_client: Redis, names: StreamNames, receiver: Receiver, make_stage: MakeStage
) -> None:
    """A high-risk analysis reaches the webhook once, is recorded as alert.sent and acked;
    the same analysis published again sends nothing."""
    stage = make_stage(_config(receiver))
    closed, _, assessed, analysis_id = await publish_event(redis_client, names)
    await drain(redis_client, names, stage.handle)
    assert len(receiver.delivered) == 1
    (fact,) = await _facts(redis_client, names)
    assert isinstance(fact, AlertSent)
    assert fact.event_id == closed.batch_id
    assert fact.analysis_entry_id == analysis_id
    assert (fact.channel, fact.rule, fact.attempt) == ("webhook", "default", 1)
    assert fact.idempotency_key == f"{CAMERA}:{closed.batch_id}:webhook"
    assert await pending(redis_client, names) == 0
    # `hsi dlq retry` (or any re-publication) of the same analysis: same event, nothing new
    await redis_client.xadd(names.analyses(CAMERA), entry_fields(assessed))
    await drain(redis_client, names, stage.handle)
    assert len(receiver.delivered) == 1
    assert len(await _facts(redis_client, names)) == 1


async def test_low_risk_event_is_not_alerted(
    redis_client: Redis, names: StreamNames, receiver: Receiver, make_stage: MakeStage
) -> None:
    """The default rule wants high or critical: a medium event is acked without an alert."""
    stage = make_stage(_config(receiver))
    await publish_event(redis_client, names, score=45, level="medium")
    await drain(redis_client, names, stage.handle)
    assert receiver.received == []
    assert await _facts(redis_client, names) == []
    assert await pending(redis_client, names) == 0


class _KillAfterSend:
    """A channel that really sends, then 'dies' before anything else can happen."""

    def __init__(self, inner: Channel) -> None:
        self.inner = inner
        self.name = inner.name

    async def send(self, alert: Alert, key: str) -> None:
        await self.inner.send(alert, key)
        raise Killed

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_crash_after_sending_before_recording_sends_nothing_twice(
    redis_client: Redis, names: StreamNames, receiver: Receiver, make_stage: MakeStage
) -> None:
    """Killed between the send and its record: the next delivery finds a claim past its lease,
    records the outcome as unknown, and does not send again."""
    config = _config(receiver)
    channels = build_channels(config)
    dying = make_stage(config, channels={"webhook": _KillAfterSend(channels["webhook"])})
    await publish_event(redis_client, names)
    with pytest.raises(Killed):
        await drain(redis_client, names, dying.handle)
    assert len(receiver.delivered) == 1
    assert await pending(redis_client, names) == 1
    # A fresh process (new consumer) later than the lease: the reclaimer re-runs the entry.
    later = datetime.now(UTC) + timedelta(seconds=config.claim_lease_seconds + 1)
    fresh = make_stage(config, consumer="c2", clock=lambda: later)
    reclaimer = _reclaimer(redis_client, names, fresh)

    async def settled() -> bool:
        await reclaimer.run_once()
        return await pending(redis_client, names) == 0

    await wait_until(settled)
    assert len(receiver.delivered) == 1
    (fact,) = await _facts(redis_client, names)
    assert isinstance(fact, AlertFailed)
    assert fact.reason == "outcome_unknown"
    assert "not sent again" in fact.error


async def test_crash_after_recording_before_acknowledging_sends_nothing_twice(
    redis_client: Redis,
    names: StreamNames,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    make_stage: MakeStage,
) -> None:
    """Killed after alert.sent is written but before the XACK: the redelivery finds the
    delivery sent and only acknowledges."""
    config = _config(receiver)
    stage = make_stage(config)

    async def killed_commit(*_: Any) -> list[str]:
        raise Killed

    await publish_event(redis_client, names)
    monkeypatch.setattr(notify_module, "commit", killed_commit)
    with pytest.raises(Killed):
        await drain(redis_client, names, stage.handle)
    monkeypatch.undo()
    assert await pending(redis_client, names) == 1
    fresh = make_stage(config, consumer="c2")
    reclaimer = _reclaimer(redis_client, names, fresh)

    async def settled() -> bool:
        await reclaimer.run_once()
        return await pending(redis_client, names) == 0

    await wait_until(settled)
    assert len(receiver.delivered) == 1
    assert [type(f) for f in await _facts(redis_client, names)] == [AlertSent]


async def test_a_live_claim_of_another_consumer_is_left_alone(
    redis_client: Redis, names: StreamNames, receiver: Receiver, make_stage: MakeStage
) -> None:
    """While another consumer holds a claim younger than the lease, the entry stays pending
    and nothing is sent."""
    config = _config(receiver)
    closed, _, _, analysis_id = await publish_event(redis_client, names)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    await redis_client.set(
        names.alert_delivery(CAMERA, closed.batch_id, "webhook"), f"claimed|1|{now_ms}|other"
    )
    stage = make_stage(config)
    (result,) = await drain(redis_client, names, stage.handle)
    assert "another consumer is delivering" in result.failed[analysis_id]
    assert receiver.received == []
    assert await pending(redis_client, names) == 1


async def test_webhook_failing_three_times_then_succeeding_delivers_once(
    redis_client: Redis, names: StreamNames, receiver: Receiver, make_stage: MakeStage
) -> None:
    """Two quick tries fail (attempt 1 recorded failed, entry pending); the reclaimer's rerun
    fails once more and then succeeds (attempt 2 sent): one delivery."""
    receiver.failures = 3
    stage = make_stage(_config(receiver, send_attempts=2))
    await publish_event(redis_client, names)
    (result,) = await drain(redis_client, names, stage.handle)
    assert "HTTP 500" in next(iter(result.failed.values()))
    assert await pending(redis_client, names) == 1
    reclaimer = _reclaimer(redis_client, names, stage)

    async def settled() -> bool:
        await reclaimer.run_once()
        return await pending(redis_client, names) == 0

    await wait_until(settled)
    assert [r.status for r in receiver.received] == [500, 500, 500, 200]
    assert len(receiver.delivered) == 1
    facts = await _facts(redis_client, names)
    assert [(type(f).__name__, f.attempt) for f in facts] == [
        ("AlertFailed", 1),
        ("AlertSent", 2),
    ]
    assert len({f.idempotency_key for f in facts}) == 1
    assert {r.headers["idempotency-key"] for r in receiver.received} == {facts[0].idempotency_key}


async def test_permanently_failing_channel_ends_as_a_dead_letter(
    redis_client: Redis, names: StreamNames, receiver: Receiver, make_stage: MakeStage
) -> None:
    """Every attempt fails: an alert.failed per attempt, then the analysis entry is buried on
    the camera's dead stream with the channel's error."""
    receiver.always = 503
    stage = make_stage(_config(receiver, send_attempts=1))
    _, _, _, analysis_id = await publish_event(redis_client, names)
    await drain(redis_client, names, stage.handle)
    reclaimer = _reclaimer(redis_client, names, stage, max_deliveries=3)

    async def buried() -> bool:
        await reclaimer.run_once()
        return await redis_client.xlen(names.dead(CAMERA)) == 1

    await wait_until(buried)
    (dead,) = [e for _, e in await entries(redis_client, names.dead(CAMERA))]
    assert isinstance(dead, EntryDead)
    assert dead.entry_id == analysis_id
    assert dead.group == Group.NOTIFY.value
    assert "HTTP 503" in dead.last_error
    assert await pending(redis_client, names) == 0
    facts = await _facts(redis_client, names)
    assert [f.attempt for f in facts] == [1, 2, 3]
    assert all(isinstance(f, AlertFailed) and f.reason == "delivery_error" for f in facts)
    assert receiver.delivered == []


async def test_cooldown_holds_back_alerts_of_the_same_rule_and_camera(
    redis_client: Redis, names: StreamNames, receiver: Receiver, make_stage: MakeStage
) -> None:
    """With a 5-minute cooldown, an event 1 minute after an alert is held back, one 6 minutes
    after it alerts again; another camera is not affected."""
    rules = RuleSet((AlertRule("doors", min_level="high", cooldown_seconds=300),), "test")
    stage = make_stage(_config(receiver), rules=rules)
    first, *_ = await publish_event(redis_client, names, at=T0)
    await publish_event(redis_client, names, at=T0 + timedelta(minutes=1))
    third, *_ = await publish_event(redis_client, names, at=T0 + timedelta(minutes=6))
    await publish_event(redis_client, names, at=T0 + timedelta(minutes=1), camera="garage")
    await drain(redis_client, names, stage.handle)
    await drain(redis_client, names, stage.handle, camera="garage")
    events = [r.body for r in receiver.delivered]
    assert len(events) == 3
    sent = [f.event_id for f in await _facts(redis_client, names)]
    assert sent == [first.batch_id, third.batch_id]
    assert await pending(redis_client, names) == 0


async def test_a_sent_channel_is_not_retried_when_another_fails(
    redis_client: Redis,
    names: StreamNames,
    receiver: Receiver,
    failing_receiver: Receiver,
    make_stage: MakeStage,
) -> None:
    """Two channels, one failing: the rerun retries only the failed one."""
    failing_receiver.always = 500
    config = _config(receiver)
    ok = build_channels(config)["webhook"]
    broken = build_channels(_config(failing_receiver))["webhook"]

    class _AsMqtt:
        name = "mqtt"

        async def send(self, alert: Alert, key: str) -> None:
            await broken.send(alert, key)

        async def aclose(self) -> None:
            await broken.aclose()

    stage = make_stage(config, channels={"webhook": ok, "mqtt": _AsMqtt()})
    await publish_event(redis_client, names)
    await drain(redis_client, names, stage.handle)
    reclaimer = _reclaimer(redis_client, names, stage)
    for _ in range(2):
        await wait_until(lambda: len(failing_receiver.received) > 0)
        await reclaimer.run_once()
    assert len(receiver.delivered) == 1
    assert len(failing_receiver.received) >= 4
    assert await pending(redis_client, names) == 1


async def test_deliveries_are_counted_per_channel(
    redis_client: Redis, names: StreamNames, receiver: Receiver, make_stage: MakeStage
) -> None:
    """hsi_alerts_sent_total and hsi_alerts_failed_total count per channel; the delivery
    latency histogram gets one sample per delivered alert."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry = StageTelemetry(
        trace.NoOpTracerProvider().get_tracer("test"),
        Instruments.create(provider.get_meter("test")),
    )
    stage = make_stage(_config(receiver, send_attempts=1), telemetry=telemetry)
    await publish_event(redis_client, names)
    await drain(redis_client, names, stage.handle)
    receiver.always = 500
    await publish_event(redis_client, names, at=T0 + timedelta(hours=1))
    await drain(redis_client, names, stage.handle)
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    (sent,) = points["hsi_alerts_sent_total"]
    assert (dict(sent.attributes or {}), sent.value) == ({"channel": "webhook"}, 1)
    (failed,) = points["hsi_alerts_failed_total"]
    assert dict(failed.attributes or {}) == {"channel": "webhook", "reason": "delivery_error"}
    assert failed.value == 1
    (latency,) = points["hsi_alert_delivery_seconds"]
    assert latency.count == 1
    provider.shutdown()


async def test_a_late_event_says_so_and_a_rule_may_skip_it(
    redis_client: Redis, names: StreamNames, receiver: Receiver, make_stage: MakeStage
) -> None:
    """Yesterday's pictures arriving today (a backlog): the default rule alerts, and the alert
    says how late; a rule with `skip_late` sends nothing for it, and the analysis is done."""
    stage = make_stage(_config(receiver))
    await publish_event(redis_client, names, arrival_delay=26 * 3600.0)
    await drain(redis_client, names, stage.handle)
    (delivered,) = receiver.delivered
    assert orjson.loads(delivered.body)["late_seconds"] == 26 * 3600.0

    skipping = make_stage(
        _config(receiver),
        rules=parse_rules({"rules": [{"name": "now-only", "skip_late": True}]}),
        consumer="c2",
    )
    await publish_event(redis_client, names, arrival_delay=26 * 3600.0)
    await publish_event(redis_client, names, arrival_delay=3.0)  # live: alerted
    await drain(redis_client, names, skipping.handle)
    assert len(receiver.delivered) == 2
    assert orjson.loads(receiver.delivered[1].body)["late_seconds"] is None
    assert await pending(redis_client, names) == 0


class _Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_an_event_older_than_the_bound_is_skipped_once_and_never_sent(
    redis_client: Redis, names: StreamNames, receiver: Receiver, make_stage: MakeStage
) -> None:
    """An event whose newest picture is an hour old records `alert.skipped` (too_old) instead of
    alerting, once even when redelivered; a live event next to it is sent."""
    clock = _Clock(T0 + timedelta(hours=1))
    stage = make_stage(_config(receiver, max_age_seconds=900), clock=clock)
    _, _, old, _ = await publish_event(redis_client, names, at=T0)
    _, _, live, _ = await publish_event(redis_client, names, at=clock.now - timedelta(seconds=30))
    await drain(redis_client, names, stage.handle)
    assert await pending(redis_client, names) == 0
    (delivered,) = receiver.delivered
    assert orjson.loads(delivered.body)["event_id"] == live.batch_id
    found = [e for _, e in await entries(redis_client, names.alerts(CAMERA))]
    skipped = [e for e in found if isinstance(e, AlertSkipped)]
    assert [(e.event_id, e.channel, e.reason) for e in skipped] == [
        (old.batch_id, "webhook", "too_old")
    ]
    assert skipped[0].age_seconds == 3600 - 5  # the newest picture: 5 s into the window
    assert [e.event_id for e in found if isinstance(e, AlertSent)] == [live.batch_id]

    # The old analysis published again (a replay, `hsi dlq retry`): nothing new.
    await redis_client.xadd(names.analyses(CAMERA), entry_fields(old))
    await drain(redis_client, names, stage.handle)
    assert len(receiver.delivered) == 1
    assert await redis_client.xlen(names.alerts(CAMERA)) == len(found)


async def test_a_failing_delivery_retried_past_the_bound_ends_skipped(
    redis_client: Redis, names: StreamNames, receiver: Receiver, make_stage: MakeStage
) -> None:
    """A live event whose webhook fails is retried; once the event is older than the bound the
    retry records `alert.skipped` instead of sending, and the analysis is done."""
    receiver.always = 503
    clock = _Clock(T0 + timedelta(seconds=60))
    stage = make_stage(_config(receiver, send_attempts=1, max_age_seconds=900), clock=clock)
    await publish_event(redis_client, names, at=T0)
    await drain(redis_client, names, stage.handle)
    assert await pending(redis_client, names) == 1
    receiver.always = None  # the channel is back, but the event is too old by now
    clock.now = T0 + timedelta(minutes=20)
    reclaimer = _reclaimer(redis_client, names, stage)

    async def settled() -> bool:
        await reclaimer.run_once()
        return await pending(redis_client, names) == 0

    await wait_until(settled)
    assert receiver.delivered == []
    found = [e for _, e in await entries(redis_client, names.alerts(CAMERA))]
    assert [type(e).__name__ for e in found] == ["AlertFailed", "AlertSkipped"]


async def test_a_reanalysis_and_its_adoption_send_no_alert_unless_asked(
    redis_client: Redis, names: StreamNames, receiver: Receiver, make_stage: MakeStage
) -> None:
    """A run over low events that a candidate would call high sends nothing, nor does its
    adoption; an adoption with `alerts=True` alerts the events that now reach a rule."""
    from streams.analyzers import RulesAnalyzer
    from streams.analyzers.rules import RulesConfig, parse_rules_config
    from streams.reanalysis.runner import Candidate, RunWorker, adopt, start_run
    from streams.reanalysis.selection import Selection

    stage = make_stage(_config(receiver))
    await publish_event(redis_client, names, score=20, level="low")
    await drain(redis_client, names, stage.handle)
    config = parse_rules_config({"weights": {"person": {"base": 90}}}, RulesConfig())
    candidate = Candidate(
        RulesAnalyzer(config.thresholds, categories=config.categories),
        "rules",
        None,
        config.describe(),
    )

    async def judged_again(alerts: bool) -> None:
        run_id = await start_run(redis_client, names, [CAMERA], candidate, Selection())
        await RunWorker(redis_client, names, candidate, run_id).run([CAMERA])
        await drain(redis_client, names, stage.handle)
        assert receiver.delivered == []  # the run wrote no analysis
        await adopt(redis_client, names, [CAMERA], run_id, alerts=alerts)
        await drain(redis_client, names, stage.handle)

    await judged_again(alerts=False)
    assert receiver.delivered == []
    assert await _facts(redis_client, names) == []
    await judged_again(alerts=True)
    assert len(receiver.delivered) == 1
