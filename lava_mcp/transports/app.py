"""One ASGI app: MCP (/mcp, /sse), the gateway and REST API (/v1/…), webhooks, dashboard.

A small dispatcher sends /mcp and /sse traffic to the MCP SDK's own apps (bearer auth: an
OAuth access token or the wallet key, see `transports.oauth`) and everything else to the
main app — which also serves the OAuth authorization server, its metadata and the
consent page — whose lifespan starts the runtime and the MCP session manager (a mounted
app's own lifespan never runs).

The main app is a FastAPI app (a Starlette subclass): the `/v1` management routes are its
`APIRoute`s (`transports.api.WalletRoute`), validated by the contract's models and
described at `/openapi.json`; every other route (gateway, dashboard, OAuth, webhook,
checkout, health, metrics) stays a plain Starlette route, outside the document.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from mcp.server.auth.provider import ProviderTokenVerifier
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lava_mcp import __version__
from lava_mcp.core.stats import MEDIA_TYPE, require_metrics_access, snapshot
from lava_mcp.errors import LavaError, Unauthorized
from lava_mcp.observability import metrics as instruments
from lava_mcp.runtime import Runtime, running
from lava_mcp.store.db import database_errors, unavailable
from lava_mcp.transports import api, oauth, oauth_rest, rest
from lava_mcp.transports.client_metadata import ClientMetadataFetcher
from lava_mcp.transports.http import bearer_token, error_response
from lava_mcp.transports.limits import RequestLimits
from lava_mcp.transports.mcp_server import build_server


def extra_routes() -> list[BaseRoute]:
    """Route modules of the other surfaces register here."""
    from lava_mcp.transports import (
        checkout,
        dashboard,
        funding_rest,
        gateway,
        orgs_rest,
        spend_keys_rest,
        webhooks,
    )

    return [
        *dashboard.routes,
        *gateway.routes,
        *spend_keys_rest.routes,
        *funding_rest.routes,
        *orgs_rest.routes,
        *webhooks.routes,
        *checkout.routes,
    ]


logger = logging.getLogger("lava_mcp.http")


async def healthz(request: Request) -> Response:
    from lava_mcp.transports.stdio_host import database_identity, serving_proof

    # The database's identity, the money mode and (for `?challenge=`) the proof that this
    # process wrote the serving record let `lava-mcp stdio` on the same ledger link here.
    settings = request.app.state.runtime.settings
    body = {
        "status": "ok",
        "version": __version__,
        "database_id": database_identity(settings.database_url),
        "payments": settings.payments_mode,
        "money_mode": settings.money_mode,
    }
    proof = serving_proof(settings.database_url, request.query_params.get("challenge", ""))
    if proof is not None:
        body["proof"] = proof
    return JSONResponse(body)


async def metrics(request: Request) -> Response:
    """Prometheus figures, for the metrics token's holder or (with none set) loopback clients."""
    runtime: Runtime = request.app.state.runtime
    try:
        require_metrics_access(
            metrics_token=runtime.settings.metrics_token,
            bearer=bearer_token(request),
            client_host=request.client.host if request.client else None,
        )
    except LavaError as error:
        response = error_response(error)
        if isinstance(error, Unauthorized):
            response.headers["www-authenticate"] = 'Bearer realm="metrics"'
        return response
    return Response(await anyio.to_thread.run_sync(snapshot, runtime.db), media_type=MEDIA_TYPE)


async def http_error(request: Request, error: Exception) -> Response:
    """Starlette's own 404 and 405 in the flat error JSON every REST answer uses."""
    assert isinstance(error, HTTPException)
    headers = dict(error.headers or {})
    if error.status_code == 405:
        # `Allow` names every method the path takes (RFC 9110); Starlette names only those of
        # the first route that matched, and each REST method is a route of its own.
        path = request.scope.get("path", "")
        methods = {
            method
            for route in request.app.routes
            if isinstance(route, Route) and route.methods and route.path_regex.fullmatch(path)
            for method in route.methods
        }
        if methods:
            headers["allow"] = ", ".join(sorted(methods))
    return JSONResponse(
        {"error": error.detail, "code": error.status_code}, status_code=error.status_code, headers=headers
    )


