"""The dashboard behind API keys, over HTTP: pages redirect to the key form, fragments and
pictures refuse, the form sets the cookie (Secure over HTTPS), "Forget key" clears it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.web.auth import COOKIE, cookie_token
from tests.api.conftest import with_lifespan_state
from tests.web.conftest import MakeConfig, serve, web_app
from tests.web.home import Home, Markup, event_id

PAGES = ("/", "/events", "/cameras", "/charts", "/charts?range=week", "/system")
KEY = "page-key"


@pytest.fixture
async def keyed(engine: AsyncEngine, make_config: MakeConfig) -> AsyncIterator[httpx.AsyncClient]:
    config = make_config(api_key_enabled=True, api_keys=(SecretStr(KEY),))
    async with serve(config) as client:
        yield client


async def test_with_keys_on_pages_ask_for_the_key_and_resources_refuse(
    keyed: httpx.AsyncClient, home: Home
) -> None:
    """Without the key every page redirects to the key form (coming back afterwards), and
    every fragment and picture is a 401."""
    for path in (*PAGES, f"/events/{event_id(home.high)}"):
        response = await keyed.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/ui/key?next=/")
    assert (await keyed.get("/events?risk_level=high")).headers["location"] == (
        "/ui/key?next=/events%3Frisk_level%3Dhigh"
    )
    for path in (
        f"/ui/fragments/events/{event_id(home.high)}",
        f"/ui/thumbnails/{home.person['id']}",
        "/ui/media/front_door/Front%20Door/a.jpg",
    ):
        assert (await keyed.get(path)).status_code == 401, path
    form = await keyed.get("/ui/key?next=/cameras")
    assert form.status_code == 200
    assert 'name="next" value="/cameras"' in form.text
    assert 'type="password"' in form.text
    assert Markup(form.text).problems() == []


async def test_the_key_form_sets_a_cookie_that_opens_the_pages(
    keyed: httpx.AsyncClient, home: Home
) -> None:
    """A wrong key is refused on the form; the right one sets an HttpOnly, SameSite cookie
    (a token, not the key) and returns to the page; "Forget key" clears it."""
    wrong = await keyed.post("/ui/key", data={"api_key": "nope", "next": "/cameras"})
    assert wrong.status_code == 401
    assert "That key is not accepted." in wrong.text
    assert COOKIE not in wrong.headers.get("set-cookie", "")
    right = await keyed.post("/ui/key", data={"api_key": KEY, "next": "//evil.example/"})
    assert right.status_code == 303
    assert right.headers["location"] == "/"
    cookie = right.headers["set-cookie"]
    assert f"{COOKIE}={cookie_token(KEY)}" in cookie
    assert KEY not in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see the HTTPS test
    for path in (*PAGES, f"/ui/thumbnails/{home.person['id']}"):
        assert (await keyed.get(path)).status_code == 200, path
    # the cookie opens the dashboard only, never the JSON API
    assert (await keyed.get("/api/events")).status_code == 401
    for path in ("/ui/key", "/ui/key/forget"):
        other_site = await keyed.post(
            path, data={"api_key": KEY}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert other_site.status_code == 403
        assert "set-cookie" not in other_site.headers
    forget = await keyed.post("/ui/key/forget", headers={"Sec-Fetch-Site": "same-origin"})
    assert forget.status_code == 303
    assert forget.headers["location"] == "/ui/key"
    assert (await keyed.get("/")).status_code == 303


async def test_the_cookie_is_secure_over_https_and_scripts_may_send_the_header(
    engine: AsyncEngine, make_config: MakeConfig, home: Home
) -> None:
    """Over HTTPS (TLS on) the cookie is marked Secure; the API's X-API-Key header also opens
    the pages, for scripts."""
    config = make_config(api_key_enabled=True, api_keys=(SecretStr(KEY),))
    app = web_app(config)
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(with_lifespan_state(app, dict(state or {})))
        async with httpx.AsyncClient(transport=transport, base_url="https://hsi.test") as client:
            response = await client.post("/ui/key", data={"api_key": KEY, "next": "/events"})
            assert "Secure" in response.headers["set-cookie"]
            assert response.headers["location"] == "/events"
            client.cookies.clear()
            assert (await client.get("/system", headers={"X-API-Key": KEY})).status_code == 200
            assert (await client.get("/system", headers={"X-API-Key": "no"})).status_code == 303


async def test_without_keys_the_key_form_steps_aside(client: httpx.AsyncClient) -> None:
    """With keys off there is nothing to enter: the form sends the browser on."""
    response = await client.get("/ui/key?next=/charts")
    assert response.status_code == 303
    assert response.headers["location"] == "/charts"
    assert "Forget key" not in (await client.get("/cameras")).text
