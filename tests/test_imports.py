"""What a serving process loads: modules only other paths need stay unloaded.

Each is resident memory a server would carry for its whole life (README, "Figures"):
`lava-mcp serve` on a ledger already at the head revision never loads Alembic (nor Mako
and Pygments' lexers with it); on SQLite it never loads psycopg; in the sandbox it never
loads the Stripe SDK; and it never loads the `Lava` client, which `lava_mcp` itself still
exports. The paths that need them are tested where they live: migrations in tests/store,
Stripe in tests/payments, the client in tests/client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lava_mcp.core import wallet
from lava_mcp.store.db import Database
from tests.fake_provider import free_port

STARTUP_TIMEOUT_S = 90.0
NOT_SERVING = ("alembic", "mako", "psycopg", "stripe", "lava_mcp.client")

# Runs the CLI as `python -m lava_mcp` does and, when the process exits, writes the names
# of the modules it loaded to the file named by its first argument.
RECORDING_MODULES = """
import atexit, json, runpy, sys
record = sys.argv[1]
atexit.register(lambda: open(record, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["lava-mcp", *sys.argv[2:]]
runpy.run_module("lava_mcp", run_name="__main__")
"""


def clean_env(**values: str) -> dict[str, str]:
    """This machine's environment without the caller's LAVA_* and Stripe settings."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("LAVA_", "STRIPE_"))}
    return {**env, **values}


def loaded(name: str, modules: list[str]) -> bool:
    return any(module == name or module.startswith(name + ".") for module in modules)


def run_python(code: str, env: dict[str, str], cwd: Path) -> list[str]:
    """The modules loaded by `python -c code`, after it ran."""
    result = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(result.stdout.splitlines()[-1]))


def test_a_server_on_a_migrated_sqlite_ledger_loads_none_of_what_serving_does_not_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lava.db'}"
    database = Database(url)
    database.upgrade()  # the ledger a server restarts on
    owner = wallet.create_wallet(database, name="imports")
    database.dispose()
    port, record = free_port(), tmp_path / "modules.json"
    env = clean_env(LAVA_DATABASE_URL=url, LAVA_PAYMENTS="sandbox")
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-c", RECORDING_MODULES, str(record), "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,  # no .env of the caller's
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while True:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    pytest.fail(
                        "lava-mcp serve never answered /healthz:\n" + (tmp_path / "serve.log").read_text()
                    )
                time.sleep(0.1)
            balance = client.get("/v1/wallet", headers={"Authorization": f"Bearer {owner.wallet_key}"})
            assert balance.status_code == 200, balance.text
    finally:
        # Ctrl-C: uvicorn stops, then raises it again, and the process exits through its
        # atexit hooks (SIGTERM, raised again, would end it without them).
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        log.close()
    assert record.exists(), (tmp_path / "serve.log").read_text()
    modules = json.loads(record.read_text())
    assert "lava_mcp.transports.app" in modules  # it did serve
    assert [name for name in NOT_SERVING if loaded(name, modules)] == []
    assert "genai_prices.data" in modules  # the price table, loaded at start (`prices.load_table`)


def test_upgrading_a_ledger_at_the_head_does_not_load_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lava.db'}"
    code = f"from lava_mcp.store.db import Database\nDatabase({url!r}).upgrade()"
    # A new ledger is migrated by Alembic; once at the head, Alembic is not loaded again.
    assert loaded("alembic", run_python(code, clean_env(), tmp_path))
    assert not loaded("alembic", run_python(code, clean_env(), tmp_path))


def test_the_package_still_exports_the_client_without_loading_it_first(tmp_path: Path) -> None:
    assert not loaded("lava_mcp.client", run_python("import lava_mcp", clean_env(), tmp_path))
    modules = run_python(
        "from lava_mcp import AsyncLava, Lava, LavaAPIError\n"
        "import lava_mcp, lava_mcp.client as client\n"
        "assert (Lava, AsyncLava, LavaAPIError) == (client.Lava, client.AsyncLava, client.LavaAPIError)\n"
        "assert all(hasattr(lava_mcp, name) for name in lava_mcp.__all__)",
        clean_env(),
        tmp_path,
    )
    assert loaded("lava_mcp.client", modules)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        import lava_mcp

        _ = lava_mcp.nothing  # type: ignore[attr-defined]
