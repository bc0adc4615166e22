"""Pages a card holder's browser reaches: the sandbox Checkout page, and the pages Stripe
Checkout returns to (success, cancel).

The success page credits nothing on its own: it asks the processor (or, in the sandbox,
the ledger) whether the session is paid, and shows what it found.

The sandbox page's forms are protected against posts from other sites twice: each form
carries the page's token (checked by the core), and a post whose browser names another
origin (`Origin`, or else `Referer`) is refused here. Either refusal is a 403 page that
changed nothing. Pages are never framed, cached or sent as a referrer to another site
(their URL is their secret).
"""

from __future__ import annotations

import html

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from lava_mcp.core import funding
from lava_mcp.errors import LavaError, NotFound
from lava_mcp.money import format_dollars
from lava_mcp.payments.sandbox import TEST_CARDS
from lava_mcp.store.models import Payment
from lava_mcp.transports import http
from lava_mcp.transports.http import form_body, runtime_of

SANDBOX_BANNER = (
    '<p class="sandbox"><strong>SANDBOX</strong> — no real money moves here. '
    "Pay with one of Stripe's test cards.</p>"
)


def page(title: str, body: str, *, sandbox: bool, status_code: int = 200) -> HTMLResponse:
    """A whole HTML page, labelled SANDBOX where no real money moves."""
    banner = SANDBOX_BANNER if sandbox else ""
    prefix = "SANDBOX · " if sandbox else ""
    return HTMLResponse(
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{prefix}{html.escape(title)} · lava-mcp</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem; }}
.sandbox {{ background: #fff3cd; border: 1px solid #e0c060; padding: .5rem .75rem; border-radius: 6px; }}
.error {{ color: #a00; }}
label {{ display: block; margin: .75rem 0 .25rem; }}
input {{ font: inherit; padding: .4rem; width: 100%; box-sizing: border-box; }}
button {{ font: inherit; margin-top: 1rem; padding: .5rem 1rem; }}
table {{ border-collapse: collapse; font-size: 14px; }} td {{ padding: 0 .75rem 0 0; }}
</style></head>
<body>{banner}<h1>{html.escape(title)}</h1>
{body}
</body></html>""",
        status_code=status_code,
        headers={
            "cache-control": "no-store",
            "content-security-policy": "frame-ancestors 'none'",
            "x-frame-options": "DENY",
            # Not "no-referrer": with it a browser posts the page's own form as `Origin: null`.
            "referrer-policy": "same-origin",
        },
    )


def require_same_origin(request: Request) -> None:
    """Raises: Forbidden for a form the browser says was posted from another site."""
    http.require_same_origin(
        request,
        message="this form was posted from another site; nothing was charged",
        next_step="open the payment link again and submit the form on that page",
    )


async def sandbox_checkout(request: Request) -> Response:
    """The sandbox's stand-in for Stripe Checkout: a card form, or a 3-D Secure challenge."""
    runtime = runtime_of(request)
    session_id = request.path_params["session_id"]
    error_text = ""
    status_code = 200
    try:
        if request.method == "POST":
            form = await form_body(request)
            require_same_origin(request)
            action = str(form.get("action") or "pay")
            page_token = str(form.get("page_token") or "")
            if action in ("approve", "fail"):
                await anyio.to_thread.run_sync(
                    lambda: funding.authenticate_sandbox_payment(
                        runtime, session_id, approve=action == "approve", page_token=page_token
                    )
                )
            else:
                await anyio.to_thread.run_sync(
                    lambda: funding.pay_sandbox_checkout(
                        runtime,
                        session_id,
                        number=str(form.get("number") or ""),
                        expiry=str(form.get("expiry") or ""),
                        cvc=str(form.get("cvc") or ""),
                        page_token=page_token,
                    )
                )
            return RedirectResponse(f"/fund/success?session_id={session_id}", status_code=303)
        payment = await anyio.to_thread.run_sync(funding.sandbox_session, runtime, session_id)
    except LavaError as error:
        if error.code == 403:
            return page(
                "Payment form refused",
                f"<p class='error'>{html.escape(error.message)}.</p><p>{html.escape(error.next_step or '')}.</p>",
                sandbox=True,
                status_code=403,
            )
        if request.method == "GET" or error.code == 404:
            return page(
                "Unknown checkout",
                f"<p class='error'>{html.escape(error.message)}</p>",
                sandbox=True,
                status_code=error.code,
            )
        error_text = error.message + (f" {error.next_step}" if error.next_step else "")
        status_code = error.code
        try:  # the form was refused before the session was looked up: it may not exist
            payment = await anyio.to_thread.run_sync(funding.sandbox_session, runtime, session_id)
        except NotFound as missing:
            return page(
                "Unknown checkout",
                f"<p class='error'>{html.escape(missing.message)}</p>",
                sandbox=True,
                status_code=404,
            )
    if payment.status == "succeeded":
        return RedirectResponse(f"/fund/success?session_id={session_id}", status_code=303)
    token_field = (
        '<input type="hidden" name="page_token" value="'
        + html.escape(await anyio.to_thread.run_sync(funding.sandbox_page_token, runtime, session_id))
        + '">'
    )
    amount = format_dollars(payment.amount_micros)
    error_html = f"<p class='error' role='alert'>{html.escape(error_text)}</p>" if error_text else ""
    if payment.status == "failed":
        return page(
            "Payment not completed",
            f"<p>This payment of ${amount} {html.escape(payment.failure_message or 'failed')}. "
            "Nothing was charged. Ask your chat to add funds again.</p>",
            sandbox=True,
            status_code=status_code,
        )
    if payment.status == "requires_action" and payment.payment_method_id:
        return page(
            "Confirm your payment",
            f"""{error_html}<p>Your bank asks you to confirm a payment of <strong>${amount}</strong>
to your lava-mcp wallet (3-D Secure).</p>
<form method="post">{token_field}<button name="action" value="approve">Complete authentication</button>
<button name="action" value="fail">Fail authentication</button></form>""",
            sandbox=True,
            status_code=status_code,
        )
    rows = "".join(
        f"<tr><td><code>{card.number}</code></td><td>{html.escape(_describe(card.outcome, card.decline_code))}</td></tr>"
        for card in TEST_CARDS.values()
    )
    return page(
        f"Add ${amount} to your wallet",
        f"""{error_html}<form method="post">{token_field}
<input type="hidden" name="action" value="pay">
<label for="number">Card number</label>
<input id="number" name="number" inputmode="numeric" autocomplete="cc-number" placeholder="4242 4242 4242 4242" required>
<label for="expiry">Expiry (MM / YY)</label>
<input id="expiry" name="expiry" placeholder="12 / 34" required>
<label for="cvc">CVC</label>
<input id="cvc" name="cvc" inputmode="numeric" placeholder="123" required>
<button type="submit">Pay ${amount}</button>
</form>
<p>The card is saved for your next top-up.</p>
<h2>Test cards</h2><p>Any future expiry and any 3 digits.</p><table>{rows}</table>""",
        sandbox=True,
        status_code=status_code,
    )


async def fund_success(request: Request) -> Response:
    """Where Checkout returns: reconcile the session with the processor, show the outcome."""
    runtime = runtime_of(request)
    session_id = request.query_params.get("session_id", "")
    sandbox = runtime.payments.mode == "sandbox"
    try:
        if not session_id:
            payment: Payment | None = None
        elif sandbox:
            payment = await anyio.to_thread.run_sync(funding.sandbox_session, runtime, session_id)
        else:
            payment = await anyio.to_thread.run_sync(
                funding.reconcile_checkout, runtime, session_id, limiter=runtime.processor_lane.limiter
            )
    except LavaError as error:
        if error.code != 404:
            return page(
                "Payment status unknown",
                f"<p class='error'>{html.escape(error.message)}</p><p>Reload this page in a minute.</p>",
                sandbox=sandbox,
                status_code=error.code,
            )
        payment = None
    if payment is None:
        return page(
            "Unknown payment",
            "<p>This link is not a lava-mcp checkout.</p>",
            sandbox=sandbox,
            status_code=404,
        )
    amount = format_dollars(payment.amount_micros)
    sandbox = payment.mode == "sandbox"
    if payment.status == "succeeded":
        return page(
            "Payment received",
            f"<p><strong>${amount}</strong> was added to your wallet (payment <code>{payment.id}</code>). "
            "You can close this page and go back to your chat.</p>",
            sandbox=sandbox,
        )
    if payment.status == "failed":
        return page(
            "Payment not completed",
            f"<p>The payment of ${amount} did not go through: "
            f"{html.escape(payment.failure_message or 'it failed')}. Nothing was added.</p>",
            sandbox=sandbox,
        )
    return page(
        "Payment pending",
        f"<p>The payment of ${amount} is not confirmed yet; your wallet is credited as soon as it is. "
        "Reload this page in a moment.</p>",
        sandbox=sandbox,
        status_code=202,
    )


async def fund_cancel(request: Request) -> Response:
    """Where Checkout's back link leads. Nothing is charged; the page stays payable until it expires."""
    sandbox = runtime_of(request).payments.mode == "sandbox"
    return page(
        "Payment cancelled",
        "<p>Nothing was charged. Ask your chat to add funds again whenever you like.</p>",
        sandbox=sandbox,
    )


def _describe(outcome: str, decline_code: str | None) -> str:
    if outcome == "succeeded":
        return "succeeds"
    if outcome == "requires_action":
        return "asks for authentication (3-D Secure), then succeeds"
    return f"declined: {decline_code or outcome}"


routes = [
    Route("/sandbox/checkout/{session_id}", sandbox_checkout, methods=["GET", "POST"]),
    Route("/fund/success", fund_success, methods=["GET"]),
    Route("/fund/cancel", fund_cancel, methods=["GET"]),
]
