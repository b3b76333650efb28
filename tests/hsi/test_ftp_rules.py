"""hsi.ftp's pure decisions: command policy, hidden names, daily quota, login back-off and bans."""

from __future__ import annotations

from datetime import date

import pytest

from hsi.ftp.config import FTPAccount, FTPConfig, FTPConfigError, parse_accounts
from hsi.ftp.guard import BACKOFF_CAP_SECONDS, BanPolicy, LoginGuard, backoff_delay
from hsi.ftp.policy import folder_listing_line, hidden_component, refusal, visible_folders
from hsi.ftp.quota import DayUsage, QuotaBook, QuotaLimits, admit_upload, record_bytes
from hsi.settings.model import Settings

DAY = date(2026, 12, 7)
NEXT_DAY = date(2026, 12, 8)


# --- commands ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "has_argument", "code"),
    [
        ("STOR", True, None),
        ("MKD", True, None),
        ("CWD", True, None),
        ("SIZE", True, None),
        ("LIST", False, None),
        ("NLST", True, None),
        ("PASV", False, None),
        ("EPSV", False, None),
        ("AUTH", True, None),
        ("PROT", True, None),
        ("OPTS", True, None),
        ("STAT", False, None),
        ("RNFR", True, None),  # the session then allows only its own uploads
        ("RETR", True, "550"),
        ("DELE", True, "550"),
        ("RMD", True, "550"),
        ("XRMD", True, "550"),
        ("APPE", True, "550"),
        ("STOU", False, "550"),
        ("MLSD", False, "550"),
        ("MLST", True, "550"),
        ("MDTM", True, "550"),
        ("MFMT", True, "550"),
        ("SITE CHMOD", True, "550"),
        ("SITE HELP", False, "502"),
        ("REST", True, "502"),
        ("REIN", False, "502"),
        ("STAT", True, "550"),
        ("XYZZY", False, None),  # unknown: pyftpdlib answers 500
    ],
)
def test_command_policy(command: str, has_argument: bool, code: str | None) -> None:
    """Camera accounts may upload and find folders; reading, moving and erasing are refused."""
    reply = refusal(command, has_argument)
    if code is None:
        assert reply is None
    else:
        assert reply is not None
        assert reply.startswith(code + " ")


@pytest.mark.parametrize(
    ("path", "hidden"),
    [
        ("/2026/12/07/MDAlarm_20261207-120000.jpg", None),
        ("/snap", None),
        ("/", None),
        ("/.hidden", ".hidden"),
        ("/.hidden/a.jpg", ".hidden"),
        ("/2026/..x/a.jpg", "..x"),
        ("/record/.a.mkv", ".a.mkv"),
        ("/a.jpg.", None),
    ],
)
def test_hidden_component(path: str, hidden: str | None) -> None:
    """Any path component starting with '.' is hidden from the watcher and named."""
    assert hidden_component(path) == hidden


def test_listing_shows_folders_only_with_neutral_details() -> None:
    """Listings are sorted, skip hidden folders and carry no real size or date."""
    assert visible_folders(["b", ".hidden", "a"]) == ["a", "b"]
    line = folder_listing_line("2026")
    assert line.startswith("d")
    assert line.endswith(" 2026\r\n")
    assert " 0 Jan 01  2000 " in line


# --- quota -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "limits", "today", "allowed", "limit", "warn", "files_after"),
    [
        (None, QuotaLimits(100, 2), DAY, True, None, False, 1),
        (DayUsage(DAY, files=1), QuotaLimits(100, 2), DAY, True, None, False, 2),
        (DayUsage(DAY, files=2), QuotaLimits(100, 2), DAY, False, "files", True, 2),
        (DayUsage(DAY, files=2, warned=True), QuotaLimits(100, 2), DAY, False, "files", False, 2),
        (DayUsage(DAY, files=1, bytes=100), QuotaLimits(100, 5), DAY, False, "bytes", True, 1),
        (DayUsage(DAY, files=1, bytes=99), QuotaLimits(100, 5), DAY, True, None, False, 2),
        # a new UTC day starts from zero (and warns again)
        (DayUsage(DAY, files=9, bytes=999, warned=True), QuotaLimits(100, 2), NEXT_DAY,
         True, None, False, 1),
        # 0 means no limit
        (DayUsage(DAY, files=10**6, bytes=10**12), QuotaLimits(0, 0), DAY, True, None, False,
         10**6 + 1),
    ],
)  # fmt: skip
def test_admit_upload(
    usage: DayUsage | None,
    limits: QuotaLimits,
    today: date,
    allowed: bool,
    limit: str | None,
    warn: bool,
    files_after: int,
) -> None:
    """An upload is admitted until today's files or bytes reach the limit; warn once a day."""
    verdict = admit_upload(usage, limits, today)
    assert (verdict.allowed, verdict.limit, verdict.warn) == (allowed, limit, warn)
    assert verdict.usage.day == today
    assert verdict.usage.files == files_after
    assert verdict.usage.warned == (not allowed)


