"""Upgrading from before the payments mode came from the key: every Stripe wallet was then
labelled `live`, even on an `sk_test_` key. The server can't tell from the data, so at
startup it warns, naming the counts and the command, and the operator relabels with
`lava-mcp db relabel-mode --from live --to test` (confirmed; wallets and payments in one
transaction; never sandbox <-> Stripe)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select

from lava_mcp.core import funding, wallet
from lava_mcp.runtime import Runtime, running
from lava_mcp.store.db import Database
from lava_mcp.store.models import Payment, Wallet
from tests.payments.conftest import StripeFront, live_settings

SCRIPT = Path(sys.executable).parent / "lava-mcp"


def old_live_money(database: Database, count: int = 2) -> list[str]:
    """Wallets and payments as the old server labelled them on a test key: `live`."""
    made = [wallet.create_wallet(database, name=f"old-{n}", mode="live").wallet_id for n in range(count)]
    with database.write() as session:
        for n, wallet_id in enumerate(made):
            session.add(Payment(id=f"pay_old_{n}", wallet_id=wallet_id, amount_micros=5_000_000, mode="live"))
    return made


def modes(database: Database) -> tuple[list[str], list[str]]:
    with database.read() as session:
        return (
            sorted(row.mode for row in session.exec(select(Wallet)).all()),
            sorted(row.mode for row in session.exec(select(Payment)).all()),
        )


async def test_startup_warns_of_wallets_of_the_other_stripe_mode(
    tmp_path: Path, stripe_front: StripeFront, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = Runtime.build(live_settings(tmp_path, stripe_front.url))
    assert runtime.settings.money_mode == "test"
    runtime.db.upgrade()
    old_live_money(runtime.db)
    wallet.create_wallet(runtime.db, name="new", mode="test")
    with caplog.at_level(logging.WARNING, logger="lava_mcp"):
        async with running(runtime, migrate=False):
            pass
    [warning] = [record.getMessage() for record in caplog.records if "relabel-mode" in record.getMessage()]
    assert "2 wallet(s) and 2 payment(s) are labelled Stripe live mode" in warning
    assert "lava-mcp db relabel-mode --from live --to test" in warning


def relabel(tmp_path: Path, *arguments: str, answer: str | None = None) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LAVA_DATABASE_URL": f"sqlite:///{tmp_path / 'lava.db'}",
        "LAVA_PAYMENTS": "sandbox",
    }
    return subprocess.run(
        [str(SCRIPT), "db", "relabel-mode", *arguments],
        env=environment,
        cwd=tmp_path,
        input=answer,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_relabel_mode_moves_wallets_and_payments_once_confirmed(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'lava.db'}")
    database.upgrade()
    old_live_money(database)
    sandbox = wallet.create_wallet(database, name="sandbox", mode="sandbox").wallet_id
    try:
        declined = relabel(tmp_path, "--from", "live", "--to", "test", answer="n\n")
        assert declined.returncode != 0 and "2 wallet(s) and 2 payment(s)" in declined.stdout
        assert modes(database) == (["live", "live", "sandbox"], ["live", "live"])
        done = relabel(tmp_path, "--from", "live", "--to", "test", answer="y\n")
        assert done.returncode == 0, done.stderr
        assert "relabelled 2 wallet(s) and 2 payment(s) from live to test" in done.stdout
        assert modes(database) == (["sandbox", "test", "test"], ["test", "test"])
        assert funding.other_mode_warning(database, "test") is None
        with database.read() as session:
            kept = session.get(Wallet, sandbox)
            assert kept is not None and kept.mode == "sandbox"
    finally:
        database.dispose()


@pytest.mark.parametrize(
    "pair", [("sandbox", "test"), ("test", "sandbox"), ("live", "sandbox"), ("live", "live")]
)
def test_relabel_mode_refuses_anything_but_test_and_live(tmp_path: Path, pair: tuple[str, str]) -> None:
    database = Database(f"sqlite:///{tmp_path / 'lava.db'}")
    database.upgrade()
    wallet.create_wallet(database, name="sandbox", mode="sandbox")
    old_live_money(database, 1)
    try:
        refused = relabel(tmp_path, "--from", pair[0], "--to", pair[1], "--yes")
        assert refused.returncode != 0 and "only Stripe test and live are relabelled" in refused.stderr
        assert modes(database) == (["live", "sandbox"], ["live"])
    finally:
        database.dispose()
