"""hsi.ftp: a real pyftpdlib server on loopback, driven by real clients (ftplib, curl)."""

# ruff: noqa: S321  # the subject under test is an FTP server; ftplib is its client

from __future__ import annotations

import asyncio
import ftplib
import io
import json
import logging
import os
import random
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hsi.ftp.config import (
    FTPAccount,
    FTPConfig,
    FTPConfigError,
    FTPError,
    parse_accounts,
    parse_port_range,
)
from hsi.ftp.server import FtpReceiver
from hsi.infra.certificates import generate_self_signed
from hsi.infra.tls import TLSConfig
from hsi.logs.setup import JsonFormatter, PlainFormatter
from hsi.settings import components
from hsi.settings.model import Settings
from tests.tools import require_tool

PHOTO = Path(__file__).parents[1] / "data" / "photos" / "cat-chelsea.jpg"
LOOPBACK = "127.0.0.1"
TIMEOUT = 5.0
PASSWORD = "Fr0nt-d00r-S3cret"
GARAGE_PASSWORD = "G4rage-S3cret-xyz"
WRONG_PASSWORD = "Wr0ng-Gu3ss-123"
FRONT = "Front Door"


def _config(tmp_path: Path, **overrides: Any) -> FTPConfig:
    values: dict[str, Any] = {
        "host": LOOPBACK,
        "port": 0,
        "passive_ports": None,
        "accounts": (
            FTPAccount("frontdoor", PASSWORD, FRONT),
            FTPAccount("garage", GARAGE_PASSWORD, "Garage"),
        ),
        "camera_root": tmp_path / "cameras",
        "max_upload_bytes": 5 * 1024 * 1024,
        "login_failure_delay": 0.05,
    }
    values.update(overrides)
    return FTPConfig(**values)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[FtpReceiver]:
    """A plain-FTP receiver with two cameras on a free loopback port."""
    with FtpReceiver(_config(tmp_path)) as running:
        yield running


@contextmanager
def _client(
    receiver: FtpReceiver, user: str = "frontdoor", password: str = PASSWORD
) -> Iterator[ftplib.FTP]:
    host, port = receiver.address
    ftp = ftplib.FTP()
    ftp.connect(host, port, timeout=TIMEOUT)
    try:
        ftp.login(user, password)
        yield ftp
    finally:
        ftp.close()


