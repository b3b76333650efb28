"""Tiles, motion regions and the merging of passes (`streams.detectors.regions`), without I/O."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.detectors.base import BoundingBox, DetectedObject
from streams.detectors.regions import (
    Region,
    changed_boxes,
    merge_passes,
    motion_regions,
    regions_for,
    shifted,
    square_around,
    tile_grid,
)


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap", "xs", "ys"),
    [
        (1920, 1080, 640, 0.2, [0, 512, 1024, 1280], [0, 440]),  # step 512, last at the edge
        (1920, 1080, 416, 0.2, [0, 333, 666, 999, 1332, 1504], [0, 333, 664]),
        (1280, 720, 640, 0.2, [0, 512, 640], [0, 80]),
        (1000, 500, 640, 0.2, [0, 360], [0]),  # shorter than a tile: one row, cut to the frame
        (1280, 640, 640, 0.0, [0, 640], [0]),
    ],
)
def test_tile_grid_slices_as_sahi_does(
    width: int, height: int, tile: int, overlap: float, xs: list[int], ys: list[int]
) -> None:
    tiles = tile_grid(width, height, tile=tile, overlap=overlap)
    assert sorted({t.x for t in tiles}) == xs
    assert sorted({t.y for t in tiles}) == ys
    assert len(tiles) == len(xs) * len(ys)
    assert all(t.width == min(tile, width) and t.height == min(tile, height) for t in tiles)


@pytest.mark.parametrize(("width", "height"), [(640, 480), (640, 640), (320, 240)])
def test_a_frame_that_fits_one_tile_has_no_tiles(width: int, height: int) -> None:
    assert tile_grid(width, height, tile=640) == ()


@pytest.mark.parametrize(("tile", "overlap"), [(0, 0.2), (640, 1.0), (640, -0.1)])
def test_tile_grid_refuses_impossible_settings(tile: int, overlap: float) -> None:
    with pytest.raises(ValueError, match="tile"):
        tile_grid(1920, 1080, tile=tile, overlap=overlap)


@given(
    width=st.integers(1, 3000),
    height=st.integers(1, 3000),
    tile=st.integers(100, 1000),
    overlap=st.sampled_from([0.0, 0.1, 0.2, 0.5]),
)
def test_tiles_cover_every_pixel_inside_the_frame(
    width: int, height: int, tile: int, overlap: float
) -> None:
    tiles = tile_grid(width, height, tile=tile, overlap=overlap)
    if not tiles:
        assert width <= tile
        assert height <= tile
        return
    covered = np.zeros((height, width), dtype=bool)
    for t in tiles:
        assert t.x >= 0
        assert t.right <= width
        assert t.y >= 0
        assert t.bottom <= height
        covered[t.y : t.bottom, t.x : t.right] = True
    assert covered.all()


def _grey(width: int = 480, height: int = 270, level: int = 100) -> np.ndarray:
    rng = np.random.default_rng(7)
    noise = rng.integers(-3, 4, size=(height, width))  # sensor noise, well under the delta
    return np.clip(level + noise, 0, 255).astype(np.uint8)


def _with_block(grey: np.ndarray, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
    changed = grey.copy()
    changed[y : y + h, x : x + w] = level
    return changed


def test_nothing_changed_is_no_box() -> None:
    assert changed_boxes(_grey(), _grey()) == []


def test_a_change_of_brightness_everywhere_is_not_motion() -> None:
    """Auto exposure moves every pixel alike: the median shift is removed first."""
    assert changed_boxes(_grey(), _grey(level=140)) == []


@pytest.mark.parametrize(
    ("block", "box"),
    [
        ((100, 50, 16, 40), Region(96, 48, 24, 48)),  # cells of 8 px around the block
        ((0, 0, 8, 8), Region(0, 0, 8, 8)),
        ((472, 262, 8, 8), Region(472, 256, 8, 14)),  # into the last, partial row of cells
    ],
)
def test_a_moved_object_is_boxed_in_whole_cells(
    block: tuple[int, int, int, int], box: Region
) -> None:
    before = _grey()
    assert changed_boxes(before, _with_block(before, *block, level=220)) == [box]


def test_separate_changes_are_separate_boxes_largest_first() -> None:
    before = _grey()
    after = _with_block(_with_block(before, 10, 10, 16, 16, 220), 300, 150, 40, 60, 10)
    boxes = changed_boxes(before, after)
    assert boxes == [Region(296, 144, 48, 72), Region(8, 8, 24, 24)]


@pytest.mark.parametrize(
    "after",
    [
        _grey(width=240),  # another size: cannot compare
        np.random.default_rng(1).integers(0, 256, size=(270, 480)).astype(np.uint8),  # all changed
    ],
)
def test_motion_cannot_tell_when_frames_differ_entirely(after: np.ndarray) -> None:
    assert changed_boxes(_grey(), after) is None


def test_motion_region_is_a_model_sized_square_around_the_change_in_frame_pixels() -> None:
    """A change at (100, 50) of the 480-px grey picture is at (400, 200) of the 1920-px frame."""
    before = _grey()
    after = _with_block(before, 100, 50, 8, 32, 220)  # a person 128 px tall in the frame
    found = motion_regions(before, after, width=1920, height=1080, size=416, budget=2)
    assert found is not None
    assert len(found) == 1
    (region,) = found
    assert region.width == region.height == 416
    change = Region(400, 200, 32, 128)
    assert region.x <= change.x
    assert change.right <= region.right
    assert region.y <= change.y
    assert change.bottom <= region.bottom


@pytest.mark.parametrize(("budget", "count"), [(2, 2), (1, 1), (0, 0)])
def test_far_changes_get_a_region_each_within_the_budget(budget: int, count: int) -> None:
    before = _grey()
    after = _with_block(_with_block(before, 20, 20, 8, 24, 220), 420, 220, 8, 24, 220)
    found = motion_regions(before, after, width=1920, height=1080, size=416, budget=budget)
    assert found is not None
    assert len(found) == count
    if count == 1:  # merged: one square holding both
        (region,) = found
        assert region.x <= 80
        assert region.right >= 1712


def test_near_changes_share_one_region() -> None:
    before = _grey()
    after = _with_block(_with_block(before, 100, 100, 8, 16, 220), 130, 110, 8, 16, 220)
    found = motion_regions(before, after, width=1920, height=1080, size=416, budget=2)
    assert found is not None
    assert len(found) == 1


def test_a_frame_no_larger_than_the_model_needs_no_region() -> None:
    before = _grey(width=416, height=234)
    after = _with_block(before, 100, 100, 8, 16, 220)
    assert motion_regions(before, after, width=416, height=234, size=416, budget=2) == ()


@pytest.mark.parametrize(
    ("box", "region"),
    [
        (Region(900, 500, 40, 100), Region(712, 342, 416, 416)),  # centred
        (Region(0, 0, 40, 100), Region(0, 0, 416, 416)),  # moved inside at the corner
        (Region(1880, 1000, 40, 80), Region(1504, 664, 416, 416)),
        (Region(800, 100, 200, 400), Region(600, 0, 600, 600)),  # 1.5 × the longer side
        (Region(100, 100, 200, 200), Region(0, 0, 416, 300)),  # a frame smaller than the square
    ],
)
def test_square_around(box: Region, region: Region) -> None:
    width, height = (1920, 1080) if region.height != 300 else (500, 300)
    assert square_around(box, width=width, height=height, size=416) == region


def _object(
    label: str, confidence: float, x1: float, y1: float, x2: float, y2: float
) -> DetectedObject:
    return DetectedObject(label, confidence, BoundingBox(x1, y1, x2 - x1, y2 - y1))


@pytest.mark.parametrize(
    ("found", "merged"),
    [
        # a person cut by a crop's edge and the same person whole: one person, the best box
        (
            [
                _object("person", 0.6, 100, 100, 140, 220),
                _object("person", 0.8, 100, 90, 140, 260),
            ],
            [_object("person", 0.8, 100, 90, 140, 260)],
        ),
        # the cut box is the better one: it stays, not inflated by the other (no union)
        (
            [
                _object("person", 0.8, 100, 100, 140, 220),
                _object("person", 0.6, 100, 90, 140, 260),
            ],
            [_object("person", 0.8, 100, 100, 140, 220)],
        ),
        # two people side by side stay two
        (
            [
                _object("person", 0.7, 100, 100, 140, 220),
                _object("person", 0.6, 150, 100, 190, 220),
            ],
            [
                _object("person", 0.7, 100, 100, 140, 220),
                _object("person", 0.6, 150, 100, 190, 220),
            ],
        ),
        # another label never merges
        (
            [_object("dog", 0.5, 100, 100, 140, 220), _object("person", 0.9, 100, 100, 140, 220)],
            [_object("person", 0.9, 100, 100, 140, 220), _object("dog", 0.5, 100, 100, 140, 220)],
        ),
        # a small box inside a big one of the label is one object (intersection over the smaller)
        (
            [_object("car", 0.5, 0, 0, 400, 200), _object("car", 0.55, 10, 10, 60, 60)],
            [_object("car", 0.55, 10, 10, 60, 60)],
        ),
        ([], []),
    ],
)
def test_merge_passes(found: list[DetectedObject], merged: list[DetectedObject]) -> None:
    assert merge_passes(found) == merged


def test_objects_of_a_crop_are_moved_into_the_frame() -> None:
    inside = [_object("cat", 0.7, 10, 20, 50, 60)]
    assert shifted(inside, Region(300, 400, 416, 416)) == [_object("cat", 0.7, 310, 420, 350, 460)]


def test_regions_for_each_mode() -> None:
    """full: nothing more; tiles: the grid; motion: the changes, or the grid without a reference
    or when the whole view changed."""
    before = _grey()
    after = _with_block(before, 100, 50, 8, 32, 220)
    grid = tile_grid(1920, 1080, tile=640, overlap=0.2)
    settings = {"size": 416, "tile": 640, "overlap": 0.2, "budget": 2}
    assert regions_for("full", 1920, 1080, after, before, **settings) == ()
    assert regions_for("tiles", 1920, 1080, after, before, **settings) == grid
    moved = regions_for("motion", 1920, 1080, after, before, **settings)
    assert moved == motion_regions(before, after, width=1920, height=1080, size=416, budget=2)
    assert len(moved) == 1
    assert regions_for("motion", 1920, 1080, after, None, **settings) == grid
    noise = np.random.default_rng(1).integers(0, 256, size=(270, 480)).astype(np.uint8)
    assert regions_for("motion", 1920, 1080, noise, before, **settings) == grid
