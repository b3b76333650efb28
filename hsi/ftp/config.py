"""The FTP receiver's accounts and configuration: plain values parsed from the `FTP_*` settings.

Pure: no server, no I/O, so the settings' validators can parse `FTP_ACCOUNTS` and
`FTP_PASSIVE_PORTS` with the same code the receiver trusts (`hsi.ftp.server` serves them).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsi.infra.tls import TLSConfig
from streams.names import CameraIdError, camera_id

DEFAULT_PASSIVE_PORTS = (60000, 60100)
MIB = 1024 * 1024


class FTPError(Exception):
    """Base class of every error raised by `hsi.ftp`."""


class FTPConfigError(FTPError, ValueError):
    """The FTP settings cannot be used; the message names the variable and the fix.

    A `ValueError` too, so a pydantic validator can raise it unchanged."""


# --- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FTPAccount:
    """One camera's login; the password never shows in `repr`."""

    user: str
    password: str = field(repr=False)
    folder: str  # the camera's folder name under the camera root, e.g. "Front Door"

    def __post_init__(self) -> None:
        if not self.user or self.user != self.user.strip() or _has_control(self.user):
            raise FTPConfigError(
                f"FTP_ACCOUNTS: user name {self.user!r} is empty or has spaces or control "
                "characters at its ends; use a plain name such as 'frontdoor'"
            )
        if self.user.lower() == "anonymous":
            raise FTPConfigError(
                "FTP_ACCOUNTS: 'anonymous' cannot be a camera account (FTP treats it as a "
                "login without password); pick another user name"
            )
        if not self.password or _has_control(self.password):
            raise FTPConfigError(
                f"FTP_ACCOUNTS: the password of {self.user!r} is empty or has control "
                "characters; set the password the camera is configured with"
            )
        folder = self.folder
        if (
            not folder.strip()
            or folder in (".", "..")
            or "/" in folder
            or "\\" in folder
            or _has_control(folder)
        ):
            raise FTPConfigError(
                f"FTP_ACCOUNTS: folder {folder!r} of {self.user!r} must be one folder name "
                "under the camera root (no '/', '..' or control characters), e.g. 'Front Door'"
            )
        try:
            camera_id(folder)
        except CameraIdError as exc:
            raise FTPConfigError(f"FTP_ACCOUNTS: user {self.user!r}: {exc}") from None

    @property
    def camera(self) -> str:
        """The camera id HSI derives from the folder: "Front Door" → "front_door"."""
        return camera_id(self.folder)


