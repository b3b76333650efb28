"""hsi.settings.docs: the reference and .env.example follow Settings; checked-in files are fresh."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, NoDecode

from hsi.settings.docs import (
    DOCS_PATH,
    ENV_EXAMPLE_PATH,
    REGENERATE_COMMAND,
    describe_settings,
    render_env_example,
    render_markdown,
    stale_files,
    write_files,
)
from hsi.settings.model import Settings

ROOT = Path(__file__).resolve().parents[2]


class _Mode(StrEnum):
    FAST = "fast"
    SAFE = "safe"


class _Probe(BaseSettings):
    """A small settings model with one of everything the renderer handles."""

    # --- first group ---------------------------------------------------------------------------
    plain: int = Field(3, ge=1, le=9, description="A number.")
    token: SecretStr | None = SecretStr("hunter2-default")
    keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # --- second group --------------------------------------------------------------------------
    mode: _Mode = _Mode.FAST
    level: Literal["low", "high"] = "low"
    names: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["a", "b"])
    url: str = Field(
        "http://h:1",
        validation_alias=AliasChoices("url", "old_url"),
        description="Where it is.",
    )
    folder: Path = Path("data dir")
    code: str = Field("ab", pattern=r"^[a|b]+$")
    ratio: float | None = Field(None, gt=0, lt=1)
    table: dict[str, float] = Field(default_factory=dict)


def _env_lines(text: str) -> dict[str, str]:
    """`# NAME=value` lines of a .env example: NAME → value."""
    lines: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.removeprefix("# ").partition("=")
        if sep and name.isupper() and " " not in name:
            lines[name] = value
    return lines


def test_every_setting_appears_in_both_renderings() -> None:
    """Each Settings field has a Markdown row and a commented .env line."""
    markdown, env = render_markdown(), _env_lines(render_env_example())
    for name in Settings.model_fields:
        assert f"| `{name.upper()}` |" in markdown, name
        assert name.upper() in env, name
    assert "`NEMOTRON_URL`" in markdown
    assert "also NEMOTRON_URL" in render_env_example()


@pytest.mark.parametrize("relative", [DOCS_PATH, ENV_EXAMPLE_PATH])
def test_checked_in_files_are_current(relative: Path) -> None:
    """docs/configuration.md and .env.example equal a fresh rendering of Settings."""
    stale = stale_files(ROOT)
    assert relative not in stale, (
        f"{relative} is out of date with hsi/settings/model.py; "
        f"run `{REGENERATE_COMMAND}` and commit it"
    )


def test_secrets_show_no_default() -> None:
    """Secret fields render as unset, even when the model gives them a default."""
    secrets = [doc for doc in describe_settings() if doc.secret]
    assert {doc.field for doc in secrets} >= {
        "llm_api_key",
        "api_keys",
        "smtp_password",
        "webhook_secret",
    }
    env = _env_lines(render_env_example())
    markdown = render_markdown()
    for doc in secrets:
        assert env[doc.env] == ""
        assert f"| `{doc.env}` | {doc.type} | *unset* |" in markdown
    assert "hunter2-default" not in render_markdown(_Probe)
    assert "hunter2-default" not in render_env_example(_Probe)


def test_rendering_is_deterministic_and_ignores_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rendering twice gives the same text, whatever the environment holds."""
    before = (render_markdown(), render_env_example())
    monkeypatch.setenv("API_PORT", "9999")
    monkeypatch.setenv("LLM_API_KEY", "sk-should-never-show-up-0000")
    after = (render_markdown(), render_env_example())
    assert before == after
    assert "9999" not in after[0]
    assert "sk-should-never" not in after[1]


def test_groups_follow_the_source_comments() -> None:
    """Sections come in the order of the `# --- group ---` comments; empty ones are left out."""
    markdown = render_markdown()
    headings = [line[3:] for line in markdown.splitlines() if line.startswith("## ")]
    assert headings[:5] == ["Sections", "Application", "PostgreSQL", "Redis", "API"]
    assert headings[-1] == "Logging and telemetry"
    assert "Validators" not in headings
    assert "Derived values" not in headings
    groups = {doc.field: doc.group for doc in describe_settings(_Probe)}
    assert groups == {
        **dict.fromkeys(("plain", "token", "keys"), "first group"),
        **dict.fromkeys(
            ("mode", "level", "names", "url", "folder", "code", "ratio", "table"), "second group"
        ),
    }


@pytest.mark.parametrize(
    "row",
    [
        "| `PLAIN` | int | `3` | >= 1, <= 9 | A number. |",
        "| `TOKEN` | str | *unset* |  | **Secret**: masked by `hsi config show` and in logs. |",
        "| `KEYS` | list (comma-separated) | *unset* |  | **Secret**: masked by",
        "| `MODE` | fast \\| safe | `fast` |  |  |",
        "| `LEVEL` | low \\| high | `low` |  |  |",
        "| `NAMES` | list (comma-separated) | `a,b` |  |  |",
        "| `URL` | str | `http://h:1` |  | Where it is. Also read from `OLD_URL`. |",
        "| `FOLDER` | path | `data dir` |  |  |",
        "| `CODE` | str | `ab` | pattern `^[a\\|b]+$` |  |",
        "| `RATIO` | float | *unset* | > 0, < 1 |  |",
        "| `TABLE` | JSON object | `{}` |  |  |",
    ],
)
def test_markdown_rows(row: str) -> None:
    """Types, defaults, constraints, aliases and secrets read as documented."""
    assert row in render_markdown(_Probe)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PLAIN", "3"),
        ("TOKEN", ""),
        ("KEYS", ""),
        ("MODE", "fast"),
        ("NAMES", "a,b"),
        ("URL", "http://h:1"),
        ("FOLDER", '"data dir"'),
        ("RATIO", ""),
        ("TABLE", "{}"),
    ],
)
def test_env_example_lines(name: str, value: str) -> None:
    """Each variable is a commented line with its default, quoted where .env needs it."""
    assert _env_lines(render_env_example(_Probe))[name] == value


def test_env_example_describes_each_line() -> None:
    """The line above each variable holds its description and facts in one comment line."""
    lines = render_env_example(_Probe).splitlines()
    above = {lines[i + 1].removeprefix("# ").split("=")[0]: lines[i] for i in range(len(lines) - 1)}
    assert above["PLAIN"] == "# A number. [int; >= 1, <= 9]"
    assert above["TOKEN"] == "# [str; secret]"
    assert above["URL"] == "# Where it is. [str; also OLD_URL]"


def test_write_then_check(tmp_path: Path) -> None:
    """write_files creates what stale_files reports, and a second write changes nothing."""
    assert stale_files(tmp_path) == [DOCS_PATH, ENV_EXAMPLE_PATH]
    assert write_files(tmp_path) == [DOCS_PATH, ENV_EXAMPLE_PATH]
    assert stale_files(tmp_path) == []
    assert write_files(tmp_path) == []
    (tmp_path / ENV_EXAMPLE_PATH).write_text("# edited by hand\n")
    assert stale_files(tmp_path) == [ENV_EXAMPLE_PATH]
