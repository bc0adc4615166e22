"""The wallet owner's sign-in and consent page for OAuth (`/oauth/consent`).

The owner sees which app asks (its registered name), where the answer goes (the redirect
host) and what it asks for in plain words; signs in by pasting the wallet key (a POST form
field only: never in a URL, a cookie, a page or a log) or, where sign-up is allowed, creates
a wallet whose key is shown once; and approves or denies. The form carries a token bound to
the pending authorization, double-submitted in a SameSite=Strict cookie, and the POST must
come from this origin. Every rule is `core.oauth`'s.

The page shares the dashboard's session (`core.sessions`, cookie `lava_session`):
- a browser already signed in to the dashboard sees "Signed in as <wallet>" and only
  approves or denies (no key asked); "Use another wallet" shows the key field instead. The
  form names the session's wallet, and an approval is refused if the session now names
  another (signed out or switched in another tab meanwhile): consent is given for the wallet
  the page showed, never a different one.
- signing in here with a wallet key (or creating a wallet) also starts a dashboard session,
  exactly as the dashboard's sign-in does (`sessions.sign_in`: a new id, the browser's
  previous one deleted; the dashboard's cookie rules), so the dashboard doesn't ask again.
The same-origin check and the form token guard a post with the session cookie as any other.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import anyio.to_thread
from mcp.server.auth.provider import construct_redirect_uri
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from lava_mcp.core import oauth, sessions, wallet
from lava_mcp.errors import BadRequest, Forbidden, LavaError, NotFound, Unauthorized
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import Wallet
from lava_mcp.transports import http
from lava_mcp.transports.dashboard import guard
from lava_mcp.transports.http import read_body

CONSENT_PATH = "/oauth/consent"
CSRF_COOKIE = "lava_oauth_csrf"
# The query flag of "Use another wallet": show the key field even with a dashboard session.
ANOTHER_WALLET = "another"


def signup_allowed(runtime: Runtime) -> bool:
    """Sign-up on the consent page: on for the embedded single-user install (no public URL),
    off for a public server unless the operator opens it (LAVA_OPEN_SIGNUP)."""
    settings = runtime.settings
    return settings.open_signup if settings.open_signup is not None else not settings.public_url


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def consent_page(request: Request) -> Response:
    runtime = _runtime(request)
    request_id = request.query_params.get("request", "")
    try:
        pending = await anyio.to_thread.run_sync(oauth.load_pending, runtime.db, request_id)
    except NotFound as error:
        return _message_page("Sign-in link expired", error.message, status_code=404)
    return await _render_consent(
        request,
        runtime,
        request_id,
        pending,
        use_another=request.query_params.get(ANOTHER_WALLET) == "1",
    )


def _session_wallet(runtime: Runtime, request: Request) -> Wallet | None:
    """The wallet of the browser's dashboard session, or None (no, expired or ended session)."""
    try:
        active = sessions.resolve(runtime.db, request.cookies.get(guard.COOKIE))
    except Unauthorized:
        return None
    with runtime.db.read() as session:
        return session.get(Wallet, active.wallet_id)


