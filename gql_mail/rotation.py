"""Re-encrypting every stored secret under a new `GQL_MAIL_SECRET`.

Run `gql-mail rotate-secret --new-secret NEW` with the old secret still configured (or `--old-secret`),
then restart with GQL_MAIL_SECRET=NEW. Values already under the new key are left as they are, so an
interrupted run can simply be repeated.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from gql_mail.config import Settings
from gql_mail.crypto import SecretBox, load_or_create_secret
from gql_mail.db import Database
from gql_mail.log_redaction import register_secret
from gql_mail.migrations import upgrade
from gql_mail.models import Account, OAuth2App, ServiceSetting, Webhook

ENCRYPTED_COLUMNS: dict[type, tuple[str, ...]] = {
    Account: (
        "smtp_pass_enc",
        "smtp_token_enc",
        "imap_pass_enc",
        "imap_token_enc",
        "oauth2_access_token_enc",
        "oauth2_refresh_token_enc",
    ),
    OAuth2App: ("client_secret_enc",),
    Webhook: ("secret_enc",),
    ServiceSetting: ("value_enc",),
}


async def rotate_secret(settings: Settings, *, old_secret: str | None, new_secret: str) -> int:
    old, _ = load_or_create_secret(old_secret or settings.secret_value(), settings.data_dir)
    register_secret(old)
    register_secret(new_secret)
    box = SecretBox(new_secret, old)
    await upgrade(settings.database_url)
    db = Database(settings.database_url)
    changed = 0
    try:
        async with db.write() as session:
            for model, columns in ENCRYPTED_COLUMNS.items():
                rows: list[Any] = list((await session.execute(select(model))).scalars())
                for row in rows:
                    for column in columns:
                        stored = getattr(row, column)
                        if stored and not box.is_current(stored):
                            setattr(row, column, box.encrypt(box.decrypt(stored)))
                            changed += 1
    finally:
        await db.dispose()
    return changed
