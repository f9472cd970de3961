"""Read operations: translate arguments, call a service, wrap rows in output types."""

from __future__ import annotations

from datetime import datetime

import strawberry

from gql_mail import models
from gql_mail.graphql.connections import AccountConnection, OutboxConnection
from gql_mail.graphql.context import Info
from gql_mail.graphql.types import Account, AccountState, OAuth2App, OutboxMessage, Webhook
from gql_mail.services import accounts, cursors, oauth2_apps, outbox, webhooks


@strawberry.type
class Query:
    @strawberry.field(description="NOT_FOUND error for an unknown account id.")
    async def account(self, info: Info, account: strawberry.ID) -> Account | None:
        return Account.from_row(await accounts.get_account(info.context.runtime, str(account)))

    @strawberry.field
    async def accounts(self, info: Info) -> list[Account]:
        return [Account.from_row(r) for r in await accounts.list_accounts(info.context.runtime)]

    @strawberry.field(description="Queued, scheduled and recent messages, optionally of one account.")
    async def outbox(
        self,
        info: Info,
        account: strawberry.ID | None = None,
        status: list[str] | None = None,
        limit: int = 1000,
    ) -> list[OutboxMessage]:
        rows = await outbox.list_outbox(
            info.context.runtime, str(account) if account else None, statuses=status, limit=limit
        )
        return [OutboxMessage.from_row(r) for r in rows]

    @strawberry.field(
        description="The outbox listing (as `outbox`: given statuses, else active messages and those "
        "finished in the last 24 hours), newest first, a page at a time. `first` is 1 to "
        f"{cursors.MAX_FIRST}; `after` is an endCursor from an earlier page; createdFrom is inclusive, "
        "createdTo exclusive; recipient matches one envelope recipient exactly (case-insensitive)."
    )
    async def outbox_connection(
        self,
        info: Info,
        account: strawberry.ID | None = None,
        status: list[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        recipient: str | None = None,
        first: int = cursors.DEFAULT_FIRST,
        after: str | None = None,
    ) -> OutboxConnection:
        f = outbox.OutboxFilter(
            account_id=str(account) if account else None,
            statuses=status,
            created_from=created_from,
            created_to=created_to,
            recipient=recipient,
        )
        page = await outbox.outbox_after(info.context.runtime, f, first=first, after=after)
        return OutboxConnection.from_page(page, f)

    @strawberry.field(
        description="The accounts in registration order, a page at a time; optionally only those in "
        "`state`, and those whose id, name or email contains `query` (case-insensitive)."
    )
    async def accounts_connection(
        self,
        info: Info,
        state: AccountState | None = None,  # type: ignore[valid-type]
        query: str | None = None,
        first: int = cursors.DEFAULT_FIRST,
        after: str | None = None,
    ) -> AccountConnection:
        wanted = models.AccountState(state) if state is not None else None
        page = await accounts.accounts_after(
            info.context.runtime, first=first, after=after, state=wanted, query=query
        )
        return AccountConnection.from_page(page, wanted, query)

    @strawberry.field(description="One message of the outbox by its queue id.")
    async def message(self, info: Info, queue_id: strawberry.ID) -> OutboxMessage:
        return OutboxMessage.from_row(await outbox.get_message(info.context.runtime, str(queue_id)))

    @strawberry.field
    async def webhooks(self, info: Info) -> list[Webhook]:
        return [Webhook.from_row(r) for r in await webhooks.list_webhooks(info.context.runtime)]

    @strawberry.field(name="oauth2Apps", description="The registered OAuth2 applications.")
    async def oauth2_apps(self, info: Info) -> list[OAuth2App]:
        return [OAuth2App.from_row(r) for r in await oauth2_apps.list_apps(info.context.runtime)]

    @strawberry.field(name="oauth2App", description="NOT_FOUND error for an unknown app id.")
    async def oauth2_app(self, info: Info, id: strawberry.ID) -> OAuth2App:
        return OAuth2App.from_row(await oauth2_apps.get_app(info.context.runtime, str(id)))
