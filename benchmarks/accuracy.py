"""B7 accuracy: what the embedded detector finds in 1080p camera frames, by mode, and its cost.

The frames are `benchmarks.corpus`'s: people and a cat pasted at heights of 80–450 px into
1080p backgrounds, empty backgrounds, and the five test photos. Each mode of `MODES` runs once
per frame at a low threshold (`DETECT_THRESHOLD`); the scores for every threshold of
`THRESHOLDS` come from those detections. For `full` that is exactly what the detector returns
at each threshold (its per-class NMS keeps a box only when no better-scoring box of the class
overlaps it, whatever the threshold); a mode that merges its passes' boxes in another way may
differ a little. The modes take turns frame by frame, so a noisy machine hurts none of them
more than another.

A truth is found when a detection of its label overlaps it with an IoU of `MIN_IOU` or more
(each detection finds at most one truth, best confidence first). A detection that finds no
truth is a false detection, unless its label is a real object of the background (the coffee's
cup). Figures: recall by label and height, false persons per 50 empty frames, and the median
cost of a 1080p frame on one thread; `full` (one pass over the whole frame) is the floor of the
other modes. The threshold curves (recall by height and false detections per threshold) are
printed, for choosing per-class thresholds.

Needs no Redis or PostgreSQL (`NEEDS_SERVERS`).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from benchmarks import corpus
from benchmarks.corpus import Annotation, Frame, Truth
from benchmarks.environment import Servers
from benchmarks.options import Options
from benchmarks.report import Figure, Target, cost, rate
from hsi.settings.model import CLASS_THRESHOLDS, Settings
from streams.analyzers.base import BatchSummary, DetectionLine
from streams.analyzers.rules import CATEGORIES, PERSON, CategoryWeight, score_batch
from streams.detectors.base import BoundingBox, DetectedObject
from streams.detectors.embedded import MODEL_PATH, EmbeddedDetector

NAME = "accuracy"
LEVEL_ORDER = ("low", "medium", "high", "critical")
NEEDS_SERVERS = False

DETECT_THRESHOLD = 0.2
THRESHOLDS: tuple[float, ...] = tuple(round(0.25 + 0.05 * step, 2) for step in range(10))
DEFAULT_THRESHOLD = 0.5  # today's (and the floor's) threshold for every class
DEFAULT_MODE = str(Settings.model_fields["detection_mode"].default)
# The targets for the default mode: recall (%) by label and height bucket, false persons
# per 50 empty frames, and the cost per frame as a multiple of the single full-frame pass.
MAX_FALSE_PERSONS = 1.0
MAX_COST_FACTOR = 3.0
MIN_IOU = 0.4
LABELS: tuple[str, ...] = ("person", "cat")
SMALL: tuple[int, ...] = (100, 150)  # heights in px of "small" subjects in a 1080p frame
LARGE: tuple[int, ...] = (200, 300, 450)
RECALL_TARGETS: dict[tuple[str, tuple[int, ...]], float] = {
    ("person", SMALL): 90.0,
    ("person", LARGE): 97.0,
}
EMPTY_SCALE = 50  # false persons are given per this many empty frames

Detect = Callable[[Image.Image, Image.Image | None], Sequence[DetectedObject]]
"""A detector under test: (frame, the camera's previous frame or None) → objects."""

ModeFactory = Callable[[float], Detect]
"""Builds a mode's `Detect` at a confidence threshold."""


def embedded(mode: str, **settings: Any) -> ModeFactory:
    """`EmbeddedDetector` in `mode`, one thread (the cost per frame is per core)."""

    def build(threshold: float) -> Detect:
        detector = EmbeddedDetector(
            threads=1, mode=mode, confidence_threshold=threshold, **settings
        )

        def detect(picture: Image.Image, reference: Image.Image | None) -> Sequence[DetectedObject]:
            return detector.detect_picture(picture, reference).objects

        return detect

    return build


MODES: dict[str, ModeFactory] = {
    "full": embedded("full"),  # the floor: today's single full-frame pass
    "tiles": embedded("tiles"),
    "motion": embedded("motion"),
}
FLOOR_MODE = "full"


# --- evaluation (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """One frame through one mode: what was there, what was found, and how long it took."""

    annotation: Annotation
    detections: tuple[DetectedObject, ...]
    ms: float


@dataclass(frozen=True)
class Matched:
    found: tuple[bool, ...]  # one per truth, in the annotation's order
    false: tuple[DetectedObject, ...]  # detections that found no truth (background's excepted)


def iou(a: BoundingBox, b: BoundingBox) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    width = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    height = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    if width <= 0 or height <= 0:
        return 0.0
    intersection = width * height
    union = a.width * a.height + b.width * b.height - intersection
    return intersection / union if union > 0 else 0.0


def match(
    annotation: Annotation,
    detections: Iterable[DetectedObject],
    threshold: float,
    min_iou: float = MIN_IOU,
) -> Matched:
    """Which truths the detections at or above `threshold` find, and which detections are
    false. Best confidence first, each detection takes the unfound truth of its label it
    overlaps most (IoU ≥ `min_iou`; on a tie, the first); a second box on a found truth is a
    false detection."""
    kept = sorted((d for d in detections if d.confidence >= threshold), key=lambda d: -d.confidence)
    truths = annotation.truths
    found = [False] * len(truths)
    false: list[DetectedObject] = []
    for detection in kept:
        best, best_iou = None, 0.0
        for index, truth in enumerate(truths):
            if found[index] or truth.label != detection.label:
                continue
            overlap = iou(detection.bbox, truth.box)
            if overlap >= min_iou and (best is None or overlap > best_iou):
                best, best_iou = index, overlap
        if best is not None:
            found[best] = True
        elif detection.label not in annotation.present:
            false.append(detection)
    return Matched(tuple(found), tuple(false))


@dataclass(frozen=True)
class Scores:
    """One mode's results at one threshold."""

    threshold: float
    found: Mapping[tuple[str, int], int]  # (label, height) → truths found, synthetic frames
    truths: Mapping[tuple[str, int], int]  # (label, height) → truths
    frames: int  # synthetic frames (subject and empty)
    empty_frames: int
    false: Mapping[str, int]  # label → false detections in the synthetic frames
    empty_false: Mapping[str, int]  # label → false detections in the empty frames
    real_found: int
    real_truths: int
    real_false: Mapping[str, int]  # label → false detections in the real photos

    def recall(self, label: str, heights: Iterable[int]) -> float | None:
        """Found / truths of `label` at these heights (None when there is no such truth)."""
        keys = [(label, height) for height in heights]
        total = sum(self.truths.get(key, 0) for key in keys)
        if total == 0:
            return None
        return sum(self.found.get(key, 0) for key in keys) / total

    def false_per_empty(self, label: str) -> float:
        return self.empty_false.get(label, 0) / self.empty_frames if self.empty_frames else 0.0

    def false_per_frame(self, label: str | None = None) -> float:
        """False detections of `label` (of any label: None) per synthetic frame."""
        count = sum(self.false.values()) if label is None else self.false.get(label, 0)
        return count / self.frames if self.frames else 0.0


def score(
    observations: Iterable[Observation], threshold: float, min_iou: float = MIN_IOU
) -> Scores:
    """The scores of one mode's observations at `threshold`."""
    found: Counter[tuple[str, int]] = Counter()
    truths: Counter[tuple[str, int]] = Counter()
    false: Counter[str] = Counter()
    empty_false: Counter[str] = Counter()
    real_false: Counter[str] = Counter()
    frames = empty_frames = real_found = real_truths = 0
    for observation in observations:
        annotation = observation.annotation
        matched = match(annotation, observation.detections, threshold, min_iou)
        labels = Counter(d.label for d in matched.false)
        if annotation.kind == "real":
            real_truths += len(annotation.truths)
            real_found += sum(matched.found)
            real_false.update(labels)
            continue
        frames += 1
        false.update(labels)
        if annotation.kind == "empty":
            empty_frames += 1
            empty_false.update(labels)
        for truth, was_found in zip(annotation.truths, matched.found, strict=True):
            key = _bucket(truth)
            truths[key] += 1
            found[key] += int(was_found)
    return Scores(
        threshold,
        found,
        truths,
        frames,
        empty_frames,
        false,
        empty_false,
        real_found,
        real_truths,
        real_false,
    )


def _bucket(truth: Truth) -> tuple[str, int]:
    if truth.height is None:
        raise ValueError(f"a synthetic truth without a height: {truth}")
    return truth.label, truth.height


def frame_cost(observations: Iterable[Observation]) -> float:
    """The median ms of the synthetic (1080p) frames."""
    return float(statistics.median(o.ms for o in observations if o.annotation.kind != "real"))


# --- measurement ------------------------------------------------------------------------------


def available_modes(threshold: float = DETECT_THRESHOLD) -> dict[str, Detect]:
    """Every mode of `MODES`, `full` first, at `threshold`."""
    return {name: factory(threshold) for name, factory in MODES.items()}


def observe(frames: Iterable[Frame], modes: Mapping[str, Detect]) -> dict[str, list[Observation]]:
    """Every frame through every mode, the modes taking turns in a rotating order."""
    names = list(modes)
    warm_up = Image.new("RGB", (corpus.FRAME_WIDTH, corpus.FRAME_HEIGHT), (128, 128, 128))
    for detect in modes.values():  # opens the ONNX session outside the timings
        detect(warm_up, warm_up)
    observed: dict[str, list[Observation]] = {name: [] for name in names}
    for index, frame in enumerate(frames):
        turn = index % len(names)
        for name in names[turn:] + names[:turn]:
            started = time.perf_counter()
            objects = modes[name](frame.picture, frame.reference)
            ms = (time.perf_counter() - started) * 1000.0
            observed[name].append(Observation(frame.annotation, tuple(objects), ms))
    return observed


def run(servers: Servers | None, options: Options) -> list[Figure]:
    """B7; `servers` is not used."""
    layout = corpus.layout_for(options)
    modes = available_modes()
    observed = observe(corpus.frames(layout), modes)
    curves = {name: [score(runs, t) for t in THRESHOLDS] for name, runs in observed.items()}
    print(report_curves(curves), flush=True)
    print(report_calibration(observed[DEFAULT_MODE]), flush=True)
    return figures(observed, curves)


# --- calibration of the rules (pure) ----------------------------------------------------------

NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MIDNIGHT = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)
# The person weights before the calibration that made a lone person by day low.
EARLIER_PERSON = replace(PERSON, base=40, night_bonus=25)


