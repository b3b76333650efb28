"""GET /api/events, /api/events/{id} and /api/events/stats over real PostgreSQL rows."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.api.cursor import Cursor, encode_cursor
from hsi.api.responses import iso
from tests.api.rows import (
    BASE,
    add_camera,
    detection_row,
    event_row,
    insert,
    insert_many,
    many_events,
    media_row,
)

CAMERAS = ("front_door", "garage", "back_yard")
Row = dict[str, Any]


@pytest.fixture
async def three_thousand(engine: AsyncEngine) -> list[Row]:
    """3 000 events over three cameras, plus two without a window (not listed)."""
    rows = many_events(3000, CAMERAS)
    rows.append(event_row(5000, "garage", None, risk_level=None, analysis_status="completed"))
    rows.append(event_row(5001, "front_door", None))
    await insert_many(engine, "events", rows)
    return rows


def _expected(rows: list[Row], keep: Callable[[Row], bool]) -> list[str]:
    shown = [r for r in rows if r["window_start"] is not None and keep(r)]
    shown.sort(key=lambda r: (r["window_start"], r["id"]), reverse=True)
    return [str(r["id"]) for r in shown]


async def _walk(client: httpx.AsyncClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        page = await client.get(
            "/api/events", params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert page.status_code == 200, page.text
        body = page.json()
        items.extend(body["items"])
        assert body["has_more"] is (body["next_cursor"] is not None)
        if not body["has_more"]:
            return items
        assert len(body["items"]) == int(params.get("limit", 50))
        cursor = body["next_cursor"]
    raise AssertionError("the walk did not end")


async def test_walking_all_pages_returns_every_event_once_in_order(
    client: httpx.AsyncClient, three_thousand: list[Row]
) -> None:
    """Keyset pages over 3 000 events (tied timestamps included): no duplicates, no gaps."""
    items = await _walk(client, {"limit": 100})
    assert [i["id"] for i in items] == _expected(three_thousand, lambda r: True)
    assert len(items) == 3000


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        ({"camera_id": "garage"}, lambda r: r["camera_id"] == "garage"),
        (
            {"risk_level": ["high", "critical"]},
            lambda r: r["risk_level"] in ("high", "critical"),
        ),
        ({"risk_level": "low,medium"}, lambda r: r["risk_level"] in ("low", "medium")),
        (
            {"min_score": "70", "camera_id": "front_door"},
            lambda r: (r["risk_score"] or -1) >= 70 and r["camera_id"] == "front_door",
        ),
        ({"object_type": "dog"}, lambda r: "dog" in r["object_types"]),
        (
            {"object_type": "dog,cat"},
            lambda r: "dog" in r["object_types"] or "cat" in r["object_types"],
        ),
        ({"analysis_status": "pending"}, lambda r: r["analysis_status"] == "pending"),
        (
            {"since": iso(BASE - timedelta(minutes=300)), "until": "2026-01-10T11:00:00"},
            lambda r: (
                BASE - timedelta(minutes=300) <= r["window_start"] < BASE - timedelta(hours=1)
            ),
        ),
    ],
)
async def test_filtered_walks_match_the_rows(
    client: httpx.AsyncClient,
    three_thousand: list[Row],
    params: dict[str, Any],
    keep: Callable[[Row], bool],
) -> None:
    """Every filter, walked page by page, yields exactly the matching rows in order."""
    items = await _walk(client, {**params, "limit": 97})
    expected = _expected(three_thousand, keep)
    assert expected
    assert [i["id"] for i in items] == expected


async def test_list_items_carry_links_and_utc_times(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Items are JSON with UTC `Z` times and links to the event and the camera."""
    await insert(engine, "events", [event_row(1, "garage", BASE, risk_level="high", risk_score=70)])
    body = (await client.get("/api/events")).json()
    assert body["has_more"] is False
    assert body["next_cursor"] is None
    (item,) = body["items"]
    assert item["window_start"] == "2026-01-10T12:00:00Z"
    assert item["risk_level"] == "high"
    assert item["links"] == {
        "self": f"/api/events/{item['id']}",
        "camera": "/api/cameras/garage",
    }


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("cursor=garbage", "cursor"),
        ("since=yesterday", "since"),
        ("until=2026-99-01", "until"),
        ("since=2026-01-02&until=2026-01-01", "until"),
        ("min_score=101", "min_score"),
        ("min_score=-5", "min_score"),
        ("risk_level=severe", "risk_level"),
        ("analysis_status=done", "analysis_status"),
        ("camera_id=Front%20Door", "camera_id"),
        ("risk=high", "risk"),
        ("limit=1&limit=2", "limit"),
        ("zone=Front%20Porch", "zone"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    client: httpx.AsyncClient, query: str, parameter: str
) -> None:
    """Each bad query parameter is a 400 whose body names it."""
    response = await client.get(f"/api/events?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == parameter
    assert body["error"]


async def test_a_cursor_of_another_listing_is_refused(client: httpx.AsyncClient) -> None:
    """A detections cursor, or one with a non-UUID key, is no events cursor."""
    foreign = encode_cursor(Cursor("detections", BASE, (str(uuid.uuid4()),)))
    not_uuid = encode_cursor(Cursor("events", BASE, ("x",)))
    for token in (foreign, not_uuid):
        response = await client.get("/api/events", params={"cursor": token})
        assert response.status_code == 400
        assert response.json()["parameter"] == "cursor"


async def test_event_detail_has_files_detections_and_links(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """An event lists its files in batch order with media links and its detections with
    thumbnail links; unknown or malformed ids are 404."""
    await add_camera(engine, "front_door", "Front Door")
    first = media_row("front_door", "100-0", "Front Door/snap/a 1.jpg", BASE)
    second = media_row("front_door", "101-0", "Front Door/snap/b.jpg", BASE + timedelta(seconds=5))
    await insert(engine, "media_files", [first, second])
    dets = [
        detection_row(first, "200-0", 0, "person", (10, 20, 30, 40), (640, 480)),
        detection_row(first, "200-0", 1, "dog", (50, 60, 10, 10), (640, 480)),
        detection_row(second, "201-0", 0, "car", (1, 2, 3, 4), (640, 480)),
    ]
    await insert(engine, "detections", dets)
    event = event_row(7, "front_door", BASE, reasoning="because", risk_level="high")
    await insert(engine, "events", [event])
    await insert(
        engine,
        "event_detections",
        [
            {
                "event_id": event["id"],
                "detection_entry_id": "201-0",
                "file_entry_id": "101-0",
                "camera_id": "front_door",
                "position": 1,
            },
            {
                "event_id": event["id"],
                "detection_entry_id": "200-0",
                "file_entry_id": "100-0",
                "camera_id": "front_door",
                "position": 0,
            },
        ],
    )
    body = (await client.get(f"/api/events/{event['id']}")).json()
    assert body["reasoning"] == "because"
    assert [f["file_entry_id"] for f in body["files"]] == ["100-0", "101-0"]
    assert body["files"][0]["media_url"] == "/api/media/front_door/Front%20Door/snap/a%201.jpg"
    assert [d["label"] for d in body["detections"]] == ["person", "dog", "car"]
    person = body["detections"][0]
    assert person["bbox"] == {"x": 10, "y": 20, "width": 30, "height": 40}
    assert person["thumbnail_url"] == f"/api/detections/{dets[0]['id']}/thumbnail"
    assert person["media_url"] == body["files"][0]["media_url"]

    for missing in (str(uuid.uuid4()), "not-a-uuid"):
        response = await client.get(f"/api/events/{missing}")
        assert response.status_code == 404
        assert "error" in response.json()


async def test_stats_count_by_level_camera_and_hour(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Stats count events in the range by level, status, camera and zero-filled hour."""
    rows = [
        event_row(1, "garage", BASE - timedelta(minutes=30), risk_level="high", risk_score=70),
        event_row(2, "garage", BASE - timedelta(minutes=20), risk_level="low", risk_score=5),
        event_row(
            3,
            "front_door",
            BASE - timedelta(hours=2, minutes=1),
            risk_level="critical",
            risk_score=99,
        ),
        event_row(
            4,
            "front_door",
            BASE - timedelta(minutes=5),
            risk_level=None,
            risk_score=None,
            analysis_status="pending",
        ),
        event_row(5, "front_door", BASE - timedelta(days=3)),  # outside the range
    ]
    await insert(engine, "events", rows)
    response = await client.get(
        "/api/events/stats",
        params={"since": iso(BASE - timedelta(hours=3)), "until": iso(BASE)},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 4
    assert body["by_level"] == {"low": 1, "medium": 0, "high": 1, "critical": 1}
    assert body["by_analysis_status"] == {"pending": 1, "completed": 3, "failed": 0}
    assert body["by_camera"] == {"front_door": 2, "garage": 2}
    assert [h["count"] for h in body["by_hour"]] == [1, 0, 3]
    assert body["by_hour"][0]["hour"] == "2026-01-10T09:00:00Z"
    assert body["levels"][0] == {"level": "low", "min_score": 0, "max_score": 29}

    only = (
        await client.get(
            "/api/events/stats",
            params={
                "since": iso(BASE - timedelta(hours=3)),
                "until": iso(BASE),
                "camera_id": "garage",
            },
        )
    ).json()
    assert only["total"] == 2

    default = (await client.get("/api/events/stats")).json()  # the last 24 hours from now
    assert len(default["by_hour"]) in (24, 25)
    too_long = await client.get("/api/events/stats", params={"since": "2020-01-01"})
    assert too_long.status_code == 400
    assert too_long.json()["parameter"] == "since"


async def test_events_are_filtered_by_the_zones_their_objects_stood_in(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """`zone` (repeatable, comma-separated) keeps events with an object in any of the zones,
    combined with the other filters and the cursor; the items say their zones."""
    rows = [
        event_row(0, "front_door", BASE, zones=["porch"]),
        event_row(1, "front_door", BASE + timedelta(minutes=1), zones=["drive", "porch"]),
        event_row(2, "front_door", BASE + timedelta(minutes=2), zones=["drive"]),
        event_row(3, "back_yard", BASE + timedelta(minutes=3), zones=["porch"]),
        event_row(4, "front_door", BASE + timedelta(minutes=4), zones=[]),
    ]
    await insert(engine, "events", rows)

    async def ids(query: str) -> list[int]:
        body = (await client.get(f"/api/events?{query}")).json()
        return [int(uuid.UUID(item["id"])) - 1 for item in body["items"]]

    assert await ids("zone=porch") == [3, 1, 0]
    assert await ids("zone=drive&zone=porch&camera_id=front_door") == [2, 1, 0]
    assert await ids("zone=drive,porch&limit=1") == [3]
    assert await ids("zone=lawn") == []
    first = (await client.get("/api/events?zone=porch&limit=2")).json()
    assert [item["zones"] for item in first["items"]] == [["porch"], ["drive", "porch"]]
    rest = (await client.get(f"/api/events?zone=porch&cursor={first['next_cursor']}")).json()
    assert [int(uuid.UUID(item["id"])) - 1 for item in rest["items"]] == [0]