@dataclass(frozen=True)
class FTPConfig:
    """Everything the receiver needs, independent of how the settings were read.

    `tls` set (and enabled) turns on explicit FTPS; `passive_ports` None lets the kernel pick
    data ports; `port` 0 binds any free port (see `FtpReceiver.address`)."""

    host: str = "0.0.0.0"
    port: int = 2121
    passive_ports: tuple[int, int] | None = DEFAULT_PASSIVE_PORTS
    accounts: tuple[FTPAccount, ...] = ()
    camera_root: Path = Path(".hsi") / "cameras"
    max_upload_bytes: int = 200 * MIB
    tls: TLSConfig | None = None
    require_tls: bool = False
    masquerade_address: str | None = None
    allow_overwrite: bool = False
    login_failure_delay: float = 3.0  # seconds before the first 530 reply; doubles per failure
    idle_timeout: float = 300.0  # seconds a silent control connection is kept after login
    max_connections: int = 64
    max_connections_per_ip: int = 8  # room for several cameras behind one NAT address
    login_timeout: float = 30.0  # seconds a connection has to log in, however busy it keeps
    ban_after_failures: int = 10  # wrong logins from one address within ban_window; 0: never
    ban_window: float = 600.0
    ban_seconds: float = 900.0
    quota_bytes_per_day: int = 20_000 * MIB  # per account and UTC day; 0: no limit
    quota_files_per_day: int = 20_000

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise FTPConfigError(
                f"FTP_PORT={self.port} is not a TCP port; use 1-65535 (default 2121)"
            )
        if self.passive_ports is not None:
            low, high = self.passive_ports
            if not 1 <= low <= high <= 65535:
                raise FTPConfigError(
                    f"FTP_PASSIVE_PORTS={low}-{high} is not a port range; use LOW-HIGH with "
                    "1 <= LOW <= HIGH <= 65535, e.g. 60000-60100"
                )
        if not self.accounts:
            raise FTPConfigError(
                "FTP_ACCOUNTS lists no camera; add one account per camera, e.g. "
                "frontdoor:PASSWORD:Front Door (or set FTP_ENABLED=false)"
            )
        check_accounts(self.accounts)
        if self.max_upload_bytes < 1:
            raise FTPConfigError(
                f"FTP_MAX_UPLOAD_MB gives {self.max_upload_bytes} bytes; use a positive size"
            )
        if self.require_tls and not self.ftps:
            raise FTPConfigError(
                "FTP_REQUIRE_TLS=true needs TLS: set TLS_MODE=self_signed (or provided), or set "
                "FTP_REQUIRE_TLS=false"
            )
        if self.masquerade_address is not None:
            try:
                ipaddress.IPv4Address(self.masquerade_address)
            except ValueError:
                raise FTPConfigError(
                    f"FTP_MASQUERADE_ADDRESS={self.masquerade_address!r} is not an IPv4 "
                    "address; set the address cameras reach HSI at (e.g. 192.168.1.10) or unset it"
                ) from None
        if self.login_failure_delay < 0 or self.idle_timeout <= 0 or self.max_connections < 1:
            raise FTPConfigError(
                "login_failure_delay must be >= 0, idle_timeout > 0 and max_connections >= 1"
            )
        if self.max_connections_per_ip < 0 or self.login_timeout <= 0:
            raise FTPConfigError(
                "FTP_MAX_CONNECTIONS_PER_IP must be >= 0 (0: no limit) and "
                "FTP_LOGIN_TIMEOUT_SECONDS > 0"
            )
        if self.ban_after_failures < 0 or self.ban_window <= 0 or self.ban_seconds <= 0:
            raise FTPConfigError(
                "FTP_BAN_AFTER_FAILURES must be >= 0 (0: never ban), FTP_BAN_WINDOW_SECONDS and "
                "FTP_BAN_SECONDS > 0"
            )
        if self.quota_bytes_per_day < 0 or self.quota_files_per_day < 0:
            raise FTPConfigError(
                "FTP_QUOTA_MB_PER_DAY and FTP_QUOTA_FILES_PER_DAY must be >= 0 (0: no limit)"
            )

    @property
    def ftps(self) -> bool:
        """Whether explicit FTPS (`AUTH TLS`) is offered."""
        return self.tls is not None and self.tls.enabled


def check_accounts(accounts: tuple[FTPAccount, ...]) -> None:
    """Refuse two accounts with one user name, or two whose folders give one camera id
    ("Front Door" and "front_door" would mix two cameras' uploads under one id)."""
    users = [account.user for account in accounts]
    duplicates = sorted({user for user in users if users.count(user) > 1})
    if duplicates:
        raise FTPConfigError(
            f"FTP_ACCOUNTS names user(s) {', '.join(duplicates)} more than once; give each "
            "camera its own user name"
        )
    by_camera: dict[str, list[FTPAccount]] = {}
    for account in accounts:
        by_camera.setdefault(account.camera, []).append(account)
    for camera, sharing in sorted(by_camera.items()):
        if len(sharing) > 1:
            listed = ", ".join(f"{a.folder!r} (user {a.user!r})" for a in sharing)
            raise FTPConfigError(
                f"FTP_ACCOUNTS: folders {listed} all give camera id {camera!r}; HSI could not "
                "tell their uploads apart. Give each camera a folder name of its own"
            )


