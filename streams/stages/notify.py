"""The notify stage: `analysis.completed` → alerts on the configured channels, once per event.

Group `notify` reads every camera's analyses stream. For each `analysis.completed` it reads the
event's `batch.closed` (object types, the picture for the e-mail), decides which channels alert
under which rule (`streams.alerts.decisions.plan_alerts`: level, score, cameras, object types,
schedule, cooldown), stores that plan (`SET NX`, so a redelivery reuses it) and delivers to each
channel concurrently. Each delivery outcome is a fact on the camera's alerts stream:
`alert.sent` or `alert.failed`. The analysis entry is acknowledged once every channel of its
plan is settled.

Exactly once per event and channel. The idempotency key of (event, channel) has a delivery state
in Redis, changed only by one atomic script (`streams.alerts.ledger.TRANSITION`):

1. claim: no state (or a recorded failure) → `claimed` by this consumer, attempt n;
2. send (with quick retries and backoff on transient errors, each try capped by
   `send_timeout_seconds`);
3. record: state `sent` + XADD `alert.sent` in the same script (or `failed` + `alert.failed`);
4. XACK the analysis entry when all its channels are settled.

A crash after 3 and before 4 redelivers the entry; its channels read `sent` and nothing is sent
again. A crash between 1 and 3 (the channel may have the alert, nothing says so) leaves a claim
that no one records: once it is older than `claim_lease_seconds` the next delivery of the entry
marks it `unknown`, records `alert.failed` with reason `outcome_unknown`, and does not send
again. That window is at-most-once, chosen because the issue asks that a crash after sending
never sends twice; the idempotency key travels with every attempt (webhook header
`Idempotency-Key`, MQTT payload, e-mail `Message-ID`) for receivers that also want to drop
repeats of ambiguous attempts (a timeout after the receiver had the alert, which is retried).
A claim younger than the lease belongs to a consumer still sending: the entry stays pending.

Too old to alert. An event older than `max_age_seconds` (`decisions.too_old`: now minus when its
newest picture was taken; ALERT_MAX_AGE_SECONDS, 900 s) is not sent on any channel: each channel
of its plan records `alert.skipped` (reason `too_old`, the age) through the same script, state
`skipped`, so it is recorded once and never sent later. Such an event starts no cooldown. A
failed delivery retried until its event is too old ends skipped too. The bound is at least the
lateness bound (`late_after_seconds`), so an event late by less than the bound alerts, marked
"(late)"; one late by more does not alert. The event itself is still projected and listed.

Retries and dead letters. A channel that fails every quick retry records `alert.failed`
(reason `delivery_error`, the attempt number) and leaves the analysis entry pending; the
reclaimer runs it again after `STREAM_RECLAIM_IDLE_MS` (channels already sent are skipped) and,
after `STREAM_MAX_DELIVERIES` deliveries, buries it as `entry.dead` on the camera's dead stream
with the channel's last error. `hsi dlq retry` re-publishes the analysis: same event, same plan,
so only the channels not yet sent are tried.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError

from streams.alerts.channels.base import Channel
from streams.alerts.config import NotifyConfig
from streams.alerts.decisions import (
    Claim,
    CooldownMark,
    DeliveryState,
    DeliveryStatus,
    Plan,
    Verdict,
    claim_decision,
    event_time,
    late_by,
    plan_alerts,
    too_old,
    zone_of,
)
from streams.alerts.errors import ChannelError
from streams.alerts.kinds import AlertChannel
from streams.alerts.ledger import ABSENT, ANY, AlertLedger
from streams.alerts.message import Alert, build_alert, idempotency_key
from streams.alerts.rules import RuleSet, check_channels
from streams.clock import utc_now
from streams.contract import HandlerResult, StreamEntry
from streams.envelope import read_fields
from streams.names import Group, StreamNames
from streams.resilience import retry_call
from streams.schemas import (
    AlertFailed,
    AlertSent,
    AlertSkipped,
    AnalysisCompleted,
    BatchClosed,
    EntryError,
)
from streams.stages.loop import EntryBatch, EntryVerdict, Headers, StageLoop
from streams.stages.outcome import commit
from streams.tracing import OK, SKIPPED, StageTelemetry

logger = logging.getLogger("hsi.notify")

_CLAIM_TRIES = 5


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _as_channel(name: str) -> AlertChannel:
    """A channel name of a plan (always one of `CHANNELS`: rules are checked on load)."""
    return cast(AlertChannel, name)


@dataclass(frozen=True)
class Delivery:
    """How one channel of one event ended in this run: settled (nothing left to do), or an
    error that leaves the analysis entry pending."""

    channel: str
    settled: bool
    result: str  # sent, already_sent, outcome_unknown, too_old, failed, busy, not_configured
    error: str | None = None


class NotifyStage:
    """The batch handler of group `notify`."""

    group = Group.NOTIFY

    def __init__(
        self,
        *,
        redis: Redis | RedisCluster,
        names: StreamNames,
        rules: RuleSet,
        channels: Mapping[str, Channel],
        config: NotifyConfig,
        consumer: str,
        clock: Callable[[], datetime] = utc_now,
        telemetry: StageTelemetry | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        check_channels(rules, tuple(channels))
        self._redis = redis
        self._names = names
        self._rules = rules
        self._channels = dict(channels)
        self._config = config
        self._consumer = consumer
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._zone = zone_of(rules.timezone or config.timezone)
        self._ledger = AlertLedger(redis, names, state_ttl_ms=config.state_ttl_seconds * 1000)
        self._cooldown_ms = {r.name: int(r.cooldown_seconds * 1000) for r in rules.rules}
        self._loop = StageLoop(
            redis=redis,
            names=names,
            group=self.group,
            accepts=AnalysisCompleted,
            telemetry=telemetry,
            otherwise="not_an_assessment",
        )

    async def aclose(self) -> None:
        for channel in self._channels.values():
            await channel.aclose()

    # --- the handler ----------------------------------------------------------------------------

    async def handle(self, stream: str, entries: list[StreamEntry]) -> HandlerResult:
        handled = await self._loop.run(stream, entries, self._decide, self._loop.writing(commit))
        return handled.result

    async def _decide(
        self, batch: EntryBatch, entry_id: str, entry: AnalysisCompleted, _: Headers
    ) -> EntryVerdict:
        deliveries = await self._notify(
            batch.telemetry, batch.camera, entry_id, entry, batch.spans.headers(entry_id)
        )
        unsettled = [d for d in deliveries if not d.settled]
        if unsettled:
            error = "; ".join(d.error or f"{d.channel}: {d.result}" for d in unsettled)
            return EntryVerdict.pending("delivery_failed", error)
        if any(d.result == "sent" for d in deliveries):
            return EntryVerdict(OK, "alerted")
        if any(d.result == "too_old" for d in deliveries):
            return EntryVerdict(SKIPPED, "too_old")
        return EntryVerdict(SKIPPED, "already_alerted" if deliveries else "no_alert")

    # --- one event ------------------------------------------------------------------------------

    async def _notify(
        self,
        telemetry: StageTelemetry,
        camera: str,
        entry_id: str,
        analysis: AnalysisCompleted,
        headers: Mapping[str, str],
    ) -> list[Delivery]:
        if not analysis.alert:  # adopted from a re-analysis without asking for alerts
            return []
        batch = await self._batch(camera, analysis.batch_entry_id)
        when = event_time(analysis, batch).astimezone(self._zone)
        late = late_by(batch, self._config.late_after_seconds)
        age = too_old(analysis, batch, self._clock(), self._config.max_age_seconds)
        # A too-old event starts no cooldown: its plan is not stored unless one was already.
        plan = await self._plan(camera, analysis, batch, when, late is not None, age is None)
        if not plan.channels:
            return []
        if age is not None:
            logger.warning(
                "notify.too_old",
                extra={
                    "camera": camera,
                    "event_id": analysis.batch_id,
                    "age_seconds": round(age, 1),
                    "max_age_seconds": self._config.max_age_seconds,
                },
            )
        return list(
            await asyncio.gather(
                *(
                    self._deliver(
                        telemetry,
                        camera,
                        entry_id,
                        analysis,
                        batch,
                        when,
                        channel,
                        rule,
                        headers,
                        age,
                    )
                    for channel, rule in plan.channels.items()
                )
            )
        )

    async def _batch(self, camera: str, batch_entry_id: str) -> BatchClosed | None:
        """The event's `batch.closed`, or None when it is no longer on its stream."""
        try:
            rows: Any = await self._redis.xrange(
                self._names.batches(camera), batch_entry_id, batch_entry_id, count=1
            )
        except ResponseError:  # a malformed id: the analysis alone still alerts
            logger.warning(
                "notify.batch_unreadable", extra={"camera": camera, "entry_id": batch_entry_id}
            )
            return None
        if not rows:
            return None
        try:
            entry, _ = read_fields(rows[0][1])
        except EntryError:
            return None
        return entry if isinstance(entry, BatchClosed) else None

    async def _plan(
        self,
        camera: str,
        analysis: AnalysisCompleted,
        batch: BatchClosed | None,
        when: datetime,
        late: bool,
        save: bool = True,
    ) -> Plan:
        event = analysis.batch_id
        stored = await self._ledger.plan(camera, event)
        if stored is not None:
            return stored
        with_cooldown = [r.name for r in self._rules.rules if r.cooldown_seconds > 0]
        marks = await self._ledger.cooldowns(camera, with_cooldown)
        plan = plan_alerts(
            self._rules.rules, tuple(self._channels), analysis, batch, when, marks, late
        )
        if plan.cooled:
            logger.info(
                "notify.cooldown",
                extra={"camera": camera, "event_id": event, "rules": ",".join(plan.cooled)},
            )
        if not plan.channels or not save:
            return plan
        return await self._ledger.save_plan(
            camera, event, plan, CooldownMark(event, when), self._cooldown_ms
        )

    # --- one channel ----------------------------------------------------------------------------

    async def _claim(
        self,
        camera: str,
        entry_id: str,
        analysis: AnalysisCompleted,
        channel: str,
        rule: str,
        headers: Mapping[str, str],
    ) -> Claim | None:
        """Claim the delivery (see the module doc); None when it stayed contended."""
        event = analysis.batch_id
        lease_ms = int(self._config.claim_lease_seconds * 1000)
        for _ in range(_CLAIM_TRIES):
            raw, current = await self._ledger.state(camera, event, channel)
            now = self._clock()
            claim = claim_decision(current, _ms(now), lease_ms, self._consumer)
            if claim.new_state is None:
                return claim
            if claim.verdict is Verdict.ABANDONED:
                owner = current.owner if current is not None else "?"
                fact = AlertFailed(
                    camera_id=camera,
                    event_id=event,
                    analysis_entry_id=entry_id,
                    rule=rule,
                    channel=_as_channel(channel),
                    attempt=claim.attempt,
                    idempotency_key=idempotency_key(camera, event, channel),
                    reason="outcome_unknown",
                    error=(
                        f"attempt {claim.attempt} was claimed by {owner} and never recorded: "
                        "that process stopped while sending, maybe after the channel had the "
                        "alert; not sent again (at-most-once)"
                    ),
                    failed_at=now,
                )
                done, _ = await self._ledger.transition(
                    camera, event, channel, raw or ABSENT, claim.new_state, fact, headers
                )
            else:
                done, _ = await self._ledger.transition(
                    camera, event, channel, raw or ABSENT, claim.new_state
                )
            if done:
                return claim
        return None

    async def _deliver(
        self,
        telemetry: StageTelemetry,
        camera: str,
        entry_id: str,
        analysis: AnalysisCompleted,
        batch: BatchClosed | None,
        when: datetime,
        channel: str,
        rule: str,
        headers: Mapping[str, str],
        age: float | None = None,
    ) -> Delivery:
        event = analysis.batch_id
        context = {"camera": camera, "event_id": event, "channel": channel, "rule": rule}
        sender = self._channels.get(channel)
        if sender is None:
            logger.warning("notify.channel_not_configured", extra=context)
            return Delivery(channel, True, "not_configured")
        if age is not None:
            skipped = await self._skip(camera, entry_id, analysis, channel, rule, headers, age)
            if skipped is not None:
                return skipped
        claim = await self._claim(camera, entry_id, analysis, channel, rule, headers)
        instruments = telemetry.instruments
        if claim is None or claim.verdict is Verdict.BUSY:
            error = f"{channel}: another consumer is delivering this alert; tried again later"
            return Delivery(channel, False, "busy", error)
        if claim.verdict is Verdict.SENT:
            return Delivery(channel, True, "already_sent")
        if claim.verdict is Verdict.UNKNOWN:
            return Delivery(channel, True, "outcome_unknown")
        if claim.verdict is Verdict.SKIPPED:
            return Delivery(channel, True, "too_old")
        if claim.verdict is Verdict.ABANDONED:
            instruments.alerts_failed.add(1, {"channel": channel, "reason": "outcome_unknown"})
            logger.warning("notify.outcome_unknown", extra={**context, "attempt": claim.attempt})
            return Delivery(channel, True, "outcome_unknown")
        assert claim.new_state is not None
        key = idempotency_key(camera, event, channel)
        late = late_by(batch, self._config.late_after_seconds)
        alert = build_alert(analysis, batch, rule, self._config.public_base_url, when, late)
        send_error = await self._send(sender, alert, key)
        now = self._clock()
        if send_error is None:
            sent = AlertSent(
                camera_id=camera,
                event_id=event,
                analysis_entry_id=entry_id,
                rule=rule,
                channel=_as_channel(channel),
                attempt=claim.attempt,
                idempotency_key=key,
                delivered_at=now,
            )
            state = DeliveryState(DeliveryStatus.SENT, claim.attempt, _ms(now), self._consumer)
            # Recorded whatever the state says now: the channel has the alert.
            await self._ledger.transition(camera, event, channel, ANY, state, sent, headers)
            instruments.alerts_sent.add(1, {"channel": channel})
            latency = max(0.0, (now - analysis.analyzed_at).total_seconds())
            instruments.alert_delivery_latency.record(latency, {"channel": channel})
            logger.info("notify.sent", extra={**context, "attempt": claim.attempt})
            return Delivery(channel, True, "sent")
        failed = AlertFailed(
            camera_id=camera,
            event_id=event,
            analysis_entry_id=entry_id,
            rule=rule,
            channel=_as_channel(channel),
            attempt=claim.attempt,
            idempotency_key=key,
            reason="delivery_error",
            error=send_error[:1000],
            failed_at=now,
        )
        state = DeliveryState(DeliveryStatus.FAILED, claim.attempt, _ms(now), self._consumer)
        recorded, _ = await self._ledger.transition(
            camera, event, channel, claim.new_state.encode(), state, failed, headers
        )
        if not recorded:
            logger.warning("notify.claim_lost", extra={**context, "attempt": claim.attempt})
        instruments.alerts_failed.add(1, {"channel": channel, "reason": "delivery_error"})
        logger.warning(
            "notify.failed", extra={**context, "attempt": claim.attempt, "error": send_error}
        )
        return Delivery(channel, False, "failed", send_error)

    async def _skip(
        self,
        camera: str,
        entry_id: str,
        analysis: AnalysisCompleted,
        channel: str,
        rule: str,
        headers: Mapping[str, str],
        age: float,
    ) -> Delivery | None:
        """Record `alert.skipped` instead of sending, unless the delivery is settled already;
        None when a claim is in flight (the claim path then waits for it, and never sends)."""
        event = analysis.batch_id
        raw, current = await self._ledger.state(camera, event, channel)
        if current is not None and current.status is not DeliveryStatus.FAILED:
            return None if current.status is DeliveryStatus.CLAIMED else _settled(channel, current)
        now = self._clock()
        attempt = current.attempt if current is not None else 0
        fact = AlertSkipped(
            camera_id=camera,
            event_id=event,
            analysis_entry_id=entry_id,
            rule=rule,
            channel=_as_channel(channel),
            idempotency_key=idempotency_key(camera, event, channel),
            age_seconds=round(age, 1),
            skipped_at=now,
        )
        state = DeliveryState(DeliveryStatus.SKIPPED, attempt, _ms(now), self._consumer)
        done, _ = await self._ledger.transition(
            camera, event, channel, raw or ABSENT, state, fact, headers
        )
        if not done:  # another consumer changed it meanwhile: look again on the next delivery
            error = f"{channel}: the delivery state changed while skipping; tried again later"
            return Delivery(channel, False, "busy", error)
        return Delivery(channel, True, "too_old")

    async def _send(self, sender: Channel, alert: Alert, key: str) -> str | None:
        """Send with quick retries on transient errors; None when delivered, else the error."""
        timeout = self._config.send_timeout_seconds

        async def once() -> None:
            try:
                async with asyncio.timeout(timeout):
                    await sender.send(alert, key)
            except TimeoutError as exc:
                raise ChannelError(
                    sender.name, f"no confirmation within {timeout} s", transient=True
                ) from exc

        started = time.perf_counter()
        try:
            await retry_call(
                once,
                attempts=self._config.send_attempts,
                base=self._config.backoff_base_seconds,
                cap=self._config.backoff_cap_seconds,
                retry_on=lambda exc: isinstance(exc, ChannelError) and exc.transient,
                sleep=self._sleep,
                rand=self._rand,
            )
        except ChannelError as exc:
            return str(exc)
        except Exception as exc:  # a channel bug must not take the stage down
            logger.exception("notify.channel_crashed", extra={"channel": sender.name})
            return f"{sender.name}: {type(exc).__name__}: {exc}"
        finally:
            logger.debug(
                "notify.send_finished",
                extra={"channel": sender.name, "seconds": round(time.perf_counter() - started, 3)},
            )
        return None


def _settled(channel: str, state: DeliveryState) -> Delivery:
    """A delivery that has nothing left to do: sent, outcome unknown or skipped before."""
    result = {
        DeliveryStatus.SENT: "already_sent",
        DeliveryStatus.UNKNOWN: "outcome_unknown",
        DeliveryStatus.SKIPPED: "too_old",
    }[state.status]
    return Delivery(channel, True, result)
