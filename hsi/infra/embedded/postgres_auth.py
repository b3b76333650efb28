"""How the embedded PostgreSQL asks for its password: the SCRAM secret of the `postgres` role and
the pg_hba.conf that requires it for every connection.

The secret is computed here (RFC 5802 / RFC 7677, as PostgreSQL stores it), so the plain password
never reaches the server, its statement log or a temporary file: PostgreSQL stores a password
given in this form as it is.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
from collections.abc import Iterator
from pathlib import Path

SCRAM_ITERATIONS = 4096  # PostgreSQL's default scram_iterations

HBA = """\
# Written by HSI: every connection needs the postgres password (SCRAM-SHA-256), which HSI keeps
# in the file `password` next to this data folder. `hsi services url` prints the URLs with it.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 scram-sha-256
host    all          all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
local   replication  all                 scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
host    replication  all   ::1/128       scram-sha-256
"""

_PASSWORD_METHODS = frozenset({"scram-sha-256"})


def scram_secret(password: str, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 secret of `password` as PostgreSQL stores it in pg_authid."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def hba_methods(text: str) -> set[str]:
    """The authentication methods named by the rules of a pg_hba.conf."""
    methods = set()
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        # local DATABASE USER METHOD [OPTIONS]; host* DATABASE USER ADDRESS [MASK] METHOD [OPTIONS]
        rest = fields[3:] if fields[0] == "local" else fields[4:]
        if fields[0] != "local" and rest and _looks_like_mask(rest[0]):
            rest = rest[1:]
        if rest:
            methods.add(rest[0])
    return methods


def _looks_like_mask(field: str) -> bool:
    return field.count(".") == 3 and all(part.isdigit() for part in field.split("."))


def hba_requires_password(pgdata: Path) -> bool:
    """Whether every rule of the data folder's pg_hba.conf asks for the SCRAM password."""
    try:
        text = (pgdata / "pg_hba.conf").read_text(encoding="utf-8")
    except OSError:
        return False
    methods = hba_methods(text)
    return bool(methods) and methods <= _PASSWORD_METHODS


def write_hba(pgdata: Path) -> None:
    """Replace pg_hba.conf by HSI's (atomically, keeping the file's owner and mode 0600)."""
    target = pgdata / "pg_hba.conf"
    owner = pgdata.stat()
    temporary = pgdata / "pg_hba.conf.hsi-new"
    temporary.unlink(missing_ok=True)  # left by a crash
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(HBA)
            handle.flush()
            os.fsync(handle.fileno())
        if os.geteuid() == 0:
            os.chown(temporary, owner.st_uid, owner.st_gid)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def secret_file(folder: Path, password: str, owner: str | None) -> Iterator[Path]:
    """A file holding the SCRAM secret of `password` (never the password itself), for initdb's
    `--pwfile`: mode 0600, owned by `owner` (the server's system user) when given, removed after."""
    path = folder / ".initdb-secret"
    path.unlink(missing_ok=True)  # left by a crash
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(scram_secret(password) + "\n")
        if owner is not None:
            import pwd

            entry = pwd.getpwnam(owner)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        yield path
    finally:
        path.unlink(missing_ok=True)
