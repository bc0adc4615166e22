"""A request to the REST API, described once: what both transports send and how they read it.

Every resource method of the client builds an `APIRequest` — method, path, query, JSON body,
headers, idempotency key, and `parse`, the function that turns the answer's JSON into the
method's typed result — and nothing else. The sync and the async transport
(`transports.py`) each send it and hand the answer back to `APIRequest.read`, so the
rules of a call (which fields go on the wire, what an error is, what the result's type is)
are written once, whichever way the caller awaits it (httpx's `Client`/`AsyncClient` split
a shared `BaseClient` the same way).

A field the caller leaves out is left out of the body (keyword arguments typed by a
`TypedDict`, `resources.SpendKeyFields`): `None` is itself a value on this API
(`spend_limit=None` removes the limit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import quote

import httpx

from lava_mcp.client.errors import error_of

Result = TypeVar("Result")


@dataclass(frozen=True)
class APIRequest(Generic[Result]):
    """One call: what goes on the wire and how its JSON answer becomes the `Result`."""

    method: str
    path: str  # below the base URL: "/v1/spend_keys"
    parse: Callable[[object], Result]
    query: Mapping[str, str] = field(default_factory=dict)
    json: Mapping[str, object] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None  # sent as `Idempotency-Key`: a retry moves no money twice

    def all_headers(self) -> dict[str, str]:
        """This call's own headers, the idempotency key among them."""
        headers = dict(self.headers)
        if self.idempotency_key is not None:
            headers["idempotency-key"] = self.idempotency_key
        return headers

    def read(self, response: httpx.Response) -> Result:
        """The typed result of the answer.

        Raises: LavaAPIError (status 400 or more), ValueError (a 2xx answer that is not
        JSON or not the documented shape; pydantic's ValidationError is one).
        """
        if response.status_code >= 400:
            raise error_of(response)
        return self.parse(response.json())


def succeeded(body: object) -> bool:
    """`{"success": true}`, the answer of a delete."""
    return isinstance(body, dict) and body.get("success") is True


def as_body(fields: Mapping[str, object]) -> dict[str, object]:
    """The JSON body of the fields given, sequences as lists."""
    return {name: _as_list(value) for name, value in fields.items()}


def segment(value: str) -> str:
    """An id as one path segment: `/`, `?` and `#` in it cannot reach another route."""
    return quote(value, safe="")


def query(params: Mapping[str, object]) -> dict[str, str]:
    """The query string's parameters: those with a value (None is left out), as text."""
    return {name: str(value) for name, value in params.items() if value is not None}


def _as_list(value: object) -> object:
    # A tuple or any other sequence goes out as a JSON list; a lone string stays a string
    # (the server then says the field must be a list).
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
