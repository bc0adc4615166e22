"""The dashboard's pages: each one reads or changes the wallet through the same core
functions as the REST API and the MCP tools, and renders the answer as HTML.

Every page but sign-in needs a signed-in session (`guard.visitor`); without one, a GET or
a POST is sent to the sign-in page and nothing runs. Every POST that changes anything
passes `guard.check_post` (the session's form token and the browser's Origin) first.
Ids in paths are looked up within the session's wallet only, so another wallet's id is
a 404, exactly as on the REST API.

A secret (a new spend key's, a rotated one's) is rendered once, in the answer to the POST
that made it, never stored; the page script then replaces the history entry, so reloading
shows the list without it (and never re-posts the form).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from lava_mcp.core import funding, history, oauth, payment_methods, sessions, spend_keys, usage
from lava_mcp.errors import Forbidden, LavaError, NotFound, Unauthorized
from lava_mcp.money import format_cost, format_dollars
from lava_mcp.payments.sandbox import TEST_CARDS, TEST_TOKENS
from lava_mcp.store.models import SpendKey
from lava_mcp.transports import render
from lava_mcp.transports.dashboard import chart, forms, guard
from lava_mcp.transports.dashboard.templating import templates
from lava_mcp.transports.http import runtime_of
from lava_mcp.transports.oauth_rest import connected_client_json
from lava_mcp.transports.rest import request_record_json
from lava_mcp.transports.spend_keys_rest import spend_key_json

SIGN_IN_PATH = "/dashboard/signin"
PAGE_HEADERS = {
    "cache-control": "no-store",
    # Pages load their own stylesheet and script only; no one may frame them.
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def html(request: Request, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    # Where a reload of a POST's answer should go: the page itself, as a GET.
    context.setdefault("canonical", request.url.path)
    body = templates.get_template(template).render(request=request, **context)
    return HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)


def to_sign_in() -> Response:
    return RedirectResponse(SIGN_IN_PATH, status_code=303, headers={"cache-control": "no-store"})


Page = Callable[[Request, guard.Visitor], Awaitable[Response]]


def signed_in(handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """A page for a signed-in browser; its LavaErrors rendered as an error page."""

    async def endpoint(request: Request) -> Response:
        try:
            visitor = await guard.visitor(request)
        except Unauthorized:
            response = to_sign_in()
            if request.cookies.get(guard.COOKIE):
                guard.clear_session_cookie(request, response)  # expired or signed out elsewhere
            return response
        try:
            if request.method == "POST":
                form = await forms.read_form(request)
                token = form.get("form_token")
                guard.check_post(request, visitor, token if isinstance(token, str) else None)
            return await handler(request, visitor)
        except LavaError as error:
            return await error_page(request, visitor, error)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


async def error_page(request: Request, visitor: guard.Visitor, error: LavaError) -> Response:
    titles = {403: "Not allowed", 404: "Not found"}
    return await page(
        request,
        visitor,
        "error.html",
        status_code=error.code,
        title=titles.get(error.code, "Something went wrong"),
        error=error,
    )


async def page(
    request: Request, visitor: guard.Visitor, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """A signed-in page: the balance header and the form token come with every one."""
    runtime = runtime_of(request)
    balance = render.balance_json(await funding.balance(runtime, visitor.wallet_id))
    return html(
        request,
        template,
        status_code=status_code,
        balance=balance,
        form_token=visitor.form_token,
        path=request.url.path,
        **context,
    )


async def run(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A blocking core call, in a worker thread."""
    return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs))


# --- sign in, sign out ------------------------------------------------------------------


async def sign_in_page(request: Request) -> Response:
    """The wallet key form (GET), and signing in with it (POST)."""
    runtime = runtime_of(request)
    error = ""
    status_code = 200
    if request.method == "POST":
        try:
            guard.require_same_origin(request)
            form = await forms.read_form(request)
            key = form.get("wallet_key")
            signed = await run(
                sessions.sign_in,
                runtime.db,
                key if isinstance(key, str) else None,
                previous_session_id=request.cookies.get(guard.COOKIE),
            )
        except LavaError as failure:
            error = failure.message[:1].upper() + failure.message[1:] + "."
            status_code = failure.code
        else:
            response = RedirectResponse("/", status_code=303, headers={"cache-control": "no-store"})
            guard.set_session_cookie(request, response, signed)
            return response
    else:
        try:
            await guard.visitor(request)
        except Unauthorized:
            pass
        else:
            return RedirectResponse("/", status_code=303)
    return html(
        request,
        "signin.html",
        status_code=status_code,
        error=error,
        sandbox=runtime.payments.mode == "sandbox",
    )


