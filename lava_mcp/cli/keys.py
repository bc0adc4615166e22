"""`lava-mcp keys create/list/show/update/rotate/revoke`: spend keys, the REST API's fields.

The wallet is LAVA_WALLET_KEY's, or the one `--wallet WALLET_ID` names (an operator on
the machine that holds the database).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from lava_mcp.cli import JsonFlag, Typer, app, emit, fail, print_fields, print_rows, settings, stderr, stdout
from lava_mcp.cli import database as _database
from lava_mcp.cli.commands import _wallet_id
from lava_mcp.core import spend_keys
from lava_mcp.errors import LavaError
from lava_mcp.providers.catalog import Catalog, load_catalog
from lava_mcp.runtime import catalog_environment
from lava_mcp.store.db import Database
from lava_mcp.transports import render
from lava_mcp.transports.spend_keys_rest import spend_key_json

keys_app = Typer(no_args_is_help=True, help="Spend keys: create, list, show, update, rotate, revoke.")
app.add_typer(keys_app, name="keys")

WalletOption = Annotated[str | None, typer.Option("--wallet", help="Wallet id. Default: LAVA_WALLET_KEY's.")]
KeyId = Annotated[str, typer.Argument(help="The spend key id (sk_id_…).")]
Name = Annotated[str | None, typer.Option(help="A name for the key.")]
Providers = Annotated[
    list[str] | None, typer.Option("--provider", help="Allowed provider (repeat). Default: all.")
]
Models = Annotated[list[str] | None, typer.Option("--model", help="Allowed model (repeat). Default: all.")]
Shape = Annotated[str | None, typer.Option("--shape", help="Request shape: openai or anthropic.")]
SpendAmount = Annotated[str | None, typer.Option("--spend-limit", help='Dollars per cycle, e.g. "50.00".')]
SpendCycle = Annotated[
    str | None,
    typer.Option(
        "--spend-cycle", help="daily, weekly, monthly or total (create: default total; update: kept)."
    ),
]
RequestCount = Annotated[int | None, typer.Option("--request-limit", help="Requests per cycle.")]
RequestCycle = Annotated[
    str | None,
    typer.Option(
        "--request-cycle", help="daily, weekly, monthly or total (create: default total; update: kept)."
    ),
]
Rpm = Annotated[int | None, typer.Option("--rpm", help="Requests per minute.")]
Burst = Annotated[int | None, typer.Option("--burst", help="Burst above the rpm pace (default: rpm).")]
Expires = Annotated[str | None, typer.Option("--expires-at", help="ISO 8601 date-time (UTC if no offset).")]


def _catalog() -> Catalog:
    config = settings()
    return load_catalog(config.catalog_path, environment=catalog_environment(config))


def _options(
    *,
    name: str | None,
    providers: list[str] | None,
    models: list[str] | None,
    shape: str | None,
    spend_amount: str | None,
    spend_cycle: str | None,
    request_count: int | None,
    request_cycle: str | None,
    rpm: int | None,
    burst: int | None,
    expires_at: str | None,
    status: str | None,
) -> dict[str, Any]:
    """The REST body the flags given mean (flags left out are left out), which the core
    validates with the contract's `SpendKeyCreate` / `SpendKeyUpdate`, as for REST: its
    refusals are `BadRequest`s the commands render, and an update changes only these."""
    options: dict[str, Any] = {}
    if name is not None:
        options["name"] = name
    if providers:
        options["allowed_providers"] = providers
    if models:
        options["allowed_models"] = models
    if shape is not None:
        options["request_shape"] = shape
    # Only the parts given: on update the key keeps the rest (a new amount keeps the cycle);
    # on create a missing cycle is `total`.
    spend_limit = {"amount": spend_amount, "cycle": spend_cycle}
    if any(part is not None for part in spend_limit.values()):
        options["spend_limit"] = {part: value for part, value in spend_limit.items() if value is not None}
    request_limit = {"count": request_count, "cycle": request_cycle}
    if any(part is not None for part in request_limit.values()):
        options["request_limit"] = {part: value for part, value in request_limit.items() if value is not None}
    if rpm is not None:
        options["rate_limit"] = {"rpm": rpm, **({"burst": burst} if burst is not None else {})}
    if expires_at is not None:
        options["expires_at"] = expires_at
    if status is not None:
        options["status"] = status
    return options


def _show(body: dict[str, Any]) -> None:
    fields = []
    for field in (
        "spend_key_id", "name", "key_preview", "status", "request_shape", "allowed_providers", "allowed_models",
        "spend_limit", "request_limit", "rate_limit", "expires_at", "current_spend", "total_spend",
        "current_requests", "total_requests", "last_used_at", "created_at",
    ):  # fmt: skip
        value = body.get(field)
        fields.append((field, "all" if value is None and field.startswith("allowed") else str(value)))
    print_fields(stdout, fields)
    if body.get("key"):
        # soft_wrap: the secret is never broken across lines by rich (the terminal may wrap it).
        stdout.print(f"\nkey  {body['key']}", soft_wrap=True, markup=False, highlight=False)
        stdout.print("[bold yellow]Shown once: copy it now.[/]")


def _wallet(database: Database, wallet_id: str | None, as_json: bool) -> str:
    try:
        return _wallet_id(database, wallet_id)
    except LavaError as error:
        raise fail(error, as_json) from error


@keys_app.command("create")
def keys_create(
    name: Name = None,
    providers: Providers = None,
    models: Models = None,
    shape: Shape = None,
    spend_amount: SpendAmount = None,
    spend_cycle: SpendCycle = None,
    request_count: RequestCount = None,
    request_cycle: RequestCycle = None,
    rpm: Rpm = None,
    burst: Burst = None,
    expires_at: Expires = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    wallet_id: WalletOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a spend key and print its secret (shown once)."""
    database = _database()
    owner = _wallet(database, wallet_id, as_json)
    options = _options(
        name=name, providers=providers, models=models, shape=shape, spend_amount=spend_amount,
        spend_cycle=spend_cycle, request_count=request_count, request_cycle=request_cycle, rpm=rpm, burst=burst,
        expires_at=expires_at, status="paused" if paused else None,
    )  # fmt: skip
    try:
        created = spend_keys.create(database, owner, options, catalog=_catalog())
    except LavaError as error:
        raise fail(error, as_json) from error
    body = spend_key_json(created.key, secret=created.secret)
    emit(as_json, body, lambda: _show(body))


