"""Three `lava-mcp serve` processes started at once on an empty PostgreSQL schema: one of
them migrates it while the others wait (an advisory lock, `Database.exclusive`), and they
make one first wallet between them, not one each. Before, two of three crashed on a
duplicate key while creating the same tables, and each survivor printed a wallet of its own."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import select

from lava_mcp.store.models import Wallet
from tests.scale.conftest import Cluster


def test_servers_started_together_on_an_empty_database_migrate_it_once_and_make_one_wallet(
    cluster_factory: Any,
) -> None:
    cluster: Cluster = cluster_factory(3, prepare=False)  # each one's /healthz answers
    assert all(server.alive() for server in cluster.servers)
    with cluster.db.read() as session:
        assert session.exec(select(func.count()).select_from(Wallet)).one() == 1
    printed = [server.log.read_text().count("Created wallet") for server in cluster.servers]
    assert sorted(printed) == [0, 0, 1]
    cluster.ledger_verify()
