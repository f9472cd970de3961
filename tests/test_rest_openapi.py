"""`/v1/openapi.json` and `/v1/docs` against a real server: the document is valid OpenAPI 3.1, names every
route and method of the REST router, and real answers validate against the schemas it documents; the
Swagger UI page loads everything from gql-mail itself."""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import timedelta
from typing import Any, cast

import httpx
import jsonschema
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from pydantic import BaseModel
from starlette.routing import Mount, Route, Router

from gql_mail.events import iso
from gql_mail.models import AccessToken
from gql_mail.rest.docs import STATIC_DIR, VERSION_DIR
from gql_mail.rest.endpoint import Operation, Resource
from gql_mail.rest.openapi import openapi_document
from tests.harness import Server
from tests.rest_client import rest, wait_state
from tests.servers.smtp import SmtpServer

_ASSET_RE = re.compile(r"""\b(?:src|href)\s*=\s*"([^"]*)\"""", re.IGNORECASE)


async def _document(server: Server) -> dict[str, Any]:
    response = await server.http.get(server.url + "/v1/openapi.json")  # no token, as EmailEngine
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = response.json()
    return document


def _rest_router(server: Server) -> Router:
    (mount,) = [r for r in server.app.routes if isinstance(r, Mount) and r.path == "/v1"]
    return cast(Router, mount.app)


def _check(document: dict[str, Any], path: str, method: str, status: str, answer: httpx.Response) -> None:
    """`answer` has `status` and its JSON validates against what the document says `method path` answers."""
    assert str(answer.status_code) == status, answer.text
    documented = document["paths"][path][method.lower()]["responses"][status]
    schema = documented["content"]["application/json"]["schema"]
    # The $refs point into the document's components: validate from a root that holds them.
    root = {**schema, "components": document["components"]}
    jsonschema.Draft202012Validator(root).validate(answer.json())


async def test_the_document_is_valid_openapi_3_1(server: Server) -> None:
    document = await _document(server)
    assert document["openapi"] == "3.1.0"
    validate(document)  # by the version it names
    OpenAPIV31SpecValidator(document).validate()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearerAuth"]["description"],
    }
    assert (schemes["accessToken"]["in"], schemes["accessToken"]["name"]) == ("query", "access_token")


async def test_every_route_and_method_is_in_the_document(server: Server) -> None:
    document = await _document(server)
    seen = set()
    for route in _rest_router(server).routes:
        if not (isinstance(route, Route) and isinstance(route.endpoint, Resource)):
            continue
        path = "/v1" + route.path
        assert path in document["paths"], path
        for method, operation in route.endpoint.operations.items():
            spec = document["paths"][path][method.lower()]
            seen.add((path, method.lower()))
            names = {p["name"] for p in spec["parameters"] if p["in"] == "path"}
            assert names == set(route.param_convertors), path
            query = {p["name"] for p in spec["parameters"] if p["in"] == "query"}
            assert query == {f.alias or n for n, f in operation.query.model_fields.items()}, path
            assert ("requestBody" in spec) == (operation.body is not None), path
            assert "401" in spec["responses"] and "400" in spec["responses"]
            assert ("403" in spec["responses"]) == operation.write, path
    documented = {(p, m) for p, methods in document["paths"].items() for m in methods}
    assert documented == seen
    assert len(seen) >= 7


def test_a_route_added_to_a_router_is_documented_with_no_other_step() -> None:
    class Body(BaseModel):
        name: str

    class Query(BaseModel):
        limit: int = 5

    class Answer(BaseModel):
        done: bool

    async def handler(call: Any) -> dict[str, Any]:
        """Does a thing."""
        return {"done": True}

    operation = Operation(handler, write=True, body=Body, query=Query, response=Answer)
    router = Router(routes=[Route("/thing/{thing}", Resource(cast(Any, None), {"POST": operation}))])
    document = openapi_document(router.routes)
    validate(document)
    spec = document["paths"]["/v1/thing/{thing}"]["post"]
    assert spec["description"] == "Does a thing."
    assert spec["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Body"
    }
    assert [(p["name"], p["in"]) for p in spec["parameters"]] == [("thing", "path"), ("limit", "query")]
    assert spec["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Answer"
    }
    assert sorted(spec["responses"]) == ["200", "400", "401", "403", "404", "408", "413"]