@signed_in
async def sign_out(request: Request, visitor: guard.Visitor) -> Response:
    await run(sessions.sign_out, runtime_of(request).db, visitor.session_id)
    response = to_sign_in()
    guard.clear_session_cookie(request, response)
    return response


# --- overview: balance and activity ---------------------------------------------------------


@signed_in
async def overview(request: Request, visitor: guard.Visitor) -> Response:
    runtime = runtime_of(request)
    activity = await run(
        usage.activity, runtime.db, visitor.wallet_id, window_days=request.query_params.get("days")
    )
    recent = await run(usage.list_requests, runtime.db, visitor.wallet_id, limit=5)
    return await page(
        request,
        visitor,
        "overview.html",
        activity=activity,
        chart=chart.svg(activity),
        legend=chart.legend(activity),
        windows=usage.ACTIVITY_WINDOWS_DAYS,
        total_spend=format_cost(activity.total_spend_micros),
        recent=[render.request_json(record) for record in recent.records],
    )


# --- add funds ---------------------------------------------------------------------------------


@signed_in
async def add_funds(request: Request, visitor: guard.Visitor) -> Response:
    """The Add funds form; a POST charges a saved card or opens the payment page."""
    runtime = runtime_of(request)
    outcome: forms.Outcome | None = None
    amount = ""
    chosen = ""
    status_code = 200
    if request.method == "POST":
        form = await forms.read_form(request)
        amount, chosen = forms.text(form, "amount"), forms.text(form, "payment_method")
        attempt = forms.text(form, "attempt")
        try:
            result = await funding.add_funds(
                runtime,
                visitor.wallet_id,
                amount=amount,
                payment_method_id=None if chosen in ("", "new") else chosen,
                use_checkout=chosen == "new",
                # One form shown = one attempt: a resubmitted form replays, never charges twice.
                # A post without one (not from our page) gets the server-chosen retry window.
                idempotency_key=f"dashboard-{attempt}"[:200] if attempt else None,
            )
        except LavaError as error:
            outcome = forms.failure_outcome(error)
            status_code = error.code
        else:
            outcome = forms.funding_outcome(result)
            if result.get("status") == "completed":
                amount = ""
    return await _funds_page(
        request, visitor, outcome=outcome, amount=amount, chosen=chosen, status_code=status_code
    )


async def _funds_page(
    request: Request,
    visitor: guard.Visitor,
    *,
    outcome: forms.Outcome | None,
    amount: str,
    chosen: str,
    status_code: int,
) -> Response:
    runtime = runtime_of(request)
    refused = ""
    try:
        choices = await funding.add_funds(runtime, visitor.wallet_id, amount=None)
    except Forbidden as error:  # an org whose admin has not enabled funding yet
        refused = error.message + (f". {error.next_step}" if error.next_step else "")
        choices = {"payment_methods": [], "min": "10.00", "max": "10000.00"}
    cards = choices["payment_methods"]
    if not chosen:
        chosen = next((card["id"] for card in cards if card["default"]), cards[0]["id"] if cards else "new")
    return await page(
        request,
        visitor,
        "funds.html",
        status_code=status_code,
        outcome=outcome,
        amount=amount,
        chosen=chosen,
        cards=cards,
        minimum=choices["min"],
        maximum=forms.grouped(choices["max"]),
        attempt=secrets.token_urlsafe(16),
        refused=refused,
    )


# --- payment methods ---------------------------------------------------------------------------


