"""OAuth2 mailboxes: the oauth2_app table, and the account's OAuth2 app, user and tokens

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "oauth2_app",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", _TEXT(length=256), nullable=False),
        sa.Column("description", _TEXT(), nullable=True),
        sa.Column("provider", _TEXT(length=32), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("client_id", _TEXT(length=1024), nullable=False),
        sa.Column("client_secret_enc", _TEXT(), nullable=True),
        sa.Column("base_scopes", _TEXT(length=16), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("redirect_url", _TEXT(), nullable=True),
        sa.Column("authority", _TEXT(length=256), nullable=True),
        sa.Column("token_url", _TEXT(), nullable=True),
        sa.Column("authorize_url", _TEXT(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("oauth2_app_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("oauth2_user", _TEXT(length=512), nullable=True))
        batch.add_column(sa.Column("oauth2_access_token_enc", _TEXT(), nullable=True))
        batch.add_column(sa.Column("oauth2_refresh_token_enc", _TEXT(), nullable=True))
        batch.add_column(sa.Column("oauth2_expires", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("oauth2_token_version", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("oauth2_refreshing_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("oauth2_failures", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("oauth2_retry_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("oauth2_error", _TEXT(), nullable=True))
        batch.create_foreign_key(
            "fk_account_oauth2_app", "oauth2_app", ["oauth2_app_id"], ["id"], ondelete="RESTRICT"
        )


def downgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.drop_constraint("fk_account_oauth2_app", type_="foreignkey")
        for column in (
            "oauth2_error",
            "oauth2_retry_at",
            "oauth2_failures",
            "oauth2_refreshing_until",
            "oauth2_token_version",
            "oauth2_expires",
            "oauth2_refresh_token_enc",
            "oauth2_access_token_enc",
            "oauth2_user",
            "oauth2_app_id",
        ):
            batch.drop_column(column)
    op.drop_table("oauth2_app")