def frame_batch(found: Sequence[DetectedObject], at: datetime) -> BatchSummary:
    """A frame's detections (at HSI's class thresholds) as a one-file batch taken at `at`."""
    kept = [d for d in found if d.confidence >= CLASS_THRESHOLDS.get(d.label, DEFAULT_THRESHOLD)]
    lines = tuple(DetectionLine(d.label, d.confidence, at, "frame.jpg") for d in kept)
    return BatchSummary("corpus", at, at, lines, "UTC")


def level_shares(
    observations: Iterable[Observation], at: datetime, categories: tuple[CategoryWeight, ...]
) -> dict[str, float]:
    """The share of frames (with anything detected) per risk level under the rules."""
    levels = Counter(
        score_batch(frame_batch(o.detections, at), categories=categories).risk_level.value
        for o in observations
        if o.detections
    )
    total = sum(levels.values())
    return {level: levels.get(level, 0) / total if total else 0.0 for level in LEVEL_ORDER}


def report_calibration(observations: Sequence[Observation]) -> str:
    """What the rules make of the corpus's frames, by day and at night, before and now."""
    weights = {
        "earlier (person 40, night +25)": tuple(
            EARLIER_PERSON if c.name == "person" else c for c in CATEGORIES
        ),
        "now (person 28, night +37)": CATEGORIES,
    }
    lines = [
        f"\n## B7 calibration: share of frames per level, {DEFAULT_MODE} mode, each frame a batch",
        "| rules | time | " + " | ".join(LEVEL_ORDER) + " |",
        "|---|---|" + "---:|" * len(LEVEL_ORDER),
    ]
    for name, categories in weights.items():
        for when, at in (("day", NOON), ("night", MIDNIGHT)):
            shares = level_shares(observations, at, categories)
            cells = " | ".join(f"{shares[level] * 100:.0f} %" for level in LEVEL_ORDER)
            lines.append(f"| {name} | {when} | {cells} |")
    return "\n".join(lines)


