"""The two usage views (DESIGN §4, §13): daily totals and the per-request list."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from lava_mcp.core import usage
from lava_mcp.errors import BadRequest
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import RequestRecord, utc_now


def add_record(
    runtime: Runtime,
    wallet_id: str,
    *,
    record_id: str,
    created_at: datetime,
    service: str = "openai",
    cost_micros: int = 0,
    ran: bool = True,
    status: str = "completed",
) -> None:
    with runtime.db.write() as session:
        session.add(
            RequestRecord(
                id=record_id,
                wallet_id=wallet_id,
                service=service,
                model="m",
                status=status,
                ran=ran,
                cost_micros=cost_micros,
                input_tokens=10,
                output_tokens=5,
                created_at=created_at,
            )
        )


def record_id(number: int) -> str:
    return f"req_{number:012x}{number:016x}"


def test_the_default_window_is_today_and_the_six_days_before(runtime: Runtime, new_wallet) -> None:
    summary = usage.summary(runtime.db, new_wallet.wallet_id)
    today = utc_now().date()
    assert [day.day for day in summary.days] == [today - timedelta(days=6 - n) for n in range(7)]
    assert (summary.since, summary.until) == (today - timedelta(days=6), today)
    assert all(day.requests == 0 and day.spend_micros == 0 for day in summary.days)


def test_days_and_services_add_up_and_refusals_do_not_count(runtime: Runtime, new_wallet) -> None:
    wallet_id = new_wallet.wallet_id
    noon = datetime(2026, 3, 10, 12, tzinfo=UTC)
    add_record(runtime, wallet_id, record_id=record_id(1), created_at=noon, cost_micros=100)
    add_record(
        runtime, wallet_id, record_id=record_id(2), created_at=noon, service="anthropic", cost_micros=250
    )
    add_record(
        runtime,
        wallet_id,
        record_id=record_id(3),
        created_at=noon + timedelta(hours=11, minutes=59),
        cost_micros=1,
    )
    add_record(
        runtime, wallet_id, record_id=record_id(4), created_at=noon + timedelta(hours=12), cost_micros=7
    )
    add_record(
        runtime, wallet_id, record_id=record_id(5), created_at=noon, ran=False, status="error"
    )  # refused
    add_record(runtime, wallet_id, record_id=record_id(6), created_at=noon, status="error")  # ran and failed
    add_record(
        runtime, wallet_id, record_id=record_id(7), created_at=noon - timedelta(days=30), cost_micros=9
    )

    summary = usage.summary(runtime.db, wallet_id, since="2026-03-09", until="2026-03-12")
    by_day = {day.day: day for day in summary.days}
    assert list(by_day) == [date(2026, 3, 9), date(2026, 3, 10), date(2026, 3, 11), date(2026, 3, 12)]
    tenth, eleventh = by_day[date(2026, 3, 10)], by_day[date(2026, 3, 11)]
    assert (tenth.requests, tenth.spend_micros) == (4, 351)
    assert {name: (t.requests, t.spend_micros) for name, t in tenth.by_service.items()} == {
        "openai": (3, 101),
        "anthropic": (1, 250),
    }
    assert (eleventh.requests, eleventh.spend_micros) == (1, 7)  # midnight UTC starts a new day
    assert (summary.total_requests, summary.total_spend_micros) == (5, 358)


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2026-3-1", None),
        ("20260301", None),
        ("2026-03-01T00:00:00", None),
        ("2026-02-30", None),
        ("2026-13-01", None),
        ("yesterday", None),
        (20260301, None),
        (["2026-03-01"], None),
        ("２０２６-03-01", None),
        ("'; DROP TABLE wallet; --", None),
        ("2026-03-10", "2026-03-09"),  # since after until
        ("2024-01-01", "2026-01-01"),  # over 366 days
        (None, "2026/03/01"),
        # The calendar's ends: the next midnight after 9999-12-31 and the default start
        # before 0001-01-07 don't exist (an OverflowError, a 500, before; found by fuzzing).
        ("9999-12-25", "9999-12-31"),
        (None, "9999-12-31"),
        (None, "0001-01-03"),
    ],
)
def test_bad_windows_are_400(runtime: Runtime, new_wallet, since: object, until: object) -> None:
    with pytest.raises(BadRequest):
        usage.summary(runtime.db, new_wallet.wallet_id, since=since, until=until)


def test_a_single_day_window(runtime: Runtime, new_wallet) -> None:
    summary = usage.summary(runtime.db, new_wallet.wallet_id, since="2026-03-01", until="2026-03-01")
    assert [day.day for day in summary.days] == [date(2026, 3, 1)]


def test_requests_page_newest_first_without_gaps_or_duplicates(runtime: Runtime, new_wallet) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for number in range(1, 48):
        add_record(
            runtime,
            new_wallet.wallet_id,
            record_id=record_id(number),
            created_at=start + timedelta(minutes=number),
        )
    first = usage.list_requests(runtime.db, new_wallet.wallet_id)
    assert len(first.records) == 20  # the default limit
    assert first.records[0].id == record_id(47)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = usage.list_requests(runtime.db, new_wallet.wallet_id, limit=10, before=cursor)
        seen += [record.id for record in page.records]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 5
    assert seen == [record_id(number) for number in range(47, 0, -1)]


def test_a_last_full_page_has_no_next_cursor(runtime: Runtime, new_wallet) -> None:
    for number in range(1, 11):
        add_record(runtime, new_wallet.wallet_id, record_id=record_id(number), created_at=utc_now())
    page = usage.list_requests(runtime.db, new_wallet.wallet_id, limit=10)
    assert len(page.records) == 10 and page.next_cursor is None
    assert usage.list_requests(runtime.db, new_wallet.wallet_id, limit=100).next_cursor is None


def test_another_wallets_requests_are_not_listed(runtime: Runtime, new_wallet) -> None:
    from lava_mcp.core import wallet

    other = wallet.create_wallet(runtime.db, name="other")
    add_record(runtime, other.wallet_id, record_id=record_id(1), created_at=utc_now(), cost_micros=5)
    assert usage.list_requests(runtime.db, new_wallet.wallet_id).records == []
    assert usage.summary(runtime.db, new_wallet.wallet_id).total_requests == 0


@pytest.mark.parametrize(
    "limit", [0, 101, -1, "abc", "", " ", "1.5", 1.5, True, False, "²", "١٠", [], {}, 10**30]
)
def test_limits_out_of_range_are_400_not_clamped(runtime: Runtime, new_wallet, limit: object) -> None:
    with pytest.raises(BadRequest):
        usage.list_requests(runtime.db, new_wallet.wallet_id, limit=limit)


@pytest.mark.parametrize("limit", [1, 100, "7", " 20 "])
def test_limits_in_range(runtime: Runtime, new_wallet, limit: object) -> None:
    usage.list_requests(runtime.db, new_wallet.wallet_id, limit=limit)


@pytest.mark.parametrize(
    "cursor",
    [
        "abc",
        "req_",
        "req_xyz",
        record_id(1) + "0",
        record_id(1).upper(),
        "'; DROP TABLE wallet; --",
        5,
        ["req_"],
    ],
)
def test_bad_cursors_are_400(runtime: Runtime, new_wallet, cursor: object) -> None:
    with pytest.raises(BadRequest):
        usage.list_requests(runtime.db, new_wallet.wallet_id, before=cursor)