@signed_in
async def cards(request: Request, visitor: guard.Visitor) -> Response:
    """Saved cards, their failed payments, and adding one (POST)."""
    runtime = runtime_of(request)
    notice = ""
    status_code = 200
    if request.method == "POST":
        form = await forms.read_form(request)
        try:
            card = await anyio.to_thread.run_sync(
                payment_methods.save_card,
                runtime.db,
                runtime.payments,
                visitor.wallet_id,
                forms.text(form, "payment_method_id"),
                limiter=runtime.processor_lane.limiter,  # it waits on the processor
            )
            notice = f"Saved your {card.brand} card ending in {card.last4}."
        except LavaError as error:
            notice = error.message[:1].upper() + error.message[1:] + "."
            status_code = error.code
    return await _cards_page(request, visitor, notice=notice, status_code=status_code)


async def _cards_page(
    request: Request, visitor: guard.Visitor, *, notice: str = "", status_code: int = 200
) -> Response:
    runtime = runtime_of(request)
    saved = await run(payment_methods.list_cards, runtime.db, visitor.wallet_id)
    failed = await run(history.failed_payments, runtime.db, visitor.wallet_id)
    names = {card.id: f"{card.brand} ending in {card.last4}" for card in saved}
    return await page(
        request,
        visitor,
        "cards.html",
        status_code=status_code,
        cards=[payment_methods.card_json(card) for card in saved],
        failed=[
            {
                "id": payment.id,
                "date": render.iso(payment.created_at),
                "amount": format_dollars(payment.amount_micros),
                "card": names.get(
                    payment.payment_method_id or "",
                    "the payment page" if payment.method == "checkout" else "a removed card",
                ),
                "card_id": payment.payment_method_id,
                "reason": payment.failure_message or payment.failure_code or "failed",
                "decline_code": (payment.decline_code or "").replace("_", " "),
            }
            for payment in failed
        ],
        notice=notice,
        sandbox=runtime.payments.mode == "sandbox",
        test_tokens=[(token, _test_card_words(token)) for token in sorted(TEST_TOKENS)],
    )


def _test_card_words(token: str) -> str:
    """What a sandbox test card does when charged, for the card picker."""
    card = TEST_CARDS[TEST_TOKENS[token]]
    if card.outcome == "succeeded":
        return f"{card.brand} {card.number[-4:]}: succeeds"
    if card.outcome == "requires_action":
        return f"{card.brand} {card.number[-4:]}: asks for 3-D Secure"
    return (
        f"{card.brand} {card.number[-4:]}: declined ({(card.decline_code or card.outcome).replace('_', ' ')})"
    )


@signed_in
async def card_default(request: Request, visitor: guard.Visitor) -> Response:
    await run(
        payment_methods.set_default, runtime_of(request).db, visitor.wallet_id, request.path_params["id"]
    )
    return RedirectResponse("/dashboard/cards", status_code=303)


@signed_in
async def card_remove(request: Request, visitor: guard.Visitor) -> Response:
    runtime = runtime_of(request)
    await anyio.to_thread.run_sync(
        payment_methods.remove_card,
        runtime.db,
        runtime.payments,
        visitor.wallet_id,
        request.path_params["id"],
        limiter=runtime.processor_lane.limiter,  # it waits on the processor
    )
    return RedirectResponse("/dashboard/cards", status_code=303)


# --- payment history ---------------------------------------------------------------------------

KIND_WORDS = {
    "deposit": ("Deposit", "credited"),
    "refund": ("Refund", "refunded to your card"),
    "dispute": ("Dispute", "taken back by the bank"),
    "dispute_reversal": ("Dispute won", "returned to your wallet"),
    "shortfall_cover": ("Shortfall covered", "owed amount paid off"),
    "adjustment": ("Adjustment", "made by the operator"),
}


@signed_in
async def payment_history(request: Request, visitor: guard.Visitor) -> Response:
    runtime = runtime_of(request)
    before = request.query_params.get("before")
    movements = await run(history.money_movements, runtime.db, visitor.wallet_id, before=before)
    return await page(
        request,
        visitor,
        "history.html",
        entries=[
            {
                "kind": KIND_WORDS.get(entry.kind, (entry.kind, ""))[0],
                "status": KIND_WORDS.get(entry.kind, (entry.kind, ""))[1],
                "amount": format_dollars(entry.amount_micros)
                if entry.amount_micros < 0
                else "+" + format_dollars(entry.amount_micros),
                "negative": entry.amount_micros < 0,
                "balance_after": format_dollars(entry.balance_after_micros),
                "date": render.iso(entry.created_at),
                "reference": entry.payment_id or entry.reference,
                "memo": entry.memo,
            }
            for entry in movements.entries
        ],
        next_cursor=movements.next_cursor,
        first_page=not before,
    )


