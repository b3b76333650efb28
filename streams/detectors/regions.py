"""Where a small-input detector looks beyond the full frame, and how its passes merge.

A 416-pixel model sees a 1920×1080 frame at a fifth of its size: a person 150 px tall becomes
32 px, below what it finds. Two ways to look closer, both pure functions here:

- `tile_grid`: overlapping tiles covering the frame, as SAHI (slicing-aided hyper inference,
  obss/sahi `get_slice_bboxes`) slices: a fixed tile size, a step of `tile · (1 − overlap)`,
  and the last row and column moved back so that they end at the frame's edge.
- `motion_regions`: only where the frame differs from the camera's previous frame, cropped to
  squares of at least the model's input size around each change, as Frigate does (its
  `calculate_region`); a camera's motion snapshots come in bursts, so the previous frame is
  usually seconds old and what changed is what moved.

`merge_passes` keeps one box per object over the full pass and the region passes, matching boxes
as SAHI does (intersection over the smaller box, 0.5), so that a person cut by a tile's edge and the
same person whole are one person.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from streams.detectors.base import BoundingBox, DetectedObject

MOTION_WIDTH = 480  # frames are compared at this width (a quarter of 1080p's)
MOTION_PIXEL_DELTA = 24  # grey levels, after removing the change of overall brightness
MOTION_CELL = 8  # analysis pixels per side of a motion cell
MOTION_CELL_FRACTION = 0.15  # share of a cell's pixels that must change for the cell to count
MOTION_GLOBAL_FRACTION = 0.5  # more of the frame changed than this: light or view changed
REGION_CONTEXT = 1.5  # a region's side is this many times the change's longer side (or more)
MERGE_OVERLAP = 0.5  # intersection over the smaller box above which two boxes are one object

GreyArray = NDArray[np.uint8]


@dataclass(frozen=True, slots=True, order=True)
class Region:
    """A rectangle of the frame in whole pixels: columns x..x+width, rows y..y+height."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height


def tile_grid(width: int, height: int, *, tile: int, overlap: float = 0.2) -> tuple[Region, ...]:
    """SAHI's slices of a `width`×`height` frame: tiles of `tile` px overlapping by `overlap`.

    None for a frame that fits in one tile (the full pass sees it at full size already).
    """
    if tile < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile = {tile} must be >= 1 and overlap = {overlap} in [0, 1)")
    if width <= tile and height <= tile:
        return ()
    step = max(1, tile - int(overlap * tile))
    return tuple(
        Region(x, y, min(tile, width), min(tile, height))
        for y in _starts(height, tile, step)
        for x in _starts(width, tile, step)
    )


