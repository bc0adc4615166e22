"""The one error hierarchy. Every surface renders these; none invents its own.

    LavaError                       code  (http-like status)
    ├── BadRequest                  400   malformed or out-of-range input; nothing changed
    ├── Unauthorized                401   unknown, revoked or missing key
    ├── PaymentRequired             402
    │   ├── InsufficientBalance     402   exactly {"error": "Insufficient wallet balance", "code": 402}
    │   ├── SpendLimitReached       402   a spend key's cycle limit; message names the reset time
    │   └── PaymentDeclined         402   the card was declined; carries decline_code and next_step
    ├── Forbidden                   403   not allowed: model, provider, paused, expired, org gate
    ├── NotFound                    404   unknown id (or one that belongs to another wallet)
    ├── RequestTimeout              408   the request body did not arrive in time; nothing changed
    ├── Conflict                    409   idempotency key reused with a different request
    ├── PayloadTooLarge             413   the request body is over LAVA_MAX_BODY_BYTES; nothing changed
    ├── HeadersTooLarge             431   the request's headers are over their limits; nothing ran
    ├── RateLimited                 429   rate or request limit; carries retry_after_s (None: never resets)
    ├── InternalError               500   a bug or an unexpected failure; logged with the request id
    ├── UpstreamError               502   the provider failed; nothing was charged
    ├── NotReadyYet                 503   not yet decidable (e.g. a payment being reconciled): retry later
    └── ServiceUnavailable          503   the database can't be reached now (connection lost, restart):
                                          retry; carries retry_after_s (`store.db.unavailable` maps it)

`to_dict()` is the flat JSON every non-gateway surface returns: `{"error", "code"}` plus
any extra fields (`next_step`, `decline_code`, `retry_after_s`, ...).
"""

from __future__ import annotations

from typing import Any, ClassVar


class LavaError(Exception):
    """Base of every error a caller of lava-mcp can see."""

    code: ClassVar[int] = 500
    kind: ClassVar[str] = "api_error"

    def __init__(
        self, message: str, *, next_step: str | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.next_step = next_step
        self.extra: dict[str, Any] = dict(extra or {})

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.next_step:
            body["next_step"] = self.next_step
        body.update(self.extra)
        return body


class BadRequest(LavaError):
    code = 400
    kind = "invalid_request_error"


class Unauthorized(LavaError):
    code = 401
    kind = "authentication_error"


class PaymentRequired(LavaError):
    code = 402
    kind = "insufficient_quota"


class InsufficientBalance(PaymentRequired):
    """The wallet's available balance (balance minus open holds) can't cover the hold."""

    MESSAGE: ClassVar[str] = "Insufficient wallet balance"

    def __init__(self, *, next_step: str | None = None, extra: dict[str, Any] | None = None) -> None:
        # The message is fixed by the contract; what is missing goes in the extra fields.
        super().__init__(self.MESSAGE, next_step=next_step, extra=extra)


class SpendLimitReached(PaymentRequired):
    pass


class PaymentDeclined(PaymentRequired):
    kind = "card_error"


class Forbidden(LavaError):
    code = 403
    kind = "permission_error"


class NotFound(LavaError):
    code = 404
    kind = "not_found_error"


class RequestTimeout(LavaError):
    code = 408
    kind = "invalid_request_error"


class Conflict(LavaError):
    code = 409
    kind = "conflict_error"


class PayloadTooLarge(LavaError):
    """The body is over `LAVA_MAX_BODY_BYTES`: refused before more of it is read."""

    code = 413
    kind = "invalid_request_error"


class HeadersTooLarge(LavaError):
    """The request line and headers are over `LAVA_MAX_HEADER_BYTES` or
    `LAVA_MAX_HEADER_COUNT`: refused before any route runs."""

    code = 431
    kind = "invalid_request_error"


class RateLimited(LavaError):
    code = 429
    kind = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: int | None) -> None:
        # None: a limit that never resets (a `total` cycle), so no honest Retry-After exists.
        self.retry_after_s = None if retry_after_s is None else max(1, retry_after_s)
        extra = {} if self.retry_after_s is None else {"retry_after_s": self.retry_after_s}
        super().__init__(message, extra=extra)


class InternalError(LavaError):
    code = 500
    kind = "api_error"


class UpstreamError(LavaError):
    code = 502
    kind = "api_error"


class NotReadyYet(LavaError):
    """The request can't be decided yet, and will be later: retry it (a webhook event for a
    payment whose own outcome is still being reconciled; Stripe delivers it again)."""

    code = 503
    kind = "api_error"


class ServiceUnavailable(LavaError):
    """The ledger database can't serve the request right now (a dropped connection, a
    restart, a deadlock victim): retry after `retry_after_s`. A transaction it cut off was
    rolled back; a hold whose commit the answer was lost for is released at its expiry."""

    code = 503
    kind = "api_error"

    def __init__(self, message: str, *, retry_after_s: int = 1, next_step: str | None = None) -> None:
        self.retry_after_s = max(1, retry_after_s)
        super().__init__(message, next_step=next_step, extra={"retry_after_s": self.retry_after_s})
