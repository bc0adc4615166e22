"""Several real `lava-mcp serve` processes on one PostgreSQL schema (and Redis): a cluster.

Each test starts its own cluster: three `python -m lava_mcp serve --port P` processes on
free ports, every one with `LAVA_DATABASE_URL` = this test's fresh schema (its
`search_path` in the URL's options) and an `application_name` of this cluster's own, so a
test can find — and kill with `pg_terminate_backend` — its servers' connections and never
another session of the machine. The upstream is the test process's fake provider
(`tests/fake_provider.py`), whose knobs a test turns while the servers call it. The schema
is migrated, and wallets are made and funded, through the core on the same database;
spend keys are made over REST, as an owner would.

A process is ready when its `/healthz` answers; every process is killed at teardown, even
when the test failed (its log is printed then, for the reason).
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from lava_mcp.core import verify, wallet
from lava_mcp.store.db import Database
from tests.fake_provider import FakeProvider, free_port

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 90.0


def with_application_name(url: str, name: str) -> str:
    """`url` whose connections call themselves `name` in `pg_stat_activity`."""
    return make_url(url).update_query_dict({"application_name": name}).render_as_string(hide_password=False)


@dataclass
class Server:
    """One `lava-mcp serve` process."""

    port: int
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no settle, no goodbye to the database."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Cluster:
    """Server processes sharing one database; the test's own view of that database."""

    database_url: str  # the servers' URL (their application_name)
    application_name: str
    db: Database  # the test's own connections (another application_name: never terminated)
    env: dict[str, str]
    workdir: Path
    servers: list[Server] = field(default_factory=list)

    def start(self, count: int = 1) -> list[Server]:
        """Start `count` more servers and wait until each answers `/healthz`."""
        started = []
        for _ in range(count):
            port = free_port()
            log = self.workdir / f"serve-{port}.log"
            with log.open("wb") as output:
                process = subprocess.Popen(
                    [sys.executable, "-m", "lava_mcp", "serve", "--port", str(port)],
                    env=self.env,
                    cwd=self.workdir,  # no .env file is read but this test's
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            started.append(Server(port, log, process))
        self.servers += started
        for server in started:
            wait_healthy(server)
        return started

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers if server.alive()]

    def stop(self) -> None:
        for server in self.servers:
            if server.alive():
                server.process.terminate()
        for server in self.servers:
            try:
                server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(timeout=15)

    def server_backends(self) -> list[int]:
        """Process ids of the servers' PostgreSQL backends (this cluster's only)."""
        with self.db.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                {"name": self.application_name},
            ).all()
        return [int(row[0]) for row in rows]

    def terminate_server_backends(self) -> int:
        """`pg_terminate_backend` every connection of this cluster's servers; how many."""
        with self.db.engine.connect() as connection:
            killed = connection.execute(
                text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": self.application_name},
            ).scalar_one()
        return int(killed)

    def create_wallet(self, amount: str) -> wallet.NewWallet:
        created = wallet.create_wallet(self.db, name=f"scale-{secrets.token_hex(3)}", mode="sandbox")
        wallet.adjust(self.db, created.wallet_id, amount, reason="scale test funding")
        return created

    def create_spend_key(self, wallet_key: str, **fields: Any) -> dict[str, Any]:
        """A spend key made over REST (through the first server) with `fields`."""
        answer = httpx.post(
            f"{self.urls[0]}/v1/spend_keys",
            headers={"Authorization": f"Bearer {wallet_key}"},
            json={"name": f"scale-{secrets.token_hex(3)}", **fields},
            timeout=30,
        )
        assert answer.status_code == 201 or answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def ledger_verify(self) -> dict[str, Any]:
        """`lava-mcp ledger verify --json` run as the operator runs it, on this database."""
        finished = subprocess.run(
            [sys.executable, "-m", "lava_mcp", "ledger", "verify", "--json"],
            env={**self.env, "LAVA_DATABASE_URL": with_application_name(self.database_url, "lava_scale_cli")},
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert finished.returncode == 0, f"ledger verify failed:\n{finished.stdout}\n{finished.stderr}"
        report: dict[str, Any] = json.loads(finished.stdout)
        assert report["ok"] is True and report["problems"] == [], report
        assert verify.verify(self.db) == []
        return report


def wait_healthy(server: Server) -> None:
    """Until `/healthz` answers 200; fails at once if the process died."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx.Client(timeout=5) as client:
        while True:
            if not server.alive():
                pytest.fail(f"lava-mcp serve on {server.port} exited:\n{server.log_tail()}")
            try:
                if client.get(f"{server.url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                pytest.fail(f"lava-mcp serve on {server.port} never answered /healthz:\n{server.log_tail()}")
            time.sleep(0.1)


def server_env(database_url: str, fake: FakeProvider, extra: dict[str, str]) -> dict[str, str]:
    """The servers' environment: this machine's, without any LAVA_* of the caller's."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("LAVA_")}
    env.update(
        {
            "LAVA_DATABASE_URL": database_url,
            "LAVA_PAYMENTS": "sandbox",
            "OPENAI_API_KEY": "sk-upstream-openai",
            "OPENAI_BASE_URL": f"{fake.url}/v1",
            "ANTHROPIC_API_KEY": "sk-upstream-anthropic",
            "ANTHROPIC_BASE_URL": fake.url,
            "PYTHONPATH": str(ROOT),
            **extra,
        }
    )
    for name in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE"):
        env.pop(name, None)
    return env


_cluster_numbers = itertools.count()


@pytest.fixture
def cluster_factory(
    postgres_url: str, fake: FakeProvider, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """`make(count=3, prepare=True, **env)`: a cluster of `count` servers on this test's
    schema; `prepare`: migrated, with a wallet, before the servers start (else they start
    on an empty schema)."""
    clusters: list[Cluster] = []

    def make(count: int = 3, *, prepare: bool = True, **extra_env: str) -> Cluster:
        number = next(_cluster_numbers)
        application_name = f"lava_scale_{secrets.token_hex(4)}"
        database_url = with_application_name(postgres_url, application_name)
        db = Database(with_application_name(postgres_url, f"lava_scale_test_{number}"))
        if prepare:
            db.upgrade()  # once, before any server (each server's own upgrade then finds it done)
            # A wallet before any server starts: a first `serve` on an empty ledger makes one.
            wallet.create_wallet(db, name="operator", mode="sandbox")
        workdir = tmp_path / f"cluster-{number}"
        workdir.mkdir()
        cluster = Cluster(
            database_url, application_name, db, server_env(database_url, fake, extra_env), workdir
        )
        clusters.append(cluster)
        cluster.start(count)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.stop()
            failed = getattr(request.node, "rep_call", None)
            if failed is not None and failed.failed:
                for server in cluster.servers:
                    sys.stderr.write(f"--- serve {server.port} ---\n{server.log_tail(80)}\n")
            cluster.db.dispose()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Lets the fixture print the servers' logs when the test itself failed.
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


def wait_until(condition: Any, *, timeout_s: float, what: str) -> None:
    """Poll `condition()` (a read of the database, say) until true; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout_s:g} s waiting for {what}")
        time.sleep(0.25)
