"""The offline sandbox, end to end as a newcomer meets it: no Stripe key, test cards, the
local Checkout page; SANDBOX on every answer and page."""

from __future__ import annotations

import re
import secrets

from lava_mcp.core import wallet
from lava_mcp.runtime import Runtime
from tests.payments.conftest import balance_micros, deposits, mcp, payments_of, rest, tool_error, tool_ok


def page_path(url: str) -> str:
    assert url.startswith("http://lava.test:8787/sandbox/checkout/cs_sbx_"), url
    return url.removeprefix("http://lava.test:8787")


def page_token(page_html: str) -> str:
    """The token a sandbox page's forms carry ("" when the page has none)."""
    found = re.search(r'name="page_token" value="([^"]*)"', page_html)
    return found.group(1) if found else ""


async def test_newcomer_funds_through_the_local_checkout_page(
    sandbox: Runtime, sandbox_wallet: wallet.NewWallet
) -> None:
    async with mcp(sandbox, sandbox_wallet) as chat:
        asked = tool_ok(await chat.call_tool("add_funds", {}))
        assert asked == {
            "status": "amount_required",
            "balance": "0.00",
            "payment_methods": [],
            "min": "10.00",
            "max": "10000.00",
            "sandbox": True,
        }
        checkout = tool_ok(await chat.call_tool("add_funds", {"amount": 25}))
    assert (
        checkout["status"] == "checkout_required"
        and checkout["sandbox"] is True
        and checkout["amount"] == "25.00"
    )
    path = page_path(checkout["checkout_url"])
    assert balance_micros(sandbox, sandbox_wallet.wallet_id) == 0

    async with rest(sandbox) as browser:  # the page needs no wallet key: its URL is the secret
        form = await browser.get(path)
        assert form.status_code == 200 and "SANDBOX" in form.text and "$25.00" in form.text
        assert "4242424242424242" in form.text and "insufficient_funds" in form.text
        token = page_token(form.text)

        declined = await browser.post(
            path, data={"number": "4000 0000 0000 9995", "expiry": "12/34", "cvc": "123", "page_token": token}
        )
        assert (
            declined.status_code == 402
            and "insufficient funds" in declined.text
            and "SANDBOX" in declined.text
        )
        declined = await browser.post(
            path, data={"number": "4000000000000002", "expiry": "12/34", "cvc": "123", "page_token": token}
        )
        assert declined.status_code == 402
        not_test = await browser.post(
            path, data={"number": "4111 1111 1111 1112", "expiry": "12/34", "cvc": "123", "page_token": token}
        )
        assert not_test.status_code == 402 and "test card" in not_test.text
        bad_expiry = await browser.post(
            path, data={"number": "4242424242424242", "expiry": "soon", "cvc": "123", "page_token": token}
        )
        assert bad_expiry.status_code == 400
        assert balance_micros(sandbox, sandbox_wallet.wallet_id) == 0

        paid = await browser.post(
            path,
            data={"number": "4242 4242 4242 4242", "expiry": "12 / 34", "cvc": "123", "page_token": token},
        )
        assert paid.status_code == 303 and paid.headers["location"].startswith(
            "/fund/success?session_id=cs_sbx_"
        )
        success = await browser.get(paid.headers["location"])
        assert success.status_code == 200 and "SANDBOX" in success.text and "$25.00" in success.text
        # Paying the same page again, or reloading, credits nothing more.
        again = await browser.post(
            path, data={"number": "4242424242424242", "expiry": "12/34", "cvc": "123", "page_token": token}
        )
        assert again.status_code == 303
        assert (await browser.get(path)).status_code == 303
        assert (await browser.get("/sandbox/checkout/cs_sbx_nope")).status_code == 404
    assert len(deposits(sandbox, sandbox_wallet.wallet_id)) == 1

    # The card was saved: the next top-up is charged at once.
    async with mcp(sandbox, sandbox_wallet) as chat:
        completed = tool_ok(await chat.call_tool("add_funds", {"amount": "10"}))
        assert completed | {"payment_id": ""} == {
            "status": "completed",
            "amount": "10.00",
            "balance": "35.00",
            "payment_id": "",
            "sandbox": True,
        }
        assert tool_ok(await chat.call_tool("get_balance", {}))["sandbox"] is True
    async with rest(sandbox, sandbox_wallet) as client:
        assert (await client.get("/v1/wallet")).json() | {"wallet_id": ""} == {
            "wallet_id": "",
            "balance": "35.00",
            "held": "0.00",
            "currency": "USD",
            "sandbox": True,
        }
        [card] = (await client.get("/v1/payment_methods")).json()["data"]
        assert card["last4"] == "4242" and card["exp_year"] == 2034 and card["default"] is True


