"""The errors of alerting: bad rules or channel settings (at startup) and failed deliveries."""

from __future__ import annotations


class AlertError(Exception):
    """Base of every alerting error."""


class AlertRulesError(AlertError, ValueError):
    """The alert rules file cannot be used; the message names the file, rule and field."""


class AlertConfigError(AlertError, ValueError):
    """The notification settings cannot work (a rule names a channel that is not configured)."""


class ChannelError(AlertError):
    """A channel did not deliver an alert.

    `transient` errors (a timeout, a refused connection, HTTP 5xx or 429, SMTP 4xx) are retried
    at once with backoff; the others (HTTP 4xx, a refused recipient) only by the next delivery of
    the analysis entry. Either way an entry that keeps failing ends as a dead letter.
    """

    def __init__(self, channel: str, message: str, *, transient: bool) -> None:
        super().__init__(f"{channel}: {message}")
        self.channel = channel
        self.transient = transient
