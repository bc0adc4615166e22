"""The ledger's tables. Money columns are integer micro-dollars (`*_micros`).

Wallet rows keep two running figures updated in the same transaction as the rows they
summarise, so that a hold is one conditional UPDATE:
  balance_micros = sum(ledger_entry.amount_micros)            (checked by `ledger verify`)
  held_micros    = sum(hold.amount_micros where status=pending)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


def utc_now() -> datetime:
    return datetime.now(UTC)


def _micros(default: int = 0) -> Any:
    return Field(default=default, sa_type=BigInteger)


class Wallet(SQLModel, table=True):
    id: str = Field(primary_key=True)  # wal_…
    name: str = ""
    key_hash: str = Field(unique=True, index=True)  # sha256 hex of the wallet key
    key_preview: str = ""
    mode: str = "sandbox"  # sandbox | test | live: each mode's money buys calls only in that mode
    balance_micros: int = _micros()
    held_micros: int = _micros()
    # Money the processor took back (refund, dispute) that the balance could not cover:
    # owed by the wallet, and it can't spend until it is covered.
    shortfall_micros: int = _micros()
    stripe_customer_id: str | None = None
    created_at: datetime = Field(default_factory=utc_now)


class LedgerEntry(SQLModel, table=True):
    """Append-only. A correction is a new entry, never an edit."""

    __tablename__ = "ledger_entry"
    __table_args__ = (UniqueConstraint("wallet_id", "kind", "reference"),)

    id: int | None = Field(default=None, primary_key=True)
    wallet_id: str = Field(foreign_key="wallet.id", index=True)
    kind: str  # deposit | charge | refund | dispute | dispute_reversal | refund_reversal | shortfall_cover | adjustment
    amount_micros: int = _micros()  # signed: deposits > 0, charges < 0
    balance_after_micros: int = _micros()
    reference: str  # what caused it: payment id, request id, refund or dispute id, operator reason id
    payment_id: str | None = Field(default=None, index=True)  # the payment a refund or dispute reverses
    # The change this entry made to wallet.shortfall_micros: + owed (a refund or dispute the
    # balance could not cover), − covered (by a later deposit or a dispute's reinstatement).
    shortfall_micros: int = _micros()
    memo: str = ""
    created_at: datetime = Field(default_factory=utc_now)


class Hold(SQLModel, table=True):
    """pending → posted (settled at the actual cost ≤ amount) | voided | expired."""

    __table_args__ = (Index("ix_hold_status_expires", "status", "expires_at"),)

    id: str = Field(primary_key=True)  # hold_…
    wallet_id: str = Field(foreign_key="wallet.id", index=True)
    spend_key_id: str | None = Field(default=None, index=True)
    request_id: str = Field(index=True)
    amount_micros: int = _micros()
    settled_micros: int = _micros()
    status: str = "pending"
    expires_at: datetime
    created_at: datetime = Field(default_factory=utc_now)
    resolved_at: datetime | None = None


class RequestRecord(SQLModel, table=True):
    """One metered call: ran (completed or error) or refused before it ran."""

    __tablename__ = "request_record"
    __table_args__ = (Index("ix_request_wallet_id", "wallet_id", "id"),)

    id: str = Field(primary_key=True)  # req_… (sortable: time-ordered)
    wallet_id: str = Field(foreign_key="wallet.id")
    spend_key_id: str | None = Field(default=None, index=True)
    service: str
    model: str | None = None
    endpoint: str = "call_paid_service"
    status: str = "pending"  # pending | completed | error
    ran: bool = False  # False: refused before any upstream traffic (not in usage totals)
    input_tokens: int = 0  # the tokens charged (uncached input; cache tokens below)
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    # How the cost was found: usage (the provider's report), capped (usage cost more than
    # the hold; charged the hold), hold (no usable usage; charged the hold). None: not charged.
    charge_basis: str | None = None
    input_cost_micros: int = _micros()
    cost_micros: int = _micros()
    hold_micros: int = _micros()
    error: str | None = None
    error_code: int | None = None
    created_at: datetime = Field(default_factory=utc_now)
    completed_at: datetime | None = None


class SpendKey(SQLModel, table=True):
    __tablename__ = "spend_key"

    id: str = Field(primary_key=True)  # sk_id_…
    wallet_id: str = Field(foreign_key="wallet.id", index=True)
    name: str = ""
    key_hash: str = Field(unique=True, index=True)
    key_preview: str = ""
    allowed_providers: list[str] | None = Field(default=None, sa_column=Column(JSON))
    allowed_models: list[str] | None = Field(default=None, sa_column=Column(JSON))
    request_shape: str = "openai"  # openai | anthropic
    spend_limit_micros: int | None = Field(default=None, sa_type=BigInteger)
    spend_cycle: str | None = None  # daily | weekly | monthly | total
    request_limit_count: int | None = None
    request_cycle: str | None = None
    rate_rpm: int | None = None
    rate_burst: int | None = None
    expires_at: datetime | None = None
    status: str = "active"  # active | paused | revoked
    # Bumped by every rotate, update and revoke: a hold is taken only if the key is still
    # at the version its request was judged by (a cached or earlier read is never trusted).
    version: int = 1
    # Running figures for the current cycle; a cycle that has ended reads as zero.
    cycle_started_at: datetime | None = None
    cycle_spend_micros: int = _micros()
    held_micros: int = _micros()
    request_cycle_started_at: datetime | None = None
    cycle_requests: int = 0
    held_requests: int = 0
    total_spend_micros: int = _micros()
    total_requests: int = 0
    last_used_at: datetime | None = None
    created_at: datetime = Field(default_factory=utc_now)


class Org(SQLModel, table=True):
    id: str = Field(primary_key=True)  # org_…
    name: str
    plan: str = "individual"  # individual | team | enterprise
    enabled: bool = False
    created_at: datetime = Field(default_factory=utc_now)


class OrgMember(SQLModel, table=True):
    __tablename__ = "org_member"

    org_id: str = Field(foreign_key="org.id", primary_key=True)
    wallet_id: str = Field(foreign_key="wallet.id", primary_key=True, unique=True)
    role: str = "member"  # admin | member
    created_at: datetime = Field(default_factory=utc_now)


class OrgInvitation(SQLModel, table=True):
    """An admin's invitation; nothing about the invited wallet changes until it accepts."""

    __tablename__ = "org_invitation"

    id: str = Field(primary_key=True)  # inv_…
    org_id: str = Field(foreign_key="org.id", index=True)
    wallet_id: str = Field(foreign_key="wallet.id", index=True)
    role: str = "member"  # admin | member
    status: str = "pending"  # pending | accepted | declined | revoked
    invited_by: str  # the admin's wallet id
    created_at: datetime = Field(default_factory=utc_now)
    resolved_at: datetime | None = None


