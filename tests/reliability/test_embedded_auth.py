"""The embedded servers let in only clients that know their generated password: no local user
gets a PostgreSQL superuser (and with it `COPY … TO PROGRAM`) or the Redis streams for free, and
the data folders of older starts, made to trust every local user, are locked on their next start
without losing a row or an entry."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from hsi.infra.embedded import EmbeddedPostgres, EmbeddedRedis
from hsi.infra.embedded.processes import LOOPBACK, choose_port
from hsi.infra.embedded.valkey import valkey_binary

pytestmark = pytest.mark.slow


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def _anonymous(port: int) -> redis.Redis:
    """A client without a password, speaking RESP2 (plain commands, no HELLO first)."""
    return redis.Redis(host=LOOPBACK, port=port, protocol=2, retry_on_error=[])


def _pg_connect(port: int, password: str | None) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=LOOPBACK,
        port=port,
        user="postgres",
        dbname="hsi" if password else "postgres",
        password=password or "",
        connect_timeout=5,
        autocommit=True,
    )


def _assert_pg_locked(server: EmbeddedPostgres, port: int) -> str:
    """Refused without the password or with a wrong one, served with it, and no rule of
    pg_hba.conf trusts anyone. Returns the password."""
    for wrong in (None, "not-the-password"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            _pg_connect(port, wrong).close()
    password = server.password()
    assert password is not None
    with _pg_connect(port, password) as conn:
        assert conn.execute("SHOW password_encryption").fetchone() == ("scram-sha-256",)
    rules = [
        line.split()
        for line in (server.pgdata / "pg_hba.conf").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert {rule[-1] for rule in rules} == {"scram-sha-256"}  # no `trust` left
    assert {rule[0] for rule in rules} == {"local", "host"}
    return password


def _old_trust_folder(server: EmbeddedPostgres) -> tuple[int, str | None]:
    """A data folder as older HSI versions made it (initdb --auth=trust) and its server running
    the way they started it, with a table holding one row: (port, the system user it runs as)."""
    user = server._run_as()
    server._prepare(user)
    server.pgdata.mkdir(mode=0o700)
    server._prepare(user)
    server._pg(
        "initdb",
        "-D",
        str(server.pgdata),
        "--auth=trust",
        "--username=postgres",
        "--encoding=UTF8",
        "--locale=C",
        user=user,
    )
    port = choose_port(server.port_file)
    server.log_file.touch()
    server._prepare(user)
    server._pg(
        "pg_ctl",
        "start",
        "-D",
        str(server.pgdata),
        "-w",
        "-l",
        str(server.log_file),
        "-o",
        f"-h {LOOPBACK} -p {port} -k ''",
        user=user,
    )
    with _pg_connect(port, None) as conn:  # trust: anyone local gets in
        conn.execute("CREATE DATABASE hsi")
    with psycopg.connect(host=LOOPBACK, port=port, user="postgres", dbname="hsi") as conn:
        conn.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO kept VALUES (1, 'before the password')")
    return port, user


def _kept_rows(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        return conn.execute("SELECT id, note FROM kept").fetchall()


def test_postgres_refuses_connections_without_the_password(server_dir: Path) -> None:
    """Without the generated password, or with a wrong one, PostgreSQL refuses; with it, it
    serves."""
    server = EmbeddedPostgres(server_dir)
    try:
        url = server.start()
        password = _assert_pg_locked(server, _port(url))
        assert f"postgres:{password}@" in url
        assert server.status().url == url
        with _pg_connect(_port(url), password) as conn:  # no unix socket to go around it
            assert conn.execute("SHOW unix_socket_directories").fetchone() == ("",)
    finally:
        server.stop()


def test_valkey_refuses_commands_without_auth(server_dir: Path) -> None:
    """Valkey answers NOAUTH to a client without the password and serves one that has it."""
    server = EmbeddedRedis(server_dir)
    try:
        url = server.start()
        password = server.password()
        assert password is not None
        assert url == f"redis://:{password}@{LOOPBACK}:{_port(url)}/0"
        with (
            _anonymous(_port(url)) as anonymous,
            pytest.raises(redis.AuthenticationError, match="Authentication required"),
        ):
            anonymous.set("key", "value")
        with (
            redis.Redis(host=LOOPBACK, port=_port(url), password="wrong") as wrong,
            pytest.raises(redis.AuthenticationError),
        ):
            wrong.ping()
        with redis.Redis.from_url(url) as client:
            assert client.set("key", "value")
            assert client.get("key") == b"value"
        pid = server.status().pid
        assert pid is not None
        assert password not in " ".join(psutil.Process(pid).cmdline())
        assert stat.S_IMODE(server.root.stat().st_mode) == 0o700  # nor its append-only files
    finally:
        server.stop()


def test_password_files_are_owner_only(server_dir: Path) -> None:
    """Each password is long, URL-safe and kept in a mode-0600 file next to its server's data."""
    servers = (EmbeddedRedis(server_dir), EmbeddedPostgres(server_dir))
    try:
        for server in servers:
            server.start()
            assert server.password_file.parent == server.root
            assert stat.S_IMODE(server.password_file.stat().st_mode) == 0o600
            assert server.password_file.stat().st_uid == os.geteuid()
            password = server.password()
            assert password is not None
            assert len(password) >= 32
            assert set(password) <= set(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            )
            assert not list(server.root.glob(".password*"))  # no temporary file left
    finally:
        for server in servers:
            server.stop()


