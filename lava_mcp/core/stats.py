"""Operational figures for `/metrics` (Prometheus text format)."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import select

from lava_mcp.store.db import Database
from lava_mcp.store.models import Hold, RequestRecord, Wallet


def snapshot(db: Database) -> str:
    with db.read() as session:
        wallets = session.exec(select(func.count()).select_from(Wallet)).one()
        open_holds = session.exec(
            select(func.count()).select_from(Hold).where(Hold.status == "pending")
        ).one()
        by_status = session.exec(
            select(RequestRecord.status, func.count()).group_by(RequestRecord.status)
        ).all()
    lines = [
        "# TYPE lava_wallets gauge",
        f"lava_wallets {wallets}",
        "# TYPE lava_open_holds gauge",
        f"lava_open_holds {open_holds}",
        "# TYPE lava_requests_total counter",
    ]
    lines += [f'lava_requests_total{{status="{status}"}} {count}' for status, count in by_status]
    return "\n".join(lines) + "\n"