class PaymentMethod(SQLModel, table=True):
    __tablename__ = "payment_method"

    id: str = Field(primary_key=True)  # Stripe pm_… (or sandbox pm_sbx_…)
    wallet_id: str = Field(foreign_key="wallet.id", index=True)
    brand: str = ""
    last4: str = ""
    exp_month: int = 0
    exp_year: int = 0
    is_default: bool = False
    created_at: datetime = Field(default_factory=utc_now)


class Payment(SQLModel, table=True):
    """Every funding attempt, whatever became of it."""

    id: str = Field(primary_key=True)  # pay_…
    wallet_id: str = Field(foreign_key="wallet.id", index=True)
    amount_micros: int = _micros()
    method: str = "card"  # card | checkout
    status: str = "pending"  # pending | requires_action | checkout_pending | succeeded | failed
    payment_method_id: str | None = None
    stripe_payment_intent_id: str | None = Field(default=None, index=True)
    stripe_checkout_session_id: str | None = Field(default=None, index=True)
    redirect_url: str | None = None
    failure_code: str | None = None
    decline_code: str | None = None
    failure_message: str | None = None
    mode: str = "sandbox"
    # When the processor was last asked about this payment (reconciling lost answers).
    reconciled_at: datetime | None = None
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "idempotency_record"

    wallet_id: str = Field(primary_key=True)
    scope: str = Field(primary_key=True)  # e.g. "wallet.fund"
    key: str = Field(primary_key=True)
    request_hash: str
    status_code: int | None = None  # None while the first attempt is in flight
    response: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utc_now)


