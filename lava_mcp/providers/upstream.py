"""Calls to upstream providers over one shared, pooled `httpx.AsyncClient`.

Upstream keys come from the catalog (i.e. from configuration), never from the caller.
"""

from __future__ import annotations

from typing import Any

import httpx

from lava_mcp.errors import BadRequest, LavaError, UpstreamError
from lava_mcp.providers.catalog import Service

ANTHROPIC_VERSION = "2023-06-01"


def new_client(timeout_s: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=10.0),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
    )


def endpoint(service: Service) -> str:
    if service.shape == "openai":
        return f"{service.base_url}/chat/completions"
    if service.shape == "anthropic":
        return f"{service.base_url}/v1/messages"
    return service.base_url


def headers(service: Service) -> dict[str, str]:
    result = {"content-type": "application/json"}
    if service.api_key:
        if service.shape == "anthropic":
            result["x-api-key"] = service.api_key
        else:
            result["authorization"] = f"Bearer {service.api_key}"
    if service.shape == "anthropic":
        result["anthropic-version"] = ANTHROPIC_VERSION
    return result


async def post_json(client: httpx.AsyncClient, service: Service, body: dict[str, Any]) -> Any:
    """POST `body` to the service and return its JSON.

    Raises: UpstreamError (502) when the provider can't be reached, fails, or answers
    something that isn't JSON; BadRequest (400) when it rejects the request as invalid.
    """
    try:
        response = await client.post(endpoint(service), json=body, headers=headers(service))
    except httpx.HTTPError as error:
        raise UpstreamError(
            f"{service.id} could not be reached ({type(error).__name__}); nothing was charged"
        ) from error
    raise_for_upstream_status(service, response.status_code, response.content)
    try:
        return response.json()
    except ValueError as error:
        raise UpstreamError(f"{service.id} answered with invalid JSON; nothing was charged") from error


def raise_for_upstream_status(service: Service, status: int, content: bytes) -> None:
    """Raises the error a non-2xx upstream answer means for our caller."""
    if status < 400:
        return
    detail = _upstream_message(content)
    error: LavaError
    if status in (400, 404, 413, 422):
        error = BadRequest(f"{service.id} rejected the request: {detail}; nothing was charged")
    else:
        error = UpstreamError(f"{service.id} failed with HTTP {status}: {detail}; nothing was charged")
    error.extra["upstream_status"] = status
    raise error


def _upstream_message(content: bytes) -> str:
    import json

    try:
        payload = json.loads(content)
    except ValueError:
        return content[:200].decode(errors="replace") or "no detail"
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:300]
    if isinstance(error, str):
        return error[:300]
    return "no detail"