def _has_control(text: str) -> bool:
    return any(ord(char) < 32 or ord(char) == 127 for char in text)


def _secret_text(value: object) -> str:
    """The plain text of a `SecretStr` (or anything with `get_secret_value`), else `str`."""
    getter = getattr(value, "get_secret_value", None)
    if callable(getter):
        return str(getter())
    return str(value)


def parse_port_range(value: object) -> tuple[int, int] | None:
    """`"60000-60100"` → (60000, 60100); `"60000"` → (60000, 60000); empty/None → None.

    None means "let the kernel pick passive ports" (fine on a LAN without a firewall)."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        low, high = (int(part) for part in value)
    else:
        text = str(value).strip()
        if not text or text.lower() in ("none", "any", "auto"):
            return None
        first, sep, second = text.partition("-")
        try:
            low = int(first.strip())
            high = int(second.strip()) if sep else low
        except ValueError:
            raise FTPConfigError(
                f"FTP_PASSIVE_PORTS={text!r} is not a port range; use LOW-HIGH such as "
                "60000-60100, or leave it empty to let the system pick"
            ) from None
    if not 1 <= low <= high <= 65535:
        raise FTPConfigError(
            f"FTP_PASSIVE_PORTS={low}-{high} is not a port range; use LOW-HIGH with "
            "1 <= LOW <= HIGH <= 65535, e.g. 60000-60100"
        )
    return low, high


def parse_accounts(value: object) -> tuple[FTPAccount, ...]:
    """Read `FTP_ACCOUNTS` in either form (errors never repeat a password):

    - JSON: `{"frontdoor": {"password": "…", "folder": "Front Door"}}` (folder defaults to the
      user name), for passwords with commas;
    - a list: `frontdoor:PASSWORD:Front Door,garage:PASSWORD:Garage` (the password may contain
      ':' but not ',').

    A `SecretStr` or a mapping is accepted as well; empty → no accounts."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return _accounts_from_mapping(value)
    text = _secret_text(value).strip()
    if not text:
        return ()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FTPConfigError(
                f"FTP_ACCOUNTS is not valid JSON ({exc.msg} at line {exc.lineno} column "
                f'{exc.colno}); write {{"user": {{"password": "…", "folder": "Front Door"}}}}'
            ) from None
        if not isinstance(data, dict):  # pragma: no cover - text starting with "{" parses to one
            raise FTPConfigError("FTP_ACCOUNTS must be a JSON object of user → account")
        return _accounts_from_mapping(data)
    accounts = []
    for index, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        user, sep, rest = entry.partition(":")
        password, sep2, folder = rest.rpartition(":")
        if not sep or not sep2 or not password:
            raise FTPConfigError(
                f"FTP_ACCOUNTS entry {index} (user {user.strip()!r}) is not "
                "user:password:folder; write e.g. frontdoor:PASSWORD:Front Door, separate "
                "cameras with commas, and use the JSON form for passwords with commas"
            )
        accounts.append(FTPAccount(user=user.strip(), password=password, folder=folder.strip()))
    return tuple(accounts)


def _accounts_from_mapping(data: Mapping[Any, Any]) -> tuple[FTPAccount, ...]:
    accounts = []
    for user, entry in data.items():
        if not isinstance(entry, Mapping) or "password" not in entry:
            raise FTPConfigError(
                f"FTP_ACCOUNTS: the entry of user {str(user)!r} must be an object with "
                '"password" and "folder", e.g. {"password": "…", "folder": "Front Door"}'
            )
        folder = entry.get("folder") or str(user)
        accounts.append(
            FTPAccount(
                user=str(user),
                password=_secret_text(entry["password"]),
                folder=str(folder).strip(),
            )
        )
    return tuple(accounts)


# --- pyftpdlib plumbing -------------------------------------------------------------------------
