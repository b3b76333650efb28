"""The files and data channel of a camera session: uploads size-capped, paths kept inside the
camera folder.

`CameraFS` is the account's folder as `/`; every file opened for writing refuses to grow past
`max_upload_bytes`, and a link's target shows as the camera sees it. `CameraDTP` ends an upload
past the limit with `552` and leaves the session to delete the partial file.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import warnings
from typing import Any

with warnings.catch_warnings():
    # pyftpdlib is built on asyncore/asynchat, which Python 3.11 deprecates at import (3.12+ gets
    # them from the pyasyncore/pyasynchat packages pyftpdlib depends on there).
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.filesystems import AbstractedFS  # type: ignore[import-untyped]
    from pyftpdlib.handlers import DTPHandler  # type: ignore[import-untyped]
    from pyftpdlib.handlers.ftps.data import TLS_DTPHandler  # type: ignore[import-untyped]

__all__ = ["CameraDTP", "CameraFS", "CameraTLSDTP"]


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


class CameraFS(AbstractedFS):  # type: ignore[misc]  # pyftpdlib is untyped
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


class CameraDTP(DTPHandler):  # type: ignore[misc]  # pyftpdlib is untyped
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


class CameraTLSDTP(CameraDTP, TLS_DTPHandler):  # type: ignore[misc]  # pyftpdlib is untyped
    pass
