"""OAuth 2.1 for /mcp and /sse: the MCP SDK's authorization-server routes over our provider,
the metadata documents, and the wallet owner's sign-in and consent page.

- `WalletOAuthProvider` implements the SDK's `OAuthAuthorizationServerProvider`; every rule
  (codes once, refresh rotation, grants, scopes) is `core.oauth`'s.
- Every client is public: registration never mints a secret (none could be stored hashed
  and still be compared by the SDK), so PKCE S256 and exact redirect URIs bind a code.
- A `client_id` that is an https URL is a Client ID Metadata Document, fetched with strict
  limits by `ClientMetadataFetcher` (https, no redirects, 5 s, 5 KB, public addresses only,
  the address checked is the address connected to).
- The raw wallet key is still accepted as a bearer token (scripts, the MCP Inspector): it
  maps to every scope of that wallet.
- The consent page takes the wallet key in a POST form only; its form token is bound to the
  pending authorization (and double-submitted in a SameSite=Strict cookie), and the POST
  must come from this origin.
"""

from __future__ import annotations

import html
import ipaddress
import json
import logging
import ssl
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import anyio
import anyio.to_thread
import httpcore
from mcp.server.auth.handlers.metadata import MetadataHandler, ProtectedResourceMetadataHandler
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    IdentityAssertionParams,
    RefreshToken,
    RegistrationError,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.routes import build_metadata, cors_middleware, create_auth_routes
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.shared.auth import OAuthClientInformationFull, ProtectedResourceMetadata
from mcp.shared.auth import OAuthToken as TokenResponse
from pydantic import AnyHttpUrl, ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lava_mcp.core import oauth, wallet
from lava_mcp.errors import BadRequest, Forbidden, LavaError, NotFound, Unauthorized
from lava_mcp.ids import WALLET_KEY_PREFIX
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import utc_now
from lava_mcp.transports.http import read_body

logger = logging.getLogger("lava_mcp.oauth")

CONSENT_PATH = "/oauth/consent"
CSRF_COOKIE = "lava_oauth_csrf"
# A metadata document is read again after this long (a client's changes reach us by then).
METADATA_DOCUMENT_CACHE_S = 600
METADATA_DOCUMENT_MAX_BYTES = 5_000
METADATA_DOCUMENT_TIMEOUT_S = 5.0


# --- resources and settings -----------------------------------------------------------


def resource_urls(base_url: str) -> list[str]:
    """What a token may be bound to: this server's MCP endpoints (one protected resource)."""
    return [f"{base_url}/mcp", f"{base_url}/sse"]


def auth_settings(base_url: str) -> AuthSettings:
    """The SDK's settings for lava-mcp as its own authorization server. (URLs go in as text:
    the settings keep a path-less issuer without a trailing slash, as clients compare it.)"""
    return AuthSettings.model_validate(
        {
            "issuer_url": base_url,
            "resource_server_url": f"{base_url}/mcp",
            # Nothing on /mcp works without reading the wallet; funding and paid calls are
            # checked per tool.
            "required_scopes": [oauth.READ],
            # The provider checks the token's resource against every endpoint of this server.
            "validate_token_resource": False,
            "client_registration_options": ClientRegistrationOptions(
                enabled=True, valid_scopes=list(oauth.SCOPES), default_scopes=list(oauth.SCOPES)
            ),
            "revocation_options": RevocationOptions(enabled=True),
        }
    )


def serves_authorization(base_url: str) -> bool:
    """OAuth needs an https issuer (RFC 8414), or a loopback one for a local install; a
    server reached over plain http elsewhere takes the wallet key only."""
    parsed = urlparse(base_url)
    return parsed.scheme == "https" or parsed.hostname in ("localhost", "127.0.0.1", "::1")


def signup_allowed(runtime: Runtime) -> bool:
    """Sign-up on the consent page: on for the embedded single-user install (no public URL),
    off for a public server unless the operator opens it (LAVA_OPEN_SIGNUP)."""
    settings = runtime.settings
    return settings.open_signup if settings.open_signup is not None else not settings.public_url


# --- Client ID Metadata Documents -----------------------------------------------------


