"""serve, stdio, wallet, usage, requests, db, ledger."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import anyio
import typer

from lava_mcp.cli import JsonFlag, Typer, app, emit, fail, print_rows, settings, stderr, stdout
from lava_mcp.cli import database as _database
from lava_mcp.core import funding, orgs, usage, verify, wallet
from lava_mcp.errors import LavaError
from lava_mcp.money import format_dollars
from lava_mcp.runtime import Runtime
from lava_mcp.store.db import Database
from lava_mcp.transports import render

wallet_app = Typer(no_args_is_help=True, help="Wallets: create, show, credit.")
db_app = Typer(no_args_is_help=True, help="The ledger database.")
ledger_app = Typer(no_args_is_help=True, help="The ledger's invariants.")
app.add_typer(wallet_app, name="wallet")
app.add_typer(db_app, name="db")
app.add_typer(ledger_app, name="ledger")


def _wallet_id(database: Database, wallet_id: str | None) -> str:
    """The wallet named, or the one LAVA_WALLET_KEY opens."""
    if wallet_id:
        return wallet_id
    return wallet.authenticate(database, settings().wallet_key).id


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default LAVA_HOST (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Default LAVA_PORT (8787).")] = None,
) -> None:
    """One HTTP server: MCP at /mcp and /sse, gateway and REST at /v1/…, dashboard at /."""
    from lava_mcp.providers import prices

    prices.load_table()  # before the rest of the server is loaded (see its docstring)
    import uvicorn

    from lava_mcp.transports.app import build_app
    from lava_mcp.transports.limits import http_protocol
    from lava_mcp.transports.stdio_host import serving_record

    config = settings()
    if host:
        config.host = host
    if port:
        config.port = port
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # (Alembic, imported only when the ledger needs migrating, logs each plugin it loads.)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    runtime = Runtime.build(config)
    runtime.db.upgrade()
    mode = config.payments_mode
    # Servers started together on a new ledger make one wallet between them, not one each.
    with runtime.db.exclusive("first wallet"):
        created = (
            None
            if runtime.db.has_wallets()
            else wallet.create_wallet(runtime.db, name="default", mode=config.money_mode)
        )
    if created is not None:
        # soft_wrap: rich never breaks the key across lines, whatever the terminal's width.
        stderr.print(
            f"Created wallet {created.wallet_id}. Its key is shown once; keep it:\n\n"
            f"    LAVA_WALLET_KEY={created.wallet_key}\n",
            soft_wrap=True,
        )
    if not config.redis_url:
        stderr.print("Spend keys' rate limits are kept in this process (set LAVA_REDIS_URL to share them).")
    if mode == "sandbox":
        stderr.print(
            "[bold yellow]SANDBOX[/]: no STRIPE_SECRET_KEY, payments are simulated with test cards;"
            " sandbox money still spends the provider keys configured here."
        )
    stderr.print(
        f"lava-mcp on {config.base_url}  (MCP {config.base_url}/mcp · REST and gateway {config.base_url}/v1)"
    )
    speedups = server_speedups()
    with serving_record(config):  # a `lava-mcp stdio` on this ledger links here
        uvicorn.run(
            build_app(runtime, migrate=False),
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            loop=speedups["loop"],  # uvloop when installed
            timeout_keep_alive=config.keep_alive_timeout_s,  # an idle connection is closed
            http=http_protocol(config),  # a request head slower than LAVA_HEADER_TIMEOUT_S is 408
        )


def server_speedups() -> dict[str, str]:
    """uvloop and httptools when installed (Linux and macOS; about twice the requests/s
    of asyncio + h11 on the gateway), else the pure-Python loop and parser."""
    import importlib.util

    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
    }


@app.command()
def stdio() -> None:
    """The MCP server over stdio (as Claude Desktop runs it), serving the pages its answers
    link to on loopback; identity from LAVA_WALLET_KEY (without it: this computer's wallet).
    With LAVA_SERVER_URL: a thin client of that lava-mcp server."""
    from lava_mcp.transports import stdio_host

    # stdout is the MCP stream: every log line goes to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        plan = stdio_host.prepare(settings())
    except LavaError as error:
        raise fail(error) from error
    anyio.run(stdio_host.run, plan)


@wallet_app.command("create")
def wallet_create(
    name: Annotated[str, typer.Option(help="A name for the wallet.")] = "",
    sandbox: Annotated[
        bool | None,
        typer.Option("--sandbox/--live", help="Default: sandbox unless Stripe is configured."),
    ] = None,
    org: Annotated[str | None, typer.Option("--org", help="Join this org as a member.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a wallet and print its key (shown once)."""
    database = _database()
    mode = (
        # --live means "Stripe money": Stripe's test mode when the key is a test key.
        ("sandbox" if sandbox else ("test" if settings().money_mode == "test" else "live"))
        if sandbox is not None
        else settings().money_mode
    )
    try:
        if org is not None:
            orgs.get_org(database, org)  # an unknown org fails before a wallet is made
        created = wallet.create_wallet(database, name=name, mode=mode)
        if org is not None:
            orgs.add_member(database, org, created.wallet_id, role="member")
    except LavaError as error:
        raise fail(error, as_json) from error
    body = {"wallet_id": created.wallet_id, "wallet_key": created.wallet_key, "mode": mode}
    if org is not None:
        body["org_id"] = org
    emit(
        as_json,
        body,
        lambda: stdout.print(
            f"wallet_id  {created.wallet_id}\nwallet_key {created.wallet_key}   (shown once: keep it)\nmode       {mode}",
            soft_wrap=True,
        ),
    )


@wallet_app.command("show")
def wallet_show(
    wallet_id: Annotated[str | None, typer.Argument(help="Default: the wallet of LAVA_WALLET_KEY.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The wallet's balance."""
    database = _database()
    try:
        balance = wallet.get_balance(database, _wallet_id(database, wallet_id))
    except LavaError as error:
        raise fail(error, as_json) from error
    body = {
        "wallet_id": balance.wallet_id,
        **render.balance_json(balance),
    }
    emit(
        as_json,
        body,
        lambda: stdout.print(
            f"{balance.wallet_id}: ${body['balance']} available, ${body['held']} held"
            + ("  [yellow](sandbox)[/]" if balance.mode == "sandbox" else "")
        ),
    )


# ignore_unknown_options: a debit's "-5.00" is the amount, not an unknown option.
@wallet_app.command("credit", context_settings={"ignore_unknown_options": True})
def wallet_credit(
    wallet_id: Annotated[str, typer.Argument()],
    amount: Annotated[str, typer.Argument(help="Dollars, e.g. 25.00 (negative to debit).")],
    reason: Annotated[str, typer.Option(help="Why (kept in the ledger).")],
    as_json: JsonFlag = False,
) -> None:
    """An operator's adjustment entry (support credits, tests)."""
    database = _database()
    try:
        balance = wallet.adjust(database, wallet_id, amount, reason=reason)
    except LavaError as error:
        raise fail(error, as_json) from error
    body = {
        "wallet_id": wallet_id,
        **render.balance_json(balance),
    }
    emit(
        as_json,
        body,
        lambda: stdout.print(f"{wallet_id}: balance now ${format_dollars(balance.available_micros)}"),
    )


@app.command("usage")
def usage_command(
    since: Annotated[str | None, typer.Option(help="First day (ISO date).")] = None,
    until: Annotated[str | None, typer.Option(help="Last day (ISO date).")] = None,
    wallet_id: Annotated[str | None, typer.Option("--wallet", help="Default: LAVA_WALLET_KEY's.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Spend per day, every day of the window."""
    database = _database()
    try:
        summary = usage.summary(database, _wallet_id(database, wallet_id), since=since, until=until)
    except LavaError as error:
        raise fail(error, as_json) from error
    body = render.usage_summary_json(summary)

    def table() -> None:
        rows = [
            [
                day["date"],
                str(day["requests"]),
                day["spend"],
                ", ".join(f"{name} {total['spend']}" for name, total in day["by_service"].items()),
            ]
            for day in body["days"]
        ]
        rows.append(["total", str(body["total_requests"]), body["total_spend"], ""])
        print_rows(stdout, ["date", "requests", "spend (USD)", "by service"], rows)

    emit(as_json, body, table)


@app.command("requests")
def requests_command(
    limit: Annotated[int, typer.Option(help="1 to 100.")] = 20,
    before: Annotated[str | None, typer.Option(help="A next_cursor.")] = None,
    wallet_id: Annotated[str | None, typer.Option("--wallet", help="Default: LAVA_WALLET_KEY's.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Recent requests, newest first."""
    database = _database()
    try:
        page = usage.list_requests(database, _wallet_id(database, wallet_id), limit=limit, before=before)
    except LavaError as error:
        raise fail(error, as_json) from error
    body = render.request_page_json(page)

    def table() -> None:
        rows = [
            [
                item["id"],
                item["created_at"],
                item["service"],
                item["model"] or "",
                item["cost"],
                "yes" if item["succeeded"] else "no",
                f"{item['input_tokens']}/{item['output_tokens']}",
                item.get("error") or "",
            ]
            for item in body["requests"]
        ]
        headers = ["id", "created", "service", "model", "cost", "ok", "tokens in/out", "error"]
        print_rows(stdout, headers, rows)
        if body["next_cursor"]:
            stdout.print(f"more: --before {body['next_cursor']}")

    emit(as_json, body, table)


@db_app.command("upgrade")
def db_upgrade(as_json: JsonFlag = False) -> None:
    """Apply the database migrations."""
    config = settings()
    Database(config.database_url).upgrade()
    emit(
        as_json,
        {"status": "ok", "database_url": _redacted(config.database_url)},
        lambda: stdout.print(f"database is up to date: {_redacted(config.database_url)}"),
    )


@db_app.command("relabel-mode")
def db_relabel_mode(
    from_mode: Annotated[str, typer.Option("--from", help="The Stripe mode wallets are labelled now.")],
    to_mode: Annotated[str, typer.Option("--to", help="The Stripe mode of the key that made them.")],
    yes: Annotated[bool, typer.Option("--yes", help="Relabel without asking.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Relabel wallets and payments of one Stripe mode as the other (test <-> live), in one
    transaction: for wallets made before the payments mode came from the key, which were
    all labelled live. Only the operator knows which key made them; asks first."""
    try:
        funding.check_relabel(from_mode, to_mode)
    except LavaError as error:
        raise fail(error, as_json) from error
    database = _database()
    found = funding.other_stripe_mode(database, to_mode)
    wallets, payments = (found[1], found[2]) if found is not None else (0, 0)
    if not yes and not typer.confirm(
        f"Relabel {wallets} wallet(s) and {payments} payment(s) from Stripe {from_mode} to {to_mode}?"
        f" Do it only if they were made with a {to_mode}-mode key."
    ):
        raise fail("nothing relabelled", as_json)
    wallets, payments = funding.relabel_mode(database, from_mode=from_mode, to_mode=to_mode)
    emit(
        as_json,
        {"status": "ok", "from": from_mode, "to": to_mode, "wallets": wallets, "payments": payments},
        lambda: stdout.print(
            f"relabelled {wallets} wallet(s) and {payments} payment(s) from {from_mode} to {to_mode}"
        ),
    )


@ledger_app.command("verify")
def ledger_verify(as_json: JsonFlag = False) -> None:
    """Check the ledger's invariants; exit 1 with a report if any fails."""
    database = _database()
    config = settings()
    database_expired = verify.verify(
        database, reconcile_interval_s=config.reconcile_interval_s, stripe_timeout_s=config.stripe_timeout_s
    )
    owed = verify.shortfalls(database)
    body: dict[str, object] = {"ok": not database_expired, "problems": database_expired}
    if owed:
        body["shortfalls"] = owed  # debts, not broken invariants: they don't fail the check
    emit(
        as_json,
        body,
        lambda: stdout.print(
            ("ledger ok" if not database_expired else "ledger problems:\n  " + "\n  ".join(database_expired))
            + ("".join(f"\n  {line}" for line in owed) if owed else "")
        ),
    )
    if database_expired:
        raise typer.Exit(1)


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
