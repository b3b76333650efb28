"""Before login: how long a connection may take, what wrong passwords cost, and who is banned.

A new connection from a banned address is refused with `421` before the banner. Otherwise it has
`login_timeout` seconds to log in, however many NOOPs it sends. Each wrong login is answered
after the delay the `LoginGuard` decides (growing per recent failure of the address) and the
session reads nothing meanwhile; the failure that reaches `FTP_BAN_AFTER_FAILURES` bans the
address: `ftp.ban` is logged (the address and the user tried, never a password), counted, and
the address's other connections that have not logged in are closed. Connections past
`max_cons_per_ip` (pyftpdlib's check) are refused with `421` and counted, not logged one by one.

`LoginGate` sits between `ProtocolLog` and the camera session (`hsi.ftp.session`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from hsi.ftp.guard import LoginGuard, LoginVerdict
from hsi.ftp.metrics import FtpInstruments
from hsi.ftp.protocol import ProtocolLog
from hsi.logs.setup import get_logger

__all__ = ["LoginGate"]

log = get_logger("hsi.ftp")

_BANNED = "421 Too many failed logins from this address; try again later."


class LoginGate(ProtocolLog):
    """The login side of a camera session; class attributes are set per receiver."""

    login_timeout: ClassVar[float] = 30.0
    guard: ClassVar[LoginGuard | None] = None
    instruments: ClassVar[FtpInstruments | None] = None
    _login_deadline: Any = None
    _auth_pending: bool = False  # a wrong login's delayed 530 has not gone out yet
    username: str  # pyftpdlib's: the USER given, "" before it

    def _count(self, counter: str, attributes: Mapping[str, str] | None = None) -> None:
        instruments = self.instruments
        if instruments is not None:
            getattr(instruments, counter).add(1, dict(attributes or {}))

    def _banned(self) -> bool:
        guard = self.guard
        return guard is not None and guard.banned_for(self.remote_ip) > 0

    def _refuse_connection(self, reply: str, reason: str) -> None:
        self._count("connections_refused", {"reason": reason})
        self._protocol(f"connection closed before login: {reason}")
        self.respond(reply)
        self.close_when_done()

    def handle(self) -> None:
        if self._banned():
            self._refuse_connection(_BANNED, "banned")
            return
        self._login_deadline = self.call_later(self.login_timeout, self._login_expired)
        super().handle()

    def handle_max_cons_per_ip(self) -> None:
        # pyftpdlib logs each of these at WARNING; a flood would flood the log: count instead.
        self._refuse_connection(
            "421 Too many connections from the same IP address.", "per_ip_limit"
        )

    def _login_expired(self) -> None:
        if self.authenticated or self._closed:
            return
        if self._auth_pending:  # no reply can go out while the 530 is held back: just close
            self._count("connections_refused", {"reason": "login_timeout"})
            self._protocol("connection closed before login: login_timeout")
            self.close()
            return
        self._refuse_connection("421 Login timed out.", "login_timeout")

    def ftp_PASS(self, line: str) -> Any:
        if not self.authenticated and self._banned():
            self._refuse_connection(_BANNED, "banned")
            return None
        return super().ftp_PASS(line)

    def handle_auth_failed(self, msg: str, password: str) -> None:
        """pyftpdlib's wrong-login path, with the delay from the guard: the session reads
        nothing until the 530 goes out, and closing it (the login deadline) cancels the reply."""
        username: str = self.username
        self.username = ""
        guard = self.guard
        verdict = (
            guard.failed(self.remote_ip)
            if guard is not None
            else LoginVerdict(delay=self.auth_failed_timeout, banned=False, failures=0)
        )
        self.on_login_failed(username, password)
        if verdict.banned:
            self._ban(username, verdict)
            return
        self.del_channel()
        self._auth_pending = True
        self.call_later(verdict.delay, self._reply_login_failed)

    def _reply_login_failed(self) -> None:
        self._auth_pending = False
        if self._closed:
            return
        self.add_channel()
        self.attempted_logins += 1
        if self.attempted_logins >= self.max_login_attempts:
            self.respond("530 Authentication failed. Disconnecting.")
            self.close_when_done()
        else:
            self.respond("530 Authentication failed.")

    def _ban(self, username: str, verdict: LoginVerdict) -> None:
        """Log and count the ban once, and close this address's other connections that have
        not logged in (cameras already logged in behind the same address keep theirs)."""
        policy = self.guard.policy if self.guard is not None else None
        log.warning(
            "ftp.ban",
            remote_ip=self.remote_ip,
            failures=verdict.failures,
            window_seconds=policy.window if policy else None,
            ban_seconds=policy.ban_seconds if policy else None,
            user=self._mask(username),
        )
        self._count("bans")
        self._refuse_connection(_BANNED, "banned")
        for other in list(self.ioloop.socket_map.values()):
            if (
                other is not self
                and isinstance(other, LoginGate)
                and other.remote_ip == self.remote_ip
                and not other.authenticated
                and not other._closed
            ):
                other._refuse_connection(_BANNED, "banned")

    def handle_auth_success(self, home: str, password: str, msg_login: str) -> None:
        deadline = self._login_deadline
        if deadline is not None and not deadline.cancelled:
            deadline.cancel()
        super().handle_auth_success(home, password, msg_login)