def test_record_bytes_counts_per_day() -> None:
    """Received bytes add up within a day and start again on the next."""
    usage = record_bytes(None, 40, DAY)
    usage = record_bytes(usage, 60, DAY)
    assert (usage.day, usage.bytes) == (DAY, 100)
    assert record_bytes(usage, 5, NEXT_DAY) == DayUsage(NEXT_DAY, bytes=5)
    assert record_bytes(usage, -1, DAY).bytes == 100  # an unknown size adds nothing


def test_quota_book_keeps_accounts_apart() -> None:
    """Each account has its own day's count; the clock decides the UTC day."""
    now = [1_796_601_600.0]  # 2026-12-07T00:00:00Z
    book = QuotaBook(QuotaLimits(bytes_per_day=0, files_per_day=1), clock=lambda: now[0])
    assert book.admit("frontdoor").allowed
    assert not book.admit("frontdoor").allowed
    assert book.admit("garage").allowed
    now[0] += 86_400
    assert book.usage("frontdoor") == DayUsage(NEXT_DAY)
    assert book.admit("frontdoor").allowed


# --- login back-off and bans ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("base", "failures", "delay"),
    [
        (3.0, 1, 3.0),
        (3.0, 2, 6.0),
        (3.0, 3, 12.0),
        (3.0, 4, 24.0),
        (3.0, 5, BACKOFF_CAP_SECONDS),
        (3.0, 500, BACKOFF_CAP_SECONDS),
        (0.0, 9, 0.0),
        (60.0, 3, 60.0),  # a base above the cap stays the base
    ],
)
def test_backoff_delay(base: float, failures: int, delay: float) -> None:
    """The wait before a 530 doubles per recent failure of the address, up to a cap."""
    assert backoff_delay(base, failures) == delay


def test_guard_bans_after_failures_within_the_window() -> None:
    """The Nth failure within the window bans the address for ban_seconds; others unaffected."""
    clock = Clock()
    guard = LoginGuard(BanPolicy(after_failures=3, window=60, ban_seconds=100), 1.0, clock)
    verdicts = [guard.failed("192.0.2.7") for _ in range(3)]
    assert [v.banned for v in verdicts] == [False, False, True]
    assert [v.failures for v in verdicts] == [1, 2, 3]
    assert [v.delay for v in verdicts] == [1.0, 2.0, 4.0]
    assert guard.banned_for("192.0.2.7") == 100
    assert guard.banned_for("192.0.2.8") == 0
    clock.now += 99
    assert guard.banned_for("192.0.2.7") == pytest.approx(1)
    clock.now += 1
    assert guard.banned_for("192.0.2.7") == 0
    assert not guard.failed("192.0.2.7").banned  # a fresh count after the ban


def test_guard_forgets_failures_outside_the_window() -> None:
    """Failures spread wider than the window never add up to a ban."""
    clock = Clock()
    guard = LoginGuard(BanPolicy(after_failures=3, window=60, ban_seconds=100), 1.0, clock)
    for _ in range(10):
        assert not guard.failed("192.0.2.7").banned
        clock.now += 31
    assert guard.banned_for("192.0.2.7") == 0


def test_guard_zero_never_bans_and_memory_is_bounded() -> None:
    """after_failures 0 never bans; many addresses keep at most max_tracked entries."""
    clock = Clock()
    guard = LoginGuard(BanPolicy(after_failures=0), 0.0, clock, max_tracked=50)
    assert not any(guard.failed("192.0.2.9").banned for _ in range(100))
    for index in range(500):
        guard.failed(f"10.0.{index // 256}.{index % 256}")
    assert guard.tracked <= 50


# --- accounts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "a:pw-1:Front Door,b:pw-2:front_door",
        "a:pw-1:Garage,b:pw-2:garage",
        "a:pw-1:Porch,b:pw-2:Porch",
    ],
)
def test_two_accounts_for_one_camera_id_are_refused(value: str) -> None:
    """Folders that normalize to one camera id are refused in FTPConfig and in Settings."""
    with pytest.raises(FTPConfigError, match="camera id") as info:
        FTPConfig(accounts=parse_accounts(value))
    assert "pw-1" not in str(info.value)
    with pytest.raises(ValueError, match="camera id"):
        Settings(_env_file=None, ftp_accounts=value)


def test_distinct_camera_ids_are_accepted() -> None:
    """Different folders giving different camera ids are fine."""
    config = FTPConfig(
        accounts=(FTPAccount("a", "pw-1", "Front Door"), FTPAccount("b", "pw-2", "Back Door"))
    )
    assert [a.camera for a in config.accounts] == ["front_door", "back_door"]
