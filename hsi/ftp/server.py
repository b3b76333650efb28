"""The built-in FTP(S) receiver: cameras upload straight into their folder under the camera root.

Foscam-style cameras can only push snapshots and clips by FTP. With `FTP_ENABLED=true` HSI serves
one account per camera (`FTP_ACCOUNTS`); each account is jailed in its camera's folder
(`camera root / folder`, created when missing), where the watcher picks the files up as usual.

What a camera account may do inside its own folder, and nothing outside it:

    e l r   change directory, list, download (`CWD`, `LIST`, `NLST`, `MLSD`, `SIZE`, `RETR`)
    w       store (`STOR`, `STOU`); size-limited by `FTP_MAX_UPLOAD_MB`, partial uploads deleted
    m       create folders (`MKD`): Foscam firmwares upload into `snap/` and `record/` folders
    f       rename (`RNFR`/`RNTO`): some firmwares upload under a temporary name, then rename

Deleting (`DELE`, `RMD`), appending (`APPE`), `SITE CHMOD` and `MFMT` are refused, and so is
replacing an existing file by `STOR` or `RNTO` unless `allow_overwrite` is set: cameras name their
files by time, so a stolen camera password cannot erase or replace what was recorded. `CWD ..`,
`LIST /` or `STOR ../x.jpg` all stay inside the folder (the folder is the account's `/`), and a
symbolic link that leads out of it is refused.

When HSI's TLS is on (`TLS_MODE` self_signed or provided) the receiver speaks explicit FTPS
(`AUTH TLS`) with HSI's certificate; `FTP_REQUIRE_TLS=true` refuses logins and data connections
that are not encrypted. Passwords are compared in constant time and never logged: pyftpdlib's own
log lines go through `hsi.ftp.protocol` at DEBUG with every configured password masked, and HSI
logs stable events on `hsi.ftp` (`ftp.login`, `ftp.login_failed`, `ftp.upload_received`,
`ftp.upload_too_large`, `ftp.upload_incomplete`, `ftp.file_renamed`, …).

pyftpdlib runs its own IO loop; `FtpReceiver` runs it in one thread and gives it an asyncio
lifecycle (`run(stop_event)`) as well as a synchronous one (`start()` / `stop()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from hsi.ftp.config import FTPConfig, FTPConfigError, FTPError
from hsi.infra.certificates import TLSError
from hsi.infra.tls import TLSConfig, ensure_certificates
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
    from pyftpdlib.ioloop import IOLoop  # type: ignore[import-untyped]
    from pyftpdlib.servers import FTPServer  # type: ignore[import-untyped]

__all__ = ["PERMISSIONS", "FtpReceiver"]

log = get_logger("hsi.ftp")
_protocol_log = get_logger("hsi.ftp.protocol")

PERMISSIONS = "elrwmf"  # see the module docstring; pyftpdlib's letters
_POLL_SECONDS = 0.2  # how long the server thread waits for sockets before checking for stop
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
class _Account:
    user: str
    camera: str
    home: str  # absolute, symlinks resolved


class _CameraAuthorizer(DummyAuthorizer):  # type: ignore[misc]  # pyftpdlib is untyped
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


class _CameraSession(FTPHandler):  # type: ignore[misc]  # pyftpdlib is untyped
    """One control connection. Its class attributes are set per receiver (see `_handler_class`)."""

    abstracted_fs = _CameraFS
    dtp_handler = _CameraDTP
    banner = _BANNER
    max_upload_bytes: ClassVar[int] = 0
    allow_overwrite: ClassVar[bool] = False
    accounts: ClassVar[Mapping[str, _Account]] = MappingProxyType({})
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


class _CameraTLSSession(_CameraSession, TLS_FTPHandler):  # type: ignore[misc]  # untyped base
    dtp_handler = _CameraTLSDTP


def _openssl_context(tls: TLSConfig) -> Any:
    """A pyOpenSSL server context for HSI's certificate (created or renewed when self-signed)."""
    try:
        paths = ensure_certificates(tls)
    except TLSError as exc:
        raise FTPError(f"FTPS cannot start: {exc}") from exc
    if paths is None:  # pragma: no cover - FTPConfig only keeps an enabled TLSConfig
        raise FTPConfigError("FTPS needs TLS_MODE=self_signed or provided")
    cert_path, key_path = paths
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(
        SSL.TLS1_3_VERSION if tls.min_version == "TLSv1.3" else SSL.TLS1_2_VERSION
    )
    context.set_options(SSL.OP_NO_COMPRESSION)
    try:
        context.use_certificate_chain_file(str(cert_path))
        context.use_privatekey_file(str(key_path))
        context.check_privatekey()
    except SSL.Error as exc:
        raise FTPError(
            f"FTPS cannot use certificate {cert_path} with key {key_path} ({exc}); check them "
            "with 'hsi tls show'"
        ) from exc
    return context


def _prepare_accounts(config: FTPConfig) -> dict[str, _Account]:
    """Create every camera folder that is missing; map user → account."""
    root = config.camera_root.expanduser().resolve()
    accounts: dict[str, _Account] = {}
    for account in config.accounts:
        home = root / account.folder
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FTPError(
                f"cannot create the folder of FTP user {account.user!r} under the camera root "
                f"({sanitize_error(exc)}); check that HSI may write to FOSCAM_BASE_PATH"
            ) from exc
        accounts[account.user] = _Account(
            user=account.user, camera=account.camera, home=os.path.realpath(home)
        )
    return accounts


