"""sessions: the dashboard's server-side sign-ins

One row per signed-in browser: the SHA-256 of the random session id its cookie carries
(never the id itself), the wallet, and when it expires.

Revision ID: 0005_sessions
Revises: 0003_funding
Create Date: 2026-12-01 11:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005_sessions"
down_revision: str | Sequence[str] | None = "0003_funding"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STRING = sqlmodel.sql.sqltypes.AutoString
_DATETIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "web_session",
        sa.Column("id_hash", _STRING(), nullable=False),
        sa.Column("wallet_id", _STRING(), nullable=False),
        sa.Column("created_at", _DATETIME(), nullable=False),
        sa.Column("expires_at", _DATETIME(), nullable=False),
        sa.ForeignKeyConstraint(["wallet_id"], ["wallet.id"]),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_web_session_wallet_id"), ["wallet_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_web_session_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_session_expires_at"))
        batch_op.drop_index(batch_op.f("ix_web_session_wallet_id"))
    op.drop_table("web_session")
