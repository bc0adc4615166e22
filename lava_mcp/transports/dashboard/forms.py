"""From HTML form fields to the core's arguments, and from the core's answers to plain words.

Nothing here judges a value: a form field becomes the same JSON field the REST API takes
(`spend_limit: {"amount", "cycle"}`, …), and `core/spend_keys.parse_options` or
`core/funding` decide whether it is good. A blank field means "no limit" (null). A count
that is not a whole number is passed on as the text it is, for the core to refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from lava_mcp.errors import BadRequest, LavaError
from lava_mcp.transports.http import read_body


async def read_form(request: Request) -> FormData:
    """A posted form's fields, read like every other body (`http.read_body`: bounded in size
    and in time), once per request.

    Raises: BadRequest (not a plain HTML form), PayloadTooLarge (an oversized body), RequestTimeout.
    """
    cached = getattr(request.state, "dashboard_form", None)
    if isinstance(cached, FormData):
        return cached
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await read_body(request)
    if raw and content_type != "application/x-www-form-urlencoded":
        raise BadRequest("the dashboard takes HTML form posts (application/x-www-form-urlencoded)")
    fields: list[tuple[str, str | UploadFile]] = list(
        parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    )
    form = FormData(fields)
    request.state.dashboard_form = form
    return form


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _count(value: str) -> int | str:
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 12 else value


def _names(value: str) -> list[str] | None:
    names = [name.strip() for name in value.replace("\n", ",").split(",") if name.strip()]
    return names or None


def _expiry(value: str) -> str | None:
    """A `datetime-local` field's value, read as UTC (the form says so), in ISO 8601."""
    if not value:
        return None
    return value if value.endswith("Z") or "+" in value[10:] else value + "Z"


def spend_key_options(form: FormData, *, creating: bool) -> dict[str, Any]:
    """The REST fields of a spend key create (every option) or limits update."""
    options: dict[str, Any] = {}
    if creating:
        providers = [value for value in form.getlist("allowed_providers") if isinstance(value, str)]
        options["name"] = text(form, "name")
        options["allowed_providers"] = providers or None
        options["request_shape"] = text(form, "request_shape") or "openai"
        options["status"] = text(form, "status") or "active"
    else:
        options["name"] = text(form, "name")
    options["allowed_models"] = _names(text(form, "allowed_models"))
    amount = text(form, "spend_limit_amount")
    options["spend_limit"] = (
        {"amount": amount, "cycle": text(form, "spend_limit_cycle") or "total"} if amount else None
    )
    count = text(form, "request_limit_count")
    options["request_limit"] = (
        {"count": _count(count), "cycle": text(form, "request_limit_cycle") or "total"} if count else None
    )
    rpm, burst = text(form, "rate_rpm"), text(form, "rate_burst")
    options["rate_limit"] = {"rpm": _count(rpm), "burst": _count(burst) if burst else None} if rpm else None
    options["expires_at"] = _expiry(text(form, "expires_at"))
    return options


@dataclass(frozen=True)
class Outcome:
    """A funding result in words: a headline, what it means, and a link to follow if any."""

    tone: str  # good | action | bad
    headline: str
    detail: str = ""
    link: str | None = None
    link_text: str = ""


def funding_outcome(result: dict[str, Any]) -> Outcome:
    """The answer of `funding.add_funds`, as the wallet owner should read it."""
    status = result.get("status")
    amount = result.get("amount", "")
    if result.get("replayed"):
        return Outcome(
            "good",
            "This top-up was already made a moment ago; nothing new was charged.",
            "To add the same amount again on purpose, reload the Add funds page and submit once more.",
        )
    if status == "completed":
        return Outcome(
            "good",
            f"Done: ${amount} was added to your wallet.",
            f"Your balance is now ${result.get('balance', '')}.",
        )
    if status == "requires_action":
        return Outcome(
            "action",
            f"Your bank wants you to confirm this payment of ${amount} (3-D Secure).",
            "Open the confirmation page; your wallet is credited as soon as the bank confirms.",
            link=str(result.get("redirect_url") or ""),
            link_text="Confirm the payment with your bank",
        )
    if status == "checkout_required":
        return Outcome(
            "action",
            f"Pay ${amount} with a new card on the payment page.",
            "The card is saved for your next top-up; your wallet is credited once it is paid.",
            link=str(result.get("checkout_url") or ""),
            link_text="Continue to the payment page",
        )
    if status == "processing":
        return Outcome(
            "action",
            f"Your payment of ${amount} is being processed.",
            "Your balance goes up as soon as the bank confirms it; reload in a minute.",
        )
    return Outcome("bad", "Something unexpected came back; nothing was added.", str(status))


DECLINE_ADVICE = {
    "insufficient_funds": "Try a smaller amount, or pay with another card.",
    "expired_card": "Add a card that is still valid, or pay with another saved card.",
    "incorrect_cvc": "Add the card again with the right security code, or pay with another card.",
    "lost_card": "Contact your bank, and pay with another card meanwhile.",
    "stolen_card": "Contact your bank, and pay with another card meanwhile.",
    "test_mode_live_card": "In the sandbox, use one of Stripe's test cards, such as 4242 4242 4242 4242.",
}


def grouped(amount: str) -> str:
    """`"10000.00"` → `"10,000.00"` (digits grouped as people read them; text, never a float)."""
    whole, dot, cents = amount.partition(".")
    return f"{int(whole):,}{dot}{cents}" if whole.isdigit() else amount


def failure_outcome(error: LavaError) -> Outcome:
    """A refused or declined top-up in words: the reason and what to do next."""
    if error.code == 402 and "decline_code" in error.extra:
        reason = str(error.extra["decline_code"])
        return Outcome(
            "bad",
            error.message.rstrip(".") + ". Nothing was charged.",
            f"The bank's reason: {reason.replace('_', ' ')}. "
            + DECLINE_ADVICE.get(
                reason, "Pick another saved card, pay with a new card, or ask your bank why."
            ),
        )
    if error.code == 400 and "min" in error.extra and "max" in error.extra:
        return Outcome(
            "bad",
            f"Enter an amount from ${grouped(str(error.extra['min']))} to ${grouped(str(error.extra['max']))}.",
            "Nothing was charged.",
        )
    detail = error.next_step or ""
    return Outcome("bad", error.message[:1].upper() + error.message[1:] + ". Nothing was charged.", detail)
