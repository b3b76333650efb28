"""One camera's FTP session: what its account may do inside its own folder, and nothing outside it.

A camera account uploads and nothing else (`hsi.ftp.policy` lists the commands and why):

    e l     change directory; list the folders of a folder (never its files); `SIZE`
    w       store (`STOR`); size-limited by `FTP_MAX_UPLOAD_MB`, partial uploads deleted
    m       create folders (`MKD`): Foscam firmwares upload into `snap/` and dated folders
    f       rename (`RNFR`/`RNTO`), only a file this session stored: some firmwares upload
            under a temporary name, then rename

Downloading, deleting, appending and renaming what was recorded are refused, and so is
replacing an existing file by `STOR` or `RNTO` unless `allow_overwrite` is set: cameras name their
files by time, so a stolen camera password cannot read, erase, hide or replace what was recorded.
No folder or file name may start with '.' (the watcher skips hidden names). `CWD ..`, `LIST /`
or `STOR ../x.jpg` all stay inside the folder (the folder is the account's `/`), and a symbolic
link that leads out of it is refused. Each account has a daily quota (`hsi.ftp.quota`).

Before login a connection has `login_timeout` seconds, however busy it keeps itself; wrong
logins are answered ever later and ban their address for a while: that is `hsi.ftp.gate`, the
base class, deciding with `hsi.ftp.guard`.

Passwords are compared in constant time and never logged: pyftpdlib's own log lines go through
`hsi.ftp.protocol` at DEBUG with every configured password masked (`hsi.ftp.protocol`'s
`ProtocolLog`), and HSI logs stable events on
`hsi.ftp` (`ftp.login`, `ftp.login_failed`, `ftp.ban`, `ftp.command_refused`,
`ftp.quota_exceeded`, `ftp.upload_received`, `ftp.upload_too_large`, `ftp.upload_incomplete`,
`ftp.file_renamed`, …).

These are pyftpdlib handler classes; `hsi.ftp.server` configures a subclass of `CameraSession`
per receiver and serves it.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from hsi.ftp.files import CameraDTP, CameraFS, CameraTLSDTP
from hsi.ftp.gate import LoginGate
from hsi.ftp.policy import (
    ALLOWED_COMMANDS,
    folder_listing_line,
    hidden_component,
    refusal,
    visible_folders,
)
from hsi.ftp.quota import QuotaBook
from hsi.logs.setup import get_logger

with warnings.catch_warnings():
    # pyftpdlib is built on asyncore/asynchat, which Python 3.11 deprecates at import (3.12+ gets
    # them from the pyasyncore/pyasynchat packages pyftpdlib depends on there).
    warnings.simplefilter("ignore", DeprecationWarning)
    from OpenSSL import SSL
    from pyftpdlib.authorizers import (  # type: ignore[import-untyped]  # no type information
        AuthenticationFailed,
        DummyAuthorizer,
    )
    from pyftpdlib.handlers import FTPHandler  # type: ignore[import-untyped]
    from pyftpdlib.handlers.ftps.control import TLS_FTPHandler  # type: ignore[import-untyped]

__all__ = ["PERMISSIONS", "Account", "CameraAuthorizer", "CameraSession", "CameraTLSSession"]

log = get_logger("hsi.ftp")

PERMISSIONS = "elwmf"  # see the module docstring; pyftpdlib's letters (no 'r': no download)
_BANNER = "HSI camera upload ready."
# What an unknown user's password is compared with, so that a wrong user name takes as long.
_NO_SUCH_USER = "\x00hsi-no-such-user\x00"
_HIDDEN = "553 Names starting with '.' are not accepted: HSI's watcher skips hidden files."


def _allowed(commands: Mapping[str, Any]) -> dict[str, Any]:
    """pyftpdlib's command table cut to what camera accounts may use (FEAT and HELP read it)."""
    return {name: spec for name, spec in commands.items() if name in ALLOWED_COMMANDS}


@dataclass(frozen=True)
class Account:
    user: str
    camera: str
    home: str  # absolute, symlinks resolved


