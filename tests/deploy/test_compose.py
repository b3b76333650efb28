"""compose.yml without a Docker engine: the Compose schema, real `hsi` commands, real settings."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from jsonschema import validators

from hsi.cli import main
from hsi.infra.embedded.postgres import postgres_bin as _postgres_bin
from hsi.settings.model import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yml"
SCHEMA = Path(__file__).parent / "compose-spec" / "compose-spec.json"
OPERATIONS = ROOT / "docs" / "operations.md"
HSI_IMAGE = "hsi:local"
SETTINGS = {name.upper() for name in Settings.model_fields}
# `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}`…
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _interpolated(value: Any) -> Any:
    """`value` with every compose variable replaced by its default (empty without one)."""
    if isinstance(value, str):
        return VARIABLE.sub(lambda m: m["arg"] if m["op"] in (":-", "-") else "", value)
    if isinstance(value, list):
        return [_interpolated(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolated(v) for k, v in value.items()}
    return value


def _hsi_services(compose: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in compose["services"].items():
        if service.get("image") == HSI_IMAGE:
            yield name, service


def _resolve(args: list[str]) -> tuple[list[str], click.Command, list[str]]:
    """The command path, the leaf command and its own arguments of `hsi <args>`."""
    command: click.Command = main
    path, rest = ["hsi"], list(args)
    while isinstance(command, click.Group):
        assert rest, f"`{' '.join(path)}` needs a subcommand"
        word = rest.pop(0)
        found = command.get_command(click.Context(command), word)
        assert found is not None, f"`{' '.join(path)} {word}` is not an hsi command"
        command, path = found, [*path, word]
    return path, command, rest


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    """compose.yml is valid against the Compose Specification's JSON schema (vendored)."""
    schema = json.loads(SCHEMA.read_text())
    validator = validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(_interpolated(compose)), key=lambda e: e.json_path)
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)


def test_every_hsi_service_runs_a_real_hsi_command(compose: dict[str, Any]) -> None:
    """Each HSI service's command is an existing `hsi` subcommand with valid options (the image's
    entrypoint is `hsi`), and its `--help` works."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["hsi"]' in dockerfile
    services = dict(_hsi_services(compose))
    assert services
    for name, service in services.items():
        args = [str(a) for a in service["command"]]
        path, command, rest = _resolve(args)
        try:
            command.make_context(" ".join(path), list(rest))
        except click.ClickException as exc:
            pytest.fail(f"service {name}: `hsi {' '.join(args)}`: {exc.format_message()}")
        shown = CliRunner().invoke(main, [*path[1:], "--help"])
        assert shown.exit_code == 0, f"service {name}: {shown.output}"


def test_hsi_services_set_only_real_settings(compose: dict[str, Any]) -> None:
    """Every variable the HSI services set is a setting, and together they are valid settings."""
    for name, service in _hsi_services(compose):
        environment = _interpolated(service.get("environment") or {})
        unknown = sorted(set(environment) - SETTINGS)
        assert not unknown, f"service {name} sets {unknown}: not HSI settings"
        values = {key.lower(): value for key, value in environment.items() if value != ""}
        Settings(_env_file=None, **values)  # raises on a bad value
        env_files = [f if isinstance(f, str) else f["path"] for f in service["env_file"]]
        assert env_files == [".env"], f"service {name} must read .env"


def test_compose_variables_are_settings_or_documented() -> None:
    """A variable compose.yml interpolates is an HSI setting or explained in
    docs/operations.md."""
    guide = OPERATIONS.read_text()
    names = {m["name"] for m in VARIABLE.finditer(COMPOSE.read_text())}
    undocumented = sorted(n for n in names - SETTINGS if f"`{n}`" not in guide)
    assert not undocumented, f"explain {undocumented} in docs/operations.md"


def test_every_stage_has_a_worker(compose: dict[str, Any]) -> None:
    """The watcher, each stage and the API run as services; detect scales with replicas, batch
    never does (a camera's open batch has one owner)."""
    commands = {name: [str(a) for a in s["command"]] for name, s in _hsi_services(compose)}
    assert commands["watcher"] == ["watch"]
    assert commands["api"][0] == "api"
    assert commands["migrate"] == ["migrate"]
    stages = {
        args[args.index("--stage") + 1]: name
        for name, args in commands.items()
        if args[0] == "worker"
    }
    assert set(stages) == {"detect", "batch", "analyze", "project"}
    services = compose["services"]
    assert "replicas" in services[stages["detect"]]["deploy"]
    assert "replicas" not in (services[stages["batch"]].get("deploy") or {})
    assert services["ftp"]["command"] == ["ftp"]
    assert services["ftp"]["profiles"] == ["ftp"]


def test_state_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    """Redis (append-only), PostgreSQL, the camera root and the data folder are named volumes."""
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"service {name} uses undeclared volume {source}"
    mounts = {
        name: {v.split(":")[1] for v in service.get("volumes", [])}
        for name, service in compose["services"].items()
    }
    assert "/data" in mounts["redis"]
    assert "/var/lib/postgresql" in mounts["postgres"]
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    for name, _ in _hsi_services(compose):
        assert {"/cameras", "/data"} <= mounts[name], name


def test_servers_and_listeners_have_health_checks(compose: dict[str, Any]) -> None:
    """Redis, PostgreSQL and every service with a published port have a health check, and HSI
    starts only after healthy servers and completed migrations."""
    services = compose["services"]
    for name in ("redis", "postgres", "api", "ftp"):
        assert services[name]["healthcheck"]["test"], name
    assert any("/health" in part for part in services["api"]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name, service in _hsi_services(compose):
        if name in ("migrate", "ftp"):
            continue
        depends = service["depends_on"]
        assert depends["redis"] == {"condition": "service_healthy"}, name
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name


def test_images_are_pinned_to_a_major_version(compose: dict[str, Any]) -> None:
    """Images from a registry name a version (at least the major), never `latest`."""
    for name, service in compose["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        tag = image.rpartition(":")[2] if ":" in image else ""
        assert re.match(r"^v?\d+", tag), f"service {name}: pin {image} to a major version"


def test_postgres_is_the_embedded_major_version(compose: dict[str, Any]) -> None:
    """compose.yml's PostgreSQL has the major version of the embedded server of `hsi up`, so a
    database moves between them with pg_dump/pg_restore of the same major."""
    shown = subprocess.run(
        [str(_postgres_bin() / "postgres"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    embedded = re.search(r"PostgreSQL\)?\s+(\d+)", shown)
    assert embedded, shown
    image = compose["services"]["postgres"]["image"]
    assert image.split(":")[1].split(".")[0] == embedded[1], (image, shown)
