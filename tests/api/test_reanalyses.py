"""GET /api/reanalyses and /api/reanalyses/{run}: a run on real streams, projected, reported."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.names import PROJECTED, StreamNames
from streams.reanalysis.runner import adopt
from tests.api.conftest import serve
from tests.conftest import MakeConfig
from tests.projections.support import project_all, stage_for
from tests.streams.test_reanalysis import CAMERA, _seed, stricter_run


async def test_a_run_and_its_changed_events(
    engine: AsyncEngine, make_config: MakeConfig, redis_client: Redis, names: StreamNames
) -> None:
    await _seed(redis_client, names, 10)
    run_id = await stricter_run(redis_client, names)
    streams = [names.stream(CAMERA, kind) for kind in PROJECTED]
    stage = stage_for(redis_client, names, engine)
    await project_all(redis_client, stage, streams)

    async with serve(make_config()) as client:
        runs = (await client.get("/api/reanalyses")).json()["items"]
        assert [(r["id"], r["status"], r["analyzed"]) for r in runs] == [(run_id, "completed", 10)]
        assert runs[0]["cost"]["calls"] == 10
        answer = await client.get(f"/api/reanalyses/{run_id}", params={"limit": 3})
        body = answer.json()
        assert answer.status_code == 200, body
        report = body["report"]
        assert {(m["current"], m["candidate"]): m["events"] for m in report["matrix"]} == {
            ("low", "low"): 5,
            ("low", "high"): 5,
        }
        assert (report["changed"], report["would_alert"], report["would_no_longer_alert"]) == (
            5,
            5,
            0,
        )
        assert report["score_shift"]["median"] == 20.0
        changes = body["changes"]
        seen = [c["event_id"] for c in changes["items"]]
        assert len(seen) == 3
        assert changes["has_more"]
        rest = await client.get(
            f"/api/reanalyses/{run_id}", params={"limit": 3, "cursor": changes["next_cursor"]}
        )
        seen += [c["event_id"] for c in rest.json()["changes"]["items"]]
        assert len(set(seen)) == 5
        first = changes["items"][0]
        assert first["current"]["risk_level"] == "low"
        assert first["candidate"]["risk_level"] == "high"
        down = await client.get(f"/api/reanalyses/{run_id}", params={"crossing": "down"})
        assert down.json()["changes"]["items"] == []
        assert (await client.get("/api/reanalyses/nope")).status_code == 404
        bad = await client.get(f"/api/reanalyses/{run_id}", params={"crossing": "sideways"})
        assert bad.status_code == 400
        assert bad.json()["parameter"] == "crossing"

        await adopt(redis_client, names, [CAMERA], run_id)
        await project_all(redis_client, stage, streams)
        levels = (await client.get("/api/events", params={"risk_level": "high"})).json()
        assert len(levels["items"]) == 5
        adopted = (await client.get("/api/reanalyses")).json()["items"][0]
        assert adopted["adopted"] == 10

        # the event shows its history; the dashboard shows the run
        event = (await client.get(f"/api/events/{first['event_id']}")).json()
        judgements = event["judgements"]
        assert [j["risk_level"] for j in judgements] == ["low", "high"]
        assert judgements[1]["run_id"] == run_id
        assert judgements[1]["supersedes"] == judgements[0]["entry_id"]
        page = await client.get(f"/events/{first['event_id']}")
        assert page.status_code == 200
        assert f'href="/reanalyses/{run_id}"' in page.text
        listing = await client.get("/reanalyses")
        assert listing.status_code == 200
        assert f'<a href="/reanalyses/{run_id}">{run_id}</a>' in listing.text
        report_page = await client.get(f"/reanalyses/{run_id}")
        assert report_page.status_code == 200
        assert 'id="changes-up"' in report_page.text
        assert report_page.text.count('class="change"') == 5
        assert (await client.get("/reanalyses/no-such-run")).status_code == 404


async def test_no_runs_is_an_empty_list(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/reanalyses")).json() == {"items": []}
