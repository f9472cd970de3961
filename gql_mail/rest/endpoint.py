"""One REST resource (a path) as an ASGI app, and the order every request goes through:

1. the method: another one is a 405 naming the allowed ones;
2. the token, from `Authorization: Bearer` or else the `access_token` query parameter (EmailEngine takes
   both; the header wins), checked before a byte of the body is read: 401 without a valid one, 403 for a
   read-only token on a write;
3. the query string and the body, each validated against its model: the body read within the same
   bounds as /graphql's (the process's one `RequestGate`: bytes per request, large bodies read at once)
   and decoded with the same bound on nesting (`gql_mail.http_edge.json_body`);
4. the handler, which calls a service; a service's coded error becomes a Boom body (boom.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from gql_mail.http_edge.gate import RequestGate
from gql_mail.http_edge.json_body import MalformedJson, decode
from gql_mail.http_edge.request_body import SLOW_BODY, BodyTooLarge, BodyTooSlow
from gql_mail.http_edge.request_metrics import current_labels
from gql_mail.rest import answers, boom
from gql_mail.rest.models import NoQuery
from gql_mail.runtime import Runtime
from gql_mail.services.errors import ServiceError
from gql_mail.services.tokens import Principal

# The query parameter EmailEngine reads a token from (hapi-auth-bearer-token's `allowQueryToken`).
TOKEN_PARAMETER = "access_token"

B = TypeVar("B", bound=BaseModel | None)
Q = TypeVar("Q", bound=BaseModel)


@dataclass(frozen=True)
class Call(Generic[B, Q]):
    """What a handler gets: the runtime, the caller, the path's parameters, the validated body and query."""

    runtime: Runtime
    principal: Principal
    request: Request
    path: Mapping[str, str]
    body: B
    query: Q


# A handler answers with its answer model (rest/answers.py, sent as `answers.dump` makes it), a dict, or a
# ready response.
Handler = Callable[[Call[Any, Any]], Awaitable[Response | BaseModel | dict[str, Any]]]


@dataclass(frozen=True)
class Operation:
    """A method of a resource: its handler, whether it writes, and the models of its body and query.

    `response` (the answer's model, rest/answers.py) and `refusals` (error statuses the handler's service
    can answer beyond those every operation can) only describe it in the OpenAPI document (openapi.py)."""

    handler: Handler
    write: bool = False
    body: type[BaseModel] | None = None
    query: type[BaseModel] = NoQuery
    response: type[BaseModel] | None = None
    refusals: tuple[int, ...] = ()


@dataclass(frozen=True)
class Front:
    """What every REST resource shares: the runtime and the request gate /graphql uses too (one bound on
    large bodies for the process, whichever API they come to)."""

    runtime: Runtime
    gate: RequestGate


class _Refusal(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _validated(model: type[BaseModel], value: Any) -> BaseModel:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise _Refusal(boom.from_validation_error(exc)) from None


class Resource:
    """The ASGI app of one path: its methods' operations."""

    def __init__(self, front: Front, operations: Mapping[str, Operation], route: str | None = None) -> None:
        self.front = front
        self.operations = dict(operations)
        self.route = route  # its path template, e.g. /v1/account/{account}: the requests metric's label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        current_labels().route = self.route
        request = Request(scope, receive)
        operation = self.operations.get(request.method)
        if operation is None:
            allowed = ", ".join(sorted(self.operations))
            response: Response = boom.boom(405, "Method Not Allowed", headers={"Allow": allowed})
        else:
            try:
                response = await self._answer(operation, request, receive)
            except _Refusal as refusal:
                response = refusal.response
        await response(scope, receive, send)

    async def _principal(self, request: Request, write: bool) -> Principal:
        principal = await self.front.gate.principal(request, query_parameter=TOKEN_PARAMETER)
        if principal is None:
            given = "authorization" in request.headers or TOKEN_PARAMETER in request.query_params
            raise _Refusal(boom.unauthorized("Bad token" if given else "Missing authentication"))
        if write and not principal.can_write:
            raise _Refusal(boom.boom(403, "Unauthorized scope", requestedScope="api"))
        return principal

    async def _body(self, request: Request, receive: Receive) -> Any:
        """The body's JSON value ({} for an empty body), read within the shared bounds."""
        gate = self.front.gate
        try:
            data = await gate.read_body(request, receive)
        except BodyTooLarge:
            limit = gate.max_body_bytes
            raise _Refusal(
                boom.boom(413, f"Payload content length greater than maximum allowed: {limit}")
            ) from None
        except BodyTooSlow:
            raise _Refusal(boom.boom(408, SLOW_BODY)) from None
        if not data.strip():
            return {}
        try:
            value = decode(data, self.front.runtime.settings.max_json_depth)
        except MalformedJson as exc:
            raise _Refusal(boom.boom(400, f"Invalid request payload JSON format: {exc}")) from None
        if not isinstance(value, dict):
            raise _Refusal(
                boom.invalid_input([{"message": '"value" must be of type object', "key": "value"}])
            )
        return value

    async def _answer(self, operation: Operation, request: Request, receive: Receive) -> Response:
        principal = await self._principal(request, operation.write)
        params = {k: v for k, v in request.query_params.items() if k != TOKEN_PARAMETER}
        query = _validated(operation.query, params)
        body = None
        if operation.body is not None:
            body = _validated(operation.body, await self._body(request, receive))
        call: Call[Any, Any] = Call(
            runtime=self.front.runtime,
            principal=principal,
            request=request,
            path=request.path_params,
            body=body,
            query=query,
        )
        try:
            result = await operation.handler(call)
        except ServiceError as exc:
            return boom.from_service_error(exc)
        except Exception as exc:
            return boom.internal_error(exc)
        if isinstance(result, BaseModel):
            return JSONResponse(answers.dump(result))
        return JSONResponse(result) if isinstance(result, dict) else result
