"""the edge: TLS an account can require, a webhook's failure visible on the webhook itself

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL: the deployment's default (`GQL_MAIL_REQUIRE_TLS`); accounts registered before keep following it.
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.add_column(sa.Column("smtp_require_tls", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("imap_require_tls", sa.Boolean(), nullable=True))
    with op.batch_alter_table("webhook", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_error", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_delivered_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook", schema=None) as batch_op:
        batch_op.drop_column("last_delivered_at")
        batch_op.drop_column("failing_since")
        batch_op.drop_column("last_error")
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.drop_column("imap_require_tls")
        batch_op.drop_column("smtp_require_tls")
