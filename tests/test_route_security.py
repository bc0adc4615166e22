"""The README's "Security: what guards each route" table is the truth about every route.

The app is built both ways (OAuth on: an https `LAVA_PUBLIC_URL`; OAuth off: a plain-http
public URL) and every route it registers is found by walking the apps themselves: the
Starlette routes (FastAPI's `APIRoute`s are `Route`s too), the routes of mounted apps and
hosts, and the MCP SDK's streamable and SSE apps for the paths the dispatcher sends them
(`/mcp`, `/sse`, `/messages/`). Every one must be in the table, every table row must be a
real route, and each route, called without credentials with an empty and with a junk body
for every method it takes, must answer what the table says — which, for a route not listed
as public here, is 401, 403 or (a dashboard page) a redirect to the sign-in page. Nothing
in the database changes. Each public route's own guard is checked by a test of its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import SQLModel
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Host, Mount, Route

from lava_mcp.config import Settings
from lava_mcp.core import wallet
from lava_mcp.runtime import Runtime
from lava_mcp.transports.app import build_app
from tests.fake_provider import serve_in_thread

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Security: what guards each route"
SIGN_IN = "/dashboard/signin"
REFUSALS = {"401", "403", f"303 → {SIGN_IN}"}
# A route with no method list (the MCP transports) is tried with each of these.
EVERY_METHOD = ("GET", "POST", "PUT", "PATCH", "DELETE")
BODIES = {"empty": b"", "junk": b"\x00{junk\xff"}
# In the table before it is registered: the typed REST API (issue 10) serves it.
NOT_YET_REGISTERED = {"/openapi.json"}
# The public routes (answering without credentials by design), each with its own test below.
PUBLIC = {
    "/healthz",
    "/openapi.json",
    "/.well-known/oauth-authorization-server",
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/mcp",
    "/.well-known/oauth-protected-resource/sse",
    "/authorize",
    "/register",
    "/oauth/consent",
    "/dashboard/signin",
    "/dashboard/static/{name}",
    "/v1/webhooks/stripe",
    "/sandbox/checkout/{session_id}",
    "/fund/success",
    "/fund/cancel",
}
WEBHOOK_SECRET = "whsec_route_security"
METRICS_TOKEN = "metrics-route-security"


# -- the table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    paths: tuple[str, ...]
    methods: frozenset[str] | None  # None: any method
    guard: str
    answers: frozenset[str]  # "401", "303 → /dashboard/signin", ...
    why: str


def readme_table() -> list[Row]:
    text = README.read_text()
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 5, f"a security table row needs 5 cells: {line}"
        route, methods, guard, answer, why = cells
        paths = tuple(re.findall(r"`([^`]+)`", route))
        method_set = None if methods == "any" else frozenset(m.strip() for m in methods.split(","))
        if method_set is not None and "GET" in method_set:
            method_set |= {"HEAD"}  # Starlette answers HEAD wherever it answers GET
        answers = frozenset(
            part.strip() if "→" in part else part.strip().split()[0] for part in answer.split(",")
        )
        assert paths and guard and answers and why, f"an incomplete security table row: {line}"
        rows.append(Row(paths, method_set, guard, answers, why))
    assert rows, "the security table has no rows"
    return rows


def row_for(rows: list[Row], path: str, method: str | None) -> Row | None:
    for row in rows:
        if path in row.paths and (row.methods is None or method is None or method in row.methods):
            return row
    return None


# -- the routes ---------------------------------------------------------------------------


def served_by_mcp(path: str) -> bool:
    """The dispatcher's rule (`transports.app.build_app`): these go to the MCP SDK's apps."""
    return path == "/mcp" or path.startswith("/mcp/") or path == "/sse" or path.startswith("/messages/")


def starlette_apps(app: Any) -> list[Starlette]:
    """The Starlette apps behind the ASGI callable `build_app` returns: through middleware
    (`.app`) and the dispatcher's closure, never into a Starlette app itself (its routes
    are walked instead)."""
    found: list[Starlette] = []
    seen: set[int] = set()
    pending = [app]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, Starlette):
            found.append(item)
            continue
        inner = getattr(item, "app", None)
        if inner is not None:
            pending.append(inner)
        for cell in getattr(item, "__closure__", None) or ():
            pending.append(cell.cell_contents)
        if not isinstance(item, type) and hasattr(item, "__dict__"):  # a dispatcher object's apps
            pending.extend(value for value in vars(item).values() if isinstance(value, Starlette))
    return found


def route_methods(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, frozenset[str] | None]]:
    for route in routes:
        if isinstance(route, Mount):
            sub = route.routes
            if sub:
                yield from route_methods(sub, prefix + route.path)
            else:  # an ASGI app mounted whole: every path and method under it
                yield prefix + route.path + "/", None
        elif isinstance(route, Host):
            yield from route_methods(route.routes, prefix)
        elif isinstance(route, Route):
            yield prefix + route.path, None if route.methods is None else frozenset(route.methods)
        else:
            raise AssertionError(f"a route of a kind this walker does not know: {route!r}")


def registered(app: Any) -> dict[str, set[str] | None]:
    """Every path the app answers, with its methods (None: any method)."""
    apps = starlette_apps(app)
    is_mcp = {
        id(found): any(path in ("/mcp", "/sse") for path, _ in route_methods(found.routes)) for found in apps
    }
    assert sum(1 for found in apps if not is_mcp[id(found)]) == 1, "expected one main app beside the MCP apps"
    assert sum(is_mcp.values()) == 2, "expected the MCP streamable and SSE apps"
    routes: dict[str, set[str] | None] = {}
    for found in apps:
        for path, methods in route_methods(found.routes):
            if served_by_mcp(path) != is_mcp[id(found)]:
                continue  # the dispatcher never sends this path to this app
            if methods is None or routes.get(path, set()) is None:
                routes[path] = None
            else:
                known = routes.setdefault(path, set())
                assert known is not None
                known |= methods
    return routes


# -- the servers --------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    runtime: Runtime
    routes: dict[str, set[str] | None]
    wallet_id: str
    wallet_key: str
    public_url: str


BUILDS = {"oauth_on": "https://lava.example.com", "oauth_off": "http://lava.example.com"}


@pytest.fixture(params=sorted(BUILDS))
def served(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Served]:
    public_url = BUILDS[request.param]
    configured = settings.model_copy(
        update={
            "public_url": public_url,
            "metrics_token": METRICS_TOKEN,
            "stripe_webhook_secret": WEBHOOK_SECRET,
        }
    )
    runtime = Runtime.build(configured)
    runtime.db.upgrade()
    owner = wallet.create_wallet(runtime.db, name="owner")
    wallet.adjust(runtime.db, owner.wallet_id, "10.00", reason="test funding")
    app = build_app(runtime, migrate=False)
    try:
        with serve_in_thread(app) as url:
            yield Served(url, runtime, registered(app), owner.wallet_id, owner.wallet_key, public_url)
    finally:
        anyio.run(runtime.aclose)


def registered_routes_of(settings: Settings, public_url: str) -> dict[str, set[str] | None]:
    """The routes of the app built with `public_url` (built, walked, never served)."""
    runtime = Runtime.build(settings.model_copy(update={"public_url": public_url}))
    try:
        return registered(build_app(runtime, migrate=False))
    finally:
        anyio.run(runtime.aclose)


def row_counts(runtime: Runtime) -> dict[str, int]:
    """Rows in every table: whatever a refused call might have written."""
    with runtime.db.read() as session:
        return {
            table.name: int(session.execute(select(func.count()).select_from(table)).scalar_one())
            for table in SQLModel.metadata.sorted_tables
        }


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def answer_of(response: httpx.Response) -> str:
    if response.is_redirect:
        return f"{response.status_code} → {response.headers.get('location', '')}"
    return str(response.status_code)


# -- the tests ----------------------------------------------------------------------------


def test_every_registered_route_is_in_the_table_and_every_row_is_a_route(served: Served) -> None:
    rows = readme_table()
    missing = [
        f"{method} {path}"
        for path, methods in sorted(served.routes.items())
        for method in sorted(methods or {None})  # type: ignore[arg-type]
        if row_for(rows, path, method) is None
    ]
    assert not missing, f"routes missing from the README's security table: {missing}"
    other_build = {
        path
        for public_url in BUILDS.values()
        if public_url != served.public_url
        for path in registered_routes_of(served.runtime.settings, public_url)
    }
    known = set(served.routes) | other_build | NOT_YET_REGISTERED
    stale = [path for row in rows for path in row.paths if path not in known]
    assert not stale, f"rows for routes the app does not register: {stale}"


def test_the_table_marks_public_exactly_the_routes_with_their_own_checks() -> None:
    rows = readme_table()
    public = {path for row in rows if not row.answers <= REFUSALS for path in row.paths}
    assert public == PUBLIC, "a route is public in the README without its own check here (or the reverse)"
    for row in rows:
        if row.guard == "none":  # a route nothing guards is public, whatever it answers
            assert set(row.paths) <= PUBLIC, row


def test_without_credentials_every_route_answers_as_the_table_says(served: Served) -> None:
    rows = readme_table()
    before = row_counts(served.runtime)
    wrong = []
    with httpx.Client(base_url=served.url, timeout=30) as anonymous:
        for path, methods in sorted(served.routes.items()):
            for method in sorted(methods or EVERY_METHOD):
                row = row_for(rows, path, method)
                assert row is not None, f"{method} {path} is not in the table"
                if path not in PUBLIC:
                    assert row.answers <= REFUSALS, f"{path} is not public, yet its row allows {row.answers}"
                for name, body in BODIES.items():
                    response = anonymous.request(
                        method, concrete(path), content=body, headers={"content-type": "application/json"}
                    )
                    answer = answer_of(response)
                    if answer not in row.answers:
                        wrong.append(
                            f"{method} {path} ({name} body): {answer}, the table says {set(row.answers)}"
                        )
    assert not wrong, "\n".join(wrong)
    assert row_counts(served.runtime) == before


# -- the public routes, each by its own guard ---------------------------------------------------


def test_healthz_tells_no_wallet_anything(served: Served) -> None:
    body = httpx.get(f"{served.url}/healthz").json()
    assert set(body) <= {"status", "version", "database_id", "payments", "money_mode", "proof"}
    assert body["status"] == "ok" and served.wallet_id not in json.dumps(body)


def test_the_openapi_document_when_served_describes_and_holds_no_data(served: Served) -> None:
    if "/openapi.json" not in served.routes:
        assert httpx.get(f"{served.url}/openapi.json").status_code == 404
        return
    document = httpx.get(f"{served.url}/openapi.json").json()
    assert document["openapi"].startswith("3.") and served.wallet_id not in json.dumps(document)


def test_metrics_needs_the_token(served: Served) -> None:
    assert httpx.get(f"{served.url}/metrics").status_code == 401
    wrong = httpx.get(f"{served.url}/metrics", headers={"authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    right = httpx.get(f"{served.url}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    assert right.status_code == 200


def sign(payload: bytes, secret: str) -> str:
    timestamp = int(time.time())
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def test_the_webhook_without_a_valid_signature_is_400_and_changes_nothing(served: Served) -> None:
    event = json.dumps(
        {
            "id": "evt_forged",
            "type": "payment_intent.succeeded",
            "data": {
                "object": {
                    "id": "pi_forged",
                    "amount": 100_000,
                    "metadata": {"lava_wallet_id": served.wallet_id},
                }
            },
        }
    ).encode()
    before = row_counts(served.runtime)
    for signature in (None, "t=1,v1=00", sign(event, "whsec_someone_else")):
        headers = {"content-type": "application/json"}
        if signature is not None:
            headers["stripe-signature"] = signature
        response = httpx.post(f"{served.url}/v1/webhooks/stripe", content=event, headers=headers)
        assert (response.status_code, response.json()["code"]) == (400, 400), response.text
    assert row_counts(served.runtime) == before


def test_the_oauth_endpoints_refuse_an_unknown_client_and_register_nothing_malformed(served: Served) -> None:
    if "/authorize" not in served.routes:
        assert served.public_url.startswith("http://")  # OAuth off: no authorization server at all
        assert httpx.get(f"{served.url}/.well-known/oauth-authorization-server").status_code == 404
        return
    before = row_counts(served.runtime)
    metadata = httpx.get(f"{served.url}/.well-known/oauth-authorization-server").json()
    assert metadata["issuer"].rstrip("/") == served.public_url
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    resource = httpx.get(f"{served.url}/.well-known/oauth-protected-resource/mcp").json()
    assert resource["resource"] == f"{served.public_url}/mcp"
    authorize = httpx.get(
        f"{served.url}/authorize",
        params={"client_id": "unknown", "redirect_uri": "https://evil.example/cb", "response_type": "code"},
    )
    assert authorize.status_code == 400 and "location" not in authorize.headers
    token = httpx.post(
        f"{served.url}/token",
        data={
            "grant_type": "authorization_code",
            "code": "x",
            "client_id": "unknown",
            "code_verifier": "y" * 43,
        },
    )
    assert token.status_code == 401 and "access_token" not in token.text
    revoke = httpx.post(f"{served.url}/revoke", data={"token": "x", "client_id": "unknown"})
    assert revoke.status_code == 401
    register = httpx.post(f"{served.url}/register", json={"redirect_uris": "not a list"})
    assert register.status_code == 400
    assert row_counts(served.runtime) == before


def test_the_consent_page_needs_its_pending_request_and_its_csrf_token(served: Served) -> None:
    if "/oauth/consent" not in served.routes:
        assert served.public_url.startswith("http://")
        return
    assert httpx.get(f"{served.url}/oauth/consent", params={"request": "unknown"}).status_code == 404
    callback = "https://claude.ai/api/mcp/auth_callback"
    client = httpx.post(
        f"{served.url}/register",
        json={"redirect_uris": [callback], "client_name": "Route test", "token_endpoint_auth_method": "none"},
    ).json()
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    authorize = httpx.get(
        f"{served.url}/authorize",
        params={
            "client_id": client["client_id"],
            "redirect_uri": callback,
            "response_type": "code",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "s",
        },
    )
    assert authorize.is_redirect, authorize.text
    request_id = parse_qs(urlsplit(authorize.headers["location"]).query)["request"][0]
    with httpx.Client(base_url=served.url, timeout=30) as browser:
        page = browser.get("/oauth/consent", params={"request": request_id})
        assert page.status_code == 200 and browser.cookies
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
        form = {**fields, "action": "approve", "wallet_key": served.wallet_key}  # the owner's own key
        before = row_counts(served.runtime)
        # from another site, with the cookie and the token
        elsewhere = browser.post("/oauth/consent", data=form, headers={"origin": "https://evil.example"})
        assert elsewhere.status_code == 403
        # from this page, without the CSRF cookie
        cookieless = httpx.post(f"{served.url}/oauth/consent", data=form, headers={"origin": served.url})
        assert cookieless.status_code == 403 and "location" not in cookieless.headers
        assert row_counts(served.runtime) == before


def test_dashboard_sign_in_without_a_valid_key_starts_no_session(served: Served) -> None:
    before = row_counts(served.runtime)
    with httpx.Client(base_url=served.url, headers={"origin": served.url}) as browser:
        assert browser.get(SIGN_IN).status_code == 200
        response = browser.post(SIGN_IN, data={"wallet_key": "lava_wk_" + "x" * 43})
        assert response.status_code == 401 and not browser.cookies
        assert browser.get("/", follow_redirects=False).headers["location"] == SIGN_IN
    assert row_counts(served.runtime) == before


def test_static_assets_are_only_the_dashboards_own(served: Served) -> None:
    assert httpx.get(f"{served.url}/dashboard/static/dashboard.css").status_code == 200
    for name in ("x", "..%2Fpages.py", "%2E%2E%2F__init__.py"):
        assert httpx.get(f"{served.url}/dashboard/static/{name}").status_code == 404


def test_the_funding_pages_show_nothing_for_an_unknown_session(served: Served) -> None:
    before = row_counts(served.runtime)
    assert httpx.get(f"{served.url}/sandbox/checkout/cs_unknown").status_code == 404
    posted = httpx.post(
        f"{served.url}/sandbox/checkout/cs_unknown",
        data={"number": "4242424242424242", "expiry": "12/40", "cvc": "123"},
        headers={"origin": served.url},
    )
    assert posted.status_code == 404
    assert httpx.get(f"{served.url}/fund/success", params={"session_id": "cs_unknown"}).status_code == 404
    cancel = httpx.get(f"{served.url}/fund/cancel")
    assert cancel.status_code == 200 and "Nothing was charged" in cancel.text
    assert row_counts(served.runtime) == before
