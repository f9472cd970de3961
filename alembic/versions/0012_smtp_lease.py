"""maxConnections across nodes: each open SMTP connection of a capped account holds a lease row

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "smtp_lease",
        sa.Column("account_id", sa.String(length=256), nullable=False),
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("worker_id", sa.String(length=64), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "slot"),
    )
    op.create_index("ix_smtp_lease_worker_id", "smtp_lease", ["worker_id"])


def downgrade() -> None:
    op.drop_index("ix_smtp_lease_worker_id", table_name="smtp_lease")
    op.drop_table("smtp_lease")
