"""The watch stage: camera uploads in, complete and never-seen-before `file.observed` entries out.

Decisions: `capture` (when a file was captured), `candidates` (which camera, which kind, or
why ignored), `readiness` (is the upload complete), `containers` (does a video hold all the bytes
it declares). Adapters: `probe` (confined open, decode + hash, in a thread), `ledger` (Redis
writes, dedupe), `publisher` (entry building, camera registration, hooks), `tracking` (following
one file), `events` (watchdog thread → loop), `watcher` (observer, scan, ingest, lifecycle,
counts).
"""

from streams.watch.candidates import Candidate, Ignored, IgnoreReason, classify
from streams.watch.capture import CaptureSource, capture_time, capture_time_from_name
from streams.watch.config import WatchConfig, WatchConfigError, WatchError
from streams.watch.outcomes import Outcome, OutcomeKind, WatchCounts
from streams.watch.publisher import HeadersFactory, ObservedHook
from streams.watch.readiness import GiveUp, Observation, Ready, Wait, readiness
from streams.watch.watcher import Watcher

__all__ = [
    "Candidate",
    "CaptureSource",
    "GiveUp",
    "HeadersFactory",
    "IgnoreReason",
    "Ignored",
    "Observation",
    "ObservedHook",
    "Outcome",
    "OutcomeKind",
    "Ready",
    "Wait",
    "WatchConfig",
    "WatchConfigError",
    "WatchCounts",
    "WatchError",
    "Watcher",
    "capture_time",
    "capture_time_from_name",
    "classify",
    "readiness",
]
