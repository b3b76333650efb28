"""The batching decisions: opening, joining, closing by window/idle/size/fast path."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from streams.batching import (
    BatchConfig,
    Closed,
    CloseReason,
    DetectionItem,
    ObjectHit,
    OpenBatch,
    batch_id_for,
    decide,
    item_time,
    tick,
)

CAMERA = "front_door"
DEFAULT = BatchConfig()
PERSON_LOW: ObjectHit = ("person", 0.5)
PERSON_HIGH: ObjectHit = ("person", 0.95)
CAR: ObjectHit = ("car", 0.8)


@dataclass(frozen=True)
class Item:
    """Script step: an item arrives (handled at `now`, default its own time)."""

    entry_id: str
    at: float
    objects: tuple[ObjectHit, ...] = (CAR,)
    now: float | None = None


@dataclass(frozen=True)
class Tick:
    """Script step: the timer fires at `now`."""

    now: float


Step = Item | Tick
Expected = tuple[tuple[str, ...], CloseReason]
OpenState = tuple[tuple[str, ...], float, float]  # entry ids, started_at, last_at


def run(steps: list[Step], config: BatchConfig) -> tuple[list[Closed], OpenBatch | None]:
    batch: OpenBatch | None = None
    closed: list[Closed] = []
    for step in steps:
        if isinstance(step, Tick):
            result = tick(batch, step.now, config)
            if result is not None:
                closed.append(result)
                batch = None
            continue
        item = DetectionItem(step.entry_id, CAMERA, step.at, step.objects)
        decision = decide(batch, item, step.at if step.now is None else step.now, config)
        closed.extend(decision.closed)
        batch = decision.open_batch
    return closed, batch


CASES: list[tuple[str, BatchConfig, list[Step], list[Expected], OpenState | None]] = [
    ("first item opens", DEFAULT, [Item("a", 0)], [], (("a",), 0, 0)),
    (
        "joins inside window and idle",
        DEFAULT,
        [Item("a", 0), Item("b", 20), Item("c", 40)],
        [],
        (("a", "b", "c"), 0, 40),
    ),
    (
        "idle close on next arrival",
        DEFAULT,
        [Item("a", 0), Item("b", 35)],
        [(("a",), CloseReason.IDLE)],
        (("b",), 35, 35),
    ),
    (
        "idle boundary is exclusive",
        DEFAULT,
        [Item("a", 0), Item("b", 29.999), Item("c", 59.999)],
        [(("a", "b"), CloseReason.IDLE)],
        (("c",), 59.999, 59.999),
    ),
    (
        "window close on next arrival though never idle",
        DEFAULT,
        [Item(x, t) for x, t in zip("abcdef", (0, 20, 40, 60, 80, 100), strict=True)],
        [(("a", "b", "c", "d", "e"), CloseReason.WINDOW)],
        (("f",), 100, 100),
    ),
    (
        "window boundary is exclusive",
        BatchConfig(window_seconds=60, idle_seconds=30),
        [Item("a", 0), Item("b", 25), Item("c", 50), Item("d", 60)],
        [(("a", "b", "c"), CloseReason.WINDOW)],
        (("d",), 60, 60),
    ),
    (
        "max_size closes with the item that reaches it",
        BatchConfig(max_detections=3),
        [Item("a", 0), Item("b", 1), Item("c", 2), Item("d", 3)],
        [(("a", "b", "c"), CloseReason.MAX_SIZE)],
        (("d",), 3, 3),
    ),
    (
        "max_size counts objects and may overshoot",
        BatchConfig(max_detections=3),
        [Item("a", 0, (CAR, CAR)), Item("b", 1, (CAR, CAR))],
        [(("a", "b"), CloseReason.MAX_SIZE)],
        None,
    ),
    (
        "one big item alone reaches max_size",
        BatchConfig(max_detections=2),
        [Item("a", 0, (CAR, CAR, CAR))],
        [(("a",), CloseReason.MAX_SIZE)],
        None,
    ),
    (
        "fast path on person at or above threshold closes with itself",
        DEFAULT,
        [Item("a", 0), Item("b", 5, (CAR, PERSON_HIGH))],
        [(("a", "b"), CloseReason.FAST_PATH)],
        None,
    ),
    (
        "fast path at exactly the threshold",
        DEFAULT,
        [Item("a", 0, (("person", 0.9),))],
        [(("a",), CloseReason.FAST_PATH)],
        None,
    ),
    (
        "person below threshold is no fast path",
        DEFAULT,
        [Item("a", 0), Item("b", 5, (("person", 0.89),))],
        [],
        (("a", "b"), 0, 5),
    ),
    (
        "non-person label at high confidence is no fast path",
        DEFAULT,
        [Item("a", 0, (("car", 0.99), ("dog", 1.0)))],
        [],
        (("a",), 0, 0),
    ),
    (
        "fast path disabled",
        BatchConfig(fast_path_enabled=False),
        [Item("a", 0, (PERSON_HIGH,)), Item("b", 1, (PERSON_HIGH,))],
        [],
        (("a", "b"), 0, 1),
    ),
    (
        "fast path labels are configurable",
        BatchConfig(fast_path_labels=frozenset({"car"})),
        [Item("a", 0, (PERSON_HIGH,)), Item("b", 1, (("car", 0.95),))],
        [(("a", "b"), CloseReason.FAST_PATH)],
        None,
    ),
    (
        "fast path wins over max_size",
        BatchConfig(max_detections=2),
        [Item("a", 0), Item("b", 1, (PERSON_HIGH,))],
        [(("a", "b"), CloseReason.FAST_PATH)],
        None,
    ),
    (
        "expired batch and fast path close together",
        DEFAULT,
        [Item("a", 0), Item("b", 40, (PERSON_HIGH,))],
        [(("a",), CloseReason.IDLE), (("b",), CloseReason.FAST_PATH)],
        None,
    ),
    (
        "empty item is ignored",
        DEFAULT,
        [Item("a", 0, (PERSON_LOW,)), Item("b", 10, ())],
        [],
        (("a",), 0, 0),
    ),
    ("empty first item opens nothing", DEFAULT, [Item("a", 0, ())], [], None),
    (
        "empty item still closes an expired batch",
        DEFAULT,
        [Item("a", 0), Item("b", 40, ())],
        [(("a",), CloseReason.IDLE)],
        None,
    ),
    ("tick without batch", DEFAULT, [Tick(100)], [], None),
    ("tick before idle", DEFAULT, [Item("a", 0), Tick(29.9)], [], (("a",), 0, 0)),
    (
        "tick at idle closes idle",
        DEFAULT,
        [Item("a", 0), Item("b", 10), Tick(40)],
        [(("a", "b"), CloseReason.IDLE)],
        None,
    ),
    (
        "tick after window closes window",
        DEFAULT,
        [Item("a", 0), Item("b", 25), Item("c", 50), Item("d", 75), Tick(90)],
        [(("a", "b", "c", "d"), CloseReason.WINDOW)],
        None,
    ),
    (
        "late tick reports the deadline that came first",
        DEFAULT,
        [Item("a", 0), Item("b", 25), Item("c", 50), Item("d", 70), Tick(500)],
        [(("a", "b", "c", "d"), CloseReason.WINDOW)],
        None,
    ),
    (
        "late tick reports idle when idle came first",
        DEFAULT,
        [Item("a", 0), Item("b", 10), Tick(500)],
        [(("a", "b"), CloseReason.IDLE)],
        None,
    ),
    (
        "tick on a tie of window and idle reports window",
        DEFAULT,
        [Item("a", 0), Item("b", 25), Item("c", 50), Item("d", 60), Tick(90)],
        [(("a", "b", "c", "d"), CloseReason.WINDOW)],
        None,
    ),
    (
        "arrival on a tie of window and idle closes by window",
        DEFAULT,
        [Item("a", 0), Item("b", 25), Item("c", 50), Item("d", 60), Item("e", 95)],
        [(("a", "b", "c", "d"), CloseReason.WINDOW)],
        (("e",), 95, 95),
    ),
    (
        "out-of-order item joins without stretching the batch",
        DEFAULT,
        [Item("a", 10), Item("b", 4)],
        [],
        (("a", "b"), 10, 10),
    ),
    (
        "future-dated item counts at now",
        DEFAULT,
        [Item("a", 5000, now=100), Tick(130)],
        [(("a",), CloseReason.IDLE)],
        None,
    ),
    (
        "backlog is batched by item time, not by processing time",
        DEFAULT,
        [Item("a", 0, now=900), Item("b", 20, now=901), Item("c", 40, now=902)],
        [],
        (("a", "b", "c"), 0, 40),
    ),
]


@pytest.mark.parametrize(
    ("config", "steps", "expected_closed", "expected_open"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_decide_and_tick_follow_the_batching_rules(
    config: BatchConfig,
    steps: list[Step],
    expected_closed: list[Expected],
    expected_open: OpenState | None,
) -> None:
    """Each script of arrivals and timer ticks closes and keeps exactly the expected batches."""
    closed, batch = run(steps, config)
    assert [(c.batch.entry_ids, c.reason) for c in closed] == expected_closed
    if expected_open is None:
        assert batch is None
    else:
        assert batch is not None
        assert (batch.entry_ids, batch.started_at, batch.last_at) == expected_open


@pytest.mark.parametrize(
    ("steps", "expected_closed_at"),
    [
        ([Item("a", 0), Item("b", 10), Item("c", 100)], 40.0),  # idle: last_at + idle
        ([Item(x, 20.0 * i) for i, x in enumerate("abcdef")], 90.0),  # window: start + window
        ([Item("a", 0), Item("b", 7, (PERSON_HIGH,))], 7.0),  # fast path: the item's time
        ([Item("a", 0), Tick(1000)], 30.0),  # late tick still reports the deadline
    ],
)
def test_closed_at_is_derived_from_content(steps: list[Step], expected_closed_at: float) -> None:
    """A close is stamped with its deadline or triggering item time, never the wall clock."""
    closed, _ = run(steps, DEFAULT)
    assert [c.closed_at for c in closed][:1] == [expected_closed_at]


def test_batch_id_is_deterministic_from_camera_and_first_entry() -> None:
    """The id is a UUID fixed by camera and first entry id, kept while the batch grows."""
    closed, _ = run([Item("1-0", 0), Item("2-0", 5), Item("3-0", 6, (PERSON_HIGH,))], DEFAULT)
    batch_id = closed[0].batch.batch_id
    assert batch_id == batch_id_for(CAMERA, "1-0")
    assert uuid.UUID(batch_id).version == 5
    assert batch_id != batch_id_for("back_yard", "1-0")
    assert batch_id != batch_id_for(CAMERA, "2-0")


def test_bookkeeping_tracks_labels_counts_and_confidence() -> None:
    """The open batch knows its labels, object count and highest confidence per label."""
    _, batch = run(
        [Item("a", 0, (("car", 0.6), PERSON_LOW)), Item("b", 1, (("car", 0.85),))], DEFAULT
    )
    assert batch is not None
    assert batch.labels == {"car", "person"}
    assert batch.label_confidence == (("car", 0.85), ("person", 0.5))
    assert batch.detection_count == 3
    assert batch.max_confidence == 0.85


def test_decide_refuses_an_item_of_another_camera() -> None:
    """One open batch belongs to one camera."""
    _, batch = run([Item("a", 0)], DEFAULT)
    with pytest.raises(ValueError, match="one open batch per camera"):
        decide(batch, DetectionItem("b", "back_yard", 1, (CAR,)), 1, DEFAULT)


@pytest.mark.parametrize(
    "overrides",
    [
        {"window_seconds": 0},
        {"idle_seconds": -1},
        {"window_seconds": float("inf")},
        {"max_detections": 0},
        {"fast_path_threshold": 1.5},
    ],
)
def test_batch_config_refuses_impossible_values(overrides: dict[str, float]) -> None:
    """Non-positive durations, empty batches and thresholds outside 0–1 are refused."""
    with pytest.raises(ValueError, match="must be"):
        BatchConfig(**overrides)  # type: ignore[arg-type]


DAY = 86_400.0


@pytest.mark.parametrize(
    ("captured", "observed", "expected"),
    [
        (1000.0, 1001.0, 1000.0),  # a live upload: taken a second before it was seen
        (1000.0 - DAY, 1000.0, 1000.0 - DAY),  # yesterday's picture, late: its own time
        (1000.0 + 300.0, 1000.0, 1300.0),  # a camera clock a little fast: within tolerance
        (1000.0 + 301.0, 1000.0, 1000.0),  # further in the future: the observation time
        (1000.0 + DAY, 1000.0, 1000.0),
    ],
)
def test_item_time_is_capture_time_unless_it_lies_in_the_future(
    captured: float, observed: float, expected: float
) -> None:
    assert item_time(captured, observed, DEFAULT) == expected


def test_a_backlog_is_batched_by_capture_time_and_the_timer_waits_for_it() -> None:
    """Yesterday's burst (pictures 20 s apart) arrives today within a second, the timer firing
    in between: one batch, closed by the timer idle seconds after its last item arrived, its
    window and close time on yesterday's clock. A second burst ten minutes later (capture time)
    arriving right after is a batch of its own."""
    now = 10 * DAY
    steps: list[Step] = [
        Item("a", 0.0, now=now),
        Tick(now + 0.3),
        Item("b", 20.0, now=now + 0.5),
        Tick(now + 0.7),
        Item("c", 40.0, now=now + 1.0),
        Tick(now + 1.0 + DEFAULT.idle_seconds - 0.001),
    ]
    closed, batch = run(steps, DEFAULT)
    assert closed == []
    assert batch is not None
    assert (batch.entry_ids, batch.started_at, batch.last_at) == (("a", "b", "c"), 0.0, 40.0)
    closed, batch = run([*steps, Tick(now + 1.0 + DEFAULT.idle_seconds)], DEFAULT)
    assert batch is None
    (only,) = closed
    assert (only.batch.entry_ids, only.reason) == (("a", "b", "c"), CloseReason.IDLE)
    assert only.closed_at == 40.0 + DEFAULT.idle_seconds

    closed, batch = run([*steps, Item("d", 640.0, now=now + 1.2)], DEFAULT)
    assert [(c.batch.entry_ids, c.reason) for c in closed] == [(("a", "b", "c"), CloseReason.IDLE)]
    assert batch is not None
    assert batch.entry_ids == ("d",)


def test_a_state_stored_before_arrival_times_runs_on_the_wall_clock() -> None:
    """An open batch without `arrived_at` (stored by an earlier version) ticks as before."""
    batch = OpenBatch("b", CAMERA, 0.0, 10.0, ("a",), 1, (("car", 0.8),))
    assert tick(batch, 10.0 + DEFAULT.idle_seconds - 0.001, DEFAULT) is None
    closed = tick(batch, 10.0 + DEFAULT.idle_seconds, DEFAULT)
    assert closed is not None
    assert closed.reason is CloseReason.IDLE
