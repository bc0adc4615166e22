"""drop hold.spend_cycle_start and hold.request_cycle_start: which cycle a settle counts in
is decided by the hold's created_at (core/holds.py), so they were written and never read

Revision ID: 0007_hold_cycles
Revises: 0006_merge
Create Date: 2026-12-01 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007_hold_cycles"
down_revision: str | Sequence[str] | None = "0006_merge"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hold", schema=None) as batch_op:
        batch_op.drop_column("request_cycle_start")
        batch_op.drop_column("spend_cycle_start")


def downgrade() -> None:
    with op.batch_alter_table("hold", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("spend_cycle_start", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.add_column(
            sa.Column("request_cycle_start", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
