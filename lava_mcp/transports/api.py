"""How the REST API runs on FastAPI: the route class, the wallet key, errors, `/openapi.json`.

Every `/v1` management route is an `APIRoute` of `WalletRoute`, which keeps the rules the
hand-written handlers had, in this order:

1. the wallet key (`Authorization: Bearer lava_wk_…`), else 401 in the flat error JSON;
2. the body read by `http.read_body` (size and time limits: 413 or 408) and parsed by
   `http.parse_json` (numbers keep their exact text, so `{"amount": 1e1}` is still refused
   as the exponent it is; nesting bounded; a body that is not an object is a 400), whatever
   its content type says;
3. the body and query validated by the route's contract models (`lava_mcp.contract`):
   a failure is one flat 400 naming the field (`contract.errors.validation_message`),
   never a 422 with pydantic's list;
4. the handler, whose `LavaError`s are rendered flat by `http.error_response`.

FastAPI reads the body through the request it is given; `ContractRequest` hands it the
body already read and parsed by steps 2 (FastAPI's documented "custom Request and APIRoute
class" seam), so nothing reads the socket twice and no JSON is parsed by another parser.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope

from lava_mcp import __version__
from lava_mcp.contract.common import CURSOR_DESCRIPTION, LIMIT_DESCRIPTION, MAX_PAGE
from lava_mcp.contract.errors import COMMON_STATUSES, error_responses, validation_message
from lava_mcp.core import paging
from lava_mcp.errors import BadRequest, LavaError
from lava_mcp.store.models import Wallet
from lava_mcp.transports.http import authenticate_wallet, error_response, parse_json, read_body

WALLET_KEY_SCHEME = "walletKey"

# Documentation only: `WalletRoute` has authenticated the request before any dependency runs.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name=WALLET_KEY_SCHEME,
    bearerFormat="lava_wk_…",
    description="The wallet key (`LAVA_WALLET_KEY`, `lava_wk_…`) as `Authorization: Bearer lava_wk_…`.",
)


def _owner(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
) -> Wallet:
    owner: Wallet = request.state.owner
    return owner


Owner = Annotated[Wallet, Depends(_owner)]
"""The wallet whose key authenticated the request (a handler's parameter)."""


Limit = Annotated[int | None, Query(ge=1, le=MAX_PAGE, description=LIMIT_DESCRIPTION)]
"""A list's `limit` query parameter (1..100; absent: 20)."""


def _cursor_check(prefix: str) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        try:
            return paging.parse_cursor(value, prefix)
        except BadRequest as error:
            raise ValueError(error.message) from None

    return check


def _cursor_query(prefix: str) -> Any:
    return Query(
        description=CURSOR_DESCRIPTION, json_schema_extra={"pattern": rf"^({prefix}_[0-9a-f]{{28}})?$"}
    )


# A list's `cursor` query parameter: an id with the list's prefix that this service handed out.
KeyCursor = Annotated[str | None, _cursor_query("sk_id"), AfterValidator(_cursor_check("sk_id"))]
RequestCursor = Annotated[str | None, _cursor_query("req"), AfterValidator(_cursor_check("req"))]


class ContractRequest(Request):
    """A request whose body was already read (`read_body`) and parsed (`parse_json`)."""

    def __init__(self, scope: Scope, receive: Receive, *, raw: bytes, parsed: Any) -> None:
        super().__init__(scope, receive)
        self._raw = raw
        self._parsed = parsed

    async def body(self) -> bytes:
        return self._raw

    async def json(self) -> Any:
        return self._parsed


class WalletRoute(APIRoute):
    """A REST route authenticated with the wallet key, its body read and parsed by our
    rules, its errors in the flat JSON (see the module docstring)."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        responses: dict[int | str, dict[str, Any]] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            path, endpoint, responses={**error_responses(*COMMON_STATUSES), **(responses or {})}, **options
        )
        unreachable: set[int | str] = set()
        if self.body_field is None:
            unreachable |= {408, 413}  # no body is read
            if not (
                self.dependant.query_params or self.dependant.path_params or self.dependant.header_params
            ):
                unreachable.add(400)  # nothing the caller sends is judged
        for status in unreachable:
            self.responses.pop(status, None)
            self.response_fields.pop(status, None)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            body_field = self.body_field
            try:
                request.state.owner = await authenticate_wallet(request)
                raw, parsed = b"", None
                if body_field is not None:
                    raw = await read_body(request)
                    if raw.strip():
                        parsed = parse_json(raw)
                        if not isinstance(parsed, dict):
                            raise BadRequest("request body must be a JSON object")
                    elif body_field.field_info.is_required():
                        raise BadRequest("request body must be a JSON object")
                    else:
                        raw = b""
                return await handler(
                    ContractRequest(_as_json(request.scope, raw), request.receive, raw=raw, parsed=parsed)
                )
            except LavaError as error:
                return error_response(error)
            except RequestValidationError as error:
                fields = _model_fields(body_field.field_info.annotation) if body_field is not None else ()
                return error_response(BadRequest(validation_message(list(error.errors()), fields=fields)))

        return route


def _as_json(scope: Scope, raw: bytes) -> Scope:
    """The scope with `content-type: application/json` when a body was parsed as JSON (the
    API always read bodies as JSON, whatever the header said; FastAPI only trusts the header)."""
    if not raw:
        return scope
    headers = [(name, value) for name, value in scope["headers"] if name != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def _model_fields(annotation: Any) -> tuple[str, ...]:
    """The fields of the body model in `annotation` (`Model` or `Model | None`)."""
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return tuple(candidate.model_fields)
    return ()


async def validation_failed(request: Request, error: Exception) -> Response:
    """A validation failure outside a `WalletRoute` (none today): the same flat 400."""
    assert isinstance(error, RequestValidationError)
    return error_response(BadRequest(validation_message(list(error.errors()))))


TAGS: list[dict[str, Any]] = [
    {"name": "wallet", "description": "The balance, and funding it (the `add_funds` tool's JSON)."},
    {"name": "payment methods", "description": "Saved cards."},
    {"name": "spend keys", "description": "Scoped keys for the gateway (`lava_sk_…`), DESIGN §6."},
    {"name": "usage", "description": "Daily totals and the per-request list."},
    {"name": "orgs", "description": "Orgs, their members and invitations."},
    {"name": "oauth", "description": "The wallet's connected OAuth clients."},
]

DESCRIPTION = """\
The management REST API of lava-mcp (Lava's public API shape): the wallet, funding, saved
cards, spend keys, usage, requests, orgs and connected OAuth clients.

Every route takes the wallet key as `Authorization: Bearer lava_wk_…`. Money is a decimal
string (balances and amounts with 2 decimals, costs with 6); an amount you send may be a
number or a string (`25`, `"25.00"`, `"$25"`), never with an exponent or more than 2
decimals. Every error is `{"error": "<message>", "code": <status>}`, plus `next_step` and
other fields where they help; a request refused with 4xx changed nothing. Lists are
`{"data", "has_more", "next_cursor"}`, `limit` 1..100.

Chats and connectors sign in with OAuth instead of the wallet key, on the MCP endpoints:
the authorization server's metadata is at `{base_url}/.well-known/oauth-authorization-server`
(served when `LAVA_PUBLIC_URL` is https).

Not described here: the gateway (`POST /v1/chat/completions`, `POST /v1/messages`,
`GET /v1/models`), which speaks the OpenAI and Anthropic APIs as those providers document
them and takes spend keys; the MCP endpoints (`/mcp`, `/sse`); the Stripe webhook; the
dashboard and the sign-in pages.
"""


def install_openapi(app: FastAPI, *, base_url: str) -> None:
    """Build `/openapi.json` (OpenAPI 3.1) from the routes' models, once, on first request."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title="lava-mcp REST API",
                version=__version__,
                openapi_version="3.1.0",
                summary="A wallet and metering service for AI usage: the management API.",
                description=DESCRIPTION.replace("{base_url}", base_url.rstrip("/")),
                routes=app.routes,
                tags=TAGS,
                servers=[{"url": base_url.rstrip("/")}],
            )
            document["security"] = [{WALLET_KEY_SCHEME: []}]
            _drop_fastapi_validation_shapes(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _drop_fastapi_validation_shapes(document: dict[str, Any]) -> None:
    """FastAPI documents a 422 with its own error list on every route with parameters; this
    API answers validation failures with the flat 400 instead, so neither is described."""
    for path in document.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    schemas = document.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)


def links(status: int, parameters: dict[str, str], *operation_ids: str) -> dict[int | str, dict[str, Any]]:
    """A success response's OpenAPI links: the operations the values it returns address
    (`parameters` maps each parameter name to a runtime expression such as
    `$response.body#/spend_key_id`). A client follows them from a created key to its retrieve,
    update, rotate and revoke; the stateful fuzzer (`tests/fuzz/test_rest_schemathesis.py`)
    chains its calls by them. Merged into the route's `responses`."""
    return {
        status: {
            "links": {
                operation_id: {"operationId": operation_id, "parameters": parameters}
                for operation_id in operation_ids
            }
        }
    }


def flat_json(body: Any, status_code: int = 200) -> JSONResponse:
    """A handler's answer: the JSON the core and `render` built, as it is."""
    return JSONResponse(body, status_code=status_code)
