"""The schema, and the one place its exported SDL comes from (`gql-mail schema`)."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter
from strawberry.types import ExecutionContext

from gql_mail.graphql.input_bounds import input_bound, literal_bounds_rule
from gql_mail.graphql.mutations import Mutation
from gql_mail.graphql.operation_hooks import DocumentCache, OperationHooks
from gql_mail.graphql.queries import Query
from gql_mail.graphql.subscriptions import Subscription


class GqlMailSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # OperationHooks (CodedErrors) logs what is unexpected; expected errors are answers, not log lines.
        return None


def build_schema(
    max_depth: int = 12, max_aliases: int = 50, max_tokens: int = 5000, max_input_items: int | None = None
) -> strawberry.Schema:
    """Depth, alias, token and list-literal limits bound what one document may cost (the variables' lists
    are bounded after validation, see operation_hooks.py). `max_input_items`: `input_bound(settings)`."""
    # Strawberry builds fresh extension instances per request (factories); the document cache is shared.
    # The limit rules are built once: a new rule class per request would make every request's rule tuple
    # different, and the validation cache would never hit.
    rules = (
        *QueryDepthLimiter(max_depth=max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=max_aliases).validation_rules,
        literal_bounds_rule(max_input_items or input_bound(None)),
    )
    documents = DocumentCache(max_tokens)
    extensions: list[Any] = [lambda: OperationHooks(rules, documents)]
    return GqlMailSchema(query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions)


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
