"""Fuzzing the REST API from its own contract: schemathesis reads `/openapi.json` from the
app served on loopback and generates every operation's requests, valid (positive) and
invalid (negative), plus the document's examples, sent with the wallet key of a sandbox
wallet funded with $10.00 that has a saved test card (`pm_card_visa`), so a top-up can be
charged and credited. An operation on an id is sent both generated ids (a 404, almost
always) and ids that exist (`Targets`: a spend key, the card, an org of the wallet's with a
pending invitation, an invitation from another org, a connected OAuth client), so its body
and its rules are reached too.

For every call:

- schemathesis' checks: no 5xx (`not_a_server_error`); a status the operation documents
  (`status_code_conformance`), in the content type it documents (`content_type_conformance`),
  with a body its schema allows (`response_schema_conformance`). A documented 400 is an
  allowed answer to a request the schema allows: what a schema cannot express (an expiry in
  the past, an amount under the funding minimum, a usage window too long, an org a wallet
  already belongs to) is refused by the core.
- every refusal is the flat error, `code` its own status.
- a refused request (4xx) changes nothing: every table a wallet key can reach (the wallet
  and its ledger, holds and requests, spend keys, saved cards, orgs, members and
  invitations, OAuth grants and tokens) reads the same, row for row, before and after. So
  does every read (a 2xx `GET`).
- money moves only by a top-up: a `fundWallet` answered `completed` credits exactly its
  `amount` (one ledger entry; the balance it answers is the wallet's) unless it replays an
  earlier answer (`replayed: true`, or an `Idempotency-Key` an earlier top-up claimed), which
  credits nothing, as every other status does; no other operation moves the ledger. The
  spend-key count grows by one on a created key and by nothing else (a revoked key stays).
- the ledger verifies (`lava_mcp.core.verify`) after each operation's run.

Two stateful runs follow the document's OpenAPI links (a created key → retrieve, update,
rotate, revoke by `spend_key_id`; a created org → get, invite, enable, leave…; a saved
card → default, remove; a listed invitation → accept, decline; a listed OAuth client →
revoke) with the same checks at every step, each scenario on a new wallet.

Each operation gets its own app and database (the `gateway` fixture), so no operation's
examples see another's state; the examples of one operation share it in a fixed order
(the suite's hypothesis profile is derandomized), so a run is the same on every machine.
Operations are driven with `APIOperation.as_strategy` under `@given` rather than
`schemathesis.pytest.from_fixture`, whose lazy loader fails on pytest 9 (it writes
`request.node._nodeid`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema
from sqlmodel import SQLModel

from lava_mcp.core import verify, wallet
from lava_mcp.money import parse_amount, parse_funding_amount
from lava_mcp.store.db import Database
from lava_mcp.transports.http import parse_json
from tests.conftest import LedgerState, ledger_state
from tests.dashboard.test_connected_apps import connect_with_core
from tests.gateway.conftest import Gateway

EXAMPLES_PER_OPERATION = 60
STATEFUL_SCENARIOS = 50
STATEFUL_STEPS = 10
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Every operation in `/openapi.json` (a test below holds the list to the document).
OPERATIONS = [
    "getWallet",
    "fundWallet",
    "listPaymentMethods",
    "savePaymentMethod",
    "setDefaultPaymentMethod",
    "removePaymentMethod",
    "createSpendKey",
    "listSpendKeys",
    "getSpendKey",
    "updateSpendKey",
    "rotateSpendKey",
    "revokeSpendKey",
    "getUsage",
    "listRequests",
    "createOrg",
    "getOrg",
    "inviteMember",
    "setMemberRole",
    "removeMember",
    "leaveOrg",
    "listOrgInvitations",
    "enableOrg",
    "disableOrg",
    "listMyInvitations",
    "acceptInvitation",
    "declineInvitation",
    "listConnectedClients",
    "revokeConnectedClient",
]
# Not compared: every funding attempt is a `payment` row, whatever became of it (a declined
# card's 402 records its attempt), and the answers kept for replaying a top-up.
UNCOMPARED_TABLES = {"payment", "idempotency_record", "alembic_version"}
MONEY_TABLES = {"wallet", "ledger_entry"}  # what a credited top-up changes


def tables(db: Database) -> dict[str, tuple[tuple[Any, ...], ...]]:
    """Every row of every compared table, in primary-key order."""
    with db.read() as session:
        connection = session.connection()
        return {
            table.name: tuple(
                tuple(row)
                for row in connection.execute(sa.select(table).order_by(*table.primary_key.columns))
            )
            for table in SQLModel.metadata.sorted_tables
            if table.name not in UNCOMPARED_TABLES
        }


@dataclass(frozen=True)
class Snapshot:
    ledger: LedgerState
    spend_keys: int
    rows: dict[str, tuple[tuple[Any, ...], ...]]

    def without(self, names: set[str]) -> dict[str, tuple[tuple[Any, ...], ...]]:
        return {name: rows for name, rows in self.rows.items() if name not in names}


def snapshot(db: Database, wallet_id: str) -> Snapshot:
    rows = tables(db)
    owner_column = list(SQLModel.metadata.tables["spend_key"].columns.keys()).index("wallet_id")
    keys = sum(1 for row in rows["spend_key"] if row[owner_column] == wallet_id)
    return Snapshot(ledger_state(db, wallet_id), keys, rows)


@dataclass
class Wallet:
    """A funded sandbox wallet with a saved test card, and the answers the oracle remembers."""

    wallet_id: str
    wallet_key: str
    claimed_idempotency_keys: set[str]

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.wallet_key}"}


def new_wallet(gateway: Gateway) -> Wallet:
    created = wallet.create_wallet(gateway.runtime.db, name="fuzz")
    gateway.fund("10.00", created.wallet_id)
    with gateway.rest(created.wallet_key) as client:
        saved = client.post("/v1/payment_methods", json={"payment_method_id": "pm_card_visa"})
    assert saved.status_code == 201, saved.text
    return Wallet(created.wallet_id, created.wallet_key, set())


def load_schema(gateway: Gateway) -> OpenApiSchema:
    config = schemathesis.Config.from_dict(
        {
            "base-url": gateway.url,
            # The wallet key is sent by the test; schemathesis' own guesses at it would only
            # ever be 401s (the route security tests cover those).
            "generation": {"deterministic": True, "with-security-parameters": False, "database": "none"},
        }
    )
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json", config=config)
    assert isinstance(schema, OpenApiSchema)
    return schema


def check_call(gateway: Gateway, owner: Wallet, case: Case, response: Any, before: Snapshot) -> str:
    """The oracle of the module docstring, for one answered call; returns its outcome (the
    status, and a top-up's own status)."""
    operation_id = case.operation.definition.raw["operationId"]
    status = response.status_code
    after = snapshot(gateway.runtime.db, owner.wallet_id)
    body = response.json()
    if status >= 400:
        assert body["code"] == status and isinstance(body["error"], str) and body["error"], body
        assert after == before, (operation_id, status, body)
        return str(status)
    if case.method.upper() == "GET":
        assert after == before, (operation_id, status)
        return str(status)
    if operation_id == "fundWallet":
        sent = response.request  # as sent: the key after the HTTP layer, the body's exact text
        idempotency_key = sent.headers.get("Idempotency-Key")
        replay = body.get("replayed") is True or idempotency_key in owner.claimed_idempotency_keys
        if idempotency_key is not None and body["status"] != "amount_required":  # no amount: never claimed
            owner.claimed_idempotency_keys.add(idempotency_key)
        assert after.without(MONEY_TABLES) == before.without(MONEY_TABLES), body
        if body["status"] == "completed" and not replay:
            credited = parse_amount(body["amount"])
            assert parse_funding_amount(parse_json(sent.body)["amount"]) == credited, (sent.body, body)
            assert after.ledger.balance_micros == before.ledger.balance_micros + credited, body
            assert after.ledger.entries == before.ledger.entries + 1, body
            assert parse_amount(body["balance"]) == after.ledger.balance_micros, body
        else:
            assert after == before, body
        return f"{status} {body['status']}{' replayed' if replay else ''}"
    # Every other change: no money moves, and only a create adds a key.
    assert after.ledger == before.ledger, (operation_id, body)
    assert after.rows["ledger_entry"] == before.rows["ledger_entry"], operation_id
    grown = 1 if operation_id == "createSpendKey" else 0
    assert after.spend_keys == before.spend_keys + grown, (operation_id, body)
    return str(status)


@dataclass(frozen=True)
class Targets:
    """Ids that exist, so an operation on one reaches past its 404 (its body, its rules)."""

    spend_key_id: str
    card_id: str
    org_id: str
    invitee_id: str  # a wallet the owner's org has invited (pending)
    invitation_id: str  # the owner's invitation to another wallet's org
    grant_id: str  # an OAuth client connected to the owner's wallet

    def path_parameters(self, operation: APIOperation) -> dict[str, str] | None:
        path = operation.path
        if path.startswith("/v1/spend_keys/"):
            return {"key_id": self.spend_key_id}
        if path.startswith("/v1/payment_methods/"):
            return {"id": self.card_id}
        if path.startswith("/v1/orgs/"):
            return {"id": self.org_id} | ({"wallet_id": self.invitee_id} if "{wallet_id}" in path else {})
        if path.startswith("/v1/org_invitations/"):
            return {"id": self.invitation_id}
        if path.startswith("/v1/oauth/clients/"):
            return {"id": self.grant_id}
        return None


def targets(gateway: Gateway, owner: Wallet) -> Targets:
    """A key, the saved card, an org with a pending invitation, an invitation to the owner
    from another wallet's org, and a connected OAuth client: made as a user would."""
    invitee = wallet.create_wallet(gateway.runtime.db, name="invitee")
    invitation_id = invite_from_another_org(gateway, owner)  # before the owner is in an org of its own
    with gateway.rest(owner.wallet_key) as client:
        key = client.post("/v1/spend_keys", json={"name": "target"}).json()
        card = client.get("/v1/payment_methods").json()["data"][0]
        org = client.post("/v1/orgs", json={"name": "Fuzz", "plan": "team"}).json()
        invited = client.post(f"/v1/orgs/{org['org_id']}/members", json={"wallet_id": invitee.wallet_id})
        assert invited.status_code == 201, invited.text
        enabled = client.post(f"/v1/orgs/{org['org_id']}/enable")  # a team member funds once enabled
        assert enabled.status_code == 200, enabled.text
    grant_id = connect_with_core(gateway, owner.wallet_id, "Fuzz app")
    return Targets(key["spend_key_id"], card["id"], org["org_id"], invitee.wallet_id, invitation_id, grant_id)


def invite_from_another_org(gateway: Gateway, owner: Wallet) -> str:
    """Another wallet's org invites the owner; returns the invitation's id."""
    other = wallet.create_wallet(gateway.runtime.db, name="other admin")
    with gateway.rest(other.wallet_key) as client:
        theirs = client.post("/v1/orgs", json={"name": "Other", "plan": "team"}).json()
        invitation = client.post(f"/v1/orgs/{theirs['org_id']}/members", json={"wallet_id": owner.wallet_id})
    assert invitation.status_code == 201, invitation.text
    invitation_id: str = invitation.json()["id"]
    return invitation_id


@pytest.fixture
def rest(gateway: Gateway) -> Iterator[tuple[Gateway, OpenApiSchema, Wallet]]:
    yield gateway, load_schema(gateway), new_wallet(gateway)
    assert verify.verify(gateway.runtime.db) == []


def test_every_operation_in_the_document_is_fuzzed(rest: tuple[Gateway, OpenApiSchema, Wallet]) -> None:
    _, schema, _ = rest
    documented = [
        operation["operationId"]
        for item in schema.raw_schema["paths"].values()
        for method, operation in item.items()
        if method in {"get", "put", "post", "delete", "patch"}
    ]
    assert sorted(documented) == sorted(OPERATIONS)


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_every_operation_answers_as_documented_and_a_refusal_changes_nothing(
    rest: tuple[Gateway, OpenApiSchema, Wallet], operation_id: str
) -> None:
    gateway, schema, owner = rest
    operation = schema.find_operation_by_id(operation_id)
    # Ids as generated (almost always unknown: 404), the ids of things that exist, and the
    # document's own examples.
    strategies = [operation.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    known = targets(gateway, owner).path_parameters(operation)
    if known is not None:
        strategies += [
            operation.as_strategy(mode, path_parameters=known)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        ]
    cases = st.one_of(*strategies, *schema.get_strategies_from_examples(operation))
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=cases)
    def one_call(case: Case) -> None:
        note(case.as_curl_command())
        before = snapshot(gateway.runtime.db, owner.wallet_id)
        response = case.call(headers=owner.headers)
        case.validate_response(response, checks=CHECKS, headers=owner.headers)
        outcomes[check_call(gateway, owner, case, response, before)] += 1

    one_call()
    print(f"\nfuzz rest {operation_id}: {sum(outcomes.values())} calls {dict(sorted(outcomes.items()))}")
    takes_input = bool(operation.path_parameters or operation.query or operation.headers or operation.body)
    # An operation without input has one request to send; hypothesis sends it and stops.
    assert sum(outcomes.values()) >= (EXAMPLES_PER_OPERATION if takes_input else 1), outcomes
    if operation_id == "fundWallet":  # the money rule was put to the test
        assert outcomes["200 completed"] > 0, outcomes


# Each stateful run: the operations it chains (by tag), and steps that prove the links were
# followed (a created resource reached by its id, through each linked operation).
LINKED_RUNS: dict[str, tuple[list[str], list[str]]] = {
    "spend keys": (
        ["spend keys"],
        [
            "createSpendKey 201",
            "getSpendKey 200",
            "updateSpendKey 200",
            "rotateSpendKey 200",
            "revokeSpendKey 200",
        ],
    ),
    # Each scenario's wallet also has an invitation from another org and a connected app.
    "orgs, cards and apps": (
        ["orgs", "payment methods", "oauth"],
        [
            "createOrg 201",
            "getOrg 200",
            "enableOrg 200",
            "setDefaultPaymentMethod 200",
            "removePaymentMethod 200",
            "declineInvitation 200",
            "revokeConnectedClient 200",
        ],
    ),
}


@pytest.mark.parametrize("run", list(LINKED_RUNS))
def test_linked_calls_answer_as_documented_and_a_refusal_changes_nothing(
    rest: tuple[Gateway, OpenApiSchema, Wallet], run: str
) -> None:
    gateway, schema, _ = rest
    tags, expected_steps = LINKED_RUNS[run]
    followed: Counter[str] = Counter()

    class LinkedCalls(schema.include(tag=tags).as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            self.owner = new_wallet(gateway)  # each scenario on a wallet of its own
            if "oauth" in tags:
                invite_from_another_org(gateway, self.owner)
                connect_with_core(gateway, self.owner.wallet_id, "Linked app")
            self.before: Snapshot | None = None

        def before_call(self, case: Case) -> None:
            self.before = snapshot(gateway.runtime.db, self.owner.wallet_id)

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"headers": self.owner.headers}

        def validate_response(self, response: Any, case: Case, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, headers=self.owner.headers)
            assert self.before is not None
            outcome = check_call(gateway, self.owner, case, response, self.before)
            followed[f"{case.operation.definition.raw['operationId']} {outcome}"] += 1

    LinkedCalls.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    print(f"\nfuzz rest linked {run}: {sum(followed.values())} calls {dict(sorted(followed.items()))}")
    for step in expected_steps:
        assert followed[step] > 0, (step, followed)
