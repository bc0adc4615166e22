"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 12:52:47.752893
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "idempotency_record",
        sa.Column("wallet_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("scope", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("request_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("wallet_id", "scope", "key"),
    )
    op.create_table(
        "org",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("plan", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "wallet",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("key_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("key_preview", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("mode", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("balance_micros", sa.BigInteger(), nullable=False),
        sa.Column("held_micros", sa.BigInteger(), nullable=False),
        sa.Column("stripe_customer_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("wallet", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_wallet_key_hash"), ["key_hash"], unique=True)

    op.create_table(
        "webhook_event",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("received_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "hold",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("wallet_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("spend_key_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("request_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("settled_micros", sa.BigInteger(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("resolved_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallet.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("hold", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hold_request_id"), ["request_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_hold_spend_key_id"), ["spend_key_id"], unique=False)
        batch_op.create_index("ix_hold_status_expires", ["status", "expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_hold_wallet_id"), ["wallet_id"], unique=False)

    op.create_table(
        "ledger_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("wallet_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("balance_after_micros", sa.BigInteger(), nullable=False),
        sa.Column("reference", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("memo", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallet.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("wallet_id", "kind", "reference"),
    )
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_entry_wallet_id"), ["wallet_id"], unique=False)

    op.create_table(
        "org_member",
        sa.Column("org_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("wallet_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["org.id"],
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallet.id"],
        ),
        sa.PrimaryKeyConstraint("org_id", "wallet_id"),
        sa.UniqueConstraint("wallet_id"),
    )
    op.create_table(
        "payment",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("wallet_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("method", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("payment_method_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("stripe_payment_intent_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("stripe_checkout_session_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("redirect_url", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("failure_code", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("decline_code", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("failure_message", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("mode", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallet.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_stripe_checkout_session_id"),
            ["stripe_checkout_session_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_payment_stripe_payment_intent_id"),
            ["stripe_payment_intent_id"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_payment_wallet_id"), ["wallet_id"], unique=False)

    op.create_table(
        "payment_method",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("wallet_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("brand", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("last4", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("exp_month", sa.Integer(), nullable=False),
        sa.Column("exp_year", sa.Integer(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallet.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("payment_method", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_method_wallet_id"), ["wallet_id"], unique=False)

    op.create_table(
        "request_record",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("wallet_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("spend_key_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("service", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("endpoint", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("ran", sa.Boolean(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("input_cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("hold_micros", sa.BigInteger(), nullable=False),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("completed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallet.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("request_record", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_request_record_spend_key_id"), ["spend_key_id"], unique=False)
        batch_op.create_index("ix_request_wallet_id", ["wallet_id", "id"], unique=False)

    op.create_table(
        "spend_key",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("wallet_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("key_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("key_preview", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("allowed_providers", sa.JSON(), nullable=True),
        sa.Column("allowed_models", sa.JSON(), nullable=True),
        sa.Column("request_shape", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("spend_limit_micros", sa.BigInteger(), nullable=True),
        sa.Column("spend_cycle", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("request_limit_count", sa.Integer(), nullable=True),
        sa.Column("request_cycle", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("rate_rpm", sa.Integer(), nullable=True),
        sa.Column("rate_burst", sa.Integer(), nullable=True),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("cycle_started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("cycle_spend_micros", sa.BigInteger(), nullable=False),
        sa.Column("held_micros", sa.BigInteger(), nullable=False),
        sa.Column("request_cycle_started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("cycle_requests", sa.Integer(), nullable=False),
        sa.Column("held_requests", sa.Integer(), nullable=False),
        sa.Column("total_spend_micros", sa.BigInteger(), nullable=False),
        sa.Column("total_requests", sa.Integer(), nullable=False),
        sa.Column("last_used_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallet.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("spend_key", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_spend_key_key_hash"), ["key_hash"], unique=True)
        batch_op.create_index(batch_op.f("ix_spend_key_wallet_id"), ["wallet_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("spend_key", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_spend_key_wallet_id"))
        batch_op.drop_index(batch_op.f("ix_spend_key_key_hash"))

    op.drop_table("spend_key")
    with op.batch_alter_table("request_record", schema=None) as batch_op:
        batch_op.drop_index("ix_request_wallet_id")
        batch_op.drop_index(batch_op.f("ix_request_record_spend_key_id"))

    op.drop_table("request_record")
    with op.batch_alter_table("payment_method", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_method_wallet_id"))

    op.drop_table("payment_method")
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_wallet_id"))
        batch_op.drop_index(batch_op.f("ix_payment_stripe_payment_intent_id"))
        batch_op.drop_index(batch_op.f("ix_payment_stripe_checkout_session_id"))

    op.drop_table("payment")
    op.drop_table("org_member")
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entry_wallet_id"))

    op.drop_table("ledger_entry")
    with op.batch_alter_table("hold", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hold_wallet_id"))
        batch_op.drop_index("ix_hold_status_expires")
        batch_op.drop_index(batch_op.f("ix_hold_spend_key_id"))
        batch_op.drop_index(batch_op.f("ix_hold_request_id"))

    op.drop_table("hold")
    op.drop_table("webhook_event")
    with op.batch_alter_table("wallet", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wallet_key_hash"))

    op.drop_table("wallet")
    op.drop_table("org")
    op.drop_table("idempotency_record")
