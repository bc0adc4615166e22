"""money at the edges: key versions, cycles per hold, cache tokens, shortfalls, refunds, invitations

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STRING = sqlmodel.sql.sqltypes.AutoString
_DATETIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("wallet", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("shortfall_micros", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payment_id", _STRING(), nullable=True))
        batch_op.create_index(batch_op.f("ix_ledger_entry_payment_id"), ["payment_id"], unique=False)
    with op.batch_alter_table("hold", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spend_cycle_start", _DATETIME(), nullable=True))
        batch_op.add_column(sa.Column("request_cycle_start", _DATETIME(), nullable=True))
    with op.batch_alter_table("request_record", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cache_read_tokens", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("cache_write_tokens", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("charge_basis", _STRING(), nullable=True))
    with op.batch_alter_table("spend_key", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reconciled_at", _DATETIME(), nullable=True))
    op.create_table(
        "org_invitation",
        sa.Column("id", _STRING(), nullable=False),
        sa.Column("org_id", _STRING(), nullable=False),
        sa.Column("wallet_id", _STRING(), nullable=False),
        sa.Column("role", _STRING(), nullable=False),
        sa.Column("status", _STRING(), nullable=False),
        sa.Column("invited_by", _STRING(), nullable=False),
        sa.Column("created_at", _DATETIME(), nullable=False),
        sa.Column("resolved_at", _DATETIME(), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["org.id"]),
        sa.ForeignKeyConstraint(["wallet_id"], ["wallet.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("org_invitation", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_org_invitation_org_id"), ["org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_org_invitation_wallet_id"), ["wallet_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("org_invitation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_org_invitation_wallet_id"))
        batch_op.drop_index(batch_op.f("ix_org_invitation_org_id"))
    op.drop_table("org_invitation")
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.drop_column("reconciled_at")
    with op.batch_alter_table("spend_key", schema=None) as batch_op:
        batch_op.drop_column("version")
    with op.batch_alter_table("request_record", schema=None) as batch_op:
        batch_op.drop_column("charge_basis")
        batch_op.drop_column("cache_write_tokens")
        batch_op.drop_column("cache_read_tokens")
    with op.batch_alter_table("hold", schema=None) as batch_op:
        batch_op.drop_column("request_cycle_start")
        batch_op.drop_column("spend_cycle_start")
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entry_payment_id"))
        batch_op.drop_column("payment_id")
    with op.batch_alter_table("wallet", schema=None) as batch_op:
        batch_op.drop_column("shortfall_micros")
