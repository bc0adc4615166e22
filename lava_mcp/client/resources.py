"""The REST API's resources as the client shows them, each method written once for `Lava`
and `AsyncLava` (see `endpoint.py`): it builds the `APIRequest` of its route and says what
its answer parses into.

Every result is the contract's model of its route (`lava_mcp.client.models`, the same model
the server declares as the route's `response_model`), and a delete answers True.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict, Unpack

from lava_mcp.client.endpoint import Resource, TransportT, endpoint
from lava_mcp.client.models import (
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
from lava_mcp.client.request import APIRequest, as_body, query, segment, succeeded


class SpendKeyFields(TypedDict, total=False):
    """The fields of a spend key a caller sets; a field left out is left out of the body,
    and None is sent as null (on update: remove that limit, or allow every model)."""

    name: str | None
    allowed_providers: Sequence[str] | None
    allowed_models: Sequence[str] | None
    request_shape: str | None
    spend_limit: Mapping[str, object] | None  # {"amount": "50.00", "cycle": "monthly"}
    request_limit: Mapping[str, object] | None  # {"count": 100, "cycle": "daily"}
    rate_limit: Mapping[str, object] | None  # {"rpm": 60, "burst": 10}
    expires_at: str | None  # ISO 8601
    status: str | None  # "active" | "paused"


class Page(TypedDict, total=False):
    """A page of a listing: at most `limit` items, after `cursor` (the previous page's
    `next_cursor`). None is the same as left out."""

    limit: int | None
    cursor: str | None


class SpendKeyPage(Page, total=False):
    status: str | None  # "active" | "paused" | "revoked"


class RequestPage(Page, total=False):
    spend_key_id: str | None


class UsagePeriod(TypedDict, total=False):
    start: str | None  # ISO date, inclusive
    end: str | None


class SpendKeys(Resource[TransportT]):
    """`/v1/spend_keys`: scoped keys backed by the wallet."""

    @endpoint
    def create(self, **fields: Unpack[SpendKeyFields]) -> APIRequest[SpendKey]:
        """Create a spend key; the result's `key` is the secret, shown this once.

        Raises: LavaAPIError (400 bad field, 401 bad wallet key).
        """
        return APIRequest("POST", "/v1/spend_keys", SpendKey.model_validate, json=as_body(fields))

    @endpoint
    def list(self, **params: Unpack[SpendKeyPage]) -> APIRequest[SpendKeyList]:
        """The wallet's keys, newest first (no secrets). Raises: LavaAPIError."""
        return APIRequest("GET", "/v1/spend_keys", SpendKeyList.model_validate, query=query(params))

    @endpoint
    def retrieve(self, spend_key_id: str) -> APIRequest[SpendKey]:
        """Raises: LavaAPIError (404 for an unknown id or another wallet's key)."""
        return APIRequest("GET", f"/v1/spend_keys/{segment(spend_key_id)}", SpendKey.model_validate)

    @endpoint
    def update(self, spend_key_id: str, **fields: Unpack[SpendKeyFields]) -> APIRequest[SpendKey]:
        """Change the fields given (None removes a limit); the secret stays.

        Raises: LavaAPIError (400 bad field or none given, 404 unknown key).
        """
        return APIRequest(
            "PUT", f"/v1/spend_keys/{segment(spend_key_id)}", SpendKey.model_validate, json=as_body(fields)
        )

    @endpoint
    def rotate(self, spend_key_id: str) -> APIRequest[SpendKey]:
        """A new secret (in `key`); the old one stops working at once. Raises: LavaAPIError."""
        return APIRequest("POST", f"/v1/spend_keys/{segment(spend_key_id)}/rotate", SpendKey.model_validate)

    @endpoint
    def revoke(self, spend_key_id: str) -> APIRequest[bool]:
        """Revoke for good; True when done. Raises: LavaAPIError."""
        return APIRequest("DELETE", f"/v1/spend_keys/{segment(spend_key_id)}", succeeded)