def test_operation_ids_stay_unique_when_handlers_share_a_name() -> None:
    async def handler(call: Any) -> dict[str, Any]:
        return {}

    resource = Resource(
        cast(Any, None), {"GET": Operation(handler), "DELETE": Operation(handler, write=True)}
    )
    document = openapi_document(Router(routes=[Route("/a/{id}", resource)]).routes)
    validate(document)  # refuses duplicate operationIds
    operations = document["paths"]["/v1/a/{id}"]
    assert {operations["get"]["operationId"], operations["delete"]["operationId"]} == {
        "handler",
        "get_v1_a_id_",
    }


async def test_real_answers_validate_against_the_documented_schemas(
    server: Server, smtp_server: SmtpServer
) -> None:
    document = await _document(server)
    body = {
        "account": "doc",
        "name": "Doc",
        "email": "doc@example.com",
        "smtp": {
            "host": smtp_server.host,
            "port": smtp_server.port,
            "auth": {"user": smtp_server.user, "pass": smtp_server.password},
        },
    }
    _check(document, "/v1/account", "POST", "200", await rest(server, "POST", "/account", json=body))
    await wait_state(server, "doc", "connected")
    _check(document, "/v1/account/{account}", "GET", "200", await rest(server, "GET", "/account/doc"))
    _check(document, "/v1/accounts", "GET", "200", await rest(server, "GET", "/accounts"))
    listed = await rest(server, "GET", "/accounts", params={"state": "connected", "query": "doc"})
    _check(document, "/v1/accounts", "GET", "200", listed)
    update = await rest(server, "PUT", "/account/doc", json={"name": "Renamed"})
    _check(document, "/v1/account/{account}", "PUT", "200", update)
    reconnect = await rest(server, "PUT", "/account/doc/reconnect", json={"reconnect": False})
    _check(document, "/v1/account/{account}/reconnect", "PUT", "200", reconnect)
    await wait_state(server, "doc", "connected")  # an update checks the account again
    message = {"from": {"address": "doc@example.com"}, "to": [{"address": "to@example.org"}], "text": "hi"}
    submit = "/v1/account/{account}/submit"
    queued = await rest(
        server, "POST", "/account/doc/submit", json=message, headers={"Idempotency-Key": "k1"}
    )
    _check(document, submit, "POST", "200", queued)
    assert queued.json()["idempotency"] == {"key": "k1", "status": "MISS"}
    _check(document, submit, "POST", "200", await rest(server, "POST", "/account/doc/submit", json=message))
    dry = await rest(server, "POST", "/account/doc/submit", json={**message, "dryRun": True})
    _check(document, submit, "POST", "200", dry)
    assert dry.json()["response"] == "Dry run"
    # Errors are the documented Boom bodies.
    _check(document, submit, "POST", "400", await rest(server, "POST", "/account/doc/submit", json={"x": 1}))
    _check(document, submit, "POST", "401", await rest(server, "POST", "/account/doc/submit", token=None))
    _check(document, "/v1/account/{account}", "GET", "404", await rest(server, "GET", "/account/nobody"))
    _check(document, "/v1/account/{account}", "DELETE", "200", await rest(server, "DELETE", "/account/doc"))


async def _done(server: Server, queue_id: str) -> httpx.Response:
    """`GET /v1/outbox/{queue_id}` once the message has left the queue (sent or failed), bounded."""
    async with asyncio.timeout(15):
        while True:
            entry = await rest(server, "GET", f"/outbox/{queue_id}")
            if entry.json()["progress"]["status"] in ("submitted", "error"):
                return entry
            await asyncio.sleep(0.05)


