"""GET /api/events?q=…: full-text search, ranked, with every filter and its own cursor."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.api.cursor import Cursor, encode_cursor, rank_key
from hsi.api.queries.search import MAX_SEARCH_LENGTH, EventSearch, search_text
from hsi.api.responses import BadParameter, iso
from tests.api.rows import BASE, add_camera, event_row, insert, insert_many, many_events
from tests.conftest import MakeConfig

CAMERAS = ("front_door", "garage", "back_yard")
SINCE, UNTIL = BASE - timedelta(minutes=150), BASE - timedelta(minutes=9)
Row = dict[str, Any]


def _number(item: dict[str, Any]) -> int:
    return int(uuid.UUID(item["id"])) - 1


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
        cursor = body["next_cursor"]
    raise AssertionError("the walk did not end")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("person", "person"),
        ("  person \t at  the\ndoor ", "person at the door"),
        ("'", "'"),
        ('"front door" -car or dog', '"front door" -car or dog'),
        ("x" * MAX_SEARCH_LENGTH, "x" * MAX_SEARCH_LENGTH),
    ],
)
def test_search_text_collapses_whitespace(value: str | None, expected: str | None) -> None:
    """The query text keeps its words and operators, whitespace collapsed."""
    assert search_text(value) == expected


@pytest.mark.parametrize("value", ["", "   ", "x" * (MAX_SEARCH_LENGTH + 1), "a\x00b", "\ud800"])
def test_search_text_refuses_empty_long_and_control_text(value: str) -> None:
    """Empty, too long, NUL or unencodable text is a 400 naming q."""
    with pytest.raises(BadParameter) as caught:
        search_text(value)
    assert caught.value.parameter == "q"


def test_each_search_has_its_own_cursor_kind() -> None:
    """The cursor kind depends on the text and the language, and is never the listing's."""
    kinds = {
        EventSearch("person", "english").cursor_kind,
        EventSearch("person door", "english").cursor_kind,
        EventSearch("person", "german").cursor_kind,
        "events",
    }
    assert len(kinds) == 4
    assert EventSearch("dog", "english").cursor_kind == EventSearch("dog", "english").cursor_kind


@pytest.fixture
async def scene(engine: AsyncEngine) -> None:
    """Events that mention a person in different places, and some that do not."""
    await add_camera(engine, "front_door", "Front door")
    await add_camera(engine, "garage", "Garage")
    rows = [
        event_row(0, "front_door", BASE, summary="A person at the door", object_types=["person"]),
        event_row(
            1,
            "front_door",
            BASE + timedelta(minutes=1),
            summary="A car drives past",
            object_types=["car", "person"],
        ),
        event_row(
            2,
            "front_door",
            BASE + timedelta(minutes=2),
            summary="A dog on the lawn",
            object_types=["dog"],
        ),
        event_row(
            3,
            "front_door",
            BASE + timedelta(minutes=3),
            summary="Quiet street",
            object_types=["car"],
            reasoning="Probably a person behind the hedge",
        ),
        event_row(4, "garage", BASE + timedelta(minutes=4), summary="A cat", object_types=["cat"]),
        event_row(
            5,
            "front_door",
            BASE + timedelta(minutes=5),
            summary="Leaves blowing",
            object_types=["bicycle"],
            zones=["front_porch"],
        ),
    ]
    for row in rows:  # one INSERT takes the first row's columns
        row.setdefault("reasoning", None)
        row.setdefault("zones", [])
    await insert(engine, "events", rows)