class WalletResource(Resource[TransportT]):
    """`/v1/wallet`: the balance, and adding funds."""

    @endpoint
    def balance(self) -> APIRequest[Wallet]:
        """Raises: LavaAPIError."""
        return APIRequest("GET", "/v1/wallet", Wallet.model_validate)

    @endpoint
    def fund(
        self,
        amount: str | int | None = None,
        *,
        payment_method_id: str | None = None,
        use_checkout: bool = False,
        idempotency_key: str | None = None,
    ) -> APIRequest[FundResult]:
        """Add funds: charge a saved card (the default unless `payment_method_id` names one)
        or, with `use_checkout=True` or no card saved, get a `checkout_url` to pay on.

        `amount` is dollars as a decimal string ("25.00") or a whole number; left out, the
        answer says the range (`"status": "amount_required"`). With an `idempotency_key`, a
        retry answers the first attempt's result and moves no money twice.

        Returns a `FundResult`: its `status` (`completed`, `processing`, `requires_action`,
        `checkout_required`, `amount_required`) says which of `balance`, `checkout_url`,
        `redirect_url`, `payment_methods`, `min`/`max` … it carries.
        Raises: LavaAPIError (400 bad amount, 402 declined — `body["decline_code"]`, 404
        another wallet's card, 409 the key reused for another request).
        """
        body = as_body(
            {"amount": amount, "payment_method_id": payment_method_id, "use_checkout": use_checkout}
        )
        return APIRequest(
            "POST", "/v1/wallet/fund", FundResult.model_validate, json=body, idempotency_key=idempotency_key
        )


class PaymentMethods(Resource[TransportT]):
    """`/v1/payment_methods`: the wallet's saved cards, each a `PaymentMethod` (`id`, `brand`,
    `last4`, `exp_month`, `exp_year`, `default`)."""

    @endpoint
    def list(self) -> APIRequest[PaymentMethodList]:
        """The saved cards (`data`), the default card first. Raises: LavaAPIError."""
        return APIRequest("GET", "/v1/payment_methods", PaymentMethodList.model_validate)

    @endpoint
    def save(self, payment_method_id: str) -> APIRequest[PaymentMethod]:
        """Save a card tokenised by Stripe (`pm_…`; in the sandbox, Stripe's test tokens such
        as `pm_card_visa`); the first card saved becomes the default.
        Raises: LavaAPIError (400 not a usable card)."""
        body = {"payment_method_id": payment_method_id}
        return APIRequest("POST", "/v1/payment_methods", PaymentMethod.model_validate, json=body)

    @endpoint
    def set_default(self, payment_method_id: str) -> APIRequest[PaymentMethod]:
        """Make a saved card the one charged by default: that card. Raises: LavaAPIError (404)."""
        path = f"/v1/payment_methods/{segment(payment_method_id)}/default"
        return APIRequest("POST", path, PaymentMethod.model_validate)

    @endpoint
    def remove(self, payment_method_id: str) -> APIRequest[bool]:
        """Forget a saved card; True when done. Raises: LavaAPIError (404)."""
        return APIRequest("DELETE", f"/v1/payment_methods/{segment(payment_method_id)}", succeeded)


class UsageResource(Resource[TransportT]):
    """`/v1/usage`: daily totals."""

    @endpoint
    def retrieve(self, **params: Unpack[UsagePeriod]) -> APIRequest[Usage]:
        """Daily totals between two ISO dates. Raises: LavaAPIError."""
        return APIRequest("GET", "/v1/usage", Usage.model_validate, query=query(params))


class Requests(Resource[TransportT]):
    """`/v1/requests`: one record per metered call."""

    @endpoint
    def list(self, **params: Unpack[RequestPage]) -> APIRequest[RequestList]:
        """Per-request records, newest first. Raises: LavaAPIError."""
        return APIRequest("GET", "/v1/requests", RequestList.model_validate, query=query(params))