async def internal_error(request: Request, error: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return JSONResponse({"error": "internal error", "code": 500}, status_code=500)


async def database_error(request: Request, error: Exception) -> Response:
    """A database error no route handled: one that can't reach the database right now is a
    503 with a retry hint (`store.db.unavailable`); any other a 500, logged.

    Registered by exception class, so Starlette answers it where route errors are handled
    and the connection stays open (what reaches the catch-all `Exception` handler is
    raised on to the server after the answer, and uvicorn then closes the connection, which
    a client's next request on it would find dropped)."""
    if (busy := unavailable(error)) is not None:
        logger.warning("%s %s: %s (%s)", request.method, request.url.path, busy.message, error)
        return error_response(busy)
    return await internal_error(request, error)


async def answering_outages(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run `app`; a database outage that escapes it is answered 503 (if nothing was sent
    yet) or, once the app's last-resort handler has answered it, not raised on to the server
    (which would close the connection under the client's next request)."""
    started = finished = False

    async def tracked(message: Message) -> None:
        nonlocal started, finished
        if message["type"] == "http.response.start":
            started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            finished = True
        await send(message)

    try:
        await app(scope, receive, tracked)
    except database_errors() as error:
        busy = unavailable(error)
        if busy is None or scope["type"] != "http" or (started and not finished):
            raise
        if not started:
            logger.warning("%s %s: %s (%s)", scope.get("method"), scope.get("path"), busy.message, error)
            await error_response(busy)(scope, receive, send)


class LocatedRoute(Route):
    """A plain Starlette route that records itself as `scope["route"]` when it matches, as
    Starlette's router does for every route; FastAPI's router does so only for its own
    routes, and the metrics label each request by its route's template."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def build_app(
    runtime: Runtime,
    *,
    migrate: bool = True,
    client_metadata_fetcher: ClientMetadataFetcher | None = None,
) -> ASGIApp:
    """The whole HTTP server. `client_metadata_fetcher` reads OAuth Client ID Metadata
    Documents (default: public https addresses with the system's CAs)."""
    settings = runtime.settings
    base_url = settings.base_url
    allowed_hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    allowed_origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if settings.public_url:
        public_host = settings.public_url.split("://", 1)[-1].rstrip("/")
        allowed_hosts.append(public_host)
        allowed_origins.append(settings.public_url.rstrip("/"))
    provider = oauth.WalletOAuthProvider(runtime, fetcher=client_metadata_fetcher)
    oauth_routes: list[BaseRoute] = []
    if oauth.serves_authorization(base_url):
        mcp = build_server(runtime, auth_server_provider=provider, auth=oauth.auth_settings(base_url))
        oauth_routes = oauth.routes(runtime, provider)
    else:
        logger.warning(
            "LAVA_PUBLIC_URL %s is not https: OAuth sign-in is off, /mcp and /sse take the wallet key only",
            base_url,
        )
        mcp = build_server(
            runtime, token_verifier=ProviderTokenVerifier(provider), auth=oauth.auth_settings(base_url)
        )
    security = TransportSecuritySettings(allowed_hosts=allowed_hosts, allowed_origins=allowed_origins)
    streamable = mcp.streamable_http_app(streamable_http_path="/mcp", transport_security=security)
    sse = mcp.sse_app(sse_path="/sse", message_path="/messages/", transport_security=security)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running(runtime, migrate=migrate), mcp.session_manager.run():
            yield

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *rest.routes,
        *oauth_rest.routes,
        *oauth_routes,
        *extra_routes(),
    ]
    for route in routes:
        if type(route) is Route:
            route.__class__ = LocatedRoute  # the same route, its behaviour kept (see above)
    main = FastAPI(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: http_error,
            **dict.fromkeys(database_errors(), database_error),
            RequestValidationError: api.validation_failed,
            Exception: internal_error,
        },
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        # FastAPI's OpenTelemetry bridge asks the global providers on every request (~85 µs
        # measured here, on the gateway's path too); metrics are `/metrics`' job.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    api.install_openapi(main, base_url=base_url)
    main.state.runtime = runtime
    # The MCP SDK's apps check the bearer token (a database read) in a middleware, outside
    # where route errors are handled: their last-resort handler answers an outage too.
    for mounted in (streamable, sse):
        mounted.exception_handlers[Exception] = database_error

    # -- the gateway's fast path (issue 11) ------------------------------------------------
    # The three gateway routes go straight to their handlers, past Starlette's middleware
    # and route matching (they render every error themselves); `scope["app"]` is set as
    # Starlette sets it, for `request.app.state`. A wrong method falls through (405).
    from lava_mcp.transports.gateway import asgi_routes as gateway_routes

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            fast = gateway_routes.get((scope.get("method", ""), path))
            if fast is not None:
                scope["app"] = main
                await fast(scope, receive, send)
                return
            if path == "/mcp" or path.startswith("/mcp/"):
                await answering_outages(streamable, scope, receive, send)
                return
            if path == "/sse" or path.startswith("/messages/"):
                await answering_outages(sse, scope, receive, send)
                return
        await answering_outages(main, scope, receive, send)

    # requests and errors by route and status, the refusals of the request limits included
    served = instruments.instrumented(RequestLimits(dispatch, settings))
    served.main = main  # type: ignore[attr-defined]  # for tools and tests that walk its routes
    return served