def figures(
    observed: Mapping[str, Sequence[Observation]],
    curves: Mapping[str, Sequence[Scores]],
    thresholds: Mapping[str, float] = CLASS_THRESHOLDS,
    default_mode: str = DEFAULT_MODE,
) -> list[Figure]:
    """The table's figures, mode by mode. `full` at today's threshold (`DEFAULT_THRESHOLD`) is
    the floor; the other modes are scored at HSI's per-class `thresholds`, and the targets apply
    to the `default_mode`."""
    costs = {name: frame_cost(runs) for name, runs in observed.items()}
    floor_cost = costs[FLOOR_MODE]
    floor_scores = _at(curves[FLOOR_MODE], DEFAULT_THRESHOLD)
    model = MODEL_PATH.stem
    result: list[Figure] = []
    for name, curve in curves.items():
        floor = name != FLOOR_MODE
        targeted = name == default_mode

        def threshold_of(label: str, name: str = name) -> float:
            return DEFAULT_THRESHOLD if name == FLOOR_MODE else thresholds.get(label, 0.5)

        for label in LABELS:
            scores = _at(curve, threshold_of(label))
            for heights, words in ((SMALL, "100–150 px"), (LARGE, "≥ 200 px")):
                value = scores.recall(label, heights)
                if value is None:
                    continue
                goal = RECALL_TARGETS.get((label, heights)) if targeted else None
                figure = rate(
                    "B7",
                    f"{label} recall, {words} tall in 1080p, {name}",
                    "%",
                    floor=floor,
                    target=Target(min_value=goal) if goal is not None else Target(),
                    note=_recall_note(scores, label, heights, model),
                )
                figure.hsi.append(100.0 * value)
                base = floor_scores.recall(label, heights)
                if figure.floor is not None and base is not None:
                    figure.floor.append(100.0 * base)
                result.append(figure)
        scores = _at(curve, threshold_of("person"))
        persons = cost(
            "B7",
            f"false persons per {EMPTY_SCALE} empty 1080p frames, {name}",
            "persons",
            floor=floor,
            target=Target(max_value=MAX_FALSE_PERSONS) if targeted else Target(),
            note=(
                f"{scores.empty_false.get('person', 0)} in {scores.empty_frames} empty frames "
                f"at threshold {threshold_of('person'):g}; false detections of any label per "
                f"frame (subject and empty) at that threshold: {scores.false_per_frame():.2f}; "
                f"real photos: {scores.real_found} of {scores.real_truths} found, "
                f"{sum(scores.real_false.values())} false"
            ),
        )
        persons.hsi.append(EMPTY_SCALE * scores.false_per_empty("person"))
        if persons.floor is not None:
            persons.floor.append(EMPTY_SCALE * floor_scores.false_per_empty("person"))
        result.append(persons)
        synthetic = [o for o in observed[name] if o.annotation.kind != "real"]
        relative = "" if name == FLOOR_MODE else f"; {costs[name] / floor_cost:.1f}× full's cost"
        spent = cost(
            "B7",
            f"ms per 1080p frame, one thread, {name}",
            "ms",
            floor=floor,
            target=Target(min_ratio=1 / MAX_COST_FACTOR) if targeted else Target(),
            note=f"median over {len(synthetic)} frames, decoded picture → objects{relative}",
        )
        spent.hsi.append(costs[name])
        if spent.floor is not None:
            spent.floor.append(floor_cost)
        result.append(spent)
    return result


