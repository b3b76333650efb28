"""The embedded servers' password files and PostgreSQL's SCRAM secret and pg_hba rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
import string
from pathlib import Path

import pytest

from hsi.infra.embedded import EmbeddedServerError
from hsi.infra.embedded.passwords import ensure_password, read_password
from hsi.infra.embedded.postgres_auth import HBA, hba_methods, scram_secret


def test_password_file_is_created_owner_only(tmp_path: Path) -> None:
    """The first call makes a mode-0600 file of 32+ URL-safe characters; later calls read it."""
    path = tmp_path / "redis" / "password"
    password, created = ensure_password(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(password) >= 32
    assert set(password) <= set(string.ascii_letters + string.digits + "-_")
    assert ensure_password(path) == (password, False)
    assert read_password(path) == password
    assert [p.name for p in path.parent.iterdir()] == ["password"]


def test_password_file_symlink_is_refused(tmp_path: Path) -> None:
    """A symbolic link in place of the password file is neither read nor written through."""
    target = tmp_path / "elsewhere"
    target.write_text("not a password\n")
    target.chmod(0o644)
    (tmp_path / "password").symlink_to(target)
    assert read_password(tmp_path / "password") is None
    with pytest.raises(EmbeddedServerError, match="symbolic link"):
        ensure_password(tmp_path / "password")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_empty_password_file_says_what_to_do(tmp_path: Path) -> None:
    """An empty password file stops the start with a message that names the fix."""
    (tmp_path / "password").touch(mode=0o600)
    with pytest.raises(EmbeddedServerError, match="delete it"):
        ensure_password(tmp_path / "password")


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
