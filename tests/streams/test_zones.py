"""Zones (`streams.zones`): the file's rules and messages, and the geometry, without I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streams.zones import (
    NO_ZONES,
    Zone,
    ZonesError,
    contains,
    load_zones,
    parse_zones,
    reference_point,
    self_intersection,
    zones_at,
)

SQUARE = ((0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6))
BOWTIE = ((0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0))  # crosses itself


@pytest.mark.parametrize(
    ("point", "inside"),
    [
        ((0.4, 0.4), True),
        ((0.1, 0.4), False),
        ((0.7, 0.4), False),
        ((0.2, 0.4), True),  # on the left edge
        ((0.6, 0.6), True),  # on a corner
        ((0.4, 0.2), True),  # on the top edge
        ((0.4, 0.6000001), False),
    ],
)
def test_a_point_on_the_border_is_inside(point: tuple[float, float], inside: bool) -> None:
    assert contains(SQUARE, point) is inside


def test_a_concave_zone() -> None:
    """An L: the notch is outside."""
    ell = ((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0))
    assert contains(ell, (0.25, 0.25))
    assert not contains(ell, (0.75, 0.25))
    assert contains(ell, (0.75, 0.75))


@pytest.mark.parametrize(
    ("polygon", "crossing"),
    [
        (SQUARE, None),
        (BOWTIE, (0, 2)),
        (((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 0.0), (0.0, 1.0)), (0, 2)),  # touches
    ],
)
def test_self_intersection(polygon: Any, crossing: tuple[int, int] | None) -> None:
    assert self_intersection(polygon) == crossing


def test_the_reference_point_is_where_the_object_stands() -> None:
    """Bottom centre of the box, relative to the frame."""
    assert reference_point(100, 200, 50, 300, 1000, 1000) == (0.125, 0.5)


def test_zones_at_tags_and_ignores() -> None:
    zones = (
        Zone("drive", "tag", SQUARE),
        Zone("street", "ignore", ((0.0, 0.8), (1.0, 0.8), (1.0, 1.0), (0.0, 1.0))),
        Zone("porch", "tag", ((0.5, 0.5), (0.9, 0.5), (0.9, 0.9), (0.5, 0.9))),
    )
    assert zones_at(zones, (0.4, 0.4)) == (("drive",), False)
    assert zones_at(zones, (0.55, 0.55)) == (("drive", "porch"), False)
    assert zones_at(zones, (0.3, 0.9)) == ((), True)
    assert zones_at(zones, (0.85, 0.85)) == (("porch",), True)  # porch and street overlap
    assert zones_at(zones, (0.05, 0.05)) == ((), False)


def test_a_zones_file_is_read_with_its_version(tmp_path: Path) -> None:
    path = tmp_path / "zones.toml"
    path.write_text(
        """
[[cameras.front_door.zones]]
name = "street"
kind = "ignore"
points = [[0, 0.8], [1, 0.8], [1, 1], [0, 1]]

[[cameras.front_door.zones]]
name = "porch"
points = [[0.3, 0.4], [0.7, 0.4], [0.7, 0.8], [0.3, 0.8]]
"""
    )
    zones = load_zones(path)
    assert [(z.name, z.kind) for z in zones.of("front_door")] == [
        ("street", "ignore"),
        ("porch", "tag"),
    ]
    assert zones.of("garage") == ()
    assert zones.version is not None
    assert len(zones.version) == 12
    path.write_text(path.read_text().replace("0.7, 0.8", "0.75, 0.8"))
    assert load_zones(path).version != zones.version  # a changed file is another version
    assert load_zones(None) is NO_ZONES


def _one(zone: dict[str, Any]) -> dict[str, Any]:
    return {"cameras": {"front_door": {"zones": [zone]}}}


GOOD = {"name": "porch", "points": [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"camera": {}}, "unknown top-level field 'camera'"),
        ({"cameras": {"Front Door": {"zones": []}}}, "camera 'Front Door': not a camera id"),
        ({"cameras": {"front_door": {"zone": []}}}, "[[cameras.front_door.zones]]"),
        (_one({**GOOD, "name": "Porch Steps"}), "zones[0]: field 'name': 'Porch Steps'"),
        (_one({**GOOD, "kind": "mask"}), "(zone 'porch'): field 'kind': 'mask'"),
        (_one({**GOOD, "colour": "red"}), "unknown field 'colour'"),
        (_one({**GOOD, "points": [[0, 0], [1, 1]]}), "give at least 3 points"),
        (_one({**GOOD, "points": [[0, 0], [1.5, 0], [1, 1]]}), "point 1: [1.5, 0]"),
        (_one({**GOOD, "points": [[0, 0], [True, 0], [1, 1]]}), "point 1: [True, 0]"),
        (_one({**GOOD, "points": [[0, 0], [1, 1], [1, 0], [0, 1]]}), "crosses the edge"),
        (_one({**GOOD, "points": [[0, 0], [0.5, 0.5], [1, 1]]}), "on one line"),
        (
            {"cameras": {"front_door": {"zones": [GOOD, GOOD]}}},
            "zone name 'porch' is used twice",
        ),
    ],
)
def test_bad_zones_are_refused_naming_camera_zone_field_and_value(
    document: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ZonesError) as caught:
        parse_zones(document, "zones.toml")
    assert str(caught.value).startswith("zones.toml: ")
    assert expected in str(caught.value)


def test_an_unreadable_or_broken_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ZonesError, match="cannot read the zones file"):
        load_zones(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[cameras.front_door.zones]\n")
    with pytest.raises(ZonesError, match="not a valid TOML file"):
        load_zones(broken)


def test_a_box_standing_on_a_zone_border_is_in_the_zone() -> None:
    """A 1000×1000 frame, a zone whose top edge is y = 0.5: a person whose box ends at y = 500
    stands on the border (inside); one ending a pixel higher stands outside."""
    porch = (Zone("porch", "tag", ((0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0))),)
    assert zones_at(porch, reference_point(100, 300, 50, 200, 1000, 1000)) == (("porch",), False)
    assert zones_at(porch, reference_point(100, 299, 50, 200, 1000, 1000)) == ((), False)
