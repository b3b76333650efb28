"""Zones: named polygons per camera, in frame-relative coordinates, from a TOML file (`ZONES_PATH`).

    [[cameras.front_door.zones]]
    name = "street"                    # a-z, 0-9, _ and -; unique per camera
    kind = "ignore"                    # ignore | tag (default tag)
    points = [[0, 0.8], [1, 0.8], [1, 1], [0, 1]]   # (x, y), 0–1 of the frame's width/height

An object is in a zone when its reference point — the bottom centre of its box, where it stands,
as Frigate uses — lies inside the polygon or on its border. Objects in an `ignore` zone (the
street, a neighbour's drive, a tree that moves) are dropped before batching; every other zone an
object is in tags it. The file's version (`ZoneSet.version`, from its bytes) is recorded on every
detection entry it applied to: a changed file applies to new files only, and replay gives the
same detections because they are facts.

Pure: parsing and geometry only; `hsi zones check` and the detect stage read the file.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from streams.names import is_camera_id

ZoneKind = Literal["ignore", "tag"]
KINDS: Final[tuple[str, ...]] = ("ignore", "tag")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ZONE_FIELDS: Final = ("name", "kind", "points")
Point = tuple[float, float]


class ZonesError(ValueError):
    """The zones file cannot be used; the message names the file, camera, zone, field and value."""


@dataclass(frozen=True)
class Zone:
    name: str
    kind: ZoneKind
    points: tuple[Point, ...]

    def contains(self, point: Point) -> bool:
        """Whether `point` (frame-relative) lies inside the polygon or on its border."""
        return contains(self.points, point)


@dataclass(frozen=True)
class ZoneSet:
    """The zones of each camera, and the version of the file they came from (None: no file)."""

    cameras: Mapping[str, tuple[Zone, ...]]
    version: str | None = None

    def of(self, camera: str) -> tuple[Zone, ...]:
        return self.cameras.get(camera, ())


NO_ZONES: Final = ZoneSet({})


def reference_point(
    x: float, y: float, width: float, height: float, image_width: int, image_height: int
) -> Point:
    """The bottom centre of a box in pixels, relative to the frame (0–1)."""
    return (
        (x + width / 2) / max(1, image_width),
        (y + height) / max(1, image_height),
    )


def zones_at(zones: Sequence[Zone], point: Point) -> tuple[tuple[str, ...], bool]:
    """(names of the tagging zones `point` is in, whether it is in an ignore zone)."""
    inside = [zone for zone in zones if zone.contains(point)]
    return (
        tuple(zone.name for zone in inside if zone.kind == "tag"),
        any(zone.kind == "ignore" for zone in inside),
    )


# --- geometry -----------------------------------------------------------------------------------


def contains(polygon: Sequence[Point], point: Point) -> bool:
    """Point in polygon by ray casting; a point on an edge or a corner counts as inside."""
    px, py = point
    inside = False
    count = len(polygon)
    for index in range(count):
        (x1, y1), (x2, y2) = polygon[index], polygon[(index + 1) % count]
        if _on_segment((x1, y1), (x2, y2), point):
            return True
        if (y1 > py) != (y2 > py):
            crossing = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
            if px < crossing:
                inside = not inside
    return inside


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(a: Point, b: Point, p: Point, eps: float = 1e-9) -> bool:
    if abs(_cross(a, b, p)) > eps:
        return False
    return (
        min(a[0], b[0]) - eps <= p[0] <= max(a[0], b[0]) + eps
        and min(a[1], b[1]) - eps <= p[1] <= max(a[1], b[1]) + eps
    )


def _segments_cross(a: Point, b: Point, c: Point, d: Point) -> bool:
    """Whether segments ab and cd intersect (touching included)."""
    d1, d2 = _cross(c, d, a), _cross(c, d, b)
    d3, d4 = _cross(a, b, c), _cross(a, b, d)
    if ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and 0 not in (d1, d2, d3, d4):
        return True
    return any(
        (
            _on_segment(c, d, a) and d1 == 0,
            _on_segment(c, d, b) and d2 == 0,
            _on_segment(a, b, c) and d3 == 0,
            _on_segment(a, b, d) and d4 == 0,
        )
    )


def self_intersection(polygon: Sequence[Point]) -> tuple[int, int] | None:
    """The first pair of non-adjacent edges (by index) that cross, or None for a simple polygon."""
    count = len(polygon)
    edges = [(polygon[i], polygon[(i + 1) % count]) for i in range(count)]
    for i in range(count):
        for j in range(i + 1, count):
            if j == i + 1 or (i == 0 and j == count - 1):
                continue  # neighbours share a corner
            if _segments_cross(*edges[i], *edges[j]):
                return i, j
    return None


def _area(polygon: Sequence[Point]) -> float:
    count = len(polygon)
    return abs(
        sum(
            polygon[i][0] * polygon[(i + 1) % count][1]
            - polygon[(i + 1) % count][0] * polygon[i][1]
            for i in range(count)
        )
        / 2
    )


# --- reading ------------------------------------------------------------------------------------


def load_zones(path: Path | None) -> ZoneSet:
    """The zones of the TOML file at `path` (`NO_ZONES` for None)."""
    if path is None:
        return NO_ZONES
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ZonesError(
            f"{path}: cannot read the zones file ({exc.strerror or exc}); fix ZONES_PATH or "
            "unset it"
        ) from exc
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ZonesError(f"{path}: not a valid TOML file: {exc}") from exc
    return parse_zones(document, str(path), version=hashlib.sha256(raw).hexdigest()[:12])


def parse_zones(
    document: Mapping[str, Any], source: str = "<zones>", version: str | None = None
) -> ZoneSet:
    """Validate a parsed zones document (see the module doc for the format)."""
    unknown = sorted(set(document) - {"cameras"})
    if unknown:
        raise ZonesError(
            f"{source}: unknown top-level field {unknown[0]!r}; write zones as "
            "[[cameras.<camera id>.zones]]"
        )
    cameras = document.get("cameras", {})
    if not isinstance(cameras, dict):
        raise ZonesError(f"{source}: 'cameras' must be a table of camera ids")
    found: dict[str, tuple[Zone, ...]] = {}
    for camera, table in cameras.items():
        where = f"{source}: camera {camera!r}"
        if not is_camera_id(camera):
            raise ZonesError(f"{where}: not a camera id (lower case, digits and _: front_door)")
        if not isinstance(table, dict) or set(table) - {"zones"}:
            raise ZonesError(f"{where}: write its zones as [[cameras.{camera}.zones]]")
        zones = table.get("zones", [])
        if not isinstance(zones, list) or not all(isinstance(z, dict) for z in zones):
            raise ZonesError(f"{where}: 'zones' must be an array of tables")
        parsed = [_zone(zone, f"{where}, zones[{index}]") for index, zone in enumerate(zones)]
        names = [zone.name for zone in parsed]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ZonesError(f"{where}: zone name {twice[0]!r} is used twice")
        found[camera] = tuple(parsed)
    return ZoneSet(found, version)


def _zone(table: Mapping[str, Any], where: str) -> Zone:
    unknown = sorted(set(table) - set(_ZONE_FIELDS))
    if unknown:
        raise ZonesError(
            f"{where}: unknown field {unknown[0]!r}; accepted: {', '.join(_ZONE_FIELDS)}"
        )
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ZonesError(
            f"{where}: field 'name': {name!r} is not accepted; use a-z, 0-9, _ and - (at most 64)"
        )
    where = f"{where} (zone {name!r})"
    kind = table.get("kind", "tag")
    if kind not in KINDS:
        raise ZonesError(f"{where}: field 'kind': {kind!r} is not accepted; use ignore or tag")
    raw = table.get("points")
    if not isinstance(raw, list) or len(raw) < 3:
        raise ZonesError(f"{where}: field 'points': give at least 3 points [x, y]")
    points: list[Point] = []
    for index, point in enumerate(raw):
        if (
            not isinstance(point, list)
            or len(point) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in point)
            or not all(0.0 <= float(v) <= 1.0 for v in point)
        ):
            raise ZonesError(
                f"{where}: field 'points', point {index}: {point!r} is not accepted; use "
                "[x, y] with x and y from 0 to 1 (fractions of the frame's width and height)"
            )
        points.append((float(point[0]), float(point[1])))
    crossing = self_intersection(points)
    if crossing is not None:
        first, second = crossing
        raise ZonesError(
            f"{where}: field 'points': the edge from point {first} crosses the edge from point "
            f"{second}; list the corners in order around the zone"
        )
    if _area(points) == 0:
        raise ZonesError(f"{where}: field 'points': the points lie on one line (no area)")
    return Zone(name, kind, tuple(points))
