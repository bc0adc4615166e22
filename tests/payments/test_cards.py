"""Saved cards over REST: attached at Stripe (localstripe) to a customer made on first use."""

from __future__ import annotations

from lava_mcp.core import wallet
from lava_mcp.runtime import Runtime
from tests.payments.conftest import StripeFront, rest


async def test_save_list_default_delete(
    live: Runtime, live_wallet: wallet.NewWallet, stripe_front: StripeFront
) -> None:
    async with rest(live, live_wallet) as client:
        assert (await client.get("/v1/payment_methods")).json() == {
            "data": [],
            "has_more": False,
            "next_cursor": None,
        }
        first = await client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})
        assert first.status_code == 201, first.text
        card = first.json()
        assert card["id"].startswith("pm_") and card["id"] != "pm_card_visa"
        assert card | {"id": "x"} == {
            "id": "x",
            "brand": "visa",
            "last4": "4242",
            "exp_month": 12,
            "exp_year": 2030,
            "default": True,
        }
        second = (await client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})).json()
        assert second["default"] is False  # the first card saved stays the default

        listed = (await client.get("/v1/payment_methods")).json()["data"]
        assert [item["id"] for item in listed] == [card["id"], second["id"]]

        chosen = await client.post(f"/v1/payment_methods/{second['id']}/default")
        assert chosen.status_code == 200 and chosen.json()["default"] is True
        listed = (await client.get("/v1/payment_methods")).json()["data"]
        assert [(item["id"], item["default"]) for item in listed] == [
            (second["id"], True),
            (card["id"], False),
        ]

        removed = await client.delete(f"/v1/payment_methods/{second['id']}")
        assert removed.status_code == 200 and removed.json() == {"success": True}
        assert [item["id"] for item in (await client.get("/v1/payment_methods")).json()["data"]] == [
            card["id"]
        ]
        assert (await client.delete(f"/v1/payment_methods/{second['id']}")).status_code == 404

    # One Stripe customer per wallet, created on first use and remembered.
    assert stripe_front.count("POST", "/v1/customers") == 1
    with live.db.read() as session:
        from lava_mcp.store.models import Wallet

        stored = session.get(Wallet, live_wallet.wallet_id)
        assert (
            stored is not None and stored.stripe_customer_id and stored.stripe_customer_id.startswith("cus_")
        )


async def test_another_wallets_card_is_404_everywhere(live: Runtime, live_wallet: wallet.NewWallet) -> None:
    stranger = wallet.create_wallet(live.db, name="stranger", mode="test")
    async with rest(live, live_wallet) as owner_client, rest(live, stranger) as stranger_client:
        card = (
            await owner_client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})
        ).json()
        for response in (
            await stranger_client.post(f"/v1/payment_methods/{card['id']}/default"),
            await stranger_client.delete(f"/v1/payment_methods/{card['id']}"),
            await stranger_client.post(
                "/v1/wallet/fund", json={"amount": 25, "payment_method_id": card["id"]}
            ),
            await stranger_client.post(
                "/v1/wallet/fund", json={"amount": 25, "payment_method_id": card["id"], "use_checkout": True}
            ),
        ):
            assert response.status_code == 404, response.text
            assert response.json()["code"] == 404
        assert (await stranger_client.get("/v1/payment_methods")).json()["data"] == []
        assert (await owner_client.get("/v1/payment_methods")).json()["data"][0]["id"] == card["id"]
    assert wallet.get_balance(live.db, stranger.wallet_id).balance_micros == 0


async def test_saving_bad_cards(live: Runtime, live_wallet: wallet.NewWallet) -> None:
    async with rest(live, live_wallet) as client:
        declined = await client.post(
            "/v1/payment_methods", json={"payment_method_id": "pm_card_visa_chargeDeclined"}
        )
        assert declined.status_code == 402
        assert declined.json()["decline_code"] == "card_declined"
        unknown = await client.post("/v1/payment_methods", json={"payment_method_id": "pm_nope"})
        assert unknown.status_code == 400, unknown.text
        for body in ({}, {"payment_method_id": ""}, {"payment_method_id": 42}):
            response = await client.post("/v1/payment_methods", json=body)
            assert response.status_code == 400 and response.json()["code"] == 400
        assert (await client.post("/v1/payment_methods/pm_nope/default")).status_code == 404
        assert (await client.get("/v1/payment_methods")).json()["data"] == []
        assert (
            await client.get("/v1/payment_methods", headers={"authorization": "Bearer lava_wk_nope"})
        ).status_code == 401
