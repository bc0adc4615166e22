"""Every method of the client through both transports, `Lava` and `AsyncLava`, against the app
on loopback: each test runs once per transport (the `lava` fixture), so the two cannot drift.

A test awaits what a method returns with `got(...)`: on `AsyncLava` it is a coroutine, on
`Lava` already the result. The requests each client put on the wire are recorded by an httpx
event hook on the caller's own `http_client` (which the client must use as given).
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import openai
import pytest

from lava_mcp import AsyncLava, Lava, LavaAPIError
from lava_mcp.client import (
    ConnectedClientList,
    FundResult,
    Invitation,
    InvitationList,
    Org,
    PaymentMethod,
    PaymentMethodList,
    RequestList,
    SpendKey,
    SpendKeyList,
    Usage,
    Wallet,
)
from lava_mcp.core import oauth, wallet
from tests.fake_provider import FakeProvider
from tests.gateway.conftest import Gateway
from tests.mcp.oauth_helpers import CLAUDE_CALLBACK, pkce_pair

Result = TypeVar("Result")
Client = Lava | AsyncLava


async def got(value: Awaitable[Result] | Result) -> Result:
    """The result of a client call, whichever transport made it."""
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass
class Clients:
    """Clients of one transport (`kind`), closed at teardown."""

    kind: str
    gateway: Gateway
    sent: list[httpx.Request] = field(default_factory=list)
    opened: list[Client] = field(default_factory=list)

    def open(self, wallet_key: str | None = None, base_url: str | None = None) -> Client:
        """A client of this kind whose http client records what it sends in `sent`."""
        key = self.gateway.wallet_key if wallet_key is None else wallet_key
        url = base_url or self.gateway.url
        client: Client
        if self.kind == "sync":
            http = httpx.Client(timeout=30, event_hooks={"request": [self.sent.append]})
            client = Lava(key, base_url=url, http_client=http)
        else:

            async def record(request: httpx.Request) -> None:
                self.sent.append(request)

            async_http = httpx.AsyncClient(timeout=30, event_hooks={"request": [record]})
            client = AsyncLava(key, base_url=url, http_client=async_http)
        self.opened.append(client)
        return client

    async def close(self) -> None:
        for client in self.opened:
            if isinstance(client, AsyncLava):
                await client.aclose()
            else:
                client.close()


@pytest.fixture(params=["sync", "async"])
async def clients(request: pytest.FixtureRequest, gateway: Gateway) -> AsyncIterator[Clients]:
    opened = Clients(request.param, gateway)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def lava(clients: Clients) -> Client:
    """The test wallet's client, `Lava` or `AsyncLava` (the test runs with each)."""
    return clients.open()


def metered_call(gateway: Gateway, secret: str) -> None:
    completion = gateway.openai(secret).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content


async def test_every_spend_key_method(lava: Client, gateway: Gateway) -> None:
    created = await got(
        lava.spend_keys.create(
            name="agent",
            allowed_providers=("openai",),  # any sequence goes out as a JSON list
            allowed_models=["gpt-4o-mini"],
            request_shape="openai",
            spend_limit={"amount": "5.00", "cycle": "weekly"},
            request_limit={"count": 10, "cycle": "daily"},
            rate_limit={"rpm": 30, "burst": 5},
            expires_at="2099-01-01T00:00:00Z",
            status="active",
        )
    )
    assert isinstance(created, SpendKey) and created.key and created.key.startswith("lava_sk_")
    assert created.allowed_providers == ["openai"] and created.allowed_models == ["gpt-4o-mini"]
    assert created.spend_limit is not None and created.spend_limit.cycle == "weekly"
    assert created.request_limit is not None and created.request_limit.count == 10
    assert created.rate_limit is not None and (created.rate_limit.rpm, created.rate_limit.burst) == (30, 5)
    assert created.expires_at is not None and created.expires_at.startswith("2099-01-01")
    metered_call(gateway, created.key)

    seen = await got(lava.spend_keys.retrieve(created.spend_key_id))
    assert seen.key is None and seen.total_requests == 1 and seen.name == "agent"

    # Only the fields given change; None removes a limit.
    updated = await got(lava.spend_keys.update(created.spend_key_id, spend_limit=None, status="paused"))
    assert (updated.spend_limit, updated.status) == (None, "paused")
    assert updated.request_limit == created.request_limit and updated.name == "agent"
    assert updated.key is None and updated.key_preview == created.key_preview

    listed = await got(lava.spend_keys.list())
    assert isinstance(listed, SpendKeyList)
    assert [key.spend_key_id for key in listed.data] == [created.spend_key_id] and not listed.has_more

    await got(lava.spend_keys.update(created.spend_key_id, status="active"))
    rotated = await got(lava.spend_keys.rotate(created.spend_key_id))
    assert rotated.key and rotated.key != created.key and rotated.spend_key_id == created.spend_key_id
    with pytest.raises(openai.AuthenticationError):
        metered_call(gateway, created.key)  # the old secret stops at once
    metered_call(gateway, rotated.key)

    assert await got(lava.spend_keys.revoke(created.spend_key_id)) is True
    assert (await got(lava.spend_keys.retrieve(created.spend_key_id))).status == "revoked"
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        metered_call(gateway, rotated.key)