def _wait_for(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def _curl() -> str:
    return require_tool("curl", hint="install curl (Debian: apt-get install curl)")


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    """Every record of `event`, rendered by HSI's plain formatter (event and fields)."""
    formatter = PlainFormatter()
    return [formatter.format(r) for r in caplog.records if r.getMessage() == event]


def _free_port_range(count: int) -> tuple[int, int]:
    for _ in range(50):
        base = random.randint(40_000, 59_000)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind((LOOPBACK, port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base, base + count - 1
    raise AssertionError("no free port range found")


# --- uploads ------------------------------------------------------------------------------------


def test_upload_lands_in_the_camera_folder(
    receiver: FtpReceiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A camera's STOR lands byte-identical in its folder and logs ftp.upload_received."""
    caplog.set_level(logging.INFO, logger="hsi.ftp")
    with _client(receiver) as ftp, PHOTO.open("rb") as photo:
        ftp.storbinary("STOR MDAlarm_20260115-120000.jpg", photo)
    landed = tmp_path / "cameras" / FRONT / "MDAlarm_20260115-120000.jpg"
    assert landed.read_bytes() == PHOTO.read_bytes()
    _wait_for(lambda: bool(_events(caplog, "ftp.upload_received")))
    line = _events(caplog, "ftp.upload_received")[0]
    assert "camera=front_door" in line
    assert "path=MDAlarm_20260115-120000.jpg" in line
    assert f"size={PHOTO.stat().st_size}" in line


def test_upload_into_new_subfolders_foscam_style(receiver: FtpReceiver, tmp_path: Path) -> None:
    """MKD, CWD and a temporary name renamed afterwards all work inside the camera folder."""
    with _client(receiver) as ftp, PHOTO.open("rb") as photo:
        ftp.mkd("snap")
        ftp.cwd("snap")
        ftp.storbinary("STOR upload.tmp", photo)
        ftp.rename("upload.tmp", "MDAlarm_20260115-120001.jpg")
        assert ftp.pwd() == "/snap"
    landed = tmp_path / "cameras" / FRONT / "snap" / "MDAlarm_20260115-120001.jpg"
    assert landed.read_bytes() == PHOTO.read_bytes()
    assert not (landed.parent / "upload.tmp").exists()


def test_curl_upload_creates_folders(receiver: FtpReceiver, tmp_path: Path) -> None:
    """`curl -T --ftp-create-dirs` uploads into folders it creates under the camera folder."""
    curl = _curl()
    host, port = receiver.address
    result = subprocess.run(
        [
            curl, "--silent", "--show-error", "--max-time", "10", "--ftp-create-dirs",
            "--user", f"frontdoor:{PASSWORD}", "-T", str(PHOTO),
            f"ftp://{host}:{port}/record/2026/",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    landed = tmp_path / "cameras" / FRONT / "record" / "2026" / PHOTO.name
    assert landed.read_bytes() == PHOTO.read_bytes()


# --- authentication and confinement ---------------------------------------------------------------


def test_wrong_password_and_unknown_user_are_refused(receiver: FtpReceiver) -> None:
    """A wrong password, another camera's password and an unknown user all get 530."""
    for user, password in (
        ("frontdoor", WRONG_PASSWORD),
        ("frontdoor", GARAGE_PASSWORD),
        ("nobody", PASSWORD),
        ("anonymous", "guest@example.org"),
    ):
        with pytest.raises(ftplib.error_perm, match=r"^530"), _client(receiver, user, password):
            pass


def test_account_cannot_leave_its_camera_folder(receiver: FtpReceiver, tmp_path: Path) -> None:
    """CWD .., LIST /, RETR/STOR through ../ and a symlink never reach another folder."""
    cameras = tmp_path / "cameras"
    (cameras / "Garage" / "secret.jpg").write_bytes(b"garage evidence")
    (cameras / "root.txt").write_text("camera root")
    (cameras / FRONT / "escape").symlink_to(cameras / "Garage", target_is_directory=True)
    with _client(receiver) as ftp:
        ftp.cwd("..")
        assert ftp.pwd() == "/"
        listing: list[str] = []
        ftp.retrlines("LIST /", listing.append)
        names = ftp.nlst("/")
        assert not any("Garage" in line or "root.txt" in line for line in listing)
        assert not any(name.endswith(("Garage", "root.txt", "secret.jpg")) for name in names)
        for command in ("CWD /../Garage", "CWD escape", "SIZE escape/secret.jpg"):
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.sendcmd(command)
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.retrlines("LIST escape", listing.append)
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.retrbinary("RETR ../Garage/secret.jpg", lambda _: None)
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.storbinary("STOR escape/planted.jpg", io.BytesIO(b"x" * 100))
        ftp.storbinary("STOR ../outside.jpg", io.BytesIO(b"y" * 100))
    assert (cameras / FRONT / "outside.jpg").read_bytes() == b"y" * 100
    assert not (cameras / "outside.jpg").exists()
    assert not (cameras / "Garage" / "planted.jpg").exists()
    assert sorted(p.name for p in (cameras / "Garage").iterdir()) == ["secret.jpg"]


def test_delete_and_overwrite_are_refused(receiver: FtpReceiver, tmp_path: Path) -> None:
    """DELE, RMD, APPE and replacing a file by STOR or RNTO are refused; the upload stays."""
    folder = tmp_path / "cameras" / FRONT
    with _client(receiver) as ftp:
        ftp.storbinary("STOR a.jpg", io.BytesIO(b"first"))
        ftp.storbinary("STOR b.jpg", io.BytesIO(b"second"))
        ftp.mkd("old")
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.delete("a.jpg")
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.rmd("old")
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.storbinary("APPE a.jpg", io.BytesIO(b"more"))
        with pytest.raises(ftplib.error_perm, match=r"^553"):
            ftp.storbinary("STOR a.jpg", io.BytesIO(b"replaced"))
        ftp.sendcmd("RNFR b.jpg")
        with pytest.raises(ftplib.error_perm, match=r"^553"):
            ftp.sendcmd("RNTO a.jpg")
    assert (folder / "a.jpg").read_bytes() == b"first"
    assert (folder / "b.jpg").read_bytes() == b"second"
    assert (folder / "old").is_dir()


def test_overwrite_allowed_when_configured(tmp_path: Path) -> None:
    """With allow_overwrite a camera that reuses one file name replaces it."""
    with FtpReceiver(_config(tmp_path, allow_overwrite=True)) as running, _client(running) as ftp:
        ftp.storbinary("STOR snapshot.jpg", io.BytesIO(b"old"))
        ftp.storbinary("STOR snapshot.jpg", io.BytesIO(b"new"))
    assert (tmp_path / "cameras" / FRONT / "snapshot.jpg").read_bytes() == b"new"


def test_password_never_reaches_the_logs(
    receiver: FtpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, logins, failed logins, uploads and a malformed PASS line leak no password."""
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ftplib.error_perm), _client(receiver, "frontdoor", WRONG_PASSWORD):
        pass
    with _client(receiver) as ftp:
        ftp.storbinary("STOR a.jpg", io.BytesIO(b"z" * 2048))
        with pytest.raises(ftplib.error_perm):
            ftp.sendcmd(f" PASS {PASSWORD}")  # a broken client: no command word
        ftp.sendcmd(f"USER {GARAGE_PASSWORD}")  # a password typed as the user name
        with pytest.raises(ftplib.error_perm, match=r"^530"):
            ftp.sendcmd(f"PASS {WRONG_PASSWORD}")
    _wait_for(lambda: bool(_events(caplog, "ftp.login_failed")))
    assert _events(caplog, "ftp.login")
    assert any(r.name == "hsi.ftp.protocol" for r in caplog.records)
    plain, as_json = PlainFormatter(), JsonFormatter("hsi")
    for record in caplog.records:
        rendered = " ".join((plain.format(record), as_json.format(record), repr(record.__dict__)))
        for secret in (PASSWORD, GARAGE_PASSWORD):
            assert secret not in rendered, record.getMessage()
    assert WRONG_PASSWORD not in caplog.text


# --- size limit ---------------------------------------------------------------------------------


def test_upload_over_the_limit_is_refused_and_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Past max_upload_bytes the upload ends with 552 and its partial file is deleted."""
    caplog.set_level(logging.INFO, logger="hsi.ftp")
    limit = 64 * 1024
    folder = tmp_path / "cameras" / FRONT
    with FtpReceiver(_config(tmp_path, max_upload_bytes=limit)) as running:
        with _client(running) as ftp:
            reply = ""
            try:
                ftp.storbinary("STOR big.mkv", io.BytesIO(os.urandom(4 * 1024 * 1024)))
            except ftplib.error_perm as exc:
                reply = str(exc)
            except OSError:  # the server closed the data connection while we were sending
                with pytest.raises(ftplib.error_perm) as refused:
                    ftp.getresp()
                reply = str(refused.value)
            assert reply.startswith("552"), reply
            _wait_for(lambda: not (folder / "big.mkv").exists())
            exact = os.urandom(limit)
            ftp.storbinary("STOR exact.mkv", io.BytesIO(exact))
        assert (folder / "exact.mkv").read_bytes() == exact
    lines = _events(caplog, "ftp.upload_too_large")
    assert len(lines) == 1
    assert "path=big.mkv" in lines[0]
    assert "removed=true" in lines[0]


# --- FTPS ---------------------------------------------------------------------------------------


def _tls(tmp_path: Path) -> TLSConfig:
    cert, key = tmp_path / "certs" / "ftp.crt", tmp_path / "certs" / "ftp.key"
    cert.parent.mkdir()
    generate_self_signed(cert, key, hostnames=["localhost"], ip_addresses=[LOOPBACK], days=30)
    return TLSConfig(mode="provided", cert_path=cert, key_path=key)


def _tls_client(receiver: FtpReceiver, cert: Path) -> ftplib.FTP_TLS:
    host, port = receiver.address
    ftp = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=str(cert)))
    ftp.connect(host, port, timeout=TIMEOUT)
    return ftp


def test_ftps_upload_with_hsi_certificate(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """AUTH TLS with HSI's certificate, then an encrypted data channel, uploads the photo."""
    caplog.set_level(logging.INFO, logger="hsi.ftp")
    tls = _tls(tmp_path)
    assert tls.cert_path is not None
    with FtpReceiver(_config(tmp_path, tls=tls)) as running:
        ftp = _tls_client(running, tls.cert_path)
        try:
            ftp.login("frontdoor", PASSWORD)
            ftp.prot_p()
            with PHOTO.open("rb") as photo:
                ftp.storbinary("STOR secure.jpg", photo)
        finally:
            ftp.close()
    assert (tmp_path / "cameras" / FRONT / "secure.jpg").read_bytes() == PHOTO.read_bytes()
    assert any("tls=true" in line for line in _events(caplog, "ftp.login"))


def test_curl_ftps_upload(tmp_path: Path) -> None:
    """`curl --ssl-reqd` (explicit FTPS) verifies HSI's certificate and uploads."""
    curl = _curl()
    tls = _tls(tmp_path)
    assert tls.cert_path is not None
    with FtpReceiver(_config(tmp_path, tls=tls, require_tls=True)) as running:
        host, port = running.address
        result = subprocess.run(
            [
                curl, "--silent", "--show-error", "--max-time", "10", "--ssl-reqd",
                "--cacert", str(tls.cert_path), "--user", f"frontdoor:{PASSWORD}",
                "-T", str(PHOTO), f"ftp://{host}:{port}/",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cameras" / FRONT / PHOTO.name).read_bytes() == PHOTO.read_bytes()


def test_require_tls_refuses_plain_login_and_clear_data(tmp_path: Path) -> None:
    """With require_tls a plain login is refused, and so is a clear data channel after AUTH."""
    tls = _tls(tmp_path)
    assert tls.cert_path is not None
    with FtpReceiver(_config(tmp_path, tls=tls, require_tls=True)) as running:
        with pytest.raises(ftplib.error_perm, match=r"^550"), _client(running):
            pass
        ftp = _tls_client(running, tls.cert_path)
        try:
            ftp.login("frontdoor", PASSWORD)  # AUTH TLS first
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.storbinary("STOR clear.jpg", io.BytesIO(b"x" * 100))
        finally:
            ftp.close()
    assert not (tmp_path / "cameras" / FRONT / "clear.jpg").exists()


# --- passive ports ------------------------------------------------------------------------------


def test_passive_port_range_and_masquerade_address(tmp_path: Path) -> None:
    """PASV replies name a port inside the configured range and the masquerade address."""
    low, high = _free_port_range(3)
    config = _config(tmp_path, passive_ports=(low, high), masquerade_address="192.0.2.10")
    with FtpReceiver(config) as running, _client(running) as ftp:
        for _ in range(3):
            host, port = ftplib.parse227(ftp.sendcmd("PASV"))
            assert host == "192.0.2.10"
            assert low <= port <= high
        ftp.storbinary("STOR through-range.jpg", io.BytesIO(b"p" * 1000))
    assert (tmp_path / "cameras" / FRONT / "through-range.jpg").stat().st_size == 1000


# --- lifecycle ----------------------------------------------------------------------------------


async def test_run_serves_until_the_stop_event(tmp_path: Path) -> None:
    """run(stop_event) serves uploads, then closes the port when the event is set."""
    receiver = FtpReceiver(_config(tmp_path))
    stop = asyncio.Event()
    task = asyncio.create_task(receiver.run(stop))
    deadline = time.monotonic() + TIMEOUT
    while not receiver.running:
        assert time.monotonic() < deadline, "receiver did not start"
        await asyncio.sleep(0.01)
    address = receiver.address

    def upload() -> None:
        with _client(receiver) as ftp:
            ftp.storbinary("STOR async.jpg", io.BytesIO(b"a" * 512))

    await asyncio.to_thread(upload)
    stop.set()
    await asyncio.wait_for(task, TIMEOUT)
    assert not receiver.running
    assert (tmp_path / "cameras" / FRONT / "async.jpg").stat().st_size == 512
    with pytest.raises(ConnectionRefusedError), socket.create_connection(address, timeout=1):
        pass


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    """A taken port gives an FTPError that names the address and the setting to change."""
    with FtpReceiver(_config(tmp_path)) as first:
        _, port = first.address
        second = FtpReceiver(_config(tmp_path, port=port))
        with pytest.raises(FTPError, match="FTP_PORT"):
            second.start()
        assert not second.running


def test_missing_camera_folders_are_created(receiver: FtpReceiver, tmp_path: Path) -> None:
    """Starting the receiver creates every account's folder under the camera root."""
    assert (tmp_path / "cameras" / FRONT).is_dir()
    assert (tmp_path / "cameras" / "Garage").is_dir()


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("60000-60100", (60000, 60100)),
        (" 2000 - 2002 ", (2000, 2002)),
        ("50000", (50000, 50000)),
        (None, None),
    ],
)
def test_parse_port_range(text: str | None, expected: tuple[int, int] | None) -> None:
    """FTP_PASSIVE_PORTS accepts LOW-HIGH, one port, or nothing (the kernel picks)."""
    assert parse_port_range(text) == expected


@pytest.mark.parametrize("text", ["60100-60000", "0-10", "abc", "1-70000"])
def test_parse_port_range_refuses(text: str) -> None:
    """A reversed, out-of-range or non-numeric range names the variable."""
    with pytest.raises(FTPConfigError, match="FTP_PASSIVE_PORTS"):
        parse_port_range(text)


def test_parse_accounts_both_forms() -> None:
    """The list form and the JSON form give the same accounts; folder defaults to the user."""
    listed = parse_accounts("frontdoor:pa:ss:Front Door, garage:g-pw:Garage")
    as_json = parse_accounts(
        json.dumps(
            {
                "frontdoor": {"password": "pa:ss", "folder": "Front Door"},
                "garage": {"password": "g-pw", "folder": "Garage"},
            }
        )
    )
    assert listed == as_json
    assert [(a.user, a.password, a.folder, a.camera) for a in listed] == [
        ("frontdoor", "pa:ss", "Front Door", "front_door"),
        ("garage", "g-pw", "Garage", "garage"),
    ]
    assert parse_accounts('{"porch": {"password": "x,y"}}')[0].folder == "porch"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("frontdoor:Sup3rSecret", "user:password:folder"),
        ('{"frontdoor": "Sup3rSecret"}', "password"),
        ('{"frontdoor": {"password": "Sup3rSecret", ', "not valid JSON"),
        ("frontdoor:Sup3rSecret:../Garage", "one folder name"),
        ("anonymous:Sup3rSecret:Porch", "anonymous"),
        ("a:Sup3rSecret:A,a:Sup3rSecret:B", "more than once"),
        ("porch:Sup3rSecret:!!!", "no letters or digits"),
    ],
)
def test_bad_accounts_never_echo_the_password(value: str, message: str) -> None:
    """Every FTP_ACCOUNTS error explains the format and never repeats the password."""
    with pytest.raises(FTPConfigError, match="FTP_ACCOUNTS") as info:
        FTPConfig(accounts=parse_accounts(value))
    assert message in str(info.value)
    assert "Sup3rSecret" not in str(info.value)


def test_account_repr_hides_the_password() -> None:
    """An account printed or logged by accident shows no password."""
    account = FTPAccount("frontdoor", PASSWORD, FRONT)
    assert PASSWORD not in repr(account)
    assert PASSWORD not in repr(FTPConfig(accounts=(account,)))


def test_require_tls_needs_tls() -> None:
    """require_tls without an enabled TLS configuration is refused with the fix."""
    account = FTPAccount("frontdoor", PASSWORD, FRONT)
    with pytest.raises(FTPConfigError, match="TLS_MODE"):
        FTPConfig(accounts=(account,), require_tls=True)
    with pytest.raises(FTPConfigError, match="TLS_MODE"):
        FTPConfig(accounts=(account,), require_tls=True, tls=TLSConfig(mode="disabled"))


def test_from_settings(tmp_path: Path) -> None:
    """The FTP_* settings map onto FTPConfig; FTPS follows TLS_MODE; MB become bytes."""
    settings = Settings(_env_file=None, data_dir=tmp_path, tls_mode="self_signed").model_copy(
        update={
            "ftp_host": LOOPBACK,
            "ftp_port": 2121,
            "ftp_passive_ports": "61000-61010",
            "ftp_accounts": "frontdoor:pw-1:Front Door",
            "ftp_max_upload_mb": 3,
            "ftp_require_tls": True,
            "ftp_masquerade_address": "192.168.1.10",
            "ftp_quota_mb_per_day": 7,
            "ftp_quota_files_per_day": 9,
            "ftp_max_connections_per_ip": 4,
            "ftp_login_timeout_seconds": 12.5,
            "ftp_ban_after_failures": 6,
            "ftp_ban_window_seconds": 60.0,
            "ftp_ban_seconds": 120.0,
        }
    )
    config = components.ftp_config(settings)
    assert (config.host, config.port, config.passive_ports) == (LOOPBACK, 2121, (61000, 61010))
    assert config.accounts == (FTPAccount("frontdoor", "pw-1", FRONT),)
    assert config.camera_root == tmp_path / "cameras"
    assert config.max_upload_bytes == 3 * 1024 * 1024
    assert config.ftps
    assert config.require_tls
    assert config.tls is not None
    assert config.tls.cert_dir == tmp_path / "certs"
    assert config.masquerade_address == "192.168.1.10"
    assert (config.quota_bytes_per_day, config.quota_files_per_day) == (7 * 1024 * 1024, 9)
    assert (config.max_connections_per_ip, config.login_timeout) == (4, 12.5)
    assert (config.ban_after_failures, config.ban_window, config.ban_seconds) == (6, 60.0, 120.0)


def test_guard_defaults_leave_room_for_cameras_behind_nat() -> None:
    """Defaults: 8 connections per address, a 30 s login deadline, 10 failures ban for 15 min,
    and a quota of 20000 files and 20000 MB a day that a busy camera never reaches."""
    settings = Settings(_env_file=None)
    assert settings.ftp_max_connections_per_ip == 8
    assert settings.ftp_login_timeout_seconds == 30.0
    assert (settings.ftp_ban_after_failures, settings.ftp_ban_seconds) == (10, 900.0)
    assert (settings.ftp_quota_mb_per_day, settings.ftp_quota_files_per_day) == (20_000, 20_000)