class WebhookEvent(SQLModel, table=True):
    __tablename__ = "webhook_event"

    id: str = Field(primary_key=True)  # Stripe evt_…
    type: str
    received_at: datetime = Field(default_factory=utc_now)


class WebSession(SQLModel, table=True):
    """A dashboard sign-in (`core/sessions.py`). Only the session id's SHA-256 is kept."""

    __tablename__ = "web_session"

    id_hash: str = Field(primary_key=True)  # sha256 hex of the random session id in the cookie
    wallet_id: str = Field(foreign_key="wallet.id", index=True)
    created_at: datetime = Field(default_factory=utc_now)
    expires_at: datetime = Field(index=True)


class OAuthClient(SQLModel, table=True):
    """An OAuth client: registered dynamically, or known by its metadata document's URL.

    Every client is public (no secret exists to store): PKCE S256 and exactly registered
    redirect URIs are what bind a code to the client that asked for it.
    """

    __tablename__ = "oauth_client"

    id: str = Field(primary_key=True)  # the client_id: a uuid, or an https metadata document URL
    name: str = ""
    metadata_document: bool = False  # True: `id` is a Client ID Metadata Document URL
    # The client's registered metadata (redirect URIs, grant types, scope) as the SDK reads it.
    client_metadata: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    fetched_at: datetime | None = None  # when a metadata document was last read
    created_at: datetime = Field(default_factory=utc_now)


class OAuthPendingAuthorization(SQLModel, table=True):
    """An authorization request waiting on the wallet owner's sign-in and consent."""

    __tablename__ = "oauth_pending_authorization"

    id_hash: str = Field(primary_key=True)  # sha256 of the id in the consent page's URL
    client_id: str = Field(index=True)
    # AuthorizationParams: scopes, code_challenge, redirect_uri, state, resource.
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    csrf_hash: str | None = None  # the consent form's token, bound to this request
    wallet_id: str | None = None  # set by a sign-up on the page: the wallet it created
    expires_at: datetime
    used_at: datetime | None = None
    created_at: datetime = Field(default_factory=utc_now)


class OAuthGrant(SQLModel, table=True):
    """A connected client: one wallet's consent to one client, with the scopes it gave.

    Its codes and tokens live only while it does: revoking it ends them all at once."""

    __tablename__ = "oauth_grant"

    id: str = Field(primary_key=True)  # oag_…
    wallet_id: str = Field(foreign_key="wallet.id", index=True)
    client_id: str = Field(index=True)
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    resource: str
    created_at: datetime = Field(default_factory=utc_now)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class OAuthCode(SQLModel, table=True):
    """An authorization code: single use, short-lived, stored as its hash."""

    __tablename__ = "oauth_code"

    code_hash: str = Field(primary_key=True)
    grant_id: str = Field(foreign_key="oauth_grant.id", index=True)
    code_challenge: str
    redirect_uri: str
    redirect_uri_provided_explicitly: bool = True
    expires_at: datetime
    used_at: datetime | None = None


class OAuthToken(SQLModel, table=True):
    """An access or refresh token, stored as its hash. A refresh token is used once (rotation)."""

    __tablename__ = "oauth_token"

    token_hash: str = Field(primary_key=True)
    kind: str  # access | refresh
    grant_id: str = Field(foreign_key="oauth_grant.id", index=True)
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    expires_at: datetime
    used_at: datetime | None = None  # a refresh token's rotation
    created_at: datetime = Field(default_factory=utc_now)
