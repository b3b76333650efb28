"""The embedded servers' password files and PostgreSQL's SCRAM secret and pg_hba rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hsi.infra.embedded.passwords import ensure_password, read_password
from hsi.infra.embedded.postgres_auth import HBA, hba_methods, scram_secret


def test_password_file_is_created_owner_only(tmp_path: Path) -> None:
    """The first call makes a mode-0600 file; later calls read the same password."""
    path = tmp_path / "redis" / "password"
    password, created = ensure_password(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(password) >= 32
    assert ensure_password(path) == (password, False)
    assert [p.name for p in path.parent.iterdir()] == ["password"]


def test_concurrent_starts_agree_on_one_password(tmp_path: Path) -> None:
    """Processes creating the file at once all end up with the one that was stored."""
    path = tmp_path / "password"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: ensure_password(path)[0], range(16)))
    assert set(results) == {read_password(path)}


def test_readable_password_file_is_narrowed(tmp_path: Path) -> None:
    """A password file that others could read is set back to mode 0600."""
    path = tmp_path / "password"
    path.write_text("kept-password\n")
    path.chmod(0o644)
    assert ensure_password(path) == ("kept-password", False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_password_file_symlink_is_not_followed(tmp_path: Path) -> None:
    """A symbolic link in place of the password file is never read through."""
    target = tmp_path / "elsewhere"
    target.write_text("not a password\n")
    (tmp_path / "password").symlink_to(target)
    assert read_password(tmp_path / "password") is None


def test_scram_secret_matches_rfc_7677() -> None:
    """The secret has PostgreSQL's layout and the keys that RFC 7677's derivation gives."""
    salt = b"0123456789abcdef"
    secret = scram_secret("pencil", salt)
    head, keys = secret.split("$", 2)[1:]
    iterations, salt_b64 = head.split(":")
    stored_b64, server_b64 = keys.split(":")
    assert secret.startswith("SCRAM-SHA-256$4096:")
    assert base64.b64decode(salt_b64) == salt
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert base64.b64decode(stored_b64) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server_b64) == hmac.new(salted, b"Server Key", "sha256").digest()
    assert scram_secret("pencil") != scram_secret("pencil")  # a fresh salt each time


@pytest.mark.parametrize(
    ("text", "methods"),
    [
        (HBA, {"scram-sha-256"}),
        ("local all all trust\nhost all all 127.0.0.1/32 trust\n", {"trust"}),
        ("host all all 127.0.0.1 255.255.255.255 md5  # mask form\n", {"md5"}),
        ("# only comments\n\n", set()),
        ("local all all peer\nhost all all ::1/128 scram-sha-256\n", {"peer", "scram-sha-256"}),
    ],
)
def test_hba_methods(text: str, methods: set[str]) -> None:
    """The methods of pg_hba.conf rules are found in both address forms; comments are skipped."""
    assert hba_methods(text) == methods


def test_password_file_is_never_world_readable(tmp_path: Path) -> None:
    """Even under a permissive umask the file is created mode 0600."""
    previous = os.umask(0)
    try:
        ensure_password(tmp_path / "password")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "password").stat().st_mode) == 0o600