async def _render_consent(
    request: Request,
    runtime: Runtime,
    request_id: str,
    pending: Any,
    *,
    problem: str | None = None,
    new_wallet: wallet.NewWallet | None = None,
    use_another: bool = False,
    status_code: int = 200,
    new_session: sessions.SignedIn | None = None,
) -> Response:
    csrf = await anyio.to_thread.run_sync(oauth.new_csrf_token, runtime.db, request_id)
    signed_in = (
        None
        if use_another or new_session is not None
        else await anyio.to_thread.run_sync(_session_wallet, runtime, request)
    )
    client = await anyio.to_thread.run_sync(oauth.load_client, runtime.db, pending.client_id)
    client_name = (client.name if client is not None and client.name else None) or "An unnamed app"
    redirect_host = urlparse(str(pending.params["redirect_uri"])).netloc
    asked: list[str] = list(pending.params.get("scopes") or oauth.SCOPES)
    scope_items = "".join(
        f'<li><label><input type="checkbox" name="scope" value="{scope}" checked'
        f"{' disabled' if scope == oauth.READ else ''}> {html.escape(oauth.SCOPE_WORDS[scope])}"
        f" <code>{scope}</code></label></li>"
        for scope in asked
    )
    hidden = (
        f'<input type="hidden" name="request" value="{html.escape(request_id)}">'
        f'<input type="hidden" name="csrf" value="{csrf}">'
    )
    signed_up = ""
    key_field = (
        '<label>Your wallet key <input type="password" name="wallet_key" autocomplete="current-password" '
        'placeholder="lava_wk_…" required></label>'
    )
    if new_wallet is not None:
        signed_up = (
            "<div class=notice><p>Your new wallet is ready. This is its key; it is shown once, "
            "so save it now (a password manager is a good place):</p>"
            f"<p><code id=new-wallet-key>{html.escape(new_wallet.wallet_key)}</code></p></div>"
        )
        key_field = f"<p>Signing in as your new wallet <code>{html.escape(new_wallet.wallet_id)}</code>.</p>"
    elif pending.wallet_id is not None:
        key_field = f"<p>Signing in as your new wallet <code>{html.escape(pending.wallet_id)}</code>.</p>"
    elif signed_in is not None:
        # The dashboard's session names the wallet: no key to paste, only approve or deny.
        label = (
            f"<strong>{html.escape(signed_in.name)}</strong> (<code>{html.escape(signed_in.id)}</code>)"
            if signed_in.name
            else f"<code>{html.escape(signed_in.id)}</code>"
        )
        another = html.escape(f"{CONSENT_PATH}?{urlencode({'request': request_id, ANOTHER_WALLET: '1'})}")
        hidden += f'<input type="hidden" name="session_wallet" value="{html.escape(signed_in.id)}">'
        key_field = (
            f"<p id=signed-in-as>Signed in as {label}.</p>"
            f'<p><a href="{another}" id=use-another-wallet>Use another wallet</a></p>'
        )
    signup = ""
    if signup_allowed(runtime) and pending.wallet_id is None and new_wallet is None and signed_in is None:
        signup = (
            f'<form method="post" action="{CONSENT_PATH}" class=signup>{hidden}'
            '<p>No wallet yet?</p><button type="submit" name="action" value="signup">'
            "Create a new wallet</button></form>"
        )
    problem_html = f"<p class=problem role=alert>{html.escape(problem)}</p>" if problem else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Connect {html.escape(client_name)} to your Lava wallet</title>