async def test_listings_page_and_filter(lava: Client, gateway: Gateway) -> None:
    first = await got(lava.spend_keys.create(name="first"))
    second = await got(lava.spend_keys.create(name="second"))
    assert first.key and second.key
    await got(lava.spend_keys.update(first.spend_key_id, status="paused"))

    page = await got(lava.spend_keys.list(limit=1))
    assert [key.name for key in page.data] == ["second"] and page.has_more and page.next_cursor
    rest = await got(lava.spend_keys.list(limit=1, cursor=page.next_cursor))
    assert [key.name for key in rest.data] == ["first"] and not rest.has_more
    paused = await got(lava.spend_keys.list(status="paused"))
    assert [key.name for key in paused.data] == ["first"]

    await got(lava.spend_keys.update(first.spend_key_id, status="active"))
    metered_call(gateway, first.key)
    metered_call(gateway, second.key)
    metered_call(gateway, second.key)
    records = await got(lava.requests.list(spend_key_id=second.spend_key_id))
    assert isinstance(records, RequestList)
    assert [record.spend_key_id for record in records.data] == [second.spend_key_id] * 2
    newest = await got(lava.requests.list(limit=2))
    assert len(newest.data) == 2 and newest.has_more and newest.next_cursor
    oldest = await got(lava.requests.list(limit=2, cursor=newest.next_cursor))
    assert [record.spend_key_id for record in oldest.data] == [first.spend_key_id] and not oldest.has_more


async def test_wallet_usage_and_requests_after_a_metered_call(lava: Client, gateway: Gateway) -> None:
    before = await got(lava.wallet.balance())
    assert isinstance(before, Wallet)
    assert (before.wallet_id, before.balance, before.held, before.currency) == (
        gateway.wallet_id,
        "10.00",
        "0.00",
        "USD",
    )
    key = await got(lava.spend_keys.create(name="meter"))
    assert key.key
    metered_call(gateway, key.key)

    [record] = (await got(lava.requests.list())).data
    assert (record.status, record.provider, record.model) == ("completed", "openai", "gpt-4o-mini")
    assert (
        record.model_usage.total_tokens == record.model_usage.input_tokens + record.model_usage.output_tokens
    )
    assert gateway.balance_micros() < 10_000_000

    usage = await got(lava.usage.retrieve())
    assert isinstance(usage, Usage) and usage.totals.total_requests == 1
    assert usage.totals.total_cost == record.cost
    today = datetime.now(UTC).date()
    same_day = await got(lava.usage.retrieve(start=today.isoformat(), end=today.isoformat()))
    assert [item.date for item in same_day.items] == [today.isoformat()]
    long_ago = await got(lava.usage.retrieve(end=(today - timedelta(days=30)).isoformat()))
    assert long_ago.items and all(item.total_requests == 0 for item in long_ago.items)
    assert long_ago.totals.total_requests == 0


