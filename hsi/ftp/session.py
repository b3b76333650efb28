"""One camera's FTP session: what its account may do inside its own folder, and nothing outside it.

    e l r   change directory, list, download (`CWD`, `LIST`, `NLST`, `MLSD`, `SIZE`, `RETR`)
    w       store (`STOR`, `STOU`); size-limited by `FTP_MAX_UPLOAD_MB`, partial uploads deleted
    m       create folders (`MKD`): Foscam firmwares upload into `snap/` and `record/` folders
    f       rename (`RNFR`/`RNTO`): some firmwares upload under a temporary name, then rename

Deleting (`DELE`, `RMD`), appending (`APPE`), `SITE CHMOD` and `MFMT` are refused, and so is
replacing an existing file by `STOR` or `RNTO` unless `allow_overwrite` is set: cameras name their
files by time, so a stolen camera password cannot erase or replace what was recorded. `CWD ..`,
`LIST /` or `STOR ../x.jpg` all stay inside the folder (the folder is the account's `/`), and a
symbolic link that leads out of it is refused.

Passwords are compared in constant time and never logged: pyftpdlib's own log lines go through
`hsi.ftp.protocol` at DEBUG with every configured password masked, and HSI logs stable events on
`hsi.ftp` (`ftp.login`, `ftp.login_failed`, `ftp.upload_received`, `ftp.upload_too_large`,
`ftp.upload_incomplete`, `ftp.file_renamed`, …).

These are pyftpdlib handler classes; `hsi.ftp.server` configures a subclass of `CameraSession`
per receiver and serves it.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import logging
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from hsi.logs.setup import get_logger, mask_secrets, sanitize_error

with warnings.catch_warnings():
    # pyftpdlib is built on asyncore/asynchat, which Python 3.11 deprecates at import (3.12+ gets
    # them from the pyasyncore/pyasynchat packages pyftpdlib depends on there).
    warnings.simplefilter("ignore", DeprecationWarning)
    from OpenSSL import SSL
    from pyftpdlib.authorizers import (  # type: ignore[import-untyped]  # no type information
        AuthenticationFailed,
        DummyAuthorizer,
    )
    from pyftpdlib.filesystems import AbstractedFS  # type: ignore[import-untyped]
    from pyftpdlib.handlers import DTPHandler, FTPHandler  # type: ignore[import-untyped]
    from pyftpdlib.handlers.ftps.control import TLS_FTPHandler  # type: ignore[import-untyped]
    from pyftpdlib.handlers.ftps.data import TLS_DTPHandler  # type: ignore[import-untyped]

__all__ = ["PERMISSIONS", "Account", "CameraAuthorizer", "CameraSession", "CameraTLSSession"]

log = get_logger("hsi.ftp")
_protocol_log = get_logger("hsi.ftp.protocol")

PERMISSIONS = "elrwmf"  # see the module docstring; pyftpdlib's letters
_BANNER = "HSI camera upload ready."
_MASK = "***"
# What an unknown user's password is compared with, so that a wrong user name takes as long.
_NO_SUCH_USER = "\x00hsi-no-such-user\x00"


class _UploadTooLarge(OSError):
    """An upload passed `max_upload_bytes`; raised by `_CappedFile.write`."""

    def __init__(self, limit: int) -> None:
        super().__init__(errno.EFBIG, f"upload larger than {limit} bytes")
        self.limit = limit


class _CappedFile:
    """A file being uploaded that refuses to grow past `limit` bytes."""

    def __init__(self, file: Any, name: str, limit: int) -> None:
        self._file = file
        self.name = name
        self._limit = limit

    def write(self, data: bytes) -> int:
        if self._file.tell() + len(data) > self._limit:
            raise _UploadTooLarge(self._limit)
        return int(self._file.write(data))

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._file, attribute)


class _CameraFS(AbstractedFS):  # type: ignore[misc]  # pyftpdlib is untyped
    """The account's folder as `/`; every file opened for writing is size-capped, and unique
    names (`STOU`) are only made inside the folder."""

    def open(self, filename: str, mode: str) -> Any:
        if not self.validpath(filename):
            raise OSError(errno.EACCES, "outside the camera folder")
        file = super().open(filename, mode)
        if any(flag in mode for flag in "wa+"):
            return _CappedFile(file, filename, self.cmd_channel.max_upload_bytes)
        return file

    def readlink(self, path: str) -> str:
        """A link's target as LIST shows it: inside the folder as the camera sees it, never a
        real path outside it."""
        if not self.validpath(path):
            return "[outside the camera folder]"
        return str(self.fs2ftp(os.path.realpath(path)))

    def mkstemp(
        self, suffix: str = "", prefix: str = "", dir: str | None = None, mode: str = "wb"
    ) -> Any:
        if dir is None or not self.validpath(dir):
            raise OSError(errno.EACCES, "outside the camera folder")
        wrapper = super().mkstemp(suffix=suffix, prefix=prefix, dir=dir, mode=mode)
        return _CappedFile(wrapper.file, wrapper.name, self.cmd_channel.max_upload_bytes)


class _CameraDTP(DTPHandler):  # type: ignore[misc]  # pyftpdlib is untyped
    """The data channel: an upload past the limit ends with `552` and its file removed."""

    def handle_error(self) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, _UploadTooLarge) or isinstance(
            getattr(exc, "__cause__", None), _UploadTooLarge
        ):
            self.cmd_channel.note_too_large(self.file_obj.name)
            self._resp = (
                "552 Upload exceeds the size limit of this server; transfer aborted.",
                logging.getLogger("hsi.ftp.protocol").debug,
            )
            # The plain close: no TLS shutdown handshake with a client that is still sending.
            DTPHandler.close(self)
            return
        super().handle_error()


class _CameraTLSDTP(_CameraDTP, TLS_DTPHandler):  # type: ignore[misc]  # pyftpdlib is untyped
    pass


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


class CameraSession(FTPHandler):  # type: ignore[misc]  # pyftpdlib is untyped
    """One control connection. Its class attributes are set per receiver (see `hsi.ftp.server`)."""

    abstracted_fs = _CameraFS
    dtp_handler = _CameraDTP
    banner = _BANNER
    max_upload_bytes: ClassVar[int] = 0
    allow_overwrite: ClassVar[bool] = False
    accounts: ClassVar[Mapping[str, Account]] = MappingProxyType({})
    secrets: ClassVar[tuple[str, ...]] = ()
    _too_large: str | None = None
    _rnfr: str | None  # pyftpdlib's pending RNFR source

    # --- what HSI adds ------------------------------------------------------------------------

    def note_too_large(self, filename: str) -> None:
        self._too_large = filename

    def _camera(self) -> str:
        account = self.accounts.get(self.username)
        return account.camera if account is not None else ""

    def _relative(self, path: str) -> str:
        """A path inside the camera folder as the camera sees it (`snap/a.jpg`); anything else
        (a raw command argument) unchanged."""
        root = self.fs.root if self.fs is not None else ""
        if not root or not os.path.isabs(path):
            return path
        if path != root and not path.startswith(root.rstrip(os.sep) + os.sep):
            return os.path.basename(path)
        return os.path.relpath(path, root).replace(os.sep, "/")

    def _mask(self, text: object) -> str:
        masked = str(text)
        for secret in self.secrets:
            masked = masked.replace(secret, _MASK)
        return mask_secrets(masked)

    def get_repr_info(self, as_str: bool = False, extra_info: Any = None) -> Any:
        # pyftpdlib's debug lines show this; a password typed as the user name stays masked.
        info = super().get_repr_info(as_str=False, extra_info=extra_info)
        if "user" in info:
            info["user"] = self._mask(info["user"])
        if as_str:
            return ", ".join(f"{key}={value!r}" for key, value in info.items())
        return info

    def _tls_active(self) -> bool:
        return isinstance(self.socket, SSL.Connection)

    def _exists(self, path: str) -> bool:
        return bool(self.fs.lexists(path))

    # --- policy ----------------------------------------------------------------------------

    def ftp_STOR(self, file: str, mode: str = "w") -> Any:
        if not self.allow_overwrite and self._exists(file):
            self._restart_position = 0
            self.respond("553 File exists; HSI keeps uploads, store it under a new name.")
            return None
        return super().ftp_STOR(file, mode)

    def ftp_RNTO(self, path: str) -> Any:
        if self._rnfr and not self.allow_overwrite and self._exists(path):
            self._rnfr = None
            self.respond("553 File exists; HSI keeps uploads, rename to a new name.")
            return None
        source = self._rnfr
        result = super().ftp_RNTO(path)
        if result is not None and source is not None:
            log.info(
                "ftp.file_renamed",
                camera=self._camera(),
                user=self.username,
                source=self._relative(source),
                path=self._relative(path),
            )
        return result

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

    # --- pyftpdlib's own log lines: DEBUG on hsi.ftp.protocol, secrets masked -----------------

    def _protocol(self, message: object, level: int = logging.DEBUG) -> None:
        if _protocol_log.is_enabled_for(level):
            _protocol_log.log(
                level,
                "ftp.protocol",
                remote=f"{self.remote_ip}:{self.remote_port}",
                user=self._mask(self.username),
                detail=self._mask(message),
            )

    def log(self, msg: str, logfun: Callable[..., Any] | None = None) -> None:
        level = logging.WARNING if getattr(logfun, "__name__", "") == "warning" else logging.DEBUG
        self._protocol(msg, level)

    def logline(self, msg: str, logfun: Callable[..., Any] | None = None) -> None:
        self._protocol(msg)

    def logerror(self, msg: str) -> None:
        self._protocol(msg, logging.ERROR)

    def log_exception(self, instance: object) -> None:
        exc = sys.exc_info()[1]
        log.error("ftp.session_error", user=self._mask(self.username), error=self._error_text(exc))

    def log_cmd(self, cmd: str, arg: str, respcode: int, respstr: str) -> None:
        shown = "" if cmd in ("PASS", "USER") else self._relative(arg)
        self._protocol(f"{cmd} {shown} -> {respcode} {respstr}")

    def log_transfer(
        self, cmd: str, filename: str, receive: bool, completed: bool, elapsed: float, bytes: int
    ) -> None:
        self._protocol(
            f"{cmd} {self._relative(filename)} completed={completed} bytes={bytes} "
            f"seconds={elapsed}"
        )

    def _error_text(self, exc: BaseException | None) -> str:
        return self._mask(sanitize_error(exc if exc is not None else "unknown error"))


class CameraTLSSession(CameraSession, TLS_FTPHandler):  # type: ignore[misc]  # untyped base
    dtp_handler = _CameraTLSDTP
