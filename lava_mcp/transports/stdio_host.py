"""What `lava-mcp stdio` runs: the MCP server on stdin/stdout, and the pages its answers
link to.

A chat's answers link to pages — the sandbox Checkout and 3-D Secure pages, the page
Stripe Checkout returns to, the dashboard — and with only Claude Desktop's process running
those links must still open. So the stdio server chooses, once at start, one of three ways:

1. `LAVA_SERVER_URL` names a lava-mcp server (a team's): the stdio server is a thin client
   of it (`thin_client`); no local database, and links, webhooks and balances are its.
2. A `lava-mcp serve` already runs on the same SQLite ledger — its serving record beside
   the database file names its URL, and its `/healthz` reports the same database identity:
   the answers link to it.
3. Otherwise the whole HTTP app (pages, dashboard, REST) is served here, on 127.0.0.1 at
   `LAVA_PORT` when it is set and free, else at a port the system picks (so that a `lava-mcp
   serve` can still take its default port), in the same event loop as the stdio server, for
   as long as it runs; the answers link to it.

Identity: `LAVA_WALLET_KEY`'s wallet. Without a key on a SQLite ledger (a one-person
install), the local default wallet: the one whose key was saved beside the database, else
the oldest wallet, else a new one whose key is saved there (readable by this user only).
The first answer of the session tells the user, once, where that key is and where the
dashboard that signs in with it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
from sqlalchemy.engine import make_url
from sqlmodel import col, select

from lava_mcp.config import Settings
from lava_mcp.core import wallet
from lava_mcp.errors import LavaError, Unauthorized
from lava_mcp.runtime import Runtime, running
from lava_mcp.store.db import Database
from lava_mcp.store.models import Wallet

logger = logging.getLogger("lava_mcp.stdio")

# How long a serving record's /healthz may take to answer before it counts as gone.
HEALTH_TIMEOUT_S = 2.0


# --- which database, and who serves it --------------------------------------------------


def database_identity(database_url: str) -> str:
    """A short name for the ledger a URL opens, the same from every process that opens it:
    a SQLite file by its resolved path, any other database by its URL without password."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        subject = "sqlite:" + str(Path(str(url.database)).resolve())
    else:
        subject = url.render_as_string(hide_password=True)
    return hashlib.sha256(subject.encode()).hexdigest()[:16]


def sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite ledger (None for any other database)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(str(url.database)).resolve()


def serving_record_path(database_url: str) -> Path | None:
    """Where `lava-mcp serve` notes its URL, beside a SQLite ledger (None otherwise)."""
    path = sqlite_file(database_url)
    return path.with_name(path.name + ".serving.json") if path else None


@contextlib.contextmanager
def serving_record(settings: Settings) -> Iterator[None]:
    """While `lava-mcp serve` runs: a record beside its SQLite ledger naming its URL, so a
    `lava-mcp stdio` on the same ledger links to it. Removed on exit; a stale one (a crash)
    is harmless, since a reader checks `/healthz` before trusting it."""
    path = serving_record_path(settings.database_url)
    if path is None:
        yield
        return
    url = settings.base_url.replace("://0.0.0.0:", "://127.0.0.1:")  # a browser can't open 0.0.0.0
    body = {"url": url, "database_id": database_identity(settings.database_url), "pid": os.getpid()}
    path.write_text(json.dumps(body))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


def running_server_url(settings: Settings) -> str | None:
    """The URL of a `lava-mcp serve` on this ledger that answers now, if any."""
    path = serving_record_path(settings.database_url)
    if path is None or not path.exists():
        return None
    try:
        url = str(json.loads(path.read_text())["url"]).rstrip("/")
        answer = httpx.get(f"{url}/healthz", timeout=HEALTH_TIMEOUT_S)
        same = answer.status_code == 200 and answer.json().get("database_id") == database_identity(
            settings.database_url
        )
    except (OSError, ValueError, KeyError, TypeError, httpx.HTTPError):
        return None
    return url if same else None