# --- spend keys ---------------------------------------------------------------------------------


def _key_view(key: SpendKey) -> dict[str, Any]:
    """A key as the REST API shows it, plus the integers its spend bar (`<meter>`) is drawn from."""
    body = spend_key_json(key)
    body["spend_micros"] = spend_keys.figures(key).current_spend_micros
    body["limit_micros"] = key.spend_limit_micros
    return body


# The create form's fields, blank (a failed create shows what was typed instead).
CREATE_FORM_DEFAULTS: dict[str, Any] = {
    "name": "",
    "allowed_providers": [],
    "request_shape": "openai",
    "status": "active",
    "allowed_models": "",
    "spend_limit_amount": "",
    "spend_limit_cycle": "total",
    "request_limit_count": "",
    "request_limit_cycle": "total",
    "rate_rpm": "",
    "rate_burst": "",
    "expires_at": "",
}


async def _keys_page(
    request: Request,
    visitor: guard.Visitor,
    *,
    secret: str | None = None,
    secret_key_id: str | None = None,
    error: LavaError | None = None,
    status_code: int = 200,
    form: dict[str, Any] | None = None,
) -> Response:
    runtime = runtime_of(request)
    listing = await run(
        spend_keys.list_keys,
        runtime.db,
        visitor.wallet_id,
        limit=100,
        cursor=request.query_params.get("before"),
    )
    return await page(
        request,
        visitor,
        "keys.html",
        status_code=status_code,
        keys=[_key_view(key) for key in listing.keys],
        next_cursor=listing.next_cursor,
        secret=secret,
        secret_key_id=secret_key_id,
        error=error,
        providers=sorted(runtime.catalog.services),
        form={**CREATE_FORM_DEFAULTS, **(form or {})},
        canonical="/dashboard/keys",  # also for the answer to a rotate
    )


@signed_in
async def keys(request: Request, visitor: guard.Visitor) -> Response:
    """The spend keys list and the create form; a POST creates one (its secret shown once)."""
    if request.method == "GET":
        return await _keys_page(request, visitor)
    runtime = runtime_of(request)
    form = await forms.read_form(request)
    try:
        created = await run(
            spend_keys.create,
            runtime.db,
            visitor.wallet_id,
            forms.spend_key_options(form, creating=True),
            catalog=runtime.catalog,
        )
    except LavaError as error:
        return await _keys_page(
            request,
            visitor,
            error=error,
            status_code=error.code,
            form={
                name: form.getlist(name) if name == "allowed_providers" else forms.text(form, name)
                for name in form
            },
        )
    return await _keys_page(
        request, visitor, secret=created.secret, secret_key_id=created.key.id, status_code=201
    )


@signed_in
async def key_detail(request: Request, visitor: guard.Visitor) -> Response:
    """One key's limits form (GET), and updating them (POST): the secret stays the same."""
    runtime = runtime_of(request)
    key_id = request.path_params["id"]
    error: LavaError | None = None
    notice = ""
    status_code = 200
    if request.method == "POST":
        form = await forms.read_form(request)
        try:
            await run(
                spend_keys.update_key,
                runtime.db,
                visitor.wallet_id,
                key_id,
                forms.spend_key_options(form, creating=False),
                catalog=runtime.catalog,
            )
            notice = "Limits saved. They apply from the next request."
        except NotFound:
            raise
        except LavaError as failure:
            error, status_code = failure, failure.code
    key = await run(spend_keys.get, runtime.db, visitor.wallet_id, key_id)
    return await page(
        request, visitor, "key.html", status_code=status_code, key=_key_view(key), error=error, notice=notice
    )


@signed_in
async def key_status(request: Request, visitor: guard.Visitor) -> Response:
    """Pause or resume a key."""
    form = await forms.read_form(request)
    await run(
        spend_keys.update_key,
        runtime_of(request).db,
        visitor.wallet_id,
        request.path_params["id"],
        {"status": forms.text(form, "status")},
    )
    return RedirectResponse("/dashboard/keys", status_code=303)


