"""Limit cycles, in UTC: a day; an ISO week from Monday; a calendar month; or `total`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

CYCLES = ("daily", "weekly", "monthly", "total")

# The start of the `total` cycle: every moment is inside it.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def cycle_start(cycle: str, now: datetime) -> datetime:
    """The UTC moment the cycle containing `now` began."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if cycle == "daily":
        return day
    if cycle == "weekly":
        return day - timedelta(days=day.weekday())
    if cycle == "monthly":
        return day.replace(day=1)
    if cycle == "total":
        return EPOCH
    raise ValueError(f"unknown cycle {cycle!r}")


def cycle_end(cycle: str, now: datetime) -> datetime | None:
    """When the cycle containing `now` ends (None: `total` never resets)."""
    start = cycle_start(cycle, now)
    if cycle == "daily":
        return start + timedelta(days=1)
    if cycle == "weekly":
        return start + timedelta(days=7)
    if cycle == "monthly":
        return (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
    return None
