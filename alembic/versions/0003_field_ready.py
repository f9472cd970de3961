"""field-ready delivery: worker heartbeats, claim owners, stall counts, durable Sent copies, check failures

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worker",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("worker", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_worker_heartbeat_at"), ["heartbeat_at"], unique=False)

    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.add_column(sa.Column("check_failures", sa.Integer(), nullable=False, server_default="0"))

    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch_op.add_column(sa.Column("stalled_count", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("copy_status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True)
        )
        batch_op.add_column(sa.Column("copy_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("copy_next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_outbox_copy_due", ["copy_status", "copy_next_attempt_at"], unique=False)

    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.drop_column("claimed_by")
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_copy_due")
        batch_op.drop_column("copy_next_attempt_at")
        batch_op.drop_column("copy_attempts")
        batch_op.drop_column("copy_status")
        batch_op.drop_column("stalled_count")
        batch_op.drop_column("claimed_by")
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.drop_column("check_failures")
    with op.batch_alter_table("worker", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_worker_heartbeat_at"))
    op.drop_table("worker")
