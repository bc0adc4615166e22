"""oauth: clients, pending authorizations, grants (connected clients), codes and tokens

Codes and tokens are stored as SHA-256 hashes with their expiry; a grant is one wallet's
consent to one client, and revoking it ends every code and token issued under it.

Revision ID: 0004_oauth
Revises: 0003_funding
Create Date: 2026-12-01 11:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004_oauth"
down_revision: str | Sequence[str] | None = "0003_funding"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STRING = sqlmodel.sql.sqltypes.AutoString
_DATETIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "oauth_client",
        sa.Column("id", _STRING(), nullable=False),
        sa.Column("name", _STRING(), nullable=False),
        sa.Column("metadata_document", sa.Boolean(), nullable=False),
        sa.Column("client_metadata", sa.JSON(), nullable=False),
        sa.Column("fetched_at", _DATETIME(), nullable=True),
        sa.Column("created_at", _DATETIME(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "oauth_pending_authorization",
        sa.Column("id_hash", _STRING(), nullable=False),
        sa.Column("client_id", _STRING(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("csrf_hash", _STRING(), nullable=True),
        sa.Column("wallet_id", _STRING(), nullable=True),
        sa.Column("expires_at", _DATETIME(), nullable=False),
        sa.Column("used_at", _DATETIME(), nullable=True),
        sa.Column("created_at", _DATETIME(), nullable=False),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    op.create_index(
        "ix_oauth_pending_authorization_client_id", "oauth_pending_authorization", ["client_id"], unique=False
    )
    op.create_table(
        "oauth_grant",
        sa.Column("id", _STRING(), nullable=False),
        sa.Column("wallet_id", _STRING(), nullable=False),
        sa.Column("client_id", _STRING(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("resource", _STRING(), nullable=False),
        sa.Column("created_at", _DATETIME(), nullable=False),
        sa.Column("last_used_at", _DATETIME(), nullable=True),
        sa.Column("revoked_at", _DATETIME(), nullable=True),
        sa.ForeignKeyConstraint(["wallet_id"], ["wallet.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_oauth_grant_wallet_id", "oauth_grant", ["wallet_id"], unique=False)
    op.create_index("ix_oauth_grant_client_id", "oauth_grant", ["client_id"], unique=False)
    op.create_table(
        "oauth_code",
        sa.Column("code_hash", _STRING(), nullable=False),
        sa.Column("grant_id", _STRING(), nullable=False),
        sa.Column("code_challenge", _STRING(), nullable=False),
        sa.Column("redirect_uri", _STRING(), nullable=False),
        sa.Column("redirect_uri_provided_explicitly", sa.Boolean(), nullable=False),
        sa.Column("expires_at", _DATETIME(), nullable=False),
        sa.Column("used_at", _DATETIME(), nullable=True),
        sa.ForeignKeyConstraint(["grant_id"], ["oauth_grant.id"]),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    op.create_index("ix_oauth_code_grant_id", "oauth_code", ["grant_id"], unique=False)
    op.create_table(
        "oauth_token",
        sa.Column("token_hash", _STRING(), nullable=False),
        sa.Column("kind", _STRING(), nullable=False),
        sa.Column("grant_id", _STRING(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("expires_at", _DATETIME(), nullable=False),
        sa.Column("used_at", _DATETIME(), nullable=True),
        sa.Column("created_at", _DATETIME(), nullable=False),
        sa.ForeignKeyConstraint(["grant_id"], ["oauth_grant.id"]),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_oauth_token_grant_id", "oauth_token", ["grant_id"], unique=False)


def downgrade() -> None:
    op.drop_table("oauth_token")
    op.drop_table("oauth_code")
    op.drop_table("oauth_grant")
    op.drop_table("oauth_pending_authorization")
    op.drop_table("oauth_client")
