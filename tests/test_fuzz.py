"""Fuzzing the whole schema with a valid token: no answer may be an INTERNAL_SERVER_ERROR or an HTTP 5xx.

Documents come from hypothesis-graphql (valid ones and ones with one schema violation each); a second
run aims hostile variables at submitMessage on a CONNECTED account, so the composer and the limits are
exercised, not only the "account not found" path. Requests are sent from a thread with a blocking
client while the server runs on the event loop.
"""

from __future__ import annotations

import asyncio
import string
from datetime import UTC
from typing import Any

import httpx
from graphql import build_schema as parse_sdl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema, nodes

from gql_mail.graphql.schema import export_sdl
from tests.conftest import account_input, register_connected
from tests.harness import Server
from tests.servers.smtp import SmtpServer

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

SCALARS = {
    "DateTime": st.one_of(
        st.datetimes(timezones=st.just(UTC)).map(lambda d: nodes.String(d.isoformat())),
        st.text(max_size=30).map(nodes.String),
    ),
    "JSON": st.one_of(
        st.text(max_size=40).map(nodes.String),
        st.integers(-(2**40), 2**40).map(nodes.Int),
        st.lists(
            st.tuples(
                st.text(string.ascii_letters + "-\r\n :", min_size=0, max_size=12),
                st.text(max_size=40),
            ),
            max_size=4,
        ).map(
            lambda kv: nodes.Object(
                [
                    __import__("graphql").ObjectFieldNode(
                        name=__import__("graphql").NameNode(value=k or "x"), value=nodes.String(v)
                    )
                    for k, v in kv
                    if k.isidentifier()
                ]
            )
        ),
    ),
}


def _check(response: httpx.Response, document: str, variables: Any = None) -> None:
    assert response.status_code < 500, (response.status_code, document, variables, response.text[:500])
    if response.headers.get("content-type", "").startswith("application/json"):
        for error in response.json().get("errors") or []:
            code = (error.get("extensions") or {}).get("code")
            assert code is not None, (document, variables, error)
            assert code != "INTERNAL_SERVER_ERROR", (document, variables, error)
            assert "Traceback" not in error.get("message", "")


def _fuzz_schema(url: str, token: str) -> int:
    schema = parse_sdl(export_sdl())
    headers = {"Authorization": f"Bearer {token}"}
    sent = 0
    with httpx.Client(timeout=30, headers=headers) as client:
        for mode in (Mode.POSITIVE, Mode.NEGATIVE):
            for root in ("query", "mutation"):
                if root == "mutation":
                    from hypothesis_graphql import mutations

                    strategy = mutations(schema, custom_scalars=SCALARS, mode=mode)
                else:
                    strategy = from_schema(schema, custom_scalars=SCALARS, mode=mode)

                @FUZZ
                @given(document=strategy)
                def run(document: str) -> None:
                    nonlocal sent
                    sent += 1
                    _check(client.post(url, json={"query": document}), document)

                run()
    return sent


ADDRESS = st.fixed_dictionaries(
    {"address": st.one_of(st.emails(), st.text(max_size=30))},
    optional={"name": st.one_of(st.none(), st.text(max_size=80))},
)
SUBMIT_INPUT = st.fixed_dictionaries(
    {},
    optional={
        "from": ADDRESS,
        "to": st.one_of(ADDRESS, st.lists(ADDRESS, max_size=5)),
        "cc": st.lists(ADDRESS, max_size=3),
        "bcc": st.lists(ADDRESS, max_size=3),
        "replyTo": st.lists(ADDRESS, max_size=2),
        "subject": st.one_of(st.none(), st.text(max_size=300)),
        "text": st.one_of(st.none(), st.text(max_size=2000)),
        "html": st.one_of(st.none(), st.text(max_size=2000)),
        "attachments": st.lists(
            st.fixed_dictionaries(
                {
                    "content": st.one_of(
                        st.binary(max_size=200).map(lambda b: __import__("base64").b64encode(b).decode()),
                        st.text(max_size=40),
                    )
                },
                optional={
                    "filename": st.one_of(st.none(), st.text(max_size=60)),
                    "contentType": st.one_of(st.none(), st.text(max_size=40), st.just("text/plain")),
                    "cid": st.one_of(st.none(), st.text(max_size=30)),
                },
            ),
            max_size=3,
        ),
        "headers": st.one_of(
            st.none(),
            st.dictionaries(
                st.text(max_size=20),
                st.one_of(st.text(max_size=60), st.integers(), st.booleans()),
                max_size=3,
            ),
            st.lists(st.integers(), max_size=2),
            st.text(max_size=10),
        ),
        "messageId": st.one_of(st.none(), st.text(max_size=60)),
        "sendAt": st.one_of(st.none(), st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())),
        "deliveryAttempts": st.one_of(st.none(), st.integers(-5, 200)),
        "copy": st.one_of(st.none(), st.booleans()),
        "idempotencyKey": st.one_of(st.none(), st.text(max_size=40)),
    },
)
SUBMIT = """mutation S($a: ID!, $i: SubmitMessageInput!) {
  submitMessage(account: $a, input: $i) { response messageId sendAt queueId } }"""


def _fuzz_submit(url: str, token: str) -> int:
    sent = 0
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {token}"}) as client:

        @FUZZ
        @given(variables=SUBMIT_INPUT)
        def run(variables: dict[str, Any]) -> None:
            nonlocal sent
            sent += 1
            body = {"query": SUBMIT, "variables": {"a": "fuzz", "i": variables}}
            _check(client.post(url, json=body), SUBMIT, variables)

        run()
    return sent


async def test_fuzz_whole_schema(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("fuzz", smtp_server))
    sent = await asyncio.to_thread(_fuzz_schema, server.url + "/graphql", server.token)
    assert sent >= 200


async def test_fuzz_submit_message(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("fuzz", smtp_server))
    sent = await asyncio.to_thread(_fuzz_submit, server.url + "/graphql", server.token)
    assert sent >= 50
