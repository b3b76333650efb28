"""Which API keys HSI accepts, when it requires one, and the key it generates for itself."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from hsi.api.keys import EXAMPLE_KEYS, MIN_KEY_LENGTH, is_loopback, key_problem, keys_required
from hsi.app.keys import api_key_path, with_api_keys
from hsi.cli import main
from hsi.settings.model import SettingsError, load_settings

STRONG = "q7Vn2kXc9LwRt4ZpHs8Jd3FbYm6GaUe1"
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        (STRONG, True),
        ("a", False),
        ("change-me", False),
        ("x" * 40, False),  # long but not random
        (STRONG[:-1], False),  # 31 characters
        ("replace-me-with-a-long-random-key", False),
    ],
)
def test_key_rules(key: str, ok: bool) -> None:
    assert (key_problem(key) is None) is ok


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("hsi.example", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert keys_required(None, host) is not loopback
    assert keys_required(True, host)
    assert not keys_required(False, host)


def test_documented_example_keys_are_refused() -> None:
    """Every key the documentation shows in API_KEYS=… or X-API-Key: … is refused at start."""
    import re

    shown: set[str] = set()
    for page in [*DOCS.rglob("*.md"), DOCS.parent / "README.md", DOCS.parent / ".env.example"]:
        text = page.read_text(encoding="utf-8")
        shown |= set(re.findall(r"API_KEYS=([A-Za-z0-9_-]+)", text))
        shown |= set(re.findall(r"X-API-Key: ([A-Za-z0-9_-]+)", text))
    shown -= {"KEY"}  # shell variables in examples: `-H "X-API-Key: $KEY"`
    assert shown, "the documentation shows no example key"
    assert shown <= EXAMPLE_KEYS, shown - EXAMPLE_KEYS


def test_short_and_example_keys_stop_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", f"{STRONG},change-me")
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert "key 2" in message
    assert "example" in message
    assert "change-me" not in message
    monkeypatch.setenv("API_KEYS", "short-key")
    with pytest.raises(SettingsError, match=f"at least {MIN_KEY_LENGTH}"):
        load_settings()


def test_loopback_needs_no_key(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    choice = with_api_keys(settings, "127.0.0.1")
    assert choice.settings.api_key_enabled is False
    assert not api_key_path(settings).exists()


def test_a_public_address_gets_a_generated_key(tmp_path: Path) -> None:
    """Beyond loopback without API_KEYS: a strong key, stored 0600, the same at every start."""
    settings = load_settings(data_dir=tmp_path)
    first = with_api_keys(settings, "0.0.0.0")
    assert first.created
    assert first.settings.api_key_enabled
    (key,) = first.settings.api_keys
    assert key_problem(key.get_secret_value()) is None
    path = api_key_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = with_api_keys(settings, "0.0.0.0")
    assert not again.created
    assert again.settings.api_keys[0].get_secret_value() == key.get_secret_value()
    printed = CliRunner().invoke(main, ["api-key"], env={"DATA_DIR": str(tmp_path)})
    assert printed.exit_code == 0, printed.output
    assert printed.output.strip() == key.get_secret_value()


def test_configured_keys_or_an_explicit_choice_win(tmp_path: Path) -> None:
    configured = load_settings(data_dir=tmp_path, api_keys=STRONG)
    choice = with_api_keys(configured, "0.0.0.0")
    assert choice.settings.api_key_enabled
    assert choice.generated is None
    opened = with_api_keys(load_settings(data_dir=tmp_path, api_key_enabled=False), "0.0.0.0")
    assert opened.settings.api_key_enabled is False
    forced = with_api_keys(load_settings(data_dir=tmp_path, api_key_enabled=True), "127.0.0.1")
    assert forced.settings.api_key_enabled
    assert forced.created
    assert not list(tmp_path.glob(".api-key.*"))  # no temporary file left behind


def test_a_key_file_others_can_read_is_tightened(tmp_path: Path) -> None:
    path = api_key_path(load_settings(data_dir=tmp_path))
    path.write_text(STRONG + "\n")
    path.chmod(0o644)
    choice = with_api_keys(load_settings(data_dir=tmp_path), "0.0.0.0")
    assert choice.settings.api_keys[0].get_secret_value() == STRONG
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_new_key_is_printed_not_stored(tmp_path: Path) -> None:
    printed = CliRunner().invoke(main, ["api-key", "--new"], env={"DATA_DIR": str(tmp_path)})
    assert printed.exit_code == 0
    assert key_problem(printed.output.strip()) is None
    assert not api_key_path(load_settings(data_dir=tmp_path)).exists()
