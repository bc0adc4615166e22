"""The `lava-mcp` command line. Every command takes `--json`; errors go to stderr, exit 1."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console

from lava_mcp.config import Settings
from lava_mcp.errors import LavaError
from lava_mcp.store.db import Database

app = typer.Typer(no_args_is_help=True, add_completion=False, help="lava-mcp: a wallet for AI usage.")
stdout = Console()
stderr = Console(stderr=True)


JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def settings() -> Settings:
    return Settings()


def database() -> Database:
    """The configured ledger, migrated (every command may be the first one run)."""
    config = settings()
    opened = Database(config.database_url, sqlite_synchronous=config.sqlite_synchronous)
    opened.upgrade()
    return opened


def emit(as_json: bool, body: Any, human: Callable[[], None]) -> None:
    """Print `body` as JSON, or run the human rendering."""
    if as_json:
        sys.stdout.write(json.dumps(body, indent=2, default=str) + "\n")
    else:
        human()


def fail(error: LavaError | str, as_json: bool = False) -> typer.Exit:
    """Report an error on stderr; returns the Exit to raise."""
    if isinstance(error, LavaError):
        text = json.dumps(error.to_dict()) if as_json else f"error ({error.code}): {error.message}"
        if not as_json and error.next_step:
            text += f"\n  next: {error.next_step}"
    else:
        text = json.dumps({"error": error, "code": 1}) if as_json else f"error: {error}"
    sys.stderr.write(text + "\n")
    return typer.Exit(1)


def main() -> None:
    from lava_mcp.cli import commands, keys, org  # noqa: F401  (registers the commands)

    app()
