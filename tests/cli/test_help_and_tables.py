"""What the `lava-mcp` script shows a person: `--version`, help texts whose flags look like
flags (no `<bool>` label, as if they took a value), and tables that print every id whole on
a narrow terminal (an id cut short can't be pasted into the next command)."""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from lava_mcp.cli import app
from lava_mcp.cli import commands as _commands  # noqa: F401  (registers the commands, as main() does)
from lava_mcp.cli import keys as _keys  # noqa: F401
from lava_mcp.cli import org as _org  # noqa: F401
from lava_mcp.core import spend_keys, wallet
from lava_mcp.store.db import Database
from tests.cli.test_commands import SCRIPT, Cli, add_requests


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    assert SCRIPT.exists(), f"the lava-mcp script is not installed beside the test's Python: {SCRIPT}"
    return Cli(tmp_path)


def test_version_prints_the_package_version(cli: Cli) -> None:
    finished = cli.run("--version")
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout == f"lava-mcp {version('lava-mcp')}\n"


def every_command_path() -> list[list[str]]:
    """The argument lists that reach every group and command of the CLI."""
    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def help_text(*path: str) -> str:
    """The help page as the script prints it (typer's own renderer, run in-process: one
    script start per command would take a minute)."""
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, (path, result.output)
    return result.stdout


def test_help_shows_flags_as_flags() -> None:
    paths = every_command_path()
    assert len(paths) > 30 and ["keys", "update"] in paths and ["wallet", "create"] in paths
    for path in paths:
        text = help_text(*path)
        assert "<bool>" not in text, (path, text)
        assert re.search(r"--help\s+Show this message and exit\.", text), (path, text)
    update = help_text("keys", "update")
    for flag, words in [
        ("--no-rate-limit", "Remove the rate limit."),
        ("--json", "Machine-readable output."),
    ]:
        assert re.search(rf"{flag}\s+{re.escape(words)}", update), update
    # Options that take a value still say what value.
    assert re.search(r"--spend-limit\s+<str>", update) and re.search(r"--rpm\s+<int>", update)
    assert "KEY_ID" in update
    create = help_text("wallet", "create")
    assert re.search(r"--sandbox\s+--live\s+Default: sandbox", create), create
    root = help_text()
    assert re.search(r"--version\s+Print the version and exit\.", root), root


def narrow(cli: Cli, *arguments: str, wallet_key: str, columns: int) -> str:
    finished = subprocess.run(
        [str(SCRIPT), *arguments],
        env=cli.environment | {"COLUMNS": str(columns), "LAVA_WALLET_KEY": wallet_key},
        cwd=cli.cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout


def test_tables_print_every_id_whole_on_a_narrow_terminal(cli: Cli) -> None:
    wallet_id, wallet_key = cli.new_wallet()
    database = Database(cli.url)
    key_ids = [
        spend_keys.create(
            database, wallet_id, {"name": f"Agent - Production number {n}", "rate_limit": {"rpm": 60}}
        ).key.id
        for n in range(3)
    ]
    database.dispose()
    request_ids = add_requests(cli.database, wallet_id, 3)

    for columns in (40, 60, 250):
        listed = narrow(cli, "keys", "list", wallet_key=wallet_key, columns=columns)
        for key_id in key_ids:
            assert key_id in listed, (columns, listed)
        requests = narrow(cli, "requests", wallet_key=wallet_key, columns=columns)
        for request_id in request_ids:
            assert request_id in requests, (columns, requests)
        shown = narrow(cli, "keys", "show", key_ids[0], wallet_key=wallet_key, columns=columns)
        assert key_ids[0] in shown and "Agent - Production number 0" in shown, shown
        assert "…" not in listed + requests + shown  # nothing cut with an ellipsis
        for line in (listed + requests + shown).splitlines():
            assert len(line) <= columns, (columns, line)
    # Wide enough, a table (one row per key); narrow, one record per key.
    wide = narrow(cli, "keys", "list", wallet_key=wallet_key, columns=250)
    assert sum(1 for line in wide.splitlines() if "sk_id_" in line) == 3 and "┃ id" in wide
    tight = narrow(cli, "keys", "list", wallet_key=wallet_key, columns=60)
    assert re.search(rf"^id\s+{key_ids[0]}", tight, re.MULTILINE), tight


def test_secrets_are_printed_on_one_line_whatever_the_width(cli: Cli) -> None:
    _, wallet_key = cli.new_wallet()
    created = narrow(cli, "keys", "create", "--name", "ci", wallet_key=wallet_key, columns=40)
    secret = re.search(r"lava_sk_\w+", created.split("\nkey ")[1])
    assert secret is not None and len(secret.group()) > 40, created
    made = subprocess.run(
        [str(SCRIPT), "wallet", "create"],
        env=cli.environment | {"COLUMNS": "40"},
        cwd=cli.cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    wallet_line = next(line for line in made.stdout.splitlines() if line.startswith("wallet_key"))
    key = wallet_line.split()[1]
    database = Database(cli.url)
    assert wallet.authenticate(database, key).id  # the whole key, on one line
    database.dispose()
