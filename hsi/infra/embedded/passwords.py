"""The generated password of an embedded server: one per server, in a file that only the user
running HSI can read (mode 0600), next to the server's data; made by `hsi.infra.secret_files`
(created 0600, linked into place whole, tightened when others can read it).

The folder of the embedded PostgreSQL belongs to its own system user when HSI runs as root, so
a symbolic link in place of the file is refused rather than followed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from hsi.infra.embedded.processes import EmbeddedServerError
from hsi.infra.secret_files import read_or_create

PASSWORD_FILE = "password"  # noqa: S105 - the name of the file, not a password
PASSWORD_BYTES = 32  # 43 URL-safe characters


def new_password() -> str:
    """A random password of URL-safe characters (safe in a URL without quoting)."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def read_password(path: Path) -> str | None:
    """The password stored at `path`, or None when there is none (or it cannot be read); never
    creates, changes or follows a link to one."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(descriptor, encoding="utf-8") as handle:
        try:
            text = handle.read().strip()
        except (OSError, UnicodeDecodeError):
            return None
    return text or None


def ensure_password(path: Path) -> tuple[str, bool]:
    """The password stored at `path`, made and stored first when missing: (password, created)."""
    if path.is_symlink():
        raise EmbeddedServerError(
            f"{path} is a symbolic link, not HSI's password file; remove it and HSI makes a new "
            "password at the next start"
        )
    try:
        return read_or_create(path, new_password)
    except (OSError, ValueError) as exc:
        raise EmbeddedServerError(
            f"the password file {path} cannot be used ({exc}); fix its permissions, or delete it "
            "and HSI sets a new password at the next start"
        ) from exc
