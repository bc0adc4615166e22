"""The core figures the dashboard draws: the activity chart's days (usage.activity), the
filtered request list, and the payment history (core/history.py). No HTTP: the rules live
in the core."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lava_mcp.core import history, usage, wallet
from lava_mcp.errors import BadRequest
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import Payment, utc_now
from lava_mcp.transports.dashboard import chart
from tests.core.test_usage import add_record, record_id


@pytest.mark.parametrize("window_days", [7, 30, 90])
def test_activity_lists_every_day_of_the_window_stacked_by_service(
    runtime: Runtime, new_wallet: wallet.NewWallet, window_days: int
) -> None:
    wallet_id = new_wallet.wallet_id
    now = utc_now()
    add_record(runtime, wallet_id, record_id=record_id(1), created_at=now, service="openai", cost_micros=300)
    add_record(
        runtime, wallet_id, record_id=record_id(2), created_at=now, service="anthropic", cost_micros=500
    )
    add_record(
        runtime,
        wallet_id,
        record_id=record_id(3),
        created_at=now - timedelta(days=2),
        service="openai",
        cost_micros=700,
    )
    # Refused before it ran: listed as a request, never in the chart.
    add_record(runtime, wallet_id, record_id=record_id(4), created_at=now, ran=False, status="error")
    # Outside every window.
    add_record(runtime, wallet_id, record_id=record_id(5), created_at=now - timedelta(days=91), cost_micros=9)

    activity = usage.activity(runtime.db, wallet_id, window_days=str(window_days))
    today = now.date()
    assert [day.day for day in activity.days] == [
        today - timedelta(days=window_days - 1 - n) for n in range(window_days)
    ]
    assert activity.days[-1].requests == 2 and activity.days[-1].spend_micros == 800
    assert activity.days[-3].requests == 1 and activity.days[-3].spend_micros == 700
    assert sum(1 for day in activity.days if day.requests == 0) == window_days - 2
    assert activity.services == ["openai", "anthropic"]  # the biggest spender first
    assert (activity.total_spend_micros, activity.total_requests, activity.peak_spend_micros) == (
        1500,
        3,
        800,
    )

    drawn = str(chart.svg(activity))
    assert drawn.count('<g class="day"') == window_days
    assert (
        f"{today.isoformat()}: $0.000800, 2 requests (anthropic: $0.000500, 1 request, openai: $0.000300, 1 request)"
        in drawn
    )
    assert drawn.count('class="zero"') == window_days - 2
    assert [(item.service, item.spend, item.requests) for item in chart.legend(activity)] == [
        ("openai", "0.001000", 2),
        ("anthropic", "0.000500", 1),
    ]


@pytest.mark.parametrize("window_days", [0, 1, 14, "7.0", "week", True, 365])
def test_activity_takes_only_the_three_windows(
    runtime: Runtime, new_wallet: wallet.NewWallet, window_days: object
) -> None:
    with pytest.raises(BadRequest, match="7, 30, 90"):
        usage.activity(runtime.db, new_wallet.wallet_id, window_days=window_days)


def test_requests_filter_by_service_and_spend_key_and_page(
    runtime: Runtime, new_wallet: wallet.NewWallet
) -> None:
    wallet_id = new_wallet.wallet_id
    now = utc_now()
    for number in range(1, 26):
        add_record(
            runtime,
            wallet_id,
            record_id=record_id(number),
            created_at=now,
            service="openai" if number % 2 else "anthropic",
        )
    first = usage.list_requests_by(runtime.db, wallet_id, service="openai", limit=10)
    assert [r.id for r in first.records] == [record_id(n) for n in range(25, 5, -2)]
    rest = usage.list_requests_by(runtime.db, wallet_id, service="openai", limit=10, before=first.next_cursor)
    assert [r.id for r in rest.records] == [record_id(n) for n in (5, 3, 1)] and rest.next_cursor is None
    assert usage.list_requests_by(runtime.db, wallet_id, spend_key_id="sk_id_none").records == []
    assert usage.services_used(runtime.db, wallet_id) == ["anthropic", "openai"]
    other = wallet.create_wallet(runtime.db)
    assert usage.list_requests_by(runtime.db, other.wallet_id).records == []


def test_payment_history_is_the_ledgers_money_movements_newest_first(
    runtime: Runtime, new_wallet: wallet.NewWallet
) -> None:
    wallet_id = new_wallet.wallet_id
    for number in range(1, 6):
        wallet.adjust(runtime.db, wallet_id, f"{number}.00", reason=f"credit {number}")
    add_record(runtime, wallet_id, record_id=record_id(1), created_at=utc_now(), cost_micros=10)
    page = history.money_movements(runtime.db, wallet_id, limit=3)
    assert [entry.memo for entry in page.entries] == ["credit 5", "credit 4", "credit 3"]
    rest = history.money_movements(runtime.db, wallet_id, limit=3, before=page.next_cursor)
    assert [entry.memo for entry in rest.entries] == ["credit 2", "credit 1"] and rest.next_cursor is None
    for bad in ("abc", "-1", "1.5", "9" * 30):
        with pytest.raises(BadRequest, match="cursor"):
            history.money_movements(runtime.db, wallet_id, before=bad)
    other = wallet.create_wallet(runtime.db)
    assert history.money_movements(runtime.db, other.wallet_id).entries == []


def test_failed_payments_keep_the_banks_reason(runtime: Runtime, new_wallet: wallet.NewWallet) -> None:
    with runtime.db.write() as session:
        session.add(
            Payment(
                id="pay_" + "1" * 28,
                wallet_id=new_wallet.wallet_id,
                amount_micros=25_000_000,
                status="failed",
                decline_code="insufficient_funds",
                failure_message="Your card has insufficient funds.",
            )
        )
        session.add(Payment(id="pay_" + "2" * 28, wallet_id=new_wallet.wallet_id, status="succeeded"))
    failed = history.failed_payments(runtime.db, new_wallet.wallet_id)
    assert [(p.decline_code, p.failure_message) for p in failed] == [
        ("insufficient_funds", "Your card has insufficient funds.")
    ]
