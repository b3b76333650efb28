"""The generated password of an embedded server: one per server, in a file that only the user
running HSI can read (mode 0600), next to the server's data.

The file is written whole under a temporary name created with mode 0600 and then linked into
place, so it is never readable by others, never seen half-written, and two processes starting at
once agree on one password (the second link fails and that process reads the first one's).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

PASSWORD_FILE = "password"  # noqa: S105 - the name of the file, not a password
PASSWORD_BYTES = 32  # 43 URL-safe characters
_OWNER_ONLY = 0o600


def new_password() -> str:
    """A random password of URL-safe characters (safe in a URL without quoting)."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def read_password(path: Path, *, narrow: bool = False) -> str | None:
    """The password stored at `path`, or None when there is none (or it cannot be read). Never
    follows a symbolic link; with `narrow`, a file readable by others is set to mode 0600."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(descriptor, encoding="utf-8") as handle:
        if narrow and os.fstat(descriptor).st_mode & 0o077:
            os.fchmod(descriptor, _OWNER_ONLY)
        try:
            text = handle.read().strip()
        except (OSError, UnicodeDecodeError):
            return None
    return text or None


def ensure_password(path: Path) -> tuple[str, bool]:
    """The password stored at `path`, made and stored first when missing: (password, created).

    An existing file readable by others is narrowed to mode 0600."""
    existing = read_password(path, narrow=True)
    if existing is not None:
        return existing, False
    path.parent.mkdir(parents=True, exist_ok=True)
    password = new_password()
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:  # mkstemp: mode 0600
            handle.write(password + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            if read_password(path) is None:
                path.unlink()  # an empty file left by a crash of an older version
        try:
            os.link(temporary, path)
        except FileExistsError:
            other = read_password(path)  # a concurrent start stored its password first
            if other is None:
                raise
            return other, False
    finally:
        os.unlink(temporary)
    return password, True