async def test_real_outbox_settings_stats_and_token_answers_validate_against_the_documented_schemas(
    server: Server, smtp_server: SmtpServer
) -> None:
    """Each of these operations' real answers, in each shape it takes (keys that are there only sometimes
    included), validates against its documented 200 schema."""
    document = await _document(server)
    body = {
        "account": "ob",
        "name": "Outbox",
        "email": "ob@example.com",
        "smtp": {
            "host": smtp_server.host,
            "port": smtp_server.port,
            "auth": {"user": smtp_server.user, "pass": smtp_server.password},
        },
    }
    assert (await rest(server, "POST", "/account", json=body)).status_code == 200
    await wait_state(server, "ob", "connected")

    # The outbox: a scheduled message (queued, then cancelled), a sent one, and one refused for good.
    smtp_server.reject_recipients({"bad@example.org": (550, "5.1.1 User unknown")})
    message = {"from": {"address": "ob@example.com"}, "subject": "s", "text": "x"}
    later = iso(server.runtime.clock.now() + timedelta(hours=1))
    submitted = {}
    for name, extra in (
        ("later", {"to": [{"address": "to@example.org"}], "sendAt": later}),
        ("sent", {"to": [{"address": "to@example.org"}]}),
        ("failed", {"to": [{"address": "bad@example.org"}]}),
    ):
        answer = await rest(server, "POST", "/account/ob/submit", json={**message, **extra})
        assert answer.status_code == 200, answer.text
        submitted[name] = answer.json()["queueId"]
    entry = "/v1/outbox/{queueId}"
    queued = await rest(server, "GET", f"/outbox/{submitted['later']}")
    _check(document, entry, "GET", "200", queued)
    assert queued.json()["progress"] == {"status": "queued"}
    sent = await _done(server, submitted["sent"])
    _check(document, entry, "GET", "200", sent)
    assert set(sent.json()["progress"]) == {"status", "response", "messageId"}
    failed = await _done(server, submitted["failed"])
    _check(document, entry, "GET", "200", failed)
    assert failed.json()["progress"]["error"]["statusCode"] == 550
    _check(document, "/v1/outbox", "GET", "200", await rest(server, "GET", "/outbox"))
    cancel = await rest(server, "DELETE", f"/outbox/{submitted['later']}")
    _check(document, entry, "DELETE", "200", cancel)
    assert cancel.json() == {"deleted": True}
    _check(document, entry, "DELETE", "200", await rest(server, "DELETE", f"/outbox/{submitted['later']}"))
    _check(document, entry, "GET", "200", await rest(server, "GET", f"/outbox/{submitted['later']}"))
    listed = await rest(server, "GET", "/outbox", params={"pageSize": 2, "page": 1})
    _check(document, "/v1/outbox", "GET", "200", listed)
    _check(document, entry, "GET", "404", await rest(server, "GET", "/outbox/nothing-here"))

    # Settings: none asked for, all asked for, before and after a webhook is set.
    every = {"webhooks": "true", "webhooksEnabled": "true", "webhookEvents": "true", "serviceSecret": "true"}
    every["eventTypes"] = "true"
    _check(document, "/v1/settings", "GET", "200", await rest(server, "GET", "/settings"))
    _check(document, "/v1/settings", "GET", "200", await rest(server, "GET", "/settings", params=every))
    settings = {
        "webhooks": "https://hooks.example.com/ee",
        "webhooksEnabled": True,
        "webhookEvents": ["messageSent"],
        "serviceSecret": "a-secret-of-enough-length",
    }
    _check(document, "/v1/settings", "POST", "200", await rest(server, "POST", "/settings", json=settings))
    shown = await rest(server, "GET", "/settings", params=every)
    _check(document, "/v1/settings", "GET", "200", shown)
    assert shown.json()["webhooks"] == settings["webhooks"]

    _check(document, "/v1/stats", "GET", "200", await rest(server, "GET", "/stats"))

    # Tokens, by both paths; one marked used, as the listing shows `access` only for those.
    made = await rest(server, "POST", "/tokens", json={"description": "new path"})
    _check(document, "/v1/tokens", "POST", "200", made)
    old = await rest(server, "POST", "/token", json={"description": "old path", "scopes": ["read"]})
    _check(document, "/v1/token", "POST", "200", old)
    async with server.runtime.db.write() as session:
        row = await session.get(AccessToken, made.json()["id"])
        assert row is not None
        row.last_used_at = server.runtime.clock.now()
    tokens = await rest(server, "GET", "/tokens")
    _check(document, "/v1/tokens", "GET", "200", tokens)
    assert ["access" in t for t in tokens.json()["tokens"]].count(True) == 1
    by_id = await rest(server, "DELETE", f"/tokens/{made.json()['id']}")
    _check(document, "/v1/tokens/{token}", "DELETE", "200", by_id)
    by_token = await rest(server, "DELETE", f"/token/{old.json()['token']}")
    _check(document, "/v1/token/{token}", "DELETE", "200", by_token)
    assert (by_id.json(), by_token.json()) == ({"deleted": True}, {"deleted": True})
    _check(document, "/v1/tokens/{token}", "DELETE", "200", await rest(server, "DELETE", "/tokens/unknown"))


