"""GET /api/cameras, /api/cameras/{id}, /api/detections and /api/dead-letters."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.api.queries.cameras import clock_check
from hsi.api.responses import iso
from tests.api.rows import BASE, add_camera, detection_row, event_row, insert, media_row


async def test_cameras_have_counts_activity_and_latest_links(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Each camera reports its file and event counts, last activity and latest file/event."""
    await add_camera(engine, "front_door", "Front Door")
    await add_camera(engine, "garage", "Garage")
    files = [
        media_row("front_door", f"{i}-0", f"Front Door/snap/{i}.jpg", BASE + timedelta(minutes=i))
        for i in range(3)
    ]
    await insert(engine, "media_files", files)
    events = [
        event_row(1, "front_door", BASE, risk_level="high", risk_score=70),
        event_row(2, "front_door", BASE + timedelta(hours=1), risk_level="low"),
    ]
    await insert(engine, "events", events)

    body = (await client.get("/api/cameras")).json()
    by_id = {c["id"]: c for c in body["items"]}
    assert list(by_id) == ["front_door", "garage"]
    front = by_id["front_door"]
    assert (front["file_count"], front["event_count"]) == (3, 2)
    assert front["latest_file"]["path"] == "Front Door/snap/2.jpg"
    assert front["latest_file"]["media_url"] == "/api/media/front_door/Front%20Door/snap/2.jpg"
    assert front["latest_event"]["url"] == f"/api/events/{events[1]['id']}"
    assert front["last_activity"] == iso(BASE + timedelta(hours=1, seconds=60))
    garage = by_id["garage"]
    assert (garage["file_count"], garage["event_count"]) == (0, 0)
    assert garage["latest_file"] is None
    assert garage["latest_event"] is None

    detail = await client.get("/api/cameras/front_door")
    assert detail.status_code == 200
    assert detail.json() == front
    for missing in ("nobody", "Not An Id"):
        response = await client.get(f"/api/cameras/{missing}")
        assert response.status_code == 404
        assert "error" in response.json()


