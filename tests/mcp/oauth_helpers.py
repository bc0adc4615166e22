"""Helpers for the OAuth tests: the app on loopback at the URL its settings name, a person
at the sign-in page (a real HTTP client that reads the form and posts it, as a browser
would), the SDK's own OAuth client, and an https server for Client ID Metadata Documents."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import re
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import uvicorn
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lava_mcp.config import Settings
from lava_mcp.runtime import Runtime
from lava_mcp.transports.app import build_app
from lava_mcp.transports.client_metadata import ClientMetadataFetcher
from tests.fake_provider import free_port, serve_in_thread

CLAUDE_CALLBACK = "https://claude.ai/api/mcp/auth_callback"


@dataclass
class Served:
    url: str
    runtime: Runtime


@contextmanager
def serve_app(
    settings: Settings,
    *,
    fetcher: ClientMetadataFetcher | None = None,
    public: bool = False,
    **overrides: Any,
) -> Iterator[Served]:
    """The whole app on loopback at the port its settings (hence its issuer URL) name;
    `public`: as a server with LAVA_PUBLIC_URL (here, its loopback URL)."""
    port = free_port()
    if public:
        overrides["public_url"] = f"http://127.0.0.1:{port}"
    configured = settings.model_copy(update={"port": port, **overrides})
    runtime = Runtime.build(configured)
    with serve_in_thread(build_app(runtime, client_metadata_fetcher=fetcher), port=port) as url:
        yield Served(url, runtime)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def hidden_fields(page: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))


@dataclass
class Person:
    """Someone at the sign-in page, in a browser that keeps cookies and sends its Origin."""

    base_url: str
    wallet_key: str | None = None
    # Scopes to leave ticked (None: as the page offers them).
    scopes: list[str] | None = None
    action: str = "approve"
    answered: list[AuthorizationCodeResult] = field(default_factory=list)
    # The browser's cookie jar (each request opens and closes its own connection).
    cookies: httpx.Cookies = field(default_factory=httpx.Cookies)

    async def _request(self, method: str, url: str, **options: Any) -> httpx.Response:
        async with httpx.AsyncClient(cookies=self.cookies, timeout=30) as browser:
            response = await browser.request(method, url, **options)
            self.cookies.update(browser.cookies)
            return response

    async def open(self, authorization_url: str) -> httpx.Response:
        """Follow the client's authorization URL to the sign-in page."""
        return await self._request("GET", authorization_url, follow_redirects=True)

    async def submit(self, page: httpx.Response, **form: Any) -> httpx.Response:
        fields: dict[str, Any] = {**hidden_fields(page.text), **form}
        return await self._request(
            "POST",
            f"{self.base_url}/oauth/consent",
            content=urlencode(fields, doseq=True),
            headers={"content-type": "application/x-www-form-urlencoded", "origin": self.base_url},
        )

    async def consent(self, authorization_url: str) -> httpx.Response:
        """Sign in with the key and answer; returns the redirect to the client."""
        page = await self.open(authorization_url)
        assert page.status_code == 200, page.text
        form: dict[str, Any] = {"action": self.action}
        if self.wallet_key is not None:
            form["wallet_key"] = self.wallet_key
        offered = re.findall(r'name="scope" value="([^"]+)"', page.text)
        form["scope"] = offered if self.scopes is None else self.scopes
        return await self.submit(page, **form)

    async def redirect_handler(self, authorization_url: str) -> None:
        answer = await self.consent(authorization_url)
        assert answer.status_code == 303, answer.text
        self.answered.append(redirected(answer))

    async def callback_handler(self) -> AuthorizationCodeResult:
        return self.answered[-1]


def redirected(answer: httpx.Response) -> AuthorizationCodeResult:
    query = {key: values[0] for key, values in parse_qs(urlparse(answer.headers["location"]).query).items()}
    return AuthorizationCodeResult(code=query.get("code", ""), state=query.get("state"), iss=query.get("iss"))


class MemoryStorage:
    """The SDK client's token storage, kept in memory (and read by the tests)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def sdk_oauth(
    server_url: str,
    person: Person,
    storage: MemoryStorage,
    *,
    redirect_uri: str = CLAUDE_CALLBACK,
    client_metadata_url: str | None = None,
) -> OAuthClientProvider:
    """The MCP SDK's own OAuth client, as Claude's connector would use the flow."""
    metadata = OAuthClientMetadata.model_validate(
        {
            "client_name": "Claude (test)",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
        }
    )
    return OAuthClientProvider(
        server_url,
        metadata,
        storage,
        redirect_handler=person.redirect_handler,
        callback_handler=person.callback_handler,
        client_metadata_url=client_metadata_url,
    )


# --- an https server on loopback for Client ID Metadata Documents ----------------------


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key (the certificate is its own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return certificate_path, key_path


@dataclass
class DocumentServer:
    """Serves JSON documents at paths over https on loopback; counts the requests."""

    documents: dict[str, Any] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def app(self) -> Starlette:
        async def document(request: Request) -> Response:
            path = request.url.path
            self.requests.append(path)
            if path not in self.documents:
                return JSONResponse({"error": "not found"}, status_code=404)
            return JSONResponse(self.documents[path])

        return Starlette(routes=[Route("/{path:path}", document)])


@contextmanager
def serve_https(app: Any, certificate: Path, key: Path) -> Iterator[str]:
    """An ASGI app over TLS on loopback, at https://localhost:PORT."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=str(certificate),
            ssl_keyfile=str(key),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("https server did not start")
        time.sleep(0.01)
    try:
        yield f"https://localhost:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def trusting(certificate: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate))
