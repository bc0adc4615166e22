"""`/openapi.json`: OpenAPI 3.1 generated from the contract's models, complete and valid.

Every `/v1` management route the app registers is described, with the wallet key as its
security scheme, its errors in the flat error model and an operation id. The gateway
(`/v1/chat/completions`, `/v1/messages`, `/v1/models`) and the Stripe webhook are left out
on purpose: the gateway speaks the OpenAI and Anthropic APIs as those providers document
them (their own OpenAPI documents describe the bodies it forwards as they are), takes spend
keys instead of the wallet key and answers errors in each provider's shape, not the flat
one; the webhook takes Stripe's signed events, whose shapes Stripe documents.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from openapi_spec_validator import validate
from starlette.routing import Route

from lava_mcp import contract
from lava_mcp.transports.app import build_app
from tests.rest.conftest import Gateway

LEFT_OUT = {"/v1/chat/completions", "/v1/messages", "/v1/models", "/v1/webhooks/stripe"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture
def document(gateway: Gateway) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}/openapi.json")  # public: no key needed to read the contract
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] and document["info"]["version"]


def test_every_v1_management_route_the_app_registers_is_described(
    gateway: Gateway, document: dict[str, Any]
) -> None:
    main = build_app(gateway.runtime, migrate=False).main  # type: ignore[attr-defined]
    described = {(path, method) for path, operations in document["paths"].items() for method in operations}
    registered = set()
    for route in main.routes:
        if isinstance(route, APIRoute):
            registered |= {(route.path, method.lower()) for method in route.methods}
        elif isinstance(route, Route) and route.path.startswith("/v1"):
            # Not described: only the routes this test's docstring says why about.
            assert route.path in LEFT_OUT, f"{route.path} is a /v1 route outside the contract"
    assert len(registered) == 28  # wallet 2, cards 4, keys 6, usage 2, orgs 12, oauth 2
    assert registered == described
    assert not LEFT_OUT & set(document["paths"])
    for path in LEFT_OUT - {"/v1/webhooks/stripe"}:
        assert path in document["info"]["description"]  # the reader is told where they went


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def test_the_wallet_key_is_the_security_scheme_and_oauth_is_pointed_to(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["walletKey"]["type"] == "http" and schemes["walletKey"]["scheme"] == "bearer"
    assert document["security"] == [{"walletKey": []}]
    for path, method, operation in operations(document):
        assert operation["security"] == [{"walletKey": []}], (path, method)
    assert "/.well-known/oauth-authorization-server" in document["info"]["description"]


def test_every_operation_has_an_id_a_tag_and_its_errors_in_the_flat_model(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids)) and all(ids)
    tags = {tag["name"] for tag in document["tags"]}
    for path, method, operation in operations(document):
        assert operation["tags"] and set(operation["tags"]) <= tags, (path, method)
        responses = operation["responses"]
        assert "422" not in responses, (path, method)  # validation failures are the flat 400
        assert {"401", "500"} <= set(responses), (path, method)
        if "requestBody" in operation:  # only a route that reads a body can time out on it
            assert {"400", "408", "413"} <= set(responses), (path, method)
        else:
            assert not {"408", "413"} & set(responses), (path, method)
        if "requestBody" in operation or operation.get("parameters"):
            assert "400" in responses, (path, method)
        if "{" in path:
            assert "404" in responses, (path, method)
        for status, answer in responses.items():
            if status.startswith(("4", "5")):
                content = answer["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (path, method, status)
                contract.Error.model_validate(content["example"])
        if "requestBody" in operation:  # an object, never `null` (a null body is a 400)
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert "$ref" in schema and set(schema) <= {"$ref", "default"}, (path, method, schema)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    fund = document["paths"]["/v1/wallet/fund"]["post"]
    assert {"402", "403", "409", "502", "503"} <= set(fund["responses"])
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in fund["parameters"])


def test_every_request_body_refuses_unknown_fields_and_its_examples_are_valid(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    bodies = {
        "SpendKeyCreate": contract.SpendKeyCreate,
        "SpendKeyUpdate": contract.SpendKeyUpdate,
        "FundRequest": contract.FundRequest,
        "SavePaymentMethod": contract.SavePaymentMethod,
        "OrgCreate": contract.OrgCreate,
        "MemberInvite": contract.MemberInvite,
        "RoleChange": contract.RoleChange,
        "SpendLimitInput": contract.SpendLimitInput,
        "NewSpendLimit": contract.NewSpendLimit,
        "NewRequestLimit": contract.NewRequestLimit,
        "NewRateLimit": contract.NewRateLimit,
        "RequestLimitInput": contract.RequestLimitInput,
        "RateLimitInput": contract.RateLimitInput,
    }
    for name, model in bodies.items():
        assert schemas[name]["additionalProperties"] is False, name
        for example in schemas[name].get("examples", []):
            model.model_validate(example)
    for name in ("SpendKeyCreate", "SpendKeyUpdate", "FundRequest"):
        assert schemas[name]["examples"], name
    for example in schemas["FundResult"]["examples"]:
        contract.FundResult.model_validate(example)
    # Amounts are decimal strings (or numbers) on the way in, strings on the way out.
    amount = schemas["SpendLimitInput"]["properties"]["amount"]["anyOf"][0]
    assert {branch["type"] for branch in amount["anyOf"]} == {"string", "number"}
    assert {branch["type"] for branch in schemas["NewSpendLimit"]["properties"]["amount"]["anyOf"]} == {
        "string",
        "number",
    }
    # A new key's limit is whole; an update may give only a part of one.
    assert schemas["NewSpendLimit"]["required"] == ["amount"] and "required" not in schemas["SpendLimitInput"]
    assert schemas["SpendLimit"]["properties"]["amount"]["type"] == "string"


def test_the_readme_examples_of_funding_are_the_documented_shapes(document: dict[str, Any]) -> None:
    examples = document["components"]["schemas"]["FundResult"]["examples"]
    assert {example["status"] for example in examples} >= {
        "completed",
        "checkout_required",
        "amount_required",
    }


def test_links_lead_from_an_answer_to_the_operations_its_ids_address(document: dict[str, Any]) -> None:
    """Every OpenAPI link names an operation that exists, fills exactly that operation's
    path parameters, and points into a field the answer's schema declares (clients and the
    stateful fuzzer follow them: a created key → retrieve, update, rotate, revoke)."""
    schemas = document["components"]["schemas"]
    by_id = {operation["operationId"]: (path, operation) for path, _, operation in operations(document)}

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    followed = set()
    for path, method, operation in operations(document):
        for status, answer in operation["responses"].items():
            for name, link in answer.get("links", {}).items():
                assert status.startswith("2"), (path, method, status)
                target_path, target = by_id[link["operationId"]]
                assert name == link["operationId"]
                path_parameters = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
                assert set(link["parameters"]) == path_parameters, (path, method, name)
                assert all(f"{{{parameter}}}" in target_path for parameter in path_parameters), target_path
                for expression in link["parameters"].values():
                    assert expression.startswith("$response.body#/"), expression
                    schema = resolve(answer["content"]["application/json"]["schema"])
                    for segment in expression.removeprefix("$response.body#/").split("/"):
                        schema = resolve(
                            schema["items"] if segment.isdigit() else schema["properties"][segment]
                        )
                    assert schema.get("type") == "string", (path, method, name, expression)
                followed.add((operation["operationId"], link["operationId"]))
    key_operations = {"getSpendKey", "updateSpendKey", "rotateSpendKey", "revokeSpendKey"}
    assert {("createSpendKey", target) for target in key_operations} <= followed
    assert {("rotateSpendKey", target) for target in key_operations} <= followed
    assert {
        ("createOrg", "getOrg"),
        ("createOrg", "inviteMember"),
        ("inviteMember", "removeMember"),
    } <= followed
    assert ("listConnectedClients", "revokeConnectedClient") in followed
    assert {("listMyInvitations", "acceptInvitation"), ("listMyInvitations", "declineInvitation")} <= followed