async def test_every_operation_documents_its_answer(server: Server) -> None:
    """No operation of the router goes without an answer model, so none is undocumented in the document
    (and the test above cannot miss one)."""
    document = await _document(server)
    missing = []
    for route in _rest_router(server).routes:
        if not (isinstance(route, Route) and isinstance(route.endpoint, Resource)):
            continue
        for method, operation in route.endpoint.operations.items():
            answer = document["paths"]["/v1" + route.path][method.lower()]["responses"]["200"]
            if operation.response is None or "content" not in answer:
                missing.append(f"{method} /v1{route.path}")
    assert missing == []


def test_a_drifted_answer_fails_the_check() -> None:
    """The check above can fail: an answer with a key the document does not name is refused."""
    document = openapi_document(Router(routes=[]).routes)
    document["components"]["schemas"]["AccountCreated"] = {
        "type": "object",
        "properties": {"account": {"type": "string"}},
        "additionalProperties": False,
    }
    document["paths"]["/v1/account"] = {
        "post": {
            "responses": {
                "200": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/AccountCreated"}}
                    }
                }
            }
        }
    }
    answer = httpx.Response(200, json={"account": "a", "extra": 1})
    try:
        _check(document, "/v1/account", "POST", "200", answer)
    except jsonschema.ValidationError:
        return
    raise AssertionError("an undocumented key passed")


async def test_docs_page_loads_only_local_assets(server: Server) -> None:
    page = await server.http.get(server.url + "/v1/docs")  # no token: the page holds no data
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert '"/v1/openapi.json"' in html
    assert "validatorUrl: null" in html
    urls = _ASSET_RE.findall(html)
    assert sorted(urls) == [
        f"/v1/docs/static/{VERSION_DIR}/swagger-ui-bundle.js",
        f"/v1/docs/static/{VERSION_DIR}/swagger-ui.css",
    ]
    assert not re.search(r"(?:https?:)?//", " ".join(urls))
    types = {".js": "text/javascript", ".css": "text/css"}
    for url in urls:
        response = await server.http.get(server.url + url)
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith(types[url[url.rindex(".") :]]), url
        local = STATIC_DIR / url.removeprefix("/v1/docs/static/")
        assert hashlib.sha256(response.content).digest() == hashlib.sha256(local.read_bytes()).digest()


async def test_docs_static_serves_nothing_outside_its_directory(server: Server) -> None:
    prefix = "/v1/docs/static"
    for path in (f"{prefix}/%2E%2E/openapi.py", f"{prefix}/../../rest/openapi.py", f"{prefix}/nothing.js"):
        response = await server.http.get(server.url + path)
        assert response.status_code == 404, path