def _handler_class(config: FTPConfig, accounts: Mapping[str, _Account]) -> type[Any]:
    """A session class of this receiver's own: pyftpdlib is configured by class attributes."""
    authorizer = _CameraAuthorizer()
    for account in config.accounts:
        authorizer.add_user(
            account.user,
            account.password,
            accounts[account.user].home,
            perm=PERMISSIONS,
            msg_login="Login successful.",
            msg_quit="Goodbye.",
        )
    secrets = tuple(sorted({a.password for a in config.accounts}, key=len, reverse=True))
    attributes: dict[str, Any] = {
        "authorizer": authorizer,
        "passive_ports": (
            range(config.passive_ports[0], config.passive_ports[1] + 1)
            if config.passive_ports is not None
            else None
        ),
        "masquerade_address": config.masquerade_address,
        "max_upload_bytes": config.max_upload_bytes,
        "allow_overwrite": config.allow_overwrite,
        "accounts": dict(accounts),
        "secrets": secrets,
        "auth_failed_timeout": config.login_failure_delay,
        "timeout": config.idle_timeout,
        "permit_foreign_addresses": False,
        "permit_privileged_ports": False,
    }
    if config.tls is not None and config.ftps:
        attributes["ssl_context"] = _openssl_context(config.tls)
        attributes["tls_control_required"] = config.require_tls
        attributes["tls_data_required"] = config.require_tls
        return type("HSIFTPSSession", (_CameraTLSSession,), attributes)
    return type("HSIFTPSession", (_CameraSession,), attributes)


def _keep_pyftpdlib_logging_alone() -> None:
    """pyftpdlib configures logging itself (a stderr handler, global speed-ups) the first time a
    loop runs without any handler; a NullHandler on its logger marks logging as configured.
    Records still propagate to HSI's handlers."""
    library = logging.getLogger("pyftpdlib")
    if not any(isinstance(h, logging.NullHandler) for h in library.handlers):
        library.addHandler(logging.NullHandler())


# --- the receiver -------------------------------------------------------------------------------


class FtpReceiver:
    """The FTP server in a thread of its own.

    Synchronous use: `start()` … `stop()` (or `with FtpReceiver(config) as receiver:`).
    Asynchronous use: `await receiver.run(stop_event)` serves until the event is set and raises
    `FTPError` when the server thread dies on its own."""

    def __init__(self, config: FTPConfig) -> None:
        self.config = config
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        self._on_end: Callable[[], None] | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server listens on (the real port when `port` was 0)."""
        if self._server is None:
            raise FTPError("the FTP receiver is not started; call start() first")
        host, port = self._server.address
        return str(host), int(port)

    def start(self) -> None:
        """Create the camera folders, bind the port and start serving; raise `FTPError` when the
        port cannot be bound or the certificate cannot be used."""
        with self._lock:
            if self._thread is not None:
                raise FTPError("the FTP receiver is already started; stop() it first")
            config = self.config
            accounts = _prepare_accounts(config)
            handler = _handler_class(config, accounts)
            _keep_pyftpdlib_logging_alone()
            ioloop = IOLoop()
            try:
                server = FTPServer((config.host, config.port), handler, ioloop=ioloop)
            except OSError as exc:
                with contextlib.suppress(Exception):
                    ioloop.close()
                raise FTPError(
                    f"the FTP receiver cannot listen on {config.host}:{config.port} "
                    f"({exc.strerror or exc}); another program may use the port: stop it or "
                    "set FTP_PORT (and FTP_HOST) to a free address"
                ) from exc
            server.max_cons = config.max_connections
            self._server = server
            self._failure = None
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._serve, args=(server,), name="hsi-ftp", daemon=True
            )
            self._thread.start()
        host, port = self.address
        log.info(
            "ftp.listening",
            host=host,
            port=port,
            ftps=config.ftps,
            require_tls=config.require_tls,
            passive_ports=(
                f"{config.passive_ports[0]}-{config.passive_ports[1]}"
                if config.passive_ports
                else "any"
            ),
            cameras=",".join(sorted({a.camera for a in config.accounts})),
        )

    def _serve(self, server: Any) -> None:
        ioloop = server.ioloop
        timeout = _POLL_SECONDS
        try:
            while not self._stopping.is_set():
                soonest = ioloop.loop(timeout, blocking=False)
                timeout = _POLL_SECONDS if soonest is None else min(_POLL_SECONDS, soonest)
        except BaseException as exc:
            self._failure = exc
            log.error("ftp.server_failed", error=sanitize_error(exc))
        finally:
            with contextlib.suppress(Exception):
                server.close_all()
            callback = self._on_end
            if callback is not None:
                with contextlib.suppress(RuntimeError):  # the event loop is already closed
                    callback()

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listening socket and every session; wait for the server thread."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._stopping.set()
            thread.join(timeout)
            if thread.is_alive():  # pragma: no cover - a file system call hanging
                log.warning("ftp.stop_timeout", seconds=timeout)
            self._server = None
        log.info("ftp.stopped")

    async def run(self, stop_event: asyncio.Event) -> None:
        """Serve until `stop_event` is set (or the task is cancelled), then stop."""
        loop = asyncio.get_running_loop()
        ended = asyncio.Event()

        def notify() -> None:
            loop.call_soon_threadsafe(ended.set)

        self._on_end = notify
        try:
            await asyncio.to_thread(self.start)  # may write a self-signed certificate
        except BaseException:
            self._on_end = None
            raise
        try:
            waiters = [
                asyncio.ensure_future(stop_event.wait()),
                asyncio.ensure_future(ended.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
        finally:
            await asyncio.to_thread(self.stop)
            self._on_end = None
        failure = self._failure
        if failure is not None:
            raise FTPError(
                f"the FTP receiver stopped unexpectedly ({sanitize_error(failure)}); see the "
                "ftp.server_failed log record"
            ) from failure

    def __enter__(self) -> FtpReceiver:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
