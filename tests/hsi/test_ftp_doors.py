"""hsi.ftp against a stolen camera password and a hostile host: real ftplib clients, plain and
FTPS, on loopback (127.0.0.1 for the cameras, 127.0.0.2 for the intruder)."""

# ruff: noqa: S321  # the subject under test is an FTP server; ftplib is its client

from __future__ import annotations

import ftplib
import io
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hsi.ftp.server import FtpReceiver
from hsi.infra.telemetry import TelemetryConfig, render_metrics, reset_telemetry, setup_telemetry
from tests.hsi.test_ftp import (
    FRONT,
    LOOPBACK,
    PASSWORD,
    PHOTO,
    TIMEOUT,
    WRONG_PASSWORD,
    _config,
    _events,
    _tls,
)

INTRUDER = "127.0.0.2"  # Linux routes all of 127/8 to lo: a second client address


@contextmanager
def _session(
    receiver: FtpReceiver,
    user: str | None = "frontdoor",
    password: str = PASSWORD,
    source: str = LOOPBACK,
) -> Iterator[ftplib.FTP]:
    """A plain ftplib client from `source`, logged in unless `user` is None."""
    host, port = receiver.address
    ftp = ftplib.FTP(source_address=(source, 0))
    try:
        ftp.connect(host, port, timeout=TIMEOUT)
        if user is not None:
            ftp.login(user, password)
        yield ftp
    finally:
        ftp.close()


@contextmanager
def _receiver(tmp_path: Path, **overrides: Any) -> Iterator[FtpReceiver]:
    with FtpReceiver(_config(tmp_path, **overrides)) as running:
        yield running


def _names(ftp: ftplib.FTP, command: str) -> list[str]:
    lines: list[str] = []
    ftp.retrlines(command, lines.append)
    return lines


# --- door 2: a camera password uploads, nothing more -------------------------------------------


def test_camera_flow_into_a_new_dated_folder(tmp_path: Path) -> None:
    """LIST to look, MKD 2026/12/07, CWD, STOR, SIZE: the camera's upload lands on disk."""
    with _receiver(tmp_path) as running, _session(running) as ftp:
        assert _names(ftp, "NLST") == []
        for folder in ("2026", "2026/12", "2026/12/07"):
            ftp.mkd(folder)
        ftp.cwd("/2026/12/07")
        assert ftp.pwd() == "/2026/12/07"
        with PHOTO.open("rb") as photo:
            ftp.storbinary("STOR MDAlarm_20261207-120000.jpg", photo)
        assert ftp.size("MDAlarm_20261207-120000.jpg") == PHOTO.stat().st_size
        ftp.cwd("/2026/12")
        assert _names(ftp, "NLST") == ["07"]
    landed = tmp_path / "cameras" / FRONT / "2026" / "12" / "07" / "MDAlarm_20261207-120000.jpg"
    assert landed.read_bytes() == PHOTO.read_bytes()


def test_recordings_cannot_be_downloaded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """RETR, MLSD, MLST, MDTM and STAT of a path are refused and logged; FEAT offers none."""
    caplog.set_level(logging.INFO, logger="hsi.ftp")
    with _receiver(tmp_path) as running, _session(running) as ftp:
        ftp.storbinary("STOR evidence.jpg", io.BytesIO(b"recorded"))
        received: list[bytes] = []
        with pytest.raises(ftplib.error_perm, match=r"^550 RETR is not available"):
            ftp.retrbinary("RETR evidence.jpg", received.append)
        assert received == []
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.retrlines("MLSD", received.append)
        for command in ("MLST evidence.jpg", "MDTM evidence.jpg", "STAT evidence.jpg"):
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.sendcmd(command)
        features = ftp.sendcmd("FEAT")
        assert "MLST" not in features
        assert "MDTM" not in features
        assert "SIZE" in features
    refused = _events(caplog, "ftp.command_refused")
    assert any("command=RETR" in line and "camera=front_door" in line for line in refused)


def test_listings_show_folders_never_files(tmp_path: Path) -> None:
    """LIST and NLST name the folders of a folder only; a file path is not listed at all."""
    with _receiver(tmp_path) as running, _session(running) as ftp:
        ftp.mkd("2026")
        ftp.storbinary("STOR MDAlarm_20261207-120000.jpg", io.BytesIO(b"x" * 4096))
        assert _names(ftp, "NLST") == ["2026"]
        listing = _names(ftp, "LIST")
        assert len(listing) == 1
        assert listing[0].startswith("d")
        assert listing[0].endswith(" 2026")
        assert "4096" not in listing[0]
        for command in ("NLST MDAlarm_20261207-120000.jpg", "LIST MDAlarm_20261207-120000.jpg"):
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                _names(ftp, command)