async def test_every_payment_method_method(lava: Client, clients: Clients) -> None:
    empty = await got(lava.payment_methods.list())
    assert isinstance(empty, PaymentMethodList)
    assert (empty.data, empty.has_more, empty.next_cursor) == ([], False, None)
    first = await got(lava.payment_methods.save("pm_card_visa"))
    assert isinstance(first, PaymentMethod) and first.id.startswith("pm_sbx_")
    assert first.model_dump() | {"id": "x"} == {
        "id": "x",
        "brand": "visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2034,  # the sandbox's test cards
        "default": True,
    }
    second = await got(lava.payment_methods.save("pm_card_mastercard"))
    assert isinstance(second, PaymentMethod) and second.default is False and second.brand == "mastercard"

    chosen = await got(lava.payment_methods.set_default(second.id))
    assert isinstance(chosen, PaymentMethod) and chosen.id == second.id and chosen.default is True
    listed = await got(lava.payment_methods.list())
    assert isinstance(listed, PaymentMethodList) and all(
        isinstance(card, PaymentMethod) for card in listed.data
    )
    assert [(card.id, card.default) for card in listed.data] == [(second.id, True), (first.id, False)]

    assert await got(lava.payment_methods.remove(second.id)) is True
    with pytest.raises(LavaAPIError) as gone:
        await got(lava.payment_methods.remove(second.id))
    assert gone.value.status == 404
    with pytest.raises(LavaAPIError) as bad:
        await got(lava.payment_methods.save("pm_made_up"))
    assert bad.value.status == 400
    assert [request.method for request in clients.sent].count("DELETE") == 2


async def test_fund_with_an_idempotency_key_credits_once(
    lava: Client, clients: Clients, gateway: Gateway
) -> None:
    card = await got(lava.payment_methods.save("pm_card_visa"))
    top_up = f"top-up-{secrets.token_hex(4)}"
    first = await got(lava.wallet.fund("25.00", payment_method_id=card.id, idempotency_key=top_up))
    assert isinstance(first, FundResult)
    assert (first.status, first.amount, first.balance, first.sandbox) == ("completed", "25.00", "35.00", True)
    assert first.payment_id is not None and first.payment_id.startswith("pay_")
    again = await got(lava.wallet.fund("25.00", payment_method_id=card.id, idempotency_key=top_up))
    assert isinstance(again, FundResult) and again == first
    assert gateway.balance_micros() == 35_000_000  # credited once

    with pytest.raises(LavaAPIError) as reused:
        await got(lava.wallet.fund(30, idempotency_key=top_up))
    assert reused.value.status == 409
    assert gateway.balance_micros() == 35_000_000

    funds = [request for request in clients.sent if request.url.path == "/v1/wallet/fund"]
    assert [request.headers.get("idempotency-key") for request in funds] == [top_up] * 3
    assert all(request.headers["authorization"] == f"Bearer {gateway.wallet_key}" for request in funds)
    assert all(request.headers["user-agent"] == "lava-mcp-python" for request in clients.sent)
    assert [request.read() for request in funds][
        -1
    ] == b'{"amount":30,"payment_method_id":null,"use_checkout":false}'


async def test_fund_without_an_amount_or_through_checkout(lava: Client, clients: Clients) -> None:
    asked = await got(lava.wallet.fund())
    assert isinstance(asked, FundResult)
    assert (asked.status, asked.balance, asked.min, asked.max) == (
        "amount_required",
        "10.00",
        "10.00",
        "10000.00",
    )
    assert asked.payment_methods == []  # no card saved yet
    checkout = await got(lava.wallet.fund(20, use_checkout=True))
    assert isinstance(checkout, FundResult)
    assert checkout.status == "checkout_required" and checkout.amount == "20.00"
    assert checkout.checkout_url is not None and checkout.checkout_url.startswith("http")
    assert all("idempotency-key" not in request.headers for request in clients.sent)
    assert (await got(lava.wallet.balance())).balance == "10.00"  # nothing charged yet


