"""The injectable clock: scheduling and backoff read time only through a `Clock`.

Tests pass a `ManualClock` and move time forward, so a backoff of an hour takes no real time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that stands still until a test advances it."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when


def utc(value: datetime) -> datetime:
    """Naive datetimes from the database are UTC; make them aware so comparisons never mix kinds."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