@keys_app.command("list")
def keys_list(
    limit: Annotated[int | None, typer.Option(help="1 to 100 (default 20).")] = None,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page.")] = None,
    status: Annotated[str | None, typer.Option(help="active, paused or revoked.")] = None,
    wallet_id: WalletOption = None,
    as_json: JsonFlag = False,
) -> None:
    """The wallet's spend keys, newest first (previews only, never secrets)."""
    database = _database()
    owner = _wallet(database, wallet_id, as_json)
    try:
        page = spend_keys.list_keys(database, owner, limit=limit, cursor=cursor, status=status)
    except LavaError as error:
        raise fail(error, as_json) from error
    rows = [spend_key_json(key) for key in page.keys]
    body = render.list_json(rows, page.next_cursor)

    def table() -> None:
        lines = []
        for key in rows:
            limit_text = (
                f"{key['spend_limit']['amount']}/{key['spend_limit']['cycle']}" if key["spend_limit"] else "-"
            )
            lines.append([
                key["spend_key_id"], key["name"], key["key_preview"], key["status"], limit_text,
                key["current_spend"], str(key["total_requests"]), key["last_used_at"] or "-",
            ])  # fmt: skip
        headers = ["id", "name", "preview", "status", "spend limit", "current spend", "requests", "last used"]
        print_rows(stdout, headers, lines)
        if page.next_cursor:
            stderr.print(f"more: --cursor {page.next_cursor}")

    emit(as_json, body, table)


