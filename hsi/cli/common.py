"""What every command needs: the settings, an event loop, and the errors that end a command with
a one-line message instead of a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from hsi.settings.model import Settings, SettingsError, get_settings

T = TypeVar("T")


ErrorTypes = type[Exception] | tuple[type[Exception], ...]


@contextmanager
def click_errors(*errors: ErrorTypes) -> Iterator[None]:
    """An error of these types (each a type or a tuple of types) ends the command with its message
    (a `ClickException`) instead of a traceback."""
    caught: list[type[Exception]] = []
    for error in errors:
        caught.extend(error if isinstance(error, tuple) else (error,))
    try:
        yield
    except tuple(caught) as exc:
        raise click.ClickException(str(exc)) from None


def cli_settings() -> Settings:
    """The settings; a `ClickException` listing every bad variable when they cannot be used."""
    with click_errors(SettingsError):
        return get_settings()


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
