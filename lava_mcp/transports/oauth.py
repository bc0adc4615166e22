"""OAuth 2.1 for /mcp and /sse: the MCP SDK's authorization-server routes over our provider,
and the metadata documents (the sign-in page is `oauth_consent`, metadata-document clients
`client_metadata`).

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

import logging
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse

import anyio
import anyio.to_thread
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
)
from mcp.server.auth.routes import build_metadata, cors_middleware, create_auth_routes
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.shared.auth import OAuthClientInformationFull, ProtectedResourceMetadata
from mcp.shared.auth import OAuthToken as TokenResponse
from pydantic import AnyHttpUrl
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lava_mcp.core import oauth, wallet
from lava_mcp.errors import BadRequest, Forbidden, Unauthorized
from lava_mcp.ids import WALLET_KEY_PREFIX
from lava_mcp.runtime import Runtime
from lava_mcp.store.models import utc_now
from lava_mcp.transports.client_metadata import (
    ClientMetadataFetcher,
    acceptable_redirect_uri,
    client_from_document,
    is_metadata_document_url,
)
from lava_mcp.transports.oauth_consent import CONSENT_PATH, consent_answer, consent_page

logger = logging.getLogger("lava_mcp.oauth")

PKCE_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
# A metadata document is read again after this long (a client's changes reach us by then).
METADATA_DOCUMENT_CACHE_S = 600


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
        # An S256 challenge is 43 base64url characters (RFC 7636 §4.2); anything else could
        # never be matched by a verifier, so it is refused here rather than at the token.
        if not PKCE_CHALLENGE.fullmatch(params.code_challenge):
            raise AuthorizeError(
                "invalid_request", "code_challenge must be an S256 challenge (43 base64url characters)"
            )
        resource = params.resource or self.resources[0]
        if resource.rstrip("/") not in self.resources:
            raise AuthorizeError("invalid_target", f"this server issues tokens for {self.resources[0]} only")
        # No `scope` asked: the scopes the client registered for, never more (a client
        # registered for reading must not be offered the power to charge cards).
        requested = params.scopes
        if requested is None and client.scope:
            requested = client.scope.split()
        try:
            scopes = oauth.normalise_scopes(requested)
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
        _public_client_revocation(route)
        if route.path == "/revoke"
        else _token_for_our_resource(route, provider.resources)
        if route.path == "/token"
        else _authorization_errors_name_the_issuer(route, base_url)
        if route.path == "/authorize"
        else route
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


FORM_BODY_MAX_BYTES = 65_536

# Reads (and may rewrite) the form body of a request before the SDK's handler sees it: the
# new body, or a response that answers the request instead.
FormGate = Callable[[bytes], "bytes | Response"]


def _public_client_revocation(route: Route) -> Route:
    """The SDK's /revoke requires a `client_secret` field even from a public client (mcp
    2.3 declares it `str | None` without a default); RFC 7009 lets a public client send
    only `token` and `client_id`, so an absent one is added as empty before the SDK reads it."""

    def add_empty_secret(body: bytes) -> bytes | Response:
        if b"client_secret=" in body:
            return body
        return body + (b"&" if body else b"") + b"client_secret="

    return Route(route.path, endpoint=_GatedForm(route.app, add_empty_secret), methods=["POST"])


def _token_for_our_resource(route: Route, resources: list[str]) -> Route:
    """RFC 8707 at the token endpoint: a `resource` other than ours is `invalid_target`
    (the SDK's handler does not compare it; a code or refresh token is bound to the
    resource its grant was given for, so this is the only other one that could be named)."""

    def check_resource(body: bytes) -> bytes | Response:
        named = [value for name, value in parse_qsl(body.decode(errors="replace")) if name == "resource"]
        if any(value.rstrip("/") not in resources for value in named):
            return JSONResponse(
                {
                    "error": "invalid_target",
                    "error_description": f"this server issues tokens for {resources[0]} only",
                },
                status_code=400,
                headers={"cache-control": "no-store"},
            )
        return body

    return Route(route.path, endpoint=_GatedForm(route.app, check_resource), methods=["POST"])


def _authorization_errors_name_the_issuer(route: Route, issuer: str) -> Route:
    """RFC 9207: every authorization response carries `iss`, errors included (the metadata
    says so). The sign-in page adds it to its own answers; the SDK's /authorize handler
    redirects its errors (invalid_target, invalid_scope, …) without it, so it is added to
    the `Location` of any such redirect here."""
    return Route(
        route.path,
        endpoint=_IssuerOnErrors(route.app, issuer),
        methods=list(route.methods or ["GET", "POST"]),
    )


class _IssuerOnErrors:
    """An ASGI wrapper: adds `iss` to the `Location` of an error redirect."""

    def __init__(self, app: ASGIApp, issuer: str) -> None:
        self.app = app
        self.issuer = issuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_issuer(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (302, 303):
                message = {
                    **message,
                    "headers": [self._header(*header) for header in message.get("headers", [])],
                }
            await send(message)

        await self.app(scope, receive, send_with_issuer)

    def _header(self, name: bytes, value: bytes) -> tuple[bytes, bytes]:
        if name.lower() != b"location":
            return name, value
        location = value.decode("latin-1")
        query = urlparse(location).query
        fields = dict(parse_qsl(query))
        if "error" not in fields or "iss" in fields:
            return name, value
        joiner = "&" if query else "?"
        return name, f"{location}{joiner}{urlencode({'iss': self.issuer})}".encode("latin-1")


class _GatedForm:
    """An ASGI wrapper: reads the form body (at most FORM_BODY_MAX_BYTES), lets `gate`
    rewrite or answer it, then replays the body to the wrapped app."""

    def __init__(self, app: ASGIApp, gate: FormGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > FORM_BODY_MAX_BYTES:
                await Response("request body too large", status_code=413)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        gated = self.gate(body)
        if isinstance(gated, Response):
            await gated(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": gated, "more_body": False}

        await self.app(scope, replay, send)
