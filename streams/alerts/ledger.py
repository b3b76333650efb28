"""The notify stage's Redis state, all in the camera's slot: plans, cooldowns, delivery states.

- `alert-plan:{event}`: the decision for an event (channel → rule), written once (`SET NX`)
  together with the cooldown marks of the rules that fired, in one MULTI. A redelivered or
  re-published analysis reuses it, so the decision is made once per event.
- `alert-cooldown:{rule}`: the event and time that started the rule's cooldown on the camera.
- `alert-sent:{event}:{channel}`: the delivery state (`decisions.DeliveryState`).

Every change of a delivery state goes through one Lua script, `TRANSITION`: compare the state
with the expected one, set the new one and, when given, XADD the `alert.sent` / `alert.failed` /
`alert.skipped` fact to the camera's alerts stream, atomically. So a state never says "sent"
without its fact, and two consumers never both claim one delivery. The script's keys share the
camera's hash tag, so it runs unchanged on Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster

from streams.alerts.decisions import CooldownMark, DeliveryState, Plan
from streams.envelope import entry_fields
from streams.names import StreamNames
from streams.replies import reply_text
from streams.schemas import AlertFailed, AlertSent, AlertSkipped
from streams.transactions import transaction

ABSENT = "-"  # expected state: no state yet
ANY = ""  # expected state: whatever it is

TRANSITION = """
-- KEYS[1]: delivery state, KEYS[2]: the camera's alerts stream (same slot: one hash tag)
-- ARGV[1]: expected state ('' any, '-' none), ARGV[2]: new state, ARGV[3]: TTL in ms,
-- ARGV[4..]: the alert entry's field/value pairs (none: no entry)
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '-' then
  if current then return {0, current} end
elseif ARGV[1] ~= '' and current ~= ARGV[1] then
  return {0, current or ''}
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
local id = ''
if #ARGV > 3 then
  id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
end
return {1, id}
"""

# A cooldown mark outlives its cooldown by this much (the decision compares event times).
COOLDOWN_MARGIN_MS = 3600 * 1000


class AlertLedger:
    """Reads and writes the notify stage's state of one installation (`names`)."""

    def __init__(
        self, redis: Redis | RedisCluster, names: StreamNames, *, state_ttl_ms: int
    ) -> None:
        self._redis = redis
        self._names = names
        self._ttl_ms = state_ttl_ms
        self._transition = redis.register_script(TRANSITION)

    # --- plans and cooldowns --------------------------------------------------------------------

    async def plan(self, camera: str, event_id: str) -> Plan | None:
        raw = await self._redis.get(self._names.alert_plan(camera, event_id))
        return None if raw is None else Plan.parse(raw)

    async def cooldowns(self, camera: str, rules: Sequence[str]) -> dict[str, CooldownMark | None]:
        if not rules:
            return {}
        keys = [self._names.alert_cooldown(camera, rule) for rule in rules]
        values: Any = await self._redis.mget(keys)
        return {rule: CooldownMark.parse(v) for rule, v in zip(rules, values, strict=True)}

    async def save_plan(
        self,
        camera: str,
        event_id: str,
        plan: Plan,
        mark: CooldownMark,
        cooldown_ms: Mapping[str, int],
    ) -> Plan:
        """Store the plan unless one is stored already, and start the cooldowns of its fired
        rules (those with one); the plan in force is returned."""
        key = self._names.alert_plan(camera, event_id)
        async with transaction(self._redis) as pipe:
            pipe.set(key, plan.encode(), nx=True, px=self._ttl_ms)
            for rule in plan.fired:
                ms = cooldown_ms.get(rule, 0)
                if ms > 0:
                    pipe.set(
                        self._names.alert_cooldown(camera, rule),
                        mark.encode(),
                        px=ms + COOLDOWN_MARGIN_MS,
                    )
            results = await pipe.execute()
        if results[0]:
            return plan
        stored = await self.plan(camera, event_id)
        return stored if stored is not None else plan

    # --- delivery states ------------------------------------------------------------------------

    async def state(
        self, camera: str, event_id: str, channel: str
    ) -> tuple[str | None, DeliveryState | None]:
        """The raw stored state (for the compare-and-set) and its parsed form."""
        raw = await self._redis.get(self._names.alert_delivery(camera, event_id, channel))
        text = None if raw is None else reply_text(raw)
        return text, DeliveryState.parse(text)

    async def transition(
        self,
        camera: str,
        event_id: str,
        channel: str,
        expected: str,
        new: DeliveryState,
        entry: AlertSent | AlertFailed | AlertSkipped | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[bool, str | None]:
        """Set the state of (event, channel) to `new` if it is `expected` (`ABSENT`, `ANY` or a
        raw state) and XADD `entry`, atomically; (done, the new entry's id)."""
        args: list[bytes | str | int] = [expected, new.encode(), self._ttl_ms]
        if entry is not None:
            for name, value in entry_fields(entry, headers).items():
                args += [name, value]
        keys = [
            self._names.alert_delivery(camera, event_id, channel),
            self._names.alerts(camera),
        ]
        done, entry_id = await self._transition(keys=keys, args=args)
        written = reply_text(entry_id) if entry is not None and int(done) else None
        return bool(int(done)), written