<style>body{{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;color:#222}}
.box{{border:1px solid #ddd;border-radius:8px;padding:1rem 1.25rem}} ul{{padding-left:1.2rem}}
code{{background:#f4f4f4;padding:0 .25rem;border-radius:3px;word-break:break-all}}
.problem{{color:#a00}} .notice{{background:#fff8e1;padding:.5rem 1rem;border-radius:6px}}
button{{padding:.5rem 1rem;margin-right:.5rem}} input[type=password]{{box-sizing:border-box;width:100%;padding:.4rem;margin:.3rem 0 1rem}}</style>
</head><body>
<h1>Connect to your Lava wallet</h1>
{problem_html}{signed_up}
<div class=box>
<p><strong>{html.escape(client_name)}</strong> wants to use your Lava wallet.
After you approve, you go back to <strong>{html.escape(redirect_host)}</strong>.</p>
<form method="post" action="{CONSENT_PATH}">{hidden}
<p>It asks to:</p><ul>{scope_items}</ul>
{key_field}
<button type="submit" name="action" value="approve">Approve</button>
<button type="submit" name="action" value="deny" formnovalidate>Deny</button>
</form></div>
{signup}
<p><small>Your key is sent only to this server and never to {html.escape(client_name)}; the app gets a token
you can revoke any time from your dashboard (Connected apps).</small></p>
</body></html>"""
    response = HTMLResponse(
        body, status_code=status_code, headers=_page_headers(str(pending.params["redirect_uri"]))
    )
    if new_session is not None:
        guard.set_session_cookie(request, response, new_session)
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        max_age=oauth.PENDING_TTL_S,
        path=CONSENT_PATH,
        secure=runtime.settings.base_url.startswith("https://"),
        httponly=True,
        samesite="strict",
    )
    return response


def _page_headers(redirect_uri: str | None = None) -> dict[str, str]:
    """The page's headers. Browsers apply `form-action` to the redirect that follows a form
    post too, so the client's redirect origin is allowed beside our own."""
    form_action = "'self'"
    if redirect_uri is not None:
        parsed = urlparse(redirect_uri)
        form_action += f" {parsed.scheme}://{parsed.netloc}" if parsed.netloc else f" {parsed.scheme}:"
    return {
        "cache-control": "no-store",
        "x-frame-options": "DENY",
        "content-security-policy": f"default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}; "
        "frame-ancestors 'none'",
        # Same-origin, not no-referrer: the browser must still send our Origin on the POST.
        "referrer-policy": "same-origin",
    }


def _message_page(title: str, message: str, *, status_code: int) -> HTMLResponse:
    body = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title></head>"
        f"<body style='font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto'>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status_code, headers=_page_headers())


def _redirect_to_client(pending: Any, issuer: str, **answer: str) -> Response:
    params = dict(answer)
    if pending.params.get("state") is not None:
        params["state"] = str(pending.params["state"])
    params["iss"] = issuer  # RFC 9207: which server answered
    location = construct_redirect_uri(str(pending.params["redirect_uri"]), **params)
    return RedirectResponse(location, status_code=303, headers={"cache-control": "no-store"})


async def consent_answer(request: Request) -> Response:
    """Approve, deny or sign up. The key arrives in the form body only and is never logged."""
    runtime = _runtime(request)
    db = runtime.db
    if http.posted_from_here(request) is not True:  # the consent page needs one of the two
        return _message_page(
            "Not allowed", "This form must be sent from the sign-in page itself.", status_code=403
        )
    try:
        raw = await read_body(request)
    except LavaError as error:
        return _message_page("Bad request", error.message, status_code=error.code)
    form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)

    def field(name: str) -> str:
        values = form.get(name) or [""]
        return values[0]

    request_id = field("request")
    try:
        pending = await anyio.to_thread.run_sync(oauth.load_pending, db, request_id)
        csrf = field("csrf")
        if request.cookies.get(CSRF_COOKIE) != csrf:
            raise Forbidden("the form is stale or came from another page; reload the sign-in page")
        oauth.check_csrf(pending, csrf)
    except NotFound as error:
        return _message_page("Sign-in link expired", error.message, status_code=404)
    except Forbidden as error:
        return _message_page("Not allowed", error.message, status_code=403)

    action = field("action")
    issuer = runtime.settings.base_url
    if action == "deny":
        try:
            await anyio.to_thread.run_sync(oauth.deny, db, request_id)
        except NotFound as error:
            return _message_page("Sign-in link expired", error.message, status_code=404)
        return _redirect_to_client(
            pending, issuer, error="access_denied", error_description="the owner denied access"
        )
    if action == "signup":
        if not signup_allowed(runtime) or pending.wallet_id is not None:
            return _message_page(
                "Sign-up is closed", "Ask the operator of this server for a wallet.", status_code=403
            )
        created = await anyio.to_thread.run_sync(
            lambda: wallet.create_wallet(
                db, name="signed up on the consent page", mode=runtime.settings.money_mode
            )
        )
        await anyio.to_thread.run_sync(oauth.bind_wallet, db, request_id, created.wallet_id)
        pending = await anyio.to_thread.run_sync(oauth.load_pending, db, request_id)
        # The new wallet's owner is signed in to the dashboard as well.
        signed_up = await anyio.to_thread.run_sync(
            lambda: sessions.sign_in(
                db, created.wallet_key, previous_session_id=request.cookies.get(guard.COOKIE)
            )
        )
        return await _render_consent(
            request, runtime, request_id, pending, new_wallet=created, new_session=signed_up
        )
    if action != "approve":
        return _message_page("Bad request", "choose Approve or Deny", status_code=400)

    wallet_id = pending.wallet_id
    started: sessions.SignedIn | None = None
    key = field("wallet_key").strip()
    if wallet_id is None and key:
        # Signing in here signs the dashboard in too (a new session id; any previous one ends).
        try:
            started = await anyio.to_thread.run_sync(
                lambda: sessions.sign_in(db, key, previous_session_id=request.cookies.get(guard.COOKIE))
            )
        except Unauthorized:
            return await _render_consent(
                request,
                runtime,
                request_id,
                pending,
                problem="That wallet key is not known here.",
                use_another=True,
                status_code=401,
            )
        wallet_id = started.wallet_id
    elif wallet_id is None:
        # No key: the approval is the dashboard session's, for the wallet the page showed.
        signed_in = await anyio.to_thread.run_sync(_session_wallet, runtime, request)
        shown = field("session_wallet")
        if signed_in is None or not shown or signed_in.id != shown:
            return await _render_consent(
                request,
                runtime,
                request_id,
                pending,
                problem=(
                    "Paste your wallet key to sign in."
                    if not shown
                    else "Your dashboard session has ended or changed wallet; check who is signed in and approve again."
                ),
                status_code=401,
            )
        wallet_id = signed_in.id
    chosen = [scope for scope in form.get("scope", []) if scope in oauth.SCOPES]
    response: Response
    try:
        code = await anyio.to_thread.run_sync(
            lambda: oauth.approve(db, request_id, wallet_id=wallet_id, scopes=chosen)
        )
    except NotFound as error:
        response = _message_page("Sign-in link expired", error.message, status_code=404)
    except BadRequest as error:
        response = _message_page("Bad request", error.message, status_code=400)
    else:
        response = _redirect_to_client(pending, issuer, code=code)
    if started is not None:
        # Signed in either way (the previous session, if any, has ended): keep the new one.
        guard.set_session_cookie(request, response, started)
    return response