async def test_a_camera_whose_latest_upload_was_taken_after_it_arrived_has_a_fast_clock(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """The clock check reads each camera's most recently arrived file: taken a second before it
    arrived is fine; "taken" an hour after it arrived is a clock running fast (flagged, and on
    the dashboard); taken a day before it arrived is a late upload (shown, not flagged)."""
    for camera in ("live", "fast", "late"):
        await add_camera(engine, camera, camera.title())
    arrived = BASE + timedelta(hours=2)
    taken = {
        "live": arrived - timedelta(seconds=1),
        "fast": arrived + timedelta(hours=1),
        "late": arrived - timedelta(days=1),
    }
    rows = [
        media_row(camera, "1-0", f"{camera}/old.jpg", BASE, observed_at=BASE)  # arrived earlier
        for camera in taken
    ] + [
        media_row(camera, "2-0", f"{camera}/new.jpg", at, observed_at=arrived)
        for camera, at in taken.items()
    ]
    await insert(engine, "media_files", rows)

    by_id = {c["id"]: c for c in (await client.get("/api/cameras")).json()["items"]}
    clocks = {camera: by_id[camera]["clock"] for camera in taken}
    at = iso(arrived)
    assert clocks["live"] == {
        "skewed": False, "clock": None, "offset_seconds": 1.0, "checked_at": at
    }  # fmt: skip
    assert clocks["fast"] == {
        "skewed": True, "clock": "fast", "offset_seconds": -3600.0, "checked_at": at
    }  # fmt: skip
    assert clocks["late"] == {
        "skewed": False, "clock": None, "offset_seconds": 86400.0, "checked_at": at
    }  # fmt: skip
    assert (await client.get("/api/cameras/fast")).json()["clock"]["skewed"] is True

    page = (await client.get("/cameras")).text
    assert page.count('class="clock-skewed"') == 1
    assert "taken 60 min after it arrived" in page


def _arrival(lag: float, arrived_minutes: float) -> tuple[datetime, datetime]:
    arrived = BASE + timedelta(minutes=arrived_minutes)
    return arrived - timedelta(seconds=lag), arrived


@pytest.mark.parametrize(
    ("latest", "previous", "clock"),
    [
        (_arrival(3600, 10), _arrival(3610, 5), "slow"),  # an hour behind, twice, 5 min apart
        (_arrival(3600, 10), _arrival(3600, 9.99), None),  # one burst of a backlog
        (_arrival(3600, 10), _arrival(7200, 5), None),  # a backlog catching up
        (_arrival(3600, 10), _arrival(2, 5), None),  # one late upload after a live one
        (_arrival(2, 10), _arrival(3600, 5), None),  # live again
        (_arrival(-3600, 10), _arrival(2, 5), "fast"),
        (_arrival(3600, 10), (None, None), None),  # the camera's first file
    ],
)
def test_the_clock_check_tells_a_slow_clock_from_a_backlog(
    latest: tuple[datetime, datetime], previous: Any, clock: str | None
) -> None:
    found = clock_check(latest, previous, 300.0)
    assert found is not None
    assert found["clock"] == clock
    assert found["skewed"] is (clock is not None)


@pytest.fixture
async def detections(engine: AsyncEngine) -> list[dict[str, Any]]:
    """250 detections of 125 files, two per file, two files per timestamp."""
    files = [
        media_row("front_door", f"{i}-0", f"Front Door/{i}.jpg", BASE - timedelta(seconds=i // 2))
        for i in range(125)
    ]
    await insert(engine, "media_files", files)
    rows = []
    for n, file in enumerate(files):
        rows.append(detection_row(file, f"d{n}-0", 0, "person", (1, 1, 5, 5), (64, 48), 0.9))
        rows.append(
            detection_row(file, f"d{n}-0", 1, "car", (2, 2, 5, 5), (64, 48), 0.5 + n / 1000)
        )
    await insert(engine, "detections", rows)
    return rows


async def _walk(client: httpx.AsyncClient, path: str, params: dict[str, Any]) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        body = (await client.get(path, params=query)).json()
        items.extend(body["items"])
        if not body["has_more"]:
            return items
        cursor = body["next_cursor"]


async def test_detections_walk_in_order_with_filters(
    client: httpx.AsyncClient, detections: list[dict[str, Any]]
) -> None:
    """Detections page newest first without gaps; label and min_confidence filter."""
    ordered = sorted(detections, key=lambda r: (r["captured_at"], r["id"]), reverse=True)
    items = await _walk(client, "/api/detections", {"limit": 7})
    assert [i["id"] for i in items] == [str(r["id"]) for r in ordered]

    cars = await _walk(client, "/api/detections", {"label": "car", "min_confidence": "0.6"})
    # 0.6 is stored as a `real`; the filter compares in `real`, so 0.5 + 100/1000 is included
    expected = [r for r in ordered if r["label"] == "car" and r["confidence"] >= 0.6 - 1e-9]
    assert [i["id"] for i in cars] == [str(r["id"]) for r in expected]
    assert cars[0]["thumbnail_url"].endswith("/thumbnail")

    late = await _walk(
        client, "/api/detections", {"since": iso(BASE - timedelta(seconds=10)), "limit": 100}
    )
    assert {i["captured_at"] for i in late} <= {iso(BASE - timedelta(seconds=s)) for s in range(11)}
    assert len(late) == 11 * 2 * 2


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("min_confidence=2", "min_confidence"),
        ("label=a%25b", "label"),
        ("cursor=abc", "cursor"),
        ("limit=1000", "limit"),
        ("since=soon", "since"),
    ],
)
async def test_detections_bad_parameters(
    client: httpx.AsyncClient, query: str, parameter: str
) -> None:
    """Bad detection filters are 400s naming the parameter."""
    response = await client.get(f"/api/detections?{query}")
    assert response.status_code == 400
    assert response.json()["parameter"] == parameter


async def test_dead_letters_page_and_filter(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    """Dead letters list newest first, filter by camera and page with a cursor."""
    rows = [
        {
            "camera_id": cam,
            "dead_entry_id": f"{i}-0",
            "source_stream": f"hsi:{{{cam}}}:files",
            "entry_id": f"{i}-5",
            "group_name": "detect",
            "deliveries": 5,
            "last_error": "boom",
            "original_type": "file.observed",
            "dead_at": BASE - timedelta(seconds=i // 2),
        }
        for i in range(9)
        for cam in ("front_door", "garage")
    ]
    await insert(engine, "dead_letters", rows)
    items = await _walk(client, "/api/dead-letters", {"limit": 4})
    assert len(items) == 18
    keys = [(i["dead_at"], i["camera_id"], i["dead_entry_id"]) for i in items]
    assert keys == sorted(keys, reverse=True)
    assert len(set(keys)) == 18
    garage = await _walk(client, "/api/dead-letters", {"camera_id": "garage", "limit": 5})
    assert len(garage) == 9
    assert {i["camera_id"] for i in garage} == {"garage"}
    assert garage[0]["group"] == "detect"
    assert garage[0]["deliveries"] == 5
    bad = await client.get("/api/dead-letters", params={"cursor": "zzz"})
    assert bad.status_code == 400
    assert bad.json()["parameter"] == "cursor"
