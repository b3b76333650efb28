"""The dashboard's key decisions: the cookie token, where to go after the form, the form body."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from hsi.web.auth import (
    cookie_matches,
    cookie_token,
    cross_site,
    key_form_url,
    parse_form,
    safe_next,
)

KEYS = (SecretStr("alpha-key"), SecretStr("beta-key"))


@pytest.mark.parametrize(
    ("token", "ok"),
    [
        (cookie_token("alpha-key"), True),
        (cookie_token("beta-key"), True),
        (cookie_token("gamma-key"), False),
        ("alpha-key", False),  # the key itself is not a cookie
        ("", False),
        (None, False),
    ],
)
def test_the_cookie_holds_a_token_of_a_configured_key(token: str | None, ok: bool) -> None:
    """The cookie is accepted when it is the token of one of the keys, never the raw key."""
    assert cookie_matches(token, KEYS) is ok


def test_the_token_depends_on_the_key_and_hides_it() -> None:
    """Different keys give different tokens; a token does not contain its key."""
    assert cookie_token("alpha-key") != cookie_token("beta-key")
    assert "alpha" not in cookie_token("alpha-key")
    assert cookie_matches(cookie_token(""), (SecretStr(""),)) is False  # empty keys never match


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("/events?risk_level=high", "/events?risk_level=high"),
        ("/", "/"),
        (None, "/"),
        ("", "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/events\r\nSet-Cookie: x=y", "/"),
        ("events", "/"),
    ],
)
def test_the_form_only_returns_to_this_site(value: str | None, target: str) -> None:
    """After the key form the browser goes back to a path here, never to another site."""
    assert safe_next(value) == target


def test_the_key_form_url_carries_the_page() -> None:
    """A page without a key redirects to the form with the page (and its query) to go back to."""
    assert key_form_url("/events?camera_id=x&risk_level=high") == (
        "/ui/key?next=/events%3Fcamera_id%3Dx%26risk_level%3Dhigh"
    )


def test_the_form_body_is_read_as_url_encoded_fields() -> None:
    """The key form's POST body: first value of each field, blanks kept, + and %xx decoded."""
    fields = parse_form(b"api_key=a+b%26c&next=%2Fevents&api_key=second&empty=")
    assert fields == {"api_key": "a b&c", "next": "/events", "empty": ""}


@pytest.mark.parametrize(
    ("fetch_site", "refused"),
    [
        ("cross-site", True),
        ("Cross-Site", True),
        ("same-origin", False),
        ("same-site", False),
        ("none", False),  # typed into the address bar, a bookmark
        (None, False),  # an older browser or a script
    ],
)
def test_key_posts_from_another_site_are_refused(fetch_site: str | None, refused: bool) -> None:
    """Another site's page cannot post the key form (sign in or out) on a visitor's behalf."""
    assert cross_site(fetch_site) is refused
