"""Which objects of a batch count (`streams.confirmation`), table-tested without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.confirmation import Confirmation, confirmed
from streams.schemas import BatchDetection, Box, DetectedObject

AT = datetime(2026, 12, 7, 10, 15, tzinfo=UTC)


def _file(number: int, *objects: tuple[str, float]) -> BatchDetection:
    return BatchDetection(
        entry_id=f"{number}-1",
        file_entry_id=f"{number}-0",
        path=f"Front Door/MDAlarm_{number}.jpg",
        captured_at=AT,
        objects=tuple(
            DetectedObject(label=label, confidence=score, bbox=Box(x=1, y=2, width=3, height=4))
            for label, score in objects
        ),
    )


def _kept(batch: tuple[BatchDetection, ...]) -> list[list[tuple[str, float]]]:
    return [[(o.label, o.confidence) for o in d.objects] for d in batch]


BAR = Confirmation(bar=0.6, class_bars={"car": 0.7})


@pytest.mark.parametrize(
    ("files", "kept"),
    [
        # seen once, below the bar: not confirmed, and the file drops out
        ([_file(1, ("person", 0.45))], []),
        # seen once, at the bar: counts
        ([_file(1, ("person", 0.6))], [[("person", 0.6)]]),
        # seen in two files of the burst, both low: confirmed by each other
        (
            [_file(1, ("person", 0.45)), _file(2, ("person", 0.42))],
            [[("person", 0.45)], [("person", 0.42)]],
        ),
        # two low persons in one file are still one sighting
        ([_file(1, ("person", 0.45), ("person", 0.44))], []),
        # the class bar applies to its label only
        ([_file(1, ("car", 0.65), ("dog", 0.65))], [[("dog", 0.65)]]),
        # another label in another file confirms nothing
        ([_file(1, ("person", 0.45)), _file(2, ("cat", 0.9))], [[("cat", 0.9)]]),
        ([], []),
    ],
)
def test_confirmed(files: list[BatchDetection], kept: list[list[tuple[str, float]]]) -> None:
    assert _kept(confirmed(files, BAR)) == kept


def test_no_bar_keeps_the_batch_as_it_is() -> None:
    files = [_file(1, ("person", 0.3)), _file(2, ("car", 0.2))]
    assert confirmed(files, Confirmation()) == tuple(files)


@pytest.mark.parametrize("bars", [{"bar": 1.5}, {"class_bars": {"person": -0.1}}])
def test_bars_outside_zero_to_one_are_refused(bars: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match="confirmation bars"):
        Confirmation(**bars)