async def test_person_events_rank_by_where_the_word_is(
    client: httpx.AsyncClient, scene: None
) -> None:
    """A person in the summary ranks above one only in the object types, which ranks above
    one only in the reasoning; events without a person are not listed; each item has a rank."""
    body = (await client.get("/api/events", params={"q": "person"})).json()
    assert [_number(i) for i in body["items"]] == [0, 1, 3]
    ranks = [i["rank"] for i in body["items"]]
    assert ranks == sorted(ranks, reverse=True)
    assert ranks[0] > ranks[1] > ranks[2] > 0
    # English stemming: "persons" finds them too
    plural = (await client.get("/api/events", params={"q": "persons"})).json()
    assert [_number(i) for i in plural["items"]] == [0, 1, 3]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("person door", [0]),
        ('"person at the door"', [0]),
        ("person -car", [0]),
        ("dog or cat", [4, 2]),
        ("front porch", [5]),  # a zone's words
        ("front_porch", [5]),
        ("garage", [4]),  # the camera's name
        ("Front door", [5, 3, 2, 1, 0]),  # the camera's name
    ],
)
async def test_web_search_syntax_and_camera_names(
    client: httpx.AsyncClient, scene: None, q: str, expected: list[int]
) -> None:
    """Words, phrases, minus and or work; zone names and camera names match."""
    body = (await client.get("/api/events", params={"q": q})).json()
    assert sorted(_number(i) for i in body["items"]) == sorted(expected)


@pytest.fixture
async def dogs(engine: AsyncEngine) -> list[Row]:
    """600 events; one in five says "dog" in its summary, some have zones."""
    rows = many_events(600, CAMERAS)
    for n, row in enumerate(rows):
        if n % 5 == 0:
            row["summary"] = f"A dog near the house ({n})"
        row["zones"] = ["porch"] if n % 4 == 0 else []
    await insert_many(engine, "events", rows)
    return rows


def _mentions_dog(row: Row) -> bool:
    return "dog" in row["object_types"] or "dog" in row["summary"]


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        ({}, lambda r: True),
        ({"camera_id": "garage"}, lambda r: r["camera_id"] == "garage"),
        ({"risk_level": "high,critical"}, lambda r: r["risk_level"] in ("high", "critical")),
        ({"min_score": "60"}, lambda r: (r["risk_score"] or -1) >= 60),
        ({"object_type": "cat"}, lambda r: "cat" in r["object_types"]),
        ({"zone": "porch"}, lambda r: "porch" in r["zones"]),
        (
            {"since": iso(SINCE), "until": iso(UNTIL)},
            lambda r: SINCE <= r["window_start"] < UNTIL,
        ),
        ({"analysis_status": "pending"}, lambda r: r["analysis_status"] == "pending"),
    ],
)  # fmt: skip
async def test_every_filter_combines_with_q_and_pages_in_rank_order(
    client: httpx.AsyncClient,
    dogs: list[Row],
    params: dict[str, Any],
    keep: Callable[[Row], bool],
) -> None:
    """Each filter with q, walked 7 at a time, yields each matching event once, in
    (rank DESC, window_start DESC, id DESC) order, the summary matches first."""
    items = await _walk(client, {**params, "q": "dog", "limit": 7})
    expected = {str(r["id"]) for r in dogs if keep(r) and _mentions_dog(r)}
    assert expected
    ids = [i["id"] for i in items]
    assert len(ids) == len(set(ids))
    assert set(ids) == expected
    keys = [(i["rank"], i["window_start"], i["id"]) for i in items]
    assert keys == sorted(keys, reverse=True)
    by_id = {str(r["id"]): r for r in dogs}
    in_summary = ["dog" in by_id[i]["summary"] for i in ids]
    assert in_summary == sorted(in_summary, reverse=True)


async def test_a_cursor_serves_only_its_own_search(
    client: httpx.AsyncClient, dogs: list[Row]
) -> None:
    """A search's cursor is refused by another q and by the plain listing, and a listing's by a
    search: 400 naming cursor."""
    first = (await client.get("/api/events", params={"q": "dog", "limit": 5})).json()
    token = first["next_cursor"]
    listing = (await client.get("/api/events", params={"limit": 5})).json()["next_cursor"]
    forged = encode_cursor(Cursor(EventSearch("dog", "english").cursor_kind, BASE, ("nan", "x")))
    for params in (
        {"q": "cat", "cursor": token},
        {"cursor": token},
        {"q": "dog", "cursor": listing},
        {"q": "dog", "cursor": forged},
    ):
        response = await client.get("/api/events", params=params)
        assert response.status_code == 400, params
        assert response.json()["parameter"] == "cursor"
    same = await client.get("/api/events", params={"q": " dog ", "cursor": token})
    assert same.status_code == 200


