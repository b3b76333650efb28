"""The loop every stage runs over a batch of entries of one stream, written once.

Each stage (detect, batch, analyze, notify) handles a batch the same way: read each entry's
envelope (an unreadable one stays pending, outcome `failed`), start the entry's span in its trace,
acknowledge without output an entry of a type the stage does not take (outcome `skipped`), hand
the others to the stage's decision inside the entry's span, then commit the outputs and the
acknowledgements and end the spans. `StageLoop.run` is that loop; a stage plugs in what differs:

- the entry type it takes, and the span's word for the others (`accepts`, `otherwise`, and an
  optional `unexpected` hook, e.g. to log them);
- its decision for one entry (`Decide`), which returns an `EntryVerdict`: the outcome, the span's
  finer word, the output to write once the entry is acknowledged, or the error that leaves it
  pending;
- how the batch is committed (`Commit`): the outputs and the XACKs in one script
  (`StageLoop.writing(streams.stages.outcome.commit)`), or the stage's own transaction;
- whether the decisions run one after another or at once (`concurrent`, detect's).

The loop parses the camera from the stream key, records the spans and stage metrics
(`streams.tracing.StageSpans`) and returns what each entry was decided (`Handled`), from which the
stage counts its own metrics once the batch is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from redis.asyncio import Redis, RedisCluster

from streams import trusted
from streams.contract import HandlerResult, StreamEntry
from streams.names import Group, StreamNames
from streams.schemas import Entry, EntryError
from streams.stages.outcome import Outcome
from streams.tracing import FAILED, SKIPPED, StageSpans, StageTelemetry, resolve

E = TypeVar("E")

Headers = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EntryVerdict:
    """What a stage decided for one entry. With `error` the entry is left pending (for the
    reclaimer); without, it is acknowledged, and `output` (when given) is written to the stage's
    output stream with `headers` in the same commit."""

    outcome: str  # the entry's outcome (`streams.tracing`: ok, rejected, skipped, failed)
    result: str | None = None  # the span's finer word: completed, undecodable, …
    output: Entry | None = None
    headers: Mapping[str, str] | None = None
    error: str | None = None

    @classmethod
    def pending(cls, result: str, error: str) -> EntryVerdict:
        """Leave the entry pending, outcome `failed`, with the error a dead letter will carry."""
        return cls(FAILED, result, error=error)


@dataclass(frozen=True, slots=True)
class EntryBatch:
    """The entries of one stream handed to a stage at once: the stream, its camera and the
    entries' spans."""

    stream: str
    camera: str
    spans: StageSpans

    @property
    def telemetry(self) -> StageTelemetry:
        return self.spans.telemetry


@dataclass(frozen=True, slots=True)
class Handled:
    """A batch the loop has committed: each entry's verdict, in order, and the outcome."""

    batch: EntryBatch
    verdicts: list[tuple[str, EntryVerdict]]
    outcome: Outcome

    @property
    def result(self) -> HandlerResult:
        return HandlerResult(failed=self.outcome.failed, position=self.outcome.position)


# The stage's decision for one entry of the type it takes: (batch, entry id, entry, headers).
Decide = Callable[[EntryBatch, str, E, Headers], Awaitable[EntryVerdict]]
# Commits the outcome of a batch (the outputs and the XACKs), before the spans end.
Commit = Callable[[EntryBatch, Outcome], Awaitable[object]]
# `streams.stages.outcome.commit`: (redis, stream, group, outcome).
Write = Callable[[Redis | RedisCluster, str, str, Outcome], Awaitable[object]]


class StageLoop(Generic[E]):
    """The loop of one stage (`group`): see the module doc. `accepts` None takes every entry;
    `output` maps a camera to the stream the verdicts' outputs go to."""

    def __init__(
        self,
        *,
        redis: Redis | RedisCluster,
        names: StreamNames,
        group: Group,
        accepts: type[E] | None,
        telemetry: StageTelemetry | None = None,
        otherwise: str = "unexpected_entry",
        unexpected: Callable[[str, Entry], None] | None = None,
        output: Callable[[str], str] | None = None,
        spans: bool = True,
        concurrent: bool = False,
    ) -> None:
        self._redis = redis
        self._names = names
        self._group = group
        self._accepts = accepts
        self._telemetry = telemetry
        self._otherwise = otherwise
        self._unexpected = unexpected
        self._output = output
        self._spans = spans
        self._concurrent = concurrent

    def writing(self, write: Write) -> Commit:
        """The commit that writes a batch's outcome with `write` (`outcome.commit`)."""

        async def commit(batch: EntryBatch, outcome: Outcome) -> object:
            return await write(self._redis, batch.stream, self._group.value, outcome)

        return commit

    async def run(
        self, stream: str, entries: list[StreamEntry], decide: Decide[E], commit: Commit
    ) -> Handled:
        """Decide every entry, commit, end the spans; what each entry was decided."""
        camera, _ = self._names.parse(stream)
        telemetry = resolve(self._telemetry)
        group = self._group.value
        with StageSpans(telemetry, group, stream, camera, spans=self._spans) as spans:
            batch = EntryBatch(stream, camera, spans)
            decisions = (self._one(batch, decide, entry_id, fields) for entry_id, fields in entries)
            if self._concurrent:
                verdicts = list(await asyncio.gather(*decisions))
            else:
                verdicts = [await decision for decision in decisions]
            decided = [(entry_id, v) for (entry_id, _), v in zip(entries, verdicts, strict=True)]
            outcome = self._settle(camera, decided)
            spans.failed(outcome.failed)
            await commit(batch, outcome)
        return Handled(batch, decided, outcome)

    async def _one(
        self, batch: EntryBatch, decide: Decide[E], entry_id: str, fields: dict[bytes, bytes]
    ) -> EntryVerdict:
        """Read one entry, start its span and decide it (in its span); the outcome is named."""
        spans = batch.spans
        try:
            entry, headers = trusted.read(batch.stream, entry_id, fields)
        except EntryError as exc:
            spans.start(entry_id, None)
            verdict = EntryVerdict.pending("unreadable", f"unreadable entry: {exc}")
        else:
            spans.start(entry_id, headers)
            if self._accepts is None or isinstance(entry, self._accepts):
                # An E: of the type `accepts` names (None: any entry, E being `Entry`).
                with spans.use(entry_id):
                    verdict = await decide(batch, entry_id, cast(E, entry), headers)
            else:
                if self._unexpected is not None:
                    self._unexpected(entry_id, entry)
                verdict = EntryVerdict(SKIPPED, self._otherwise)
        spans.outcome(entry_id, verdict.outcome, verdict.result)
        return verdict

    def _settle(self, camera: str, decided: list[tuple[str, EntryVerdict]]) -> Outcome:
        """The outputs to write and the entries to acknowledge or leave pending."""
        outcome = Outcome()
        target = None if self._output is None else self._output(camera)
        for entry_id, verdict in decided:
            if verdict.error is not None:
                outcome.failed[entry_id] = verdict.error
                continue
            if verdict.output is not None:
                if target is None:
                    raise ValueError(f"stage {self._group.value} has no output stream")
                outcome.emit(target, verdict.output, verdict.headers, source=entry_id)
            outcome.done.append(entry_id)
        return outcome
