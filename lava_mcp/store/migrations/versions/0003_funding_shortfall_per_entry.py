"""funding: each ledger entry's change to its wallet's shortfall

A refund or dispute that the balance could not cover records the rest as owed
(`+`); a later deposit or a dispute's reinstatement covers it (`−`). The sum over a
wallet's entries equals `wallet.shortfall_micros`, which `ledger verify` checks.

Revision ID: 0003_funding
Revises: 0002
Create Date: 2026-12-01 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_funding"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("shortfall_micros", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.drop_column("shortfall_micros")
