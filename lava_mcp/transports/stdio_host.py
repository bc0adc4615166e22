"""What `lava-mcp stdio` runs: the MCP server on stdin/stdout, and the pages its answers
link to.

A chat's answers link to pages — the sandbox Checkout and 3-D Secure pages, the page
Stripe Checkout returns to, the dashboard — and with only Claude Desktop's process running
those links must still open. So the stdio server chooses, once at start, one of three ways:

1. `LAVA_SERVER_URL` names a lava-mcp server (a team's): the stdio server is a thin client
   of it (`thin_client`); no local database, and links, webhooks and balances are its.
2. A `lava-mcp serve` already runs on the same SQLite ledger with the same payments mode:
   its serving record beside the database file (readable by this user only) names its URL
   and a secret, and its `/healthz?challenge=…` proves it knows that secret (an HMAC of the
   challenge) and reports the same database identity and money mode — so another local
   user who binds the recorded port can't pose as it. The answers link to it.
3. Otherwise the whole HTTP app (pages, dashboard, REST) is served here, on 127.0.0.1, in
   the same event loop as the stdio server, for as long as it runs; the answers link to it.
   The port is the one this ledger's stdio server used last (remembered beside the
   database, so links in earlier answers keep working after Claude Desktop restarts it),
   else `LAVA_PORT` when it is set and free, else one the system picks — never serve's
   default port unless `LAVA_PORT` names it, so that `lava-mcp serve` can still start.

Identity: `LAVA_WALLET_KEY`'s wallet. Without a key on a SQLite ledger (a one-person
install), the local default wallet, and never a guess: the one whose key is saved beside
the database; else, on a ledger with no wallet yet, a new one whose key is saved there
(readable by this user only) before the wallet is committed, so no wallet exists whose key
nobody has; on a ledger that has wallets but none whose key is saved, the server refuses
and asks for `LAVA_WALLET_KEY`. A saved key that no longer opens a wallet (the ledger was
reset) is moved aside, and the user told. Choosing and creating happen under a lock file
beside the database, so two first starts make one wallet. The first answer of the session
tells the user, once, where that key is and where the dashboard that signs in with it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import platformdirs
from sqlalchemy.engine import make_url

from lava_mcp.config import Settings
from lava_mcp.core import wallet
from lava_mcp.errors import Unauthorized
from lava_mcp.runtime import Runtime, running
from lava_mcp.store.db import Database

logger = logging.getLogger("lava_mcp.stdio")

# How long a serving record's /healthz may take to answer before it counts as gone.
HEALTH_TIMEOUT_S = 2.0
# `lava-mcp serve`'s port: a stdio server takes it only when LAVA_PORT says so.
SERVE_DEFAULT_PORT = int(Settings.model_fields["port"].default)
# A /healthz challenge longer than this is not answered (it is a nonce, not a payload).
CHALLENGE_MAX_CHARS = 128
# How often a Windows process waiting for the setup lock tries it again.
LOCK_RETRY_S = 0.1


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


def _beside_database(database_url: str, suffix: str) -> Path | None:
    path = sqlite_file(database_url)
    return path.with_name(path.name + suffix) if path else None


def serving_record_path(database_url: str) -> Path | None:
    """Where `lava-mcp serve` notes its URL, beside a SQLite ledger (None otherwise)."""
    return _beside_database(database_url, ".serving.json")


def _proof(secret: str, challenge: str) -> str:
    return hmac.new(secret.encode(), challenge.encode(), hashlib.sha256).hexdigest()


@contextlib.contextmanager
def serving_record(settings: Settings) -> Iterator[None]:
    """While `lava-mcp serve` runs: a record beside its SQLite ledger naming its URL and a
    fresh secret (readable by this user only), so a `lava-mcp stdio` on the same ledger links
    here once `/healthz` proves the secret. Removed on exit; a stale one (a crash) is
    harmless, since nothing else can answer its challenge."""
    path = serving_record_path(settings.database_url)
    if path is None:
        yield
        return
    url = settings.base_url.replace("://0.0.0.0:", "://127.0.0.1:")  # a browser can't open 0.0.0.0
    body = {
        "url": url,
        "database_id": database_identity(settings.database_url),
        "pid": os.getpid(),
        "secret": secrets.token_hex(32),
    }
    _replace_private(path, json.dumps(body))
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


def serving_proof(database_url: str, challenge: str) -> str | None:
    """What `/healthz?challenge=…` answers: the HMAC of the challenge under the secret of
    the serving record this process wrote (None when it wrote none, or the challenge is
    too long)."""
    path = serving_record_path(database_url)
    if path is None or not challenge or len(challenge) > CHALLENGE_MAX_CHARS:
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("pid") != os.getpid():
            return None
        return _proof(str(record["secret"]), challenge)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_server_url(settings: Settings) -> str | None:
    """The URL of a `lava-mcp serve` on this ledger, in this payments mode, that proves now
    that it wrote the serving record (module docstring), if any."""
    path = serving_record_path(settings.database_url)
    if path is None or not path.exists():
        return None
    try:
        if sys.platform != "win32" and path.stat().st_uid != os.getuid():
            return None  # a record another user wrote names nothing of ours
        record = json.loads(path.read_text())
        url, secret = str(record["url"]).rstrip("/"), str(record["secret"])
        challenge = secrets.token_hex(16)
        answer = httpx.get(f"{url}/healthz", params={"challenge": challenge}, timeout=HEALTH_TIMEOUT_S)
        health = answer.json()
        proven = answer.status_code == 200 and hmac.compare_digest(
            str(health.get("proof", "")), _proof(secret, challenge)
        )
        same_ledger = health.get("database_id") == database_identity(settings.database_url)
        same_money = (health.get("payments"), health.get("money_mode")) == (
            settings.payments_mode,
            settings.money_mode,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, httpx.HTTPError):
        return None
    if proven and same_ledger and not same_money:
        logger.warning(
            "lava-mcp serve at %s runs this ledger with %s payments; this chat's are %s: serving its own pages",
            url,
            health.get("payments"),
            settings.payments_mode,
        )
    return url if proven and same_ledger and same_money else None


def port_memory_path(database_url: str) -> Path:
    """Where the stdio server notes the port it served on: beside a SQLite ledger, else in
    the user's data folder under the ledger's identity."""
    beside = _beside_database(database_url, ".stdio-port.json")
    if beside is not None:
        return beside
    folder = Path(platformdirs.user_data_dir("lava-mcp", appauthor=False))
    return folder / f"stdio-port-{database_identity(database_url)}.json"


def candidate_ports(settings: Settings) -> list[int]:
    """The ports to try, in order (module docstring); 0 means "any free port"."""
    requested = settings.port if "port" in settings.model_fields_set else None
    remembered: int | None = None
    remembered_under: int | None = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        memory = json.loads(port_memory_path(settings.database_url).read_text())
        remembered, remembered_under = int(memory["port"]), memory.get("lava_port")
    order: list[int] = []
    if requested is not None and requested != remembered_under:
        order.append(requested)  # LAVA_PORT changed since: the user's new choice first
    if remembered:
        order.append(remembered)
    if requested is not None:
        order.append(requested)
    order.append(0)
    ports: list[int] = []
    for port in order:
        if port in ports or (port == SERVE_DEFAULT_PORT and requested != SERVE_DEFAULT_PORT):
            continue
        ports.append(port)
    return ports


def remember_port(settings: Settings, port: int) -> None:
    """Note the port served on, for the next start (a failure to note it is only logged)."""
    requested = settings.port if "port" in settings.model_fields_set else None
    path = port_memory_path(settings.database_url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _replace_private(path, json.dumps({"port": port, "lava_port": requested}))
    except OSError as error:
        logger.warning("could not note the stdio port in %s: %s", path, error)


def bind_loopback(ports: list[int]) -> socket.socket:
    """A listening socket on 127.0.0.1 at the first of `ports` that is free (0: wherever the
    system puts it)."""
    for candidate in ports or [0]:
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
    raise OSError("no loopback port to listen on")


# --- whose wallet -------------------------------------------------------------------------


def wallet_key_file(database_url: str) -> Path | None:
    """Where the key of a wallet made for a keyless stdio server is kept (SQLite only)."""
    return _beside_database(database_url, ".wallet-key")


def setup_lock_path(database_url: str) -> Path | None:
    """The lock file keyless stdio servers choose (and create) the wallet under."""
    return _beside_database(database_url, ".stdio-lock")


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) against other processes,
    waiting for it (and saying so on stderr) while another holds it."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if sys.platform == "win32":
            import msvcrt

            told = False
            while True:
                try:
                    msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
                    break
                except OSError:
                    if not told:
                        _say_waiting(path)
                        told = True
                    time.sleep(LOCK_RETRY_S)  # msvcrt has no blocking wait without a 10 s cap
            try:
                yield
            finally:
                os.lseek(descriptor, 0, os.SEEK_SET)
                msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _say_waiting(path)
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _say_waiting(path: Path) -> None:
    logger.warning("another lava-mcp stdio is choosing the wallet (%s is locked): waiting for it", path)


@dataclass(frozen=True)
class Identity:
    wallet_id: str
    notice: str | None = None


def choose_wallet(db: Database, settings: Settings, dashboard_url: str) -> Identity:
    """The wallet this stdio server acts for (see the module docstring).

    Raises: Unauthorized for an unknown key, no key on a database other than SQLite, or no
    key on a ledger whose wallets include none whose key is saved beside it.
    """
    if settings.wallet_key:
        return Identity(wallet.authenticate(db, settings.wallet_key).id)
    key_file = wallet_key_file(settings.database_url)
    lock = setup_lock_path(settings.database_url)
    if key_file is None or lock is None:
        raise Unauthorized(
            "a wallet key (lava_wk_…) is required for a shared database",
            next_step="set LAVA_WALLET_KEY, or run `lava-mcp wallet create`",
        )
    with exclusive(lock):
        return _choose_local_wallet(db, settings, key_file, dashboard_url)


def _choose_local_wallet(db: Database, settings: Settings, key_file: Path, dashboard_url: str) -> Identity:
    """Under the setup lock: the saved key's wallet, else a new one on an empty ledger."""
    moved = ""
    if key_file.exists():
        saved = key_file.read_text().strip()
        try:
            owner = wallet.authenticate(db, saved)
        except Unauthorized:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            aside = key_file.with_name(f"{key_file.name}.stale-{stamp}")
            os.replace(key_file, aside)
            moved = (
                f"The wallet key saved in {key_file} no longer opens a wallet on this ledger "
                f"(was the database reset?), so it was moved to {aside}. "
            )
            logger.warning("%s", moved.strip())
        else:
            return Identity(owner.id, _key_notice(owner.id, f"is saved in {key_file}", dashboard_url))
    if db.has_wallets():
        raise Unauthorized(
            f"{moved}This ledger has wallets, and no wallet key is set or saved beside it "
            "(a keyless chat never guesses whose wallet it is)",
            next_step="set LAVA_WALLET_KEY to your wallet key (the one `lava-mcp serve` or "
            "`lava-mcp wallet create` printed)",
        )

    def keep_key(created: wallet.NewWallet) -> None:
        _write_private(key_file, created.wallet_key + "\n")

    created = wallet.create_wallet(db, name="default", mode=settings.money_mode, before_commit=keep_key)
    notice = _key_notice(created.wallet_id, f"is saved in {key_file}", dashboard_url, created=True)
    return Identity(created.wallet_id, moved + notice)


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


