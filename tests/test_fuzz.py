"""Fuzzing the whole schema with a valid token: no answer may be an INTERNAL_SERVER_ERROR or an HTTP 5xx.

Documents come from hypothesis-graphql (valid ones and ones with one schema violation each); a second
run aims hostile variables at submitMessage on a CONNECTED account, so the composer and the limits are
exercised, not only the "account not found" path. A third aims hostile JSON at the HTTP edge (nesting
around and far past `max_json_depth`, strings of tens of megabytes, hundreds of thousands of keys or
items, generated values in every place a body holds them), a fourth generated messages at the websocket
protocol; neither may leave a traceback in the server's log. Requests are sent from a thread with a
blocking client while the server runs on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import string
from datetime import UTC
from typing import Any

import httpx
import orjson
from graphql import build_schema as parse_sdl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema, nodes

from gql_mail.graphql.schema import export_sdl
from tests.conftest import account_input, register_connected
from tests.harness import Server
from tests.server_log import server_log, tracebacks
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


# --- hostile JSON: huge, deep, many-keyed ---------------------------------------------------------

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=30)),
    lambda children: st.one_of(
        st.lists(children, max_size=8), st.dictionaries(st.text(max_size=12), children, max_size=8)
    ),
    max_leaves=200,
)


def _nested(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    if kind == "object":
        return '{"a":' * depth + "1" + "}" * depth
    return '{"a":[' * (depth // 2) + "1" + "]}" * (depth // 2)


def _hostile_bodies(max_depth: int) -> list[bytes]:
    """Bodies an attacker with a token would try: nesting around and far past the limit, in every place a
    body may hold it; strings of tens of megabytes; objects and lists of hundreds of thousands of items."""
    bodies: list[bytes] = []
    for depth in (max_depth - 2, max_depth + 1, 1000, 200_000):
        for kind in ("array", "object", "mixed"):
            nested = _nested(depth, kind)
            bodies.append(
                ('{"query": "{ accounts { account } }", "variables": {"x": ' + nested + "}}").encode()
            )
            bodies.append(
                ('{"query": "{ accounts { account } }", "extensions": {"x": ' + nested + "}}").encode()
            )
            bodies.append(
                (
                    '{"query": "'
                    + SUBMIT.replace("\n", " ").replace('"', '\\"')
                    + '", "variables": {"a": "fuzz", '
                    '"i": {"to": {"address": "a@example.org"}, "headers": {"X-A": ' + nested + "}}}}"
                ).encode()
            )
    huge = "y" * (30 * 1024 * 1024)
    bodies.append(orjson.dumps({"query": SUBMIT, "variables": {"a": "fuzz", "i": {"text": huge}}}))
    bodies.append(
        orjson.dumps({"query": SUBMIT, "variables": {"a": "fuzz", "i": {"subject": huge[:5_000_000]}}})
    )
    many = {f"k{i}": i for i in range(300_000)}
    bodies.append(orjson.dumps({"query": "{ accounts { account } }", "variables": many}))
    bodies.append(
        orjson.dumps({"query": "{ accounts { account } }", "variables": {"x": list(range(500_000))}})
    )
    headers = {f"X-Fuzz-{i}": "v" for i in range(20_000)}
    bodies.append(
        orjson.dumps(
            {
                "query": SUBMIT,
                "variables": {"a": "fuzz", "i": {"to": {"address": "a@example.org"}, "headers": headers}},
            }
        )
    )
    to = [{"address": f"r{i}@example.org"} for i in range(100_000)]
    bodies.append(orjson.dumps({"query": SUBMIT, "variables": {"a": "fuzz", "i": {"to": to}}}))
    bodies.append(b"[" + b"{}," * 1_000_000 + b"{}]")
    return bodies


def _fuzz_hostile(url: str, token: str, max_depth: int) -> int:
    sent = 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(timeout=120, headers=headers) as client:
        for body in _hostile_bodies(max_depth):
            sent += 1
            _check(client.post(url, content=body), body[:120].decode(errors="replace"))

        @FUZZ
        @given(value=JSON_VALUES, place=st.sampled_from(["variables", "input", "body", "extensions"]))
        def run(value: Any, place: str) -> None:
            nonlocal sent
            sent += 1
            if place == "body":
                raw = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS) if _dumpable(value) else b"{"
            elif place == "input":
                raw = _dumps({"query": SUBMIT, "variables": {"a": "fuzz", "i": value}})
            else:
                raw = _dumps({"query": "{ accounts { account } }", place: value})
            _check(client.post(url, content=raw), raw[:200].decode(errors="replace"))

        run()
    return sent


def _dumpable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


def _dumps(value: Any) -> bytes:
    # json, not orjson: NaN and huge integers go out as Python writes them (invalid JSON to refuse).
    return json.dumps(value).encode()


async def test_fuzz_hostile_json(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("fuzz", smtp_server))
    with server_log() as log:
        sent = await asyncio.to_thread(
            _fuzz_hostile, server.url + "/graphql", server.token, server.settings.max_json_depth
        )
    assert sent >= 80
    assert tracebacks(log) == []


def _fuzz_websocket(url: str, token: str) -> int:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    sent = 0
    init = json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    kinds = st.sampled_from(["subscribe", "complete", "ping", "pong", "connection_init", "next", "x"])
    message = st.one_of(
        JSON_VALUES,
        st.fixed_dictionaries({"type": kinds}, optional={"id": JSON_VALUES, "payload": JSON_VALUES}),
        st.fixed_dictionaries(
            {"type": st.just("subscribe"), "id": st.text(max_size=5)},
            optional={
                "payload": st.fixed_dictionaries(
                    {"query": st.one_of(st.just("subscription { events { event } }"), JSON_VALUES)},
                    optional={"variables": JSON_VALUES, "operationName": JSON_VALUES},
                )
            },
        ),
    )

    @FUZZ
    @given(value=message)
    def run(value: Any) -> None:
        nonlocal sent
        sent += 1
        with connect(url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:  # type: ignore[list-item]
            ws.send(init)
            assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
            try:
                ws.send(_dumps(value).decode())
                ws.send(json.dumps({"type": "ping"}))
                while json.loads(ws.recv(timeout=10)).get("type") != "pong":
                    pass
            except ConnectionClosed:
                assert ws.close_code is not None and 4400 <= ws.close_code < 4500, (value, ws.close_code)

    run()
    return sent


async def test_fuzz_websocket_messages(server: Server) -> None:
    with server_log() as log:
        sent = await asyncio.to_thread(_fuzz_websocket, server.ws_url, server.token)
    assert sent >= 50
    assert tracebacks(log) == []