class CameraAuthorizer(DummyAuthorizer):  # type: ignore[misc]  # pyftpdlib is untyped
    """Virtual users, one per camera; passwords compared in constant time."""

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        entry = self.user_table.get(username)
        expected = entry["pwd"] if entry is not None else _NO_SUCH_USER
        matches = hmac.compare_digest(
            password.encode("utf-8", "surrogateescape"),
            expected.encode("utf-8", "surrogateescape"),
        )
        if entry is None or not matches:
            raise AuthenticationFailed("Authentication failed.")


class CameraSession(LoginGate):
    """One control connection. Its class attributes are set per receiver (see `hsi.ftp.server`)."""

    abstracted_fs = CameraFS
    dtp_handler = CameraDTP
    banner = _BANNER
    proto_cmds = _allowed(FTPHandler.proto_cmds)
    max_upload_bytes: ClassVar[int] = 0
    allow_overwrite: ClassVar[bool] = False
    accounts: ClassVar[Mapping[str, Account]] = MappingProxyType({})
    quota: ClassVar[QuotaBook | None] = None
    _too_large: str | None = None
    _rnfr: str | None  # pyftpdlib's pending RNFR source

    def __init__(self, conn: Any, server: Any, ioloop: Any = None) -> None:
        self._stored: set[str] = set()  # real paths this session uploaded (may be renamed)
        super().__init__(conn, server, ioloop=ioloop)

    # --- what HSI adds ------------------------------------------------------------------------

    def note_too_large(self, filename: str) -> None:
        self._too_large = filename

    def _camera(self) -> str:
        account = self.accounts.get(self.username)
        return account.camera if account is not None else ""

    def _tls_active(self) -> bool:
        return isinstance(self.socket, SSL.Connection)

    def _exists(self, path: str) -> bool:
        return bool(self.fs.lexists(path))

    def _refuse_command(self, command: str, reply: str, path: str = "") -> None:
        self._count("commands_refused", {"command": command})
        log.warning(
            "ftp.command_refused",
            camera=self._camera(),
            user=self.username,
            command=command,
            remote_ip=self.remote_ip,
            path=path or None,
        )
        self.respond(reply)

    def _refuse_hidden(self, path: str, command: str) -> bool:
        shown = str(self.fs.fs2ftp(path))
        if hidden_component(shown) is None:
            return False
        self._refuse_command(command, _HIDDEN, path=shown.lstrip("/"))
        return True

    # --- policy ----------------------------------------------------------------------------

    def pre_process_command(self, line: str, cmd: str, arg: str) -> Any:
        if self.authenticated:
            command = f"SITE {arg.split(' ')[0].upper()}" if cmd == "SITE" and arg else cmd
            reply = refusal(command, bool(arg.strip()))
            if reply is not None:
                self._refuse_command(command, reply)
                return None
        return super().pre_process_command(line, cmd, arg)

    def ftp_MKD(self, path: str) -> Any:
        if self._refuse_hidden(path, "MKD"):
            return None
        return super().ftp_MKD(path)

    def ftp_STOR(self, file: str, mode: str = "w") -> Any:
        if self._refuse_hidden(file, "STOR"):
            self._restart_position = 0
            return None
        if not self.allow_overwrite and self._exists(file):
            self._restart_position = 0
            self.respond("553 File exists; HSI keeps uploads, store it under a new name.")
            return None
        if self.quota is not None and not self._admit_upload(self.quota):
            self._restart_position = 0
            return None
        return super().ftp_STOR(file, mode)

    def _admit_upload(self, quota: QuotaBook) -> bool:
        verdict = quota.admit(self.username)
        if verdict.allowed:
            return True
        camera = self._camera()
        if verdict.warn:
            log.warning(
                "ftp.quota_exceeded",
                camera=camera,
                user=self.username,
                limit=verdict.limit,
                files=verdict.usage.files,
                bytes=verdict.usage.bytes,
                files_per_day=quota.limits.files_per_day,
                bytes_per_day=quota.limits.bytes_per_day,
            )
        self._count("quota_refusals", {"camera": camera, "limit": verdict.limit or ""})
        self.respond(
            f"552 This camera's daily upload quota ({verdict.limit}) is used up; uploads are "
            "accepted again after 00:00 UTC."
        )
        return False

    def ftp_RNFR(self, path: str) -> Any:
        if os.path.realpath(path) not in self._stored:
            self._refuse_command(
                "RNFR",
                "550 Only a file uploaded in this session may be renamed.",
                path=self._relative(path),
            )
            return None
        return super().ftp_RNFR(path)

    def ftp_RNTO(self, path: str) -> Any:
        if self._rnfr and self._refuse_hidden(path, "RNTO"):
            self._rnfr = None
            return None
        if self._rnfr and not self.allow_overwrite and self._exists(path):
            self._rnfr = None
            self.respond("553 File exists; HSI keeps uploads, rename to a new name.")
            return None
        source = self._rnfr
        result = super().ftp_RNTO(path)
        if result is not None and source is not None:
            self._stored.discard(os.path.realpath(source))
            self._stored.add(os.path.realpath(path))
            log.info(
                "ftp.file_renamed",
                camera=self._camera(),
                user=self.username,
                source=self._relative(source),
                path=self._relative(path),
            )
        return result

    def ftp_LIST(self, path: str) -> Any:
        folders = self._folders(path)
        if folders is None:
            return None
        data = "".join(folder_listing_line(name) for name in folders)
        self.push_dtp_data(data.encode(self.encoding, self.unicode_errors), cmd="LIST")
        return path

    def ftp_NLST(self, path: str) -> Any:
        folders = self._folders(path)
        if folders is None:
            return None
        data = "".join(f"{name}\r\n" for name in folders)
        self.push_dtp_data(data.encode(self.encoding, self.unicode_errors), cmd="NLST")
        return path

    def _folders(self, path: str) -> list[str] | None:
        """The visible folders inside `path`, or None after a 550 (not a folder)."""
        if not self.fs.isdir(path):
            self.respond("550 Not a folder; listings show folders only.")
            return None
        try:
            names = self.fs.listdir(path)
        except OSError as exc:
            self.respond(f"550 {os.strerror(exc.errno) if exc.errno else 'Cannot list'}.")
            return None
        return visible_folders(
            name
            for name in names
            if os.path.isdir(os.path.join(path, name))
            and self.fs.validpath(os.path.join(path, name))
        )

    # --- pyftpdlib callbacks -----------------------------------------------------------------

    def on_login(self, username: str) -> None:
        log.info(
            "ftp.login",
            camera=self._camera(),
            user=username,
            remote_ip=self.remote_ip,
            tls=self._tls_active(),
        )

    def on_login_failed(self, username: str, password: str) -> None:
        log.warning(
            "ftp.login_failed",
            user=self._mask(username),
            remote_ip=self.remote_ip,
            tls=self._tls_active(),
        )

    def on_file_received(self, file: str) -> None:
        try:
            size = os.path.getsize(file)
        except OSError:
            size = -1
        self._stored.add(os.path.realpath(file))
        if self.quota is not None:
            self.quota.received(self.username, size)
        log.info(
            "ftp.upload_received",
            camera=self._camera(),
            user=self.username,
            path=self._relative(file),
            size=size,
        )

    def on_incomplete_file_received(self, file: str) -> None:
        too_large = getattr(self, "_too_large", None) == file
        self._too_large = None
        removed = False
        with contextlib.suppress(FileNotFoundError):
            os.remove(file)
            removed = True
        if too_large:
            log.warning(
                "ftp.upload_too_large",
                camera=self._camera(),
                user=self.username,
                path=self._relative(file),
                limit_bytes=self.max_upload_bytes,
                removed=removed,
            )
        else:
            log.warning(
                "ftp.upload_incomplete",
                camera=self._camera(),
                user=self.username,
                path=self._relative(file),
                removed=removed,
            )


class CameraTLSSession(CameraSession, TLS_FTPHandler):  # type: ignore[misc]  # untyped base
    dtp_handler = CameraTLSDTP
    proto_cmds = _allowed(TLS_FTPHandler.proto_cmds)