def _replace_private(path: Path, text: str) -> None:
    """Write a file only this user can read, replacing any old one in one step."""
    staging = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    _write_private(staging, text)
    os.replace(staging, path)


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

    Raises: Unauthorized (see `choose_wallet`); BadRequest for a LAVA_SERVER_URL the wallet key
    must not be sent to; OSError when no loopback port can be had.
    """
    if settings.server_url:
        from lava_mcp.transports.thin_client import require_wallet_key, server_endpoint

        server_endpoint(settings.server_url)
        require_wallet_key(settings)
        return Plan(settings)
    linked = running_server_url(settings)
    listener: socket.socket | None = None
    if linked is not None:
        settings.public_url = linked
    else:
        listener = bind_loopback(candidate_ports(settings))
        port = int(listener.getsockname()[1])
        remember_port(settings, port)
        settings.host, settings.port = "127.0.0.1", port
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
    from lava_mcp.transports.stdio_streams import run_stdio

    if plan.runtime is None or plan.identity is None:
        from lava_mcp.transports.thin_client import run_thin_client

        await run_thin_client(plan.settings)
        return
    runtime, identity = plan.runtime, plan.identity
    server = build_server(runtime, default_wallet_id=identity.wallet_id, notice=identity.notice)
    if plan.listener is None:
        async with running(runtime, migrate=False):
            await run_stdio(server)
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
            await run_stdio(server)
        finally:
            pages.should_exit = True