def test_stopped_trust_folder_is_migrated_on_start(server_dir: Path) -> None:
    """A data folder made with trust auth gets the password on its next start and keeps its rows."""
    server = EmbeddedPostgres(server_dir)
    try:
        port, _ = _old_trust_folder(server)
        assert server.stop()
        assert not server.password_file.exists()
        url = server.start()
        assert _port(url) == port
        _assert_pg_locked(server, port)
        assert _kept_rows(url) == [(1, "before the password")]
    finally:
        server.stop()


def test_running_trust_server_is_locked_in_place(server_dir: Path) -> None:
    """A server of an older start, still running with trust auth, is reused and locked."""
    server = EmbeddedPostgres(server_dir)
    try:
        port, _ = _old_trust_folder(server)
        before = server.status().pid
        url = server.start()
        assert server.status().pid == before
        _assert_pg_locked(server, port)
        assert _kept_rows(url) == [(1, "before the password")]
    finally:
        server.stop()


def test_lost_password_file_is_replaced(server_dir: Path) -> None:
    """When the password file is gone, the next start sets a new password and keeps the data."""
    server = EmbeddedPostgres(server_dir)
    try:
        port, _ = _old_trust_folder(server)
        first = server.start()
        server.password_file.unlink()
        second = server.start()
        assert second != first
        _assert_pg_locked(server, port)
        assert _kept_rows(second) == [(1, "before the password")]
    finally:
        server.stop()


def test_running_open_valkey_is_locked_in_place(server_dir: Path) -> None:
    """A Valkey of an older start, running without a password, is reused, keeps its data and
    asks for the password from then on."""
    server = EmbeddedRedis(server_dir)
    server.root.mkdir(parents=True)
    port = choose_port(server.port_file)
    subprocess.run(  # the command of older starts, without a password
        [
            str(valkey_binary()),
            "--daemonize",
            "yes",
            "--pidfile",
            str(server.pid_file),
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--dir",
            str(server.root),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--logfile",
            str(server.log_file),
        ],
        check=True,
        capture_output=True,
    )
    try:
        with _anonymous(port) as anonymous:
            deadline = time.monotonic() + 20
            while True:  # until it serves, without a password as older starts ran it
                try:
                    anonymous.set("kept", "before the password")
                    break
                except (redis.ConnectionError, redis.BusyLoadingError):
                    assert time.monotonic() < deadline, "the old-style Valkey did not start"
                    time.sleep(0.05)
        before = server.status().pid
        url = server.start()
        assert server.status().pid == before
        with (
            _anonymous(port) as anonymous,
            pytest.raises(redis.AuthenticationError, match="Authentication required"),
        ):
            anonymous.get("kept")
        with redis.Redis.from_url(url) as client:
            assert client.get("kept") == b"before the password"
    finally:
        server.stop()
