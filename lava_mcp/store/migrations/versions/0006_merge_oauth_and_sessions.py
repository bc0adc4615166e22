"""merge the OAuth and dashboard-session heads (built in parallel on 0003)

Revision ID: 0006_merge
Revises: 0004_oauth, 0005_sessions
Create Date: 2026-12-01 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0006_merge"
down_revision: str | Sequence[str] | None = ("0004_oauth", "0005_sessions")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # the two branches touch different tables: nothing to reconcile


def downgrade() -> None:
    pass
