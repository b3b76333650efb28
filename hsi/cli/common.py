"""What every command needs: the settings, an event loop, and the errors that end a command with
a one-line message instead of a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from hsi.settings.model import Settings, SettingsError, get_settings

T = TypeVar("T")


def cli_settings() -> Settings:
    """The settings; a `ClickException` listing every bad variable when they cannot be used."""
    try:
        return get_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def embedded_error() -> type[Exception]:
    from hsi.infra.embedded import EmbeddedServerError

    return EmbeddedServerError


def startup_errors() -> tuple[type[Exception], ...]:
    """The errors a server command reports as a message: bad settings, unreachable services."""
    from hsi.app.runner import STARTUP_ERRORS
    from streams.alerts import AlertError
    from streams.watch.config import WatchError

    return (*STARTUP_ERRORS, WatchError, AlertError)
