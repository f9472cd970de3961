"""per-message Sent folder (EmailEngine's submit `sentMailPath`, over the account's) and subject (its
outbox entries show it; the body is dropped once a message is done)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_message") as batch:
        batch.add_column(sa.Column("sent_mail_path", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("subject", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox_message") as batch:
        batch.drop_column("subject")
        batch.drop_column("sent_mail_path")
