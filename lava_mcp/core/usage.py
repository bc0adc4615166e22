"""The two usage views: daily totals over a window, and the per-request list."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select as sql_select
from sqlmodel import col, select

from lava_mcp.errors import BadRequest
from lava_mcp.store.db import Database
from lava_mcp.store.models import RequestRecord, utc_now

DEFAULT_WINDOW_DAYS = 7
MAX_WINDOW_DAYS = 366
MAX_PAGE = 100
_CURSOR = re.compile(r"^req_[0-9a-f]{28}$")


@dataclass
class ServiceTotal:
    spend_micros: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class DayTotal:
    day: date
    spend_micros: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    by_service: dict[str, ServiceTotal] = field(default_factory=dict)


@dataclass(frozen=True)
class Summary:
    since: date
    until: date
    days: list[DayTotal]

    @property
    def total_spend_micros(self) -> int:
        return sum(day.spend_micros for day in self.days)

    @property
    def total_requests(self) -> int:
        return sum(day.requests for day in self.days)


@dataclass(frozen=True)
class Page:
    records: Sequence[RequestRecord]
    next_cursor: str | None


def parse_day(value: object, field_name: str) -> date | None:
    """An ISO date (`2026-11-23`) or None. Raises: BadRequest for anything else."""
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value.strip()):
        raise BadRequest(f"{field_name} must be an ISO date like 2026-11-23")
    try:
        return date.fromisoformat(value.strip())
    except ValueError as error:
        raise BadRequest(f"{field_name} {value!r} is not a real date") from error


def summary(db: Database, wallet_id: str, *, since: object = None, until: object = None) -> Summary:
    """Daily totals of calls that ran, every day of the window listed (zero days too).

    Default window: today (UTC) and the 6 days before.
    Raises: BadRequest for malformed dates, since > until, or a window over 366 days.
    """
    until_day = parse_day(until, "until") or utc_now().date()
    since_day = parse_day(since, "since") or until_day - timedelta(days=DEFAULT_WINDOW_DAYS - 1)
    if since_day > until_day:
        raise BadRequest("since must not be after until")
    if (until_day - since_day).days + 1 > MAX_WINDOW_DAYS:
        raise BadRequest(f"the window may span at most {MAX_WINDOW_DAYS} days")
    start = datetime.combine(since_day, time.min, tzinfo=UTC)
    end = datetime.combine(until_day + timedelta(days=1), time.min, tzinfo=UTC)
    with db.read() as session:
        rows = session.execute(
            sql_select(
                col(RequestRecord.created_at),
                col(RequestRecord.service),
                col(RequestRecord.cost_micros),
                col(RequestRecord.input_tokens),
                col(RequestRecord.output_tokens),
            ).where(
                col(RequestRecord.wallet_id) == wallet_id,
                col(RequestRecord.ran).is_(True),
                col(RequestRecord.created_at) >= start,
                col(RequestRecord.created_at) < end,
            )
        ).all()
    days = {
        since_day + timedelta(days=offset): DayTotal(since_day + timedelta(days=offset))
        for offset in range((until_day - since_day).days + 1)
    }
    for created_at, service, cost_micros, input_tokens, output_tokens in rows:
        day = days[created_at.astimezone(UTC).date()]
        per_service = day.by_service.setdefault(service, ServiceTotal())
        for total in (day, per_service):
            total.spend_micros += cost_micros
            total.requests += 1
            total.input_tokens += input_tokens
            total.output_tokens += output_tokens
    return Summary(since_day, until_day, list(days.values()))


def parse_limit(value: object, default: int = 20) -> int:
    """Raises: BadRequest for a limit outside 1..100 (never clamped)."""
    if value is None:
        return default
    # ASCII digits only: str.isdigit() is also true for "²", which int() then rejects.
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,4}", value.strip()):
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PAGE:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_PAGE}")
    return value


def parse_cursor(value: object) -> str | None:
    """Raises: BadRequest for anything but a cursor this service handed out."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _CURSOR.fullmatch(value):
        raise BadRequest("cursor is not one this service handed out (use next_cursor)")
    return value


def list_requests(
    db: Database,
    wallet_id: str,
    *,
    limit: object = None,
    before: object = None,
    spend_key_id: str | None = None,
) -> Page:
    """Requests newest first, `limit` at a time, paged by the `next_cursor` id.

    Raises: BadRequest for a bad limit or cursor.
    """
    page_size = parse_limit(limit)
    cursor = parse_cursor(before)
    query = select(RequestRecord).where(RequestRecord.wallet_id == wallet_id)
    if spend_key_id is not None:
        query = query.where(RequestRecord.spend_key_id == spend_key_id)
    if cursor is not None:
        query = query.where(col(RequestRecord.id) < cursor)
    query = query.order_by(col(RequestRecord.id).desc()).limit(page_size + 1)
    with db.read() as session:
        records = list(session.exec(query).all())
    has_more = len(records) > page_size
    records = records[:page_size]
    return Page(records, records[-1].id if has_more else None)
