"""Which objects of a closed batch count: one seen in several files, or once but clearly.

A camera's motion snapshots come in bursts; the batch holds a burst. A small model's low-confidence
hit that appears in one picture only is more often a shadow or a branch than a person, while the
same label in two or more pictures of the burst confirms itself (Frigate likewise confirms an
object over a track's median score, not one frame's). So the detector keeps candidates from the
per-class detection thresholds, and the batch keeps:

- every object whose label appears in two or more files of the batch;
- an object whose label appears in one file only, if its confidence reaches the confirmation bar
  of its label (`class_bars`, else `bar`).

Files left without objects drop out of the batch; a batch left without files makes no event.
Pure: the same batch gives the same result on every consumer and in replay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streams.schemas import BatchDetection


@dataclass(frozen=True)
class Confirmation:
    """The bars a label seen in one file of a batch must reach (0: every object counts)."""

    bar: float = 0.0
    class_bars: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bars = {"bar": self.bar, **{f"class_bars[{k!r}]": v for k, v in self.class_bars.items()}}
        wrong = [f"{name} = {value}" for name, value in bars.items() if not 0.0 <= value <= 1.0]
        if wrong:
            raise ValueError(f"confirmation bars must be in [0, 1]: {', '.join(wrong)}")

    def bar_of(self, label: str) -> float:
        return self.class_bars.get(label, self.bar)


def confirmed(
    detections: Sequence[BatchDetection], confirmation: Confirmation
) -> tuple[BatchDetection, ...]:
    """The batch's detections with only the objects that count (see the module doc), in order."""
    files_seen: dict[str, set[str]] = {}
    for detection in detections:
        for found in detection.objects:
            files_seen.setdefault(found.label, set()).add(detection.file_entry_id)
    kept: list[BatchDetection] = []
    for detection in detections:
        objects = tuple(
            found
            for found in detection.objects
            if len(files_seen[found.label]) > 1
            or found.confidence >= confirmation.bar_of(found.label)
        )
        if objects == detection.objects:
            kept.append(detection)
        elif objects:
            kept.append(detection.model_copy(update={"objects": objects}))
    return tuple(kept)
