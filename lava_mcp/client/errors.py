"""The client's one error: `LavaAPIError`, raised for every answer of status 400 or more.

The server answers errors in one flat JSON shape, `{"error": "...", "code": 400, ...}`, with
extra fields where a caller can act on them (`next_step`, `retry_after_s`, `decline_code`,
`sandbox` …). The error keeps that JSON whole in `body`, so a field the server adds later
reaches the caller without a client release. Network failures are httpx's own exceptions
(`httpx.TransportError` and its subclasses), raised as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


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
        """What the caller can do about it, when the server said."""
        value = self.body.get("next_step")
        return value if isinstance(value, str) else None


def error_of(response: httpx.Response) -> LavaAPIError:
    """The error an answer of status 400 or more stands for (its flat JSON, else its reason)."""
    try:
        body = response.json()
    except ValueError:  # a proxy's HTML page, an empty body
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = body.get("error")
    if not isinstance(message, str):
        message = response.reason_phrase
    return LavaAPIError(response.status_code, message, body)
