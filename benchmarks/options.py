"""How big a benchmark run is: full, quick (`--quick`), or smoke (the tests' tiny run)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")


class Size(StrEnum):
    FULL = "full"
    QUICK = "quick"
    SMOKE = "smoke"


@dataclass(frozen=True)
class Options:
    size: Size = Size.FULL
    rounds: int = 3
    memory_files: int | None = None  # overrides the memory benchmark's size
    check: bool = False  # also check results after the timed rounds (B3: `--check`)

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.memory_files is not None and (self.memory_files < 200 or self.memory_files % 200):
            raise ValueError(
                f"memory_files must be a multiple of 200 (8 cameras, batches of 25 files), "
                f"got {self.memory_files}"
            )

    def pick(self, full: T, quick: T, smoke: T) -> T:
        """The value for this run's size."""
        if self.size is Size.FULL:
            return full
        if self.size is Size.QUICK:
            return quick
        return smoke