async def test_a_decline_is_raised_with_the_error_jsons_extra_fields(lava: Client, gateway: Gateway) -> None:
    card = await got(lava.payment_methods.save("pm_card_chargeDeclinedInsufficientFunds"))
    with pytest.raises(LavaAPIError) as declined:
        await got(lava.wallet.fund(20, payment_method_id=card.id, idempotency_key="declined-1"))
    error = declined.value
    assert error.status == 402 and error.body["code"] == 402 and error.message == error.body["error"]
    assert error.body["decline_code"] == "insufficient_funds" and error.body["sandbox"] is True
    assert error.next_step is not None and "smaller amount" in error.next_step
    assert str(error) == f"402: {error.message}"
    assert gateway.balance_micros() == 10_000_000


async def test_every_org_and_invitation_method(lava: Client, clients: Clients, gateway: Gateway) -> None:
    member_wallet = wallet.create_wallet(gateway.runtime.db, name="member")
    member = clients.open(wallet_key=member_wallet.wallet_key)
    org = await got(lava.orgs.create("Acme", plan="team"))
    assert isinstance(org, Org)
    org_id = org.org_id
    assert (org.name, org.plan, org.enabled) == ("Acme", "team", False)
    assert [(m.wallet_id, m.role) for m in org.members] == [(gateway.wallet_id, "admin")]

    # Funding in a team org waits for the admin's switch.
    card = await got(lava.payment_methods.save("pm_card_visa"))
    with pytest.raises(LavaAPIError) as gated:
        await got(lava.wallet.fund(10, payment_method_id=card.id))
    assert gated.value.status == 403
    enabled = await got(lava.orgs.enable(org_id))
    assert isinstance(enabled, Org) and enabled.enabled is True
    assert (await got(lava.wallet.fund(10, payment_method_id=card.id))).status == "completed"

    invitation = await got(lava.orgs.invite(org_id, member_wallet.wallet_id))
    assert isinstance(invitation, Invitation)
    assert (invitation.status, invitation.role, invitation.org_name) == ("pending", "member", "Acme")
    assert (invitation.org_id, invitation.wallet_id, invitation.resolved_at) == (
        org_id,
        member_wallet.wallet_id,
        None,
    )
    pending = await got(lava.orgs.invitations(org_id))
    assert isinstance(pending, InvitationList) and [item.id for item in pending.data] == [invitation.id]
    with pytest.raises(LavaAPIError) as outside:
        await got(member.orgs.retrieve(org_id))  # not a member until it accepts
    assert outside.value.status == 404
    mine = await got(member.org_invitations.list())
    assert isinstance(mine, InvitationList) and [item.id for item in mine.data] == [invitation.id]
    assert all(isinstance(item, Invitation) for item in mine.data)
    accepted = await got(member.org_invitations.accept(invitation.id))
    assert isinstance(accepted, Invitation) and accepted.status == "accepted" and accepted.resolved_at
    assert (await got(member.org_invitations.list())).data == []

    seen = await got(member.orgs.retrieve(org_id))
    assert isinstance(seen, Org)
    assert {(m.wallet_id, m.role) for m in seen.members} == {
        (gateway.wallet_id, "admin"),
        (member_wallet.wallet_id, "member"),
    }
    with pytest.raises(LavaAPIError) as not_admin:
        await got(member.orgs.disable(org_id))
    assert not_admin.value.status == 403
    promoted = await got(lava.orgs.set_role(org_id, member_wallet.wallet_id, "admin"))
    assert isinstance(promoted, Org)
    assert (member_wallet.wallet_id, "admin") in [(m.wallet_id, m.role) for m in promoted.members]
    disabled = await got(member.orgs.disable(org_id))
    assert isinstance(disabled, Org) and disabled.enabled is False

    assert await got(member.orgs.leave(org_id)) is True
    again = await got(lava.orgs.invite(org_id, member_wallet.wallet_id, role="admin"))
    declined = await got(member.org_invitations.decline(again.id))
    assert isinstance(declined, Invitation) and (declined.status, declined.role) == ("declined", "admin")
    third = await got(lava.orgs.invite(org_id, member_wallet.wallet_id))
    assert await got(lava.orgs.remove_member(org_id, member_wallet.wallet_id)) is True  # revokes it
    with pytest.raises(LavaAPIError) as revoked:
        await got(member.org_invitations.accept(third.id))
    assert revoked.value.status == 409
    with pytest.raises(LavaAPIError) as last_admin:
        await got(lava.orgs.leave(org_id))
    assert last_admin.value.status == 409
    final = await got(lava.orgs.retrieve(org_id))
    assert [(m.wallet_id, m.role) for m in final.members] == [(gateway.wallet_id, "admin")]


