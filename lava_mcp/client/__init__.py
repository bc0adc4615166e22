"""The Python client of the REST API, sync (`Lava`) and async (`AsyncLava`).

    from lava_mcp import Lava
    wallet = Lava(os.environ["LAVA_WALLET_KEY"], base_url="http://127.0.0.1:8787")
    key = wallet.spend_keys.create(name="Agent", spend_limit={"amount": "50.00", "cycle": "monthly"})
    key.key  # the secret, shown once

It mirrors Lava's Node SDK: `spend_keys.create/list/retrieve/update/rotate/revoke`,
`wallet.balance()`, `usage.retrieve()`, `requests.list()`. Every answer is a typed
pydantic model; every error is raised as `LavaAPIError` with the HTTP status and message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from lava_mcp.client.models import (
    RequestList,
    RequestRecord,
    SpendKey,
    SpendKeyList,
    Usage,
    Wallet,
)

__all__ = [
    "AsyncLava",
    "Lava",
    "LavaAPIError",
    "RequestList",
    "RequestRecord",
    "SpendKey",
    "SpendKeyList",
    "Usage",
    "Wallet",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8787"
DEFAULT_TIMEOUT_S = 30.0

Model = TypeVar("Model", bound=BaseModel)


class _Unset:
    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Any = _Unset()  # a field left out (None means "null": remove that limit)


class LavaAPIError(Exception):
    """An error answer: `status` (HTTP), `message`, `body` (the JSON, with `next_step`,
    `retry_after_s` … when the server gave them)."""

    def __init__(self, status: int, message: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body: dict[str, Any] = dict(body or {})

    @property
    def next_step(self) -> str | None:
        value = self.body.get("next_step")
        return value if isinstance(value, str) else None


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = body.get("error") if isinstance(body.get("error"), str) else response.reason_phrase
    raise LavaAPIError(response.status_code, str(message), body)


def _fields(**given: Any) -> dict[str, Any]:
    return {name: value for name, value in given.items() if value is not NOT_GIVEN}


def _key_fields(
    name: Any,
    allowed_providers: Any,
    allowed_models: Any,
    request_shape: Any,
    spend_limit: Any,
    request_limit: Any,
    rate_limit: Any,
    expires_at: Any,
    status: Any,
) -> dict[str, Any]:
    return _fields(
        name=name,
        allowed_providers=_as_list(allowed_providers),
        allowed_models=_as_list(allowed_models),
        request_shape=request_shape,
        spend_limit=spend_limit,
        request_limit=request_limit,
        rate_limit=rate_limit,
        expires_at=expires_at,
        status=status,
    )


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value


def _query(**params: Any) -> dict[str, Any]:
    return {name: value for name, value in params.items() if value is not None}


def _headers(wallet_key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {wallet_key}", "user-agent": "lava-mcp-python"}


# -- sync --------------------------------------------------------------------------------------


class Lava:
    """A wallet, through the REST API. Use as a context manager (or call `close()`)."""

    def __init__(
        self,
        wallet_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        http_client: httpx.Client | None = None,
    ) -> None:
        if not wallet_key:
            raise ValueError("a wallet key (lava_wk_…) is required")
        self._http = http_client or httpx.Client(timeout=timeout_s)
        self._base_url = base_url.rstrip("/")
        self._headers = _headers(wallet_key)
        self.spend_keys = SpendKeys(self)
        self.wallet = WalletResource(self)
        self.usage = UsageResource(self)
        self.requests = Requests(self)

    def _request(self, method: str, path: str, model: type[Model], **options: Any) -> Model:
        response = self._http.request(method, self._base_url + path, headers=self._headers, **options)
        _raise_for(response)
        return model.model_validate(response.json())

    def _request_json(self, method: str, path: str, **options: Any) -> Any:
        response = self._http.request(method, self._base_url + path, headers=self._headers, **options)
        _raise_for(response)
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Lava:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class SpendKeys:
    def __init__(self, client: Lava) -> None:
        self._client = client

    def create(
        self,
        *,
        name: str | None = NOT_GIVEN,
        allowed_providers: Sequence[str] | None = NOT_GIVEN,
        allowed_models: Sequence[str] | None = NOT_GIVEN,
        request_shape: str | None = NOT_GIVEN,
        spend_limit: Mapping[str, Any] | None = NOT_GIVEN,
        request_limit: Mapping[str, Any] | None = NOT_GIVEN,
        rate_limit: Mapping[str, Any] | None = NOT_GIVEN,
        expires_at: str | None = NOT_GIVEN,
        status: str | None = NOT_GIVEN,
    ) -> SpendKey:
        """Create a spend key; the result's `key` is the secret, shown this once.

        Raises: LavaAPIError (400 bad field, 401 bad wallet key).
        """
        body = _key_fields(
            name, allowed_providers, allowed_models, request_shape, spend_limit, request_limit, rate_limit,
            expires_at, status,
        )  # fmt: skip
        return self._client._request("POST", "/v1/spend_keys", SpendKey, json=body)

    def list(
        self, *, limit: int | None = None, cursor: str | None = None, status: str | None = None
    ) -> SpendKeyList:
        """The wallet's keys, newest first (no secrets). Raises: LavaAPIError."""
        params = _query(limit=limit, cursor=cursor, status=status)
        return self._client._request("GET", "/v1/spend_keys", SpendKeyList, params=params)

    def retrieve(self, spend_key_id: str) -> SpendKey:
        """Raises: LavaAPIError (404 for an unknown id or another wallet's key)."""
        return self._client._request("GET", f"/v1/spend_keys/{spend_key_id}", SpendKey)

    def update(
        self,
        spend_key_id: str,
        *,
        name: str | None = NOT_GIVEN,
        allowed_providers: Sequence[str] | None = NOT_GIVEN,
        allowed_models: Sequence[str] | None = NOT_GIVEN,
        request_shape: str | None = NOT_GIVEN,
        spend_limit: Mapping[str, Any] | None = NOT_GIVEN,
        request_limit: Mapping[str, Any] | None = NOT_GIVEN,
        rate_limit: Mapping[str, Any] | None = NOT_GIVEN,
        expires_at: str | None = NOT_GIVEN,
        status: str | None = NOT_GIVEN,
    ) -> SpendKey:
        """Change the fields given (None removes a limit); the secret stays. Raises: LavaAPIError."""
        body = _key_fields(
            name, allowed_providers, allowed_models, request_shape, spend_limit, request_limit, rate_limit,
            expires_at, status,
        )  # fmt: skip
        return self._client._request("PUT", f"/v1/spend_keys/{spend_key_id}", SpendKey, json=body)

    def rotate(self, spend_key_id: str) -> SpendKey:
        """A new secret (in `key`); the old one stops working at once. Raises: LavaAPIError."""
        return self._client._request("POST", f"/v1/spend_keys/{spend_key_id}/rotate", SpendKey)

    def revoke(self, spend_key_id: str) -> bool:
        """Revoke for good. Raises: LavaAPIError."""
        return bool(self._client._request_json("DELETE", f"/v1/spend_keys/{spend_key_id}").get("success"))


