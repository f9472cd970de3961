"""Every GraphQL error leaves with an `extensions.code`.

ServiceError (services/errors.py)   -> its own code (and `field`)
permission refusals                 -> FORBIDDEN / UNAUTHENTICATED (set by the permission class)
parse / validation / coercion       -> BAD_USER_INPUT
anything else                       -> INTERNAL_SERVER_ERROR, message masked, logged with its traceback
"""

from __future__ import annotations

import logging
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from gql_mail.services.errors import ServiceError

log = logging.getLogger("gql_mail.graphql")

SAFE_CODES = frozenset(
    {
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "BAD_USER_INPUT",
        "NOT_FOUND",
        "ACCOUNT_NOT_READY",
        "CONFLICT",
        "PAYLOAD_TOO_LARGE",
    }
)


def coded(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    extensions: dict[str, Any] = dict(error.extensions or {})
    if isinstance(original, ServiceError):
        extensions["code"] = original.code
        if original.field:
            extensions["field"] = original.field
        message = original.message
    elif extensions.get("code"):
        return error
    elif original is None or (isinstance(original, GraphQLError) and error.path is None):
        # Syntax, validation and variable-coercion errors: the client's document or variables are wrong.
        extensions["code"] = "BAD_USER_INPUT"
        message = error.message
    else:
        log.error("unexpected error in %s", error.path, exc_info=original)
        return GraphQLError(
            "Internal server error",
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={"code": "INTERNAL_SERVER_ERROR"},
        )
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=extensions,
    )


class CodedErrors(MaskErrors):
    """MaskErrors that classifies instead of masking everything."""

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [coded(e) for e in errors]