async def test_errors_carry_status_message_and_body(clients: Clients, lava: Client) -> None:
    with pytest.raises(LavaAPIError) as bad:
        await got(lava.spend_keys.create(spend_limit={"amount": "1.234", "cycle": "daily"}))
    assert bad.value.status == 400 and "spend_limit.amount" in bad.value.message
    assert bad.value.body["code"] == 400 and bad.value.next_step is None
    with pytest.raises(LavaAPIError) as missing:
        await got(lava.spend_keys.retrieve("sk_id_0000"))
    assert missing.value.status == 404 and missing.value.body["code"] == 404

    stranger = clients.open(wallet_key="lava_wk_wrong")
    with pytest.raises(LavaAPIError) as denied:
        await got(stranger.wallet.balance())
    assert denied.value.status == 401


async def test_an_error_that_is_not_json_keeps_its_status_and_reason(
    clients: Clients, fake: FakeProvider
) -> None:
    elsewhere = clients.open(base_url=fake.url)  # a server without these routes: Starlette's text 404
    with pytest.raises(LavaAPIError) as missing:
        await got(elsewhere.wallet.balance())
    assert (missing.value.status, missing.value.message, missing.value.body) == (404, "Not Found", {})


def connect_app(gateway: Gateway, wallet_id: str, name: str) -> str:
    """An app connected over OAuth by the core calls the consent page makes; its grant id."""
    client_id = f"client-{name}"
    oauth.save_client(
        gateway.runtime.db, client_id, {"client_name": name, "redirect_uris": [CLAUDE_CALLBACK]}
    )
    _, challenge = pkce_pair()
    params = {
        "redirect_uri": CLAUDE_CALLBACK,
        "code_challenge": challenge,
        "scopes": [oauth.READ],
        "resource": f"{gateway.url}/mcp",
    }
    request_id = oauth.start_authorization(gateway.runtime.db, client_id, params)
    oauth.approve(gateway.runtime.db, request_id, wallet_id=wallet_id, scopes=[oauth.READ])
    [grant] = [
        c for c in oauth.list_connected_clients(gateway.runtime.db, wallet_id) if c.client_id == client_id
    ]
    return grant.id


async def test_connected_clients_are_listed_and_revoked(
    lava: Client, clients: Clients, gateway: Gateway
) -> None:
    other = wallet.create_wallet(gateway.runtime.db, name="other")
    theirs = connect_app(gateway, other.wallet_id, "Their app")
    mine = connect_app(gateway, gateway.wallet_id, "My app")
    listed = await got(lava.connected_clients.list())
    assert isinstance(listed, ConnectedClientList) and not listed.has_more
    [app] = listed.data
    assert (app.id, app.client_id, app.client_name, app.scopes) == (
        mine,
        "client-My app",
        "My app",
        [oauth.READ],
    )
    assert app.created_at is not None and app.last_used_at is None

    with pytest.raises(LavaAPIError) as not_mine:
        await got(lava.connected_clients.revoke(theirs))
    assert not_mine.value.status == 404
    assert [c.id for c in oauth.list_connected_clients(gateway.runtime.db, other.wallet_id)] == [theirs]

    assert await got(lava.connected_clients.revoke(mine)) is True
    assert (await got(lava.connected_clients.list())).data == []
    with pytest.raises(LavaAPIError) as gone:
        await got(lava.connected_clients.revoke(mine))
    assert gone.value.status == 404
    revokes = [request for request in clients.sent if request.method == "DELETE"]
    assert {request.url.path for request in revokes} == {
        f"/v1/oauth/clients/{theirs}",
        f"/v1/oauth/clients/{mine}",
    }


