"""The two usage views: daily totals over a window, and the per-request list."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select as sql_select
from sqlmodel import col, select

from lava_mcp.core import paging
from lava_mcp.errors import BadRequest
from lava_mcp.store.db import Database
from lava_mcp.store.models import RequestRecord, utc_now

DEFAULT_WINDOW_DAYS = 7
MAX_WINDOW_DAYS = 366


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


def summary(
    db: Database,
    wallet_id: str,
    *,
    since: object = None,
    until: object = None,
    names: tuple[str, str] = ("since", "until"),
) -> Summary:
    """Daily totals of calls that ran, every day of the window listed (zero days too).

    Default window: today (UTC) and the 6 days before. `names` are the caller's own names
    for the first and last day (REST's query says `start` and `end`; MCP and the CLI,
    `since` and `until`), so an error names the parameter the caller actually sent.
    Raises: BadRequest for malformed dates, since > until, or a window over 366 days.
    """
    since_name, until_name = names
    until_day = parse_day(until, until_name) or utc_now().date()
    try:
        # The default start and the end's next midnight step past the calendar for the
        # first and last days Python can hold (0001-01-01, 9999-12-31): bad input, not a 500.
        since_day = parse_day(since, since_name) or until_day - timedelta(days=DEFAULT_WINDOW_DAYS - 1)
        end = datetime.combine(until_day + timedelta(days=1), time.min, tzinfo=UTC)
    except OverflowError as error:
        raise BadRequest("the window must lie between the years 1 and 9999") from error
    if since_day > until_day:
        raise BadRequest(f"{since_name} must not be after {until_name}")
    if (until_day - since_day).days + 1 > MAX_WINDOW_DAYS:
        raise BadRequest(f"the window may span at most {MAX_WINDOW_DAYS} days")
    start = datetime.combine(since_day, time.min, tzinfo=UTC)
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
    page_size = paging.parse_limit(limit)
    cursor = paging.parse_cursor(before, "req")
    query = select(RequestRecord).where(RequestRecord.wallet_id == wallet_id)
    if spend_key_id is not None:
        query = query.where(RequestRecord.spend_key_id == spend_key_id)
    records, next_cursor = paging.newest_first(db, query, RequestRecord.id, limit=page_size, cursor=cursor)
    return Page(records, next_cursor)


# --- the dashboard's activity chart and filtered request list ---------------------------------

ACTIVITY_WINDOWS_DAYS = (7, 30, 90)


@dataclass(frozen=True)
class Activity:
    """Spend per day, stacked by service, over the last `window_days` days (today included).

    `days` lists every day of the window, zero days too; `services` names every service
    that ran in it, the biggest spender first (the order the stack is drawn in).
    """

    window_days: int
    days: list[DayTotal]
    services: list[str]

    @property
    def total_spend_micros(self) -> int:
        return sum(day.spend_micros for day in self.days)

    @property
    def total_requests(self) -> int:
        return sum(day.requests for day in self.days)

    @property
    def peak_spend_micros(self) -> int:
        return max((day.spend_micros for day in self.days), default=0)


def activity(db: Database, wallet_id: str, *, window_days: object = None) -> Activity:
    """The activity chart's figures: `summary` over the last 7, 30 or 90 days.

    Raises: BadRequest for any other window.
    """
    if window_days is None or window_days == "":
        window_days = ACTIVITY_WINDOWS_DAYS[0]
    if isinstance(window_days, str) and window_days.strip().isdigit():
        window_days = int(window_days.strip())
    if window_days not in ACTIVITY_WINDOWS_DAYS or isinstance(window_days, bool):
        raise BadRequest(f"the window must be one of {', '.join(map(str, ACTIVITY_WINDOWS_DAYS))} days")
    assert isinstance(window_days, int)
    until_day = utc_now().date()
    daily = summary(
        db,
        wallet_id,
        since=(until_day - timedelta(days=window_days - 1)).isoformat(),
        until=until_day.isoformat(),
    )
    spend_by_service: dict[str, int] = {}
    for day in daily.days:
        for service, total in day.by_service.items():
            spend_by_service[service] = spend_by_service.get(service, 0) + total.spend_micros
    services = sorted(spend_by_service, key=lambda service: (-spend_by_service[service], service))
    return Activity(window_days, daily.days, services)


def list_requests_by(
    db: Database,
    wallet_id: str,
    *,
    limit: object = None,
    before: object = None,
    spend_key_id: str | None = None,
    service: str | None = None,
) -> Page:
    """`list_requests`, also filtered by service (the dashboard's filters).

    Raises: BadRequest for a bad limit or cursor.
    """
    page_size = paging.parse_limit(limit)
    cursor = paging.parse_cursor(before, "req")
    query = select(RequestRecord).where(RequestRecord.wallet_id == wallet_id)
    if spend_key_id:
        query = query.where(RequestRecord.spend_key_id == spend_key_id)
    if service:
        query = query.where(RequestRecord.service == service)
    records, next_cursor = paging.newest_first(db, query, RequestRecord.id, limit=page_size, cursor=cursor)
    return Page(records, next_cursor)


def services_used(db: Database, wallet_id: str) -> list[str]:
    """Every service the wallet's requests named, alphabetically (the service filter's choices)."""
    with db.read() as session:
        rows = session.execute(
            sql_select(col(RequestRecord.service))
            .where(col(RequestRecord.wallet_id) == wallet_id)
            .distinct()
            .order_by(col(RequestRecord.service))
        ).all()
    return [row[0] for row in rows]
