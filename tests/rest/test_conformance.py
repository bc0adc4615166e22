"""Every REST answer is its contract model exactly: each documented field there with its
type, nothing undocumented. The server's answers, the client's types and `/openapi.json`
are one set of models, and these real calls hold the server to it."""

from __future__ import annotations

from typing import Any

import httpx
import openai

from lava_mcp import contract
from lava_mcp.core import wallet
from tests.rest.conformance import conforms
from tests.rest.conftest import Gateway


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_wallet_usage_and_requests_answers_are_their_models(gateway: Gateway) -> None:
    key = gateway.create_key(name="conformance", allowed_models=["gpt-4o-mini"])
    with openai.OpenAI(api_key=key["key"], base_url=f"{gateway.url}/v1", max_retries=0) as client:
        completion = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert completion.choices[0].message.content
    with gateway.rest() as rest:
        balance = conforms(contract.Wallet, ok(rest.get("/v1/wallet")))
        usage = conforms(contract.Usage, ok(rest.get("/v1/usage")))
        requests = conforms(contract.RequestList, ok(rest.get("/v1/requests", params={"limit": 5})))
    assert isinstance(balance, contract.Wallet) and balance.currency == "USD"
    assert isinstance(usage, contract.Usage) and usage.totals.total_requests == 1
    assert isinstance(requests, contract.RequestList) and requests.data[0].spend_key_id == key["spend_key_id"]


def test_every_spend_key_answer_is_its_model(gateway: Gateway) -> None:
    with gateway.rest() as rest:
        created = conforms(
            contract.SpendKey,
            ok(
                rest.post(
                    "/v1/spend_keys",
                    json={
                        "name": "all",
                        "spend_limit": {"amount": "5"},
                        "request_limit": {"count": 3},
                        "rate_limit": {"rpm": 6},
                        "expires_at": "2099-01-01T00:00:00Z",
                    },
                ),
                201,
            ),
        )
        assert isinstance(created, contract.SpendKey) and created.key
        key_id = created.spend_key_id
        listed = conforms(contract.SpendKeyList, ok(rest.get("/v1/spend_keys")))
        assert isinstance(listed, contract.SpendKeyList) and listed.data[0].key is None
        conforms(contract.SpendKey, ok(rest.get(f"/v1/spend_keys/{key_id}")))
        conforms(contract.SpendKey, ok(rest.put(f"/v1/spend_keys/{key_id}", json={"status": "paused"})))
        rotated = conforms(contract.SpendKey, ok(rest.post(f"/v1/spend_keys/{key_id}/rotate")))
        assert isinstance(rotated, contract.SpendKey) and rotated.key and rotated.key != created.key
        conforms(contract.Success, ok(rest.delete(f"/v1/spend_keys/{key_id}")))


def test_funding_and_card_answers_are_their_models(gateway: Gateway) -> None:
    with gateway.rest() as rest:
        conforms(contract.FundResult, ok(rest.post("/v1/wallet/fund")))  # checkout: no card yet
        card = conforms(
            contract.PaymentMethod,
            ok(rest.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"}), 201),
        )
        assert isinstance(card, contract.PaymentMethod)
        conforms(contract.FundResult, ok(rest.post("/v1/wallet/fund", json={})))  # amount_required
        paid = conforms(contract.FundResult, ok(rest.post("/v1/wallet/fund", json={"amount": "25"})))
        assert isinstance(paid, contract.FundResult) and paid.status == "completed"
        checkout = conforms(
            contract.FundResult, ok(rest.post("/v1/wallet/fund", json={"amount": "25", "use_checkout": True}))
        )
        assert isinstance(checkout, contract.FundResult) and checkout.status == "checkout_required"
        conforms(contract.PaymentMethodList, ok(rest.get("/v1/payment_methods")))
        conforms(contract.PaymentMethod, ok(rest.post(f"/v1/payment_methods/{card.id}/default")))
        conforms(contract.Success, ok(rest.delete(f"/v1/payment_methods/{card.id}")))
        conforms(contract.ConnectedClientList, ok(rest.get("/v1/oauth/clients")))


def test_every_org_answer_is_its_model(gateway: Gateway) -> None:
    member = wallet.create_wallet(gateway.runtime.db, name="member")
    with gateway.rest() as admin, gateway.rest(member.wallet_key) as joiner:
        org = conforms(contract.Org, ok(admin.post("/v1/orgs", json={"name": "Acme", "plan": "team"}), 201))
        assert isinstance(org, contract.Org)
        org_id = org.org_id
        invitation = conforms(
            contract.Invitation,
            ok(admin.post(f"/v1/orgs/{org_id}/members", json={"wallet_id": member.wallet_id}), 201),
        )
        assert isinstance(invitation, contract.Invitation)
        conforms(contract.InvitationList, ok(admin.get(f"/v1/orgs/{org_id}/invitations")))
        conforms(contract.InvitationList, ok(joiner.get("/v1/org_invitations")))
        conforms(contract.Invitation, ok(joiner.post(f"/v1/org_invitations/{invitation.id}/accept")))
        path = f"/v1/orgs/{org_id}/members/{member.wallet_id}"
        conforms(contract.Org, ok(admin.put(path, json={"role": "admin"})))
        conforms(contract.Org, ok(admin.get(f"/v1/orgs/{org_id}")))
        conforms(contract.Org, ok(admin.post(f"/v1/orgs/{org_id}/enable")))
        conforms(contract.Org, ok(admin.post(f"/v1/orgs/{org_id}/disable")))
        conforms(contract.Success, ok(joiner.post(f"/v1/orgs/{org_id}/leave")))
        again = conforms(
            contract.Invitation,
            ok(admin.post(f"/v1/orgs/{org_id}/members", json={"wallet_id": member.wallet_id}), 201),
        )
        assert isinstance(again, contract.Invitation)
        conforms(contract.Invitation, ok(joiner.post(f"/v1/org_invitations/{again.id}/decline")))
        third = ok(admin.post(f"/v1/orgs/{org_id}/members", json={"wallet_id": member.wallet_id}), 201)
        conforms(contract.Success, ok(admin.delete(f"/v1/orgs/{org_id}/members/{third['wallet_id']}")))


def test_an_error_is_the_error_model(gateway: Gateway) -> None:
    with gateway.rest() as rest:
        for response in (
            rest.get("/v1/spend_keys/sk_id_missing"),
            rest.post("/v1/spend_keys", json={"spend_limt": {}}),
            httpx.get(f"{gateway.url}/v1/wallet"),
        ):
            assert response.status_code in (400, 401, 404)
            conforms(contract.Error, response.json())
