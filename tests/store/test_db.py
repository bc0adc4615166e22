"""The ledger database: SQLite pragmas, write transactions, migrations on both backends."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from lava_mcp.store.db import Database

TABLES = {
    "wallet",
    "ledger_entry",
    "hold",
    "request_record",
    "spend_key",
    "org",
    "org_member",
    "org_invitation",
    "payment_method",
    "payment",
    "idempotency_record",
    "webhook_event",
    "web_session",
    "oauth_client",
    "oauth_pending_authorization",
    "oauth_grant",
    "oauth_code",
    "oauth_token",
    "alembic_version",
}


@pytest.fixture
def sqlite_db(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path / 'nested' / 'lava.db'}", sqlite_synchronous="NORMAL")
    database.upgrade()
    yield database
    database.dispose()


def test_sqlite_runs_in_wal_mode_with_the_configured_pragmas(sqlite_db: Database) -> None:
    with sqlite_db.read() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_synchronous_defaults_to_full(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'full.db'}")
    with database.read() as session:
        assert session.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    database.dispose()


def test_a_write_takes_the_write_lock_up_front(sqlite_db: Database, tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: another writer is refused at once, before this one wrote anything."""
    other = sqlite3.connect(tmp_path / "nested" / "lava.db", timeout=0, isolation_level=None)
    try:
        with sqlite_db.write() as session:
            session.execute(text("SELECT 1"))  # a read only: a deferred BEGIN would take no lock
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released on commit
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_a_failed_write_rolls_back(sqlite_db: Database) -> None:
    with pytest.raises(RuntimeError), sqlite_db.write() as session:
        session.execute(
            text(
                "INSERT INTO org (id, name, plan, enabled, created_at) VALUES ('org_1', 'n', 'team', 0, '2026-01-01')"
            )
        )
        raise RuntimeError("boom")
    with sqlite_db.read() as session:
        assert session.execute(text("SELECT count(*) FROM org")).scalar() == 0


def test_migrations_create_every_table_and_are_idempotent(sqlite_db: Database) -> None:
    assert set(inspect(sqlite_db.engine).get_table_names()) >= TABLES
    sqlite_db.upgrade()  # a second run changes nothing
    assert sqlite_db.has_schema() and not sqlite_db.has_wallets()
    with sqlite_db.read() as session:
        assert session.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_migrations_run_on_postgresql(postgres_url: str) -> None:
    database = Database(postgres_url)
    try:
        assert not database.has_schema()
        database.upgrade()
        database.upgrade()
        assert set(inspect(database.engine).get_table_names()) >= TABLES
        assert not database.has_wallets()
    finally:
        database.dispose()


def test_the_migrations_have_one_head() -> None:
    """Work done in parallel leaves two heads; a merge migration joins them, so that
    `db upgrade` and the models agree on one schema version."""
    from alembic.script import ScriptDirectory

    from lava_mcp.store.db import alembic_config

    assert len(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()) == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_migrated_schema_is_the_models_schema(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Alembic's autogenerate finds nothing to change after `upgrade` (no column, index or
    table the models have and the migrations forgot, or the reverse)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    url = (
        f"sqlite:///{tmp_path / 'lava.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    database = Database(url)
    database.upgrade()
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []
    database.dispose()


def test_the_heads_read_from_the_revision_files_are_alembics() -> None:
    """`upgrade` skips Alembic when the ledger is at these heads: they must be Alembic's."""
    from alembic.script import ScriptDirectory

    from lava_mcp.store.db import alembic_config, head_revisions

    assert head_revisions() == frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def test_head_revisions_leave_to_alembic_what_they_cannot_read(tmp_path: Path) -> None:
    from lava_mcp.store.db import head_revisions

    def versions(name: str, *files: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for number, source in enumerate(files):
            (folder / f"{number:04}_x.py").write_text(source)
        (folder / "__init__.py").write_text("revision = 'not a revision file'\n")
        return folder

    base = 'revision = "a"\ndown_revision = None\n'
    merged = versions(
        "merged",
        base,
        'revision: str = "b"\ndown_revision: str | None = "a"\n',
        'revision = "c"\ndown_revision = "a"\n',
        'revision = "d"\ndown_revision = ("b", "c")\n',
        'revision = "e"\ndown_revision = "a"\n',
    )
    assert head_revisions(merged) == {"d", "e"}
    assert (
        head_revisions(versions("depends", base, 'revision = "b"\ndown_revision = "a"\ndepends_on = "x"\n'))
        is None
    )
    assert head_revisions(versions("computed", base, 'revision = "b" + "c"\ndown_revision = "a"\n')) is None
    assert head_revisions(versions("unnamed", base, 'down_revision = "a"\n')) is None
    assert head_revisions(versions("broken", base, "revision = (\n")) is None
    assert head_revisions(versions("empty")) is None


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_migrates_a_ledger_behind_the_head(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The shortcut past Alembic is for a ledger at the head only: one a revision behind is
    migrated (here 0007, which drops two columns of `hold`)."""
    from alembic import command

    from lava_mcp.store.db import alembic_config, applied_revisions, head_revisions

    url = (
        f"sqlite:///{tmp_path / 'lava.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    database = Database(url)
    try:
        database.upgrade()
        with database.engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.downgrade(config, "0006_merge")
        with database.engine.connect() as connection:
            assert applied_revisions(connection) == {"0006_merge"}
        assert "spend_cycle_start" in {
            column["name"] for column in inspect(database.engine).get_columns("hold")
        }
        database.upgrade()
        with database.engine.connect() as connection:
            assert applied_revisions(connection) == head_revisions()
        assert "spend_cycle_start" not in {
            column["name"] for column in inspect(database.engine).get_columns("hold")
        }
    finally:
        database.dispose()
