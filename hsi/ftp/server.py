"""The built-in FTP(S) receiver: cameras upload straight into their folder under the camera root.

Foscam-style cameras can only push snapshots and clips by FTP. With `FTP_ENABLED=true` HSI serves
one account per camera (`FTP_ACCOUNTS`); each account is jailed in its camera's folder
(`camera root / folder`, created when missing), where the watcher picks the files up as usual.
What an account may do there is `hsi.ftp.session`'s concern.

When HSI's TLS is on (`TLS_MODE` self_signed or provided) the receiver speaks explicit FTPS
(`AUTH TLS`) with HSI's certificate; `FTP_REQUIRE_TLS=true` refuses logins and data connections
that are not encrypted.

pyftpdlib runs its own IO loop; `FtpReceiver` runs it in one thread and gives it an asyncio
lifecycle (`run(stop_event)`) as well as a synchronous one (`start()` / `stop()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from hsi.ftp.config import MIB, FTPConfig, FTPConfigError, FTPError
from hsi.ftp.guard import BanPolicy, LoginGuard
from hsi.ftp.metrics import FtpInstruments
from hsi.ftp.quota import QuotaBook, QuotaLimits
from hsi.ftp.session import (
    PERMISSIONS,
    Account,
    CameraAuthorizer,
    CameraSession,
    CameraTLSSession,
)
from hsi.infra.certificates import TLSError
from hsi.infra.tls import TLSConfig, ensure_certificates
from hsi.logs.setup import get_logger, sanitize_error

with warnings.catch_warnings():
    # pyftpdlib is built on asyncore/asynchat, which Python 3.11 deprecates at import (3.12+ gets
    # them from the pyasyncore/pyasynchat packages pyftpdlib depends on there).
    warnings.simplefilter("ignore", DeprecationWarning)
    from OpenSSL import SSL
    from pyftpdlib.ioloop import IOLoop  # type: ignore[import-untyped]
    from pyftpdlib.servers import FTPServer  # type: ignore[import-untyped]

__all__ = ["FtpReceiver"]

log = get_logger("hsi.ftp")

_POLL_SECONDS = 0.2  # how long the server thread waits for sockets before checking for stop


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


def _prepare_accounts(config: FTPConfig) -> dict[str, Account]:
    """Create every camera folder that is missing; map user → account."""
    root = config.camera_root.expanduser().resolve()
    accounts: dict[str, Account] = {}
    for account in config.accounts:
        home = root / account.folder
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FTPError(
                f"cannot create the folder of FTP user {account.user!r} under the camera root "
                f"({sanitize_error(exc)}); check that HSI may write to FOSCAM_BASE_PATH"
            ) from exc
        accounts[account.user] = Account(
            user=account.user, camera=account.camera, home=os.path.realpath(home)
        )
    return accounts


def _handler_class(config: FTPConfig, accounts: Mapping[str, Account]) -> type[Any]:
    """A session class of this receiver's own: pyftpdlib is configured by class attributes."""
    authorizer = CameraAuthorizer()
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
        "login_timeout": config.login_timeout,
        "guard": LoginGuard(
            BanPolicy(
                after_failures=config.ban_after_failures,
                window=config.ban_window,
                ban_seconds=config.ban_seconds,
            ),
            base_delay=config.login_failure_delay,
        ),
        "quota": QuotaBook(
            QuotaLimits(
                bytes_per_day=config.quota_bytes_per_day,
                files_per_day=config.quota_files_per_day,
            )
        ),
        "instruments": FtpInstruments.create(),
        "permit_foreign_addresses": False,
        "permit_privileged_ports": False,
    }
    if config.tls is not None and config.ftps:
        attributes["ssl_context"] = _openssl_context(config.tls)
        attributes["tls_control_required"] = config.require_tls
        attributes["tls_data_required"] = config.require_tls
        return type("HSIFTPSSession", (CameraTLSSession,), attributes)
    return type("HSIFTPSession", (CameraSession,), attributes)


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
            server.max_cons_per_ip = config.max_connections_per_ip
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
            max_connections_per_ip=config.max_connections_per_ip or "any",
            quota_files_per_day=config.quota_files_per_day or "any",
            quota_mb_per_day=config.quota_bytes_per_day // MIB or "any",
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
