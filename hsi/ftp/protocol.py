"""What a camera session says in the logs: pyftpdlib's own lines at DEBUG on `hsi.ftp.protocol`,
every configured password masked, paths shown as the camera sees them.

`ProtocolLog` is the base of the camera session classes (`hsi.ftp.session`); it overrides
pyftpdlib's logging hooks and gives its subclasses `_mask`, `_relative` and `_protocol`.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

from hsi.logs.setup import get_logger, mask_secrets, sanitize_error

with warnings.catch_warnings():
    # pyftpdlib is built on asyncore/asynchat, which Python 3.11 deprecates at import (3.12+ gets
    # them from the pyasyncore/pyasynchat packages pyftpdlib depends on there).
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.handlers import FTPHandler  # type: ignore[import-untyped]

__all__ = ["ProtocolLog"]

log = get_logger("hsi.ftp")
_protocol_log = get_logger("hsi.ftp.protocol")
_MASK = "***"


class ProtocolLog(FTPHandler):  # type: ignore[misc]  # pyftpdlib is untyped
    """pyftpdlib's logging hooks, routed to HSI's loggers with secrets masked."""

    secrets: ClassVar[tuple[str, ...]] = ()  # every configured password, longest first

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
