"""Secrets HSI generates for itself, kept in files only their owner can read.

`read_or_create()` returns the secret in a file, or creates the file with a new one: written to
a temporary file that is mode 0600 from its creation, then renamed into place, so the secret is
never readable by others, not even for an instant, and a crash leaves either no file or a whole
one. A file that others can read is tightened to 0600 and said so in a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from streams.logs import log_event

log = logging.getLogger(__name__)

PRIVATE = 0o600


def read_or_create(path: Path, generate: Callable[[], str]) -> tuple[str, bool]:
    """(the secret, whether it was created now). Raises `OSError` when the file can be neither
    read nor written, and `ValueError` when it is empty."""
    try:
        return _read(path), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = generate()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(secret + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)  # never replaces a file another process made meanwhile
        except FileExistsError:
            return _read(path), False
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return secret, True


def _read(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(PRIVATE)
        log_event(
            log,
            "secret.permissions_fixed",
            level=logging.WARNING,
            path=str(path),
            mode=oct(mode),
            detail="others could read this secret; it is now readable by its owner only",
        )
    secret = path.read_text(encoding="utf-8").strip()
    if not secret:
        raise ValueError(f"{path} is empty; delete it and HSI makes a new one at the next start")
    return secret
