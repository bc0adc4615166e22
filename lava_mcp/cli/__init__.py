"""The `lava-mcp` command line. Every command takes `--json`; errors go to stderr, exit 1.

Help texts show what a user types: typer labels every parameter with its Python type
(`<bool>`, `<str>`), which makes a flag look as if it took a value, so `Group` and `Command`
blank the label of every flag (`--help` included) and name each argument in capitals
(`KEY_ID`) as usage lines do. Every group and command of the CLI is made through `Typer`, so
a new flag renders as a flag without anyone remembering to. Tables print ids whole (see
`print_rows`): an id cut to `sk_id_01a2…` is useless to paste into the next command.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from importlib.metadata import version as installed_version
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType

from lava_mcp.config import Settings
from lava_mcp.errors import LavaError
from lava_mcp.store.db import Database


def _label_for_users(params: list[Any]) -> list[Any]:
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""  # a flag takes no value: no type label
        elif isinstance(param, TyperArgument) and param.metavar is None:
            param.metavar = param.name.upper() if param.name else None
    return params


class Command(TyperCommand):
    """A command whose help shows flags as flags and arguments in capitals."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _label_for_users(super().get_params(ctx))


class Group(TyperGroup):
    """A command group whose help shows flags as flags (its own `--help`, `--version`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _label_for_users(super().get_params(ctx))


class Typer(typer.Typer):
    """`typer.Typer` whose groups and commands are `Group` and `Command`."""

    def __init__(self, **options: Any) -> None:
        super().__init__(cls=Group, **options)

    def command(  # the same parameters as typer.Typer.command, one default changed
        self, *arguments: Any, **options: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        options.setdefault("cls", Command)
        return super().command(*arguments, **options)


app = Typer(no_args_is_help=True, add_completion=False, help="lava-mcp: a wallet for AI usage.")
stdout = Console()
stderr = Console(stderr=True)


JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"lava-mcp {installed_version('lava-mcp')}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """lava-mcp: a wallet for AI usage."""


# Below this many characters a text column is too narrow to read: print records instead.
MIN_TEXT_COLUMN_CHARS = 8


def print_rows(
    console: Console,
    headers: list[str],
    rows: list[list[str]],
    *,
    id_headers: frozenset[str] = frozenset({"id"}),
) -> None:
    """Print rows as a table whose id columns are never cut or wrapped (an id is there to be
    copied whole) and whose other columns wrap. When the terminal is too narrow for that,
    each row is printed as a record instead, one `header value` line per column."""
    is_id = [header in id_headers for header in headers]
    widest = [max([len(header), *(len(row[index]) for row in rows)]) for index, header in enumerate(headers)]
    # Borders and padding take 3 characters a column, plus one.
    needed = 1 + sum(
        3 + (widest[index] if is_id[index] else min(widest[index], MIN_TEXT_COLUMN_CHARS))
        for index in range(len(headers))
    )
    if console.width >= needed:
        table = Table()
        for index, header in enumerate(headers):
            if is_id[index]:
                table.add_column(header, no_wrap=True, min_width=widest[index])
            else:
                table.add_column(header, overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))  # a name is text, never markup
        console.print(table)
        return
    for number, row in enumerate(rows):
        if number:
            console.print()
        print_fields(console, list(zip(headers, row, strict=True)))


def print_fields(console: Console, fields: list[tuple[str, str]]) -> None:
    """Print `name value` lines; values wrap at spaces. On a terminal too narrow for a name
    beside its longest word (an id), each value goes on its own line below its name, printed
    whole (the terminal may wrap it; rich never cuts it)."""
    name_width = max((len(name) for name, _ in fields), default=0)
    longest_word = max((len(word) for _, value in fields for word in value.split()), default=0)
    if console.width >= name_width + 2 + longest_word:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for name, value in fields:
            grid.add_row(name, Text(value))
        console.print(grid)
        return
    for name, value in fields:
        console.print(name, markup=False, highlight=False)
        console.print(f"  {value}", soft_wrap=True, markup=False, highlight=False)


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