class Orgs(Resource[TransportT]):
    """`/v1/orgs`: an org's members, roles, invitations and the admin's funding switch. A
    wallet outside the org gets 404 on its routes; a member who is not an admin, 403 on a
    change. An org answers as an `Org` (`org_id`, `name`, `plan`, `enabled`, `members` —
    each `wallet_id` and `role` — `created_at`), an invitation as an `Invitation`."""

    @endpoint
    def create(self, name: str, *, plan: str = "individual") -> APIRequest[Org]:
        """A new org (`individual`, `team` or `enterprise`), not enabled; this wallet is its
        admin. Raises: LavaAPIError (400 name or plan, 409 already in an org)."""
        return APIRequest("POST", "/v1/orgs", Org.model_validate, json={"name": name, "plan": plan})

    @endpoint
    def retrieve(self, org_id: str) -> APIRequest[Org]:
        """Raises: LavaAPIError (404 unknown, or not this wallet's org)."""
        return APIRequest("GET", f"/v1/orgs/{segment(org_id)}", Org.model_validate)

    @endpoint
    def invite(self, org_id: str, wallet_id: str, *, role: str = "member") -> APIRequest[Invitation]:
        """Invite a wallet (`member` or `admin`): the invitation, pending until that wallet
        accepts it. Raises: LavaAPIError (403 not an admin, 404, 409 already in an org)."""
        body = {"wallet_id": wallet_id, "role": role}
        return APIRequest("POST", f"/v1/orgs/{segment(org_id)}/members", Invitation.model_validate, json=body)

    @endpoint
    def set_role(self, org_id: str, wallet_id: str, role: str) -> APIRequest[Org]:
        """The org with the member's new role. Raises: LavaAPIError (403, 404, 409 the last
        admin)."""
        path = f"/v1/orgs/{segment(org_id)}/members/{segment(wallet_id)}"
        return APIRequest("PUT", path, Org.model_validate, json={"role": role})

    @endpoint
    def remove_member(self, org_id: str, wallet_id: str) -> APIRequest[bool]:
        """Remove a member, or revoke a pending invitation; True when done.
        Raises: LavaAPIError (403, 404, 409 the last admin)."""
        path = f"/v1/orgs/{segment(org_id)}/members/{segment(wallet_id)}"
        return APIRequest("DELETE", path, succeeded)

    @endpoint
    def leave(self, org_id: str) -> APIRequest[bool]:
        """This wallet leaves the org; True when done. Raises: LavaAPIError (404, 409 the
        last admin)."""
        return APIRequest("POST", f"/v1/orgs/{segment(org_id)}/leave", succeeded)

    @endpoint
    def invitations(self, org_id: str) -> APIRequest[InvitationList]:
        """The org's pending invitations (`data`; admins only). Raises: LavaAPIError (403, 404)."""
        return APIRequest("GET", f"/v1/orgs/{segment(org_id)}/invitations", InvitationList.model_validate)

    @endpoint
    def enable(self, org_id: str) -> APIRequest[Org]:
        """Let the org's members fund their wallets. Raises: LavaAPIError (403, 404)."""
        return APIRequest("POST", f"/v1/orgs/{segment(org_id)}/enable", Org.model_validate)

    @endpoint
    def disable(self, org_id: str) -> APIRequest[Org]:
        """Stop funding in a `team` or `enterprise` org. Raises: LavaAPIError (403, 404)."""
        return APIRequest("POST", f"/v1/orgs/{segment(org_id)}/disable", Org.model_validate)


class OrgInvitations(Resource[TransportT]):
    """`/v1/org_invitations`: this wallet's invitations to orgs, which only it can answer.
    Each answers as an `Invitation` (`id`, `org_id`, `org_name`, `wallet_id`, `role`,
    `status`, `invited_by`, `created_at`, `resolved_at`)."""

    @endpoint
    def list(self) -> APIRequest[InvitationList]:
        """This wallet's pending invitations (`data`). Raises: LavaAPIError."""
        return APIRequest("GET", "/v1/org_invitations", InvitationList.model_validate)

    @endpoint
    def accept(self, invitation_id: str) -> APIRequest[Invitation]:
        """Join the org: the invitation, `accepted`. Raises: LavaAPIError (404 unknown or
        another wallet's, 409 no longer pending or already in an org)."""
        path = f"/v1/org_invitations/{segment(invitation_id)}/accept"
        return APIRequest("POST", path, Invitation.model_validate)

    @endpoint
    def decline(self, invitation_id: str) -> APIRequest[Invitation]:
        """The invitation, `declined`. Raises: LavaAPIError (404, 409 no longer pending)."""
        path = f"/v1/org_invitations/{segment(invitation_id)}/decline"
        return APIRequest("POST", path, Invitation.model_validate)


class ConnectedClients(Resource[TransportT]):
    """`/v1/oauth/clients`: the chats and apps connected to this wallet through OAuth (the
    dashboard's connected apps)."""

    @endpoint
    def list(self) -> APIRequest[ConnectedClientList]:
        """The connected clients (`data`): each `id`, `client_id`, `client_name`, `scopes`,
        `created_at`, `last_used_at`. Raises: LavaAPIError."""
        return APIRequest("GET", "/v1/oauth/clients", ConnectedClientList.model_validate)

    @endpoint
    def revoke(self, connected_client_id: str) -> APIRequest[bool]:
        """Disconnect one (its `id` in the list): its tokens fail on their next request, on
        every surface; True when done. Raises: LavaAPIError (404 unknown or another wallet's)."""
        return APIRequest("DELETE", f"/v1/oauth/clients/{segment(connected_client_id)}", succeeded)