def bind_loopback(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1: at `port` when it is free, else wherever the system
    puts it (a `lava-mcp serve` or another program may hold the usual port)."""
    for candidate in (port, 0) if port else (0,):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if os.name != "nt":  # on Windows this flag would let two servers share the port
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", candidate))
        except OSError:
            listener.close()
            continue
        listener.listen(128)
        listener.setblocking(False)
        return listener
    raise OSError("no loopback port to listen on")  # binding port 0 does not fail in practice


# --- whose wallet -------------------------------------------------------------------------


def wallet_key_file(database_url: str) -> Path | None:
    """Where the key of a wallet made for a keyless stdio server is kept (SQLite only)."""
    path = sqlite_file(database_url)
    return path.with_name(path.name + ".wallet-key") if path else None


@dataclass(frozen=True)
class Identity:
    wallet_id: str
    notice: str | None = None


def choose_wallet(db: Database, settings: Settings, dashboard_url: str) -> Identity:
    """The wallet this stdio server acts for (see the module docstring).

    Raises: Unauthorized for an unknown key, or no key on a database other than SQLite.
    """
    if settings.wallet_key:
        return Identity(wallet.authenticate(db, settings.wallet_key).id)
    key_file = wallet_key_file(settings.database_url)
    if key_file is None:
        raise Unauthorized(
            "a wallet key (lava_wk_…) is required for a shared database",
            next_step="set LAVA_WALLET_KEY, or run `lava-mcp wallet create`",
        )
    if key_file.exists():
        with contextlib.suppress(LavaError, OSError):
            owner = wallet.authenticate(db, key_file.read_text().strip())
            return Identity(owner.id, _key_notice(owner.id, f"is saved in {key_file}", dashboard_url))
    with db.read() as session:
        oldest = session.exec(select(Wallet).order_by(col(Wallet.created_at), col(Wallet.id))).first()
    if oldest is not None:
        told = "was printed once when it was created (by `lava-mcp serve` or `lava-mcp wallet create`)"
        return Identity(oldest.id, _key_notice(oldest.id, told, dashboard_url))
    created = wallet.create_wallet(db, name="default", mode=settings.money_mode)
    _write_private(key_file, created.wallet_key + "\n")
    return Identity(
        created.wallet_id,
        _key_notice(created.wallet_id, f"is saved in {key_file}", dashboard_url, created=True),
    )


def _key_notice(wallet_id: str, where: str, dashboard_url: str, *, created: bool = False) -> str:
    made = "was made for you on this computer" if created else "is the one on this computer"
    return (
        f"No wallet key was set, so this chat uses the local Lava wallet {wallet_id}, which {made}. "
        f"Its wallet key {where}: it signs in to the dashboard at {dashboard_url} (balance, cards, "
        "spend keys) and can be set as the extension's wallet key. Keep it private."
    )


def _write_private(path: Path, text: str) -> None:
    """Create a file only this user can read (it holds a secret)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


# --- running --------------------------------------------------------------------------------


@dataclass
class Plan:
    """What `run` will do, decided before the event loop starts (errors surface as CLI errors)."""

    settings: Settings
    runtime: Runtime | None = None
    identity: Identity | None = None
    listener: socket.socket | None = None  # set when this process serves the pages itself


def prepare(settings: Settings) -> Plan:
    """Choose the way to run (module docstring), open the ledger and choose the wallet.

    Raises: Unauthorized (see `choose_wallet`); OSError when no loopback port can be had.
    """
    if settings.server_url:
        from lava_mcp.transports.thin_client import require_wallet_key

        require_wallet_key(settings)
        return Plan(settings)
    linked = running_server_url(settings)
    listener: socket.socket | None = None
    if linked is not None:
        settings.public_url = linked
    else:
        # LAVA_PORT only when set: the default port is `lava-mcp serve`'s, which must still
        # start while Claude Desktop runs this process.
        listener = bind_loopback(settings.port if "port" in settings.model_fields_set else 0)
        settings.host, settings.port = "127.0.0.1", listener.getsockname()[1]
    runtime = Runtime.build(settings)
    try:
        runtime.db.upgrade()
        identity = choose_wallet(runtime.db, settings, f"{settings.base_url}/")
    except BaseException:
        runtime.db.dispose()
        if listener is not None:
            listener.close()
        raise
    return Plan(settings, runtime, identity, listener)


async def run(plan: Plan) -> None:
    """Serve MCP on stdin/stdout until the client closes it (and the pages, when hosting)."""
    from lava_mcp.transports.mcp_server import build_server

    if plan.runtime is None or plan.identity is None:
        from lava_mcp.transports.thin_client import run_thin_client

        await run_thin_client(plan.settings)
        return
    runtime, identity = plan.runtime, plan.identity
    server = build_server(runtime, default_wallet_id=identity.wallet_id, notice=identity.notice)
    if plan.listener is None:
        async with running(runtime, migrate=False):
            await server.run_stdio_async()
        return
    import uvicorn

    from lava_mcp.transports.app import build_app

    # No log config of uvicorn's own: its access log goes to stdout, which is the MCP stream.
    pages = uvicorn.Server(
        uvicorn.Config(build_app(runtime, migrate=False), log_config=None, access_log=False, lifespan="on")
    )
    async with anyio.create_task_group() as tasks:
        # The app's lifespan starts the runtime's background work and closes it at the end.
        tasks.start_soon(pages.serve, [plan.listener])
        try:
            await server.run_stdio_async()
        finally:
            pages.should_exit = True