async def test_saved_test_cards_give_each_outcome(sandbox: Runtime, sandbox_wallet: wallet.NewWallet) -> None:
    async with rest(sandbox, sandbox_wallet) as client:
        cards = {}
        for token in (
            "pm_card_chargeDeclinedInsufficientFunds",
            "pm_card_visa_chargeDeclined",
            "pm_card_chargeDeclinedExpiredCard",
            "pm_card_authenticationRequired",
            "pm_card_visa",
        ):
            response = await client.post("/v1/payment_methods", json={"payment_method_id": token})
            assert response.status_code == 201, response.text
            cards[token] = response.json()["id"]
            assert cards[token].startswith("pm_sbx_")
        assert (
            await client.post("/v1/payment_methods", json={"payment_method_id": "pm_made_up"})
        ).status_code == 400

        async def fund(token: str) -> tuple[int, dict[str, object]]:
            # A new top-up on purpose each time: identical requests without a key would replay.
            response = await client.post(
                "/v1/wallet/fund",
                json={"amount": 20, "payment_method_id": cards[token]},
                headers={"idempotency-key": secrets.token_hex(8)},
            )
            return response.status_code, response.json()

        status, body = await fund("pm_card_chargeDeclinedInsufficientFunds")
        assert status == 402 and body["decline_code"] == "insufficient_funds" and body["sandbox"] is True
        assert "smaller amount" in str(body["next_step"])
        status, body = await fund("pm_card_visa_chargeDeclined")
        assert status == 402 and body["decline_code"] == "generic_decline"
        status, body = await fund("pm_card_chargeDeclinedExpiredCard")
        assert (
            status == 402
            and body["decline_code"] == "expired_card"
            and body["error"] == "Your card has expired."
        )
        assert balance_micros(sandbox, sandbox_wallet.wallet_id) == 0

        status, body = await fund("pm_card_authenticationRequired")
        assert status == 200 and body["status"] == "requires_action" and body["sandbox"] is True
        challenge = page_path(str(body["redirect_url"]))
        page = await client.get(challenge)
        assert "Complete authentication" in page.text and "SANDBOX" in page.text
        assert balance_micros(sandbox, sandbox_wallet.wallet_id) == 0
        token = page_token(page.text)
        approved = await client.post(challenge, data={"action": "approve", "page_token": token})
        assert approved.status_code == 303
        again = await client.post(challenge, data={"action": "approve", "page_token": token})
        assert again.status_code == 303
        assert balance_micros(sandbox, sandbox_wallet.wallet_id) == 20_000_000

        status, body = await fund("pm_card_authenticationRequired")
        challenge = page_path(str(body["redirect_url"]))
        token = page_token((await client.get(challenge)).text)
        failed = await client.post(challenge, data={"action": "fail", "page_token": token})
        assert failed.status_code == 303
        outcome = await client.get(failed.headers["location"])
        assert "did not go through" in outcome.text
        assert balance_micros(sandbox, sandbox_wallet.wallet_id) == 20_000_000

        status, body = await fund("pm_card_visa")
        assert status == 200 and body["status"] == "completed" and body["balance"] == "40.00"
    statuses = sorted(payment.status for payment in payments_of(sandbox, sandbox_wallet.wallet_id))
    assert statuses == ["failed"] * 4 + ["succeeded"] * 2
    assert len(deposits(sandbox, sandbox_wallet.wallet_id)) == 2


async def test_a_live_wallet_is_never_funded_by_the_sandbox(sandbox: Runtime) -> None:
    live_wallet = wallet.create_wallet(sandbox.db, name="live", mode="live")
    async with mcp(sandbox, live_wallet) as chat:
        body = tool_error(await chat.call_tool("add_funds", {"amount": 25}), 403)
    assert "SANDBOX" in body["error"] and "STRIPE_SECRET_KEY" in body["next_step"]
    assert payments_of(sandbox, live_wallet.wallet_id) == []


async def test_success_and_cancel_pages_say_sandbox(sandbox: Runtime) -> None:
    async with rest(sandbox) as browser:
        cancel = await browser.get("/fund/cancel", params={"payment_id": "pay_x"})
        assert cancel.status_code == 200 and "SANDBOX" in cancel.text and "Nothing was charged" in cancel.text
        unknown = await browser.get("/fund/success", params={"session_id": "cs_sbx_unknown"})
        assert unknown.status_code == 404 and "SANDBOX" in unknown.text


async def test_a_client_that_supports_url_elicitation_is_asked_to_open_the_page(
    sandbox: Runtime, sandbox_wallet: wallet.NewWallet
) -> None:
    from mcp.client import Client
    from mcp_types import ElicitRequestURLParams, ElicitResult

    from lava_mcp.transports.mcp_server import build_server

    asked: list[ElicitRequestURLParams] = []

    async def open_page(context: object, params: object) -> ElicitResult:
        assert isinstance(params, ElicitRequestURLParams)
        asked.append(params)
        return ElicitResult(action="accept")

    server = build_server(sandbox, default_wallet_id=sandbox_wallet.wallet_id)
    async with Client(server, mode="legacy", elicitation_callback=open_page) as chat:
        body = tool_ok(await chat.call_tool("add_funds", {"amount": 25}))
        tool_ok(await chat.call_tool("add_funds", {}))  # no page to open: nothing asked
    assert body["status"] == "checkout_required"
    [request] = asked
    assert request.url == body["checkout_url"] and request.elicitation_id == body["payment_id"]
    assert "$25.00" in request.message and "SANDBOX" in request.message
    # The default (2026) connection has no back-channel: the URL is still in the result.
    async with mcp(sandbox, sandbox_wallet) as chat:
        assert tool_ok(await chat.call_tool("add_funds", {"amount": 25}))["checkout_url"]


async def test_add_funds_retried_by_a_chat_with_one_idempotency_key_charges_once(
    sandbox: Runtime, sandbox_wallet: wallet.NewWallet
) -> None:
    async with rest(sandbox, sandbox_wallet) as client:
        saved = await client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})
        assert saved.status_code == 201
    async with mcp(sandbox, sandbox_wallet) as chat:
        arguments = {"amount": "25.00", "idempotency_key": "top-up-2026-11-23"}
        first = tool_ok(await chat.call_tool("add_funds", arguments))
        for _ in range(9):
            assert tool_ok(await chat.call_tool("add_funds", arguments)) == first
        assert first["status"] == "completed" and first["balance"] == "25.00"
        tool_error(await chat.call_tool("add_funds", {**arguments, "amount": "30.00"}), 409)
        tool_error(await chat.call_tool("add_funds", {"amount": 25, "idempotency_key": 7}), 400)
    assert balance_micros(sandbox, sandbox_wallet.wallet_id) == 25_000_000
    assert len(deposits(sandbox, sandbox_wallet.wallet_id)) == 1
