"""The read side's errors: one base class, messages that say what happened and what to do."""

from __future__ import annotations


class ProjectionError(RuntimeError):
    """The read side could not do what it was asked."""


class UnexpectedEntryError(ProjectionError, ValueError):
    """An entry sits on a stream that does not carry its type; it cannot be projected."""


class ReplayError(ProjectionError):
    """A rebuild or a verification could not be done; the live projection is unchanged."""


class RetentionError(ProjectionError):
    """Retention could not run."""


class MaintenanceBusyError(ProjectionError):
    """Another replay, verification or retention run holds the read side's maintenance lock."""