@signed_in
async def key_rotate(request: Request, visitor: guard.Visitor) -> Response:
    rotated = await run(
        spend_keys.rotate, runtime_of(request).db, visitor.wallet_id, request.path_params["id"]
    )
    return await _keys_page(request, visitor, secret=rotated.secret, secret_key_id=rotated.key.id)


@signed_in
async def key_revoke(request: Request, visitor: guard.Visitor) -> Response:
    """Revoking asks first (GET: the confirmation page); the POST revokes for good."""
    runtime = runtime_of(request)
    key_id = request.path_params["id"]
    if request.method == "GET":
        key = await run(spend_keys.get, runtime.db, visitor.wallet_id, key_id)
        return await page(request, visitor, "revoke.html", key=_key_view(key))
    await run(spend_keys.revoke, runtime.db, visitor.wallet_id, key_id)
    return RedirectResponse("/dashboard/keys", status_code=303)


# --- requests ------------------------------------------------------------------------------------


@signed_in
async def requests_page(request: Request, visitor: guard.Visitor) -> Response:
    runtime = runtime_of(request)
    params = request.query_params
    spend_key_id = params.get("spend_key_id") or None
    service = params.get("service") or None
    if spend_key_id is not None:
        await run(spend_keys.get, runtime.db, visitor.wallet_id, spend_key_id)  # another wallet's: 404
    listing = await run(
        usage.list_requests_by,
        runtime.db,
        visitor.wallet_id,
        before=params.get("before"),
        spend_key_id=spend_key_id,
        service=service,
    )
    all_keys = await run(spend_keys.list_keys, runtime.db, visitor.wallet_id, limit=100)
    services = await run(usage.services_used, runtime.db, visitor.wallet_id)
    return await page(
        request,
        visitor,
        "requests.html",
        records=[request_record_json(record) for record in listing.records],
        next_cursor=listing.next_cursor,
        spend_key_id=spend_key_id or "",
        service=service or "",
        key_choices=[(key.id, key.name or key.key_preview) for key in all_keys.keys],
        services=services,
        first_page=not params.get("before"),
    )


# --- connected apps ------------------------------------------------------------------------------


def _app_view(client: oauth.ConnectedClient) -> dict[str, Any]:
    """A connected client as REST shows it, plus its redirect hosts and scopes in words."""
    body = connected_client_json(client)
    body["redirect_hosts"] = client.redirect_hosts
    body["scope_words"] = [oauth.SCOPE_WORDS.get(scope, scope) for scope in client.scopes]
    return body


async def _connected_app(request: Request, visitor: guard.Visitor, grant_id: str) -> dict[str, Any]:
    """One of this wallet's connected apps. Raises: NotFound (another wallet's, or revoked)."""
    db = runtime_of(request).db
    clients = await run(oauth.list_connected_clients, db, visitor.wallet_id)
    for client in clients:
        if client.id == grant_id:
            view: dict[str, Any] = _app_view(client)
            return view
    raise NotFound(f"no connected client {grant_id!r}")


@signed_in
async def connected_apps(request: Request, visitor: guard.Visitor) -> Response:
    """The apps connected over OAuth (Claude's connector, …): what each may do, and last use."""
    db = runtime_of(request).db
    clients = await run(oauth.list_connected_clients, db, visitor.wallet_id)
    views = [_app_view(client) for client in clients]
    return await page(request, visitor, "apps.html", apps=views)


@signed_in
async def app_revoke(request: Request, visitor: guard.Visitor) -> Response:
    """Disconnecting asks first (GET: the confirmation page); the POST revokes the grant, so
    the app's tokens fail on its next request, on every surface."""
    grant_id = request.path_params["id"]
    if request.method == "GET":
        app = await _connected_app(request, visitor, grant_id)
        return await page(request, visitor, "app_revoke.html", app=app)
    await run(oauth.revoke_connected_client, runtime_of(request).db, visitor.wallet_id, grant_id)
    return RedirectResponse("/dashboard/apps", status_code=303)