@keys_app.command("show")
def keys_show(key_id: KeyId, wallet_id: WalletOption = None, as_json: JsonFlag = False) -> None:
    """One spend key, with its counters."""
    database = _database()
    owner = _wallet(database, wallet_id, as_json)
    try:
        key = spend_keys.get(database, owner, key_id)
    except LavaError as error:
        raise fail(error, as_json) from error
    body = spend_key_json(key)
    emit(as_json, body, lambda: _show(body))


@keys_app.command("update")
def keys_update(
    key_id: KeyId,
    name: Name = None,
    providers: Providers = None,
    models: Models = None,
    shape: Shape = None,
    spend_amount: SpendAmount = None,
    spend_cycle: SpendCycle = None,
    request_count: RequestCount = None,
    request_cycle: RequestCycle = None,
    rpm: Rpm = None,
    burst: Burst = None,
    expires_at: Expires = None,
    status: Annotated[str | None, typer.Option(help="active or paused.")] = None,
    all_providers: Annotated[bool, typer.Option("--all-providers", help="Allow every provider.")] = False,
    all_models: Annotated[bool, typer.Option("--all-models", help="Allow every model.")] = False,
    no_spend_limit: Annotated[bool, typer.Option("--no-spend-limit", help="Remove the spend limit.")] = False,
    no_request_limit: Annotated[
        bool, typer.Option("--no-request-limit", help="Remove the request limit.")
    ] = False,
    no_rate_limit: Annotated[bool, typer.Option("--no-rate-limit", help="Remove the rate limit.")] = False,
    no_expiry: Annotated[bool, typer.Option("--no-expiry", help="Never expire.")] = False,
    wallet_id: WalletOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a key's limits, scope, name or status; its secret stays the same."""
    database = _database()
    owner = _wallet(database, wallet_id, as_json)
    options = _options(
        name=name, providers=providers, models=models, shape=shape, spend_amount=spend_amount,
        spend_cycle=spend_cycle, request_count=request_count, request_cycle=request_cycle, rpm=rpm, burst=burst,
        expires_at=expires_at, status=status,
    )  # fmt: skip
    cleared = {
        "allowed_providers": all_providers,
        "allowed_models": all_models,
        "spend_limit": no_spend_limit,
        "request_limit": no_request_limit,
        "rate_limit": no_rate_limit,
        "expires_at": no_expiry,
    }
    options.update({field: None for field, clear in cleared.items() if clear})
    if not options:
        raise fail("nothing to update: give at least one option (see --help)", as_json)
    try:
        key = spend_keys.update_key(database, owner, key_id, options, catalog=_catalog())
    except LavaError as error:
        raise fail(error, as_json) from error
    body = spend_key_json(key)
    emit(as_json, body, lambda: _show(body))


@keys_app.command("rotate")
def keys_rotate(key_id: KeyId, wallet_id: WalletOption = None, as_json: JsonFlag = False) -> None:
    """A new secret for the key (shown once); the old one stops working at once."""
    database = _database()
    owner = _wallet(database, wallet_id, as_json)
    try:
        rotated = spend_keys.rotate(database, owner, key_id)
    except LavaError as error:
        raise fail(error, as_json) from error
    body = spend_key_json(rotated.key, secret=rotated.secret)
    emit(as_json, body, lambda: _show(body))


@keys_app.command("revoke")
def keys_revoke(key_id: KeyId, wallet_id: WalletOption = None, as_json: JsonFlag = False) -> None:
    """Revoke a key for good (its record stays, for the usage history)."""
    database = _database()
    owner = _wallet(database, wallet_id, as_json)
    try:
        spend_keys.revoke(database, owner, key_id)
    except LavaError as error:
        raise fail(error, as_json) from error
    emit(as_json, {"success": True}, lambda: stdout.print(f"revoked {key_id}"))
