"""history: each delivery attempt's duration, and webhook deliveries found by their message

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
# 0009 is on another branch; re-chained when merging.
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("delivery_attempt") as batch:
        batch.add_column(sa.Column("duration_ms", sa.Integer(), nullable=True))
    op.create_index("ix_webhook_delivery_order_key", "webhook_delivery", ["order_key"])


def downgrade() -> None:
    op.drop_index("ix_webhook_delivery_order_key", table_name="webhook_delivery")
    with op.batch_alter_table("delivery_attempt") as batch:
        batch.drop_column("duration_ms")