def is_metadata_document_url(client_id: str) -> bool:
    """An https URL with a path, no query, fragment, credentials or dot segments."""
    parsed = urlparse(client_id)
    segments = parsed.path.split("/")
    return (
        parsed.scheme == "https"
        and bool(parsed.hostname)
        and parsed.path not in ("", "/")
        and not parsed.query
        and not parsed.fragment
        and parsed.username is None
        and parsed.password is None
        and "." not in segments
        and ".." not in segments
    )


class _CheckedAddressBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself and connects only to an allowed address, so the address
    checked is the address connected to (no DNS rebinding between check and connect)."""

    def __init__(self, allow_private_addresses: bool) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private_addresses = allow_private_addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        infos = await anyio.getaddrinfo(host, port, type=0)
        addresses = [str(info[4][0]) for info in infos]
        allowed = [address for address in addresses if self._allowed(address)]
        if not allowed or len(allowed) != len(addresses):
            raise httpcore.ConnectError(f"{host} resolves to an address that is not public")
        return await self._inner.connect_tcp(allowed[0], port, timeout, local_address, socket_options)

    def _allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        return ip.is_global or (self._allow_private_addresses and (ip.is_loopback or ip.is_private))

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class ClientMetadataFetcher:
    """Reads a Client ID Metadata Document: https only, no redirects, at most
    `METADATA_DOCUMENT_MAX_BYTES`, within `METADATA_DOCUMENT_TIMEOUT_S`, from public
    addresses only (tests allow loopback and pass their own CA)."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, allow_private_addresses: bool = False
    ) -> None:
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._allow_private_addresses = allow_private_addresses

    async def fetch(self, url: str) -> dict[str, Any] | None:
        """The document's JSON object, or None if it can't be read within the limits."""
        if not is_metadata_document_url(url):
            return None
        try:
            with anyio.fail_after(METADATA_DOCUMENT_TIMEOUT_S):
                async with (
                    httpcore.AsyncConnectionPool(
                        ssl_context=self._ssl_context,
                        network_backend=_CheckedAddressBackend(self._allow_private_addresses),
                        retries=0,
                    ) as pool,
                    pool.stream("GET", url, headers={"accept": "application/json"}) as response,
                ):
                    if response.status != 200:
                        return None
                    body = b""
                    async for chunk in response.aiter_stream():
                        body += chunk
                        if len(body) > METADATA_DOCUMENT_MAX_BYTES:
                            return None
        except (
            TimeoutError,
            httpcore.TimeoutException,
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.UnsupportedProtocol,
            OSError,
        ) as error:
            logger.info("client metadata document %s could not be read: %s", url, type(error).__name__)
            return None
        try:
            document = json.loads(body)
        except ValueError:
            return None
        return document if isinstance(document, dict) else None


def client_from_document(url: str, document: dict[str, Any]) -> OAuthClientInformationFull | None:
    """The client a metadata document describes, or None if it does not describe `url` as a
    public client with redirect URIs this server accepts."""
    if document.get("client_id") != url or "client_secret" in document:
        return None
    if document.get("token_endpoint_auth_method") not in (None, "none"):
        return None
    redirect_uris = document.get("redirect_uris")
    if (
        not isinstance(redirect_uris, list)
        or not redirect_uris
        or not all(map(acceptable_redirect_uri, redirect_uris))
    ):
        return None
    try:
        return OAuthClientInformationFull(
            client_id=url,
            client_name=str(document.get("client_name") or "")[:200] or None,
            redirect_uris=redirect_uris,
            token_endpoint_auth_method="none",
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            scope=" ".join(oauth.SCOPES),
        )
    except ValidationError:
        return None


def acceptable_redirect_uri(uri: object) -> bool:
    """https anywhere; http only to loopback (native apps, RFC 8252); nothing with a fragment."""
    if not isinstance(uri, str):
        return False
    parsed = urlparse(uri)
    if parsed.fragment or not parsed.hostname:
        return False
    if parsed.scheme == "https":
        return True
    return parsed.scheme == "http" and parsed.hostname in ("127.0.0.1", "localhost", "::1")


# --- the provider ---------------------------------------------------------------------


