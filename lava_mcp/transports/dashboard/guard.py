"""Who is signed in, and whether a form post may change anything.

The session cookie (`lava_session`) holds the random session id of `core/sessions.py`:
HttpOnly (no script reads it), SameSite=Lax (another site's form posts go without it),
Secure when the dashboard is served over https (the request's own scheme, or an https
`LAVA_PUBLIC_URL` behind a proxy), path `/`, and it lasts as long as the session.

A state-changing form post passes two checks before anything runs:
- its `form_token` field is the session's token (`sessions.check_form_token`), which only
  a page the server rendered for this session carries;
- the browser's `Origin` (or, without one, its `Referer`) names this server. A post that
  names neither is judged by the token alone (browsers always send `Origin` on a form post).
Either failing is a 403 that changed nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from lava_mcp.core import sessions
from lava_mcp.transports import http
from lava_mcp.transports.http import runtime_of

COOKIE = "lava_session"


@dataclass(frozen=True)
class Visitor:
    """A signed-in browser: its session id (from the cookie) and its wallet."""

    session_id: str
    wallet_id: str

    @property
    def form_token(self) -> str:
        return sessions.form_token(self.session_id)


async def visitor(request: Request) -> Visitor:
    """The signed-in browser behind a request.

    Raises: Unauthorized for a missing, unknown, signed-out or expired session.
    """
    session_id = request.cookies.get(COOKIE)
    active = await anyio.to_thread.run_sync(sessions.resolve, runtime_of(request).db, session_id)
    assert session_id is not None
    return Visitor(session_id, active.wallet_id)


def require_same_origin(request: Request) -> None:
    """Raises: Forbidden when the browser says the form was posted from another site."""
    http.require_same_origin(
        request,
        message="this form was posted from another site; nothing was changed",
        next_step="open the dashboard and submit the form there",
    )


def check_post(request: Request, signed_in: Visitor, submitted_token: str | None) -> None:
    """Both checks of the module docstring. Raises: Forbidden."""
    require_same_origin(request)
    sessions.check_form_token(signed_in.session_id, submitted_token)


def is_secure(request: Request) -> bool:
    public_url = runtime_of(request).settings.public_url or ""
    return request.url.scheme == "https" or public_url.lower().startswith("https://")


def set_session_cookie(request: Request, response: Response, signed_in: sessions.SignedIn) -> None:
    response.set_cookie(
        COOKIE,
        signed_in.session_id,
        max_age=int(sessions.SESSION_LIFETIME.total_seconds()),
        path="/",
        httponly=True,
        secure=is_secure(request),
        samesite="lax",
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, secure=is_secure(request), samesite="lax")