def _at(scores: Sequence[Scores], threshold: float) -> Scores:
    for each in scores:
        if abs(each.threshold - threshold) < 1e-9:
            return each
    raise ValueError(f"no scores at threshold {threshold}")


def _recall_note(scores: Scores, label: str, heights: Sequence[int], model: str) -> str:
    parts = [
        f"{height} px: {scores.found.get((label, height), 0)}/"
        f"{scores.truths.get((label, height), 0)}"
        for height in heights
    ]
    return (
        f"found/pasted at threshold {scores.threshold:g}, IoU ≥ {MIN_IOU:g}: "
        f"{', '.join(parts)} ({model})"
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.0f}"


def report_curves(curves: Mapping[str, Sequence[Scores]]) -> str:
    """Per mode and label, recall by height and false detections at each threshold."""
    lines: list[str] = []
    for name, scores in curves.items():
        heights = sorted({height for each in scores for (_, height) in each.truths})
        for label in LABELS:
            lines.append(f"\n## B7 {name}, {label}: recall % by height in 1080p, false {label}s")
            lines.append(
                "| threshold | "
                + " | ".join(f"{height} px" for height in heights)
                + " | false / empty frame | false / frame |"
            )
            lines.append("|---:|" + "---:|" * (len(heights) + 2))
            for each in scores:
                cells = [_percent(each.recall(label, (height,))) for height in heights]
                lines.append(
                    f"| {each.threshold:.2f} | {' | '.join(cells)} "
                    f"| {each.false_per_empty(label):.2f} | {each.false_per_frame(label):.2f} |"
                )
        lines.append(f"\n## B7 {name}, any label: false detections; the real photos")
        lines.append(
            "| threshold | false / frame | false / empty frame | most frequent false "
            "| real photos: found | real photos: false |"
        )
        lines.append("|---:|---:|---:|---|---:|---:|")
        for each in scores:
            empty = sum(each.empty_false.values()) / each.empty_frames if each.empty_frames else 0
            common = Counter(each.false).most_common(4)
            frequent = ", ".join(f"{label} {count}" for label, count in common) or "-"
            real_false = ", ".join(f"{label} {count}" for label, count in each.real_false.items())
            lines.append(
                f"| {each.threshold:.2f} | {each.false_per_frame():.2f} | {empty:.2f} "
                f"| {frequent} | {each.real_found}/{each.real_truths} | {real_false or '-'} |"
            )
    return "\n".join(lines).lstrip("\n")
