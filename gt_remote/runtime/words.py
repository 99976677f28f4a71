"""How the supervisor's jobs put times and exceptions into words, for the log and `status`."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def reason(exc: BaseException) -> str:
    """An exception as words for the log: a bare TimeoutError has no text of its own."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "no answer in time"
    return str(exc) or type(exc).__name__
