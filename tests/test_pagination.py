"""Cursor paging of the outbox and the accounts through GraphQL: every row seen once over 2,500 messages,
stable while messages arrive, the filters, and the coded errors for a bad cursor or page size."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from gql_mail.mail.compose import Address
from gql_mail.services.outbox import cancel_message, submit_message
from gql_mail.services.submission import SubmitSpec
from tests.conftest import account_input, register_connected
from tests.harness import GraphQLErrors, Server
from tests.servers.smtp import SmtpServer

OUTBOX = """
query Page($first: Int, $after: String, $account: ID, $status: [String!], $recipient: String,
           $from: DateTime, $to: DateTime) {
  outboxConnection(first: $first, after: $after, account: $account, status: $status, recipient: $recipient,
                   createdFrom: $from, createdTo: $to) {
    totalCount
    edges { cursor node { queueId account status envelope { to } } }
    pageInfo { hasNextPage endCursor }
  }
}"""
ACCOUNTS = """
query Page($first: Int, $after: String, $state: AccountState) {
  accountsConnection(first: $first, after: $after, state: $state) {
    totalCount edges { cursor node { account } } pageInfo { hasNextPage endCursor }
  }
}"""


async def submit(server: Server, account: str, *to: str) -> str:
    """Through the service a submission goes through (validation, compose, group commit), scheduled a day
    ahead so the messages stay queued while the test pages over them."""
    rt = server.runtime
    spec = SubmitSpec(
        to=[Address(a) for a in to or ("to@example.org",)],
        subject="Hi",
        text="Hello",
        send_at=rt.clock.now() + timedelta(days=1),
    )
    return (await submit_message(rt, account, spec)).queue_id


async def outbox_page(server: Server, **variables: Any) -> dict[str, Any]:
    page: dict[str, Any] = (await server.gql(OUTBOX, variables))["outboxConnection"]
    return page


async def all_ids(server: Server, **variables: Any) -> list[str]:
    ids: list[str] = []
    after = None
    while True:
        page = await outbox_page(server, first=500, after=after, **variables)
        ids += [e["node"]["queueId"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return ids
        after = page["pageInfo"]["endCursor"]


async def test_paging_through_2500_messages_sees_each_once(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("bulk", smtp_server))
    submitted: list[str] = []
    for _ in range(25):
        submitted += await asyncio.gather(*(submit(server, "bulk") for _ in range(100)))

    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = await outbox_page(server, first=500, after=after)
        assert page["totalCount"] == 2500 + min(pages, 1), "counted over every page, now included"
        seen += [e["node"]["queueId"] for e in page["edges"]]
        pages += 1
        if pages == 1:
            # Arrives between pages: newer than every row listed, so it never shifts one onto two pages.
            await submit(server, "bulk")
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert pages == 5
    assert len(seen) == len(set(seen)) == 2500
    assert set(seen) == set(submitted)
    assert seen == sorted(seen, reverse=True), "newest first"


async def test_filters(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("one", smtp_server))
    await register_connected(server, account_input("two", smtp_server))
    early = [await submit(server, "one", "ann@example.org", "bob@example.org") for _ in range(3)]
    middle = server.clock.advance(60)
    late_one = [await submit(server, "one", "Carl@Example.org") for _ in range(2)]
    late_two = [await submit(server, "two", "ann@example.org") for _ in range(4)]
    assert await cancel_message(server.runtime, late_two[0])

    assert set(await all_ids(server, account="two")) == set(late_two)
    assert set(await all_ids(server, status=["cancelled"])) == {late_two[0]}
    assert set(await all_ids(server, recipient="ANN@example.org")) == {*early, *late_two}
    assert set(await all_ids(server, recipient="carl@example.org")) == set(late_one)
    assert await all_ids(server, recipient="nn@example.org") == [], "a whole address, not a substring"
    assert set(await all_ids(server, **{"from": middle.isoformat()})) == {*late_one, *late_two}
    assert set(await all_ids(server, to=middle.isoformat())) == set(early)
    both = await outbox_page(
        server, account="one", recipient="ann@example.org", to=middle.isoformat(), first=2
    )
    assert both["totalCount"] == 3 and len(both["edges"]) == 2 and both["pageInfo"]["hasNextPage"]
    rest = await outbox_page(
        server,
        account="one",
        recipient="ann@example.org",
        to=middle.isoformat(),
        after=both["pageInfo"]["endCursor"],
    )
    assert len(rest["edges"]) == 1 and not rest["pageInfo"]["hasNextPage"]


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"first": 0}, "first"),
        ({"first": 501}, "first"),
        ({"after": "not a cursor!"}, "after"),
        ({"after": "b3V0Ym94"}, "after"),  # "outbox" with no key
        ({"status": ["bounced"]}, "status"),
    ],
)
async def test_bad_paging_input_is_coded(server: Server, variables: dict[str, Any], field: str) -> None:
    with pytest.raises(GraphQLErrors) as refused:
        await outbox_page(server, **variables)
    assert refused.value.codes == ["BAD_USER_INPUT"]
    assert refused.value.errors[0]["extensions"]["field"] == field


async def test_accounts_connection(server: Server, smtp_server: SmtpServer) -> None:
    names = [f"acc{i}" for i in range(7)]
    for name in names:
        await register_connected(server, account_input(name, smtp_server))
        if name == "acc3":  # the others share a registration time: the id breaks the tie across pages
            server.clock.advance(1)
    seen: list[str] = []
    after = None
    while True:
        page = (await server.gql(ACCOUNTS, {"first": 3, "after": after}))["accountsConnection"]
        assert page["totalCount"] == 7
        seen += [e["node"]["account"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == names, "registration order, each once"
    none = (await server.gql(ACCOUNTS, {"state": "NEW"}))["accountsConnection"]
    assert none["totalCount"] == 0 and none["edges"] == []

    with pytest.raises(GraphQLErrors) as refused:
        await outbox_page(server, after=after)
    assert refused.value.codes == ["BAD_USER_INPUT"], "an accounts cursor is not an outbox one"
