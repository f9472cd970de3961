"""The OpenAPI 3.1 document of the REST API, built from the routes themselves.

Walks the /v1 router: every `Route` whose endpoint is a `Resource` becomes a path, each of its
`Operation`s an operation, described by the same pydantic models that validate the requests (bodies,
query strings) and by the answer models (rest/answers.py). Nothing is listed by hand, so a route added
to routes.py is in the document with no further step. Errors are Boom bodies (boom.py): 400 and 401 for
every operation, 403 for writes, 404 where the path names something, 408 and 413 where a body is read, and
the operation's `refusals`.

EmailEngine serves its document (`/swagger.json`) without a token; so is this one (`/v1/openapi.json`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.routing import BaseRoute, Route

from gql_mail.rest.endpoint import TOKEN_PARAMETER, Operation, Resource

REF = "#/components/schemas/{model}"
BOOM = "Boom"

# Boom's body (boom.py): `code`, `state`, `fields` and `requestedScope` appear where the error has them.
_BOOM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An error, in the shape of Hapi's Boom (EmailEngine's error bodies).",
    "required": ["statusCode", "error", "message"],
    "properties": {
        "statusCode": {"type": "integer"},
        "error": {"type": "string", "description": "the status's reason phrase"},
        "message": {"type": "string"},
        "code": {"type": "string", "description": "EmailEngine's code, e.g. NotYetConnected"},
        "state": {"type": "string", "description": "the account's state, with a 503"},
        "requestedScope": {"type": "string", "description": "the scope a 403 needed"},
        "fields": {
            "type": "array",
            "description": "one entry per invalid value (400 Invalid input)",
            "items": {
                "type": "object",
                "required": ["message", "key"],
                "properties": {"message": {"type": "string"}, "key": {"type": "string"}},
            },
        },
    },
}

_SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "a gql-mail access token"},
    "accessToken": {
        "type": "apiKey",
        "in": "query",
        "name": TOKEN_PARAMETER,
        "description": "the same token",
    },
}

_PATH_PARAMETER = re.compile(r"{([^}:]+)(?::[^}]+)?}")


def _version() -> str:
    try:
        return version("gql-mail")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "0.0.0"


def _resources(routes: Iterable[BaseRoute]) -> list[tuple[str, Resource]]:
    return [
        (route.path, route.endpoint)
        for route in routes
        if isinstance(route, Route) and isinstance(route.endpoint, Resource)
    ]


def _schemas(pairs: list[tuple[type[BaseModel], JsonSchemaMode]]) -> tuple[dict[Any, Any], dict[str, Any]]:
    """The models' schemas as references into components, and the components."""
    if not pairs:
        return {}, {}
    refs, top = models_json_schema(pairs, ref_template=REF)
    return dict(refs), dict(top.get("$defs", {}))


def _query_parameters(model: type[BaseModel], components: dict[str, Any]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    components.update(schema.pop("$defs", {}))
    properties: dict[str, Any] = schema.get("properties", {})
    parameters = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        parameter: dict[str, Any] = {
            "name": key,
            "in": "query",
            "required": info.is_required(),
            "schema": properties.get(key, {}),
        }
        if info.description:
            parameter["description"] = info.description
        parameters.append(parameter)
    return parameters


def _description(operation: Operation) -> str | None:
    doc = operation.handler.__doc__
    return " ".join(doc.split()) if doc else None


def _error(status: int) -> dict[str, Any]:
    return {
        "description": HTTPStatus(status).phrase,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=BOOM)}}},
    }


def _operation(
    method: str,
    path: str,
    names: list[str],
    operation: Operation,
    refs: dict[Any, Any],
    components: dict[str, Any],
) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": "OK"}
    if operation.response is not None:
        answer["content"] = {"application/json": {"schema": refs[(operation.response, "serialization")]}}
    statuses = {400, 401, *operation.refusals}
    if operation.write:
        statuses.add(403)
    if names:
        statuses.add(404)
    if operation.body is not None:
        statuses.update((408, 413))
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names
    ]
    parameters += _query_parameters(operation.query, components)
    spec: dict[str, Any] = {
        "operationId": operation.handler.__name__,
        "summary": f"{method} {path}",
        "tags": [path.split("/")[2]],
        "parameters": parameters,
        "responses": {"200": answer, **{str(status): _error(status) for status in sorted(statuses)}},
    }
    description = _description(operation)
    if description:
        spec["description"] = description
    if operation.body is not None:
        spec["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(operation.body, "validation")]}},
        }
    return spec


def openapi_document(routes: Iterable[BaseRoute], prefix: str = "/v1") -> dict[str, Any]:
    """The document for the resources among `routes` (the router mounted at `prefix`)."""
    resources = _resources(routes)
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for _, resource in resources:
        for operation in resource.operations.values():
            if operation.body is not None:
                pairs.append((operation.body, "validation"))
            if operation.response is not None:
                pairs.append((operation.response, "serialization"))
    refs, components = _schemas(list(dict.fromkeys(pairs)))
    paths: dict[str, Any] = {}
    operation_ids: set[str] = set()
    for route_path, resource in resources:
        names = _PATH_PARAMETER.findall(route_path)
        path = prefix + _PATH_PARAMETER.sub(r"{\1}", route_path)
        paths[path] = {}
        for method, operation in sorted(resource.operations.items()):
            spec = _operation(method, path, names, operation, refs, components)
            # The handler's name, unless two handlers share one (ids must be unique in the document).
            if spec["operationId"] in operation_ids:
                spec["operationId"] = f"{method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', path)}"
            operation_ids.add(spec["operationId"])
            paths[path][method.lower()] = spec
    components[BOOM] = _BOOM_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gql-mail REST API (EmailEngine-compatible)",
            "version": _version(),
            "description": "EmailEngine's /v1 API, served by gql-mail beside its GraphQL API.",
        },
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items())), "securitySchemes": _SECURITY_SCHEMES},
        "security": [{"bearerAuth": []}, {"accessToken": []}],
    }