class WalletResource:
    def __init__(self, client: Lava) -> None:
        self._client = client

    def balance(self) -> Wallet:
        """Raises: LavaAPIError."""
        return self._client._request("GET", "/v1/wallet", Wallet)


class UsageResource:
    def __init__(self, client: Lava) -> None:
        self._client = client

    def retrieve(self, *, start: str | None = None, end: str | None = None) -> Usage:
        """Daily totals between two ISO dates. Raises: LavaAPIError."""
        return self._client._request("GET", "/v1/usage", Usage, params=_query(start=start, end=end))


class Requests:
    def __init__(self, client: Lava) -> None:
        self._client = client

    def list(
        self, *, limit: int | None = None, cursor: str | None = None, spend_key_id: str | None = None
    ) -> RequestList:
        """Per-request records, newest first. Raises: LavaAPIError."""
        params = _query(limit=limit, cursor=cursor, spend_key_id=spend_key_id)
        return self._client._request("GET", "/v1/requests", RequestList, params=params)


# -- async -------------------------------------------------------------------------------------


class AsyncLava:
    """`Lava` for asyncio/anyio code: the same resources, awaited."""

    def __init__(
        self,
        wallet_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if not wallet_key:
            raise ValueError("a wallet key (lava_wk_…) is required")
        self._http = http_client or httpx.AsyncClient(timeout=timeout_s)
        self._base_url = base_url.rstrip("/")
        self._headers = _headers(wallet_key)
        self.spend_keys = AsyncSpendKeys(self)
        self.wallet = AsyncWalletResource(self)
        self.usage = AsyncUsageResource(self)
        self.requests = AsyncRequests(self)

    async def _request(self, method: str, path: str, model: type[Model], **options: Any) -> Model:
        response = await self._http.request(method, self._base_url + path, headers=self._headers, **options)
        _raise_for(response)
        return model.model_validate(response.json())

    async def _request_json(self, method: str, path: str, **options: Any) -> Any:
        response = await self._http.request(method, self._base_url + path, headers=self._headers, **options)
        _raise_for(response)
        return response.json()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncLava:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


class AsyncSpendKeys:
    def __init__(self, client: AsyncLava) -> None:
        self._client = client

    async def create(
        self,
        *,
        name: str | None = NOT_GIVEN,
        allowed_providers: Sequence[str] | None = NOT_GIVEN,
        allowed_models: Sequence[str] | None = NOT_GIVEN,
        request_shape: str | None = NOT_GIVEN,
        spend_limit: Mapping[str, Any] | None = NOT_GIVEN,
        request_limit: Mapping[str, Any] | None = NOT_GIVEN,
        rate_limit: Mapping[str, Any] | None = NOT_GIVEN,
        expires_at: str | None = NOT_GIVEN,
        status: str | None = NOT_GIVEN,
    ) -> SpendKey:
        """Create a spend key; the result's `key` is the secret. Raises: LavaAPIError."""
        body = _key_fields(
            name, allowed_providers, allowed_models, request_shape, spend_limit, request_limit, rate_limit,
            expires_at, status,
        )  # fmt: skip
        return await self._client._request("POST", "/v1/spend_keys", SpendKey, json=body)

    async def list(
        self, *, limit: int | None = None, cursor: str | None = None, status: str | None = None
    ) -> SpendKeyList:
        """Raises: LavaAPIError."""
        params = _query(limit=limit, cursor=cursor, status=status)
        return await self._client._request("GET", "/v1/spend_keys", SpendKeyList, params=params)

    async def retrieve(self, spend_key_id: str) -> SpendKey:
        """Raises: LavaAPIError (404 for an unknown id or another wallet's key)."""
        return await self._client._request("GET", f"/v1/spend_keys/{spend_key_id}", SpendKey)

    async def update(
        self,
        spend_key_id: str,
        *,
        name: str | None = NOT_GIVEN,
        allowed_providers: Sequence[str] | None = NOT_GIVEN,
        allowed_models: Sequence[str] | None = NOT_GIVEN,
        request_shape: str | None = NOT_GIVEN,
        spend_limit: Mapping[str, Any] | None = NOT_GIVEN,
        request_limit: Mapping[str, Any] | None = NOT_GIVEN,
        rate_limit: Mapping[str, Any] | None = NOT_GIVEN,
        expires_at: str | None = NOT_GIVEN,
        status: str | None = NOT_GIVEN,
    ) -> SpendKey:
        """Raises: LavaAPIError."""
        body = _key_fields(
            name, allowed_providers, allowed_models, request_shape, spend_limit, request_limit, rate_limit,
            expires_at, status,
        )  # fmt: skip
        return await self._client._request("PUT", f"/v1/spend_keys/{spend_key_id}", SpendKey, json=body)

    async def rotate(self, spend_key_id: str) -> SpendKey:
        """Raises: LavaAPIError."""
        return await self._client._request("POST", f"/v1/spend_keys/{spend_key_id}/rotate", SpendKey)

    async def revoke(self, spend_key_id: str) -> bool:
        """Raises: LavaAPIError."""
        body = await self._client._request_json("DELETE", f"/v1/spend_keys/{spend_key_id}")
        return bool(body.get("success"))


class AsyncWalletResource:
    def __init__(self, client: AsyncLava) -> None:
        self._client = client

    async def balance(self) -> Wallet:
        """Raises: LavaAPIError."""
        return await self._client._request("GET", "/v1/wallet", Wallet)


class AsyncUsageResource:
    def __init__(self, client: AsyncLava) -> None:
        self._client = client

    async def retrieve(self, *, start: str | None = None, end: str | None = None) -> Usage:
        """Raises: LavaAPIError."""
        return await self._client._request("GET", "/v1/usage", Usage, params=_query(start=start, end=end))


class AsyncRequests:
    def __init__(self, client: AsyncLava) -> None:
        self._client = client

    async def list(
        self, *, limit: int | None = None, cursor: str | None = None, spend_key_id: str | None = None
    ) -> RequestList:
        """Raises: LavaAPIError."""
        params = _query(limit=limit, cursor=cursor, spend_key_id=spend_key_id)
        return await self._client._request("GET", "/v1/requests", RequestList, params=params)
