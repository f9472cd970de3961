"""Relay connections over the outbox and the accounts: `edges { cursor node }`, `pageInfo`, `totalCount`.

The services page (keyset, cursors, bounds); these types only wrap a page. `totalCount` is counted only when
asked for: it is a second query over every matching row."""

from __future__ import annotations

from typing import Any

import strawberry

from gql_mail import models
from gql_mail.graphql.context import Info
from gql_mail.graphql.types import Account, OutboxMessage
from gql_mail.services import accounts, cursors, outbox


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None
    has_previous_page: bool = strawberry.field(
        description="Always false: these connections page forwards only (first/after)."
    )
    start_cursor: str | None


def _page_info(page: cursors.CursorPage[Any]) -> PageInfo:
    return PageInfo(
        has_next_page=page.has_next,
        end_cursor=page.end_cursor,
        has_previous_page=False,
        start_cursor=page.edges[0][0] if page.edges else None,
    )


@strawberry.type
class OutboxEdge:
    cursor: str
    node: OutboxMessage


@strawberry.type
class OutboxConnection:
    edges: list[OutboxEdge]
    page_info: PageInfo
    filter: strawberry.Private[outbox.OutboxFilter]

    @strawberry.field(description="Messages the filter lists on all pages.")
    async def total_count(self, info: Info) -> int:
        return await outbox.count_outbox(info.context.runtime, self.filter)

    @classmethod
    def from_page(
        cls, page: cursors.CursorPage[models.OutboxMessage], f: outbox.OutboxFilter
    ) -> OutboxConnection:
        return cls(
            edges=[OutboxEdge(cursor=c, node=OutboxMessage.from_row(r)) for c, r in page.edges],
            page_info=_page_info(page),
            filter=f,
        )


@strawberry.type
class AccountEdge:
    cursor: str
    node: Account


@strawberry.type
class AccountConnection:
    edges: list[AccountEdge]
    page_info: PageInfo
    state: strawberry.Private[models.AccountState | None]
    query: strawberry.Private[str | None]

    @strawberry.field(description="Accounts the filter lists on all pages.")
    async def total_count(self, info: Info) -> int:
        return await accounts.count_accounts(info.context.runtime, state=self.state, query=self.query)

    @classmethod
    def from_page(
        cls, page: cursors.CursorPage[models.Account], state: models.AccountState | None, query: str | None
    ) -> AccountConnection:
        return cls(
            edges=[AccountEdge(cursor=c, node=Account.from_row(r)) for c, r in page.edges],
            page_info=_page_info(page),
            state=state,
            query=query,
        )