def test_recordings_cannot_be_hidden_moved_or_erased(tmp_path: Path) -> None:
    """MKD .hidden, STOR into a hidden name, RNFR/RNTO of a recording, DELE and RMD fail."""
    folder = tmp_path / "cameras" / FRONT
    with _receiver(tmp_path) as running:
        with _session(running) as ftp:
            ftp.mkd("2026")
            ftp.storbinary("STOR 2026/recording.jpg", io.BytesIO(b"recorded"))
        with _session(running) as ftp:  # the intruder, later, with the camera's password
            for command in ("MKD .hidden", "MKD 2026/.hidden", "XMKD ..x"):
                with pytest.raises(ftplib.error_perm, match=r"^553"):
                    ftp.sendcmd(command)
            for name in (".x.jpg", "2026/.x/a.jpg", ".hidden/a.jpg"):
                with pytest.raises(ftplib.error_perm, match=r"^553"):
                    ftp.storbinary(f"STOR {name}", io.BytesIO(b"planted"))
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.sendcmd("RNFR 2026/recording.jpg")
            with pytest.raises(ftplib.error_perm, match=r"^503"):  # no RNFR accepted
                ftp.sendcmd("RNTO .hidden/recording.jpg")
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.delete("2026/recording.jpg")
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.rmd("2026")
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.storbinary("APPE 2026/recording.jpg", io.BytesIO(b"more"))
            # its own fresh upload may be renamed, but never to a hidden name
            ftp.storbinary("STOR upload.tmp", io.BytesIO(b"fresh"))
            ftp.sendcmd("RNFR upload.tmp")
            with pytest.raises(ftplib.error_perm, match=r"^553"):
                ftp.sendcmd("RNTO .upload.jpg")
    assert (folder / "2026" / "recording.jpg").read_bytes() == b"recorded"
    assert sorted(p.name for p in folder.rglob("*") if p.name.startswith(".")) == []
    assert (folder / "upload.tmp").read_bytes() == b"fresh"


def test_ftps_camera_flow_and_download_refused(tmp_path: Path) -> None:
    """Over FTPS the camera flow works and RETR is refused just the same."""
    tls = _tls(tmp_path)
    assert tls.cert_path is not None
    with _receiver(tmp_path, tls=tls, require_tls=True) as running:
        host, port = running.address
        ftp = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=str(tls.cert_path)))
        try:
            ftp.connect(host, port, timeout=TIMEOUT)
            ftp.login("frontdoor", PASSWORD)
            ftp.prot_p()
            ftp.mkd("2026")
            ftp.mkd("2026/12")
            ftp.cwd("2026")
            ftp.storbinary("STOR secure.jpg", io.BytesIO(b"s" * 1000))
            assert _names(ftp, "NLST") == ["12"]
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.retrbinary("RETR secure.jpg", lambda _: None)
        finally:
            ftp.close()
    assert (tmp_path / "cameras" / FRONT / "2026" / "secure.jpg").stat().st_size == 1000


# --- door 2: the daily quota -----------------------------------------------------------------


