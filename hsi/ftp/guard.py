"""Failed FTP logins per address: a growing delay before each `530`, then a temporary ban.

Pure decisions with an injected clock (the receiver passes `time.monotonic`); no sockets. The
receiver asks `banned_for(ip)` when a connection opens and before a password is checked, and
tells `failed(ip)` about each wrong login, which answers how long to wait before replying and
whether that failure started a ban.

Only failures count, and a successful login does not forgive them: a camera with the right
password behind the same address as a password guesser must not wash the guesser's record.
Behind NAT one misconfigured camera counts against the shared address; its `ftp.login_failed`
lines name its user, and `FTP_BAN_AFTER_FAILURES=0` turns bans off.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BACKOFF_CAP_SECONDS", "BanPolicy", "LoginGuard", "LoginVerdict"]

BACKOFF_CAP_SECONDS = 30.0  # the longest wait before a 530 (unless the base delay is longer)
MAX_TRACKED_ADDRESSES = 4096  # addresses with recent failures kept; the oldest go first


@dataclass(frozen=True)
class BanPolicy:
    """`after_failures` wrong logins from one address within `window` seconds ban it for
    `ban_seconds`; `after_failures` 0 never bans (the back-off still applies)."""

    after_failures: int = 10
    window: float = 600.0
    ban_seconds: float = 900.0


@dataclass(frozen=True)
class LoginVerdict:
    """What to do about one wrong login: wait `delay` seconds before replying; `banned` when
    this failure started a ban (log and count it once)."""

    delay: float
    banned: bool
    failures: int  # failures of this address within the window, this one included


def backoff_delay(base: float, failures: int) -> float:
    """The wait before the `failures`-th wrong login's reply: `base`, doubled per earlier
    failure, capped at `BACKOFF_CAP_SECONDS` (or `base` when that is longer)."""
    if failures <= 1:
        return base
    return min(base * float(2 ** min(failures - 1, 16)), max(base, BACKOFF_CAP_SECONDS))


class LoginGuard:
    """Failures and bans per address. One per receiver; called from its IO loop thread only."""

    def __init__(
        self,
        policy: BanPolicy,
        base_delay: float,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = MAX_TRACKED_ADDRESSES,
    ) -> None:
        self.policy = policy
        self.base_delay = base_delay
        self._clock = clock
        self._max_tracked = max_tracked
        self._failures: dict[str, deque[float]] = {}
        self._bans: dict[str, float] = {}  # address → monotonic time the ban ends

    def banned_for(self, ip: str) -> float:
        """Seconds left of `ip`'s ban; 0 when it is not banned."""
        until = self._bans.get(ip)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._bans[ip]
            return 0.0
        return left

    def failed(self, ip: str) -> LoginVerdict:
        """Record one wrong login from `ip` and decide the delay and whether to ban it now."""
        now = self._clock()
        recent = self._failures.pop(ip, None) or deque()
        while recent and recent[0] <= now - self.policy.window:
            recent.popleft()
        recent.append(now)
        self._failures[ip] = recent  # re-inserted: the dict stays ordered by last failure
        count = len(recent)
        delay = backoff_delay(self.base_delay, count)
        after = self.policy.after_failures
        if after and count >= after and self.banned_for(ip) == 0:
            self._bans[ip] = now + self.policy.ban_seconds
            del self._failures[ip]  # the ban is the sentence; a fresh count starts after it
            self._forget_old(now)
            return LoginVerdict(delay=delay, banned=True, failures=count)
        self._forget_old(now)
        return LoginVerdict(delay=delay, banned=False, failures=count)

    @property
    def tracked(self) -> int:
        """How many addresses have recent failures or a ban (bounded by `max_tracked`)."""
        return len(self._failures) + len(self._bans)

    def _forget_old(self, now: float) -> None:
        if len(self._failures) > self._max_tracked:
            horizon = now - self.policy.window
            for ip in [ip for ip, times in self._failures.items() if times[-1] <= horizon]:
                del self._failures[ip]
            while len(self._failures) > self._max_tracked:
                del self._failures[next(iter(self._failures))]
        if len(self._bans) > self._max_tracked:
            for ip in [ip for ip, until in self._bans.items() if until <= now]:
                del self._bans[ip]
            while len(self._bans) > self._max_tracked:
                del self._bans[next(iter(self._bans))]
