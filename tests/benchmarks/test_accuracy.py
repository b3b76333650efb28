"""The accuracy benchmark's evaluator and corpus, without the model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from PIL import Image

from benchmarks import accuracy, corpus
from benchmarks.accuracy import Observation, Scores, iou, match, score
from benchmarks.corpus import Annotation, FrameKind, Truth
from streams.detectors.base import BoundingBox, DetectedObject


def box(x: float, y: float, width: float, height: float) -> BoundingBox:
    return BoundingBox(x, y, width, height)


def seen(label: str, confidence: float, where: BoundingBox) -> DetectedObject:
    return DetectedObject(label, confidence, where)


PERSON = Truth("person", box(100, 100, 50, 100), 100)
CAT = Truth("cat", box(400, 400, 130, 100), 100)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param(box(0, 0, 10, 10), box(0, 0, 10, 10), 1.0, id="same box"),
        pytest.param(box(0, 0, 10, 10), box(10, 0, 10, 10), 0.0, id="touching"),
        pytest.param(box(0, 0, 10, 10), box(20, 20, 5, 5), 0.0, id="apart"),
        pytest.param(box(0, 0, 10, 10), box(5, 0, 10, 10), 50 / 150, id="half overlap"),
        pytest.param(box(0, 0, 10, 10), box(2, 2, 5, 5), 25 / 100, id="inside"),
        pytest.param(box(0, 0, 0, 10), box(0, 0, 10, 10), 0.0, id="empty box"),
    ],
)
def test_iou(a: BoundingBox, b: BoundingBox, expected: float) -> None:
    assert iou(a, b) == pytest.approx(expected)
    assert iou(b, a) == pytest.approx(expected)


MATCH_CASES: list[tuple[str, Annotation, list[DetectedObject], float, list[bool], list[str]]] = [
    # (case, frame, detections, threshold, truths found, labels of the false detections)
    ("nothing seen", Annotation("f", "subject", (PERSON,)), [], 0.5, [False], []),
    (
        "the pasted box, loosely",
        Annotation("f", "subject", (PERSON,)),
        [seen("person", 0.6, box(95, 98, 60, 110))],
        0.5,
        [True],
        [],
    ),
    (
        "below the threshold",
        Annotation("f", "subject", (PERSON,)),
        [seen("person", 0.45, box(100, 100, 50, 100))],
        0.5,
        [False],
        [],
    ),
    (
        "at the threshold",
        Annotation("f", "subject", (PERSON,)),
        [seen("person", 0.5, box(100, 100, 50, 100))],
        0.5,
        [True],
        [],
    ),
    (
        "the right place, the wrong label",
        Annotation("f", "subject", (CAT,)),
        [seen("dog", 0.7, CAT.box)],
        0.5,
        [False],
        ["dog"],
    ),
    (
        "a box 1.6 times as tall: IoU 0.62",
        Annotation("f", "subject", (PERSON,)),
        [seen("person", 0.7, box(100, 100, 50, 160))],
        0.5,
        [True],
        [],
    ),
    (
        "a box 2.6 times as tall: IoU 0.38",
        Annotation("f", "subject", (PERSON,)),
        [seen("person", 0.7, box(100, 100, 50, 260))],
        0.5,
        [False],
        ["person"],
    ),
    (
        "a second box on a found truth is false",
        Annotation("f", "subject", (PERSON,)),
        [seen("person", 0.6, box(100, 100, 50, 100)), seen("person", 0.7, box(102, 98, 50, 99))],
        0.5,
        [True],
        ["person"],
    ),
    (
        "each truth its own detection",
        Annotation("f", "subject", (PERSON, CAT)),
        [seen("cat", 0.9, CAT.box), seen("person", 0.55, PERSON.box)],
        0.5,
        [True, True],
        [],
    ),
    (
        "a person on an empty frame",
        Annotation("f", "empty"),
        [seen("person", 0.8, box(0, 0, 10, 30))],
        0.5,
        [],
        ["person"],
    ),
    (
        "the background's own cup is neither",
        Annotation("f", "empty", present=frozenset({"cup"})),
        [seen("cup", 0.8, box(0, 0, 10, 10)), seen("person", 0.3, box(0, 0, 10, 30))],
        0.25,
        [],
        ["person"],
    ),
]


@pytest.mark.parametrize(
    ("annotation", "detections", "threshold", "found", "false"),
    [pytest.param(*case[1:], id=case[0]) for case in MATCH_CASES],
)
def test_match(
    annotation: Annotation,
    detections: list[DetectedObject],
    threshold: float,
    found: list[bool],
    false: list[str],
) -> None:
    matched = match(annotation, detections, threshold)
    assert list(matched.found) == found
    assert [d.label for d in matched.false] == false


def test_match_gives_each_box_the_truth_it_overlaps_most() -> None:
    """Two people side by side: each box finds the one it overlaps most, ties the first."""
    left = Truth("person", box(0, 0, 100, 200), 200)
    right = Truth("person", box(60, 0, 100, 200), 200)
    frame = Annotation("f", "subject", (left, right))
    leaning_left = seen("person", 0.9, box(10, 0, 100, 200))  # IoU 0.82 and 0.33
    on_right = seen("person", 0.6, box(58, 0, 100, 200))
    assert match(frame, [on_right, leaning_left], 0.5).found == (True, True)
    between = seen("person", 0.9, box(30, 0, 100, 200))  # IoU 0.54 with both
    assert match(frame, [between], 0.5).found == (True, False)


def observation(
    name: str, kind: FrameKind, truths: Sequence[Truth], found: Sequence[float], ms: float = 50.0
) -> Observation:
    """A frame whose truths were found with these confidences (0: missed)."""
    annotation = Annotation(name, kind, tuple(truths))
    detections = tuple(
        seen(truth.label, confidence, truth.box)
        for truth, confidence in zip(truths, found, strict=True)
        if confidence
    )
    return Observation(annotation, detections, ms)


def person_at(height: int) -> Truth:
    return Truth("person", box(0, 0, height / 2, height), height)


OBSERVED = [
    observation("a", "subject", [person_at(100)], [0.3], ms=40),
    observation("b", "subject", [person_at(100)], [0.6], ms=60),
    observation("c", "subject", [person_at(300)], [0.9], ms=50),
    observation("d", "subject", [Truth("cat", box(0, 0, 200, 150), 150)], [0.0], ms=55),
    Observation(
        Annotation("e1", "empty"),
        (seen("person", 0.55, box(0, 0, 9, 9)), seen("kite", 0.3, box(50, 50, 9, 9))),
        45,
    ),
    Observation(Annotation("e2", "empty"), (), 70),
    observation("photo", "real", [Truth("cat", box(0, 0, 300, 200), None)], [0.7], ms=5),
]


def test_score_counts_by_label_and_height() -> None:
    low, high = score(OBSERVED, 0.25), score(OBSERVED, 0.5)
    assert low.recall("person", [100]) == 1.0
    assert high.recall("person", [100]) == 0.5
    assert high.recall("person", [100, 300]) == pytest.approx(2 / 3)
    assert high.recall("cat", [150]) == 0.0
    assert high.recall("cat", [450]) is None  # no cat pasted that tall
    assert (low.frames, low.empty_frames) == (6, 2)
    assert low.false_per_empty("person") == 0.5
    assert low.false_per_frame() == pytest.approx(2 / 6)
    assert high.false_per_frame() == pytest.approx(1 / 6)
    assert score(OBSERVED, 0.6).false_per_empty("person") == 0.0
    assert (high.real_found, high.real_truths) == (1, 1)


def test_frame_cost_is_the_median_of_the_synthetic_frames() -> None:
    assert accuracy.frame_cost(OBSERVED) == 52.5  # the real photo's 5 ms left out


def test_figures_put_full_as_the_floor_of_the_other_modes() -> None:
    slow = [Observation(o.annotation, o.detections, o.ms * 4) for o in OBSERVED]
    observed = {"full": OBSERVED, "tiles": slow}
    curves = {
        name: [score(runs, t) for t in accuracy.THRESHOLDS] for name, runs in observed.items()
    }
    figures = accuracy.figures(observed, curves)
    by_name = {f.name: f for f in figures}
    recall = by_name["person recall, 100–150 px tall in 1080p, full"]
    assert (recall.hsi, recall.floor) == ([50.0], None)
    tiles = by_name["person recall, 100–150 px tall in 1080p, tiles"]
    assert (tiles.hsi, tiles.floor) == ([50.0], [50.0])
    assert by_name["false persons per 50 empty 1080p frames, full"].hsi == [25.0]
    spent = by_name["ms per 1080p frame, one thread, tiles"]
    assert (spent.hsi, spent.floor, spent.ratio) == ([210.0], [52.5], 0.25)
    assert "4.0× full's cost" in spent.note


def test_curves_print_every_threshold() -> None:
    curves: dict[str, list[Scores]] = {"full": [score(OBSERVED, t) for t in accuracy.THRESHOLDS]}
    text = accuracy.report_curves(curves)
    assert "## B7 full, person" in text
    assert "## B7 full, cat" in text
    assert "| 0.25 | 100 | - | 100 |" in text  # person at 100 and 300 px, none at 150 px
    assert text.count("| 0.70 |") == 3


class _Moded:
    """A stand-in for an `EmbeddedDetector` that has detection modes."""

    made: list[dict[str, Any]] = []  # noqa: RUF012 - a test's record

    def __init__(self, *, mode: str, threads: int, confidence_threshold: float, **_: Any) -> None:
        self.made.append({"mode": mode, "threads": threads, "threshold": confidence_threshold})
        self.mode = mode

    def detect_picture(self, picture: Image.Image, reference: Image.Image | None) -> Any:
        where = box(0, 0, picture.width, picture.height)
        label = self.mode if reference is None else f"{self.mode}+reference"

        class Result:
            objects = (seen(label, 0.9, where),)

        return Result()


def test_each_mode_is_the_detectors_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accuracy, "EmbeddedDetector", _Moded)
    _Moded.made.clear()
    modes = accuracy.available_modes(0.2)
    assert list(modes) == ["full", "tiles", "motion"]
    picture = Image.new("RGB", (8, 4))
    assert modes["motion"](picture, picture)[0].label == "motion+reference"
    assert modes["tiles"](picture, None)[0].label == "tiles"
    assert _Moded.made[0] == {"mode": "full", "threads": 1, "threshold": 0.2}


def test_corpus_sizes() -> None:
    full = corpus.FULL.specs()
    pasted = Counter(s.subject.label for s in full if s.kind == "subject" and s.subject)
    assert pasted == {"person": 2 * 6 * 8, "cat": 6 * 4}
    assert sum(s.kind == "empty" for s in full) == 50
    assert sum(s.kind == "real" for s in full) == 5
    quick = corpus.QUICK.specs()
    assert 0.3 <= len(quick) / len(full) <= 0.4
    names = [s.name for s in full]
    assert len(set(names)) == len(names)


def test_a_subject_frame_and_its_reference() -> None:
    """The truth lies inside the frame, the frame is reproducible, and the reference is the
    same background without the subject: alike outside the truth, unlike inside it."""
    spec = next(s for s in corpus.SMOKE.specs() if s.kind == "subject" and s.height == 300)
    frame = corpus.render(spec)
    assert frame.picture.size == (corpus.FRAME_WIDTH, corpus.FRAME_HEIGHT)
    assert frame.reference is not None
    (truth,) = frame.annotation.truths
    assert truth.height == 300
    assert truth.box.height == 300
    assert truth.box.x >= 0
    assert truth.box.y >= 0
    assert truth.box.x + truth.box.width <= corpus.FRAME_WIDTH
    assert truth.box.y + truth.box.height <= corpus.FRAME_HEIGHT
    again = corpus.render(spec)
    assert np.array_equal(np.asarray(frame.picture), np.asarray(again.picture))

    picture = np.asarray(frame.picture, dtype=np.float32)
    reference = np.asarray(frame.reference, dtype=np.float32)
    difference = np.abs(picture - reference).mean(axis=2)
    x, y = int(truth.box.x), int(truth.box.y)
    inside = difference[y + 8 : y + 300 - 8, x + 8 : x + int(truth.box.width) - 8]
    outside = np.ones_like(difference, dtype=bool)
    outside[max(0, y - 16) : y + 316, max(0, x - 16) : x + int(truth.box.width) + 16] = False
    assert inside.mean() > 20
    assert difference[outside].mean() < 6  # brightness ±2 % and JPEG noise


def test_an_empty_frame_and_the_real_photos() -> None:
    specs = corpus.SMOKE.specs()
    empty = corpus.render(next(s for s in specs if s.kind == "empty"))
    assert empty.annotation.truths == ()
    assert empty.reference is not None
    real = [corpus.render(s) for s in specs if s.kind == "real"]
    assert [len(r.annotation.truths) for r in real] == [1, 1, 1, 0, 0]
    assert all(r.reference is None for r in real)
    coffee = next(r for r in real if r.annotation.name == "photo-coffee")
    assert "cup" in coffee.annotation.present


def test_calibration_shares_the_frames_by_level() -> None:
    """Frames with a detection, each a one-file batch under the rules: a lone person by day is
    low now (medium under the earlier weights), at night high under both; a person below
    HSI's class threshold counts as nothing (0.3 < 0.4), a cat is low."""
    frames = [o for o in OBSERVED if o.annotation.name in ("b", "c", "a", "photo")]
    now = accuracy.level_shares(frames, accuracy.NOON, accuracy.CATEGORIES)
    assert now == {"low": 1.0, "medium": 0.0, "high": 0.0, "critical": 0.0}
    earlier = tuple(
        accuracy.EARLIER_PERSON if c.name == "person" else c for c in accuracy.CATEGORIES
    )
    before = accuracy.level_shares(frames, accuracy.NOON, earlier)
    assert before == pytest.approx({"low": 0.5, "medium": 0.5, "high": 0.0, "critical": 0.0})
    night = accuracy.level_shares(frames, accuracy.MIDNIGHT, accuracy.CATEGORIES)
    assert night["high"] == pytest.approx(0.25)  # c at 0.9: 62
    assert "now (person 28" in accuracy.report_calibration(frames)