async def test_another_wallets_key_and_card_are_404(clients: Clients, lava: Client, gateway: Gateway) -> None:
    other = wallet.create_wallet(gateway.runtime.db, name="other")
    theirs = clients.open(wallet_key=other.wallet_key)
    key = await got(lava.spend_keys.create(name="mine"))
    card = await got(lava.payment_methods.save("pm_card_visa"))
    attempts: list[Callable[[], Any]] = [
        lambda: theirs.spend_keys.retrieve(key.spend_key_id),
        lambda: theirs.spend_keys.update(key.spend_key_id, name="x"),
        lambda: theirs.spend_keys.rotate(key.spend_key_id),
        lambda: theirs.spend_keys.revoke(key.spend_key_id),
        lambda: theirs.payment_methods.set_default(card.id),
        lambda: theirs.payment_methods.remove(card.id),
        lambda: theirs.wallet.fund(20, payment_method_id=card.id),
    ]
    for attempt in attempts:
        with pytest.raises(LavaAPIError) as error:
            await got(attempt())
        assert error.value.status == 404
    assert (await got(lava.spend_keys.retrieve(key.spend_key_id))).name == "mine"
    assert [item.id for item in (await got(lava.payment_methods.list())).data] == [card.id]


async def test_an_id_is_one_path_segment(lava: Client, clients: Clients) -> None:
    with pytest.raises(LavaAPIError) as error:
        await got(lava.spend_keys.retrieve("../../v1/wallet"))  # never the wallet's own route
    assert error.value.status == 404
    assert clients.sent[-1].url.raw_path == b"/v1/spend_keys/..%2F..%2Fv1%2Fwallet"


async def test_a_wallet_key_is_required(clients: Clients) -> None:
    with pytest.raises(ValueError, match="wallet key"):
        clients.open(wallet_key="")


async def test_a_method_shows_its_own_name_parameters_and_docstring(clients: Clients) -> None:
    client = clients.open()
    update = client.spend_keys.update
    assert update.__name__ == "update" and update.__doc__ and "None removes a limit" in update.__doc__
    parameters = inspect.signature(update).parameters
    assert list(parameters)[:1] == ["spend_key_id"] and "fields" in parameters
    assert list(inspect.signature(client.wallet.fund).parameters) == [
        "amount",
        "payment_method_id",
        "use_checkout",
        "idempotency_key",
    ]


def test_every_documented_route_has_a_client_method_that_parses_its_response_model(gateway: Gateway) -> None:
    """Each operation of `/openapi.json` is built by one client method, which parses the
    answer with the model the route declares (a delete's `Success` answers True)."""
    import re

    from lava_mcp.client.endpoint import Endpoint
    from lava_mcp.client.request import succeeded

    document = httpx.get(f"{gateway.url}/openapi.json").json()
    built: dict[tuple[str, str], str] = {}
    with Lava(gateway.wallet_key, base_url=gateway.url) as lava:
        for resource in vars(lava).values():
            for name, method in vars(type(resource)).items():
                if not isinstance(method, Endpoint):
                    continue
                signature = inspect.signature(method._build)
                required = [
                    parameter
                    for parameter in list(signature.parameters.values())[1:]
                    if parameter.default is inspect.Parameter.empty
                    and parameter.kind is parameter.POSITIONAL_OR_KEYWORD
                ]
                request = method._build(resource, *["x"] * len(required))
                parse = request.parse
                model = getattr(parse, "__self__", None)
                built[(request.method, request.path)] = (
                    "Success" if parse is succeeded else getattr(model, "__name__", "?")
                )
                assert model is not None or parse is succeeded, name
    for path, operations in document["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "x", path) + "$")
        for verb, operation in operations.items():
            answer = next(iter(operation["responses"].values()))
            declared = answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
            found = [
                model
                for (method, client_path), model in built.items()
                if method == verb.upper() and pattern.match(client_path)
            ]
            assert found == [declared], (verb, path, found, declared)