def test_rank_key_reads_only_finite_ranks_and_uuids() -> None:
    """A search cursor's key is a finite, non-negative rank and a UUID."""
    good = str(uuid.uuid4())
    assert rank_key(Cursor("k", BASE, ("0.6079", good))) == (0.6079, uuid.UUID(good))
    for key in (("nan", good), ("inf", good), ("-1", good), ("x", good), ("0.5", "x"), (good,)):
        assert rank_key(Cursor("k", BASE, key)) is None


HOSTILE = [
    "'",
    "\\",
    "&|!:*()",
    "' OR 1=1 --",
    "'); DROP TABLE events; --",
    '"',
    '"""',
    "-",
    "- - -",
    "or",
    "the",
    "!person",
    "person:*",
    "<->",
    "%",
    "%(q)s",
    "{config}",
    "a\\'b",
    "日本語 カメラ",
    "😀",
    "x" * MAX_SEARCH_LENGTH,
    "%ED%A0%80",  # sent raw: malformed UTF-8, which arrives as U+FFFD
]


async def test_hostile_search_text_is_a_200_or_a_clear_400(
    client: httpx.AsyncClient, scene: None
) -> None:
    """Quotes, backslashes, tsquery operators, stop words and format markers are searched for
    (200); empty, too long, NUL and control characters are a 400 naming q; never a 500."""
    for q in HOSTILE:
        if q == "%ED%A0%80":
            response = await client.get(f"/api/events?q={q}")
        else:
            response = await client.get("/api/events", params={"q": q})
        assert response.status_code == 200, (q, response.text)
        assert isinstance(response.json()["items"], list)
    for raw in ("q=", "q=%20%20", "q=" + "x" * (MAX_SEARCH_LENGTH + 1), "q=a%00b", "q=%1b"):
        response = await client.get(f"/api/events?{raw}")
        assert response.status_code == 400, (raw, response.text)
        assert response.json()["parameter"] == "q"
    twice = await client.get("/api/events?q=a&q=b")
    assert twice.status_code == 400


async def test_another_language_stems_in_that_language(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    """SEARCH_LANGUAGE=german finds "Personen" in a German summary (no index: the document is
    computed per event), and ranks as the index would."""
    from tests.api.conftest import serve

    rows = [
        event_row(0, "garage", BASE, summary="Eine Person steht an der Tür", object_types=["car"]),
        event_row(1, "garage", BASE + timedelta(minutes=1), summary="Ein Auto", object_types=[]),
    ]
    await insert(engine, "events", rows)
    async with serve(make_config(search_language="german")) as http:
        body = (await http.get("/api/events", params={"q": "Personen"})).json()
        assert [_number(i) for i in body["items"]] == [0]
    async with serve(make_config()) as http:  # english stems "Personen" to "personen"
        body = (await http.get("/api/events", params={"q": "Personen"})).json()
        assert body["items"] == []


async def test_an_unknown_search_language_is_a_clear_error(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    """A SEARCH_LANGUAGE PostgreSQL does not know fails the search with a message naming the
    setting and the fix, not a database-unavailable 503."""
    from tests.api.conftest import serve

    async with serve(make_config(search_language="klingon")) as http:
        response = await http.get("/api/events", params={"q": "person"})
        assert response.status_code == 500
        error = response.json()["error"]
        assert "SEARCH_LANGUAGE 'klingon'" in error
        assert "set SEARCH_LANGUAGE" in error
        plain = await http.get("/api/events")  # the listing does not need the language
        assert plain.status_code == 200
