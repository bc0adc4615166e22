"""The dashboard in a real headless Chromium: sign in, the balance, the chart, adding funds
(the payment page, a saved card, 3-D Secure, a decline), cards, spend keys, requests, sign
out. Every page is screenshotted at desktop and phone width under test-artifacts/dashboard/.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import openai
import pytest

from lava_mcp.money import format_dollars, parse_amount
from lava_mcp.store.models import RequestRecord, utc_now
from tests.core.test_usage import record_id
from tests.dashboard.conftest import PHONE, api_balance, no_horizontal_overflow, screenshot, sign_in
from tests.gateway.conftest import Gateway

MESSAGES = [{"role": "user", "content": "Say hello"}]


def call(app: Gateway, secret: str, model: str) -> str:
    """One gateway call that ran; returns its request id once metering resolved it."""
    raw = app.openai(secret).chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, max_tokens=20
    )
    request_id: str = raw.headers["x-lava-request-id"]
    app.wait_resolved(request_id)
    return request_id


def available(page: Any) -> str:
    text: str = page.inner_text("#balance-available")
    return text


def test_sign_in_shows_the_apis_balance_and_a_chart_of_the_calls(page: Any, served: Gateway) -> None:
    key = served.create_key(name="agent")
    for model in ("cheap-1", "gpt-4o-mini", "cheap-1"):
        call(served, key["key"], model)

    # By keyboard only: Tab to the key field, type, Enter.
    page.goto("/")
    assert page.url.endswith("/dashboard/signin")
    screenshot(page, "desktop-signin")
    for _ in range(5):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "wallet_key":
            break
    assert page.evaluate("document.activeElement.id") == "wallet_key"
    page.keyboard.type(served.wallet_key)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{served.url}/")

    # The key is nowhere after sign-in: not in the URL, the page, or the browser's storage.
    assert served.wallet_key not in page.url
    assert served.wallet_key not in page.content()
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    cookie = next(c for c in page.context.cookies() if c["name"] == "lava_session")
    assert served.wallet_key not in cookie["value"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"]) == (True, "Lax", False)

    wallet = api_balance(served)
    assert available(page) == f"${wallet['balance']}"
    assert page.inner_text("#balance-held") == f"${wallet['held']}"
    assert page.locator(".badge.sandbox").inner_text() == "SANDBOX"

    days = page.locator("#activity-chart g.day")
    assert days.count() == 7
    today = days.nth(6)
    assert today.get_attribute("data-requests") == "3"
    tooltip = today.locator("title").text_content() or ""
    assert "3 requests" in tooltip and "cheapchat: $" in tooltip and "openai: $" in tooltip
    assert {bar.get_attribute("data-service") for bar in today.locator("rect[data-service]").all()} == {
        "cheapchat",
        "openai",
    }
    # Zero days are drawn, and say so on hover.
    assert days.nth(0).get_attribute("data-requests") == "0"
    assert "0 requests" in (days.nth(0).locator("title").text_content() or "")
    assert days.nth(0).locator("rect.zero").count() == 1
    screenshot(page, "desktop-overview-three-calls")

    page.click("text=30 days")
    page.wait_for_url("**/?days=30")
    assert page.locator("#activity-chart g.day").count() == 30
    page.click("text=90 days")
    page.wait_for_url("**/?days=90")
    assert page.locator("#activity-chart g.day").count() == 90
    assert page.locator("#activity-chart g.day").nth(89).get_attribute("data-requests") == "3"

    page.set_viewport_size(PHONE)
    page.goto("/?days=7")
    assert no_horizontal_overflow(page)
    screenshot(page, "phone-overview-three-calls")


def test_add_25_with_a_sandbox_card_end_to_end_and_5_is_refused(page: Any, served: Gateway) -> None:
    sign_in(page, served.wallet_key)
    before_micros = parse_amount(api_balance(served)["balance"])

    page.goto("/dashboard/funds")
    page.fill("#amount", "5")
    page.click("#funds-form button[type=submit]")
    outcome = page.locator("#funding-outcome")
    assert "Enter an amount from $10.00 to $10,000.00." in outcome.inner_text()
    assert "Nothing was charged." in outcome.inner_text()
    assert page.input_value("#amount") == "5"
    assert parse_amount(api_balance(served)["balance"]) == before_micros
    screenshot(page, "desktop-funds-refused")

    # No saved card yet: the new card (the payment page) is the choice.
    assert page.is_checked("input[name=payment_method][value=new]")
    page.fill("#amount", "25")
    page.click("#funds-form button[type=submit]")
    assert "Pay $25.00 with a new card on the payment page." in page.inner_text("#funding-outcome")
    page.click("#funding-link")
    page.wait_for_url("**/sandbox/checkout/**")
    page.fill("#number", "4242 4242 4242 4242")
    page.fill("#expiry", "12 / 34")
    page.fill("#cvc", "123")
    page.click("text=Pay $25.00")
    page.wait_for_url("**/fund/success**")
    assert "Payment received" in page.inner_text("h1")

    page.goto("/")
    expected = format_dollars(before_micros + 25_000_000)
    assert available(page) == f"${expected}"
    assert api_balance(served)["balance"] == expected

    # The card the payment page saved is now the default: charged at once.
    page.goto("/dashboard/funds")
    assert page.is_checked("input[name=payment_method]:not([value=new])")
    page.fill("#amount", "25.00")
    page.click("#funds-form button[type=submit]")
    after = format_dollars(before_micros + 50_000_000)
    text = page.inner_text("#funding-outcome")
    assert "Done: $25.00 was added to your wallet." in text
    assert f"Your balance is now ${after}." in text
    assert available(page) == f"${after}"
    screenshot(page, "desktop-funds-completed")
    page.reload()  # never posts the form again
    assert page.locator("#funding-outcome").count() == 0
    assert api_balance(served)["balance"] == after

    page.goto("/dashboard/history")
    rows = page.locator("#history tbody tr")
    assert rows.count() == 3
    assert "Deposit" in rows.nth(0).inner_text() and "+25.00" in rows.nth(0).inner_text()
    assert "Adjustment" in rows.nth(2).inner_text() and "+10.00" in rows.nth(2).inner_text()
    screenshot(page, "desktop-history-deposits")


def test_a_declined_card_shows_the_banks_reason_and_3ds_gives_a_link(page: Any, served: Gateway) -> None:
    sign_in(page, served.wallet_key)
    before = api_balance(served)["balance"]
    page.goto("/dashboard/cards")
    page.select_option("#payment_method_id", "pm_card_chargeDeclinedInsufficientFunds")
    page.click("#add-card button[type=submit]")
    assert page.inner_text("#cards-notice") == "Saved your visa card ending in 9995."

    page.goto("/dashboard/funds")
    page.fill("#amount", "25")
    page.click("#funds-form button[type=submit]")
    text = page.inner_text("#funding-outcome")
    assert "Your card was declined: insufficient funds. Nothing was charged." in text
    assert "The bank's reason: insufficient funds. Try a smaller amount, or pay with another card." in text
    assert "payment_method_id" not in text and "use_checkout" not in text  # words, not API fields
    assert api_balance(served)["balance"] == before
    screenshot(page, "desktop-funds-declined")

    page.goto("/dashboard/cards")
    failed = page.inner_text("#failed-payments")
    assert "visa ending in 9995" in failed and "bank's reason: insufficient funds" in failed

    # A 3-D Secure card, made the default: the answer is a link to confirm with the bank.
    page.select_option("#payment_method_id", "pm_card_authenticationRequired")
    page.click("#add-card button[type=submit]")
    row = page.locator("#cards tbody tr", has_text="3184")
    row.locator("text=Make default").click()
    page.wait_for_url("**/dashboard/cards")
    assert "Default" in page.locator("#cards tbody tr", has_text="3184").inner_text()
    page.locator("#cards tbody tr", has_text="9995").locator("text=Remove").click()
    page.wait_for_url("**/dashboard/cards")
    assert page.locator("#cards tbody tr").count() == 1
    screenshot(page, "desktop-cards-failed-payments")

    page.goto("/dashboard/funds")
    page.fill("#amount", "30")
    page.click("#funds-form button[type=submit]")
    assert "Your bank wants you to confirm this payment of $30.00 (3-D Secure)." in page.inner_text(
        "#funding-outcome"
    )
    page.click("#funding-link")
    page.wait_for_url("**/sandbox/checkout/**")
    page.click("text=Complete authentication")
    page.wait_for_url("**/fund/success**")
    page.goto("/")
    assert available(page) == f"${format_dollars(parse_amount(before) + 30_000_000)}"


def test_a_spend_key_secret_is_shown_once_then_pause_limits_rotate_revoke(page: Any, served: Gateway) -> None:
    sign_in(page, served.wallet_key)
    page.goto("/dashboard/keys")
    page.fill("#name", "editor")
    page.check("input[name=allowed_providers][value=openai]")
    page.check("input[name=allowed_providers][value=cheapchat]")
    page.select_option("#request_shape", "openai")
    page.fill("#allowed_models", "cheap-1, gpt-4o-mini")
    page.fill("#spend_limit_amount", "5.00")
    page.select_option("#spend_limit_cycle", "daily")
    page.fill("#request_limit_count", "100")
    page.select_option("#request_limit_cycle", "monthly")
    page.fill("#rate_rpm", "60")
    page.fill("#rate_burst", "10")
    expiry = (datetime.now(UTC) + timedelta(days=30)).replace(second=0, microsecond=0)
    page.fill("#expires_at", expiry.strftime("%Y-%m-%dT%H:%M"))
    page.select_option("#status", "active")
    page.click("#create-key button[type=submit]")

    panel = page.locator("#new-secret")
    assert "you won't see this again" in panel.inner_text()
    secret = page.inner_text("#secret-value")
    assert secret.startswith("lava_sk_")
    assert panel.locator("button[data-copy]").count() == 1
    screenshot(page, "desktop-keys-secret")
    key_id = page.locator("#keys tbody tr").first.get_attribute("data-key")
    assert key_id is not None

    with served.rest() as rest:
        shown = rest.get(f"/v1/spend_keys/{key_id}").json()
    assert shown["name"] == "editor"
    assert sorted(shown["allowed_providers"]) == ["cheapchat", "openai"]
    assert shown["allowed_models"] == ["cheap-1", "gpt-4o-mini"]
    assert shown["request_shape"] == "openai"
    assert shown["spend_limit"] == {"amount": "5.00", "cycle": "daily"}
    assert shown["request_limit"] == {"count": 100, "cycle": "monthly"}
    assert shown["rate_limit"] == {"rpm": 60, "burst": 10}
    assert shown["expires_at"] == expiry.isoformat().replace("+00:00", "Z")
    assert shown["status"] == "active"
    call(served, secret, "cheap-1")

    page.reload()
    assert page.locator("#new-secret").count() == 0
    assert secret not in page.content()
    row = page.locator("#keys tbody tr", has_text="editor")
    assert row.locator("meter").count() == 1
    assert "of $5.00 daily" in row.inner_text()

    row.locator("text=Pause").click()
    page.wait_for_url("**/dashboard/keys")
    row = page.locator("#keys tbody tr", has_text="editor")
    assert row.get_attribute("data-status") == "paused"
    with pytest.raises(openai.PermissionDeniedError):
        served.openai(secret).chat.completions.create(model="cheap-1", messages=MESSAGES, max_tokens=20)
    row.locator("text=Resume").click()
    page.wait_for_url("**/dashboard/keys")
    assert page.locator("#keys tbody tr", has_text="editor").get_attribute("data-status") == "active"

    page.locator("#keys tbody tr", has_text="editor").locator("text=Limits").click()
    page.wait_for_url(f"**/dashboard/keys/{key_id}")
    assert page.input_value("#spend_limit_amount") == "5.00"
    page.fill("#spend_limit_amount", "7.50")
    page.click("#limits button[type=submit]")
    assert "Limits saved" in page.inner_text("#key-notice")
    screenshot(page, "desktop-key")
    with served.rest() as rest:
        assert rest.get(f"/v1/spend_keys/{key_id}").json()["spend_limit"] == {
            "amount": "7.50",
            "cycle": "daily",
        }
    call(served, secret, "cheap-1")  # the secret did not change

    page.goto("/dashboard/keys")
    page.locator("#keys tbody tr", has_text="editor").locator("text=Rotate").click()
    rotated = page.inner_text("#secret-value")
    assert rotated.startswith("lava_sk_") and rotated != secret
    assert "you won't see this again" in page.inner_text("#new-secret")
    with pytest.raises(openai.AuthenticationError):
        served.openai(secret).chat.completions.create(model="cheap-1", messages=MESSAGES, max_tokens=20)
    call(served, rotated, "cheap-1")
    page.reload()
    assert page.locator("#new-secret").count() == 0 and rotated not in page.content()

    page.locator("#keys tbody tr", has_text="editor").locator("text=Revoke").click()
    page.wait_for_url(f"**/dashboard/keys/{key_id}/revoke")
    assert "stops working at once" in page.inner_text("main")
    screenshot(page, "desktop-revoke")
    page.click("#confirm-revoke")
    page.wait_for_url("**/dashboard/keys")
    assert page.locator("#keys tbody tr", has_text="editor").get_attribute("data-status") == "revoked"
    with pytest.raises(openai.AuthenticationError):
        served.openai(rotated).chat.completions.create(model="cheap-1", messages=MESSAGES, max_tokens=20)
    screenshot(page, "desktop-keys-revoked")


def test_requests_are_listed_filtered_paged_and_sign_out_ends_the_session(page: Any, served: Gateway) -> None:
    first = served.create_key(name="first")
    second = served.create_key(name="second", request_shape="anthropic")
    ids = [call(served, first["key"], "cheap-1") for _ in range(20)]
    ids.append(call(served, first["key"], "gpt-4o-mini"))
    reply = (
        served.anthropic(second["key"]).messages.with_raw_response.create(
            model="claude-haiku-4-5", messages=MESSAGES, max_tokens=20
        )  # type: ignore[arg-type]
    )
    second_id = reply.headers["x-lava-request-id"]
    served.wait_resolved(second_id)
    assert isinstance(reply.parse(), anthropic.types.Message)

    sign_in(page, served.wallet_key)
    page.goto("/dashboard/requests")
    rows = page.locator("#requests tbody tr")
    assert rows.count() == 20
    assert rows.nth(0).get_attribute("data-request") == second_id
    assert rows.nth(0).locator("button[data-copy]").count() == 1
    text = rows.nth(0).inner_text()
    with served.rest() as rest:
        record = rest.get("/v1/requests", params={"limit": 1}).json()["data"][0]
    assert record["request_id"] == second_id
    for figure in (record["model_usage"]["input_cost"], record["model_usage"]["output_cost"], record["cost"]):
        assert figure in text
    screenshot(page, "desktop-requests-paged")
    page.click("text=Older")
    assert page.locator("#requests tbody tr").count() == 2

    page.goto("/dashboard/requests")
    page.select_option("#spend_key_id", first["spend_key_id"])
    page.select_option("#service", "openai")
    page.click("#request-filters button[type=submit]")
    shown = [row.get_attribute("data-request") for row in page.locator("#requests tbody tr").all()]
    assert shown == [ids[-1]]
    page.select_option("#service", "anthropic")
    page.select_option("#spend_key_id", "")
    page.click("#request-filters button[type=submit]")
    assert [row.get_attribute("data-request") for row in page.locator("#requests tbody tr").all()] == [
        second_id
    ]

    page.set_viewport_size(PHONE)
    page.goto("/dashboard/requests")
    assert no_horizontal_overflow(page)
    screenshot(page, "phone-requests-paged")

    cookie = next(c for c in page.context.cookies() if c["name"] == "lava_session")
    page.click("text=Sign out")
    page.wait_for_url("**/dashboard/signin")
    assert not [c for c in page.context.cookies() if c["name"] == "lava_session"]
    # The old session id is dead on the server too, not only forgotten by this browser.
    page.context.add_cookies([{**cookie}])
    page.goto("/dashboard/keys")
    assert page.url.endswith("/dashboard/signin")


PAGES = [
    ("overview", "/?days=30"),
    ("funds", "/dashboard/funds"),
    ("cards", "/dashboard/cards"),
    ("history", "/dashboard/history"),
    ("keys", "/dashboard/keys"),
    ("requests", "/dashboard/requests"),
]


def test_every_page_fits_a_phone_and_is_screenshotted(page: Any, served: Gateway) -> None:
    key = served.create_key(name="phone", spend_limit={"amount": "1.00", "cycle": "daily"})
    call(served, key["key"], "cheap-1")
    # A month of earlier calls, so the chart has something to stack (records as metering writes them).
    now = utc_now()
    models = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "cheapchat": "cheap-1"}
    with served.runtime.db.write() as session:
        for day in range(1, 30):
            for number, service in enumerate(("openai", "anthropic", "cheapchat")[: 1 + day % 3]):
                cost_micros = (1000 + 300 * ((day * 7 + number * 3) % 11)) * (3 - number)
                session.add(
                    RequestRecord(
                        id=record_id((30 - day) * 10 + number),  # ids sort by time, as real ones do
                        wallet_id=served.wallet_id,
                        service=service,
                        model=models[service],
                        status="completed",
                        ran=True,
                        input_tokens=cost_micros // 4,
                        output_tokens=cost_micros // 8,
                        input_cost_micros=cost_micros // 3,
                        cost_micros=cost_micros,
                        created_at=now - timedelta(days=day),
                    )
                )
    sign_in(page, served.wallet_key)
    for name, path in PAGES:
        page.set_viewport_size({"width": 1280, "height": 900})
        assert page.goto(path).status == 200
        screenshot(page, f"desktop-{name}")
        page.set_viewport_size(PHONE)
        page.goto(path)
        assert no_horizontal_overflow(page), name
        screenshot(page, f"phone-{name}")
    page.goto(f"/dashboard/keys/{key['spend_key_id']}")
    assert no_horizontal_overflow(page)
    screenshot(page, "phone-key")
