"""Shared pieces of the HTTP surfaces: error rendering, wallet-key auth, request bodies.

Every body, on every route, is read by `read_body`: at most `Settings.max_body_bytes`
(`LAVA_MAX_BODY_BYTES`) into memory — more is 413, refused as soon as the declared length
or the bytes read pass the limit — and whole within `Settings.body_timeout_s` (a client
that trickles its body gets 408, so nothing waits on it and no decision is made before the
whole request is in). `transports.limits` refuses a declared oversize before any route runs;
this is the same rule for bodies of unknown length, in each route's own error shape. JSON is
parsed by `parse_json`: malformed (`NaN`, `Infinity` and numbers beyond a double included),
too deeply nested (more than `MAX_JSON_DEPTH` levels) or not an object is a 400, never a
500; and a number with a fraction or an exponent keeps the exact text it was sent as
(`JsonFloat.text`), so money is judged on what the client wrote, never on a float's
rounding (`{"amount": 1e1}` is refused as the exponent it is).
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse

from lava_mcp.core import wallet
from lava_mcp.errors import (
    BadRequest,
    Forbidden,
    LavaError,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    Unauthorized,
)
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import Wallet

# Deeper than any real request (tool schemas nest a few dozen levels at most); deeper
# input would exhaust the parser's or a later reader's recursion.
MAX_JSON_DEPTH = 100


class JsonFloat(float):
    """A JSON number with a fraction or exponent, remembering the exact text it was sent as.

    It is a float for every other reader (and serialises as one); `money.parse_amount`
    reads `text`, so `19.9999999999999999` is judged as 16 decimals, not as `20.0`.
    """

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> JsonFloat:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __reduce__(self) -> tuple[Any, ...]:
        return (JsonFloat, (self.text,))


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def error_response(error: LavaError) -> JSONResponse:
    """The flat REST error: `{"error", "code", ...extra}` with HTTP status = code."""
    return JSONResponse(error.to_dict(), status_code=error.code, headers=retry_after_headers(error))


def retry_after_headers(error: LavaError) -> dict[str, str] | None:
    """`Retry-After` for a 429 that will pass later (none for a limit that never resets)
    and for a 503 of a database that can't be reached right now."""
    if isinstance(error, (RateLimited, ServiceUnavailable)) and error.retry_after_s is not None:
        return {"retry-after": str(error.retry_after_s)}
    return None


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def authenticate_wallet(request: Request) -> Wallet:
    """Raises: Unauthorized unless the request carries a known wallet key as a bearer token."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing Authorization: Bearer lava_wk_… header")
    return await anyio.to_thread.run_sync(wallet.authenticate, runtime_of(request).db, token)


async def read_body(request: Request) -> bytes:
    """The raw body, at most the server's `max_body_bytes` (never more into memory), whole
    within its `body_timeout_s`.

    Raises: PayloadTooLarge (413) for an oversized body; RequestTimeout (408) for one that
    did not arrive in time.
    """
    settings = runtime_of(request).settings
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)
    timeout_s = settings.body_timeout_s
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise body_too_large(limit)
                chunks.append(chunk)
    except TimeoutError as error:
        raise body_timed_out(timeout_s) from error
    return b"".join(chunks)


def body_too_large(limit_bytes: int) -> PayloadTooLarge:
    """The one 413 every surface renders for a body over `LAVA_MAX_BODY_BYTES`."""
    return PayloadTooLarge(
        f"request body over {limit_bytes} bytes; nothing was done",
        next_step=f"send at most {limit_bytes} bytes (LAVA_MAX_BODY_BYTES)",
    )


def body_timed_out(timeout_s: float) -> RequestTimeout:
    """The one 408 every surface renders for a body slower than `LAVA_BODY_TIMEOUT_S`."""
    return RequestTimeout(
        f"the request body did not arrive within {timeout_s:g} s; nothing was done",
        next_step="send the whole body at once, then retry",
    )


async def form_body(request: Request) -> dict[str, str]:
    """An HTML form's fields (`application/x-www-form-urlencoded`), read by `read_body`:
    bounded in size and time like every other body. A repeated field keeps its last value.

    Raises: BadRequest for an undecodable body; PayloadTooLarge (413); RequestTimeout (408).
    """
    raw = await read_body(request)
    try:
        return dict(parse_qsl(raw.decode(), keep_blank_values=True, max_num_fields=100))
    except (UnicodeDecodeError, ValueError) as error:
        raise BadRequest("the form could not be read") from error


def parse_json(raw: bytes | str, *, exact_numbers: bool = True) -> Any:
    """Parse JSON text: any JSON value, nested at most `MAX_JSON_DEPTH` levels.

    `exact_numbers`: numbers with a fraction or exponent become `JsonFloat`s (exact text
    kept); otherwise plain floats (the gateway, which only forwards them).

    Python's parser also reads `NaN`, `Infinity` and numbers beyond a double (`1e400`, read
    as infinity), none of which is JSON: refused, so the gateway never forwards a body a
    provider's parser would reject, and no reader sees a non-finite number.

    Raises: BadRequest for text that is not JSON, a number out of range, or nesting too deep.
    """
    try:
        value = json.loads(
            raw,
            parse_float=_exact_number if exact_numbers else _finite_number,
            parse_constant=_refuse_constant,
        )
    except RecursionError as error:
        raise BadRequest(f"request body nests deeper than {MAX_JSON_DEPTH} levels") from error
    except ValueError as error:  # UnicodeDecodeError is a ValueError too
        raise BadRequest("request body is not valid JSON") from error
    if _depth_over(value, MAX_JSON_DEPTH):
        raise BadRequest(f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    return value


async def json_body(
    request: Request, *, allow_empty: bool = False, exact_numbers: bool = True
) -> dict[str, Any]:
    """The body as a JSON object, read by `read_body` and parsed by `parse_json`.

    Raises:
        BadRequest: a missing (unless `allow_empty`), malformed, too deeply nested or
            non-object body.
        PayloadTooLarge: a body over the server's `max_body_bytes`.
        RequestTimeout: the body did not arrive within the server's `body_timeout_s`.
    """
    raw = await read_body(request)
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("request body must be a JSON object")
    body = parse_json(raw, exact_numbers=exact_numbers)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _finite_number(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise BadRequest(f"the number {text[:40]} is out of range")
    return number


def _exact_number(text: str) -> JsonFloat:
    _finite_number(text)
    return JsonFloat(text)


def _refuse_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not a JSON value")


def _depth_over(value: Any, limit: int) -> bool:
    """Does `value` nest more than `limit` containers deep? (Iterative: no recursion.)"""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def origin_of(url: str) -> str:
    """`scheme://host[:port]` as a browser writes an Origin (default ports left out)."""
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.hostname:
        return ""
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    try:
        port = parts.port
    except ValueError:
        return ""
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    suffix = f":{port}" if port is not None and port != default else ""
    return f"{parts.scheme.lower()}://{host.lower()}{suffix}"


def posted_from_here(request: Request) -> bool | None:
    """Whether the browser says this request came from one of this server's pages: its
    `Origin` (or, without one, its `Referer`) is the server's public URL or the address the
    request was sent to. None when the request names no origin at all (not a browser's
    cross-site post, which always carries one of the two)."""
    claimed = request.headers.get("origin")
    if claimed is None:
        referer = request.headers.get("referer")
        if referer is None:
            return None
        claimed = referer
    ours = {origin_of(str(request.base_url)), origin_of(runtime_of(request).settings.base_url)}
    return origin_of(claimed) in ours  # "null" (an opaque origin) matches nothing


def require_same_origin(request: Request, *, message: str, next_step: str) -> None:
    """Refuse a form post the browser says came from another site (one that names no origin
    is left to the page's form token).

    Raises: Forbidden with `message` and `next_step`.
    """
    if posted_from_here(request) is False:
        raise Forbidden(message, next_step=next_step)