class WalletOAuthProvider:
    """The SDK's `OAuthAuthorizationServerProvider` over `core.oauth` (and the wallet key)."""

    def __init__(self, runtime: Runtime, *, fetcher: ClientMetadataFetcher | None = None) -> None:
        self.runtime = runtime
        self.base_url = runtime.settings.base_url
        self.resources = resource_urls(self.base_url)
        self.fetcher = fetcher or ClientMetadataFetcher()

    async def _db(self, function: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(function, self.runtime.db, *args)

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        stored = await self._db(oauth.load_client, client_id)
        fresh = stored is not None and (
            not stored.metadata_document
            or (
                stored.fetched_at is not None
                and utc_now() - stored.fetched_at < timedelta(seconds=METADATA_DOCUMENT_CACHE_S)
            )
        )
        if stored is not None and fresh:
            return OAuthClientInformationFull.model_validate(stored.client_metadata)
        if not is_metadata_document_url(client_id):
            return None
        document = await self.fetcher.fetch(client_id)
        client = client_from_document(client_id, document) if document is not None else None
        if client is None:
            return None
        await anyio.to_thread.run_sync(
            lambda: oauth.save_client(
                self.runtime.db,
                client_id,
                client.model_dump(mode="json", exclude_none=True),
                metadata_document=True,
            )
        )
        return client

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        if is_metadata_document_url(client_info.client_id):
            raise RegistrationError("invalid_client_metadata", "client ids are assigned by this server")
        for uri in client_info.redirect_uris or []:
            if not acceptable_redirect_uri(str(uri)):
                raise RegistrationError(
                    "invalid_redirect_uri", f"{uri} is not https (or http to loopback, for a native app)"
                )
        if not client_info.redirect_uris:
            raise RegistrationError("invalid_redirect_uri", "at least one redirect URI is required")
        try:
            scopes = oauth.normalise_scopes(client_info.scope.split() if client_info.scope else None)
        except BadRequest as error:
            raise RegistrationError("invalid_client_metadata", error.message) from error
        # Every client is public: the answer the SDK sends back says so (RFC 7591 §3.2.1
        # lets a server replace the method asked for), and no secret exists to store.
        client_info.client_secret = None
        client_info.client_secret_expires_at = None
        client_info.token_endpoint_auth_method = "none"
        client_info.scope = " ".join(scopes)
        await anyio.to_thread.run_sync(
            lambda: oauth.save_client(
                self.runtime.db, client_info.client_id, client_info.model_dump(mode="json", exclude_none=True)
            )
        )

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        resource = params.resource or self.resources[0]
        if resource.rstrip("/") not in self.resources:
            raise AuthorizeError("invalid_target", f"this server issues tokens for {self.resources[0]} only")
        try:
            scopes = oauth.normalise_scopes(params.scopes)
        except BadRequest as error:
            raise AuthorizeError("invalid_scope", error.message) from error
        stored = {
            "scopes": scopes,
            "code_challenge": params.code_challenge,
            "redirect_uri": str(params.redirect_uri),
            "redirect_uri_provided_explicitly": params.redirect_uri_provided_explicitly,
            "state": params.state,
            "resource": resource.rstrip("/"),
        }
        request_id = await self._db(oauth.start_authorization, client.client_id, stored)
        return f"{self.base_url}{CONSENT_PATH}?{urlencode({'request': request_id})}"

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        view: oauth.CodeView | None = await self._db(oauth.load_code, authorization_code)
        if view is None or view.client_id != client.client_id:
            return None
        return AuthorizationCode(
            code=authorization_code,
            scopes=view.scopes,
            expires_at=view.expires_at.timestamp(),
            client_id=view.client_id,
            code_challenge=view.code_challenge,
            redirect_uri=AnyHttpUrl(view.redirect_uri),
            redirect_uri_provided_explicitly=view.redirect_uri_provided_explicitly,
            resource=view.resource,
            subject=view.wallet_id,
        )

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> TokenResponse:
        try:
            issued: oauth.IssuedTokens = await self._db(oauth.exchange_code, authorization_code.code)
        except Forbidden as error:
            raise TokenError("invalid_grant", error.message) from error
        return _token_response(issued)

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> RefreshToken | None:
        view: oauth.GrantView | None = await self._db(oauth.load_refresh_token, refresh_token)
        if view is None or view.client_id != client.client_id:
            return None
        return RefreshToken(
            token=refresh_token,
            client_id=view.client_id,
            scopes=view.scopes,
            expires_at=int(view.expires_at.timestamp()),
            resource=view.resource,
            subject=view.wallet_id,
        )

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> TokenResponse:
        try:
            issued: oauth.IssuedTokens = await self._db(
                oauth.rotate_refresh_token, refresh_token.token, scopes
            )
        except Forbidden as error:
            raise TokenError("invalid_grant", error.message) from error
        return _token_response(issued)

    async def load_access_token(self, token: str) -> AccessToken | None:
        if token.startswith(WALLET_KEY_PREFIX):
            # The non-OAuth path: the wallet key itself, with every scope of its wallet.
            try:
                owner = await self._db(wallet.authenticate, token)
            except Unauthorized:
                return None
            return AccessToken(
                token=token,
                client_id=owner.id,
                scopes=list(oauth.SCOPES),
                resource=self.resources[0],
                subject=owner.id,
            )
        view: oauth.GrantView | None = await self._db(oauth.load_access_token, token)
        if view is None or view.resource not in self.resources:
            return None
        return AccessToken(
            token=token,
            client_id=view.client_id,
            scopes=view.scopes,
            expires_at=int(view.expires_at.timestamp()),
            resource=view.resource,
            subject=view.wallet_id,
        )

    async def exchange_identity_assertion(
        self, client: OAuthClientInformationFull, params: IdentityAssertionParams
    ) -> TokenResponse:
        raise TokenError("unsupported_grant_type", "only the authorization code grant is supported")

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        if token.token.startswith(WALLET_KEY_PREFIX):
            return  # a wallet key is rotated by its owner, never revoked by a client
        await self._db(oauth.revoke_token, token.token)


def _token_response(issued: oauth.IssuedTokens) -> TokenResponse:
    return TokenResponse(
        access_token=issued.access_token,
        expires_in=issued.expires_in_s,
        scope=" ".join(issued.scopes),
        refresh_token=issued.refresh_token,
    )


def wallet_of(token: AccessToken) -> str:
    """The wallet an MCP request acts on: the token's subject (its owner)."""
    return token.subject or token.client_id


def require_scope(token: AccessToken | None, scope: str) -> None:
    """Raises: Forbidden (403) when an OAuth token lacks `scope` (stdio and in-memory
    connections carry no token and are the configured wallet's own)."""
    if token is not None and scope not in token.scopes:
        raise Forbidden(
            f"this connection was not granted {scope} ({oauth.SCOPE_WORDS[scope].lower()})",
            next_step="disconnect and connect again, allowing it on the sign-in page",
        )


# --- routes ---------------------------------------------------------------------------


def routes(runtime: Runtime, provider: WalletOAuthProvider) -> list[BaseRoute]:
    """The authorization server's routes (the SDK's, with our metadata), the protected
    resource metadata for /mcp (at the root and the /mcp path variant) and /sse, and the
    consent page."""
    base_url = runtime.settings.base_url
    settings = auth_settings(base_url)
    metadata = build_metadata(
        settings.issuer_url,
        None,
        settings.client_registration_options or ClientRegistrationOptions(),
        settings.revocation_options or RevocationOptions(),
    )
    metadata.client_id_metadata_document_supported = True
    metadata.authorization_response_iss_parameter_supported = True
    metadata.token_endpoint_auth_methods_supported = ["none"]
    metadata.revocation_endpoint_auth_methods_supported = ["none"]
    metadata_route = Route(
        "/.well-known/oauth-authorization-server",
        endpoint=cors_middleware(MetadataHandler(metadata).handle, ["GET", "OPTIONS"]),
        methods=["GET", "OPTIONS"],
    )
    sdk_routes = [
        _public_client_revocation(route) if route.path == "/revoke" else route
        for route in create_auth_routes(
            provider,
            settings.issuer_url,
            client_registration_options=settings.client_registration_options,
            revocation_options=settings.revocation_options,
        )
        if route.path != "/.well-known/oauth-authorization-server"
    ]

    def resource_route(path: str, resource: str) -> Route:
        document = ProtectedResourceMetadata.model_validate(
            {
                "resource": resource,
                "authorization_servers": [base_url],
                "scopes_supported": list(oauth.SCOPES),
                "resource_name": "lava-mcp wallet",
            }
        )
        handler = ProtectedResourceMetadataHandler(document)
        return Route(
            path, endpoint=cors_middleware(handler.handle, ["GET", "OPTIONS"]), methods=["GET", "OPTIONS"]
        )

    mcp_url, sse_url = resource_urls(base_url)
    return [
        metadata_route,
        *sdk_routes,
        resource_route("/.well-known/oauth-protected-resource", mcp_url),
        resource_route("/.well-known/oauth-protected-resource/mcp", mcp_url),
        resource_route("/.well-known/oauth-protected-resource/sse", sse_url),
        Route(CONSENT_PATH, consent_page, methods=["GET"]),
        Route(CONSENT_PATH, consent_answer, methods=["POST"]),
    ]


REVOCATION_BODY_MAX_BYTES = 65_536


def _public_client_revocation(route: Route) -> Route:
    """The SDK's /revoke requires a `client_secret` field even from a public client (mcp
    2.3 declares it `str | None` without a default); RFC 7009 lets a public client send
    only `token` and `client_id`, so an absent one is added as empty before the SDK reads it."""
    return Route(
        route.path, endpoint=_DefaultClientSecret(route.app), methods=list(route.methods or ["POST"])
    )


class _DefaultClientSecret:
    """An ASGI wrapper: the form body, with an empty `client_secret` when it had none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > REVOCATION_BODY_MAX_BYTES:
                await Response("request body too large", status_code=413)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        if b"client_secret=" not in body:
            body = body + (b"&" if body else b"") + b"client_secret="
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


# --- the sign-in and consent page -----------------------------------------------------


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
    return await _render_consent(request, runtime, request_id, pending)


async def _render_consent(
    request: Request,
    runtime: Runtime,
    request_id: str,
    pending: Any,
    *,
    problem: str | None = None,
    new_wallet: wallet.NewWallet | None = None,
    status_code: int = 200,
) -> Response:
    csrf = await anyio.to_thread.run_sync(oauth.new_csrf_token, runtime.db, request_id)
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
    signup = ""
    if signup_allowed(runtime) and pending.wallet_id is None and new_wallet is None:
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
you can revoke any time from your dashboard.</small></p>
</body></html>"""
    response = HTMLResponse(
        body, status_code=status_code, headers=_page_headers(str(pending.params["redirect_uri"]))
    )
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


def _same_origin(request: Request, base_url: str) -> bool:
    """The POST came from a page of this server (Origin, or Referer where a browser sent no Origin)."""
    expected = urlparse(base_url)
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return False
        origin = referer
    parsed = urlparse(origin)
    return (parsed.scheme, parsed.netloc) == (expected.scheme, expected.netloc)


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
    if not _same_origin(request, runtime.settings.base_url):
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
        return await _render_consent(request, runtime, request_id, pending, new_wallet=created)
    if action != "approve":
        return _message_page("Bad request", "choose Approve or Deny", status_code=400)

    wallet_id = pending.wallet_id
    if wallet_id is None:
        try:
            owner = await anyio.to_thread.run_sync(wallet.authenticate, db, field("wallet_key").strip())
        except Unauthorized:
            return await _render_consent(
                request,
                runtime,
                request_id,
                pending,
                problem="That wallet key is not known here.",
                status_code=401,
            )
        wallet_id = owner.id
    chosen = [scope for scope in form.get("scope", []) if scope in oauth.SCOPES]
    try:
        code = await anyio.to_thread.run_sync(
            lambda: oauth.approve(db, request_id, wallet_id=wallet_id, scopes=chosen)
        )
    except NotFound as error:
        return _message_page("Sign-in link expired", error.message, status_code=404)
    except BadRequest as error:
        return _message_page("Bad request", error.message, status_code=400)
    return _redirect_to_client(pending, issuer, code=code)