def _starts(length: int, tile: int, step: int) -> list[int]:
    """Offsets of the tiles along one side; the last one ends at the edge."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def motion_grey(picture: Image.Image, width: int = MOTION_WIDTH) -> GreyArray:
    """The small grey picture motion is computed on (`width` px wide, or the picture's width)."""
    target_width = min(width, picture.width)
    target_height = max(1, round(picture.height * target_width / picture.width))
    grey = picture.convert("L")
    if grey.size != (target_width, target_height):
        grey = grey.resize((target_width, target_height), Image.Resampling.BOX)
    return np.asarray(grey, dtype=np.uint8)


def changed_boxes(
    previous: GreyArray,
    current: GreyArray,
    *,
    pixel_delta: int = MOTION_PIXEL_DELTA,
    cell: int = MOTION_CELL,
    cell_fraction: float = MOTION_CELL_FRACTION,
) -> list[Region] | None:
    """Boxes (in the grey pictures' pixels) around the connected changed cells, largest first.

    None when the two cannot be compared (sizes differ) or more than `MOTION_GLOBAL_FRACTION` of
    the cells changed (the light or the view changed, not something in it).
    """
    if previous.shape != current.shape:
        return None
    before = previous.astype(np.int16)
    after = current.astype(np.int16)
    shift = int(np.median(after)) - int(np.median(before))  # auto exposure moves every pixel
    changed = np.abs(after - before - shift) > pixel_delta
    rows, cols = -(-changed.shape[0] // cell), -(-changed.shape[1] // cell)
    padded = np.zeros((rows * cell, cols * cell), dtype=np.float32)
    padded[: changed.shape[0], : changed.shape[1]] = changed
    share = padded.reshape(rows, cell, cols, cell).mean(axis=(1, 3))
    cells = share >= cell_fraction
    if cells.mean() > MOTION_GLOBAL_FRACTION:
        return None
    boxes = [
        Region(
            c0 * cell,
            r0 * cell,
            min((c1 + 1) * cell, changed.shape[1]) - c0 * cell,
            min((r1 + 1) * cell, changed.shape[0]) - r0 * cell,
        )
        for r0, c0, r1, c1 in _components(cells)
    ]
    return sorted(boxes, key=lambda box: (-box.width * box.height, box))


def _components(cells: NDArray[np.bool_]) -> list[tuple[int, int, int, int]]:
    """(first row, first col, last row, last col) of each 8-connected group of set cells."""
    seen = np.zeros_like(cells)
    found: list[tuple[int, int, int, int]] = []
    rows, cols = cells.shape
    for start_row, start_col in zip(*np.nonzero(cells), strict=True):
        if seen[start_row, start_col]:
            continue
        seen[start_row, start_col] = True
        stack = [(int(start_row), int(start_col))]
        r0, c0, r1, c1 = int(start_row), int(start_col), int(start_row), int(start_col)
        while stack:
            row, col = stack.pop()
            r0, c0, r1, c1 = min(r0, row), min(c0, col), max(r1, row), max(c1, col)
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    nr, nc = row + dr, col + dc
                    if 0 <= nr < rows and 0 <= nc < cols and cells[nr, nc] and not seen[nr, nc]:
                        seen[nr, nc] = True
                        stack.append((nr, nc))
        found.append((r0, c0, r1, c1))
    return found


def motion_regions(
    previous: GreyArray,
    current: GreyArray,
    *,
    width: int,
    height: int,
    size: int,
    budget: int,
) -> tuple[Region, ...] | None:
    """At most `budget` square regions of the `width`×`height` frame around what changed.

    Each region is at least `size` px (the model's input: what changed is seen at full
    resolution or better) and `REGION_CONTEXT` times the change; regions that overlap are
    merged, and the closest ones are merged until `budget` remain. None when motion cannot tell
    (see `changed_boxes`); () when nothing changed or the frame is no larger than the model's
    input.
    """
    if budget < 0 or size < 1:
        raise ValueError(f"budget = {budget} must be >= 0 and size = {size} >= 1")
    boxes = changed_boxes(previous, current)
    if boxes is None:
        return None
    if budget == 0 or (width <= size and height <= size):
        return ()
    factor = width / current.shape[1]
    regions = [
        square_around(
            Region(
                int(box.x * factor),
                int(box.y * factor),
                round(box.width * factor),
                round(box.height * factor),
            ),
            width=width,
            height=height,
            size=size,
        )
        for box in boxes
    ]
    merged = _merge_regions(regions, width=width, height=height, size=size, budget=budget)
    return tuple(sorted(region for region in merged if region.width * region.height > 0))


def regions_for(
    mode: str,
    width: int,
    height: int,
    grey: GreyArray | None,
    reference: GreyArray | None,
    *,
    size: int,
    tile: int,
    overlap: float,
    budget: int,
) -> tuple[Region, ...]:
    """The crops a detection `mode` runs besides the full frame of a `width`×`height` picture:
    none for `full`; for `motion`, the regions that changed since `reference` (both pictures'
    `motion_grey`), or the tiles when there is no reference or motion cannot tell; the tiles for
    `tiles`."""
    if mode == "full":
        return ()
    if mode == "motion" and grey is not None and reference is not None:
        moved = motion_regions(
            reference, grey, width=width, height=height, size=size, budget=budget
        )
        if moved is not None:
            return moved
    return tile_grid(width, height, tile=tile, overlap=overlap)


def square_around(box: Region, *, width: int, height: int, size: int) -> Region:
    """The square of side max(size, REGION_CONTEXT × box's longer side) centred on `box`,
    shifted to lie inside the frame and cut to it where the frame is smaller."""
    side = max(size, round(REGION_CONTEXT * max(box.width, box.height)))
    return _square(box, side, width, height)


def _square(box: Region, side: int, width: int, height: int) -> Region:
    """The square of `side` centred on `box`, inside the `width`×`height` frame."""
    region_width, region_height = min(side, width), min(side, height)
    centre_x, centre_y = box.x + box.width / 2, box.y + box.height / 2
    x = min(max(0, round(centre_x - region_width / 2)), width - region_width)
    y = min(max(0, round(centre_y - region_height / 2)), height - region_height)
    return Region(x, y, region_width, region_height)


def _merge_regions(
    regions: list[Region], *, width: int, height: int, size: int, budget: int
) -> list[Region]:
    """Overlapping regions merged; then the pair whose merged square is smallest, until at most
    `budget` are left."""
    regions = list(regions)
    while True:
        pair = _first_overlapping(regions)
        if pair is None:
            break
        regions = _replace_pair(regions, pair, width=width, height=height, size=size)
    while len(regions) > budget:
        pairs = [(i, j) for i in range(len(regions)) for j in range(i + 1, len(regions))]
        joined = {
            pair: _joined(regions[pair[0]], regions[pair[1]], width, height, size) for pair in pairs
        }
        cheapest = min(pairs, key=lambda pair: joined[pair].width * joined[pair].height)
        regions = _replace_pair(regions, cheapest, width=width, height=height, size=size)
    return regions


def _first_overlapping(regions: Sequence[Region]) -> tuple[int, int] | None:
    for i, first in enumerate(regions):
        for j in range(i + 1, len(regions)):
            second = regions[j]
            overlap_w = min(first.right, second.right) - max(first.x, second.x)
            overlap_h = min(first.bottom, second.bottom) - max(first.y, second.y)
            if overlap_w > 0 and overlap_h > 0:
                return i, j
    return None


def _replace_pair(
    regions: list[Region], pair: tuple[int, int], *, width: int, height: int, size: int
) -> list[Region]:
    i, j = pair
    joined = _joined(regions[i], regions[j], width, height, size)
    return [joined] + [region for k, region in enumerate(regions) if k not in (i, j)]


def _joined(first: Region, second: Region, width: int, height: int, size: int) -> Region:
    """The square around both (its side is the bounding box's longer side, at least `size`)."""
    x, y = min(first.x, second.x), min(first.y, second.y)
    right, bottom = max(first.right, second.right), max(first.bottom, second.bottom)
    bounding = Region(x, y, right - x, bottom - y)
    return _square(bounding, max(size, bounding.width, bounding.height), width, height)


def merge_passes(
    objects: Iterable[DetectedObject], *, overlap: float = MERGE_OVERLAP
) -> list[DetectedObject]:
    """One box per object over all passes: per label, best confidence first, a box is dropped
    when its intersection over the smaller of it and a kept box exceeds `overlap`.

    SAHI's matching (intersection over the smaller box, so a box cut by a crop's edge matches the
    whole one), but suppression rather than SAHI's default merging into the union: on the accuracy
    benchmark (`benchmarks/accuracy.py`) the union inflated boxes past their object and lost
    matches, while the crops around changes rarely cut an object, and the full pass still sees
    one that a tile cuts.
    """
    by_label: dict[str, list[DetectedObject]] = {}
    for found in objects:
        by_label.setdefault(found.label, []).append(found)
    kept: list[DetectedObject] = []
    for group in by_label.values():
        remaining = sorted(group, key=lambda o: (-o.confidence, _corners(o)))
        while remaining:
            best = remaining.pop(0)
            remaining = [other for other in remaining if _over_smaller(best, other) <= overlap]
            kept.append(best)
    kept.sort(key=lambda o: (-o.confidence, o.label, _corners(o)))
    return kept


def _corners(found: DetectedObject) -> tuple[float, float, float, float]:
    box = found.bbox
    return box.x, box.y, box.x + box.width, box.y + box.height


def _over_smaller(first: DetectedObject, second: DetectedObject) -> float:
    ax1, ay1, ax2, ay2 = _corners(first)
    bx1, by1, bx2, by2 = _corners(second)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    smaller = min((ax2 - ax1) * (ay2 - ay1), (bx2 - bx1) * (by2 - by1))
    return inter / smaller if smaller > 0 else 0.0


def shifted(objects: Iterable[DetectedObject], region: Region) -> list[DetectedObject]:
    """Objects found in a crop of `region`, in the frame's pixels."""
    return [
        DetectedObject(
            o.label,
            o.confidence,
            BoundingBox(o.bbox.x + region.x, o.bbox.y + region.y, o.bbox.width, o.bbox.height),
        )
        for o in objects
    ]
