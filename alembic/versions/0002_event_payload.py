"""event_payload: events too large for a PostgreSQL NOTIFY, relayed by id

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_payload",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("event_payload", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_payload_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("event_payload", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_payload_created_at"))
    op.drop_table("event_payload")