def test_daily_file_quota(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Past the files per day an upload gets 552; the warning is logged once; others go on."""
    caplog.set_level(logging.INFO, logger="hsi.ftp")
    folder = tmp_path / "cameras" / FRONT
    with _receiver(tmp_path, quota_files_per_day=2) as running:
        with _session(running) as ftp:
            ftp.storbinary("STOR a.jpg", io.BytesIO(b"a"))
            ftp.storbinary("STOR b.jpg", io.BytesIO(b"b"))
            for name in ("c.jpg", "d.jpg"):
                with pytest.raises(ftplib.error_perm, match=r"^552 .*quota"):
                    ftp.storbinary(f"STOR {name}", io.BytesIO(b"c"))
        # a new connection does not reset the day
        with _session(running) as ftp, pytest.raises(ftplib.error_perm, match=r"^552"):
            ftp.storbinary("STOR e.jpg", io.BytesIO(b"e"))
        with _session(running, "garage", "G4rage-S3cret-xyz") as ftp:
            ftp.storbinary("STOR g.jpg", io.BytesIO(b"g"))
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg", "b.jpg"]
    warnings = [r for r in caplog.records if r.getMessage() == "ftp.quota_exceeded"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    line = _events(caplog, "ftp.quota_exceeded")[0]
    assert "camera=front_door" in line
    assert "limit=files" in line


def test_daily_byte_quota(tmp_path: Path) -> None:
    """Once the day's bytes reach the quota the next upload is refused with 552."""
    with _receiver(tmp_path, quota_bytes_per_day=3000) as running, _session(running) as ftp:
        ftp.storbinary("STOR a.mkv", io.BytesIO(b"a" * 2000))
        ftp.storbinary("STOR b.mkv", io.BytesIO(b"b" * 2000))  # crosses the limit, completes
        with pytest.raises(ftplib.error_perm, match=r"^552 .*\(bytes\)"):
            ftp.storbinary("STOR c.mkv", io.BytesIO(b"c"))
    assert not (tmp_path / "cameras" / FRONT / "c.mkv").exists()


# --- door 3: slots, login deadline, brute force --------------------------------------------------


def test_per_address_cap_leaves_other_addresses_in(tmp_path: Path) -> None:
    """Past max_connections_per_ip one address gets 421; a camera elsewhere logs in."""
    with (
        _receiver(tmp_path, max_connections_per_ip=2) as running,
        _session(running, None, source=INTRUDER),
        _session(running, None, source=INTRUDER),
    ):
        with (
            pytest.raises(ftplib.error_temp, match=r"^421 .*same IP"),
            _session(running, None, source=INTRUDER),
        ):
            pass
        with _session(running) as camera:
            camera.storbinary("STOR a.jpg", io.BytesIO(b"a"))
    assert (tmp_path / "cameras" / FRONT / "a.jpg").read_bytes() == b"a"


def _closed_by_server(sock: socket.socket, deadline: float) -> bytes:
    """Keep sending NOOP until the server closes the connection; everything it said."""
    said = b""
    sock.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            sock.sendall(b"NOOP\r\n")
        except OSError:
            return said
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return said
        if not chunk:
            return said
        said += chunk
    raise AssertionError(f"the server kept the connection open: {said!r}")


def test_busy_connection_must_log_in_in_time(tmp_path: Path) -> None:
    """NOOPs do not keep a connection that never logs in past login_timeout; a logged-in
    camera stays beyond it."""
    with _receiver(tmp_path, login_timeout=0.5) as running:
        started = time.monotonic()
        with socket.create_connection(running.address, timeout=TIMEOUT) as sock:
            said = _closed_by_server(sock, started + TIMEOUT)
        assert b"421 Login timed out." in said
        with _session(running) as camera:
            logged_in = time.monotonic()
            while time.monotonic() < logged_in + 1.0:  # twice the login timeout
                camera.voidcmd("NOOP")
            camera.storbinary("STOR late.jpg", io.BytesIO(b"late"))
    assert (tmp_path / "cameras" / FRONT / "late.jpg").read_bytes() == b"late"


@pytest.fixture
def _telemetry() -> Iterator[None]:
    reset_telemetry()
    setup_telemetry(TelemetryConfig())
    yield
    reset_telemetry()


def _counter(name: str) -> float:
    body, _ = render_metrics()
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


@pytest.mark.usefixtures("_telemetry")
def test_brute_force_bans_the_address(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Wrong passwords across connections ban the address: then even the right password gets
    421 there, while a camera at another address logs in; ftp.ban is logged and counted."""
    caplog.set_level(logging.DEBUG)
    failures = 4
    with _receiver(tmp_path, ban_after_failures=failures, login_failure_delay=0.01) as running:
        replies: list[str] = []
        while not replies or not replies[-1].startswith("421"):
            assert len(replies) < failures, replies
            with _session(running, None, source=INTRUDER) as ftp:
                for _ in range(2):
                    try:
                        ftp.login("frontdoor", WRONG_PASSWORD)
                    except ftplib.Error as exc:
                        replies.append(str(exc))
                        if replies[-1].startswith("421"):
                            break
        assert [reply[:3] for reply in replies] == ["530"] * (failures - 1) + ["421"]
        with pytest.raises(ftplib.error_temp, match=r"^421"), _session(running, source=INTRUDER):
            pass
        with _session(running) as camera:
            camera.storbinary("STOR after-ban.jpg", io.BytesIO(b"ok"))
    assert (tmp_path / "cameras" / FRONT / "after-ban.jpg").read_bytes() == b"ok"
    bans = [r for r in caplog.records if r.getMessage() == "ftp.ban"]
    assert len(bans) == 1
    assert bans[0].levelno == logging.WARNING
    assert f"remote_ip={INTRUDER}" in _events(caplog, "ftp.ban")[0]
    assert WRONG_PASSWORD not in caplog.text
    assert PASSWORD not in caplog.text
    assert _counter("hsi_ftp_bans_total") == 1
    assert _counter("hsi_ftp_connections_refused_total") >= 1


def test_slow_wrong_login_reply_does_not_outlast_the_login_deadline(tmp_path: Path) -> None:
    """A wrong login waiting for its delayed 530 is still closed at login_timeout."""
    with _receiver(tmp_path, login_timeout=0.5, login_failure_delay=60.0) as running:
        started = time.monotonic()
        with socket.create_connection(running.address, timeout=TIMEOUT) as sock:
            sock.sendall(f"USER frontdoor\r\nPASS {WRONG_PASSWORD}\r\n".encode())
            sock.settimeout(TIMEOUT)
            said = b""
            while chunk := sock.recv(4096):
                said += chunk
        assert time.monotonic() - started < TIMEOUT
        assert b"331" in said
        assert b"530" not in said
